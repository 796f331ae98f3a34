//! Durable checkpoint pieces: the whole copies or erasure-coded shards of
//! unit checkpoints that a job's home members and workers keep on disk
//! (G2:P2P scenarios 2 and 3, seed 004 §4.2–4.3), in a redb file of their
//! own so checkpoint traffic never contends with the peer database. The
//! partitions of the object space held here live in the same file and are
//! written by the same thread ([`crate::space`]), and so are the records of
//! objects ([`CheckpointStore::put_object`]): an object's record must be on
//! disk at a majority of its home before its calls are answered.
//!
//! One fsync costs milliseconds, and checkpoints arrive from many units at
//! once, so writes are **group-committed**: a dedicated writer thread owns
//! the write side, takes requests from a bounded queue, and commits everything
//! that queued up while the previous commit was syncing in *one* write
//! transaction (one fsync), then calls each request's completion callback.
//! A caller never blocks: [`CheckpointStore::put`] either queues or fails at
//! once with [`StoreError::Backpressure`]. Reads go straight to the database
//! and see every batch committed so far.
//!
//! Pieces are stored under versioned keys, `(job, unit, holder_index,
//! epoch, version)`: a newer piece is stored *beside* the older ones of its
//! key, never over them, so the checkpoint a job record points to stays on
//! disk while newer, not yet committed ones are written; the job core
//! deletes the versions it no longer keeps ([`CheckpointStore::remove`]). A
//! piece not newer than the newest stored for its key is skipped, so writes
//! are idempotent and safe to deliver out of order or twice.
//!
//! Every piece is stored with a CRC-32 of its key, epoch, version and bytes.
//! Opening the store drops the pieces that fail it and names them
//! ([`CheckpointStore::corrupt_pieces`]); reads never return one. The file as
//! a whole is opened with redb's integrity check (see [`crate::open`]).

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TryRecvError, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use crate::open::{self, Kind};
use crate::space::{read_keyed, Keyed, SpaceCounts, SpaceTables, SpaceWrite, StoredPartition};
use crate::{RepairReport, StoreError};

/// A piece's key without its version: (job, unit, holder_index).
type KeyTuple = ([u8; 16], u64, u8);

/// A piece's key on disk: (job, unit, holder_index, epoch, version), fixed
/// width, so one job's pieces, and one key's versions, are contiguous
/// ranges.
type VersionedKey = ([u8; 16], u64, u8, u64, u64);

/// A piece on disk: (checksum, bytes).
type VersionedValue<'a> = (u32, &'a [u8]);

const PIECES: TableDefinition<VersionedKey, VersionedValue> =
    TableDefinition::new("checkpoint_pieces_v3");

/// A piece on disk before keys were versioned: (epoch, version, checksum,
/// bytes) under its [`KeyTuple`]. Moved to [`PIECES`] when a store is
/// opened.
type ValueTuple<'a> = (u64, u64, u32, &'a [u8]);

const UNVERSIONED_PIECES: TableDefinition<KeyTuple, ValueTuple> =
    TableDefinition::new("checkpoint_pieces_v2");

/// Pieces as stored before they carried a checksum: (epoch, version,
/// bytes). Moved to [`PIECES`] when a store is opened.
type LegacyValueTuple<'a> = (u64, u64, &'a [u8]);

const LEGACY_PIECES: TableDefinition<KeyTuple, LegacyValueTuple> =
    TableDefinition::new("checkpoint_pieces");

/// Most corrupt pieces whose keys are kept for the caller to report.
const MAX_CORRUPT_KEYS: usize = 1024;

/// The checksum stored with a piece: CRC-32 of its key, epoch, version and
/// bytes.
fn checksum(key: KeyTuple, epoch: u64, version: u64, bytes: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&key.0);
    hasher.update(&key.1.to_le_bytes());
    hasher.update(&[key.2]);
    hasher.update(&epoch.to_le_bytes());
    hasher.update(&version.to_le_bytes());
    hasher.update(bytes);
    hasher.finalize()
}

/// Whether the piece stored as `value` under `key` passes its checksum.
fn intact(key: VersionedKey, (sum, bytes): VersionedValue<'_>) -> bool {
    let (job, unit, index, epoch, version) = key;
    checksum((job, unit, index), epoch, version, bytes) == sum
}

/// The piece stored as `value` under `key`, `None` if it fails its checksum.
fn verified(key: VersionedKey, value: VersionedValue<'_>) -> Option<StoredPiece> {
    let (_, _, _, epoch, version) = key;
    intact(key, value).then(|| StoredPiece {
        epoch,
        version,
        bytes: value.1.to_vec(),
    })
}

/// `key`'s piece of checkpoint (`epoch`, `version`) on disk.
fn versioned((job, unit, index): KeyTuple, epoch: u64, version: u64) -> VersionedKey {
    (job, unit, index, epoch, version)
}

/// Every version of `key`, oldest first.
fn versions(key: KeyTuple) -> std::ops::RangeInclusive<VersionedKey> {
    versioned(key, 0, 0)..=versioned(key, u64::MAX, u64::MAX)
}

