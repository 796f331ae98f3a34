//! Fault tolerance on real `colony peer` processes: a flow-shop job of
//! tens of seconds with checkpoints every second survives SIGKILLed
//! workers, a SIGKILLed primary and a SIGKILLed submitter, and still
//! reaches the published optimum.

mod common;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use colony::JobInfo;
use common::*;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

/// ta017 takes ~50 s on one core of this machine: long enough to kill
/// peers at random moments while it runs.
const INSTANCE: &str = "ta017";

async fn submit(peer: &PeerProc, instance: &str) -> String {
    let body = serde_json::json!({
        "app": "flowshop",
        "args": [instance],
        "fault_tolerance": {"protocol": "checkpoint", "ttc_s": 1, "storage": "copies:2", "home_size": 3},
    });
    peer.submit(body).await
}

/// Waits until the job is over, as any live peer reports it.
fn five_peers(name: &str) -> Vec<PeerProc> {
    start_network(&test_dir(name), 5, &["--cores".into(), "1".into()])
}

async fn formed(peers: &[PeerProc]) {
    let refs: Vec<&PeerProc> = peers.iter().collect();
    wait_until(Duration::from_secs(15), "the network to form", || async {
        all_see_all_alive(&refs).await.then_some(())
    })
    .await;
}

fn assert_optimal(info: &JobInfo, what: &str) {
    assert_eq!(info.state, "done", "{what}: {info:?}");
    assert_eq!(
        info.verified,
        Some(true),
        "{what}: the makespan must equal the published optimum: {:?}",
        info.result
    );
    assert_eq!(
        info.units, info.units_done,
        "{what}: every unit merged once"
    );
    eprintln!(
        "figure: {what}: {} in {:.1} s, {} units, {} steals, {} checkpoints ({} bytes), {} reissued, {} takeovers",
        info.summary.as_deref().unwrap_or("?"),
        info.elapsed_s,
        info.units,
        info.steals,
        info.checkpoints,
        info.checkpoint_bytes,
        info.reissued,
        info.takeovers
    );
}

/// Wall-clock times of the log lines of `peer` that contain `needle` (the
/// peers log RFC 3339 UTC timestamps at the start of each line).
fn log_times(peer: &PeerProc, needle: &str) -> Vec<SystemTime> {
    peer.log()
        .lines()
        .filter(|line| line.contains(needle))
        .filter_map(|line| parse_rfc3339(line.split_whitespace().next()?))
        .collect()
}

/// `2026-11-23T15:36:32.393669Z` as a time.
fn parse_rfc3339(stamp: &str) -> Option<SystemTime> {
    let stamp = stamp.strip_suffix('Z')?;
    let (date, time) = stamp.split_once('T')?;
    let mut ymd = date.split('-').map(|p| p.parse::<i64>().ok());
    let (y, m, d) = (ymd.next()??, ymd.next()??, ymd.next()??);
    let mut hms = time.split(':');
    let (h, mi) = (
        hms.next()?.parse::<u64>().ok()?,
        hms.next()?.parse::<u64>().ok()?,
    );
    let secs: f64 = hms.next()?.parse().ok()?;
    // Days since 1970-01-01 (Howard Hinnant's days_from_civil).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = u64::try_from(era * 146_097 + doe - 719_468).ok()?;
    Some(
        UNIX_EPOCH
            + Duration::from_secs(days * 86_400 + h * 3600 + mi * 60)
            + Duration::from_secs_f64(secs),
    )
}

/// The first time after `after` that any live peer logged `needle`.
fn first_logged_after(peers: &[PeerProc], needle: &str, after: SystemTime) -> Option<Duration> {
    peers
        .iter()
        .filter(|p| p.is_running())
        .flat_map(|p| log_times(p, needle))
        .filter_map(|t| t.duration_since(after).ok())
        .min()
}

