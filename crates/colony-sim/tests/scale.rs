//! The simulator at a size CI can afford: one seed of 200 peers, with every
//! fault kind (crashes among them), passes every invariant. Before the
//! per-event O(n) work went (whole member lists rebuilt on every
//! membership event, every slot scanned for the next wake-up, fault
//! schedules checked candidate by candidate), such a seed took about half a
//! minute; the count of events and wake-ups per peer is printed for
//! comparison across changes.

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
