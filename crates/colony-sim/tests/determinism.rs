//! A seed replays bit for bit: the same seed gives the same event trace.

use colony_sim::{run, SimConfig, Workload};

#[test]
fn same_seed_same_trace() {
    for seed in [3, 77] {
        let config = SimConfig::new(seed);
        let a = run(&config);
        let b = run(&config);
        assert!(a.trace_entries > 1000, "the run did something");
        assert_eq!(a.trace_hash, b.trace_hash, "seed {seed} diverged");
        assert_eq!(a.trace_entries, b.trace_entries);
        assert_eq!(a.virtual_time, b.virtual_time);
        assert_eq!(a.faults, b.faults);
        assert_eq!(a.violations, b.violations);
    }
}

#[test]
fn different_seeds_differ() {
    let a = run(&SimConfig::new(1));
    let b = run(&SimConfig::new(2));
    assert_ne!(a.trace_hash, b.trace_hash);
}

#[test]
fn pipes_workload_replays_too() {
    let mut config = SimConfig::new(5);
    config.workload = Workload::Pipes;
    assert_eq!(run(&config).trace_hash, run(&config).trace_hash);
}
