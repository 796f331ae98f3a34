//! Values larger than one object, stored in chunks by this library layer
//! (the space core knows only objects up to `max_object_bytes`).
//!
//! A value longer than the chunk size ([`CHUNK_BYTES`], or the peer's
//! `max_object_bytes` if smaller) is written as chunk objects in the same
//! namespace, named `.colony-chunk/WRITE/INDEX` where WRITE is a random
//! 128-bit id of this write (so concurrent writers never share a chunk) —
//! their names hash to partitions all over the space. Then a small
//! *manifest* is written at the user's name: the chunks' names, sizes and
//! BLAKE3 hashes, and the BLAKE3 of the whole value, with the user's tags
//! and one reserved tag, [`SIZE_TAG`], holding the whole size.
//!
//! - **The manifest write is the commit point.** Compare-and-set and
//!   fencing tokens apply to it, so they keep their meaning; a refused
//!   manifest write deletes the chunks just written.
//! - **Replaced and deleted values' chunks are deleted** once the
//!   manifest changed. A manifest also carries the reserved tag
//!   [`CHUNKS_TAG`] (its write id and chunk count), and the space answers
//!   every write with the tags of the object it replaced, so a writer
//!   knows exactly which chunks it orphaned without reading first.
//!   Deleting chunks is best effort: a failure is logged and counted
//!   ([`crate::SpaceInfo::chunk_cleanup_failures`]). A crash in the middle
//!   of a write leaves orphan chunks; every chunk carries the tag
//!   [`CHUNK_OF_TAG`] naming its object, so a sweep can find them (search
//!   the namespace for that tag and keep the chunks the current manifest
//!   names).
//! - **Reads put values back together** transparently, fetching at most
//!   [`CHUNKS_IN_FLIGHT`] chunks at once and checking every chunk's size
//!   and BLAKE3 and the whole value's BLAKE3; a missing or damaged chunk is
//!   [`ColonyError::DamagedValue`] naming the object and the chunk (unless
//!   the manifest changed meanwhile: then the read starts again).
//! - **Names and tag names starting with [`RESERVED_PREFIX`] are
//!   reserved**: the public calls refuse them, listings hide chunk objects
//!   and show a chunked object with its whole size and the user's tags.
//!
//! Memory: a value is held whole in memory by the writer and the reader
//! (plus up to [`CHUNKS_IN_FLIGHT`] chunk copies in flight), so values are
//! bounded by [`crate::PeerConfig::max_value_bytes`].

use std::sync::atomic::{AtomicU64, Ordering};

use colony_core::space::{
    check_tags, Condition, Listed, Object, ObjectKey, SpaceError, SpaceOp, SpaceReply, TagValue,
    Tags, MAX_TAGS,
};
use futures::StreamExt;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};
use tracing::warn;

use super::coded::{coded_of, Storage, SHARDS_TAG};
use super::{unexpected, SPACE_TIMEOUT};
use crate::error::ColonyError;
use crate::peer::Peer;
use libp2p::PeerId;

/// Object names and tag names starting with this are the library's own
/// (chunks of large values, their bookkeeping tags); the public calls
/// refuse them.
pub const RESERVED_PREFIX: &str = ".colony-";

/// How the names of chunk objects start.
pub const CHUNK_PREFIX: &str = ".colony-chunk/";

/// The tag a chunked value's manifest carries: the whole value's size, in
/// bytes (listings show it as the object's size and hide the tag).
pub const SIZE_TAG: &str = ".colony-size";

/// The tag a chunked value's manifest carries naming its chunks:
/// `WRITE/COUNT`, the write id (32 hex digits) and the number of chunks,
/// which are `.colony-chunk/WRITE/0` to `.colony-chunk/WRITE/COUNT-1`.
pub const CHUNKS_TAG: &str = ".colony-chunks";

/// The tag every chunk object carries: the name of the object it belongs
/// to, for sweeps of orphan chunks.
pub const CHUNK_OF_TAG: &str = ".colony-chunk-of";

/// Largest chunk of a value (smaller if the peer's `max_object_bytes` is):
/// values longer than this are stored in chunks. 1 MiB, well below the
/// largest object: the space's homes replicate and persist objects of a
/// few MiB slowly (a 40 MiB value in 4 MiB chunks took minutes in a debug
/// build, and a single 16 MiB object timed out), 1 MiB ones briskly.
pub const CHUNK_BYTES: usize = 1 << 20;

