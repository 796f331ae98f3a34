//! The home core in virtual time: a few cores exchange messages over a
//! small network with a controllable clock, loss, partitions, pauses and
//! crashes.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use super::*;

const KEY: u64 = 7;

/// A replicated log of numbers: the smallest state that shows whether an
/// update was lost.
#[derive(Clone, Debug, Default)]
struct Log {
    entries: Vec<u64>,
    /// Primary: entries already sent to the backups.
    sent: usize,
}

impl Replicated for Log {
    type Snapshot = Vec<u64>;
    type Delta = (u64, Vec<u64>);
    type Effect = u64;

    fn snapshot(&self, _now: Instant) -> Vec<u64> {
        self.entries.clone()
    }

    fn restore(_now: Instant, entries: Vec<u64>) -> Option<Self> {
        Some(Log {
            sent: entries.len(),
            entries,
        })
    }

    fn take_delta(&mut self, force: bool) -> Option<(u64, Vec<u64>)> {
        if self.sent >= self.entries.len() && !force {
            return None;
        }
        let start = self.sent.min(self.entries.len());
        self.sent = self.entries.len();
        Some((start as u64, self.entries[start..].to_vec()))
    }

    fn apply_delta(&mut self, _now: Instant, (start, entries): (u64, Vec<u64>)) -> bool {
        let Ok(start) = usize::try_from(start) else {
            return false;
        };
        if start > self.entries.len() {
            return false;
        }
        self.entries.truncate(start);
        self.entries.extend(entries);
        self.sent = self.entries.len();
        true
    }

    fn clear_primary_state(&mut self) {
        self.sent = self.entries.len();
    }

    fn durable(&self) -> bool {
        self.entries.first() == Some(&DURABLE)
    }

    fn volatile(&self) -> bool {
        self.entries.first() == Some(&VOLATILE)
    }
}

/// A [`Log`] whose first entry is this is durable.
const DURABLE: u64 = u64::MAX;
/// A [`Log`] whose first entry is this is volatile.
const VOLATILE: u64 = u64::MAX - 1;

type Msg = HomeMsgOf<u64, u32, Log>;

struct Node {
    homes: Homes<u64, u32, Log>,
    up: bool,
    paused: bool,
}

fn new_homes(id: u32, seed: u64) -> Homes<u64, u32, Log> {
    // Peer 0 is the closest to every key, then 1, and so on.
    let closeness: Closeness<u64, u32> = Box::new(|_key, p| u128::from(*p));
    Homes::new(id, HomeConfig::default(), closeness, seed)
}

/// N cores and the network between them.
struct Net {
    now: Instant,
    nodes: Vec<Node>,
    /// (delivery time, order) → (from, to, message).
    queue: BTreeMap<(Instant, u64), (u32, u32, Msg)>,
    next: u64,
    rng: SmallRng,
    loss: f64,
    /// Directed links that drop everything.
    cut: BTreeSet<(u32, u32)>,
    /// Values released, with the peer that released them.
    released: Vec<(u32, u64)>,
    /// (term, peer) of every commit.
    commits: BTreeSet<(u64, u32)>,
    /// (peer, previous) of every `BecamePrimary`.
    became: Vec<(u32, Option<u32>)>,
    stepped_down: Vec<u32>,
    dropped: Vec<u32>,
    snapshots_to: Vec<u32>,
    /// (peer, outcome) of every creation asked for with `found`.
    founded: Vec<(u32, Result<(), Option<u32>>)>,
}

impl Net {
    fn new(n: u32, seed: u64) -> Net {
        Net {
            now: Instant::now(),
            nodes: (0..n)
                .map(|id| Node {
                    homes: new_homes(id, seed ^ u64::from(id)),
                    up: true,
                    paused: false,
                })
                .collect(),
            queue: BTreeMap::new(),
            next: 0,
            rng: SmallRng::seed_from_u64(seed),
            loss: 0.0,
            cut: BTreeSet::new(),
            released: Vec::new(),
            commits: BTreeSet::new(),
            became: Vec::new(),
            stepped_down: Vec::new(),
            dropped: Vec::new(),
            snapshots_to: Vec::new(),
            founded: Vec::new(),
        }
    }

    fn node(&mut self, id: u32) -> &mut Homes<u64, u32, Log> {
        &mut self.nodes[id as usize].homes
    }

    /// Every running peer sees exactly the peers in `live` (its side).
    fn view(&mut self, sides: &[&[u32]]) {
        let now = self.now;
        for side in sides {
            for &id in side.iter() {
                let others: Vec<u32> = side.iter().copied().filter(|p| *p != id).collect();
                if self.nodes[id as usize].up {
                    self.node(id).set_members(now, others);
                    self.drain(id);
                }
            }
        }
    }

    /// Every peer up sees every other peer up.
    fn view_all(&mut self) {
        let up: Vec<u32> = (0..self.nodes.len() as u32)
            .filter(|id| self.nodes[*id as usize].up)
            .collect();
        self.view(&[&up]);
    }

    fn partition(&mut self, a: &[u32], b: &[u32]) {
        for &x in a {
            for &y in b {
                self.cut.insert((x, y));
                self.cut.insert((y, x));
            }
        }
        self.view(&[a, b]);
    }

    fn heal(&mut self) {
        self.cut.clear();
        self.view_all();
    }

    fn create(&mut self, id: u32, size: u8) {
        let now = self.now;
        self.node(id).create(now, KEY, Log::default(), size);
        self.drain(id);
    }

    /// The primary `id` appends `value`; `Err` if it is not the primary.
    fn propose(&mut self, id: u32, value: u64) -> Result<u64, NotPrimary> {
        let now = self.now;
        let homes = self.node(id);
        let h = homes.get_mut(&KEY).ok_or(NotPrimary)?;
        if !h.is_primary() {
            return Err(NotPrimary);
        }
        h.state_mut().entries.push(value);
        let seq = homes.propose(now, KEY, vec![value]);
        self.drain(id);
        seq
    }

    fn crash(&mut self, id: u32) {
        self.nodes[id as usize].up = false;
        self.queue
            .retain(|_, (from, to, _)| *from != id && *to != id);
    }

    fn restart(&mut self, id: u32, seed: u64) {
        self.nodes[id as usize] = Node {
            homes: new_homes(id, seed),
            up: true,
            paused: false,
        };
    }

