//! The generic replicated home: a state machine kept on the k closest live
//! peers of a key (DESIGN.md, "every piece of state has a home").
//!
//! One member, the primary, changes the state; the others, the backups,
//! hold a replica. What the primary wants done because of a change (its
//! effects) is released only once a majority of BOTH the committed member
//! list and the latest one hold the update that made it (joint consensus),
//! so the two sides of a partition can never both make progress, and a
//! primary that was paused cannot commit alone when it resumes.
//!
//! - Replication: the primary sends each change as a delta (update `seq` of
//!   its `term`); a backup that missed one answers with a nack and gets a
//!   whole snapshot. Idle primaries send heartbeats.
//! - Elections: a backup whose primary is gone campaigns for the next term,
//!   the members in the home's order one after the other (staggered); a vote
//!   is granted once per term, only to a candidate whose replica is at least
//!   as recent as the voter's, and only while the voter's own primary is not
//!   present. A member that refuses a candidate because its own replica is
//!   more recent campaigns itself after a short random delay, so the most
//!   recent replica wins even when it is ranked last.
//! - Creation: [`Homes::create`] makes a home of term 1 without a vote, so
//!   a peer that may not be the only one creating a key first asks its
//!   would-be home to promise term 1 ([`Homes::found`]); members of an
//!   existing home refuse. Should two primaries of one term still meet, a
//!   backup stays with its own and a primary yields only to a longer
//!   history.
//! - Membership: peers entering the home get a snapshot and join the member
//!   list once they confirm it; members no longer among the closest leave it
//!   (farthest, lost ones first) and are released once the members without
//!   them are committed and a majority holds an update naming the lists
//!   without them (Raft leaves the joint configuration the same way: only
//!   once the new one is committed), so backups never wait for the vote
//!   of a member that dropped its replica. A closer newcomer holding an up-to-date replica is
//!   handed the primary role (`Promote`).
//!
//! The state plugs in through [`Replicated`]; backups apply deltas and
//! snapshots as data, without running application code. The core does no
//! IO: inputs come with the time, outputs are drained with
//! [`Homes::poll`], and [`Homes::poll_timeout`] says when to call
//! [`Homes::handle_timeout`] (a per-key deadline table, no fixed tick).

mod election;
mod replication;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt::Debug;
use std::ops::{Deref, DerefMut};
use std::time::{Duration, Instant};

use rand::rngs::SmallRng;
use rand::SeedableRng;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::PeerKey;

/// Most members a replicated member list may name; longer lists from the
/// network are ignored.
pub const MAX_MEMBERS: usize = 256;

/// Most peers declared dead that are remembered as founding voters
/// ([`Homes::set_lost`]).
pub const MAX_LOST: usize = 1024;

/// A state replicated by a home.
pub trait Replicated: Sized {
    /// The whole state as sent to a new backup.
    type Snapshot: Clone + Debug + Serialize + DeserializeOwned;
    /// A change, as the primary sends it to its backups.
    type Delta: Clone + Debug + Serialize + DeserializeOwned;
    /// What the primary wants done once a change is held by a majority.
    type Effect;

    /// The whole state now (for a new backup, or after a missed update).
    fn snapshot(&self, now: Instant) -> Self::Snapshot;
    /// A replica built from a snapshot received from the network; `None`
    /// if it is invalid (then it is ignored).
    fn restore(now: Instant, snapshot: Self::Snapshot) -> Option<Self>;
    /// Replaces this replica by a snapshot; `false` if it is invalid (the
    /// replica is then unchanged).
    fn apply_snapshot(&mut self, now: Instant, snapshot: Self::Snapshot) -> bool {
        match Self::restore(now, snapshot) {
            Some(state) => {
                *self = state;
                true
            }
            None => false,
        }
    }
    /// On the primary: what changed since the last call, if anything; with
    /// `force`, a delta even if nothing changed (the update must carry new
    /// member lists).
    fn take_delta(&mut self, force: bool) -> Option<Self::Delta>;
    /// On a backup: applies a delta as data (no application code);
    /// `false` if it does not fit this replica (a snapshot is then asked
    /// for).
    fn apply_delta(&mut self, now: Instant, delta: Self::Delta) -> bool;
    /// Whether `delta` changes nothing (a read barrier: an update round
    /// that only confirms the primary still leads). Such an update needs
    /// no disk: a durable member holding every update before it holds it.
    fn changes_nothing(_delta: &Self::Delta) -> bool {
        false
    }
    /// Whether the state still changes: a backup of an inactive state (a
    /// finished job) only replaces its primary once membership declares it
    /// gone, not on silence, since nothing needs to be committed.
    fn active(&self) -> bool {
        true
    }
    /// Whether nothing the primary keeps outside the replicated state is in
    /// flight: a hand-over waits for it.
    fn settled(&self) -> bool {
        true
    }
    /// This member is no longer primary (or becomes primary afresh): forget
    /// what only a primary keeps outside the replicated state.
    fn clear_primary_state(&mut self) {}
    /// Whether the state must be on disk at a majority before effects are
    /// released: then every member counts an update as held only once its
    /// driver confirms it durable ([`Homes::durable`]), so a home restarted
    /// as a whole finds on disk everything it acknowledged.
    fn durable(&self) -> bool {
        false
    }
    /// Whether the state lives in memory only and its users restore what
    /// it loses (the mesh's cell records: every member renews its place
    /// every few seconds). A member restarted without it then stands for
    /// nothing a candidate could contradict: it counts as a vote for any
    /// candidate, so a home whose members lost their copies by
    /// restarting still elects a primary among those left, which hands
    /// the state to the others again. Without this a home of three with
    /// two members restarted had no majority for good.
    fn volatile(&self) -> bool {
        false
    }
}

