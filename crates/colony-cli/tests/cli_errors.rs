//! Small things a user meets at the command line: a closed pipe, a
//! nonsense peer count, and a bootstrap peer of another network.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_stdout_ends_the_command_quietly() {
    let _serial = SERIAL.lock().await;
    let root = test_dir("epipe");
    let peer = PeerProc::spawn(&root.join("p0"), &[]);
    let dir = peer.dir.display().to_string();
    for args in [
        vec!["jobs", "--data-dir", &dir],
        vec!["peers", "--data-dir", &dir, "--json"],
    ] {
        // `colony jobs | head -0`: the reader is gone before the output.
        let mut child = Command::new(env!("CARGO_BIN_EXE_colony"))
            .args(&args)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn colony");
        drop(child.stdout.take());
        let out = child.wait_with_output().expect("wait");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert!(out.status.success(), "{args:?}: {:?} {stderr}", out.status);
    }
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn zero_peers_is_refused() {
    for args in [
        vec!["run", "--peers", "0", "nqueens", "8"],
        vec!["watch", "--peers", "0"],
        vec!["demo", "--peers", "0"],
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_colony"))
            .args(&args)
            .output()
            .expect("run colony");
        assert!(!out.status.success(), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("must be at least 1"), "{args:?}: {stderr}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bootstrap_peer_of_another_network_is_named_as_the_cause() {
    let _serial = SERIAL.lock().await;
    let root = test_dir("foreign");
    let other = PeerProc::spawn(&root.join("other"), &["--network".into(), "other".into()]);

    // `colony peer` warns.
    let ours = PeerProc::spawn(&root.join("ours"), &["--bootstrap".into(), other.addr()]);
    wait_until(Duration::from_secs(20), "the warning", || async {
        ours.log()
            .lines()
            .any(|l| l.contains("WARN") && l.contains("bootstrap peer belongs to another network"))
            .then_some(())
    })
    .await;
    drop(ours);

    // `colony run --json` says why on stdout and fails.
    let out = Command::new(env!("CARGO_BIN_EXE_colony"))
        .args([
            "run",
            "--cores",
            "1",
            "--json",
            "--join-timeout-s",
            "3",
            "--bootstrap",
            &other.addr(),
            "nqueens",
            "8",
        ])
        .env("RUST_LOG", "warn")
        .output()
        .expect("run colony");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("bootstrap peer belongs to another network"),
        "a warning on stderr: {stderr}"
    );
    let json: serde_json::Value = String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| serde_json::from_str(l).ok())
        .unwrap_or_else(|| panic!("a JSON object on stdout; stderr: {stderr}"));
    let error = json["error"].as_str().expect("error");
    assert_eq!(json["state"], "failed", "{json}");
    assert!(error.contains("a peer of network \"other\""), "{error}");
    assert!(error.contains("\"colony\""), "{error}");
    let _ = std::fs::remove_dir_all(&root);
}
