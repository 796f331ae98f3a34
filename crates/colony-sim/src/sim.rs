//! The simulated world: peers, their disks, a faulty network and a fault
//! schedule, all in virtual time and all drawn from one seed.
//!
//! Time is one base [`Instant`] plus a virtual offset; the real clock is
//! never read after the base is taken. Everything is ordered (BTreeMap,
//! Vec; no HashMap iteration) so a seed replays bit for bit.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::str::FromStr;
use std::time::{Duration, Instant};

use colony_apps::native_guest::{decode, encode};
use colony_core::ft::{CheckpointStorage, FaultTolerance, FtProtocol};
use colony_core::job::{JobEvent, JobId, JobState, JobView, Piece, PieceKey};
use colony_core::membership::MemberState;
use colony_core::mesh::{FtPolicy, StreamClass};
use colony_core::node::NodeOutput;
use colony_core::object::{Guid, StoredObject};
use colony_core::space::{partition_point, PartitionId, SpaceOp, Unpersisted};

use crate::app::{RangeParams, RangeSum};
use crate::check::{PipeChecker, Violation};
use crate::exec::ExecSpeed;
use crate::faults::{FaultAction, FaultKinds, NetParams, Schedule, ScheduleLimits};
use crate::mesh_node::{EndState, MeshNodeStats, MeshNodeWorkload};
use crate::objects::{ObjectStats, ObjectsWorkload, ProtocolChoice};
use crate::peer::{key_of, Action, PeerSettings, PeerStart, SimPeer, StoredPartition};
use crate::rng::{derive, SimRng};
use crate::space::{SpaceStats, SpaceWorkload, CALL_TIMEOUT, FINAL_ATTEMPTS, FINAL_TIMEOUT};
use crate::trace::{fnv1a, Trace};

/// What the simulated peers do besides keeping up membership (they always
/// exchange application messages on the pipes too).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Workload {
    /// One `rangesum` job, checked against the direct sum.
    Job,
    /// One colony-apps `nqueens` job, checked against the known count.
    NQueens,
    /// Membership and application messages on the pipes only.
    Pipes,
    /// Clients on some peers call the object space (reads, writes,
    /// compare-and-sets, deletes, locks); the history is checked for
    /// linearizability and durability ([`crate::space`]).
    Space,
    /// Clients on some peers create a few distributed objects and call
    /// them; their answers and the objects' final states are checked for
    /// exactly-once execution, one activation at a time and liveness
    /// ([`crate::objects`]).
    Objects,
    /// The streaming mesh of seed 001: sensors stream through cells of
    /// super-peers to a client; checked for duplicates, loss in
    /// replicated classes, rebinds and healing ([`crate::mesh`]).
    Mesh,
    /// The same streaming mesh run through every peer's node on this
    /// world's network: real membership, join protocol on the cell
    /// records, pipes; same invariants ([`crate::mesh_node`]).
    MeshNode,
}

impl fmt::Display for Workload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Workload::Job => write!(f, "job"),
            Workload::NQueens => write!(f, "nqueens"),
            Workload::Pipes => write!(f, "pipes"),
            Workload::Space => write!(f, "space"),
            Workload::Objects => write!(f, "objects"),
            Workload::Mesh => write!(f, "mesh"),
            Workload::MeshNode => write!(f, "mesh-node"),
        }
    }
}

impl FromStr for Workload {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "job" => Ok(Workload::Job),
            "nqueens" => Ok(Workload::NQueens),
            "pipes" => Ok(Workload::Pipes),
            "space" => Ok(Workload::Space),
            "objects" => Ok(Workload::Objects),
            "mesh" => Ok(Workload::Mesh),
            "mesh-node" => Ok(Workload::MeshNode),
            other => Err(format!(
                "unknown workload {other:?}; use job, nqueens, pipes, space, objects, mesh or mesh-node"
            )),
        }
    }
}

/// How the space workload's faults are limited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SpaceFaults {
    /// As for a job's home: at most a minority of the home zone of each
    /// partition the clients use (its home and the next peer) down at once,
    /// each counted for a grace period after it is back.
    Minority,
    /// Only the limits every run has (a quarter of the peers down at once):
    /// a whole home may be down. Every acknowledged answer must still hold,
    /// since partitions are durable; only availability may suffer until the
    /// faults end.
    Any,
}

impl fmt::Display for SpaceFaults {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SpaceFaults::Minority => write!(f, "minority"),
            SpaceFaults::Any => write!(f, "any"),
        }
    }
}

impl FromStr for SpaceFaults {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "minority" => Ok(SpaceFaults::Minority),
            "any" => Ok(SpaceFaults::Any),
            other => Err(format!(
                "unknown space fault limit {other:?}; use minority or any"
            )),
        }
    }
}

/// A deliberately broken configuration, to show the checker catches what
/// it should: each one must produce violations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Broken {
    /// Partitions never heal: membership cannot converge.
    NeverHeal,
    /// Mid-run, every member of the job's home crashes at once (more than
    /// any setting tolerates), and checkpoints are not durable.
    HomeOverkill,
    /// The executor divides units but reports no part: the work given away
    /// is lost, so the result is wrong.
    DropParts,
    /// The job runs without checkpoints (protocol `none`) while workers
    /// crash, and its primary crashes too: a unit lost with its worker after
    /// the primary that handed it out cannot restart.
    NoCheckpoints,
    /// Every member of a space partition's home answers reads from its own
    /// replica, without the round that proves a primary still leads
    /// (`SpaceConfig::unsafe_local_reads`): reads can be stale.
    LocalReads,
    /// The objects workload creates its objects under `checkpoint` (no
    /// message log) but checks them as `pml`: acknowledged calls are lost
    /// in a crash, and answered again from an older state.
    ObjectsNoLog,
    /// A restarted peer reads its object records back as homes of its
    /// own (itself their only member): it elects itself and serves the
    /// object beside the real home, two primaries committing apart.
    ObjectsSoloHomes,
    /// Object primaries whose lease never ends: a primary cut off or
    /// paused goes on executing beside its successor.
    ObjectsNoLease,
    /// The mesh's cores run under NO_FT (nothing replicated, nothing kept
    /// by the sensors) while the run is checked as FT_ALL: crashes must
    /// show lost frames.
    MeshNoFt,
}

impl fmt::Display for Broken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Broken::NeverHeal => write!(f, "never-heal"),
            Broken::HomeOverkill => write!(f, "home-overkill"),
            Broken::DropParts => write!(f, "drop-parts"),
            Broken::NoCheckpoints => write!(f, "no-checkpoints"),
            Broken::LocalReads => write!(f, "local-reads"),
            Broken::ObjectsNoLog => write!(f, "objects-no-log"),
            Broken::ObjectsSoloHomes => write!(f, "objects-solo-homes"),
            Broken::ObjectsNoLease => write!(f, "objects-no-lease"),
            Broken::MeshNoFt => write!(f, "mesh-no-ft"),
        }
    }
}

impl FromStr for Broken {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "never-heal" => Ok(Broken::NeverHeal),
            "home-overkill" => Ok(Broken::HomeOverkill),
            "drop-parts" => Ok(Broken::DropParts),
            "no-checkpoints" => Ok(Broken::NoCheckpoints),
            "local-reads" => Ok(Broken::LocalReads),
            "objects-no-log" => Ok(Broken::ObjectsNoLog),
            "objects-solo-homes" => Ok(Broken::ObjectsSoloHomes),
            "objects-no-lease" => Ok(Broken::ObjectsNoLease),
            "mesh-no-ft" => Ok(Broken::MeshNoFt),
            other => Err(format!(
                "unknown breakage {other:?}; use never-heal, home-overkill, drop-parts, no-checkpoints, local-reads, objects-no-log, objects-solo-homes, objects-no-lease or mesh-no-ft"
            )),
        }
    }
}

/// Everything that determines a run. Two runs with equal configs are
/// identical.
#[derive(Clone, Debug, PartialEq)]
pub struct SimConfig {
    /// The seed everything is drawn from.
    pub seed: u64,
    /// Number of peers.
    pub peers: u32,
    /// Fault kinds to inject.
    pub faults: FaultKinds,
    /// What the peers do.
    pub workload: Workload,
    /// How long faults go on, after the network has formed.
    pub fault_window: Duration,
    /// Print the faults applied and notable events.
    pub verbose: bool,
    /// Break the run on purpose (checker self-test).
    pub broken: Option<Broken>,
    /// Log every job message about this unit (with `verbose`).
    pub trace_unit: Option<u64>,
    /// Log every replica message of the job's home (with `verbose`).
    pub trace_replicas: bool,
    /// Print a progress line to stderr this often (wall-clock time) while
    /// the seed runs: virtual time, events, live peers, job progress. The
    /// clock is only read to decide when to print; the run is the same.
    pub progress: Option<Duration>,
    /// End the run as soon as the job's result is checked: the result is
    /// asked for 500 ms after the primary reports the job finished, even
    /// while faults go on, and the views' convergence after the faults is
    /// not awaited nor checked. Every other invariant is checked as
    /// always. For runs too large to wait out the whole fault window and
    /// the settling after it (1,000 peers and more).
    pub until_job: bool,
    /// With [`Workload::Space`]: how many clients call the space.
    pub space_clients: u32,
    /// With [`Workload::Space`]: about how many calls each client makes
    /// over the fault window (a sequence begun is finished).
    pub space_calls: u32,
    /// With [`Workload::Space`]: how peer faults are limited.
    pub space_faults: SpaceFaults,
    /// With [`Workload::Objects`]: how many clients call the objects.
    pub object_clients: u32,
    /// With [`Workload::Objects`]: about how many additions each client
    /// makes over the fault window.
    pub object_calls: u32,
    /// With [`Workload::Objects`]: the objects' fault tolerance.
    pub object_protocol: ProtocolChoice,
    /// With [`Workload::Objects`]: two activations executing over
    /// overlapping spans fail the seed (otherwise they are counted; see
    /// [`crate::objects::Activations`]).
    pub strict_activations: bool,
    /// With [`Workload::Mesh`]: which classes are replicated.
    pub mesh_policy: FtPolicy,
    /// With [`Workload::Mesh`]: the tree's span (children per cell).
    pub mesh_span: u8,
    /// With [`Workload::Mesh`]: levels of cells, the root's included.
    pub mesh_levels: usize,
    /// With [`Workload::Mesh`]: super-peers per cell.
    pub mesh_cell_size: u32,
    /// With [`Workload::Mesh`]: sensors per leaf cell.
    pub mesh_sensors: u32,
    /// With [`Workload::Mesh`]: the seed's frame rates are divided by this.
    pub mesh_rate_divisor: u32,
}

impl SimConfig {
    /// Defaults for `seed`: 20 peers, every fault kind.
    pub fn new(seed: u64) -> Self {
        SimConfig {
            seed,
            peers: 20,
            faults: FaultKinds::all(),
            workload: Workload::Job,
            fault_window: Duration::from_secs(12),
            verbose: false,
            broken: None,
            trace_unit: None,
            trace_replicas: false,
            progress: None,
            until_job: false,
            space_clients: 3,
            space_calls: 40,
            space_faults: SpaceFaults::Minority,
            object_clients: 3,
            object_calls: 40,
            object_protocol: ProtocolChoice::Pml,
            strict_activations: false,
            mesh_policy: FtPolicy::FtAll,
            mesh_span: 2,
            mesh_levels: 3,
            mesh_cell_size: 2,
            mesh_sensors: 2,
            mesh_rate_divisor: 4,
        }
    }

    /// The command line that replays this run exactly, verbosely.
    pub fn replay_line(&self) -> String {
        // The mesh-node workload's tree sets the number of peers.
        let peers = match self.workload {
            Workload::MeshNode => String::new(),
            _ => format!(" --peers {}", self.peers),
        };
        let mut line = format!(
            "cargo run -p colony-sim --release -- --seed {}{peers} --faults {} --workload {}",
            self.seed, self.faults, self.workload
        );
        if self.fault_window != SimConfig::new(0).fault_window {
            line.push_str(&format!(
                " --fault-window-ms {}",
                self.fault_window.as_millis()
            ));
        }
        if let Some(broken) = self.broken {
            line.push_str(&format!(" --broken {broken}"));
        }
        if self.until_job {
            line.push_str(" --until-job");
        }
        if self.workload == Workload::Space {
            line.push_str(&format!(
                " --space-clients {} --space-calls {} --space-faults {}",
                self.space_clients, self.space_calls, self.space_faults
            ));
        }
        if self.workload == Workload::Objects {
            line.push_str(&format!(
                " --object-clients {} --object-calls {} --object-protocol {}",
                self.object_clients, self.object_calls, self.object_protocol
            ));
            if self.strict_activations {
                line.push_str(" --strict-activations");
            }
        }
        if matches!(self.workload, Workload::Mesh | Workload::MeshNode) {
            line.push_str(&format!(
                " --ft-policy {} --mesh-span {} --mesh-levels {} --mesh-cell-size {} --mesh-sensors {} --mesh-rate-divisor {}",
                self.mesh_policy,
                self.mesh_span,
                self.mesh_levels,
                self.mesh_cell_size,
                self.mesh_sensors,
                self.mesh_rate_divisor
            ));
        }
        line
    }
}