/// Timing and limits of the home core.
#[derive(Clone, Debug)]
pub struct HomeConfig {
    /// How much later each member campaigns than the one before it in the
    /// home's order when the primary is lost (the first live member
    /// campaigns at once).
    pub election_stagger: Duration,
    /// How long a candidate collects votes before it gives up and tries
    /// again later.
    pub election_timeout: Duration,
    /// How often a primary tells its backups it is there when it has no
    /// update to send.
    pub heartbeat_interval: Duration,
    /// How long a backup goes without hearing from its primary before it
    /// campaigns, even if membership still sees the primary (a restarted
    /// peer has lost its role).
    pub primary_silence: Duration,
    /// How often a primary whose member list is changing looks again at
    /// who joins, leaves, or should take the role over.
    pub recheck_interval: Duration,
    /// Most homes held here (primary or backup); snapshots for more are
    /// ignored.
    pub max_homes: usize,
    /// How long after sending a message a primary may still act alone on
    /// it once a majority acknowledged it ([`Homes::has_lease`]). Must be
    /// shorter than twice `heartbeat_interval`, the time a backup refuses
    /// every vote after hearing from its primary; the difference absorbs
    /// clock rate drift between peers.
    pub lease: Duration,
    /// How long a peer declared dead still counts as a voter when a home
    /// is founded ([`Homes::set_lost`]): two creators on either side of a
    /// partition each declare the other side dead, and would otherwise ask
    /// would-be homes with no peer in common and found the key twice. A
    /// partition longer than this can still split a creation.
    pub founding_memory: Duration,
}

impl Default for HomeConfig {
    fn default() -> Self {
        HomeConfig {
            election_stagger: Duration::from_millis(200),
            election_timeout: Duration::from_millis(1000),
            heartbeat_interval: Duration::from_millis(250),
            primary_silence: Duration::from_millis(1500),
            recheck_interval: Duration::from_millis(20),
            max_homes: 1064,
            lease: Duration::from_millis(375),
            founding_memory: Duration::from_secs(60),
        }
    }
}

/// A message between the members of a home.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(bound(
    serialize = "K: Serialize, P: Serialize, Sn: Serialize, D: Serialize",
    deserialize = "K: DeserializeOwned, P: DeserializeOwned, Sn: DeserializeOwned, D: DeserializeOwned"
))]
pub enum HomeMsg<K, P, Sn, D> {
    /// Primary → backup: the state, whole or as a change.
    Replica {
        /// The home.
        key: K,
        /// The primary's term.
        term: u64,
        /// Number of this update within the term.
        seq: u64,
        /// The highest update of the term the primary knows committed: of
        /// two primaries of one term (two creators whose would-be homes
        /// did not meet), the one with fewer committed updates gives way.
        committed: u64,
        /// The primary's lease round when it sent this: echoed in acks, so
        /// the primary knows since when a backup refuses other candidates.
        round: u64,
        /// The update.
        update: Update<P, Sn, D>,
    },
    /// Backup → primary: updates up to `seq` of `term` are applied.
    Ack {
        /// The home.
        key: K,
        /// The term.
        term: u64,
        /// Highest applied.
        seq: u64,
        /// Highest lease round heard from the primary of `term` (0: none).
        round: u64,
    },
    /// Backup → primary: my replica is missing or behind (a restart, a
    /// lost update): send me a snapshot, or release me if I am no longer
    /// a member.
    Nack {
        /// The home.
        key: K,
        /// The term of the replica the sender holds (0 without one).
        term: u64,
    },
    /// Member without a live primary → the other members: elect me
    /// primary for `term`.
    Vote {
        /// The home.
        key: K,
        /// The term the candidate asks for.
        term: u64,
        /// Term of the candidate's replica.
        last_term: u64,
        /// Last update of that term the candidate applied.
        last_seq: u64,
        /// The primary that handed the candidate the role, if it did: its
        /// backups vote although they heard from it lately.
        handed_over_by: Option<P>,
    },
    /// Member → candidate: the answer to [`HomeMsg::Vote`].
    VoteReply {
        /// The home.
        key: K,
        /// The term asked for.
        term: u64,
        /// Whether the vote is granted.
        granted: bool,
        /// The highest term the voter has voted in: a later candidacy must
        /// ask for more.
        promised: u64,
        /// Term of the voter's replica.
        log_term: u64,
        /// Last update of that term the voter applied.
        log_seq: u64,
        /// The live primary the voter follows, if any.
        primary: Option<P>,
    },
}

impl<K: Copy, P, Sn, D> HomeMsg<K, P, Sn, D> {
    /// The home the message is about.
    pub fn key(&self) -> K {
        match self {
            HomeMsg::Replica { key, .. }
            | HomeMsg::Ack { key, .. }
            | HomeMsg::Nack { key, .. }
            | HomeMsg::Vote { key, .. }
            | HomeMsg::VoteReply { key, .. } => *key,
        }
    }

    /// The message's name, for refusal logs.
    pub fn name(&self) -> &'static str {
        match self {
            HomeMsg::Replica { .. } => "Replica",
            HomeMsg::Ack { .. } => "ReplicaAck",
            HomeMsg::Nack { .. } => "ReplicaNack",
            HomeMsg::Vote { .. } => "Vote",
            HomeMsg::VoteReply { .. } => "VoteReply",
        }
    }

    /// A short description of the message, for logs and traces.
    pub fn describe(&self) -> String
    where
        P: Debug,
    {
        match self {
            HomeMsg::Replica {
                term, seq, update, ..
            } => {
                let kind = match update {
                    Update::Snapshot { .. } => "Snapshot",
                    Update::Delta { .. } => "Delta",
                    Update::Promote => "Promote",
                    Update::Release => "Release",
                    Update::Heartbeat => "Heartbeat",
                };
                format!("Replica term {term} seq {seq} {kind}")
            }
            HomeMsg::Ack { term, seq, .. } => format!("ReplicaAck term {term} seq {seq}"),
            HomeMsg::Nack { term, .. } => format!("ReplicaNack term {term}"),
            HomeMsg::Vote {
                term,
                last_term,
                last_seq,
                handed_over_by,
                ..
            } => format!(
                "Vote term {term} last {last_term}/{last_seq} handed over by {handed_over_by:?}"
            ),
            HomeMsg::VoteReply {
                term,
                granted,
                promised,
                log_term,
                log_seq,
                primary,
                ..
            } => format!(
                "VoteReply term {term} granted {granted} promised {promised} log {log_term}/{log_seq} primary {primary:?}"
            ),
        }
    }
}

