//! Values stored erasure-coded (G2:P2P scenario 3, as for checkpoints):
//! instead of one copy per member of the object's home, a value costs
//! `(k + m) / k` times its size and survives the loss of any `m` of its
//! `k + m` holders.
//!
//! - **Layout.** The value is cut into stripes of `k` times the chunk size;
//!   each stripe is Reed–Solomon coded into `k` data and `m` parity shards
//!   ([`colony_core::erasure`]). Shard `i` of every stripe goes to holder
//!   `i`: `k + m` distinct live peers that offer room to the space,
//!   closest to the write's random id in the key space first (a full peer
//!   refuses and the next one is taken). Each holder writes its shards to
//!   disk before it answers.
//! - **The manifest write is the commit point**, as for chunked values: a
//!   small object at the user's name names the holders, the BLAKE3 of
//!   every shard and of the whole value, and carries the reserved tags
//!   [`SIZE_TAG`] and [`SHARDS_TAG`]. It is replicated by the object's home
//!   like any object, so compare-and-set, fencing tokens, search and
//!   namespaces keep their meaning.
//! - **Reads** fetch the `k` data shards of a stripe at once, and parity
//!   shards for those that are missing, damaged (their BLAKE3 does not
//!   match) or whose holder is unreachable; any `k` intact shards restore
//!   the stripe. Fewer is [`ColonyError::DamagedValue`] naming what was
//!   missing.
//! - **Shards of replaced, deleted or refused values are dropped**: the
//!   writer asks the holders it used (a refused write) or the peers where
//!   the replaced write's shards were placed (a replaced or deleted value:
//!   the write id is in its [`SHARDS_TAG`]). Best effort, like chunk
//!   deletion: failures are counted.
//! - **Holders look after their shards** ([`ShardKeeping`]): every
//!   interval each peer checks the writes it holds shards of against the
//!   committed manifests. When a manifest names a holder that is no longer
//!   alive, its first live holder rebuilds the lost columns from any `k`
//!   shards, stores them on new peers and commits the manifest naming them
//!   (a compare-and-set on the version it read: a concurrent write wins, and
//!   the repair's shards are dropped); the object's version moves on. Shards
//!   no committed manifest names (a writer that crashed mid-write, a
//!   namespace destroyed, a holder replaced while it was away) are dropped
//!   once they have been orphans for [`ShardKeeping::orphan_grace`].
//!
//! So a value survives the loss of any `m` holders at once, and of more
//! over time as long as repairs keep up.

use std::collections::{HashMap, HashSet};
use std::str::FromStr;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use colony_core::erasure::{self, MAX_SHARDS};
use colony_core::space::{
    Condition, HeldWrite, Object, ObjectKey, Shard, ShardId, SpaceError, SpaceOp, SpaceReply,
    TagValue, Tags,
};
use futures::StreamExt;
use libp2p::PeerId;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;
use tracing::{debug, info, warn};

use super::chunked::{damaged, SIZE_TAG};
use super::unexpected;
use crate::command::Command;
use crate::error::ColonyError;
use crate::peer::{Peer, WeakPeer};

/// The tag an erasure-coded value's manifest carries: `WRITE/K+M`, the
/// write id (32 hex digits) and the coding.
pub const SHARDS_TAG: &str = ".colony-shards";

/// How long one shard request waits for its holder.
pub const SHARD_TIMEOUT: Duration = Duration::from_secs(5);

/// The format a coded value's manifest declares.
const CODED_FORMAT: &str = "colony-coded/1";

/// Candidate holders asked for beyond the `k + m` needed (full or
/// unreachable ones are passed over).
const SPARE_HOLDERS: usize = 8;

/// Peers asked to drop the shards of a replaced write, beyond its `k + m`
/// (holders may have changed since it was placed).
const DROP_SPREAD: usize = 4;

/// Writes whose shards are checked per request to the driver.
const SWEEP_PAGE: usize = 64;

/// Orphan writes whose first sighting a peer remembers.
const MAX_TRACKED_ORPHANS: usize = 16_384;

/// Live peers asked for when a repair looks for dead holders.
const MAX_LIVE: usize = 4096;