/// The newest version of `key` in `table` that passes its checksum.
fn newest(
    table: &impl ReadableTable<VersionedKey, VersionedValue<'static>>,
    key: KeyTuple,
) -> Result<Option<StoredPiece>, redb::StorageError> {
    for entry in table.range(versions(key))?.rev() {
        let (k, v) = entry?;
        if let Some(piece) = verified(k.value(), v.value()) {
            return Ok(Some(piece));
        }
    }
    Ok(None)
}

/// Bytes a request counts for in a batch besides its payload.
const REQUEST_OVERHEAD_BYTES: usize = 64;

/// Which piece of which checkpoint: a job, one of its work units, and which
/// of the unit's holders this piece belongs to (the shard index for
/// erasure-coded checkpoints, the copy number for whole copies).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PieceKey {
    /// The job's id.
    pub job: [u8; 16],
    /// The work unit within the job.
    pub unit: u64,
    /// The holder's position among the unit's holders (shard index or copy
    /// number).
    pub holder_index: u8,
}

impl PieceKey {
    fn tuple(self) -> KeyTuple {
        (self.job, self.unit, self.holder_index)
    }
}

/// A stored checkpoint piece and how recent it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredPiece {
    /// Epoch of the unit's owner (bumped when the unit moves to another
    /// worker); compared before `version`.
    pub epoch: u64,
    /// Checkpoint number within the epoch.
    pub version: u64,
    /// The piece: a serialised whole checkpoint or one shard of it.
    pub bytes: Vec<u8>,
}

/// Completion callback of a queued write: called once, from the writer
/// thread, when the batch holding the write is durable (`Ok`) or has failed
/// (`Err`). It runs on the only writer thread, so it must return quickly
/// (e.g. a non-blocking send on a channel); a panic in it is caught.
pub type Done = Box<dyn FnOnce(Result<(), StoreError>) + Send + 'static>;

/// Limits of a [`CheckpointStore`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckpointStoreConfig {
    /// Requests that may wait for the writer before `put` reports
    /// backpressure (at least 1).
    pub queue_capacity: usize,
    /// A batch stops taking requests once their payloads reach this many
    /// bytes (a single larger piece is committed alone).
    pub max_batch_bytes: usize,
    /// Most requests in one transaction. 1 turns group commit off (one
    /// transaction and fsync per request), for comparison.
    pub max_batch_requests: usize,
}

impl Default for CheckpointStoreConfig {
    fn default() -> Self {
        CheckpointStoreConfig {
            queue_capacity: 4096,
            max_batch_bytes: 8 << 20,
            max_batch_requests: 4096,
        }
    }
}

/// What the writer has done since the store was opened.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GroupCommitStats {
    /// Write transactions committed (one fsync each).
    pub batches: u64,
    /// Requests (puts and job removals) completed successfully.
    pub requests: u64,
    /// Pieces written (newer than what was stored).
    pub pieces_written: u64,
    /// Puts skipped because the stored piece was as new or newer.
    pub pieces_stale: u64,
    /// Pieces deleted by job removals and piece removals.
    pub pieces_removed: u64,
    /// Most requests committed in one transaction.
    pub largest_batch: u64,
    /// Transactions that failed (each of their requests got the error).
    pub failed_batches: u64,
    /// Pieces that failed their checksum, found when the store was opened
    /// (and dropped) or when read.
    pub pieces_corrupt: u64,
    /// Writes of object-space partitions committed.
    pub space_writes: u64,
    /// Partition rows written.
    pub space_rows_written: u64,
    /// Partition rows deleted (by changes, whole writes and removals).
    pub space_rows_deleted: u64,
    /// Partitions removed.
    pub space_partitions_removed: u64,
    /// Partition writes refused because an earlier write of the same
    /// partition failed (only a whole write or a removal is taken then).
    pub space_writes_refused: u64,
    /// Partitions dropped whole because a row failed its checksum, found
    /// when the store was opened or when read back.
    pub space_partitions_corrupt: u64,
    /// Erasure-coded shards written.
    pub shards_written: u64,
    /// Shards deleted.
    pub shards_removed: u64,
    /// Shards that failed their checksum, found when the store was opened
    /// (and dropped) or when read back.
    pub shards_corrupt: u64,
    /// Object records written.
    pub objects_written: u64,
    /// Object records deleted.
    pub objects_removed: u64,
    /// Object records that failed their checksum, found when the store was
    /// opened (and dropped) or when read back.
    pub objects_corrupt: u64,
}

enum Request {
    Put {
        key: PieceKey,
        piece: StoredPiece,
        done: Done,
    },
    RemoveJob {
        job: [u8; 16],
        done: Done,
    },
    Remove {
        key: PieceKey,
        epoch: u64,
        version: u64,
        done: Done,
    },
    SpacePut {
        write: SpaceWrite,
        done: Done,
    },
    SpaceRemove {
        partition: u16,
        done: Done,
    },
    ShardPut {
        id: Vec<u8>,
        bytes: Vec<u8>,
        done: Done,
    },
    ShardRemove {
        ids: Vec<Vec<u8>>,
        done: Done,
    },
    ObjectPut {
        id: [u8; 16],
        bytes: Vec<u8>,
        done: Done,
    },
    ObjectRemove {
        id: [u8; 16],
        done: Done,
    },
}

