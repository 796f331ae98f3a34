//! Durable partitions of the object space, kept in the checkpoint store's
//! file and written by its group-committing writer thread
//! ([`crate::CheckpointStore::put_space`]).
//!
//! A partition is one meta row (opaque bytes: the driver keeps the home's
//! term, update, size and members there) and data rows keyed by
//! `(partition, row key)`. Every row carries a CRC-32 of its partition, key
//! and bytes. A partition is all or nothing: if its meta row or any of its
//! data rows fails its checksum, or data rows have no meta row, the whole
//! partition is dropped when the store is opened (counted and named by
//! [`crate::CheckpointStore::corrupt_space_partitions`]) and skipped when
//! read back. A partial replica must never rejoin a home claiming an update
//! it lacks; a missing one is simply a new member to bring up to date.

use std::ops::Bound;

use redb::{ReadableTable, Table, TableDefinition, WriteTransaction};

/// A data row's key on disk: (partition, row key).
pub(crate) type RowKey<'a> = (u16, &'a [u8]);

/// A row's value on disk: (checksum, bytes).
pub(crate) type Checked<'a> = (u32, &'a [u8]);

/// Each partition's meta row.
pub(crate) const SPACE_META: TableDefinition<u16, Checked> = TableDefinition::new("space_meta_v1");

/// Every partition's data rows.
pub(crate) const SPACE_ROWS: TableDefinition<RowKey, Checked> =
    TableDefinition::new("space_rows_v1");

/// Erasure-coded shards held for writers, by shard id (opaque bytes to the
/// store): each row stands alone, so a row that fails its checksum is
/// dropped by itself.
pub(crate) const SPACE_SHARDS: TableDefinition<&[u8], Checked> =
    TableDefinition::new("space_shards_v1");

/// Object records (opaque bytes to the store), by the object's 16-byte
/// GUID: each row stands alone, like a shard.
pub(crate) const OBJECT_RECORDS: TableDefinition<&[u8], Checked> =
    TableDefinition::new("object_records_v1");

/// A shard row read back: (id, bytes).
pub type StoredShard = (Vec<u8>, Vec<u8>);

/// An object record read back: (object GUID, bytes).
pub type StoredObject = ([u8; 16], Vec<u8>);

/// A table of rows that each stand alone under an opaque key, with a
/// checksum of key and bytes: a row failing it is dropped by itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Keyed {
    /// [`SPACE_SHARDS`].
    Shards,
    /// [`OBJECT_RECORDS`].
    Objects,
}

impl Keyed {
    /// The table's definition.
    pub(crate) fn table(self) -> TableDefinition<'static, &'static [u8], Checked<'static>> {
        match self {
            Keyed::Shards => SPACE_SHARDS,
            Keyed::Objects => OBJECT_RECORDS,
        }
    }

    /// What the checksum starts with, so that a row of one table never
    /// passes as a row of another.
    fn domain(self) -> &'static [u8] {
        match self {
            Keyed::Shards => b"space shard",
            Keyed::Objects => b"object record",
        }
    }

    /// The checksum of a row: its id and bytes.
    pub(crate) fn checksum(self, id: &[u8], bytes: &[u8]) -> u32 {
        let mut hasher = crc32fast::Hasher::new();
        hasher.update(self.domain());
        hasher.update(&(id.len() as u64).to_le_bytes());
        hasher.update(id);
        hasher.update(bytes);
        hasher.finalize()
    }

    /// Whether a stored row is intact: its id has the table's shape and
    /// the checksum matches.
    fn intact(self, id: &[u8], sum: u32, bytes: &[u8]) -> bool {
        let shaped = match self {
            Keyed::Shards => true,
            Keyed::Objects => id.len() == 16,
        };
        shaped && self.checksum(id, bytes) == sum
    }
}

/// The checksum of a shard row: its id and bytes.
#[cfg(test)]
pub(crate) fn shard_checksum(id: &[u8], bytes: &[u8]) -> u32 {
    Keyed::Shards.checksum(id, bytes)
}

