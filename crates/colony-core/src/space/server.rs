//! The space core of one peer: the partitions homed here (their
//! replication, the operations their primary applies, lock waiters and
//! lease expiry, creation of a partition's first home) and, through
//! [`super::client`], this peer's own requests.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use super::client::{Client, SpaceClientConfig};
use super::hot::{HotConfig, HotTracker};
use super::partition::{Applied, Partition, Revoked, Unpersisted, Waiters};
use super::shards::{HeldWrite, ShardStore, MAX_HELD_SHARDS};
use super::{
    partition_point, LockLost, ObjectKey, PartitionId, RequestId, Shard, ShardId, SpaceError,
    SpaceMsg, SpaceOp, SpaceReply,
};
use crate::home::{HomeConfig, HomeMsgOf, HomeOutput, Homes, Role};
use crate::PeerKey;

/// What a partition's primary answers once the update holding it is
/// committed (the effect of [`Partition`]).
#[derive(Clone, Debug)]
pub struct Answer {
    /// The request.
    pub id: RequestId,
    /// What happened.
    pub result: Result<SpaceReply, SpaceError>,
}

/// Settings of the space core.
#[derive(Clone, Debug)]
pub struct SpaceConfig {
    /// Peers per partition home.
    pub home_size: u8,
    /// Largest object value accepted.
    pub max_object_bytes: usize,
    /// Bytes of object values this peer holds at most (its share of the
    /// space); a primary at its limit refuses new writes with
    /// [`SpaceError::Full`].
    pub capacity_bytes: u64,
    /// Requests waiting for locks per partition.
    pub max_waiters: usize,
    /// Requests applied here and not yet committed (answered); more are
    /// refused with [`SpaceError::Busy`] until the home catches up.
    pub max_uncommitted: usize,
    /// How long a peer waits for the answers to its probe before it gives
    /// up creating a partition's home (it probes again on the next request).
    pub probe_timeout: Duration,
    /// How long after this peer starts (its space core first sees the
    /// time) it may create a partition's home: its view of the network
    /// must have formed first. A restarted peer knows nobody at first, and
    /// would take itself for alone, or judge from the few peers it met.
    /// For as long, a primary role it takes over leaves the locks of peers
    /// it has not heard of to their leases (it would take them all for
    /// dead).
    pub create_after_start: Duration,
    /// Replication timing.
    pub home: HomeConfig,
    /// This peer's own requests.
    pub client: SpaceClientConfig,
    /// Copying hot objects beyond their homes.
    pub hot: HotConfig,
    /// Deliberately broken, for checker self-tests only: every member of a
    /// partition's home answers a read from its own replica at once,
    /// without the round that proves a primary still leads (and a backup
    /// without redirecting), so reads can be stale. Never set it outside a
    /// test of a checker.
    #[doc(hidden)]
    pub unsafe_local_reads: bool,
}

impl Default for SpaceConfig {
    fn default() -> Self {
        SpaceConfig {
            home_size: 3,
            max_object_bytes: 16 << 20,
            capacity_bytes: 1 << 30,
            max_waiters: 1024,
            max_uncommitted: 65_536,
            probe_timeout: Duration::from_secs(2),
            create_after_start: Duration::from_secs(5),
            home: HomeConfig {
                max_homes: usize::from(super::PARTITIONS),
                ..HomeConfig::default()
            },
            client: SpaceClientConfig::default(),
            hot: HotConfig::default(),
            unsafe_local_reads: false,
        }
    }
}

/// An input to the space core.
#[derive(Debug)]
pub enum SpaceInput<P> {
    /// A space message from `from`.
    Message {
        /// The sender.
        from: P,
        /// The message.
        msg: SpaceMsg<P>,
    },
    /// A message to `to` could not be delivered (its pipe failed).
    SendFailed {
        /// The peer.
        to: P,
        /// The request it carried, if it was one.
        id: Option<RequestId>,
    },
    /// The shard written for [`SpaceOutput::PersistShard`] is on disk.
    ShardDurable {
        /// Which.
        id: ShardId,
    },
    /// The state of `partition` up to update `seq` of `term` is on disk.
    Durable {
        /// The partition.
        partition: PartitionId,
        /// The term.
        term: u64,
        /// The update.
        seq: u64,
    },
}

/// What the space core wants done, or tells.
#[derive(Debug)]
pub enum SpaceOutput<P> {
    /// Send `msg` to `to`; `bulk` for snapshots and large values.
    Send {
        /// The receiver.
        to: P,
        /// The message.
        msg: SpaceMsg<P>,
        /// Whether it is large.
        bulk: bool,
    },
    /// Write what changed in `partition` to disk, then answer with
    /// [`SpaceInput::Durable`] for (`term`, `seq`).
    Persist {
        /// The partition.
        partition: PartitionId,
        /// The home's term.
        term: u64,
        /// Its update.
        seq: u64,
        /// How many peers the home has.
        size: u8,
        /// The members, primary first.
        members: Vec<P>,
        /// The members as last committed.
        config: Vec<P>,
        /// What to write.
        data: Unpersisted,
    },
    /// Write a shard this peer now holds to disk, then answer with
    /// [`SpaceInput::ShardDurable`].
    PersistShard {
        /// The object it is part of.
        key: ObjectKey,
        /// Which shard.
        id: ShardId,
        /// The shard.
        shard: Shard,
    },
    /// Delete these shards from disk.
    UnpersistShards {
        /// Which.
        ids: Vec<ShardId>,
    },
    /// This peer no longer holds `partition`: delete it from disk.
    Unpersist {
        /// The partition.
        partition: PartitionId,
    },
    /// The answer to a request made with [`Space::request`].
    Answer {
        /// The request.
        id: RequestId,
        /// What happened.
        result: Result<SpaceReply, SpaceError>,
    },
    /// A lock this peer held was lost (its renewal was refused): writes
    /// with its token will be refused.
    LockLost(LockLost),
}

/// A request waiting for a lock at its primary.
#[derive(Clone, Debug)]
struct Waiter<P> {
    from: P,
    id: RequestId,
    generation: u64,
    op: SpaceOp,
}

/// A partition this peer is about to create, waiting for its probes.
struct Creation<P> {
    /// Probed peers yet to answer.
    asked: BTreeSet<P>,
    /// Probed peers that answered they hold no replica.
    answered: BTreeSet<P>,
    until: Instant,
}