    fn drain(&mut self, id: u32) {
        while let Some(out) = self.node(id).poll() {
            match out {
                HomeOutput::Send { to, msg, .. } => {
                    if let HomeMsg::Replica {
                        update: Update::Snapshot { .. },
                        ..
                    } = &msg
                    {
                        self.snapshots_to.push(to);
                    }
                    if self.cut.contains(&(id, to)) || self.rng.random_bool(self.loss) {
                        continue;
                    }
                    let delay = Duration::from_micros(self.rng.random_range(500..3000));
                    self.next += 1;
                    self.queue
                        .insert((self.now + delay, self.next), (id, to, msg));
                }
                HomeOutput::Committed { term, .. } => {
                    self.commits.insert((term, id));
                }
                HomeOutput::Released { effects, .. } => {
                    self.released.extend(effects.into_iter().map(|v| (id, v)));
                }
                HomeOutput::BecamePrimary { previous, .. } => self.became.push((id, previous)),
                HomeOutput::SteppedDown { .. } => self.stepped_down.push(id),
                HomeOutput::Dropped { .. } => self.dropped.push(id),
                HomeOutput::Founded { .. } => self.founded.push((id, Ok(()))),
                HomeOutput::NotFounded { primary, .. } => self.founded.push((id, Err(primary))),
                HomeOutput::Left { .. } => {}
            }
        }
    }

    /// Runs the network until `for_` has passed.
    fn run(&mut self, for_: Duration) {
        let end = self.now + for_;
        loop {
            let msg_at = self.queue.keys().next().map(|(at, _)| *at);
            let timer = self
                .nodes
                .iter()
                .enumerate()
                .filter(|(_, n)| n.up && !n.paused)
                .filter_map(|(i, n)| n.homes.poll_timeout().map(|at| (at, i as u32)))
                .min();
            let next = match (msg_at, timer) {
                (Some(m), Some((t, _))) => m.min(t),
                (Some(m), None) => m,
                (None, Some((t, _))) => t,
                (None, None) => break,
            };
            if next > end {
                break;
            }
            self.now = self.now.max(next);
            if msg_at == Some(next) {
                let Some(((at, order), (from, to, msg))) = self.queue.pop_first() else {
                    break;
                };
                let node = &self.nodes[to as usize];
                if !node.up {
                    continue;
                }
                if node.paused {
                    // Held in the paused peer's socket buffer.
                    self.queue
                        .insert((at + Duration::from_millis(10), order), (from, to, msg));
                    continue;
                }
                let now = self.now;
                self.node(to).handle(now, from, msg);
                self.drain(to);
            } else if let Some((_, id)) = timer {
                let now = self.now;
                self.node(id).handle_timeout(now);
                self.drain(id);
            }
        }
        self.now = self.now.max(end);
    }

    fn primaries(&self) -> Vec<u32> {
        (0..self.nodes.len() as u32)
            .filter(|id| {
                let n = &self.nodes[*id as usize];
                n.up && !n.paused && n.homes.get(&KEY).is_some_and(|h| h.is_primary())
            })
            .collect()
    }

    fn entries(&self, id: u32) -> Vec<u64> {
        self.nodes[id as usize]
            .homes
            .get(&KEY)
            .map(|h| h.state().entries.clone())
            .unwrap_or_default()
    }

    fn members(&self, id: u32) -> Vec<u32> {
        self.nodes[id as usize]
            .homes
            .get(&KEY)
            .map(|h| h.members().to_vec())
            .unwrap_or_default()
    }

    /// Whether one crash cannot lose the home: a primary whose committed
    /// and latest members are the same, each holding a replica of this
    /// term that names them (perhaps missing the latest updates).
    fn healthy(&self) -> bool {
        let primaries = self.primaries();
        let [p] = primaries.as_slice() else {
            return false;
        };
        let Some(h) = self.nodes[*p as usize].homes.get(&KEY) else {
            return false;
        };
        h.members() == h.config()
            && h.members().len() == h.size()
            && h.members().iter().all(|m| {
                self.nodes[*m as usize]
                    .homes
                    .get(&KEY)
                    .is_some_and(|r| r.term() == h.term() && r.config() == h.config())
            })
    }

    /// Peer `id` starts leaving gracefully: the others learn it drains
    /// (it answers, but is no candidate) and it hands its primary roles
    /// over.
    fn start_draining(&mut self, id: u32) {
        let now = self.now;
        for other in 0..self.nodes.len() as u32 {
            if other != id && self.nodes[other as usize].up {
                let homes = self.node(other);
                homes.set_draining(id, true);
                homes.update_member(id, false);
                homes.refresh(now);
                self.drain(other);
            }
        }
        self.node(id).hand_over_all(now);
        self.drain(id);
    }

    fn was_released(&self, value: u64) -> bool {
        self.released.iter().any(|(_, v)| *v == value)
    }

    /// No two peers committed in the same term.
    fn assert_one_primary_per_term(&self) {
        let mut by_term: BTreeMap<u64, u32> = BTreeMap::new();
        for (term, id) in &self.commits {
            if let Some(other) = by_term.insert(*term, *id) {
                assert_eq!(other, *id, "two primaries committed in term {term}");
            }
        }
    }

    /// A home of `size` on peers `0..n`, all members, value 1 committed.
    fn settled(n: u32, size: u8, seed: u64) -> Net {
        let mut net = Net::new(n, seed);
        net.view_all();
        net.create(0, size);
        net.run(Duration::from_secs(1));
        assert_eq!(
            net.members(0).len(),
            usize::from(size),
            "the home filled up"
        );
        net.propose(0, 1).expect("0 is primary");
        net.run(Duration::from_millis(200));
        assert!(net.was_released(1));
        net
    }
}

#[test]
fn a_home_fills_up_and_commits_with_its_backups() {
    let mut net = Net::settled(5, 3, 1);
    assert_eq!(net.members(0), vec![0, 1, 2]);
    for v in 2..10 {
        net.propose(0, v).expect("primary");
    }
    net.run(Duration::from_millis(500));
    for v in 1..10 {
        assert!(net.was_released(v), "value {v} released");
    }
    assert_eq!(net.entries(1), net.entries(0));
    assert_eq!(net.entries(2), net.entries(0));
    assert!(net.entries(3).is_empty(), "peer 3 is not in the home");
    net.assert_one_primary_per_term();
}

#[test]
fn a_primary_on_the_minority_side_never_commits() {
    let mut net = Net::settled(5, 5, 2);
    net.partition(&[0, 1], &[2, 3, 4]);
    net.propose(0, 100).expect("0 still believes it is primary");
    net.run(Duration::from_secs(5));
    assert!(!net.was_released(100), "the minority side committed");
    // The majority side elected a primary of its own and commits.
    let majority: Vec<u32> = net
        .primaries()
        .into_iter()
        .filter(|p| [2, 3, 4].contains(p))
        .collect();
    assert_eq!(majority.len(), 1, "one primary on the majority side");
    net.propose(majority[0], 200).expect("primary");
    net.run(Duration::from_millis(500));
    assert!(net.was_released(200), "the majority side commits");
    // Healed: the minority's update is gone, the majority's stays.
    net.heal();
    net.run(Duration::from_secs(5));
    let primaries = net.primaries();
    assert_eq!(primaries.len(), 1, "one primary after healing");
    let entries = net.entries(primaries[0]);
    assert!(entries.contains(&200) && entries.contains(&1));
    assert!(!entries.contains(&100));
    for id in 0..5 {
        assert_eq!(net.entries(id), entries, "replica of {id}");
    }
    net.assert_one_primary_per_term();
}

