//! The driver's side of the object space: the partitions held here written
//! to disk (group-committed with the checkpoint pieces), the answers to the
//! requests of the peer's handles, and the locks they hold. What goes
//! between the space and the other cores is the node's.
//!
//! **Writes.** The node asks for every change of a partition to be written
//! ([`NodeOutput::PersistSpace`]) and counts it as held only once told it
//! is on disk ([`NodeInput::SpaceDurable`]). At most [`WRITES_IN_FLIGHT`]
//! writes (and [`BYTES_IN_FLIGHT`] bytes) wait for the disk at once; beyond
//! that, or when the store's queue is full, a partition's writes wait in a
//! backlog where they are merged row by row (one entry per partition, so it
//! is bounded by what the partitions hold), and go out in order as earlier
//! ones complete. Nothing is lost and nothing is acknowledged early: an
//! update is confirmed durable only once the write holding it is. A write
//! that fails stops this peer from writing or confirming anything more of
//! that partition until it is written whole again (the disk keeps the last
//! state written in full, never later changes without the failed ones).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use colony_core::node::{Node, NodeInput, NodeOutput};
use colony_core::space::{
    Change, LockLost, ObjectKey, Partition, PartitionId, RequestId, SpaceError, SpaceOp,
    SpaceReply, Unpersisted,
};
use colony_core::wire;
use colony_store::{CheckpointStore, SpaceWrite};
use libp2p::PeerId;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{debug, info, warn};

use super::Driver;
use crate::command::SpaceAnswer;

/// Partition writes (and removals) waiting for the disk at most; their
/// completions fit the bounded channel that brings them back.
pub(crate) const WRITES_IN_FLIGHT: usize = 256;

/// Bytes of partition writes waiting for the disk at most (one larger
/// write goes alone).
const BYTES_IN_FLIGHT: usize = 64 << 20;

/// Requests of the peer's handles waiting for their answers at most (the
/// space core bounds its own, too).
const MAX_WAITERS: usize = 4096;

/// Locks whose loss is reported to a handle, at most.
const MAX_WATCHED_LOCKS: usize = 4096;

/// How long the release of a lock nobody holds any more may take.
const RELEASE_TIMEOUT: Duration = Duration::from_secs(10);

/// A partition's meta row: what the home needs besides the rows to rejoin.
#[derive(Debug, Serialize, Deserialize)]
struct PartitionMeta {
    term: u64,
    seq: u64,
    size: u8,
    members: Vec<PeerId>,
    config: Vec<PeerId>,
}

/// A write of one partition waiting for room: the writes merged since.
struct Pending {
    /// Replace what is stored (a whole write, or changes after a removal).
    whole: bool,
    /// The meta row; `None`: the partition is removed.
    meta: Option<Vec<u8>>,
    /// Rows written or deleted, by key.
    rows: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    /// The update to confirm once written.
    durable: Option<(u64, u64)>,
}

impl Pending {
    fn removal() -> Pending {
        Pending {
            whole: true,
            meta: None,
            rows: BTreeMap::new(),
            durable: None,
        }
    }

    fn write(write: SpaceWrite, durable: Option<(u64, u64)>) -> Pending {
        Pending {
            whole: write.whole,
            meta: Some(write.meta),
            rows: write.rows.into_iter().collect(),
            durable,
        }
    }

    /// This, then `next`: what the disk must hold after both.
    fn merge(&mut self, next: Pending) {
        if next.whole {
            *self = next;
            return;
        }
        // Changes after a removal rebuild the partition from nothing.
        self.whole |= self.meta.is_none();
        self.meta = next.meta;
        self.rows.extend(next.rows);
        self.durable = next.durable;
    }

    fn bytes(&self) -> usize {
        self.meta.as_ref().map_or(0, Vec::len)
            + self
                .rows
                .iter()
                .map(|(k, v)| k.len() + v.as_ref().map_or(0, Vec::len))
                .sum::<usize>()
    }
}