/// How a peer looks after the shards it holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShardKeeping {
    /// How often the shards held are checked against their manifests.
    /// Default: 30 s.
    pub interval: Duration,
    /// How long shards that no committed manifest names are kept before
    /// they are dropped: longer than any write takes (a writer commits its
    /// manifest last). Default: 10 min.
    pub orphan_grace: Duration,
}

impl Default for ShardKeeping {
    fn default() -> Self {
        ShardKeeping {
            interval: Duration::from_secs(30),
            orphan_grace: Duration::from_secs(600),
        }
    }
}

/// How a value is stored.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Storage {
    /// Replicated by the object's home (chunked when large): every member
    /// holds all of it.
    #[default]
    Replicated,
    /// Reed–Solomon coded into `k` data and `m` parity shards on `k + m`
    /// distinct peers; any `k` restore it.
    Coded {
        /// Data shards.
        k: u8,
        /// Parity shards (holders that may be lost).
        m: u8,
    },
}

impl FromStr for Storage {
    type Err = String;

    /// Parses `replicated` or `K+M` (e.g. `4+2`).
    fn from_str(s: &str) -> Result<Self, String> {
        if s == "replicated" {
            return Ok(Storage::Replicated);
        }
        let bad = || format!("{s:?} is not \"replicated\" or K+M (e.g. 4+2)");
        let (k, m) = s.split_once('+').ok_or_else(bad)?;
        let k: u8 = k.trim().parse().map_err(|_| bad())?;
        let m: u8 = m.trim().parse().map_err(|_| bad())?;
        if k == 0 || usize::from(k) + usize::from(m) > MAX_SHARDS {
            return Err(format!(
                "{s:?}: k must be at least 1 and k + m at most {MAX_SHARDS}"
            ));
        }
        Ok(Storage::Coded { k, m })
    }
}

/// A coded value's manifest, as stored (JSON).
#[derive(Debug, Serialize, Deserialize)]
struct StoredCoded {
    format: String,
    size: u64,
    blake3: String,
    k: u8,
    m: u8,
    write: String,
    stripe_bytes: u64,
    /// Holder of shard `i` of every stripe, by peer id.
    holders: Vec<String>,
    /// Per stripe, the BLAKE3 of each of its `k + m` shards' bytes.
    shards: Vec<Vec<String>>,
}

/// A coded value's manifest, read and checked.
#[derive(Debug)]
pub(super) struct Coded {
    size: u64,
    stripe_bytes: usize,
    hash: blake3::Hash,
    k: u8,
    m: u8,
    write: u128,
    holders: Vec<PeerId>,
    shards: Vec<Vec<blake3::Hash>>,
}

/// A value's shards, stored and not yet committed.
pub(super) struct CodedWrite {
    /// The manifest to write at the user's key.
    pub(super) manifest: Vec<u8>,
    /// Its [`SHARDS_TAG`].
    pub(super) tag: TagValue,
    /// The write's id.
    pub(super) write: u128,
    /// The holders of its shards, by index.
    pub(super) holders: Vec<PeerId>,
}

/// The [`SHARDS_TAG`] of write `write` coded `k + m`.
fn shards_tag(write: u128, k: u8, m: u8) -> TagValue {
    TagValue::Text(format!("{write:032x}/{k}+{m}"))
}

/// The write and coding a [`SHARDS_TAG`] names, if well formed.
fn parse_shards_tag(tag: &TagValue) -> Option<(u128, u8, u8)> {
    let TagValue::Text(text) = tag else {
        return None;
    };
    let (write, coding) = text.split_once('/')?;
    let write = (write.len() == 32).then(|| u128::from_str_radix(write, 16).ok())??;
    match coding.parse::<Storage>().ok()? {
        Storage::Coded { k, m } => Some((write, k, m)),
        Storage::Replicated => None,
    }
}