/// Largest value stored through a peer unless configured otherwise
/// ([`crate::PeerConfig::max_value_bytes`]): 1 GiB.
pub const DEFAULT_MAX_VALUE_BYTES: u64 = 1 << 30;

/// Chunks read, written or deleted at once by one call.
pub const CHUNKS_IN_FLIGHT: usize = 4;

/// The format a manifest declares.
const MANIFEST_FORMAT: &str = "colony-chunked/1";

/// Tags of a chunked value that are the library's own
/// ([`SIZE_TAG`], [`CHUNKS_TAG`]).
const RESERVED_TAGS: usize = 2;

/// Most chunks one value can have: a bound on what a replaced object's
/// [`CHUNKS_TAG`] may ask to delete.
const MAX_CHUNKS: u64 = 1 << 24;

/// Times a read starts again because the value was replaced while its
/// chunks were being fetched.
const READ_ATTEMPTS: usize = 4;

/// A peer's limits on values and what its chunk bookkeeping did.
#[derive(Debug)]
pub(crate) struct Values {
    /// Largest value taken.
    pub(crate) max_value_bytes: u64,
    /// Size of the chunks written.
    pub(crate) chunk_bytes: usize,
    /// Chunks of replaced, deleted or refused values that could not be
    /// deleted (or may remain: the replaced value was not known).
    pub(crate) cleanup_failures: AtomicU64,
    /// Values written in chunks.
    pub(crate) chunked_writes: AtomicU64,
    /// Values written erasure-coded.
    pub(crate) coded_writes: AtomicU64,
    /// Erasure-coded values this peer repaired (lost shards placed anew).
    pub(crate) shard_repairs: AtomicU64,
    /// Orphan writes whose shards this peer dropped.
    pub(crate) orphans_dropped: AtomicU64,
}

impl Values {
    /// Limits from the peer's configuration.
    pub(crate) fn new(max_value_bytes: u64, max_object_bytes: usize) -> Self {
        Values {
            max_value_bytes,
            chunk_bytes: CHUNK_BYTES.min(max_object_bytes).max(1),
            cleanup_failures: AtomicU64::new(0),
            chunked_writes: AtomicU64::new(0),
            coded_writes: AtomicU64::new(0),
            shard_repairs: AtomicU64::new(0),
            orphans_dropped: AtomicU64::new(0),
        }
    }
}

/// A chunked value's manifest, as stored (JSON).
#[derive(Debug, Serialize, Deserialize)]
struct StoredManifest {
    format: String,
    size: u64,
    blake3: String,
    chunks: Vec<StoredChunk>,
}

#[derive(Debug, Serialize, Deserialize)]
struct StoredChunk {
    name: String,
    size: u64,
    blake3: String,
}

/// A value's chunks, written and not yet committed.
struct Chunked {
    /// The manifest to write at the user's key.
    manifest: Vec<u8>,
    /// Its [`CHUNKS_TAG`].
    tag: TagValue,
    /// The chunks' names.
    names: Vec<String>,
}

/// A manifest read and checked.
#[derive(Debug)]
struct Manifest {
    size: u64,
    hash: blake3::Hash,
    chunks: Vec<Chunk>,
}

#[derive(Debug)]
struct Chunk {
    name: String,
    size: u64,
    hash: blake3::Hash,
}

pub(super) fn damaged(key: &ObjectKey, reason: impl Into<String>) -> ColonyError {
    ColonyError::DamagedValue {
        key: key.to_string(),
        reason: reason.into(),
    }
}

