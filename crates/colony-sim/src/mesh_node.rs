//! `--workload mesh-node`: the streaming mesh of seed 001 (issue 14) run
//! *through* each peer's [`colony_core::node::Node`], on the simulator's
//! faulty network, fault schedule and virtual time, by the same code that
//! drives the `job` and `objects` workloads ([`crate::sim`]).
//!
//! Unlike `--workload mesh` ([`crate::mesh`]), which runs the bare mesh
//! cores with cells assigned and plays membership itself, nothing here is
//! assigned or played: every peer is a full node whose `MeshPeer` takes a
//! role through `Node::mesh_mut` (as the runtime's driver does), finds its
//! cell through the join protocol on the cell records of the generic home,
//! and hears who failed from the node's own membership core; the mesh's
//! messages travel as pipe payloads over the lossy, duplicating,
//! reordering and partitioned network.
//!
//! # The peers
//!
//! With the defaults (the seed's bench, §IV): span 2, 2 super-peers per
//! cell, 3 levels — 7 cells, so 14 super-peers (ids `0..14`), then 2
//! sensors per leaf cell (ids from 14), then one client (the last id).
//! `--peers` is ignored: the count follows from the tree. Membership runs
//! from the start; once every peer sees every other alive (checked from
//! [`ROLES_FROM`] on), the super-peers take their role and find their
//! cells; [`LEAVES_AFTER`] later the sensors bind under their leaf cell
//! (the `j`-th sensor of a leaf preferring the `j`-th member) and the
//! client subscribes at the root. Sensors stream events, audio and video
//! from [`STREAMS_FROM`] at the seed's rates divided by
//! `mesh_rate_divisor`, until [`STREAM_AFTER_FAULTS`] after the last
//! fault ends; the run ends [`SETTLE`] later.
//!
//! # Faults
//!
//! The fault generator draws crashes, pauses and partitions as for the
//! other workloads, from [`FAULTS_FROM`] on, over the super-peers only
//! (sensors and the client are spared: the client's deliveries are what is
//! checked, and a sensor's lost frames would be its own). Loss,
//! duplication and reordering hit every frame. So:
//!
//! - a crashed super-peer restarts when the schedule says, with its
//!   identity and without its state (the cell records it held are in
//!   memory only), and joins the mesh again as a newcomer once it sees
//!   every running peer alive;
//! - a super-peer wrongly declared dead (paused, or cut off by a
//!   partition, for longer than failure detection takes) runs on: its
//!   membership refutes the declaration and it takes its place again
//!   (`MeshPeerConfig::refresh`), back in its cell, or in another one if
//!   its cell took a newcomer meanwhile;
//! - at most [`MAX_FAULTED`] distinct super-peers are faulted per seed
//!   (later faults naming others are skipped), so whole cells die in some
//!   seeds and not others.
//!
//! # Invariants (each a [`Violation::Mesh`] with its name)
//!
//! - `mesh-duplicate`: the client's node hands no frame (sensor, class,
//!   number) over twice, nor one whose payload is not the one sent.
//! - `mesh-lost`: a sensor is *covered* when every cell on its first path
//!   (the cell of its first parent and every ancestor up to the root) has
//!   a super-peer that was admitted to it before the streams started and
//!   never crashed during the run. For a covered sensor, every frame
//!   of a class the policy replicates that its node accepted
//!   (`MeshPeer::send_frame` returned its number) reaches the client by
//!   the end of the run.
//! - `mesh-rebind-late`: a child (a sensor, or a super-peer of a cell
//!   below the root) whose own membership declares its parent dead is
//!   *orphaned* then; it must report `Bound` again within
//!   [`REBIND_DEADLINE`] (counted from when it could reach the mesh
//!   again if it was paused or cut off meanwhile), unless by then no
//!   cell at or above its lost parent's cell has a member that is still
//!   running.
//! - `mesh-not-healed`: at the end, every running child whose chain of
//!   cells up to the root still has running members is bound to a running
//!   parent, no running super-peer or sensor holds anything
//!   unacknowledged, and every stream of a covered sensor delivered a frame
//!   sent in the last [`HEAL_PROBE`] of streaming.
//!
//! `--broken mesh-no-ft` runs the nodes under NO_FT and checks them as
//! FT_ALL: crashes must then show lost frames.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use colony_core::mesh::{CellId, FtPolicy, MeshEvent, MeshNotice, MeshRole, StreamClass};

