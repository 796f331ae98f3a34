//! Checkpoint pieces a peer holds for the primaries of replicated states.
//!
//! A primary that checkpoints part of its state (a job's unit today; an
//! object's state or a cell tomorrow) stores it on other peers as *pieces*:
//! whole copies, erasure-coded shards, or the copy its maker keeps on its
//! own disk. A holder keeps them in a [`PieceStore`], keyed by the *owner*
//! (the key of the replicated state, e.g. a job id) and an *item* within it
//! (e.g. a unit id). It keeps the newest few checkpoints of each item and
//! the one the owner's record points to, so that checkpoint stays
//! decodable while its successors are being stored; it remembers when each
//! owner's pieces were last used, so pieces of a forgotten owner can be
//! dropped; and it tracks durable writes in flight, to answer the primary
//! once a piece is on disk. No IO: writing and deleting on disk is the
//! caller's (see [`crate::job::JobOutput::Persist`]).

use std::collections::BTreeMap;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::erasure::Shard;

/// Checkpoints of an item a holder keeps (besides the one the owner's
/// record points to).
pub const KEPT_CHECKPOINTS: usize = 3;

/// One piece of an item's checkpoint.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Piece {
    /// The epoch (incarnation) of the maker of the checkpoint.
    pub epoch: u64,
    /// The version of the checkpoint within its epoch (for jobs, the report
    /// that carried it).
    pub version: u64,
    /// Which piece.
    pub index: u8,
    /// The data.
    pub data: PieceData,
}