/// The peer the job's record names as primary.
async fn primary_index(peers: &[PeerProc], job_id: &str) -> usize {
    let info = wait_until(Duration::from_secs(10), "the job's record", || async {
        peers[0].job_info(job_id).await
    })
    .await;
    peers
        .iter()
        .position(|p| p.info.peer_id == info.home)
        .expect("the primary is one of ours")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_killed_at_random_moments_lose_nothing() {
    let _serial = SERIAL.lock().await;
    let mut peers = five_peers("ft-workers");
    formed(&peers).await;
    let job = submit(&peers[0], INSTANCE).await;
    let primary = primary_index(&peers, &job).await;
    let mut rng = SmallRng::from_os_rng();
    let started = Instant::now();
    let victims: Vec<usize> = (0..5)
        .filter(|i| *i != primary && *i != 0)
        .take(2)
        .collect();
    for victim in victims {
        let at = Duration::from_millis(rng.random_range(2_000..12_000));
        tokio::time::sleep(at.saturating_sub(started.elapsed())).await;
        eprintln!("killing worker {victim} at {:?}", started.elapsed());
        let killed = SystemTime::now();
        peers[victim].kill();
        // This kill's recovery, before the next kill. A worker killed
        // between two units held none: nothing to recover then.
        let reissue_by = Instant::now() + Duration::from_secs(5);
        let reissued = loop {
            let found =
                first_logged_after(&peers, "unit reissued from its last checkpoint", killed);
            if found.is_some() || Instant::now() > reissue_by {
                break found;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let Some(reissued) = reissued else {
            eprintln!("worker {victim} held no unit when killed: nothing reissued");
            continue;
        };
        let recovered = wait_until(
            Duration::from_secs(30),
            "a reissued unit to run",
            || async { first_logged_after(&peers, "reissued unit assigned", killed) },
        )
        .await;
        eprintln!(
            "figure: recovery from SIGKILL: unit restored from its checkpoint after {} ms, assigned to another worker after {} ms",
            reissued.as_millis(),
            recovered.as_millis()
        );
    }
    let info = wait_job_end(&peers, &job, Duration::from_secs(420)).await;
    assert_optimal(&info, "two workers killed");
    assert!(info.elapsed_s >= 20.0, "the job ran long enough: {info:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_primary_killed_mid_job_is_taken_over() {
    let _serial = SERIAL.lock().await;
    let mut peers = five_peers("ft-primary");
    formed(&peers).await;
    // Submitted from a peer that is not the primary, so it can watch.
    let job = submit(&peers[0], INSTANCE).await;
    let primary = primary_index(&peers, &job).await;
    tokio::time::sleep(Duration::from_secs(
        SmallRng::from_os_rng().random_range(3..10),
    ))
    .await;
    eprintln!("killing the primary, peer {primary}");
    let killed = SystemTime::now();
    peers[primary].kill();
    let took_over = wait_until(Duration::from_secs(30), "a backup to take over", || async {
        first_logged_after(&peers, "became the job's primary", killed)
    })
    .await;
    eprintln!(
        "figure: takeover from SIGKILL of the primary: {} ms",
        took_over.as_millis()
    );
    let info = wait_job_end(&peers, &job, Duration::from_secs(420)).await;
    assert_optimal(&info, "primary killed");
    assert!(info.takeovers >= 1 || primary == 0, "{info:?}");
    assert_ne!(info.home, peers[primary].info.peer_id.to_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_submitter_loses_nothing() {
    let _serial = SERIAL.lock().await;
    let mut peers = five_peers("ft-submitter");
    formed(&peers).await;
    let job = submit(&peers[4], INSTANCE).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    eprintln!("killing the submitter");
    peers[4].kill();
    let info = wait_job_end(&peers, &job, Duration::from_secs(420)).await;
    assert_optimal(&info, "submitter killed");
    // `colony result JOB_ID` from another peer gives the same answer.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_colony"))
        .args([
            "result",
            &job,
            "--api",
            &peers[1].api().to_string(),
            "--data-dir",
            &peers[1].dir.display().to_string(),
            "--json",
        ])
        .output()
        .expect("colony result");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| serde_json::from_str(l).ok())
        .expect("json");
    assert_eq!(json["verified"], true, "{json}");
}
