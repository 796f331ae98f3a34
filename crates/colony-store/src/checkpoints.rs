//! Durable checkpoint pieces: the whole copies or erasure-coded shards of
//! unit checkpoints that a job's home members and workers keep on disk
//! (G2:P2P scenarios 2 and 3, seed 004 §4.2–4.3), in a redb file of their
//! own so checkpoint traffic never contends with the peer database.
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
//! A piece replaces the stored one for its key only if its `(epoch,
//! version)` is newer, so writes are idempotent and safe to deliver out of
//! order or twice.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TryRecvError, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use crate::StoreError;

/// A piece's key on disk: (job, unit, holder_index), fixed width, so one
/// job's pieces are one contiguous range.
type KeyTuple = ([u8; 16], u64, u8);

/// A piece on disk: (epoch, version, bytes).
type ValueTuple<'a> = (u64, u64, &'a [u8]);

const PIECES: TableDefinition<KeyTuple, ValueTuple> = TableDefinition::new("checkpoint_pieces");

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
    /// Pieces deleted by job removals.
    pub pieces_removed: u64,
    /// Most requests committed in one transaction.
    pub largest_batch: u64,
    /// Transactions that failed (each of their requests got the error).
    pub failed_batches: u64,
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
}

impl Request {
    fn cost(&self) -> usize {
        match self {
            Request::Put { piece, .. } => piece.bytes.len() + REQUEST_OVERHEAD_BYTES,
            Request::RemoveJob { .. } => REQUEST_OVERHEAD_BYTES,
        }
    }