/// Faults injected during a run, by kind.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FaultCounts {
    /// Frames lost at random.
    pub lost: u64,
    /// Frames delivered twice.
    pub duplicated: u64,
    /// Frames delivered after a frame sent later on the same link.
    pub reordered: u64,
    /// Frames dropped by a partition.
    pub cut: u64,
    /// Partitions.
    pub partitions: u64,
    /// Crashes (each followed by a restart).
    pub crashes: u64,
    /// Pauses.
    pub pauses: u64,
}

impl FaultCounts {
    /// Adds another run's counts.
    pub fn add(&mut self, other: &FaultCounts) {
        self.lost += other.lost;
        self.duplicated += other.duplicated;
        self.reordered += other.reordered;
        self.cut += other.cut;
        self.partitions += other.partitions;
        self.crashes += other.crashes;
        self.pauses += other.pauses;
    }
}

/// The outcome of one run.
#[derive(Clone, Debug)]
pub struct Report {
    /// The run's configuration (its replay line says how to run it again).
    pub config: SimConfig,
    /// Broken promises; empty when the run passed.
    pub violations: Vec<Violation>,
    /// Virtual time simulated.
    pub virtual_time: Duration,
    /// Faults injected.
    pub faults: FaultCounts,
    /// Hash of the whole event trace.
    pub trace_hash: u64,
    /// Entries in the trace.
    pub trace_entries: u64,
    /// Frames put on the wire.
    pub frames: u64,
    /// Application messages sent on pipes / delivered.
    pub app_messages: (u64, u64),
    /// Receipted application messages never delivered, excused as the
    /// pipe core's known early-receipt behaviour (see [`crate::check`]).
    pub early_receipts_lost: u64,
    /// The job's fault-tolerance settings, if a job ran.
    pub ft: Option<FaultTolerance>,
    /// Virtual time from submission to the job's end at its primary.
    pub job_time: Option<Duration>,
    /// The job's final statistics, as the query saw them.
    pub job_stats: Option<colony_core::job::JobStats>,
    /// Units reported merged by more than one primary (diagnostic).
    pub merged_twice: u64,
    /// Checkpoints reported lost with more than the tolerated holders
    /// crashed (allowed).
    pub checkpoints_lost_allowed: u64,
    /// Events handled (frames, contacts, faults, fsyncs, ...).
    pub events: u64,
    /// Times a peer's timers ran: what the cores' `poll_timeout`s cost.
    pub wakeups: u64,
    /// What the space workload did, if it ran.
    pub space: Option<SpaceStats>,
    /// What the objects workload did, if it ran.
    pub objects: Option<ObjectStats>,
    /// What the `mesh-node` workload did, if it ran.
    pub mesh: Option<MeshNodeStats>,
}

impl Report {
    /// Whether every invariant held.
    pub fn passed(&self) -> bool {
        self.violations.is_empty()
    }

    /// For a failed run, its replay line and its first violations, one per
    /// indented line (what a batch of seeds lists per failing seed).
    pub fn failure(&self) -> Option<String> {
        if self.passed() {
            return None;
        }
        let found: Vec<String> = self
            .violations
            .iter()
            .take(3)
            .map(|v| format!("{}: {v}", v.kind()))
            .collect();
        Some(format!(
            "{}\n    {}",
            self.config.replay_line(),
            found.join("\n    ")
        ))
    }
}

/// Runs one seed; a panic anywhere (a core, the simulator) becomes a
/// [`Violation::Panic`] in the report.
pub fn run(config: &SimConfig) -> Report {
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        if config.workload == Workload::Mesh {
            crate::mesh::run(config)
        } else {
            World::new(config.clone()).run()
        }
    }));
    match outcome {
        Ok(report) => report,
        Err(payload) => {
            let message = payload
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "non-string panic payload".into());
            Report {
                config: config.clone(),
                violations: vec![Violation::Panic { message }],
                virtual_time: Duration::ZERO,
                faults: FaultCounts::default(),
                trace_hash: 0,
                trace_entries: 0,
                frames: 0,
                app_messages: (0, 0),
                early_receipts_lost: 0,
                ft: None,
                job_time: None,
                job_stats: None,
                merged_twice: 0,
                checkpoints_lost_allowed: 0,
                events: 0,
                wakeups: 0,
                space: None,
                objects: None,
                mesh: None,
            }
        }
    }
}

/// Where the merged units' finished copies overlap or leave gaps, for a
/// wrong `rangesum` result.
fn coverage(j: &JobPlan) -> String {
    let Ok(params) = postcard::from_bytes::<RangeParams>(&j.params) else {
        return "not a rangesum job".into();
    };
    let mut spans: Vec<(u64, u64, u64, usize)> = Vec::new();
    for unit in j.merged.keys() {
        let copies: Vec<(u64, u64)> = j
            .finished
            .get(unit)
            .map(|c| c.iter().filter_map(|(_, _, r)| *r).collect())
            .unwrap_or_default();
        let mut distinct = copies.clone();
        distinct.sort_unstable();
        distinct.dedup();
        match distinct.first() {
            Some((a, b)) => spans.push((*a, *b, *unit, distinct.len())),
            None => return format!("merged unit {unit} never finished anywhere"),
        }
    }
    spans.sort_unstable();
    let mut notes = Vec::new();
    let mut at = params.start;
    let mut at_unit = 0;
    for (a, b, unit, copies) in &spans {
        if *copies > 1 {
            notes.push(format!(
                "unit {unit} finished with {copies} different ranges"
            ));
        }
        if *a > at {
            let near: Vec<String> = j
                .finished
                .iter()
                .flat_map(|(u, c)| c.iter().map(move |(t, p, r)| (u, t, p, r)))
                .filter_map(|(u, t, p, r)| r.map(|r| (u, t, p, r)))
                .filter(|(_, _, _, (x, y))| *y >= at && *x <= *a)
                .map(|(u, t, p, (x, y))| {
                    format!(
                        "unit {u} [{x}, {y}) on {p} at {:.3}s{}",
                        t.as_secs_f64(),
                        if j.merged.contains_key(u) {
                            ""
                        } else {
                            " (unmerged)"
                        }
                    )
                })
                .collect();
            let started: Vec<String> = j
                .started
                .iter()
                .flat_map(|(u, c)| c.iter().map(move |(t, p, r)| (u, t, p, r)))
                .filter_map(|(u, t, p, r)| r.map(|r| (u, t, p, r)))
                .filter(|(_, _, _, (x, y))| *x < *a && *y > at)
                .map(|(u, t, p, (x, y))| {
                    format!("unit {u} [{x}, {y}) on {p} at {:.3}s", t.as_secs_f64())
                })
                .collect();
            notes.push(format!(
                "gap [{at}, {a}) before unit {unit}; finished copies near it: {}; started copies over it: {}",
                near.join(", "),
                started.join(", ")
            ));
        } else if *a < at {
            notes.push(format!(
                "unit {unit} [{a}, {b}) overlaps unit {at_unit}, merged up to {at}"
            ));
        }
        if *b > at {
            at = *b;
            at_unit = *unit;
        }
    }
    if at < params.end {
        notes.push(format!("gap [{at}, {}) at the end", params.end));
    }
    notes.truncate(6);
    if notes.is_empty() {
        "merged units tile the range exactly".into()
    } else {
        notes.join("; ")
    }
}

/// A job state in a few words.
fn state_name(state: &JobState) -> String {
    match state {
        JobState::Running => "running".into(),
        JobState::Done { .. } => "done".into(),
        JobState::Failed { reason } => format!("failed ({reason})"),
        JobState::Cancelled { reason } => format!("cancelled ({reason})"),
    }
}

/// When the network has formed and faults may start.
const WARMUP: Duration = Duration::from_secs(2);
/// How long after the last fault ends membership must have converged.
const SETTLE_MIN: Duration = Duration::from_secs(3);
/// The latest convergence is accepted.
const SETTLE_MAX: Duration = Duration::from_secs(25);
/// How often convergence is checked while settling.
const SETTLE_CHECK: Duration = Duration::from_millis(500);
/// Space clients start this long after peers may create partition homes
/// (`SpaceConfig::create_after_start`, counted from a peer's start, and
/// the last peer starts 350 ms in).
const SPACE_START_MARGIN: Duration = Duration::from_millis(400);
/// Space clients start sequences for at least this long, however short the
/// fault window.
const SPACE_MIN_CALLING: Duration = Duration::from_secs(5);
/// How long a dial to an unreachable or stopped peer takes to fail.
const DIAL_TIMEOUT: Duration = Duration::from_secs(1);
/// The network layer reports a peer unreachable at most this often.
const UNREACHABLE_INTERVAL: Duration = Duration::from_millis(100);
/// Bootstrap entries every peer is configured with.
const BOOTSTRAP: u32 = 3;

/// Something that happens at a point of virtual time.
#[derive(Clone, Debug)]
enum Event {
    Fault(FaultAction),
    Frame {
        to: u32,
        life: u32,
        from: u32,
        bytes: Vec<u8>,
    },
    Contact {
        peer: u32,
        life: u32,
        other: u32,
    },
    DialFailed {
        peer: u32,
        life: u32,
        index: usize,
    },
    Unreachable {
        peer: u32,
        life: u32,
        target: u32,
    },
    CheckViews,
    Submit,
    Fsync {
        peer: u32,
        life: u32,
    },
    Query,
    /// A space client on `peer` (in that life) makes its next call.
    SpaceClient {
        client: usize,
        peer: u32,
        life: u32,
    },
    /// The final reads of the space workload are due (or due again).
    SpaceFinal,
    /// An objects client on `peer` (in that life) makes its next call.
    ObjectClient {
        client: usize,
        peer: u32,
        life: u32,
    },
    /// The final reads of the objects workload are due (or due again).
    ObjectFinal,
    /// Object run `run` (in [`World::object_runs`]) is done on `peer` in
    /// that life (stale if it restarted since).
    ObjectRan {
        peer: u32,
        life: u32,
        run: u64,
    },
    /// The super-peers of the `mesh-node` workload take their role once
    /// the views converged (or this is checked again).
    MeshRoles,
    /// Its sensors and client take their role.
    MeshLeaves,
    /// A restarted super-peer takes its role again once it sees every
    /// running peer alive (as the runtime waits for a steady view: one
    /// that saw nobody yet would found cells alone).
    MeshRejoin {
        peer: u32,
        life: u32,
    },
    /// A sensor streams its next frame of `class`.
    MeshStream {
        sensor: u32,
        class: StreamClass,
    },
}

impl Event {
    /// The peer (and life) the event is for, if any.
    fn target(&self) -> Option<(u32, u32)> {
        match self {
            Event::Frame { to, life, .. } => Some((*to, *life)),
            Event::Contact { peer, life, .. }
            | Event::DialFailed { peer, life, .. }
            | Event::Unreachable { peer, life, .. }
            | Event::Fsync { peer, life }
            | Event::SpaceClient { peer, life, .. }
            | Event::ObjectClient { peer, life, .. }
            | Event::MeshRejoin { peer, life } => Some((*peer, *life)),
            Event::Fault(_)
            | Event::CheckViews
            | Event::Submit
            | Event::Query
            | Event::SpaceFinal
            | Event::ObjectFinal
            | Event::MeshRoles
            | Event::MeshLeaves
            | Event::MeshStream { .. }
            // Checked where it is handled, which drops a stale run too.
            | Event::ObjectRan { .. } => None,
        }
    }
}

/// A write of a space partition waiting for the group commit.
#[derive(Clone, Debug)]
enum SpaceWrite {
    /// What changed (`NodeOutput::PersistSpace`).
    Persist {
        partition: PartitionId,
        term: u64,
        seq: u64,
        size: u8,
        members: Vec<u32>,
        config: Vec<u32>,
        data: Unpersisted,
    },
    /// The partition is no longer held (`NodeOutput::UnpersistSpace`).
    Delete { partition: PartitionId },
}

/// What survives a crash: the incarnation and session counters, and the
/// checkpoint pieces and space partitions that reached the disk (an fsync
/// completed).
#[derive(Clone, Debug, Default)]
struct Disk {
    incarnation: u64,
    last_session: u64,
    pieces: BTreeMap<PieceKey, Piece>,
    /// Writes waiting for the next group commit; lost in a crash.
    pending: Vec<(PieceKey, Piece)>,
    /// Jobs deleted while some of their writes were pending: deleted again
    /// once those are committed.
    forget_after_sync: Vec<JobId>,
    /// Space partitions held here.
    space: BTreeMap<PartitionId, StoredPartition>,
    /// Space writes and deletions waiting for the next group commit, in
    /// the order the node asked them; lost in a crash.
    space_pending: Vec<SpaceWrite>,
    /// Object records held here.
    objects: BTreeMap<Guid, StoredObject<u32>>,
    /// Object record writes waiting for the next group commit; lost in a
    /// crash.
    objects_pending: Vec<StoredObject<u32>>,
    fsync_scheduled: bool,
}

