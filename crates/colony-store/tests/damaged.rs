//! Damaged store files, each store: random 4 KiB over every page after a
//! clean close and after a crash (a SIGKILLed writer), a damaged tail after
//! a crash, zero length, truncation, a garbage file, pieces that fail their
//! checksum. Each gives a clear error naming the file or a reported, counted
//! loss — never a panic, never a silent new identity, never a silently lost
//! piece. `--repair` never panics and never changes the identity either.

use std::io::{BufRead, BufReader};
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use colony_store::{
    CheckpointStore, PeerStore, PieceKey, RepairOutcome, StoreError, StoredPiece, CHECKPOINTS_FILE,
    PEER_FILE,
};

/// A fresh directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!(
            "colony-damaged-{name}-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// xorshift: reproducible "random" bytes without a dependency.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

const IDENTITY: [u8; 68] = [7; 68];
const PIECES: u64 = 60;

fn key(unit: u64) -> PieceKey {
    PieceKey {
        job: [9; 16],
        unit,
        holder_index: (unit % 3) as u8,
    }
}

fn piece(unit: u64) -> StoredPiece {
    StoredPiece {
        epoch: 1,
        version: unit + 1,
        bytes: vec![unit as u8; 1500 + unit as usize * 10],
    }
}

/// Writes the identity, a few sessions and counters into `dir/peer.redb`.
fn fill_peer(dir: &Path) {
    let store = PeerStore::open(dir).unwrap();
    assert_eq!(
        store.load_or_create_identity(|| IDENTITY.to_vec()).unwrap(),
        IDENTITY
    );
    for _ in 0..5 {
        store.next_incarnation().unwrap();
    }
    store.set_counter("units_done_total", 42).unwrap();
}

/// Writes every piece, one durable commit each.
fn fill_checkpoints(path: &Path) {
    let store = CheckpointStore::open(path).unwrap();
    for unit in 0..PIECES {
        let (tx, rx) = mpsc::channel();
        store
            .put(
                key(unit),
                piece(unit),
                Box::new(move |r| {
                    let _ = tx.send(r);
                }),
            )
            .unwrap();
        rx.recv_timeout(Duration::from_secs(30)).unwrap().unwrap();
    }
}

/// A data directory with both stores filled and closed cleanly.
fn golden(name: &str) -> TempDir {
    let dir = TempDir::new(name);
    fill_peer(dir.path());
    fill_checkpoints(&dir.path().join(CHECKPOINTS_FILE));
    dir
}

/// A data directory with both stores filled by a process that was then
/// SIGKILLed: no clean shutdown.
fn crashed(name: &str) -> TempDir {
    let dir = TempDir::new(name);
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["crash_child", "--exact", "--ignored", "--nocapture"])
        .env("COLONY_DAMAGED_CHILD_DIR", dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let ready = BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .any(|line| line.contains("COLONY-CHILD-READY"));
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(ready, "the child did not fill the stores");
    dir
}

/// Run by [`crashed`] in a child process: fills the stores and waits to be
/// killed.
#[test]
#[ignore = "run by the crash tests in a child process"]
fn crash_child() {
    let Some(dir) = std::env::var_os("COLONY_DAMAGED_CHILD_DIR") else {
        return;
    };
    let dir = PathBuf::from(dir);
    let peer = PeerStore::open(&dir).unwrap();
    peer.load_or_create_identity(|| IDENTITY.to_vec()).unwrap();
    for _ in 0..5 {
        peer.next_incarnation().unwrap();
    }
    fill_checkpoints_open(&dir.join(CHECKPOINTS_FILE));
}

/// Like [`fill_checkpoints`], then announces it and sleeps with the store
/// open, until killed.
fn fill_checkpoints_open(path: &Path) {
    let store = CheckpointStore::open(path).unwrap();
    for unit in 0..PIECES {
        let (tx, rx) = mpsc::channel();
        store
            .put(
                key(unit),
                piece(unit),
                Box::new(move |r| {
                    let _ = tx.send(r);
                }),
            )
            .unwrap();
        rx.recv_timeout(Duration::from_secs(30)).unwrap().unwrap();
    }
    println!("COLONY-CHILD-READY");
    loop {
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// Copies `from` into a fresh directory.
fn copy_dir(from: &Path, name: &str) -> TempDir {
    let dir = TempDir::new(name);
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), dir.path().join(entry.file_name())).unwrap();
    }
    dir
}