/// The manifest `object` holds, if it is a chunked value's; an error if it
/// claims to be one and is not well formed.
fn manifest_of(key: &ObjectKey, object: &Object) -> Result<Option<Manifest>, ColonyError> {
    let Some(size_tag) = object.tags.get(SIZE_TAG) else {
        return Ok(None);
    };
    if object.tags.contains_key(SHARDS_TAG) {
        // Erasure-coded: see `coded`.
        return Ok(None);
    }
    let stored: StoredManifest = serde_json::from_slice(&object.value)
        .map_err(|e| damaged(key, format!("its manifest does not parse: {e}")))?;
    if stored.format != MANIFEST_FORMAT {
        return Err(damaged(
            key,
            format!(
                "its manifest has format {:?}, not {MANIFEST_FORMAT:?}",
                stored.format
            ),
        ));
    }
    if *size_tag != TagValue::Int(i64::try_from(stored.size).unwrap_or(-1)) {
        return Err(damaged(
            key,
            format!(
                "its manifest says {} bytes, its {SIZE_TAG} tag {size_tag}",
                stored.size
            ),
        ));
    }
    let hash = |text: &str, what: &str| {
        blake3::Hash::from_hex(text).map_err(|e| {
            damaged(
                key,
                format!("{what} has no valid BLAKE3 in the manifest: {e}"),
            )
        })
    };
    let mut chunks = Vec::with_capacity(stored.chunks.len());
    let mut total: u64 = 0;
    for (i, chunk) in stored.chunks.into_iter().enumerate() {
        // A manifest naming other objects would have them read, and
        // deleted when it is replaced.
        if !chunk.name.starts_with(CHUNK_PREFIX) {
            return Err(damaged(
                key,
                format!("its manifest names {:?} as chunk {i}", chunk.name),
            ));
        }
        total = total.saturating_add(chunk.size);
        chunks.push(Chunk {
            hash: hash(&chunk.blake3, &format!("chunk {i}"))?,
            name: chunk.name,
            size: chunk.size,
        });
    }
    if total != stored.size {
        return Err(damaged(
            key,
            format!(
                "its chunks add up to {total} bytes, its manifest says {}",
                stored.size
            ),
        ));
    }
    Ok(Some(Manifest {
        size: stored.size,
        hash: hash(&stored.blake3, "the value")?,
        chunks,
    }))
}

/// The name of chunk `index` of the write `write_id`.
fn chunk_name(write_id: u128, index: u64) -> String {
    format!("{CHUNK_PREFIX}{write_id:032x}/{index}")
}

/// The [`CHUNKS_TAG`] of a value written as `count` chunks by `write_id`.
fn chunks_tag(write_id: u128, count: u64) -> TagValue {
    TagValue::Text(format!("{write_id:032x}/{count}"))
}

/// The chunk names a replaced object's tags name (none if it was not
/// chunked; a malformed [`CHUNKS_TAG`] is logged and names none).
fn chunks_named(key: &ObjectKey, tags: &Tags) -> Vec<String> {
    let Some(tag) = tags.get(CHUNKS_TAG) else {
        return Vec::new();
    };
    let parsed = match tag {
        TagValue::Text(text) => text.split_once('/').and_then(|(id, count)| {
            let id = (id.len() == 32).then(|| u128::from_str_radix(id, 16).ok())??;
            let count = count.parse::<u64>().ok().filter(|c| *c <= MAX_CHUNKS)?;
            Some((id, count))
        }),
        _ => None,
    };
    match parsed {
        Some((id, count)) => (0..count).map(|i| chunk_name(id, i)).collect(),
        None => {
            warn!(object = %key, tag = %tag, "replaced a value whose {CHUNKS_TAG} tag is malformed; its chunks, if any, remain");
            Vec::new()
        }
    }
}

/// Refuses a key users may not name (a chunk's).
pub(crate) fn check_user_key(key: &ObjectKey) -> Result<(), ColonyError> {
    key.check()?;
    if key.name.starts_with(RESERVED_PREFIX) {
        return Err(SpaceError::InvalidName(format!(
            "object names starting with {RESERVED_PREFIX:?} are reserved for the chunks of \
             large values; {:?} is one",
            key.name
        ))
        .into());
    }
    Ok(())
}

/// Refuses tags users may not set (the library's own).
fn check_user_tags(tags: &Tags) -> Result<(), ColonyError> {
    check_tags(tags)?;
    if let Some(name) = tags.keys().find(|n| n.starts_with(RESERVED_PREFIX)) {
        return Err(SpaceError::InvalidTags(format!(
            "tag names starting with {RESERVED_PREFIX:?} are reserved; {name:?} is one"
        ))
        .into());
    }
    Ok(())
}

/// The user's tags of a stored object (the reserved ones removed).
fn user_tags(mut tags: Tags) -> Tags {
    tags.retain(|name, _| !name.starts_with(RESERVED_PREFIX));
    tags
}

/// A listing entry as users see it, `None` for a chunk: a chunked value
/// with its whole size and without reserved tags.
pub(crate) fn user_entry(mut entry: Listed) -> Option<Listed> {
    if entry.name.starts_with(RESERVED_PREFIX) {
        return None;
    }
    if let Some(TagValue::Int(size)) = entry.tags.get(SIZE_TAG) {
        entry.size = u64::try_from(*size).unwrap_or(entry.size);
    }
    entry.tags = user_tags(entry.tags);
    Some(entry)
}

