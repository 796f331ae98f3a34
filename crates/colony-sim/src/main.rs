//! `colony-sim`: runs many seeds of the deterministic simulator and reports
//! failures as one-line replay commands.
//!
//! ```text
//! cargo run -p colony-sim --release -- --seeds 1000 --peers 50
//! cargo run -p colony-sim --release -- --seed 1234 --peers 20 --faults all
//! ```

use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Parser;
use colony_sim::{
    run, Broken, FaultCounts, FaultKinds, ProtocolChoice, SimConfig, SpaceFaults, Workload,
};

/// Deterministic simulation of Colony peers in virtual time: the real
/// protocol cores on a seeded faulty network, with invariants checked on
/// every run. A failing seed prints one line that replays it exactly.
#[derive(Parser, Debug)]
#[command(name = "colony-sim", version)]
struct Cli {
    /// How many seeds to run, starting at --start-seed.
    #[arg(long, default_value_t = 100)]
    seeds: u64,
    /// First seed of a --seeds batch.
    #[arg(long, default_value_t = 0)]
    start_seed: u64,
    /// Run exactly this seed, printing the faults applied and notable
    /// events as they happen (overrides --seeds).
    #[arg(long)]
    seed: Option<u64>,
    /// Number of simulated peers.
    #[arg(long, default_value_t = 20)]
    peers: u32,
    /// Fault kinds: "all", "none", or a list of
    /// loss,dup,reorder,partition,crash,pause.
    #[arg(long, default_value = "all")]
    faults: FaultKinds,
    /// What the peers do: "job" (a rangesum job checked against the direct
    /// sum), "nqueens" (colony-apps' N-Queens, checked against the known
    /// count), "pipes" (membership and application messages only) or
    /// "space" (clients calling the object space, their history checked
    /// for linearizability, fencing and durability) or "objects" (clients
    /// creating and calling distributed objects, checked for exactly-once
    /// execution, one activation at a time and liveness after the faults)
    /// or "mesh" (seed 001's streaming mesh of super-peers, sensors and a
    /// client, checked for duplicates, loss, rebinds and healing: the bare
    /// mesh cores with cells assigned and membership played by the
    /// simulator) or "mesh-node" (the same mesh and checks run through
    /// every peer's node: real membership, cells found by the join
    /// protocol, pipes; --peers is ignored, the tree sets the count; a
    /// super-peer wrongly declared dead takes its place again, and a
    /// crashed one restarts without its state and joins as a newcomer).
    #[arg(long, default_value = "job")]
    workload: Workload,
    /// With --workload space: how many clients call the space, each on a
    /// peer of its own while there are enough.
    #[arg(long, default_value_t = 3)]
    space_clients: u32,
    /// With --workload space: about how many calls each client makes over
    /// the fault window (reads, writes, compare-and-sets, deletes, lock
    /// sequences), before the final read of every object.
    #[arg(long, default_value_t = 40)]
    space_calls: u32,
    /// With --workload space: "minority" (at most a minority of each used
    /// partition's home down at once, as for a job's home) or "any" (only
    /// the quarter-of-the-peers limit: whole homes may go down, and every
    /// acknowledged answer must still hold).
    #[arg(long, default_value = "minority")]
    space_faults: SpaceFaults,
    /// With --workload objects: how many clients call the objects, each on
    /// a peer of its own while there are enough.
    #[arg(long, default_value_t = 3)]
    object_clients: u32,
    /// With --workload objects: about how many additions each client makes
    /// over the fault window, one at a time, before the final reads.
    #[arg(long, default_value_t = 40)]
    object_calls: u32,
    /// With --workload objects: the objects' fault tolerance, "pml" (every
    /// acknowledged call exactly once), "checkpoint" or "none" (failures
    /// must be errors, never wrong answers), or "cic" (clients drive an
    /// application of objects, which must reach its fault-free answer).
    #[arg(long, default_value = "pml")]
    object_protocol: ProtocolChoice,
    /// With --workload objects: fail a seed where two peers' activations of
    /// an object executed over overlapping spans (a cut-off or paused
    /// primary executing what it can never commit); without it they are
    /// counted.
    #[arg(long)]
    strict_activations: bool,
    /// With --workload mesh or mesh-node: the fault-tolerance policy, "ft_all" (every
    /// class replicated), "ft_event_video", "ft_event" or "no_ft".
    #[arg(long, default_value = "ft_all")]
    ft_policy: colony_core::mesh::FtPolicy,
    /// With --workload mesh or mesh-node: children per cell in the tree of cells.
    #[arg(long, default_value_t = 2)]
    mesh_span: u8,
    /// With --workload mesh or mesh-node: levels of cells, the root's included.
    #[arg(long, default_value_t = 3)]
    mesh_levels: usize,
    /// With --workload mesh or mesh-node: super-peers per cell.
    #[arg(long, default_value_t = 2)]
    mesh_cell_size: u32,
    /// With --workload mesh or mesh-node: sensors per leaf cell.
    #[arg(long, default_value_t = 2)]
    mesh_sensors: u32,
    /// With --workload mesh or mesh-node: the seed's frame rates (events 25/s, audio
    /// 38/s, video 24/s) are divided by this, so a seed runs fast.
    #[arg(long, default_value_t = 4)]
    mesh_rate_divisor: u32,
    /// How long faults go on, in virtual milliseconds.
    #[arg(long)]
    fault_window_ms: Option<u64>,
    /// Break the run on purpose, to see the checker catch it:
    /// "never-heal" (partitions stay), "home-overkill" (the whole home
    /// crashes at once), "drop-parts" (divided parts are lost),
    /// "no-checkpoints" (protocol none while workers and the job's primary
    /// crash), "local-reads" (space homes answer reads from any replica,
    /// without the leadership round: stale reads), "objects-no-log" (the
    /// objects run under checkpoint but are checked as pml),
    /// "objects-solo-homes" (a restarted peer makes itself the only member
    /// of its objects' homes: two primaries), "mesh-no-ft" (the mesh's
    /// cores run under no_ft and are checked as ft_all).
    #[arg(long)]
    broken: Option<Broken>,
    /// With --seed: also log every job message about this unit.
    #[arg(long)]
    trace_unit: Option<u64>,
    /// With --seed: also log every replica message of the job's home.
    #[arg(long)]
    trace_replicas: bool,
    /// Print a line per seed, not only failures.
    #[arg(long)]
    each: bool,
    /// While a seed runs longer than this many wall-clock seconds, print
    /// a progress line to stderr every so often (virtual time, events,
    /// live peers, the job's units); 0 turns it off.
    #[arg(long, default_value_t = 5)]
    progress_secs: u64,
    /// End each seed once its job's result is checked, without waiting
    /// for the fault window to end and the views to converge (see
    /// `SimConfig::until_job`): for 1,000 peers and more.
    #[arg(long)]
    until_job: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config_for = |seed: u64, verbose: bool| {
        let mut config = SimConfig::new(seed);
        config.peers = cli.peers;
        config.faults = cli.faults;
        config.workload = cli.workload;
        config.verbose = verbose;
        config.broken = cli.broken;
        config.trace_unit = cli.trace_unit;
        config.trace_replicas = cli.trace_replicas;
        config.progress = (cli.progress_secs > 0).then(|| Duration::from_secs(cli.progress_secs));
        config.until_job = cli.until_job;
        config.space_clients = cli.space_clients;
        config.space_calls = cli.space_calls;
        config.space_faults = cli.space_faults;
        config.object_clients = cli.object_clients;
        config.object_calls = cli.object_calls;
        config.object_protocol = cli.object_protocol;
        config.strict_activations = cli.strict_activations;
        config.mesh_policy = cli.ft_policy;
        config.mesh_span = cli.mesh_span;
        config.mesh_levels = cli.mesh_levels;
        config.mesh_cell_size = cli.mesh_cell_size;
        config.mesh_sensors = cli.mesh_sensors;
        config.mesh_rate_divisor = cli.mesh_rate_divisor;
        if let Some(ms) = cli.fault_window_ms {
            config.fault_window = Duration::from_millis(ms);
        }
        config
    };
    let seeds: Vec<(u64, bool)> = match cli.seed {
        Some(seed) => vec![(seed, true)],
        None => (cli.start_seed..cli.start_seed + cli.seeds)
            .map(|s| (s, false))
            .collect(),
    };
    let started = Instant::now();
    let mut failures = 0u64;
    let mut virtual_time = Duration::ZERO;
    let mut faults = FaultCounts::default();
    let mut frames = 0u64;
    let mut app = (0u64, 0u64);
    let mut early_lost = 0u64;
    let mut jobs = (0u64, Duration::ZERO, 0u64, 0u64, 0u64, 0u64);
    let mut early_example: Option<String> = None;
    let mut space = colony_sim::space::SpaceStats::default();
    let mut space_seeds = 0u64;
    let mut objects = colony_sim::objects::ObjectStats::default();
    let mut object_seeds = 0u64;
    let mut mesh = colony_sim::mesh_node::MeshNodeStats::default();
    let mut mesh_seeds = 0u64;
    let mut overlap_example: Option<String> = None;
    let mut by_kind: std::collections::BTreeMap<&'static str, (u64, String)> =
        std::collections::BTreeMap::new();
    let total = seeds.len();
    for (i, (seed, verbose)) in seeds.into_iter().enumerate() {
        let config = config_for(seed, verbose);
        let report = run(&config);
        virtual_time += report.virtual_time;
        faults.add(&report.faults);
        frames += report.frames;
        app.0 += report.app_messages.0;
        app.1 += report.app_messages.1;
        early_lost += report.early_receipts_lost;
        if let (Some(time), Some(stats)) = (report.job_time, &report.job_stats) {
            jobs.0 += 1;
            jobs.1 += time;
            jobs.2 += stats.reissued;
            jobs.3 += stats.takeovers;
        }
        if let Some(stats) = &report.space {
            space_seeds += 1;
            space.calls += stats.calls;
            space.unanswered += stats.unanswered;
            space.written += stats.written;
            space.refused += stats.refused;
            space.granted += stats.granted;
            space.final_reads += stats.final_reads;
        }
        if let Some(stats) = &report.objects {
            object_seeds += 1;
            objects.add(stats);
            if stats.overlapping > 0 && overlap_example.is_none() {
                overlap_example = Some(config.replay_line());
            }
        }
        if let Some(stats) = &report.mesh {
            mesh_seeds += 1;
            mesh.add(stats);
        }
        jobs.4 += report.merged_twice;
        jobs.5 += report.checkpoints_lost_allowed;
        if report.early_receipts_lost > 0 && early_example.is_none() {
            early_example = Some(config.replay_line());
        }
        if !report.passed() {
            failures += 1;
            let mut kinds: Vec<&'static str> = report.violations.iter().map(|v| v.kind()).collect();
            kinds.dedup();
            for kind in kinds {
                let entry = by_kind.entry(kind).or_insert((0, config.replay_line()));
                entry.0 += 1;
            }
            println!("FAIL {}", config.replay_line());
            let shown = if verbose { usize::MAX } else { 5 };
            for v in report.violations.iter().take(shown) {
                println!("     {}: {v}", v.kind());
            }
            if report.violations.len() > shown {
                println!("     … and {} more", report.violations.len() - shown);
            }
        } else if cli.each || verbose {
            println!(
                "ok   seed {seed}: {:.1}s virtual, job {}, trace {:016x} ({} entries), {} events, {:.1} wake-ups per peer per virtual second",
                report.virtual_time.as_secs_f64(),
                match (&report.space, report.job_time) {
                    (_, _) if report.objects.is_some() => {
                        let o = report.objects.clone().unwrap_or_default();
                        format!(
                            "none; objects: {} additions ({} acknowledged, {} failed, {} without answer), {} final reads",
                            o.calls, o.acked, o.failed, o.unanswered, o.final_reads
                        )
                    }
                    (Some(space), _) => format!(
                        "none; space: {} calls ({} without answer), {} final reads",
                        space.calls, space.unanswered, space.final_reads
                    ),
                    (None, Some(t)) => format!("done at {:.1}s", t.as_secs_f64()),
                    (None, None) => "without a result".to_string(),
                },
                report.trace_hash,
                report.trace_entries,
                report.events,
                report.wakeups as f64
                    / f64::from(cli.peers.max(1))
                    / report.virtual_time.as_secs_f64().max(1e-9)
            );
        }
        if !verbose && (i + 1) % 50 == 0 {
            eprintln!("{} / {total} seeds, {failures} failed", i + 1);
        }
    }
    let wall = started.elapsed();
    let per_minute = total as f64 / wall.as_secs_f64().max(1e-9) * 60.0;
    println!(
        "{total} seeds, {failures} failed, {:.1}s wall ({per_minute:.0} seeds/minute), {:.0}s virtual ({:.0}x real time)",
        wall.as_secs_f64(),
        virtual_time.as_secs_f64(),
        virtual_time.as_secs_f64() / wall.as_secs_f64().max(1e-9)
    );
    println!(
        "faults: {} crashes, {} pauses, {} partitions ({} frames cut), {} frames lost, {} duplicated, {} reordered",
        faults.crashes,
        faults.pauses,
        faults.partitions,
        faults.cut,
        faults.lost,
        faults.duplicated,
        faults.reordered
    );
    println!(
        "traffic: {frames} frames; {} application messages sent, {} delivered",
        app.0, app.1
    );
    if jobs.0 > 0 {
        println!(
            "jobs: {} finished and checked, {:.1}s virtual on average, {} units reissued, {} takeovers, {} units merged by two primaries, {} checkpoints lost beyond tolerance (allowed)",
            jobs.0,
            jobs.1.as_secs_f64() / jobs.0 as f64,
            jobs.2,
            jobs.3,
            jobs.4,
            jobs.5
        );
    }
    if space_seeds > 0 {
        println!(
            "space: {} calls over {space_seeds} seeds ({} without answer), {} writes applied, {} refused, {} locks granted, {} final reads",
            space.calls,
            space.unanswered,
            space.written,
            space.refused,
            space.granted,
            space.final_reads
        );
    }
    if object_seeds > 0 {
        println!(
            "objects: {} additions over {object_seeds} seeds ({} acknowledged, {} failed with an error, {} without answer), {} final reads; {} executions over {} activations sampled",
            objects.calls,
            objects.acked,
            objects.failed,
            objects.unanswered,
            objects.final_reads,
            objects.executions,
            objects.activations
        );
    }
    if mesh_seeds > 0 {
        println!(
            "mesh-node: {} frames accepted by sensors over {mesh_seeds} seeds ({} refused), {} delivered at the client; {} super-peers admitted, {} stopped; {} orphans, {} rebinds; {} replicated streams checked for loss",
            mesh.sent,
            mesh.refused,
            mesh.delivered,
            mesh.admitted,
            mesh.stopped,
            mesh.orphans,
            mesh.rebinds,
            mesh.streams_checked
        );
    }
    if let Some(example) = overlap_example {
        println!(
            "{} pairs of activations executed over overlapping spans (a primary executing past its lease; --strict-activations fails them), e.g. {example}",
            objects.overlapping
        );
    }
    if !by_kind.is_empty() {
        println!("failures by invariant:");
    }
    for (kind, (seeds, example)) in &by_kind {
        println!("  {kind}: {seeds} seeds, e.g. {example}");
    }
    if let Some(example) = early_example {
        println!(
            "known pipe issue: {early_lost} receipted messages never delivered (receipt on a selective ack, then a crash or death declaration), e.g. {example}"
        );
    }
    if failures > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
