//! A seed replays bit for bit: the same seed gives the same event trace.

use colony_sim::{run, FaultKinds, SimConfig, Workload};

fn assert_replays(config: &SimConfig) {
    let a = run(config);
    let b = run(config);
    assert!(a.trace_entries > 1000, "the run did something");
    assert_eq!(
        a.trace_hash,
        b.trace_hash,
        "{} diverged",
        config.replay_line()
    );
    assert_eq!(a.trace_entries, b.trace_entries);
    assert_eq!(a.virtual_time, b.virtual_time);
    assert_eq!(a.faults, b.faults);
    assert_eq!(a.violations, b.violations);
    assert_eq!(a.job_stats, b.job_stats);
}

#[test]
fn same_seed_same_trace_with_every_fault() {
    for seed in [3, 77] {
        assert_replays(&SimConfig::new(seed));
    }
}

#[test]
fn pipes_workload_replays_too() {
    let mut config = SimConfig::new(5);
    config.workload = Workload::Pipes;
    assert_replays(&config);
}

#[test]
fn nqueens_replays_too() {
    let mut config = SimConfig::new(6);
    config.workload = Workload::NQueens;
    config.faults = FaultKinds::all();
    assert_replays(&config);
}

#[test]
fn space_workload_replays_too() {
    let mut config = SimConfig::new(8);
    config.workload = Workload::Space;
    config.peers = 8;
    let a = run(&config);
    assert_replays(&config);
    assert!(a.space.is_some_and(|s| s.calls > 50), "the clients called");
}

#[test]
fn different_seeds_differ() {
    let a = run(&SimConfig::new(1));
    let b = run(&SimConfig::new(2));
    assert_ne!(a.trace_hash, b.trace_hash);
}