/// A partition write finished.
pub(crate) struct Written {
    partition: PartitionId,
    /// Whether it replaced the partition whole (or removed it).
    whole: bool,
    durable: Option<(u64, u64)>,
    bytes: usize,
    result: Result<(), colony_store::StoreError>,
}

/// A request of a handle waiting for its answer.
struct Waiter {
    reply: oneshot::Sender<SpaceAnswer>,
    /// The object, for a lock request (released if nobody takes the grant).
    lock: Option<ObjectKey>,
    /// A lock kept for a holder outside this process: renewed until
    /// unlocked (`true`) or left to run out at its lease; `None`: watched
    /// for its guard.
    keep: Option<bool>,
    /// The token an unlock gives up.
    unlock: Option<u64>,
}

/// What the driver counts of the space.
#[derive(Default)]
pub(crate) struct SpaceIoCounters {
    pub(crate) write_errors: u64,
    /// Changes not written because an earlier write of their partition
    /// failed.
    pub(crate) writes_skipped: u64,
    pub(crate) writes_backlogged: u64,
    pub(crate) locks_lost: u64,
    pub(crate) abandoned_grants: u64,
}

/// The driver's state for the object space.
pub(crate) struct SpaceIo {
    written_tx: mpsc::Sender<Written>,
    pub(crate) written_rx: mpsc::Receiver<Written>,
    in_flight: usize,
    bytes_in_flight: usize,
    backlog: BTreeMap<PartitionId, Pending>,
    /// Partitions whose last write failed: nothing more is confirmed until
    /// one is written whole.
    failed: BTreeSet<PartitionId>,
    waiters: HashMap<RequestId, Waiter>,
    watchers: HashMap<u64, watch::Sender<Option<LockLost>>>,
    pub(crate) counters: SpaceIoCounters,
}

impl SpaceIo {
    pub(crate) fn new() -> SpaceIo {
        let (written_tx, written_rx) = mpsc::channel(WRITES_IN_FLIGHT);
        SpaceIo {
            written_tx,
            written_rx,
            in_flight: 0,
            bytes_in_flight: 0,
            backlog: BTreeMap::new(),
            failed: BTreeSet::new(),
            waiters: HashMap::new(),
            watchers: HashMap::new(),
            counters: SpaceIoCounters::default(),
        }
    }

    /// Whether a write of `bytes` may go to the store now.
    fn has_room(&self, bytes: usize) -> bool {
        self.in_flight < WRITES_IN_FLIGHT
            && (self.in_flight == 0 || self.bytes_in_flight + bytes <= BYTES_IN_FLIGHT)
    }

    /// Writes waiting for the disk, and writes waiting for room.
    pub(crate) fn writes(&self) -> (usize, usize) {
        (self.in_flight, self.backlog.len())
    }

    /// Partitions this peer no longer confirms (a write failed).
    pub(crate) fn failed(&self) -> usize {
        self.failed.len()
    }
}