/// What a primary sends its backups.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(bound(
    serialize = "P: Serialize, Sn: Serialize, D: Serialize",
    deserialize = "P: DeserializeOwned, Sn: DeserializeOwned, D: DeserializeOwned"
))]
pub enum Update<P, Sn, D> {
    /// The whole state (a new backup, a new term, a missed update).
    Snapshot {
        /// How many peers the home has.
        size: u8,
        /// The members, primary first.
        members: Vec<P>,
        /// The members as last committed.
        config: Vec<P>,
        /// The state.
        state: Box<Sn>,
    },
    /// A change.
    Delta {
        /// The members, primary first.
        members: Vec<P>,
        /// The members as last committed.
        config: Vec<P>,
        /// The change of the state, if it changed.
        delta: Option<Box<D>>,
    },
    /// The receiver becomes primary (the sender hands over to a closer peer).
    Promote,
    /// The receiver is no longer a home member: drop the replica.
    Release,
    /// Nothing changed: the primary is there.
    Heartbeat,
}

/// The home messages of a state `S` kept under keys `K` by peers `P`.
pub type HomeMsgOf<K, P, S> = HomeMsg<K, P, <S as Replicated>::Snapshot, <S as Replicated>::Delta>;

/// What the home core wants done, or tells.
#[derive(Debug)]
pub enum HomeOutput<K, P, S: Replicated> {
    /// Send `msg` to `to`; `bulk` for snapshots and deltas (large).
    Send {
        /// The receiver.
        to: P,
        /// The message.
        msg: HomeMsgOf<K, P, S>,
        /// Whether it is large.
        bulk: bool,
    },
    /// A majority of both member lists holds the updates of `term` up to
    /// `seq` (this peer is their primary).
    Committed {
        /// The home.
        key: K,
        /// The term.
        term: u64,
        /// Highest update committed.
        seq: u64,
    },
    /// This peer became the primary of `key` (taken over from a lost
    /// primary, or handed over by `previous`).
    BecamePrimary {
        /// The home.
        key: K,
        /// The primary that handed the role over, if it was handed over.
        previous: Option<P>,
    },
    /// This peer is no longer the primary of `key`.
    SteppedDown {
        /// The home.
        key: K,
    },
    /// Effects whose update is committed.
    Released {
        /// The home.
        key: K,
        /// The effects, in the order they were proposed.
        effects: Vec<S::Effect>,
    },
    /// `peer` no longer holds a replica of `key` (it was released).
    Left {
        /// The home.
        key: K,
        /// The released member.
        peer: P,
    },
    /// The replica of `key` here was dropped (this peer left the home).
    Dropped {
        /// The home.
        key: K,
    },
    /// A majority of the would-be home of `key` promised term 1 to this
    /// peer ([`Homes::found`]): [`Homes::create`] may make the home now.
    Founded {
        /// The home.
        key: K,
    },
    /// The would-be home of `key` did not promise term 1 to this peer: a
    /// home exists (its primary, if a member named it), another peer
    /// creates it (that peer), or the answers did not come in time.
    NotFounded {
        /// The home.
        key: K,
        /// Where the home is, or is being made, if known.
        primary: Option<P>,
    },
}

/// [`Homes::propose`] on a member that is not the primary.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("this peer is not the home's primary")]
pub struct NotPrimary;

/// A member's role in a home.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Role<P> {
    /// It changes the state.
    Primary,
    /// It holds a replica of the state of `primary`.
    Backup {
        /// The primary it follows, if known.
        primary: Option<P>,
    },
}

/// Effects held until a majority of the home has the update `seq`.
struct Pending<E> {
    seq: u64,
    effects: Vec<E>,
}

/// A member campaigning to become primary.
struct Candidacy<P> {
    term: u64,
    votes: BTreeSet<P>,
    until: Instant,
    resend_at: Instant,
    /// The primary that handed this member the role (and gave it its
    /// vote), if it did.
    handed_over_by: Option<P>,
}

/// Peers asked to promise a creation, however few members the home
/// keeps: a home of one founded on one peer's word alone is founded again
/// by the next creator whose view of the closest peer differs.
const MIN_FOUNDING_VOTERS: usize = 3;

/// A creation in progress ([`Homes::found`]): an election for term 1
/// among the peers the home would have.
struct Founding<P> {
    /// How many members the home keeps.
    size: u8,
    /// The would-be home, this peer included.
    voters: Vec<P>,
    /// Those that promised term 1 to this peer (this peer included).
    granted: BTreeSet<P>,
    /// Those that promised it to another creator.
    refused: BTreeSet<P>,
    /// The other creator named by a refusal.
    hint: Option<P>,
    until: Instant,
}

