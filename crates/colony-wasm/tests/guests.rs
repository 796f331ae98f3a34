//! The shipped guests, run in the sandbox, give the native applications'
//! results, work counts and texts on the same inputs, and divide,
//! checkpoint and restore through the sandbox like native units.

use colony_core::divisible::{run_sequential, App, SharedVars, Step, StepContext, Unit};
use colony_guest_modules::{FLOWSHOP, NQUEENS};
use colony_wasm::{Sandbox, SandboxLimits};

fn args(text: &str) -> Vec<String> {
    text.split_whitespace().map(String::from).collect()
}

/// Runs `args` sequentially on the native app and the guest; both results
/// as JSON, both work counts, both descriptions.
fn both(
    native: &dyn App,
    guest: &dyn App,
    args: &[String],
    budget: u64,
) -> [(String, u64, String); 2] {
    [native, guest].map(|app| {
        let params = app.parse_args(args).expect("params");
        let (output, work) = run_sequential(app, &params, budget).expect("runs");
        let json = app.output_json(&output).expect("json").to_string();
        let text = app.describe(&params, &output).expect("text");
        assert_eq!(
            app.verify(&params, &output).expect("verify"),
            Some(true),
            "{text}"
        );
        (json, work, text)
    })
}

#[test]
fn nqueens_counts_as_the_native_app() {
    let sandbox = Sandbox::new(SandboxLimits::default()).expect("sandbox");
    let guest = sandbox.load(NQUEENS).expect("loads");
    let examples = colony_apps::examples();
    let native = examples.get("nqueens").expect("native");
    for n in 1..=12 {
        let [native, guest] = both(native.as_ref(), guest.as_ref(), &[n.to_string()], 5_000);
        assert_eq!(guest, native, "N = {n}");
    }
    let params = guest.parse_args(&args("12")).expect("params");
    let (output, _) = run_sequential(guest.as_ref(), &params, 100_000).expect("runs");
    assert_eq!(guest.output_json(&output).expect("json"), 14200);
    match guest.parse_args(&args("0")) {
        Err(colony_core::divisible::AppError::BadParams(message)) => {
            assert_eq!(
                message,
                native
                    .parse_args(&args("0"))
                    .expect_err("bad")
                    .to_string()
                    .trim_start_matches("bad job parameters: ")
            )
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn flowshop_reaches_the_native_optimum_with_the_same_search() {
    let sandbox = Sandbox::new(SandboxLimits::default()).expect("sandbox");
    let guest = sandbox.load(FLOWSHOP).expect("loads");
    let examples = colony_apps::examples();
    let native = examples.get("flowshop").expect("native");
    for instance in ["ta001", "ta002", "ta003"] {
        let [native_run, guest_run] = both(native.as_ref(), guest.as_ref(), &args(instance), 200);
        assert_eq!(guest_run, native_run, "{instance}");
        let params = guest.parse_args(&args(instance)).expect("params");
        assert_eq!(
            guest.initial_shared(&params).expect("shared"),
            native
                .initial_shared(&native.parse_args(&args(instance)).expect("params"))
                .expect("shared"),
        );
    }
}

/// Steps `unit` to its end with a shared context.
fn finish(unit: &mut Box<dyn Unit>, shared: &mut SharedVars, budget: u64) -> Vec<u8> {
    loop {
        if let Step::Done(output) = unit
            .step(&mut StepContext::new(shared, budget))
            .expect("steps")
        {
            return output;
        }
    }
}

#[test]
fn guest_units_divide_checkpoint_and_restore_through_the_sandbox() {
    let sandbox = Sandbox::new(SandboxLimits::default()).expect("sandbox");
    let guest = sandbox.load(FLOWSHOP).expect("loads");
    let params = guest.parse_args(&args("ta005")).expect("params");
    let mut shared = guest.initial_shared(&params).expect("shared");
    let mut unit = guest.init(&params).expect("init");
    let mut parts = Vec::new();
    let output = loop {
        if let Step::Done(output) = unit
            .step(&mut StepContext::new(&mut shared, 100))
            .expect("steps")
        {
            break output;
        }
        if parts.len() < 3 {
            if let Some(part) = unit.divide().expect("divides") {
                parts.push(guest.restore(&part).expect("a part restores"));
            }
        }
        // Restart from the checkpoint after every step.
        let state = unit.checkpoint().expect("checkpoint");
        unit = guest.restore(&state).expect("restores");
    };
    assert!(!parts.is_empty(), "ta005 divides");
    let merged = parts.iter_mut().fold(output, |acc, part| {
        let other = finish(part, &mut shared, 100);
        guest.merge(&acc, &other).expect("merges")
    });
    assert_eq!(guest.verify(&params, &merged).expect("verify"), Some(true));
}
