//! `--workload mesh`: the streaming mesh of seed 001 (issue 14) on the
//! simulator's faulty network. The real mesh cores of
//! `colony_core::mesh` — a [`Relay`] per super-peer, a [`Sensor`] per
//! sensor peer, one [`Client`] — exchange their messages over a network
//! with the seed's [`NetParams`] (latency, jitter that reorders, loss,
//! duplication) under a fault [`Schedule`] drawn by the same generator as
//! the other workloads (crashes, pauses, partitions of super-peers).
//!
//! # The tree
//!
//! The seed's bench (§IV) by default: span 2, 2 super-peers per cell, 3
//! levels (cells 0, 01, 02, 011, 012, 021, 022: 14 super-peers, ids
//! `0..14`, cell by cell), 2 sensors per leaf cell (ids from 14), one
//! client at the root (the last id). Sensors stream events, audio and
//! video at the seed's rates divided by `mesh_rate_divisor`.
//!
//! # How failures reach the cores
//!
//! From the fault schedule, with a detection delay — not from the
//! membership core: this workload checks the bare cores, with cells
//! assigned and no join protocol. `--workload mesh-node`
//! ([`crate::mesh_node`]) runs the same mesh through every peer's
//! `colony_core::node::Node` instead (real membership, cells found by the
//! join protocol, pipes) with the same invariants. Here this module plays
//! membership: a super-peer that crashes (silent at
//! once), or stays paused or cut off for longer than the seed's detection
//! delay (100–400 ms), is declared failed to every live core that delay
//! after its silence began, and is then stopped for good (Colony's
//! membership makes a peer declared dead rejoin with a new incarnation,
//! and a super-peer's rejoin into its cell is not in the cores yet; the
//! schedule's restarts are ignored). Shorter pauses hold the peer's
//! messages until it resumes; shorter partitions only drop the messages
//! that cross them. At most `MAX_DEATHS` super-peers die per seed (later
//! faults are skipped), so whole cells die in some seeds and not others.
//! Sensors and the client are never faulted.
//!
//! # Invariants (each a [`Violation::Mesh`] with its name)
//!
//! - `mesh-duplicate`: the client hands no frame (sensor, class, number)
//!   over twice.
//! - `mesh-lost`: a sensor is *covered* when every cell on its first path
//!   (its leaf cell and every ancestor up to the root) keeps at least one
//!   super-peer that is never silenced during the run. For a covered
//!   sensor, every frame of a class the policy replicates that its core
//!   accepted (`Sensor::send` returned its number) reaches the client by
//!   the end of the run (faults end, streams stop, then `SETTLE`).
//! - `mesh-rebind-late` / `mesh-rebind-kind`: a child (sensor or
//!   super-peer of a non-root cell) whose parent is declared failed is
//!   *orphaned* then; it must report `Bound` again within
//!   `REBIND_DEADLINE`, unless no cell at or above its lost parent's cell
//!   still has a live super-peer. The rebind must be fast if another
//!   member of the lost cell stays unsilenced until the deadline, slow if
//!   every member of it had been declared failed when it was orphaned
//!   (otherwise either kind is accepted).
//! - `mesh-not-healed`: at the end, every live child whose chain of cells
//!   up to the root still has live members is bound to a live parent,
//!   every live super-peer and sensor holds nothing unacknowledged, and
//!   every stream of such a sensor delivered at least one frame sent in
//!   the last `HEAL_PROBE` of streaming (after the faults ended).

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use colony_core::mesh::{
    CellId, Client, FtPolicy, MeshConfig, MeshEvent, MeshMsg, MeshOutput, MeshRole, RebindKind,
    Relay, Sensor, StreamClass,
};

use crate::check::Violation;
use crate::faults::{FaultAction, NetParams, Schedule, ScheduleLimits};
use crate::rng::{derive, SimRng};
use crate::sim::{Broken, FaultCounts, Report, SimConfig};

type Peer = u32;