impl Peer {
    /// The object stored at `key`, as stored (a manifest for a chunked
    /// value).
    pub(super) async fn stored(&self, key: &ObjectKey) -> Result<Option<Object>, ColonyError> {
        match self
            .space_request(SpaceOp::Get { key: key.clone() }, SPACE_TIMEOUT)
            .await?
        {
            SpaceReply::Value(object) => Ok(object),
            other => Err(unexpected(other)),
        }
    }

    /// Applies `op` (a write) as stored; the object's new version and the
    /// tags of the object it replaced.
    pub(super) async fn store(&self, op: SpaceOp) -> Result<(u64, Tags), ColonyError> {
        match self.space_request(op, SPACE_TIMEOUT).await? {
            SpaceReply::Written { version, replaced } => Ok((version, replaced)),
            other => Err(unexpected(other)),
        }
    }

    /// Deletes an object as stored, whatever is there.
    async fn remove(&self, key: ObjectKey) -> Result<(), ColonyError> {
        self.store(SpaceOp::Delete {
            key,
            condition: Condition::Always,
            token: None,
        })
        .await
        .map(drop)
    }
    /// `object`, read at `key` the cached way, as users see it: a value
    /// stored in chunks is read back whole (linearizably, chunks checked),
    /// and reserved tags are removed.
    pub(crate) async fn user_object(
        &self,
        key: &ObjectKey,
        object: Object,
    ) -> Result<Option<Object>, ColonyError> {
        if manifest_of(key, &object)?.is_some() || coded_of(key, &object)?.is_some() {
            return self.read_value(key).await;
        }
        Ok(Some(Object {
            tags: user_tags(object.tags),
            ..object
        }))
    }

