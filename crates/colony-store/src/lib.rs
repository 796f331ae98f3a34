//! Durable local state of a Colony peer, in one redb database per data
//! directory (`DIR/peer.redb`): the peer's identity key, so its PeerId
//! survives restarts as P³ and JXTA peers keep theirs; its membership
//! incarnation, so a restarted peer outranks stale news of its death; and
//! lifetime counters that feed the statistics it publishes.
//!
//! redb refuses a second writer on the same file, which makes "two peers on
//! one data directory" a clear error instead of silent corruption.
//!
//! Every file is untrusted input: stores are opened with redb's integrity
//! check and never panic (see [`open`]); a damaged file is a
//! [`StoreError::Damaged`] naming it and what to do, and a lost identity in
//! a data directory that holds a peer's state is an error, never a silent
//! new peer. Files are created readable by their owner only.
//!
//! Checkpoint pieces live in a [`CheckpointStore`] of their own, written by a
//! group-committing thread ([`checkpoints`]); the object-space partitions
//! this peer holds share its file and its writer ([`space`]).

pub mod checkpoints;
pub mod open;
pub mod space;

pub use checkpoints::{
    CheckpointStore, CheckpointStoreConfig, Done, GroupCommitStats, NotQueued, PieceKey,
    StoredPiece,
};
pub use open::{RepairOutcome, RepairReport};
pub use space::{SpaceWrite, StoredObject, StoredPartition, StoredShard};

use std::path::{Path, PathBuf};

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use open::Kind;

const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
const COUNTERS: TableDefinition<&str, u64> = TableDefinition::new("counters");

const IDENTITY_KEY: &str = "identity";
const INCARNATION_KEY: &str = "incarnation";

/// The identity store's file in a data directory.
pub const PEER_FILE: &str = "peer.redb";

/// The checkpoint store's file in a data directory.
pub const CHECKPOINTS_FILE: &str = "checkpoints.redb";

/// Files a peer writes in its data directory, at every start, once its
/// identity is stored: if any is there, a peer has run here, and a missing
/// identity was lost rather than never made. (Files that may be written
/// before the identity, such as an API token, do not count.)
pub const STATE_FILES: &[&str] = &[CHECKPOINTS_FILE, "peer.json"];

/// Why the store could not do its job.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Another process holds the database.
    #[error("data directory {dir} is in use by another colony peer")]
    InUse {
        /// The data directory.
        dir: PathBuf,
    },
    /// The data directory could not be created.
    #[error("cannot create data directory {dir}: {source}")]
    CreateDir {
        /// The data directory.
        dir: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A database file is already open, by another process or elsewhere in
    /// this one.
    #[error("{path} is already open (another colony peer, or a second store in this process)")]
    FileInUse {
        /// The database file.
        path: PathBuf,
    },
    /// The checkpoint write queue is full: the disk is not keeping up.
    /// Nothing was queued; retry later or drop the write.
    #[error("checkpoint write queue is full ({capacity} requests waiting); retry later")]
    Backpressure {
        /// The queue's capacity.
        capacity: usize,
    },
    /// The checkpoint writer thread is gone (it panicked); reopen the store.
    #[error("checkpoint store {path}: its writer thread has stopped")]
    WriterStopped {
        /// The database file.
        path: PathBuf,
    },
    /// A store file is damaged: redb refused it, or panicked reading it.
    #[error(
        "{path} is damaged: {reason}. Run `colony peer --repair` to keep what can still be read \
         from it, restore it from a backup, {afresh}"
    )]
    Damaged {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
        /// How to start afresh without it, and what that loses.
        afresh: &'static str,
    },
    /// The identity file is missing, empty or holds no identity, yet the data
    /// directory holds a peer's state: the peer's identity was lost.
    #[error(
        "{path} {what}, but {dir} holds the state of a peer that ran there ({found}): its \
         identity is lost. Restore {path} from a backup; to start as a new peer on purpose, \
         use a new data directory (or move {dir} away)"
    )]
    IdentityLost {
        /// The identity file.
        path: PathBuf,
        /// The data directory.
        dir: PathBuf,
        /// "is missing", "is empty" or "holds no identity key".
        what: &'static str,
        /// The state found, e.g. "checkpoints.redb, peer.json".
        found: String,
    },
    /// Any other database failure.
    #[error("peer database {path}: {message}")]
    Database {
        /// The database file.
        path: PathBuf,
        /// What redb said.
        message: String,
    },
}

/// The durable state of one peer.
pub struct PeerStore {
    db: Database,
    path: PathBuf,
    dir: PathBuf,
    /// Whether `peer.redb` had content before this open (the state check
    /// of a new file was done by the open).
    existed: bool,
}

