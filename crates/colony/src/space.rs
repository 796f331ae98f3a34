//! The object space (P³ §2.1) through a peer's handle: named objects in
//! namespaces, shared by every peer and kept, replicated, on their disks.
//!
//! ```no_run
//! # async fn demo(peer: colony::Peer) -> Result<(), colony::ColonyError> {
//! use std::time::Duration;
//! use colony::{Condition, LockMode, ObjectKey, Tags};
//!
//! let key = ObjectKey::new("global", "best-bound");
//! let version = peer.space_put(&key, b"1049".to_vec(), Tags::new()).await?;
//! // Compare-and-set: only if nobody wrote since.
//! peer.space_cas(&key, version, b"1047".to_vec(), Tags::new()).await?;
//! // Exclusive access, with a fencing token on every write.
//! let lock = peer.space_lock(&key, LockMode::Write, Duration::from_secs(5)).await?;
//! peer.space_put_fenced(&key, b"1046".to_vec(), Tags::new(), lock.token()).await?;
//! lock.unlock().await?;
//! peer.space_delete(&key, Condition::Always).await?;
//! # Ok(()) }
//! ```
//!
//! Every operation is answered by the primary of the object's partition
//! once a majority of its home holds the outcome, so answers are
//! linearizable; each one waits at most [`SPACE_TIMEOUT`] (or the timeout
//! given to [`Peer::space_request`]) and fails with
//! [`ColonyError::Space`] carrying the space's reason.
//!
//! Values of any size up to [`crate::PeerConfig::max_value_bytes`] (1 GiB
//! by default) go through the same calls: longer than a chunk
//! ([`CHUNK_BYTES`]), they are stored as several objects behind a small
//! manifest at the object's name, and read back whole (see
//! [`chunked`](self::chunked) for how, and for what a crash mid-write can
//! leave). Names and tag names starting with [`RESERVED_PREFIX`] are
//! reserved for this.
//!
//! Reads may opt out of linearizability: [`Peer::space_get_cached`]
//! answers from this peer's copy or any replica, which may miss the
//! latest writes but never shows one that was not made.
//! [`Peer::space_search`] finds the objects of a namespace by their tags.

use std::time::Duration;

use colony_core::space::{
    check_name, Condition, Listed, LockLost, LockMode, Object, ObjectKey, PartitionId, Query,
    SpaceError, SpaceOp, SpaceReply, Tags, PARTITIONS,
};
use tokio::sync::{oneshot, watch};

mod chunked;
mod coded;

pub(crate) use chunked::{check_user_key, Values};
pub use chunked::{
    CHUNKS_IN_FLIGHT, CHUNK_BYTES, CHUNK_OF_TAG, CHUNK_PREFIX, DEFAULT_MAX_VALUE_BYTES,
    RESERVED_PREFIX, SIZE_TAG,
};
pub(crate) use coded::keep_shards;
pub use coded::{ShardKeeping, Storage, SHARDS_TAG, SHARD_TIMEOUT};

use crate::command::{Command, SpaceAnswer};
use crate::error::ColonyError;
use crate::peer::Peer;

/// How long a space operation of [`Peer`] waits for its answer, lock
/// waits included, unless a timeout is given ([`Peer::space_request`],
/// [`Peer::space_lock_within`]).
pub const SPACE_TIMEOUT: Duration = Duration::from_secs(10);

/// The objects of a namespace, from every partition.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Listing {
    /// The objects, sorted by name.
    pub entries: Vec<Listed>,
    /// Whether some partition held more than it lists at once
    /// ([`colony_core::space::MAX_LIST_ENTRIES`]), so entries are missing.
    pub truncated: bool,
}

/// The answer did not fit the operation (a peer speaking another version).
fn unexpected(reply: SpaceReply) -> ColonyError {
    ColonyError::Space(SpaceError::Unavailable(format!(
        "the partition's primary answered {reply:?}"
    )))
}

impl Peer {
    /// Applies `op` to the object space, waiting up to `timeout` for the
    /// answer (the space core enforces it: this never waits longer). This
    /// is the low level: objects as stored, one at a time, reserved names
    /// included — a value stored in chunks reads as its manifest.
    pub async fn space_request(
        &self,
        op: SpaceOp,
        timeout: Duration,
    ) -> Result<SpaceReply, ColonyError> {
        self.space_answer(op, timeout, None)
            .await?
            .result
            .map_err(Into::into)
    }