/// Counters of the space core.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SpaceCounters {
    /// Operations applied by primaries here.
    pub applied: u64,
    /// Requests redirected to another member.
    pub redirected: u64,
    /// Requests refused as malformed or out of bounds.
    pub refused: u64,
    /// Partition homes created here.
    pub created: u64,
    /// Lock grants whose leases ran out.
    pub expired_leases: u64,
    /// Lock grants revoked before their leases ran out because their
    /// holder's peer was declared dead, or was not a live member in this
    /// peer's view when it took a partition's primary role over.
    pub revoked_locks: u64,
    /// Cached reads answered from this peer's replicas.
    pub replica_reads: u64,
    /// Cached reads answered from this peer's own cache.
    pub cache_hits: u64,
    /// Cached reads answered from hot copies held here for other homes.
    pub hot_reads: u64,
    /// Hot copies sent to peers beyond their homes.
    pub hot_copies_sent: u64,
    /// Erasure-coded shards stored here for writers.
    pub shards_stored: u64,
    /// Shards asked of this peer that it did not hold.
    pub shards_missing: u64,
}

/// The space core of one peer.
pub struct Space<P: PeerKey> {
    me: P,
    config: SpaceConfig,
    homes: Homes<PartitionId, P, Partition>,
    /// Who asked each request a primary here is answering.
    askers: BTreeMap<RequestId, (PartitionId, P)>,
    waiters: BTreeMap<PartitionId, Waiters<Waiter<P>>>,
    creating: BTreeMap<PartitionId, Creation<P>>,
    /// Per partition with no home here, the creator this peer denied
    /// holding it to, and until when: meanwhile it denies no other creator
    /// and creates none itself, so two creators cannot both count it.
    promises: BTreeMap<PartitionId, (P, Instant)>,
    /// The primary (or creator) a probe answer named, per partition with
    /// no home here, and until when it is believed: a creator may fail, and
    /// a primary may be deposed, so a hint that outlived them would send
    /// requests back and forth for ever.
    hints: BTreeMap<PartitionId, (P, Instant)>,
    /// Every live member (this peer apart), offering room or not: probes
    /// go to the closest of them.
    members: BTreeSet<P>,
    /// Every peer (this one apart) that offers room, alive or declared
    /// dead but not yet forgotten by membership: a partition's home is
    /// created only if a majority of the closest of them deny holding it
    /// ([`Space::creation_quorum`]).
    known: BTreeSet<P>,
    key_of: fn(&P) -> [u8; 32],
    /// Partitions on this peer's disk, with the (term, update) written.
    on_disk: BTreeMap<PartitionId, (u64, u64)>,
    live: BTreeSet<P>,
    /// When this core first saw the time (see
    /// [`SpaceConfig::create_after_start`]).
    started: Option<Instant>,
    client: Client<P>,
    counters: SpaceCounters,
    /// Turns of the round-robin over replicas for cached reads.
    spread: usize,
    hot: HotTracker<P>,
    /// Members declared dead since the last [`Space::refresh_members`].
    departed: BTreeSet<P>,
    /// Answers applied since the outputs were last polled, by partition,
    /// with the time of the first: proposed when [`Space::poll`] is next
    /// called, so that every request handled in between shares one update
    /// round, one delta per backup and one disk write per partition.
    batched: BTreeMap<PartitionId, Vec<Answer>>,
    batched_since: Option<Instant>,
    /// Whether a message was handled since the partitions were last
    /// written out ([`Space::flush_persist`], done when polled).
    unflushed: bool,
    /// Erasure-coded shards held here for writers.
    shards: ShardStore,
    /// Who waits for each shard being written to disk.
    shard_askers: BTreeMap<ShardId, Vec<(P, RequestId)>>,
    outputs: VecDeque<SpaceOutput<P>>,
}

/// Askers remembered per shard being written (a writer resending).
const MAX_SHARD_ASKERS: usize = 4;

impl<P: PeerKey> Space<P> {
    /// The space core of peer `me`; `key_of` gives a peer's position in the
    /// overlay's key space, `session` names this peer's client session
    /// (random per start), `seed` seeds election jitter.
    pub fn new(
        me: P,
        config: SpaceConfig,
        key_of: fn(&P) -> [u8; 32],
        session: u64,
        seed: u64,
    ) -> Self {
        let closeness =
            Box::new(move |partition: &PartitionId, p: &P| distance(*partition, &key_of(p)));
        let hot = config.hot.clone();
        Space {
            homes: Homes::new(me.clone(), config.home.clone(), closeness, seed),
            client: Client::new(config.client.clone(), session),
            me,
            config,
            askers: BTreeMap::new(),
            waiters: BTreeMap::new(),
            creating: BTreeMap::new(),
            promises: BTreeMap::new(),
            hints: BTreeMap::new(),
            members: BTreeSet::new(),
            known: BTreeSet::new(),
            key_of,
            on_disk: BTreeMap::new(),
            live: BTreeSet::new(),
            started: None,
            counters: SpaceCounters::default(),
            spread: 0,
            hot: HotTracker::new(hot),
            departed: BTreeSet::new(),
            batched: BTreeMap::new(),
            batched_since: None,
            unflushed: false,
            shards: ShardStore::default(),
            shard_askers: BTreeMap::new(),
            outputs: VecDeque::new(),
        }
    }

    /// The partitions held here.
    pub fn homes(&self) -> &Homes<PartitionId, P, Partition> {
        &self.homes
    }

    /// What the core counted.
    pub fn counters(&self) -> SpaceCounters {
        self.counters
    }

    /// Requests of this peer still waiting for an answer.
    pub fn pending_requests(&self) -> usize {
        self.client.pending()
    }

    /// Drops this peer's copy of `key`: its next cached read asks a
    /// replica.
    pub fn drop_cached(&mut self, key: &super::ObjectKey) {
        self.client.drop_copy(key);
    }

    /// The hot objects whose primary is here, with the peers holding their
    /// copies beyond the home.
    pub fn hot_objects(&self) -> Vec<(super::ObjectKey, Vec<P>)> {
        self.hot
            .hot()
            .map(|(k, h)| (k.clone(), h.to_vec()))
            .collect()
    }

    /// Copies of objects kept for cached reads, and their bytes.
    pub fn cached_copies(&self) -> (usize, u64) {
        self.client.cached()
    }

    /// Bytes of object values held here, over every partition.
    pub fn stored_bytes(&self) -> u64 {
        self.homes.values().map(|h| h.stored_bytes()).sum()
    }

    /// Erasure-coded shards held here, and their bytes.
    pub fn held_shards(&self) -> (usize, u64) {
        (self.shards.len(), self.shards.bytes())
    }

    /// The writes whose shards are held here, in write order after the
    /// cursor `after`, at most `max` (see [`ShardStore::writes`]).
    pub fn held_shard_writes(&self, after: Option<u128>, max: usize) -> Vec<HeldWrite> {
        self.shards.writes(after, max)
    }