/// The coded manifest `object` holds, if it is a coded value's; an error if
/// it claims to be one and is not well formed.
pub(super) fn coded_of(key: &ObjectKey, object: &Object) -> Result<Option<Coded>, ColonyError> {
    let Some(tag) = object.tags.get(SHARDS_TAG) else {
        return Ok(None);
    };
    let (write, k, m) = parse_shards_tag(tag)
        .ok_or_else(|| damaged(key, format!("its {SHARDS_TAG} tag {tag} is malformed")))?;
    let stored: StoredCoded = serde_json::from_slice(&object.value)
        .map_err(|e| damaged(key, format!("its manifest does not parse: {e}")))?;
    let width = usize::from(k) + usize::from(m);
    let consistent = stored.format == CODED_FORMAT
        && (stored.k, stored.m) == (k, m)
        && stored.write == format!("{write:032x}")
        && stored.holders.len() == width
        && stored.stripe_bytes > 0
        && stored.shards.len() as u64 == stripes_of(stored.size, stored.stripe_bytes)
        && stored.shards.iter().all(|s| s.len() == width)
        && object.tags.get(SIZE_TAG)
            == Some(&TagValue::Int(i64::try_from(stored.size).unwrap_or(-1)));
    if !consistent {
        return Err(damaged(
            key,
            "its manifest disagrees with its tags or with itself",
        ));
    }
    let holders = stored
        .holders
        .iter()
        .map(|h| PeerId::from_str(h))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| {
            damaged(
                key,
                format!("its manifest names a holder that is no peer id: {e}"),
            )
        })?;
    let hash = |text: &str| {
        blake3::Hash::from_hex(text)
            .map_err(|e| damaged(key, format!("its manifest has an invalid BLAKE3: {e}")))
    };
    let mut shards = Vec::with_capacity(stored.shards.len());
    for stripe in &stored.shards {
        shards.push(
            stripe
                .iter()
                .map(|h| hash(h))
                .collect::<Result<Vec<_>, _>>()?,
        );
    }
    Ok(Some(Coded {
        size: stored.size,
        stripe_bytes: usize::try_from(stored.stripe_bytes).unwrap_or(usize::MAX),
        hash: hash(&stored.blake3)?,
        k,
        m,
        write,
        holders,
        shards,
    }))
}

/// The shards of `value`'s stripes coded `k + m`, and the BLAKE3 of each.
#[allow(clippy::type_complexity)]
fn encode_stripes(
    value: &[u8],
    k: u8,
    m: u8,
    stripe_bytes: usize,
) -> Result<(Vec<Vec<Shard>>, Vec<Vec<String>>), ColonyError> {
    let stripes: Vec<&[u8]> = if value.is_empty() {
        vec![value]
    } else {
        value.chunks(stripe_bytes.max(1)).collect()
    };
    let mut coded = Vec::with_capacity(stripes.len());
    let mut hashes = Vec::with_capacity(stripes.len());
    for stripe in stripes {
        let shards = erasure::encode(stripe, k, m)
            .map_err(|e| ColonyError::Space(SpaceError::InvalidShard(e.to_string())))?;
        hashes.push(
            shards
                .iter()
                .map(|s| blake3::hash(&s.bytes).to_hex().to_string())
                .collect(),
        );
        coded.push(shards);
    }
    Ok((coded, hashes))
}

/// A manifest as stored.
fn encode_manifest(key: &ObjectKey, manifest: &StoredCoded) -> Result<Vec<u8>, ColonyError> {
    serde_json::to_vec(manifest).map_err(|e| {
        ColonyError::Space(SpaceError::InvalidShard(format!(
            "cannot encode the manifest of {key}: {e}"
        )))
    })
}

/// Stripes of a value of `size` bytes cut every `stripe_bytes` (an empty
/// value has one, empty).
fn stripes_of(size: u64, stripe_bytes: u64) -> u64 {
    size.div_ceil(stripe_bytes.max(1)).max(1)
}

/// What a held write is to its holder.
enum Held {
    /// A committed manifest names this peer as one of its holders.
    Named,
    /// No committed manifest names it here.
    Orphan,
}

/// Looks after the shards `peer` holds every [`ShardKeeping::interval`],
/// until the peer stops.
pub(crate) async fn keep_shards(peer: WeakPeer, keeping: ShardKeeping) {
    let mut orphans: HashMap<(ObjectKey, u128), Instant> = HashMap::new();
    loop {
        tokio::time::sleep(keeping.interval).await;
        let Some(peer) = peer.upgrade() else { return };
        match peer.sweep_shards(&keeping, &mut orphans).await {
            Ok(()) => {}
            Err(ColonyError::Stopped) => return,
            Err(e) => {
                debug!(error = %e, "shard sweep cut short; next one in {:?}", keeping.interval)
            }
        }
    }
}