/// A peer's place in the world, across its lives.
struct Slot {
    peer: Option<SimPeer>,
    life: u32,
    paused: bool,
    held: Vec<Event>,
    wake: Duration,
    disk: Disk,
    started: bool,
    speed: ExecSpeed,
    last_unreachable: BTreeMap<u32, Duration>,
    /// When its timers last ran, and how many times in a row at that
    /// instant, to catch livelocks.
    last_wake: Option<Duration>,
    same_instant_wakes: u32,
    /// Its key in [`World::ready`], if it is there.
    ready_at: Option<Duration>,
}

/// A copy of a unit seen on a worker: when, where, and the `rangesum`
/// range it covered (for diagnostics).
type UnitCopy = (Duration, u32, Option<(u64, u64)>);

/// The job of a run, and what was observed of it.
struct JobPlan {
    id: JobId,
    app: &'static str,
    params: Vec<u8>,
    /// The fault-free result, serialised as the application does.
    expected: Vec<u8>,
    ft: FaultTolerance,
    submitter: u32,
    submit_at: Duration,
    deadline: Duration,
    finished_at: Option<Duration>,
    /// Peers that reported merging each unit.
    merged: BTreeMap<u64, Vec<u32>>,
    /// Every assignment of each unit: (when, to whom, reissue).
    assigned: BTreeMap<u64, Vec<(Duration, u32, bool)>>,
    /// Every finished copy of each unit: (when, where, range covered).
    finished: BTreeMap<u64, Vec<UnitCopy>>,
    /// Every started copy of each unit: (when, where, range `[next, end)`).
    started: BTreeMap<u64, Vec<UnitCopy>>,
    /// When each peer crashed.
    crashes: BTreeMap<u32, Vec<Duration>>,
    query: QueryState,
    final_stats: Option<colony_core::job::JobStats>,
    lost_allowed: u64,
    last_answer: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum QueryState {
    /// Not asked yet.
    Idle,
    /// Asked by this peer (and life).
    Asked {
        asker: u32,
        life: u32,
        since: Duration,
    },
    /// A final, correct answer came.
    Answered,
}

/// When to print the next progress line: the wall clock is read only
/// every [`Progress::CHECK_EVERY`] steps.
struct Progress {
    every: Duration,
    started: Instant,
    next: Instant,
    steps: u64,
}

impl Progress {
    const CHECK_EVERY: u64 = 4096;

    fn new(every: Duration) -> Progress {
        let started = Instant::now();
        Progress {
            every,
            started,
            next: started + every,
            steps: 0,
        }
    }

    /// Whether a line is due now.
    fn due(&mut self) -> bool {
        self.steps += 1;
        if !self.steps.is_multiple_of(Self::CHECK_EVERY) {
            return false;
        }
        let now = Instant::now();
        if now < self.next {
            return false;
        }
        self.next = now + self.every;
        true
    }
}

/// Virtual time a group commit (fsync) takes.
const FSYNC: Duration = Duration::from_millis(4);
/// Longest an object run takes in virtual time (drawn from 0 to it): long
/// enough that messages for a running object arrive and wait.
const OBJECT_RUN_MAX_US: u64 = 5_000;
/// Wait before asking again when a query found the job still running.
const QUERY_RETRY: Duration = Duration::from_secs(1);
/// A query with no answer for this long is asked again elsewhere.
const QUERY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long after submission (on top of the fault window) a job may take.
const JOB_DEADLINE: Duration = Duration::from_secs(60);

struct World {
    config: SimConfig,
    settings: PeerSettings,
    base: Instant,
    now: Duration,
    queue: BTreeMap<(Duration, u64), Event>,
    seq: u64,
    slots: Vec<Slot>,
    /// The peers whose timers can run (not paused; running, or not
    /// started yet) by wake-up time: the next one to wake is the first,
    /// found in O(log n) rather than by a scan of every slot per event.
    ready: BTreeSet<(Duration, u32)>,
    net: NetParams,
    net_rng: SimRng,
    rng: SimRng,
    /// How long object runs take (apart, so that runs do not change the
    /// faults a seed draws).
    run_rng: SimRng,
    /// Object runs out (`NodeOutput::RunObject`), by number.
    object_runs: BTreeMap<u64, colony_core::object::ObjectRun>,
    object_runs_started: u64,
    /// Partition of each cut-off peer (absent: the main side).
    groups: BTreeMap<u32, u32>,
    partitions: BTreeMap<u32, Vec<u32>>,
    /// Latest arrival time per link, to count reorderings.
    last_arrival: BTreeMap<(u32, u32), Duration>,
    counts: FaultCounts,
    frames: u64,
    trace: Trace,
    pipes: PipeChecker,
    violations: Vec<Violation>,
    faults_end: Duration,
    converged: bool,
    end: Duration,
    job: Option<JobPlan>,
    /// The space workload, if it runs.
    space: Option<SpaceWorkload>,
    /// Space clients start no new sequence from then on.
    space_stop: Duration,
    /// The objects workload, if it runs.
    objects: Option<ObjectsWorkload>,
    /// The `mesh-node` workload, if it runs.
    mesh: Option<MeshNodeWorkload>,
    /// Events handled and peer wake-ups run so far.
    events: u64,
    wakeups: u64,
}

/// The fault-tolerance settings of a seed's job.
fn draw_ft(rng: &mut SimRng) -> FaultTolerance {
    let (storage, home_size) = match rng.below(6) {
        0 => (CheckpointStorage::Copies { r: 2 }, 3),
        1 => (CheckpointStorage::Copies { r: 3 }, 3),
        2 => (CheckpointStorage::Shards { k: 2, m: 1 }, 3),
        3 => (CheckpointStorage::Shards { k: 3, m: 2 }, 5),
        4 => (CheckpointStorage::Local, 3),
        _ => (CheckpointStorage::Copies { r: 2 }, 4),
    };
    let protocol = if rng.chance(0.15) {
        FtProtocol::None
    } else {
        FtProtocol::Checkpoint
    };
    FaultTolerance {
        protocol,
        ttc: Duration::from_millis(rng.range(200, 1_000)),
        storage,
        home_size,
        durable: rng.chance(0.5),
    }
}

/// How many of the job's home zone may be down at once: what both the
/// replicated record and the checkpoint storage survive.
fn tolerated(ft: &FaultTolerance) -> usize {
    let home = ft.home_tolerates();
    if ft.checkpoints() && ft.storage != CheckpointStorage::Local {
        home.min(ft.storage.tolerated_failures())
    } else {
        home
    }
}

/// Peers ordered by XOR distance of their key to a space partition's point
/// (as the space core orders a partition's home).
fn by_partition_distance(partition: PartitionId, peers: u32) -> Vec<u32> {
    let point = partition_point(partition);
    let mut all: Vec<u32> = (0..peers).collect();
    all.sort_by_key(|p| {
        let key = key_of(p);
        let mut d = [0u8; 16];
        for (i, byte) in d.iter_mut().enumerate() {
            *byte = key[i] ^ point[i];
        }
        d
    });
    all
}

/// Peers ordered by XOR distance of their key to the job id (as the job
/// core orders a home).
fn by_distance(job: JobId, peers: u32) -> Vec<u32> {
    let mut all: Vec<u32> = (0..peers).collect();
    all.sort_by_key(|p| {
        let key = key_of(p);
        let mut d = [0u8; 16];
        for (i, byte) in d.iter_mut().enumerate() {
            *byte = key[i] ^ job.0[i];
        }
        d
    });
    all
}

impl World {
    fn new(mut config: SimConfig) -> World {
        let mesh = (config.workload == Workload::MeshNode).then(|| MeshNodeWorkload::new(&config));
        if let Some(m) = &mesh {
            // The tree says how many peers there are.
            config.peers = m.peers();
        }
        let seed = config.seed;
        let mut rng = SimRng::new(derive(&[seed, 100]));
        let net = NetParams::draw(&config.faults, &mut rng);
        let mut settings = PeerSettings {
            drop_parts: config.broken == Some(Broken::DropParts),
            ..PeerSettings::default()
        };
        settings.trace_unit = config.trace_unit.filter(|_| config.verbose);
        settings.trace_replicas = config.trace_replicas && config.verbose;
        settings.space.unsafe_local_reads = config.broken == Some(Broken::LocalReads);
        if config.broken == Some(Broken::ObjectsNoLease) {
            settings.objects.home.lease = Duration::from_secs(3600);
        }
        settings.jobs.cores = rng.range(1, 2) as u32;
        let (window_start, window_end) = match &mesh {
            // The mesh forms first: roles, joins, binds, streams.
            Some(_) => (
                crate::mesh_node::FAULTS_FROM,
                crate::mesh_node::FAULTS_FROM + config.fault_window,
            ),
            None => (
                WARMUP + Duration::from_millis(300),
                WARMUP + config.fault_window,
            ),
        };
        let job = match config.workload {
            Workload::Pipes
            | Workload::Space
            | Workload::Objects
            | Workload::Mesh
            | Workload::MeshNode => None,
            workload => {
                let mut id = [0u8; 16];
                for chunk in id.chunks_mut(8) {
                    chunk.copy_from_slice(&rng.next_u64().to_be_bytes());
                }
                let mut ft = draw_ft(&mut rng);
                if config.broken == Some(Broken::HomeOverkill) {
                    ft.durable = false;
                    ft.protocol = FtProtocol::Checkpoint;
                }
                if config.broken == Some(Broken::NoCheckpoints) {
                    ft.protocol = FtProtocol::None;
                }
                let (app, params, expected) = match workload {
                    Workload::NQueens => {
                        let n = rng.range(12, 13) as u32;
                        // N-Queens is a guest application run natively:
                        // its bytes are the guest encoding.
                        let params = encode(&colony_apps::nqueens::Params { n });
                        let count = colony_apps::nqueens::known_count(n).unwrap_or(0);
                        let expected = encode(&count);
                        ("nqueens", params, expected)
                    }
                    _ => {
                        let start = rng.below(1 << 40);
                        let len = rng.range(2_000_000, 4_000_000);
                        let range = RangeParams {
                            start,
                            end: start + len,
                        };
                        let expected =
                            postcard::to_stdvec(&RangeSum::direct(&range)).unwrap_or_default();
                        ("rangesum", RangeSum::params(start, start + len), expected)
                    }
                };
                let submitter = rng.below(u64::from(config.peers)) as u32;
                Some(JobPlan {
                    id: JobId(id),
                    app,
                    params,
                    expected,
                    ft,
                    submitter,
                    submit_at: WARMUP,
                    deadline: WARMUP + config.fault_window + JOB_DEADLINE,
                    finished_at: None,
                    merged: BTreeMap::new(),
                    assigned: BTreeMap::new(),
                    finished: BTreeMap::new(),
                    started: BTreeMap::new(),
                    crashes: BTreeMap::new(),
                    query: QueryState::Idle,
                    final_stats: None,
                    lost_allowed: 0,
                    last_answer: "no answer".into(),
                })
            }
        };
        // Space clients call once peers may create partition homes (their
        // views formed), until the fault window closes.
        let space_start = WARMUP.max(settings.space.create_after_start + SPACE_START_MARGIN);
        let space_stop = window_end.max(space_start + SPACE_MIN_CALLING);
        let space = (config.workload == Workload::Space).then(|| {
            // A sequence takes 1.5 calls on average.
            let think =
                (space_stop - space_start).mul_f64(1.5 / f64::from(config.space_calls.max(1)));
            SpaceWorkload::new(
                derive(&[seed, 104]),
                config.peers,
                config.space_clients,
                config.space_calls,
                think,
            )
        });
        let objects = (config.workload == Workload::Objects).then(|| {
            let think =
                (space_stop - space_start).mul_f64(1.0 / f64::from(config.object_calls.max(1)));
            let (protocol, expect) = match config.broken {
                Some(Broken::ObjectsNoLog) => (ProtocolChoice::Checkpoint, ProtocolChoice::Pml),
                _ => (config.object_protocol, config.object_protocol),
            };
            let mut w = ObjectsWorkload::new(
                derive(&[seed, 105]),
                config.peers,
                config.object_clients,
                config.object_calls,
                think,
                protocol,
                expect,
            );
            w.activations.strict = config.strict_activations;
            w
        });
        if objects.is_some() {
            settings
                .object_types
                .register::<crate::objects::Tally>()
                .register::<crate::cic::Feeder>()
                .register::<crate::cic::Counter>();
        }
        // The objects workload protects no peer: `pml` records are on
        // disk, and every crashed peer restarts.
        let (protected, protected_limit) = match (&job, &space) {
            (Some(j), _) => {
                let limit = tolerated(&j.ft);
                let zone = usize::from(j.ft.home_size) + limit;
                let order = by_distance(j.id, config.peers);
                (order.into_iter().take(zone).collect(), limit)
            }
            (None, Some(w)) => {
                // The homes of the workload's partitions, and the next
                // peer of each (it joins when a member is lost): at most
                // a minority of a home down at once, as for a job's home.
                let size = settings.space.home_size;
                let limit = usize::from(size.saturating_sub(1) / 2);
                let zone = usize::from(size) + limit;
                let mut protected: Vec<u32> = w
                    .keys()
                    .iter()
                    .flat_map(|k| {
                        by_partition_distance(k.partition(), config.peers)
                            .into_iter()
                            .take(zone)
                    })
                    .collect();
                protected.sort_unstable();
                protected.dedup();
                if config.space_faults == SpaceFaults::Any {
                    protected.clear();
                }
                (protected, limit)
            }
            (None, None) => (Vec::new(), 0),
        };
        let overkill = config.broken == Some(Broken::HomeOverkill);
        // Protocol `none` restarts a lost unit only from its primary's
        // memory: a unit lost with it fails the job (ft.rs), so those jobs
        // get no peer faults.
        let unprotected = job.as_ref().is_some_and(|j| !j.ft.checkpoints())
            && config.broken != Some(Broken::NoCheckpoints);
        let mut kinds = config.faults;
        if overkill || unprotected {
            // Only the overkill takes peers down, so it is what breaks.
            kinds.crash = false;
            kinds.pause = false;
            kinds.partition = false;
        }
        let limits = ScheduleLimits {
            peers: config.peers,
            window_start,
            window_end,
            max_down: (config.peers as usize / 4).max(1),
            protected: protected.clone(),
            protected_limit,
            protected_grace: Duration::from_secs(3),
            spared: mesh
                .as_ref()
                .map(MeshNodeWorkload::spared)
                .unwrap_or_default(),
            crash_first: job
                .as_ref()
                .filter(|_| rng.chance(0.3))
                .map(|j| j.submitter),
        };
        let mut schedule_rng = SimRng::new(derive(&[seed, 101]));
        let mut schedule = Schedule::generate(&kinds, &limits, &mut schedule_rng);
        if let Some(m) = &mesh {
            m.limit(&mut schedule);
        }
        if let (Some(Broken::NoCheckpoints), Some(j)) = (config.broken, &job) {
            let at = j.submit_at + Duration::from_millis(1500);
            if let Some(&peer) = by_distance(j.id, config.peers).first() {
                schedule.push(at, FaultAction::Crash { peer });
                schedule.push(at + Duration::from_secs(8), FaultAction::Restart { peer });
                schedule.faults.sort_by_key(|f| f.at);
            }
        }
        if let (true, Some(j)) = (overkill, &job) {
            let at = j.submit_at + Duration::from_millis(1500);
            for peer in by_distance(j.id, config.peers)
                .into_iter()
                .take(usize::from(j.ft.home_size))
            {
                schedule.push(at, FaultAction::Crash { peer });
                schedule.push(at + Duration::from_secs(8), FaultAction::Restart { peer });
            }
            schedule.faults.sort_by_key(|f| f.at);
        }
        let trace = Trace::new(config.verbose);
        let mut speed_rng = SimRng::new(derive(&[seed, 103]));
        let slots = (0..config.peers)
            .map(|_| Slot {
                peer: None,
                life: 0,
                paused: false,
                held: Vec::new(),
                wake: Duration::MAX,
                disk: Disk::default(),
                started: false,
                speed: ExecSpeed {
                    budget: speed_rng.range(100, 300),
                    step_cost: Duration::from_millis(4),
                },
                last_unreachable: BTreeMap::new(),
                last_wake: None,
                same_instant_wakes: 0,
                ready_at: None,
            })
            .collect();
        let faults_end = schedule.last_at().max(window_start);
        let mut world = World {
            base: Instant::now(),
            now: Duration::ZERO,
            queue: BTreeMap::new(),
            seq: 0,
            slots,
            ready: BTreeSet::new(),
            net_rng: SimRng::new(derive(&[seed, 102])),
            run_rng: SimRng::new(derive(&[seed, 103])),
            object_runs: BTreeMap::new(),
            object_runs_started: 0,
            rng,
            net,
            groups: BTreeMap::new(),
            partitions: BTreeMap::new(),
            last_arrival: BTreeMap::new(),
            counts: FaultCounts::default(),
            frames: 0,
            trace,
            pipes: PipeChecker::default(),
            violations: Vec::new(),
            faults_end,
            converged: false,
            end: faults_end + SETTLE_MAX,
            job,
            space,
            space_stop,
            objects,
            mesh,
            settings,
            config,
            events: 0,
            wakeups: 0,
        };
        if let Some(j) = &world.job {
            world.end = world.end.max(j.deadline);
        }
        if world.space.is_some() {
            // Clients call until the fault window closes and finish their
            // sequences; then each object is read, with retries, once
            // faults are over.
            let finals = world.faults_end.max(world.space_stop) + SETTLE_MIN;
            let last = finals + CALL_TIMEOUT + FINAL_TIMEOUT * (FINAL_ATTEMPTS + 1);
            world.end = world.end.max(last);
            world.schedule(finals, Event::SpaceFinal);
            let clients: Vec<(usize, u32)> = world
                .space
                .as_ref()
                .map(|w| w.client_peers().collect())
                .unwrap_or_default();
            for (client, peer) in clients {
                let pause = world
                    .space
                    .as_mut()
                    .map(|w| w.first_pause())
                    .unwrap_or_default();
                let life = 0;
                world.schedule(
                    space_start + pause,
                    Event::SpaceClient { client, peer, life },
                );
            }
        }
        if world.objects.is_some() {
            let finals = world.faults_end.max(world.space_stop) + SETTLE_MIN;
            let last = finals
                + crate::objects::CALL_TIMEOUT
                + crate::objects::FINAL_TIMEOUT * (crate::objects::FINAL_ATTEMPTS + 1);
            world.end = world.end.max(last);
            world.schedule(finals, Event::ObjectFinal);
            let clients: Vec<(usize, u32)> = world
                .objects
                .as_ref()
                .map(|w| w.client_peers().collect())
                .unwrap_or_default();
            for (client, peer) in clients {
                let pause = world
                    .objects
                    .as_mut()
                    .map(|w| w.pause())
                    .unwrap_or_default();
                let life = 0;
                world.schedule(
                    space_start + pause / 4,
                    Event::ObjectClient { client, peer, life },
                );
            }
        }
        if let Some(m) = world.mesh.as_mut() {
            m.stream_until = world.faults_end + crate::mesh_node::STREAM_AFTER_FAULTS;
            m.end = m.stream_until + crate::mesh_node::SETTLE;
            world.end = world.end.max(m.end);
            let sensors = m.sensors();
            world.schedule(crate::mesh_node::ROLES_FROM, Event::MeshRoles);
            for sensor in sensors {
                for class in StreamClass::DATA {
                    let at = crate::mesh_node::STREAMS_FROM
                        + Duration::from_millis(u64::from(sensor % 17));
                    world.schedule(at, Event::MeshStream { sensor, class });
                }
            }
        }
        world.trace.log(Duration::ZERO, || {
            format!(
                "seed {}: {} peers, faults {}, net {:?}",
                world.config.seed, world.config.peers, world.config.faults, world.net
            )
        });
        if let Some(j) = &world.job {
            let (id, app, ft, submitter) = (j.id, j.app, j.ft, j.submitter);
            world.trace.log(Duration::ZERO, || {
                format!(
                    "job {id} ({app}) from peer {submitter}, {ft:?}, cores {}; home zone {protected:?}, at most {protected_limit} down",
                    world.settings.jobs.cores
                )
            });
            world.schedule(j.submit_at, Event::Submit);
            // Ask for the result once faults are over, whether or not a
            // primary's "finished" event was seen.
            world.schedule(world.faults_end + SETTLE_MIN, Event::Query);
        }
        for f in schedule.faults {
            if world.config.broken == Some(Broken::NeverHeal)
                && matches!(f.action, FaultAction::Heal { .. })
            {
                continue;
            }
            world.schedule(f.at, Event::Fault(f.action));
        }
        world.schedule(world.faults_end + SETTLE_MIN, Event::CheckViews);
        // Bootstrap peers are up first, as in any deployment; the others
        // start over the next 300 ms.
        for id in 0..world.config.peers {
            let at = if id < BOOTSTRAP {
                Duration::from_millis(world.rng.below(20))
            } else {
                Duration::from_millis(50 + world.rng.below(300))
            };
            world.slots[id as usize].wake = at;
            world.reindex(id);
        }
        world
    }