impl Driver {
    /// Executes a space output of the node.
    pub(super) fn on_space_output(&mut self, now: Instant, out: NodeOutput<PeerId>) {
        match out {
            NodeOutput::PersistSpace {
                partition,
                term,
                seq,
                size,
                members,
                config,
                data,
            } => {
                debug!(partition, term, seq, "space partition to write");
                if self.space.failed.contains(&partition) && matches!(data, Unpersisted::Changes(_))
                {
                    // Changes without the ones that failed would make the
                    // disk claim an update it lacks: the disk keeps the last
                    // state written in full until a whole one comes.
                    self.space.counters.writes_skipped += 1;
                    return;
                }
                let meta = PartitionMeta {
                    term,
                    seq,
                    size,
                    members,
                    config,
                };
                match encode_write(partition, &meta, data) {
                    Ok(write) => {
                        self.queue_space(partition, Pending::write(write, Some((term, seq))))
                    }
                    Err(error) => {
                        // Nothing written, nothing confirmed: the partition
                        // is not held here as far as its home counts.
                        self.space.counters.write_errors += 1;
                        self.space.failed.insert(partition);
                        warn!(partition, %error, "space partition not encoded; not written, no longer confirmed by this peer");
                    }
                }
            }
            NodeOutput::UnpersistSpace { partition } => {
                debug!(
                    partition,
                    "space partition no longer held here; deleting it"
                );
                self.queue_space(partition, Pending::removal());
            }
            NodeOutput::SpaceAnswer { id, result } => self.space_answered(now, id, result),
            NodeOutput::SpaceLockLost(lost) => {
                self.space.counters.locks_lost += 1;
                info!(key = %lost.key, token = lost.token, why = %lost.why, "space lock lost");
                if let Some(watcher) = self.space.watchers.remove(&lost.token) {
                    let _ = watcher.send(Some(lost));
                }
            }
            _ => {}
        }
    }

    /// Queues a write of `partition`: behind its backlog if it has one (so
    /// writes stay in order), else to the store if there is room.
    fn queue_space(&mut self, partition: PartitionId, pending: Pending) {
        if let Some(waiting) = self.space.backlog.get_mut(&partition) {
            waiting.merge(pending);
            return;
        }
        if !self.space.has_room(pending.bytes()) {
            self.space.counters.writes_backlogged += 1;
            self.space.backlog.insert(partition, pending);
            return;
        }
        if let Err(pending) = self.submit_space(partition, pending) {
            self.space.counters.writes_backlogged += 1;
            self.space.backlog.insert(partition, pending);
        }
    }

    /// Hands a write to the store; gives it back if the store's queue is
    /// full.
    fn submit_space(&mut self, partition: PartitionId, pending: Pending) -> Result<(), Pending> {
        let tx = self.space.written_tx.clone();
        let bytes = pending.bytes();
        let (whole, durable) = (pending.whole, pending.durable);
        // Never full: at most WRITES_IN_FLIGHT completions are due.
        let done: colony_store::Done = Box::new(move |result| {
            let _ = tx.try_send(Written {
                partition,
                whole,
                durable,
                bytes,
                result,
            });
        });
        let queued = match pending.meta {
            None => self
                .checkpoints
                .remove_space(partition, done)
                .map_err(|error| (error, Pending::removal())),
            Some(meta) => {
                let write = SpaceWrite {
                    partition,
                    whole,
                    meta,
                    rows: pending.rows.into_iter().collect(),
                };
                self.checkpoints
                    .put_space(write, done)
                    .map_err(|refused| (refused.error, Pending::write(refused.write, durable)))
            }
        };
        match queued {
            Ok(()) => {
                self.space.in_flight += 1;
                self.space.bytes_in_flight += bytes;
                Ok(())
            }
            Err((error, pending)) => {
                if matches!(error, colony_store::StoreError::Backpressure { .. }) {
                    debug!(partition, %error, "space partition write waits for room in the store's queue");
                } else if let Some(suppressed) = self.may_warn(None, "space writes stopped") {
                    warn!(partition, %error, suppressed, "space partition writes wait: the store cannot take them");
                }
                Err(pending)
            }
        }
    }

    /// Sends backlogged writes while there is room.
    pub(super) fn drain_space_backlog(&mut self) {
        while let Some((&partition, pending)) = self.space.backlog.first_key_value() {
            if !self.space.has_room(pending.bytes()) {
                return;
            }
            let Some(pending) = self.space.backlog.remove(&partition) else {
                return;
            };
            if let Err(pending) = self.submit_space(partition, pending) {
                // The store's queue is full: try again on the next wake.
                self.space.backlog.insert(partition, pending);
                return;
            }
        }
    }