fn overwrite(path: &Path, offset: u64, bytes: &[u8]) {
    let file = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    file.write_all_at(bytes, offset).unwrap();
}

fn len(path: &Path) -> u64 {
    std::fs::metadata(path).unwrap().len()
}

/// The error is [`StoreError::Damaged`] for `file`, and says what to do.
fn assert_damaged(error: &StoreError, file: &str) {
    let message = error.to_string();
    assert!(
        matches!(error, StoreError::Damaged { .. }),
        "expected Damaged, got {message}"
    );
    assert!(message.contains(file), "{message}");
    assert!(message.contains("--repair"), "{message}");
    assert!(message.contains("backup"), "{message}");
}

/// What an open of a damaged file gave.
#[derive(Debug, Default)]
struct Tally {
    intact: usize,
    errors: usize,
    repaired: usize,
    unrepairable: usize,
    /// Errors because redb would have fallen back to an older commit.
    rollbacks_refused: usize,
}

/// Finds [`IDENTITY`] in the raw bytes of a damaged file, as the peer
/// finds a keypair it can verify.
fn find_identity(bytes: &[u8]) -> Option<Vec<u8>> {
    bytes
        .windows(IDENTITY.len())
        .find(|w| *w == IDENTITY)
        .map(<[u8]>::to_vec)
}

/// Opens the peer store in `dir`: either it holds the original identity, or
/// opening it is a clear error. Then `--repair` never changes the identity.
fn check_peer(dir: &Path, tally: &mut Tally) {
    match PeerStore::open(dir).and_then(|s| s.load_or_create_identity(|| b"NEW".to_vec())) {
        Ok(identity) => {
            assert_eq!(
                identity, IDENTITY,
                "a damaged peer.redb gave another identity"
            );
            tally.intact += 1;
            return;
        }
        Err(error) => {
            assert_damaged(&error, PEER_FILE);
            if error.to_string().contains("latest commit") {
                tally.rollbacks_refused += 1;
            }
            tally.errors += 1;
        }
    }
    match PeerStore::repair(dir, find_identity) {
        Ok(report) => {
            assert!(
                !matches!(report.outcome, RepairOutcome::Absent | RepairOutcome::Clean),
                "{report}"
            );
            let store = PeerStore::open(dir).unwrap();
            let identity = store.load_or_create_identity(|| b"NEW".to_vec()).unwrap();
            assert_eq!(identity, IDENTITY, "--repair changed the identity");
            tally.repaired += 1;
        }
        Err(error) => {
            assert_damaged(&error, PEER_FILE);
            // Left as it was, so a backup can still be restored over it.
            assert!(dir.join(PEER_FILE).exists());
            tally.unrepairable += 1;
        }
    }
}

/// Opens the checkpoint store at `path`: every piece it returns is one that
/// was written, and every written piece is either returned or counted as
/// lost; or opening it is a clear error. `--repair` then gives a store that
/// opens, holding only pieces that were written.
fn check_checkpoints(path: &Path, tally: &mut Tally) {
    match CheckpointStore::open(path) {
        Ok(store) => {
            let all = store.all().unwrap();
            for (k, p) in &all {
                assert_eq!(*p, piece(k.unit), "piece {} came back changed", k.unit);
            }
            let lost = store.stats().pieces_corrupt;
            assert_eq!(
                all.len() as u64 + lost,
                PIECES,
                "pieces lost without a report"
            );
            assert_eq!(store.corrupt_pieces().len() as u64, lost);
            tally.intact += 1;
            return;
        }
        Err(error) => {
            assert_damaged(&error, CHECKPOINTS_FILE);
            if error.to_string().contains("latest commit") {
                tally.rollbacks_refused += 1;
            }
            tally.errors += 1;
        }
    }
    let report = CheckpointStore::repair(path).unwrap();
    assert!(
        !matches!(report.outcome, RepairOutcome::Absent | RepairOutcome::Clean),
        "{report}"
    );
    let store = CheckpointStore::open(path).unwrap();
    for (k, p) in store.all().unwrap() {
        assert_eq!(p, piece(k.unit), "piece {} came back changed", k.unit);
    }
    tally.repaired += 1;
}

