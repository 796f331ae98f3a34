//! The simulated world: peers, their disks, a faulty network and a fault
//! schedule, all in virtual time and all drawn from one seed.
//!
//! Time is one base [`Instant`] plus a virtual offset; the real clock is
//! never read after the base is taken. Everything is ordered (BTreeMap,
//! Vec; no HashMap iteration) so a seed replays bit for bit.

use std::collections::BTreeMap;
use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::str::FromStr;
use std::time::{Duration, Instant};

use colony_core::membership::MemberState;

use crate::check::{PipeChecker, Violation};
use crate::faults::{FaultAction, FaultKinds, NetParams, Schedule, ScheduleLimits};
use crate::peer::{Action, PeerSettings, PeerStart, SimPeer};
use crate::rng::{derive, SimRng};
use crate::trace::{fnv1a, Trace};

/// What the simulated peers do besides keeping up membership.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Workload {
    /// Membership and application messages on the pipes only.
    Pipes,
}

impl fmt::Display for Workload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Workload::Pipes => write!(f, "pipes"),
        }
    }
}

impl FromStr for Workload {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "pipes" => Ok(Workload::Pipes),
            other => Err(format!("unknown workload {other:?}; use pipes")),
        }
    }
}

/// A deliberately broken configuration, to show the checker catches what
/// it should: each one must produce violations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Broken {
    /// Partitions never heal: membership cannot converge.
    NeverHeal,
}

impl fmt::Display for Broken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Broken::NeverHeal => write!(f, "never-heal"),
        }
    }
}

impl FromStr for Broken {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "never-heal" => Ok(Broken::NeverHeal),
            other => Err(format!("unknown breakage {other:?}; use never-heal")),
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
}

impl SimConfig {
    /// Defaults for `seed`: 20 peers, every fault kind.
    pub fn new(seed: u64) -> Self {
        SimConfig {
            seed,
            peers: 20,
            faults: FaultKinds::all(),
            workload: Workload::Pipes,
            fault_window: Duration::from_secs(12),
            verbose: false,
            broken: None,
        }
    }

    /// The command line that replays this run exactly, verbosely.
    pub fn replay_line(&self) -> String {
        let mut line = format!(
            "cargo run -p colony-sim --release -- --seed {} --peers {} --faults {} --workload {}",
            self.seed, self.peers, self.faults, self.workload
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
}

impl Report {
    /// Whether every invariant held.
    pub fn passed(&self) -> bool {
        self.violations.is_empty()
    }
}

/// Runs one seed; a panic anywhere (a core, the simulator) becomes a
/// [`Violation::Panic`] in the report.
pub fn run(config: &SimConfig) -> Report {
    let outcome = catch_unwind(AssertUnwindSafe(|| World::new(config.clone()).run()));
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
            }
        }
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
}

impl Event {
    /// The peer (and life) the event is for, if any.
    fn target(&self) -> Option<(u32, u32)> {
        match self {
            Event::Frame { to, life, .. } => Some((*to, *life)),
            Event::Contact { peer, life, .. }
            | Event::DialFailed { peer, life, .. }
            | Event::Unreachable { peer, life, .. } => Some((*peer, *life)),
            Event::Fault(_) | Event::CheckViews => None,
        }
    }
}

/// What survives a crash.
#[derive(Clone, Debug, Default)]
struct Disk {
    incarnation: u64,
    last_session: u64,
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
    last_unreachable: BTreeMap<u32, Duration>,
    /// Times its timers ran at the current instant, to catch livelocks.
    same_instant_wakes: u32,
}

struct World {
    config: SimConfig,
    settings: PeerSettings,
    base: Instant,
    now: Duration,
    queue: BTreeMap<(Duration, u64), Event>,
    seq: u64,
    slots: Vec<Slot>,
    net: NetParams,
    net_rng: SimRng,
    rng: SimRng,
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
}

