//! Damaged files under a real `colony peer` (issue 9, defect 5): for each
//! store (`peer.redb`, `checkpoints.redb`), 4 KiB of random bytes over the
//! first pages after a SIGTERM and after a SIGKILL, zero length, truncation
//! and a garbage file. Each start either fails with a clear error naming the
//! file (non-zero exit, not 101, the message on stderr, no panic), or runs
//! with the same peer id; `--repair` never changes the identity; a piece
//! that fails its checksum is reported and counted in the status.

mod common;

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use colony::PeerInfo;
use common::{test_dir, wait_until, PeerProc, SERIAL};

const PEER_FILE: &str = "peer.redb";
const CHECKPOINTS_FILE: &str = "checkpoints.redb";

/// How one start of a damaged data directory ended.
#[derive(Debug)]
enum Outcome {
    /// It ran, as this peer.
    Ran { peer_id: String },
    /// It exited with this code and stderr.
    Failed { code: Option<i32>, stderr: String },
}

/// Starts `colony peer` on `dir` once (with `extra` arguments): waits until
/// it either exits or writes its `peer.json`, then stops it.
fn attempt(dir: &Path, extra: &[&str]) -> Outcome {
    let json = dir.join("peer.json");
    let stderr_path = dir.join("attempt.stderr");
    let stderr = std::fs::File::create(&stderr_path).expect("create stderr file");
    let mut child = Command::new(env!("CARGO_BIN_EXE_colony"))
        .args(["peer", "--data-dir"])
        .arg(dir)
        .args(["--listen", "/ip4/127.0.0.1/tcp/0", "--api", "127.0.0.1:0"])
        .args(extra)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .expect("spawn colony peer");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Outcome::Failed {
                code: status.code(),
                stderr: std::fs::read_to_string(&stderr_path).unwrap_or_default(),
            };
        }
        let info = std::fs::read_to_string(&json)
            .ok()
            .and_then(|text| serde_json::from_str::<PeerInfo>(&text).ok());
        if let Some(info) = info.filter(|info| info.pid == child.id()) {
            let _ = child.kill();
            let _ = child.wait();
            return Outcome::Ran {
                peer_id: info.peer_id,
            };
        }
        assert!(
            Instant::now() < deadline,
            "colony peer neither ran nor exited within 20 s"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The outcome is a clear error naming `file` (or `Ran` as `peer_id`);
/// returns whether it was an error.
fn check(outcome: &Outcome, file: &str, peer_id: &str, case: &str) -> bool {
    match outcome {
        Outcome::Ran { peer_id: ran } => {
            assert_eq!(
                ran, peer_id,
                "{case}: the peer came back with a new identity"
            );
            false
        }
        Outcome::Failed { code, stderr } => {
            assert!(
                !stderr.contains("panicked"),
                "{case}: a panic on stderr:\n{stderr}"
            );
            assert_ne!(*code, Some(101), "{case}: exit code 101:\n{stderr}");
            assert_ne!(*code, Some(0), "{case}: exit code 0:\n{stderr}");
            assert!(code.is_some(), "{case}: killed by a signal:\n{stderr}");
            assert!(
                stderr.contains("error: ") && stderr.contains(file),
                "{case}: no error naming {file} on stderr:\n{stderr}"
            );
            assert!(
                stderr.contains("backup"),
                "{case}: the error does not say what to do:\n{stderr}"
            );
            assert!(
                !stderr.contains("peer started"),
                "{case}: the error came after the start was announced:\n{stderr}"
            );
            true
        }
    }
}

/// A data directory a peer ran in, stopped by `signal` (TERM or KILL);
/// returns it and the peer's id.
fn golden(root: &Path, name: &str, signal: &str) -> (PathBuf, String) {
    let dir = root.join(name);
    let mut peer = PeerProc::spawn(&dir, &[]);
    let peer_id = peer.info.peer_id.clone();
    if signal == "KILL" {
        peer.kill();
    } else {
        peer.signal(signal);
        assert!(
            peer.wait_exit(Duration::from_secs(10)),
            "no exit on {signal}"
        );
    }
    (dir, peer_id)
}

/// A copy of the golden directory `from` (logs left out).
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name();
        if name.to_string_lossy().ends_with(".log") {
            continue;
        }
        std::fs::copy(entry.path(), to.join(name)).unwrap();
    }
}

