//! One guest module and its units: the host side of the ABI in
//! `colony_guest::abi`.

use colony_core::divisible::{App, AppError, SharedVars, Step, StepContext, Unit};
use colony_guest::abi::{StepReport, ERROR, OK};
use colony_guest::codec::{decode, encode, Decode};
use colony_guest::SharedVar;
use wasmtime::{
    Engine, Instance, InstancePre, Linker, Memory, Module, ResourceLimiter, Store, Trap,
};

use crate::{ModuleId, SandboxLimits, EPOCH_TICK};

/// The ABI version this host speaks (`colony_guest::abi::VERSION`).
const ABI_VERSION: i32 = colony_guest::abi::VERSION;

/// The most shared variables a guest may report, and the longest name.
const MAX_SHARED_VARS: usize = 64;
const MAX_SHARED_NAME: usize = 128;

/// Exports every guest must have, with their parameter count (`i64` for
/// the step budget) — all return an `i32`.
const REQUIRED_EXPORTS: [(&str, usize); 17] = [
    ("colony_abi_version", 0),
    ("colony_input", 1),
    ("colony_output_ptr", 0),
    ("colony_output_len", 0),
    ("colony_name", 0),
    ("colony_parse_args", 0),
    ("colony_init", 0),
    ("colony_restore", 0),
    ("colony_step", 1),
    ("colony_divide", 0),
    ("colony_checkpoint", 0),
    ("colony_merge", 0),
    ("colony_initial_shared", 0),
    ("colony_verify", 0),
    ("colony_describe", 0),
    ("colony_output_json", 0),
    ("colony_last_panic", 0),
];

/// A compiled, checked guest module: an [`App`] whose calls each run in a
/// fresh instance, and whose units each own one.
pub struct GuestModule {
    id: ModuleId,
    app_name: String,
    guest_name: String,
    pre: InstancePre<GuestState>,
    engine: Engine,
    limits: SandboxLimits,
}

impl std::fmt::Debug for GuestModule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GuestModule")
            .field("id", &self.id)
            .field("guest_name", &self.guest_name)
            .finish_non_exhaustive()
    }
}

impl GuestModule {
    /// Compiles `bytes` and checks it is a guest: no imports, the ABI's
    /// exports, the ABI version, a name.
    pub(crate) fn compile(
        engine: &Engine,
        limits: &SandboxLimits,
        id: ModuleId,
        bytes: &[u8],
    ) -> Result<GuestModule, AppError> {
        let refuse = |why: String| AppError::Guest(format!("module {id} refused: {why}"));
        let module = Module::from_binary(engine, bytes)
            .map_err(|e| refuse(format!("not a valid WebAssembly module: {e:#}")))?;
        if let Some(import) = module.imports().next() {
            return Err(refuse(format!(
                "it imports {}::{}; guests may import nothing",
                import.module(),
                import.name()
            )));
        }
        for (name, params) in REQUIRED_EXPORTS {
            let export = module
                .get_export(name)
                .and_then(|e| e.func().cloned())
                .ok_or_else(|| refuse(format!("it does not export the function {name}")))?;
            let results: Vec<_> = export.results().collect();
            if export.params().len() != params
                || results.len() != 1
                || !matches!(results[0], wasmtime::ValType::I32)
            {
                return Err(refuse(format!("{name} has the wrong signature: {export}")));
            }
        }
        if module
            .get_export("memory")
            .and_then(|e| e.memory().cloned())
            .is_none()
        {
            return Err(refuse("it does not export its memory".into()));
        }
        let linker = Linker::new(engine);
        let pre = linker
            .instantiate_pre(&module)
            .map_err(|e| refuse(format!("{e:#}")))?;
        let mut module = GuestModule {
            id,
            app_name: id.app_name(),
            guest_name: String::new(),
            pre,
            engine: engine.clone(),
            limits: limits.clone(),
        };
        let mut probe = module.instance()?;
        let version = probe.call_raw("colony_abi_version", None)?;
        if version != ABI_VERSION {
            return Err(refuse(format!(
                "it speaks ABI version {version}, this peer {ABI_VERSION}"
            )));
        }
        let name = probe.call("name", "colony_name", None, None)?;
        module.guest_name = String::from_utf8(name)
            .ok()
            .filter(|n| !n.is_empty() && n.len() <= 64)
            .ok_or_else(|| refuse("its name is not 1 to 64 bytes of UTF-8".into()))?;
        Ok(module)
    }