/// Members of a home of three leave gracefully one after the other, with
/// no peer left to replace them: each is dropped from the member list while
/// it can still confirm the list without it, so the last one commits alone
/// instead of waiting for a majority that is gone.
#[test]
fn members_leaving_one_after_the_other_never_take_the_majority_with_them() {
    for seed in 0..20 {
        let mut net = Net::settled(3, 3, seed);
        // A backup, then the primary.
        for (leaving, value) in [(1, 10), (0, 20)] {
            net.start_draining(leaving);
            net.run(Duration::from_secs(2));
            assert!(
                net.nodes[leaving as usize].homes.released(),
                "seed {seed}: {leaving} not released"
            );
            net.crash(leaving);
            let primaries = net.primaries();
            let [primary] = primaries.as_slice() else {
                panic!("seed {seed}: primaries {primaries:?} after {leaving} left");
            };
            assert!(
                !net.members(*primary).contains(&leaving),
                "seed {seed}: {leaving} is still a member"
            );
            net.propose(*primary, value).expect("primary");
            net.run(Duration::from_millis(500));
            assert!(
                net.was_released(value),
                "seed {seed}: {value} not committed after {leaving} left"
            );
        }
        assert_eq!(net.entries(2), vec![1, 10, 20]);
        net.assert_one_primary_per_term();
    }
}

/// Backup 1 of a home of three on four peers starts leaving gracefully
/// while `meanwhile` runs at the primary, peer 0, between short runs of
/// the network: it must be released (and dropped from the members) within
/// two seconds, whatever the seed.
fn assert_draining_backup_released(seeds: u64, mut meanwhile: impl FnMut(&mut Net)) {
    for seed in 0..seeds {
        let mut net = Net::settled(4, 3, seed);
        net.start_draining(1);
        let deadline = net.now + Duration::from_secs(2);
        while net.now < deadline && !net.nodes[1].homes.released() {
            meanwhile(&mut net);
        }
        assert!(
            net.nodes[1].homes.released(),
            "seed {seed}: 1 still holds {:?}",
            net.nodes[1].homes.unreleased()
        );
        assert!(
            !net.members(0).contains(&1),
            "seed {seed}: 1 still a member"
        );
    }
}

/// A backup leaving gracefully is released even when the primary's view
/// keeps changing meanwhile (other peers' news): dropping it from the
/// member lists must not make the primary forget the peer it still owes
/// a release, or the leaving peer waits out its deadline.
#[test]
fn a_draining_backup_is_released_while_the_view_keeps_changing() {
    assert_draining_backup_released(20, |net| {
        net.run(Duration::from_millis(1));
        let now = net.now;
        net.node(0).refresh(now);
        net.drain(0);
    });
}

/// A backup leaving gracefully while the primary commits a steady stream
/// of updates, faster than it rechecks its members: every update must not
/// push that recheck away, or the leaving peer is never released.
#[test]
fn a_draining_backup_is_released_while_updates_stream_in() {
    let mut value = 100;
    assert_draining_backup_released(10, |net| {
        net.propose(0, value).expect("0 stays primary");
        value += 1;
        net.run(Duration::from_millis(5));
    });
}

/// A primary holds a lease while a majority acknowledges it; cut off, it
/// loses the lease before the other side can elect a successor, so the
/// two never both act alone (the heartbeats of an idle home renew it).
#[test]
fn a_cut_off_primary_loses_its_lease_before_a_successor_is_elected() {
    for seed in 0..10 {
        let mut net = Net::settled(3, 3, seed);
        net.run(Duration::from_secs(2));
        assert!(
            net.nodes[0].homes.has_lease(net.now, &KEY),
            "seed {seed}: idle home leased"
        );
        net.partition(&[0], &[1, 2]);
        let cut_at = net.now;
        let (mut lease_lost, mut successor) = (None, None);
        while net.now < cut_at + Duration::from_secs(5) && successor.is_none() {
            net.run(Duration::from_millis(1));
            if lease_lost.is_none() && !net.nodes[0].homes.has_lease(net.now, &KEY) {
                lease_lost = Some(net.now);
            }
            if net.primaries().iter().any(|p| *p != 0) {
                successor = Some(net.now);
            }
        }
        let (Some(lost), Some(elected)) = (lease_lost, successor) else {
            panic!("seed {seed}: lease lost at {lease_lost:?}, successor at {successor:?}");
        };
        assert!(lost < elected, "seed {seed}: lease held past the election");
        assert!(
            lost.duration_since(cut_at) <= HomeConfig::default().lease,
            "seed {seed}: lease held {:?} after the cut",
            lost.duration_since(cut_at)
        );
    }
}

/// A release travels ahead of snapshots (they are bulk): a snapshot sent
/// before it may arrive after it and found the home again at a peer the
/// primary no longer counts. That peer's acknowledgement gets it released
/// again, or a leaving peer would wait out its deadline for nothing.
#[test]
fn a_replica_founded_by_a_late_snapshot_is_released_again() {
    let mut net = Net::settled(4, 3, 5);
    net.start_draining(1);
    net.run(Duration::from_secs(1));
    assert!(net.nodes[1].homes.released(), "1 released");
    let primary = &net.nodes[0].homes;
    let h = primary.get(&KEY).expect("0 holds the home");
    let late = HomeMsg::Replica {
        round: 0,
        committed: h.committed,
        key: KEY,
        term: h.term(),
        seq: h.seq(),
        update: Update::Snapshot {
            size: 3,
            members: h.members().to_vec(),
            config: h.config().to_vec(),
            state: Box::new(h.state().entries.clone()),
        },
    };
    let now = net.now;
    net.node(1).handle(now, 0, late);
    net.drain(1);
    assert!(
        !net.nodes[1].homes.released(),
        "the late snapshot founded it"
    );
    net.run(Duration::from_secs(1));
    assert!(
        net.nodes[1].homes.released(),
        "1 still holds {:?}",
        net.nodes[1].homes.unreleased()
    );
}

