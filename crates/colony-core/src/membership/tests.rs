//! Membership driven in virtual time over a simulated network.

use super::*;
use rand::Rng;
use std::cmp::Reverse;
use std::collections::BinaryHeap;

const LATENCY: Duration = Duration::from_millis(1);

/// A message on the virtual wire: (deliver_at, order, from, to, msg).
type InFlight = Reverse<(Instant, u64, u32, u32, Wrapped)>;

/// N membership cores on a virtual network with latency, loss, crashes and pauses.
struct Net {
    now: Instant,
    start: Instant,
    cores: BTreeMap<u32, Membership<u32>>,
    in_flight: BinaryHeap<InFlight>,
    order: u64,
    crashed: BTreeSet<u32>,
    paused: BTreeSet<u32>,
    held: Vec<(u32, u32, MembershipMsg<u32>)>,
    /// Side of each peer while the network is partitioned: messages between
    /// peers on different sides are lost. Empty when the network is whole.
    sides: BTreeMap<u32, u8>,
    loss: f64,
    seed: u64,
    rng: SmallRng,
    events: Vec<(Instant, u32, Event<u32>)>,
    /// Records sent in view synchronisations (`Sync` and `Delta`), and
    /// digests sent.
    sync_records: u64,
    digests: u64,
    /// Whole-view synchronisations (`Sync`) sent.
    syncs: u64,
}

/// BinaryHeap needs Ord; messages are compared by their position only.
#[derive(Clone, Debug)]
struct Wrapped(MembershipMsg<u32>);
impl PartialEq for Wrapped {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}
impl Eq for Wrapped {}
impl PartialOrd for Wrapped {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Wrapped {
    fn cmp(&self, _: &Self) -> std::cmp::Ordering {
        std::cmp::Ordering::Equal
    }
}

impl Net {
    fn new(n: u32, seed: u64) -> Net {
        let start = Instant::now();
        let mut net = Net {
            now: start,
            start,
            cores: BTreeMap::new(),
            in_flight: BinaryHeap::new(),
            order: 0,
            crashed: BTreeSet::new(),
            paused: BTreeSet::new(),
            held: Vec::new(),
            sides: BTreeMap::new(),
            loss: 0.0,
            seed,
            rng: SmallRng::seed_from_u64(seed),
            events: Vec::new(),
            sync_records: 0,
            digests: 0,
            syncs: 0,
        };
        for id in 0..n {
            net.start_peer(id, 1);
        }
        for id in 1..n {
            net.contact(id, 0);
        }
        net
    }

    fn start_peer(&mut self, id: u32, incarnation: u64) {
        let core = Membership::new(
            id,
            incarnation,
            vec![format!("/memory/{id}")],
            PeerStats::default(),
            MembershipConfig::default(),
            self.seed.wrapping_mul(1_000_003) + u64::from(id) * 7919 + incarnation,
            self.now,
        );
        self.cores.insert(id, core);
        self.crashed.remove(&id);
    }

    fn contact(&mut self, id: u32, peer: u32) {
        let now = self.now;
        if let Some(core) = self.cores.get_mut(&id) {
            core.handle(now, Input::Contact { peer });
        }
        self.drain(id);
    }

    fn drain(&mut self, id: u32) {
        let Some(core) = self.cores.get_mut(&id) else {
            return;
        };
        let mut sends = Vec::new();
        while let Some(out) = core.poll() {
            match out {
                Output::Send { to, msg } => sends.push((to, msg)),
                Output::Event(e) => self.events.push((self.now, id, e)),
                Output::PersistIncarnation(_) | Output::ForgeryRefuted { .. } => {}
            }
        }
        for (to, msg) in sends {
            match &msg {
                MembershipMsg::Sync { view, .. } => {
                    self.syncs += 1;
                    self.sync_records += view.len() as u64;
                }
                MembershipMsg::Delta { records, .. } => self.sync_records += records.len() as u64,
                MembershipMsg::Digest { .. } => self.digests += 1,
                _ => {}
            }
            if self.rng.random_bool(self.loss) {
                continue;
            }
            self.order += 1;
            self.in_flight.push(Reverse((
                self.now + LATENCY,
                self.order,
                id,
                to,
                Wrapped(msg),
            )));
        }
    }

