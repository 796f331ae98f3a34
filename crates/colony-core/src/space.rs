//! The object space of P³ (seed 002 §2.1): named objects in namespaces,
//! shared by every peer, kept on the peers' disks with no coordinator.
//!
//! - **Where an object lives.** Its key, (namespace, name), hashes to one
//!   of [`PARTITIONS`] partitions; a partition is a [`Replicated`](crate::home::Replicated) state
//!   (`partition::Partition`) on the generic home: the k live peers closest
//!   to the partition's point in the key space, one of them primary.
//!   Namespaces are records in the partition of their name.
//! - **Operations** ([`SpaceOp`]) go to the partition's primary, which
//!   applies them in arrival order and answers only once a majority of the
//!   home holds the update (reads included: a read is answered after a
//!   round that proves the primary still leads), so every answer is
//!   linearizable. A retried write is answered from the session's reply
//!   table, never applied twice.
//! - **Locks** are many readers or one writer per object, granted with a
//!   lease the holder renews and a fencing token drawn from the
//!   partition's monotonic counter; a write carrying a token is applied
//!   only while that token holds the write lock, so a holder that was paused
//!   past its lease cannot write. A lease that runs out is revoked by the
//!   primary; a new primary restarts every lease in full (it never revokes
//!   early).
//! - **Namespaces** have a generation: destroying one and creating it again
//!   gives a new generation, and objects written under an older one read as
//!   absent, so a client that missed the destruction cannot resurrect old
//!   objects.
//!
//! The core ([`Space`]) is sans-IO like every other: it serves the
//! partitions homed here and tracks this peer's own requests (routing to
//! primaries, retries, deadlines, lease renewals).

mod client;
mod hot;
mod partition;
mod query;
mod server;
mod shards;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use crate::erasure::Shard;

pub use client::{LockLost, SpaceClientConfig};
pub use hot::HotConfig;
pub use partition::{Change, Partition, Unpersisted};
pub use query::{Predicate, Query, Test, MAX_PREDICATES};
pub use server::{Space, SpaceConfig, SpaceCounters, SpaceInput, SpaceOutput};
pub use shards::{HeldWrite, ShardStore, MAX_HELD_SHARDS};

/// How many partitions the key space of objects is cut into: a constant of
/// the protocol (every peer must agree on it).
pub const PARTITIONS: u16 = 64;

/// The namespace that always exists.
pub const GLOBAL: &str = "global";

/// Longest namespace or object name, in bytes.
pub const MAX_NAME_BYTES: usize = 256;

/// Most tags on one object.
pub const MAX_TAGS: usize = 32;

/// Longest tag name or text value, in bytes.
pub const MAX_TAG_BYTES: usize = 256;

/// Most entries one `List` answer carries; a longer listing is cut and says
/// so.
pub const MAX_LIST_ENTRIES: usize = 10_000;

/// Shortest and longest lock lease a home grants.
pub const LEASE_RANGE: std::ops::RangeInclusive<Duration> =
    Duration::from_millis(100)..=Duration::from_secs(600);

/// One partition of the key space.
pub type PartitionId = u16;

/// Where an object is: its namespace and its name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ObjectKey {
    /// The namespace ("global", a job's, or one created by name).
    pub namespace: String,
    /// The object's name within it.
    pub name: String,
}

