//! The erasure-coded shards a peer holds for values written with erasure
//! coding (see `colony`'s `space` module for how values are coded and
//! placed). A shard is kept on the peer the writer chose, not at the
//! object's home: the home keeps only the small manifest that names the
//! holders, so a value costs `(k + m) / k` times its size instead of one
//! copy per home member. No IO: the space core asks for the disk writes.

use std::collections::{BTreeMap, BTreeSet};

use super::{ObjectKey, Shard, ShardId};

/// Most shards one peer holds (besides the byte bound of its room in the
/// space).
pub const MAX_HELD_SHARDS: usize = 1 << 20;

/// The shards held here, by id, with the object each belongs to.
#[derive(Default)]
pub struct ShardStore {
    shards: BTreeMap<ShardId, (ObjectKey, Shard)>,
    bytes: u64,
}

/// The shards held for one write of one object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeldWrite {
    /// The object.
    pub key: ObjectKey,
    /// The write.
    pub write: u128,
    /// The shard indexes held (of any stripe).
    pub indexes: BTreeSet<u8>,
    /// Shards held.
    pub shards: usize,
}

/// Bytes a held shard is counted for.
fn shard_bytes(shard: &Shard) -> u64 {
    shard.bytes.len() as u64 + 64
}

impl ShardStore {
    /// Bytes held.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Shards held.
    pub fn len(&self) -> usize {
        self.shards.len()
    }

    /// Whether none is held.
    pub fn is_empty(&self) -> bool {
        self.shards.is_empty()
    }

    /// The shard `id` of `key`, if held.
    pub fn get(&self, key: &ObjectKey, id: &ShardId) -> Option<&Shard> {
        self.shards
            .get(id)
            .filter(|(of, _)| of == key)
            .map(|(_, shard)| shard)
    }

    /// Whether `shard` may be kept as `id` of `key`: `Ok(true)` if it is
    /// new, `Ok(false)` if the same shard is held already, `Err` if another
    /// one is held under that id.
    pub fn check(&self, key: &ObjectKey, id: &ShardId, shard: &Shard) -> Result<bool, String> {
        match self.shards.get(id) {
            None => Ok(true),
            Some((of, held)) if of == key && held == shard => Ok(false),
            Some(_) => Err(format!(
                "shard {} of stripe {} of write {:032x} is held with other contents",
                id.index, id.stripe, id.write
            )),
        }
    }

    /// Keeps `shard` as `id` of `key`; bytes a new shard adds.
    pub fn insert(&mut self, key: ObjectKey, id: ShardId, shard: Shard) -> u64 {
        let added = shard_bytes(&shard);
        if let Some((_, old)) = self.shards.insert(id, (key, shard)) {
            self.bytes = self.bytes.saturating_sub(shard_bytes(&old));
        }
        self.bytes += added;
        added
    }

    /// Forgets every shard of `key`'s write `write`; returns their ids.
    pub fn drop_write(&mut self, key: &ObjectKey, write: u128) -> Vec<ShardId> {
        let first = ShardId {
            write,
            stripe: 0,
            index: 0,
        };
        let ids: Vec<ShardId> = self
            .shards
            .range(first..)
            .take_while(|(id, _)| id.write == write)
            .filter(|(_, (of, _))| of == key)
            .map(|(id, _)| *id)
            .collect();
        for id in &ids {
            if let Some((_, shard)) = self.shards.remove(id) {
                self.bytes = self.bytes.saturating_sub(shard_bytes(&shard));
            }
        }
        ids
    }

    /// The writes shards are held for, in write order, starting after
    /// `after` (a cursor: the last write of the previous page), at most
    /// `max` of them.
    pub fn writes(&self, after: Option<u128>, max: usize) -> Vec<HeldWrite> {
        let start = after.map_or(0, |w| w.saturating_add(1));
        let mut out: Vec<HeldWrite> = Vec::new();
        if after == Some(u128::MAX) {
            return out;
        }
        let from = ShardId {
            write: start,
            stripe: 0,
            index: 0,
        };
        for (id, (key, _)) in self.shards.range(from..) {
            match out.last_mut() {
                Some(last) if last.write == id.write && last.key == *key => {
                    last.indexes.insert(id.index);
                    last.shards += 1;
                }
                _ => {
                    if out.len() == max {
                        break;
                    }
                    out.push(HeldWrite {
                        key: key.clone(),
                        write: id.write,
                        indexes: BTreeSet::from([id.index]),
                        shards: 1,
                    });
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::erasure;
    use crate::space::GLOBAL;

    fn shards_of(value: &[u8]) -> Vec<Shard> {
        erasure::encode(value, 2, 1).unwrap_or_default()
    }

    fn id(write: u128, stripe: u32, index: u8) -> ShardId {
        ShardId {
            write,
            stripe,
            index,
        }
    }

    #[test]
    fn keeps_counts_and_drops_the_shards_of_one_write() {
        let mut store = ShardStore::default();
        let a = ObjectKey::new(GLOBAL, "a");
        let b = ObjectKey::new(GLOBAL, "b");
        let shards = shards_of(b"0123456789");
        for stripe in 0..2 {
            for shard in &shards {
                let sid = id(7, stripe, shard.index);
                assert_eq!(store.check(&a, &sid, shard), Ok(true));
                store.insert(a.clone(), sid, shard.clone());
            }
        }
        store.insert(b.clone(), id(9, 0, 0), shards[0].clone());
        assert_eq!(store.len(), 7);
        let per_shard = shards[0].bytes.len() as u64 + 64;
        assert_eq!(store.bytes(), 7 * per_shard);
        // The same shard again is no change; another under its id is
        // refused.
        assert_eq!(store.check(&a, &id(7, 0, 0), &shards[0]), Ok(false));
        assert!(store.check(&a, &id(7, 0, 0), &shards[1]).is_err());
        assert!(store.check(&b, &id(7, 0, 0), &shards[0]).is_err());
        assert_eq!(store.get(&a, &id(7, 1, 2)), Some(&shards[2]));
        assert_eq!(store.get(&b, &id(7, 1, 2)), None);
        let writes = store.writes(None, 10);
        assert_eq!(writes.len(), 2);
        assert_eq!(writes[0].write, 7);
        assert_eq!(writes[0].indexes, BTreeSet::from([0, 1, 2]));
        assert_eq!(writes[0].shards, 6);
        assert_eq!(store.writes(Some(7), 10)[0].write, 9);
        assert_eq!(store.writes(None, 1).len(), 1);
        // Another object's name drops nothing.
        assert!(store.drop_write(&b, 7).is_empty());
        assert_eq!(store.drop_write(&a, 7).len(), 6);
        assert_eq!(store.len(), 1);
        assert_eq!(store.bytes(), per_shard);
        assert!(store.writes(Some(u128::MAX), 10).is_empty());
    }
}
