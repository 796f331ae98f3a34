//! The sandbox against hostile guests: each misbehaviour is a clear error,
//! the unit stops, and the same sandbox goes on running good guests.

use std::sync::Arc;
use std::time::{Duration, Instant};

use colony_core::divisible::{run_sequential, App, AppError, SharedVars, Step, StepContext};
use colony_guest_modules::HOSTILE;
use colony_wasm::{GuestModule, ModuleId, Sandbox, SandboxLimits};

fn sandbox(limits: SandboxLimits) -> Sandbox {
    Sandbox::new(limits).expect("a sandbox")
}

fn small_limits() -> SandboxLimits {
    SandboxLimits {
        memory_bytes: 32 << 20,
        call_deadline: Duration::from_millis(300),
        ..SandboxLimits::default()
    }
}

fn args(text: &str) -> Vec<String> {
    text.split_whitespace().map(String::from).collect()
}

fn guest_error(result: Result<impl std::fmt::Debug, AppError>) -> String {
    match result {
        Err(AppError::Guest(message)) => message,
        other => panic!("expected a guest error, got {other:?}"),
    }
}

/// Steps a unit of the hostile guest once with `mode`.
fn step_once(module: &GuestModule, mode: &str) -> Result<Step<Vec<u8>>, AppError> {
    let params = module.parse_args(&args(mode))?;
    let mut unit = module.init(&params)?;
    let mut shared = SharedVars::default();
    unit.step(&mut StepContext::new(&mut shared, 1_000))
}

fn sum_works(module: &GuestModule) {
    let params = module.parse_args(&args("sum 1000")).expect("params");
    let (output, work) = run_sequential(module, &params, 64).expect("runs");
    assert_eq!(module.output_json(&output).expect("json"), 500_500);
    assert_eq!(work, 1000);
}

#[test]
fn a_good_guest_runs_checkpoints_and_restores() {
    let sandbox = sandbox(SandboxLimits::default());
    let module = sandbox.load(HOSTILE).expect("loads");
    assert_eq!(module.guest_name(), "hostile");
    assert_eq!(module.id(), ModuleId::of(HOSTILE));
    assert_eq!(module.name(), format!("wasm:{}", ModuleId::of(HOSTILE)));
    sum_works(&module);

    let params = module.parse_args(&args("sum 100")).expect("params");
    let mut unit = module.init(&params).expect("init");
    let mut shared = SharedVars::default();
    assert_eq!(
        unit.step(&mut StepContext::new(&mut shared, 40)),
        Ok(Step::Continue)
    );
    let state = unit.checkpoint().expect("checkpoint");
    let mut restored = module.restore(&state).expect("restore");
    let output = loop {
        if let Step::Done(output) = restored
            .step(&mut StepContext::new(&mut shared, 40))
            .expect("step")
        {
            break output;
        }
    };
    assert_eq!(module.output_json(&output).expect("json"), 5050);
    assert_eq!(module.describe(&params, &output).expect("text"), "sum 5050");
}

#[test]
fn a_guest_that_never_returns_is_stopped_at_its_deadline() {
    let limits = small_limits();
    let deadline = limits.call_deadline;
    let sandbox = sandbox(limits);
    let module = sandbox.load(HOSTILE).expect("loads");
    let started = Instant::now();
    let message = guest_error(step_once(&module, "spin"));
    let took = started.elapsed();
    assert!(message.contains("ran past its deadline"), "{message}");
    assert!(
        took >= deadline,
        "stopped after {took:?}, before the deadline"
    );
    assert!(
        took < deadline + Duration::from_secs(1),
        "stopped only after {took:?}"
    );
    sum_works(&module);
}

#[test]
fn a_guest_growing_past_its_cap_fails_its_unit_and_nothing_else() {
    let sandbox = sandbox(small_limits());
    let module = sandbox.load(HOSTILE).expect("loads");
    let params = module.parse_args(&args("hog 4")).expect("params");
    let mut unit = module.init(&params).expect("init");
    let mut shared = SharedVars::default();
    let mut steps = 0;
    let message = loop {
        match unit.step(&mut StepContext::new(&mut shared, 1)) {
            Ok(Step::Continue) => steps += 1,
            Ok(Step::Done(_)) => panic!("the hog never finishes"),
            Err(AppError::Guest(message)) => break message,
            Err(other) => panic!("unexpected {other}"),
        }
        assert!(steps < 100, "32 MiB should be reached in 8 steps of 4 MiB");
    };
    assert!(message.contains("past its cap of 32 MiB"), "{message}");
    assert!(steps >= 4, "failed after only {steps} steps");
    // The unit stays failed; the module still serves.
    let again = guest_error(unit.checkpoint());
    assert!(again.contains("failed before"), "{again}");
    sum_works(&module);
}

