//! Opening a redb file that may be damaged, and repairing one that is.
//!
//! Every file on disk is untrusted input. A plain redb open trusts the file
//! after a clean shutdown and may panic deep inside on a page that was
//! overwritten; so every store is opened with redb's integrity check (the
//! checksum of every page of the committed trees is verified, the allocator
//! state rebuilt), inside `catch_unwind`, and whatever goes wrong becomes a
//! [`StoreError::Damaged`] naming the file and what to do.
//!
//! redb can recover from a damaged *latest* commit by falling back to the
//! one before it. A normal open refuses to do that silently (it would drop
//! acknowledged writes without a word); [`repair_file`] (`colony peer
//! --repair`) does it and says so, and when even that fails it moves the
//! damaged file aside and keeps what can still be read from it.

use std::cell::Cell;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Once};

use redb::{Database, DatabaseError, ReadableDatabase, StorageError};

use crate::StoreError;

/// Unix permission bits of every store file: they hold the identity key and
/// the jobs' data, for this user only.
#[cfg(unix)]
pub(crate) const FILE_MODE: u32 = 0o600;

/// Unix permission bits of a data directory Colony creates.
#[cfg(unix)]
const DIR_MODE: u32 = 0o700;

thread_local! {
    /// Set while this thread runs redb code under [`guarded`]: a panic there
    /// is caught and reported as an error, so the default hook must not
    /// print it as a crash.
    static QUIET_PANICS: Cell<bool> = const { Cell::new(false) };
}

static HOOK: Once = Once::new();

/// Runs `f`, turning a panic into `Err(message)`. The panic is not printed.
pub(crate) fn guarded<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !QUIET_PANICS.with(Cell::get) {
                previous(info);
            }
        }));
    });
    let was = QUIET_PANICS.with(|q| q.replace(true));
    let result = catch_unwind(AssertUnwindSafe(f));
    QUIET_PANICS.with(|q| q.set(was));
    result.map_err(|payload| {
        let message = payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".to_string());
        format!("the database library panicked reading it ({message})")
    })
}

/// Creates `dir` (and its parents) if missing, the last one private to this
/// user.
pub(crate) fn create_dir(dir: &Path) -> Result<(), StoreError> {
    if dir.is_dir() {
        return Ok(());
    }
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, DIR_MODE);
    builder.create(dir).map_err(|source| StoreError::CreateDir {
        dir: dir.to_path_buf(),
        source,
    })
}

/// The length of `path`, `None` if it does not exist.
pub(crate) fn file_len(path: &Path) -> Result<Option<u64>, StoreError> {
    match std::fs::metadata(path) {
        Ok(meta) => Ok(Some(meta.len())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_error(path, e)),
    }
}

/// Makes sure `path` exists and only its owner can read it, before redb
/// opens it (redb would create it with the umask's mode).
fn restrict(path: &Path) -> Result<(), StoreError> {
    let mut options = std::fs::OpenOptions::new();
    options.read(true).write(true).create(true).truncate(false);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, FILE_MODE);
    options.open(path).map_err(|e| io_error(path, e))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(FILE_MODE))
            .map_err(|e| io_error(path, e))?;
    }
    Ok(())
}

fn io_error(path: &Path, e: std::io::Error) -> StoreError {
    StoreError::Database {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

/// What a store loses if its file is moved away, for the error message.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Kind {
    /// `peer.redb`.
    Peer,
    /// `checkpoints.redb`.
    Checkpoints,
}

impl Kind {
    /// How to start without the file, and what that loses.
    pub(crate) fn afresh(self) -> &'static str {
        match self {
            Kind::Peer => {
                "or start as a new peer, with a new peer id, in a new data directory"
            }
            Kind::Checkpoints => {
                "or move it away to start without its checkpoint pieces and object-space partitions (the jobs' and partitions' homes recover them from other copies where they have any)"
            }
        }
    }
}

/// The error for a damaged file.
pub(crate) fn damaged(path: &Path, kind: Kind, reason: impl Into<String>) -> StoreError {
    StoreError::Damaged {
        path: path.to_path_buf(),
        reason: reason.into(),
        afresh: kind.afresh(),
    }
}

/// How an open went.
pub(crate) struct Opened {
    pub(crate) db: Database,
    /// redb fell back to the commit before the latest, which was damaged
    /// (only with `allow_rollback`).
    pub(crate) rolled_back: bool,
}

/// Opens (creating) the redb file at `path`, verifying every committed page.
/// Never panics: redb errors and panics become [`StoreError::Damaged`] (or
/// [`StoreError::FileInUse`]). With `allow_rollback` a damaged latest commit
/// is dropped for the one before it; without, that is an error too.
pub(crate) fn open_checked(
    path: &Path,
    kind: Kind,
    allow_rollback: bool,
) -> Result<Opened, StoreError> {
    restrict(path)?;
    let fell_back = Arc::new(AtomicBool::new(false));
    let seen = fell_back.clone();
    let opened = guarded(|| {
        Database::builder()
            .set_check_integrity_on_open(true)
            .set_repair_callback(move |session| {
                // redb calls back at 0.3 only when the latest commit fails
                // its checksums and it is about to fall back to the one
                // before (see redb's `Database::do_repair`).
                if session.progress() > 0.2 && session.progress() < 0.4 {
                    seen.store(true, Ordering::SeqCst);
                    if !allow_rollback {
                        session.abort();
                    }
                }
            })
            .create(path)
    });
    let rolled_back = fell_back.load(Ordering::SeqCst);
    match opened {
        Ok(Ok(db)) => Ok(Opened { db, rolled_back }),
        Ok(Err(DatabaseError::DatabaseAlreadyOpen)) => Err(StoreError::FileInUse {
            path: path.to_path_buf(),
        }),
        Ok(Err(DatabaseError::RepairAborted)) if rolled_back => Err(damaged(
            path,
            kind,
            "its latest commit fails its checksums (overwritten, or torn by a power loss)",
        )),
        Ok(Err(DatabaseError::Storage(StorageError::Io(e))))
            if e.kind() != std::io::ErrorKind::InvalidData
                && e.kind() != std::io::ErrorKind::UnexpectedEof =>
        {
            Err(io_error(path, e))
        }
        Ok(Err(e)) => Err(damaged(path, kind, e.to_string())),
        Err(panic) => Err(damaged(path, kind, panic)),
    }
}