/// Most super-peers silenced for good in one seed.
pub const MAX_DEATHS: usize = 4;
/// How long an orphaned child may take to report a new parent.
pub const REBIND_DEADLINE: Duration = Duration::from_secs(5);
/// Streams go on this long after the faults end.
const STREAM_AFTER_FAULTS: Duration = Duration::from_secs(3);
/// Frames sent in the last stretch of streaming must arrive (healing).
pub const HEAL_PROBE: Duration = Duration::from_millis(1_000);
/// Time after the streams stop for resends to settle.
const SETTLE: Duration = Duration::from_secs(8);
/// When the faults may begin (the mesh has formed by then).
const WINDOW_START: Duration = Duration::from_millis(1_000);
/// When sensors start streaming.
const STREAM_FROM: Duration = Duration::from_millis(1_000);
/// How long the directory takes to answer `RequestCell`.
const DISCOVERY: Duration = Duration::from_millis(20);
/// Messages held for a paused peer, at most (older ones are dropped).
const MAX_HELD: usize = 100_000;

type Core = MeshRole<Peer>;

/// Something scheduled besides messages and timers.
#[derive(Clone, Debug)]
enum Happening {
    /// A fault of the schedule.
    Fault(FaultAction),
    /// The peer goes silent for good (crash, or a long pause or cut).
    Silence(Peer),
    /// Membership tells every live core that the peer failed.
    Failed(Peer),
    /// The directory answers `who`'s `RequestCell` after losing `lost`.
    Found { who: Peer, lost: CellId },
}

/// A child that lost its parent and has not reported a new one.
#[derive(Clone, Debug)]
struct Orphan {
    since: Instant,
    lost: Peer,
    cell: CellId,
    expect: Option<RebindKind>,
}

/// Frame period of each class at the seed's rates (events 25/s, audio
/// 38/s, video 24/s).
fn period(class: StreamClass) -> Duration {
    match class {
        StreamClass::Event => Duration::from_millis(40),
        StreamClass::Audio => Duration::from_micros(26_316),
        StreamClass::Video => Duration::from_micros(41_667),
        StreamClass::Mesh => Duration::from_secs(1),
    }
}

/// A payload naming its frame, checked at the client.
fn payload(origin: Peer, class: StreamClass, seq: u64) -> Vec<u8> {
    format!("{origin}/{class}/{seq}").into_bytes()
}

struct MeshWorld {
    config: SimConfig,
    /// The cores' policy.
    policy: FtPolicy,
    /// The policy the run is checked against (FT_ALL under
    /// `--broken mesh-no-ft`, the cores' otherwise).
    checked: FtPolicy,
    rng: SimRng,
    net: NetParams,
    start: Instant,
    now: Instant,
    cores: BTreeMap<Peer, Core>,
    /// Cells in breadth-first order with their super-peers.
    cells: BTreeMap<CellId, Vec<Peer>>,
    cell_of: BTreeMap<Peer, CellId>,
    /// Each sensor's leaf cell.
    sensor_cell: BTreeMap<Peer, CellId>,
    client: Peer,
    /// When each super-peer goes silent for good, from the schedule.
    silent_at: BTreeMap<Peer, Instant>,
    /// Super-peers silenced so far, and those declared failed.
    silenced: BTreeSet<Peer>,
    declared: BTreeSet<Peer>,
    paused: BTreeSet<Peer>,
    held: BTreeMap<Peer, Vec<(Peer, MeshMsg<Peer>)>>,
    cuts: BTreeMap<u32, BTreeSet<Peer>>,
    network: BTreeMap<(Instant, u64), (Peer, Peer, MeshMsg<Peer>)>,
    happenings: BTreeMap<(Instant, u64), Happening>,
    order: u64,
    detect: Duration,
    stream_until: Instant,
    faults_end: Instant,
    ticks: BTreeMap<(Peer, StreamClass), Instant>,
    sent: BTreeMap<(Peer, StreamClass), u64>,
    /// When each frame was sent (only the probe stretch is kept).
    probe_from: BTreeMap<(Peer, StreamClass), u64>,
    delivered: BTreeMap<(Peer, StreamClass), BTreeMap<u64, u32>>,
    parent_of: BTreeMap<Peer, Peer>,
    orphans: BTreeMap<Peer, Orphan>,
    counts: FaultCounts,
    frames: u64,
    events: u64,
    wakeups: u64,
    violations: Vec<Violation>,
    send_errors: u64,
}