/// Overwrites each 4 KiB page of the file (from the second), at `shift`
/// bytes past the page start, with random bytes, in a fresh copy of `from`,
/// and checks each.
fn sweep(from: &Path, file: &str, shift: u64, seed: u64, check: fn(&Path, &mut Tally)) -> Tally {
    let pages = len(&from.join(file)) / 4096;
    let mut tally = Tally::default();
    let mut rng = Rng::new(seed);
    for page in 1..pages {
        let dir = copy_dir(from, "sweep");
        let path = dir.path().join(file);
        overwrite(&path, page * 4096 + shift, &rng.bytes(4096));
        let target = if file == PEER_FILE {
            dir.path().to_path_buf()
        } else {
            path
        };
        check(&target, &mut tally);
    }
    tally
}

#[test]
fn random_pages_of_peer_redb_after_a_clean_close() {
    let golden = golden("peer-clean");
    for (shift, seed) in [(0, 1), (1000, 2)] {
        let tally = sweep(golden.path(), PEER_FILE, shift, seed, check_peer);
        eprintln!("peer.redb, clean close, shift {shift}: {tally:?}");
        assert!(tally.errors > 0, "no page held live data: {tally:?}");
        // Only a page holding the identity key itself is beyond repair.
        assert!(tally.unrepairable <= 1, "{tally:?}");
    }
}

#[test]
fn random_pages_of_checkpoints_redb_after_a_clean_close() {
    let golden = golden("ckpt-clean");
    for (shift, seed) in [(0, 3), (1000, 4)] {
        let tally = sweep(
            golden.path(),
            CHECKPOINTS_FILE,
            shift,
            seed,
            check_checkpoints,
        );
        eprintln!("checkpoints.redb, clean close, shift {shift}: {tally:?}");
        assert!(tally.errors > 0, "no page held live data: {tally:?}");
    }
}

#[test]
fn random_pages_after_a_crash() {
    let crashed = crashed("crash");
    let tally = sweep(crashed.path(), PEER_FILE, 500, 5, check_peer);
    eprintln!("peer.redb, crash: {tally:?}");
    assert!(tally.errors > 0, "no page held live data: {tally:?}");
    let tally = sweep(crashed.path(), CHECKPOINTS_FILE, 500, 6, check_checkpoints);
    eprintln!("checkpoints.redb, crash: {tally:?}");
    assert!(tally.errors > 0, "no page held live data: {tally:?}");
}

/// The defect of issue 9: a damaged tail after SIGKILL made redb fall back
/// to an older commit, silently losing the last piece.
#[test]
fn a_damaged_tail_after_a_crash_loses_nothing_silently() {
    let crashed = crashed("tail");
    for (file, check) in [
        (PEER_FILE, check_peer as fn(&Path, &mut Tally)),
        (CHECKPOINTS_FILE, check_checkpoints),
    ] {
        let mut tally = Tally::default();
        for back in 1..=4u64 {
            let dir = copy_dir(crashed.path(), "tail");
            let path = dir.path().join(file);
            let end = len(&path);
            overwrite(&path, end - back * 4096, &Rng::new(back).bytes(4096));
            let target = if file == PEER_FILE {
                dir.path().to_path_buf()
            } else {
                path
            };
            check(&target, &mut tally);
        }
        eprintln!("{file}, damaged tail after a crash: {tally:?}");
        if file == CHECKPOINTS_FILE {
            // Committed in two phases, the store never falls back to an
            // older commit: a damaged tail is an error (never a silent
            // loss of the last commit's pieces).
            assert!(tally.errors > 0, "{tally:?}");
            assert_eq!(tally.rollbacks_refused, 0, "{tally:?}");
        }
    }
}

