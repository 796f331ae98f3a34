//! Membership and failure detection.
//!
//! Every peer keeps a full view of the network: for each member its
//! addresses, state (alive / suspect / dead / left), incarnation, the version
//! of its presence record and its statistics (seed 003 §4.4).
//!
//! - **Monitoring.** The live members are arranged on a ring sorted by peer
//!   id; each peer pings its `monitors` successors every `probe_interval` and
//!   feeds their acknowledgements into a phi-accrual detector. Every peer is
//!   therefore watched by `monitors` others, whatever the network's size. A
//!   hung peer (sockets open, no answers) is caught by phi; a crashed one
//!   faster, through the driver's [`Input::Unreachable`] hint.
//! - **Suspicion** (SWIM). A silent member becomes *suspect* at its current
//!   incarnation; unless it refutes — by announcing itself alive with a higher
//!   incarnation — within `suspicion_timeout`, it is declared *dead*. Only the
//!   member itself raises its incarnation, so a false suspicion always loses.
//!   A peer declares a member dead only when its own suspicion runs out: a
//!   death heard from another peer (piggybacked, gossiped or in a view)
//!   only makes a member it still sees live suspect. memberlist does so for
//!   its push-pull merges; here it holds for all hearsay, because when a
//!   partition heals, stale verdicts against members that never lost touch
//!   with each other travel by gossip as well as in views. It costs about
//!   one gossip round in detection: by the time a monitor's verdict
//!   arrives, most peers are suspecting already, on its gossiped suspicion.
//! - **Dissemination.** Changes are piggybacked on pings and acks and pushed
//!   every `gossip_interval` to `gossip_fanout` random members, each change a
//!   bounded number of times (about `retransmit_mult · log2 n`). A peer
//!   left with no live member drops its pending news about others: stale by
//!   the time anyone hears it again.
//! - **Synchronisation** (JXTA cache synchronisation, seed 003). A peer
//!   exchanges its whole view at once with every new contact, so a newcomer
//!   learns the whole network in one round trip. After that, every
//!   `sync_interval` it sends one random member a digest of its view
//!   ([`SYNC_BUCKETS`] hashes of buckets of members); the two then exchange
//!   only the records of the buckets where their views differ (anti-entropy
//!   by digest, as Cassandra's and Scuttlebutt's gossip do). Views that
//!   agree cost 64 hashes a second instead of the whole view, which made
//!   synchronisation O(n²) per second over a network of n peers.
//! - **Healing** (memberlist / Serf reconnect). After a partition both sides
//!   have declared each other dead, and nothing above reaches a dead member.
//!   So every `dead_probe_interval` (randomised) a peer also sends its
//!   digest to one member it declared dead in the last `dead_retention`.
//!   Once the link is back that member answers (the views differ): each
//!   side learns the other holds it dead and refutes with a higher
//!   incarnation, and the views merge. A peer that really crashed never
//!   answers and stays dead (a restarted one rejoins with a higher
//!   incarnation anyway).

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use rand::rngs::SmallRng;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::phi::{PhiConfig, PhiDetector};
use crate::PeerKey;

/// Tuning of the membership core. Defaults suit 3 to a few hundred peers on
/// a LAN: a crashed peer is declared dead in about 1–2 s.
#[derive(Clone, Debug, PartialEq)]
pub struct MembershipConfig {
    /// How often each peer pings the members it monitors.
    pub probe_interval: Duration,
    /// How many ring successors each peer monitors (and so how many peers
    /// watch each peer).
    pub monitors: usize,
    /// Phi level above which a silent monitored member becomes suspect.
    pub phi_threshold: f64,
    /// Shape of the phi-accrual detectors.
    pub phi: PhiConfig,
    /// How long a suspect has to refute before it is declared dead.
    pub suspicion_timeout: Duration,
    /// How long a member must have been alive here before the driver's
    /// "unreachable" hint makes it suspect at once. A first contact often
    /// fails while the newcomer's addresses spread or its listener starts;
    /// such a failure is left to the failure detector, which suspects a
    /// member that stays silent anyway.
    pub unreachable_grace: Duration,
    /// How often pending changes are pushed to random members.
    pub gossip_interval: Duration,
    /// How many random members each gossip round reaches.
    pub gossip_fanout: usize,
    /// Each change is sent about `retransmit_mult * log2(members + 1)` times.
    pub retransmit_mult: u32,
    /// Most changes piggybacked on a single message.
    pub max_piggyback: usize,
    /// How often the whole view is exchanged with one random member.
    pub sync_interval: Duration,
    /// Most records in one view synchronisation message.
    pub max_sync_records: usize,
    /// Mean interval between two view synchronisations sent to a member
    /// declared dead (one at random), to find it again when a partition
    /// heals; each wait is drawn uniformly between half and one and a half
    /// times this.
    pub dead_probe_interval: Duration,
    /// How long dead and departed members are remembered (so that late
    /// gossip about them is recognised as stale, and dead ones are probed
    /// for a healed partition), after which they are forgotten.
    pub dead_retention: Duration,
    /// Most dead or departed members remembered; beyond it the longest dead
    /// are forgotten first.
    pub max_dead_members: usize,
    /// Most members tracked; records about further peers are ignored.
    pub max_members: usize,
    /// How long after a first contact its view synchronisation is sent
    /// again if the peer has not been heard from; each further wait doubles.
    /// A lost first exchange would otherwise leave two peers that only know
    /// each other alone for good: neither has a member to probe or gossip to.
    pub contact_retry: Duration,
    /// How many times a first contact is retried before it is given up.
    pub contact_attempts: u32,
}

impl Default for MembershipConfig {
    fn default() -> Self {
        MembershipConfig {
            probe_interval: Duration::from_millis(100),
            monitors: 3,
            phi_threshold: 8.0,
            phi: PhiConfig::default(),
            suspicion_timeout: Duration::from_millis(1000),
            unreachable_grace: Duration::from_millis(1000),
            gossip_interval: Duration::from_millis(100),
            gossip_fanout: 3,
            retransmit_mult: 3,
            max_piggyback: 16,
            sync_interval: Duration::from_secs(1),
            max_sync_records: 1024,
            dead_probe_interval: Duration::from_secs(2),
            dead_retention: Duration::from_secs(600),
            max_dead_members: 256,
            max_members: 4096,
            contact_retry: Duration::from_millis(200),
            contact_attempts: 8,
        }
    }
}