/// The data of a piece.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PieceData {
    /// A whole copy of the state.
    Copy(#[serde(with = "serde_bytes")] Vec<u8>),
    /// One erasure-coded shard.
    Shard(Shard),
    /// The maker's own copy on its disk, serialised (for jobs, a
    /// [`crate::job::LocalUnit`]).
    Local(#[serde(with = "serde_bytes")] Vec<u8>),
}

/// A piece pushed out of a [`PieceStore`], for its copy on disk to be
/// deleted: (epoch, version, index).
pub type Evicted = (u64, u64, u8);

/// Pieces held for primaries, per owner `K` (the replicated state's key)
/// and item (a `u64` within it); `P` names who asked for a durable write,
/// to be answered once it is on disk.
pub struct PieceStore<K, P> {
    pieces: BTreeMap<(K, u64), Vec<Piece>>,
    /// Per item, the checkpoint its owner's record points to, as the primary
    /// last said: never dropped for newer ones.
    kept: BTreeMap<(K, u64), (u64, u64)>,
    /// When each owner's pieces were last stored or asked for.
    touched: BTreeMap<K, Instant>,
    /// Durable writes in flight, by (owner, item, index, epoch, version):
    /// who to answer once on disk.
    persisting: BTreeMap<(K, u64, u8, u64, u64), P>,
}

impl<K, P> Default for PieceStore<K, P> {
    fn default() -> Self {
        PieceStore {
            pieces: BTreeMap::new(),
            kept: BTreeMap::new(),
            touched: BTreeMap::new(),
            persisting: BTreeMap::new(),
        }
    }
}

impl<K: Ord + Copy, P> PieceStore<K, P> {
    /// Keeps `piece` of `item`'s checkpoints; returns the pieces pushed out
    /// (beyond the newest [`KEPT_CHECKPOINTS`] checkpoints and the one the
    /// record points to), for their copies on disk to be deleted.
    #[must_use]
    pub fn put(&mut self, owner: K, item: u64, piece: Piece) -> Vec<Evicted> {
        let list = self.pieces.entry((owner, item)).or_default();
        if list
            .iter()
            .any(|p| p.epoch == piece.epoch && p.version == piece.version && p.index == piece.index)
        {
            return Vec::new();
        }
        list.push(piece);
        // Keep the pieces of the newest checkpoints.
        let mut groups: Vec<(u64, u64)> = Vec::new();
        for p in list.iter().rev() {
            if !groups.contains(&(p.epoch, p.version)) {
                groups.push((p.epoch, p.version));
            }
        }
        groups.truncate(KEPT_CHECKPOINTS);
        let kept = self.kept.get(&(owner, item));
        let mut evicted = Vec::new();
        list.retain(|p| {
            let keep =
                groups.contains(&(p.epoch, p.version)) || kept == Some(&(p.epoch, p.version));
            if !keep {
                evicted.push((p.epoch, p.version, p.index));
            }
            keep
        });
        evicted
    }

    /// Remembers which of `item`'s checkpoints (epoch, version) its owner's
    /// record points to.
    pub fn keep(&mut self, owner: K, item: u64, checkpoint: Option<(u64, u64)>) {
        if let Some(checkpoint) = checkpoint {
            self.kept.insert((owner, item), checkpoint);
        }
    }

    /// The pieces of `item` held here.
    pub fn get(&self, owner: K, item: u64) -> Vec<Piece> {
        self.pieces.get(&(owner, item)).cloned().unwrap_or_default()
    }

    /// Notes that `owner`'s pieces were used at `now`.
    pub fn touch(&mut self, owner: K, now: Instant) {
        self.touched.insert(owner, now);
    }

    /// Owners whose pieces nobody stored or asked for since `before`.
    pub fn quiet_since(&self, before: Instant) -> Vec<K> {
        self.touched
            .iter()
            .filter(|(_, t)| **t < before)
            .map(|(owner, _)| *owner)
            .collect()
    }

    /// When each owner's pieces were last stored or asked for.
    pub fn last_touched(&self) -> impl Iterator<Item = (K, Instant)> + '_ {
        self.touched.iter().map(|(owner, at)| (*owner, *at))
    }

    /// Drops everything held for `owner`.
    pub fn forget(&mut self, owner: K) {
        self.touched.remove(&owner);
        self.pieces.retain(|(o, _), _| *o != owner);
        self.kept.retain(|(o, _), _| *o != owner);
        self.persisting.retain(|(o, ..), _| *o != owner);
    }

    /// Notes that `piece` of `item` is being written to disk, for
    /// `reply_to`.
    pub fn persisting(&mut self, owner: K, item: u64, piece: &Piece, reply_to: P) {
        let key = (owner, item, piece.index, piece.epoch, piece.version);
        self.persisting.insert(key, reply_to);
    }

    /// A piece is on disk: who asked for it, if anyone still waits.
    pub fn persisted(
        &mut self,
        owner: K,
        item: u64,
        index: u8,
        epoch: u64,
        version: u64,
    ) -> Option<P> {
        self.persisting
            .remove(&(owner, item, index, epoch, version))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn copy(epoch: u64, version: u64) -> Piece {
        Piece {
            epoch,
            version,
            index: 0,
            data: PieceData::Copy(vec![version as u8]),
        }
    }

    #[test]
    fn keeps_the_newest_checkpoints_and_the_one_the_record_points_to() {
        let mut store: PieceStore<u32, ()> = PieceStore::default();
        store.keep(7, 1, Some((1, 1)));
        let mut evicted = Vec::new();
        for version in 1..=6 {
            evicted.extend(store.put(7, 1, copy(1, version)));
        }
        let held: Vec<u64> = store.get(7, 1).iter().map(|p| p.version).collect();
        assert_eq!(held, vec![1, 4, 5, 6]);
        assert_eq!(evicted, vec![(1, 2, 0), (1, 3, 0)]);
        // A piece stored twice is kept once.
        assert!(store.put(7, 1, copy(1, 6)).is_empty());
        assert_eq!(store.get(7, 1).len(), 4);
        // Other owners and items are apart.
        assert!(store.get(7, 2).is_empty());
        assert!(store.get(8, 1).is_empty());
    }

    #[test]
    fn forgets_an_owner_with_its_writes_in_flight() {
        let mut store: PieceStore<u32, &str> = PieceStore::default();
        let t0 = Instant::now();
        let piece = copy(2, 3);
        let _ = store.put(1, 5, piece.clone());
        let _ = store.put(2, 5, piece.clone());
        store.touch(1, t0);
        store.touch(2, t0 + Duration::from_secs(10));
        store.persisting(1, 5, &piece, "a");
        store.persisting(2, 5, &piece, "b");
        assert_eq!(store.quiet_since(t0 + Duration::from_secs(5)), vec![1]);
        store.forget(1);
        assert!(store.get(1, 5).is_empty());
        assert_eq!(store.persisted(1, 5, 0, 2, 3), None);
        assert_eq!(store.persisted(2, 5, 0, 2, 3), Some("b"));
        assert_eq!(store.persisted(2, 5, 0, 2, 3), None);
        assert_eq!(store.get(2, 5), vec![piece]);
        assert!(store.quiet_since(t0 + Duration::from_secs(5)).is_empty());
    }
}