/// A violation of the mesh invariant named `invariant`.
pub(crate) fn violation(invariant: &'static str, what: String) -> Violation {
    Violation::Mesh { invariant, what }
}

/// The healing probe, shared by both mesh workloads: each stream (of a
/// sensor `must_heal` names) whose frames from `probe_from` on, the ones
/// sent in the last [`HEAL_PROBE`] of streaming, never arrived.
pub(crate) fn unhealed_streams(
    probe_from: &BTreeMap<(Peer, StreamClass), u64>,
    delivered: &BTreeMap<(Peer, StreamClass), BTreeMap<u64, u32>>,
    must_heal: impl Fn(Peer) -> bool,
) -> Vec<String> {
    probe_from
        .iter()
        .filter(|((sensor, _), _)| must_heal(*sensor))
        .filter(|(stream, from)| {
            delivered
                .get(stream)
                .is_none_or(|d| d.range(**from..).next().is_none())
        })
        .map(|((sensor, class), _)| {
            format!("no {class} frame of sensor {sensor} sent in the last {HEAL_PROBE:?} arrived")
        })
        .collect()
}

/// `mesh-not-healed` with the first five `problems`, if there are any.
pub(crate) fn not_healed_violation(mut problems: Vec<String>) -> Option<Violation> {
    if problems.is_empty() {
        return None;
    }
    let n = problems.len();
    problems.truncate(5);
    Some(violation(
        "mesh-not-healed",
        format!("{n} problems after the faults: {}", problems.join("; ")),
    ))
}

impl MeshWorld {
    fn new(config: SimConfig) -> MeshWorld {
        let mut rng = SimRng::new(derive(&[config.seed, 0x6d65_7368]));
        let net = NetParams::draw(&config.faults, &mut rng);
        let detect = Duration::from_millis(rng.range(100, 400));
        let start = Instant::now();
        let mesh = MeshConfig::default();
        let span = config.mesh_span.clamp(1, 9);
        let size = config.mesh_cell_size.max(1);
        // Cells breadth-first.
        let mut order = vec![CellId::root()];
        let mut level = vec![CellId::root()];
        for _ in 1..config.mesh_levels.max(1) {
            let next: Vec<CellId> = level.iter().flat_map(|c| c.children(span)).collect();
            order.extend(next.iter().cloned());
            level = next;
        }
        let mut cells = BTreeMap::new();
        let mut cell_of = BTreeMap::new();
        let mut next_id: Peer = 0;
        for cell in &order {
            let members: Vec<Peer> = (next_id..next_id + size).collect();
            next_id += size;
            for m in &members {
                cell_of.insert(*m, cell.clone());
            }
            cells.insert(cell.clone(), members);
        }
        let super_peers = next_id;
        let (policy, checked) = if config.broken == Some(Broken::MeshNoFt) {
            (FtPolicy::NoFt, FtPolicy::FtAll)
        } else {
            (config.mesh_policy, config.mesh_policy)
        };
        let mut world = MeshWorld {
            policy,
            checked,
            rng,
            net,
            start,
            now: start,
            cores: BTreeMap::new(),
            cells,
            cell_of,
            sensor_cell: BTreeMap::new(),
            client: 0,
            silent_at: BTreeMap::new(),
            silenced: BTreeSet::new(),
            declared: BTreeSet::new(),
            paused: BTreeSet::new(),
            held: BTreeMap::new(),
            cuts: BTreeMap::new(),
            network: BTreeMap::new(),
            happenings: BTreeMap::new(),
            order: 0,
            detect,
            stream_until: start,
            faults_end: start,
            ticks: BTreeMap::new(),
            sent: BTreeMap::new(),
            probe_from: BTreeMap::new(),
            delivered: BTreeMap::new(),
            parent_of: BTreeMap::new(),
            orphans: BTreeMap::new(),
            counts: FaultCounts::default(),
            frames: 0,
            events: 0,
            wakeups: 0,
            violations: Vec::new(),
            send_errors: 0,
            config,
        };
        for cell in &order {
            let members = world.cells[cell].clone();
            for (rank, peer) in members.iter().enumerate() {
                let mut relay = Relay::new(
                    *peer,
                    mesh.clone(),
                    world.policy,
                    cell.clone(),
                    members.clone(),
                );
                if let Some(parent) = cell.parent() {
                    let parents = world.cells.get(&parent).cloned().unwrap_or_default();
                    relay.bind(start, parents, rank);
                }
                world.cores.insert(*peer, Core::Relay(Box::new(relay)));
            }
        }
        let mut id = super_peers;
        for leaf in &level {
            let members = world.cells[leaf].clone();
            for j in 0..world.config.mesh_sensors.max(1) {
                let mut sensor = Sensor::new(id, mesh.clone(), world.policy);
                sensor.bind(start, leaf.clone(), members.clone(), j as usize);
                world.cores.insert(id, Core::Sensor(Box::new(sensor)));
                world.sensor_cell.insert(id, leaf.clone());
                for class in StreamClass::DATA {
                    let at = start + STREAM_FROM + Duration::from_millis(u64::from(id % 17));
                    world.ticks.insert((id, class), at);
                }
                id += 1;
            }
        }
        world.client = id;
        let mut client = Client::new(mesh, StreamClass::DATA.to_vec());
        client.subscribe(start, world.cells[&CellId::root()].clone());
        world.cores.insert(id, Core::Client(Box::new(client)));
        world.plan_faults(super_peers);
        world
    }