impl World {
    fn new(config: SimConfig) -> World {
        let seed = config.seed;
        let mut rng = SimRng::new(derive(&[seed, 100]));
        let net = NetParams::draw(&config.faults, &mut rng);
        let settings = PeerSettings::default();
        let window_start = WARMUP + Duration::from_millis(300);
        let window_end = WARMUP + config.fault_window;
        let limits = ScheduleLimits {
            peers: config.peers,
            window_start,
            window_end,
            max_down: (config.peers as usize / 4).max(1),
            protected: Vec::new(),
            protected_limit: 0,
            protected_grace: Duration::from_secs(2),
            spared: Vec::new(),
            crash_first: None,
        };
        let mut schedule_rng = SimRng::new(derive(&[seed, 101]));
        let schedule = Schedule::generate(&config.faults, &limits, &mut schedule_rng);
        let trace = Trace::new(config.verbose);
        let slots = (0..config.peers)
            .map(|_| Slot {
                peer: None,
                life: 0,
                paused: false,
                held: Vec::new(),
                wake: Duration::MAX,
                disk: Disk::default(),
                started: false,
                last_unreachable: BTreeMap::new(),
                same_instant_wakes: 0,
            })
            .collect();
        let mut world = World {
            base: Instant::now(),
            now: Duration::ZERO,
            queue: BTreeMap::new(),
            seq: 0,
            slots,
            net_rng: SimRng::new(derive(&[seed, 102])),
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
            faults_end: schedule.last_at().max(window_start),
            converged: false,
            end: Duration::ZERO,
            settings,
            config,
        };
        world.end = world.faults_end + SETTLE_MAX;
        world.trace.log(Duration::ZERO, || {
            format!(
                "seed {}: {} peers, faults {}, net {:?}",
                world.config.seed, world.config.peers, world.config.faults, world.net
            )
        });
        for f in schedule.faults {
            if world.config.broken == Some(Broken::NeverHeal)
                && matches!(f.action, FaultAction::Heal { .. })
            {
                continue;
            }
            world.schedule(f.at, Event::Fault(f.action));
        }
        world.schedule(world.faults_end + SETTLE_MIN, Event::CheckViews);
        for id in 0..world.config.peers {
            let at = Duration::from_millis(world.rng.below(300));
            world.slots[id as usize].wake = at;
        }
        world
    }

    fn instant(&self, at: Duration) -> Instant {
        self.base + at
    }

    fn schedule(&mut self, at: Duration, event: Event) {
        self.seq += 1;
        self.queue.insert((at, self.seq), event);
    }

    fn run(mut self) -> Report {
        loop {
            let next_event = self.queue.first_key_value().map(|(k, _)| k.0);
            let next_peer = self
                .slots
                .iter()
                .enumerate()
                .filter(|(_, s)| !s.paused && (s.peer.is_some() || !s.started))
                .map(|(i, s)| (s.wake, i))
                .min();
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
            if at > self.end || self.converged {
                break;
            }
            self.now = at;
            if take_event {
                if let Some((_, event)) = self.queue.pop_first() {
                    self.handle_event(event);
                }
            } else if let Some((_, id)) = next_peer {
                self.wake_peer(id as u32);
            }
        }
        if !self.converged {
            self.check_views(true);
        }
        self.pipes.finish();
        let mut violations = std::mem::take(&mut self.violations);
        violations.append(&mut self.pipes.violations);
        Report {
            violations,
            virtual_time: self.now,
            faults: self.counts.clone(),
            trace_hash: self.trace.hash(),
            trace_entries: self.trace.entries(),
            frames: self.frames,
            app_messages: (self.pipes.sent_count(), self.pipes.delivered_count() as u64),
            early_receipts_lost: self.pipes.early_receipts_lost.len() as u64,
            config: self.config,
        }
    }

