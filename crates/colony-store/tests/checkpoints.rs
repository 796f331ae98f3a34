//! The checkpoint store on a real disk: round trips, restarts, newer-wins,
//! group commit under concurrent writers, job removal, backpressure and
//! exclusive opening.

use std::path::PathBuf;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use colony_store::{
    CheckpointStore, CheckpointStoreConfig, Done, PieceKey, StoreError, StoredPiece,
};

/// A fresh directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!(
            "colony-checkpoints-{name}-{}-{}",
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

fn key(job: u8, unit: u64, holder_index: u8) -> PieceKey {
    PieceKey {
        job: [job; 16],
        unit,
        holder_index,
    }
}

fn piece(epoch: u64, version: u64, fill: u8, len: usize) -> StoredPiece {
    StoredPiece {
        epoch,
        version,
        bytes: vec![fill; len],
    }
}

/// A callback that reports its outcome on `tx`, tagged with `tag`.
fn report(tx: &mpsc::Sender<(u64, Result<(), StoreError>)>, tag: u64) -> Done {
    let tx = tx.clone();
    Box::new(move |result| {
        let _ = tx.send((tag, result));
    })
}

/// Waits for `n` outcomes and checks they are all Ok.
fn wait_ok(rx: &mpsc::Receiver<(u64, Result<(), StoreError>)>, n: usize) {
    for _ in 0..n {
        let (tag, result) = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("a completion within 30 s");
        if let Err(e) = result {
            panic!("request {tag} failed: {e}");
        }
    }
}

/// Puts and waits until it is durable.
fn put_sync(store: &CheckpointStore, key: PieceKey, piece: StoredPiece) {
    let (tx, rx) = mpsc::channel();
    store.put(key, piece, report(&tx, 0)).unwrap();
    wait_ok(&rx, 1);
}

#[test]
fn put_then_get_and_all() {
    let dir = TempDir::new("roundtrip");
    let store = CheckpointStore::open(&dir.file()).unwrap();
    assert_eq!(store.get(&key(1, 0, 0)).unwrap(), None);
    assert!(store.all().unwrap().is_empty());

    put_sync(&store, key(1, 7, 2), piece(1, 3, 0xAB, 1000));
    put_sync(&store, key(1, 7, 0), piece(1, 3, 0xCD, 10));
    put_sync(&store, key(0, 9, 0), piece(2, 1, 0xEF, 0));

    assert_eq!(
        store.get(&key(1, 7, 2)).unwrap(),
        Some(piece(1, 3, 0xAB, 1000))
    );
    let all = store.all().unwrap();
    let keys: Vec<PieceKey> = all.iter().map(|(k, _)| *k).collect();
    assert_eq!(keys, vec![key(0, 9, 0), key(1, 7, 0), key(1, 7, 2)]);
    assert_eq!(all[0].1, piece(2, 1, 0xEF, 0));
    let stats = store.stats();
    assert_eq!(stats.pieces_written, 3);
    assert_eq!(stats.requests, 3);
    assert!(stats.batches >= 1 && stats.batches <= 3);
}

#[test]
fn pieces_survive_reopen_and_drop_flushes_the_queue() {
    let dir = TempDir::new("reopen");
    let (tx, rx) = mpsc::channel();
    {
        let store = CheckpointStore::open(&dir.file()).unwrap();
        for unit in 0..200 {
            store
                .put(
                    key(3, unit, 1),
                    piece(1, unit, unit as u8, 64),
                    report(&tx, unit),
                )
                .unwrap();
        }
        // Dropped at once: the writer must still commit all 200.
    }
    // Every callback already ran, during the drop.
    let mut done: Vec<u64> = rx
        .try_iter()
        .map(|(tag, r)| {
            r.unwrap();
            tag
        })
        .collect();
    done.sort_unstable();
    assert_eq!(done, (0..200).collect::<Vec<_>>());

    let store = CheckpointStore::open(&dir.file()).unwrap();
    let all = store.all().unwrap();
    assert_eq!(all.len(), 200);
    for (unit, (k, p)) in (0u64..).zip(&all) {
        assert_eq!(*k, key(3, unit, 1));
        assert_eq!(*p, piece(1, unit, unit as u8, 64));
    }
}