    /// A partition write finished: its update is confirmed if it is on disk.
    pub(super) fn on_space_written(&mut self, done: Written) {
        self.space.in_flight = self.space.in_flight.saturating_sub(1);
        self.space.bytes_in_flight = self.space.bytes_in_flight.saturating_sub(done.bytes);
        debug!(partition = done.partition, durable = ?done.durable, ok = done.result.is_ok(), "space partition write done");
        match done.result {
            Ok(()) => {
                if done.whole {
                    self.space.failed.remove(&done.partition);
                }
                if let (Some((term, seq)), false) =
                    (done.durable, self.space.failed.contains(&done.partition))
                {
                    self.node.handle(
                        Instant::now(),
                        NodeInput::SpaceDurable {
                            partition: done.partition,
                            term,
                            seq,
                        },
                    );
                }
            }
            Err(error) => {
                self.space.counters.write_errors += 1;
                if self.space.failed.insert(done.partition) {
                    warn!(partition = done.partition, %error, "space partition not written; this peer confirms none of its updates until it is written whole again (restart the peer to rejoin from the last state on disk)");
                }
            }
        }
        self.drain_space_backlog();
    }

    /// A handle asks the space (or peer `to` itself, a shard holder): the
    /// answer goes to `reply`.
    pub(super) fn space_request(
        &mut self,
        now: Instant,
        op: SpaceOp,
        timeout: Duration,
        keep: Option<bool>,
        to: Option<PeerId>,
        reply: oneshot::Sender<SpaceAnswer>,
    ) {
        let Some(reply) = self.refuse_if_busy(reply) else {
            return;
        };
        let lock = match &op {
            SpaceOp::Lock { key, .. } => Some(key.clone()),
            _ => None,
        };
        let unlock = match &op {
            SpaceOp::Unlock { token, .. } => Some(*token),
            _ => None,
        };
        let asked = match to {
            Some(to) => self.node.space_request_at(now, to, op, timeout),
            None => self.node.space_request(now, op, timeout),
        };
        self.space_wait(
            asked,
            Waiter {
                reply,
                lock,
                keep,
                unlock,
            },
        );
    }

    /// A handle reads `key` the cached way: the answer goes to `reply`.
    pub(super) fn space_read_cached(
        &mut self,
        now: Instant,
        key: ObjectKey,
        timeout: Duration,
        reply: oneshot::Sender<SpaceAnswer>,
    ) {
        let Some(reply) = self.refuse_if_busy(reply) else {
            return;
        };
        let asked = self.node.space_read_cached(now, key, timeout);
        self.space_wait(
            asked,
            Waiter {
                reply,
                lock: None,
                keep: None,
                unlock: None,
            },
        );
    }

    /// `reply`, unless [`MAX_WAITERS`] requests wait already: then it is
    /// answered busy.
    fn refuse_if_busy(
        &self,
        reply: oneshot::Sender<SpaceAnswer>,
    ) -> Option<oneshot::Sender<SpaceAnswer>> {
        if self.space.waiters.len() < MAX_WAITERS {
            return Some(reply);
        }
        let _ = reply.send(SpaceAnswer {
            result: Err(SpaceError::Busy { max: MAX_WAITERS }),
            lost: None,
        });
        None
    }

    /// Files `waiter` under the id of the request the node accepted (its
    /// answer comes as [`NodeOutput::SpaceAnswer`], even one the node has
    /// at once), or tells it why the node refused the request.
    fn space_wait(&mut self, asked: Result<RequestId, SpaceError>, waiter: Waiter) {
        match asked {
            Ok(id) => {
                self.space.waiters.insert(id, waiter);
            }
            Err(error) => {
                let _ = waiter.reply.send(SpaceAnswer {
                    result: Err(error),
                    lost: None,
                });
            }
        }
    }