    fn running(&self, id: u32) -> bool {
        !self.crashed.contains(&id) && !self.paused.contains(&id)
    }

    /// Advances virtual time to `until`, delivering messages and firing timers in order.
    fn run_until(&mut self, until: Instant) {
        loop {
            let next_msg = self.in_flight.peek().map(|Reverse(m)| m.0);
            let next_timer = self
                .cores
                .iter()
                .filter(|(id, _)| self.running(**id))
                .map(|(_, c)| c.poll_timeout())
                .min();
            let next = match (next_msg, next_timer) {
                (Some(a), Some(b)) => a.min(b),
                (Some(a), None) => a,
                (None, Some(b)) => b,
                (None, None) => until,
            };
            if next > until {
                self.now = until;
                return;
            }
            self.now = next;
            if next_msg == Some(next) {
                let Some(Reverse((_, _, from, to, Wrapped(msg)))) = self.in_flight.pop() else {
                    unreachable!()
                };
                if self.crashed.contains(&to) || self.crashed.contains(&from) || self.cut(from, to)
                {
                    continue;
                }
                if self.paused.contains(&to) {
                    self.held.push((from, to, msg));
                    continue;
                }
                let now = self.now;
                if let Some(core) = self.cores.get_mut(&to) {
                    core.handle(now, Input::Message { from, msg });
                }
                self.drain(to);
            } else {
                let due: Vec<u32> = self
                    .cores
                    .iter()
                    .filter(|(id, c)| self.running(**id) && c.poll_timeout() <= next)
                    .map(|(id, _)| *id)
                    .collect();
                for id in due {
                    let now = self.now;
                    if let Some(core) = self.cores.get_mut(&id) {
                        core.handle_timeout(now);
                    }
                    self.drain(id);
                }
            }
        }
    }

    fn run_for(&mut self, d: Duration) {
        let until = self.now + d;
        self.run_until(until);
    }

    fn resume(&mut self, id: u32) {
        self.paused.remove(&id);
        let held: Vec<_> = std::mem::take(&mut self.held);
        for (from, to, msg) in held {
            self.order += 1;
            self.in_flight
                .push(Reverse((self.now, self.order, from, to, Wrapped(msg))));
        }
    }

    /// Splits the network: each group can only talk within itself.
    fn partition(&mut self, groups: &[&[u32]]) {
        self.sides.clear();
        for (side, group) in groups.iter().enumerate() {
            for id in group.iter() {
                self.sides.insert(*id, side as u8);
            }
        }
    }

    /// Makes the network whole again.
    fn heal(&mut self) {
        self.sides.clear();
    }

    /// Whether the partition separates `a` from `b`.
    fn cut(&self, a: u32, b: u32) -> bool {
        match (self.sides.get(&a), self.sides.get(&b)) {
            (Some(x), Some(y)) => x != y,
            _ => false,
        }
    }

    fn state(&self, observer: u32, peer: u32) -> Option<MemberState> {
        self.cores[&observer].state_of(&peer)
    }

    fn all_see_alive(&self, ids: &[u32]) -> bool {
        ids.iter().all(|a| {
            ids.iter()
                .all(|b| a == b || self.state(*a, *b) == Some(MemberState::Alive))
        })
    }

