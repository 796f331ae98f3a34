//! The checker can fail: deliberately broken runs are reported as
//! violations, with a replay line that names the breakage.

use colony_sim::{run, Broken, FaultKinds, SimConfig};

fn broken_runs(
    broken: Broken,
    faults: FaultKinds,
    seeds: std::ops::Range<u64>,
) -> Vec<Vec<&'static str>> {
    seeds
        .map(|seed| {
            let mut config = SimConfig::new(seed);
            config.broken = Some(broken);
            config.faults = faults;
            assert!(config.replay_line().contains(&format!("--broken {broken}")));
            let report = run(&config);
            report.violations.iter().map(|v| v.kind()).collect()
        })
        .collect()
}

fn network_faults() -> FaultKinds {
    "loss,dup,reorder".parse().expect("fault kinds")
}

#[test]
fn lost_divided_parts_give_a_wrong_result() {
    for kinds in broken_runs(Broken::DropParts, network_faults(), 0..5) {
        assert!(kinds.contains(&"wrong-result"), "{kinds:?}");
    }
}

#[test]
fn crashing_the_whole_home_at_once_is_caught() {
    for kinds in broken_runs(Broken::HomeOverkill, network_faults(), 0..5) {
        assert!(
            kinds.iter().any(|k| matches!(
                *k,
                "job-not-finished" | "job-failed" | "query-unanswered" | "wrong-result"
            )),
            "{kinds:?}"
        );
    }
}

#[test]
fn no_checkpoints_while_workers_crash_fails_the_job() {
    let runs = broken_runs(Broken::NoCheckpoints, "crash".parse().expect("kinds"), 0..8);
    let caught = runs.iter().filter(|kinds| !kinds.is_empty()).count();
    assert!(caught >= 6, "only {caught} of 8 caught: {runs:?}");
}

#[test]
fn partitions_that_never_heal_break_membership_convergence() {
    let mut caught = 0;
    for seed in 0..10 {
        let mut config = SimConfig::new(seed);
        config.broken = Some(Broken::NeverHeal);
        config.faults = "partition".parse().expect("kinds");
        config.workload = colony_sim::Workload::Pipes;
        let report = run(&config);
        if report.faults.partitions == 0 {
            continue;
        }
        assert!(
            report
                .violations
                .iter()
                .any(|v| v.kind() == "views-diverged"),
            "seed {seed}: {:?}",
            report.violations
        );
        caught += 1;
    }
    assert!(caught >= 5, "too few seeds had partitions: {caught}");
}