#[test]
fn a_paused_primary_that_resumes_steps_down_without_committing_alone() {
    let mut net = Net::settled(3, 3, 3);
    // SIGSTOP: the view still shows it live (not yet declared dead).
    net.nodes[0].paused = true;
    net.run(Duration::from_secs(4));
    let others = net.primaries();
    assert_eq!(others.len(), 1, "a backup took over");
    assert_ne!(others[0], 0);
    net.propose(others[0], 10).expect("new primary");
    net.run(Duration::from_millis(300));
    assert!(net.was_released(10));
    // SIGCONT: the old primary appends at once, before hearing anyone.
    net.nodes[0].paused = false;
    assert!(
        net.propose(0, 11).is_ok(),
        "it still believes it is primary"
    );
    net.run(Duration::from_secs(3));
    assert!(!net.was_released(11), "a resumed primary committed alone");
    assert!(
        net.stepped_down.contains(&0),
        "the resumed primary stepped down"
    );
    let primaries = net.primaries();
    assert_eq!(primaries.len(), 1);
    for id in 0..3 {
        assert!(net.entries(id).contains(&10), "replica of {id} has 10");
        assert!(!net.entries(id).contains(&11), "replica of {id} has 11");
    }
    net.assert_one_primary_per_term();
}

#[test]
fn a_closer_newcomer_is_handed_the_primary_role() {
    let mut net = Net::new(5, 4);
    // Peer 0 is down at first: 1, 2, 3 form the home.
    net.nodes[0].up = false;
    net.view(&[&[1, 2, 3, 4]]);
    net.create(1, 3);
    net.run(Duration::from_secs(1));
    assert_eq!(net.members(1), vec![1, 2, 3]);
    net.propose(1, 5).expect("1 is primary");
    net.run(Duration::from_millis(300));
    assert!(net.was_released(5));
    // Peer 0, the closest, joins.
    net.nodes[0].up = true;
    net.view_all();
    net.run(Duration::from_secs(2));
    assert_eq!(net.primaries(), vec![0], "0 took the role over");
    assert!(net.became.contains(&(0, Some(1))), "handed over by 1");
    assert_eq!(net.members(0), vec![0, 1, 2]);
    assert!(net.dropped.contains(&3), "3 was released");
    assert!(net.nodes[3].homes.get(&KEY).is_none());
    assert_eq!(net.entries(0), vec![5]);
    net.propose(0, 6).expect("0 is primary");
    net.run(Duration::from_millis(300));
    assert!(net.was_released(6));
    net.assert_one_primary_per_term();
}

#[test]
fn a_snapshot_catches_a_lagging_backup_up() {
    let mut net = Net::settled(3, 3, 5);
    // Everything 0 sends 2 is lost (a pipe that gave up).
    net.cut.insert((0, 2));
    for v in 2..8 {
        net.propose(0, v).expect("primary");
    }
    net.run(Duration::from_millis(500));
    assert!(net.was_released(7), "0 and 1 are a majority");
    assert_eq!(net.entries(2), vec![1], "2 missed the updates");
    net.snapshots_to.clear();
    net.cut.clear();
    net.run(Duration::from_secs(1));
    assert!(net.snapshots_to.contains(&2), "2 got a snapshot");
    assert_eq!(net.entries(2), net.entries(0));
    // And it follows the deltas after it.
    net.propose(0, 8).expect("primary");
    net.run(Duration::from_millis(300));
    assert_eq!(net.entries(2), net.entries(0));
}

#[test]
fn absurd_messages_are_ignored() {
    let mut net = Net::settled(3, 3, 6);
    // The backups' answers are lost: nothing can commit.
    net.cut.insert((1, 0));
    net.cut.insert((2, 0));
    net.propose(0, 50).expect("primary");
    net.run(Duration::from_millis(100));
    let now = net.now;
    let absurd: Vec<(u32, Msg)> = vec![
        // An acknowledgement of an update never sent.
        (
            1,
            HomeMsg::Ack {
                round: 0,
                key: KEY,
                term: 1,
                seq: u64::MAX,
            },
        ),
        (
            2,
            HomeMsg::Ack {
                round: 0,
                key: KEY,
                term: 1,
                seq: 1_000_000,
            },
        ),
        // A snapshot naming nobody, and a delta naming a peer twice.
        (
            1,
            HomeMsg::Replica {
                round: 0,
                committed: u64::MAX,
                key: KEY,
                term: u64::MAX,
                seq: 0,
                update: Update::Snapshot {
                    size: 0,
                    members: Vec::new(),
                    config: Vec::new(),
                    state: Box::new(vec![666]),
                },
            },
        ),
        (
            2,
            HomeMsg::Replica {
                round: 0,
                committed: u64::MAX,
                key: KEY,
                term: u64::MAX,
                seq: u64::MAX,
                update: Update::Delta {
                    members: vec![2, 2],
                    config: vec![2],
                    delta: Some(Box::new((u64::MAX, vec![666]))),
                },
            },
        ),
        // Replies to votes never asked for, about unknown homes too.
        (
            1,
            HomeMsg::VoteReply {
                key: KEY,
                term: u64::MAX,
                granted: true,
                promised: u64::MAX,
                log_term: u64::MAX,
                log_seq: u64::MAX,
                primary: Some(0),
            },
        ),
        (
            1,
            HomeMsg::Nack {
                key: 99,
                term: u64::MAX,
            },
        ),
        (
            1,
            HomeMsg::Ack {
                round: 0,
                key: 99,
                term: u64::MAX,
                seq: u64::MAX,
            },
        ),
    ];
    for (from, msg) in absurd {
        net.node(0).handle(now, from, msg);
        net.drain(0);
    }
    assert!(!net.was_released(50), "an absurd ack released an effect");
    assert_eq!(net.primaries(), vec![0], "0 is still primary");
    assert!(!net.entries(0).contains(&666));
    assert!(net.nodes[0].homes.get(&99).is_none());
    // A delta from the future on a backup: a nack, no change.
    let delta: Msg = HomeMsg::Replica {
        round: 0,
        committed: 0,
        key: KEY,
        term: 1,
        seq: u64::MAX,
        update: Update::Delta {
            members: vec![0, 1, 2],
            config: vec![0, 1, 2],
            delta: Some(Box::new((0, vec![666]))),
        },
    };
    net.node(1).handle(now, 0, delta);
    let mut nacked = false;
    while let Some(out) = net.node(1).poll() {
        if let HomeOutput::Send {
            msg: HomeMsg::Nack { .. },
            ..
        } = out
        {
            nacked = true;
        }
    }
    assert!(nacked, "a delta from the future is answered with a nack");
    assert!(!net.entries(1).contains(&666));
    // Healed, the home commits again.
    net.cut.clear();
    net.run(Duration::from_secs(1));
    assert!(net.was_released(50));
}