    fn space_answered(
        &mut self,
        now: Instant,
        id: RequestId,
        result: Result<SpaceReply, SpaceError>,
    ) {
        // Releases nobody waits for are not answered to anyone.
        let Some(waiter) = self.space.waiters.remove(&id) else {
            return;
        };
        if let Some(token) = waiter.unlock {
            self.space.watchers.remove(&token);
        }
        let granted = match (&result, waiter.lock) {
            (Ok(SpaceReply::Granted { token, .. }), Some(key)) => Some((key, *token)),
            _ => None,
        };
        if let (Some((_, token)), Some(false)) = (&granted, waiter.keep) {
            self.node.space_forget_lock(*token);
        }
        let lost = match &granted {
            Some((_, token))
                if waiter.keep.is_none() && self.space.watchers.len() < MAX_WATCHED_LOCKS =>
            {
                let (tx, rx) = watch::channel(None);
                self.space.watchers.insert(*token, tx);
                Some(rx)
            }
            _ => None,
        };
        if waiter.reply.send(SpaceAnswer { result, lost }).is_err() {
            // The asker is gone (it gave up waiting): a lock granted to it
            // is released at once rather than renewed for nobody.
            if let Some((key, token)) = granted {
                self.space.counters.abandoned_grants += 1;
                self.release_space_lock(now, key, token);
            }
        }
    }

    /// Stops renewing a lock and releases it; the answer goes nowhere.
    pub(super) fn release_space_lock(&mut self, now: Instant, key: ObjectKey, token: u64) {
        self.space.watchers.remove(&token);
        self.node.space_forget_lock(token);
        if let Err(error) = self.node.space_request(
            now,
            SpaceOp::Unlock {
                key: key.clone(),
                token,
            },
            RELEASE_TIMEOUT,
        ) {
            warn!(%key, token, %error, "space lock not released; it goes when its lease runs out");
        }
    }

    /// The space part of `/v1/status`.
    pub(super) fn space_info(&self) -> crate::info::SpaceInfo {
        let space = self.node.space();
        let counters = space.counters();
        let homes = space.homes();
        let (writes_in_flight, writes_backlogged) = self.space.writes();
        let (cached_objects, cached_bytes) = space.cached_copies();
        crate::info::SpaceInfo {
            capacity_bytes: self.config.space.capacity_bytes,
            max_object_bytes: self.config.space.max_object_bytes as u64,
            partitions: homes.len(),
            primary_of: homes
                .iter()
                .filter(|(_, h)| h.is_primary())
                .map(|(p, _)| *p)
                .collect(),
            held: homes.keys().copied().collect(),
            objects: homes.values().map(|h| h.object_count() as u64).sum(),
            bytes: space.stored_bytes(),
            locks: homes.values().map(|h| h.lock_count() as u64).sum(),
            requests_applied: counters.applied,
            requests_redirected: counters.redirected,
            requests_refused: counters.refused,
            partitions_created: counters.created,
            expired_leases: counters.expired_leases,
            revoked_locks: counters.revoked_locks,
            pending_requests: space.pending_requests(),
            writes_in_flight,
            writes_backlogged,
            writes_delayed: self.space.counters.writes_backlogged,
            writes_skipped: self.space.counters.writes_skipped,
            write_errors: self.space.counters.write_errors,
            partitions_not_persisted: self.space.failed(),
            partitions_corrupt: self.checkpoints.stats().space_partitions_corrupt,
            locks_lost: self.space.counters.locks_lost,
            unclaimed_grants_released: self.space.counters.abandoned_grants,
            cache_hits: counters.cache_hits,
            replica_reads: counters.replica_reads,
            hot_reads: counters.hot_reads,
            cached_objects,
            cached_bytes,
            // Filled in by `Peer::status`, which holds them.
            max_value_bytes: 0,
            chunked_writes: 0,
            chunk_cleanup_failures: 0,
            hot_copies_sent: counters.hot_copies_sent,
            shards: space.held_shards().0,
            shard_bytes: space.held_shards().1,
            shards_missing: counters.shards_missing,
            shard_write_errors: self.shards.errors,
            shards_corrupt: self.checkpoints.stats().shards_corrupt,
            coded_writes: 0,
            shard_repairs: 0,
            shard_orphans_dropped: 0,
        }
    }
}