impl PeerStore {
    /// Opens (creating if needed) the store in `dir`. Fails with
    /// [`StoreError::Damaged`] if `peer.redb` is damaged, and with
    /// [`StoreError::IdentityLost`] if it is missing or empty while `dir`
    /// holds a peer's other files.
    pub fn open(dir: &Path) -> Result<PeerStore, StoreError> {
        open::create_dir(dir)?;
        let path = dir.join(PEER_FILE);
        let what = match open::file_len(&path)? {
            None => Some("is missing"),
            Some(0) => Some("is empty"),
            Some(_) => None,
        };
        if let Some(what) = what {
            // Checked before redb initialises a new database in its place.
            check_no_state(dir, &path, what)?;
        }
        let opened = open::open_checked(&path, Kind::Peer, false).map_err(|e| match e {
            StoreError::FileInUse { .. } => StoreError::InUse {
                dir: dir.to_path_buf(),
            },
            other => other,
        })?;
        Ok(PeerStore {
            db: opened.db,
            path,
            dir: dir.to_path_buf(),
            existed: what.is_none(),
        })
    }

    /// `colony peer --repair`: repairs `DIR/peer.redb` with redb's own
    /// repair, or else moves it aside and keeps its identity, incarnation and
    /// counters in a new file. If redb cannot read the identity back,
    /// `find_identity` is given the damaged file's bytes to find a key in
    /// that it can verify (e.g. a keypair whose public half matches its
    /// secret); the incarnation then restarts from the clock, above any it
    /// can have reached. Fails, leaving the file as it was, if no identity
    /// is found.
    pub fn repair(
        dir: &Path,
        find_identity: impl FnOnce(&[u8]) -> Option<Vec<u8>>,
    ) -> Result<RepairReport, StoreError> {
        let path = dir.join(PEER_FILE);
        open::repair_file(
            &path,
            Kind::Peer,
            |aside| {
                let read = open::read_damaged(aside, salvage_peer)
                    .filter(|s| s.meta.iter().any(|(k, _)| k == IDENTITY_KEY));
                read.or_else(|| {
                    // The file is small; a damaged one is read whole.
                    let bytes = std::fs::read(aside).ok()?;
                    let identity = find_identity(&bytes)?;
                    let now_s = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map(|d| d.as_secs())
                        .unwrap_or(0);
                    Some(PeerSalvage {
                        meta: vec![(IDENTITY_KEY.to_string(), identity)],
                        counters: vec![(INCARNATION_KEY.to_string(), now_s)],
                        scanned: true,
                    })
                })
            },
            |salvaged| {
                match salvaged {
                Some(s) if s.scanned => Ok(
                    "the identity key, found by scanning the damaged file (the counters are lost; the incarnation restarts from the clock)"
                        .to_string(),
                ),
                Some(s) => Ok(format!(
                    "the identity key, {} other entries and {} counters",
                    s.meta.len() - 1,
                    s.counters.len()
                )),
                None => Err(open::damaged(
                    &path,
                    Kind::Peer,
                    "its identity key cannot be read back, so it cannot be repaired",
                )),
            }
            },
            |db, salvaged| {
                let err = |e: &dyn std::fmt::Display| StoreError::Database {
                    path: path.clone(),
                    message: e.to_string(),
                };
                let txn = db.begin_write().map_err(|e| err(&e))?;
                {
                    let mut table = txn.open_table(META).map_err(|e| err(&e))?;
                    for (key, value) in &salvaged.meta {
                        table
                            .insert(key.as_str(), value.as_slice())
                            .map_err(|e| err(&e))?;
                    }
                    let mut table = txn.open_table(COUNTERS).map_err(|e| err(&e))?;
                    for (key, value) in &salvaged.counters {
                        table.insert(key.as_str(), *value).map_err(|e| err(&e))?;
                    }
                }
                txn.commit().map_err(|e| err(&e))
            },
        )
    }

    fn err(&self, e: impl std::fmt::Display) -> StoreError {
        StoreError::Database {
            path: self.path.clone(),
            message: e.to_string(),
        }
    }

    /// The stored identity key, or the one `generate` makes, stored first.
    /// Fails with [`StoreError::IdentityLost`] instead of making one if this
    /// store or its data directory shows that a peer ran here before.
    pub fn load_or_create_identity(
        &self,
        generate: impl FnOnce() -> Vec<u8>,
    ) -> Result<Vec<u8>, StoreError> {
        if let Some(bytes) = self.get_meta(IDENTITY_KEY)? {
            return Ok(bytes);
        }
        if self.existed {
            check_no_state(&self.dir, &self.path, "holds no identity key")?;
        }
        if self.counter(INCARNATION_KEY)? > 0 {
            return Err(StoreError::IdentityLost {
                path: self.path.clone(),
                dir: self.dir.clone(),
                what: "holds no identity key",
                found: format!("{PEER_FILE} records earlier sessions"),
            });
        }
        let bytes = generate();
        self.put_meta(IDENTITY_KEY, &bytes)?;
        Ok(bytes)
    }