impl ObjectKey {
    /// The key of `name` in `namespace`.
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        ObjectKey {
            namespace: namespace.into(),
            name: name.into(),
        }
    }

    /// The partition holding this object.
    pub fn partition(&self) -> PartitionId {
        partition_of(&[b"object", self.namespace.as_bytes(), self.name.as_bytes()])
    }

    /// Why this key cannot be used, if it cannot.
    pub fn check(&self) -> Result<(), SpaceError> {
        check_name("namespace", &self.namespace)?;
        check_name("object name", &self.name)
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// The namespace of a job (P³'s local namespace): created on first use by
/// its units, destroyed when the job ends.
pub fn job_namespace(job: crate::job::JobId) -> String {
    format!("job-{job}")
}

/// The partition holding the record of namespace `name`.
pub fn namespace_partition(name: &str) -> PartitionId {
    partition_of(&[b"namespace", name.as_bytes()])
}

/// A partition from a hash of `parts` (each length-prefixed, so no two
/// different keys hash the same input).
fn partition_of(parts: &[&[u8]]) -> PartitionId {
    let mut hasher = blake3::Hasher::new();
    for part in parts {
        hasher.update(&(part.len() as u64).to_le_bytes());
        hasher.update(part);
    }
    let hash = hasher.finalize();
    let bytes = hash.as_bytes();
    u16::from_le_bytes([bytes[0], bytes[1]]) % PARTITIONS
}

/// A partition's position in the overlay's key space: its home is the
/// live peers closest to it.
pub fn partition_point(partition: PartitionId) -> [u8; 16] {
    let hash = blake3::hash(
        &[
            b"colony-space-partition".as_slice(),
            &partition.to_le_bytes(),
        ]
        .concat(),
    );
    let mut point = [0u8; 16];
    point.copy_from_slice(&hash.as_bytes()[..16]);
    point
}

/// Why `name` cannot be a namespace or object name, if it cannot.
pub fn check_name(what: &str, name: &str) -> Result<(), SpaceError> {
    if name.is_empty() {
        return Err(SpaceError::InvalidName(format!("the {what} is empty")));
    }
    if name.len() > MAX_NAME_BYTES {
        return Err(SpaceError::InvalidName(format!(
            "the {what} has {} bytes; at most {MAX_NAME_BYTES}",
            name.len()
        )));
    }
    if name.chars().any(char::is_control) {
        return Err(SpaceError::InvalidName(format!(
            "the {what} {name:?} contains a control character"
        )));
    }
    Ok(())
}

/// A tag's value.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum TagValue {
    /// A number.
    Int(i64),
    /// A text.
    Text(String),
}

impl fmt::Display for TagValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TagValue::Int(n) => write!(f, "{n}"),
            TagValue::Text(s) => write!(f, "{s}"),
        }
    }
}

/// An object's metadata: typed tags by name.
pub type Tags = BTreeMap<String, TagValue>;

/// Why these tags cannot be stored, if they cannot.
pub fn check_tags(tags: &Tags) -> Result<(), SpaceError> {
    if tags.len() > MAX_TAGS {
        return Err(SpaceError::InvalidTags(format!(
            "{} tags; at most {MAX_TAGS}",
            tags.len()
        )));
    }
    for (name, value) in tags {
        let text_len = match value {
            TagValue::Text(s) => s.len(),
            TagValue::Int(_) => 0,
        };
        if name.is_empty() || name.len() > MAX_TAG_BYTES || text_len > MAX_TAG_BYTES {
            return Err(SpaceError::InvalidTags(format!(
                "tag {name:?}: names must have 1 to {MAX_TAG_BYTES} bytes, texts at most {MAX_TAG_BYTES}"
            )));
        }
    }
    Ok(())
}

/// An object as stored: its bytes, its version and its tags.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Object {
    /// The value.
    #[serde(with = "serde_bytes")]
    pub value: Vec<u8>,
    /// How many writes this object has seen (1 for the first); a
    /// compare-and-set names the version it expects.
    pub version: u64,
    /// The metadata.
    pub tags: Tags,
}

/// A condition on a write (compare-and-set).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Condition {
    /// Write whatever is there.
    Always,
    /// Write only if the object's version is this one (0: absent).
    Version(u64),
}

/// The kind of a lock.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LockMode {
    /// Shared with other readers.
    Read,
    /// Exclusive.
    Write,
}

impl fmt::Display for LockMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LockMode::Read => "read",
            LockMode::Write => "write",
        })
    }
}

