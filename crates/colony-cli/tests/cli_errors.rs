//! Small things a user meets at the command line: a closed pipe, a
//! nonsense peer count or computing preference, and a bootstrap peer of
//! another network.

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

#[test]
fn bad_computing_preferences_are_refused_with_the_flag_named() {
    let root = test_dir("volunteer-flags");
    let dir = root.display().to_string();
    for (args, says) in [
        (vec!["--when", "sometimes"], "--when"),
        (vec!["--when", "idle", "--idle-cpu", "0"], "above 0"),
        (vec!["--when", "idle", "--idle-cpu", "150"], "at most 100"),
        (
            vec!["--when", "idle", "--idle-cpu", "lots"],
            "not a percentage",
        ),
        (vec!["--when", "idle", "--idle-secs=-1"], "from 0 to 86400"),
        (
            vec!["--when", "idle", "--idle-secs", "NaN"],
            "from 0 to 86400",
        ),
        (
            vec!["--idle-cpu", "30"],
            "--idle-cpu applies with --when idle",
        ),
        (
            vec!["--idle-secs", "3"],
            "--idle-secs applies with --when idle",
        ),
        (vec!["--max-hours-per-day", "0"], "above 0"),
        (vec!["--max-hours-per-day", "25"], "at most 24"),
        (vec!["--nice", "20"], "20 is not in 0..=19"),
        (vec!["--nice=-1"], "--nice"),
        (vec!["--max-guest-memory-mib", "64"], "add --trust-network"),
        (
            vec!["--trust-network", "--max-guest-memory-mib", "0"],
            "from 1 to 4096",
        ),
        (
            vec!["--trust-network", "--max-guest-memory-mib", "5000"],
            "from 1 to 4096",
        ),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_colony"))
            .args(["peer", "--data-dir", &dir, "--api", "127.0.0.1:0"])
            .args(&args)
            .env("RUST_LOG", "warn")
            .output()
            .expect("run colony peer");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} started a peer");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
    }
    let _ = std::fs::remove_dir_all(&root);
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
            // Long enough for a loaded machine to dial and hear the
            // foreign network (3 s once was not, with tests in parallel).
            "--join-timeout-s",
            "10",
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