    /// Puts peer `id` in [`World::ready`] at its wake-up time, or takes it
    /// out, after its slot changed.
    fn reindex(&mut self, id: u32) {
        let slot = &mut self.slots[id as usize];
        let want = (!slot.paused && (slot.peer.is_some() || !slot.started)).then_some(slot.wake);
        if slot.ready_at != want {
            if let Some(at) = slot.ready_at {
                self.ready.remove(&(at, id));
            }
            if let Some(at) = want {
                self.ready.insert((at, id));
            }
            slot.ready_at = want;
        }
    }

    fn instant(&self, at: Duration) -> Instant {
        self.base + at
    }

    fn schedule(&mut self, at: Duration, event: Event) {
        self.seq += 1;
        self.queue.insert((at, self.seq), event);
    }

    fn run(mut self) -> Report {
        let mut progress = self.config.progress.map(Progress::new);
        loop {
            if let Some(p) = progress.as_mut() {
                if p.due() {
                    eprintln!("{}", self.progress_line(p.started.elapsed()));
                }
            }
            let next_event = self.queue.first_key_value().map(|(k, _)| k.0);
            let next_peer = self.ready.first().copied();
            let take_event = match (next_event, next_peer) {
                (Some(e), Some((p, _))) => e <= p,
                (Some(_), None) => true,
                (None, Some(_)) => false,
                (None, None) => break,
            };
            let at = if take_event {
                next_event.unwrap_or(self.end)
            } else {
                next_peer.map(|p| p.0).unwrap_or(self.end)
            };
            if at > self.end || self.done() {
                break;
            }
            self.now = at;
            if take_event {
                if let Some((_, event)) = self.queue.pop_first() {
                    self.events += 1;
                    self.handle_event(event);
                }
            } else if let Some((_, id)) = next_peer {
                self.wakeups += 1;
                self.wake_peer(id);
            }
        }
        let cut_short = self.config.until_job && self.job.is_some();
        if !self.converged && !cut_short {
            self.check_views(true);
        }
        self.check_job_at_end();
        let slots = &self.slots;
        self.pipes.finish(|id| {
            slots[id.from as usize]
                .peer
                .as_ref()
                .is_some_and(|p| p.session == id.session && p.app_message_waiting(id))
        });
        let mut violations = std::mem::take(&mut self.violations);
        violations.append(&mut self.pipes.violations);
        if let Some(w) = self.space.as_mut() {
            let found = w.finish();
            if !found.is_empty() {
                // The whole history, for a verbose replay.
                for (i, op) in w.history().iter().enumerate() {
                    self.trace.log(self.now, || {
                        let ret = match &op.ret {
                            Some((at, out)) => format!("{at}] -> {out:?}"),
                            None => "no answer] -> ?".into(),
                        };
                        format!(
                            "space history #{i}: client {} [{}, {ret} {}: {:?}",
                            op.client, op.call, op.input.key.name, op.input.input
                        )
                    });
                }
            }
            violations.extend(found);
        }
        if let Some(w) = self.objects.as_mut() {
            violations.extend(w.finish());
        }
        if let Some(m) = self.mesh.as_mut() {
            let running: BTreeMap<u32, EndState> = self
                .slots
                .iter()
                .enumerate()
                .filter_map(|(id, slot)| {
                    let peer = slot.peer.as_ref()?;
                    Some((id as u32, EndState::of(peer.node.mesh().role())))
                })
                .collect();
            let found = m.finish(self.now, &running);
            for v in &found {
                self.trace.log(self.now, || format!("{}: {v}", v.kind()));
            }
            violations.extend(found);
            let stats = m.stats();
            self.trace.log(self.now, || format!("mesh-node: {stats:?}"));
        }
        Report {
            violations,
            virtual_time: self.now,
            faults: self.counts.clone(),
            trace_hash: self.trace.hash(),
            trace_entries: self.trace.entries(),
            frames: self.frames,
            app_messages: (self.pipes.sent_count(), self.pipes.delivered_count() as u64),
            early_receipts_lost: self.pipes.early_receipts_lost.len() as u64,
            ft: self.job.as_ref().map(|j| j.ft),
            job_time: self
                .job
                .as_ref()
                .and_then(|j| j.finished_at.map(|f| f.saturating_sub(j.submit_at))),
            job_stats: self.job.as_ref().and_then(|j| j.final_stats.clone()),
            merged_twice: self.job.as_ref().map_or(0, |j| {
                j.merged.values().filter(|peers| peers.len() > 1).count() as u64
            }),
            checkpoints_lost_allowed: self.job.as_ref().map_or(0, |j| j.lost_allowed),
            events: self.events,
            wakeups: self.wakeups,
            space: self.space.as_ref().map(SpaceWorkload::stats),
            objects: self.objects.as_ref().map(ObjectsWorkload::stats),
            mesh: self.mesh.as_ref().map(MeshNodeWorkload::stats),
            config: self.config,
        }
    }