    /// The module's id.
    pub fn id(&self) -> ModuleId {
        self.id
    }

    /// The name the guest gives itself (`Divisible::NAME`).
    pub fn guest_name(&self) -> &str {
        &self.guest_name
    }

    /// A fresh instance in its own store.
    fn instance(&self) -> Result<Instance_, AppError> {
        let mut store = Store::new(
            &self.engine,
            GuestState {
                memory_cap: self.limits.memory_bytes,
                denied: None,
            },
        );
        store.limiter(|state| state);
        let deadline_ticks = ticks(self.limits.call_deadline);
        store.set_epoch_deadline(deadline_ticks);
        let instance = match self.pre.instantiate(&mut store) {
            Ok(instance) => instance,
            Err(e) => {
                let why = match store.data().denied {
                    Some(asked) => format!(
                        "its initial memory of {} MiB is past the cap of {} MiB",
                        asked >> 20,
                        self.limits.memory_bytes >> 20
                    ),
                    None => format!("{e:#}"),
                };
                return Err(AppError::Guest(format!(
                    "module {} cannot be instantiated: {why}",
                    self.id
                )));
            }
        };
        let memory = instance
            .get_memory(&mut store, "memory")
            .ok_or_else(|| AppError::Guest(format!("module {} has no memory export", self.id)))?;
        Ok(Instance_ {
            store,
            instance,
            memory,
            deadline_ticks,
            call_deadline: self.limits.call_deadline,
            memory_cap: self.limits.memory_bytes,
            failed: None,
        })
    }

    /// Runs one stateless call in a fresh instance.
    fn call_once(
        &self,
        what: &str,
        export: &str,
        input: &[u8],
    ) -> Result<Result<Vec<u8>, String>, AppError> {
        self.instance()?
            .call_answer(what, export, None, Some(input))
    }
}

/// Epoch ticks for a deadline, rounded up, plus one for the tick in
/// progress.
fn ticks(deadline: std::time::Duration) -> u64 {
    let tick = EPOCH_TICK.as_millis().max(1);
    (deadline.as_millis().div_ceil(tick) as u64).saturating_add(1)
}

impl App for GuestModule {
    fn name(&self) -> &str {
        &self.app_name
    }

    fn parse_args(&self, args: &[String]) -> Result<Vec<u8>, AppError> {
        self.call_once("parse_args", "colony_parse_args", &encode(&args.to_vec()))?
            .map_err(AppError::BadParams)
    }

    fn init(&self, params: &[u8]) -> Result<Box<dyn Unit>, AppError> {
        let mut instance = self.instance()?;
        instance
            .call_answer("init", "colony_init", None, Some(params))?
            .map_err(AppError::BadParams)?;
        Ok(Box::new(GuestUnit { instance }))
    }

    fn restore(&self, state: &[u8]) -> Result<Box<dyn Unit>, AppError> {
        let mut instance = self.instance()?;
        instance
            .call_answer("restore", "colony_restore", None, Some(state))?
            .map_err(|reason| AppError::Corrupt {
                what: "work unit".into(),
                reason,
            })?;
        Ok(Box::new(GuestUnit { instance }))
    }

    fn merge(&self, a: &[u8], b: &[u8]) -> Result<Vec<u8>, AppError> {
        self.call_once("merge", "colony_merge", &encode(&(a.to_vec(), b.to_vec())))?
            .map_err(|reason| AppError::Corrupt {
                what: "partial result".into(),
                reason,
            })
    }

    fn initial_shared(&self, params: &[u8]) -> Result<SharedVars, AppError> {
        let answer = self
            .call_once("initial_shared", "colony_initial_shared", params)?
            .map_err(AppError::BadParams)?;
        let vars = decode_answer::<Vec<SharedVar>>("initial_shared", &answer)?;
        Ok(SharedVars::from_guest(checked_vars(vars)?))
    }

    fn verify(&self, params: &[u8], output: &[u8]) -> Result<Option<bool>, AppError> {
        let answer = self
            .call_once(
                "verify",
                "colony_verify",
                &encode(&(params.to_vec(), output.to_vec())),
            )?
            .map_err(AppError::Guest)?;
        decode_answer("verify", &answer)
    }

    fn describe(&self, params: &[u8], output: &[u8]) -> Result<String, AppError> {
        let answer = self
            .call_once(
                "describe",
                "colony_describe",
                &encode(&(params.to_vec(), output.to_vec())),
            )?
            .map_err(AppError::Guest)?;
        String::from_utf8(answer)
            .map_err(|_| AppError::Guest("describe answered text that is not UTF-8".into()))
    }