    /// A shard read back from this peer's disk after a restart.
    pub fn restore_shard(&mut self, key: ObjectKey, id: ShardId, shard: Shard) {
        if self.shards.len() < MAX_HELD_SHARDS {
            self.shards.insert(key, id, shard);
        }
    }

    /// The peers that may hold the shards of write `write`, best first: the
    /// live peers offering room to the space (this one included, if it
    /// does), closest to the write's point in the key space first, at most
    /// `max`. A writer tries them in order and passes over a full one.
    pub fn shard_holders(&self, write: u128, max: usize) -> Vec<P> {
        let point: [u8; 16] = write.to_be_bytes();
        let me = (self.config.capacity_bytes > 0).then_some(&self.me);
        let mut ranked: Vec<(u128, &P)> = self
            .live
            .iter()
            .chain(me)
            .map(|p| (distance_to(&point, &(self.key_of)(p)), p))
            .collect();
        ranked.sort();
        ranked
            .into_iter()
            .take(max)
            .map(|(_, p)| p.clone())
            .collect()
    }

    /// Asks peer `to` itself to apply `op` (a shard operation: holders are
    /// chosen by the writer, not found by the object's partition); the
    /// answer comes as [`SpaceOutput::Answer`], by `timeout` at the latest.
    pub fn request_at(
        &mut self,
        now: Instant,
        to: P,
        op: SpaceOp,
        timeout: Duration,
    ) -> Result<RequestId, SpaceError> {
        self.ask(now, op, timeout, Some(to))
    }

    /// A partition read back from this peer's disk after a restart: it
    /// rejoins its home as a backup.
    #[allow(clippy::too_many_arguments)]
    pub fn restore(
        &mut self,
        now: Instant,
        partition: Partition,
        size: u8,
        members: Vec<P>,
        config: Vec<P>,
        (term, seq): (u64, u64),
    ) -> bool {
        self.started.get_or_insert(now);
        let id = partition.id();
        let restored =
            self.homes
                .restore_backup(now, id, partition, size, members, config, (term, seq));
        if restored {
            self.on_disk.insert(id, (term, seq));
        }
        restored
    }

    /// The live peers (this one apart), whether each offers room to the
    /// space, and whether it is leaving gracefully, changed: partition
    /// homes follow.
    ///
    /// Peers left out are no longer alive, but still known to offer room
    /// (as dead members are) until [`Space::update_member`] says otherwise.
    pub fn set_members(&mut self, now: Instant, live: impl IntoIterator<Item = (P, bool, bool)>) {
        let before = std::mem::take(&mut self.members);
        for peer in &before {
            self.live.remove(peer);
            self.homes.update_member(peer.clone(), false);
            self.homes.set_draining(peer.clone(), false);
        }
        for (peer, offers_space, draining) in live {
            self.update_member(peer, true, offers_space, draining);
        }
        let departed: Vec<P> = before.difference(&self.members).cloned().collect();
        self.departed.extend(departed);
        self.refresh_members(now);
    }

    /// One peer's change, for a caller that follows the view change by
    /// change: whether it is alive, and whether it offers room to the
    /// space (only those hold partitions; for a dead peer, whether it did
    /// when last heard of, so that it still counts against creating a home
    /// it may hold), and whether it is leaving gracefully (then it holds
    /// nothing new and the homes it is in go on without it). Takes effect
    /// at the next [`Space::refresh_members`].
    pub fn update_member(&mut self, peer: P, alive: bool, offers_space: bool, draining: bool) {
        if peer == self.me {
            return;
        }
        if offers_space {
            self.known.insert(peer.clone());
        } else {
            self.known.remove(&peer);
        }
        if alive {
            self.members.insert(peer.clone());
            self.departed.remove(&peer);
        } else if self.members.remove(&peer) {
            self.departed.insert(peer.clone());
        }
        let holder = alive && offers_space && !draining;
        if holder {
            self.live.insert(peer.clone());
        } else {
            self.live.remove(&peer);
        }
        self.homes.set_draining(peer.clone(), alive && draining);
        self.homes.update_member(peer, holder);
    }

    /// The members changed ([`Space::update_member`]): partition homes
    /// follow, as with [`Space::set_members`].
    pub fn refresh_members(&mut self, now: Instant) {
        self.started.get_or_insert(now);
        self.homes.refresh(now);
        self.revoke_departed(now);
        self.drain_homes(now);
        self.drive_client(now);
        self.flush_persist();
    }

    /// Bytes this peer still gives the space (0 when it offers none or is
    /// full).
    pub fn free_bytes(&self) -> u64 {
        self.config.capacity_bytes.saturating_sub(self.used_bytes())
    }

    /// Bytes of the space's room in use here: object values and shards.
    fn used_bytes(&self) -> u64 {
        self.stored_bytes().saturating_add(self.shards.bytes())
    }

    /// Asks the space to apply `op` on this peer's behalf; the answer comes
    /// as [`SpaceOutput::Answer`] with the returned id, by `timeout` at the
    /// latest.
    pub fn request(
        &mut self,
        now: Instant,
        op: SpaceOp,
        timeout: Duration,
    ) -> Result<RequestId, SpaceError> {
        self.ask(now, op, timeout, None)
    }

    /// [`Space::request`] and [`Space::request_at`].
    fn ask(
        &mut self,
        now: Instant,
        op: SpaceOp,
        timeout: Duration,
        to: Option<P>,
    ) -> Result<RequestId, SpaceError> {
        self.started.get_or_insert(now);
        op.check(self.config.max_object_bytes)?;
        let id = self.client.request(now, op, timeout, to)?;
        self.drive_client(now);
        Ok(id)
    }

    /// Reads `key` the cached way: from this peer's copy if it has one
    /// (answered at once, and checked against the home in the background
    /// once older than [`SpaceClientConfig::revalidate_after`]), else from
    /// any replica of its home, kept as a copy. The answer may miss the
    /// latest writes; it never shows one that was not made.
    pub fn read_cached(
        &mut self,
        now: Instant,
        key: super::ObjectKey,
        timeout: Duration,
    ) -> Result<RequestId, SpaceError> {
        key.check()?;
        let (id, hit) = self.client.read_cached(now, key, timeout)?;
        if hit {
            self.counters.cache_hits += 1;
        }
        self.drive_client(now);
        Ok(id)
    }

    /// Forgets a lock this peer released or gave up (no more renewals).
    pub fn forget_lock(&mut self, token: u64) {
        self.client.forget_lock(token);
    }