/// One entry of a namespace listing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Listed {
    /// The object's name.
    pub name: String,
    /// Its version.
    pub version: u64,
    /// Its size in bytes.
    pub size: u64,
    /// Its tags.
    pub tags: Tags,
}

/// An operation on the space, as a client asks it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum SpaceOp {
    /// Read an object.
    Get {
        /// Which.
        key: ObjectKey,
    },
    /// Read an object from whichever replica receives the request, without
    /// the round that proves the answer current (a "cached" read: it may
    /// miss the latest writes, never invents one).
    ReadReplica {
        /// Which.
        key: ObjectKey,
    },
    /// Whether an object is still at `version` (a cached copy's check):
    /// answered [`SpaceReply::Unchanged`] if it is, with the object if not.
    Validate {
        /// Which.
        key: ObjectKey,
        /// The version the asker holds (0: absent).
        version: u64,
    },
    /// Write an object (create or replace), if `condition` holds, and, with
    /// a `token`, only while that token holds the object's write lock.
    Put {
        /// Which.
        key: ObjectKey,
        /// The new value.
        #[serde(with = "serde_bytes")]
        value: Vec<u8>,
        /// The new tags.
        tags: Tags,
        /// Compare-and-set on the version.
        condition: Condition,
        /// The fencing token of the write lock the writer holds.
        token: Option<u64>,
    },
    /// Delete an object, under the same conditions as a write.
    Delete {
        /// Which.
        key: ObjectKey,
        /// Compare-and-set on the version.
        condition: Condition,
        /// The fencing token of the write lock the writer holds.
        token: Option<u64>,
    },
    /// The objects of a namespace held in one partition.
    List {
        /// The namespace.
        namespace: String,
        /// The partition asked.
        partition: PartitionId,
    },
    /// The objects of a namespace held in one partition whose tags match a
    /// query.
    Search {
        /// The namespace.
        namespace: String,
        /// The partition asked.
        partition: PartitionId,
        /// What the objects' tags must satisfy.
        query: Query,
    },
    /// Take a lock on an object, waiting until it is free.
    Lock {
        /// Which.
        key: ObjectKey,
        /// Read or write.
        mode: LockMode,
        /// How long the grant lasts unless renewed.
        lease_ms: u64,
    },
    /// Extend a held lock's lease.
    Renew {
        /// Which.
        key: ObjectKey,
        /// The grant's token.
        token: u64,
    },
    /// Release a held lock.
    Unlock {
        /// Which.
        key: ObjectKey,
        /// The grant's token.
        token: u64,
    },
    /// Create a namespace (at its home).
    CreateNamespace {
        /// Its name.
        name: String,
    },
    /// Destroy a namespace (at its home): its objects read as absent from
    /// then on.
    DestroyNamespace {
        /// Its name.
        name: String,
    },
    /// Whether a namespace exists, and its generation (at its home).
    Namespace {
        /// Its name.
        name: String,
    },
    /// Keep one erasure-coded shard of a value, durably, on the peer the
    /// request is sent to (a shard holder, not the object's home): see
    /// [`ShardId`].
    PutShard {
        /// The object whose value the shard is part of.
        key: ObjectKey,
        /// Which shard.
        id: ShardId,
        /// The shard (its index is `id.index`).
        shard: Shard,
    },
    /// The shard `id` of `key`'s value, if the receiving peer holds it.
    GetShard {
        /// The object.
        key: ObjectKey,
        /// Which shard.
        id: ShardId,
    },
    /// Forget every shard of the write `write` of `key` the receiving peer
    /// holds (the value was replaced, deleted or never committed).
    DropShards {
        /// The object.
        key: ObjectKey,
        /// The write whose shards go.
        write: u128,
    },
    /// Drop the objects of a destroyed generation of a namespace held in
    /// one partition (reclaims space; reads ignore them already).
    Purge {
        /// The namespace.
        namespace: String,
        /// The partition.
        partition: PartitionId,
        /// Objects of generations up to this one go.
        generation: u64,
    },
}