#[test]
fn an_empty_peer_redb_in_a_used_data_dir_is_an_error_not_a_new_identity() {
    let golden = golden("peer-empty");
    for state in [Some(CHECKPOINTS_FILE), Some("peer.json"), None] {
        let dir = copy_dir(golden.path(), "peer-empty");
        std::fs::File::create(dir.path().join(PEER_FILE)).unwrap();
        std::fs::write(dir.path().join("api.token"), b"token").unwrap();
        for other in [CHECKPOINTS_FILE, "peer.json"] {
            if Some(other) != state {
                let _ = std::fs::remove_file(dir.path().join(other));
            }
        }
        if let Some(state) = state {
            std::fs::write(dir.path().join(state), b"x").unwrap();
            let error = PeerStore::open(dir.path()).err().expect("an error");
            assert!(
                matches!(error, StoreError::IdentityLost { .. }),
                "expected IdentityLost, got {error}"
            );
            let message = error.to_string();
            assert!(
                message.contains(PEER_FILE) && message.contains(state),
                "{message}"
            );
            assert!(
                message.contains("empty") && message.contains("backup"),
                "{message}"
            );
            // --repair cannot make one up either.
            assert_eq!(
                PeerStore::repair(dir.path(), find_identity)
                    .unwrap()
                    .outcome,
                RepairOutcome::Absent
            );
            assert!(PeerStore::open(dir.path()).is_err());
        } else {
            // Nothing a started peer leaves (an API token may be written
            // before the identity): a new data directory, a new peer.
            let store = PeerStore::open(dir.path()).unwrap();
            assert_eq!(
                store.load_or_create_identity(|| b"NEW".to_vec()).unwrap(),
                b"NEW"
            );
        }
    }
}

#[test]
fn a_missing_peer_redb_in_a_used_data_dir_is_an_error() {
    let golden = golden("peer-missing");
    std::fs::remove_file(golden.path().join(PEER_FILE)).unwrap();
    let error = PeerStore::open(golden.path()).err().expect("an error");
    assert!(
        matches!(
            error,
            StoreError::IdentityLost {
                what: "is missing",
                ..
            }
        ),
        "{error}"
    );
    assert!(
        !golden.path().join(PEER_FILE).exists(),
        "created a new file"
    );
}

#[test]
fn a_peer_redb_without_identity_after_earlier_sessions_is_an_error() {
    let dir = TempDir::new("no-identity");
    {
        let store = PeerStore::open(dir.path()).unwrap();
        store.next_incarnation().unwrap();
    }
    let store = PeerStore::open(dir.path()).unwrap();
    let error = store
        .load_or_create_identity(|| b"NEW".to_vec())
        .expect_err("an error");
    assert!(matches!(error, StoreError::IdentityLost { .. }), "{error}");
}

#[test]
fn an_empty_checkpoints_redb_is_an_error_not_an_empty_store() {
    let golden = golden("ckpt-empty");
    let path = golden.path().join(CHECKPOINTS_FILE);
    std::fs::File::create(&path).unwrap();
    let error = CheckpointStore::open(&path).expect_err("an error");
    assert_damaged(&error, CHECKPOINTS_FILE);
    assert!(error.to_string().contains("empty"), "{error}");
    assert_eq!(len(&path), 0, "the open wrote into it");
    // --repair, asked explicitly, moves it aside and starts anew, saying so.
    let report = CheckpointStore::repair(&path).unwrap();
    match &report.outcome {
        RepairOutcome::Salvaged { moved_to, kept } => {
            assert!(kept.contains("empty"), "{report}");
            assert_eq!(len(moved_to), 0);
        }
        other => panic!("expected Salvaged, got {other:?}"),
    }
    let store = CheckpointStore::open(&path).unwrap();
    assert!(store.all().unwrap().is_empty());
}