    /// Applies an input.
    pub fn handle(&mut self, now: Instant, input: SpaceInput<P>) {
        self.started.get_or_insert(now);
        match input {
            SpaceInput::Message { from, msg } => self.on_message(now, from, msg),
            SpaceInput::SendFailed { to, id } => {
                if let Some(id) = id {
                    self.client.send_failed(now, id, &to);
                }
            }
            SpaceInput::Durable {
                partition,
                term,
                seq,
            } => self.homes.durable(now, partition, term, seq),
            SpaceInput::ShardDurable { id } => {
                for (to, request) in self.shard_askers.remove(&id).unwrap_or_default() {
                    self.reply(now, to, request, Ok(SpaceReply::ShardKept));
                }
            }
        }
        self.drain_homes(now);
        self.drive_client(now);
        // Proposals and disk writes wait for the next poll (a batch).
        self.unflushed = true;
    }

    /// Leases, elections, heartbeats, probes and client retries that are
    /// due.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.started.get_or_insert(now);
        self.homes.handle_timeout(now);
        let primaries: Vec<PartitionId> = self
            .homes
            .iter()
            .filter(|(_, h)| h.is_primary() && h.next_expiry().is_some_and(|at| at <= now))
            .map(|(p, _)| *p)
            .collect();
        for partition in primaries {
            let expired = self.revoke_locks(now, partition, |p| p.expire_leases(now));
            self.counters.expired_leases += expired;
        }
        self.creating.retain(|_, c| c.until > now);
        for key in self.hot.tick(now) {
            self.copy_hot(now, &key);
        }
        self.promises.retain(|_, (_, until)| *until > now);
        self.drain_homes(now);
        self.client.handle_timeout(now);
        self.drive_client(now);
        self.flush_persist();
    }

    /// When [`Space::handle_timeout`] is next needed.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let leases = self
            .homes
            .values()
            .filter(|h| h.is_primary())
            .filter_map(|h| h.next_expiry());
        let probes = self.creating.values().map(|c| c.until);
        [
            self.homes.poll_timeout(),
            self.client.poll_timeout(),
            self.hot.poll_timeout(),
        ]
        .into_iter()
        .flatten()
        .chain(leases)
        .chain(probes)
        .min()
    }

    /// The next thing to do. Proposes what the messages handled since the
    /// last call applied, one update round per partition, first.
    pub fn poll(&mut self) -> Option<SpaceOutput<P>> {
        if self.outputs.is_empty() {
            self.propose_batched();
        }
        self.outputs.pop_front()
    }

    /// Proposes the batched answers, one update per partition, and writes
    /// out what changed.
    fn propose_batched(&mut self) {
        if let Some(now) = self.batched_since.take() {
            for (partition, answers) in std::mem::take(&mut self.batched) {
                // Not primary any more (deposed within the batch): the
                // askers retry, and a retried write finds its kept reply.
                let _ = self.homes.propose(now, partition, answers);
            }
            self.drain_homes(now);
            self.unflushed = true;
        }
        if std::mem::take(&mut self.unflushed) {
            self.flush_persist();
        }
    }

    /// Answers `answer` once the update that holds what it applied is
    /// committed (proposed with the batch, [`Space::poll`]).
    fn answer_when_committed(&mut self, now: Instant, partition: PartitionId, answer: Answer) {
        self.batched.entry(partition).or_default().push(answer);
        self.batched_since.get_or_insert(now);
    }

    /// Leaving: hands every primary role over.
    pub fn hand_over_all(&mut self, now: Instant) {
        self.homes.hand_over_all(now);
        self.drain_homes(now);
    }

    fn send(&mut self, to: P, msg: SpaceMsg<P>, bulk: bool) {
        self.outputs.push_back(SpaceOutput::Send { to, msg, bulk });
    }

    fn on_message(&mut self, now: Instant, from: P, msg: SpaceMsg<P>) {
        match msg {
            SpaceMsg::Request { id, generation, op } => {
                self.on_request(now, from, id, generation, op)
            }
            SpaceMsg::Reply { id, result } => self.client.reply(now, &from, id, result),
            SpaceMsg::Redirect { id, primary } => self.client.redirect(now, &from, id, primary),
            SpaceMsg::Probe { partition } => {
                let promised = self.promised_to(now, partition).cloned();
                let (holds, primary) = match self.homes.get(&partition) {
                    Some(h) => (true, h.primary().cloned()),
                    // Denied to another creator a moment ago: this one is
                    // sent to it.
                    None if promised.as_ref().is_some_and(|p| *p != from) => (true, promised),
                    // Two peers creating the same partition at once: the
                    // one closer to it goes on, the other gives up.
                    None if self.creating.contains_key(&partition)
                        && distance(partition, &(self.key_of)(&self.me))
                            < distance(partition, &(self.key_of)(&from)) =>
                    {
                        (true, Some(self.me.clone()))
                    }
                    None => {
                        self.creating.remove(&partition);
                        let until = now + 2 * self.config.probe_timeout;
                        self.promises.insert(partition, (from.clone(), until));
                        (false, None)
                    }
                };
                self.send(
                    from,
                    SpaceMsg::ProbeReply {
                        partition,
                        holds,
                        primary,
                    },
                    false,
                );
            }
            SpaceMsg::ProbeReply {
                partition,
                holds,
                primary,
            } => self.on_probe_reply(now, from, partition, holds, primary),
            SpaceMsg::HotCopy {
                key,
                generation,
                object,
            } => {
                // Only from a plausible primary of the object's home.
                let size = usize::from(self.config.home_size);
                if self
                    .homes
                    .home_of(&key.partition(), size + 1)
                    .contains(&from)
                    && object
                        .as_ref()
                        .is_none_or(|o| o.value.len() <= self.config.max_object_bytes)
                {
                    let until = now + self.config.hot.hold_for;
                    self.client
                        .keep_hot_copy(key, object, generation, now, until);
                }
            }
            SpaceMsg::HotHolders { key, holders } => {
                let size = usize::from(self.config.home_size);
                if self
                    .homes
                    .home_of(&key.partition(), size + 1)
                    .contains(&from)
                {
                    let until = now + self.config.hot.hold_for;
                    let copies = self.config.hot.copies;
                    self.client
                        .hot_holders(key, holders.into_iter().take(copies).collect(), until);
                }
            }
            SpaceMsg::Home(msg) => self.homes.handle(now, from, msg),
        }
    }

    fn on_request(&mut self, now: Instant, from: P, id: RequestId, generation: u64, op: SpaceOp) {
        if let Err(error) = op.check(self.config.max_object_bytes) {
            self.counters.refused += 1;
            return self.reply(now, from, id, Err(error));
        }
        if let SpaceOp::PutShard { .. } | SpaceOp::GetShard { .. } | SpaceOp::DropShards { .. } =
            &op
        {
            return self.on_shard_request(now, from, id, op);
        }
        let partition = op.partition();
        let Some(h) = self.homes.get(&partition) else {
            if let SpaceOp::ReadReplica { key } = &op {
                if let Some(object) = self.client.hot_copy(key, generation, now) {
                    self.counters.hot_reads += 1;
                    return self.reply(now, from, id, Ok(SpaceReply::Value(object)));
                }
            }
            return self.no_home(now, from, id, generation, op);
        };
        if let (true, SpaceOp::Get { key }) = (self.config.unsafe_local_reads, &op) {
            let result = h.state().read_replica(key, generation);
            return self.reply(now, from, id, result);
        }
        if let SpaceOp::ReadReplica { key } = &op {
            // Any replica answers a cached read, at once.
            self.counters.replica_reads += 1;
            let result = h.read_replica(key, generation);
            if h.is_primary() {
                let key = key.clone();
                self.count_read(now, &from, &key);
            }
            return self.reply(now, from, id, result);
        }
        if let (SpaceOp::Get { key } | SpaceOp::Validate { key, .. }, true) = (&op, h.is_primary())
        {
            let key = key.clone();
            self.count_read(now, &from, &key);
        }
        let Some(h) = self.homes.get(&partition) else {
            return;
        };
        match h.role() {
            Role::Backup { primary } => {
                let primary = primary.clone();
                self.counters.redirected += 1;
                return self.redirect(now, from, id, primary);
            }
            Role::Primary => {}
        }
        if self.askers.len() >= self.config.max_uncommitted {
            let max = self.config.max_uncommitted;
            return self.reply(now, from, id, Err(SpaceError::Busy { max }));
        }
        let Some(h) = self.homes.get(&partition) else {
            return;
        };
        // A home still forming holds too few replicas to commit safely.
        let reachable = (self.live.len() + 1).min(h.size());
        if h.config().len() < reachable {
            return self.reply(
                now,
                from,
                id,
                Err(SpaceError::Unavailable(
                    "the partition's home is forming".into(),
                )),
            );
        }
        if let SpaceOp::Put { value, .. } = &op {
            let held = self.used_bytes();
            if held.saturating_add(value.len() as u64) > self.config.capacity_bytes
                && h.kept_reply(id).is_none()
            {
                return self.reply(
                    now,
                    from,
                    id,
                    Err(SpaceError::Full(format!(
                        "peer {} holds {held} of the {} bytes it gives the space",
                        self.me, self.config.capacity_bytes
                    ))),
                );
            }
        }
        self.apply(now, partition, from, id, generation, op);
    }

    /// A shard operation, answered by this peer as a shard holder.
    fn on_shard_request(&mut self, now: Instant, from: P, id: RequestId, op: SpaceOp) {
        match op {
            SpaceOp::PutShard {
                key,
                id: shard_id,
                shard,
            } => {
                match self.shards.check(&key, &shard_id, &shard) {
                    Err(why) => {
                        self.counters.refused += 1;
                        return self.reply(now, from, id, Err(SpaceError::InvalidShard(why)));
                    }
                    Ok(false) => {
                        // Held already: answered once it is on disk.
                        match self.shard_askers.get_mut(&shard_id) {
                            Some(askers) => {
                                if !askers.iter().any(|(p, r)| *p == from && *r == id)
                                    && askers.len() < MAX_SHARD_ASKERS
                                {
                                    askers.push((from, id));
                                }
                            }
                            None => self.reply(now, from, id, Ok(SpaceReply::ShardKept)),
                        }
                        return;
                    }
                    Ok(true) => {}
                }
                let held = self.used_bytes();
                let size = shard.bytes.len() as u64;
                if held.saturating_add(size) > self.config.capacity_bytes
                    || self.shards.len() >= MAX_HELD_SHARDS
                {
                    let why = format!(
                        "peer {} holds {held} of the {} bytes it gives the space",
                        self.me, self.config.capacity_bytes
                    );
                    return self.reply(now, from, id, Err(SpaceError::Full(why)));
                }
                self.counters.shards_stored += 1;
                self.shards.insert(key.clone(), shard_id, shard.clone());
                self.shard_askers.insert(shard_id, vec![(from, id)]);
                self.outputs.push_back(SpaceOutput::PersistShard {
                    key,
                    id: shard_id,
                    shard,
                });
            }
            SpaceOp::GetShard { key, id: shard_id } => {
                let shard = self.shards.get(&key, &shard_id).cloned();
                if shard.is_none() {
                    self.counters.shards_missing += 1;
                }
                let bulk = shard.as_ref().is_some_and(|s| s.bytes.len() > 64 << 10);
                let result = Ok(SpaceReply::Shard(shard));
                if from == self.me {
                    self.client.reply(now, &from, id, result);
                } else {
                    self.send(from, SpaceMsg::Reply { id, result }, bulk);
                }
            }
            SpaceOp::DropShards { key, write } => {
                let ids = self.shards.drop_write(&key, write);
                for shard_id in &ids {
                    self.shard_askers.remove(shard_id);
                }
                let count = u32::try_from(ids.len()).unwrap_or(u32::MAX);
                if !ids.is_empty() {
                    self.outputs.push_back(SpaceOutput::UnpersistShards { ids });
                }
                self.reply(now, from, id, Ok(SpaceReply::ShardsDropped { count }));
            }
            other => {
                let error = SpaceError::InvalidShard(format!("{other:?} is no shard operation"));
                self.reply(now, from, id, Err(error));
            }
        }
    }

    /// Applies a request at this primary, or keeps it waiting for its lock.
    fn apply(
        &mut self,
        now: Instant,
        partition: PartitionId,
        from: P,
        id: RequestId,
        generation: u64,
        op: SpaceOp,
    ) {
        let asker = (self.key_of)(&from);
        let Some(h) = self.homes.get_mut(&partition) else {
            return;
        };
        match h.state_mut().apply(now, id, asker, generation, &op) {
            Applied::Reply(result) => {
                self.counters.applied += 1;
                let unlocked = matches!(
                    (&op, &result),
                    (SpaceOp::Unlock { .. }, Ok(SpaceReply::Released))
                );
                self.askers.insert(id, (partition, from));
                self.answer_when_committed(now, partition, Answer { id, result });
                if unlocked {
                    if let SpaceOp::Unlock { key, .. } = &op {
                        let key = key.clone();
                        self.grant_waiters(now, partition, &key);
                    }
                }
            }
            Applied::Wait => {
                let SpaceOp::Lock { key, .. } = &op else {
                    return;
                };
                let key = key.clone();
                let max = self.config.max_waiters;
                let waiting = self.waiters.entry(partition).or_default();
                let count: usize = waiting.values().map(VecDeque::len).sum();
                let queue = waiting.entry(key).or_default();
                if queue.iter().any(|w| w.id == id) {
                    return;
                }
                if count >= max {
                    return self.reply(now, from, id, Err(SpaceError::Busy { max }));
                }
                queue.push_back(Waiter {
                    from,
                    id,
                    generation,
                    op,
                });
            }
        }
    }

    /// Revokes, in the partitions this peer is primary of, the locks held
    /// by peers declared dead since the last call (whichever primary
    /// granted them: the holder is part of the replicated grant); their
    /// waiters are granted. A holder wrongly declared dead (paused, cut
    /// off) loses its locks as it would when its lease ran out: its
    /// fencing token is then stale and its writes are refused. A member
    /// that becomes primary later revokes them then
    /// ([`Space::revoke_absent_holders`]).
    fn revoke_departed(&mut self, now: Instant) {
        let departed = std::mem::take(&mut self.departed);
        if departed.is_empty() {
            return;
        }
        // This peer's own requests waiting at them are asked again of the
        // partitions' new primaries now, not after the resend interval.
        for peer in &departed {
            self.client.peer_gone(now, peer);
        }
        // Their waiting lock requests go first: granting one would hold
        // the lock for a dead peer until its lease ran out.
        for waiting in self.waiters.values_mut() {
            for queue in waiting.values_mut() {
                queue.retain(|w| !departed.contains(&w.from));
            }
            waiting.retain(|_, queue| !queue.is_empty());
        }
        self.waiters.retain(|_, waiting| !waiting.is_empty());
        let dead: BTreeSet<[u8; 32]> = departed.iter().map(self.key_of).collect();
        let primaries: Vec<PartitionId> = self
            .homes
            .iter()
            .filter(|(_, h)| h.is_primary() && h.state().lock_count() > 0)
            .map(|(p, _)| *p)
            .collect();
        for partition in primaries {
            let revoked = self.revoke_locks(now, partition, |p| {
                p.revoke_held_by(now, |holder| dead.contains(holder))
            });
            self.counters.revoked_locks += revoked;
        }
    }

    /// This peer took the primary role of `partition` over: it revokes the
    /// grants whose holder is not a live member in its view. The primary
    /// that granted them may have been that holder, or have died before it
    /// heard of the holder's death; either way no peer revokes them but
    /// this one. A holder this peer has never heard of counts as dead: if
    /// it is in fact alive, it loses its lock as it would when its lease
    /// ran out (its fencing token is stale, its writes are refused). Until
    /// this peer's view has formed ([`SpaceConfig::create_after_start`])
    /// every holder would look unknown, so it leaves them to their leases.
    fn revoke_absent_holders(&mut self, now: Instant, partition: PartitionId) {
        if !self.view_formed(now) {
            return;
        }
        let held = self
            .homes
            .get(&partition)
            .is_some_and(|h| h.is_primary() && h.state().lock_count() > 0);
        if !held {
            return;
        }
        let live: BTreeSet<[u8; 32]> = self
            .members
            .iter()
            .chain([&self.me])
            .map(self.key_of)
            .collect();
        let revoked = self.revoke_locks(now, partition, |p| {
            p.revoke_held_by(now, |holder| !live.contains(holder))
        });
        self.counters.revoked_locks += revoked;
    }

    /// Revokes grants of `partition` (a primary here) with `revoke`,
    /// replicates the change and grants the waiters of the objects freed;
    /// returns how many grants were revoked.
    fn revoke_locks(
        &mut self,
        now: Instant,
        partition: PartitionId,
        revoke: impl FnOnce(&mut Partition) -> Revoked,
    ) -> u64 {
        let Some(h) = self.homes.get_mut(&partition) else {
            return 0;
        };
        let revoked = revoke(h.state_mut());
        if revoked.objects.is_empty() {
            return 0;
        }
        let _ = self.homes.propose(now, partition, Vec::new());
        for key in &revoked.objects {
            self.grant_waiters(now, partition, key);
        }
        revoked.grants
    }

    /// Whether this peer's view of the network has had time to form since
    /// it started ([`SpaceConfig::create_after_start`]).
    fn view_formed(&self, now: Instant) -> bool {
        self.started
            .is_some_and(|at| now >= at + self.config.create_after_start)
    }

    /// A read of `key` served by its primary here: counted, and a reader of
    /// a hot object is told where its copies are.
    fn count_read(&mut self, now: Instant, reader: &P, key: &super::ObjectKey) {
        self.hot.count(now, key);
        if let Some(holders) = self.hot.announce(key, reader) {
            let msg = SpaceMsg::HotHolders {
                key: key.clone(),
                holders,
            };
            if *reader == self.me {
                self.on_message(now, reader.clone(), msg);
            } else {
                self.send(reader.clone(), msg, false);
            }
        }
    }

    /// Sends fresh copies of a hot object to the peers closest to it
    /// beyond its home (replacing holders that left).
    fn copy_hot(&mut self, now: Instant, key: &super::ObjectKey) {
        let partition = key.partition();
        let Some(h) = self.homes.get(&partition).filter(|h| h.is_primary()) else {
            self.hot.forget(partition);
            return;
        };
        let Some(stored) = h.stored(key) else {
            return;
        };
        let (generation, object) = (stored.generation, Some(stored.object.clone()));
        let members = h.members().to_vec();
        let point = key_point(key);
        let key_of = self.key_of;
        let mut beyond: Vec<&P> = self
            .members
            .iter()
            .filter(|p| !members.contains(*p))
            .collect();
        beyond.sort_by_key(|p| distance_to(&point, &key_of(p)));
        let holders: Vec<P> = beyond
            .into_iter()
            .take(self.hot.config().copies)
            .cloned()
            .collect();
        for to in &holders {
            self.counters.hot_copies_sent += 1;
            let msg = SpaceMsg::HotCopy {
                key: key.clone(),
                generation,
                object: object.clone(),
            };
            let bulk = object.as_ref().is_some_and(|o| o.value.len() > 64 << 10);
            self.send(to.clone(), msg, bulk);
        }
        self.hot.set_holders(key, holders);
        let _ = now;
    }

    /// The lock of `key` changed: grants waiting requests in order while
    /// they can be granted.
    fn grant_waiters(&mut self, now: Instant, partition: PartitionId, key: &super::ObjectKey) {
        loop {
            let Some(waiter) = self
                .waiters
                .get_mut(&partition)
                .and_then(|w| w.get_mut(key))
                .and_then(VecDeque::pop_front)
            else {
                break;
            };
            let Some(h) = self.homes.get_mut(&partition) else {
                break;
            };
            let asker = (self.key_of)(&waiter.from);
            match h
                .state_mut()
                .apply(now, waiter.id, asker, waiter.generation, &waiter.op)
            {
                Applied::Reply(result) => {
                    self.counters.applied += 1;
                    self.askers.insert(waiter.id, (partition, waiter.from));
                    let answer = Answer {
                        id: waiter.id,
                        result,
                    };
                    self.answer_when_committed(now, partition, answer);
                }
                Applied::Wait => {
                    if let Some(queue) = self
                        .waiters
                        .get_mut(&partition)
                        .and_then(|w| w.get_mut(key))
                    {
                        queue.push_front(waiter);
                    }
                    break;
                }
            }
        }
        if let Some(w) = self.waiters.get_mut(&partition) {
            if w.get(key).is_some_and(VecDeque::is_empty) {
                w.remove(key);
            }
        }
    }

    /// A request for a partition with no home here: if this peer is the
    /// closest to it, it probes the closest peers and creates the home
    /// once none holds it; otherwise the client asks the closest.
    fn no_home(&mut self, now: Instant, from: P, id: RequestId, generation: u64, op: SpaceOp) {
        let partition = op.partition();
        let size = usize::from(self.config.home_size);
        let mut closest = self.homes.home_of(&partition, size + 1);
        if self.config.capacity_bytes == 0 {
            // This peer offers no room: it never holds a partition.
            closest.retain(|p| *p != self.me);
        }
        let hint = self
            .hints
            .get(&partition)
            .filter(|(p, until)| *until > now && self.members.contains(p))
            .map(|(p, _)| p.clone());
        if hint.is_some() || closest.first() != Some(&self.me) {
            self.counters.redirected += 1;
            let primary = hint.or_else(|| closest.first().cloned());
            return self.redirect(now, from, id, primary);
        }
        if !self.view_formed(now) {
            let why = "this peer started too recently to know whether the partition's home exists";
            return self.reply(now, from, id, Err(SpaceError::Unavailable(why.into())));
        }
        if let Some(creator) = self.promised_to(now, partition).cloned() {
            // Another peer is creating it: clients are sent there.
            let why = format!("the partition's home is being created by {creator}");
            self.hint(now, partition, creator);
            return self.reply(now, from, id, Err(SpaceError::Unavailable(why)));
        }
        if !self.creating.contains_key(&partition) {
            // Every live member close to the partition is asked, offering
            // room or not: this peer's view of who offers room may lag.
            // So is every live peer of the zone that must deny holding it.
            let point = partition;
            let key_of = self.key_of;
            let mut nearby: Vec<&P> = self.members.iter().collect();
            nearby.sort_by_key(|p| distance(point, &key_of(p)));
            let mut asked: BTreeSet<P> = nearby.into_iter().take(2 * size).cloned().collect();
            asked.extend(
                self.creation_zone(partition)
                    .into_iter()
                    .filter(|p| self.members.contains(p)),
            );
            if asked.is_empty() {
                if self.creation_quorum(partition, &BTreeSet::new()) {
                    // Alone in the network as far as it ever knew: nobody
                    // else can hold it.
                    self.create(now, partition);
                    return self.on_request(now, from, id, generation, op);
                }
                return self.reply(now, from, id, Err(cut_off()));
            }
            for to in &asked {
                self.send(to.clone(), SpaceMsg::Probe { partition }, false);
            }
            let until = now + self.config.probe_timeout;
            let answered = BTreeSet::new();
            self.creating.insert(
                partition,
                Creation {
                    asked,
                    answered,
                    until,
                },
            );
        }
        self.reply(
            now,
            from,
            id,
            Err(SpaceError::Unavailable(
                "the partition's home is being created".into(),
            )),
        );
    }

    fn on_probe_reply(
        &mut self,
        now: Instant,
        from: P,
        partition: PartitionId,
        holds: bool,
        primary: Option<P>,
    ) {
        let Some(creation) = self.creating.get_mut(&partition) else {
            return;
        };
        if creation.until <= now {
            // Answers this late (this peer was paused, say) may have been
            // followed by promises to another creator.
            self.creating.remove(&partition);
            return;
        }
        if holds {
            // The home exists (or a closer peer creates it): clients are
            // sent to its primary, which hands the role over to this peer
            // if it is closer.
            self.creating.remove(&partition);
            if let Some(primary) = primary {
                self.hint(now, partition, primary);
            }
            return;
        }
        creation.asked.remove(&from);
        creation.answered.insert(from);
        if creation.asked.is_empty() {
            let Some(creation) = self.creating.remove(&partition) else {
                return;
            };
            if !self.homes.contains_key(&partition)
                && self.creation_quorum(partition, &creation.answered)
            {
                self.create(now, partition);
            }
        }
    }

    /// Sends requests for `partition` to `primary` for a while.
    fn hint(&mut self, now: Instant, partition: PartitionId, primary: P) {
        if self.hints.len() >= usize::from(super::PARTITIONS) {
            self.hints.pop_first();
        }
        let until = now + 2 * self.config.probe_timeout;
        self.hints.insert(partition, (primary, until));
    }

    /// The creator this peer promised to deny no other, for `partition`,
    /// if the promise still holds.
    fn promised_to(&self, now: Instant, partition: PartitionId) -> Option<&P> {
        self.promises
            .get(&partition)
            .filter(|(_, until)| *until > now)
            .map(|(creator, _)| creator)
    }

    /// The peers a home of `partition` would have been created on had
    /// every peer this one knows to offer room been alive: the
    /// `home_size` closest of them, this peer included if it offers room.
    fn creation_zone(&self, partition: PartitionId) -> Vec<P> {
        let me = (self.config.capacity_bytes > 0).then_some(&self.me);
        let mut zone: Vec<&P> = self.known.iter().chain(me).collect();
        zone.sort_by_key(|p| distance(partition, &(self.key_of)(p)));
        zone.truncate(usize::from(self.config.home_size).max(1));
        zone.into_iter().cloned().collect()
    }

    /// Whether this peer and the peers that denied holding `partition`
    /// (`denied`) make a majority of its creation zone. A peer cut off
    /// from the rest sees them dead, not gone: without that majority it
    /// could create a second home of a partition whose home is out of
    /// its reach, which would commit on its own.
    fn creation_quorum(&self, partition: PartitionId, denied: &BTreeSet<P>) -> bool {
        let zone = self.creation_zone(partition);
        let votes = zone
            .iter()
            .filter(|p| **p == self.me || denied.contains(*p))
            .count();
        2 * votes > zone.len()
    }

    fn create(&mut self, now: Instant, partition: PartitionId) {
        self.counters.created += 1;
        self.hints.remove(&partition);
        self.homes.create(
            now,
            partition,
            Partition::new(partition),
            self.config.home_size,
        );
    }

    /// Sends the asker of `id` to `primary`: this peer's own client at
    /// once (a message to oneself never reaches the network's other end).
    fn redirect(&mut self, now: Instant, to: P, id: RequestId, primary: Option<P>) {
        if to == self.me {
            self.client.redirect(now, &to, id, primary);
        } else {
            self.send(to, SpaceMsg::Redirect { id, primary }, false);
        }
    }

    fn reply(
        &mut self,
        now: Instant,
        to: P,
        id: RequestId,
        result: Result<SpaceReply, SpaceError>,
    ) {
        if to == self.me {
            self.client.reply(now, &to, id, result);
        } else {
            self.send(to, SpaceMsg::Reply { id, result }, false);
        }
    }

    fn drain_homes(&mut self, now: Instant) {
        while let Some(out) = self.homes.poll() {
            match out {
                HomeOutput::Send { to, msg, bulk } => self.send_home(to, msg, bulk),
                HomeOutput::Released { effects, .. } => {
                    for Answer { id, result } in effects {
                        if let Some((_, to)) = self.askers.remove(&id) {
                            let bulk = matches!(&result, Ok(SpaceReply::Value(Some(o))) if o.value.len() > 64 << 10);
                            if to == self.me {
                                self.client.reply(now, &to, id, result);
                            } else {
                                self.send(to, SpaceMsg::Reply { id, result }, bulk);
                            }
                        }
                    }
                }
                HomeOutput::SteppedDown { key } => {
                    self.hot.forget(key);
                    self.waiters.remove(&key);
                    self.askers.retain(|_, (p, _)| *p != key);
                }
                HomeOutput::Dropped { key } => {
                    self.waiters.remove(&key);
                    self.askers.retain(|_, (p, _)| *p != key);
                    if self.on_disk.remove(&key).is_some() {
                        self.outputs
                            .push_back(SpaceOutput::Unpersist { partition: key });
                    }
                }
                HomeOutput::BecamePrimary { key, .. } => self.revoke_absent_holders(now, key),
                HomeOutput::Committed { .. }
                | HomeOutput::Left { .. }
                | HomeOutput::Founded { .. }
                | HomeOutput::NotFounded { .. } => {}
            }
        }
    }

    fn send_home(&mut self, to: P, msg: HomeMsgOf<PartitionId, P, Partition>, bulk: bool) {
        self.send(to, SpaceMsg::Home(msg), bulk);
    }

    /// Emits a write for every partition that changed since it was last
    /// written (its state, or only its term, update or members: every
    /// update must be on disk before it counts as held).
    fn flush_persist(&mut self) {
        let changed: Vec<PartitionId> = self
            .homes
            .iter()
            .filter(|(p, h)| {
                h.has_unpersisted() || self.on_disk.get(p) != Some(&(h.term(), h.seq()))
            })
            .map(|(p, _)| *p)
            .collect();
        for partition in changed {
            let Some(h) = self.homes.get_mut(&partition) else {
                continue;
            };
            let data = h
                .state_mut()
                .take_unpersisted()
                .unwrap_or(Unpersisted::Changes(Vec::new()));
            self.on_disk.insert(partition, (h.term(), h.seq()));
            self.outputs.push_back(SpaceOutput::Persist {
                partition,
                term: h.term(),
                seq: h.seq(),
                size: u8::try_from(h.size()).unwrap_or(u8::MAX),
                members: h.members().to_vec(),
                config: h.config().to_vec(),
                data,
            });
        }
    }

    /// Sends what the client side wants sent.
    fn drive_client(&mut self, now: Instant) {
        let size = usize::from(self.config.home_size);
        while let Some(out) = self.client.poll() {
            match out {
                super::client::ClientOutput::Send {
                    partition,
                    to,
                    id,
                    generation,
                    op,
                } => {
                    let to = to.or_else(|| {
                        let mut home = self.homes.home_of(&partition, size);
                        if let SpaceOp::ReadReplica { key } = &op {
                            home.extend(self.client.holders_of(key, now));
                        }
                        if matches!(op, SpaceOp::ReadReplica { .. }) && !home.is_empty() {
                            // Cached reads spread over the replicas.
                            self.spread = self.spread.wrapping_add(1);
                            home.get(self.spread % home.len()).cloned()
                        } else {
                            home.first().cloned()
                        }
                    });
                    let Some(to) = to else { continue };
                    let msg = SpaceMsg::Request { id, generation, op };
                    if to == self.me {
                        self.client.sent(id, to.clone());
                        self.on_message(now, to, msg);
                        self.drain_homes(now);
                    } else {
                        self.client.sent(id, to.clone());
                        self.send(to, msg, false);
                    }
                }
                super::client::ClientOutput::Answer { id, result } => {
                    self.outputs.push_back(SpaceOutput::Answer { id, result })
                }
                super::client::ClientOutput::LockLost(lost) => {
                    self.outputs.push_back(SpaceOutput::LockLost(lost))
                }
            }
        }
    }
}