/// The disk write for a partition's persist output.
fn encode_write(
    partition: PartitionId,
    meta: &PartitionMeta,
    data: Unpersisted,
) -> Result<SpaceWrite, String> {
    let meta = wire::encode(meta, usize::MAX).map_err(|e| e.to_string())?;
    let (whole, changes) = match data {
        Unpersisted::Whole(changes) => (true, changes),
        Unpersisted::Changes(changes) => (false, changes),
    };
    let rows = changes
        .iter()
        .map(Change::row)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())?;
    Ok(SpaceWrite {
        partition,
        whole,
        meta,
        rows,
    })
}

/// Why a partition read back from disk cannot be used.
fn decode_partition(
    now: Instant,
    stored: colony_store::StoredPartition,
) -> Result<(Partition, PartitionMeta), String> {
    let meta: PartitionMeta = wire::decode(&stored.meta, usize::MAX)
        .map_err(|e| format!("its meta row does not decode: {e}"))?;
    let mut changes = Vec::with_capacity(stored.rows.len());
    for (key, bytes) in &stored.rows {
        let change = Change::from_row(bytes).ok_or("a row does not decode")?;
        // A row filed under another key is as bad as a damaged one.
        match change.row() {
            Ok((own, Some(_))) if own == *key => changes.push(change),
            _ => return Err("a row is filed under another key".into()),
        }
    }
    let partition = Partition::from_changes(now, stored.partition, changes)
        .ok_or("its rows are inconsistent")?;
    Ok((partition, meta))
}