impl Request {
    fn cost(&self) -> usize {
        match self {
            Request::Put { piece, .. } => piece.bytes.len() + REQUEST_OVERHEAD_BYTES,
            Request::SpacePut { write, .. } => {
                write.bytes() + REQUEST_OVERHEAD_BYTES * (1 + write.rows.len())
            }
            Request::ShardPut { id, bytes, .. } => id.len() + bytes.len() + REQUEST_OVERHEAD_BYTES,
            Request::ShardRemove { ids, .. } => REQUEST_OVERHEAD_BYTES * (1 + ids.len()),
            Request::ObjectPut { id, bytes, .. } => id.len() + bytes.len() + REQUEST_OVERHEAD_BYTES,
            Request::RemoveJob { .. }
            | Request::Remove { .. }
            | Request::SpaceRemove { .. }
            | Request::ObjectRemove { .. } => REQUEST_OVERHEAD_BYTES,
        }
    }

    fn into_done(self) -> Done {
        match self {
            Request::Put { done, .. }
            | Request::RemoveJob { done, .. }
            | Request::Remove { done, .. }
            | Request::SpacePut { done, .. }
            | Request::SpaceRemove { done, .. }
            | Request::ShardPut { done, .. }
            | Request::ShardRemove { done, .. }
            | Request::ObjectPut { done, .. }
            | Request::ObjectRemove { done, .. } => done,
        }
    }

    /// The space partition this request writes, if any.
    fn partition(&self) -> Option<u16> {
        match self {
            Request::SpacePut { write, .. } => Some(write.partition),
            Request::SpaceRemove { partition, .. } => Some(*partition),
            _ => None,
        }
    }
}

/// A partition write the store did not queue, handed back with the reason
/// (so that the caller can queue it again later, losing nothing).
pub struct NotQueued {
    /// Why it was not queued: [`StoreError::Backpressure`] or
    /// [`StoreError::WriterStopped`].
    pub error: StoreError,
    /// The write.
    pub write: SpaceWrite,
    /// Its completion callback, never called.
    pub done: Done,
}

impl std::fmt::Debug for NotQueued {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NotQueued")
            .field("error", &self.error)
            .field("partition", &self.write.partition)
            .finish_non_exhaustive()
    }
}

/// Durable checkpoint pieces of one peer, written by a group-committing
/// writer thread. Dropping the store flushes what is queued (calling every
/// callback) and stops the thread.
pub struct CheckpointStore {
    db: Arc<Database>,
    path: PathBuf,
    capacity: usize,
    queue: Option<SyncSender<Request>>,
    writer: Option<JoinHandle<()>>,
    stats: Arc<Mutex<GroupCommitStats>>,
    corrupt: Vec<PieceKey>,
    corrupt_space: Vec<u16>,
}

impl CheckpointStore {
    /// Opens (creating) the store in its own redb file at `path`, with the
    /// default [`CheckpointStoreConfig`]. Fails with
    /// [`StoreError::FileInUse`] if the file is already open, in another
    /// process or in this one.
    pub fn open(path: &Path) -> Result<CheckpointStore, StoreError> {
        CheckpointStore::open_with(path, CheckpointStoreConfig::default())
    }