/// Crashes one peer at a time (a restarted peer has lost its replica),
/// with message loss, while the primary keeps appending: the home's
/// members change again and again (joint membership), yet no two peers
/// commit in the same term and nothing committed is lost.
#[test]
fn joint_membership_changes_under_crashes_stay_safe() {
    let mut takeovers = 0;
    for seed in 0..40u64 {
        let mut net = Net::new(7, 100 + seed);
        net.loss = 0.15;
        net.view_all();
        net.create(0, 3);
        net.run(Duration::from_secs(1));
        let mut rng = SmallRng::seed_from_u64(seed);
        let mut value = 1000;
        let mut down: Option<u32> = None;
        for _ in 0..60 {
            for _ in 0..rng.random_range(1..4) {
                if let Some(p) = net.primaries().first().copied() {
                    value += 1;
                    let _ = net.propose(p, value);
                }
                net.run(Duration::from_millis(rng.random_range(1..30)));
            }
            if let Some(id) = down.take() {
                net.restart(id, rng.random());
                net.view_all();
            } else if net.healthy() && rng.random_bool(0.7) {
                // The primary, often, right after it appended.
                let id = match net.primaries().first() {
                    Some(p) if rng.random_bool(0.6) => *p,
                    _ => rng.random_range(0..7),
                };
                net.crash(id);
                net.view_all();
                down = Some(id);
            }
            net.run(Duration::from_millis(rng.random_range(20..3000)));
        }
        if let Some(id) = down.take() {
            net.restart(id, 1);
        }
        net.loss = 0.0;
        net.view_all();
        net.run(Duration::from_secs(5));
        net.assert_one_primary_per_term();
        let primaries = net.primaries();
        if primaries.len() != 1 {
            for id in 0..7u32 {
                let h = net.nodes[id as usize].homes.get(&KEY);
                eprintln!(
                    "{id}: {:?}",
                    h.map(|h| (
                        h.role().clone(),
                        h.term(),
                        h.seq(),
                        h.members().to_vec(),
                        h.config().to_vec(),
                        h.state().entries.len()
                    ))
                );
            }
        }
        assert_eq!(primaries.len(), 1, "seed {seed}: one primary at the end");
        let entries = net.entries(primaries[0]);
        for (_, v) in &net.released {
            assert!(entries.contains(v), "seed {seed}: committed {v} lost");
        }
        assert!(
            net.released.len() > 20,
            "seed {seed}: the home made progress"
        );
        takeovers += net.became.iter().filter(|(_, prev)| prev.is_none()).count();
    }
    assert!(takeovers > 100, "elections happened: {takeovers}");
}

/// Home {0, 1, 2}; a partition leaves 0 with newcomers 3 and 4, which
/// join its member list: those new members are a majority of the latest
/// list, but not of the committed one, so 0 must not commit — while 1 and
/// 2, a majority of the committed list, elect a primary and commit.
#[test]
fn new_members_alone_do_not_commit_a_joint_change() {
    let mut net = Net::settled(5, 3, 7);
    assert_eq!(net.members(0), vec![0, 1, 2]);
    net.partition(&[0, 3, 4], &[1, 2]);
    net.run(Duration::from_secs(1));
    assert_eq!(
        net.members(0),
        vec![0, 3, 4],
        "3 and 4 joined, 1 and 2 left"
    );
    net.propose(0, 300).expect("0 is primary on its side");
    net.run(Duration::from_secs(3));
    assert!(!net.was_released(300), "committed without the old majority");
    let other: Vec<u32> = net
        .primaries()
        .into_iter()
        .filter(|p| [1, 2].contains(p))
        .collect();
    assert_eq!(other.len(), 1, "1 and 2 elected a primary");
    net.propose(other[0], 400).expect("primary");
    net.run(Duration::from_millis(500));
    assert!(net.was_released(400), "the old majority commits");
    net.heal();
    net.run(Duration::from_secs(5));
    let primaries = net.primaries();
    assert_eq!(primaries.len(), 1);
    let entries = net.entries(primaries[0]);
    assert!(entries.contains(&400) && !entries.contains(&300));
    net.assert_one_primary_per_term();
}

/// Home {0, 1, 3} (2 was down); 2 comes back, closer than 3, joins, and 3
/// leaves: once the change is committed 3 is released and drops its
/// replica. If the primary then dies at once, the backups must still be
/// able to elect one of them: a released member must not be one whose
/// vote a majority of them still needs (the old member list is left only
/// once a majority of the new one knows it is).
#[test]
fn a_primary_dying_right_after_releasing_an_old_member_is_replaced() {
    for seed in 0..20u64 {
        let mut net = Net::new(5, 300 + seed);
        net.nodes[2].up = false;
        net.view(&[&[0, 1, 3, 4]]);
        net.create(0, 3);
        net.run(Duration::from_secs(1));
        assert_eq!(net.members(0), vec![0, 1, 3]);
        net.propose(0, 1).expect("0 is primary");
        net.run(Duration::from_millis(200));
        assert!(net.was_released(1));
        // 2 comes back: it joins, 3 leaves and is released.
        net.nodes[2].up = true;
        net.view_all();
        let deadline = net.now + Duration::from_secs(5);
        while !net.dropped.contains(&3) && net.now < deadline {
            net.run(Duration::from_millis(1));
        }
        assert!(net.dropped.contains(&3), "seed {seed}: 3 was released");
        // The primary dies right then.
        net.crash(0);
        net.view_all();
        net.run(Duration::from_secs(10));
        let primaries = net.primaries();
        assert_eq!(primaries.len(), 1, "seed {seed}: a backup took over");
        assert!([1, 2].contains(&primaries[0]), "seed {seed}");
        let p = primaries[0];
        net.propose(p, 2).expect("primary");
        net.run(Duration::from_millis(500));
        assert!(net.was_released(2), "seed {seed}: the new primary commits");
        assert!(net.entries(p).contains(&1), "seed {seed}: 1 kept");
        net.assert_one_primary_per_term();
    }
}

