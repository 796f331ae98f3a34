//! What a peer may send the shipped applications — unit states (in
//! assignments, checkpoints and divides), job parameters, and partial
//! results — as arbitrary bytes, as edited valid encodings, and as
//! well-typed states with extreme numbers. Restoring, stepping, dividing,
//! checkpointing, merging, verifying and describing must each end in a
//! value or an error: never a panic, never an allocation sized by a number
//! in the input rather than by the job.
//!
//! Each property runs a fixed number of cases (`PROPTEST_CASES` raises
//! them), a few seconds in a debug build.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use colony_core::divisible::{App, SharedVars, Step, StepContext, Unit};
use colony_guest::codec::encode;
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;

// ---------------------------------------------------------------------------
// Allocation guard: the largest single allocation the test binary made.

struct Tracking;

static LARGEST_ALLOC: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Tracking {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LARGEST_ALLOC.fetch_max(layout.size(), Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LARGEST_ALLOC.fetch_max(new_size, Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Tracking = Tracking;

/// The largest legitimate allocation is matmul's B for the largest side
/// (4096² f64, 128 MiB); anything beyond is sized by a hostile number.
const ALLOC_LIMIT: usize = 160 << 20;

fn check_allocations() -> Result<(), TestCaseError> {
    let largest = LARGEST_ALLOC.load(Ordering::Relaxed);
    prop_assert!(
        largest <= ALLOC_LIMIT,
        "an allocation of {largest} bytes was made"
    );
    Ok(())
}

fn cases(n: u32) -> ProptestConfig {
    let n = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(n);
    ProptestConfig {
        cases: n,
        // The regression inputs found so far are explicit tests below.
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

const APPS: [&str; 3] = ["flowshop", "nqueens", "matmul"];

fn app(name: &str) -> Arc<dyn App> {
    colony_apps::examples()
        .get(name)
        .unwrap_or_else(|e| panic!("{name} is shipped: {e}"))
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

/// Valid parameters of each app, small enough to step in a test.
fn params_of(name: &str) -> Vec<Vec<u8>> {
    let app = app(name);
    let lists: &[&[&str]] = match name {
        "flowshop" => &[&["ta001"], &["ta011"]],
        "nqueens" => &[&["1"], &["8"], &["32"]],
        _ => &[&["1"], &["5"], &["33", "--seed", "7"]],
    };
    lists
        .iter()
        .map(|a| app.parse_args(&args(a)).expect("valid arguments"))
        .collect()
}

/// Encoded values of each app, by name.
type PerApp = Vec<(&'static str, Vec<Vec<u8>>)>;

/// Valid states of each app: the initial unit, a unit stepped a little, a
/// divided part and what it left (computed once).
fn states_of(name: &str) -> &'static [Vec<u8>] {
    static STATES: OnceLock<PerApp> = OnceLock::new();
    let all = STATES.get_or_init(|| APPS.iter().map(|n| (*n, make_states(n))).collect());
    all.iter().find(|(n, _)| *n == name).map_or(&[], |(_, s)| s)
}

fn make_states(name: &str) -> Vec<Vec<u8>> {
    let app = app(name);
    let mut states = Vec::new();
    for params in params_of(name) {
        let Ok(mut unit) = app.init(&params) else {
            continue;
        };
        states.push(unit.checkpoint().unwrap());
        let mut shared = app.initial_shared(&params).unwrap_or_default();
        let mut ctx = StepContext::new(&mut shared, 50);
        let _ = unit.step(&mut ctx);
        states.push(unit.checkpoint().unwrap());
        if let Some(part) = unit.divide().unwrap() {
            states.push(part);
            states.push(unit.checkpoint().unwrap());
        }
    }
    states
}

/// Valid partial results of each app (computed once).
fn outputs_of(name: &str) -> &'static [Vec<u8>] {
    static OUTPUTS: OnceLock<PerApp> = OnceLock::new();
    let all = OUTPUTS.get_or_init(|| APPS.iter().map(|n| (*n, make_outputs(n))).collect());
    all.iter().find(|(n, _)| *n == name).map_or(&[], |(_, s)| s)
}

fn make_outputs(name: &str) -> Vec<Vec<u8>> {
    let app = app(name);
    let mut outputs = Vec::new();
    for state in states_of(name) {
        if let Ok(mut unit) = app.restore(state) {
            if let Some(out) = run(&mut unit, 10_000, 50) {
                outputs.push(out);
            }
        }
    }
    outputs
}

/// Steps a unit at most `steps` times; its result if it finished.
fn run(unit: &mut Box<dyn Unit>, budget: u64, steps: usize) -> Option<Vec<u8>> {
    let mut shared = SharedVars::default();
    for _ in 0..steps {
        let mut ctx = StepContext::new(&mut shared, budget);
        if let Step::Done(out) = unit.step(&mut ctx).unwrap() {
            return Some(out);
        }
    }
    None
}

/// Everything a worker does with a state a peer sent: restore it, step it,
/// divide it, checkpoint it and restore the checkpoint and the part.
fn exercise_state(name: &str, state: &[u8]) {
    let app = app(name);
    let Ok(mut unit) = app.restore(state) else {
        return;
    };
    let done = run(&mut unit, 200, 3);
    if done.is_none() {
        if let Some(part) = unit.divide().unwrap() {
            if let Ok(mut part) = app.restore(&part) {
                let _ = run(&mut part, 200, 2);
            }
        }
        let checkpoint = unit.checkpoint().unwrap();
        if let Ok(mut again) = app.restore(&checkpoint) {
            let _ = run(&mut again, 200, 2);
        }
    }
    if let Some(out) = done {
        let _ = app.merge(&out, &out);
        let _ = app.output_json(&out);
    }
}

/// Everything a primary or a submitter does with parameters and results a
/// peer sent.
fn exercise_params_and_output(name: &str, params: &[u8], output: &[u8]) {
    let app = app(name);
    if let Ok(mut unit) = app.init(params) {
        let _ = run(&mut unit, 100, 1);
    }
    let _ = app.initial_shared(params);
    let _ = app.verify(params, output);
    let _ = app.describe(params, output);
    let _ = app.merge(output, output);
    let _ = app.output_json(output);
}

// ---------------------------------------------------------------------------
// Byte mutations of valid encodings.

#[derive(Clone, Debug)]
enum Edit {
    Flip(usize, u8),
    Set(usize, u8),
    Insert(usize, u8),
    Remove(usize),
    Truncate(usize),
    /// A byte becomes the longest varint: a huge length or number.
    Huge(usize),
}

fn edits() -> impl Strategy<Value = Vec<Edit>> {
    let edit = prop_oneof![
        (any::<usize>(), 0u8..8).prop_map(|(i, b)| Edit::Flip(i, b)),
        (
            any::<usize>(),
            prop_oneof![Just(0u8), Just(0xff), Just(0x7f), Just(0x80), any::<u8>()]
        )
            .prop_map(|(i, b)| Edit::Set(i, b)),
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Edit::Insert(i, b)),
        any::<usize>().prop_map(Edit::Remove),
        any::<usize>().prop_map(Edit::Truncate),
        any::<usize>().prop_map(Edit::Huge),
    ];
    proptest::collection::vec(edit, 1..5)
}

fn apply_edits(mut bytes: Vec<u8>, edits: &[Edit]) -> Vec<u8> {
    for e in edits {
        let len = bytes.len();
        match *e {
            Edit::Flip(i, b) if len > 0 => bytes[i % len] ^= 1 << b,
            Edit::Set(i, b) if len > 0 => bytes[i % len] = b,
            Edit::Insert(i, b) => bytes.insert(i % (len + 1), b),
            Edit::Remove(i) if len > 0 => {
                bytes.remove(i % len);
            }
            Edit::Truncate(i) => bytes.truncate(i % (len + 1)),
            Edit::Huge(i) if len > 0 => {
                let at = i % len;
                bytes.splice(at..at + 1, [0xff; 9].into_iter().chain([0x01]));
            }
            _ => {}
        }
    }
    bytes
}

fn garbage() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..48),
        proptest::collection::vec(any::<u8>(), 0..1024),
        proptest::collection::vec(prop_oneof![Just(0xffu8), Just(0x80), any::<u8>()], 0..48),
    ]
}

fn app_name() -> impl Strategy<Value = &'static str> {
    proptest::sample::select(&APPS[..])
}