    fn output_json(&self, output: &[u8]) -> Result<serde_json::Value, AppError> {
        let answer = self
            .call_once("output_json", "colony_output_json", output)?
            .map_err(AppError::Guest)?;
        serde_json::from_slice(&answer).map_err(|e| {
            AppError::Guest(format!(
                "output_json answered something that is not JSON: {e}"
            ))
        })
    }
}

/// A running guest unit: one instance holding the unit's live state, so a
/// step costs no serialisation; checkpoints and divides serialise.
pub struct GuestUnit {
    instance: Instance_,
}

impl Unit for GuestUnit {
    fn step(&mut self, ctx: &mut StepContext<'_>) -> Result<Step<Vec<u8>>, AppError> {
        let shared = ctx.vars().to_guest();
        let budget = i64::try_from(ctx.budget()).unwrap_or(i64::MAX);
        let answer =
            self.instance
                .call("step", "colony_step", Some(budget), Some(&encode(&shared)))?;
        let report = decode_answer::<StepReport>("step", &answer)?;
        ctx.count(report.work);
        ctx.offer_guest(checked_vars(report.shared)?);
        Ok(match report.done {
            Some(output) => Step::Done(output),
            None => Step::Continue,
        })
    }

    fn divide(&mut self) -> Result<Option<Vec<u8>>, AppError> {
        let answer = self.instance.call("divide", "colony_divide", None, None)?;
        decode_answer("divide", &answer)
    }

    fn checkpoint(&mut self) -> Result<Vec<u8>, AppError> {
        self.instance
            .call("checkpoint", "colony_checkpoint", None, None)
    }
}

/// Shared variables from a guest, refused if there are too many or their
/// names are too long (they spread to every peer of the job).
fn checked_vars(vars: Vec<SharedVar>) -> Result<Vec<SharedVar>, AppError> {
    if vars.len() > MAX_SHARED_VARS {
        return Err(AppError::Guest(format!(
            "the guest reported {} shared variables, past the limit of {MAX_SHARED_VARS}",
            vars.len()
        )));
    }
    if let Some(var) = vars.iter().find(|v| v.name.len() > MAX_SHARED_NAME) {
        return Err(AppError::Guest(format!(
            "a shared variable's name is {} bytes, past the limit of {MAX_SHARED_NAME}",
            var.name.len()
        )));
    }
    Ok(vars)
}

fn decode_answer<T: Decode>(what: &str, bytes: &[u8]) -> Result<T, AppError> {
    decode(bytes)
        .map_err(|e| AppError::Guest(format!("{what} answered bytes that do not decode: {e}")))
}

/// What a guest's store holds: its memory cap, and the growth it refused.
struct GuestState {
    memory_cap: usize,
    denied: Option<usize>,
}

impl ResourceLimiter for GuestState {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.memory_cap {
            self.denied = Some(desired);
            // An error, not `false`: the guest traps at once rather than
            // seeing a failed allocation it may not handle.
            return Err(wasmtime::Error::msg("memory cap exceeded"));
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 100_000)
    }

    fn instances(&self) -> usize {
        1
    }

    fn tables(&self) -> usize {
        4
    }

    fn memories(&self) -> usize {
        1
    }
}

/// One instance in its own store. (Named with a trailing underscore to
/// keep it apart from wasmtime's `Instance`.)
struct Instance_ {
    store: Store<GuestState>,
    instance: Instance,
    memory: Memory,
    deadline_ticks: u64,
    call_deadline: std::time::Duration,
    memory_cap: usize,
    /// Why the instance failed; it runs nothing after.
    failed: Option<String>,
}

impl Instance_ {
    /// Calls `export` (with the step budget if given) after writing
    /// `input`, and returns its answer; a guest-reported error is
    /// [`AppError::Guest`].
    fn call(
        &mut self,
        what: &str,
        export: &str,
        budget: Option<i64>,
        input: Option<&[u8]>,
    ) -> Result<Vec<u8>, AppError> {
        self.call_answer(what, export, budget, input)?
            .map_err(|message| AppError::Guest(format!("{what}: {message}")))
    }