/// Reads the space partitions a previous run left on disk and gives them
/// back to the node, to rejoin their homes as backups; a partition that
/// cannot be used whole is deleted. Returns how many were restored.
pub(crate) fn restore_space(
    node: &mut Node<PeerId>,
    store: &CheckpointStore,
    now: Instant,
) -> usize {
    let corrupt = store.corrupt_space_partitions();
    if !corrupt.is_empty() {
        warn!(partitions = ?corrupt, file = %store.path().display(), "space partitions failed their checksum and were dropped whole; their homes bring this peer up to date");
    }
    let stored = match store.space_partitions() {
        Ok(stored) => stored,
        Err(error) => {
            warn!(%error, "cannot read the space partitions on disk; starting without them");
            return 0;
        }
    };
    let mut restored = 0;
    for stored in stored {
        let id = stored.partition;
        let outcome = decode_partition(now, stored).and_then(|(partition, meta)| {
            node.restore_space(
                now,
                partition,
                meta.size,
                meta.members,
                meta.config,
                (meta.term, meta.seq),
            )
            .then_some(())
            .ok_or_else(|| "its home refused it (bad members, or too many homes)".to_string())
        });
        match outcome {
            Ok(()) => restored += 1,
            Err(why) => {
                warn!(partition = id, %why, "space partition on disk not usable; deleted");
                if let Err(error) = store.remove_space(id, Box::new(|_| {})) {
                    warn!(partition = id, %error, "space partition not deleted");
                }
            }
        }
    }
    if restored > 0 {
        info!(
            partitions = restored,
            "space partitions found on disk: rejoining their homes"
        );
    }
    restored
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(pairs: &[(&str, Option<&str>)]) -> Vec<Row> {
        pairs
            .iter()
            .map(|(k, v)| (k.as_bytes().to_vec(), v.map(|v| v.as_bytes().to_vec())))
            .collect()
    }

    fn write(whole: bool, meta: &str, pairs: &[(&str, Option<&str>)], seq: u64) -> Pending {
        let write = SpaceWrite {
            partition: 3,
            whole,
            meta: meta.as_bytes().to_vec(),
            rows: rows(pairs),
        };
        Pending::write(write, Some((1, seq)))
    }

    /// A row as the tests write it.
    type Row = (Vec<u8>, Option<Vec<u8>>);

    /// What a pending write holds: whole, meta, rows, update confirmed.
    type Shape = (bool, Option<String>, Vec<Row>, Option<u64>);

    fn shape(p: &Pending) -> Shape {
        (
            p.whole,
            p.meta
                .as_ref()
                .map(|m| String::from_utf8_lossy(m).into_owned()),
            p.rows.clone().into_iter().collect(),
            p.durable.map(|(_, seq)| seq),
        )
    }

    #[test]
    fn waiting_writes_merge_into_what_the_disk_must_hold_after_all_of_them() {
        // Changes then changes: row by row, the later wins; the later
        // update is the one confirmed.
        let mut p = write(false, "m1", &[("a", Some("1")), ("b", Some("1"))], 1);
        p.merge(write(false, "m2", &[("b", None), ("c", Some("2"))], 2));
        assert_eq!(
            shape(&p),
            (
                false,
                Some("m2".into()),
                rows(&[("a", Some("1")), ("b", None), ("c", Some("2"))]),
                Some(2)
            )
        );
        // A whole write replaces everything before it, and stays whole.
        p.merge(write(true, "m3", &[("z", Some("3"))], 3));
        p.merge(write(false, "m4", &[("y", Some("4"))], 4));
        assert_eq!(
            shape(&p),
            (
                true,
                Some("m4".into()),
                rows(&[("y", Some("4")), ("z", Some("3"))]),
                Some(4)
            )
        );
        // A removal drops what waited; changes after it start from nothing.
        p.merge(Pending::removal());
        assert_eq!(shape(&p), (true, None, Vec::new(), None));
        p.merge(write(false, "m5", &[("x", Some("5"))], 5));
        assert_eq!(
            shape(&p),
            (true, Some("m5".into()), rows(&[("x", Some("5"))]), Some(5))
        );
        assert_eq!(p.bytes(), "m5".len() + "x".len() + "5".len());
    }

    #[test]
    fn a_partition_read_back_must_decode_whole_and_consistent() {
        let now = Instant::now();
        let peer = PeerId::random();
        let meta = PartitionMeta {
            term: 4,
            seq: 9,
            size: 3,
            members: vec![peer],
            config: vec![peer],
        };
        let changes = vec![
            Change::NextToken(5),
            Change::Purged("job-1".into(), 2),
            Change::Purged("job-2".into(), 7),
        ];
        let write = encode_write(11, &meta, Unpersisted::Whole(changes)).expect("encoded");
        assert!(write.whole);
        let stored = colony_store::StoredPartition {
            partition: 11,
            meta: write.meta.clone(),
            rows: write
                .rows
                .iter()
                .map(|(k, v)| (k.clone(), v.clone().expect("written rows")))
                .collect(),
        };
        let (partition, read) = decode_partition(now, stored.clone()).expect("usable");
        assert_eq!(partition.id(), 11);
        assert_eq!((read.term, read.seq, read.size), (4, 9, 3));
        assert_eq!(read.members, vec![peer]);

        // A row under another row's key, a row or a meta row that does not
        // decode: the partition is not used.
        let mut swapped = stored.clone();
        let first = swapped.rows[0].1.clone();
        swapped.rows[0].1 = swapped.rows[1].1.clone();
        swapped.rows[1].1 = first;
        assert!(decode_partition(now, swapped)
            .unwrap_err()
            .contains("another key"));
        let mut garbage = stored.clone();
        garbage.rows[0].1 = vec![0xff; 3];
        assert!(decode_partition(now, garbage).is_err());
        let mut bad_meta = stored;
        bad_meta.meta = vec![1, 2];
        assert!(decode_partition(now, bad_meta)
            .unwrap_err()
            .contains("meta row"));
    }
}