    /// The object at a user's `key`, a chunked value put back together.
    pub(crate) async fn read_value(&self, key: &ObjectKey) -> Result<Option<Object>, ColonyError> {
        check_user_key(key)?;
        let mut attempts = 0;
        loop {
            attempts += 1;
            let Some(object) = self.stored(key).await? else {
                return Ok(None);
            };
            let assembled = if let Some(coded) = coded_of(key, &object)? {
                self.assemble_coded(key, &coded).await
            } else if let Some(manifest) = manifest_of(key, &object)? {
                self.assemble(key, &manifest).await
            } else {
                return Ok(Some(Object {
                    tags: user_tags(object.tags),
                    ..object
                }));
            };
            match assembled {
                Ok(value) => {
                    return Ok(Some(Object {
                        value,
                        version: object.version,
                        tags: user_tags(object.tags),
                    }))
                }
                Err(e @ ColonyError::DamagedValue { .. }) => {
                    // Replaced (and its chunks or shards dropped) while
                    // being read?
                    let now = self.stored(key).await?;
                    let replaced = now.is_none_or(|o| o.value != object.value);
                    if !replaced || attempts >= READ_ATTEMPTS {
                        return Err(e);
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// The value `manifest` describes, its chunks fetched a few at once
    /// and checked.
    async fn assemble(&self, key: &ObjectKey, manifest: &Manifest) -> Result<Vec<u8>, ColonyError> {
        if manifest.size > self.values.max_value_bytes {
            return Err(SpaceError::TooLarge {
                size: manifest.size,
                max: self.values.max_value_bytes,
            }
            .into());
        }
        let count = manifest.chunks.len();
        let mut value = Vec::with_capacity(usize::try_from(manifest.size).unwrap_or(0));
        let mut whole = blake3::Hasher::new();
        // (Futures collected first: a closure in the stream would trip the
        // compiler's check that the caller's future is `Send`.)
        let fetches: Vec<_> = manifest
            .chunks
            .iter()
            .map(|chunk| async move {
                let object = self
                    .stored(&ObjectKey::new(&key.namespace, &chunk.name))
                    .await;
                (chunk, object)
            })
            .collect();
        let mut fetched = futures::stream::iter(fetches).buffered(CHUNKS_IN_FLIGHT);
        let mut index = 0;
        while let Some((chunk, object)) = fetched.next().await {
            let which = format!("chunk {index} of {count} ({})", chunk.name);
            let Some(object) = object? else {
                return Err(damaged(key, format!("{which} is missing")));
            };
            if object.value.len() as u64 != chunk.size {
                return Err(damaged(
                    key,
                    format!(
                        "{which} has {} bytes, its manifest says {}",
                        object.value.len(),
                        chunk.size
                    ),
                ));
            }
            if blake3::hash(&object.value) != chunk.hash {
                return Err(damaged(key, format!("{which} does not match its BLAKE3")));
            }
            whole.update(&object.value);
            value.extend_from_slice(&object.value);
            index += 1;
        }
        if whole.finalize() != manifest.hash {
            return Err(damaged(key, "the whole value does not match its BLAKE3"));
        }
        Ok(value)
    }

    /// Writes `value` at a user's `key` as `storage` says: replicated (in
    /// chunks if it is long; see the module's documentation) or
    /// erasure-coded (see `coded`).
    pub(crate) async fn write_value(
        &self,
        key: &ObjectKey,
        value: Vec<u8>,
        tags: Tags,
        condition: Condition,
        token: Option<u64>,
        storage: Storage,
    ) -> Result<u64, ColonyError> {
        check_user_key(key)?;
        check_user_tags(&tags)?;
        let size = value.len() as u64;
        if size > self.values.max_value_bytes {
            return Err(SpaceError::TooLarge {
                size,
                max: self.values.max_value_bytes,
            }
            .into());
        }
        if storage == Storage::Replicated && value.len() <= self.values.chunk_bytes {
            let op = SpaceOp::Put {
                key: key.clone(),
                value,
                tags,
                condition,
                token,
            };
            return self.commit(key, op).await;
        }
        if tags.len() + RESERVED_TAGS > MAX_TAGS {
            return Err(SpaceError::InvalidTags(format!(
                "{} tags; a value stored behind a manifest (longer than {} bytes, or \
                 erasure-coded) takes at most {}",
                tags.len(),
                self.values.chunk_bytes,
                MAX_TAGS - RESERVED_TAGS
            ))
            .into());
        }
        // What the manifest names, deleted if it does not commit.
        enum Named {
            Chunks(Vec<String>),
            Shards { write: u128, holders: Vec<PeerId> },
        }
        let (manifest, tag_name, tag, named) = match storage {
            Storage::Replicated => {
                let written = self.write_chunks(key, value).await?;
                let named = Named::Chunks(written.names);
                (written.manifest, CHUNKS_TAG, written.tag, named)
            }
            Storage::Coded { k, m } => {
                let written = self.write_shards(key, &value, k, m).await?;
                drop(value);
                let named = Named::Shards {
                    write: written.write,
                    holders: written.holders,
                };
                (written.manifest, SHARDS_TAG, written.tag, named)
            }
        };
        let mut tags = tags;
        tags.insert(
            SIZE_TAG.to_string(),
            TagValue::Int(i64::try_from(size).unwrap_or(i64::MAX)),
        );
        tags.insert(tag_name.to_string(), tag.clone());
        let op = SpaceOp::Put {
            key: key.clone(),
            value: manifest,
            tags,
            condition,
            token,
        };
        match self.commit(key, op).await {
            Ok(version) => {
                let written = match storage {
                    Storage::Replicated => &self.values.chunked_writes,
                    Storage::Coded { .. } => &self.values.coded_writes,
                };
                written.fetch_add(1, Ordering::Relaxed);
                Ok(version)
            }
            Err(e) => {
                // Refused (or unknown: a timeout) — what the manifest names
                // goes, unless it did commit, which a read tells.
                if !self.committed_anyway(key, &e, tag_name, &tag).await {
                    match named {
                        Named::Chunks(names) => self.delete_chunks(key, names).await,
                        Named::Shards { write, holders } => {
                            self.drop_shards_at(key, write, &holders).await
                        }
                    }
                }
                Err(e)
            }
        }
    }

    /// Deletes the object at a user's `key` (and its chunks or shards).
    pub(crate) async fn delete_value(
        &self,
        key: &ObjectKey,
        condition: Condition,
        token: Option<u64>,
    ) -> Result<u64, ColonyError> {
        check_user_key(key)?;
        let op = SpaceOp::Delete {
            key: key.clone(),
            condition,
            token,
        };
        self.commit(key, op).await
    }

    /// Whether a manifest write that failed with `e` committed all the same
    /// (a timeout: a read tells whether `tag` is at `key`); `true` when it
    /// cannot be told, so that nothing it may name is deleted.
    async fn committed_anyway(
        &self,
        key: &ObjectKey,
        e: &ColonyError,
        tag_name: &str,
        tag: &TagValue,
    ) -> bool {
        match e {
            ColonyError::Space(SpaceError::Timeout { .. } | SpaceError::Unavailable(_)) => {
                match self.stored(key).await {
                    Ok(Some(object)) => object.tags.get(tag_name) == Some(tag),
                    Ok(None) => false,
                    Err(_) => true,
                }
            }
            _ => false,
        }
    }

    /// Writes the chunks of `value` under a fresh write id; returns the
    /// manifest to commit. On failure, deletes the chunks written.
    async fn write_chunks(&self, key: &ObjectKey, value: Vec<u8>) -> Result<Chunked, ColonyError> {
        let write_id: u128 = rand::Rng::random(&mut rand::rngs::StdRng::from_os_rng());
        let mut chunk_tags = Tags::new();
        chunk_tags.insert(CHUNK_OF_TAG.to_string(), TagValue::Text(key.name.clone()));
        let pieces: Vec<(String, &[u8])> = value
            .chunks(self.values.chunk_bytes)
            .enumerate()
            .map(|(i, piece)| (chunk_name(write_id, i as u64), piece))
            .collect();
        let names: Vec<String> = pieces.iter().map(|(name, _)| name.clone()).collect();
        let mut manifest = StoredManifest {
            format: MANIFEST_FORMAT.to_string(),
            size: value.len() as u64,
            blake3: String::new(),
            chunks: Vec::with_capacity(pieces.len()),
        };
        let mut whole = blake3::Hasher::new();
        for (name, piece) in &pieces {
            whole.update(piece);
            manifest.chunks.push(StoredChunk {
                name: name.clone(),
                size: piece.len() as u64,
                blake3: blake3::hash(piece).to_hex().to_string(),
            });
        }
        manifest.blake3 = whole.finalize().to_hex().to_string();
        // Each piece is copied into its request only when its turn comes.
        let chunk_tags = &chunk_tags;
        let writes: Vec<_> = pieces
            .into_iter()
            .map(|(name, piece)| async move {
                self.store(SpaceOp::Put {
                    key: ObjectKey::new(&key.namespace, name),
                    value: piece.to_vec(),
                    tags: chunk_tags.clone(),
                    // A chunk never replaces anything.
                    condition: Condition::Version(0),
                    token: None,
                })
                .await
            })
            .collect();
        let mut writes = futures::stream::iter(writes).buffer_unordered(CHUNKS_IN_FLIGHT);
        let mut failed = None;
        while let Some(written) = writes.next().await {
            if let Err(e) = written {
                failed = Some(e);
                break;
            }
        }
        drop(writes);
        if let Some(e) = failed {
            self.delete_chunks(key, names).await;
            return Err(e);
        }
        let manifest = serde_json::to_vec(&manifest).map_err(|e| {
            ColonyError::Space(SpaceError::InvalidName(format!(
                "cannot encode the manifest of {key}: {e}"
            )))
        })?;
        Ok(Chunked {
            tag: chunks_tag(write_id, names.len() as u64),
            manifest,
            names,
        })
    }

    /// Deletes chunk objects of `key`'s values, a few at once; failures
    /// are logged and counted.
    async fn delete_chunks(&self, key: &ObjectKey, names: Vec<String>) {
        if names.is_empty() {
            return;
        }
        let count = names.len();
        let deletes = futures::stream::iter(
            names
                .into_iter()
                .map(|name| self.remove(ObjectKey::new(&key.namespace, name))),
        )
        .buffer_unordered(CHUNKS_IN_FLIGHT);
        let failures: Vec<ColonyError> = deletes
            .filter_map(|deleted| async move { deleted.err() })
            .collect()
            .await;
        if let Some(first) = failures.first() {
            self.values
                .cleanup_failures
                .fetch_add(failures.len() as u64, Ordering::Relaxed);
            warn!(
                object = %key,
                failed = failures.len(),
                of = count,
                error = %first,
                "chunks of a replaced or refused value could not be deleted; they remain, \
                 tagged {CHUNK_OF_TAG}"
            );
        }
    }

    /// Applies `op`, a write at a user's `key`, then deletes the chunks of
    /// the value it replaced, if that was chunked.
    async fn commit(&self, key: &ObjectKey, op: SpaceOp) -> Result<u64, ColonyError> {
        let (version, replaced) = self.store(op).await?;
        self.delete_chunks(key, chunks_named(key, &replaced)).await;
        self.drop_replaced_shards(key, &replaced).await;
        Ok(version)
    }
}