#[test]
fn only_newer_pieces_replace_stored_ones() {
    let dir = TempDir::new("newer");
    let store = CheckpointStore::open(&dir.file()).unwrap();
    let k = key(5, 1, 0);
    put_sync(&store, k, piece(2, 5, 1, 8));
    // Older version, older epoch with a higher version, and a duplicate:
    // all ignored.
    put_sync(&store, k, piece(2, 4, 2, 8));
    put_sync(&store, k, piece(1, 99, 3, 8));
    put_sync(&store, k, piece(2, 5, 4, 8));
    assert_eq!(store.get(&k).unwrap(), Some(piece(2, 5, 1, 8)));
    // Newer version, then a newer epoch with a lower version.
    put_sync(&store, k, piece(2, 6, 5, 8));
    assert_eq!(store.get(&k).unwrap(), Some(piece(2, 6, 5, 8)));
    put_sync(&store, k, piece(3, 0, 6, 8));
    assert_eq!(store.get(&k).unwrap(), Some(piece(3, 0, 6, 8)));

    // Out of order inside one batch: the newest wins whatever the order.
    let (tx, rx) = mpsc::channel();
    let k2 = key(5, 2, 0);
    for (i, version) in [7u64, 9, 8, 9, 1].into_iter().enumerate() {
        store
            .put(
                k2,
                piece(1, version, version as u8, 4),
                report(&tx, i as u64),
            )
            .unwrap();
    }
    wait_ok(&rx, 5);
    assert_eq!(store.get(&k2).unwrap(), Some(piece(1, 9, 9, 4)));
    let stats = store.stats();
    assert_eq!(stats.pieces_written, 3 + 2);
    assert_eq!(stats.pieces_stale, 3 + 3);
}

#[test]
fn concurrent_puts_are_group_committed() {
    const THREADS: u64 = 4;
    const PER_THREAD: u64 = 250;
    let dir = TempDir::new("group");
    let store = CheckpointStore::open(&dir.file()).unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::scope(|s| {
        for t in 0..THREADS {
            let store = &store;
            let tx = tx.clone();
            s.spawn(move || {
                for unit in 0..PER_THREAD {
                    let tag = t * PER_THREAD + unit;
                    store
                        .put(
                            key(t as u8, unit, 0),
                            piece(1, 1, t as u8, 512),
                            report(&tx, tag),
                        )
                        .unwrap();
                }
            });
        }
    });
    let pieces = (THREADS * PER_THREAD) as usize;
    wait_ok(&rx, pieces);
    let stats = store.stats();
    assert_eq!(stats.pieces_written, pieces as u64);
    assert_eq!(stats.requests, pieces as u64);
    // One transaction per put would make `batches` 1000.
    assert!(
        stats.batches * 4 < pieces as u64,
        "no group commit: {stats:?}"
    );
    assert!(stats.largest_batch >= 4, "{stats:?}");
    assert_eq!(store.all().unwrap().len(), pieces);
}

#[test]
fn remove_job_deletes_exactly_that_job() {
    let dir = TempDir::new("remove");
    let store = CheckpointStore::open(&dir.file()).unwrap();
    let (tx, rx) = mpsc::channel();
    for job in [1u8, 2, 3] {
        for unit in [0, 1, u64::MAX] {
            for holder in [0u8, 5, u8::MAX] {
                store
                    .put(key(job, unit, holder), piece(1, 1, job, 16), report(&tx, 0))
                    .unwrap();
            }
        }
    }
    store.remove_job([2; 16], report(&tx, 1)).unwrap();
    wait_ok(&rx, 28);
    let all = store.all().unwrap();
    assert_eq!(all.len(), 18);
    assert!(all.iter().all(|(k, _)| k.job != [2; 16]));
    assert_eq!(store.stats().pieces_removed, 9);

    // A put queued after the removal lands after it.
    store
        .put(key(2, 4, 0), piece(1, 1, 2, 16), report(&tx, 2))
        .unwrap();
    wait_ok(&rx, 1);
    assert_eq!(store.get(&key(2, 4, 0)).unwrap(), Some(piece(1, 1, 2, 16)));

    // Removing an unknown job is fine.
    store.remove_job([9; 16], report(&tx, 3)).unwrap();
    wait_ok(&rx, 1);
    assert_eq!(store.all().unwrap().len(), 19);
}