impl SpaceOp {
    /// The partition that answers this operation.
    pub fn partition(&self) -> PartitionId {
        match self {
            SpaceOp::Get { key }
            | SpaceOp::ReadReplica { key }
            | SpaceOp::Validate { key, .. }
            | SpaceOp::Put { key, .. }
            | SpaceOp::Delete { key, .. }
            | SpaceOp::Lock { key, .. }
            | SpaceOp::Renew { key, .. }
            | SpaceOp::Unlock { key, .. }
            | SpaceOp::PutShard { key, .. }
            | SpaceOp::GetShard { key, .. }
            | SpaceOp::DropShards { key, .. } => key.partition(),
            SpaceOp::List { partition, .. }
            | SpaceOp::Search { partition, .. }
            | SpaceOp::Purge { partition, .. } => *partition % PARTITIONS,
            SpaceOp::CreateNamespace { name }
            | SpaceOp::DestroyNamespace { name }
            | SpaceOp::Namespace { name } => namespace_partition(name),
        }
    }

    /// The namespace whose generation the operation needs, for operations
    /// on objects.
    pub fn object_namespace(&self) -> Option<&str> {
        match self {
            SpaceOp::Get { key }
            | SpaceOp::ReadReplica { key }
            | SpaceOp::Validate { key, .. }
            | SpaceOp::Put { key, .. }
            | SpaceOp::Delete { key, .. }
            | SpaceOp::Lock { key, .. }
            | SpaceOp::Renew { key, .. }
            | SpaceOp::Unlock { key, .. } => Some(&key.namespace),
            SpaceOp::List { namespace, .. } | SpaceOp::Search { namespace, .. } => Some(namespace),
            _ => None,
        }
    }

    /// Whether the operation changes the space (and so is answered from
    /// the session's reply table when retried).
    pub fn writes(&self) -> bool {
        !matches!(
            self,
            SpaceOp::Get { .. }
                | SpaceOp::ReadReplica { .. }
                | SpaceOp::Validate { .. }
                | SpaceOp::List { .. }
                | SpaceOp::Search { .. }
                | SpaceOp::Namespace { .. }
        )
    }

    /// Why the operation is malformed, if it is (checked by the client
    /// before sending and by the home before applying).
    pub fn check(&self, max_object_bytes: usize) -> Result<(), SpaceError> {
        match self {
            SpaceOp::Get { key }
            | SpaceOp::ReadReplica { key }
            | SpaceOp::Validate { key, .. }
            | SpaceOp::Delete { key, .. }
            | SpaceOp::Renew { key, .. }
            | SpaceOp::Unlock { key, .. }
            | SpaceOp::GetShard { key, .. }
            | SpaceOp::DropShards { key, .. } => key.check(),
            SpaceOp::PutShard { key, id, shard } => {
                key.check()?;
                if shard.index != id.index || shard.index >= shard.k.saturating_add(shard.m) {
                    return Err(SpaceError::InvalidShard(format!(
                        "shard {} of {}+{} sent as shard {}",
                        shard.index, shard.k, shard.m, id.index
                    )));
                }
                if shard.bytes.len() > max_object_bytes {
                    return Err(SpaceError::TooLarge {
                        size: shard.bytes.len() as u64,
                        max: max_object_bytes as u64,
                    });
                }
                Ok(())
            }
            SpaceOp::Put {
                key, value, tags, ..
            } => {
                key.check()?;
                check_tags(tags)?;
                if value.len() > max_object_bytes {
                    return Err(SpaceError::TooLarge {
                        size: value.len() as u64,
                        max: max_object_bytes as u64,
                    });
                }
                Ok(())
            }
            SpaceOp::Lock { key, lease_ms, .. } => {
                key.check()?;
                let lease = Duration::from_millis(*lease_ms);
                if !LEASE_RANGE.contains(&lease) {
                    return Err(SpaceError::InvalidLease {
                        lease_ms: *lease_ms,
                    });
                }
                Ok(())
            }
            SpaceOp::List { namespace, .. } | SpaceOp::Purge { namespace, .. } => {
                check_name("namespace", namespace)
            }
            SpaceOp::Search {
                namespace, query, ..
            } => {
                check_name("namespace", namespace)?;
                query.check()
            }
            SpaceOp::CreateNamespace { name } | SpaceOp::DestroyNamespace { name } => {
                check_name("namespace", name)?;
                if name == GLOBAL {
                    return Err(SpaceError::GlobalNamespace);
                }
                Ok(())
            }
            SpaceOp::Namespace { name } => check_name("namespace", name),
        }
    }
}

