//! The mesh cores in virtual time (quinn-proto's `Pair`, grown to a
//! tree): many cores, a network that moves their messages with a fixed
//! latency, a membership that reports a crash to every live peer after a
//! detection delay, a directory that answers `RequestCell`, and a clock
//! that jumps to the next thing that happens. No sleeps, no sockets.
//!
//! The tree is the seed's bench (§IV): span 2, 2 super-peers per cell, 3
//! levels (cells 0, 01, 02, 011, 012, 021, 022), 2 sensors per leaf cell
//! streaming events, audio and video, one client subscribed at the root.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use super::*;

type Peer = u32;

const CLIENT: Peer = 1000;
const FIRST_SENSOR: Peer = 100;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn cell(s: &str) -> CellId {
    s.parse().unwrap()
}

/// The cells of the bench's tree, breadth-first.
const CELLS: [&str; 7] = ["0", "01", "02", "011", "012", "021", "022"];

/// The super-peers of cell number `index` in [`CELLS`].
fn peers_of(index: usize) -> Vec<Peer> {
    let first = 2 * index as Peer + 1;
    vec![first, first + 1]
}

/// The cell number of `name`.
fn index_of(name: &str) -> usize {
    CELLS.iter().position(|c| *c == name).unwrap()
}

type Core = MeshRole<Peer>;

/// Something scheduled besides messages.
#[derive(Clone, Debug)]
enum Happening {
    /// Membership tells every live peer that `0` failed.
    Failed(Peer),
    /// The directory answers `who`'s `RequestCell` after losing `lost`.
    Found { who: Peer, lost: CellId },
    /// `0` crashes.
    Kill(Peer),
}

/// A bound event seen by the harness.
#[derive(Clone, Debug)]
struct BoundSeen {
    child: Peer,
    kind: RebindKind,
    parent: Peer,
    after: Duration,
}

struct Mesh {
    now: Instant,
    start: Instant,
    policy: FtPolicy,
    cores: BTreeMap<Peer, Core>,
    dead: BTreeSet<Peer>,
    /// Messages in flight: (arrival, order) → (from, to, message).
    network: BTreeMap<(Instant, u64), (Peer, Peer, MeshMsg<Peer>)>,
    happenings: BTreeMap<(Instant, u64), Happening>,
    order: u64,
    latency: Duration,
    detect_after: Duration,
    discovery_after: Duration,
    /// Sensors stream from `start + stream_from` to `start + stream_until`.
    stream_from: Duration,
    stream_until: Duration,
    /// Next frame time of each (sensor, class).
    ticks: BTreeMap<(Peer, StreamClass), Instant>,
    /// Frames each (sensor, class) stream sent.
    sent: BTreeMap<(Peer, StreamClass), u64>,
    /// What the client handed over, per stream, in order.
    delivered: BTreeMap<(Peer, StreamClass), Vec<u64>>,
    bound: Vec<BoundSeen>,
    took_over: Vec<(Peer, Peer, usize)>,
    send_errors: u64,
    /// Frames each super-peer received from a child (`Up`), with when.
    received: BTreeMap<Peer, Vec<(Instant, FrameId<Peer>)>>,
    /// Directory: the cells and their super-peers as first placed.
    cells: BTreeMap<CellId, Vec<Peer>>,
}

/// Frame period of each class: the seed's rates (events 25/s, audio
/// 38/s, video 24/s).
fn period(class: StreamClass) -> Duration {
    match class {
        StreamClass::Event => ms(40),
        StreamClass::Audio => ms(26),
        StreamClass::Video => ms(42),
        StreamClass::Mesh => ms(1000),
    }
}

/// A payload naming its frame, checked at the client.
fn payload(origin: Peer, class: StreamClass, seq: u64) -> Vec<u8> {
    format!("{origin}/{class}/{seq}").into_bytes()
}

impl Mesh {
    /// The bench's tree under `policy`, bound and subscribed, streaming
    /// from 100 ms to `stream_until_ms`.
    fn new(policy: FtPolicy, stream_until_ms: u64) -> Mesh {
        let start = Instant::now();
        let config = MeshConfig::default();
        let mut mesh = Mesh {
            now: start,
            start,
            policy,
            cores: BTreeMap::new(),
            dead: BTreeSet::new(),
            network: BTreeMap::new(),
            happenings: BTreeMap::new(),
            order: 0,
            latency: ms(1),
            detect_after: ms(30),
            discovery_after: ms(20),
            stream_from: ms(100),
            stream_until: ms(stream_until_ms),
            ticks: BTreeMap::new(),
            sent: BTreeMap::new(),
            delivered: BTreeMap::new(),
            bound: Vec::new(),
            took_over: Vec::new(),
            send_errors: 0,
            received: BTreeMap::new(),
            cells: BTreeMap::new(),
        };
        for (index, name) in CELLS.iter().enumerate() {
            let id = cell(name);
            let members = peers_of(index);
            mesh.cells.insert(id.clone(), members.clone());
            for (rank, peer) in members.iter().enumerate() {
                let mut relay =
                    Relay::new(*peer, config.clone(), policy, id.clone(), members.clone());
                if let Some(parent) = id.parent() {
                    let parents = peers_of(index_of(&parent.to_string()));
                    relay.bind(start, parents, rank);
                }
                mesh.cores.insert(*peer, Core::Relay(Box::new(relay)));
            }
        }
        for (leaf, name) in CELLS[3..].iter().enumerate() {
            for j in 0..2 {
                let me = FIRST_SENSOR + 2 * leaf as Peer + j as Peer;
                let mut sensor = Sensor::new(me, config.clone(), policy);
                sensor.bind(start, cell(name), peers_of(index_of(name)), j);
                mesh.cores.insert(me, Core::Sensor(Box::new(sensor)));
                for class in StreamClass::DATA {
                    // Sensors start a few ms apart.
                    let at = start + mesh.stream_from + ms(u64::from(me - FIRST_SENSOR));
                    mesh.ticks.insert((me, class), at);
                }
            }
        }
        let mut client = Client::new(config, StreamClass::DATA.to_vec());
        client.subscribe(start, peers_of(0));
        mesh.cores.insert(CLIENT, Core::Client(Box::new(client)));
        mesh
    }