impl Peer {
    /// The writes whose shards this peer holds, after `after`.
    async fn held_shard_writes(
        &self,
        after: Option<u128>,
        max: usize,
    ) -> Result<Vec<HeldWrite>, ColonyError> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(Command::HeldShardWrites { after, max, reply })
            .await
            .map_err(|_| ColonyError::Stopped)?;
        answer.await.map_err(|_| ColonyError::Stopped)
    }

    /// One pass over the shards held here: repairs, and orphans dropped.
    async fn sweep_shards(
        &self,
        keeping: &ShardKeeping,
        orphans: &mut HashMap<(ObjectKey, u128), Instant>,
    ) -> Result<(), ColonyError> {
        let mut seen: HashSet<(ObjectKey, u128)> = HashSet::new();
        let mut cursor = None;
        loop {
            let page = self.held_shard_writes(cursor, SWEEP_PAGE).await?;
            let Some(last) = page.last() else { break };
            cursor = Some(last.write);
            for held in page {
                let id = (held.key.clone(), held.write);
                seen.insert(id.clone());
                match self.check_held(&held).await {
                    Ok(Held::Named) => {
                        orphans.remove(&id);
                    }
                    Ok(Held::Orphan) => {
                        let now = Instant::now();
                        if !orphans.contains_key(&id) && orphans.len() >= MAX_TRACKED_ORPHANS {
                            continue;
                        }
                        let since = *orphans.entry(id.clone()).or_insert(now);
                        if now.duration_since(since) >= keeping.orphan_grace {
                            orphans.remove(&id);
                            self.drop_shards_at(&held.key, held.write, &[self.peer_id])
                                .await;
                            self.values.orphans_dropped.fetch_add(1, Ordering::Relaxed);
                            info!(object = %held.key, write = format!("{:032x}", held.write), shards = held.shards, "dropped shards no committed value names");
                        }
                    }
                    Err(ColonyError::Stopped) => return Err(ColonyError::Stopped),
                    Err(e) => {
                        debug!(object = %held.key, error = %e, "shards not checked; checked again next sweep")
                    }
                }
            }
        }
        orphans.retain(|id, _| seen.contains(id));
        Ok(())
    }

    /// Whether a committed manifest names this peer as a holder of
    /// `held`'s write; if it does and names dead holders, repairs them
    /// when this peer is the first live one.
    async fn check_held(&self, held: &HeldWrite) -> Result<Held, ColonyError> {
        let object = match self.stored(&held.key).await {
            Ok(object) => object,
            // Destroyed with its namespace.
            Err(ColonyError::Space(SpaceError::UnknownNamespace(_))) => return Ok(Held::Orphan),
            Err(e) => return Err(e),
        };
        let Some(object) = object else {
            return Ok(Held::Orphan);
        };
        let coded = coded_of(&held.key, &object).ok().flatten();
        let Some(coded) =
            coded.filter(|c| c.write == held.write && c.holders.contains(&self.peer_id))
        else {
            return Ok(Held::Orphan);
        };
        self.repair_holders(&held.key, &object, &coded).await?;
        Ok(Held::Named)
    }

    /// Replaces the dead holders of `coded` (the value at `key`, stored as
    /// `object`), if this peer is its first live holder.
    async fn repair_holders(
        &self,
        key: &ObjectKey,
        object: &Object,
        coded: &Coded,
    ) -> Result<(), ColonyError> {
        let live: HashSet<PeerId> = self
            .shard_candidates(coded.write, MAX_LIVE)
            .await?
            .into_iter()
            .collect();
        let dead: Vec<usize> = (0..coded.holders.len())
            .filter(|i| !live.contains(&coded.holders[*i]))
            .collect();
        if dead.is_empty() || coded.holders.iter().find(|h| live.contains(h)) != Some(&self.peer_id)
        {
            return Ok(());
        }
        let value = self.assemble_coded(key, coded).await?;
        let (shards, _) = encode_stripes(&value, coded.k, coded.m, coded.stripe_bytes)?;
        drop(value);
        let width = coded.holders.len();
        let spare: Vec<PeerId> = self
            .shard_candidates(coded.write, 2 * width + SPARE_HOLDERS)
            .await?
            .into_iter()
            .filter(|p| !coded.holders.contains(p))
            .collect();
        if spare.len() < dead.len() {
            warn!(object = %key, dead = dead.len(), spare = spare.len(), "too few live peers offering room to replace the dead holders of an erasure-coded value");
            return Ok(());
        }
        let (first, rest) = spare.split_at(dead.len());
        let mut holders = coded.holders.clone();
        for (index, peer) in dead.iter().zip(first) {
            holders[*index] = *peer;
        }
        let placed = self
            .place_columns(key, coded.write, &shards, &dead, &mut holders, rest)
            .await;
        let new: Vec<PeerId> = dead.iter().map(|i| holders[*i]).collect();
        placed?;
        let mut stored: StoredCoded = serde_json::from_slice(&object.value)
            .map_err(|e| damaged(key, format!("its manifest does not parse: {e}")))?;
        stored.holders = holders.iter().map(ToString::to_string).collect();
        let op = SpaceOp::Put {
            key: key.clone(),
            value: encode_manifest(key, &stored)?,
            tags: object.tags.clone(),
            condition: Condition::Version(object.version),
            token: None,
        };
        match self.store(op).await {
            Ok(_) => {
                self.values.shard_repairs.fetch_add(1, Ordering::Relaxed);
                let replaced: Vec<String> =
                    dead.iter().map(|i| coded.holders[*i].to_string()).collect();
                info!(object = %key, ?replaced, ?new, "repaired an erasure-coded value: its lost shards are on new holders");
                Ok(())
            }
            Err(e) => {
                self.drop_shards_at(key, coded.write, &new).await;
                Err(e)
            }
        }
    }

    /// Sends `op` (a shard operation) to `to` itself.
    async fn shard_request(&self, to: PeerId, op: SpaceOp) -> Result<SpaceReply, ColonyError> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(Command::Space {
                op,
                timeout: SHARD_TIMEOUT,
                keep: None,
                to: Some(to),
                reply,
            })
            .await
            .map_err(|_| ColonyError::Stopped)?;
        let answer = answer.await.map_err(|_| ColonyError::Stopped)?;
        answer.result.map_err(Into::into)
    }

    /// The peers that may hold write `write`'s shards, best first.
    async fn shard_candidates(&self, write: u128, max: usize) -> Result<Vec<PeerId>, ColonyError> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(Command::ShardHolders { write, max, reply })
            .await
            .map_err(|_| ColonyError::Stopped)?;
        answer.await.map_err(|_| ColonyError::Stopped)
    }

    /// Codes `value` `k + m` and stores its shards on distinct holders;
    /// returns the manifest to commit. On failure, drops the shards
    /// stored.
    pub(super) async fn write_shards(
        &self,
        key: &ObjectKey,
        value: &[u8],
        k: u8,
        m: u8,
    ) -> Result<CodedWrite, ColonyError> {
        let write: u128 = rand::Rng::random(&mut rand::rngs::StdRng::from_os_rng());
        let width = usize::from(k) + usize::from(m);
        let stripe_bytes = (self.values.chunk_bytes * usize::from(k)).max(1);
        let (coded, hashes) = encode_stripes(value, k, m, stripe_bytes)?;
        let candidates = self.shard_candidates(write, width + SPARE_HOLDERS).await?;
        if candidates.len() < width {
            return Err(SpaceError::Full(format!(
                "{width} shards need {width} peers offering room; {} do",
                candidates.len()
            ))
            .into());
        }
        let (first, spare) = candidates.split_at(width);
        let mut holders = first.to_vec();
        let all: Vec<usize> = (0..width).collect();
        if let Err(e) = self
            .place_columns(key, write, &coded, &all, &mut holders, spare)
            .await
        {
            self.drop_shards_at(key, write, &holders).await;
            return Err(e);
        }
        let manifest = StoredCoded {
            format: CODED_FORMAT.to_string(),
            size: value.len() as u64,
            blake3: blake3::hash(value).to_hex().to_string(),
            k,
            m,
            write: format!("{write:032x}"),
            stripe_bytes: stripe_bytes as u64,
            holders: holders.iter().map(ToString::to_string).collect(),
            shards: hashes,
        };
        Ok(CodedWrite {
            manifest: encode_manifest(key, &manifest)?,
            tag: shards_tag(write, k, m),
            write,
            holders,
        })
    }

    /// Stores the shards of columns `columns` (shard indexes) at
    /// `holders[index]`; a holder that refuses is replaced by the next of
    /// `spare` (and `holders` updated). Fails when the spares run out.
    async fn place_columns(
        &self,
        key: &ObjectKey,
        write: u128,
        coded: &[Vec<Shard>],
        columns: &[usize],
        holders: &mut [PeerId],
        spare: &[PeerId],
    ) -> Result<(), ColonyError> {
        let mut spare = spare.iter();
        let mut pending: Vec<usize> = columns.to_vec();
        while !pending.is_empty() {
            let puts: Vec<_> = pending
                .iter()
                .map(|&index| {
                    let holder = holders[index];
                    async move {
                        let placed = self.put_column(key, write, holder, coded, index).await;
                        (index, placed)
                    }
                })
                .collect();
            let results: Vec<(usize, Result<(), ColonyError>)> = futures::stream::iter(puts)
                .buffer_unordered(pending.len())
                .collect()
                .await;
            pending.clear();
            for (index, result) in results {
                let Err(e) = result else { continue };
                warn!(object = %key, holder = %holders[index], error = %e, "a shard holder refused; trying the next peer");
                self.drop_shards_at(key, write, &[holders[index]]).await;
                let Some(next) = spare.next() else {
                    return Err(e);
                };
                holders[index] = *next;
                pending.push(index);
            }
        }
        Ok(())
    }

    /// Stores shard `index` of every stripe at `holder`.
    async fn put_column(
        &self,
        key: &ObjectKey,
        write: u128,
        holder: PeerId,
        coded: &[Vec<Shard>],
        index: usize,
    ) -> Result<(), ColonyError> {
        for (stripe, shards) in coded.iter().enumerate() {
            let Some(shard) = shards.get(index) else {
                continue;
            };
            let op = SpaceOp::PutShard {
                key: key.clone(),
                id: ShardId {
                    write,
                    stripe: u32::try_from(stripe).unwrap_or(u32::MAX),
                    index: shard.index,
                },
                shard: shard.clone(),
            };
            match self.shard_request(holder, op).await? {
                SpaceReply::ShardKept => {}
                other => return Err(unexpected(other)),
            }
        }
        Ok(())
    }

    /// Asks `peers` to drop write `write`'s shards; failures are counted.
    pub(super) async fn drop_shards_at(&self, key: &ObjectKey, write: u128, peers: &[PeerId]) {
        let drops: Vec<_> = peers
            .iter()
            .map(|peer| {
                let op = SpaceOp::DropShards {
                    key: key.clone(),
                    write,
                };
                self.shard_request(*peer, op)
            })
            .collect();
        let failed = futures::stream::iter(drops)
            .buffer_unordered(peers.len().max(1))
            .filter(|r| std::future::ready(r.is_err()))
            .count()
            .await;
        if failed > 0 {
            self.values
                .cleanup_failures
                .fetch_add(failed as u64, Ordering::Relaxed);
            warn!(object = %key, failed, "shards of a replaced or refused value could not be dropped everywhere");
        }
    }

    /// Drops the shards of the coded value a write replaced, if `replaced`
    /// (its tags) says it was one: asked of the peers its shards were
    /// placed at.
    pub(super) async fn drop_replaced_shards(&self, key: &ObjectKey, replaced: &Tags) {
        let Some((write, k, m)) = replaced.get(SHARDS_TAG).and_then(parse_shards_tag) else {
            return;
        };
        let width = usize::from(k) + usize::from(m);
        match self.shard_candidates(write, width + DROP_SPREAD).await {
            Ok(peers) => self.drop_shards_at(key, write, &peers).await,
            Err(e) => warn!(object = %key, error = %e, "shards of a replaced value not dropped"),
        }
    }

    /// The value `coded` describes, stripe by stripe from any `k` intact
    /// shards.
    pub(super) async fn assemble_coded(
        &self,
        key: &ObjectKey,
        coded: &Coded,
    ) -> Result<Vec<u8>, ColonyError> {
        if coded.size > self.values.max_value_bytes {
            return Err(SpaceError::TooLarge {
                size: coded.size,
                max: self.values.max_value_bytes,
            }
            .into());
        }
        let k = usize::from(coded.k);
        let width = k + usize::from(coded.m);
        let mut value = Vec::with_capacity(usize::try_from(coded.size).unwrap_or(0));
        for (stripe, hashes) in coded.shards.iter().enumerate() {
            let mut intact: Vec<Shard> = Vec::with_capacity(k);
            let mut missing: Vec<String> = Vec::new();
            // The data shards first (decoding is then a copy), then parity
            // for each one missing.
            let mut order = 0..width;
            while intact.len() < k {
                let wanted = k - intact.len();
                let batch: Vec<usize> = order.by_ref().take(wanted).collect();
                if batch.is_empty() {
                    return Err(damaged(
                        key,
                        format!(
                            "stripe {stripe}: {} intact shards of the {k} needed ({})",
                            intact.len(),
                            missing.join("; ")
                        ),
                    ));
                }
                let fetches: Vec<_> = batch
                    .iter()
                    .map(|&index| {
                        let op = SpaceOp::GetShard {
                            key: key.clone(),
                            id: ShardId {
                                write: coded.write,
                                stripe: u32::try_from(stripe).unwrap_or(u32::MAX),
                                index: index as u8,
                            },
                        };
                        let holder = coded.holders[index];
                        async move { (index, holder, self.shard_request(holder, op).await) }
                    })
                    .collect();
                let fetched: Vec<_> = futures::stream::iter(fetches)
                    .buffer_unordered(wanted)
                    .collect()
                    .await;
                for (index, holder, result) in fetched {
                    match result {
                        Ok(SpaceReply::Shard(Some(shard)))
                            if usize::from(shard.index) == index
                                && (shard.k, shard.m) == (coded.k, coded.m)
                                && blake3::hash(&shard.bytes) == hashes[index] =>
                        {
                            intact.push(shard)
                        }
                        Ok(SpaceReply::Shard(Some(_))) => {
                            missing.push(format!("shard {index} at {holder} is damaged"))
                        }
                        Ok(SpaceReply::Shard(None)) => {
                            missing.push(format!("shard {index} is not at {holder}"))
                        }
                        Ok(other) => missing.push(format!("{holder} answered {other:?}")),
                        Err(e) => missing.push(format!("shard {index} at {holder}: {e}")),
                    }
                }
            }
            let bytes = erasure::decode(&intact)
                .map_err(|e| damaged(key, format!("stripe {stripe} does not decode: {e}")))?;
            value.extend_from_slice(&bytes);
        }
        if value.len() as u64 != coded.size || blake3::hash(&value) != coded.hash {
            return Err(damaged(key, "the whole value does not match its BLAKE3"));
        }
        Ok(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn storage_parses_replicated_and_codings_and_refuses_the_rest() {
        assert_eq!("replicated".parse(), Ok(Storage::Replicated));
        assert_eq!("4+2".parse(), Ok(Storage::Coded { k: 4, m: 2 }));
        assert_eq!("1+0".parse(), Ok(Storage::Coded { k: 1, m: 0 }));
        for bad in ["0+2", "4", "4+", "a+b", "200+100", "-1+2", ""] {
            assert!(bad.parse::<Storage>().is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn a_shards_tag_round_trips_and_a_malformed_one_names_nothing() {
        let tag = shards_tag(0xabc, 3, 2);
        assert_eq!(parse_shards_tag(&tag), Some((0xabc, 3, 2)));
        for bad in [
            "abc/3+2",
            "000000000000000000000000000000zz/3+2",
            "00000000000000000000000000000abc/3",
        ] {
            assert_eq!(parse_shards_tag(&TagValue::Text(bad.into())), None, "{bad}");
        }
        assert_eq!(parse_shards_tag(&TagValue::Int(3)), None);
        assert_eq!(stripes_of(0, 10), 1);
        assert_eq!(stripes_of(10, 10), 1);
        assert_eq!(stripes_of(11, 10), 2);
    }
}