/// Reproducible random bytes.
fn random_bytes(seed: u64, n: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn overwrite(path: &Path, offset: u64, bytes: &[u8]) {
    let file = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    file.write_all_at(bytes, offset).unwrap();
}

/// Pages of each store overwritten, one per start (4 KiB pages; page 0 is
/// the header).
const PAGES: std::ops::RangeInclusive<u64> = 1..=8;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_damage_to_each_store_is_a_clear_error_or_the_same_peer() {
    let _serial = SERIAL.lock().await;
    let root = test_dir("damaged");
    let started = Instant::now();
    let (clean, clean_id) = golden(&root, "clean", "TERM");
    let (killed, killed_id) = golden(&root, "killed", "KILL");
    let mut case_no = 0;
    let mut next_dir = |from: &Path| {
        case_no += 1;
        let dir = root.join(format!("case{case_no}"));
        copy_dir(from, &dir);
        dir
    };

    for file in [PEER_FILE, CHECKPOINTS_FILE] {
        // Random 4 KiB over each of the first pages, after SIGTERM and
        // after SIGKILL.
        for (golden, peer_id, how) in [(&clean, &clean_id, "TERM"), (&killed, &killed_id, "KILL")] {
            let mut errors = 0;
            for page in PAGES {
                let dir = next_dir(golden);
                overwrite(
                    &dir.join(file),
                    page * 4096 + 100,
                    &random_bytes(page, 4096),
                );
                let case = format!("{file}, page {page} random after SIG{how}");
                if check(&attempt(&dir, &[]), file, peer_id, &case) {
                    errors += 1;
                }
            }
            assert!(
                errors > 0,
                "{file} after SIG{how}: no damaged page held live data"
            );
        }
        // Zero length, truncated to its first page and to half, garbage.
        let len = std::fs::metadata(clean.join(file)).unwrap().len();
        for (what, keep) in [
            ("zero length", 0),
            ("truncated to 4 KiB", 4096),
            ("truncated to half", len / 2),
        ] {
            let dir = next_dir(&clean);
            std::fs::OpenOptions::new()
                .write(true)
                .open(dir.join(file))
                .unwrap()
                .set_len(keep)
                .unwrap();
            let case = format!("{file}, {what}");
            let outcome = attempt(&dir, &[]);
            assert!(check(&outcome, file, &clean_id, &case), "{case}: it ran");
        }
        let dir = next_dir(&clean);
        std::fs::write(dir.join(file), random_bytes(99, 64 * 1024)).unwrap();
        let case = format!("{file}, garbage");
        assert!(
            check(&attempt(&dir, &[]), file, &clean_id, &case),
            "{case}: it ran"
        );
    }

    // A missing peer.redb beside the other files: no new identity either.
    let dir = next_dir(&clean);
    std::fs::remove_file(dir.join(PEER_FILE)).unwrap();
    let case = "peer.redb missing";
    assert!(
        check(&attempt(&dir, &[]), PEER_FILE, &clean_id, case),
        "{case}: it ran"
    );
    eprintln!("{case_no} damaged starts in {:?}", started.elapsed());
    let _ = std::fs::remove_dir_all(&root);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repair_keeps_the_identity_or_says_why_it_cannot() {
    let _serial = SERIAL.lock().await;
    let root = test_dir("repair");
    let (clean, peer_id) = golden(&root, "clean", "TERM");
    let mut repaired = std::collections::BTreeMap::new();
    for page in PAGES {
        for file in [PEER_FILE, CHECKPOINTS_FILE] {
            let dir = root.join(format!("{file}-{page}"));
            copy_dir(&clean, &dir);
            overwrite(
                &dir.join(file),
                page * 4096 + 100,
                &random_bytes(page + 50, 4096),
            );
            let case = format!("{file}, page {page}, --repair");
            if !check(&attempt(&dir, &[]), file, &peer_id, &case) {
                continue;
            }
            match attempt(&dir, &["--repair"]) {
                Outcome::Ran { peer_id: ran } => {
                    assert_eq!(ran, peer_id, "{case}: --repair changed the identity");
                    *repaired.entry(file).or_insert(0) += 1;
                    // Repaired for good: a plain start runs too.
                    let again = attempt(&dir, &[]);
                    assert!(!check(&again, file, &peer_id, &case), "{case}: {again:?}");
                }
                failed => {
                    assert!(check(&failed, file, &peer_id, &case));
                    assert!(dir.join(file).exists(), "{case}: the file was removed");
                }
            }
        }
    }
    // An empty checkpoint store: --repair moves it aside and starts anew.
    let dir = root.join("empty-checkpoints");
    copy_dir(&clean, &dir);
    std::fs::write(dir.join(CHECKPOINTS_FILE), b"").unwrap();
    let case = "empty checkpoints.redb, --repair";
    assert!(check(&attempt(&dir, &[]), CHECKPOINTS_FILE, &peer_id, case));
    assert!(!check(
        &attempt(&dir, &["--repair"]),
        CHECKPOINTS_FILE,
        &peer_id,
        case
    ));

    // A damaged checkpoint store can always be repaired (by starting it
    // anew if nothing can be read); a damaged peer.redb whenever its identity
    // key can still be found.
    eprintln!("repaired: {repaired:?}");
    assert!(
        repaired.contains_key(PEER_FILE) && repaired.contains_key(CHECKPOINTS_FILE),
        "--repair repaired too little: {repaired:?}"
    );
    let _ = std::fs::remove_dir_all(&root);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_piece_failing_its_checksum_is_reported_and_counted() {
    let _serial = SERIAL.lock().await;
    let root = test_dir("crc");
    let (dir, peer_id) = golden(&root, "p", "TERM");
    {
        type Key = ([u8; 16], u64, u8);
        type Value<'a> = (u64, u64, u32, &'a [u8]);
        const TABLE: redb::TableDefinition<Key, Value> =
            redb::TableDefinition::new("checkpoint_pieces_v2");
        let db = redb::Database::create(dir.join(CHECKPOINTS_FILE)).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut table = txn.open_table(TABLE).unwrap();
            // Not the checksum of these bytes.
            table
                .insert(([5; 16], 3, 1), (1, 2, 0x1234, b"a piece".as_slice()))
                .unwrap();
        }
        txn.commit().unwrap();
    }
    let peer = PeerProc::spawn(&dir, &[]);
    assert_eq!(peer.info.peer_id, peer_id);
    let status = wait_until(Duration::from_secs(10), "the status", || peer.status()).await;
    assert_eq!(status.driver.checkpoint_pieces_corrupt, 1);
    let log = peer.log();
    assert!(
        log.contains("failed its checksum") && log.contains("unit=3"),
        "no warning naming the piece:\n{log}"
    );
    drop(peer);
    let _ = std::fs::remove_dir_all(&root);
}