/// What to write for one partition of the object space, in one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpaceWrite {
    /// The partition.
    pub partition: u16,
    /// Whether this replaces everything stored for the partition: rows not
    /// listed in `rows` are deleted. Otherwise `rows` are applied to what is
    /// stored.
    pub whole: bool,
    /// The partition's meta row (opaque to the store), replacing the
    /// stored one.
    pub meta: Vec<u8>,
    /// Rows by key: written (`Some`) or deleted (`None`).
    pub rows: Vec<(Vec<u8>, Option<Vec<u8>>)>,
}

impl SpaceWrite {
    /// Bytes of keys and values this write carries.
    pub fn bytes(&self) -> usize {
        self.meta.len()
            + self
                .rows
                .iter()
                .map(|(k, v)| k.len() + v.as_ref().map_or(0, Vec::len))
                .sum::<usize>()
    }
}

/// A partition of the object space as read back from disk: every row
/// passed its checksum.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredPartition {
    /// The partition.
    pub partition: u16,
    /// Its meta row.
    pub meta: Vec<u8>,
    /// Its data rows, by key.
    pub rows: Vec<(Vec<u8>, Vec<u8>)>,
}

/// The checksum of a partition's meta row.
pub(crate) fn meta_checksum(partition: u16, bytes: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(b"space meta");
    hasher.update(&partition.to_le_bytes());
    hasher.update(bytes);
    hasher.finalize()
}

/// The checksum of a data row: its partition, key and bytes.
pub(crate) fn row_checksum(partition: u16, key: &[u8], bytes: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(b"space row");
    hasher.update(&partition.to_le_bytes());
    hasher.update(&(key.len() as u64).to_le_bytes());
    hasher.update(key);
    hasher.update(bytes);
    hasher.finalize()
}

const NO_KEY: &[u8] = &[];

/// The range of `partition`'s data rows.
fn rows_of(partition: u16) -> (Bound<RowKey<'static>>, Bound<RowKey<'static>>) {
    let upper = match partition.checked_add(1) {
        Some(next) => Bound::Excluded((next, NO_KEY)),
        None => Bound::Unbounded,
    };
    (Bound::Included((partition, NO_KEY)), upper)
}

/// What one applied request did.
#[derive(Default)]
pub(crate) struct SpaceCounts {
    pub(crate) rows_written: u64,
    pub(crate) rows_deleted: u64,
    pub(crate) partitions_removed: u64,
    pub(crate) shards: KeyedCounts,
    pub(crate) objects: KeyedCounts,
}

/// What one applied request did to a [`Keyed`] table.
#[derive(Default)]
pub(crate) struct KeyedCounts {
    pub(crate) written: u64,
    pub(crate) removed: u64,
}

impl SpaceCounts {
    fn keyed(&mut self, keyed: Keyed) -> &mut KeyedCounts {
        match keyed {
            Keyed::Shards => &mut self.shards,
            Keyed::Objects => &mut self.objects,
        }
    }
}

/// The space tables of a write transaction.
pub(crate) struct SpaceTables<'txn> {
    meta: Table<'txn, u16, Checked<'static>>,
    rows: Table<'txn, RowKey<'static>, Checked<'static>>,
    shards: Table<'txn, &'static [u8], Checked<'static>>,
    objects: Table<'txn, &'static [u8], Checked<'static>>,
}

impl<'txn> SpaceTables<'txn> {
    /// Opens (creating) the space tables of `txn`.
    pub(crate) fn open(txn: &'txn WriteTransaction) -> Result<Self, redb::TableError> {
        Ok(SpaceTables {
            meta: txn.open_table(SPACE_META)?,
            rows: txn.open_table(SPACE_ROWS)?,
            shards: txn.open_table(Keyed::Shards.table())?,
            objects: txn.open_table(Keyed::Objects.table())?,
        })
    }

