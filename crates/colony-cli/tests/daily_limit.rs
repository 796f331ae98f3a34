//! `colony peer --max-hours-per-day`: a peer stops computing once the day's
//! hours are used, says so, and still does after a restart (the time is
//! counted across restarts).

mod common;

use std::time::{Duration, Instant};

use colony::PauseReason;
use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_stops_once_its_daily_hours_are_used_even_after_a_restart() {
    let _serial = SERIAL.lock().await;
    let root = test_dir("daily-limit");
    let other = PeerProc::spawn(&root.join("other"), &["--cores".into(), "1".into()]);
    // 0.001 h: 3.6 s of computing a day.
    let mut limited = PeerProc::spawn(
        &root.join("limited"),
        &[
            "--cores".into(),
            "1".into(),
            "--max-hours-per-day".into(),
            "0.001".into(),
            "--bootstrap".into(),
            other.addr(),
        ],
    );
    wait_until(Duration::from_secs(10), "the network to form", || async {
        all_see_all_alive(&[&limited, &other]).await.then_some(())
    })
    .await;
    let job_id = other
        .submit(serde_json::json!({ "app": "nqueens", "args": ["18"] }))
        .await;
    wait_until(Duration::from_secs(20), "the peer to compute", || async {
        (limited.unit_threads() > 0).then_some(())
    })
    .await;
    let computing_since = Instant::now();
    let status = wait_until(Duration::from_secs(30), "the daily limit", || async {
        let status = limited.status().await?;
        (status.compute.paused == Some(PauseReason::DailyLimit) && limited.unit_threads() == 0)
            .then_some(status)
    })
    .await;
    let computed = computing_since.elapsed();
    eprintln!(
        "paused after {computed:?} of computing: {:?}",
        status.compute
    );
    assert!(computed >= Duration::from_secs(2), "{computed:?}");
    assert!(
        status.compute.computed_today_s >= Some(3),
        "{:?}",
        status.compute
    );
    assert_eq!(status.compute.max_hours_per_day, Some(0.001));

    // Restarted, it remembers today's hours: paused from the start.
    limited.restart_with(&[]);
    let status = wait_until(Duration::from_secs(10), "the restarted peer", || async {
        limited.status().await
    })
    .await;
    assert_eq!(
        status.compute.paused,
        Some(PauseReason::DailyLimit),
        "{:?}",
        status.compute
    );
    wait_until(
        Duration::from_secs(10),
        "the network to re-form",
        || async { all_see_all_alive(&[&limited, &other]).await.then_some(()) },
    )
    .await;
    let info = other.job_info(&job_id).await.expect("the job");
    assert_eq!(info.state, "running", "{info:?}");
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline {
        assert_eq!(limited.unit_threads(), 0, "computing past its daily limit");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = std::fs::remove_dir_all(&root);
}