use crate::check::Violation;
use crate::faults::{FaultAction, Schedule};
use crate::mesh::{not_healed_violation, unhealed_streams, violation};
use crate::sim::{Broken, SimConfig};

/// Most distinct super-peers faulted in one seed.
pub const MAX_FAULTED: usize = 4;
/// How long an orphaned child may take to report a new parent.
pub const REBIND_DEADLINE: Duration = Duration::from_secs(5);
/// Super-peers take their role once the views converged, from then on.
pub const ROLES_FROM: Duration = Duration::from_millis(1_500);
/// How often convergence is checked before roles are taken.
pub const ROLES_CHECK: Duration = Duration::from_millis(100);
/// Roles are taken by then even if the views have not converged.
pub const ROLES_LATEST: Duration = Duration::from_secs(4);
/// Sensors and the client take their role this long after super-peers.
pub const LEAVES_AFTER: Duration = Duration::from_millis(1_500);
/// When the sensors start streaming.
pub const STREAMS_FROM: Duration = Duration::from_millis(4_500);
/// When the faults may begin.
pub const FAULTS_FROM: Duration = Duration::from_millis(5_000);
/// Streams go on this long after the faults end: detection by membership
/// (a second or two), then a rebind, then [`HEAL_PROBE`].
pub const STREAM_AFTER_FAULTS: Duration = Duration::from_secs(6);
/// Frames sent in the last stretch of streaming must arrive (healing):
/// the same probe as the cores' workload.
pub use crate::mesh::HEAL_PROBE;
/// Time after the streams stop for resends to settle.
pub const SETTLE: Duration = Duration::from_secs(8);

/// Frame period of each class at the seed's rates (events 25/s, audio
/// 38/s, video 24/s).
pub fn period(class: StreamClass) -> Duration {
    match class {
        StreamClass::Event => Duration::from_millis(40),
        StreamClass::Audio => Duration::from_micros(26_316),
        StreamClass::Video => Duration::from_micros(41_667),
        StreamClass::Mesh => Duration::from_secs(1),
    }
}

/// A payload naming its frame, checked at the client.
pub fn payload(origin: u32, class: StreamClass, seq: u64) -> Vec<u8> {
    format!("{origin}/{class}/{seq}").into_bytes()
}

/// What a mesh role of a peer is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Part {
    /// A super-peer (its cell is found by the join protocol).
    SuperPeer,
    /// A sensor binding under this leaf cell, preferring this member.
    Sensor {
        /// The leaf cell.
        cell: CellId,
        /// Which of its members it tries first.
        preferred: usize,
    },
    /// The client, subscribed at the root.
    Client,
}

/// A running peer's mesh state at the end of the run, for the healing
/// check.
#[derive(Clone, Debug, Default)]
pub struct EndState {
    /// Its parent, if its core has one.
    pub parent: Option<u32>,
    /// Frames a super-peer holds pending or as copies, or a sensor holds
    /// unacknowledged.
    pub held: usize,
}

impl EndState {
    /// Reads a role's core.
    pub fn of(role: Option<&MeshRole<u32>>) -> EndState {
        let Some(role) = role else {
            return EndState::default();
        };
        let held = match role {
            MeshRole::Relay(r) => r.pending_frames() + r.copy_frames(),
            MeshRole::Sensor(s) => s.unacked_frames(),
            MeshRole::Client(_) => 0,
        };
        EndState {
            parent: role.parent().copied(),
            held,
        }
    }
}

/// What the workload counted.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MeshNodeStats {
    /// Frames the sensors' nodes accepted.
    pub sent: u64,
    /// Distinct frames the client's node delivered.
    pub delivered: u64,
    /// Frames a sensor's node refused.
    pub refused: u64,
    /// Super-peers admitted to a cell.
    pub admitted: u64,
    /// Binds reported after the first (rebinds).
    pub rebinds: u64,
    /// Super-peers crashed (some restart later, as newcomers).
    pub stopped: u64,
    /// Orphans seen.
    pub orphans: u64,
    /// Streams of a replicated class checked for loss (their sensor was
    /// covered).
    pub streams_checked: u64,
}