// ---------------------------------------------------------------------------
// Well-typed states with extreme numbers, encoded the way each app encodes
// its state (its fields in order): flowshop and nqueens in the guest codec,
// matmul with postcard.

fn num64() -> impl Strategy<Value = u64> {
    prop_oneof![
        Just(0u64),
        Just(1),
        Just(u64::MAX),
        Just(u64::MAX - 1),
        0u64..100,
        any::<u64>()
    ]
}

fn num32() -> impl Strategy<Value = u32> {
    prop_oneof![
        Just(0u32),
        Just(1),
        Just(u32::MAX),
        Just(31),
        Just(32),
        Just(33),
        0u32..40,
        any::<u32>()
    ]
}

fn mask() -> impl Strategy<Value = u32> {
    prop_oneof![Just(0u32), Just(u32::MAX), Just(1), 0u32..256, any::<u32>()]
}

/// NQueens { n, stack: [Frame { cols, left, right, untried }], solutions }.
fn nqueens_state() -> impl Strategy<Value = Vec<u8>> {
    (
        num32(),
        proptest::collection::vec((mask(), mask(), mask(), mask()), 0..40),
        num64(),
    )
        .prop_map(|state| encode(&state))
}

/// MatMul { n, seed, row_start, row_end, next_row, rows }. Sides stay
/// small (stepping a side of 4096 takes a tenth of a second), except that
/// the numbers around them are extreme.
fn matmul_state() -> impl Strategy<Value = Vec<u8>> {
    (
        prop_oneof![0u32..40, Just(4096), Just(4097), Just(u32::MAX)],
        num64(),
        num32(),
        num32(),
        num32(),
        proptest::collection::vec(
            prop_oneof![
                Just(0.0f64),
                Just(f64::NAN),
                Just(f64::INFINITY),
                any::<f64>()
            ],
            0..64,
        ),
    )
        .prop_filter("no side of 4096 to step", |s| {
            s.0 < 4096 || !(s.2 <= s.4 && s.4 <= s.3 && s.3 <= s.0)
        })
        .prop_map(|state| postcard::to_stdvec(&state).unwrap_or_default())
}