/// One home held here: the state and the replication around it.
pub struct Home<P, S: Replicated> {
    state: S,
    /// How many peers the home has.
    size: usize,
    /// Primary first, then the backups holding a replica.
    members: Vec<P>,
    /// The members as last committed: every update, and every election,
    /// needs a majority of these as well as of `members`, so two sides of
    /// a partition can never both make progress.
    config: Vec<P>,
    role: Role<P>,
    term: u64,
    /// Primary: updates sent this term; backup: applied.
    seq: u64,
    /// Primary: highest update committed this term.
    committed: u64,
    /// Highest update of this term on this member's disk (a durable
    /// state: [`Replicated::durable`]).
    durable_seq: u64,
    /// Primary: backups with their acknowledged update.
    acked: BTreeMap<P, u64>,
    pending: VecDeque<Pending<S::Effect>>,
    /// Primary: members named in update `.0`, not yet committed.
    proposed: Option<(u64, Vec<P>)>,
    /// Primary: the member lists changed since the last update.
    members_dirty: bool,
    /// Primary: the update from which on every update carries the current
    /// member lists (the first one sent after they last changed). A member
    /// left out of both lists is released only once this update is
    /// committed: until a majority holds lists without it, backups may
    /// still need its vote to elect a primary.
    lists_seq: u64,
    /// Promoted a closer peer and waits for it to confirm.
    handing_over: Option<P>,
    /// Primary: the last lease round sent; backup: the highest heard from
    /// the primary of this term.
    round: u64,
    /// Primary: when each recent round was first sent, oldest first.
    rounds: VecDeque<(u64, Instant)>,
    /// Primary: the highest round each backup acknowledged this term.
    round_acked: BTreeMap<P, u64>,
    /// Backup: the highest round heard from a primary, with its term.
    round_heard: (u64, u64),
    /// Primary: the peer that handed it the role in this term, if one
    /// did. Not handed back on that peer's acks: it let go of the role
    /// (it may be leaving, which this peer may not know yet), and handing
    /// it straight back would bounce the role between them.
    handed_by: Option<P>,
    /// Highest term this member voted for another member in, and whom.
    promised: u64,
    voted_for: Option<P>,
    /// Highest term this member campaigned for.
    campaigned: u64,
    candidacy: Option<Candidacy<P>>,
    /// Backup without a live primary: when to campaign.
    campaign_at: Option<Instant>,
    /// Backup: when it last heard from its primary; primary: when it last
    /// sent its backups anything.
    heard_at: Instant,
    /// When this home next needs `handle_timeout`, as in the timer table.
    deadline: Option<Instant>,
    /// Primary: part of the state is away for a moment (an object's
    /// handler runs on another thread): the role stays here until it is
    /// back ([`Home::set_pinned`]).
    pinned: bool,
}

impl<P: PeerKey, S: Replicated> Home<P, S> {
    fn new(
        state: S,
        size: usize,
        members: Vec<P>,
        config: Vec<P>,
        role: Role<P>,
        term: u64,
        now: Instant,
    ) -> Self {
        Home {
            state,
            size: size.max(1),
            members,
            config,
            role,
            term,
            seq: 0,
            committed: 0,
            durable_seq: 0,
            acked: BTreeMap::new(),
            pending: VecDeque::new(),
            proposed: None,
            members_dirty: false,
            lists_seq: 0,
            handing_over: None,
            round: 0,
            rounds: VecDeque::new(),
            round_acked: BTreeMap::new(),
            round_heard: (0, 0),
            handed_by: None,
            promised: term,
            voted_for: None,
            campaigned: term,
            candidacy: None,
            campaign_at: None,
            heard_at: now,
            deadline: None,
            pinned: false,
        }
    }

    /// The replicated state.
    pub fn state(&self) -> &S {
        &self.state
    }

    /// The replicated state, to change (on the primary, then
    /// [`Homes::propose`]).
    pub fn state_mut(&mut self) -> &mut S {
        &mut self.state
    }

    /// Whether this member is the primary.
    pub fn is_primary(&self) -> bool {
        self.role == Role::Primary
    }

    /// This member's role.
    pub fn role(&self) -> &Role<P> {
        &self.role
    }

    /// The primary this member follows (the first member when primary).
    pub fn primary(&self) -> Option<&P> {
        match &self.role {
            Role::Primary => self.members.first(),
            Role::Backup { primary } => primary.as_ref(),
        }
    }

    /// The members, primary first.
    pub fn members(&self) -> &[P] {
        &self.members
    }

    /// The members as last committed.
    pub fn config(&self) -> &[P] {
        &self.config
    }

    /// Primary: whether a majority of a full home holds the state and
    /// knows that home as committed, so that losing any minority of it,
    /// this primary included, loses nothing. Full means `size` members, or
    /// every one of the `peers` the network has (this one counted) when it
    /// has fewer.
    pub fn replicated(&self, peers: usize) -> bool {
        self.is_primary()
            && self.members == self.config
            && self.proposed.is_none()
            && !self.members_dirty
            && self.committed >= self.lists_seq.max(1)
            && self.config.len() >= self.size.min(peers.max(1))
    }

    /// Whether `peer` is among the members, latest or committed.
    pub fn has_member(&self, peer: &P) -> bool {
        self.members.contains(peer) || self.config.contains(peer)
    }

    /// The current term.
    pub fn term(&self) -> u64 {
        self.term
    }

    /// Primary: updates sent this term; backup: applied.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// How many peers the home has.
    pub fn size(&self) -> usize {
        self.size
    }

    /// Whether a hand-over of the primary role is still unconfirmed.
    pub fn handing_over(&self) -> bool {
        self.handing_over.is_some()
    }

    /// Primary: keeps the role here (`true`) while part of the state is
    /// away, so that no planned hand-over (to a closer peer, or on
    /// leaving) moves a state that lacks it; once unpinned, the next
    /// acknowledgement from the closer member hands over as usual. A
    /// failure still elects a successor.
    pub fn set_pinned(&mut self, pinned: bool) {
        self.pinned = pinned;
    }

    /// Primary: drops the effects still waiting for a commit (the state
    /// that made them was discarded); how many.
    pub fn discard_effects(&mut self) -> usize {
        let dropped = self.pending.iter().map(|p| p.effects.len()).sum();
        self.pending.clear();
        dropped
    }

    /// Forgets what only a primary keeps.
    fn drop_primary_state(&mut self) {
        self.pinned = false;
        self.acked.clear();
        self.rounds.clear();
        self.round_acked.clear();
        self.pending.clear();
        self.proposed = None;
        self.members_dirty = false;
        self.state.clear_primary_state();
    }

    /// The members whose votes count, `me` apart: every member of the
    /// latest and of the committed member lists.
    fn voters(&self, me: &P) -> Vec<P> {
        let mut all: BTreeSet<P> = self.members.iter().cloned().collect();
        all.extend(self.config.iter().cloned());
        all.remove(me);
        all.into_iter().collect()
    }