impl MeshNodeStats {
    /// Adds another run's counts.
    pub fn add(&mut self, other: &MeshNodeStats) {
        self.sent += other.sent;
        self.delivered += other.delivered;
        self.refused += other.refused;
        self.admitted += other.admitted;
        self.rebinds += other.rebinds;
        self.stopped += other.stopped;
        self.orphans += other.orphans;
        self.streams_checked += other.streams_checked;
    }
}

/// A child whose membership declared its parent dead, not bound since.
#[derive(Clone, Debug)]
struct Orphan {
    /// When it was orphaned, or could last reach the mesh again.
    since: Duration,
    lost: u32,
    /// Whether it can reach the mesh now (not paused or cut off).
    reachable: bool,
}

/// The observer and checker of the `mesh-node` workload; the world drives
/// the peers and tells it what their nodes output.
#[derive(Debug)]
pub struct MeshNodeWorkload {
    /// The policy the nodes run.
    pub policy: FtPolicy,
    /// The policy the run is checked against.
    checked: FtPolicy,
    parts: BTreeMap<u32, Part>,
    divisor: u32,
    /// When the streams stop, and the run ends.
    pub stream_until: Duration,
    /// When the run ends.
    pub end: Duration,
    /// Super-peers' cells, from `InCell`, and when they were admitted.
    cell_of: BTreeMap<u32, (CellId, Duration)>,
    /// Super-peers stopped, and when.
    stopped: BTreeMap<u32, Duration>,
    parent_of: BTreeMap<u32, u32>,
    /// Each child's first parent cell.
    first_cell: BTreeMap<u32, CellId>,
    orphans: BTreeMap<u32, Orphan>,
    sent: BTreeMap<(u32, StreamClass), u64>,
    probe_from: BTreeMap<(u32, StreamClass), u64>,
    delivered: BTreeMap<(u32, StreamClass), BTreeMap<u64, u32>>,
    violations: Vec<Violation>,
    stats: MeshNodeStats,
    /// Whether the roles were taken.
    pub roles_taken: bool,
}

impl MeshNodeWorkload {
    /// The peers of the tree `config` describes, with their parts.
    pub fn new(config: &SimConfig) -> MeshNodeWorkload {
        let span = config.mesh_span.clamp(1, 9);
        let size = config.mesh_cell_size.max(1);
        let mut cells = 1u32;
        let mut level = vec![CellId::root()];
        for _ in 1..config.mesh_levels.max(1) {
            level = level.iter().flat_map(|c| c.children(span)).collect();
            cells += level.len() as u32;
        }
        let mut parts = BTreeMap::new();
        for id in 0..cells * size {
            parts.insert(id, Part::SuperPeer);
        }
        let mut id = cells * size;
        for leaf in &level {
            for j in 0..config.mesh_sensors.max(1) {
                let part = Part::Sensor {
                    cell: leaf.clone(),
                    preferred: j as usize,
                };
                parts.insert(id, part);
                id += 1;
            }
        }
        parts.insert(id, Part::Client);
        let (policy, checked) = if config.broken == Some(Broken::MeshNoFt) {
            (FtPolicy::NoFt, FtPolicy::FtAll)
        } else {
            (config.mesh_policy, config.mesh_policy)
        };
        MeshNodeWorkload {
            policy,
            checked,
            parts,
            divisor: config.mesh_rate_divisor.max(1),
            stream_until: Duration::ZERO,
            end: Duration::ZERO,
            cell_of: BTreeMap::new(),
            stopped: BTreeMap::new(),
            parent_of: BTreeMap::new(),
            first_cell: BTreeMap::new(),
            orphans: BTreeMap::new(),
            sent: BTreeMap::new(),
            probe_from: BTreeMap::new(),
            delivered: BTreeMap::new(),
            violations: Vec::new(),
            stats: MeshNodeStats::default(),
            roles_taken: false,
        }
    }