    fn keyed(&mut self, keyed: Keyed) -> &mut Table<'txn, &'static [u8], Checked<'static>> {
        match keyed {
            Keyed::Shards => &mut self.shards,
            Keyed::Objects => &mut self.objects,
        }
    }

    /// Writes one row of `keyed`, replacing any under `id`.
    pub(crate) fn put_keyed(
        &mut self,
        keyed: Keyed,
        id: &[u8],
        bytes: &[u8],
        counts: &mut SpaceCounts,
    ) -> Result<(), redb::StorageError> {
        let sum = keyed.checksum(id, bytes);
        self.keyed(keyed).insert(id, (sum, bytes))?;
        counts.keyed(keyed).written += 1;
        Ok(())
    }

    /// Deletes rows of `keyed`.
    pub(crate) fn remove_keyed<'a>(
        &mut self,
        keyed: Keyed,
        ids: impl IntoIterator<Item = &'a [u8]>,
        counts: &mut SpaceCounts,
    ) -> Result<(), redb::StorageError> {
        for id in ids {
            if self.keyed(keyed).remove(id)?.is_some() {
                counts.keyed(keyed).removed += 1;
            }
        }
        Ok(())
    }

    /// Deletes every row of `keyed` that is not intact; returns how many.
    pub(crate) fn drop_corrupt_keyed(&mut self, keyed: Keyed) -> Result<u64, redb::StorageError> {
        let mut dropped = 0;
        self.keyed(keyed).retain(|id, (sum, bytes)| {
            let ok = keyed.intact(id, sum, bytes);
            if !ok {
                dropped += 1;
            }
            ok
        })?;
        Ok(dropped)
    }

    /// Applies one write.
    pub(crate) fn write(
        &mut self,
        write: &SpaceWrite,
        counts: &mut SpaceCounts,
    ) -> Result<(), redb::StorageError> {
        let p = write.partition;
        if write.whole {
            self.rows.retain_in(rows_of(p), |_, _| {
                counts.rows_deleted += 1;
                false
            })?;
        }
        for (key, value) in &write.rows {
            match value {
                Some(bytes) => {
                    let sum = row_checksum(p, key, bytes);
                    self.rows
                        .insert((p, key.as_slice()), (sum, bytes.as_slice()))?;
                    counts.rows_written += 1;
                }
                None => {
                    if self.rows.remove((p, key.as_slice()))?.is_some() {
                        counts.rows_deleted += 1;
                    }
                }
            }
        }
        let sum = meta_checksum(p, &write.meta);
        self.meta.insert(p, (sum, write.meta.as_slice()))?;
        Ok(())
    }

    /// Deletes everything stored for `partition`.
    pub(crate) fn remove(
        &mut self,
        partition: u16,
        counts: &mut SpaceCounts,
    ) -> Result<(), redb::StorageError> {
        self.rows.retain_in(rows_of(partition), |_, _| {
            counts.rows_deleted += 1;
            false
        })?;
        if self.meta.remove(partition)?.is_some() {
            counts.partitions_removed += 1;
        }
        Ok(())
    }

    /// Deletes every partition with a row or meta row that fails its
    /// checksum, or rows but no meta row; returns them.
    pub(crate) fn drop_corrupt(&mut self) -> Result<Vec<u16>, redb::StorageError> {
        let bad = damaged_partitions(&self.meta, &self.rows)?;
        let mut counts = SpaceCounts::default();
        for partition in &bad {
            self.remove(*partition, &mut counts)?;
        }
        Ok(bad)
    }
}

/// The partitions of these tables that are not whole and intact.
fn damaged_partitions(
    meta: &impl ReadableTable<u16, Checked<'static>>,
    rows: &impl ReadableTable<RowKey<'static>, Checked<'static>>,
) -> Result<Vec<u16>, redb::StorageError> {
    let mut bad = std::collections::BTreeSet::new();
    let mut with_meta = std::collections::BTreeSet::new();
    for entry in meta.iter()? {
        let (key, value) = entry?;
        let partition = key.value();
        let (sum, bytes) = value.value();
        if meta_checksum(partition, bytes) == sum {
            with_meta.insert(partition);
        } else {
            bad.insert(partition);
        }
    }
    for entry in rows.iter()? {
        let (key, value) = entry?;
        let (partition, row) = key.value();
        let (sum, bytes) = value.value();
        if row_checksum(partition, row, bytes) != sum || !with_meta.contains(&partition) {
            bad.insert(partition);
        }
    }
    Ok(bad.into_iter().collect())
}