    /// Whether this member's primary is there: itself, or heard from just
    /// now, or live in the view and heard from within the silence limit
    /// (an active primary sends heartbeats; a restarted peer is live but
    /// has lost its role).
    fn primary_present(
        &self,
        now: Instant,
        config: &HomeConfig,
        live: impl Fn(&P) -> bool,
    ) -> bool {
        if self.is_primary() {
            return true;
        }
        let Some(primary) = self.primary() else {
            return false;
        };
        if !self.state.active() {
            return live(primary);
        }
        let quiet = now.saturating_duration_since(self.heard_at);
        quiet < config.heartbeat_interval * 2 || (live(primary) && quiet < config.primary_silence)
    }

    /// Whether this member takes an update of its own term from `from`,
    /// whose history in that term runs to `seq`, `committed` of it known
    /// committed. A term has one primary, elected by a majority; only
    /// creation makes homes of term 1 without a vote, so two of them can
    /// meet. Then a backup stays with the primary it follows (another
    /// one's snapshot would replace what its own primary committed), and a
    /// primary gives way only to a history with more committed, or as
    /// much and longer (ties to the closer one): a populated home never
    /// yields to an empty one, nor a committed one to a creator's that a
    /// majority never held.
    fn yields_in_term(&self, from: &P, (seq, committed): (u64, u64), me_closer: bool) -> bool {
        match &self.role {
            Role::Primary => {
                (committed, seq) > (self.committed, self.seq)
                    || ((committed, seq) == (self.committed, self.seq) && !me_closer)
            }
            Role::Backup { primary: Some(p) } => p == from,
            Role::Backup { primary: None } => true,
        }
    }

    /// Whether `me` must not campaign: it is not among the latest members.
    fn leaving_member(&self, me: &P) -> bool {
        !self.members.contains(me)
    }

    /// Whether nothing is in flight that a hand-over would lose.
    fn settled(&self) -> bool {
        self.pending.is_empty() && self.state.settled()
    }
}

impl<P, S: Replicated> Deref for Home<P, S> {
    type Target = S;
    fn deref(&self) -> &S {
        &self.state
    }
}

impl<P, S: Replicated> DerefMut for Home<P, S> {
    fn deref_mut(&mut self) -> &mut S {
        &mut self.state
    }
}

/// How close a peer is to a key: smaller is closer.
pub type Closeness<K, P> = Box<dyn Fn(&K, &P) -> u128 + Send>;

/// The homes of one peer: every replicated state it holds, as primary or
/// backup.
pub struct Homes<K, P: PeerKey, S: Replicated> {
    me: P,
    config: HomeConfig,
    closeness: Closeness<K, P>,
    rng: SmallRng,
    /// Live members of the view, not this peer.
    live: BTreeSet<P>,
    /// Peers leaving gracefully (not in `live`, still answering): their
    /// homes go on without them, with no replacement if none is left.
    draining: BTreeSet<P>,
    /// Peers suspected, not yet declared dead ([`Homes::set_suspected`]).
    suspected: BTreeSet<P>,
    /// Peers declared dead, since when ([`Homes::set_lost`]); at most
    /// [`MAX_LOST`], the longest lost forgotten first.
    lost: BTreeMap<P, Instant>,
    /// This peer is leaving gracefully ([`Homes::hand_over_all`]): it is
    /// no longer among the closest peers of any key while another live
    /// peer can take its place, so even a home it is the only member of
    /// moves.
    leaving: bool,
    homes: BTreeMap<K, Home<P, S>>,
    /// The term of each home this peer was released from (at most
    /// `max_homes` of them): it takes no replica of an older term of that
    /// home again. Having dropped its replica, it would otherwise take a
    /// cut-off primary of the term it left for a new home, and be the
    /// majority that primary needs.
    left: BTreeMap<K, u64>,
    /// Creations in progress here (at most `max_homes`).
    founding: BTreeMap<K, Founding<P>>,
    /// Term 1 promised to a creator, for keys of which this peer holds no
    /// home, until when (at most `max_homes`). Until it lapses no other
    /// creator gets a promise, and whether or not it lapsed, no replica of
    /// term 1 is taken from another creator: one cut off after its
    /// election cannot commit its home beside the one a later creator
    /// founded with this peer's promise.
    promises: BTreeMap<K, (P, Instant)>,
    /// The members of each home founded here and not yet created
    /// ([`Homes::create`] takes them).
    founded: BTreeMap<K, Vec<P>>,
    /// (deadline, key) of every home that has one, and of every creation
    /// in progress.
    timers: BTreeSet<(Instant, K)>,
    outputs: VecDeque<HomeOutput<K, P, S>>,
}