    /// Opens (creating) the store at `path` with the given limits.
    ///
    /// A damaged file (an empty one included: redb never leaves one) fails
    /// with [`StoreError::Damaged`]; pieces that fail their checksum are
    /// dropped and listed by [`CheckpointStore::corrupt_pieces`], and space
    /// partitions with any row failing it are dropped whole and listed by
    /// [`CheckpointStore::corrupt_space_partitions`].
    pub fn open_with(
        path: &Path,
        config: CheckpointStoreConfig,
    ) -> Result<CheckpointStore, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            open::create_dir(dir)?;
        }
        if open::file_len(path)? == Some(0) {
            return Err(open::damaged(
                path,
                Kind::Checkpoints,
                "the file is empty (it was truncated)",
            ));
        }
        let db = open::open_checked(path, Kind::Checkpoints, false)?.db;
        let (corrupt, corrupt_space, corrupt_shards, corrupt_objects) =
            open::guarded(|| drop_corrupt(&db))
                .map_err(|panic| open::damaged(path, Kind::Checkpoints, panic))?
                .map_err(|e| db_error(path, e))?;

        let db = Arc::new(db);
        let capacity = config.queue_capacity.max(1);
        let (queue, requests) = sync_channel(capacity);
        let stats = Arc::new(Mutex::new(GroupCommitStats {
            pieces_corrupt: corrupt.len() as u64,
            space_partitions_corrupt: corrupt_space.len() as u64,
            shards_corrupt: corrupt_shards,
            objects_corrupt: corrupt_objects,
            ..GroupCommitStats::default()
        }));
        let mut corrupt = corrupt;
        corrupt.truncate(MAX_CORRUPT_KEYS);
        let writer = Writer {
            db: db.clone(),
            path: path.to_path_buf(),
            requests,
            stats: stats.clone(),
            max_batch_bytes: config.max_batch_bytes.max(1),
            max_batch_requests: config.max_batch_requests.max(1),
            failed_partitions: std::collections::BTreeSet::new(),
        };
        let writer = std::thread::Builder::new()
            .name("colony-checkpoints".into())
            .spawn(move || writer.run())
            .map_err(|e| StoreError::Database {
                path: path.to_path_buf(),
                message: format!("cannot start the writer thread: {e}"),
            })?;
        Ok(CheckpointStore {
            db,
            path: path.to_path_buf(),
            capacity,
            queue: Some(queue),
            writer: Some(writer),
            stats,
            corrupt,
            corrupt_space,
        })
    }

    /// `colony peer --repair`: repairs the store file at `path` with redb's
    /// own repair, or else moves it aside and copies the pieces that can
    /// still be read and pass their checksum into a new file. Space
    /// partitions are not copied from a damaged file: rows that cannot be
    /// read would go unnoticed and leave a partial replica, and their homes
    /// bring a peer without them up to date.
    pub fn repair(path: &Path) -> Result<RepairReport, StoreError> {
        open::repair_file(
            path,
            Kind::Checkpoints,
            |aside| open::read_damaged(aside, salvage_pieces),
            |salvaged| {
                Ok(format!(
                    "{} checkpoint pieces",
                    salvaged.map_or(0, Vec::len)
                ))
            },
            |db, pieces| {
                let txn = db.begin_write().map_err(|e| db_error(path, e))?;
                {
                    let mut table = txn.open_table(PIECES).map_err(|e| db_error(path, e))?;
                    for (key, piece) in &pieces {
                        let sum = checksum(*key, piece.epoch, piece.version, &piece.bytes);
                        table
                            .insert(
                                versioned(*key, piece.epoch, piece.version),
                                (sum, piece.bytes.as_slice()),
                            )
                            .map_err(|e| db_error(path, e))?;
                    }
                }
                txn.commit().map_err(|e| db_error(path, e))
            },
        )
    }

    /// The pieces that failed their checksum when the store was opened, and
    /// were dropped (at most 1024 keys; [`GroupCommitStats::pieces_corrupt`]
    /// counts them all).
    pub fn corrupt_pieces(&self) -> &[PieceKey] {
        &self.corrupt
    }

    /// Queues a write of `piece` under `key`, beside the older versions
    /// stored for `key`; it is applied only if `piece` is newer (by
    /// `(epoch, version)`) than the newest stored one. `done` is called
    /// once the batch holding it is durable — `Ok` also when the piece was
    /// not newer, since the store then holds an equal or newer one.
    /// Requests are applied in the order they were queued.
    ///
    /// Returns [`StoreError::Backpressure`] at once if the queue is full (or
    /// [`StoreError::WriterStopped`]); then nothing was queued and `done` is
    /// never called.
    pub fn put(&self, key: PieceKey, piece: StoredPiece, done: Done) -> Result<(), StoreError> {
        self.enqueue(Request::Put { key, piece, done })
            .map_err(|refused| refused.0)
    }

    /// Queues the deletion of every piece of `job` (the job has finished);
    /// `done` and errors as for [`CheckpointStore::put`].
    pub fn remove_job(&self, job: [u8; 16], done: Done) -> Result<(), StoreError> {
        self.enqueue(Request::RemoveJob { job, done })
            .map_err(|refused| refused.0)
    }

    /// Queues the deletion of version (`epoch`, `version`) of `key` (the
    /// job core no longer keeps that checkpoint); `done` and errors as for
    /// [`CheckpointStore::put`].
    pub fn remove(
        &self,
        key: PieceKey,
        epoch: u64,
        version: u64,
        done: Done,
    ) -> Result<(), StoreError> {
        self.enqueue(Request::Remove {
            key,
            epoch,
            version,
            done,
        })
        .map_err(|refused| refused.0)
    }

    /// The space partitions that failed their checksum when the store was
    /// opened, and were dropped whole
    /// ([`GroupCommitStats::space_partitions_corrupt`] counts them).
    pub fn corrupt_space_partitions(&self) -> &[u16] {
        &self.corrupt_space
    }

    /// Queues a write of one space partition ([`SpaceWrite`]): its meta row
    /// and rows, or (with `whole`) everything stored for it. Writes are
    /// applied in the order they were queued, with the checkpoint pieces'
    /// writes, and `done` is called once the batch holding it is durable.
    ///
    /// Once a write of a partition has failed, its later writes fail too
    /// (without touching the disk) until one is `whole` or the partition is
    /// removed: the disk then keeps the last state written in full, never
    /// later changes without the failed ones.
    ///
    /// If the queue is full ([`StoreError::Backpressure`]) or the writer is
    /// gone, nothing is queued and the write comes back in [`NotQueued`].
    pub fn put_space(&self, write: SpaceWrite, done: Done) -> Result<(), Box<NotQueued>> {
        let Err(refused) = self.enqueue(Request::SpacePut { write, done }) else {
            return Ok(());
        };
        match *refused {
            (error, Request::SpacePut { write, done }) => {
                Err(Box::new(NotQueued { error, write, done }))
            }
            // Not reached: the queue hands back the request it was given.
            // Its callback hears of the failure all the same.
            (error, other) => {
                let done = other.into_done();
                let _ = catch_unwind(AssertUnwindSafe(move || done(Err(error))));
                Ok(())
            }
        }
    }

    /// Queues the deletion of everything stored for space `partition`;
    /// `done` and errors as for [`CheckpointStore::put`].
    pub fn remove_space(&self, partition: u16, done: Done) -> Result<(), StoreError> {
        self.enqueue(Request::SpaceRemove { partition, done })
            .map_err(|refused| refused.0)
    }

    /// Queues the write of an erasure-coded shard held for a writer, under
    /// `id` (opaque to the store; a shard already stored under it is
    /// replaced); `done` and errors as for [`CheckpointStore::put`].
    pub fn put_shard(&self, id: Vec<u8>, bytes: Vec<u8>, done: Done) -> Result<(), StoreError> {
        self.enqueue(Request::ShardPut { id, bytes, done })
            .map_err(|refused| refused.0)
    }

    /// Queues the deletion of the shards stored under `ids`.
    pub fn remove_shards(&self, ids: Vec<Vec<u8>>, done: Done) -> Result<(), StoreError> {
        self.enqueue(Request::ShardRemove { ids, done })
            .map_err(|refused| refused.0)
    }

    /// Every stored shard that passes its checksum, as (id, bytes), as of
    /// the last committed batch (used after a restart); those that fail it
    /// are left out and counted.
    pub fn shards(&self) -> Result<Vec<crate::space::StoredShard>, StoreError> {
        let txn = self.db.begin_read().map_err(|e| self.err(e))?;
        let (shards, bad) = read_keyed(&txn, Keyed::Shards).map_err(|e| self.err(e))?;
        if bad > 0 {
            self.stats
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .shards_corrupt += bad;
        }
        Ok(shards)
    }

    /// Queues the write of the record of the object `id` (its GUID; the
    /// bytes are opaque to the store, a record already stored under it is
    /// replaced), applied in order with the other writes; `done` and errors
    /// as for [`CheckpointStore::put`].
    pub fn put_object(&self, id: [u8; 16], bytes: Vec<u8>, done: Done) -> Result<(), StoreError> {
        self.enqueue(Request::ObjectPut { id, bytes, done })
            .map_err(|refused| refused.0)
    }

    /// Queues the deletion of the record of the object `id`; `done` and
    /// errors as for [`CheckpointStore::put`].
    pub fn remove_object(&self, id: [u8; 16], done: Done) -> Result<(), StoreError> {
        self.enqueue(Request::ObjectRemove { id, done })
            .map_err(|refused| refused.0)
    }

    /// Every stored object record that passes its checksum, as (GUID,
    /// bytes), as of the last committed batch (used after a restart); those
    /// that fail it are left out and counted.
    pub fn objects(&self) -> Result<Vec<crate::space::StoredObject>, StoreError> {
        let txn = self.db.begin_read().map_err(|e| self.err(e))?;
        let (rows, mut bad) = read_keyed(&txn, Keyed::Objects).map_err(|e| self.err(e))?;
        let mut objects = Vec::with_capacity(rows.len());
        for (id, bytes) in rows {
            // Intact rows have 16-byte ids; counted, never a panic.
            match <[u8; 16]>::try_from(id.as_slice()) {
                Ok(id) => objects.push((id, bytes)),
                Err(_) => bad += 1,
            }
        }
        if bad > 0 {
            self.stats
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .objects_corrupt += bad;
        }
        Ok(objects)
    }

    /// Every space partition stored whole and intact, by partition, as of
    /// the last committed batch (used after a restart). A partition with a
    /// row failing its checksum is left out (and counted).
    pub fn space_partitions(&self) -> Result<Vec<StoredPartition>, StoreError> {
        let txn = self.db.begin_read().map_err(|e| self.err(e))?;
        let (partitions, bad) = crate::space::read_all(&txn).map_err(|e| self.err(e))?;
        if !bad.is_empty() {
            self.stats
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .space_partitions_corrupt += bad.len() as u64;
        }
        Ok(partitions)
    }

    /// Queues `request`; if it cannot be, hands it back with the reason.
    fn enqueue(&self, request: Request) -> Result<(), Box<(StoreError, Request)>> {
        let Some(queue) = self.queue.as_ref() else {
            return Err(Box::new((self.stopped(), request)));
        };
        queue.try_send(request).map_err(|e| {
            Box::new(match e {
                TrySendError::Full(request) => (
                    StoreError::Backpressure {
                        capacity: self.capacity,
                    },
                    request,
                ),
                TrySendError::Disconnected(request) => (self.stopped(), request),
            })
        })
    }

    fn stopped(&self) -> StoreError {
        StoreError::WriterStopped {
            path: self.path.clone(),
        }
    }

    /// The newest stored piece for `key`, as of the last committed batch.
    pub fn get(&self, key: &PieceKey) -> Result<Option<StoredPiece>, StoreError> {
        let txn = self.db.begin_read().map_err(|e| self.err(e))?;
        let table = txn.open_table(PIECES).map_err(|e| self.err(e))?;
        let mut corrupt = 0;
        let mut found = None;
        for entry in table
            .range(versions(key.tuple()))
            .map_err(|e| self.err(e))?
            .rev()
        {
            let (k, v) = entry.map_err(|e| self.err(e))?;
            match verified(k.value(), v.value()) {
                Some(piece) => {
                    found = Some(piece);
                    break;
                }
                None => corrupt += 1,
            }
        }
        if corrupt > 0 {
            self.count_corrupt(corrupt);
        }
        Ok(found)
    }

    fn count_corrupt(&self, n: u64) {
        self.stats
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pieces_corrupt += n;
    }

    /// Every stored piece that passes its checksum, every version of each
    /// key, ordered by key, then oldest first (used after a restart).
    pub fn all(&self) -> Result<Vec<(PieceKey, StoredPiece)>, StoreError> {
        let txn = self.db.begin_read().map_err(|e| self.err(e))?;
        let table = txn.open_table(PIECES).map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        let mut corrupt = 0;
        for entry in table.iter().map_err(|e| self.err(e))? {
            let (key, value) = entry.map_err(|e| self.err(e))?;
            let key = key.value();
            match verified(key, value.value()) {
                Some(piece) => out.push((piece_key(unversioned(key)), piece)),
                None => corrupt += 1,
            }
        }
        if corrupt > 0 {
            self.count_corrupt(corrupt);
        }
        Ok(out)
    }

    /// Counters of the writer: batches committed, pieces written, largest
    /// batch, ….
    pub fn stats(&self) -> GroupCommitStats {
        *self.stats.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn err(&self, e: impl std::fmt::Display) -> StoreError {
        db_error(&self.path, e)
    }
}