/// Liveness of a member as seen by this peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum MemberState {
    /// Answering, or not silent long enough to worry.
    Alive,
    /// Silent; declared dead unless it refutes in time.
    Suspect,
    /// Declared dead by the failure detector.
    Dead,
    /// Left gracefully.
    Left,
}

impl MemberState {
    fn rank(self) -> u8 {
        match self {
            MemberState::Alive => 0,
            MemberState::Suspect => 1,
            MemberState::Dead | MemberState::Left => 2,
        }
    }

    /// Alive or suspect: still taking part in monitoring and gossip.
    pub fn is_live(self) -> bool {
        matches!(self, MemberState::Alive | MemberState::Suspect)
    }
}

/// Statistics a peer publishes in its presence record (seed 003 §4.4) so
/// others can pick the best peer for a task.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PeerStats {
    /// Logical cores of the host.
    pub cores: u32,
    /// How many cores the peer offers to Colony.
    pub cores_offered: u32,
    /// One-minute load average of the host.
    pub load_avg_1m: f32,
    /// Memory available to new work, in bytes.
    pub free_memory_bytes: u64,
    /// Host uptime in seconds.
    pub uptime_s: u64,
    /// When this peer session started, in seconds since the Unix epoch.
    pub session_start_unix_s: u64,
    /// Jobs completed in this session.
    pub jobs_done_session: u64,
    /// Jobs completed over the peer's whole life.
    pub jobs_done_total: u64,
    /// Work units completed in this session.
    pub units_done_session: u64,
    /// Work units completed over the peer's whole life.
    pub units_done_total: u64,
    /// Whether the peer runs WebAssembly guests of this network
    /// (`--trust-network`): jobs of a guest are homed at peers that do.
    pub runs_guests: bool,
    /// The peers whose signed modules it runs, if it runs only theirs
    /// (`--trust`); empty when it runs any member's (`--trust-network`).
    pub guest_signers: Vec<String>,
    /// When the peer computes: its owner's policy (`colony peer --when`).
    pub when: ComputeWhen,
    /// Why the peer takes no work now, if it is paused.
    pub paused: Option<PauseReason>,
    /// Whether the peer runs at least one unit now.
    pub computing: bool,
    /// Bytes the peer still gives the object space (0: it offers none, or
    /// it is full): only peers with room hold partitions.
    pub space_free_bytes: u64,
}

/// When a peer computes: its owner's choice (G2:P2P's volunteer hosts,
/// seed 004 §3.1; BOINC's computing preferences).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ComputeWhen {
    /// Whenever there is work (its units still run at the lowest OS
    /// priority).
    #[default]
    Always,
    /// Only while the host is idle: other processes' CPU use has stayed low
    /// for a while; it stops as soon as the owner's load returns.
    Idle,
}

impl std::fmt::Display for ComputeWhen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ComputeWhen::Always => "always",
            ComputeWhen::Idle => "idle",
        })
    }
}

/// Why a peer takes no work now.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PauseReason {
    /// Other processes use the host's CPU, or did too recently
    /// (`--when idle`).
    OwnerBusy,
    /// The hours of computing allowed per day are used up
    /// (`--max-hours-per-day`); it resumes after midnight UTC.
    DailyLimit,
}

impl std::fmt::Display for PauseReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            PauseReason::OwnerBusy => "owner busy",
            PauseReason::DailyLimit => "daily limit",
        })
    }
}

/// A member's presence record, as gossiped.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(bound(deserialize = "P: DeserializeOwned"))]
pub struct MemberRecord<P> {
    /// Who.
    pub peer: P,
    /// Liveness claimed by this record.
    pub state: MemberState,
    /// Raised only by the member itself, to refute suspicion or to rejoin.
    pub incarnation: u64,
    /// Raised by the member whenever its addresses or statistics change.
    pub version: u64,
    /// Multiaddresses (as text) the member listens on.
    pub addrs: Vec<String>,
    /// The member's published statistics.
    pub stats: PeerStats,
    /// The member is leaving gracefully: it still answers, but takes on
    /// nothing new, and the homes it belongs to go on without it.
    pub draining: bool,
}

impl<P> MemberRecord<P> {
    /// Whether this record carries newer information than `old` about the
    /// same member: higher incarnation wins; at equal incarnation the worse
    /// state wins; at equal state the higher version wins.
    pub fn supersedes(&self, old: &MemberRecord<P>) -> bool {
        if self.incarnation != old.incarnation {
            return self.incarnation > old.incarnation;
        }
        if self.state.rank() != old.state.rank() {
            return self.state.rank() > old.state.rank();
        }
        self.version > old.version
    }
}

/// Messages exchanged by membership cores.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(bound(deserialize = "P: DeserializeOwned"))]
pub enum MembershipMsg<P> {
    /// "Are you there?" from a monitor.
    Ping {
        /// Echoed in the ack.
        probe: u64,
        /// The sender's own record.
        sender: MemberRecord<P>,
        /// Piggybacked changes.
        updates: Vec<MemberRecord<P>>,
    },
    /// Answer to a ping.
    Ack {
        /// The ping's probe number.
        probe: u64,
        /// The sender's own record.
        sender: MemberRecord<P>,
        /// Piggybacked changes.
        updates: Vec<MemberRecord<P>>,
    },
    /// A push of pending changes.
    Gossip {
        /// The sender's own record.
        sender: MemberRecord<P>,
        /// The changes.
        updates: Vec<MemberRecord<P>>,
    },
    /// A whole-view exchange; answered with `reply: true` and the receiver's view.
    Sync {
        /// The sender's own record.
        sender: MemberRecord<P>,
        /// The sender's view.
        view: Vec<MemberRecord<P>>,
        /// Whether this answers a sync (and so must not be answered).
        reply: bool,
    },
    /// A summary of the sender's view: one hash per bucket of members (see
    /// [`SYNC_BUCKETS`]). The receiver answers with a [`MembershipMsg::Delta`]
    /// of its records in the buckets where its own hashes differ, and with
    /// nothing when the views agree.
    Digest {
        /// The sender's own record.
        sender: MemberRecord<P>,
        /// [`SYNC_BUCKETS`] hashes; another length is ignored.
        buckets: Vec<u64>,
    },
    /// The sender's records in the buckets where two digests differ.
    Delta {
        /// The sender's own record.
        sender: MemberRecord<P>,
        /// The buckets that differ (indices below [`SYNC_BUCKETS`]; others
        /// are ignored).
        buckets: Vec<u16>,
        /// The sender's records in those buckets.
        records: Vec<MemberRecord<P>>,
        /// Whether this answers a delta (and so must not be answered).
        reply: bool,
    },
}

