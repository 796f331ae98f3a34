//! Cancelling jobs on real `colony peer` processes: `colony cancel` by the
//! submitter stops every worker within a second; by another peer it is
//! refused and the job runs on.

mod common;

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use colony::JobInfo;
use common::*;

/// Worker threads (`colony-unit-N`) a process runs now, as the kernel
/// lists them.
fn unit_threads(pid: u32) -> usize {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .filter_map(Result::ok)
        .filter_map(|t| std::fs::read_to_string(t.path().join("comm")).ok())
        .filter(|name| name.starts_with("colony-unit"))
        .count()
}

async fn submit(peer: &PeerProc, app: &str, args: &[&str]) -> String {
    let body = serde_json::json!({ "app": app, "args": args });
    let answer: serde_json::Value = peer
        .request(reqwest::Method::POST, "/v1/jobs")
        .json(&body)
        .send()
        .await
        .expect("submit")
        .json()
        .await
        .expect("a JSON answer");
    answer["job_id"].as_str().expect("a job id").to_string()
}

async fn job_info(peer: &PeerProc, job_id: &str) -> Option<JobInfo> {
    peer.get_json(&format!("/v1/jobs/{job_id}")).await
}

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
    let pids: Vec<u32> = peers.iter().map(|p| p.pid()).collect();

    // N-Queens 18 takes minutes on these cores: it is still running when
    // cancelled, on every peer.
    let submitter = &peers[0];
    let job_id = submit(submitter, "nqueens", &["18"]).await;
    wait_until(Duration::from_secs(30), "every peer to compute", || async {
        pids.iter().all(|p| unit_threads(*p) > 0).then_some(())
    })
    .await;

    // A peer that is neither the submitter nor the primary is refused.
    let info = job_info(submitter, &job_id)
        .await
        .expect("the job's status");
    let other = peers
        .iter()
        .find(|p| p.info.peer_id != info.submitter && p.info.peer_id != info.home)
        .expect("a third peer");
    let refused = colony_cancel(other, &job_id);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "another peer cancelled the job");
    assert!(stderr.contains("submitter"), "unclear refusal: {stderr}");
    let info = job_info(submitter, &job_id)
        .await
        .expect("the job's status");
    assert_eq!(info.state, "running");
    assert!(
        pids.iter().all(|p| unit_threads(*p) > 0),
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
        pids.iter()
            .all(|p| unit_threads(*p) == 0)
            .then(|| asked.elapsed())
    })
    .await;
    eprintln!("no worker thread left {stopped_after:?} after `colony cancel` was run");
    assert!(
        stopped_after <= Duration::from_secs(1),
        "workers still busy {stopped_after:?} after the cancellation"
    );
    let info = job_info(other, &job_id).await.expect("the job's status");
    assert_eq!(info.state, "cancelled");
    assert!(
        info.error
            .as_deref()
            .is_some_and(|e| e.contains("submitter")),
        "{:?}",
        info.error
    );
}
