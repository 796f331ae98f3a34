//! WebAssembly applications for Colony: a guest module built with the
//! `colony-guest` SDK becomes an [`App`](colony_core::divisible::App) like
//! any native application, so checkpoints, work stealing and recovery work
//! unchanged, while wasmtime keeps it from harming the peer that runs it.
//!
//! The sandbox ([`Sandbox`]):
//! - **No host access.** A module may import nothing: no clock, file,
//!   network or environment; it sees only the bytes the ABI hands it
//!   (`colony_guest::abi`).
//! - **Memory cap** per instance ([`SandboxLimits::memory_bytes`]): a
//!   growth past it traps, and the unit fails with the size it asked for.
//! - **Preemption** by epoch interruption: a call that runs past
//!   [`SandboxLimits::call_deadline`] is stopped, so a guest that never
//!   returns fails its unit instead of holding a core.
//! - **Failures are values.** A trap, an exhausted limit, a broken ABI or an
//!   error the guest reports comes back as [`AppError::Guest`]; the peer
//!   goes on.
//!
//! A module is identified by the BLAKE3 hash of its bytes ([`ModuleId`]);
//! compiled modules are kept ([`Sandbox::load`]) so a second instantiation
//! costs microseconds.

mod guest;
mod module_id;
mod store;

pub use guest::{GuestModule, GuestUnit};
pub use module_id::{ModuleId, APP_PREFIX};
pub use store::{ModuleStore, StoreError, StoredModule, MAX_SIGNATURES_BYTES};

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use colony_core::divisible::{App, AppError, AppSource};
use wasmtime::{Config, Engine};

/// How often the epoch ticks: the resolution of call deadlines.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Compiled modules a sandbox keeps before forgetting the oldest.
const COMPILED_MODULES_KEPT: usize = 32;

/// What a guest may use.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SandboxLimits {
    /// The most linear memory one instance may have.
    pub memory_bytes: usize,
    /// The longest one call into a guest may run (a step is normally a few
    /// milliseconds).
    pub call_deadline: Duration,
    /// The largest module accepted.
    pub module_bytes: usize,
    /// The most WebAssembly stack a call may use.
    pub stack_bytes: usize,
}

impl Default for SandboxLimits {
    fn default() -> Self {
        SandboxLimits {
            memory_bytes: 256 << 20,
            call_deadline: Duration::from_secs(2),
            module_bytes: 16 << 20,
            stack_bytes: 1 << 20,
        }
    }
}

/// Compiles, caches and runs guest modules under one set of limits. One
/// per peer; cheap to share behind an [`Arc`].
pub struct Sandbox {
    engine: Engine,
    limits: SandboxLimits,
    compiled: Mutex<CompiledModules>,
}

#[derive(Default)]
struct CompiledModules {
    modules: HashMap<ModuleId, Arc<GuestModule>>,
    /// Load order, oldest first, for eviction.
    order: Vec<ModuleId>,
}

impl Sandbox {
    /// A sandbox with `limits`; starts the thread that ticks the epoch (it
    /// ends when the sandbox is dropped).
    pub fn new(limits: SandboxLimits) -> Result<Sandbox, AppError> {
        let mut config = Config::new();
        config.epoch_interruption(true);
        config.max_wasm_stack(limits.stack_bytes);
        let engine = Engine::new(&config)
            .map_err(|e| AppError::Guest(format!("cannot start the WebAssembly engine: {e}")))?;
        let weak = engine.weak();
        std::thread::Builder::new()
            .name("colony-wasm-epoch".into())
            .spawn(move || loop {
                std::thread::sleep(EPOCH_TICK);
                match weak.upgrade() {
                    Some(engine) => engine.increment_epoch(),
                    None => break,
                }
            })
            .map_err(|e| AppError::Guest(format!("cannot start the epoch thread: {e}")))?;
        Ok(Sandbox {
            engine,
            limits,
            compiled: Mutex::new(CompiledModules::default()),
        })
    }

    /// The limits guests run under.
    pub fn limits(&self) -> &SandboxLimits {
        &self.limits
    }

    /// The module with these bytes, compiled and checked (no imports, the
    /// ABI's exports, a name) — or the one compiled before.
    pub fn load(&self, bytes: &[u8]) -> Result<Arc<GuestModule>, AppError> {
        let id = ModuleId::of(bytes);
        if let Some(module) = self.cached(&id) {
            return Ok(module);
        }
        if bytes.len() > self.limits.module_bytes {
            return Err(AppError::Guest(format!(
                "module {id} is {} bytes, past the limit of {}",
                bytes.len(),
                self.limits.module_bytes
            )));
        }
        let module = Arc::new(GuestModule::compile(&self.engine, &self.limits, id, bytes)?);
        let mut compiled = self.lock();
        if compiled.modules.insert(id, module.clone()).is_none() {
            compiled.order.push(id);
        }
        while compiled.order.len() > COMPILED_MODULES_KEPT {
            let oldest = compiled.order.remove(0);
            compiled.modules.remove(&oldest);
        }
        Ok(module)
    }