    /// Time from `since` until `observer` saw `peer` become `state`, if it did.
    fn first_event(
        &self,
        observer: u32,
        peer: u32,
        state: MemberState,
        since: Instant,
    ) -> Option<Duration> {
        self.events
            .iter()
            .find(|(at, o, e)| *at >= since && *o == observer && e.peer == peer && e.to == state)
            .map(|(at, _, _)| *at - since)
    }
}

#[test]
fn ten_peers_converge_within_a_second_of_virtual_time() {
    let mut net = Net::new(10, 1);
    let ids: Vec<u32> = (0..10).collect();
    net.run_for(Duration::from_secs(1));
    assert!(net.all_see_alive(&ids));
    assert_eq!(net.cores[&3].view(net.now).len(), 9);
    let _ = net.start;
}

#[test]
fn crashed_peer_is_declared_dead_by_every_survivor_within_two_seconds() {
    for seed in 0..5 {
        let mut net = Net::new(10, seed);
        net.run_for(Duration::from_secs(3));
        let victim = 4;
        net.crashed.insert(victim);
        let killed_at = net.now;
        net.run_for(Duration::from_secs(4));
        for observer in (0..10).filter(|o| *o != victim) {
            let took = net
                .first_event(observer, victim, MemberState::Dead, killed_at)
                .unwrap_or_else(|| panic!("seed {seed}: {observer} never declared {victim} dead"));
            assert!(
                took <= Duration::from_millis(2000),
                "seed {seed}: took {took:?}"
            );
        }
    }
}

/// A first contact that fails (a newcomer whose listener or addresses are
/// not ready yet) does not make it suspect: on a job's start, that cost a
/// worker's unit, reissued from its checkpoint and computed twice.
#[test]
fn a_newcomer_unreachable_at_first_contact_is_left_to_the_detector() {
    let mut net = Net::new(4, 13);
    net.run_for(Duration::from_secs(2));
    net.start_peer(4, 1);
    net.contact(4, 0);
    net.run_for(Duration::from_millis(300));
    assert_eq!(net.state(1, 4), Some(MemberState::Alive));
    let hinted_at = net.now;
    net.cores
        .get_mut(&1)
        .unwrap()
        .handle(hinted_at, Input::Unreachable { peer: 4 });
    net.drain(1);
    net.run_for(Duration::from_secs(2));
    for observer in 0..4 {
        assert_eq!(
            net.first_event(observer, 4, MemberState::Suspect, hinted_at),
            None,
            "{observer}"
        );
    }
    // Once it has been a member a while, the hint counts at once.
    let now = net.now;
    net.cores
        .get_mut(&1)
        .unwrap()
        .handle(now, Input::Unreachable { peer: 4 });
    assert_eq!(
        net.cores[&1].record_of(&4).map(|r| r.state),
        Some(MemberState::Suspect)
    );
}

#[test]
fn unreachable_hint_speeds_up_detection() {
    let mut net = Net::new(5, 9);
    net.run_for(Duration::from_secs(2));
    net.crashed.insert(2);
    let killed_at = net.now;
    let now = net.now;
    net.cores
        .get_mut(&1)
        .unwrap()
        .handle(now, Input::Unreachable { peer: 2 });
    net.drain(1);
    net.run_for(Duration::from_secs(3));
    let took = net.first_event(0, 2, MemberState::Dead, killed_at).unwrap();
    assert!(took <= Duration::from_millis(1300), "took {took:?}");
}

#[test]
fn short_pause_is_not_declared_dead_and_long_pause_is() {
    let mut net = Net::new(8, 3);
    net.run_for(Duration::from_secs(2));
    net.paused.insert(5);
    let paused_at = net.now;
    net.run_for(Duration::from_millis(900));
    net.resume(5);
    net.run_for(Duration::from_secs(4));
    for observer in (0..8).filter(|o| *o != 5) {
        assert_eq!(
            net.first_event(observer, 5, MemberState::Dead, paused_at),
            None
        );
        assert_eq!(net.state(observer, 5), Some(MemberState::Alive));
    }

    net.paused.insert(5);
    let paused_at = net.now;
    net.run_for(Duration::from_secs(3));
    for observer in (0..8).filter(|o| *o != 5) {
        let took = net
            .first_event(observer, 5, MemberState::Dead, paused_at)
            .unwrap();
        assert!(took <= Duration::from_millis(2500), "took {took:?}");
    }
    // Resumed after being declared dead: it refutes and is alive again.
    net.resume(5);
    net.run_for(Duration::from_secs(3));
    let ids: Vec<u32> = (0..8).collect();
    assert!(net.all_see_alive(&ids));
}

#[test]
fn restarted_peer_with_higher_incarnation_rejoins() {
    let mut net = Net::new(6, 4);
    net.run_for(Duration::from_secs(2));
    net.crashed.insert(3);
    net.run_for(Duration::from_secs(4));
    assert_eq!(net.state(0, 3), Some(MemberState::Dead));
    net.start_peer(3, 2);
    net.contact(3, 0);
    net.run_for(Duration::from_secs(2));
    let ids: Vec<u32> = (0..6).collect();
    assert!(net.all_see_alive(&ids));
}

#[test]
fn restarted_peer_with_stale_incarnation_still_rejoins() {
    let mut net = Net::new(4, 5);
    net.run_for(Duration::from_secs(2));
    net.crashed.insert(1);
    net.run_for(Duration::from_secs(4));
    // Restart without having persisted anything: same incarnation as before.
    net.start_peer(1, 1);
    net.contact(1, 0);
    net.run_for(Duration::from_secs(3));
    let ids: Vec<u32> = (0..4).collect();
    assert!(net.all_see_alive(&ids));
}

#[test]
fn ten_percent_loss_causes_no_false_deaths() {
    let mut net = Net::new(10, 6);
    net.run_for(Duration::from_secs(2));
    net.loss = 0.10;
    let from = net.now;
    net.run_for(Duration::from_secs(60));
    let deaths = net
        .events
        .iter()
        .filter(|(at, _, e)| *at >= from && e.to == MemberState::Dead)
        .count();
    assert_eq!(deaths, 0);
}

#[test]
fn graceful_leave_is_seen_at_once() {
    let mut net = Net::new(5, 7);
    net.run_for(Duration::from_secs(2));
    let now = net.now;
    net.cores.get_mut(&2).unwrap().handle(now, Input::Leave);
    net.drain(2);
    let left_at = net.now;
    net.run_for(Duration::from_millis(50));
    for observer in [0, 1, 3, 4] {
        assert!(net
            .first_event(observer, 2, MemberState::Left, left_at)
            .is_some());
    }
}

#[test]
fn statistics_propagate_through_sync() {
    let mut net = Net::new(4, 8);
    net.run_for(Duration::from_secs(1));
    let now = net.now;
    let stats = PeerStats {
        cores: 64,
        ..PeerStats::default()
    };
    net.cores
        .get_mut(&3)
        .unwrap()
        .handle(now, Input::SetStats(stats));
    net.run_for(Duration::from_secs(3));
    for observer in 0..3 {
        let view = net.cores[&observer].view(net.now);
        let rec = view.iter().find(|m| m.record.peer == 3).unwrap();
        assert_eq!(rec.record.stats.cores, 64);
    }
}

#[test]
fn forged_sender_is_ignored() {
    let mut net = Net::new(3, 10);
    net.run_for(Duration::from_secs(1));
    let now = net.now;
    let forged = MemberRecord {
        peer: 2,
        state: MemberState::Left,
        incarnation: 99,
        version: 0,
        addrs: vec![],
        stats: PeerStats::default(),
        draining: false,
    };
    net.cores.get_mut(&0).unwrap().handle(
        now,
        Input::Message {
            from: 1,
            msg: MembershipMsg::Gossip {
                sender: forged,
                updates: vec![],
            },
        },
    );
    assert_eq!(net.state(0, 2), Some(MemberState::Alive));
}

/// A hostile member gossips that peer 2 is draining, at 2's incarnation
/// and a version above 2's own: whoever believed it would drop 2 from
/// every home it belongs to. Peer 2 hears the forgery and rises above it,
/// so every peer ends seeing it as it is.
#[test]
fn a_forged_record_about_a_live_peer_is_refuted_by_that_peer() {
    let mut net = Net::new(5, 12);
    net.run_for(Duration::from_secs(2));
    let real = net.cores[&2].local().clone();
    let forged = MemberRecord {
        draining: true,
        version: real.version + 5,
        addrs: vec!["/memory/attacker".into()],
        ..real.clone()
    };
    let now = net.now;
    let sender = net.cores[&1].local().clone();
    net.cores.get_mut(&0).unwrap().handle(
        now,
        Input::Message {
            from: 1,
            msg: MembershipMsg::Gossip {
                sender,
                updates: vec![forged],
            },
        },
    );
    net.drain(0);
    assert!(
        net.cores[&0].record_of(&2).unwrap().draining,
        "the forgery is believed at first"
    );
    net.run_for(Duration::from_secs(3));
    let refuted = net.cores[&2].local().clone();
    assert!(refuted.incarnation > real.incarnation, "{refuted:?}");
    for observer in [0, 1, 3, 4] {
        let seen = net.cores[&observer].record_of(&2).unwrap();
        assert!(!seen.draining, "{observer} sees {seen:?}");
        assert_eq!(seen.addrs, real.addrs, "{observer}");
        assert_eq!(seen.state, MemberState::Alive, "{observer}");
    }
}

#[test]
fn defaults_hold_for_three_hundred_peers() {
    let mut net = Net::new(300, 11);
    let ids: Vec<u32> = (0..300).collect();
    let start = net.now;
    let mut converged = None;
    for _ in 0..100 {
        net.run_for(Duration::from_millis(100));
        if net.all_see_alive(&ids) {
            converged = Some(net.now - start);
            break;
        }
    }
    let converged = converged.expect("300 peers converge within 10 s");
    assert!(converged <= Duration::from_secs(5), "took {converged:?}");
    net.run_for(Duration::from_secs(2));
    let victim = 123;
    net.crashed.insert(victim);
    let killed_at = net.now;
    net.run_for(Duration::from_secs(5));
    let mut worst = Duration::ZERO;
    for observer in ids.iter().copied().filter(|o| *o != victim) {
        let took = net
            .first_event(observer, victim, MemberState::Dead, killed_at)
            .unwrap_or_else(|| panic!("{observer} never declared {victim} dead"));
        worst = worst.max(took);
    }
    assert!(
        worst <= Duration::from_millis(2500),
        "slowest survivor took {worst:?}"
    );
    let false_deaths = net
        .events
        .iter()
        .filter(|(_, _, e)| e.to == MemberState::Dead && e.peer != victim)
        .count();
    assert_eq!(false_deaths, 0);
}

/// Once views agree, synchronisation costs a digest per peer and second and
/// no records: it used to send each peer's whole view every second, O(n²)
/// records a second over the network.
#[test]
fn agreeing_views_exchange_digests_only() {
    let n = 60;
    let mut net = Net::new(n, 12);
    let ids: Vec<u32> = (0..n).collect();
    assert!(
        time_to_all_alive(&mut net, &ids, Duration::from_secs(5)).is_some(),
        "{n} peers converge"
    );
    net.run_for(Duration::from_secs(2));
    net.sync_records = 0;
    net.digests = 0;
    net.run_for(Duration::from_secs(5));
    assert!(net.all_see_alive(&ids));
    assert!(
        net.digests >= u64::from(n) * 3,
        "every peer sends a digest every second ({} sent)",
        net.digests
    );
    assert_eq!(net.sync_records, 0, "no records sent while views agree");
}

/// A difference gossip did not carry (here, a statistics refresh, which is
/// not gossiped) is found by digest and repaired by exchanging just the
/// buckets that differ.
#[test]
fn a_digest_repairs_only_the_differing_buckets() {
    let n = 60;
    let mut net = Net::new(n, 13);
    let ids: Vec<u32> = (0..n).collect();
    assert!(time_to_all_alive(&mut net, &ids, Duration::from_secs(5)).is_some());
    net.run_for(Duration::from_secs(2));
    let now = net.now;
    let stats = PeerStats {
        cores: 64,
        ..PeerStats::default()
    };
    net.cores
        .get_mut(&7)
        .unwrap()
        .handle(now, Input::SetStats(stats));
    net.sync_records = 0;
    net.run_for(Duration::from_secs(8));
    for observer in ids.iter().filter(|o| **o != 7) {
        let record = net.cores[observer].record_of(&7).unwrap();
        assert_eq!(
            record.stats.cores, 64,
            "peer {observer} has the new statistics"
        );
    }
    // Each peer's repair carries the changed bucket's records (about
    // n / SYNC_BUCKETS of them, both ways), not whole views.
    let whole_views = u64::from(n) * u64::from(n);
    assert!(
        net.sync_records < whole_views / 4,
        "{} records sent to repair one difference",
        net.sync_records
    );
}

/// Changes to `state` seen after `since`: (when, observer, peer).
fn changes_to(net: &Net, state: MemberState, since: Instant) -> Vec<(Duration, u32, u32)> {
    net.events
        .iter()
        .filter(|(at, _, e)| *at > since && e.to == state)
        .map(|(at, o, e)| (*at - since, *o, e.peer))
        .collect()
}

/// Runs until every peer of `ids` sees every other alive; returns how long
/// that took, or `None` if not within `within`.
fn time_to_all_alive(net: &mut Net, ids: &[u32], within: Duration) -> Option<Duration> {
    let from = net.now;
    while net.now - from < within {
        net.run_for(Duration::from_millis(10));
        if net.all_see_alive(ids) {
            return Some(net.now - from);
        }
    }
    None
}

/// Cuts `small` off from the rest of six converged peers for `cut_for`
/// and then until both sides have declared the other dead (at most 10 s
/// more), heals, and returns the time until all six see all six alive.
fn partition_then_heal(seed: u64, small: &[u32], cut_for: Duration) -> (Net, Duration) {
    let mut net = Net::new(6, seed);
    let ids: Vec<u32> = (0..6).collect();
    net.run_for(Duration::from_secs(2));
    assert!(net.all_see_alive(&ids), "seed {seed}: converged first");

    let large: Vec<u32> = ids.iter().copied().filter(|i| !small.contains(i)).collect();
    let large = large.as_slice();
    net.partition(&[small, large]);
    let cut_at = net.now;
    net.run_for(cut_for);
    let split = |net: &Net| {
        small.iter().all(|a| {
            large.iter().all(|b| {
                net.state(*a, *b) == Some(MemberState::Dead)
                    && net.state(*b, *a) == Some(MemberState::Dead)
            })
        })
    };
    while !split(&net) {
        assert!(
            net.now - cut_at < cut_for + Duration::from_secs(10),
            "seed {seed}: the sides never declared each other dead"
        );
        net.run_for(Duration::from_millis(10));
    }
    assert!(net.all_see_alive(small) && net.all_see_alive(large));

    net.heal();
    let healed_at = net.now;
    let took = time_to_all_alive(&mut net, &ids, Duration::from_secs(10)).unwrap_or_else(|| {
        panic!(
            "seed {seed}: not healed within 10 s; deaths since: {:?}",
            changes_to(&net, MemberState::Dead, healed_at)
        )
    });
    // Merging the two views declares nobody dead: peers on the same side
    // never lost touch, and the others were dead already.
    assert_eq!(
        changes_to(&net, MemberState::Dead, healed_at),
        vec![],
        "seed {seed}, {small:?} cut off: deaths while healing"
    );
    (net, took)
}

#[test]
fn partition_is_detected_on_both_sides_and_heals_without_flapping() {
    let mut times = Vec::new();
    for seed in 0..20 {
        let (mut net, took) = partition_then_heal(seed, &[1, 4], Duration::from_secs(5));
        times.push(took);
        // Steady afterwards: nobody suspected or declared dead again.
        let settled_at = net.now;
        net.run_for(Duration::from_secs(30));
        let ids: Vec<u32> = (0..6).collect();
        assert!(net.all_see_alive(&ids), "seed {seed}");
        for state in [MemberState::Suspect, MemberState::Dead] {
            assert_eq!(
                changes_to(&net, state, settled_at),
                vec![],
                "seed {seed}: flapping to {state:?} after healing"
            );
        }
    }
    times.sort();
    eprintln!(
        "figure: 2|4 partition healed in median {:?}, max {:?} (virtual time, 20 seeds)",
        times[times.len() / 2],
        times[times.len() - 1]
    );
}

#[test]
fn healing_right_after_detection_kills_nobody() {
    // Verdicts still being spread when the link comes back — queued on a
    // peer that had nobody left to tell, or not yet repeated enough times —
    // reach members who never lost touch with their subject: they must
    // only make it suspect, so it refutes.
    for seed in 0..50 {
        for small in [&[3][..], &[1, 4], &[0, 1, 2]] {
            partition_then_heal(seed, small, Duration::ZERO);
        }
    }
}

#[test]
fn partition_longer_than_a_few_minutes_still_heals() {
    let (_, took) = partition_then_heal(3, &[1, 4], Duration::from_secs(300));
    assert!(took <= Duration::from_secs(10), "took {took:?}");
}

#[test]
fn crashed_peer_stays_dead_while_a_partition_heals() {
    let mut net = Net::new(6, 21);
    net.run_for(Duration::from_secs(2));
    let (small, large): (&[u32], &[u32]) = (&[1, 4], &[0, 2, 3, 5]);
    net.partition(&[small, large]);
    net.run_for(Duration::from_secs(1));
    // Peer 4 crashes on the small side during the partition.
    net.crashed.insert(4);
    net.run_for(Duration::from_secs(5));
    net.heal();
    let survivors = [0, 1, 2, 3, 5];
    let took = time_to_all_alive(&mut net, &survivors, Duration::from_secs(10));
    assert!(took.is_some(), "survivors heal");
    // Everyone keeps probing it, and nobody can speak for it.
    net.run_for(Duration::from_secs(120));
    for observer in survivors {
        assert_eq!(net.state(observer, 4), Some(MemberState::Dead));
    }
    assert!(net.all_see_alive(&survivors));
    let revived = net
        .events
        .iter()
        .filter(|(_, _, e)| e.peer == 4 && e.from == Some(MemberState::Dead))
        .count();
    assert_eq!(revived, 0, "a crashed peer never comes back alive");
}

#[test]
fn dead_members_kept_are_bounded() {
    let mut net = Net::new(8, 22);
    for core in net.cores.values_mut() {
        core.config.max_dead_members = 2;
    }
    net.run_for(Duration::from_secs(2));
    for victim in [7, 6, 5] {
        net.crashed.insert(victim);
        net.run_for(Duration::from_secs(3));
    }
    let view = net.cores[&0].view(net.now);
    let dead: Vec<u32> = view
        .iter()
        .filter(|m| m.record.state == MemberState::Dead)
        .map(|m| m.record.peer)
        .collect();
    // The longest dead (7) is forgotten first.
    assert_eq!(dead, vec![5, 6]);
}

#[test]
fn two_peers_whose_first_exchange_is_lost_still_find_each_other() {
    let mut net = Net::new(0, 12);
    net.start_peer(0, 1);
    net.start_peer(1, 1);
    // Both first view synchronisations are lost: neither peer knows a member
    // to probe or gossip to, so only a retried contact can join them.
    net.loss = 1.0;
    net.contact(1, 0);
    net.contact(0, 1);
    net.run_for(Duration::from_millis(50));
    net.loss = 0.0;
    let healed = net.now;
    let joined = time_to_all_alive(&mut net, &[0, 1], Duration::from_secs(5));
    assert!(
        joined.is_some(),
        "the peers never saw each other after their first exchange was lost"
    );
    assert!(net.now - healed < Duration::from_secs(1));
}

#[test]
fn an_unanswered_contact_is_retried_a_bounded_number_of_times() {
    let mut net = Net::new(0, 13);
    net.start_peer(0, 1);
    net.start_peer(1, 1);
    net.loss = 1.0;
    net.contact(0, 1);
    net.run_for(Duration::from_secs(600));
    assert_eq!(
        net.syncs,
        u64::from(MembershipConfig::default().contact_attempts),
        "one synchronisation per attempt, then silence"
    );
    assert!(
        net.cores[&0].contacts.is_empty(),
        "the contact was given up"
    );
    assert_eq!(net.state(0, 1), None);
}