    /// Draws the schedule over the super-peers and turns it into
    /// happenings: silences and declarations for crashes and long
    /// outages (at most [`MAX_DEATHS`]), the rest as they are.
    fn plan_faults(&mut self, super_peers: u32) {
        let window_end = WINDOW_START + self.config.fault_window;
        let limits = ScheduleLimits {
            peers: super_peers,
            window_start: WINDOW_START,
            window_end,
            max_down: 2,
            protected: Vec::new(),
            protected_limit: usize::MAX,
            protected_grace: Duration::ZERO,
            spared: Vec::new(),
            crash_first: None,
        };
        let schedule = Schedule::generate(&self.config.faults, &limits, &mut self.rng);
        let mut ends: BTreeMap<(u32, bool), Duration> = BTreeMap::new();
        for f in &schedule.faults {
            match &f.action {
                FaultAction::Restart { peer } => {
                    ends.insert((*peer, false), f.at);
                }
                FaultAction::Resume { peer } => {
                    ends.insert((*peer, true), f.at);
                }
                _ => {}
            }
        }
        let heal_at: BTreeMap<u32, Duration> = schedule
            .faults
            .iter()
            .filter_map(|f| match f.action {
                FaultAction::Heal { id } => Some((id, f.at)),
                _ => None,
            })
            .collect();
        let mut deaths = 0usize;
        let mut last = WINDOW_START;
        for f in &schedule.faults {
            let at = self.start + f.at;
            let silence = |world: &mut MeshWorld, peer: Peer, deaths: &mut usize| -> bool {
                if *deaths >= MAX_DEATHS || world.silent_at.contains_key(&peer) {
                    return false;
                }
                *deaths += 1;
                world.silent_at.insert(peer, at);
                world.schedule(at + world.detect, Happening::Failed(peer));
                true
            };
            match &f.action {
                FaultAction::Crash { peer } if silence(self, *peer, &mut deaths) => {
                    self.counts.crashes += 1;
                    self.schedule(at, Happening::Silence(*peer));
                    last = last.max(f.at + self.detect);
                }
                FaultAction::Pause { peer } => {
                    let end = ends.get(&(*peer, true)).copied().unwrap_or(f.at);
                    if end - f.at > self.detect {
                        if silence(self, *peer, &mut deaths) {
                            self.counts.pauses += 1;
                            self.schedule(at, Happening::Fault(f.action.clone()));
                            self.schedule(at + self.detect, Happening::Silence(*peer));
                            last = last.max(f.at + self.detect);
                        }
                    } else {
                        self.counts.pauses += 1;
                        self.schedule(at, Happening::Fault(f.action.clone()));
                        self.schedule(
                            self.start + end,
                            Happening::Fault(FaultAction::Resume { peer: *peer }),
                        );
                        last = last.max(end);
                    }
                }
                FaultAction::Cut { id, peers } => {
                    let end = heal_at.get(id).copied().unwrap_or(f.at);
                    let long = end - f.at > self.detect;
                    if long && deaths + peers.len() > MAX_DEATHS {
                        continue;
                    }
                    self.counts.partitions += 1;
                    self.schedule(at, Happening::Fault(f.action.clone()));
                    self.schedule(
                        self.start + end,
                        Happening::Fault(FaultAction::Heal { id: *id }),
                    );
                    last = last.max(end);
                    if long {
                        for peer in peers {
                            if silence(self, *peer, &mut deaths) {
                                self.schedule(at + self.detect, Happening::Silence(*peer));
                            }
                        }
                    }
                }
                _ => {}
            }
        }
        self.faults_end = self.start + last.max(window_end);
        self.stream_until = self.faults_end + STREAM_AFTER_FAULTS;
    }