impl<K, P, S> Homes<K, P, S>
where
    K: Copy + Ord + Debug,
    P: PeerKey,
    S: Replicated,
{
    /// The homes of peer `me`; `closeness` orders peers by distance to a
    /// key (the home of a key is its closest live peers), `seed` seeds the
    /// election jitter.
    pub fn new(me: P, config: HomeConfig, closeness: Closeness<K, P>, seed: u64) -> Self {
        Homes {
            me,
            config,
            closeness,
            rng: SmallRng::seed_from_u64(seed),
            live: BTreeSet::new(),
            draining: BTreeSet::new(),
            suspected: BTreeSet::new(),
            lost: BTreeMap::new(),
            leaving: false,
            homes: BTreeMap::new(),
            left: BTreeMap::new(),
            founding: BTreeMap::new(),
            promises: BTreeMap::new(),
            founded: BTreeMap::new(),
            timers: BTreeSet::new(),
            outputs: VecDeque::new(),
        }
    }

    /// This peer.
    pub fn me(&self) -> &P {
        &self.me
    }

    /// The timing and limits in use.
    pub fn config(&self) -> &HomeConfig {
        &self.config
    }

    /// A new home for `key` with this peer as its primary (term 1); it
    /// grows to the `size` closest live peers. Founded here
    /// ([`HomeOutput::Founded`]), its members are the would-be home, so
    /// that nothing commits before a majority of them holds it; otherwise
    /// this peer is its only member. Unless the key
    /// is fresh (made here), ask the would-be home first with
    /// [`Homes::found`]: a peer that creates a home another peer holds
    /// already makes a second primary of term 1.
    pub fn create(&mut self, now: Instant, key: K, state: S, size: u8) {
        if self.homes.contains_key(&key) {
            return;
        }
        let members = self
            .founded
            .remove(&key)
            .unwrap_or_else(|| vec![self.me.clone()]);
        let mut home = Home::new(
            state,
            usize::from(size),
            members.clone(),
            members,
            Role::Primary,
            1,
            now,
        );
        home.seq = 1;
        self.homes.insert(key, home);
        self.maintain(now, key);
        self.reschedule(now, key);
    }

    /// A replica read back from this peer's disk after a restart: it
    /// rejoins the home of `key` as a backup without a primary, and
    /// campaigns once none is heard from. `false` if a home of `key` is
    /// held already, the lists are unusable, or the homes are full.
    #[allow(clippy::too_many_arguments)]
    pub fn restore_backup(
        &mut self,
        now: Instant,
        key: K,
        state: S,
        size: u8,
        members: Vec<P>,
        config: Vec<P>,
        (term, seq): (u64, u64),
    ) -> bool {
        if self.homes.contains_key(&key)
            || self.homes.len() >= self.config.max_homes
            || !valid_members(&members)
            || !valid_members(&config)
        {
            return false;
        }
        let role = Role::Backup { primary: None };
        let mut home = Home::new(state, usize::from(size), members, config, role, term, now);
        home.seq = seq;
        // Read back from disk: durable as it is.
        home.durable_seq = seq;
        self.homes.insert(key, home);
        self.reschedule(now, key);
        true
    }

    /// The state of `key` as of update `seq` of `term` is on this
    /// member's disk. With a durable state ([`Replicated::durable`]) a
    /// backup acknowledges updates only up to there, and a primary counts
    /// itself as holding them only up to there.
    pub fn durable(&mut self, now: Instant, key: K, term: u64, seq: u64) {
        let Some(h) = self.homes.get_mut(&key) else {
            return;
        };
        let seq = seq.min(h.seq);
        if term != h.term || seq <= h.durable_seq {
            return;
        }
        h.durable_seq = seq;
        if h.is_primary() {
            let growing = h.members.len() < h.size;
            self.release(now, key);
            if growing {
                self.maintain(now, key);
            }
        } else if let Some(primary) = h.primary().cloned() {
            self.ack_held(primary, key);
        }
        self.reschedule(now, key);
    }

    /// The home of `key` held here.
    pub fn get(&self, key: &K) -> Option<&Home<P, S>> {
        self.homes.get(key)
    }

    /// The home of `key` held here, to change its state.
    pub fn get_mut(&mut self, key: &K) -> Option<&mut Home<P, S>> {
        self.homes.get_mut(key)
    }

    /// Whether a home of `key` is held here.
    pub fn contains_key(&self, key: &K) -> bool {
        self.homes.contains_key(key)
    }

    /// The keys of the homes held here.
    pub fn keys(&self) -> impl Iterator<Item = &K> {
        self.homes.keys()
    }

    /// The homes held here.
    pub fn iter(&self) -> impl Iterator<Item = (&K, &Home<P, S>)> {
        self.homes.iter()
    }

    /// The homes held here, without their keys.
    pub fn values(&self) -> impl Iterator<Item = &Home<P, S>> {
        self.homes.values()
    }

    /// The homes held here, to change their states.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = (&K, &mut Home<P, S>)> {
        self.homes.iter_mut()
    }

    /// How many homes are held here.
    pub fn len(&self) -> usize {
        self.homes.len()
    }

    /// Whether no home is held here.
    pub fn is_empty(&self) -> bool {
        self.homes.is_empty()
    }

    /// Drops the replica of `key` here because its primary of `term`
    /// released this peer, remembering the term it left in.
    pub(crate) fn leave(&mut self, key: &K, term: u64) {
        let Some(h) = self.homes.get(key) else {
            return;
        };
        let term = term.max(h.term).max(h.promised);
        self.remove(key);
        if self.left.len() >= self.config.max_homes && !self.left.contains_key(key) {
            self.left.pop_first();
        }
        self.left.insert(*key, term);
    }

    /// The term this peer was released from the home of `key` in, if it
    /// remembers one.
    pub(crate) fn left_in(&self, key: &K) -> Option<u64> {
        self.left.get(key).copied()
    }

    /// Drops the home of `key` here (its retention is over), without a word
    /// to the other members.
    pub fn remove(&mut self, key: &K) -> Option<S> {
        let home = self.homes.remove(key)?;
        if let Some(at) = home.deadline {
            self.timers.remove(&(at, *key));
        }
        Some(home.state)
    }

    /// This peer's role in the home of `key`, if it holds one.
    pub fn role(&self, key: &K) -> Option<&Role<P>> {
        self.homes.get(key).map(|h| &h.role)
    }

    /// The live peers, this one included, closest to `key`: its home.
    /// Ties keep the order this peer first, then the others in order. A
    /// peer leaving gracefully counts itself out while others are live.
    pub fn home_of(&self, key: &K, size: usize) -> Vec<P> {
        self.closest(key, size, None)
    }

    /// The `size` peers closest to `key` among this one (unless leaving),
    /// the live ones and, with `absent_at`, those suspected but not yet
    /// declared dead and those declared dead less than `founding_memory`
    /// before it.
    fn closest(&self, key: &K, size: usize, absent_at: Option<Instant>) -> Vec<P> {
        let size = size.max(1);
        let me = (!self.leaving || self.live.is_empty()).then_some(&self.me);
        // Only a founding counts absent peers: `home_of`, on every
        // membership change of every home, skips them whole.
        let mut absent = BTreeSet::new();
        if let Some(now) = absent_at {
            let memory = self.config.founding_memory;
            let lost = self
                .lost
                .iter()
                .filter(|(_, since)| now < **since + memory)
                .map(|(p, _)| p);
            absent = self
                .suspected
                .iter()
                .chain(lost)
                .filter(|p| !self.live.contains(*p) && **p != self.me)
                .collect();
        }
        // Each distance is computed once, and only the `size` closest are
        // sorted: this runs on every membership change of every home.
        let mut candidates: Vec<(u128, usize, &P)> = me
            .into_iter()
            .chain(&self.live)
            .chain(absent)
            .enumerate()
            .map(|(i, p)| ((self.closeness)(key, p), i, p))
            .collect();
        let by_distance =
            |a: &(u128, usize, &P), b: &(u128, usize, &P)| (a.0, a.1).cmp(&(b.0, b.1));
        if candidates.len() > size {
            candidates.select_nth_unstable_by(size - 1, by_distance);
            candidates.truncate(size);
        }
        candidates.sort_unstable_by(by_distance);
        candidates.into_iter().map(|(_, _, p)| p.clone()).collect()
    }

    fn is_live(&self, peer: &P) -> bool {
        *peer == self.me || self.live.contains(peer)
    }

    /// Membership changed: the live peers (this one apart). Primaries drop
    /// lost peers that were about to join, snapshot newcomers of the home,
    /// release those no longer in it and hand over to closer ones; backups
    /// whose primary is gone campaign.
    pub fn set_members(&mut self, now: Instant, live: impl IntoIterator<Item = P>) {
        self.set_live(live);
        self.refresh(now);
    }

    /// Replaces the live peers (this one apart) without looking at the
    /// homes yet: [`Homes::refresh`] does.
    pub fn set_live(&mut self, live: impl IntoIterator<Item = P>) {
        self.live = live.into_iter().filter(|p| *p != self.me).collect();
    }

    /// One peer's change, for a caller that follows the view change by
    /// change: `alive` or not. Takes effect at the next
    /// [`Homes::refresh`].
    pub fn update_member(&mut self, peer: P, alive: bool) {
        if peer == self.me {
            return;
        }
        if alive {
            self.live.insert(peer);
        } else {
            self.live.remove(&peer);
        }
    }

    /// Whether `peer` is suspected (not live, not yet declared dead): a
    /// home being founded still asks it ([`Homes::found`]), since it may
    /// hold the home already. Takes effect at the next founding.
    pub fn set_suspected(&mut self, peer: P, suspected: bool) {
        if suspected && peer != self.me {
            self.suspected.insert(peer);
        } else {
            self.suspected.remove(&peer);
        }
    }

    /// Whether `peer` was declared dead (`Some(when)`) or not (`None`): a
    /// home founded less than `founding_memory` after still asks it
    /// ([`Homes::found`]), since a peer only cut off may hold the home
    /// already, or promise it to a creator on its side. The earliest time
    /// given while it stays dead counts.
    pub fn set_lost(&mut self, peer: P, since: Option<Instant>) {
        match since {
            Some(since) if peer != self.me => {
                self.lost.entry(peer).or_insert(since);
                while self.lost.len() > MAX_LOST {
                    let oldest = self.lost.iter().min_by_key(|(_, t)| **t);
                    let Some(p) = oldest.map(|(p, _)| p.clone()) else {
                        break;
                    };
                    self.lost.remove(&p);
                }
            }
            _ => {
                self.lost.remove(&peer);
            }
        }
    }

    /// Whether `peer` is leaving gracefully: it is no home's candidate
    /// ([`Homes::update_member`] with `alive` false) but still answers, so
    /// primaries drop it from their member lists even with no peer to take
    /// its place, while it can still confirm the lists without it (a home
    /// of three whose members leave one after the other then never waits
    /// for a majority that is gone). Takes effect at the next
    /// [`Homes::refresh`].
    pub fn set_draining(&mut self, peer: P, draining: bool) {
        if draining && peer != self.me {
            self.draining.insert(peer);
        } else {
            self.draining.remove(&peer);
        }
    }

    /// The live peers changed ([`Homes::set_live`],
    /// [`Homes::update_member`]) or may have: every home adjusts, as in
    /// [`Homes::set_members`].
    pub fn refresh(&mut self, now: Instant) {
        let keys: Vec<K> = self.homes.keys().copied().collect();
        for key in keys {
            let Some(h) = self.homes.get_mut(&key) else {
                continue;
            };
            if h.is_primary() {
                // Lost peers that were about to join: forget them. Lost
                // members stay until a replacement has joined (`maintain`):
                // they may only be cut off, and removing them first would
                // shrink the majority the home needs. Peers leaving
                // gracefully stay until `maintain` releases them: they wait
                // for that word to leave.
                let live = &self.live;
                let draining = &self.draining;
                let me = &self.me;
                let members = &h.members;
                let config = &h.config;
                h.acked.retain(|p, _| {
                    p == me
                        || live.contains(p)
                        || draining.contains(p)
                        || members.contains(p)
                        || config.contains(p)
                });
                self.maintain(now, key);
                let _ = self.propose(now, key, Vec::new());
            } else {
                self.campaign(now, key);
            }
            self.reschedule(now, key);
        }
    }

    /// Handles a home message from `from`. Every field is untrusted:
    /// malformed or absurd messages are ignored or answered with a nack.
    pub fn handle(&mut self, now: Instant, from: P, msg: HomeMsgOf<K, P, S>) {
        if from == self.me {
            return;
        }
        let key = msg.key();
        match msg {
            HomeMsg::Replica {
                term,
                seq,
                committed,
                round,
                update,
                ..
            } => self.on_replica(now, from, key, (term, seq, committed, round), update),
            HomeMsg::Ack {
                term, seq, round, ..
            } => self.on_ack(now, from, key, term, (seq, round)),
            HomeMsg::Nack { term, .. } => self.on_nack(now, from, key, term),
            HomeMsg::Vote {
                term,
                last_term,
                last_seq,
                handed_over_by,
                ..
            } => self.on_vote(now, from, key, term, (last_term, last_seq), handed_over_by),
            reply @ HomeMsg::VoteReply { .. } => self.on_vote_reply(now, from, reply),
        }
        self.reschedule(now, key);
    }

    /// Heartbeats, elections, member changes that are due.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(&(at, key)) = self.timers.first() {
            if at > now {
                break;
            }
            self.timers.remove(&(at, key));
            if self.founding.get(&key).is_some_and(|f| f.until == at) {
                // Those still silent are taken as gone: a majority of
                // promises from the would-be home founds it.
                self.count_promises(key, true);
                self.not_founded(key, None);
                continue;
            }
            if let Some(h) = self.homes.get_mut(&key) {
                h.deadline = None;
            }
            self.timeout(now, key);
            self.reschedule(now, key);
        }
    }

    fn timeout(&mut self, now: Instant, key: K) {
        let Some(h) = self.homes.get(&key) else {
            return;
        };
        if !h.is_primary() {
            self.campaign(now, key);
            return;
        }
        if h.acked.keys().any(|b| !h.members.contains(b)) {
            // Members joining or leaving.
            self.maintain(now, key);
        }
        if let Some(h) = self.homes.get_mut(&key) {
            if h.is_primary()
                && now.saturating_duration_since(h.heard_at) >= self.config.heartbeat_interval
            {
                h.heard_at = now;
                let (term, seq) = (h.term, h.seq);
                let backups: Vec<P> = h.acked.keys().cloned().collect();
                for to in backups {
                    self.send_replica(now, to, key, (term, seq), Update::Heartbeat);
                }
            }
        }
    }

    /// When [`Homes::handle_timeout`] is next needed.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.first().map(|(at, _)| *at)
    }

    /// The next thing to do.
    pub fn poll(&mut self) -> Option<HomeOutput<K, P, S>> {
        self.outputs.pop_front()
    }

    /// Leaving: every primary role goes to the closest live peer once it
    /// holds the latest update (a peer not yet in the home gets a snapshot
    /// first, so a home this peer alone holds moves too). Handing over to
    /// a member that has not confirmed the latest update would make it
    /// campaign with what it has: the role's message may overtake the
    /// update (they travel on different traffic classes), and the
    /// update, a planned move's checkpoint included, would be lost.
    pub fn hand_over_all(&mut self, now: Instant) {
        self.leaving = true;
        let keys: Vec<K> = self.homes.keys().copied().collect();
        for key in keys {
            if self.homes.get(&key).is_some_and(|h| h.is_primary()) {
                self.maintain(now, key);
                self.reschedule(now, key);
            }
        }
    }

    /// Whether every primary role held here was handed over and confirmed
    /// (or has no one to go to).
    pub fn handed_over(&self) -> bool {
        self.homes
            .values()
            .all(|h| h.handing_over.is_none() && (!h.is_primary() || h.members.len() <= 1))
    }

    /// Whether no home needs this peer any more: it was handed over and
    /// released from every home it shared with others, so leaving takes
    /// no member a home counts on; a home it alone holds counts only if no
    /// live peer could take it.
    pub fn released(&self) -> bool {
        let nobody_to_take_it = !self.leaving || self.live.is_empty();
        self.homes.values().all(|h| {
            h.handing_over.is_none()
                && h.is_primary()
                && h.members.iter().chain(&h.config).all(|m| *m == self.me)
                && nobody_to_take_it
        })
    }

    /// What keeps [`Homes::released`] false, for the log of a leave that
    /// ran out of time: each home still held here, with this peer's role,
    /// the members, the committed members and the peer a hand-over waits
    /// for.
    pub fn unreleased(&self) -> Vec<String> {
        if self.released() {
            return Vec::new();
        }
        self.homes
            .iter()
            .map(|(key, h)| {
                format!(
                    "{key:?}: {:?} term {} members {:?} committed {:?} handing over to {:?}",
                    h.role, h.term, h.members, h.config, h.handing_over
                )
            })
            .collect()
    }

    /// Puts the home of `key` in the timer table at its next deadline.
    fn reschedule(&mut self, now: Instant, key: K) {
        let Some(h) = self.homes.get_mut(&key) else {
            return;
        };
        let armed = h.deadline.take();
        if let Some(at) = armed {
            self.timers.remove(&(at, key));
        }
        let config = &self.config;
        let next = if h.is_primary() {
            let mut at = h.heard_at + config.heartbeat_interval;
            if h.acked.keys().any(|b| !h.members.contains(b)) {
                // A recheck already armed keeps its time: updates streaming
                // in faster than the interval would otherwise push it away
                // for as long as they last.
                let recheck = now + config.recheck_interval;
                at = at.min(armed.map_or(recheck, |armed| armed.min(recheck)));
            }
            Some(at)
        } else if h.leaving_member(&self.me) {
            None
        } else if let Some(c) = &h.candidacy {
            Some(c.until.min(c.resend_at))
        } else if let Some(at) = h.campaign_at {
            Some(at)
        } else {
            let live = |p: &P| *p == self.me || self.live.contains(p);
            if !h.state.active() {
                // Only membership replaces the primary of an inactive state.
                None
            } else if h.primary_present(now, config, live) {
                let mut at = h.heard_at + config.heartbeat_interval * 2;
                if h.primary().is_some_and(live) {
                    at = at.max(h.heard_at + config.primary_silence);
                }
                Some(at)
            } else {
                // Campaigning is not possible now (no term left): look
                // again later rather than spin.
                Some(now + config.election_stagger)
            }
        };
        if let Some(at) = next {
            let at = at.max(now);
            h.deadline = Some(at);
            self.timers.insert((at, key));
        }
    }
}

/// Whether more than half of `set` satisfies `holds`.
pub(crate) fn majority<P>(set: &[P], holds: impl Fn(&P) -> bool) -> bool {
    set.iter().filter(|m| holds(m)).count() * 2 > set.len()
}

/// The highest update more than half of `set` holds, given what each
/// member holds.
fn majority_seq<P>(set: &[P], held: impl Fn(&P) -> u64) -> u64 {
    let mut seqs: Vec<u64> = set.iter().map(held).collect();
    seqs.sort_unstable_by(|a, b| b.cmp(a));
    seqs.get(set.len() / 2).copied().unwrap_or(0)
}

/// Whether a member list from the network can be used: not empty, not
/// absurdly long, no peer twice.
fn valid_members<P: Ord>(list: &[P]) -> bool {
    if list.is_empty() || list.len() > MAX_MEMBERS {
        return false;
    }
    let set: BTreeSet<&P> = list.iter().collect();
    set.len() == list.len()
}