    /// One line on how far the run is, for `--progress`.
    fn progress_line(&self, wall: Duration) -> String {
        let live = self.slots.iter().filter(|s| s.peer.is_some()).count();
        let job = match &self.job {
            None => String::new(),
            Some(j) => {
                let state = match (j.finished_at, j.query) {
                    (_, QueryState::Answered) => "answered".to_string(),
                    (Some(at), _) => format!("finished at {:.1}s", at.as_secs_f64()),
                    (None, _) if self.now < j.submit_at => "not submitted".to_string(),
                    (None, _) => "running".to_string(),
                };
                format!(
                    ", job: {} units assigned, {} merged, {state}",
                    j.assigned.len(),
                    j.merged.len()
                )
            }
        };
        format!(
            "seed {}: {:.1}s virtual of at most {:.0}s after {:.0}s wall, {} events, {} wake-ups, {} frames, {live}/{} peers up{}{}",
            self.config.seed,
            self.now.as_secs_f64(),
            self.end.as_secs_f64(),
            wall.as_secs_f64(),
            self.events,
            self.wakeups,
            self.frames,
            self.config.peers,
            if self.converged { ", views converged" } else { "" },
            job
        )
    }

    /// Whether everything the run waits for has happened.
    fn done(&self) -> bool {
        (self.converged || (self.config.until_job && self.job.is_some()))
            && self
                .job
                .as_ref()
                .is_none_or(|j| j.query == QueryState::Answered)
            && self
                .space
                .as_ref()
                .is_none_or(|w| self.now >= self.space_stop && w.finals_over())
            && self
                .objects
                .as_ref()
                .is_none_or(|w| self.now >= self.space_stop && !w.creating() && w.finals_over())
            && self.mesh.as_ref().is_none_or(|m| self.now >= m.end)
    }

    /// The job's invariants that only the end can judge.
    fn check_job_at_end(&mut self) {
        let Some(j) = self.job.as_ref() else {
            return;
        };
        if j.query == QueryState::Answered {
            return;
        }
        let deadline = j.deadline;
        let answer = j.last_answer.clone();
        let now = self.instant(self.now);
        let done_somewhere = self
            .slots
            .iter()
            .filter_map(|s| s.peer.as_ref())
            .any(|p| matches!(p.job_state(now, j.id), Some(JobState::Done { .. })));
        if j.finished_at.is_none() && !done_somewhere {
            let state = self.describe_job();
            self.violations
                .push(Violation::JobNotFinished { deadline, state });
        } else {
            let asker = match j.query {
                QueryState::Asked { asker, .. } => asker,
                _ => j.submitter,
            };
            self.violations
                .push(Violation::QueryUnanswered { asker, answer });
        }
    }

    /// What the live peers' records say of the job, for a failure report.
    fn describe_job(&self) -> String {
        let Some(j) = self.job.as_ref() else {
            return String::new();
        };
        let now = self.instant(self.now);
        let mut parts = Vec::new();
        for (id, slot) in self.slots.iter().enumerate() {
            let Some(peer) = slot.peer.as_ref() else {
                continue;
            };
            if let Some(view) = peer.node.jobs().view(now, j.id) {
                parts.push(format!(
                    "peer {id} holds the record (primary {}, home {:?}): {}/{} units merged, {} reissued, {} takeovers, state {}",
                    view.home,
                    view.home_members,
                    view.stats.units_done,
                    view.stats.units,
                    view.stats.reissued,
                    view.stats.takeovers,
                    state_name(&view.state)
                ));
                if view.home == id as u32 {
                    for (unit, line) in peer.node.jobs().open_units(j.id) {
                        parts.push(format!("open unit {unit}: {line}"));
                    }
                }
            }
        }
        if parts.is_empty() {
            parts.push("no live peer holds the job's record".into());
        }
        parts.push(format!(
            "{} units seen assigned, {} seen merged",
            j.assigned.len(),
            j.merged.len()
        ));
        for (unit, history) in &j.assigned {
            if j.merged.contains_key(unit) {
                continue;
            }
            let history: Vec<String> = history
                .iter()
                .map(|(at, to, reissue)| {
                    let crashes: Vec<String> = j
                        .crashes
                        .get(to)
                        .map(|c| {
                            c.iter()
                                .map(|t| format!("{:.3}s", t.as_secs_f64()))
                                .collect()
                        })
                        .unwrap_or_default();
                    format!(
                        "{}to {to} at {:.3}s (its crashes: {crashes:?})",
                        if *reissue { "reissued " } else { "" },
                        at.as_secs_f64()
                    )
                })
                .collect();
            parts.push(format!("unit {unit} unmerged: {}", history.join(", ")));
        }
        parts.join("; ")
    }

    /// Runs a peer's timers (or starts it, the first time).
    fn wake_peer(&mut self, id: u32) {
        let now = self.instant(self.now);
        let slot = &mut self.slots[id as usize];
        if !slot.started {
            slot.started = true;
            self.start_peer(id);
            self.reindex(id);
            return;
        }
        if slot.last_wake == Some(self.now) {
            slot.same_instant_wakes += 1;
        } else {
            slot.same_instant_wakes = 0;
            slot.last_wake = Some(self.now);
        }
        if slot.same_instant_wakes > 1000 {
            self.violations.push(Violation::TimerLivelock {
                peer: id,
                at: self.now,
            });
            slot.wake = self.now + Duration::from_millis(1);
            slot.same_instant_wakes = 0;
            self.reindex(id);
            return;
        }
        if let Some(peer) = slot.peer.as_mut() {
            peer.handle_timers(now);
        }
        self.after_input(id);
    }

    fn start_peer(&mut self, id: u32) {
        let now = self.instant(self.now);
        let micros = self.now.as_micros() as u64 + 1;
        let slot = &mut self.slots[id as usize];
        // The store's `next_incarnation`: one above the highest persisted.
        slot.disk.incarnation += 1;
        let session = micros.max(slot.disk.last_session + 1);
        slot.disk.last_session = session;
        let bootstrap_len = (0..BOOTSTRAP.min(self.config.peers))
            .filter(|b| *b != id)
            .count();
        let start = PeerStart {
            id,
            life: slot.life,
            incarnation: slot.disk.incarnation,
            session,
            bootstrap_len,
            seed: self.config.seed,
            speed: slot.speed,
        };
        let disk: Vec<(PieceKey, Piece)> = slot
            .disk
            .pieces
            .iter()
            .map(|(k, p)| (*k, p.clone()))
            .collect();
        let mut peer = SimPeer::start(start, self.settings.clone(), disk, now);
        peer.restore_space(now, &slot.disk.space);
        if self.config.broken == Some(Broken::ObjectsSoloHomes) {
            let solo: BTreeMap<Guid, StoredObject<u32>> = slot
                .disk
                .objects
                .iter()
                .map(|(guid, stored)| {
                    let mut stored = stored.clone();
                    stored.members = vec![id];
                    stored.config = vec![id];
                    stored.term += 1;
                    (*guid, stored)
                })
                .collect();
            peer.restore_objects(now, &solo);
        } else {
            peer.restore_objects(now, &slot.disk.objects);
        }
        if !slot.disk.space.is_empty() {
            let held: Vec<String> = slot
                .disk
                .space
                .iter()
                .map(|(p, s)| {
                    format!(
                        "{p} (term {} update {}, members {:?})",
                        s.term, s.seq, s.members
                    )
                })
                .collect();
            self.trace.log(self.now, || {
                format!("peer {id} restores space partitions {}", held.join(", "))
            });
        }
        slot.peer = Some(peer);
        self.trace
            .record(self.now, 1, &[u64::from(id), u64::from(slot.life)]);
        self.after_input(id);
    }

    fn bootstrap_entry(&self, id: u32, index: usize) -> Option<u32> {
        (0..BOOTSTRAP.min(self.config.peers))
            .filter(|b| *b != id)
            .nth(index)
    }

    /// Drains what a peer asked for and refreshes its wake-up time.
    fn after_input(&mut self, id: u32) {
        let life = self.slots[id as usize].life;
        let now = self.instant(self.now);
        let Some(peer) = self.slots[id as usize].peer.as_mut() else {
            return;
        };
        if let Some(w) = self.objects.as_mut() {
            let watched = w.guids();
            if !watched.is_empty() {
                let live = peer.live_objects(now);
                w.activations.sample(id, life, self.now, &live, &watched);
            }
        }
        let actions = std::mem::take(&mut peer.actions);
        let wake = peer
            .next_wakeup()
            .saturating_duration_since(self.base)
            .max(self.now);
        self.slots[id as usize].wake = wake;
        self.reindex(id);
        for action in actions {
            self.execute(id, action);
        }
    }

