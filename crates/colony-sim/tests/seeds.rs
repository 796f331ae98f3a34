//! Many seeds of 20 peers: every invariant holds. Each batch is split over
//! two tests so the two cores of CI share it. A failure lists one replay
//! line per failing seed.

use colony_sim::{run, FaultKinds, SimConfig, Workload};

fn run_seeds(seeds: impl Iterator<Item = u64>, workload: Workload, faults: FaultKinds) {
    let mut failures = Vec::new();
    for seed in seeds {
        let mut config = SimConfig::new(seed);
        config.workload = workload;
        config.faults = faults;
        let report = run(&config);
        failures.extend(report.failure());
    }
    assert!(
        failures.is_empty(),
        "{} failing seeds:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// The job with every fault kind — loss, duplication, reordering,
/// partitions, crashes with restart, pauses: the simulator's main promise.
#[test]
fn job_all_faults_even_seeds() {
    run_seeds((0..500).step_by(2), Workload::Job, FaultKinds::all());
}

/// The other half of [`job_all_faults_even_seeds`].
#[test]
fn job_all_faults_odd_seeds() {
    run_seeds((1..500).step_by(2), Workload::Job, FaultKinds::all());
}

#[test]
fn membership_and_pipes_with_all_faults_even_seeds() {
    run_seeds((0..500).step_by(2), Workload::Pipes, FaultKinds::all());
}

#[test]
fn membership_and_pipes_with_all_faults_odd_seeds() {
    run_seeds((1..500).step_by(2), Workload::Pipes, FaultKinds::all());
}

/// A real application (colony-apps' N-Queens, checked against the known
/// count) under every fault kind.
#[test]
fn nqueens_with_all_faults() {
    run_seeds(0..10, Workload::NQueens, FaultKinds::all());
}
