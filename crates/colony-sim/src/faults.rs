//! What can go wrong, and when: the fault kinds a run may use, the network's
//! conditions drawn from the seed, and the schedule of peer and link faults.
//!
//! The schedule keeps the promises the invariants rely on: every fault ends
//! (crashed peers restart, paused ones resume, partitions heal) before the
//! fault window closes; at most `max_down` peers are down (crashed, paused
//! or cut off) at any moment, so the main side always keeps most peers; and
//! at most `protected_limit` of the job's *home zone* — the peers that are
//! or may become members of its home — are down at once, each counted for a
//! grace period after it comes back so replicas can be rebuilt.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use crate::rng::SimRng;

/// The kinds of fault a run may inject.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct FaultKinds {
    /// Frames lost on the wire.
    pub loss: bool,
    /// Frames delivered twice.
    pub duplication: bool,
    /// Latency jitter large enough to reorder frames.
    pub reordering: bool,
    /// A set of peers cut off from the rest for a while, then healed.
    pub partition: bool,
    /// A peer crashes (memory lost, disk kept) and restarts later with a
    /// higher incarnation.
    pub crash: bool,
    /// A peer stops (SIGSTOP) for a while and resumes.
    pub pause: bool,
}

const NAMES: [&str; 6] = ["loss", "dup", "reorder", "partition", "crash", "pause"];

impl FaultKinds {
    /// Every kind.
    pub fn all() -> Self {
        FaultKinds {
            loss: true,
            duplication: true,
            reordering: true,
            partition: true,
            crash: true,
            pause: true,
        }
    }

    /// No faults at all.
    pub fn none() -> Self {
        FaultKinds::default()
    }

    fn flags(&self) -> [bool; 6] {
        [
            self.loss,
            self.duplication,
            self.reordering,
            self.partition,
            self.crash,
            self.pause,
        ]
    }
}

impl fmt::Display for FaultKinds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let flags = self.flags();
        if flags.iter().all(|b| *b) {
            return write!(f, "all");
        }
        if flags.iter().all(|b| !*b) {
            return write!(f, "none");
        }
        let names: Vec<&str> = NAMES
            .iter()
            .zip(flags)
            .filter(|(_, on)| *on)
            .map(|(n, _)| *n)
            .collect();
        write!(f, "{}", names.join(","))
    }
}

impl FromStr for FaultKinds {
    type Err = String;

    /// Parses `all`, `none`, or a comma-separated list of
    /// `loss,dup,reorder,partition,crash,pause`.
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "all" => return Ok(FaultKinds::all()),
            "none" => return Ok(FaultKinds::none()),
            _ => {}
        }
        let mut kinds = FaultKinds::none();
        for name in s.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            match name {
                "loss" => kinds.loss = true,
                "dup" | "duplication" => kinds.duplication = true,
                "reorder" | "reordering" | "jitter" => kinds.reordering = true,
                "partition" => kinds.partition = true,
                "crash" => kinds.crash = true,
                "pause" => kinds.pause = true,
                other => {
                    return Err(format!(
                        "unknown fault kind {other:?}; use all, none or a list of {}",
                        NAMES.join(",")
                    ))
                }
            }
        }
        Ok(kinds)
    }
}

/// The network's conditions for one run, drawn from the seed.
#[derive(Clone, Debug, PartialEq)]
pub struct NetParams {
    /// Latency every frame has.
    pub base_latency: Duration,
    /// Uniform extra latency in `[0, jitter]` per frame; above the spacing
    /// of frames it reorders them.
    pub jitter: Duration,
    /// Probability a frame is lost.
    pub loss: f64,
    /// Probability a frame is delivered twice (the copy with its own latency).
    pub duplication: f64,
}

impl NetParams {
    /// Draws conditions for the enabled kinds.
    pub fn draw(kinds: &FaultKinds, rng: &mut SimRng) -> NetParams {
        let base_latency = Duration::from_micros(rng.range(200, 3_000));
        let jitter = if kinds.reordering {
            Duration::from_micros(rng.range(1_000, 25_000))
        } else {
            Duration::from_micros(rng.range(0, 100))
        };
        let loss = if kinds.loss {
            rng.range(5, 80) as f64 / 1000.0
        } else {
            0.0
        };
        let duplication = if kinds.duplication {
            rng.range(5, 50) as f64 / 1000.0
        } else {
            0.0
        };
        NetParams {
            base_latency,
            jitter,
            loss,
            duplication,
        }
    }
}

