//! `colony run flowshop taNNN --objects` on real processes, deployed with
//! examples/deploy/fig5.toml (seed 000 Fig. 5): the master object under
//! `pml`, the slaves under `none`, over three `colony peer` processes and
//! the running one. The peer holding the master is SIGKILLed once work has
//! been reported to it; the master is replayed by a surviving member of
//! its home, slaves lost with the peer have their pieces taken back, and
//! the run still ends with Taillard's published optimum.

mod common;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use colony::ObjectSummary;
use common::*;

/// ta005 (20 jobs × 5 machines, optimum 1235): about 4,600 nodes, a
/// fraction of a second of work in a debug build; a few nodes per call
/// make the run last long enough to kill a peer in the middle of it.
const INSTANCE: &str = "ta005";
const OPTIMUM: u64 = 1235;

/// Nodes reported to the master before its peer is killed: the search is
/// well under way, and several pieces have been split off.
const MIN_NODES_BEFORE_KILL: u64 = 150;

fn fig5() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples/deploy/fig5.toml")
}

/// Whether `peer` is the primary of an object of type `object_type`.
async fn holds(peer: &PeerProc, object_type: &str) -> bool {
    peer.get_json::<Vec<ObjectSummary>>("/v1/objects")
        .await
        .unwrap_or_default()
        .iter()
        .any(|object| object.object_type == object_type)
}

/// The nodes the last progress line of the run's log reports.
fn nodes_reported(log: &str) -> Option<u64> {
    log.lines().rev().find_map(|line| {
        let (_, rest) = line.split_once(" s: best ")?;
        let (_, rest) = rest.split_once(", ")?;
        rest.split_once(" nodes reported")?.0.parse().ok()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_masters_peer_still_ends_at_the_optimum() {
    let _serial = SERIAL.lock().await;
    let root = test_dir("flowshop-objects-kill");
    let network = ["--network".to_string(), "flowshop".to_string()];
    let mut peers = start_network(&root, 3, &network);
    settled(&peers.iter().collect::<Vec<_>>()).await;
    let started = Instant::now();
    // The master lives at the peer closest to its random GUID: the running
    // peer (which has no API and cannot be killed without ending the run)
    // one time in four. Then start again, until a peer we can kill has it.
    let mut attempt = 0;
    let (mut run, out, err, victim) = loop {
        attempt += 1;
        assert!(attempt <= 6, "the master was at the running peer 6 times");
        let (out, err) = (
            root.join(format!("run{attempt}.out")),
            root.join(format!("run{attempt}.err")),
        );
        let mut run = Command::new(env!("CARGO_BIN_EXE_colony"))
            .args(["run", "--descriptor", &fig5().display().to_string()])
            .args(["--bootstrap", &peers[0].addr(), "--acquire-timeout-s", "10"])
            .args(["flowshop", INSTANCE, "--objects", "--slaves", "3"])
            .args(["--nodes-per-call", "4", "--seconds", "50", "--json"])
            .stdout(std::fs::File::create(&out).expect("out file"))
            .stderr(std::fs::File::create(&err).expect("err file"))
            .stdin(Stdio::null())
            .spawn()
            .expect("colony run");
        // Some work reported to the master, and a peer holding it.
        let victim = wait_until(
            Duration::from_secs(30),
            "work to be reported to the master",
            || async {
                let log = std::fs::read_to_string(&err).unwrap_or_default();
                if nodes_reported(&log).is_none_or(|nodes| nodes < MIN_NODES_BEFORE_KILL) {
                    return None;
                }
                for (index, peer) in peers.iter().enumerate() {
                    if holds(peer, "flowshop-master").await {
                        return Some(Some(index));
                    }
                }
                Some(None)
            },
        )
        .await;
        match victim {
            Some(index) => break (run, out, err, index),
            None => {
                eprintln!("attempt {attempt}: the master is at the running peer; again");
                let _ = run.kill();
                let _ = run.wait();
            }
        }
    };
    let log = std::fs::read_to_string(&err).unwrap_or_default();
    let before = nodes_reported(&log).unwrap_or(0);
    let killed_at = started.elapsed();
    eprintln!("killing peer {victim}, the master's primary, {before} nodes reported");
    peers[victim].kill();
    assert!(
        run.try_wait().expect("try_wait").is_none(),
        "the run ended before the kill: the kill tested nothing"
    );
    let status = wait_exit(&mut run, Duration::from_secs(60));
    let stdout = std::fs::read_to_string(&out).unwrap_or_default();
    let stderr = std::fs::read_to_string(&err).unwrap_or_default();
    assert!(status.success(), "{status}\n{stdout}\n{stderr}");
    let json: serde_json::Value = serde_json::from_str(stdout.trim()).expect("one JSON object");
    assert_eq!(json["makespan"], OPTIMUM, "{json}");
    assert_eq!(json["optimal"], true, "{json}");
    assert_eq!(json["permutation"].as_array().map(Vec::len), Some(20));
    assert_eq!(json["master_protocol"], "Pml { ttc_ms: 2000 }", "{json}");
    assert_eq!(json["slave_protocol"], "None", "{json}");
    // The master served reports after the kill: its replay kept what the
    // slaves had reported, and they went on reporting to it.
    let after = json["nodes"].as_u64().unwrap_or(0);
    assert!(
        after > before,
        "{before} nodes before the kill, {after} in all"
    );
    // Every piece a lost slave held went back to the pool (the run says
    // which lost slaves held one).
    let held = stderr
        .lines()
        .filter(|line| line.contains("took slave") && !line.contains("held none"))
        .count() as u64;
    assert!(
        json["pieces_returned"].as_u64().unwrap_or(0) >= held,
        "{held} lost slaves held a piece: {json}"
    );
    eprintln!(
        "figure: attempt {attempt}, kill at {:.1} s, run over at {:.1} s ({} s in the run), {} slaves lost, {} pieces returned, {} failed calls",
        killed_at.as_secs_f64(),
        started.elapsed().as_secs_f64(),
        json["elapsed_s"],
        json["lost_slaves"],
        json["pieces_returned"],
        json["failed_calls"]
    );
}

#[test]
fn a_bad_flowshop_objects_run_is_a_clear_error_before_joining() {
    let cases: [(&[&str], &str); 4] = [
        (&["flowshop", "ta999", "--objects"], "ta001"),
        (
            &["flowshop", "ta001", "--objects", "--slaves", "0"],
            "--slaves",
        ),
        (
            &["flowshop", "ta001", "--objects", "--nodes-per-call", "0"],
            "--nodes-per-call",
        ),
        (
            &["flowshop", "ta001", "--objects", "--master-node", "boss"],
            "boss",
        ),
    ];
    for (args, expected) in cases {
        let started = Instant::now();
        // A bootstrap address nobody listens at: the arguments and the
        // descriptor are read first.
        let output = Command::new(env!("CARGO_BIN_EXE_colony"))
            .args(["run", "--descriptor", &fig5().display().to_string()])
            .args(["--bootstrap", "/ip4/127.0.0.1/tcp/9"])
            .args(args)
            .output()
            .expect("colony run");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{args:?}: {stderr}");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
        assert!(started.elapsed() < Duration::from_secs(5), "{stderr}");
    }
}