    async fn space_answer(
        &self,
        op: SpaceOp,
        timeout: Duration,
        keep: Option<bool>,
    ) -> Result<SpaceAnswer, ColonyError> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(Command::Space {
                op,
                timeout,
                keep,
                to: None,
                reply,
            })
            .await
            .map_err(|_| ColonyError::Stopped)?;
        answer.await.map_err(|_| ColonyError::Stopped)
    }

    /// The object at `key`, or `None` if there is none; a value stored in
    /// chunks is put back together and checked
    /// ([`ColonyError::DamagedValue`] if it cannot be).
    pub async fn space_get(&self, key: &ObjectKey) -> Result<Option<Object>, ColonyError> {
        self.read_value(key).await
    }

    /// The object at `key` read the cached way (P³'s level-1 cache): from
    /// this peer's copy if it has one (checked against the object's home in
    /// the background once it is older than
    /// [`colony_core::space::SpaceClientConfig::revalidate_after`]), else
    /// from any replica of its home, kept as this peer's copy. Cheaper than
    /// [`Peer::space_get`] and answered even by a home busy electing, but
    /// the answer may be older than the latest write acknowledged; it is
    /// never a value that was not written. `None` if there was no object.
    pub async fn space_get_cached(&self, key: &ObjectKey) -> Result<Option<Object>, ColonyError> {
        key.check()?;
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(Command::SpaceReadCached {
                key: key.clone(),
                timeout: SPACE_TIMEOUT,
                reply,
            })
            .await
            .map_err(|_| ColonyError::Stopped)?;
        match answer.await.map_err(|_| ColonyError::Stopped)?.result? {
            SpaceReply::Value(None) => Ok(None),
            SpaceReply::Value(Some(object)) => self.user_object(key, object).await,
            other => Err(unexpected(other)),
        }
    }

    /// Writes `value` with `tags` at `key` (creating or replacing it) if
    /// `condition` holds and, with a `token`, only while that token holds
    /// the object's write lock; returns the object's new version. A value
    /// longer than [`CHUNK_BYTES`] is stored in chunks; the condition and
    /// the token apply to the write that commits it. Values longer than
    /// [`crate::PeerConfig::max_value_bytes`] are refused with
    /// [`SpaceError::TooLarge`].
    pub async fn space_write(
        &self,
        key: &ObjectKey,
        value: Vec<u8>,
        tags: Tags,
        condition: Condition,
        token: Option<u64>,
    ) -> Result<u64, ColonyError> {
        self.space_write_stored(key, value, tags, condition, token, Storage::Replicated)
            .await
    }

    /// [`Peer::space_write`], storing the value as `storage` says:
    /// replicated by the object's home, or erasure-coded `k + m` on
    /// distinct peers (any `k` of them restore it; see
    /// [`coded`](self::coded)). The condition and the token apply to the
    /// write that commits it, whatever the storage.
    pub async fn space_write_stored(
        &self,
        key: &ObjectKey,
        value: Vec<u8>,
        tags: Tags,
        condition: Condition,
        token: Option<u64>,
        storage: Storage,
    ) -> Result<u64, ColonyError> {
        self.write_value(key, value, tags, condition, token, storage)
            .await
    }

    /// Writes `value` with `tags` at `key`, whatever is there; returns the
    /// new version. Refused ([`SpaceError::Locked`]) while another holder
    /// has the object locked.
    pub async fn space_put(
        &self,
        key: &ObjectKey,
        value: Vec<u8>,
        tags: Tags,
    ) -> Result<u64, ColonyError> {
        self.space_write(key, value, tags, Condition::Always, None)
            .await
    }

    /// Compare-and-set: writes only if the object is at
    /// `expected_version` (0: absent); otherwise fails with
    /// [`SpaceError::VersionMismatch`] naming the version found.
    pub async fn space_cas(
        &self,
        key: &ObjectKey,
        expected_version: u64,
        value: Vec<u8>,
        tags: Tags,
    ) -> Result<u64, ColonyError> {
        self.space_write(key, value, tags, Condition::Version(expected_version), None)
            .await
    }

    /// Writes under the write lock whose fencing token is `token`; a token
    /// that no longer holds it (expired, released, superseded) is refused
    /// with [`SpaceError::StaleToken`] and nothing is written.
    pub async fn space_put_fenced(
        &self,
        key: &ObjectKey,
        value: Vec<u8>,
        tags: Tags,
        token: u64,
    ) -> Result<u64, ColonyError> {
        self.space_write(key, value, tags, Condition::Always, Some(token))
            .await
    }

    /// Deletes the object at `key` if `condition` holds; returns the
    /// version the deletion took.
    pub async fn space_delete(
        &self,
        key: &ObjectKey,
        condition: Condition,
    ) -> Result<u64, ColonyError> {
        self.space_delete_fenced(key, condition, None).await
    }

    /// Deletes the object at `key` if `condition` holds and, with a
    /// `token`, only while that token holds its write lock (and then the
    /// chunks of its value, if stored in chunks).
    pub async fn space_delete_fenced(
        &self,
        key: &ObjectKey,
        condition: Condition,
        token: Option<u64>,
    ) -> Result<u64, ColonyError> {
        self.delete_value(key, condition, token).await
    }

    /// The objects of `namespace`: every partition is asked at once, and
    /// the answers merged and sorted by name. Chunks of large values are
    /// not listed; a value stored in chunks is listed with its whole size.
    pub async fn space_list(&self, namespace: &str) -> Result<Listing, ColonyError> {
        self.space_gather(|partition| SpaceOp::List {
            namespace: namespace.to_string(),
            partition,
        })
        .await
    }

    /// The objects of `namespace` whose tags satisfy every predicate of
    /// `query` (parse one with [`Query::parse`], e.g. `type=row index>=3
    /// index<6 owner^=al done?`), sorted by name. Every partition is asked
    /// at once and answers from its tag index, linearizably like
    /// [`Peer::space_list`]. A query out of bounds is refused before
    /// anything is sent ([`SpaceError::InvalidQuery`]); an unknown
    /// namespace with [`SpaceError::UnknownNamespace`].
    pub async fn space_search(
        &self,
        namespace: &str,
        query: &Query,
    ) -> Result<Listing, ColonyError> {
        check_name("namespace", namespace)?;
        query.check()?;
        self.space_gather(|partition| SpaceOp::Search {
            namespace: namespace.to_string(),
            partition,
            query: query.clone(),
        })
        .await
    }

    /// Asks every partition `op_for(partition)` at once (64 requests, well
    /// within what the space core and the driver take in flight) and
    /// merges their listings, sorted by name; the first failure fails the
    /// whole.
    async fn space_gather(
        &self,
        op_for: impl Fn(PartitionId) -> SpaceOp,
    ) -> Result<Listing, ColonyError> {
        let asks =
            (0..PARTITIONS).map(|partition| self.space_request(op_for(partition), SPACE_TIMEOUT));
        let mut listing = Listing::default();
        for answer in futures::future::join_all(asks).await {
            match answer? {
                SpaceReply::Listed { entries, truncated } => {
                    listing
                        .entries
                        .extend(entries.into_iter().filter_map(chunked::user_entry));
                    listing.truncated |= truncated;
                }
                other => return Err(unexpected(other)),
            }
        }
        listing.entries.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(listing)
    }

    /// Creates namespace `name`; returns its generation.
    pub async fn space_create_namespace(&self, name: &str) -> Result<u64, ColonyError> {
        let op = SpaceOp::CreateNamespace {
            name: name.to_string(),
        };
        match self.space_request(op, SPACE_TIMEOUT).await? {
            SpaceReply::Namespace { generation } => Ok(generation),
            other => Err(unexpected(other)),
        }
    }

    /// Destroys namespace `name`: its objects read as absent from then on
    /// (and are dropped from every partition before this returns).
    pub async fn space_destroy_namespace(&self, name: &str) -> Result<(), ColonyError> {
        let op = SpaceOp::DestroyNamespace {
            name: name.to_string(),
        };
        self.space_request(op, SPACE_TIMEOUT).await.map(|_| ())
    }

    /// Takes a lock on `key` (many readers or one writer), waiting up to
    /// [`SPACE_TIMEOUT`] for it. This peer renews its `lease` while the
    /// returned guard lives; the lock goes when the guard is unlocked or
    /// dropped, or when its lease runs out because this peer stopped (or
    /// was cut off) — then [`LockGuard::lost`] says so.
    pub async fn space_lock(
        &self,
        key: &ObjectKey,
        mode: LockMode,
        lease: Duration,
    ) -> Result<LockGuard, ColonyError> {
        self.space_lock_within(key, mode, lease, SPACE_TIMEOUT)
            .await
    }

    /// [`Peer::space_lock`], waiting up to `wait` for the lock.
    pub async fn space_lock_within(
        &self,
        key: &ObjectKey,
        mode: LockMode,
        lease: Duration,
        wait: Duration,
    ) -> Result<LockGuard, ColonyError> {
        chunked::check_user_key(key)?;
        let op = SpaceOp::Lock {
            key: key.clone(),
            mode,
            lease_ms: u64::try_from(lease.as_millis()).unwrap_or(u64::MAX),
        };
        let answer = self.space_answer(op, wait, None).await?;
        match answer.result? {
            SpaceReply::Granted { token, lease_ms } => Ok(LockGuard {
                peer: self.clone(),
                key: key.clone(),
                mode,
                token,
                lease: Duration::from_millis(lease_ms),
                lost: answer.lost,
                held: true,
            }),
            other => Err(unexpected(other)),
        }
    }
}

