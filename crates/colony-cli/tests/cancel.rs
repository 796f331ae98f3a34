//! Cancelling jobs on real `colony peer` processes: `colony cancel` by the
//! submitter stops every worker within a second; by another peer it is
//! refused and the job runs on.

mod common;

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::*;

fn colony_cancel(peer: &PeerProc, job_id: &str) -> Output {
    let dir = peer.dir.display().to_string();
    Command::new(env!("CARGO_BIN_EXE_colony"))
        .args(["cancel", job_id, "--data-dir", &dir])
        .output()
        .expect("run colony cancel")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_submitter_cancels_a_long_job_and_every_worker_stops_within_a_second() {
    let _serial = SERIAL.lock().await;
    let root = test_dir("cancel");
    let peers = start_network(&root, 3, &["--cores".into(), "1".into()]);
    let refs: Vec<&PeerProc> = peers.iter().collect();
    wait_until(Duration::from_secs(10), "the network to form", || async {
        all_see_all_alive(&refs).await.then_some(())
    })
    .await;

    // N-Queens 18 takes minutes on these cores: it is still running when
    // cancelled, on every peer.
    let submitter = &peers[0];
    let job_id = submitter
        .submit(serde_json::json!({ "app": "nqueens", "args": ["18"] }))
        .await;
    wait_until(Duration::from_secs(30), "every peer to compute", || async {
        peers.iter().all(|p| p.unit_threads() > 0).then_some(())
    })
    .await;

    // A peer that is neither the submitter nor the primary is refused.
    let info = submitter.job_info(&job_id).await.expect("the job's status");
    let other = peers
        .iter()
        .find(|p| p.info.peer_id != info.submitter && p.info.peer_id != info.home)
        .expect("a third peer");
    let refused = colony_cancel(other, &job_id);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "another peer cancelled the job");
    assert!(stderr.contains("submitter"), "unclear refusal: {stderr}");
    let info = submitter.job_info(&job_id).await.expect("the job's status");
    assert_eq!(info.state, "running");
    assert!(
        peers.iter().all(|p| p.unit_threads() > 0),
        "a worker stopped"
    );

    let asked = Instant::now();
    let cancelled = colony_cancel(submitter, &job_id);
    assert!(
        cancelled.status.success(),
        "the submitter could not cancel: {}",
        String::from_utf8_lossy(&cancelled.stderr)
    );
    let stopped_after = wait_until(Duration::from_secs(5), "every worker to stop", || async {
        peers
            .iter()
            .all(|p| p.unit_threads() == 0)
            .then(|| asked.elapsed())
    })
    .await;
    eprintln!("no worker thread left {stopped_after:?} after `colony cancel` was run");
    assert!(
        stopped_after <= Duration::from_secs(1),
        "workers still busy {stopped_after:?} after the cancellation"
    );
    let info = other.job_info(&job_id).await.expect("the job's status");
    assert_eq!(info.state, "cancelled");
    assert!(
        info.error
            .as_deref()
            .is_some_and(|e| e.contains("submitter")),
        "{:?}",
        info.error
    );
}
