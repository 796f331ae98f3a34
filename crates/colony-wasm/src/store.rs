//! A peer's cache of module bytes on disk: `DIR/<id>.wasm`, checked against
//! its id every time it is read, bounded in total size; beside each, the
//! signatures of those who vouch for it (`DIR/<id>.sig`, opaque here).

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::ModuleId;

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The file system refused.
    #[error("module store {dir}: {source}")]
    Io {
        /// The store's directory.
        dir: PathBuf,
        /// What failed.
        source: io::Error,
    },
    /// A module is larger than the whole store.
    #[error("a module of {size} bytes does not fit a module store of {max} bytes")]
    TooLarge {
        /// The module's size.
        size: u64,
        /// The store's bound.
        max: u64,
    },
}

/// The largest signature file the store keeps for a module.
pub const MAX_SIGNATURES_BYTES: usize = 4096;

/// A module held by the store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredModule {
    /// Its id.
    pub id: ModuleId,
    /// Its size in bytes.
    pub size: u64,
}

/// Module bytes kept on disk. Files are named by the hash of their bytes
/// and verified on every read: a damaged or replaced file is removed and
/// reads as missing (to be fetched again), never run. When the total passes
/// `max_bytes`, the least recently used modules go.
pub struct ModuleStore {
    dir: PathBuf,
    max_bytes: u64,
}