/// How many buckets a [`MembershipMsg::Digest`] summarises the view in: a
/// member's bucket comes from a hash of its id, and a bucket's hash is the
/// XOR of the hashes of the (peer, state, incarnation, version) of its live
/// members (this peer included). Two peers whose views agree exchange 64
/// hashes per synchronisation, whatever the network's size; where they
/// differ, they exchange just the differing buckets' records.
///
/// The hashes go through `std::hash::Hash`, which is the same on every
/// peer of one build and platform; peers whose hashes disagree anyway
/// (another build's integer widths) only see every bucket differ, and
/// exchange their views as a whole, bounded by `max_sync_records`.
pub const SYNC_BUCKETS: usize = 64;

/// Output-queue capacity kept once a burst of outputs is drained.
const OUTPUTS_KEPT: usize = 64;

/// Most first contacts waiting for an answer; further ones are sent once.
const MAX_PENDING_CONTACTS: usize = 256;

/// A first contact not answered yet: when to send it again, and how many
/// sends it has had.
#[derive(Clone, Copy, Debug)]
struct PendingContact {
    retry_at: Instant,
    sends: u32,
}

impl<P> MembershipMsg<P> {
    /// The record of the peer that sent this message.
    pub fn sender(&self) -> &MemberRecord<P> {
        match self {
            MembershipMsg::Ping { sender, .. }
            | MembershipMsg::Ack { sender, .. }
            | MembershipMsg::Gossip { sender, .. }
            | MembershipMsg::Sync { sender, .. }
            | MembershipMsg::Digest { sender, .. }
            | MembershipMsg::Delta { sender, .. } => sender,
        }
    }
}

/// What the driver feeds the core.
#[derive(Clone, Debug)]
pub enum Input<P> {
    /// A membership message from `from` (authenticated by the transport).
    Message {
        /// The authenticated sender.
        from: P,
        /// The message.
        msg: MembershipMsg<P>,
    },
    /// The transport connected to `peer` (bootstrap, mDNS, DHT); start
    /// talking to it.
    Contact {
        /// The peer now reachable.
        peer: P,
    },
    /// The transport could not reach `peer` (connection refused or reset):
    /// as good as a failed probe.
    Unreachable {
        /// The peer that could not be reached.
        peer: P,
    },
    /// This peer's statistics changed.
    SetStats(PeerStats),
    /// This peer's listen addresses changed.
    SetAddrs(Vec<String>),
    /// This peer is about to leave gracefully: tell everyone at once, so
    /// the homes it belongs to go on without it before it is gone.
    Drain,
    /// This peer is shutting down gracefully: tell everyone.
    Leave,
}

/// What the core asks the driver to do.
#[derive(Clone, Debug)]
pub enum Output<P> {
    /// Send `msg` to `to` (unreliably; loss is tolerated).
    Send {
        /// Destination.
        to: P,
        /// The message.
        msg: MembershipMsg<P>,
    },
    /// Something changed in the view.
    Event(Event<P>),
    /// This peer's incarnation rose; persist it so a restart continues above it.
    PersistIncarnation(u64),
    /// A record about this peer that it never published (at its own
    /// incarnation, with a version it never reached or other contents)
    /// was heard and refuted by raising the incarnation.
    ForgeryRefuted {
        /// The forged record's version.
        version: u64,
    },
}

/// A change in the view.
#[derive(Clone, Debug, PartialEq)]
pub struct Event<P> {
    /// Whose state changed.
    pub peer: P,
    /// The state before, `None` for a member seen for the first time.
    pub from: Option<MemberState>,
    /// The state now.
    pub to: MemberState,
    /// The member's addresses.
    pub addrs: Vec<String>,
}

/// One member of the view, for display and for picking peers.
#[derive(Clone, Debug, PartialEq)]
pub struct MemberView<P> {
    /// The member's latest record.
    pub record: MemberRecord<P>,
    /// When its state last changed here.
    pub state_since: Instant,
    /// When a message from it last arrived here, if ever.
    pub last_heard: Option<Instant>,
    /// How many times this peer declared it dead (each rejoin may add one).
    pub times_declared_dead: u32,
    /// Its phi level, if this peer monitors it.
    pub phi: Option<f64>,
}

struct Member<P> {
    record: MemberRecord<P>,
    /// The member's digest bucket (from its id) and the hash of its record
    /// there, see [`SYNC_BUCKETS`].
    bucket: usize,
    hash: u64,
    state_since: Instant,
    last_heard: Option<Instant>,
    suspect_deadline: Option<Instant>,
    times_declared_dead: u32,
}

/// The membership protocol core of one peer. See the module docs.
pub struct Membership<P: PeerKey> {
    config: MembershipConfig,
    me: MemberRecord<P>,
    members: BTreeMap<P, Member<P>>,
    /// The members alive or suspect, sorted: kept as the view changes, so
    /// that probing, gossip and synchronisation pick from it without
    /// scanning the whole view each time.
    live: Vec<P>,
    /// The members with a suspicion deadline, and those dead or departed:
    /// the periodic sweep looks at these rather than the whole view.
    suspected: BTreeSet<P>,
    gone: BTreeSet<P>,
    detectors: BTreeMap<P, PhiDetector>,
    /// Pending changes with the number of sends left.
    broadcasts: Broadcasts<P>,
    /// Per digest bucket, the XOR of the hashes of its live members' records
    /// (this peer's own excluded), kept as the view changes.
    bucket_hashes: Vec<u64>,
    /// See [`Membership::take_changed`]; `None` until it is first called.
    changed: Option<BTreeSet<P>>,
    /// See [`Membership::take_draining_news`].
    draining_news: bool,
    outputs: VecDeque<Output<P>>,
    rng: SmallRng,
    next_probe_no: u64,
    next_probe_at: Instant,
    next_gossip_at: Instant,
    next_sync_at: Instant,
    next_sweep_at: Instant,
    next_dead_probe_at: Instant,
    /// First contacts not answered yet, retried with backoff.
    contacts: BTreeMap<P, PendingContact>,
}