#[test]
fn a_full_queue_reports_backpressure_at_once() {
    let dir = TempDir::new("backpressure");
    let config = CheckpointStoreConfig {
        queue_capacity: 1,
        ..CheckpointStoreConfig::default()
    };
    let store = CheckpointStore::open_with(&dir.file(), config).unwrap();
    // The first put's callback holds the writer until released.
    let (entered_tx, entered_rx) = mpsc::channel::<()>();
    let (release_tx, release_rx) = mpsc::channel::<()>();
    store
        .put(
            key(1, 0, 0),
            piece(1, 1, 0, 8),
            Box::new(move |result| {
                result.unwrap();
                let _ = entered_tx.send(());
                let _ = release_rx.recv();
            }),
        )
        .unwrap();
    entered_rx.recv_timeout(Duration::from_secs(30)).unwrap();
    let (tx, rx) = mpsc::channel();
    // One slot in the queue, then it is full.
    store
        .put(key(1, 1, 0), piece(1, 1, 0, 8), report(&tx, 1))
        .unwrap();
    let started = Instant::now();
    match store.put(key(1, 2, 0), piece(1, 1, 0, 8), report(&tx, 2)) {
        Err(StoreError::Backpressure { capacity: 1 }) => {}
        other => panic!("expected Backpressure, got {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(1));
    release_tx.send(()).unwrap();
    wait_ok(&rx, 1);
    // The refused request's callback is never called.
    assert!(rx.recv_timeout(Duration::from_millis(200)).is_err());
    assert_eq!(store.get(&key(1, 2, 0)).unwrap(), None);
    assert_eq!(store.all().unwrap().len(), 2);
}

#[test]
fn a_panicking_callback_does_not_stop_the_writer() {
    let dir = TempDir::new("panic");
    let store = CheckpointStore::open(&dir.file()).unwrap();
    store
        .put(
            key(1, 0, 0),
            piece(1, 1, 0, 8),
            Box::new(|_| panic!("callback panics (expected in this test)")),
        )
        .unwrap();
    put_sync(&store, key(1, 1, 0), piece(1, 1, 0, 8));
    assert_eq!(store.all().unwrap().len(), 2);
}

#[test]
fn a_second_open_of_the_same_file_is_a_clear_error() {
    let dir = TempDir::new("inuse");
    let first = CheckpointStore::open(&dir.file()).unwrap();
    match CheckpointStore::open(&dir.file()) {
        Err(StoreError::FileInUse { path }) => assert_eq!(path, dir.file()),
        other => panic!("expected FileInUse, got {other:?}"),
    }
    drop(first);
    // Released on drop.
    let again = CheckpointStore::open(&dir.file()).unwrap();
    assert!(again.all().unwrap().is_empty());
}

/// Puts/s with group commit against one transaction (one fsync) per put, in
/// the same run, for two loads: a burst (4 threads queue 250 puts each
/// without waiting) and a closed loop (8 threads, each waiting for its put to
/// be durable before the next, like units with one checkpoint in flight):
/// `cargo test -p colony-store --release --test checkpoints -- --ignored
/// --nocapture group_commit_throughput`.
#[test]
#[ignore]
fn group_commit_throughput() {
    const PIECE_BYTES: usize = 4096;
    let run = |name: &str, threads: u64, per_thread: u64, wait_each: bool, per_put: bool| {
        let dir = TempDir::new(&name.replace([' ', ','], "-"));
        let config = CheckpointStoreConfig {
            max_batch_requests: if per_put { 1 } else { 4096 },
            ..CheckpointStoreConfig::default()
        };
        let store = CheckpointStore::open_with(&dir.file(), config).unwrap();
        let (tx, rx) = mpsc::channel();
        let started = Instant::now();
        std::thread::scope(|s| {
            for t in 0..threads {
                let store = &store;
                let tx = tx.clone();
                s.spawn(move || {
                    let (own_tx, own_rx) = mpsc::channel();
                    for unit in 0..per_thread {
                        let k = key(t as u8, unit, 0);
                        let p = piece(1, 1, t as u8, PIECE_BYTES);
                        if wait_each {
                            store.put(k, p, report(&own_tx, unit)).unwrap();
                            wait_ok(&own_rx, 1);
                            tx.send((unit, Ok(()))).unwrap();
                        } else {
                            store.put(k, p, report(&tx, unit)).unwrap();
                        }
                    }
                });
            }
        });
        let pieces = (threads * per_thread) as usize;
        wait_ok(&rx, pieces);
        let elapsed = started.elapsed();
        let stats = store.stats();
        let rate = pieces as f64 / elapsed.as_secs_f64();
        println!(
            "{name}: {pieces} puts of {PIECE_BYTES} B from {threads} threads in {elapsed:.2?} = {rate:.0} puts/s; {} transactions, largest {}",
            stats.batches, stats.largest_batch
        );
        rate
    };
    let grouped = run("burst, group commit", 4, 250, false, false);
    let single = run("burst, txn per put", 4, 250, false, true);
    println!(
        "burst: group commit / txn per put = {:.1}x",
        grouped / single
    );
    let grouped = run("closed loop, group commit", 8, 50, true, false);
    let single = run("closed loop, txn per put", 8, 50, true, true);
    println!(
        "closed loop: group commit / txn per put = {:.1}x",
        grouped / single
    );
}

/// A newer piece (not yet committed by its job's home) is stored beside the
/// committed one, never over it, so a restart finds both; the home deletes
/// the versions it no longer keeps.
#[test]
fn a_newer_piece_is_kept_beside_the_older_until_that_is_removed() {
    let dir = TempDir::new("versions");
    let k = key(6, 4, 1);
    {
        let store = CheckpointStore::open(&dir.file()).unwrap();
        put_sync(&store, k, piece(3, 1, 0x11, 16));
        put_sync(&store, k, piece(3, 2, 0x22, 16));
        put_sync(&store, k, piece(4, 0, 0x33, 16));
        // Not newer than the newest: skipped.
        put_sync(&store, k, piece(3, 5, 0x44, 16));
        assert_eq!(store.get(&k).unwrap(), Some(piece(4, 0, 0x33, 16)));
        assert_eq!(store.stats().pieces_stale, 1);
    }
    let store = CheckpointStore::open(&dir.file()).unwrap();
    let all = store.all().unwrap();
    assert_eq!(
        all,
        vec![
            (k, piece(3, 1, 0x11, 16)),
            (k, piece(3, 2, 0x22, 16)),
            (k, piece(4, 0, 0x33, 16)),
        ],
        "every version survives a restart, oldest first"
    );
    let (tx, rx) = mpsc::channel();
    store.remove(k, 3, 2, report(&tx, 1)).unwrap();
    // Removing what is not there is no error.
    store.remove(k, 9, 9, report(&tx, 2)).unwrap();
    wait_ok(&rx, 2);
    let all = store.all().unwrap();
    assert_eq!(
        all,
        vec![(k, piece(3, 1, 0x11, 16)), (k, piece(4, 0, 0x33, 16))]
    );
    assert_eq!(store.stats().pieces_removed, 1);
    // Removing the newest leaves the older as the key's newest.
    store.remove(k, 4, 0, report(&tx, 3)).unwrap();
    wait_ok(&rx, 1);
    assert_eq!(store.get(&k).unwrap(), Some(piece(3, 1, 0x11, 16)));
    store.remove_job([6; 16], report(&tx, 4)).unwrap();
    wait_ok(&rx, 1);
    assert!(store.all().unwrap().is_empty());
}

/// A store written before keys were versioned opens with its pieces.
#[test]
fn pieces_under_unversioned_keys_are_moved_when_opened() {
    let dir = TempDir::new("unversioned");
    std::fs::create_dir_all(&dir.0).unwrap();
    {
        type Key = ([u8; 16], u64, u8);
        type Value<'a> = (u64, u64, u32, &'a [u8]);
        const TABLE: redb::TableDefinition<Key, Value> =
            redb::TableDefinition::new("checkpoint_pieces_v2");
        let db = redb::Database::create(dir.file()).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut table = txn.open_table(TABLE).unwrap();
            let bytes = [7u8; 12];
            let mut hasher = crc32fast::Hasher::new();
            hasher.update(&[2; 16]);
            hasher.update(&9u64.to_le_bytes());
            hasher.update(&[0]);
            hasher.update(&5u64.to_le_bytes());
            hasher.update(&6u64.to_le_bytes());
            hasher.update(&bytes);
            let sum = hasher.finalize();
            table
                .insert(([2; 16], 9, 0), (5, 6, sum, bytes.as_slice()))
                .unwrap();
        }
        txn.commit().unwrap();
    }
    let store = CheckpointStore::open(&dir.file()).unwrap();
    assert!(store.corrupt_pieces().is_empty());
    assert_eq!(
        store.all().unwrap(),
        vec![(key(2, 9, 0), piece(5, 6, 7, 12))]
    );
}