    /// The compiled module `id`, if loaded and not forgotten.
    pub fn cached(&self, id: &ModuleId) -> Option<Arc<GuestModule>> {
        self.lock().modules.get(id).cloned()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, CompiledModules> {
        // The map stays consistent whatever panicked while it was held.
        self.compiled
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Decides whether this peer runs module `id`, given the signatures kept
/// for it (as [`ModuleStore::signatures`] returns them): `Err` says why
/// not, naming who signed it and whom the peer trusts.
pub type Admission = dyn Fn(&ModuleId, &[u8]) -> Result<(), String> + Send + Sync;

/// Admission verdicts remembered before they are all forgotten.
const VERDICTS_KEPT: usize = 1024;

/// A peer's guest applications: modules in its [`ModuleStore`], compiled
/// by its [`Sandbox`] when a job names them (`wasm:<id>`) and its
/// admission allows them. Add it to the peer's registry with
/// `AppRegistry::add_source`.
pub struct GuestApps {
    sandbox: Sandbox,
    store: ModuleStore,
    admission: Box<Admission>,
    verdicts: Mutex<HashMap<ModuleId, Result<(), String>>>,
}

impl GuestApps {
    /// Guest applications from `store`, run in `sandbox` when `admission`
    /// allows them.
    pub fn new(sandbox: Sandbox, store: ModuleStore, admission: Box<Admission>) -> GuestApps {
        GuestApps {
            sandbox,
            store,
            admission,
            verdicts: Mutex::new(HashMap::new()),
        }
    }

    /// Replaces the signatures kept for module `id` and judges it again.
    pub fn set_signatures(&self, id: &ModuleId, signatures: &[u8]) -> Result<(), StoreError> {
        self.store.put_signatures(id, signatures)?;
        self.lock_verdicts().remove(id);
        Ok(())
    }

    /// Whether this peer's admission allows module `id`, as judged from its
    /// kept signatures (remembered until they change).
    pub fn admitted(&self, id: &ModuleId) -> Result<(), String> {
        if let Some(verdict) = self.lock_verdicts().get(id) {
            return verdict.clone();
        }
        let verdict = match self.store.signatures(id) {
            Ok(signatures) => (self.admission)(id, &signatures),
            Err(e) => Err(format!("cannot read the signatures of module {id}: {e}")),
        };
        let mut verdicts = self.lock_verdicts();
        if verdicts.len() >= VERDICTS_KEPT {
            verdicts.clear();
        }
        verdicts.insert(*id, verdict.clone());
        verdict
    }

    fn lock_verdicts(&self) -> std::sync::MutexGuard<'_, HashMap<ModuleId, Result<(), String>>> {
        // A map of verdicts stays consistent whatever panicked while held.
        self.verdicts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The module store.
    pub fn store(&self) -> &ModuleStore {
        &self.store
    }

    /// The sandbox.
    pub fn sandbox(&self) -> &Sandbox {
        &self.sandbox
    }

    /// Checks `bytes` is a guest this peer can run, stores it and returns
    /// the loaded module.
    pub fn publish(&self, bytes: &[u8]) -> Result<Arc<GuestModule>, AppError> {
        let module = self.sandbox.load(bytes)?;
        self.store
            .put(bytes)
            .map_err(|e| AppError::Guest(format!("cannot store module {}: {e}", module.id())))?;
        Ok(module)
    }

    /// Module `id`, compiled, if this peer holds it and its admission
    /// allows it.
    pub fn module(&self, id: &ModuleId) -> Result<Arc<GuestModule>, AppError> {
        let untrusted = |why| AppError::Untrusted(id.to_string(), why);
        if let Some(module) = self.sandbox.cached(id) {
            self.admitted(id).map_err(untrusted)?;
            return Ok(module);
        }
        match self.store.get(id) {
            Ok(Some(bytes)) => {
                self.admitted(id).map_err(untrusted)?;
                self.sandbox.load(&bytes)
            }
            Ok(None) => Err(AppError::ModuleMissing(id.to_string())),
            Err(e) => Err(AppError::Guest(format!("cannot read module {id}: {e}"))),
        }
    }
}

impl AppSource for GuestApps {
    fn lookup(&self, name: &str) -> Option<Result<Arc<dyn App>, AppError>> {
        let id = ModuleId::from_app_name(name)?;
        Some(
            id.map_err(AppError::UnknownApp)
                .and_then(|id| self.module(&id))
                .map(|module| module as Arc<dyn App>),
        )
    }
}