    fn into_done(self) -> Done {
        match self {
            Request::Put { done, .. } | Request::RemoveJob { done, .. } => done,
        }
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
    pub fn open_with(
        path: &Path,
        config: CheckpointStoreConfig,
    ) -> Result<CheckpointStore, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| StoreError::CreateDir {
                dir: dir.to_path_buf(),
                source,
            })?;
        }
        let db = Database::create(path).map_err(|e| match e {
            redb::DatabaseError::DatabaseAlreadyOpen => StoreError::FileInUse {
                path: path.to_path_buf(),
            },
            other => db_error(path, other),
        })?;
        // Create the table up front so readers never meet a missing one.
        let txn = db.begin_write().map_err(|e| db_error(path, e))?;
        txn.open_table(PIECES).map_err(|e| db_error(path, e))?;
        txn.commit().map_err(|e| db_error(path, e))?;

        let db = Arc::new(db);
        let capacity = config.queue_capacity.max(1);
        let (queue, requests) = sync_channel(capacity);
        let stats = Arc::new(Mutex::new(GroupCommitStats::default()));
        let writer = Writer {
            db: db.clone(),
            path: path.to_path_buf(),
            requests,
            stats: stats.clone(),
            max_batch_bytes: config.max_batch_bytes.max(1),
            max_batch_requests: config.max_batch_requests.max(1),
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
        })
    }

    /// Queues a write of `piece` under `key`; it is applied only if `piece`
    /// is newer (by `(epoch, version)`) than the stored one. `done` is
    /// called once the batch holding it is durable — `Ok` also when the
    /// piece was not newer, since the store then holds an equal or newer one.
    /// Requests are applied in the order they were queued.
    ///
    /// Returns [`StoreError::Backpressure`] at once if the queue is full (or
    /// [`StoreError::WriterStopped`]); then nothing was queued and `done` is
    /// never called.
    pub fn put(&self, key: PieceKey, piece: StoredPiece, done: Done) -> Result<(), StoreError> {
        self.enqueue(Request::Put { key, piece, done })
    }

    /// Queues the deletion of every piece of `job` (the job has finished);
    /// `done` and errors as for [`CheckpointStore::put`].
    pub fn remove_job(&self, job: [u8; 16], done: Done) -> Result<(), StoreError> {
        self.enqueue(Request::RemoveJob { job, done })
    }

    fn enqueue(&self, request: Request) -> Result<(), StoreError> {
        let queue = self.queue.as_ref().ok_or_else(|| self.stopped())?;
        queue.try_send(request).map_err(|e| match e {
            TrySendError::Full(_) => StoreError::Backpressure {
                capacity: self.capacity,
            },
            TrySendError::Disconnected(_) => self.stopped(),
        })
    }

    fn stopped(&self) -> StoreError {
        StoreError::WriterStopped {
            path: self.path.clone(),
        }
    }

    /// The stored piece for `key`, as of the last committed batch.
    pub fn get(&self, key: &PieceKey) -> Result<Option<StoredPiece>, StoreError> {
        let txn = self.db.begin_read().map_err(|e| self.err(e))?;
        let table = txn.open_table(PIECES).map_err(|e| self.err(e))?;
        let value = table.get(key.tuple()).map_err(|e| self.err(e))?;
        Ok(value.map(|v| {
            let (epoch, version, bytes) = v.value();
            StoredPiece {
                epoch,
                version,
                bytes: bytes.to_vec(),
            }
        }))
    }

    /// Every stored piece, ordered by key (used after a restart).
    pub fn all(&self) -> Result<Vec<(PieceKey, StoredPiece)>, StoreError> {
        let txn = self.db.begin_read().map_err(|e| self.err(e))?;
        let table = txn.open_table(PIECES).map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        for entry in table.iter().map_err(|e| self.err(e))? {
            let (key, value) = entry.map_err(|e| self.err(e))?;
            let (job, unit, holder_index) = key.value();
            let (epoch, version, bytes) = value.value();
            out.push((
                PieceKey {
                    job,
                    unit,
                    holder_index,
                },
                StoredPiece {
                    epoch,
                    version,
                    bytes: bytes.to_vec(),
                },
            ));
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
}

/// The write side, owned by the writer thread.
struct Writer {
    db: Arc<Database>,
    path: PathBuf,
    requests: Receiver<Request>,
    stats: Arc<Mutex<GroupCommitStats>>,
    max_batch_bytes: usize,
    max_batch_requests: usize,
}

impl Writer {
    fn run(self) {
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
            let result = self.commit(&batch);
            {
                let mut stats = self.stats.lock().unwrap_or_else(|e| e.into_inner());
                match &result {
                    Ok(counts) => {
                        stats.batches += 1;
                        stats.requests += batch.len() as u64;
                        stats.pieces_written += counts.written;
                        stats.pieces_stale += counts.stale;
                        stats.pieces_removed += counts.removed;
                        stats.largest_batch = stats.largest_batch.max(batch.len() as u64);
                    }
                    Err(_) => stats.failed_batches += 1,
                }
            }
            for request in batch {
                let outcome = match &result {
                    Ok(_) => Ok(()),
                    Err(message) => Err(StoreError::Database {
                        path: self.path.clone(),
                        message: message.clone(),
                    }),
                };
                let done = request.into_done();
                // A panicking callback must not take the writer down.
                let _ = catch_unwind(AssertUnwindSafe(move || done(outcome)));
            }
        }
    }

    /// Applies a batch in one write transaction (one fsync).
    fn commit(&self, batch: &[Request]) -> Result<BatchCounts, String> {
        let mut counts = BatchCounts::default();
        let txn = self.db.begin_write().map_err(|e| e.to_string())?;
        {
            let mut table = txn.open_table(PIECES).map_err(|e| e.to_string())?;
            for request in batch {
                match request {
                    Request::Put { key, piece, .. } => {
                        let stored = table.get(key.tuple()).map_err(|e| e.to_string())?.map(|v| {
                            let (epoch, version, _) = v.value();
                            (epoch, version)
                        });
                        if stored.is_some_and(|s| s >= (piece.epoch, piece.version)) {
                            counts.stale += 1;
                            continue;
                        }
                        table
                            .insert(
                                key.tuple(),
                                (piece.epoch, piece.version, piece.bytes.as_slice()),
                            )
                            .map_err(|e| e.to_string())?;
                        counts.written += 1;
                    }
                    Request::RemoveJob { job, .. } => {
                        let range = (*job, 0u64, 0u8)..=(*job, u64::MAX, u8::MAX);
                        table
                            .retain_in(range, |_, _| {
                                counts.removed += 1;
                                false
                            })
                            .map_err(|e| e.to_string())?;
                    }
                }
            }
        }
        txn.commit().map_err(|e| e.to_string())?;
        Ok(counts)
    }
}