/// What the home answers to a [`SpaceOp`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum SpaceReply {
    /// The object, or `None` if it does not exist.
    Value(Option<Object>),
    /// Written (or deleted): the object's version now.
    Written {
        /// The new version.
        version: u64,
        /// The tags of the object the write replaced or deleted (empty if
        /// there was none, or it had none): a layer above learns what it
        /// replaced without reading first (etcd's `prev_kv`, tags only).
        replaced: Tags,
    },
    /// A listing of one partition.
    Listed {
        /// The objects, by name.
        entries: Vec<Listed>,
        /// Whether more were left out ([`MAX_LIST_ENTRIES`]).
        truncated: bool,
    },
    /// The lock is held.
    Granted {
        /// The fencing token: present it with every write.
        token: u64,
        /// The lease, from the grant.
        lease_ms: u64,
    },
    /// The object is still at the version the asker holds.
    Unchanged,
    /// The lease was extended.
    Renewed,
    /// The lock was released.
    Released,
    /// A namespace exists with this generation.
    Namespace {
        /// Its generation (0 for "global").
        generation: u64,
    },
    /// Done (a namespace destroyed, a partition purged).
    Done,
    /// The shard is on the holder's disk.
    ShardKept,
    /// The shard asked for, or `None` if the holder has none.
    Shard(Option<Shard>),
    /// Shards dropped by a [`SpaceOp::DropShards`].
    ShardsDropped {
        /// How many the holder had.
        count: u32,
    },
}

/// Which erasure-coded shard: a value written with erasure coding is cut
/// into stripes, each coded into `k + m` shards; shard `index` of every
/// stripe is kept by the same holder.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ShardId {
    /// The write that made it (random per write, so two writes of one
    /// object never share shards).
    pub write: u128,
    /// The stripe of the value.
    pub stripe: u32,
    /// The shard's position among the stripe's `k + m`.
    pub index: u8,
}