/// The primary of a home of 5 is lost (crashed, or paused so the view
/// still shows it) while its backups hold replicas of different ages —
/// often the most recent one ranked last — with message loss: the
/// backups, campaigning at about the same time, elect one of them and it
/// commits within a bound of virtual time, on every seed.
#[test]
fn simultaneous_candidates_elect_a_primary_within_a_bound() {
    let bound = Duration::from_secs(6);
    let mut slowest = Duration::ZERO;
    for seed in 0..300u64 {
        let mut rng = SmallRng::seed_from_u64(seed);
        let mut net = Net::settled(5, 5, 1000 + seed);
        // Backups miss the last updates, the later ranked ones the least.
        for b in 1..5u32 {
            if rng.random_bool(0.6) {
                net.cut.insert((0, b));
            }
            for _ in 0..rng.random_range(0..3) {
                let v = rng.random_range(10..1000);
                net.propose(0, v).expect("primary");
                net.run(Duration::from_millis(5));
            }
        }
        net.run(Duration::from_millis(rng.random_range(1..300)));
        net.cut.clear();
        net.loss = rng.random_range(0.0..0.25);
        let start = net.now;
        let mut simultaneous = rng.random_bool(0.3);
        if simultaneous {
            // Each backup sees the primary and every member ranked before
            // it gone (views still settling): all campaign at once.
            net.crash(0);
            let now = net.now;
            for b in 1..5u32 {
                net.node(b).set_members(now, b + 1..5);
                net.drain(b);
            }
        } else if rng.random_bool(0.5) {
            net.crash(0);
            net.view_all();
        } else {
            net.nodes[0].paused = true;
        }
        let mut elected = None;
        while net.now < start + bound * 2 {
            net.run(Duration::from_millis(10));
            if simultaneous && net.now >= start + Duration::from_millis(300) {
                simultaneous = false;
                net.view_all();
            }
            let primaries: Vec<u32> = net.primaries().into_iter().filter(|p| *p != 0).collect();
            if let [p] = primaries.as_slice() {
                elected = Some((*p, net.now - start));
                break;
            }
        }
        let Some((p, took)) = elected else {
            for id in 0..5u32 {
                let h = net.nodes[id as usize].homes.get(&KEY);
                eprintln!(
                    "{id}: {:?}",
                    h.map(|h| (
                        h.role().clone(),
                        h.term(),
                        h.seq(),
                        h.members().to_vec(),
                        h.config().to_vec(),
                        h.promised,
                        h.campaigned,
                        h.candidacy.as_ref().map(|c| (c.term, c.votes.clone())),
                        h.campaign_at.map(|a| a - net.now),
                    ))
                );
            }
            panic!("seed {seed}: no primary elected in {:?}", bound * 2);
        };
        slowest = slowest.max(took);
        assert!(took <= bound, "seed {seed}: the election took {took:?}");
        net.loss = 0.0;
        // A candidate that did not hear of the winner in time may still
        // win a later term (taking the uncommitted proposals with it):
        // the home then settles on one primary, which commits.
        let _ = p;
        net.run(Duration::from_secs(2));
        let primaries: Vec<u32> = net.primaries().into_iter().filter(|p| *p != 0).collect();
        assert_eq!(primaries.len(), 1, "seed {seed}: one primary");
        net.propose(primaries[0], 5000).expect("primary");
        net.run(Duration::from_millis(500));
        assert!(
            net.was_released(5000),
            "seed {seed}: the new primary commits"
        );
        net.assert_one_primary_per_term();
    }
    eprintln!("slowest election: {slowest:?}");
}

/// With a durable state, an effect is released only once a majority of the
/// home has the update that made it on disk ([`Homes::durable`]), not when
/// it is merely in memory: a home restarted as a whole then finds every
/// acknowledged change on disk.
#[test]
fn a_durable_state_releases_effects_only_once_on_disk_at_a_majority() {
    let mut net = Net::new(3, 11);
    net.view_all();
    let now = net.now;
    let log = Log {
        entries: vec![DURABLE],
        sent: 0,
    };
    net.node(0).create(now, KEY, log, 3);
    net.drain(0);
    // Each member's disk catches up with its replica.
    let persist = |net: &mut Net, ids: &[u32]| {
        for &id in ids {
            let now = net.now;
            let held = net.nodes[id as usize]
                .homes
                .get(&KEY)
                .map(|h| (h.term(), h.seq()));
            if let Some((term, seq)) = held {
                net.node(id).durable(now, KEY, term, seq);
                net.drain(id);
            }
        }
        net.run(Duration::from_millis(100));
    };
    net.run(Duration::from_secs(1));
    for _ in 0..3 {
        persist(&mut net, &[0, 1, 2]);
    }
    assert_eq!(net.members(0), vec![0, 1, 2]);
    assert_eq!(
        net.nodes[0].homes.get(&KEY).map(|h| h.config().len()),
        Some(3)
    );
    net.propose(0, 5).expect("0 is primary");
    net.run(Duration::from_millis(500));
    assert!(
        !net.was_released(5),
        "released before anyone had it on disk"
    );
    persist(&mut net, &[0]);
    assert!(
        !net.was_released(5),
        "released with one member of 3 on disk"
    );
    persist(&mut net, &[1]);
    assert!(net.was_released(5), "two of 3 have it on disk");
    assert_eq!(net.entries(2), vec![DURABLE, 5], "2 holds it in memory");
}

/// A member released after the home moved on to a newer term forgot the
/// home with its replica; a primary of the old term, cut off meanwhile,
/// then sent it a snapshot, it accepted it as a fresh backup, and the old
/// primary committed with it as its majority: an update acknowledged in a
/// term the home had left, lost when the old primary learnt of the new
/// one (simulator, `--workload space --seed 265 --peers 12 --faults
/// loss,dup,reorder,partition,pause --space-clients 12 --space-faults
/// any`). A released member now remembers the term it left in.
#[test]
fn a_released_member_does_not_rejoin_an_older_term() {
    let mut net = Net::new(5, 11);
    // Peers 1 and 3 are not around yet: the home is 0, 2 and 4.
    net.view(&[&[0, 2, 4], &[1, 3]]);
    net.create(0, 3);
    net.run(Duration::from_secs(1));
    assert_eq!(net.members(0), vec![0, 2, 4]);
    net.propose(0, 1).expect("0 is primary");
    net.run(Duration::from_millis(200));
    assert!(net.was_released(1));
    // 0 is cut off; the others see each other: a new term takes over,
    // and 1 and 3, closer than 4, replace it.
    net.partition(&[0], &[1, 2, 3, 4]);
    net.run(Duration::from_secs(6));
    assert!(net.nodes[4].homes.get(&KEY).is_none(), "4 was released");
    let newer = net
        .primaries()
        .into_iter()
        .find(|p| *p != 0)
        .expect("a new primary");
    let newer_term = net.nodes[newer as usize].homes.get(&KEY).map(|h| h.term());
    assert!(newer_term > Some(1));
    // 0 reaches 4 again, not yet the others, and still sees only 2 and 4.
    net.cut
        .retain(|(a, b)| (*a == 0 && *b != 4) || (*b == 0 && *a != 4));
    let now = net.now;
    net.node(0).set_members(now, [2, 4]);
    net.drain(0);
    if net.propose(0, 99).is_ok() {
        net.run(Duration::from_secs(2));
    }
    assert!(
        !net.was_released(99),
        "a primary of an older term committed through a released member"
    );
    net.assert_one_primary_per_term();
}

/// The peer that creates a durable home handed replicas to the closest
/// peers at once; it crashed before its own disk held the home, so they
/// followed a primary that had none, and could never elect another: it
/// was the only member the home had committed (simulator, `--workload
/// space --seed 90 --peers 8 --space-clients 8 --space-faults any`). The
/// creator now invites others only once the home is on its disk.
#[test]
fn a_new_durable_home_grows_only_once_on_its_creators_disk() {
    let mut net = Net::new(3, 12);
    net.view_all();
    let now = net.now;
    let log = Log {
        entries: vec![DURABLE],
        sent: 0,
    };
    net.node(0).create(now, KEY, log, 3);
    net.drain(0);
    net.run(Duration::from_secs(1));
    assert!(
        net.nodes[1].homes.get(&KEY).is_none() && net.nodes[2].homes.get(&KEY).is_none(),
        "replicas handed out before the creator's disk held the home"
    );
    // On disk now: the home grows.
    let now = net.now;
    net.node(0).durable(now, KEY, 1, 1);
    net.drain(0);
    net.run(Duration::from_secs(1));
    assert!(net.nodes[1].homes.get(&KEY).is_some());
    assert!(net.nodes[2].homes.get(&KEY).is_some());
}