impl<P: PeerKey> Membership<P> {
    /// A core for peer `me` that starts alone, at `incarnation`.
    pub fn new(
        me: P,
        incarnation: u64,
        addrs: Vec<String>,
        stats: PeerStats,
        config: MembershipConfig,
        seed: u64,
        now: Instant,
    ) -> Self {
        let mut rng = SmallRng::seed_from_u64(seed);
        let next_dead_probe_at = now + jittered(&mut rng, config.dead_probe_interval);
        Membership {
            me: MemberRecord {
                peer: me,
                state: MemberState::Alive,
                incarnation,
                version: 0,
                addrs,
                stats,
                draining: false,
            },
            members: BTreeMap::new(),
            live: Vec::new(),
            suspected: BTreeSet::new(),
            gone: BTreeSet::new(),
            detectors: BTreeMap::new(),
            broadcasts: Broadcasts::default(),
            bucket_hashes: vec![0; SYNC_BUCKETS],
            changed: None,
            draining_news: false,
            outputs: VecDeque::new(),
            rng,
            next_probe_no: 0,
            next_probe_at: now + config.probe_interval,
            next_gossip_at: now + config.gossip_interval,
            next_sync_at: now + config.sync_interval,
            next_sweep_at: now + config.probe_interval,
            next_dead_probe_at,
            contacts: BTreeMap::new(),
            config,
        }
    }

    /// This peer's own record.
    pub fn local(&self) -> &MemberRecord<P> {
        &self.me
    }

    /// The configuration in force.
    pub fn config(&self) -> &MembershipConfig {
        &self.config
    }

    /// The state of `peer` in this view, if known.
    pub fn state_of(&self, peer: &P) -> Option<MemberState> {
        self.members.get(peer).map(|m| m.record.state)
    }

    /// The addresses recorded for `peer`.
    pub fn addrs_of(&self, peer: &P) -> Option<&[String]> {
        self.members.get(peer).map(|m| m.record.addrs.as_slice())
    }

    /// Number of other members currently alive or suspect.
    pub fn live_count(&self) -> usize {
        self.live.len()
    }

    /// The view: every known other member.
    pub fn view(&self, now: Instant) -> Vec<MemberView<P>> {
        self.members
            .iter()
            .map(|(peer, m)| MemberView {
                record: m.record.clone(),
                state_since: m.state_since,
                last_heard: m.last_heard,
                times_declared_dead: m.times_declared_dead,
                phi: self.detectors.get(peer).map(|d| d.phi(now)),
            })
            .collect()
    }