    fn schedule(&mut self, at: Instant, happening: Happening) {
        self.order += 1;
        self.happenings.insert((at, self.order), happening);
    }

    fn live(&self, peer: Peer) -> bool {
        !self.silenced.contains(&peer)
    }

    /// Whether `a` and `b` are on two sides of a partition.
    fn cut(&self, a: Peer, b: Peer) -> bool {
        self.cuts
            .values()
            .any(|side| side.contains(&a) != side.contains(&b))
    }

    /// Puts a message on the wire: lost, delayed (reordering), duplicated.
    fn transmit(&mut self, from: Peer, to: Peer, msg: MeshMsg<Peer>) {
        self.frames += 1;
        if self.rng.chance(self.net.loss) {
            self.counts.lost += 1;
            return;
        }
        let copies = if self.rng.chance(self.net.duplication) {
            self.counts.duplicated += 1;
            2
        } else {
            1
        };
        for _ in 0..copies {
            let jitter = self.rng.below(self.net.jitter.as_micros() as u64 + 1);
            let at = self.now + self.net.base_latency + Duration::from_micros(jitter);
            self.order += 1;
            self.network
                .insert((at, self.order), (from, to, msg.clone()));
        }
    }

    /// Drains every core's outputs.
    fn flush(&mut self) {
        let ids: Vec<Peer> = self.cores.keys().copied().collect();
        for id in ids {
            while let Some(output) = self.cores.get_mut(&id).and_then(Core::poll) {
                match output {
                    MeshOutput::Send { to, msg } => self.transmit(id, to, msg),
                    MeshOutput::FindParent { lost } => {
                        let at = self.now + DISCOVERY;
                        self.schedule(at, Happening::Found { who: id, lost });
                    }
                    MeshOutput::Event(MeshEvent::Bound { kind, parent, .. }) => {
                        self.bound(id, kind, parent)
                    }
                    MeshOutput::Event(MeshEvent::TookOver { .. }) => {}
                    MeshOutput::Event(MeshEvent::Delivered(frame)) => {
                        let Some(class) = StreamClass::from_code(frame.class) else {
                            self.violations.push(violation(
                                "mesh-duplicate",
                                format!(
                                    "client delivered a frame of unknown class {}",
                                    frame.class
                                ),
                            ));
                            continue;
                        };
                        if frame.payload != payload(frame.origin, class, frame.seq) {
                            self.violations.push(violation(
                                "mesh-lost",
                                format!(
                                    "frame {}/{class}/{} arrived with a wrong payload",
                                    frame.origin, frame.seq
                                ),
                            ));
                        }
                        let n = self
                            .delivered
                            .entry((frame.origin, class))
                            .or_default()
                            .entry(frame.seq)
                            .or_insert(0);
                        *n += 1;
                        if *n == 2 {
                            self.violations.push(violation(
                                "mesh-duplicate",
                                format!(
                                    "client delivered frame {}/{class}/{} twice",
                                    frame.origin, frame.seq
                                ),
                            ));
                        }
                    }
                }
            }
        }
    }

