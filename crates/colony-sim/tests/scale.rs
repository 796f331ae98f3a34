//! The simulator at a size CI can afford: one seed of 200 peers, with every
//! fault kind (crashes among them), passes every invariant. Before the
//! per-event O(n) work went (whole member lists rebuilt on every
//! membership event, every slot scanned for the next wake-up, fault
//! schedules checked candidate by candidate), such a seed took about half a
//! minute; the count of events and wake-ups per peer is printed for
//! comparison across changes. A second test runs 1,000 peers.

use colony_sim::{run, FaultKinds, SimConfig, Workload};

#[test]
fn two_hundred_peers_with_crashes_pass() {
    let mut config = SimConfig::new(1);
    config.peers = 200;
    config.faults = FaultKinds::all();
    config.workload = Workload::Job;
    let report = run(&config);
    let found: Vec<String> = report
        .violations
        .iter()
        .take(5)
        .map(|v| format!("{}: {v}", v.kind()))
        .collect();
    assert!(
        report.passed(),
        "{}\n    {}",
        config.replay_line(),
        found.join("\n    ")
    );
    assert!(report.faults.crashes > 0, "the seed crashes peers");
    assert!(report.job_time.is_some(), "the job finished");
    let peer_seconds = f64::from(config.peers) * report.virtual_time.as_secs_f64();
    eprintln!(
        "200 peers: {:.1}s virtual, {} events, {:.1} wake-ups per peer per virtual second",
        report.virtual_time.as_secs_f64(),
        report.events,
        report.wakeups as f64 / peer_seconds.max(1e-9)
    );
}

/// Issue 10's bar: one seed of 1,000 peers with crashes (and every other
/// fault kind) completes its job, every invariant holding, with progress
/// lines on stderr while it runs. `until_job` ends the seed once the
/// job's result is checked rather than waiting out the fault window and
/// the views' convergence. About 25 s of CPU in release, 620 MB (it took
/// over 10 minutes and 900 MB before issue 10). The same from the command
/// line:
///
/// ```text
/// cargo run -p colony-sim --release -- --seed 1 --peers 1000 --until-job --progress-secs 5
/// ```
#[test]
fn a_thousand_peers_with_crashes_complete_a_job() {
    let mut config = SimConfig::new(1);
    config.peers = 1000;
    config.faults = FaultKinds::all();
    config.workload = Workload::Job;
    config.until_job = true;
    config.progress = Some(std::time::Duration::from_secs(5));
    let report = run(&config);
    let found: Vec<String> = report
        .violations
        .iter()
        .take(5)
        .map(|v| format!("{}: {v}", v.kind()))
        .collect();
    assert!(
        report.passed(),
        "{}\n    {}",
        config.replay_line(),
        found.join("\n    ")
    );
    assert!(report.faults.crashes > 0, "the seed crashes peers");
    assert!(report.job_time.is_some(), "the job finished");
    eprintln!(
        "1,000 peers: job done and checked at {:.1}s virtual, {} events, {} crashes",
        report.virtual_time.as_secs_f64(),
        report.events,
        report.faults.crashes
    );
}
