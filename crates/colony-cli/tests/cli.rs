//! The `colony` command as a user meets it: the README's demo, and clear
//! errors for bad input.

mod common;

use std::process::Command;

use common::*;

fn colony(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_colony"))
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run colony")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_shows_a_network_forming_detecting_a_crash_and_healing() {
    let _serial = SERIAL.lock().await;
    let out = colony(&["watch", "--peers", "3"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "watch failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for needle in [
        "All 3 peers see each other alive",
        "Every survivor declared it dead",
        "Alive everywhere again",
    ] {
        assert!(stdout.contains(needle), "missing {needle:?} in:\n{stdout}");
    }
}

#[test]
fn bad_peer_arguments_are_clear_errors_and_start_nothing() {
    let root = test_dir("badargs");
    let dir = root.join("peer");
    let dir = dir.to_str().expect("utf-8 path");
    let missing_key = root.join("no-such.key");
    let bad_key = root.join("bad.key");
    std::fs::write(&bad_key, "not a key").expect("write");
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            vec!["--psk".into(), missing_key.display().to_string()],
            "cannot read the pre-shared key file",
        ),
        (
            vec!["--psk".into(), bad_key.display().to_string()],
            "bad pre-shared key",
        ),
        (
            vec!["--network".into(), "has spaces/and slashes".into()],
            "network",
        ),
        (
            vec!["--ttu-s".into(), "0".into()],
            "--ttu-s must be a positive",
        ),
        (
            vec!["--listen".into(), "not-a-multiaddr".into()],
            "invalid value",
        ),
    ];
    for (extra, needle) in cases {
        let mut args = vec!["peer", "--data-dir", dir, "--api", "127.0.0.1:0"];
        args.extend(extra.iter().map(String::as_str));
        let out = colony(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{extra:?} must fail");
        assert!(
            stderr.contains(needle),
            "{extra:?}: expected {needle:?} in:\n{stderr}"
        );
        assert!(
            !std::path::Path::new(dir).join("peer.json").exists(),
            "nothing started"
        );
    }
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn peers_without_a_running_peer_says_so() {
    let out = colony(&["peers", "--api", "127.0.0.1:9"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("is `colony peer` running"), "{stderr}");
}

#[test]
fn two_peers_cannot_share_a_data_directory() {
    let root = test_dir("shared-dir");
    let first = PeerProc::spawn(&root, &[]);
    let dir = root.to_str().expect("utf-8 path");
    let out = colony(&[
        "peer",
        "--data-dir",
        dir,
        "--listen",
        "/ip4/127.0.0.1/tcp/0",
        "--api",
        "127.0.0.1:0",
    ]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("in use by another colony peer"), "{stderr}");
    drop(first);
    let _ = std::fs::remove_dir_all(&root);
}
