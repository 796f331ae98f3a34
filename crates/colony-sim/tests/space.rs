//! The object space under every fault kind: each seed's history of client
//! calls is linearizable, fencing tokens only rise, and every object reads
//! back, after the faults, as the acknowledged writes left it. A core that
//! answers reads from any replica is caught.

use colony_sim::space::SpaceStats;
use colony_sim::{run, Broken, FaultCounts, FaultKinds, SimConfig, SpaceFaults, Workload};

/// A space seed: 8 peers, 4 clients of 40 calls each, every fault kind.
fn space_config(seed: u64, limits: SpaceFaults) -> SimConfig {
    let mut config = SimConfig::new(seed);
    config.workload = Workload::Space;
    config.peers = 8;
    config.space_clients = 4;
    config.space_calls = 40;
    config.space_faults = limits;
    config
}

/// Runs the seeds; fails with one replay line per failing seed. Returns
/// what the workloads did and the faults injected, summed.
fn run_seeds(
    seeds: impl Iterator<Item = u64>,
    config_of: impl Fn(u64) -> SimConfig,
) -> (u64, SpaceStats, FaultCounts) {
    let mut failures = Vec::new();
    let mut stats = SpaceStats::default();
    let mut faults = FaultCounts::default();
    let mut runs = 0;
    for seed in seeds {
        let config = config_of(seed);
        let report = run(&config);
        runs += 1;
        faults.add(&report.faults);
        if let Some(s) = &report.space {
            stats.calls += s.calls;
            stats.unanswered += s.unanswered;
            stats.written += s.written;
            stats.refused += s.refused;
            stats.granted += s.granted;
            stats.final_reads += s.final_reads;
        }
        failures.extend(report.failure());
    }
    assert!(
        failures.is_empty(),
        "{} failing seeds:\n{}",
        failures.len(),
        failures.join("\n")
    );
    (runs, stats, faults)
}

/// The batch did what it claims: every fault kind happened, calls were
/// written, refused, granted and left without answer, and every object was
/// read back at the end of every seed.
fn assert_exercised(runs: u64, stats: &SpaceStats, faults: &FaultCounts) {
    assert!(
        faults.crashes > 0 && faults.pauses > 0 && faults.partitions > 0,
        "{faults:?}"
    );
    assert!(faults.lost > 0 && faults.duplicated > 0 && faults.reordered > 0);
    assert!(
        stats.written > 0 && stats.refused > 0 && stats.granted > 0,
        "{stats:?}"
    );
    assert!(
        stats.unanswered > 0,
        "no call was left without answer: {stats:?}"
    );
    assert_eq!(
        stats.final_reads,
        3 * runs,
        "every object read back in every seed"
    );
}

/// At most a minority of each used partition's home down at once, as the
/// simulator limits faults for a job's home.
#[test]
fn space_with_all_faults_even_seeds() {
    let (runs, stats, faults) = run_seeds((0..80).step_by(2), |seed| {
        space_config(seed, SpaceFaults::Minority)
    });
    assert_exercised(runs, &stats, &faults);
}

/// The other half of [`space_with_all_faults_even_seeds`].
#[test]
fn space_with_all_faults_odd_seeds() {
    let (runs, stats, faults) = run_seeds((1..80).step_by(2), |seed| {
        space_config(seed, SpaceFaults::Minority)
    });
    assert_exercised(runs, &stats, &faults);
}

/// Whole homes may go down (a quarter of the peers at once): partitions
/// are durable, so every answer given must still hold.
#[test]
fn space_with_whole_homes_down() {
    let (runs, stats, faults) = run_seeds(100..140, |seed| space_config(seed, SpaceFaults::Any));
    assert_exercised(runs, &stats, &faults);
}

/// A client on every peer and partitions on top of network faults: where
/// a member answering from its own replica, cut off from the others, is
/// read by its own client.
fn local_reads_config(seed: u64, broken: Option<Broken>) -> SimConfig {
    let mut config = space_config(seed, SpaceFaults::Any);
    config.space_clients = 8;
    config.faults = "loss,dup,reorder,partition"
        .parse::<FaultKinds>()
        .expect("kinds");
    config.broken = broken;
    config
}

/// The same seeds pass with the real core and fail when its members answer
/// reads from their own replica without the leadership round: the check
/// catches stale reads.
#[test]
fn stale_local_reads_are_caught() {
    let seeds = 0..80;
    run_seeds(seeds.clone(), |seed| local_reads_config(seed, None));
    let mut caught = Vec::new();
    for seed in seeds {
        let config = local_reads_config(seed, Some(Broken::LocalReads));
        assert!(config.replay_line().contains("--broken local-reads"));
        let report = run(&config);
        if report
            .violations
            .iter()
            .any(|v| v.kind() == "space-not-linearizable")
        {
            caught.push(seed);
        }
    }
    assert!(
        caught.len() >= 3,
        "stale reads caught in seeds {caught:?} only"
    );
}