impl Drop for CheckpointStore {
    fn drop(&mut self) {
        // Closing the queue lets the writer drain what is queued and exit.
        self.queue.take();
        if let Some(writer) = self.writer.take() {
            // A writer that panicked has nothing left to flush.
            let _ = writer.join();
        }
    }
}

impl std::fmt::Debug for CheckpointStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CheckpointStore")
            .field("path", &self.path)
            .field("capacity", &self.capacity)
            .field("stats", &self.stats())
            .finish()
    }
}

/// The pieces that can be read from a damaged store and pass their checksum.
fn salvage_pieces(db: &dyn ReadableDatabase) -> Option<Vec<(KeyTuple, StoredPiece)>> {
    let txn = db.begin_read().ok()?;
    let mut pieces = Vec::new();
    if let Ok(table) = txn.open_table(PIECES) {
        if let Ok(iter) = table.iter() {
            for entry in iter {
                // Stop at the first unreadable entry: what follows
                // it in the damaged tree cannot be trusted to end.
                let Ok((key, value)) = entry else { break };
                let key = key.value();
                if let Some(piece) = verified(key, value.value()) {
                    pieces.push((unversioned(key), piece));
                }
            }
        }
    }
    // A store damaged before it was opened by this version.
    if let Ok(table) = txn.open_table(UNVERSIONED_PIECES) {
        if let Ok(iter) = table.iter() {
            for entry in iter {
                let Ok((key, value)) = entry else { break };
                let key = key.value();
                let (epoch, version, sum, bytes) = value.value();
                if checksum(key, epoch, version, bytes) == sum {
                    let bytes = bytes.to_vec();
                    pieces.push((
                        key,
                        StoredPiece {
                            epoch,
                            version,
                            bytes,
                        },
                    ));
                }
            }
        }
    }
    Some(pieces)
}