/// Why a space operation failed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum SpaceError {
    /// The namespace does not exist (or was destroyed).
    #[error("namespace {0:?} does not exist")]
    UnknownNamespace(String),
    /// A namespace of this name exists already.
    #[error("namespace {0:?} exists already")]
    NamespaceExists(String),
    /// The global namespace cannot be created or destroyed.
    #[error("the global namespace always exists and cannot be created or destroyed")]
    GlobalNamespace,
    /// A name is empty, too long or not printable.
    #[error("invalid name: {0}")]
    InvalidName(String),
    /// Tags out of bounds.
    #[error("invalid tags: {0}")]
    InvalidTags(String),
    /// A search query that does not parse or is out of bounds.
    #[error("malformed search predicate {0}")]
    InvalidQuery(String),
    /// A lease outside [`LEASE_RANGE`].
    #[error("a lease of {lease_ms} ms is outside the range the space grants (100 ms to 600 s)")]
    InvalidLease {
        /// What was asked.
        lease_ms: u64,
    },
    /// The value is larger than the space accepts.
    #[error("the object has {size} bytes; the space accepts at most {max}")]
    TooLarge {
        /// Its size.
        size: u64,
        /// The limit.
        max: u64,
    },
    /// A compare-and-set found another version.
    #[error("the object is at version {current}, not the one expected")]
    VersionMismatch {
        /// The version found.
        current: u64,
    },
    /// The object is locked by someone else and the write carries no token
    /// (or the lock is held in the other mode).
    #[error("the object is locked by another holder")]
    Locked,
    /// The write's token does not hold the object's write lock (it expired,
    /// was released, or a newer holder has it).
    #[error(
        "fencing token {token} does not hold the write lock (expired, released or superseded)"
    )]
    StaleToken {
        /// The token presented.
        token: u64,
    },
    /// Unlock or renew of a lock not held with that token.
    #[error("no lock with token {token} is held on this object")]
    NotHeld {
        /// The token presented.
        token: u64,
    },
    /// No live peer offers room for the object, or the home's peers are
    /// full.
    #[error("the space is full: {0}")]
    Full(String),
    /// The request did not get an answer in time.
    #[error("no answer within {waited_ms} ms: {why}")]
    Timeout {
        /// How long the client waited.
        waited_ms: u64,
        /// What it was waiting for.
        why: String,
    },
    /// Too many requests are waiting here.
    #[error("too many space requests in flight (at most {max})")]
    Busy {
        /// The limit.
        max: usize,
    },
    /// The home cannot answer now (it is forming or changing); the client
    /// retries until its deadline.
    #[error("the partition's home cannot answer now: {0}")]
    Unavailable(String),
    /// A shard that is malformed, or differs from the one held under its
    /// id. (Last: replies kept on disk keep their encoding.)
    #[error("invalid shard: {0}")]
    InvalidShard(String),
}

/// Identifies one request of one client session, for replies and for
/// answering retried writes from the reply table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct RequestId {
    /// The client's session: random per process start.
    pub session: u64,
    /// The request's number within the session.
    pub seq: u64,
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}/{}", self.session, self.seq)
    }
}

/// A message of the space protocol between peers.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(bound(
    serialize = "P: Serialize",
    deserialize = "P: serde::de::DeserializeOwned"
))]
pub enum SpaceMsg<P> {
    /// Client → primary: apply `op`; objects are read and written under
    /// `generation` of their namespace.
    Request {
        /// The request.
        id: RequestId,
        /// The namespace generation the client resolved.
        generation: u64,
        /// The operation.
        op: SpaceOp,
    },
    /// Primary → client: the answer.
    Reply {
        /// The request.
        id: RequestId,
        /// What happened.
        result: Result<SpaceReply, SpaceError>,
    },
    /// Home member that is not the primary → client: ask `primary` instead
    /// (`None`: unknown now, retry later).
    Redirect {
        /// The request.
        id: RequestId,
        /// The primary, if known.
        primary: Option<P>,
    },
    /// A peer about to create a partition's home → the peers closest to
    /// it: do you hold a replica?
    Probe {
        /// The partition.
        partition: PartitionId,
    },
    /// The answer to [`SpaceMsg::Probe`].
    ProbeReply {
        /// The partition.
        partition: PartitionId,
        /// Whether the sender holds a replica.
        holds: bool,
        /// The primary it follows, if any.
        primary: Option<P>,
    },
    /// A hot object's primary → a peer beyond its home: keep this copy and
    /// answer cached reads of it for a while ([`HotConfig::hold_for`]).
    HotCopy {
        /// The object.
        key: ObjectKey,
        /// Its namespace's generation.
        generation: u64,
        /// The object (`None`: absent).
        object: Option<Object>,
    },
    /// A hot object's primary → a reader: copies of it are also at these
    /// peers.
    HotHolders {
        /// The object.
        key: ObjectKey,
        /// The peers holding copies.
        holders: Vec<P>,
    },
    /// A partition's home message (replication, elections).
    Home(crate::home::HomeMsgOf<PartitionId, P, Partition>),
}