    /// Runs a peer's timers (or starts it, the first time).
    fn wake_peer(&mut self, id: u32) {
        let now = self.instant(self.now);
        let slot = &mut self.slots[id as usize];
        if !slot.started {
            slot.started = true;
            self.start_peer(id);
            return;
        }
        if slot.wake == self.now {
            slot.same_instant_wakes += 1;
        } else {
            slot.same_instant_wakes = 0;
        }
        if slot.same_instant_wakes > 1000 {
            self.violations.push(Violation::TimerLivelock {
                peer: id,
                at: self.now,
            });
            slot.wake = self.now + Duration::from_millis(1);
            slot.same_instant_wakes = 0;
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
        };
        let peer = SimPeer::start(start, self.settings.clone(), now);
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
        let Some(peer) = self.slots[id as usize].peer.as_mut() else {
            return;
        };
        let actions = std::mem::take(&mut peer.actions);
        let wake = peer
            .next_wakeup()
            .saturating_duration_since(self.base)
            .max(self.now);
        self.slots[id as usize].wake = wake;
        for action in actions {
            self.execute(id, action);
        }
    }

    fn execute(&mut self, id: u32, action: Action) {
        match action {
            Action::Frame { to, bytes } => self.transmit(id, to, bytes),
            Action::Dial { index } => {
                let Some(target) = self.bootstrap_entry(id, index) else {
                    return;
                };
                self.trace
                    .record(self.now, 2, &[u64::from(id), u64::from(target)]);
                self.dial(id, target, Some(index));
            }
            Action::Explore => {
                let candidates: Vec<u32> = (0..self.config.peers)
                    .filter(|p| *p != id && self.reachable(id, *p) && self.running(*p))
                    .collect();
                if let Some(&target) = self.rng.pick(&candidates) {
                    self.trace
                        .record(self.now, 3, &[u64::from(id), u64::from(target)]);
                    self.dial(id, target, None);
                }
            }
            Action::PersistIncarnation(incarnation) => {
                let disk = &mut self.slots[id as usize].disk;
                disk.incarnation = disk.incarnation.max(incarnation);
            }
            Action::Member(event) => {
                if event.to == MemberState::Dead {
                    self.pipes.declared_dead(id, event.peer, self.now);
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
        }
    }

    fn apply_fault(&mut self, action: FaultAction) {
        let text = action.to_string();
        self.trace.log(self.now, || text);
        match action {
            FaultAction::Crash { peer } => {
                self.counts.crashes += 1;
                self.trace.record(self.now, 20, &[u64::from(peer)]);
                self.pipes.crashed(peer, self.now);
                let slot = &mut self.slots[peer as usize];
                slot.peer = None;
                slot.paused = false;
                slot.held.clear();
                slot.life += 1;
                slot.wake = Duration::MAX;
            }
            FaultAction::Restart { peer } => {
                self.trace.record(self.now, 21, &[u64::from(peer)]);
                self.start_peer(peer);
            }
            FaultAction::Pause { peer } => {
                self.counts.pauses += 1;
                self.trace.record(self.now, 22, &[u64::from(peer)]);
                self.slots[peer as usize].paused = true;
            }
            FaultAction::Resume { peer } => {
                self.trace.record(self.now, 23, &[u64::from(peer)]);
                let slot = &mut self.slots[peer as usize];
                slot.paused = false;
                let held = std::mem::take(&mut slot.held);
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
                }
                self.partitions.insert(id, peers);
            }
            FaultAction::Heal { id } => {
                self.trace.record(self.now, 25, &[u64::from(id)]);
                for p in self.partitions.remove(&id).unwrap_or_default() {
                    self.groups.remove(&p);
                }
            }
        }
    }

    /// Whether every running peer sees every other running peer alive;
    /// with `record`, the mismatches become violations.
    fn check_views(&mut self, record: bool) -> bool {
        let live: Vec<u32> = (0..self.config.peers)
            .filter(|p| self.running(*p))
            .collect();
        let mut ok = true;
        for &a in &live {
            let Some(peer) = self.slots[a as usize].peer.as_ref() else {
                continue;
            };
            for &b in &live {
                if a == b {
                    continue;
                }
                let state = peer.membership.state_of(&b);
                if state != Some(MemberState::Alive) {
                    ok = false;
                    if record {
                        self.violations.push(Violation::ViewsDiverged {
                            observer: a,
                            peer: b,
                            state,
                        });
                    }
                }
            }
        }
        if ok {
            self.trace
                .log(self.now, || "every live peer sees every other alive".into());
        }
        ok
    }
}