/// A versioned key without its version.
fn unversioned((job, unit, index, _, _): VersionedKey) -> KeyTuple {
    (job, unit, index)
}

fn piece_key((job, unit, holder_index): KeyTuple) -> PieceKey {
    PieceKey {
        job,
        unit,
        holder_index,
    }
}

/// Moves pieces of the tables without checksums or without versioned
/// keys into [`PIECES`], creates it and the space tables if missing (so
/// readers never meet a missing table), deletes the pieces that fail their
/// checksum, the space partitions with any row that does and the shards
/// and object records that do, returning the pieces' keys, the partitions
/// and how many shards and records.
#[allow(clippy::type_complexity)]
fn drop_corrupt(db: &Database) -> Result<(Vec<PieceKey>, Vec<u16>, u64, u64), redb::Error> {
    let txn = db.begin_write()?;
    let mut corrupt = Vec::new();
    let mut space = SpaceTables::open(&txn)?;
    let corrupt_space = space.drop_corrupt()?;
    let corrupt_shards = space.drop_corrupt_keyed(Keyed::Shards)?;
    let corrupt_objects = space.drop_corrupt_keyed(Keyed::Objects)?;
    drop(space);
    {
        let mut table = txn.open_table(PIECES)?;
        match txn.open_table(LEGACY_PIECES) {
            Ok(legacy) => {
                for entry in legacy.iter()? {
                    let (key, value) = entry?;
                    let key = key.value();
                    let (epoch, version, bytes) = value.value();
                    let sum = checksum(key, epoch, version, bytes);
                    table.insert(versioned(key, epoch, version), (sum, bytes))?;
                }
                drop(legacy);
                txn.delete_table(LEGACY_PIECES)?;
            }
            Err(redb::TableError::TableDoesNotExist(_)) => {}
            Err(e) => return Err(e.into()),
        }
        match txn.open_table(UNVERSIONED_PIECES) {
            Ok(old) => {
                // The checksum covers the same fields: copied as it is (a
                // piece that fails it is dropped below). Written by an
                // older version, it replaces its key's pieces, as it did
                // there.
                for entry in old.iter()? {
                    let (key, value) = entry?;
                    let key = key.value();
                    let (epoch, version, sum, bytes) = value.value();
                    table.retain_in(versions(key), |_, _| false)?;
                    table.insert(versioned(key, epoch, version), (sum, bytes))?;
                }
                drop(old);
                txn.delete_table(UNVERSIONED_PIECES)?;
            }
            Err(redb::TableError::TableDoesNotExist(_)) => {}
            Err(e) => return Err(e.into()),
        }
        table.retain(|key, value| {
            let ok = intact(key, value);
            if !ok {
                corrupt.push(piece_key(unversioned(key)));
            }
            ok
        })?;
    }
    txn.commit()?;
    Ok((corrupt, corrupt_space, corrupt_shards, corrupt_objects))
}

