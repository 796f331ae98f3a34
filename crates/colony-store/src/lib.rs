//! Durable local state of a Colony peer, in one redb database per data
//! directory (`DIR/peer.redb`): the peer's identity key, so its PeerId
//! survives restarts as P³ and JXTA peers keep theirs; its membership
//! incarnation, so a restarted peer outranks stale news of its death; and
//! lifetime counters that feed the statistics it publishes.
//!
//! redb refuses a second writer on the same file, which makes "two peers on
//! one data directory" a clear error instead of silent corruption.
//!
//! Checkpoint pieces live in a [`CheckpointStore`] of their own, written by a
//! group-committing thread ([`checkpoints`]).

pub mod checkpoints;

pub use checkpoints::{
    CheckpointStore, CheckpointStoreConfig, Done, GroupCommitStats, PieceKey, StoredPiece,
};

use std::path::{Path, PathBuf};

use redb::{Database, ReadableDatabase, TableDefinition};

const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
const COUNTERS: TableDefinition<&str, u64> = TableDefinition::new("counters");

const IDENTITY_KEY: &str = "identity";
const INCARNATION_KEY: &str = "incarnation";

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
}

impl PeerStore {
    /// Opens (creating if needed) the store in `dir`.
    pub fn open(dir: &Path) -> Result<PeerStore, StoreError> {
        std::fs::create_dir_all(dir).map_err(|source| StoreError::CreateDir {
            dir: dir.to_path_buf(),
            source,
        })?;
        let path = dir.join("peer.redb");
        let db = Database::create(&path).map_err(|e| match e {
            redb::DatabaseError::DatabaseAlreadyOpen => StoreError::InUse {
                dir: dir.to_path_buf(),
            },
            other => StoreError::Database {
                path: path.clone(),
                message: other.to_string(),
            },
        })?;
        Ok(PeerStore { db, path })
    }

    fn err(&self, e: impl std::fmt::Display) -> StoreError {
        StoreError::Database {
            path: self.path.clone(),
            message: e.to_string(),
        }
    }

    /// The stored identity key, or the one `generate` makes, stored first.
    pub fn load_or_create_identity(
        &self,
        generate: impl FnOnce() -> Vec<u8>,
    ) -> Result<Vec<u8>, StoreError> {
        if let Some(bytes) = self.get_meta(IDENTITY_KEY)? {
            return Ok(bytes);
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