/// Why a partition's home cannot be created now: too few of the peers
/// that could hold it are reachable to be sure it does not exist.
fn cut_off() -> SpaceError {
    SpaceError::Unavailable(
        "too few of the peers closest to the partition are reachable to create its home".into(),
    )
}

/// How far a peer with overlay key `key` is from a partition (XOR of the
/// first 16 bytes): smaller is closer.
pub(super) fn distance(partition: PartitionId, key: &[u8; 32]) -> u128 {
    distance_to(&partition_point(partition), key)
}

/// An object's own point in the key space (where its hot copies go).
fn key_point(key: &super::ObjectKey) -> [u8; 16] {
    let hash = blake3::hash(
        &[
            b"colony-space-object".as_slice(),
            key.namespace.as_bytes(),
            &[0],
            key.name.as_bytes(),
        ]
        .concat(),
    );
    let mut point = [0u8; 16];
    point.copy_from_slice(&hash.as_bytes()[..16]);
    point
}

/// XOR distance between a point and a peer's overlay key.
fn distance_to(point: &[u8; 16], key: &[u8; 32]) -> u128 {
    let mut d = [0u8; 16];
    for (i, byte) in d.iter_mut().enumerate() {
        *byte = point[i] ^ key[i];
    }
    u128::from_be_bytes(d)
}
