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

/// The log lines, across `peers`, of units reissued because the peer
/// `victim_id` was lost.
fn victim_reissues(peers: &[PeerProc], victim_id: &str) -> Vec<String> {
    peers
        .iter()
        .flat_map(|p| {
            p.log()
                .lines()
                .filter(|line| {
                    line.contains("unit reissued from its last checkpoint")
                        && line.contains(&format!("lost={victim_id}"))
                })
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .collect()
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
    // The victim's units reissued before it leaves (a false suspicion on
    // a loaded machine) say nothing about the hand-back.
    let victim_id = peers[victim].info.peer_id.to_string();
    let reissued_before = victim_reissues(&peers, &victim_id);
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
    let info = wait_job_end(&peers, &job, Duration::from_secs(120)).await;
    assert_eq!(info.state, "done", "{info:?}");
    assert_eq!(info.verified, Some(true), "{info:?}");
    assert_eq!(info.units, info.units_done, "{info:?}");
    eprintln!(
        "figure: graceful leave: {} units, {} steals, {} reissued, work {} (exact {}), {:.1} s",
        info.units, info.steals, info.reissued, info.work, NQUEENS_16_WORK, info.elapsed_s
    );
    // Resumed from the handed-back state: no unit of the leaver was
    // reissued from an older checkpoint once it left.
    let logs: Vec<String> = peers.iter().map(|p| p.log()).collect();
    let reissues: Vec<&str> = logs
        .iter()
        .flat_map(|log| log.lines())
        .filter(|line| line.contains("unit reissued from its last checkpoint"))
        .collect();
    let lost_victim = format!("lost={victim_id}");
    let left_behind: Vec<&str> = reissues
        .iter()
        .copied()
        .filter(|line| line.contains(&lost_victim) && !reissued_before.iter().any(|b| b == line))
        .collect();
    assert!(
        left_behind.is_empty(),
        "a unit of the leaving peer was reissued after it left: {left_behind:#?} (before: {reissued_before:#?})"
    );
    // A unit on a worker merely suspected is reissued at once (checkpointed
    // jobs trade duplicate work for recovery time): on a loaded 2-core
    // machine a worker is sometimes suspected while the job starts. Only
    // without such a false suspicion must no node be explored twice.
    if reissues.is_empty() {
        assert_eq!(info.reissued, 0, "{info:?}");
        assert_eq!(info.work, NQUEENS_16_WORK, "no work redone: {info:?}");
    } else {
        eprintln!("not the leaver's, reissued after a false suspicion: {reissues:#?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_primary_paused_and_resumed_never_stalls_its_job() {
    let _serial = SERIAL.lock().await;
    let peers = start_network(
        &test_dir("pause-primary"),
        4,
        &["--cores".into(), "1".into()],
    );
    formed(&peers).await;
    for run in 0..3 {
        formed(&peers).await;
        let job = submit_nqueens(&peers[run % peers.len()], 16, 1).await;
        let info = wait_until(Duration::from_secs(10), "the job's record", || {
            job_info(&peers, &job)
        })
        .await;
        let primary = peers
            .iter()
            .position(|p| p.info.peer_id == info.home)
            .expect("the primary is one of ours");
        wait_until(Duration::from_secs(20), "units to run", || async {
            let info = job_info(&peers, &job).await?;
            (info.work > 0 && info.units >= 2).then_some(())
        })
        .await;
        eprintln!("run {run}: SIGSTOP to the primary, peer {primary}, for 10 s");
        peers[primary].signal("STOP");
        tokio::time::sleep(Duration::from_secs(10)).await;
        peers[primary].signal("CONT");
        let info = wait_job_end(&peers, &job, Duration::from_secs(90)).await;
        eprintln!(
            "figure: run {run}: primary paused 10 s: {} in {:.1} s, {} units, {} reissued, {} takeovers",
            info.state, info.elapsed_s, info.units, info.reissued, info.takeovers
        );
        assert_eq!(info.state, "done", "run {run}: {info:?}");
        assert_eq!(info.verified, Some(true), "run {run}: {info:?}");
        assert_eq!(info.units, info.units_done, "run {run}: {info:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_home_that_lost_its_majority_fails_the_job_clearly() {
    let _serial = SERIAL.lock().await;
    let mut peers = start_network(
        &test_dir("lost-majority"),
        4,
        &["--cores".into(), "1".into()],
    );
    formed(&peers).await;
    // Far too long to finish within the test.
    let job = submit_nqueens(&peers[0], 18, 1).await;
    let info = wait_until(
        Duration::from_secs(20),
        "the job's home to form",
        || async {
            let info = job_info(&peers, &job).await?;
            (info.home_members.len() == 3 && info.units >= 2).then_some(info)
        },
    )
    .await;
    let victims: Vec<usize> = (1..peers.len())
        .filter(|i| {
            info.home_members
                .contains(&peers[*i].info.peer_id.to_string())
        })
        .take(2)
        .collect();
    let survivor = (0..peers.len())
        .find(|i| {
            !victims.contains(i)
                && info
                    .home_members
                    .contains(&peers[*i].info.peer_id.to_string())
        })
        .expect("a third member");
    eprintln!("SIGKILL to home members {victims:?}; member {survivor} survives");
    let killed = std::time::Instant::now();
    for victim in &victims {
        peers[*victim].kill();
    }
    // Before it fails, the job says it waits: `colony jobs --json` at the
    // surviving member lists it running, with the lost majority and the
    // time left, and so does the submitter's view of it.
    let listed = wait_until(
        Duration::from_secs(20),
        "colony jobs to show the lost majority",
        || async {
            let out = std::process::Command::new(env!("CARGO_BIN_EXE_colony"))
                .args([
                    "jobs",
                    "--json",
                    "--api",
                    &peers[survivor].api().to_string(),
                    "--data-dir",
                    &peers[survivor].dir.display().to_string(),
                ])
                .output()
                .ok()?;
            let jobs: Vec<JobInfo> = serde_json::from_slice(&out.stdout).ok()?;
            jobs.into_iter()
                .find(|j| j.job_id == job && j.home_majority_lost.is_some())
        },
    )
    .await;
    let waited_s = killed.elapsed().as_secs_f64();
    let lost = listed.home_majority_lost.clone().expect("set");
    eprintln!(
        "figure: home majority lost: shown by colony jobs {waited_s:.1} s after the kill: {lost:?}"
    );
    assert_eq!(listed.state, "running", "{listed:?}");
    assert_eq!((lost.members_gone, lost.members), (2, 3), "{lost:?}");
    assert!(lost.fails_in_s > 0.0 && lost.fails_in_s <= 30.0, "{lost:?}");
    let waiting = listed.waiting().unwrap_or_default();
    assert!(waiting.contains("lost its majority"), "{waiting}");
    let seen = wait_until(
        Duration::from_secs(10),
        "the submitter to see the job wait",
        || async {
            let info = peers[0].job_info(&job).await?;
            (info.state == "running" && info.home_majority_lost.is_some()).then_some(info)
        },
    )
    .await;
    assert!(seen.waiting().is_some(), "{seen:?}");
    // The submitter hears of the failure, with the reason, within the
    // patience (30 s) plus the time to notice the deaths.
    let failed = wait_until(Duration::from_secs(60), "the job to fail", || async {
        let info = peers[0].job_info(&job).await?;
        (info.state != "running").then_some(info)
    })
    .await;
    eprintln!(
        "figure: home majority lost: the job failed {:.1} s after the kill: {:?}",
        killed.elapsed().as_secs_f64(),
        failed.error
    );
    assert_eq!(failed.state, "failed", "{failed:?}");
    let error = failed.error.clone().unwrap_or_default();
    assert!(error.contains("lost its majority"), "{error}");
    assert!(error.contains("2 of its 3 members"), "{error}");
    // The surviving member said so as soon as it saw the deaths.
    let log = peers[survivor].log();
    assert!(
        log.contains("the job's home lost its majority"),
        "the survivor warns: {log}"
    );
    // `colony result` from another peer fails with the reason.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_colony"))
        .args([
            "result",
            &job,
            "--api",
            &peers[0].api().to_string(),
            "--data-dir",
            &peers[0].dir.display().to_string(),
        ])
        .output()
        .expect("colony result");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("lost its majority"), "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_durable_job_survives_its_whole_home_restarting() {
    let _serial = SERIAL.lock().await;
    let mut peers = start_network(
        &test_dir("durable-home"),
        4,
        &["--cores".into(), "1".into()],
    );
    formed(&peers).await;
    let body = serde_json::json!({
        "app": "nqueens",
        "args": ["16"],
        "fault_tolerance": {"protocol": "checkpoint", "ttc_s": 1, "storage": "copies:2", "home_size": 3, "durable": true},
    });
    let job = peers[0].submit(body).await;
    let info = wait_until(
        Duration::from_secs(20),
        "the job to run a while",
        || async {
            let info = job_info(&peers, &job).await?;
            (info.home_members.len() == 3 && info.work >= NQUEENS_16_WORK / 10).then_some(info)
        },
    )
    .await;
    let members: Vec<usize> = (0..peers.len())
        .filter(|i| {
            info.home_members
                .contains(&peers[*i].info.peer_id.to_string())
        })
        .collect();
    assert_eq!(members.len(), 3, "{info:?}");
    let outsider = (0..peers.len())
        .find(|i| !members.contains(i))
        .expect("a peer outside the home");
    eprintln!("SIGKILL to the whole home {members:?}, then a restart");
    for m in &members {
        peers[*m].kill();
    }
    // Restarted with their data dirs; they find the network through the
    // peer that stayed.
    let via = peers[outsider].addr();
    for m in &members {
        peers[*m].restart_with(&["--bootstrap".into(), via.clone()]);
    }
    let info = wait_job_end(&peers, &job, Duration::from_secs(120)).await;
    eprintln!(
        "figure: whole durable home restarted: {} in {:.1} s, {} units, {} reissued, {} takeovers",
        info.state, info.elapsed_s, info.units, info.reissued, info.takeovers
    );
    assert_eq!(info.state, "done", "{info:?}");
    assert_eq!(info.verified, Some(true), "{info:?}");
    assert_eq!(info.units, info.units_done, "{info:?}");
    let restored = members.iter().any(|m| {
        peers[*m]
            .log()
            .contains("durable job records found on disk")
    });
    assert!(restored, "a restarted member read the record back");
}