impl Peer {
    /// Takes a lock on `key` for a holder outside this process (a client
    /// of the HTTP API), waiting up to `wait` for it, and returns its
    /// fencing token and lease. With `renew`, this peer renews the lease
    /// until the lock is unlocked by token (or this peer stops); without,
    /// the lock runs out at its lease unless unlocked before.
    pub async fn space_lock_token(
        &self,
        key: &ObjectKey,
        mode: LockMode,
        lease: Duration,
        wait: Duration,
        renew: bool,
    ) -> Result<(u64, Duration), ColonyError> {
        chunked::check_user_key(key)?;
        let op = SpaceOp::Lock {
            key: key.clone(),
            mode,
            lease_ms: u64::try_from(lease.as_millis()).unwrap_or(u64::MAX),
        };
        match self.space_answer(op, wait, Some(renew)).await?.result? {
            SpaceReply::Granted { token, lease_ms } => Ok((token, Duration::from_millis(lease_ms))),
            other => Err(unexpected(other)),
        }
    }

    /// Releases the lock `token` holds on `key`; [`SpaceError::NotHeld`]
    /// if it holds none (released, expired or superseded).
    pub async fn space_unlock(&self, key: &ObjectKey, token: u64) -> Result<(), ColonyError> {
        let op = SpaceOp::Unlock {
            key: key.clone(),
            token,
        };
        self.space_request(op, SPACE_TIMEOUT).await.map(|_| ())
    }
}

