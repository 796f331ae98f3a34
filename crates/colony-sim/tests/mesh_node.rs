//! The streaming mesh of seed 001 run through every peer's node
//! (`--workload mesh-node`): real membership, cells found by the join
//! protocol on the cell records, frames over the pipes of the faulty
//! network. A few seeds under FT_ALL must pass every check (no duplicate,
//! no frame of a covered sensor lost, every orphan rebinds in time, the
//! mesh heals) and must have had something to check; nodes run under
//! NO_FT and checked as FT_ALL must show lost frames. Kept to a few seeds
//! so that it stays cheap in a debug build; `colony-sim --workload
//! mesh-node --seeds 50` runs batches.

use std::time::Duration;

use colony_sim::mesh_node::MeshNodeStats;
use colony_sim::{run, Broken, FaultKinds, SimConfig, Workload};

/// Virtual fault window per seed: room for a few faults, short enough for
/// a debug build.
const WINDOW: Duration = Duration::from_secs(6);

fn config(seed: u64, faults: &str) -> SimConfig {
    let mut config = SimConfig::new(seed);
    config.workload = Workload::MeshNode;
    config.faults = faults
        .parse::<FaultKinds>()
        .unwrap_or_else(|e| panic!("{e}"));
    config.fault_window = WINDOW;
    config
}

/// Runs the seeds; panics with one replay line per failing seed.
fn all_pass(seeds: &[u64], faults: &str) -> MeshNodeStats {
    let mut failures = Vec::new();
    let mut stats = MeshNodeStats::default();
    for &seed in seeds {
        let config = config(seed, faults);
        let report = run(&config);
        failures.extend(report.failure());
        if let Some(s) = &report.mesh {
            stats.add(s);
        }
    }
    assert!(
        failures.is_empty(),
        "{} failing seeds:\n{}",
        failures.len(),
        failures.join("\n")
    );
    stats
}

#[test]
fn mesh_through_nodes_survives_crashes_and_every_fault() {
    let stats = all_pass(&[0, 1, 2, 3, 4, 5, 6, 7], "crash");
    // Something was checked: frames flowed, super-peers died, children
    // were orphaned and rebound, covered streams were checked for loss.
    assert!(stats.admitted >= 8 * 14, "{stats:?}");
    assert!(stats.delivered > 1_000, "{stats:?}");
    assert!(
        stats.stopped > 0 && stats.orphans > 0 && stats.rebinds > 0,
        "{stats:?}"
    );
    assert!(stats.streams_checked > 0, "{stats:?}");
    let stats = all_pass(&[0, 1, 2, 3, 4], "all");
    assert!(
        stats.delivered > 2_000 && stats.streams_checked > 0,
        "{stats:?}"
    );
}

/// The checker can fail: nodes under NO_FT lose frames when super-peers
/// crash, and the loss check, run as if under FT_ALL, says so.
#[test]
fn mesh_through_nodes_without_ft_loses_frames() {
    let mut config = config(1, "crash");
    config.broken = Some(Broken::MeshNoFt);
    let report = run(&config);
    assert!(
        report.violations.iter().any(|v| v.kind() == "mesh-lost"),
        "NO_FT lost nothing: {}",
        config.replay_line()
    );
    for v in &report.violations {
        assert_eq!(v.kind(), "mesh-lost", "{}: {v}", config.replay_line());
    }
}
