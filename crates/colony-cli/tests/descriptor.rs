//! `colony run --descriptor`: a bad deployment descriptor stops the run
//! before anything starts, with the file and line; a good one sets the
//! network, the peers to acquire and the job's fault tolerance.

mod common;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::*;

const FLOWSHOP: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../examples/deploy/flowshop.toml"
);

/// Runs `colony args…` and waits for it to exit; fails the test (after
/// killing it) if it is still running after `within`.
fn colony_within(args: &[&str], within: Duration) -> (Output, Duration) {
    let started = Instant::now();
    let child = Command::new(env!("CARGO_BIN_EXE_colony"))
        .args(args)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn colony");
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(within) {
        Ok(out) => (out.expect("wait for colony"), started.elapsed()),
        Err(_) => {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
            panic!("colony {args:?} still running after {within:?}");
        }
    }
}

/// `colony run --descriptor FILE` with a data directory under `root`;
/// asserts it fails fast, names `needles` and starts no peer.
fn run_fails_and_starts_nothing(root: &Path, file: &Path, needles: &[&str]) {
    let data_dir = root.join("run");
    let (out, took) = colony_within(
        &[
            "run",
            "--descriptor",
            file.to_str().expect("utf-8 path"),
            "--data-dir",
            data_dir.to_str().expect("utf-8 path"),
            "--listen",
            "/ip4/127.0.0.1/tcp/0",
            "nqueens",
            "6",
        ],
        Duration::from_secs(10),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "{} must fail:\n{stderr}",
        file.display()
    );
    assert!(took < Duration::from_secs(5), "took {took:?}:\n{stderr}");
    for needle in needles {
        assert!(stderr.contains(needle), "expected {needle:?} in:\n{stderr}");
    }
    assert!(!stderr.contains("submitted"), "no job: {stderr}");
    assert!(
        !data_dir.join("peer.json").exists() && !data_dir.exists(),
        "no peer started in {}:\n{stderr}",
        data_dir.display()
    );
}

#[test]
fn bad_descriptors_stop_the_run_with_file_and_line_before_anything_starts() {
    let root = test_dir("bad-descriptor");
    let cases: [(&str, &str, usize, &str); 4] = [
        (
            "malformed.toml",
            "network = \"flowshop\"\n\n[virtual_nodes.master\nacquire = \"local\"\n",
            3,
            "malformed TOML",
        ),
        (
            "unknown-kind.toml",
            "[virtual_nodes.master]\nacquire = \"local\"\nservice = \"lb\"\n\n\
             [services.lb]\nkind = \"load-balancing\"\n",
            6,
            "unknown service kind \"load-balancing\"; known kinds: fault-tolerance",
        ),
        (
            "zero-ttc.toml",
            "[virtual_nodes.master]\nacquire = \"local\"\nservice = \"ft\"\n\n\
             [services.ft]\nkind = \"fault-tolerance\"\nprotocol = \"checkpoint\"\nttc = 0\n",
            8,
            "ttc must be greater than zero",
        ),
        (
            "undefined-service.toml",
            "[virtual_nodes.master]\nacquire = \"local\"\nservice = \"master\"\n\n\
             [services.ft-master]\nkind = \"fault-tolerance\"\n",
            3,
            "service \"master\" is not defined",
        ),
    ];
    for (name, text, line, needle) in cases {
        let file = root.join(name);
        std::fs::write(&file, text).expect("write descriptor");
        let place = format!("{}, line {line}", file.display());
        run_fails_and_starts_nothing(&root, &file, &[&place, needle]);
    }
    // Two virtual nodes and none chosen; a name that is not there.
    let flowshop = Path::new(FLOWSHOP);
    run_fails_and_starts_nothing(
        &root,
        flowshop,
        &["several virtual nodes (master, slaves)", "--virtual-node"],
    );
    let missing = root.join("no-such.toml");
    run_fails_and_starts_nothing(
        &root,
        &missing,
        &["no-such.toml: cannot read the descriptor"],
    );
    let (out, _) = colony_within(
        &["run", "--virtual-node", "master", "nqueens", "6"],
        Duration::from_secs(10),
    );
    assert!(!out.status.success(), "--virtual-node needs --descriptor");
    let _ = std::fs::remove_dir_all(&root);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_flowshop_descriptor_deploys_a_job_on_its_network() {
    let _serial = SERIAL.lock().await;
    let root = test_dir("descriptor-run");
    // A peer of the descriptor's network; its bootstrap list (a LAN address)
    // is replaced by this peer's with --bootstrap.
    let seed = PeerProc::spawn(
        &root.join("seed"),
        &[
            "--network".into(),
            "flowshop".into(),
            "--cores".into(),
            "1".into(),
        ],
    );
    let addr = seed.addr();
    let run = |extra: &[&str]| {
        let mut args = vec![
            "run",
            "--descriptor",
            FLOWSHOP,
            "--bootstrap",
            &addr,
            "--listen",
            "/ip4/127.0.0.1/tcp/0",
            "--cores",
            "1",
            "--join-timeout-s",
            "8",
            "--json",
        ];
        args.extend_from_slice(extra);
        args.extend_from_slice(&["nqueens", "8"]);
        let (out, took) = colony_within(&args, Duration::from_secs(20));
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "{extra:?} failed:\n{stderr}");
        let json: serde_json::Value = String::from_utf8_lossy(&out.stdout)
            .lines()
            .find_map(|line| serde_json::from_str(line).ok())
            .unwrap_or_else(|| panic!("no JSON result:\n{stderr}"));
        assert_eq!(json["result"], 92, "{json}");
        assert_eq!(json["verified"], true, "{json}");
        eprintln!("figure: colony run --descriptor {extra:?} took {took:?}");
        stderr
    };

    // The master: this peer, protected by the ft-master service. Joining at
    // all proves the descriptor's network name was used; --peers wins over
    // the descriptor's acquisition (local: this peer only).
    let stderr = run(&[
        "--virtual-node",
        "master",
        "--peers",
        "3",
        "--acquire-timeout-s",
        "1",
    ]);
    assert!(
        stderr.contains(
            "deployment: network flowshop, virtual node master (local), fault tolerance: \
             checkpoint every 60s, storage copies:2 on a home of 3"
        ),
        "{stderr}"
    );
    assert!(
        stderr.contains("asked for 3 peers, 2 present"),
        "--peers 3 wins: {stderr}"
    );

    // The slaves: nodes_asked = 1000 plays --peers, best effort.
    let stderr = run(&["--virtual-node", "slaves", "--acquire-timeout-s", "1"]);
    assert!(
        stderr
            .contains("virtual node slaves (network, 1000 asked), fault tolerance: no checkpoints"),
        "{stderr}"
    );
    assert!(
        stderr.contains("asked for 1000 peers, 2 present; running best-effort"),
        "{stderr}"
    );
    drop(seed);
    let _ = std::fs::remove_dir_all(&root);
}