/// What `colony peer --repair` did to one file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RepairOutcome {
    /// There was no file to repair (or an empty identity file: nothing in
    /// it can be recovered).
    Absent,
    /// The file passed every check; nothing was changed.
    Clean,
    /// The latest commit was damaged; the file now holds the commit before
    /// it (the writes of the latest commit are lost).
    RolledBack,
    /// redb could not repair the file: it was moved to `moved_to`, and what
    /// could still be read from it copied into a new file.
    Salvaged {
        /// Where the damaged file now is.
        moved_to: PathBuf,
        /// What was kept, in words (e.g. "12 checkpoint pieces").
        kept: String,
    },
}

/// The result of repairing one store file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RepairReport {
    /// The file.
    pub path: PathBuf,
    /// What was done.
    pub outcome: RepairOutcome,
}

impl std::fmt::Display for RepairReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let path = self.path.display();
        match &self.outcome {
            RepairOutcome::Absent => write!(f, "{path}: no file or an empty one, nothing to repair"),
            RepairOutcome::Clean => write!(f, "{path}: passed its integrity check, unchanged"),
            RepairOutcome::RolledBack => write!(
                f,
                "{path}: its latest commit was damaged; rolled back to the commit before it (the writes of the latest commit are lost)"
            ),
            RepairOutcome::Salvaged { moved_to, kept } => write!(
                f,
                "{path}: could not be repaired in place; the damaged file is now {}, and a new file holds what could still be read: {kept}",
                moved_to.display()
            ),
        }
    }
}

/// Reads what `read` can from the damaged redb file at `path`: with a
/// read-only open (which needs less of the file), else a writable one (which
/// can recover after a crash). These opens trust what they read, so every
/// step is guarded; `None` if nothing could be read.
pub(crate) fn read_damaged<S>(
    path: &Path,
    read: impl Fn(&dyn ReadableDatabase) -> Option<S>,
) -> Option<S> {
    guarded(|| {
        let db = Database::builder().open_read_only(path).ok()?;
        read(&db)
    })
    .ok()
    .flatten()
    .or_else(|| {
        guarded(|| {
            let db = Database::builder().open(path).ok()?;
            read(&db)
        })
        .ok()
        .flatten()
    })
}

/// Renames `path` to `path.damaged-UNIX_SECONDS`, returning the new name.
fn move_aside(path: &Path) -> Result<PathBuf, StoreError> {
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".damaged-{stamp}"));
    let aside = path.with_file_name(name);
    std::fs::rename(path, &aside).map_err(|e| io_error(path, e))?;
    Ok(aside)
}

/// Repairs the redb file at `path`: redb's own repair first (which may roll
/// the latest commit back), else the file is moved aside and `salvage`
/// reads what it can from the damaged copy at the path it is given (`None`
/// if nothing), `keep` decides whether that is enough (an error moves the
/// file back where it was) and describes it, and `restore` writes it into a
/// new file.
pub(crate) fn repair_file<S>(
    path: &Path,
    kind: Kind,
    salvage: impl FnOnce(&Path) -> Option<S>,
    keep: impl FnOnce(Option<&S>) -> Result<String, StoreError>,
    restore: impl FnOnce(&Database, S) -> Result<(), StoreError>,
) -> Result<RepairReport, StoreError> {
    let report = |outcome| RepairReport {
        path: path.to_path_buf(),
        outcome,
    };
    match (file_len(path)?, kind) {
        (None, _) | (Some(0), Kind::Peer) => return Ok(report(RepairOutcome::Absent)),
        (Some(0), Kind::Checkpoints) => {
            let aside = move_aside(path)?;
            open_checked(path, kind, false)?;
            return Ok(report(RepairOutcome::Salvaged {
                moved_to: aside,
                kept: "nothing: the file was empty".to_string(),
            }));
        }
        (Some(_), _) => {}
    }
    match open_checked(path, kind, true) {
        Ok(opened) if opened.rolled_back => return Ok(report(RepairOutcome::RolledBack)),
        Ok(_) => return Ok(report(RepairOutcome::Clean)),
        Err(StoreError::Damaged { .. }) => {}
        Err(other) => return Err(other),
    }
    let aside = move_aside(path)?;
    let salvaged = salvage(&aside);
    let kept = match keep(salvaged.as_ref()) {
        Ok(kept) => kept,
        Err(e) => {
            // Nothing worth a new file: put the damaged one back, so that a
            // backup can still be restored over it.
            let _ = std::fs::rename(&aside, path);
            return Err(e);
        }
    };
    let fresh = open_checked(path, kind, false)?;
    if let Some(salvaged) = salvaged {
        restore(&fresh.db, salvaged)?;
    }
    Ok(report(RepairOutcome::Salvaged {
        moved_to: aside,
        kept,
    }))
}