fn db_error(path: &Path, e: impl std::fmt::Display) -> StoreError {
    StoreError::Database {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

/// What one committed batch did.
#[derive(Default)]
struct BatchCounts {
    written: u64,
    stale: u64,
    removed: u64,
    space_writes: u64,
    space: SpaceCounts,
}

/// The write side, owned by the writer thread.
struct Writer {
    db: Arc<Database>,
    path: PathBuf,
    requests: Receiver<Request>,
    stats: Arc<Mutex<GroupCommitStats>>,
    max_batch_bytes: usize,
    max_batch_requests: usize,
    /// Space partitions whose last write failed: their later writes are
    /// refused until a whole write or a removal.
    failed_partitions: std::collections::BTreeSet<u16>,
}

/// Why a space write is refused without touching the disk.
fn refusal(partition: u16) -> String {
    format!(
        "an earlier write of space partition {partition} failed; its later changes are \
         refused until it is written whole, so the disk never claims an update it lacks"
    )
}

/// Splits `batch` into the requests to commit and the space writes refused
/// because an earlier write of their partition failed (`failed`, updated
/// as a whole write or a removal would leave it if committed).
fn admit(
    batch: Vec<Request>,
    failed: &mut std::collections::BTreeSet<u16>,
) -> (Vec<Request>, Vec<Request>) {
    let mut admitted = Vec::with_capacity(batch.len());
    let mut refused = Vec::new();
    for request in batch {
        match &request {
            Request::SpacePut { write, .. } if write.whole => {
                failed.remove(&write.partition);
                admitted.push(request);
            }
            Request::SpacePut { write, .. } if failed.contains(&write.partition) => {
                refused.push(request);
            }
            Request::SpaceRemove { partition, .. } => {
                failed.remove(partition);
                admitted.push(request);
            }
            _ => admitted.push(request),
        }
    }
    (admitted, refused)
}

impl Writer {
    fn run(mut self) {
        let mut carried: Option<Request> = None;
        loop {
            // Block for the first request; the queue closing ends the loop
            // only once it is empty.
            let first = match carried.take() {
                Some(request) => request,
                None => match self.requests.recv() {
                    Ok(request) => request,
                    Err(_) => return,
                },
            };
            let mut bytes = first.cost();
            let mut batch = vec![first];
            // Take everything that queued up meanwhile, within the limits.
            while batch.len() < self.max_batch_requests && bytes < self.max_batch_bytes {
                match self.requests.try_recv() {
                    Ok(request) => {
                        let cost = request.cost();
                        if bytes + cost > self.max_batch_bytes {
                            carried = Some(request);
                            break;
                        }
                        bytes += cost;
                        batch.push(request);
                    }
                    Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
                }
            }
            let mut failed = self.failed_partitions.clone();
            let (batch, refused) = admit(batch, &mut failed);
            let result = self.commit(&batch);
            match &result {
                Ok(_) => self.failed_partitions = failed,
                // Nothing of the batch is on disk: its partitions are now
                // behind what their callers asked.
                Err(_) => self
                    .failed_partitions
                    .extend(batch.iter().filter_map(Request::partition)),
            }
            {
                let mut stats = self.stats.lock().unwrap_or_else(|e| e.into_inner());
                stats.space_writes_refused += refused.len() as u64;
                match &result {
                    Ok(_) if batch.is_empty() => {}
                    Ok(counts) => {
                        stats.batches += 1;
                        stats.requests += batch.len() as u64;
                        stats.pieces_written += counts.written;
                        stats.pieces_stale += counts.stale;
                        stats.pieces_removed += counts.removed;
                        stats.space_writes += counts.space_writes;
                        stats.space_rows_written += counts.space.rows_written;
                        stats.space_rows_deleted += counts.space.rows_deleted;
                        stats.space_partitions_removed += counts.space.partitions_removed;
                        stats.shards_written += counts.space.shards.written;
                        stats.shards_removed += counts.space.shards.removed;
                        stats.objects_written += counts.space.objects.written;
                        stats.objects_removed += counts.space.objects.removed;
                        stats.largest_batch = stats.largest_batch.max(batch.len() as u64);
                    }
                    Err(_) => stats.failed_batches += 1,
                }
            }
            let outcomes = batch
                .into_iter()
                .map(|request| {
                    let outcome = match &result {
                        Ok(_) => Ok(()),
                        Err(message) => Err(StoreError::Database {
                            path: self.path.clone(),
                            message: message.clone(),
                        }),
                    };
                    (request, outcome)
                })
                .chain(refused.into_iter().map(|request| {
                    let message = refusal(request.partition().unwrap_or_default());
                    let outcome = Err(StoreError::Database {
                        path: self.path.clone(),
                        message,
                    });
                    (request, outcome)
                }));
            for (request, outcome) in outcomes {
                let done = request.into_done();
                // A panicking callback must not take the writer down.
                let _ = catch_unwind(AssertUnwindSafe(move || done(outcome)));
            }
        }
    }

    /// Applies a batch in one write transaction (one fsync).
    fn commit(&self, batch: &[Request]) -> Result<BatchCounts, String> {
        let mut counts = BatchCounts::default();
        if batch.is_empty() {
            return Ok(counts);
        }
        let mut txn = self.db.begin_write().map_err(|e| e.to_string())?;
        // A process killed in the middle of a commit must leave the commit
        // before it in place, not a latest commit that fails its checksums
        // (which opening refuses as damage): the commit slot is switched
        // only once the new pages are on disk.
        txn.set_two_phase_commit(true);
        {
            let mut table = txn.open_table(PIECES).map_err(|e| e.to_string())?;
            let mut space = SpaceTables::open(&txn).map_err(|e| e.to_string())?;
            for request in batch {
                match request {
                    Request::Put { key, piece, .. } => {
                        // A stored piece that fails its checksum is as good
                        // as none: its epoch and version cannot be trusted.
                        let stored = newest(&table, key.tuple())
                            .map_err(|e| e.to_string())?
                            .map(|p| (p.epoch, p.version));
                        if stored.is_some_and(|s| s >= (piece.epoch, piece.version)) {
                            counts.stale += 1;
                            continue;
                        }
                        let sum = checksum(key.tuple(), piece.epoch, piece.version, &piece.bytes);
                        table
                            .insert(
                                versioned(key.tuple(), piece.epoch, piece.version),
                                (sum, piece.bytes.as_slice()),
                            )
                            .map_err(|e| e.to_string())?;
                        counts.written += 1;
                    }
                    Request::Remove {
                        key,
                        epoch,
                        version,
                        ..
                    } => {
                        let removed = table
                            .remove(versioned(key.tuple(), *epoch, *version))
                            .map_err(|e| e.to_string())?;
                        if removed.is_some() {
                            counts.removed += 1;
                        }
                    }
                    Request::RemoveJob { job, .. } => {
                        let range = (*job, 0u64, 0u8, 0u64, 0u64)
                            ..=(*job, u64::MAX, u8::MAX, u64::MAX, u64::MAX);
                        table
                            .retain_in(range, |_, _| {
                                counts.removed += 1;
                                false
                            })
                            .map_err(|e| e.to_string())?;
                    }
                    Request::SpacePut { write, .. } => {
                        space
                            .write(write, &mut counts.space)
                            .map_err(|e| e.to_string())?;
                        counts.space_writes += 1;
                    }
                    Request::SpaceRemove { partition, .. } => {
                        space
                            .remove(*partition, &mut counts.space)
                            .map_err(|e| e.to_string())?;
                    }
                    Request::ShardPut { id, bytes, .. } => {
                        space
                            .put_keyed(Keyed::Shards, id, bytes, &mut counts.space)
                            .map_err(|e| e.to_string())?;
                    }
                    Request::ShardRemove { ids, .. } => {
                        space
                            .remove_keyed(
                                Keyed::Shards,
                                ids.iter().map(Vec::as_slice),
                                &mut counts.space,
                            )
                            .map_err(|e| e.to_string())?;
                    }
                    Request::ObjectPut { id, bytes, .. } => {
                        space
                            .put_keyed(Keyed::Objects, id, bytes, &mut counts.space)
                            .map_err(|e| e.to_string())?;
                    }
                    Request::ObjectRemove { id, .. } => {
                        space
                            .remove_keyed(Keyed::Objects, [id.as_slice()], &mut counts.space)
                            .map_err(|e| e.to_string())?;
                    }
                }
            }
        }
        txn.commit().map_err(|e| e.to_string())?;
        Ok(counts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn space_put(partition: u16, whole: bool) -> Request {
        Request::SpacePut {
            write: SpaceWrite {
                partition,
                whole,
                meta: Vec::new(),
                rows: Vec::new(),
            },
            done: Box::new(|_| {}),
        }
    }

    fn shape(requests: &[Request]) -> Vec<(u16, bool)> {
        requests
            .iter()
            .map(|r| match r {
                Request::SpacePut { write, .. } => (write.partition, write.whole),
                Request::SpaceRemove { partition, .. } => (*partition, true),
                _ => (u16::MAX, false),
            })
            .collect()
    }

    #[test]
    fn after_a_failed_write_only_a_whole_write_or_a_removal_is_taken() {
        let mut failed = std::collections::BTreeSet::from([1, 2]);
        let batch = vec![
            space_put(1, false),
            space_put(3, false),
            space_put(1, true),
            space_put(1, false),
            space_put(2, false),
            Request::SpaceRemove {
                partition: 2,
                done: Box::new(|_| {}),
            },
            space_put(2, false),
        ];
        let (admitted, refused) = admit(batch, &mut failed);
        assert_eq!(
            shape(&admitted),
            vec![(3, false), (1, true), (1, false), (2, true), (2, false)]
        );
        assert_eq!(shape(&refused), vec![(1, false), (2, false)]);
        assert!(failed.is_empty());
    }
}