#[test]
fn a_panicking_guest_fails_with_its_message() {
    let sandbox = sandbox(small_limits());
    let module = sandbox.load(HOSTILE).expect("loads");
    let message = guest_error(step_once(&module, "panic"));
    assert!(
        message.contains("panicked") && message.contains("panics on purpose"),
        "{message}"
    );
    sum_works(&module);
}

#[test]
fn a_guest_error_is_a_bad_params_error() {
    let sandbox = sandbox(SandboxLimits::default());
    let module = sandbox.load(HOSTILE).expect("loads");
    match module.parse_args(&args("explode")) {
        Err(AppError::BadParams(message)) => assert!(message.contains("usage"), "{message}"),
        other => panic!("{other:?}"),
    }
    match module.restore(&[1, 2, 3]) {
        Err(AppError::Corrupt { what, .. }) => assert_eq!(what, "work unit"),
        Err(other) => panic!("{other}"),
        Ok(_) => panic!("three bytes restored"),
    }
}

/// Every export the ABI asks for, as stubs returning `value`.
fn stub_exports(value: i32, output_len: i32) -> String {
    let mut wat = String::new();
    for name in [
        "colony_output_ptr",
        "colony_name",
        "colony_parse_args",
        "colony_init",
        "colony_restore",
        "colony_divide",
        "colony_checkpoint",
        "colony_merge",
        "colony_initial_shared",
        "colony_verify",
        "colony_describe",
        "colony_output_json",
        "colony_last_panic",
    ] {
        wat.push_str(&format!(
            "(func (export \"{name}\") (result i32) i32.const {value})\n"
        ));
    }
    wat.push_str(&format!(
        "(func (export \"colony_output_len\") (result i32) i32.const {output_len})\n\
         (func (export \"colony_input\") (param i32) (result i32) i32.const 0)\n\
         (func (export \"colony_step\") (param i64) (result i32) i32.const 0)\n"
    ));
    wat
}

fn module_of(wat: &str) -> Vec<u8> {
    wat::parse_str(wat).expect("valid text")
}

fn refused(sandbox: &Sandbox, bytes: &[u8]) -> String {
    guest_error(sandbox.load(bytes).map(|m| m.id()))
}

#[test]
fn malformed_and_non_conforming_modules_are_refused_with_the_reason() {
    let sandbox = sandbox(small_limits());
    let garbage = refused(&sandbox, b"this is not wasm");
    assert!(
        garbage.contains("not a valid WebAssembly module"),
        "{garbage}"
    );
    let truncated = refused(&sandbox, &HOSTILE[..HOSTILE.len() / 2]);
    assert!(
        truncated.contains("not a valid WebAssembly module"),
        "{truncated}"
    );

    let imports = refused(
        &sandbox,
        &module_of(
            "(module (import \"wasi_snapshot_preview1\" \"fd_write\" (func (param i32 i32 i32 i32) (result i32))))",
        ),
    );
    assert!(
        imports.contains("imports wasi_snapshot_preview1::fd_write"),
        "{imports}"
    );

    let empty = refused(&sandbox, &module_of("(module)"));
    assert!(empty.contains("does not export the function"), "{empty}");

    let version = format!(
        "(module (memory (export \"memory\") 1) {} (func (export \"colony_abi_version\") (result i32) i32.const 99))",
        stub_exports(0, 0)
    );
    let version = refused(&sandbox, &module_of(&version));
    assert!(version.contains("ABI version 99"), "{version}");

    let huge_memory = format!(
        "(module (memory (export \"memory\") 1000) {} (func (export \"colony_abi_version\") (result i32) i32.const 1))",
        stub_exports(0, 0)
    );
    let huge_memory = refused(&sandbox, &module_of(&huge_memory));
    assert!(huge_memory.contains("past the cap"), "{huge_memory}");

    // An output length beyond its memory is a broken ABI, not a panic or
    // a huge allocation.
    let liar = format!(
        "(module (memory (export \"memory\") 1) {} (func (export \"colony_abi_version\") (result i32) i32.const 1))",
        stub_exports(0, i32::MAX)
    );
    let liar = refused(&sandbox, &module_of(&liar));
    assert!(liar.contains("broke the ABI"), "{liar}");

    let oversized = Sandbox::new(SandboxLimits {
        module_bytes: 1024,
        ..SandboxLimits::default()
    })
    .expect("a sandbox");
    let big = refused(&oversized, HOSTILE);
    assert!(big.contains("past the limit of 1024"), "{big}");

    // After all that, the sandbox still runs a good guest.
    sum_works(&sandbox.load(HOSTILE).expect("loads"));
}

#[test]
fn a_module_is_compiled_once() {
    let sandbox = sandbox(SandboxLimits::default());
    let first = sandbox.load(HOSTILE).expect("loads");
    let second = sandbox.load(HOSTILE).expect("loads");
    assert!(Arc::ptr_eq(&first, &second));
    assert!(sandbox.cached(&ModuleId::of(HOSTILE)).is_some());
    assert!(sandbox.cached(&ModuleId::of(b"other")).is_none());
}