    fn execute(&mut self, id: u32, action: Action) {
        match action {
            Action::Node(NodeOutput::Transmit { to, bytes, .. }) => self.transmit(id, to, bytes),
            // Answered by the simulated peer itself (it holds no modules).
            Action::Node(NodeOutput::ServeModule { .. } | NodeOutput::ModuleReceived { .. }) => {}
            Action::Node(NodeOutput::DialBootstrap { index }) => {
                let Some(target) = self.bootstrap_entry(id, index) else {
                    return;
                };
                self.trace
                    .record(self.now, 2, &[u64::from(id), u64::from(target)]);
                self.dial(id, target, Some(index));
            }
            Action::Node(NodeOutput::Explore) => {
                let candidates: Vec<u32> = (0..self.config.peers)
                    .filter(|p| *p != id && self.reachable(id, *p) && self.running(*p))
                    .collect();
                if let Some(&target) = self.rng.pick(&candidates) {
                    self.trace
                        .record(self.now, 3, &[u64::from(id), u64::from(target)]);
                    self.dial(id, target, None);
                }
            }
            Action::Node(NodeOutput::PersistIncarnation(incarnation)) => {
                let disk = &mut self.slots[id as usize].disk;
                disk.incarnation = disk.incarnation.max(incarnation);
            }
            Action::Node(NodeOutput::Member(event)) => {
                if event.to == MemberState::Dead {
                    self.pipes.declared_dead(id, event.peer, self.now);
                }
                if matches!(event.to, MemberState::Dead | MemberState::Left) {
                    self.mesh_declared(id, event.peer);
                }
                self.trace.record(
                    self.now,
                    4,
                    &[u64::from(id), u64::from(event.peer), event.to as u64],
                );
                if self.trace.verbose() && matches!(event.to, MemberState::Dead | MemberState::Left)
                {
                    self.trace.log(self.now, || {
                        format!("peer {id} sees peer {} {:?}", event.peer, event.to)
                    });
                }
            }
            Action::AppSent(msg) => self.pipes.sent(msg, self.now),
            Action::AppOutcome { id: msg, delivered } => self.pipes.outcome(msg, delivered),
            Action::AppDelivered(msg) => {
                let life = self.slots[id as usize].life;
                self.pipes.delivered(life, msg);
            }
            Action::Malformed { from, error } => self.violations.push(Violation::Malformed {
                peer: id,
                from,
                error,
            }),
            Action::UnitFailed { job, unit, error } => self.violations.push(Violation::Malformed {
                peer: id,
                from: id,
                error: format!("unit {unit} of job {job} did not restore: {error}"),
            }),
            Action::Node(NodeOutput::Persist { key, piece }) => {
                self.trace.record(
                    self.now,
                    10,
                    &[u64::from(id), key.unit, u64::from(key.index), piece.version],
                );
                if self.config.trace_unit == Some(key.unit) {
                    let (epoch, version) = (piece.epoch, piece.version);
                    self.trace.log(self.now, || {
                        format!(
                            "peer {id} persists unit {} index {} epoch {epoch} version {version}",
                            key.unit, key.index
                        )
                    });
                }
                self.slots[id as usize].disk.pending.push((key, piece));
                self.schedule_fsync(id);
            }
            Action::Node(NodeOutput::PersistSpace {
                partition,
                term,
                seq,
                size,
                members,
                config,
                data,
            }) => {
                self.trace.record(
                    self.now,
                    15,
                    &[u64::from(id), u64::from(partition), term, seq],
                );
                self.trace.log(self.now, || {
                    let what = match &data {
                        Unpersisted::Whole(c) => format!("all of it ({} changes)", c.len()),
                        Unpersisted::Changes(c) => format!("{} changes", c.len()),
                    };
                    format!(
                        "peer {id} writes space partition {partition}: {what}, term {term} update {seq}, members {members:?}, committed {config:?}"
                    )
                });
                let write = SpaceWrite::Persist {
                    partition,
                    term,
                    seq,
                    size,
                    members,
                    config,
                    data,
                };
                self.slots[id as usize].disk.space_pending.push(write);
                self.schedule_fsync(id);
            }
            Action::Node(NodeOutput::RunObject(mut run)) => {
                // Runs now, done after up to OBJECT_RUN_MAX: meanwhile the
                // peer goes on, as when the handler runs on another thread.
                run.run();
                self.object_runs_started += 1;
                let number = self.object_runs_started;
                self.object_runs.insert(number, run);
                let took = Duration::from_micros(self.run_rng.below(OBJECT_RUN_MAX_US));
                let life = self.slots[id as usize].life;
                let ran = Event::ObjectRan {
                    peer: id,
                    life,
                    run: number,
                };
                self.schedule(self.now + took, ran);
            }
            Action::Node(NodeOutput::PersistObject(stored)) => {
                self.slots[id as usize].disk.objects_pending.push(stored);
                self.schedule_fsync(id);
            }
            Action::Node(NodeOutput::ObjectAnswer { token, result }) => {
                self.trace.record(self.now, 33, &[u64::from(id), token]);
                self.trace.log(self.now, || {
                    format!("peer {id} answers object request {token}: {result:?}")
                });
                if let Some(w) = self.objects.as_mut() {
                    let next = w.answered(id, token, result, self.now);
                    self.follow_objects(next);
                }
            }
            Action::Node(NodeOutput::UnpersistSpace { partition }) => {
                self.trace
                    .record(self.now, 16, &[u64::from(id), u64::from(partition)]);
                self.trace.log(self.now, || {
                    format!("peer {id} deletes space partition {partition}")
                });
                let delete = SpaceWrite::Delete { partition };
                self.slots[id as usize].disk.space_pending.push(delete);
                self.schedule_fsync(id);
            }
            // The simulated workloads write no erasure-coded values, so no
            // peer holds shards (the process tests cover them).
            Action::Node(NodeOutput::PersistShard { .. } | NodeOutput::UnpersistShards { .. }) => {}
            // Only the `mesh-node` workload's peers take roles (the `mesh`
            // workload drives bare cores, see `mesh.rs`).
            Action::Node(NodeOutput::Mesh(notice)) => {
                let delivered = matches!(
                    notice,
                    colony_core::mesh::MeshNotice::Event(colony_core::mesh::MeshEvent::Delivered(
                        _
                    ))
                );
                if self.trace.verbose() && !delivered {
                    self.trace
                        .log(self.now, || format!("peer {id} mesh: {notice:?}"));
                }
                if let Some(m) = self.mesh.as_mut() {
                    m.notice(id, self.now, notice);
                }
            }
            Action::Node(NodeOutput::SpaceAnswer {
                id: request,
                result,
            }) => {
                self.trace
                    .record(self.now, 31, &[u64::from(id), request.session, request.seq]);
                self.trace.log(self.now, || {
                    format!("peer {id} answers space request {request}: {result:?}")
                });
                if let Some(w) = self.space.as_mut() {
                    let next = w.answered(id, request, result, self.now);
                    self.follow_space(next);
                }
            }
            Action::Node(NodeOutput::SpaceLockLost(lost)) => {
                self.trace.log(self.now, || {
                    format!(
                        "peer {id} lost its lock on {} (token {}): {}",
                        lost.key, lost.token, lost.why
                    )
                });
            }
            Action::Node(NodeOutput::Unpersist {
                key,
                epoch,
                version,
            }) => {
                // The simulated disk keeps the last piece written per key:
                // deleted if it is that version (a pending write of the key
                // replaces it at the next sync anyway).
                let disk = &mut self.slots[id as usize].disk;
                let pending = disk.pending.iter().any(|(k, _)| *k == key);
                if !pending
                    && disk
                        .pieces
                        .get(&key)
                        .is_some_and(|p| p.epoch == epoch && p.version == version)
                {
                    disk.pieces.remove(&key);
                }
            }
            Action::Node(NodeOutput::Forget { job }) => {
                // Writes queued before the delete still commit (and are
                // acknowledged), then go with it.
                let disk = &mut self.slots[id as usize].disk;
                disk.pieces.retain(|k, _| k.job != job);
                if disk.pending.iter().any(|(k, _)| k.job == job) {
                    disk.forget_after_sync.push(job);
                }
            }
            Action::Node(NodeOutput::Job(event)) => self.on_job_event(id, event),
            Action::Node(NodeOutput::Status(view)) => {
                self.trace
                    .record(self.now, 11, &[u64::from(id), view.stats.units_done]);
                if !matches!(view.state, JobState::Running) {
                    let state = state_name(&view.state);
                    self.trace.log(self.now, || {
                        format!("peer {id} got the job's status: {state}")
                    });
                }
            }
            Action::Node(NodeOutput::QueryAnswer { job, view }) => {
                self.on_query_answer(id, job, view)
            }
            // The virtual network routes by peer id (nothing to redial), no
            // lifetime count of units is kept, and nobody cancels.
            Action::Node(
                NodeOutput::Redial { .. }
                | NodeOutput::UnitsDone { .. }
                | NodeOutput::CancelAnswer { .. },
            ) => {}
            // The peer answers these itself (its executor, its checker's
            // traffic, its diagnostics); they never reach the world.
            Action::Node(
                NodeOutput::SampleStats
                | NodeOutput::AppSettled { .. }
                | NodeOutput::Run(_)
                | NodeOutput::Unit { .. }
                | NodeOutput::Share { .. }
                | NodeOutput::Notice(_)
                | NodeOutput::TraceJobMessage { .. },
            ) => {}
            Action::Log(line) => self.trace.log(self.now, || line),
            Action::Started { unit, state, .. } => {
                if let Some(j) = self.job.as_mut() {
                    let range = if j.app == "rangesum" {
                        postcard::from_bytes::<RangeSum>(&state)
                            .ok()
                            .map(|u| (u.next, u.end))
                    } else {
                        None
                    };
                    if self.config.trace_unit == Some(unit) {
                        self.trace.log(self.now, || {
                            format!("peer {id} starts unit {unit} over {range:?}")
                        });
                    }
                    j.started
                        .entry(unit)
                        .or_default()
                        .push((self.now, id, range));
                }
            }
            Action::Finished { unit, state, .. } => {
                if let Some(j) = self.job.as_mut() {
                    let covered = if j.app == "rangesum" {
                        RangeSum::covered(&state)
                    } else {
                        None
                    };
                    if self.config.trace_unit == Some(unit) {
                        self.trace.log(self.now, || {
                            format!("peer {id} finished unit {unit}, covering {covered:?}")
                        });
                    }
                    j.finished
                        .entry(unit)
                        .or_default()
                        .push((self.now, id, covered));
                }
            }
        }
    }

    /// Peer `observer`'s membership declared `peer` dead or gone: an
    /// orphan, maybe. A super-peer wrongly declared dead runs on and
    /// takes its place again (see [`crate::mesh_node`]).
    fn mesh_declared(&mut self, observer: u32, peer: u32) {
        let Some(m) = self.mesh.as_mut() else {
            return;
        };
        let reachable = !self.groups.contains_key(&observer);
        m.declared(observer, peer, self.now, reachable);
    }

    /// The `mesh-node` workload's roles and streams.
    fn mesh_event(&mut self, event: Event) {
        use crate::mesh_node::{Part, LEAVES_AFTER, ROLES_CHECK, ROLES_LATEST};
        let Some(m) = self.mesh.as_ref() else {
            return;
        };
        let policy = m.policy;
        let stream_until = m.stream_until;
        let parts: Vec<(u32, bool)> = m
            .parts()
            .map(|(id, p)| (id, *p == Part::SuperPeer))
            .collect();
        let now = self.instant(self.now);
        match event {
            Event::MeshRoles => {
                if !self.check_views(false) && self.now < ROLES_LATEST {
                    self.schedule(self.now + ROLES_CHECK, Event::MeshRoles);
                    return;
                }
                self.trace
                    .log(self.now, || "mesh-node: super-peers take their role".into());
                for (id, _) in parts.iter().filter(|(_, sp)| *sp) {
                    self.mesh_start(*id, now, policy);
                }
                if let Some(m) = self.mesh.as_mut() {
                    m.roles_taken = true;
                }
                self.schedule(self.now + LEAVES_AFTER, Event::MeshLeaves);
            }
            Event::MeshLeaves => {
                for (id, _) in parts.iter().filter(|(_, sp)| !*sp) {
                    self.mesh_start(*id, now, policy);
                }
            }
            Event::MeshStream { sensor, class } => {
                if self.now >= stream_until {
                    return;
                }
                let next = self.now + m.period(class);
                let seq = m.next_seq(sensor, class);
                let payload = crate::mesh_node::payload(sensor, class, seq);
                let got = self.slots[sensor as usize]
                    .peer
                    .as_mut()
                    .and_then(|p| p.mesh_send(now, class, payload).ok());
                if let Some(m) = self.mesh.as_mut() {
                    m.sent(sensor, class, self.now, got);
                    m.check_orphans(self.now);
                }
                self.after_input(sensor);
                self.schedule(next, Event::MeshStream { sensor, class });
            }
            _ => {}
        }
    }

    /// Peer `id` takes its mesh role, if it runs.
    fn mesh_start(&mut self, id: u32, now: Instant, policy: FtPolicy) {
        let Some(part) = self.mesh.as_ref().and_then(|m| {
            m.parts()
                .find(|(p, _)| *p == id)
                .map(|(_, part)| part.clone())
        }) else {
            return;
        };
        let Some(peer) = self.slots[id as usize].peer.as_mut() else {
            return;
        };
        if let Err(error) = peer.mesh_start(now, &part, policy) {
            self.violations.push(Violation::Mesh {
                invariant: "mesh-not-healed",
                what: format!("peer {id} could not take its role {part:?}: {error}"),
            });
        }
        self.after_input(id);
    }

    /// Restarted super-peer `peer` (in its life `life`) takes its role
    /// again once it sees every running peer alive.
    fn mesh_rejoin(&mut self, peer: u32, life: u32) {
        if self.slots[peer as usize].peer.is_none() {
            return;
        }
        if self.not_seen_alive(peer).next().is_some() {
            let at = self.now + crate::mesh_node::ROLES_CHECK;
            self.schedule(at, Event::MeshRejoin { peer, life });
            return;
        }
        let Some(policy) = self.mesh.as_ref().map(|m| m.policy) else {
            return;
        };
        let now = self.instant(self.now);
        self.mesh_start(peer, now, policy);
    }

    /// A group commit of `id`'s disk is due in [`FSYNC`], unless one is
    /// already.
    fn schedule_fsync(&mut self, id: u32) {
        let slot = &mut self.slots[id as usize];
        if !slot.disk.fsync_scheduled {
            slot.disk.fsync_scheduled = true;
            let life = slot.life;
            self.schedule(self.now + FSYNC, Event::Fsync { peer: id, life });
        }
    }

    /// Does what the space workload asks after an answer.
    fn follow_space(&mut self, next: crate::space::Next) {
        match next {
            crate::space::Next::Client { client, after } => {
                let Some((_, peer)) = self
                    .space
                    .as_ref()
                    .and_then(|w| w.client_peers().nth(client))
                else {
                    return;
                };
                let life = self.slots[peer as usize].life;
                self.schedule(self.now + after, Event::SpaceClient { client, peer, life });
            }
            crate::space::Next::RetryFinal { .. } => {
                self.schedule(self.now + Duration::from_millis(200), Event::SpaceFinal)
            }
            crate::space::Next::Nothing => {}
        }
    }

    /// Does what the objects workload asks after an answer.
    fn follow_objects(&mut self, next: crate::objects::Next) {
        match next {
            crate::objects::Next::Client { client, after } => {
                let Some((_, peer)) = self
                    .objects
                    .as_ref()
                    .and_then(|w| w.client_peers().nth(client))
                else {
                    return;
                };
                let life = self.slots[peer as usize].life;
                self.schedule(self.now + after, Event::ObjectClient { client, peer, life });
            }
            crate::objects::Next::RetryFinal => {
                self.schedule(self.now + Duration::from_millis(200), Event::ObjectFinal)
            }
            crate::objects::Next::Nothing => {}
        }
    }

    /// Objects client `client` on `peer` makes its next call, if it has one.
    fn object_call(&mut self, client: usize, peer: u32) {
        let start_new = self.now < self.space_stop;
        let now = self.instant(self.now);
        let Some(w) = self.objects.as_mut() else {
            return;
        };
        if self.slots[peer as usize].peer.is_none() {
            return;
        }
        let Some((token, request)) = w.next_call(client, start_new, self.now) else {
            // Nothing to call yet: the objects are being created.
            if w.creating() && start_new {
                let life = self.slots[peer as usize].life;
                let at = self.now + Duration::from_millis(100);
                self.schedule(at, Event::ObjectClient { client, peer, life });
            }
            return;
        };
        let timeout = match request {
            colony_core::object::ObjectRequest::Create { .. } => crate::objects::CREATE_TIMEOUT,
            _ => crate::objects::CALL_TIMEOUT,
        };
        self.trace
            .record(self.now, 34, &[u64::from(peer), client as u64, token]);
        self.trace.log(self.now, || {
            format!("objects client {client} on peer {peer} asks {request:?} as request {token}")
        });
        if let Some(p) = self.slots[peer as usize].peer.as_mut() {
            p.object_request(now, token, request, timeout);
        }
        self.after_input(peer);
    }