/// One fault action at a point of virtual time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FaultAction {
    /// The peer's process dies: memory lost, disk kept.
    Crash {
        /// Who.
        peer: u32,
    },
    /// The crashed peer starts again, with a higher incarnation.
    Restart {
        /// Who.
        peer: u32,
    },
    /// The peer stops (SIGSTOP): frames queue up, timers do not run.
    Pause {
        /// Who.
        peer: u32,
    },
    /// The paused peer continues (SIGCONT).
    Resume {
        /// Who.
        peer: u32,
    },
    /// These peers are cut off from everyone else (they still reach each
    /// other).
    Cut {
        /// Partition number, for the heal.
        id: u32,
        /// The cut-off peers.
        peers: Vec<u32>,
    },
    /// The partition heals.
    Heal {
        /// Partition number.
        id: u32,
    },
}

impl fmt::Display for FaultAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FaultAction::Crash { peer } => write!(f, "crash peer {peer}"),
            FaultAction::Restart { peer } => write!(f, "restart peer {peer}"),
            FaultAction::Pause { peer } => write!(f, "pause peer {peer}"),
            FaultAction::Resume { peer } => write!(f, "resume peer {peer}"),
            FaultAction::Cut { id, peers } => write!(f, "partition {id}: cut off {peers:?}"),
            FaultAction::Heal { id } => write!(f, "partition {id}: heal"),
        }
    }
}

/// A fault action and when it happens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScheduledFault {
    /// Virtual time since the start of the run.
    pub at: Duration,
    /// What happens.
    pub action: FaultAction,
}

/// What the schedule generator must respect.
#[derive(Clone, Debug)]
pub struct ScheduleLimits {
    /// Peers in the run (ids `0..peers`).
    pub peers: u32,
    /// Faults start no earlier than this…
    pub window_start: Duration,
    /// …and have all ended by this.
    pub window_end: Duration,
    /// Most peers down at once.
    pub max_down: usize,
    /// The job's home zone: peers that are, or may become, home members.
    pub protected: Vec<u32>,
    /// Most home-zone peers down at once.
    pub protected_limit: usize,
    /// A home-zone peer counts as down for this long after it is back, so
    /// the home can rebuild its replicas.
    pub protected_grace: Duration,
    /// Peers that must never be faulted (e.g. the one left to query).
    pub spared: Vec<u32>,
    /// A peer whose crash mid-run should be tried first (the submitter).
    pub crash_first: Option<u32>,
}

/// The faults of one run, in time order.
#[derive(Clone, Debug, Default)]
pub struct Schedule {
    /// Every action, sorted by time.
    pub faults: Vec<ScheduledFault>,
}

/// A period during which a peer is down.
#[derive(Clone, Copy, Debug)]
struct Down {
    peer: u32,
    from: Duration,
    /// End of the outage itself.
    to: Duration,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Crash,
    Pause,
    Partition,
}