    /// A child reported a parent.
    fn bound(&mut self, child: Peer, kind: RebindKind, parent: Peer) {
        self.parent_of.insert(child, parent);
        if self.config.verbose {
            println!(
                "  {:>8.3}s {child} bound to {parent} ({kind:?})",
                self.elapsed().as_secs_f64()
            );
        }
        let Some(orphan) = self.orphans.remove(&child) else {
            return;
        };
        if let Some(expect) = orphan.expect {
            if kind != expect {
                self.violations.push(violation(
                    "mesh-rebind-kind",
                    format!(
                        "{child} lost parent {} of cell {} at {:.3}s and rebound {kind:?} to {parent}, expected {expect:?}",
                        orphan.lost,
                        orphan.cell,
                        (orphan.since - self.start).as_secs_f64()
                    ),
                ));
            }
        }
    }

    fn elapsed(&self) -> Duration {
        self.now - self.start
    }

    /// The nearest cell at or above `from` with a live super-peer, and
    /// those super-peers (what `RequestCell` finds).
    fn live_cell_from(&self, from: &CellId) -> Option<(CellId, Vec<Peer>)> {
        let mut at = Some(from.clone());
        while let Some(cell) = at {
            let live: Vec<Peer> = self
                .cells
                .get(&cell)
                .map(|m| {
                    m.iter()
                        .copied()
                        .filter(|p| !self.declared.contains(p))
                        .collect()
                })
                .unwrap_or_default();
            if !live.is_empty() {
                return Some((cell, live));
            }
            at = cell.parent();
        }
        None
    }

    /// Whether every cell from `cell` to the root has a super-peer never
    /// silenced before `until`.
    fn chain_survives(&self, cell: &CellId, until: Instant) -> bool {
        let mut at = Some(cell.clone());
        while let Some(c) = at {
            let ok = self.cells.get(&c).is_some_and(|m| {
                m.iter()
                    .any(|p| self.silent_at.get(p).is_none_or(|t| *t > until))
            });
            if !ok {
                return false;
            }
            at = c.parent();
        }
        true
    }

    fn happen(&mut self, happening: Happening) {
        let now = self.now;
        if self.config.verbose {
            println!("  {:>8.3}s {happening:?}", self.elapsed().as_secs_f64());
        }
        match happening {
            Happening::Silence(peer) => {
                self.silenced.insert(peer);
                self.paused.remove(&peer);
                self.held.remove(&peer);
                self.cores.remove(&peer);
                self.orphans.remove(&peer);
                // What it sent and is still in flight is lost with it.
                self.network.retain(|_, (from, _, _)| *from != peer);
            }
            Happening::Failed(peer) => {
                self.declared.insert(peer);
                let ids: Vec<Peer> = self.cores.keys().copied().collect();
                for id in ids {
                    let Some(core) = self.cores.get_mut(&id) else {
                        continue;
                    };
                    let was_parent =
                        core.parent() == Some(&peer) || self.parent_of.get(&id) == Some(&peer);
                    core.peer_failed(now, &peer);
                    if was_parent && !self.orphans.contains_key(&id) {
                        self.orphan(id, peer);
                    }
                }
            }
            Happening::Found { who, lost } => {
                let Some((cell, members)) = self.live_cell_from(&lost) else {
                    return;
                };
                if let Some(core) = self.cores.get_mut(&who) {
                    core.parent_found(now, cell, members);
                }
            }
            Happening::Fault(action) => match action {
                FaultAction::Pause { peer } => {
                    self.paused.insert(peer);
                }
                FaultAction::Resume { peer } => {
                    self.paused.remove(&peer);
                    for (from, msg) in self.held.remove(&peer).unwrap_or_default() {
                        if let Some(core) = self.cores.get_mut(&peer) {
                            core.handle(now, from, msg);
                        }
                    }
                }
                FaultAction::Cut { id, peers } => {
                    self.cuts.insert(id, peers.into_iter().collect());
                }
                FaultAction::Heal { id } => {
                    self.cuts.remove(&id);
                }
                FaultAction::Crash { .. } | FaultAction::Restart { .. } => {}
            },
        }
    }