    /// Every known other member's latest record, in peer order, without
    /// copying anything: what a driver needs to pick peers or to tell other
    /// cores who is alive ([`Membership::view`] clones every record and
    /// computes phi levels, which costs O(n) allocations per call).
    pub fn records(&self) -> impl Iterator<Item = &MemberRecord<P>> + '_ {
        self.members.values().map(|m| &m.record)
    }

    /// The latest record of `peer`, if it is a known member.
    pub fn record_of(&self, peer: &P) -> Option<&MemberRecord<P>> {
        self.members.get(peer).map(|m| &m.record)
    }

    /// Whether a member started or stopped draining (leaving gracefully)
    /// since the last call: such a change raises no membership event, yet
    /// homes must follow it at once.
    pub fn take_draining_news(&mut self) -> bool {
        std::mem::take(&mut self.draining_news)
    }

    /// The members whose record was added, replaced or forgotten since the
    /// last call (the first call names every member), in peer order: a
    /// driver that keeps something derived from the view (another core's
    /// member list) updates just these, instead of rebuilding it from the
    /// whole view on every event. Changes are only tracked once this has
    /// been called, and then hold one entry per peer until the next call.
    pub fn take_changed(&mut self) -> BTreeSet<P> {
        match self.changed.replace(BTreeSet::new()) {
            Some(changed) => changed,
            None => self.members.keys().cloned().collect(),
        }
    }

    /// Applies one input.
    pub fn handle(&mut self, now: Instant, input: Input<P>) {
        match input {
            Input::Message { from, msg } => self.handle_message(now, from, msg),
            Input::Contact { peer } => {
                if peer != self.me.peer {
                    let known_live = self
                        .members
                        .get(&peer)
                        .is_some_and(|m| m.record.state.is_live());
                    if !known_live {
                        self.send_sync(peer.clone(), false);
                        if self.contacts.len() < MAX_PENDING_CONTACTS
                            || self.contacts.contains_key(&peer)
                        {
                            let retry_at = now + self.config.contact_retry;
                            self.contacts
                                .insert(peer, PendingContact { retry_at, sends: 1 });
                        }
                    }
                }
            }
            Input::Unreachable { peer } => {
                let grace = self.config.unreachable_grace;
                let incarnation = match self.members.get(&peer) {
                    Some(m)
                        if m.record.state == MemberState::Alive
                            && now.saturating_duration_since(m.state_since) >= grace =>
                    {
                        m.record.incarnation
                    }
                    _ => return,
                };
                self.suspect(now, &peer, incarnation);
            }
            Input::SetStats(stats) => {
                if stats != self.me.stats {
                    self.me.stats = stats;
                    self.me.version += 1;
                }
            }
            Input::SetAddrs(addrs) => {
                if addrs != self.me.addrs {
                    self.me.addrs = addrs;
                    self.me.version += 1;
                    self.queue_broadcast(self.me.clone());
                }
            }
            Input::Drain => {
                if !self.me.draining {
                    self.me.draining = true;
                    self.me.version += 1;
                    // Directly, and by gossip for the messages lost.
                    self.tell_everyone();
                    self.queue_broadcast(self.me.clone());
                }
            }
            Input::Leave => {
                self.me.state = MemberState::Left;
                self.me.version += 1;
                self.tell_everyone();
            }
        }
    }

    /// Sends this peer's record to every live peer now, not by gossip.
    fn tell_everyone(&mut self) {
        let targets: Vec<P> = self.live_peers();
        for to in targets {
            self.outputs.push_back(Output::Send {
                to,
                msg: MembershipMsg::Gossip {
                    sender: self.me.clone(),
                    updates: Vec::new(),
                },
            });
        }
    }

    /// When the core next needs [`Membership::handle_timeout`].
    pub fn poll_timeout(&self) -> Instant {
        let mut at = self
            .next_probe_at
            .min(self.next_sync_at)
            .min(self.next_sweep_at)
            .min(self.next_dead_probe_at);
        if let Some(retry_at) = self.contacts.values().map(|c| c.retry_at).min() {
            at = at.min(retry_at);
        }
        if !self.broadcasts.is_empty() {
            at = at.min(self.next_gossip_at);
        }
        at
    }

    /// Runs whatever timers are due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.me.state == MemberState::Left {
            return;
        }
        if now >= self.next_probe_at {
            self.next_probe_at = now + self.config.probe_interval;
            self.probe(now);
        }
        if now >= self.next_sweep_at {
            self.next_sweep_at = now + self.config.probe_interval;
            self.sweep(now);
        }
        if now >= self.next_gossip_at {
            self.next_gossip_at = now + self.config.gossip_interval;
            self.gossip();
        }
        if now >= self.next_sync_at {
            self.next_sync_at = now + self.config.sync_interval;
            if let Some(peer) = self.live.choose(&mut self.rng).cloned() {
                self.send_digest(peer);
            }
        }
        if now >= self.next_dead_probe_at {
            self.next_dead_probe_at =
                now + jittered(&mut self.rng, self.config.dead_probe_interval);
            let dead: Vec<P> = self
                .gone
                .iter()
                .filter(|p| {
                    self.members
                        .get(p)
                        .is_some_and(|m| m.record.state == MemberState::Dead)
                })
                .cloned()
                .collect();
            if let Some(peer) = dead.choose(&mut self.rng).cloned() {
                self.send_digest(peer);
            }
        }
        self.retry_contacts(now);
    }

    /// Sends again the first contacts that are due and still unanswered;
    /// forgets those answered or out of attempts.
    fn retry_contacts(&mut self, now: Instant) {
        let due: Vec<P> = self
            .contacts
            .iter()
            .filter(|(_, c)| c.retry_at <= now)
            .map(|(p, _)| p.clone())
            .collect();
        for peer in due {
            let answered = self
                .members
                .get(&peer)
                .is_some_and(|m| m.record.state.is_live());
            let Some(contact) = self.contacts.get_mut(&peer) else {
                continue;
            };
            if answered || contact.sends >= self.config.contact_attempts {
                self.contacts.remove(&peer);
                continue;
            }
            contact.sends += 1;
            contact.retry_at =
                now + self.config.contact_retry * 2u32.saturating_pow(contact.sends - 1);
            self.send_sync(peer, false);
        }
    }

    /// The next thing the driver must do, if any.
    pub fn poll(&mut self) -> Option<Output<P>> {
        let out = self.outputs.pop_front();
        // A whole view learnt at once queues an event per member: do not
        // keep that capacity (n outputs for each of n peers) once drained.
        if out.is_none() && self.outputs.capacity() > OUTPUTS_KEPT {
            self.outputs.shrink_to(OUTPUTS_KEPT);
        }
        out
    }

    fn live_peers(&self) -> Vec<P> {
        self.live.clone()
    }

    /// The `monitors` live successors of this peer on the ring sorted by id.
    pub fn monitored(&self) -> Vec<P> {
        let live = &self.live;
        if live.len() <= self.config.monitors {
            return live.clone();
        }
        let start = live.partition_point(|p| *p < self.me.peer);
        (0..self.config.monitors)
            .map(|i| live[(start + i) % live.len()].clone())
            .collect()
    }

    fn probe(&mut self, now: Instant) {
        let targets = self.monitored();
        let wanted: BTreeSet<&P> = targets.iter().collect();
        self.detectors.retain(|p, _| wanted.contains(p));
        for peer in &targets {
            if !self.detectors.contains_key(peer) {
                let detector =
                    PhiDetector::new(self.config.phi.clone(), now, self.config.probe_interval);
                self.detectors.insert(peer.clone(), detector);
            }
        }
        for to in targets {
            self.next_probe_no += 1;
            let msg = MembershipMsg::Ping {
                probe: self.next_probe_no,
                sender: self.me.clone(),
                updates: self.take_piggyback(),
            };
            self.outputs.push_back(Output::Send { to, msg });
        }
    }

    /// Suspects silent monitored members, declares expired suspects dead and
    /// forgets long-dead members.
    fn sweep(&mut self, now: Instant) {
        let silent: Vec<(P, u64)> = self
            .detectors
            .iter()
            .filter(|(_, d)| d.phi(now) > self.config.phi_threshold)
            .filter_map(|(p, _)| {
                let m = self.members.get(p)?;
                (m.record.state == MemberState::Alive).then(|| (p.clone(), m.record.incarnation))
            })
            .collect();
        for (peer, incarnation) in silent {
            self.suspect(now, &peer, incarnation);
        }
        let expired: Vec<(P, u64)> = self
            .suspected
            .iter()
            .filter_map(|p| {
                let m = self.members.get(p)?;
                m.suspect_deadline
                    .is_some_and(|d| d <= now)
                    .then(|| (p.clone(), m.record.incarnation))
            })
            .collect();
        for (peer, incarnation) in expired {
            if let Some(m) = self.members.get(&peer) {
                let mut record = m.record.clone();
                record.state = MemberState::Dead;
                record.incarnation = incarnation;
                self.apply(now, record);
            }
        }
        let retention = self.config.dead_retention;
        let forgotten: Vec<P> = self
            .gone
            .iter()
            .filter(|p| {
                self.members
                    .get(p)
                    .is_some_and(|m| now.saturating_duration_since(m.state_since) >= retention)
            })
            .cloned()
            .collect();
        for peer in forgotten {
            self.forget(&peer);
        }
        self.debug_check_indexes();
        let gone = self.gone.len();
        if gone > self.config.max_dead_members {
            let mut oldest: Vec<(Instant, P)> = self
                .gone
                .iter()
                .filter_map(|p| self.members.get(p).map(|m| (m.state_since, p.clone())))
                .collect();
            oldest.sort();
            for (_, peer) in oldest.into_iter().take(gone - self.config.max_dead_members) {
                self.forget(&peer);
            }
        }
    }

    /// Forgets a dead or departed member.
    fn forget(&mut self, peer: &P) {
        if let Some(m) = self.members.remove(peer) {
            if m.record.state.is_live() {
                self.bucket_hashes[m.bucket] ^= m.hash;
            }
        }
        self.gone.remove(peer);
        self.suspected.remove(peer);
        if let Some(changed) = self.changed.as_mut() {
            changed.insert(peer.clone());
        }
    }

    /// In debug builds: the indexes kept beside the view agree with it.
    fn debug_check_indexes(&self) {
        if cfg!(debug_assertions) {
            let live: Vec<P> = self
                .members
                .iter()
                .filter(|(_, m)| m.record.state.is_live())
                .map(|(p, _)| p.clone())
                .collect();
            let gone: BTreeSet<P> = self
                .members
                .iter()
                .filter(|(_, m)| !m.record.state.is_live())
                .map(|(p, _)| p.clone())
                .collect();
            let suspected: BTreeSet<P> = self
                .members
                .iter()
                .filter(|(_, m)| m.suspect_deadline.is_some())
                .map(|(p, _)| p.clone())
                .collect();
            debug_assert_eq!(self.live, live, "the live list follows the view");
            debug_assert_eq!(self.gone, gone, "the gone set follows the view");
            debug_assert_eq!(self.suspected, suspected, "the suspects follow the view");
            let mut buckets = vec![0u64; SYNC_BUCKETS];
            for m in self.members.values() {
                if m.record.state.is_live() {
                    buckets[bucket_of(&m.record.peer)] ^= record_hash(&m.record);
                }
            }
            debug_assert_eq!(self.bucket_hashes, buckets, "the digest follows the view");
        }
    }

    fn suspect(&mut self, now: Instant, peer: &P, incarnation: u64) {
        if let Some(m) = self.members.get(peer) {
            let mut record = m.record.clone();
            record.state = MemberState::Suspect;
            record.incarnation = incarnation;
            self.apply(now, record);
        }
    }

    fn gossip(&mut self) {
        if self.broadcasts.is_empty() {
            return;
        }
        if self.live.is_empty() {
            // Nobody left to tell (this peer is cut off, or the last one
            // standing): news about others would be stale by the time anyone
            // hears it again, and a stale death would kill members that never
            // lost touch with each other. Whoever comes back learns the view
            // by synchronisation instead, where deaths are only suspicions.
            let me = self.me.peer.clone();
            self.broadcasts.retain_only(&me);
            return;
        }
        let targets: Vec<P> = self
            .live
            .choose_multiple(&mut self.rng, self.config.gossip_fanout)
            .cloned()
            .collect();
        for to in targets {
            let updates = self.take_piggyback();
            if updates.is_empty() {
                break;
            }
            let msg = MembershipMsg::Gossip {
                sender: self.me.clone(),
                updates,
            };
            self.outputs.push_back(Output::Send { to, msg });
        }
    }

    fn send_sync(&mut self, to: P, reply: bool) {
        let mut view: Vec<MemberRecord<P>> =
            self.members.values().map(|m| m.record.clone()).collect();
        if view.len() > self.config.max_sync_records {
            let sample: Vec<MemberRecord<P>> = view
                .choose_multiple(&mut self.rng, self.config.max_sync_records)
                .cloned()
                .collect();
            view = sample;
        }
        let msg = MembershipMsg::Sync {
            sender: self.me.clone(),
            view,
            reply,
        };
        self.outputs.push_back(Output::Send { to, msg });
    }

    /// This peer's digest: its bucket hashes with its own record added.
    fn digest(&self) -> Vec<u64> {
        let mut buckets = self.bucket_hashes.clone();
        buckets[bucket_of(&self.me.peer)] ^= record_hash(&self.me);
        buckets
    }

    fn send_digest(&mut self, to: P) {
        let msg = MembershipMsg::Digest {
            sender: self.me.clone(),
            buckets: self.digest(),
        };
        self.outputs.push_back(Output::Send { to, msg });
    }

    /// Answers a digest: the buckets where it differs from ours, with our
    /// records in them. A digest of the wrong length is ignored.
    fn answer_digest(&mut self, from: P, theirs: &[u64]) {
        if theirs.len() != SYNC_BUCKETS {
            return;
        }
        let ours = self.digest();
        let differ: Vec<u16> = (0..SYNC_BUCKETS)
            .filter(|&b| ours[b] != theirs[b])
            .map(|b| b as u16)
            .collect();
        if !differ.is_empty() {
            self.send_delta(from, differ, false);
        }
    }

    /// Sends our records in `buckets` (indices already checked).
    fn send_delta(&mut self, to: P, buckets: Vec<u16>, reply: bool) {
        let mut wanted = [false; SYNC_BUCKETS];
        for &b in &buckets {
            wanted[usize::from(b)] = true;
        }
        let mut records: Vec<MemberRecord<P>> = self
            .members
            .values()
            .filter(|m| wanted[m.bucket])
            .map(|m| m.record.clone())
            .collect();
        if wanted[bucket_of(&self.me.peer)] {
            records.push(self.me.clone());
        }
        if records.len() > self.config.max_sync_records {
            let sample: Vec<MemberRecord<P>> = records
                .choose_multiple(&mut self.rng, self.config.max_sync_records)
                .cloned()
                .collect();
            records = sample;
        }
        let msg = MembershipMsg::Delta {
            sender: self.me.clone(),
            buckets,
            records,
            reply,
        };
        self.outputs.push_back(Output::Send { to, msg });
    }

    fn retransmit_budget(&self) -> u32 {
        let n = self.members.len() as f64 + 1.0;
        self.config.retransmit_mult * ((n + 1.0).log2().ceil() as u32).max(1)
    }

    fn queue_broadcast(&mut self, record: MemberRecord<P>) {
        let budget = self.retransmit_budget();
        self.broadcasts.insert(record, budget);
    }

    /// Takes up to `max_piggyback` pending changes, most-needed first.
    fn take_piggyback(&mut self) -> Vec<MemberRecord<P>> {
        self.broadcasts.take(self.config.max_piggyback)
    }

    fn handle_message(&mut self, now: Instant, from: P, msg: MembershipMsg<P>) {
        if self.me.state == MemberState::Left || from == self.me.peer {
            return;
        }
        // The transport authenticates `from`; a record claiming to be from
        // someone else is ignored as a whole.
        if msg.sender().peer != from {
            return;
        }
        let sender = msg.sender().clone();
        let stale_news = self
            .members
            .get(&from)
            .map(|m| m.record.clone())
            .filter(|ours| ours.supersedes(&sender) && ours.state != MemberState::Alive);
        self.apply(now, sender);
        if let Some(m) = self.members.get_mut(&from) {
            m.last_heard = Some(now);
        }
        if let Some(ours) = stale_news {
            // The sender does not know we suspect it (or think it dead):
            // tell it, so it can refute.
            self.outputs.push_back(Output::Send {
                to: from.clone(),
                msg: MembershipMsg::Gossip {
                    sender: self.me.clone(),
                    updates: vec![ours],
                },
            });
        }
        match msg {
            MembershipMsg::Ping { probe, updates, .. } => {
                self.apply_hearsay(now, updates, Heard::News);
                let msg = MembershipMsg::Ack {
                    probe,
                    sender: self.me.clone(),
                    updates: self.take_piggyback(),
                };
                self.outputs.push_back(Output::Send { to: from, msg });
            }
            MembershipMsg::Ack { updates, .. } => {
                if let Some(detector) = self.detectors.get_mut(&from) {
                    detector.heartbeat(now);
                }
                self.apply_hearsay(now, updates, Heard::News);
            }
            MembershipMsg::Gossip { updates, .. } => self.apply_hearsay(now, updates, Heard::News),
            MembershipMsg::Sync { view, reply, .. } => {
                self.apply_hearsay(now, view, Heard::View);
                if !reply {
                    self.send_sync(from, true);
                }
            }
            MembershipMsg::Digest { buckets, .. } => self.answer_digest(from, &buckets),
            MembershipMsg::Delta {
                buckets,
                records,
                reply,
                ..
            } => {
                self.apply_hearsay(now, records, Heard::View);
                if !reply {
                    // Only valid buckets, each once, in order.
                    let mut wanted = [false; SYNC_BUCKETS];
                    for b in buckets {
                        if let Some(w) = wanted.get_mut(usize::from(b)) {
                            *w = true;
                        }
                    }
                    let buckets: Vec<u16> = (0..SYNC_BUCKETS)
                        .filter(|&b| wanted[b])
                        .map(|b| b as u16)
                        .collect();
                    if !buckets.is_empty() {
                        self.send_delta(from, buckets, true);
                    }
                }
            }
        }
    }

    /// Merges records heard from another peer (piggybacked, gossiped or a
    /// whole view). A death among them is hearsay about a member this peer
    /// may well still hear from — after a partition heals, each side holds
    /// verdicts against members the other side never lost touch with — so a
    /// member live here only becomes suspect on that ground, and has
    /// `suspicion_timeout` to refute. A member that really died does not
    /// refute, and is declared dead here when that runs out; most peers
    /// are suspecting it already by then, from the monitor's suspicion.
    ///
    /// A member first seen in a view (`Heard::View`) is not broadcast: the
    /// peer that sent the view knows it, and so does everyone its joining
    /// was gossiped to. Broadcasting it made every newcomer (and every
    /// restarted peer) gossip its whole view `retransmit_mult · log2 n`
    /// times over, O(n² log n) records for n peers starting.
    fn apply_hearsay(&mut self, now: Instant, records: Vec<MemberRecord<P>>, heard: Heard) {
        for mut record in records {
            if let Some(m) = self.members.get(&record.peer) {
                if record.state == MemberState::Dead && m.record.state.is_live() {
                    record.state = MemberState::Suspect;
                }
                // Most of what is heard is known already: one lookup.
                if !record.supersedes(&m.record) {
                    continue;
                }
            }
            self.apply_heard(now, record, heard);
        }
    }

    /// Merges one record into the view, emitting events and queueing the
    /// change for dissemination when it is news.
    fn apply(&mut self, now: Instant, record: MemberRecord<P>) {
        self.apply_heard(now, record, Heard::News);
    }

    /// [`Membership::apply`], for a record heard as `heard`.
    fn apply_heard(&mut self, now: Instant, record: MemberRecord<P>, heard: Heard) {
        if record.peer == self.me.peer {
            self.refute_if_needed(record);
            return;
        }
        let previous = match self.members.get(&record.peer) {
            Some(m) if !record.supersedes(&m.record) => return,
            Some(m) => {
                self.draining_news |= m.record.draining != record.draining;
                Some(m.record.state)
            }
            None => {
                // A peer first heard of as dead or departed is not worth tracking.
                if !record.state.is_live() || self.members.len() >= self.config.max_members {
                    return;
                }
                self.draining_news |= record.draining;
                None
            }
        };
        let state_changed = previous != Some(record.state);
        let was_live = previous.is_some_and(MemberState::is_live);
        match (was_live, record.state.is_live()) {
            (false, true) => {
                if let Err(at) = self.live.binary_search(&record.peer) {
                    self.live.insert(at, record.peer.clone());
                }
            }
            (true, false) => {
                if let Ok(at) = self.live.binary_search(&record.peer) {
                    self.live.remove(at);
                }
            }
            _ => {}
        }
        let peer = record.peer.clone();
        let suspicion_timeout = self.config.suspicion_timeout;
        let hash = record_hash(&record);
        let member = self.members.entry(peer.clone()).or_insert_with(|| Member {
            record: record.clone(),
            bucket: bucket_of(&peer),
            hash: 0,
            state_since: now,
            last_heard: None,
            suspect_deadline: None,
            times_declared_dead: 0,
        });
        member.record = record.clone();
        if was_live {
            self.bucket_hashes[member.bucket] ^= member.hash;
        }
        member.hash = hash;
        if record.state.is_live() {
            self.bucket_hashes[member.bucket] ^= hash;
        }
        if let Some(changed) = self.changed.as_mut() {
            changed.insert(peer.clone());
        }
        if state_changed {
            member.state_since = now;
            member.suspect_deadline =
                (record.state == MemberState::Suspect).then(|| now + suspicion_timeout);
            if member.suspect_deadline.is_some() {
                self.suspected.insert(peer.clone());
            } else {
                self.suspected.remove(&peer);
            }
            if record.state.is_live() {
                self.gone.remove(&peer);
            } else {
                self.gone.insert(peer.clone());
            }
            if record.state == MemberState::Dead {
                member.times_declared_dead += 1;
            }
            if !record.state.is_live() {
                self.detectors.remove(&peer);
            }
            self.outputs.push_back(Output::Event(Event {
                peer,
                from: previous,
                to: record.state,
                addrs: record.addrs.clone(),
            }));
        }
        // Version-only refreshes (statistics) travel by sync and by the
        // sender records on every message; state changes are broadcast.
        if state_changed && !(previous.is_none() && heard == Heard::View) {
            self.queue_broadcast(record);
        }
    }

    /// Someone says something about us: if it is suspicion or death at our
    /// incarnation or above, or a record we never published (a hostile
    /// member's "it is draining" or false addresses), rise above it and
    /// announce what we are.
    fn refute_if_needed(&mut self, record: MemberRecord<P>) {
        if self.me.state == MemberState::Left {
            return;
        }
        let threatened =
            record.state != MemberState::Alive && record.incarnation >= self.me.incarnation;
        let outdated = record.incarnation > self.me.incarnation;
        // Only this peer raises its version: a newer one is not its own,
        // nor is one at its version saying something else.
        let forged = record.incarnation == self.me.incarnation
            && (record.version > self.me.version
                || (record.version == self.me.version
                    && (record.draining != self.me.draining || record.addrs != self.me.addrs)));
        if forged {
            self.outputs.push_back(Output::ForgeryRefuted {
                version: record.version,
            });
        }
        if threatened || outdated || forged {
            self.me.incarnation = record.incarnation.saturating_add(1);
            self.me.version += 1;
            self.outputs
                .push_back(Output::PersistIncarnation(self.me.incarnation));
            self.queue_broadcast(self.me.clone());
        }
    }
}