/// A primary cut off with a closer newcomer handed it the role, and the
/// newcomer took the next term on that one vote, while the other side
/// elected a primary of the same term by majority: two primaries of one
/// term, the handed-over one (closer) refusing the other's updates for
/// good, its clients waiting on a primary that could never commit
/// (simulator, `--workload space --seed 205 --peers 8 --space-clients 8
/// --space-faults any`). A hand-over is now a candidacy that still needs
/// a majority, in which the old primary's backups vote although they
/// heard from it lately.
#[test]
fn a_hand_over_cut_off_from_the_majority_makes_no_second_primary_of_a_term() {
    let mut net = Net::new(4, 13);
    // Peer 0, the closest, is not around at first: 1, 2, 3 form the home.
    net.view(&[&[1, 2, 3], &[0]]);
    net.create(1, 3);
    net.run(Duration::from_secs(1));
    assert_eq!(net.members(1), vec![1, 2, 3]);
    net.propose(1, 1).expect("1 is primary");
    net.run(Duration::from_millis(300));
    assert!(net.was_released(1));
    // 0 appears on the side of 1 only, cut off from 2 and 3.
    net.partition(&[0, 1], &[2, 3]);
    net.run(Duration::from_secs(6));
    let primaries: Vec<(u32, u64)> = net
        .primaries()
        .into_iter()
        .filter_map(|p| net.nodes[p as usize].homes.get(&KEY).map(|h| (p, h.term())))
        .collect();
    let terms: BTreeSet<u64> = primaries.iter().map(|(_, t)| *t).collect();
    assert_eq!(
        terms.len(),
        primaries.len(),
        "two primaries of one term: {primaries:?}"
    );
    // Healed, one primary serves, with what the majority committed.
    let majority = primaries
        .iter()
        .find(|(p, _)| [2, 3].contains(p))
        .map(|(p, _)| *p);
    if let Some(p) = majority {
        net.propose(p, 2).expect("primary");
        net.run(Duration::from_millis(300));
        assert!(net.was_released(2));
    }
    net.heal();
    net.run(Duration::from_secs(6));
    let primaries = net.primaries();
    assert_eq!(primaries.len(), 1, "one primary after healing");
    net.propose(primaries[0], 3).expect("primary");
    net.run(Duration::from_millis(500));
    assert!(net.was_released(3), "the healed home commits");
    let entries = net.entries(primaries[0]);
    assert!(entries.contains(&1));
    assert_eq!(entries.contains(&2), majority.is_some());
    net.assert_one_primary_per_term();
}

/// Two homes of one key at term 1 (a creation that arrived late, at a
/// peer that held no record): the populated one, with committed values,
/// and an empty one on the closest peer. When they meet, the empty one
/// gives way, and no backup of the populated one takes the empty one's
/// snapshot: what was committed stays.
#[test]
fn an_empty_home_of_the_same_term_never_replaces_a_populated_one() {
    let mut net = Net::new(5, 17);
    // Peer 0, the closest, is away: 1, 2, 3 form the home.
    net.view(&[&[1, 2, 3, 4], &[0]]);
    net.create(1, 3);
    net.run(Duration::from_secs(1));
    assert_eq!(net.members(1), vec![1, 2, 3]);
    for v in 1..=5 {
        net.propose(1, v).expect("1 is primary");
    }
    net.run(Duration::from_millis(300));
    assert!((1..=5).all(|v| net.was_released(v)));
    // 0 makes a second home of the key, alone, at term 1.
    net.create(0, 3);
    net.heal();
    net.run(Duration::from_secs(6));
    let primaries = net.primaries();
    assert_eq!(primaries.len(), 1, "one primary: {primaries:?}");
    let p = primaries[0];
    assert_eq!(net.entries(p), vec![1, 2, 3, 4, 5], "primary {p}");
    net.propose(p, 6).expect("primary");
    net.run(Duration::from_millis(500));
    assert!(net.was_released(6), "the home still commits");
    for m in net.members(p) {
        assert_eq!(net.entries(m), vec![1, 2, 3, 4, 5, 6], "member {m}");
    }
}

/// A peer back from a pause suspects the peers it has not heard from yet.
/// A late creation it then handles must still ask them: a would-be home of
/// only the peers it sees (here none of the existing home's members)
/// would promise it a second home of the key beside the first.
#[test]
fn a_creator_that_suspects_the_home_members_still_asks_them() {
    let mut net = Net::new(5, 31);
    // Peer 0 is paused: the others found the home without it.
    net.view(&[&[1, 2, 3, 4]]);
    net.nodes[0].paused = true;
    net.create(1, 3);
    net.run(Duration::from_secs(1));
    assert_eq!(net.members(1), vec![1, 2, 3]);
    // Back, it sees only peer 4 yet and suspects the rest.
    net.nodes[0].paused = false;
    let now = net.now;
    let homes = net.node(0);
    homes.set_members(now, [4]);
    for p in [1, 2, 3] {
        homes.set_suspected(p, true);
    }
    homes.found(now, KEY, 3);
    net.drain(0);
    net.run(Duration::from_secs(2));
    assert!(
        net.founded.iter().all(|(p, f)| *p != 0 || f.is_err()),
        "{:?}",
        net.founded
    );
    assert_eq!(net.primaries(), vec![1]);
}

/// Creation as an election for term 1: the members of an existing home
/// refuse a late creator and name their primary; a fresh key is promised
/// by a majority of its would-be home; of two creators at once, the one
/// that a majority promised first goes on, the other is sent to it.
#[test]
fn a_creation_needs_the_promise_of_a_majority_of_the_would_be_home() {
    let mut net = Net::settled(5, 3, 23);
    // Peer 3 holds no record of the home on 0, 1, 2: it may not make one.
    let now = net.now;
    net.node(3).found(now, KEY, 3);
    net.drain(3);
    net.run(Duration::from_millis(100));
    assert_eq!(net.founded, vec![(3, Err(Some(0)))]);
    assert!(net.node(3).get(&KEY).is_none());
    // A fresh key: promised by 0, 1, 2 (3 itself is not in its home).
    net.founded.clear();
    let fresh = KEY + 1;
    net.node(3).found(now, fresh, 3);
    net.drain(3);
    net.run(Duration::from_millis(100));
    assert_eq!(net.founded, vec![(3, Ok(()))]);
    // Another creator of it now is refused, sent to the first one.
    net.founded.clear();
    let now = net.now;
    net.node(4).found(now, fresh, 3);
    net.drain(4);
    net.run(Duration::from_millis(100));
    assert_eq!(net.founded, vec![(4, Err(Some(3)))]);
}