impl Schedule {
    /// Draws a schedule of the enabled peer and link faults.
    pub fn generate(kinds: &FaultKinds, limits: &ScheduleLimits, rng: &mut SimRng) -> Schedule {
        let mut enabled = Vec::new();
        if kinds.crash {
            enabled.push(Kind::Crash);
        }
        if kinds.pause {
            enabled.push(Kind::Pause);
        }
        if kinds.partition {
            enabled.push(Kind::Partition);
        }
        let mut schedule = Schedule::default();
        if enabled.is_empty() || limits.window_end <= limits.window_start || limits.max_down == 0 {
            return schedule;
        }
        let mut downs = DownIndex::default();
        // The same outages by peer, for the one-fault-at-a-time rule.
        let mut by_peer: BTreeMap<u32, Vec<(Duration, Duration)>> = BTreeMap::new();
        let window_ms = (limits.window_end - limits.window_start).as_millis() as u64;
        let episodes = rng.range(
            u64::from(limits.peers / 4).max(2),
            u64::from(limits.peers).max(3),
        );
        let mut partition_id = 0u32;
        let protected: BTreeSet<u32> = limits.protected.iter().copied().collect();
        let mut first = limits.crash_first.filter(|_| kinds.crash);
        for _ in 0..episodes {
            let kind = if first.is_some() {
                Kind::Crash
            } else {
                *rng.pick(&enabled).unwrap_or(&Kind::Crash)
            };
            let duration_ms = match kind {
                Kind::Crash => rng.range(300, 4_000),
                Kind::Pause => rng.range(100, 3_000),
                Kind::Partition => rng.range(500, 5_000),
            };
            if duration_ms + 50 >= window_ms {
                continue;
            }
            let start_ms = rng.below(window_ms - duration_ms);
            let from = limits.window_start + Duration::from_millis(start_ms);
            let to = from + Duration::from_millis(duration_ms);
            let size = match kind {
                Kind::Partition => rng.range(1, 4) as usize,
                _ => 1,
            };
            let mut candidates: Vec<u32> = (0..limits.peers)
                .filter(|p| !limits.spared.contains(p))
                .collect();
            rng.shuffle(&mut candidates);
            if let Some(p) = first.take() {
                candidates.retain(|c| *c != p);
                candidates.insert(0, p);
            }
            let mut chosen: Vec<u32> = Vec::new();
            // Whether the counts allow one more peer, unprotected / protected:
            // that is all a candidate changes in them, so it is computed
            // once per chosen set rather than once per candidate (with a
            // thousand peers, most candidates of a busy window are refused).
            let mut counts_allow: [Option<bool>; 2] = [None, None];
            for peer in candidates {
                if chosen.len() == size {
                    break;
                }
                if busy(&by_peer, peer, from, to) {
                    continue;
                }
                let guarded = usize::from(protected.contains(&peer));
                let allowed = *counts_allow[guarded].get_or_insert_with(|| {
                    let mut trial = chosen.clone();
                    trial.push(peer);
                    counts_fit(&downs, &trial, from, to, limits, &protected)
                });
                if allowed {
                    chosen.push(peer);
                    counts_allow = [None, None];
                }
            }
            if chosen.is_empty() {
                continue;
            }
            for peer in &chosen {
                downs.insert(
                    Down {
                        peer: *peer,
                        from,
                        to,
                    },
                    &protected,
                    limits.protected_grace,
                );
                by_peer.entry(*peer).or_default().push((from, to));
            }
            match kind {
                Kind::Crash => {
                    let peer = chosen[0];
                    schedule.push(from, FaultAction::Crash { peer });
                    schedule.push(to, FaultAction::Restart { peer });
                }
                Kind::Pause => {
                    let peer = chosen[0];
                    schedule.push(from, FaultAction::Pause { peer });
                    schedule.push(to, FaultAction::Resume { peer });
                }
                Kind::Partition => {
                    partition_id += 1;
                    chosen.sort_unstable();
                    schedule.push(
                        from,
                        FaultAction::Cut {
                            id: partition_id,
                            peers: chosen,
                        },
                    );
                    schedule.push(to, FaultAction::Heal { id: partition_id });
                }
            }
        }
        schedule.faults.sort_by_key(|f| f.at);
        schedule
    }

    /// Adds an action (callers sort afterwards).
    pub fn push(&mut self, at: Duration, action: FaultAction) {
        self.faults.push(ScheduledFault { at, action });
    }

    /// When the last fault ends.
    pub fn last_at(&self) -> Duration {
        self.faults.iter().map(|f| f.at).max().unwrap_or_default()
    }
}

/// Whether `peer` is down (or settling from it) at some point of
/// `[from, to]`: one fault at a time per peer, with a gap so restarts
/// settle.
fn busy(
    by_peer: &BTreeMap<u32, Vec<(Duration, Duration)>>,
    peer: u32,
    from: Duration,
    to: Duration,
) -> bool {
    let settle = Duration::from_millis(500);
    by_peer.get(&peer).is_some_and(|outages| {
        outages
            .iter()
            .any(|(f, t)| *f < to + settle && from < *t + settle)
    })
}