impl ModuleStore {
    /// The store in `dir` (created, mode 0700), holding at most
    /// `max_bytes`.
    pub fn open(dir: impl Into<PathBuf>, max_bytes: u64) -> Result<ModuleStore, StoreError> {
        let dir = dir.into();
        let store = ModuleStore { dir, max_bytes };
        fs::create_dir_all(&store.dir).map_err(|e| store.io(e))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(&store.dir, fs::Permissions::from_mode(0o700))
                .map_err(|e| store.io(e))?;
        }
        Ok(store)
    }

    /// Where the store keeps its files.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn io(&self, source: io::Error) -> StoreError {
        StoreError::Io {
            dir: self.dir.clone(),
            source,
        }
    }

    fn path(&self, id: &ModuleId) -> PathBuf {
        self.dir.join(format!("{id}.wasm"))
    }

    fn signatures_path(&self, id: &ModuleId) -> PathBuf {
        self.dir.join(format!("{id}.sig"))
    }

    /// Keeps `signatures` (encoded by the caller, at most
    /// [`MAX_SIGNATURES_BYTES`]) for module `id`, replacing what was kept.
    pub fn put_signatures(&self, id: &ModuleId, signatures: &[u8]) -> Result<(), StoreError> {
        if signatures.len() > MAX_SIGNATURES_BYTES {
            return Err(StoreError::TooLarge {
                size: signatures.len() as u64,
                max: MAX_SIGNATURES_BYTES as u64,
            });
        }
        let aside = self.dir.join(format!("{id}.sig.partial"));
        let write = || -> io::Result<()> {
            let mut file = fs::File::create(&aside)?;
            file.write_all(signatures)?;
            fs::rename(&aside, self.signatures_path(id))
        };
        write().map_err(|e| self.io(e))
    }

    /// The signatures kept for module `id` (empty if none, or if the file
    /// is larger than any the store writes).
    pub fn signatures(&self, id: &ModuleId) -> Result<Vec<u8>, StoreError> {
        let path = self.signatures_path(id);
        match fs::metadata(&path) {
            Ok(meta) if meta.len() > MAX_SIGNATURES_BYTES as u64 => return Ok(Vec::new()),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(self.io(e)),
        }
        match fs::read(&path) {
            Ok(bytes) => Ok(bytes),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(self.io(e)),
        }
    }

    /// Stores `bytes` (atomically: written aside, then renamed) and returns
    /// their id; storing a module already held only refreshes its use.
    pub fn put(&self, bytes: &[u8]) -> Result<ModuleId, StoreError> {
        let size = bytes.len() as u64;
        if size > self.max_bytes {
            return Err(StoreError::TooLarge {
                size,
                max: self.max_bytes,
            });
        }
        let id = ModuleId::of(bytes);
        let path = self.path(&id);
        if self.get(&id)?.is_some() {
            return Ok(id);
        }
        let aside = self.dir.join(format!("{id}.partial"));
        let write = || -> io::Result<()> {
            let mut file = fs::File::create(&aside)?;
            file.write_all(bytes)?;
            fs::rename(&aside, &path)
        };
        write().map_err(|e| self.io(e))?;
        self.evict(&id)?;
        Ok(id)
    }

    /// The bytes of module `id`, if held and intact.
    pub fn get(&self, id: &ModuleId) -> Result<Option<Vec<u8>>, StoreError> {
        let path = self.path(id);
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(self.io(e)),
        };
        if ModuleId::of(&bytes) != *id {
            tracing::warn!(path = %path.display(), "a cached module does not match its id; removed, to be fetched again");
            fs::remove_file(&path).map_err(|e| self.io(e))?;
            return Ok(None);
        }
        // Mark it used, for eviction; a failure only skews the order.
        let _ = fs::File::open(&path).and_then(|f| f.set_modified(SystemTime::now()));
        Ok(Some(bytes))
    }

    /// Every module held, most recently used first.
    pub fn list(&self) -> Result<Vec<StoredModule>, StoreError> {
        Ok(self
            .entries()?
            .into_iter()
            .map(|(id, size, _)| StoredModule { id, size })
            .collect())
    }

    /// (id, size, last use), most recently used first.
    fn entries(&self) -> Result<Vec<(ModuleId, u64, SystemTime)>, StoreError> {
        let mut entries = Vec::new();
        for entry in fs::read_dir(&self.dir).map_err(|e| self.io(e))? {
            let entry = entry.map_err(|e| self.io(e))?;
            let name = entry.file_name();
            let Some(id) = name
                .to_str()
                .and_then(|n| n.strip_suffix(".wasm"))
                .and_then(|n| n.parse::<ModuleId>().ok())
            else {
                continue;
            };
            let meta = entry.metadata().map_err(|e| self.io(e))?;
            let used = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
            entries.push((id, meta.len(), used));
        }
        entries.sort_by(|a, b| b.2.cmp(&a.2).then(a.0.cmp(&b.0)));
        Ok(entries)
    }

    /// Removes the least recently used modules, never `keep`, until the
    /// total fits.
    fn evict(&self, keep: &ModuleId) -> Result<(), StoreError> {
        let mut total = 0;
        for (id, size, _) in self.entries()? {
            total += size;
            if total > self.max_bytes && id != *keep {
                fs::remove_file(self.path(&id)).map_err(|e| self.io(e))?;
                let _ = fs::remove_file(self.signatures_path(&id));
                total -= size;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("colony-module-store-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn modules_are_kept_verified_and_bounded() {
        let dir = temp_dir("bounded");
        let store = ModuleStore::open(&dir, 100).expect("opens");
        let a = store.put(&[1; 40]).expect("fits");
        assert_eq!(store.get(&a).expect("reads"), Some(vec![1; 40]));
        assert_eq!(store.put(&[1; 40]).expect("again"), a);
        let b = store.put(&[2; 40]).expect("fits");
        // Last used: b an hour ago, a a minute ago; c now.
        let ago = |secs| SystemTime::now() - std::time::Duration::from_secs(secs);
        let touch = |id: &ModuleId, when| {
            fs::File::open(dir.join(format!("{id}.wasm")))
                .and_then(|f| f.set_modified(when))
                .expect("touch")
        };
        touch(&b, ago(3600));
        touch(&a, ago(60));
        let c = store.put(&[3; 40]).expect("fits");
        let held: Vec<ModuleId> = store.list().expect("lists").iter().map(|m| m.id).collect();
        assert_eq!(held, vec![c, a], "b was evicted");
        assert!(matches!(
            store.put(&[4; 101]),
            Err(StoreError::TooLarge {
                size: 101,
                max: 100
            })
        ));

        // A damaged file reads as missing and is removed.
        fs::write(dir.join(format!("{a}.wasm")), [9; 40]).expect("damage");
        assert_eq!(store.get(&a).expect("reads"), None);
        assert!(!dir.join(format!("{a}.wasm")).exists());
        // Unrelated files are ignored.
        fs::write(dir.join("notes.txt"), b"hi").expect("write");
        assert_eq!(store.list().expect("lists").len(), 1);
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn signatures_are_kept_beside_their_module_bounded_and_evicted_with_it() {
        let dir = temp_dir("signatures");
        let store = ModuleStore::open(&dir, 100).expect("opens");
        let a = store.put(&[1; 60]).expect("fits");
        assert_eq!(store.signatures(&a).expect("reads"), Vec::<u8>::new());
        store.put_signatures(&a, b"signed").expect("kept");
        assert_eq!(store.signatures(&a).expect("reads"), b"signed".to_vec());
        let too_many = vec![0; MAX_SIGNATURES_BYTES + 1];
        assert!(store.put_signatures(&a, &too_many).is_err());
        // A file grown past the bound on disk reads as no signatures.
        fs::write(dir.join(format!("{a}.sig")), &too_many).expect("grow");
        assert_eq!(store.signatures(&a).expect("reads"), Vec::<u8>::new());
        store.put_signatures(&a, b"signed").expect("kept");
        // Evicting the module takes its signatures too.
        let ago = SystemTime::now() - std::time::Duration::from_secs(3600);
        fs::File::open(dir.join(format!("{a}.wasm")))
            .and_then(|f| f.set_modified(ago))
            .expect("touch");
        store.put(&[2; 60]).expect("fits");
        assert!(!dir.join(format!("{a}.sig")).exists());
        let _ = fs::remove_dir_all(&dir);
    }
}