    /// Peers in the run.
    pub fn peers(&self) -> u32 {
        self.parts.len() as u32
    }

    /// The peers that are not super-peers (never faulted).
    pub fn spared(&self) -> Vec<u32> {
        self.parts
            .iter()
            .filter(|(_, p)| **p != Part::SuperPeer)
            .map(|(id, _)| *id)
            .collect()
    }

    /// Every peer with its part.
    pub fn parts(&self) -> impl Iterator<Item = (u32, &Part)> {
        self.parts.iter().map(|(id, p)| (*id, p))
    }

    /// Whether `peer` is a super-peer.
    pub fn is_super_peer(&self, peer: u32) -> bool {
        self.parts.get(&peer) == Some(&Part::SuperPeer)
    }

    /// The sensors.
    pub fn sensors(&self) -> Vec<u32> {
        self.parts
            .iter()
            .filter(|(_, p)| matches!(p, Part::Sensor { .. }))
            .map(|(id, _)| *id)
            .collect()
    }

    /// The next frame period of `class` (the seed's rate divided).
    pub fn period(&self, class: StreamClass) -> Duration {
        period(class) * self.divisor
    }

    /// Keeps at most [`MAX_FAULTED`] distinct super-peers faulted: a
    /// crash, pause or cut naming a further one is skipped, with the
    /// restart, resume or heal that ends it. A restart is kept only for a
    /// crash kept.
    pub fn limit(&self, schedule: &mut Schedule) {
        let mut faulted: BTreeSet<u32> = BTreeSet::new();
        let mut skipped_pauses: BTreeSet<u32> = BTreeSet::new();
        let mut skipped_cuts: BTreeSet<u32> = BTreeSet::new();
        let mut crashed: BTreeSet<u32> = BTreeSet::new();
        schedule.faults.retain(|f| {
            let named: Vec<u32> = match &f.action {
                FaultAction::Crash { peer } | FaultAction::Pause { peer } => vec![*peer],
                FaultAction::Cut { peers, .. } => peers.clone(),
                // Only the restart of a crash kept.
                FaultAction::Restart { peer } => return crashed.remove(peer),
                FaultAction::Resume { peer } => return !skipped_pauses.remove(peer),
                FaultAction::Heal { id } => return !skipped_cuts.remove(id),
            };
            let new = named.iter().filter(|p| !faulted.contains(p)).count();
            if faulted.len() + new <= MAX_FAULTED {
                if let FaultAction::Crash { peer } = &f.action {
                    crashed.insert(*peer);
                }
                faulted.extend(named);
                return true;
            }
            match &f.action {
                FaultAction::Pause { peer } => {
                    skipped_pauses.insert(*peer);
                }
                FaultAction::Cut { id, .. } => {
                    skipped_cuts.insert(*id);
                }
                _ => {}
            }
            false
        });
    }

    /// Sensor `sensor`'s node accepted (or refused) its `class` frame.
    pub fn sent(&mut self, sensor: u32, class: StreamClass, now: Duration, got: Option<u64>) {
        let Some(got) = got else {
            self.stats.refused += 1;
            return;
        };
        let seq = self.sent.get(&(sensor, class)).copied().unwrap_or(0);
        if got != seq {
            self.violations.push(violation(
                "mesh-lost",
                format!("sensor {sensor} numbered its {class} frame {seq} as {got}"),
            ));
        }
        self.sent.insert((sensor, class), got.max(seq) + 1);
        self.stats.sent += 1;
        if now + HEAL_PROBE >= self.stream_until {
            self.probe_from.entry((sensor, class)).or_insert(got);
        }
    }

    /// The number of `sensor`'s next `class` frame.
    pub fn next_seq(&self, sensor: u32, class: StreamClass) -> u64 {
        self.sent.get(&(sensor, class)).copied().unwrap_or(0)
    }

