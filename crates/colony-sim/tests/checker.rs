//! The checker can fail: deliberately broken runs are reported as
//! violations, with a replay line that names the breakage.

use colony_sim::{run, Broken, SimConfig};

#[test]
fn partitions_that_never_heal_break_membership_convergence() {
    let mut caught = 0;
    for seed in 0..10 {
        let mut config = SimConfig::new(seed);
        config.broken = Some(Broken::NeverHeal);
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
        assert!(config.replay_line().contains("--broken never-heal"));
        caught += 1;
    }
    assert!(caught >= 5, "too few seeds had partitions: {caught}");
}