#[test]
fn truncated_and_garbage_files_are_clear_errors() {
    let golden = golden("trunc");
    for (file, check) in [
        (PEER_FILE, check_peer as fn(&Path, &mut Tally)),
        (CHECKPOINTS_FILE, check_checkpoints),
    ] {
        let mut tally = Tally::default();
        let full = len(&golden.path().join(file));
        for keep in [100, 4096, 5000, full / 2, full - 4096] {
            let dir = copy_dir(golden.path(), "trunc");
            let path = dir.path().join(file);
            std::fs::OpenOptions::new()
                .write(true)
                .open(&path)
                .unwrap()
                .set_len(keep)
                .unwrap();
            let target = if file == PEER_FILE {
                dir.path().to_path_buf()
            } else {
                path
            };
            check(&target, &mut tally);
        }
        for seed in 0..3 {
            let dir = copy_dir(golden.path(), "garbage");
            let path = dir.path().join(file);
            std::fs::write(&path, Rng::new(seed + 10).bytes(64 * 1024)).unwrap();
            let target = if file == PEER_FILE {
                dir.path().to_path_buf()
            } else {
                path
            };
            let before = tally.errors;
            check(&target, &mut tally);
            assert_eq!(tally.errors, before + 1, "garbage {file} opened");
        }
        eprintln!("{file}, truncated and garbage: {tally:?}");
    }
}

/// A piece whose bytes changed after it was checksummed (written below
/// redb, or in memory before redb saw it): dropped at open, named, counted,
/// and a newer write for its key is not refused for it.
#[test]
fn pieces_that_fail_their_checksum_are_dropped_and_counted() {
    let golden = golden("crc");
    let path = golden.path().join(CHECKPOINTS_FILE);
    {
        type Key = ([u8; 16], u64, u8);
        type Value<'a> = (u64, u64, u32, &'a [u8]);
        const TABLE: redb::TableDefinition<Key, Value> =
            redb::TableDefinition::new("checkpoint_pieces_v2");
        let db = redb::Database::create(&path).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut table = txn.open_table(TABLE).unwrap();
            let k = key(5);
            let p = piece(5);
            // A huge version with a checksum that does not match.
            table
                .insert(
                    (k.job, k.unit, k.holder_index),
                    (1, u64::MAX, 0, p.bytes.as_slice()),
                )
                .unwrap();
            let k = key(6);
            let mut bytes = piece(6).bytes;
            bytes[10] ^= 1;
            // Not the checksum of these bytes.
            table
                .insert(
                    (k.job, k.unit, k.holder_index),
                    (1, 7, 0x1234, bytes.as_slice()),
                )
                .unwrap();
        }
        txn.commit().unwrap();
    }
    let store = CheckpointStore::open(&path).unwrap();
    assert_eq!(store.corrupt_pieces(), &[key(5), key(6)]);
    assert_eq!(store.stats().pieces_corrupt, 2);
    let all = store.all().unwrap();
    assert_eq!(all.len() as u64, PIECES - 2);
    assert!(all.iter().all(|(k, p)| *p == piece(k.unit)));
    assert_eq!(store.get(&key(5)).unwrap(), None);
    // The home re-sends the piece: it is stored, although the damaged one
    // claimed a newer version.
    let (tx, rx) = mpsc::channel();
    store
        .put(
            key(5),
            piece(5),
            Box::new(move |r| {
                let _ = tx.send(r);
            }),
        )
        .unwrap();
    rx.recv_timeout(Duration::from_secs(30)).unwrap().unwrap();
    assert_eq!(store.get(&key(5)).unwrap(), Some(piece(5)));
    drop(store);
    // Dropped for good: the next open finds nothing corrupt.
    let store = CheckpointStore::open(&path).unwrap();
    assert!(store.corrupt_pieces().is_empty());
    assert_eq!(store.all().unwrap().len() as u64, PIECES - 1);
}

#[test]
fn store_files_and_new_data_dirs_are_private() {
    let parent = TempDir::new("mode");
    let dir = parent.path().join("data");
    fill_peer(&dir);
    fill_checkpoints(&dir.join(CHECKPOINTS_FILE));
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&dir.join(PEER_FILE)), 0o600);
    assert_eq!(mode(&dir.join(CHECKPOINTS_FILE)), 0o600);
    assert_eq!(mode(&dir), 0o700);
    // A file left readable by an older version is restricted on open.
    std::fs::set_permissions(dir.join(PEER_FILE), std::fs::Permissions::from_mode(0o644)).unwrap();
    drop(PeerStore::open(&dir).unwrap());
    assert_eq!(mode(&dir.join(PEER_FILE)), 0o600);
}
