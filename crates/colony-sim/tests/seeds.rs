//! Many seeds with every fault kind: every invariant holds. The seeds are
//! split over two tests so the two cores of CI share them.

use colony_sim::{run, SimConfig, Workload};

fn run_seeds(seeds: impl Iterator<Item = u64>, workload: Workload) {
    let mut failures = Vec::new();
    for seed in seeds {
        let mut config = SimConfig::new(seed);
        config.workload = workload;
        let report = run(&config);
        if !report.passed() {
            let kinds: Vec<String> = report.violations.iter().map(|v| v.to_string()).collect();
            failures.push(format!(
                "{}\n    {}",
                config.replay_line(),
                kinds.join("\n    ")
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "failing seeds:\n{}",
        failures.join("\n")
    );
}

#[test]
fn pipes_even_seeds() {
    run_seeds((0..200).step_by(2), Workload::Pipes);
}

#[test]
fn pipes_odd_seeds() {
    run_seeds((1..200).step_by(2), Workload::Pipes);
}