    /// As [`Instance_::call`], with the guest's own error kept apart
    /// (`Ok(Err(message))`) from a trap or a broken ABI (`Err`).
    fn call_answer(
        &mut self,
        what: &str,
        export: &str,
        budget: Option<i64>,
        input: Option<&[u8]>,
    ) -> Result<Result<Vec<u8>, String>, AppError> {
        if let Some(why) = &self.failed {
            return Err(AppError::Guest(format!(
                "{what}: the unit failed before: {why}"
            )));
        }
        let result = self.try_call(export, budget, input);
        result.map_err(|error| {
            let why = self.explain(what, error);
            self.failed = Some(why.clone());
            AppError::Guest(why)
        })
    }

    fn try_call(
        &mut self,
        export: &str,
        budget: Option<i64>,
        input: Option<&[u8]>,
    ) -> Result<Result<Vec<u8>, String>, CallError> {
        if let Some(input) = input {
            let len = i32::try_from(input.len())
                .map_err(|_| CallError::Abi(format!("an input of {} bytes", input.len())))?;
            let ptr = self.call_raw_inner("colony_input", Some(i64::from(len)))?;
            self.memory
                .write(&mut self.store, ptr as u32 as usize, input)
                .map_err(|_| {
                    CallError::Abi("colony_input gave a buffer outside its memory".into())
                })?;
        }
        let code = self.call_raw_inner(export, budget)?;
        let ptr = self.call_raw_inner("colony_output_ptr", None)? as u32 as usize;
        let len = self.call_raw_inner("colony_output_len", None)? as u32 as usize;
        if len > self.memory.data_size(&self.store) {
            return Err(CallError::Abi(format!("an output of {len} bytes")));
        }
        let mut output = vec![0; len];
        self.memory
            .read(&self.store, ptr, &mut output)
            .map_err(|_| CallError::Abi("its output lies outside its memory".into()))?;
        match code {
            OK => Ok(Ok(output)),
            ERROR => Ok(Err(String::from_utf8_lossy(&output).into_owned())),
            other => Err(CallError::Abi(format!("{export} returned {other}"))),
        }
    }

    /// Calls an export taking nothing or the step budget, with a fresh
    /// deadline.
    fn call_raw_inner(&mut self, export: &str, arg: Option<i64>) -> Result<i32, CallError> {
        self.store.set_epoch_deadline(self.deadline_ticks);
        let result = match arg {
            None => self
                .instance
                .get_typed_func::<(), i32>(&mut self.store, export)
                .and_then(|f| f.call(&mut self.store, ())),
            Some(arg) if export == "colony_input" => self
                .instance
                .get_typed_func::<i32, i32>(&mut self.store, export)
                .and_then(|f| f.call(&mut self.store, arg as i32)),
            Some(arg) => self
                .instance
                .get_typed_func::<i64, i32>(&mut self.store, export)
                .and_then(|f| f.call(&mut self.store, arg)),
        };
        result.map_err(CallError::Wasm)
    }

    /// The probe's call of an export returning a plain number.
    fn call_raw(&mut self, export: &str, arg: Option<i64>) -> Result<i32, AppError> {
        self.call_raw_inner(export, arg).map_err(|error| {
            let why = self.explain(export, error);
            AppError::Guest(why)
        })
    }

    /// Why a call failed, in a sentence for the submitter.
    fn explain(&mut self, what: &str, error: CallError) -> String {
        let error = match error {
            CallError::Abi(why) => return format!("{what}: the guest broke the ABI: {why}"),
            CallError::Wasm(error) => error,
        };
        if let Some(asked) = self.store.data_mut().denied.take() {
            return format!(
                "{what}: the guest grew its memory to {} MiB, past its cap of {} MiB; stopped",
                asked.div_ceil(1 << 20),
                self.memory_cap >> 20
            );
        }
        match error.downcast_ref::<Trap>() {
            Some(Trap::Interrupt) => format!(
                "{what}: the guest ran past its deadline of {:?}; stopped",
                self.call_deadline
            ),
            Some(trap) => {
                let panic = self.last_panic();
                if panic.is_empty() {
                    format!("{what}: the guest trapped: {trap}")
                } else {
                    format!("{what}: the guest panicked: {panic}")
                }
            }
            None => format!("{what}: {error:#}"),
        }
    }

    /// The guest's last panic message, if it left one (best effort: the
    /// instance may be too broken to answer).
    fn last_panic(&mut self) -> String {
        match self.try_call("colony_last_panic", None, None) {
            Ok(Ok(message)) => {
                let mut message = message;
                message.truncate(1024);
                String::from_utf8_lossy(&message).into_owned()
            }
            _ => String::new(),
        }
    }
}

enum CallError {
    Wasm(wasmtime::Error),
    Abi(String),
}