/// How a record reached this peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Heard {
    /// Sent as news: piggybacked, gossiped, or a message's sender record.
    News,
    /// Part of a view or of a digest repair.
    View,
}

/// Changes waiting to be disseminated, each with the number of sends left,
/// indexed by that number so that the most-needed are found without
/// sorting them all on every message.
struct Broadcasts<P> {
    records: BTreeMap<P, (MemberRecord<P>, u32)>,
    /// `(sends left, peer)` of every record: most sends left first, then
    /// by peer.
    by_need: BTreeSet<(Reverse<u32>, P)>,
}

impl<P> Default for Broadcasts<P> {
    fn default() -> Self {
        Broadcasts {
            records: BTreeMap::new(),
            by_need: BTreeSet::new(),
        }
    }
}

impl<P: PeerKey> Broadcasts<P> {
    fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Queues `record` to be sent `sends` times, replacing what was queued
    /// about the same peer.
    fn insert(&mut self, record: MemberRecord<P>, sends: u32) {
        let peer = record.peer.clone();
        if let Some((_, left)) = self.records.insert(peer.clone(), (record, sends)) {
            self.by_need.remove(&(Reverse(left), peer.clone()));
        }
        self.by_need.insert((Reverse(sends), peer));
    }

    /// Drops everything but the news about `me`.
    fn retain_only(&mut self, me: &P) {
        self.records.retain(|peer, _| peer == me);
        self.by_need.retain(|(_, peer)| peer == me);
    }

