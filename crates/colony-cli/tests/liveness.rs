//! Liveness on real `colony peer` processes (issue 10): a worker leaving
//! gracefully mid-unit loses no work, and a primary paused and resumed
//! never leaves a unit recorded on a worker that does not run it.

mod common;

use std::time::Duration;

use colony::JobInfo;
use common::*;

/// Nodes the N-Queens search explores for N = 16, however the search is
/// divided: every node is counted once, by the unit that explores it.
const NQUEENS_16_WORK: u64 = 1_141_190_302;

async fn submit_nqueens(peer: &PeerProc, n: u32, ttc_s: u64) -> String {
    let body = serde_json::json!({
        "app": "nqueens",
        "args": [n.to_string()],
        "fault_tolerance": {"protocol": "checkpoint", "ttc_s": ttc_s, "storage": "copies:2", "home_size": 3},
    });
    peer.submit(body).await
}

/// Waits until the job is over, as any live peer reports it.
async fn wait_result(peers: &[PeerProc], job_id: &str, within: Duration) -> JobInfo {
    wait_until(within, "the job to finish", || async {
        for peer in peers.iter().filter(|p| p.is_running()) {
            if let Some(info) = peer.job_info(job_id).await {
                if info.state != "running" {
                    return Some(info);
                }
            }
        }
        None
    })
    .await
}

async fn formed(peers: &[PeerProc]) {
    let refs: Vec<&PeerProc> = peers.iter().collect();
    wait_until(Duration::from_secs(15), "the network to form", || async {
        all_see_all_alive(&refs).await.then_some(())
    })
    .await;
}

/// The job as any live peer reports it.
async fn job_info(peers: &[PeerProc], job_id: &str) -> Option<JobInfo> {
    for peer in peers.iter().filter(|p| p.is_running()) {
        if let Some(info) = peer.job_info(job_id).await {
            return Some(info);
        }
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_leaving_mid_unit_hands_its_state_back() {
    let _serial = SERIAL.lock().await;
    let mut peers = start_network(
        &test_dir("leave-handback"),
        4,
        &["--cores".into(), "1".into()],
    );
    formed(&peers).await;
    // No periodic checkpoint within the test: only a hand-back saves the
    // leaver's work.
    let job = submit_nqueens(&peers[0], 16, 60).await;
    let info = wait_until(Duration::from_secs(10), "the job's record", || {
        job_info(&peers, &job)
    })
    .await;
    let primary = peers
        .iter()
        .position(|p| p.info.peer_id == info.home)
        .expect("the primary is one of ours");
    // A worker that has computed a while on its unit.
    let victim = wait_until(
        Duration::from_secs(30),
        "a worker to be busy for a while",
        || async {
            let info = job_info(&peers, &job).await?;
            if info.work < NQUEENS_16_WORK / 10 {
                return None;
            }
            (1..peers.len()).find(|i| *i != primary && peers[*i].unit_threads() > 0)
        },
    )
    .await;
    eprintln!("SIGTERM to worker {victim} (primary {primary})");
    peers[victim].signal("TERM");
    assert!(
        peers[victim].wait_exit(Duration::from_secs(20)),
        "the leaving peer exits"
    );
    let log = peers[victim].log();
    assert!(log.contains("leaving the network"), "{log}");
    assert!(
        !log.contains("leaving before every unit was handed back"),
        "the hand-back was acknowledged in time: {log}"
    );
    let info = wait_result(&peers, &job, Duration::from_secs(120)).await;
    assert_eq!(info.state, "done", "{info:?}");
    assert_eq!(info.verified, Some(true), "{info:?}");
    assert_eq!(info.units, info.units_done, "{info:?}");
    eprintln!(
        "figure: graceful leave: {} units, {} steals, {} reissued, work {} (exact {}), {:.1} s",
        info.units, info.steals, info.reissued, info.work, NQUEENS_16_WORK, info.elapsed_s
    );
    // Resumed from the handed-back state: nothing was reissued from an
    // older checkpoint, and no node was explored twice.
    assert_eq!(info.reissued, 0, "{info:?}");
    assert_eq!(info.work, NQUEENS_16_WORK, "no work redone: {info:?}");
}