    /// Peer `id`'s node told something of the mesh.
    pub fn notice(&mut self, id: u32, now: Duration, notice: MeshNotice<u32>) {
        match notice {
            MeshNotice::InCell { cell, .. } => match self.cell_of.get_mut(&id) {
                None => {
                    self.stats.admitted += 1;
                    self.cell_of.insert(id, (cell, now));
                }
                // Moved up to re-form the root: a root member has no
                // parent to find.
                Some(known) if cell.is_root() => {
                    known.0 = cell;
                    self.orphans.remove(&id);
                    self.parent_of.remove(&id);
                }
                Some(_) => {}
            },
            MeshNotice::NoCell => {}
            MeshNotice::Event(MeshEvent::Bound { parent, cell, .. }) => {
                if self.parent_of.insert(id, parent).is_some() {
                    self.stats.rebinds += 1;
                }
                self.first_cell.entry(id).or_insert(cell);
                self.orphans.remove(&id);
            }
            MeshNotice::Event(MeshEvent::TookOver { .. }) => {}
            MeshNotice::Event(MeshEvent::Delivered(frame)) => {
                if self.parts.get(&id) != Some(&Part::Client) {
                    self.violations.push(violation(
                        "mesh-duplicate",
                        format!("peer {id}, not the client, delivered a frame"),
                    ));
                    return;
                }
                let Some(class) = StreamClass::from_code(frame.class) else {
                    self.violations.push(violation(
                        "mesh-duplicate",
                        format!("client delivered a frame of unknown class {}", frame.class),
                    ));
                    return;
                };
                if frame.payload != payload(frame.origin, class, frame.seq) {
                    self.violations.push(violation(
                        "mesh-duplicate",
                        format!(
                            "frame {}/{class}/{} arrived with a payload not sent as it",
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
                if *n == 1 {
                    self.stats.delivered += 1;
                } else if *n == 2 {
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

    /// Peer `observer`'s membership declared `peer` dead (or gone).
    /// `reachable`: the observer is not cut off by a partition.
    pub fn declared(&mut self, observer: u32, peer: u32, now: Duration, reachable: bool) {
        if self.stopped.contains_key(&observer) {
            return;
        }
        if self.parent_of.get(&observer) == Some(&peer) && !self.orphans.contains_key(&observer) {
            self.stats.orphans += 1;
            self.orphans.insert(
                observer,
                Orphan {
                    since: now,
                    lost: peer,
                    reachable,
                },
            );
        }
    }

    /// Super-peer `peer` crashed (if it restarts, it comes back as a
    /// newcomer).
    pub fn stopped(&mut self, peer: u32, now: Duration) {
        if self.stopped.contains_key(&peer) {
            return;
        }
        self.stats.stopped += 1;
        self.stopped.insert(peer, now);
        self.orphans.remove(&peer);
    }

    /// `peer` can reach the mesh again (a pause or a partition that cut
    /// it off ended): if orphaned, its time to rebind starts now.
    pub fn reachable_again(&mut self, peer: u32, now: Duration) {
        if let Some(orphan) = self.orphans.get_mut(&peer) {
            orphan.since = orphan.since.max(now);
            orphan.reachable = true;
        }
    }

    /// `peer` cannot reach the mesh (paused, or cut off by a partition):
    /// if orphaned, it is not late meanwhile.
    pub fn unreachable(&mut self, peer: u32) {
        if let Some(orphan) = self.orphans.get_mut(&peer) {
            orphan.reachable = false;
        }
    }

    /// Whether some cell at or above `cell` has a member still running.
    fn live_cell_from(&self, cell: &CellId) -> bool {
        let mut at = Some(cell.clone());
        while let Some(c) = at {
            if self
                .cell_of
                .iter()
                .any(|(p, (pc, _))| *pc == c && !self.stopped.contains_key(p))
            {
                return true;
            }
            at = c.parent();
        }
        false
    }

    /// Whether every cell from `cell` to the root has a member admitted
    /// before `admitted_by` and still running.
    fn chain_covered(&self, cell: &CellId, admitted_by: Duration) -> bool {
        let mut at = Some(cell.clone());
        while let Some(c) = at {
            let ok = self
                .cell_of
                .iter()
                .any(|(p, (pc, t))| *pc == c && *t <= admitted_by && !self.stopped.contains_key(p));
            if !ok {
                return false;
            }
            at = c.parent();
        }
        true
    }

    /// Orphans past their deadline at `now` whose lost parent's cell
    /// still has a running cell at or above it.
    pub fn check_orphans(&mut self, now: Duration) {
        let late: Vec<(u32, Orphan)> = self
            .orphans
            .iter()
            .filter(|(_, o)| o.reachable && o.since + REBIND_DEADLINE < now)
            .map(|(p, o)| (*p, o.clone()))
            .collect();
        for (child, orphan) in late {
            self.orphans.remove(&child);
            let Some((cell, _)) = self.cell_of.get(&orphan.lost).cloned() else {
                continue;
            };
            if !self.live_cell_from(&cell) {
                continue;
            }
            self.violations.push(violation(
                "mesh-rebind-late",
                format!(
                    "{child} lost parent {} of cell {cell} at {:.3}s and had no new parent {REBIND_DEADLINE:?} later",
                    orphan.lost,
                    orphan.since.as_secs_f64(),
                ),
            ));
        }
    }

    /// The checks of the end, given the running peers' mesh states; the
    /// violations of the whole run.
    pub fn finish(&mut self, now: Duration, running: &BTreeMap<u32, EndState>) -> Vec<Violation> {
        self.check_orphans(now);
        if !self.roles_taken {
            self.violations.push(violation(
                "mesh-not-healed",
                "the mesh roles were never taken".into(),
            ));
        }
        // Loss of replicated classes from covered sensors.
        let mut lost = Vec::new();
        for ((sensor, class), sent) in &self.sent {
            if !self.checked.replicates(*class) {
                continue;
            }
            let Some(cell) = self.first_cell.get(sensor) else {
                lost.push(format!(
                    "sensor {sensor} never bound (sent {sent} {class} frames)"
                ));
                continue;
            };
            if !self.chain_covered(cell, STREAMS_FROM) {
                continue;
            }
            self.stats.streams_checked += 1;
            let got = self.delivered.get(&(*sensor, *class));
            let missing: Vec<u64> = (0..*sent)
                .filter(|s| !got.is_some_and(|g| g.contains_key(s)))
                .collect();
            if !missing.is_empty() {
                lost.push(format!(
                    "{} of {sent} {class} frames of sensor {sensor} (path from {cell}) never reached the client under {} (first {:?}), though every cell on its path kept a live super-peer",
                    missing.len(),
                    self.checked,
                    &missing[..missing.len().min(5)]
                ));
            }
        }
        for what in lost {
            self.violations.push(violation("mesh-lost", what));
        }
        // Healing.
        let mut not_healed = Vec::new();
        for (peer, state) in running {
            // Its own cell (whose members must hand everything on) and
            // the cell it must be bound under; the root's members have
            // only the first, the client neither.
            let (own, above) = match self.parts.get(peer) {
                Some(Part::SuperPeer) => match self.cell_of.get(peer) {
                    Some((cell, _)) => (Some(cell.clone()), cell.parent()),
                    None => (None, None),
                },
                Some(Part::Sensor { .. }) => match self.first_cell.get(peer) {
                    Some(cell) => (Some(cell.clone()), Some(cell.clone())),
                    None => {
                        not_healed.push(format!("sensor {peer} never bound"));
                        continue;
                    }
                },
                _ => (None, None),
            };
            if let Some(above) = above.filter(|c| self.chain_covered(c, now)) {
                match state.parent {
                    Some(p) if running.contains_key(&p) => {}
                    other => not_healed.push(format!(
                        "{peer} has parent {other:?}, not a running member of a cell at or above {above}"
                    )),
                }
            }
            if own.is_some_and(|c| self.chain_covered(&c, now)) && state.held > 0 {
                not_healed.push(format!(
                    "{peer} still holds {} unacknowledged frames",
                    state.held
                ));
            }
        }
        not_healed.extend(unhealed_streams(
            &self.probe_from,
            &self.delivered,
            |sensor| {
                self.first_cell
                    .get(&sensor)
                    .is_some_and(|cell| self.chain_covered(cell, now))
            },
        ));
        self.violations.extend(not_healed_violation(not_healed));
        std::mem::take(&mut self.violations)
    }

    /// What it counted.
    pub fn stats(&self) -> MeshNodeStats {
        self.stats.clone()
    }
}