    /// `child` lost its parent `lost`: what rebind it owes.
    fn orphan(&mut self, child: Peer, lost: Peer) {
        let Some(cell) = self.cell_of.get(&lost).cloned() else {
            return;
        };
        let members = self.cells.get(&cell).cloned().unwrap_or_default();
        let deadline = self.now + REBIND_DEADLINE;
        let fast = members
            .iter()
            .any(|m| *m != lost && self.silent_at.get(m).is_none_or(|t| *t > deadline));
        let slow = members.iter().all(|m| self.declared.contains(m));
        let expect = if fast {
            Some(RebindKind::Fast)
        } else if slow {
            Some(RebindKind::Slow)
        } else {
            None
        };
        self.orphans.insert(
            child,
            Orphan {
                since: self.now,
                lost,
                cell,
                expect,
            },
        );
    }

    /// Every stream due at `at` sends its next frame.
    fn tick(&mut self, at: Instant) {
        let due: Vec<(Peer, StreamClass)> = self
            .ticks
            .iter()
            .filter(|(_, t)| **t == at)
            .map(|(k, _)| *k)
            .collect();
        let divisor = self.config.mesh_rate_divisor.max(1);
        for (sensor, class) in due {
            self.ticks
                .insert((sensor, class), at + period(class) * divisor);
            let Some(Core::Sensor(core)) = self.cores.get_mut(&sensor) else {
                continue;
            };
            let seq = self.sent.get(&(sensor, class)).copied().unwrap_or(0);
            match core.send(at, class, payload(sensor, class, seq)) {
                Ok(got) if got == seq => {
                    self.sent.insert((sensor, class), seq + 1);
                    if at + HEAL_PROBE >= self.stream_until {
                        self.probe_from.entry((sensor, class)).or_insert(seq);
                    }
                }
                Ok(got) => self.violations.push(violation(
                    "mesh-lost",
                    format!("sensor {sensor} numbered its {class} frame {seq} as {got}"),
                )),
                Err(_) => self.send_errors += 1,
            }
        }
    }

    fn run(mut self) -> Report {
        let end = self.stream_until + SETTLE;
        let mut steps = 0u64;
        loop {
            steps += 1;
            if steps > 20_000_000 {
                self.violations.push(violation(
                    "mesh-not-healed",
                    "the mesh never went quiet (20 million steps)".into(),
                ));
                break;
            }
            self.flush();
            self.check_orphans();
            let message = self.network.keys().next().map(|k| k.0);
            let happening = self.happenings.keys().next().map(|k| k.0);
            let tick = self
                .ticks
                .values()
                .copied()
                .filter(|t| *t < self.stream_until)
                .min();
            let timer = self
                .cores
                .iter()
                .filter(|(p, _)| !self.paused.contains(p))
                .filter_map(|(_, c)| c.poll_timeout())
                .min();
            let Some(next) = [message, happening, tick, timer]
                .into_iter()
                .flatten()
                .min()
            else {
                break;
            };
            if next > end {
                break;
            }
            self.events += 1;
            self.now = self.now.max(next);
            let now = self.now;
            if message == Some(next) {
                let Some((_, (from, to, msg))) = self.network.pop_first() else {
                    continue;
                };
                if !self.live(to) {
                    continue;
                }
                if self.cut(from, to) {
                    self.counts.cut += 1;
                    continue;
                }
                if self.paused.contains(&to) {
                    let held = self.held.entry(to).or_default();
                    if held.len() < MAX_HELD {
                        held.push((from, msg));
                    }
                    continue;
                }
                if let Some(core) = self.cores.get_mut(&to) {
                    core.handle(now, from, msg);
                }
            } else if happening == Some(next) {
                let Some((_, happening)) = self.happenings.pop_first() else {
                    continue;
                };
                self.happen(happening);
            } else if tick == Some(next) {
                self.tick(next);
            } else {
                let paused = self.paused.clone();
                for (peer, core) in self.cores.iter_mut() {
                    if !paused.contains(peer) && core.poll_timeout().is_some_and(|t| t <= now) {
                        self.wakeups += 1;
                        core.handle_timeout(now);
                    }
                }
            }
        }
        self.now = self.now.max(end);
        self.check_orphans();
        self.check_end();
        Report {
            violations: self.violations,
            virtual_time: self.now - self.start,
            faults: self.counts,
            trace_hash: 0,
            trace_entries: 0,
            frames: self.frames,
            app_messages: (
                self.sent.values().sum(),
                self.delivered.values().map(|d| d.len() as u64).sum(),
            ),
            early_receipts_lost: 0,
            ft: None,
            job_time: None,
            job_stats: None,
            merged_twice: 0,
            checkpoints_lost_allowed: 0,
            events: self.events,
            wakeups: self.wakeups,
            space: None,
            objects: None,
            mesh: None,
            config: self.config,
        }
    }