    /// Once every client is done, reads each object not yet read back,
    /// each attempt from a random running peer.
    fn object_final_reads(&mut self) {
        let Some(w) = self.objects.as_ref() else {
            return;
        };
        if self.now < self.space_stop || !w.clients_idle() || w.creating() {
            self.schedule(self.now + SETTLE_CHECK, Event::ObjectFinal);
            return;
        }
        let due = w.finals_due();
        let live: Vec<u32> = (0..self.config.peers)
            .filter(|p| self.running(*p) && !self.slots[*p as usize].paused)
            .collect();
        let now = self.instant(self.now);
        for object in due {
            let Some(&peer) = self.rng.pick(&live) else {
                break;
            };
            let Some((token, request)) = self
                .objects
                .as_mut()
                .and_then(|w| w.final_call(object, peer))
            else {
                continue;
            };
            self.trace
                .record(self.now, 35, &[u64::from(peer), object as u64]);
            self.trace.log(self.now, || {
                format!("peer {peer} reads object #{object} back as request {token}")
            });
            if let Some(p) = self.slots[peer as usize].peer.as_mut() {
                p.object_request(now, token, request, crate::objects::FINAL_TIMEOUT);
            }
            self.after_input(peer);
        }
    }

    /// Space client `client` on `peer` makes its next call, if it has one.
    fn space_call(&mut self, client: usize, peer: u32) {
        let start_new = self.now < self.space_stop;
        let now = self.instant(self.now);
        let Some(w) = self.space.as_mut() else {
            return;
        };
        let Some((key, call)) = w.next_call(client, start_new) else {
            return;
        };
        let op = crate::space::request(&w.keys()[key], &call);
        let Some(p) = self.slots[peer as usize].peer.as_mut() else {
            return;
        };
        self.trace
            .record(self.now, 30, &[u64::from(peer), client as u64, key as u64]);
        self.trace.log(self.now, || {
            format!("space client {client} on peer {peer} calls {call:?} on k{key}")
        });
        match p.space_request(now, op, CALL_TIMEOUT) {
            Ok(id) => w.called(client, key, call, id, self.now),
            Err(error) => {
                let next = w.not_taken(client, call, error);
                self.follow_space(next);
            }
        }
        self.after_input(peer);
    }

    /// Once every client is done, reads each object not yet read back, each
    /// attempt from a random running peer.
    fn space_final_reads(&mut self) {
        let Some(w) = self.space.as_ref() else {
            return;
        };
        if self.now < self.space_stop || !w.clients_idle() {
            self.schedule(self.now + SETTLE_CHECK, Event::SpaceFinal);
            return;
        }
        let due = w.finals_due();
        let live: Vec<u32> = (0..self.config.peers)
            .filter(|p| self.running(*p) && !self.slots[*p as usize].paused)
            .collect();
        let now = self.instant(self.now);
        for key in due {
            let Some(&peer) = self.rng.pick(&live) else {
                break;
            };
            let (Some(w), Some(p)) = (self.space.as_mut(), self.slots[peer as usize].peer.as_mut())
            else {
                continue;
            };
            let op = SpaceOp::Get {
                key: w.keys()[key].clone(),
            };
            let id = p.space_request(now, op, FINAL_TIMEOUT);
            w.final_called(key, peer, id, self.now);
            self.trace
                .record(self.now, 32, &[u64::from(peer), key as u64]);
            self.after_input(peer);
        }
        if self
            .space
            .as_ref()
            .is_some_and(|w| !w.finals_due().is_empty())
        {
            self.schedule(self.now + Duration::from_millis(200), Event::SpaceFinal);
        }
    }

    fn on_job_event(&mut self, id: u32, event: JobEvent<u32>) {
        let now = self.now;
        let Some(j) = self.job.as_mut() else {
            return;
        };
        match &event {
            JobEvent::Merged { unit, .. } => {
                self.trace.record(now, 12, &[u64::from(id), *unit]);
                let peers = j.merged.entry(*unit).or_default();
                if !peers.contains(&id) {
                    peers.push(id);
                }
            }
            JobEvent::Finished { ok, .. } => {
                self.trace.record(now, 13, &[u64::from(id), u64::from(*ok)]);
                if j.finished_at.is_none() {
                    j.finished_at = Some(now);
                    if j.query == QueryState::Idle {
                        let from = if self.config.until_job {
                            now
                        } else {
                            now.max(self.faults_end)
                        };
                        let at = from + Duration::from_millis(500);
                        self.schedule(at, Event::Query);
                    }
                }
                let ok = *ok;
                self.trace
                    .log(now, || format!("peer {id}: job finished, ok = {ok}"));
            }
            JobEvent::Refused { from, message, why } => {
                let (from, message, why) = (*from, *message, *why);
                self.trace.log(now, || {
                    format!("peer {id}: refused {message} from {from}: {why}")
                });
            }
            JobEvent::CheckpointLost { unit, holders, .. } => {
                self.trace.record(now, 14, &[u64::from(id), *unit]);
                let crashed: Vec<u32> = holders
                    .iter()
                    .filter(|h| {
                        j.crashes
                            .get(h)
                            .is_some_and(|c| c.iter().any(|t| *t <= now))
                    })
                    .copied()
                    .collect();
                let tolerated = j.ft.storage.tolerated_failures();
                if crashed.len() > tolerated {
                    j.lost_allowed += 1;
                } else {
                    self.violations.push(Violation::CheckpointLost {
                        unit: *unit,
                        holders: holders.clone(),
                        crashed,
                        tolerated,
                    });
                }
                let holders = holders.clone();
                let unit = *unit;
                self.trace.log(now, || {
                    format!("peer {id}: checkpoint of unit {unit} lost (holders {holders:?})")
                });
            }
            JobEvent::Reissued { unit, lost, .. } => {
                self.trace
                    .record(now, 15, &[u64::from(id), *unit, u64::from(*lost)]);
                let (unit, lost) = (*unit, *lost);
                self.trace.log(now, || {
                    format!("peer {id}: unit {unit} reissued (lost with peer {lost})")
                });
            }
            JobEvent::Primary { previous, .. } => {
                self.trace.record(
                    now,
                    16,
                    &[u64::from(id), previous.map_or(u64::MAX, u64::from)],
                );
                let previous = *previous;
                self.trace.log(now, || {
                    format!("peer {id} became the job's primary (previous {previous:?})")
                });
            }
            JobEvent::Assigned {
                unit, to, reissue, ..
            } => {
                self.trace.record(
                    now,
                    17,
                    &[u64::from(id), *unit, u64::from(*to), u64::from(*reissue)],
                );
                j.assigned
                    .entry(*unit)
                    .or_default()
                    .push((now, *to, *reissue));
            }
            JobEvent::CheckpointAcked { unit, seq, .. } => {
                self.trace.record(now, 18, &[u64::from(id), *unit, *seq]);
            }
            JobEvent::HomeMajorityLost { .. } | JobEvent::EncodeFailed { .. } => {}
        }
    }

    /// Starts (or restarts) the final query from a random surviving peer.
    fn start_query(&mut self) {
        let candidates: Vec<u32> = (0..self.config.peers)
            .filter(|p| self.running(*p) && !self.slots[*p as usize].paused)
            .collect();
        let Some(&asker) = self.rng.pick(&candidates) else {
            self.schedule(self.now + QUERY_RETRY, Event::Query);
            return;
        };
        let Some(j) = self.job.as_mut() else {
            return;
        };
        let job = j.id;
        let life = self.slots[asker as usize].life;
        j.query = QueryState::Asked {
            asker,
            life,
            since: self.now,
        };
        self.trace.log(self.now, || {
            format!("peer {asker} asks for the job's result")
        });
        self.trace.record(self.now, 19, &[u64::from(asker)]);
        let now = self.instant(self.now);
        if let Some(peer) = self.slots[asker as usize].peer.as_mut() {
            peer.query(now, job);
        }
        self.after_input(asker);
        self.schedule(self.now + QUERY_TIMEOUT, Event::Query);
    }

    fn on_query_answer(&mut self, id: u32, job: JobId, view: Option<Box<JobView<u32>>>) {
        let Some(j) = self.job.as_mut() else {
            return;
        };
        let asked = matches!(j.query, QueryState::Asked { asker, .. } if asker == id);
        if job != j.id || !asked {
            return;
        }
        let Some(view) = view else {
            j.last_answer = "\"unknown job\" from every peer".into();
            j.query = QueryState::Idle;
            self.schedule(self.now + QUERY_RETRY, Event::Query);
            return;
        };
        match &view.state {
            JobState::Running => {
                j.last_answer = format!(
                    "still running ({}/{} units merged)",
                    view.stats.units_done, view.stats.units
                );
                j.query = QueryState::Idle;
                self.schedule(self.now + QUERY_RETRY, Event::Query);
            }
            JobState::Failed { reason } | JobState::Cancelled { reason } => {
                j.query = QueryState::Answered;
                self.violations.push(Violation::JobFailed {
                    reason: reason.clone(),
                });
            }
            JobState::Done { result } => {
                j.query = QueryState::Answered;
                j.final_stats = Some(view.stats.clone());
                if *result != j.expected {
                    let count = |bytes: &[u8]| match j.app {
                        "nqueens" => decode::<u64>(bytes, "result").ok(),
                        _ => postcard::from_bytes::<u64>(bytes).ok(),
                    };
                    let show = |bytes: &[u8]| match count(bytes) {
                        Some(v) => v.to_string(),
                        None => format!("{bytes:?}"),
                    };
                    let got = format!("{} ({})", show(result), coverage(j));
                    self.violations.push(Violation::WrongResult {
                        got,
                        expected: show(&j.expected),
                    });
                }
                if view.stats.units_done != view.stats.units {
                    self.violations.push(Violation::UnitsMismatch {
                        units: view.stats.units,
                        done: view.stats.units_done,
                    });
                }
                let stats = view.stats.clone();
                self.trace.log(self.now, || {
                    format!(
                        "peer {id} got the result: {} units, {} steals, {} reissued, {} takeovers, {} checkpoints",
                        stats.units, stats.steals, stats.reissued, stats.takeovers, stats.checkpoints
                    )
                });
            }
        }
    }

    /// Whether `id` has a process (not crashed; maybe paused).
    fn running(&self, id: u32) -> bool {
        self.slots[id as usize].peer.is_some()
    }

    /// Whether frames can pass between `a` and `b` now.
    fn reachable(&self, a: u32, b: u32) -> bool {
        self.groups.get(&a) == self.groups.get(&b)
    }

    fn latency(&mut self) -> Duration {
        let jitter = self.net.jitter.mul_f64(self.net_rng.unit());
        self.net.base_latency + jitter
    }

    /// A connection attempt from `from` to `target`: both sides learn of
    /// each other (identify), or the dial fails.
    fn dial(&mut self, from: u32, target: u32, index: Option<usize>) {
        let life = self.slots[from as usize].life;
        let rtt = self.latency() + self.latency();
        let ok = self.running(target)
            && !self.slots[target as usize].paused
            && self.reachable(from, target);
        if ok {
            let target_life = self.slots[target as usize].life;
            self.schedule(
                self.now + rtt,
                Event::Contact {
                    peer: from,
                    life,
                    other: target,
                },
            );
            self.schedule(
                self.now + rtt,
                Event::Contact {
                    peer: target,
                    life: target_life,
                    other: from,
                },
            );
        } else if let Some(index) = index {
            let delay = if self.running(target) || !self.reachable(from, target) {
                DIAL_TIMEOUT
            } else {
                rtt
            };
            self.schedule(
                self.now + delay,
                Event::DialFailed {
                    peer: from,
                    life,
                    index,
                },
            );
        }
    }

    /// Puts a frame on the wire with the seed's latency, loss and
    /// duplication.
    fn transmit(&mut self, from: u32, to: u32, bytes: Vec<u8>) {
        self.frames += 1;

        self.trace.record(
            self.now,
            5,
            &[u64::from(from), u64::from(to), fnv1a(&bytes)],
        );
        if to >= self.config.peers {
            return;
        }
        if !self.reachable(from, to) {
            self.counts.cut += 1;
            return;
        }
        if !self.running(to) {
            // Connection refused: the network layer reports it, at most
            // every 100 ms per peer.
            let last = self.slots[from as usize].last_unreachable.get(&to).copied();
            if last.is_none_or(|l| self.now >= l + UNREACHABLE_INTERVAL) {
                self.slots[from as usize]
                    .last_unreachable
                    .insert(to, self.now);
                let life = self.slots[from as usize].life;
                let rtt = self.latency() + self.latency();
                self.schedule(
                    self.now + rtt,
                    Event::Unreachable {
                        peer: from,
                        life,
                        target: to,
                    },
                );
            }
            return;
        }
        if self.net_rng.chance(self.net.loss) {
            self.counts.lost += 1;
            return;
        }
        let copies = if self.net_rng.chance(self.net.duplication) {
            self.counts.duplicated += 1;
            2
        } else {
            1
        };
        let life = self.slots[to as usize].life;
        for _ in 0..copies {
            let at = self.now + self.latency();
            let last = self.last_arrival.entry((from, to)).or_default();
            if at < *last {
                self.counts.reordered += 1;
            } else {
                *last = at;
            }
            self.schedule(
                at,
                Event::Frame {
                    to,
                    life,
                    from,
                    bytes: bytes.clone(),
                },
            );
        }
    }