    fn sensors(&self) -> impl Iterator<Item = Peer> + '_ {
        self.cores
            .keys()
            .copied()
            .filter(|p| (FIRST_SENSOR..CLIENT).contains(p))
    }

    fn at(&self, after_start: Duration) -> Instant {
        self.start + after_start
    }

    fn schedule(&mut self, at: Instant, happening: Happening) {
        self.order += 1;
        self.happenings.insert((at, self.order), happening);
    }

    /// Crashes `peer` half a millisecond after `at_ms` after the start:
    /// half-way through a hop, so what it sent last is still in flight
    /// (and lost with it).
    fn kill_at(&mut self, at_ms: u64, peer: Peer) {
        let at = self.at(ms(at_ms) + Duration::from_micros(500));
        self.schedule(at, Happening::Kill(peer));
    }

    /// Drains every core's outputs into the network and the records.
    fn flush(&mut self) {
        let ids: Vec<Peer> = self.cores.keys().copied().collect();
        for id in ids {
            while let Some(output) = self.cores.get_mut(&id).and_then(Core::poll) {
                match output {
                    MeshOutput::Send { to, msg } => {
                        self.order += 1;
                        self.network
                            .insert((self.now + self.latency, self.order), (id, to, msg));
                    }
                    MeshOutput::FindParent { lost } => {
                        let at = self.now + self.discovery_after;
                        self.schedule(at, Happening::Found { who: id, lost });
                    }
                    MeshOutput::Event(MeshEvent::Bound {
                        kind,
                        parent,
                        after,
                        ..
                    }) => self.bound.push(BoundSeen {
                        child: id,
                        kind,
                        parent,
                        after,
                    }),
                    MeshOutput::Event(MeshEvent::TookOver { failed, frames }) => {
                        self.took_over.push((id, failed, frames))
                    }
                    MeshOutput::Event(MeshEvent::Delivered(frame)) => {
                        let class = StreamClass::from_code(frame.class).unwrap();
                        assert_eq!(
                            frame.payload,
                            payload(frame.origin, class, frame.seq),
                            "payload of a delivered frame"
                        );
                        self.delivered
                            .entry((frame.origin, class))
                            .or_default()
                            .push(frame.seq);
                    }
                }
            }
        }
    }

    /// The directory's answer to `RequestCell` after `lost` was lost: the
    /// nearest cell at or above it with a live super-peer.
    fn live_cell_from(&self, lost: &CellId) -> Option<(CellId, Vec<Peer>)> {
        let mut at = Some(lost.clone());
        while let Some(cell) = at {
            let live: Vec<Peer> = self.cells[&cell]
                .iter()
                .copied()
                .filter(|p| !self.dead.contains(p))
                .collect();
            if !live.is_empty() {
                return Some((cell, live));
            }
            at = cell.parent();
        }
        None
    }

    /// Runs until `until_ms` after the start.
    fn run_until(&mut self, until_ms: u64) {
        let end = self.at(ms(until_ms));
        let stream_end = self.at(self.stream_until);
        let mut steps = 0u64;
        loop {
            steps += 1;
            assert!(steps < 5_000_000, "the mesh does not settle");
            self.flush();
            let message = self.network.keys().next().map(|k| k.0);
            let happening = self.happenings.keys().next().map(|k| k.0);
            let tick = self
                .ticks
                .values()
                .copied()
                .filter(|t| *t < stream_end)
                .min();
            let timer = self.cores.values().filter_map(Core::poll_timeout).min();
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
            self.now = self.now.max(next);
            let now = self.now;
            if message == Some(next) {
                let Some((_, (from, to, msg))) = self.network.pop_first() else {
                    continue;
                };
                if let Some(core) = self.cores.get_mut(&to) {
                    if let (Core::Relay(_), MeshMsg::Up(frame)) = (&*core, &msg) {
                        if let Some(id) = frame.id() {
                            self.received.entry(to).or_default().push((now, id));
                        }
                    }
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
                for core in self.cores.values_mut() {
                    if core.poll_timeout().is_some_and(|t| t <= now) {
                        core.handle_timeout(now);
                    }
                }
            }
        }
        self.now = self.now.max(end);
    }

    fn happen(&mut self, happening: Happening) {
        let now = self.now;
        match happening {
            Happening::Kill(peer) => {
                self.dead.insert(peer);
                self.cores.remove(&peer);
                // What it had sent and was still in flight is lost with it.
                self.network.retain(|_, (from, _, _)| *from != peer);
                let at = now + self.detect_after;
                self.schedule(at, Happening::Failed(peer));
            }
            Happening::Failed(peer) => {
                for core in self.cores.values_mut() {
                    core.peer_failed(now, &peer);
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
        }
    }

    /// Every stream due at `at` sends its next frame.
    fn tick(&mut self, at: Instant) {
        let due: Vec<(Peer, StreamClass)> = self
            .ticks
            .iter()
            .filter(|(_, t)| **t == at)
            .map(|(k, _)| *k)
            .collect();
        for (sensor, class) in due {
            self.ticks.insert((sensor, class), at + period(class));
            let Some(Core::Sensor(core)) = self.cores.get_mut(&sensor) else {
                continue;
            };
            let seq = self.sent.get(&(sensor, class)).copied().unwrap_or(0);
            match core.send(at, class, payload(sensor, class, seq)) {
                Ok(got) => {
                    assert_eq!(got, seq);
                    self.sent.insert((sensor, class), seq + 1);
                }
                Err(_) => self.send_errors += 1,
            }
        }
    }

    /// Frames sent but never handed to the client, per class.
    fn lost(&self) -> BTreeMap<StreamClass, u64> {
        let mut lost = BTreeMap::new();
        for (stream, sent) in &self.sent {
            let got: BTreeSet<u64> = self
                .delivered
                .get(stream)
                .map(|seqs| seqs.iter().copied().collect())
                .unwrap_or_default();
            let missing = (0..*sent).filter(|s| !got.contains(s)).count() as u64;
            *lost.entry(stream.1).or_insert(0) += missing;
        }
        lost
    }

    /// Asserts that no frame reached the client twice, and that every
    /// delivered frame was sent.
    fn assert_no_duplicates(&self) {
        for (stream, seqs) in &self.delivered {
            let distinct: BTreeSet<u64> = seqs.iter().copied().collect();
            assert_eq!(distinct.len(), seqs.len(), "duplicates in {stream:?}");
            let sent = self.sent.get(stream).copied().unwrap_or(0);
            assert!(seqs.iter().all(|s| *s < sent), "unsent frame in {stream:?}");
        }
    }

    /// Asserts that every stream of a replicated class reached the client
    /// whole.
    fn assert_replicated_classes_whole(&self) {
        let lost = self.lost();
        for class in StreamClass::DATA {
            if self.policy.replicates(class) {
                assert_eq!(
                    lost.get(&class),
                    Some(&0),
                    "{class} lost under {}",
                    self.policy
                );
            }
        }
    }

    fn relays(&self) -> impl Iterator<Item = (&Peer, &Relay<Peer>)> {
        self.cores.iter().filter_map(|(p, c)| match c {
            Core::Relay(r) => Some((p, &**r)),
            _ => None,
        })
    }

    fn client(&self) -> &Client<Peer> {
        match self.cores.get(&CLIENT) {
            Some(Core::Client(c)) => c,
            _ => panic!("no client"),
        }
    }
}

/// Streams for 2 s, then lets resends settle.
const STREAM_MS: u64 = 2_000;
const SETTLE_MS: u64 = 4_000;

#[test]
fn every_sensors_stream_reaches_the_client_in_order() {
    for policy in FtPolicy::ALL {
        let mut mesh = Mesh::new(policy, STREAM_MS);
        mesh.run_until(SETTLE_MS);
        assert_eq!(mesh.send_errors, 0);
        // Every child bound once, at once.
        let initial: Vec<&BoundSeen> = mesh.bound.iter().collect();
        assert_eq!(
            initial.len(),
            12 + 8,
            "{policy}: 12 super-peers and 8 sensors bind"
        );
        assert!(initial.iter().all(|b| b.kind == RebindKind::Initial));
        // 8 sensors × 3 classes, each whole and in order.
        assert_eq!(mesh.sent.len(), 24);
        for (stream, sent) in &mesh.sent {
            assert!(*sent > 40, "{stream:?} sent {sent}");
            let expected: Vec<u64> = (0..*sent).collect();
            assert_eq!(
                mesh.delivered.get(stream),
                Some(&expected),
                "{policy}: {stream:?}"
            );
        }
        // Nothing is left pending or copied anywhere: every FT reply and
        // acknowledgement arrived.
        for (peer, relay) in mesh.relays() {
            assert_eq!(relay.pending_frames(), 0, "{policy}: pending at {peer}");
            assert_eq!(relay.copy_frames(), 0, "{policy}: copies at {peer}");
            assert_eq!(
                relay.stats().from_stranger,
                0,
                "{policy}: strangers at {peer}"
            );
        }
        for sensor in mesh.sensors().collect::<Vec<_>>() {
            let Some(Core::Sensor(s)) = mesh.cores.get(&sensor) else {
                panic!()
            };
            assert_eq!(s.unacked_frames(), 0, "{policy}: unacked at {sensor}");
        }
        assert_eq!(mesh.client().stats().duplicates, 0);
    }
}

/// The first super-peer of `cell`: on it, the first child of each child
/// cell and the first sensor of a leaf cell are bound.
fn first_peer_of(name: &str) -> Peer {
    peers_of(index_of(name))[0]
}

#[test]
fn ft_all_loses_nothing_when_a_super_peer_dies_at_any_level() {
    for name in ["0", "01", "011"] {
        let mut mesh = Mesh::new(FtPolicy::FtAll, STREAM_MS);
        mesh.kill_at(700, first_peer_of(name));
        mesh.run_until(SETTLE_MS);
        assert_eq!(mesh.send_errors, 0);
        let lost = mesh.lost();
        assert!(
            lost.values().all(|l| *l == 0),
            "kill in {name}: lost {lost:?}"
        );
        mesh.assert_no_duplicates();
        // The successor took the failed member's frames over.
        let successor = peers_of(index_of(name))[1];
        assert!(
            mesh.took_over
                .iter()
                .any(|(by, failed, _)| *by == successor && *failed == first_peer_of(name)),
            "kill in {name}: {:?}",
            mesh.took_over
        );
    }
}

#[test]
fn ft_all_loses_nothing_with_one_fault_per_level_in_turn() {
    let mut mesh = Mesh::new(FtPolicy::FtAll, STREAM_MS);
    mesh.kill_at(500, first_peer_of("0"));
    mesh.kill_at(1000, first_peer_of("01"));
    mesh.kill_at(1500, first_peer_of("011"));
    mesh.run_until(SETTLE_MS);
    let lost = mesh.lost();
    assert!(lost.values().all(|l| *l == 0), "lost {lost:?}");
    mesh.assert_no_duplicates();
    assert!(mesh.took_over.iter().any(|(_, _, frames)| *frames > 0));
}

#[test]
fn a_dead_super_peers_frames_survive_in_its_cell_when_their_sensor_dies_too() {
    // The first super-peer of 01 crashes at 700 ms: its child, the first
    // super-peer of 011, keeps the frames it forwards in vain until the
    // failure is detected. At 720 ms that child crashes with sensor 100,
    // its only sensor, before it could rebind and send them again: no
    // child is left to send them either, so only the copies in cell 011
    // can bring them to the client.
    let mut mesh = Mesh::new(FtPolicy::FtAll, STREAM_MS);
    let relay = first_peer_of("011");
    mesh.kill_at(700, first_peer_of("01"));
    mesh.kill_at(720, relay);
    mesh.kill_at(720, FIRST_SENSOR);
    mesh.run_until(SETTLE_MS);
    // What the relay received up to a hop before its crash (its copies
    // had reached its sibling).
    let copied_by = mesh.at(ms(720)) - mesh.latency;
    let received: Vec<FrameId<Peer>> = mesh.received[&relay]
        .iter()
        .filter(|(at, id)| *at <= copied_by && id.origin == FIRST_SENSOR)
        .map(|(_, id)| id.clone())
        .collect();
    assert!(received.len() > 40);
    for id in received {
        let got = mesh
            .delivered
            .get(&(id.origin, id.class))
            .cloned()
            .unwrap_or_default();
        assert!(
            got.contains(&id.seq),
            "{id:?} reached the dead relay, not the client"
        );
    }
    mesh.assert_no_duplicates();
    assert!(mesh
        .took_over
        .iter()
        .any(|(_, failed, frames)| *failed == relay && *frames > 0));
}

#[test]
fn a_cell_dying_while_its_parent_is_lost_loses_nothing() {
    // The first super-peer of 01 crashes; before its failure is even
    // detected, the whole of cell 011 below it crashes too, holding the
    // frames it could not forward. Its sensors still hold them (nothing
    // is acknowledged before the client has it) and send them again
    // after a slow rebind.
    let mut mesh = Mesh::new(FtPolicy::FtAll, STREAM_MS);
    mesh.kill_at(700, first_peer_of("01"));
    for peer in peers_of(index_of("011")) {
        mesh.kill_at(720, peer);
    }
    mesh.run_until(SETTLE_MS);
    let lost = mesh.lost();
    assert!(lost.values().all(|l| *l == 0), "lost {lost:?}");
    mesh.assert_no_duplicates();
    let slow: BTreeSet<Peer> = mesh
        .bound
        .iter()
        .filter(|b| b.kind == RebindKind::Slow)
        .map(|b| b.child)
        .collect();
    assert_eq!(slow, [FIRST_SENSOR, FIRST_SENSOR + 1].into());
}

#[test]
fn without_ft_a_super_peers_death_loses_frames() {
    for name in ["0", "01", "011"] {
        let mut mesh = Mesh::new(FtPolicy::NoFt, STREAM_MS);
        mesh.kill_at(700, first_peer_of(name));
        mesh.run_until(SETTLE_MS);
        let lost = mesh.lost();
        let total: u64 = lost.values().sum();
        assert!(total > 0, "kill in {name} under no_ft lost nothing");
        mesh.assert_no_duplicates();
        // Frames after the failure still arrive: the mesh heals.
        let after_heal = mesh
            .delivered
            .values()
            .filter(|seqs| seqs.last().is_some_and(|last| *last > 40))
            .count();
        assert_eq!(after_heal, mesh.sent.len(), "kill in {name}");
    }
}

#[test]
fn ft_event_protects_events_only() {
    let mut mesh = Mesh::new(FtPolicy::FtEvent, STREAM_MS);
    mesh.kill_at(700, first_peer_of("01"));
    mesh.run_until(SETTLE_MS);
    let lost = mesh.lost();
    assert_eq!(lost.get(&StreamClass::Event), Some(&0), "{lost:?}");
    let unprotected = lost.get(&StreamClass::Audio).copied().unwrap_or(0)
        + lost.get(&StreamClass::Video).copied().unwrap_or(0);
    assert!(unprotected > 0, "{lost:?}");
    mesh.assert_no_duplicates();
    mesh.assert_replicated_classes_whole();
}

#[test]
fn killing_one_peer_of_a_cell_gives_its_children_a_fast_rebind() {
    for name in ["01", "011"] {
        let mut mesh = Mesh::new(FtPolicy::FtAll, STREAM_MS);
        let victim = first_peer_of(name);
        mesh.kill_at(700, victim);
        mesh.run_until(SETTLE_MS);
        let rebinds: Vec<&BoundSeen> = mesh
            .bound
            .iter()
            .filter(|b| b.kind != RebindKind::Initial)
            .collect();
        assert!(!rebinds.is_empty(), "{name}: nobody rebound");
        let sibling = peers_of(index_of(name))[1];
        for rebind in &rebinds {
            assert_eq!(rebind.kind, RebindKind::Fast, "{name}: {rebind:?}");
            assert_eq!(rebind.parent, sibling, "{name}: {rebind:?}");
            // One round trip after the failure is reported.
            assert!(rebind.after <= 2 * mesh.latency, "{name}: {rebind:?}");
        }
        // The victim's children were a super-peer of each child cell (or
        // a sensor of the leaf cell): each of them rebound.
        let expected: BTreeSet<Peer> = match name {
            "01" => [first_peer_of("011"), first_peer_of("012")].into(),
            _ => [FIRST_SENSOR].into(),
        };
        let rebound: BTreeSet<Peer> = rebinds.iter().map(|b| b.child).collect();
        assert_eq!(rebound, expected, "{name}");
        assert!(mesh.lost().values().all(|l| *l == 0));
    }
}

#[test]
fn killing_a_whole_cell_forces_a_slow_rebind_and_the_streams_go_on() {
    for name in ["011", "01"] {
        let mut mesh = Mesh::new(FtPolicy::FtAll, STREAM_MS);
        for peer in peers_of(index_of(name)) {
            mesh.kill_at(700, peer);
        }
        mesh.run_until(SETTLE_MS);
        let rebinds: Vec<&BoundSeen> = mesh
            .bound
            .iter()
            .filter(|b| b.kind != RebindKind::Initial)
            .collect();
        assert!(!rebinds.is_empty(), "{name}: nobody rebound");
        let orphans: BTreeSet<Peer> = match name {
            // The leaf cell's two sensors.
            "011" => [FIRST_SENSOR, FIRST_SENSOR + 1].into(),
            // Both super-peers of each child cell.
            _ => peers_of(index_of("011"))
                .into_iter()
                .chain(peers_of(index_of("012")))
                .collect(),
        };
        let rebound: BTreeSet<Peer> = rebinds.iter().map(|b| b.child).collect();
        assert_eq!(rebound, orphans, "{name}");
        let parent_cell = mesh.cells[&cell(name).parent().unwrap()].clone();
        for rebind in &rebinds {
            assert_eq!(rebind.kind, RebindKind::Slow, "{name}: {rebind:?}");
            assert!(parent_cell.contains(&rebind.parent), "{name}: {rebind:?}");
            // The discovery round trip and a bind.
            assert!(rebind.after >= mesh.discovery_after, "{name}: {rebind:?}");
        }
        // No frame lost, none twice, and the streams went on to the end.
        let lost = mesh.lost();
        assert!(lost.values().all(|l| *l == 0), "{name}: lost {lost:?}");
        mesh.assert_no_duplicates();
        for (stream, sent) in &mesh.sent {
            assert!(*sent > 40, "{stream:?}");
        }
    }
}

#[test]
fn a_late_acknowledgement_resends_and_the_client_suppresses_the_copy() {
    // Every link is slower than the resend timer: frames and deliveries
    // are sent again before their acknowledgements can come back, arrive
    // more than once, and the client hands each over once.
    let mut mesh = Mesh::new(FtPolicy::FtAll, 600);
    mesh.latency = ms(300);
    mesh.run_until(SETTLE_MS);
    mesh.assert_no_duplicates();
    assert!(mesh.lost().values().all(|l| *l == 0));
    assert!(mesh.relays().any(|(_, r)| r.stats().resent > 0));
    assert!(mesh.relays().any(|(_, r)| r.stats().duplicates > 0));
    assert!(mesh.client().stats().duplicates > 0);
}

// ---- Hostile and malformed input ------------------------------------------

fn t0() -> Instant {
    Instant::now()
}

fn frame(origin: Peer, class: u8, seq: u64, bytes: usize) -> Frame<Peer> {
    Frame {
        origin,
        class,
        seq,
        payload: vec![7; bytes],
    }
}

/// A leaf relay 5 of cell 011 with sibling 6, sensor 100 bound, policy
/// FT_ALL.
fn leaf_relay() -> Relay<Peer> {
    let now = t0();
    let config = MeshConfig {
        max_frame_bytes: 1000,
        max_children: 2,
        max_pending_frames: 3,
        ..MeshConfig::default()
    };
    let mut relay = Relay::new(5, config, FtPolicy::FtAll, cell("011"), vec![5, 6]);
    relay.bind(now, vec![3, 4], 0);
    relay.handle(
        now,
        3,
        MeshMsg::Bound {
            cell: cell("01"),
            members: vec![3, 4],
        },
    );
    relay.handle(now, 100, MeshMsg::Bind);
    while relay.poll().is_some() {}
    relay
}

fn sends(relay: &mut Relay<Peer>) -> Vec<(Peer, &'static str)> {
    let mut out = Vec::new();
    while let Some(o) = relay.poll() {
        if let MeshOutput::Send { to, msg } = o {
            out.push((to, msg.name()));
        }
    }
    out
}

#[test]
fn a_relay_copies_to_its_cell_before_forwarding_up() {
    let mut relay = leaf_relay();
    relay.handle(t0(), 100, MeshMsg::Up(frame(100, 1, 0, 10)));
    assert_eq!(sends(&mut relay), [(6, "FtCopy"), (3, "Up")]);
    // The parent's ack releases it: FT reply to the cell, ack to the child.
    let id = FrameId {
        origin: 100,
        class: StreamClass::Event,
        seq: 0,
    };
    relay.handle(t0(), 3, MeshMsg::Ack(id.clone()));
    assert_eq!(sends(&mut relay), [(6, "FtReply"), (100, "Ack")]);
    assert_eq!(relay.pending_frames(), 0);
}

/// A frame the parent acknowledged, sent again by the child (its ack was
/// lost) or duplicated by the network, is acknowledged again: not owned,
/// copied and forwarded anew, which left copies nobody would release.
#[test]
fn a_frame_acknowledged_already_is_acknowledged_again_not_owned_anew() {
    let mut relay = leaf_relay();
    let id = FrameId {
        origin: 100,
        class: StreamClass::Event,
        seq: 0,
    };
    relay.handle(t0(), 100, MeshMsg::Up(frame(100, 1, 0, 10)));
    relay.handle(t0(), 3, MeshMsg::Ack(id.clone()));
    sends(&mut relay);
    relay.handle(t0(), 100, MeshMsg::Up(frame(100, 1, 0, 10)));
    assert_eq!(sends(&mut relay), [(100, "Ack")]);
    assert_eq!(relay.pending_frames(), 0);
    // A late copy of it from the sibling is not kept either.
    relay.handle(
        t0(),
        6,
        MeshMsg::FtCopy {
            frame: frame(100, 1, 0, 10),
            ack_to: vec![100],
        },
    );
    assert_eq!(relay.copy_frames(), 0);
}

/// Times `Up` left for the parent while the clock ran to `until`, waking
/// the core at each of its timeouts.
fn ups_until<C>(
    core: &mut C,
    until: Instant,
    poll_timeout: fn(&C) -> Option<Instant>,
    handle_timeout: fn(&mut C, Instant),
    poll: fn(&mut C) -> Option<MeshOutput<Peer>>,
) -> usize {
    let mut ups = 0;
    loop {
        while let Some(out) = poll(core) {
            if matches!(
                out,
                MeshOutput::Send {
                    msg: MeshMsg::Up(_),
                    ..
                }
            ) {
                ups += 1;
            }
        }
        match poll_timeout(core) {
            Some(at) if at <= until => handle_timeout(core, at),
            _ => return ups,
        }
    }
}

#[test]
fn a_relay_backs_off_resending_a_frame_its_parent_does_not_acknowledge() {
    // Through a node the pipes retransmit what the network lost: an ack
    // that does not come is held up behind a busy link, and resending
    // every 250 ms for good only adds to the queue. Over 10 s the frame
    // goes again after 250, 500, then every 1000 ms: 11 times, not 40.
    let mut relay = leaf_relay();
    relay.handle(t0(), 100, MeshMsg::Up(frame(100, 1, 0, 10)));
    assert_eq!(sends(&mut relay), [(6, "FtCopy"), (3, "Up")]);
    let resent = ups_until(
        &mut relay,
        t0() + ms(10_000),
        Relay::poll_timeout,
        Relay::handle_timeout,
        Relay::poll,
    );
    assert!((9..=12).contains(&resent), "resent {resent} times in 10 s");
    // A new parent gets it at once, and the backoff starts over.
    relay.handle(
        t0(),
        3,
        MeshMsg::Bound {
            cell: cell("01"),
            members: vec![3, 4],
        },
    );
    assert_eq!(relay.pending_frames(), 1);
}

#[test]
fn a_sensor_backs_off_resending_a_frame_its_parent_does_not_acknowledge() {
    let now = t0();
    let mut sensor = Sensor::new(100, MeshConfig::default(), FtPolicy::FtAll);
    sensor.bind(now, cell("011"), vec![5, 6], 0);
    sensor.handle(
        now,
        5,
        MeshMsg::Bound {
            cell: cell("011"),
            members: vec![5, 6],
        },
    );
    assert!(sensor.send(now, StreamClass::Event, vec![1; 10]).is_ok());
    let resent = ups_until(
        &mut sensor,
        now + ms(10_000),
        Sensor::poll_timeout,
        Sensor::handle_timeout,
        Sensor::poll,
    );
    // The first send, then after 250, 500, then every 1000 ms.
    assert!((10..=13).contains(&resent), "sent {resent} times in 10 s");
    assert_eq!(sensor.unacked_frames(), 1);
}

#[test]
fn a_child_its_parent_dropped_binds_again_and_its_frames_go_through() {
    // Relay 5 declared sensor 100 failed (it was cut off, or wrongly
    // suspected) while 100, alive, stays bound to 5 and keeps sending.
    let now = t0();
    let mut relay = leaf_relay();
    let mut sensor = Sensor::new(100, MeshConfig::default(), FtPolicy::FtAll);
    sensor.bind(now, cell("011"), vec![5, 6], 0);
    sensor.handle(
        now,
        5,
        MeshMsg::Bound {
            cell: cell("011"),
            members: vec![5, 6],
        },
    );
    while sensor.poll().is_some() {}
    relay.peer_failed(now, &100);
    assert!(sensor.send(now, StreamClass::Event, vec![1; 10]).is_ok());
    // Deliver every message between the two until they are quiet.
    let mut rebound = false;
    for _ in 0..10 {
        let mut to_relay = Vec::new();
        while let Some(out) = sensor.poll() {
            match out {
                MeshOutput::Send { to: 5, msg } => to_relay.push(msg),
                MeshOutput::Event(MeshEvent::Bound { parent: 5, .. }) => rebound = true,
                _ => {}
            }
        }
        for msg in to_relay {
            relay.handle(now, 100, msg);
        }
        let mut to_sensor = Vec::new();
        while let Some(out) = relay.poll() {
            if let MeshOutput::Send { to: 100, msg } = out {
                to_sensor.push(msg);
            }
        }
        for msg in to_sensor {
            sensor.handle(now, 5, msg);
        }
    }
    assert!(rebound, "the sensor never bound again");
    assert!(relay.children().contains(&100));
    // The frame went up once the sensor was a child again.
    assert_eq!(relay.pending_frames(), 1);
}

#[test]
fn only_the_first_surviving_member_takes_a_failed_members_frames_over() {
    // Cell 011 of three: 5, 6, 7 in join order; 5 owns a frame that 6 and
    // 7 hold copies of. When 5 fails, 6 forwards it; 7 only records 6 as
    // the owner and drops its copy on 6's FT reply.
    let now = t0();
    let cell_members = vec![5, 6, 7];
    let mut relays: Vec<Relay<Peer>> = cell_members
        .iter()
        .map(|me| {
            let mut relay = Relay::new(
                *me,
                MeshConfig::default(),
                FtPolicy::FtAll,
                cell("011"),
                cell_members.clone(),
            );
            relay.bind(now, vec![3, 4], 0);
            relay.handle(
                now,
                3,
                MeshMsg::Bound {
                    cell: cell("01"),
                    members: vec![3, 4],
                },
            );
            let _ = sends(&mut relay);
            relay
        })
        .collect();
    relays[0].handle(now, 100, MeshMsg::Bind);
    let _ = sends(&mut relays[0]);
    let up = frame(100, StreamClass::Audio.code(), 0, 10);
    relays[0].handle(now, 100, MeshMsg::Up(up.clone()));
    for relay in &mut relays[1..] {
        relay.handle(
            now,
            5,
            MeshMsg::FtCopy {
                frame: up.clone(),
                ack_to: vec![100],
            },
        );
        assert_eq!(relay.copy_frames(), 1);
    }
    for relay in &mut relays[1..] {
        relay.peer_failed(now, &5);
    }
    assert_eq!(sends(&mut relays[1]), [(3, "Up")]);
    assert_eq!(relays[1].pending_frames(), 1);
    assert_eq!(sends(&mut relays[2]), []);
    assert_eq!(relays[2].copy_frames(), 1);
    let id = up.id().unwrap();
    relays[1].handle(now, 3, MeshMsg::Ack(id.clone()));
    assert_eq!(sends(&mut relays[1]), [(7, "FtReply"), (100, "Ack")]);
    relays[2].handle(now, 6, MeshMsg::FtReply(id));
    assert_eq!(relays[2].copy_frames(), 0);
}

/// A sibling restarted before anyone declared it failed says it starts
/// afresh: the frame it owned in its former life (copied here) is taken
/// over and forwarded, and both frames owned here now are copied to it
/// again. A stranger saying so changes nothing.
#[test]
fn a_sibling_restarted_unnoticed_hands_its_frames_over_and_is_copied_to_again() {
    let now = t0();
    let mut relay = leaf_relay();
    let theirs = frame(101, StreamClass::Audio.code(), 0, 10);
    relay.handle(
        now,
        6,
        MeshMsg::FtCopy {
            frame: theirs.clone(),
            ack_to: vec![101],
        },
    );
    relay.handle(now, 100, MeshMsg::Up(frame(100, 1, 0, 10)));
    let _ = sends(&mut relay);
    relay.handle(now, 42, MeshMsg::Fresh);
    assert_eq!(sends(&mut relay), []);
    assert_eq!(relay.stats().from_stranger, 1);
    relay.handle(now, 6, MeshMsg::Fresh);
    assert_eq!(sends(&mut relay), [(3, "Up"), (6, "FtCopy"), (6, "FtCopy")]);
    assert_eq!((relay.pending_frames(), relay.copy_frames()), (2, 0));
    assert_eq!(relay.stats().taken_over, 1);
    // Its frame is acknowledged to the child it came from.
    relay.handle(now, 3, MeshMsg::Ack(theirs.id().unwrap()));
    assert_eq!(sends(&mut relay), [(6, "FtReply"), (101, "Ack")]);
}

#[test]
fn a_relay_counts_and_drops_what_it_may_not_take() {
    let mut relay = leaf_relay();
    let now = t0();
    // A stranger's frame.
    relay.handle(now, 999, MeshMsg::Up(frame(999, 1, 0, 10)));
    assert_eq!(relay.stats().from_stranger, 1);
    // A frame of an unknown class from a child.
    relay.handle(now, 100, MeshMsg::Up(frame(100, 9, 0, 10)));
    assert_eq!(relay.stats().unknown_class, 1);
    // An oversized frame.
    relay.handle(now, 100, MeshMsg::Up(frame(100, 1, 0, 1001)));
    assert_eq!(relay.stats().oversized, 1);
    // A copy from a peer outside the cell, an FT reply from a stranger,
    // an ack from outside the parent's cell, a client ack from a
    // non-client: dropped.
    relay.handle(
        now,
        999,
        MeshMsg::FtCopy {
            frame: frame(100, 1, 0, 10),
            ack_to: vec![],
        },
    );
    assert_eq!(relay.copy_frames(), 0);
    let id = FrameId {
        origin: 100,
        class: StreamClass::Event,
        seq: 1,
    };
    relay.handle(now, 100, MeshMsg::Up(frame(100, 1, 1, 10)));
    relay.handle(now, 999, MeshMsg::Ack(id.clone()));
    relay.handle(now, 999, MeshMsg::ClientAck(id.clone()));
    relay.handle(now, 999, MeshMsg::FtReply(id.clone()));
    relay.handle(
        now,
        999,
        MeshMsg::Deliver {
            frame: frame(100, 1, 1, 10),
            ack: true,
        },
    );
    assert_eq!(relay.pending_frames(), 1);
    // Not at the root: subscriptions are refused.
    let _ = sends(&mut relay);
    relay.handle(now, 999, MeshMsg::Subscribe { classes: vec![1] });
    assert_eq!(sends(&mut relay), [(999, "Refused")]);
    // Its own parent is never its child (two super-peers bound to each
    // other would have no way up).
    relay.handle(now, 3, MeshMsg::Bind);
    assert_eq!(sends(&mut relay), [(3, "Refused")]);
    // Too many children.
    relay.handle(now, 101, MeshMsg::Bind);
    relay.handle(now, 102, MeshMsg::Bind);
    assert_eq!(sends(&mut relay), [(101, "Bound"), (102, "Refused")]);
    // A full pending table drops (the child keeps the frame).
    for seq in 2..10 {
        relay.handle(now, 100, MeshMsg::Up(frame(100, 1, seq, 10)));
    }
    assert_eq!(relay.pending_frames(), 3);
    assert!(relay.stats().pending_full > 0);
    // A bound reply nobody asked for.
    relay.handle(
        now,
        999,
        MeshMsg::Bound {
            cell: cell("0"),
            members: vec![999],
        },
    );
    assert_eq!(relay.uplink().and_then(|u| u.parent()), Some(&3));
}

#[test]
fn a_root_refuses_unknown_classes_in_a_subscription_and_too_many_clients() {
    let config = MeshConfig {
        max_clients: 1,
        ..MeshConfig::default()
    };
    let mut root = Relay::new(1, config, FtPolicy::FtAll, CellId::root(), vec![1, 2]);
    let now = t0();
    root.handle(
        now,
        CLIENT,
        MeshMsg::Subscribe {
            classes: vec![1, 42],
        },
    );
    assert_eq!(root.stats().unknown_class, 1);
    root.handle(now, CLIENT + 1, MeshMsg::Subscribe { classes: vec![1] });
    assert_eq!(
        sends(&mut root),
        [(CLIENT, "Bound"), (CLIENT + 1, "Refused")]
    );
}

#[test]
fn sensors_and_clients_refuse_bad_input() {
    let now = t0();
    let config = MeshConfig {
        max_frame_bytes: 100,
        max_unacked_frames: 2,
        ..MeshConfig::default()
    };
    let mut sensor = Sensor::new(100, config.clone(), FtPolicy::FtAll);
    assert_eq!(
        sensor.send(now, StreamClass::Video, vec![0; 101]),
        Err(sensor::SendError::FrameTooLarge {
            size: 101,
            max: 100
        })
    );
    // Unbound, reliable frames are kept up to the limit.
    assert_eq!(sensor.send(now, StreamClass::Event, vec![1]), Ok(0));
    assert_eq!(sensor.send(now, StreamClass::Event, vec![1]), Ok(1));
    assert!(matches!(
        sensor.send(now, StreamClass::Event, vec![1]),
        Err(sensor::SendError::BufferFull { frames: 2, .. })
    ));
    // Messages from strangers: a Bound nobody asked for, an ack.
    sensor.handle(
        now,
        9,
        MeshMsg::Bound {
            cell: cell("011"),
            members: vec![9],
        },
    );
    sensor.handle(
        now,
        9,
        MeshMsg::Ack(FrameId {
            origin: 100,
            class: StreamClass::Event,
            seq: 0,
        }),
    );
    assert_eq!(sensor.unacked_frames(), 2);
    assert_eq!(sensor.stats().from_stranger, 2);

    let mut client = Client::new(config, StreamClass::DATA.to_vec());
    client.subscribe(now, vec![1]);
    client.handle(
        now,
        9,
        MeshMsg::Deliver {
            frame: frame(100, 1, 0, 10),
            ack: true,
        },
    );
    client.handle(
        now,
        1,
        MeshMsg::Deliver {
            frame: frame(100, 9, 0, 10),
            ack: true,
        },
    );
    client.handle(
        now,
        1,
        MeshMsg::Deliver {
            frame: frame(100, 1, 0, 101),
            ack: true,
        },
    );
    let stats = client.stats();
    assert_eq!(
        (
            stats.from_stranger,
            stats.unknown_class,
            stats.oversized,
            stats.delivered
        ),
        (1, 1, 1, 0)
    );
}

#[test]
fn garbage_bytes_never_panic_the_decoder() {
    use rand::rngs::SmallRng;
    use rand::{Rng, SeedableRng};
    let mut rng = SmallRng::seed_from_u64(14);
    let valid = postcard::to_allocvec(&MeshMsg::<Peer>::Bound {
        cell: cell("0121"),
        members: vec![1, 2],
    })
    .unwrap();
    assert!(postcard::from_bytes::<MeshMsg<Peer>>(&valid).is_ok());
    for _ in 0..20_000 {
        let mut bytes = valid.clone();
        let flips = rng.random_range(1..4);
        for _ in 0..flips {
            let at = rng.random_range(0..bytes.len());
            bytes[at] = rng.random();
        }
        bytes.truncate(rng.random_range(0..=bytes.len()));
        if let Ok(MeshMsg::Bound { cell, .. }) = postcard::from_bytes::<MeshMsg<Peer>>(&bytes) {
            // Whatever decodes is a valid CellId.
            assert_eq!(cell.to_string().parse::<CellId>(), Ok(cell.clone()));
        }
    }
    // An acknowledgement naming an unknown class does not decode.
    let ack = postcard::to_allocvec(&MeshMsg::<Peer>::Ack(FrameId {
        origin: 1,
        class: StreamClass::Video,
        seq: 5,
    }))
    .unwrap();
    let mut bad = ack.clone();
    let at = bad
        .iter()
        .rposition(|b| *b == StreamClass::Video.code())
        .unwrap();
    bad[at] = 77;
    assert!(postcard::from_bytes::<MeshMsg<Peer>>(&bad).is_err());
}

/// An FT reply that overtakes its copy (they travel on different
/// channels, and both may wait to be batched): the late copy is not kept.
#[test]
fn a_copy_whose_reply_came_first_is_not_kept() {
    let mut relay = leaf_relay();
    let now = t0();
    let id = FrameId {
        origin: 100,
        class: StreamClass::Event,
        seq: 7,
    };
    relay.handle(now, 6, MeshMsg::FtReply(id));
    relay.handle(
        now,
        6,
        MeshMsg::FtCopy {
            frame: frame(100, 1, 7, 10),
            ack_to: vec![100],
        },
    );
    assert_eq!(relay.copy_frames(), 0);
    // Another frame's copy is kept as before.
    relay.handle(
        now,
        6,
        MeshMsg::FtCopy {
            frame: frame(100, 1, 8, 10),
            ack_to: vec![100],
        },
    );
    assert_eq!(relay.copy_frames(), 1);
}