/// A row of a [`Keyed`] table read back: (id, bytes).
pub(crate) type KeyedRow = (Vec<u8>, Vec<u8>);

/// Every row of `keyed` that is intact, as (id, bytes), and how many were
/// not.
pub(crate) fn read_keyed(
    txn: &redb::ReadTransaction,
    keyed: Keyed,
) -> Result<(Vec<KeyedRow>, u64), redb::Error> {
    let table = txn.open_table(keyed.table())?;
    let mut out = Vec::new();
    let mut bad = 0;
    for entry in table.iter()? {
        let (id, value) = entry?;
        let (sum, bytes) = value.value();
        if keyed.intact(id.value(), sum, bytes) {
            out.push((id.value().to_vec(), bytes.to_vec()));
        } else {
            bad += 1;
        }
    }
    Ok((out, bad))
}

/// Every partition that is whole and intact, by partition, and the
/// partitions skipped because they are not.
pub(crate) fn read_all(
    txn: &redb::ReadTransaction,
) -> Result<(Vec<StoredPartition>, Vec<u16>), redb::Error> {
    let meta = txn.open_table(SPACE_META)?;
    let rows = txn.open_table(SPACE_ROWS)?;
    let bad = damaged_partitions(&meta, &rows)?;
    let mut out: Vec<StoredPartition> = Vec::new();
    for entry in meta.iter()? {
        let (key, value) = entry?;
        let partition = key.value();
        if bad.contains(&partition) {
            continue;
        }
        out.push(StoredPartition {
            partition,
            meta: value.value().1.to_vec(),
            rows: Vec::new(),
        });
    }
    for stored in &mut out {
        for entry in rows.range(rows_of(stored.partition))? {
            let (key, value) = entry?;
            let (_, row) = key.value();
            stored.rows.push((row.to_vec(), value.value().1.to_vec()));
        }
    }
    Ok((out, bad))
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::sync::mpsc;
    use std::time::Duration;

    use super::*;
    use crate::{CheckpointStore, StoreError};

    /// A fresh directory, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(name: &str) -> TempDir {
            let dir = std::env::temp_dir().join(format!(
                "colony-space-store-{name}-{}-{}",
                std::process::id(),
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos())
                    .unwrap_or(0)
            ));
            let _ = std::fs::remove_dir_all(&dir);
            TempDir(dir)
        }

        fn file(&self) -> PathBuf {
            self.0.join("checkpoints.redb")
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn row(key: &str, value: &str) -> (Vec<u8>, Option<Vec<u8>>) {
        (key.as_bytes().to_vec(), Some(value.as_bytes().to_vec()))
    }

    fn gone(key: &str) -> (Vec<u8>, Option<Vec<u8>>) {
        (key.as_bytes().to_vec(), None)
    }

    fn write(
        partition: u16,
        whole: bool,
        meta: &str,
        rows: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    ) -> SpaceWrite {
        SpaceWrite {
            partition,
            whole,
            meta: meta.as_bytes().to_vec(),
            rows,
        }
    }

    /// Queues `write` and waits until it is durable (or failed).
    fn put(store: &CheckpointStore, write: SpaceWrite) -> Result<(), StoreError> {
        let (tx, rx) = mpsc::channel();
        store
            .put_space(write, Box::new(move |r| drop(tx.send(r))))
            .map_err(|refused| refused.error)?;
        rx.recv_timeout(Duration::from_secs(30))
            .expect("a completion within 30 s")
    }

    fn remove(store: &CheckpointStore, partition: u16) {
        let (tx, rx) = mpsc::channel();
        store
            .remove_space(partition, Box::new(move |r| drop(tx.send(r))))
            .expect("queued");
        rx.recv_timeout(Duration::from_secs(30))
            .expect("a completion within 30 s")
            .expect("removed");
    }

    /// A partition as text: (partition, meta, rows).
    type Text = (u16, String, Vec<(String, String)>);

    /// The stored partitions as text.
    fn contents(store: &CheckpointStore) -> Vec<Text> {
        store
            .space_partitions()
            .expect("read back")
            .into_iter()
            .map(|p| {
                let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
                let rows = p.rows.iter().map(|(k, v)| (text(k), text(v))).collect();
                (p.partition, text(&p.meta), rows)
            })
            .collect()
    }

    fn strings(rows: &[(&str, &str)]) -> Vec<(String, String)> {
        rows.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn rows_are_upserted_deleted_and_replaced_whole() {
        let dir = TempDir::new("rows");
        let store = CheckpointStore::open(&dir.file()).unwrap();
        put(
            &store,
            write(3, true, "m1", vec![row("a", "1"), row("b", "2")]),
        )
        .unwrap();
        put(&store, write(7, true, "n1", vec![row("a", "x")])).unwrap();
        put(
            &store,
            write(
                3,
                false,
                "m2",
                vec![row("b", "3"), row("c", "4"), gone("a")],
            ),
        )
        .unwrap();
        assert_eq!(
            contents(&store),
            vec![
                (3, "m2".into(), strings(&[("b", "3"), ("c", "4")])),
                (7, "n1".into(), strings(&[("a", "x")])),
            ]
        );
        // A whole write drops every row it does not list, and no other
        // partition's.
        put(&store, write(3, true, "m3", vec![row("z", "9")])).unwrap();
        assert_eq!(
            contents(&store),
            vec![
                (3, "m3".into(), strings(&[("z", "9")])),
                (7, "n1".into(), strings(&[("a", "x")])),
            ]
        );
        let stats = store.stats();
        assert_eq!(stats.space_writes, 4);
        assert_eq!(stats.space_rows_written, 6);
        assert_eq!(stats.space_rows_deleted, 3, "a, then b and c");
    }

    #[test]
    fn partitions_survive_reopen_and_are_removed_whole() {
        let dir = TempDir::new("reopen");
        {
            let store = CheckpointStore::open(&dir.file()).unwrap();
            put(&store, write(0, true, "zero", vec![row("k", "v")])).unwrap();
            put(&store, write(u16::MAX, true, "last", vec![row("k", "w")])).unwrap();
            put(&store, write(1, true, "one", vec![row("k", "u")])).unwrap();
        }
        let store = CheckpointStore::open(&dir.file()).unwrap();
        assert!(store.corrupt_space_partitions().is_empty());
        assert_eq!(contents(&store).len(), 3);
        remove(&store, u16::MAX);
        remove(&store, 0);
        assert_eq!(
            contents(&store),
            vec![(1, "one".into(), strings(&[("k", "u")]))]
        );
        assert_eq!(store.stats().space_partitions_removed, 2);
    }

    /// Overwrites, behind the store's back, one row of the file at `path`
    /// with bytes that fail its checksum.
    fn corrupt_row(path: &std::path::Path, partition: u16, key: &[u8]) {
        let db = redb::Database::create(path).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut rows = txn.open_table(SPACE_ROWS).unwrap();
            let sum = row_checksum(partition, key, b"original");
            rows.insert((partition, key), (sum, b"flipped!".as_slice()))
                .unwrap();
        }
        txn.commit().unwrap();
    }

    fn corrupt_meta(path: &std::path::Path, partition: u16) {
        let db = redb::Database::create(path).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut meta = txn.open_table(SPACE_META).unwrap();
            meta.insert(partition, (0, b"not what was summed".as_slice()))
                .unwrap();
        }
        txn.commit().unwrap();
    }

    #[test]
    fn a_partition_with_one_bad_row_or_meta_is_dropped_whole_and_named() {
        let dir = TempDir::new("corrupt");
        {
            let store = CheckpointStore::open(&dir.file()).unwrap();
            put(
                &store,
                write(2, true, "two", vec![row("a", "1"), row("b", "2")]),
            )
            .unwrap();
            put(&store, write(5, true, "five", vec![row("a", "1")])).unwrap();
            put(&store, write(9, true, "nine", vec![row("a", "1")])).unwrap();
        }
        corrupt_row(&dir.file(), 2, b"b");
        corrupt_meta(&dir.file(), 9);
        {
            // Read back before the store drops them: skipped, never partial.
            let db = redb::Database::create(dir.file()).unwrap();
            let txn = redb::ReadableDatabase::begin_read(&db).unwrap();
            let (intact, bad) = read_all(&txn).unwrap();
            assert_eq!(bad, vec![2, 9]);
            assert_eq!(
                intact.iter().map(|p| p.partition).collect::<Vec<_>>(),
                vec![5]
            );
        }
        let store = CheckpointStore::open(&dir.file()).unwrap();
        assert_eq!(store.corrupt_space_partitions(), &[2, 9]);
        assert_eq!(store.stats().space_partitions_corrupt, 2);
        assert_eq!(
            contents(&store),
            vec![(5, "five".into(), strings(&[("a", "1")]))]
        );
        // Dropped from the file, not only skipped: the next open is clean.
        drop(store);
        let store = CheckpointStore::open(&dir.file()).unwrap();
        assert!(store.corrupt_space_partitions().is_empty());
        assert_eq!(contents(&store).len(), 1);
    }

    /// Waits for a queued request's completion.
    fn completed(
        queue: impl FnOnce(crate::Done) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let (tx, rx) = mpsc::channel();
        queue(Box::new(move |r| drop(tx.send(r))))?;
        rx.recv_timeout(Duration::from_secs(30))
            .expect("a completion within 30 s")
    }

    #[test]
    fn shards_survive_reopen_are_removed_and_a_damaged_one_is_dropped_alone() {
        let dir = TempDir::new("shards");
        {
            let store = CheckpointStore::open(&dir.file()).unwrap();
            for (id, bytes) in [(b"s1", b"one"), (b"s2", b"two"), (b"s3", b"tri")] {
                completed(|done| store.put_shard(id.to_vec(), bytes.to_vec(), done)).unwrap();
            }
            completed(|done| store.remove_shards(vec![b"s3".to_vec()], done)).unwrap();
            assert_eq!(store.stats().shards_written, 3);
            assert_eq!(store.stats().shards_removed, 1);
        }
        {
            let db = redb::Database::create(dir.file()).unwrap();
            let txn = db.begin_write().unwrap();
            {
                let mut shards = txn.open_table(SPACE_SHARDS).unwrap();
                let sum = shard_checksum(b"s2", b"two");
                shards
                    .insert(b"s2".as_slice(), (sum, b"TWO".as_slice()))
                    .unwrap();
            }
            txn.commit().unwrap();
        }
        let store = CheckpointStore::open(&dir.file()).unwrap();
        assert_eq!(store.stats().shards_corrupt, 1);
        assert_eq!(
            store.shards().unwrap(),
            vec![(b"s1".to_vec(), b"one".to_vec())]
        );
    }

    #[test]
    fn object_records_survive_reopen_are_replaced_removed_and_a_damaged_one_is_dropped_alone() {
        let dir = TempDir::new("objects");
        let (a, b, c) = ([1u8; 16], [2u8; 16], [3u8; 16]);
        {
            let store = CheckpointStore::open(&dir.file()).unwrap();
            for (id, bytes) in [(a, b"one"), (b, b"two"), (c, b"tri")] {
                completed(|done| store.put_object(id, bytes.to_vec(), done)).unwrap();
            }
            completed(|done| store.put_object(a, b"ONE!".to_vec(), done)).unwrap();
            completed(|done| store.remove_object(c, done)).unwrap();
            completed(|done| store.remove_object([9; 16], done)).unwrap();
            assert_eq!(store.stats().objects_written, 4);
            assert_eq!(store.stats().objects_removed, 1);
            assert_eq!(store.stats().shards_written, 0);
            assert_eq!(
                store.objects().unwrap(),
                vec![(a, b"ONE!".to_vec()), (b, b"two".to_vec())]
            );
        }
        {
            // Reopened: everything committed is there.
            let store = CheckpointStore::open(&dir.file()).unwrap();
            assert_eq!(store.stats().objects_corrupt, 0);
            assert_eq!(
                store.objects().unwrap(),
                vec![(a, b"ONE!".to_vec()), (b, b"two".to_vec())]
            );
            // A shard under the same bytes is another table.
            assert!(store.shards().unwrap().is_empty());
        }
        {
            let db = redb::Database::create(dir.file()).unwrap();
            let txn = db.begin_write().unwrap();
            {
                let mut objects = txn.open_table(OBJECT_RECORDS).unwrap();
                let sum = Keyed::Objects.checksum(&b, b"two");
                objects
                    .insert(b.as_slice(), (sum, b"TWO".as_slice()))
                    .unwrap();
                // A shard's checksum does not pass for an object record.
                let sum = shard_checksum(&c, b"tri");
                objects
                    .insert(c.as_slice(), (sum, b"tri".as_slice()))
                    .unwrap();
            }
            txn.commit().unwrap();
        }
        let store = CheckpointStore::open(&dir.file()).unwrap();
        assert_eq!(store.stats().objects_corrupt, 2);
        assert_eq!(store.stats().shards_corrupt, 0);
        assert_eq!(store.objects().unwrap(), vec![(a, b"ONE!".to_vec())]);
        assert_eq!(store.stats().objects_corrupt, 2);
    }

    #[test]
    fn rows_without_a_meta_row_are_dropped() {
        let dir = TempDir::new("orphan");
        {
            let store = CheckpointStore::open(&dir.file()).unwrap();
            put(&store, write(4, true, "four", vec![row("a", "1")])).unwrap();
        }
        {
            let db = redb::Database::create(dir.file()).unwrap();
            let txn = db.begin_write().unwrap();
            txn.open_table(SPACE_META).unwrap().remove(4).unwrap();
            txn.commit().unwrap();
        }
        let store = CheckpointStore::open(&dir.file()).unwrap();
        assert_eq!(store.corrupt_space_partitions(), &[4]);
        assert!(contents(&store).is_empty());
    }

    #[test]
    fn pieces_and_partitions_share_the_writer_and_file() {
        let dir = TempDir::new("shared");
        let store = CheckpointStore::open(&dir.file()).unwrap();
        let (tx, rx) = mpsc::channel();
        let key = crate::PieceKey {
            job: [1; 16],
            unit: 1,
            holder_index: 0,
        };
        let piece = crate::StoredPiece {
            epoch: 1,
            version: 1,
            bytes: b"piece".to_vec(),
        };
        let done = |tx: &mpsc::Sender<Result<(), StoreError>>| {
            let tx = tx.clone();
            Box::new(move |r| drop(tx.send(r))) as crate::Done
        };
        store.put(key, piece.clone(), done(&tx)).unwrap();
        store
            .put_space(write(1, true, "m", vec![row("a", "1")]), done(&tx))
            .map_err(|r| r.error)
            .unwrap();
        for _ in 0..2 {
            rx.recv_timeout(Duration::from_secs(30)).unwrap().unwrap();
        }
        assert_eq!(store.get(&key).unwrap(), Some(piece));
        assert_eq!(contents(&store).len(), 1);
        // Removing a job leaves the partitions alone, and the other way.
        store.remove_job([1; 16], done(&tx)).unwrap();
        rx.recv_timeout(Duration::from_secs(30)).unwrap().unwrap();
        assert_eq!(contents(&store).len(), 1);
    }
}