    fn handle_event(&mut self, event: Event) {
        if let Some((peer, life)) = event.target() {
            let slot = &mut self.slots[peer as usize];
            if slot.life != life || slot.peer.is_none() {
                return;
            }
            if slot.paused {
                slot.held.push(event);
                return;
            }
        }
        let now = self.instant(self.now);
        match event {
            Event::Fault(action) => self.apply_fault(action),
            Event::Frame {
                to, from, bytes, ..
            } => {
                if !self.reachable(from, to) {
                    self.counts.cut += 1;
                    return;
                }
                self.trace
                    .record(self.now, 6, &[u64::from(to), u64::from(from)]);
                if let Some(peer) = self.slots[to as usize].peer.as_mut() {
                    peer.handle_frame(now, from, &bytes);
                }
                self.after_input(to);
            }
            Event::Contact { peer, other, .. } => {
                self.trace
                    .record(self.now, 7, &[u64::from(peer), u64::from(other)]);
                if let Some(p) = self.slots[peer as usize].peer.as_mut() {
                    p.handle_contact(now, other);
                }
                self.after_input(peer);
            }
            Event::DialFailed { peer, index, .. } => {
                self.trace
                    .record(self.now, 8, &[u64::from(peer), index as u64]);
                if let Some(p) = self.slots[peer as usize].peer.as_mut() {
                    p.handle_dial_failed(now, index);
                }
                self.after_input(peer);
            }
            Event::Unreachable { peer, target, .. } => {
                self.trace
                    .record(self.now, 9, &[u64::from(peer), u64::from(target)]);
                if let Some(p) = self.slots[peer as usize].peer.as_mut() {
                    p.handle_unreachable(now, target);
                }
                self.after_input(peer);
            }
            Event::CheckViews => {
                if self.check_views(false) {
                    self.converged = true;
                } else {
                    self.schedule(self.now + SETTLE_CHECK, Event::CheckViews);
                }
            }
            Event::Submit => {
                let Some(j) = self.job.as_ref() else {
                    return;
                };
                let (submitter, id, app, params, ft) =
                    (j.submitter, j.id, j.app, j.params.clone(), j.ft);
                let home = self.slots[submitter as usize]
                    .peer
                    .as_mut()
                    .map(|p| p.submit(now, id, app, params, ft));
                self.trace.log(self.now, || {
                    format!("peer {submitter} submits the job; primary {home:?}")
                });
                self.after_input(submitter);
            }
            Event::Fsync { peer, .. } => {
                let disk = &mut self.slots[peer as usize].disk;
                disk.fsync_scheduled = false;
                let written = std::mem::take(&mut disk.pending);
                for (key, piece) in &written {
                    disk.pieces.insert(*key, piece.clone());
                }
                for job in std::mem::take(&mut disk.forget_after_sync) {
                    disk.pieces.retain(|k, _| k.job != job);
                }
                // Space writes, in the order they were asked: a partition
                // dropped and then held again is written afresh.
                let mut durable = Vec::new();
                let mut failed = Vec::new();
                for write in std::mem::take(&mut disk.space_pending) {
                    match write {
                        SpaceWrite::Persist {
                            partition,
                            term,
                            seq,
                            size,
                            members,
                            config,
                            data,
                        } => {
                            let stored = disk.space.entry(partition).or_default();
                            match stored.write((term, seq), size, &members, &config, &data) {
                                Ok(()) => durable.push((partition, term, seq)),
                                Err(error) => failed.push(error),
                            }
                        }
                        SpaceWrite::Delete { partition } => {
                            disk.space.remove(&partition);
                        }
                    }
                }
                let mut objects_durable = Vec::new();
                for stored in std::mem::take(&mut disk.objects_pending) {
                    let guid = stored.snapshot.uri.guid;
                    objects_durable.push((guid, stored.term, stored.seq));
                    disk.objects.insert(guid, stored);
                }
                for (guid, term, seq) in objects_durable {
                    if let Some(p) = self.slots[peer as usize].peer.as_mut() {
                        p.handle_object_durable(now, guid, term, seq);
                    }
                }
                for error in failed {
                    self.violations.push(Violation::Malformed {
                        peer,
                        from: peer,
                        error,
                    });
                }
                self.trace.record(
                    self.now,
                    26,
                    &[u64::from(peer), written.len() as u64, durable.len() as u64],
                );
                for (partition, term, seq) in durable {
                    if let Some(p) = self.slots[peer as usize].peer.as_mut() {
                        p.handle_space_durable(now, partition, term, seq);
                    }
                }
                for (key, piece) in written {
                    if self.config.trace_unit == Some(key.unit) {
                        let (epoch, version) = (piece.epoch, piece.version);
                        self.trace.log(self.now, || {
                            format!(
                                "peer {peer} synced unit {} index {} epoch {epoch} version {version}",
                                key.unit, key.index
                            )
                        });
                    }
                    if let Some(p) = self.slots[peer as usize].peer.as_mut() {
                        p.handle_persisted(now, key, piece.epoch, piece.version);
                    }
                }
                self.after_input(peer);
            }
            Event::SpaceClient { client, peer, .. } => self.space_call(client, peer),
            Event::SpaceFinal => self.space_final_reads(),
            Event::ObjectClient { client, peer, .. } => self.object_call(client, peer),
            Event::ObjectFinal => self.object_final_reads(),
            event @ (Event::MeshRoles | Event::MeshLeaves | Event::MeshStream { .. }) => {
                self.mesh_event(event)
            }
            Event::MeshRejoin { peer, life } => self.mesh_rejoin(peer, life),
            Event::ObjectRan { peer, life, run } => {
                let Some(run) = self.object_runs.remove(&run) else {
                    return;
                };
                if self.slots[peer as usize].life != life {
                    return;
                }
                let now = self.instant(self.now);
                if let Some(p) = self.slots[peer as usize].peer.as_mut() {
                    p.handle_object_ran(now, run);
                }
                self.after_input(peer);
            }
            Event::Query => {
                let Some(j) = self.job.as_ref() else {
                    return;
                };
                let stale = match j.query {
                    QueryState::Idle => true,
                    QueryState::Asked { asker, life, since } => {
                        self.slots[asker as usize].life != life || self.now >= since + QUERY_TIMEOUT
                    }
                    QueryState::Answered => false,
                };
                if stale {
                    self.start_query();
                }
            }
        }
    }

    fn apply_fault(&mut self, action: FaultAction) {
        let text = action.to_string();
        self.trace.log(self.now, || text);
        match action {
            FaultAction::Crash { peer } => {
                if let Some(m) = self.mesh.as_mut() {
                    // Stopped for good; a second crash of a stopped peer
                    // is nothing.
                    if self.slots[peer as usize].peer.is_none() {
                        return;
                    }
                    m.stopped(peer, self.now);
                }
                self.counts.crashes += 1;
                self.trace.record(self.now, 20, &[u64::from(peer)]);
                self.pipes.crashed(peer, self.now);
                if let Some(j) = self.job.as_mut() {
                    j.crashes.entry(peer).or_default().push(self.now);
                }
                if let Some(w) = self.space.as_mut() {
                    if !w.crashed(peer).is_empty() {
                        self.schedule(self.now, Event::SpaceFinal);
                    }
                }
                if let Some(w) = self.objects.as_mut() {
                    w.activations.crashed(peer, self.now);
                    if w.crashed(peer) {
                        self.schedule(self.now, Event::ObjectFinal);
                    }
                }
                let slot = &mut self.slots[peer as usize];
                slot.disk.pending.clear();
                slot.disk.forget_after_sync.clear();
                slot.disk.space_pending.clear();
                slot.disk.objects_pending.clear();
                slot.disk.fsync_scheduled = false;
                slot.peer = None;
                slot.paused = false;
                slot.held.clear();
                slot.life += 1;
                slot.wake = Duration::MAX;
                self.reindex(peer);
            }
            FaultAction::Restart { peer } => {
                self.trace.record(self.now, 21, &[u64::from(peer)]);
                self.start_peer(peer);
                if self.mesh.as_ref().is_some_and(|m| m.roles_taken) {
                    let life = self.slots[peer as usize].life;
                    let at = self.now + crate::mesh_node::ROLES_CHECK;
                    self.schedule(at, Event::MeshRejoin { peer, life });
                }
                // Its space clients go on in the new life.
                let clients: Vec<usize> = self
                    .space
                    .as_ref()
                    .map(|w| {
                        w.client_peers()
                            .filter(|(_, p)| *p == peer)
                            .map(|(c, _)| c)
                            .collect()
                    })
                    .unwrap_or_default();
                for client in clients {
                    let after = self
                        .space
                        .as_mut()
                        .map(|w| w.first_pause())
                        .unwrap_or_default();
                    let next = crate::space::Next::Client { client, after };
                    self.follow_space(next);
                }
                let clients: Vec<usize> = self
                    .objects
                    .as_ref()
                    .map(|w| {
                        w.client_peers()
                            .filter(|(_, p)| *p == peer)
                            .map(|(c, _)| c)
                            .collect()
                    })
                    .unwrap_or_default();
                for client in clients {
                    let after = self.objects.as_mut().map(|w| w.pause()).unwrap_or_default();
                    let next = crate::objects::Next::Client { client, after };
                    self.follow_objects(next);
                }
            }
            FaultAction::Pause { peer } => {
                self.counts.pauses += 1;
                self.trace.record(self.now, 22, &[u64::from(peer)]);
                self.slots[peer as usize].paused = true;
                if let Some(m) = self.mesh.as_mut() {
                    m.unreachable(peer);
                }
                self.reindex(peer);
            }
            FaultAction::Resume { peer } => {
                self.trace.record(self.now, 23, &[u64::from(peer)]);
                if let Some(m) = self.mesh.as_mut() {
                    m.reachable_again(peer, self.now);
                }
                let slot = &mut self.slots[peer as usize];
                slot.paused = false;
                let held = std::mem::take(&mut slot.held);
                self.reindex(peer);
                // Late timers first (the process finds them overdue), then
                // the frames that queued up in its socket.
                self.wake_peer(peer);
                for event in held {
                    self.handle_event(event);
                }
            }
            FaultAction::Cut { id, peers } => {
                self.counts.partitions += 1;
                self.trace.record(self.now, 24, &[u64::from(id)]);
                for p in &peers {
                    self.groups.insert(*p, id);
                    if let Some(m) = self.mesh.as_mut() {
                        m.unreachable(*p);
                    }
                }
                self.partitions.insert(id, peers);
            }
            FaultAction::Heal { id } => {
                self.trace.record(self.now, 25, &[u64::from(id)]);
                for p in self.partitions.remove(&id).unwrap_or_default() {
                    self.groups.remove(&p);
                    if let Some(m) = self.mesh.as_mut() {
                        m.reachable_again(p, self.now);
                    }
                }
            }
        }
    }

    /// The other running peers that `observer` (running) does not see
    /// alive, with the state it sees them in.
    fn not_seen_alive(
        &self,
        observer: u32,
    ) -> impl Iterator<Item = (u32, Option<MemberState>)> + '_ {
        let view = self.slots[observer as usize]
            .peer
            .as_ref()
            .map(|peer| peer.node.membership());
        (0..self.config.peers)
            .filter(move |b| *b != observer && self.running(*b))
            .filter_map(move |b| {
                let state = view?.state_of(&b);
                (state != Some(MemberState::Alive)).then_some((b, state))
            })
    }

    /// Whether every running peer sees every other running peer alive;
    /// with `record`, the mismatches become violations.
    fn check_views(&mut self, record: bool) -> bool {
        let live: Vec<u32> = (0..self.config.peers)
            .filter(|p| self.running(*p))
            .collect();
        let mut ok = true;
        for &a in &live {
            if !record {
                if self.not_seen_alive(a).next().is_some() {
                    // The answer is known: checking the other n² pairs
                    // every half second was a hotspot at 1,000 peers.
                    return false;
                }
                continue;
            }
            let unseen: Vec<(u32, Option<MemberState>)> = self.not_seen_alive(a).collect();
            ok &= unseen.is_empty();
            for (b, state) in unseen {
                self.violations.push(Violation::ViewsDiverged {
                    observer: a,
                    peer: b,
                    state,
                });
            }
        }
        if ok {
            self.trace
                .log(self.now, || "every live peer sees every other alive".into());
        }
        ok
    }
}