    /// Starts a new session: returns an incarnation above every one this
    /// peer used before, and records it.
    pub fn next_incarnation(&self) -> Result<u64, StoreError> {
        let next = self.counter(INCARNATION_KEY)? + 1;
        self.set_counter(INCARNATION_KEY, next)?;
        Ok(next)
    }

    /// Records that the peer's incarnation rose to `incarnation` (refuting
    /// a suspicion), if it is above the stored one.
    pub fn record_incarnation(&self, incarnation: u64) -> Result<(), StoreError> {
        if incarnation > self.counter(INCARNATION_KEY)? {
            self.set_counter(INCARNATION_KEY, incarnation)?;
        }
        Ok(())
    }

    /// A lifetime counter (0 if never set).
    pub fn counter(&self, name: &str) -> Result<u64, StoreError> {
        let txn = self.db.begin_read().map_err(|e| self.err(e))?;
        let table = match txn.open_table(COUNTERS) {
            Ok(table) => table,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(0),
            Err(e) => return Err(self.err(e)),
        };
        let value = table.get(name).map_err(|e| self.err(e))?;
        Ok(value.map(|v| v.value()).unwrap_or(0))
    }

    /// Sets a lifetime counter, durably.
    pub fn set_counter(&self, name: &str, value: u64) -> Result<(), StoreError> {
        let txn = self.db.begin_write().map_err(|e| self.err(e))?;
        {
            let mut table = txn.open_table(COUNTERS).map_err(|e| self.err(e))?;
            table.insert(name, value).map_err(|e| self.err(e))?;
        }
        txn.commit().map_err(|e| self.err(e))
    }

    fn get_meta(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let txn = self.db.begin_read().map_err(|e| self.err(e))?;
        let table = match txn.open_table(META) {
            Ok(table) => table,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(self.err(e)),
        };
        let value = table.get(key).map_err(|e| self.err(e))?;
        Ok(value.map(|v| v.value().to_vec()))
    }

    fn put_meta(&self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        let txn = self.db.begin_write().map_err(|e| self.err(e))?;
        {
            let mut table = txn.open_table(META).map_err(|e| self.err(e))?;
            table.insert(key, value).map_err(|e| self.err(e))?;
        }
        txn.commit().map_err(|e| self.err(e))
    }
}

/// What `--repair` could read from a damaged `peer.redb`.
struct PeerSalvage {
    meta: Vec<(String, Vec<u8>)>,
    counters: Vec<(String, u64)>,
    /// The identity was found by scanning the raw bytes.
    scanned: bool,
}

fn salvage_peer(db: &dyn ReadableDatabase) -> Option<PeerSalvage> {
    let txn = db.begin_read().ok()?;
    let mut meta = Vec::new();
    if let Ok(table) = txn.open_table(META) {
        for (key, value) in table.iter().ok()?.map_while(Result::ok) {
            meta.push((key.value().to_string(), value.value().to_vec()));
        }
    }
    let mut counters = Vec::new();
    if let Ok(table) = txn.open_table(COUNTERS) {
        for (key, value) in table.iter().ok()?.map_while(Result::ok) {
            counters.push((key.value().to_string(), value.value()));
        }
    }
    Some(PeerSalvage {
        meta,
        counters,
        scanned: false,
    })
}

/// Fails with [`StoreError::IdentityLost`] if `dir` holds any of
/// [`STATE_FILES`].
fn check_no_state(dir: &Path, path: &Path, what: &'static str) -> Result<(), StoreError> {
    let found: Vec<&str> = STATE_FILES
        .iter()
        .copied()
        .filter(|name| dir.join(name).exists())
        .collect();
    if found.is_empty() {
        return Ok(());
    }
    Err(StoreError::IdentityLost {
        path: path.to_path_buf(),
        dir: dir.to_path_buf(),
        what,
        found: found.join(", "),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "colony-store-{name}-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn identity_and_incarnation_survive_reopen() {
        let dir = temp_dir("reopen");
        let (key, first) = {
            let store = PeerStore::open(&dir).unwrap();
            let key = store.load_or_create_identity(|| vec![1, 2, 3]).unwrap();
            (key, store.next_incarnation().unwrap())
        };
        let store = PeerStore::open(&dir).unwrap();
        let again = store
            .load_or_create_identity(|| panic!("must not regenerate"))
            .unwrap();
        assert_eq!(key, again);
        store.record_incarnation(first + 5).unwrap();
        assert_eq!(store.next_incarnation().unwrap(), first + 6);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn second_open_of_the_same_dir_is_a_clear_error() {
        let dir = temp_dir("inuse");
        let _first = PeerStore::open(&dir).unwrap();
        match PeerStore::open(&dir) {
            Err(StoreError::InUse { .. }) => {}
            Err(other) => panic!("expected InUse, got {other}"),
            Ok(_) => panic!("expected InUse"),
        }
    }
}