/// The outages drawn so far, as sorted start and end times (ends of
/// home-zone outages counted with their grace), so that how many are down
/// at an instant is two binary searches rather than a scan of them all.
/// With 10,000 peers a schedule holds thousands of outages and a scan per
/// check point made generating it quadratic twice over.
#[derive(Default)]
struct DownIndex {
    froms: Vec<Duration>,
    tos: Vec<Duration>,
    protected_froms: Vec<Duration>,
    protected_tos: Vec<Duration>,
}

impl DownIndex {
    fn insert(&mut self, down: Down, protected: &BTreeSet<u32>, grace: Duration) {
        insert_sorted(&mut self.froms, down.from);
        insert_sorted(&mut self.tos, down.to);
        if protected.contains(&down.peer) {
            insert_sorted(&mut self.protected_froms, down.from);
            insert_sorted(&mut self.protected_tos, down.to + grace);
        }
    }
}

fn insert_sorted(times: &mut Vec<Duration>, t: Duration) {
    let at = times.partition_point(|x| *x <= t);
    times.insert(at, t);
}

/// How many of the sorted `times` are at or before `t`.
fn at_or_before(times: &[Duration], t: Duration) -> usize {
    times.partition_point(|x| *x <= t)
}

/// Whether taking `peers` down over `[from, to]` keeps the limits on how
/// many peers, and how many protected ones, are down at once (each of
/// `peers` already free then, see [`busy`]).
fn counts_fit(
    downs: &DownIndex,
    peers: &[u32],
    from: Duration,
    to: Duration,
    limits: &ScheduleLimits,
    protected: &BTreeSet<u32>,
) -> bool {
    let grace = limits.protected_grace;
    let new_protected = peers.iter().filter(|p| protected.contains(p)).count();
    // Check the counts at every point where they can change: the start of
    // the new outage and the start of every overlapping one. An outage
    // `d` is down at `t` when `d.from <= t < d.to` (plus the grace for
    // home-zone peers): started by `t` and not yet ended, and every one
    // ended by `t` had started by then.
    let first = downs.froms.partition_point(|x| *x < from);
    let last = at_or_before(&downs.froms, to + grace);
    let later = downs.froms[first..last.max(first)].iter().copied();
    for t in std::iter::once(from).chain(later) {
        let down_now = at_or_before(&downs.froms, t).saturating_sub(at_or_before(&downs.tos, t))
            + if t < to { peers.len() } else { 0 };
        if down_now > limits.max_down {
            return false;
        }
        let protected_now = at_or_before(&downs.protected_froms, t)
            .saturating_sub(at_or_before(&downs.protected_tos, t))
            + if t < to + grace { new_protected } else { 0 };
        if protected_now > limits.protected_limit {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The check as it was (a scan of every outage per point): the
    /// reference [`counts_fit`] must agree with.
    /// Whether taking `peers` down over `[from, to]` keeps the limits on how
    /// many peers, and how many protected ones, are down at once (each of
    /// `peers` already free then, see [`busy`]).
    fn counts_fit_by_scan(
        downs: &[Down],
        peers: &[u32],
        from: Duration,
        to: Duration,
        limits: &ScheduleLimits,
        protected: &BTreeSet<u32>,
    ) -> bool {
        let grace = limits.protected_grace;
        // Check the counts at every point where they can change: the start of
        // the new outage and the start of every overlapping one.
        let mut points: Vec<Duration> = vec![from];
        points.extend(
            downs
                .iter()
                .map(|d| d.from)
                .filter(|t| *t >= from && *t <= to + grace),
        );
        for t in points {
            let overlapping = |d: &&Down, extra: Duration| d.from <= t && t < d.to + extra;
            let down_now = downs
                .iter()
                .filter(|d| overlapping(d, Duration::ZERO))
                .count()
                + if t < to { peers.len() } else { 0 };
            if down_now > limits.max_down {
                return false;
            }
            let protected_now = downs
                .iter()
                .filter(|d| protected.contains(&d.peer))
                .filter(|d| overlapping(d, grace))
                .count()
                + if t < to + grace {
                    peers.iter().filter(|p| protected.contains(p)).count()
                } else {
                    0
                };
            if protected_now > limits.protected_limit {
                return false;
            }
        }
        true
    }

    /// The indexed check gives the scan's answer on random outages.
    #[test]
    fn indexed_counts_agree_with_the_scan() {
        let mut rng = SimRng::new(7);
        for round in 0..300 {
            let peers = 40u32;
            let protected: BTreeSet<u32> = (0..6).collect();
            let limits = ScheduleLimits {
                peers,
                window_start: Duration::ZERO,
                window_end: Duration::from_secs(12),
                max_down: 1 + rng.below(8) as usize,
                protected: protected.iter().copied().collect(),
                protected_limit: rng.below(3) as usize,
                protected_grace: Duration::from_millis(rng.range(0, 3_000)),
                spared: Vec::new(),
                crash_first: None,
            };
            let mut list = Vec::new();
            let mut index = DownIndex::default();
            for _ in 0..rng.below(30) {
                let from = Duration::from_millis(rng.below(10_000));
                let down = Down {
                    peer: rng.below(u64::from(peers)) as u32,
                    from,
                    to: from + Duration::from_millis(rng.range(1, 4_000)),
                };
                list.push(down);
                index.insert(down, &protected, limits.protected_grace);
            }
            for _ in 0..20 {
                let from = Duration::from_millis(rng.below(10_000));
                let to = from + Duration::from_millis(rng.range(1, 4_000));
                let trial: Vec<u32> = (0..rng.range(1, 3))
                    .map(|_| rng.below(u64::from(peers)) as u32)
                    .collect();
                assert_eq!(
                    counts_fit(&index, &trial, from, to, &limits, &protected),
                    counts_fit_by_scan(&list, &trial, from, to, &limits, &protected),
                    "round {round}: {trial:?} over {from:?}..{to:?}"
                );
            }
        }
    }

    #[test]
    fn kinds_parse_and_print() {
        assert_eq!("all".parse::<FaultKinds>().unwrap(), FaultKinds::all());
        assert_eq!("none".parse::<FaultKinds>().unwrap(), FaultKinds::none());
        let k: FaultKinds = "crash,loss".parse().unwrap();
        assert!(k.crash && k.loss && !k.pause);
        assert_eq!(k.to_string(), "loss,crash");
        assert!("crash,meteor".parse::<FaultKinds>().is_err());
    }

    #[test]
    fn schedules_respect_the_limits() {
        for seed in 0..200 {
            let mut rng = SimRng::new(seed);
            let limits = ScheduleLimits {
                peers: 20,
                window_start: Duration::from_secs(2),
                window_end: Duration::from_secs(20),
                max_down: 5,
                protected: vec![3, 4, 5, 6],
                protected_limit: 1,
                protected_grace: Duration::from_secs(2),
                spared: vec![0],
                crash_first: Some(7),
            };
            let s = Schedule::generate(&FaultKinds::all(), &limits, &mut rng);
            let mut down: BTreeSet<u32> = BTreeSet::new();
            let mut cuts: std::collections::BTreeMap<u32, Vec<u32>> = Default::default();
            for f in &s.faults {
                assert!(f.at >= limits.window_start && f.at <= limits.window_end);
                match &f.action {
                    FaultAction::Crash { peer } | FaultAction::Pause { peer } => {
                        assert!(down.insert(*peer));
                        assert_ne!(*peer, 0);
                    }
                    FaultAction::Restart { peer } | FaultAction::Resume { peer } => {
                        assert!(down.remove(peer));
                    }
                    FaultAction::Cut { id, peers } => {
                        for p in peers {
                            assert!(down.insert(*p));
                        }
                        cuts.insert(*id, peers.clone());
                    }
                    FaultAction::Heal { id } => {
                        for p in cuts.remove(id).unwrap() {
                            assert!(down.remove(&p));
                        }
                    }
                }
                assert!(down.len() <= limits.max_down);
                assert!(down.iter().filter(|p| limits.protected.contains(p)).count() <= 1);
            }
            assert!(down.is_empty());
        }
    }
}