/// A creator cut off right after its election founds its home with the
/// would-be home as members, so it commits nothing alone; once the
/// promises to it lapse, a creator on the other side founds the home, and
/// back, the first creator's replicas are refused by the peers that
/// promised the second: it steps down, and only the second home ever
/// released anything.
#[test]
fn a_creator_cut_off_after_its_election_commits_nothing_beside_a_later_one() {
    let mut net = Net::new(5, 37);
    net.view_all();
    let now = net.now;
    net.node(0).found(now, KEY, 3);
    net.drain(0);
    net.run(Duration::from_millis(100));
    assert_eq!(net.founded, vec![(0, Ok(()))]);
    net.partition(&[0], &[1, 2, 3, 4]);
    net.create(0, 3);
    assert_eq!(net.members(0), vec![0, 1, 2]);
    assert!(net.propose(0, 1).is_ok());
    net.run(Duration::from_secs(1));
    assert!(net.released.is_empty(), "{:?}", net.released);
    // The promises lapse; peer 1 (now the closest it sees) founds again.
    net.run(Duration::from_secs(5));
    net.founded.clear();
    let now = net.now;
    net.node(1).found(now, KEY, 3);
    net.drain(1);
    net.run(Duration::from_secs(2));
    assert_eq!(net.founded, vec![(1, Ok(()))]);
    net.create(1, 3);
    assert!(net.propose(1, 2).is_ok());
    net.run(Duration::from_secs(1));
    assert_eq!(net.released, vec![(1, 2)]);
    net.heal();
    net.run(Duration::from_secs(3));
    assert!(net.stepped_down.contains(&0), "{:?}", net.stepped_down);
    assert_eq!(net.released, vec![(1, 2)]);
    assert_eq!(net.entries(1), vec![2]);
    assert!(
        net.primaries().iter().all(|p| net.entries(*p) == vec![2]),
        "{:?}",
        net.primaries()
    );
}

/// Two creators on either side of a partition have each declared the other
/// side dead. Peers declared dead a moment ago still vote, so only the side
/// holding a majority of the would-be home founds it; once they have been
/// dead longer than `founding_memory`, they no longer hold creations up.
#[test]
fn creators_on_both_sides_of_a_partition_found_one_home() {
    let mut net = Net::new(5, 41);
    net.view_all();
    net.partition(&[0, 1], &[2, 3, 4]);
    let now = net.now;
    let sides: [(&[u32], &[u32]); 2] = [(&[0, 1], &[2, 3, 4]), (&[2, 3, 4], &[0, 1])];
    for (side, other) in sides {
        for &p in side {
            for &q in other {
                net.node(p).set_lost(q, Some(now));
            }
        }
    }
    for creator in [2, 0] {
        net.node(creator).found(now, KEY, 3);
        net.drain(creator);
    }
    net.run(Duration::from_secs(2));
    let founded: Vec<u32> = net
        .founded
        .iter()
        .filter(|(_, outcome)| outcome.is_ok())
        .map(|(p, _)| *p)
        .collect();
    assert_eq!(founded, vec![0], "{:?}", net.founded);
    // Peers 0 and 1 stay gone: past the memory, the rest found without them.
    net.founded.clear();
    net.nodes[0].up = false;
    net.nodes[1].up = false;
    net.run(HomeConfig::default().founding_memory);
    let fresh = KEY + 1;
    let now = net.now;
    net.node(2).found(now, fresh, 3);
    net.drain(2);
    net.run(Duration::from_secs(2));
    assert_eq!(net.founded, vec![(2, Ok(()))]);
}

/// A peer that promised a creator which never made its home (it crashed
/// after its election), and was cut off while another creator founded the
/// home without it, joins that home once back: the home has committed, so
/// it is no second home beside the one promised.
#[test]
fn a_peer_that_promised_a_vanished_creator_joins_the_home_founded_since() {
    let mut net = Net::new(5, 43);
    net.view_all();
    let now = net.now;
    net.node(0).found(now, KEY, 3);
    net.drain(0);
    net.run(Duration::from_millis(100));
    assert_eq!(net.founded, vec![(0, Ok(()))]);
    // Peer 0 crashes before it makes the home; peer 1 is cut off.
    net.nodes[0].up = false;
    net.partition(&[1], &[2, 3, 4]);
    let now = net.now;
    for p in [2, 3, 4] {
        net.node(p).set_lost(0, Some(now));
        net.node(p).set_lost(1, Some(now));
    }
    net.run(HomeConfig::default().founding_memory);
    net.founded.clear();
    let now = net.now;
    net.node(2).found(now, KEY, 3);
    net.drain(2);
    net.run(Duration::from_secs(2));
    assert_eq!(net.founded, vec![(2, Ok(()))]);
    net.create(2, 3);
    assert!(net.propose(2, 7).is_ok());
    net.run(Duration::from_secs(1));
    assert_eq!(net.released, vec![(2, 7)]);
    // Back, peer 1 is among the three closest live peers again.
    net.heal();
    net.run(Duration::from_secs(3));
    assert_eq!(net.primaries(), vec![1]);
    assert_eq!(net.entries(1), vec![7]);
}

/// Two of a home's three members, its primary among them, restart without
/// their copies before anyone declared them dead. A volatile home (a mesh
/// cell's record) elects the member left, which hands the state to the
/// restarted ones again (and the role to the closest); any other home
/// keeps waiting, since the member left is no majority of those that held
/// it.
#[test]
fn a_volatile_home_whose_members_restarted_elects_the_one_left() {
    for volatile in [true, false] {
        let mut net = Net::new(3, 5);
        net.view_all();
        net.create(0, 3);
        net.run(Duration::from_secs(1));
        assert_eq!(net.members(0), vec![0, 1, 2]);
        let first = if volatile { VOLATILE } else { 1 };
        net.propose(0, first).expect("0 is primary");
        net.propose(0, 2).expect("0 is primary");
        net.run(Duration::from_millis(500));
        assert_eq!(net.entries(2), vec![first, 2]);
        net.restart(0, 11);
        net.restart(1, 12);
        net.view_all();
        net.run(Duration::from_secs(10));
        if volatile {
            assert_eq!(net.primaries().len(), 1, "{:?}", net.primaries());
            for id in 0..3 {
                assert_eq!(net.entries(id), vec![first, 2], "member {id}");
            }
        } else {
            assert_eq!(net.primaries(), Vec::<u32>::new());
            assert_eq!(net.entries(0), Vec::<u64>::new());
        }
    }
}