    /// Orphans past their deadline whose lost cell still has a live
    /// cell at or above it.
    fn check_orphans(&mut self) {
        let now = self.now;
        let late: Vec<(Peer, Orphan)> = self
            .orphans
            .iter()
            .filter(|(_, o)| o.since + REBIND_DEADLINE < now)
            .map(|(p, o)| (*p, o.clone()))
            .collect();
        for (child, orphan) in late {
            self.orphans.remove(&child);
            if self.live_cell_from(&orphan.cell).is_none() {
                continue;
            }
            self.violations.push(violation(
                "mesh-rebind-late",
                format!(
                    "{child} lost parent {} of cell {} at {:.3}s and had no new parent {:?} later",
                    orphan.lost,
                    orphan.cell,
                    (orphan.since - self.start).as_secs_f64(),
                    REBIND_DEADLINE
                ),
            ));
        }
    }

    /// Loss and healing, once everything settled.
    fn check_end(&mut self) {
        let end = self.now;
        // Loss of replicated classes from covered sensors.
        for ((sensor, class), sent) in &self.sent {
            if !self.checked.replicates(*class) {
                continue;
            }
            let Some(leaf) = self.sensor_cell.get(sensor) else {
                continue;
            };
            if !self.chain_survives(leaf, end) {
                continue;
            }
            let got = self.delivered.get(&(*sensor, *class));
            let missing: Vec<u64> = (0..*sent)
                .filter(|s| !got.is_some_and(|g| g.contains_key(s)))
                .collect();
            if !missing.is_empty() {
                self.violations.push(violation(
                    "mesh-lost",
                    format!(
                        "{} of {sent} {class} frames of sensor {sensor} never reached the client under {} (first {:?}), though every cell on its path kept a live super-peer",
                        missing.len(),
                        self.checked,
                        &missing[..missing.len().min(5)]
                    ),
                ));
            }
        }
        // Healing.
        let mut not_healed = Vec::new();
        for (peer, core) in &self.cores {
            let cell = match core {
                Core::Relay(r) => r.cell().parent(),
                Core::Sensor(_) => self.sensor_cell.get(peer).cloned(),
                Core::Client(_) => None,
            };
            let Some(cell) = cell else {
                continue;
            };
            if !self.chain_survives(&cell, end) {
                continue;
            }
            match core.parent().copied() {
                Some(p) if self.live(p) => {}
                other => not_healed.push(format!("{peer} has parent {other:?}")),
            }
            match core {
                Core::Relay(r) if r.pending_frames() + r.copy_frames() > 0 => {
                    not_healed.push(format!(
                        "super-peer {peer} still holds {} pending frames and {} copies",
                        r.pending_frames(),
                        r.copy_frames()
                    ))
                }
                Core::Sensor(s) if s.unacked_frames() > 0 => not_healed.push(format!(
                    "sensor {peer} still holds {} unacknowledged frames",
                    s.unacked_frames()
                )),
                _ => {}
            }
        }
        not_healed.extend(unhealed_streams(
            &self.probe_from,
            &self.delivered,
            |sensor| {
                self.sensor_cell
                    .get(&sensor)
                    .is_some_and(|leaf| self.chain_survives(leaf, end))
            },
        ));
        self.violations.extend(not_healed_violation(not_healed));
    }
}

/// Runs one seed of the mesh workload.
pub fn run(config: &SimConfig) -> Report {
    let world = MeshWorld::new(config.clone());
    if config.verbose {
        println!(
            "mesh: policy {}, {:?} detection, network {:?}",
            world.policy, world.detect, world.net
        );
    }
    world.run()
}