fn size() -> impl Strategy<Value = u64> {
    prop_oneof![
        Just(0u64),
        Just(1),
        Just(2),
        Just(5),
        Just(20),
        Just(u64::from(u16::MAX)),
        Just(u64::from(u16::MAX) + 1),
        Just(u64::MAX),
        Just(u64::MAX / 2 + 1),
        0u64..30,
    ]
}

/// FlowShop { instance: Instance { name, jobs, machines, times },
/// tree: Tree { path: [Place { job, back }], open: [Open { depth, place, lb }] },
/// best: Best { makespan, permutation } } (usize travels as u64).
fn flowshop_state() -> impl Strategy<Value = Vec<u8>> {
    let time = prop_oneof![Just(0u16), Just(1), Just(u16::MAX), any::<u16>()];
    let job = prop_oneof![0u16..30, Just(u16::MAX), any::<u16>()];
    (
        (
            "ta0[0-9]{2}|x",
            size(),
            size(),
            proptest::collection::vec(time, 0..120),
        ),
        (
            proptest::collection::vec((job.clone(), any::<bool>()), 0..25),
            proptest::collection::vec(
                (
                    prop_oneof![0u16..30, Just(u16::MAX)],
                    (job.clone(), any::<bool>()),
                    any::<u32>(),
                ),
                0..25,
            ),
        ),
        (
            proptest::option::of(any::<u32>()),
            proptest::collection::vec(job, 0..25),
        ),
    )
        .prop_map(|state| encode(&state))
}

/// A flow-shop state that passes the unit's own checks (a well-formed
/// instance, a consistent tree) with extreme times, bounds and best.
fn plausible_flowshop_state() -> impl Strategy<Value = Vec<u8>> {
    (1usize..8, 1usize..8)
        .prop_flat_map(|(jobs, machines)| {
            let time = prop_oneof![Just(0u16), Just(1), Just(u16::MAX / 8), any::<u16>()];
            let job = 0..jobs as u16;
            (
                Just((jobs, machines)),
                proptest::collection::vec(time, jobs * machines),
                proptest::collection::vec((job.clone(), any::<bool>()), 0..jobs),
                proptest::collection::vec(
                    (0..=jobs as u16, (job.clone(), any::<bool>()), any::<u32>()),
                    0..10,
                ),
                (
                    proptest::option::of(any::<u32>()),
                    proptest::collection::vec(job, 0..jobs + 1),
                ),
            )
        })
        .prop_map(|((jobs, machines), times, mut path, mut open, best)| {
            path.sort();
            path.dedup_by_key(|p| p.0);
            open.sort_by_key(|o| o.0);
            let state = (
                ("ta001".to_string(), jobs as u64, machines as u64, times),
                (path, open),
                best,
            );
            encode(&state)
        })
}

fn typed_state() -> impl Strategy<Value = (&'static str, Vec<u8>)> {
    prop_oneof![
        nqueens_state().prop_map(|s| ("nqueens", s)),
        matmul_state().prop_map(|s| ("matmul", s)),
        flowshop_state().prop_map(|s| ("flowshop", s)),
        plausible_flowshop_state().prop_map(|s| ("flowshop", s)),
    ]
}