    /// Takes up to `max` records, those with the most sends left first (by
    /// peer among equals), counting one send each.
    fn take(&mut self, max: usize) -> Vec<MemberRecord<P>> {
        let mut chosen = Vec::with_capacity(max.min(self.by_need.len()));
        while chosen.len() < max {
            let Some((_, peer)) = self.by_need.pop_first() else {
                break;
            };
            chosen.push(peer);
        }
        let mut out = Vec::with_capacity(chosen.len());
        for peer in chosen {
            if let Some((record, left)) = self.records.get_mut(&peer) {
                out.push(record.clone());
                *left = left.saturating_sub(1);
                if *left == 0 {
                    self.records.remove(&peer);
                } else {
                    self.by_need.insert((Reverse(*left), peer));
                }
            }
        }
        out
    }
}

/// FNV-1a over what `Hash` writes, then a final mix so that XORs of
/// hashes stay well spread. Stable within a build (see [`SYNC_BUCKETS`]).
struct Fnv(u64);

impl std::hash::Hasher for Fnv {
    fn finish(&self) -> u64 {
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
}

fn fnv() -> Fnv {
    Fnv(0xcbf2_9ce4_8422_2325)
}

/// The digest bucket of `peer`.
fn bucket_of<P: std::hash::Hash>(peer: &P) -> usize {
    use std::hash::Hasher;
    let mut h = fnv();
    peer.hash(&mut h);
    (h.finish() % SYNC_BUCKETS as u64) as usize
}

/// The hash of what a digest compares of `record`: who, state,
/// incarnation and version.
fn record_hash<P: std::hash::Hash>(record: &MemberRecord<P>) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = fnv();
    record.peer.hash(&mut h);
    record.state.hash(&mut h);
    record.incarnation.hash(&mut h);
    record.version.hash(&mut h);
    h.finish()
}

/// `mean` scaled by a uniform factor in [0.5, 1.5), so that peers started
/// together do not act in lockstep.
fn jittered(rng: &mut SmallRng, mean: Duration) -> Duration {
    mean.mul_f64(rng.random_range(0.5..1.5))
}

#[cfg(test)]
mod tests;