/// A lock held in the object space by this peer, renewed while the guard
/// lives. Dropping it releases the lock (best effort: if the peer's
/// command queue is full at that moment, the lock is released when its
/// lease runs out).
pub struct LockGuard {
    peer: Peer,
    key: ObjectKey,
    mode: LockMode,
    token: u64,
    lease: Duration,
    lost: Option<watch::Receiver<Option<LockLost>>>,
    held: bool,
}

impl std::fmt::Debug for LockGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LockGuard")
            .field("key", &self.key)
            .field("mode", &self.mode)
            .field("token", &self.token)
            .field("lease", &self.lease)
            .finish_non_exhaustive()
    }
}

impl LockGuard {
    /// The fencing token: present it with every write under this lock
    /// ([`Peer::space_put_fenced`]).
    pub fn token(&self) -> u64 {
        self.token
    }

    /// The object locked.
    pub fn key(&self) -> &ObjectKey {
        &self.key
    }

    /// Read or write.
    pub fn mode(&self) -> LockMode {
        self.mode
    }

    /// The lease the home granted.
    pub fn lease(&self) -> Duration {
        self.lease
    }

    /// Why the lock was lost, if it was: a renewal was refused (the lease
    /// ran out first, say while this peer was paused), so writes with its
    /// token are refused now.
    pub fn lost(&self) -> Option<SpaceError> {
        let lost = self.lost.as_ref()?;
        let why = lost.borrow().as_ref().map(|l| l.why.clone());
        why
    }

    /// Waits until the lock is lost, and says why. Never resolves while
    /// the lock is held; if the peer stops, resolves with
    /// [`SpaceError::Unavailable`].
    pub async fn wait_lost(&mut self) -> SpaceError {
        let Some(lost) = self.lost.as_mut() else {
            // Not watched (too many locks watched at once).
            return std::future::pending().await;
        };
        loop {
            if let Some(l) = lost.borrow_and_update().as_ref() {
                return l.why.clone();
            }
            if lost.changed().await.is_err() {
                return SpaceError::Unavailable("the peer stopped".into());
            }
        }
    }

    /// Releases the lock and waits for the home to confirm it.
    pub async fn unlock(mut self) -> Result<(), ColonyError> {
        self.held = false;
        let op = SpaceOp::Unlock {
            key: self.key.clone(),
            token: self.token,
        };
        self.peer.space_request(op, SPACE_TIMEOUT).await.map(|_| ())
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        if self.held {
            let _ = self.peer.commands.try_send(Command::SpaceRelease {
                key: self.key.clone(),
                token: self.token,
            });
        }
    }
}