/// Parameters and outputs of each app with extreme numbers.
fn typed_params_and_output() -> impl Strategy<Value = (&'static str, Vec<u8>, Vec<u8>)> {
    prop_oneof![
        (num32(), num64()).prop_map(|(n, solutions)| ("nqueens", encode(&n), encode(&solutions))),
        (
            prop_oneof![0u32..40, Just(4097), Just(u32::MAX)],
            num64(),
            proptest::collection::vec(
                (num32(), proptest::collection::vec(any::<f64>(), 0..40)),
                0..6
            )
        )
            .prop_map(|(n, seed, blocks)| (
                "matmul",
                postcard::to_stdvec(&(n, seed)).unwrap_or_default(),
                postcard::to_stdvec(&blocks).unwrap_or_default()
            )),
        (
            "ta[0-9]{3}|ta0|ta121|x",
            proptest::option::of(any::<u32>()),
            proptest::collection::vec(prop_oneof![0u16..25, any::<u16>()], 0..25)
        )
            .prop_map(|(name, makespan, permutation)| (
                "flowshop",
                encode(&name),
                encode(&(makespan, permutation))
            )),
    ]
}

// ---------------------------------------------------------------------------

proptest! {
    #![proptest_config(cases(2000))]

    #[test]
    fn states_from_garbage_are_errors_or_units(name in app_name(), bytes in garbage()) {
        exercise_state(name, &bytes);
        check_allocations()?;
    }

    #[test]
    fn params_and_outputs_from_garbage_are_errors_or_values(
        name in app_name(),
        params in garbage(),
        output in garbage(),
    ) {
        exercise_params_and_output(name, &params, &output);
        check_allocations()?;
    }

    #[test]
    fn well_typed_states_with_extreme_numbers_are_errors_or_units(
        (name, state) in typed_state(),
    ) {
        exercise_state(name, &state);
        check_allocations()?;
    }

    #[test]
    fn well_typed_params_and_outputs_are_errors_or_values(
        (name, params, output) in typed_params_and_output(),
    ) {
        exercise_params_and_output(name, &params, &output);
        check_allocations()?;
    }
}

proptest! {
    #![proptest_config(cases(1000))]

    #[test]
    fn edited_valid_states_are_errors_or_units(
        name in app_name(),
        pick in any::<usize>(),
        edits in edits(),
    ) {
        let states = states_of(name);
        prop_assert!(!states.is_empty());
        let state = states[pick % states.len()].clone();
        exercise_state(name, &apply_edits(state, &edits));
        check_allocations()?;
    }

    #[test]
    fn edited_valid_params_and_outputs_are_errors_or_values(
        name in app_name(),
        pick in any::<usize>(),
        edit_params in edits(),
        edit_output in edits(),
    ) {
        let params = params_of(name);
        let outputs = outputs_of(name);
        prop_assert!(!outputs.is_empty());
        let p = params[pick % params.len()].clone();
        let o = outputs[pick % outputs.len()].clone();
        exercise_params_and_output(name, &apply_edits(p.clone(), &edit_params), &o);
        exercise_params_and_output(name, &p, &apply_edits(o, &edit_output));
        check_allocations()?;
    }
}

// ---------------------------------------------------------------------------
// Regressions found by the properties above.

/// An N-Queens unit on a board of one, one solution short of `u64::MAX`
/// found already: counting the last one overflowed.
#[test]
fn nqueens_counts_saturate() {
    let state = encode(&(1u32, vec![(0u32, 0u32, 0u32, 1u32)], u64::MAX));
    exercise_state("nqueens", &state);
    let max = encode(&u64::MAX);
    let merged = app("nqueens").merge(&max, &max).expect("two counts merge");
    assert_eq!(merged, max);
}

/// Matrix-multiply parameters with a side of 0: describing a result divided
/// by the side.
#[test]
fn matmul_describes_a_result_for_a_side_of_zero() {
    let params = postcard::to_stdvec(&(0u32, 1u64)).expect("encodes");
    let blocks: Vec<(u32, Vec<f64>)> = vec![(0, vec![1.0])];
    let output = postcard::to_stdvec(&blocks).expect("encodes");
    exercise_params_and_output("matmul", &params, &output);
    assert_eq!(app("matmul").verify(&params, &output), Ok(Some(false)));
}

/// A flow-shop state whose instance claims `usize::MAX` machines: checking
/// its size overflowed.
#[test]
fn flowshop_refuses_an_instance_of_impossible_size() {
    let state = encode(&(
        ("ta001".to_string(), 2u64, u64::MAX, vec![1u16, 2]),
        (Vec::<(u16, bool)>::new(), vec![(0u16, (0u16, false), 0u32)]),
        (Some(5u32), vec![0u16, 1]),
    ));
    exercise_state("flowshop", &state);
}
