//! The guest checked against the native application (same instances, NEH,
//! optimum, nodes, schedule and texts), and its handling of divided,
//! checkpointed and malformed states.

use colony_apps::flowshop as native_app;
use colony_core::divisible::{self as native, AppError, SharedVars};
use colony_guest::codec::{decode, encode};
use colony_guest::{run_sequential, Divisible, Monotone, SharedVar, Step, StepContext};

use super::search::{Open, Place};
use super::*;

type NativeFlowShop = native_app::FlowShop;

fn params(name: &str) -> Params {
    Params {
        instance: name.to_string(),
    }
}

fn native_params(name: &str) -> native_app::Params {
    native_app::Params {
        instance: name.to_string(),
    }
}

fn native_best(best: &Best) -> native_app::Best {
    native_app::Best {
        makespan: best.makespan,
        permutation: best.permutation.clone(),
    }
}

/// Steps a native unit to the end with `budget` per step, reading and
/// offering `shared` as the runtime would: its result and the work.
fn finish_native(
    unit: &mut NativeFlowShop,
    shared: &mut SharedVars,
    budget: u64,
) -> (native_app::Best, u64) {
    let mut work = 0;
    loop {
        let mut ctx = native::StepContext::new(shared, budget);
        let step = native::Divisible::step(unit, &mut ctx);
        work += ctx.work();
        if let native::Step::Done(best) = step {
            return (best, work);
        }
    }
}

/// The unit after a checkpoint: encoded, decoded and validated as the
/// host's restore does (its engine is rebuilt on the next step).
fn restore(unit: &FlowShop) -> FlowShop {
    let bytes = encode(unit);
    let restored: FlowShop = decode(&bytes).expect("decodes");
    restored.validate().expect("valid");
    assert!(restored.engine.is_none());
    assert_eq!(encode(&restored), bytes);
    restored
}

/// What the host's restore does, from bytes.
fn restore_bytes(bytes: &[u8]) -> Result<FlowShop, String> {
    let unit: FlowShop = decode(bytes).map_err(|e| e.to_string())?;
    unit.validate()?;
    Ok(unit)
}

fn shared_makespan(shared: &[SharedVar]) -> Option<i64> {
    StepContext::new(0, shared.to_vec()).shared(SHARED_MAKESPAN)
}

#[test]
fn optimum_work_and_texts_match_the_native_application() {
    let app = colony_apps::examples().get("flowshop").expect("registered");
    for number in 1..=3 {
        let name = taillard::name(number);
        let native_params = app.parse_args(std::slice::from_ref(&name)).expect("valid");
        let (native_output, native_work) =
            native::run_sequential(&*app, &native_params, 1000).expect("runs");

        let params = FlowShop::parse_args(std::slice::from_ref(&name)).expect("valid");
        let (best, work) = run_sequential::<FlowShop>(&params, 1000).expect("runs");

        let published = taillard::BEST_KNOWN[number - 1];
        assert_eq!(best.makespan, Some(published), "{name}");
        assert_eq!(FlowShop::verify(&params, &best), Some(true), "{name}");
        assert_eq!(work, native_work, "{name}: the same nodes");
        // The JSON holds the makespan and the schedule: the same as native.
        assert_eq!(
            FlowShop::output_json(&best),
            app.output_json(&native_output).expect("json").to_string(),
            "{name}"
        );
        assert_eq!(
            FlowShop::describe(&params, &best),
            app.describe(&native_params, &native_output)
                .expect("describes"),
            "{name}"
        );
        assert_eq!(
            app.verify(&native_params, &native_output)
                .expect("verifies"),
            Some(true)
        );
    }
}

#[test]
fn plain_solver_and_bounds_match_the_native_ones() {
    for number in [1, 2, 3, 7, 10] {
        let instance = taillard::instance(number);
        let native_instance = native_app::taillard::instance(number);
        let (makespan, permutation, nodes) = solve_sequential(&instance);
        assert_eq!(
            (makespan, permutation.clone(), nodes),
            native_app::solve_sequential(&native_instance),
            "ta{number:03}"
        );
        assert_eq!(makespan, taillard::BEST_KNOWN[number - 1]);
        assert_eq!(instance.makespan(&permutation), makespan);
        for cut in [0, 1, 5, 19, 20] {
            let (prefix, suffix) = (&permutation[..cut / 2], &permutation[cut..]);
            for pairs in [Pairs::All, Pairs::Adjacent] {
                let native_pairs = match pairs {
                    Pairs::All => native_app::Pairs::All,
                    Pairs::Adjacent => native_app::Pairs::Adjacent,
                };
                assert_eq!(
                    lower_bound_with(&instance, prefix, suffix, pairs),
                    native_app::lower_bound_with(&native_instance, prefix, suffix, native_pairs)
                );
            }
        }
    }
    // 20 × 10 uses neighbouring pairs only.
    let instance = taillard::instance(11);
    assert_eq!(
        lower_bound(&instance, &[], &[]),
        native_app::lower_bound(&native_app::taillard::instance(11), &[], &[])
    );
}

#[test]
fn neh_and_the_initial_shared_makespan_match_the_native_ones() {
    for number in (1..=taillard::COUNT).step_by(10) {
        let name = taillard::name(number);
        let instance = taillard::instance(number);
        let (makespan, permutation) = neh(&instance);
        assert_eq!(
            (makespan, permutation),
            native_app::neh(&native_app::taillard::instance(number)),
            "{name}"
        );
        let native_shared =
            <NativeFlowShop as native::Divisible>::initial_shared(&native_params(&name));
        assert_eq!(
            FlowShop::initial_shared(&params(&name)),
            vec![SharedVar {
                name: SHARED_MAKESPAN.to_string(),
                kind: Monotone::Min,
                value: i64::from(makespan),
            }],
            "{name}"
        );
        assert_eq!(
            native_shared.get(SHARED_MAKESPAN),
            Some(i64::from(makespan))
        );
        // The first unit starts from the NEH schedule.
        let unit = FlowShop::init(&params(&name)).expect("valid");
        assert_eq!(unit.best.makespan, Some(makespan));
    }
    assert!(FlowShop::initial_shared(&params("ta121")).is_empty());
    assert!(
        <NativeFlowShop as native::Divisible>::initial_shared(&native_params("ta121")).is_empty()
    );
}

#[test]
fn generated_instances_match_the_native_generator() {
    assert_eq!(taillard::SEEDS, native_app::taillard::SEEDS);
    assert_eq!(taillard::BEST_KNOWN, native_app::taillard::BEST_KNOWN);
    for number in [1, 2, 11, 23, 37, 60, 75, 89, 100, 104, 120] {
        let (jobs, machines) = taillard::size(number);
        assert_eq!(
            (jobs, machines),
            native_app::taillard::size(number),
            "ta{number:03}"
        );
        let seed = taillard::SEEDS[number - 1];
        let times = taillard::generate(jobs, machines, seed);
        assert_eq!(
            times,
            native_app::taillard::generate(jobs, machines, seed),
            "ta{number:03}"
        );
        let instance = taillard::instance(number);
        let native_instance = native_app::taillard::instance(number);
        assert_eq!(instance.name(), native_instance.name());
        for machine in 0..machines {
            assert_eq!(
                instance.machine_times(machine),
                native_instance.machine_times(machine)
            );
        }
    }
    // Taillard's first time of ta001 (his paper's listing).
    assert_eq!(taillard::instance(1).time(0, 0), 54);
    let (mut seed, mut native_seed) = (12345, 12345);
    for _ in 0..1000 {
        assert_eq!(
            taillard::unif(&mut seed, 1, 99),
            native_app::taillard::unif(&mut native_seed, 1, 99)
        );
    }
}

#[test]
fn argument_errors_and_names_are_the_native_ones() {
    let app = colony_apps::examples().get("flowshop").expect("registered");
    let native_parse = |args: &[String]| match app.parse_args(args) {
        Err(AppError::BadParams(message)) => Err(message),
        Err(other) => panic!("{args:?}: native answered {other:?}"),
        Ok(_) => Ok(<NativeFlowShop as native::Divisible>::parse_args(args)
            .expect("valid")
            .instance),
    };
    for text in [
        "ta001", "ta1", "TA001", " ta010 ", "ta120", "ta0", "ta121", "ta0001", "tb001", "ta",
        "ta-1", "ta+1", "ta1.0", "1",
    ] {
        let args = vec![text.to_string()];
        assert_eq!(
            FlowShop::parse_args(&args).map(|p| p.instance),
            native_parse(&args),
            "{text:?}"
        );
    }
    for args in [vec![], vec!["ta001".to_string(), "ta002".to_string()]] {
        assert_eq!(
            FlowShop::parse_args(&args).map(|p| p.instance),
            native_parse(&args),
            "{args:?}"
        );
    }
    assert_eq!(
        FlowShop::init(&params("ta999")).err(),
        native_app::instance("ta999").err().map(|e| match e {
            AppError::BadParams(message) => message,
            other => other.to_string(),
        })
    );
}

#[test]
fn results_merge_and_read_as_the_native_ones() {
    let instance = taillard::instance(1);
    let (neh_makespan, neh_order) = neh(&instance);
    let (optimum, optimal_order, _) = solve_sequential(&instance);
    let mut swapped = optimal_order.clone();
    swapped.swap(0, 1);
    let swapped_makespan = instance.makespan(&swapped);
    let candidates = vec![
        Best::none(),
        Best {
            makespan: Some(neh_makespan),
            permutation: neh_order,
        },
        Best {
            makespan: Some(optimum),
            permutation: optimal_order.clone(),
        },
        Best {
            makespan: Some(swapped_makespan),
            permutation: swapped,
        },
        // Claims that do not hold, or beat the published value.
        Best {
            makespan: Some(optimum - 1),
            permutation: optimal_order.clone(),
        },
        Best {
            makespan: Some(optimum),
            permutation: vec![0; 20],
        },
        Best {
            makespan: Some(optimum),
            permutation: vec![7, 99],
        },
    ];
    for name in ["ta001", "ta002", "ta500"] {
        for a in &candidates {
            assert_eq!(
                FlowShop::describe(&params(name), a),
                <NativeFlowShop as native::Divisible>::describe(
                    &native_params(name),
                    &native_best(a)
                ),
                "{name} {a:?}"
            );
            assert_eq!(
                FlowShop::verify(&params(name), a),
                <NativeFlowShop as native::Divisible>::verify(
                    &native_params(name),
                    &native_best(a)
                ),
                "{name} {a:?}"
            );
            for b in &candidates {
                let merged = FlowShop::merge(a.clone(), b.clone());
                assert_eq!(merged, FlowShop::merge(b.clone(), a.clone()), "commutes");
                assert_eq!(
                    native_best(&merged),
                    <NativeFlowShop as native::Divisible>::merge(native_best(a), native_best(b))
                );
            }
        }
    }
    assert_eq!(
        FlowShop::output_json(&Best::none()),
        r#"{"makespan":null,"permutation":[]}"#
    );
    assert_eq!(
        FlowShop::output_json(&Best {
            makespan: Some(12),
            permutation: vec![2, 0, 1],
        }),
        r#"{"makespan":12,"permutation":[2,0,1]}"#
    );
}

#[test]
fn divided_and_checkpointed_parts_match_the_native_ones() {
    // Step both implementations alike, divide up to three times, and
    // finish the parts in the same order, checkpointing and restoring every
    // guest unit after every step (its engine rebuilt each time): each
    // guest part returns what its native twin returns, with the same work,
    // and the merge is the optimum.
    let mut divisions = 0;
    for (number, first_budget) in [(1, 1u64), (1, 7), (2, 30), (3, 60), (5, 3)] {
        let name = taillard::name(number);
        let mut shared = FlowShop::initial_shared(&params(&name));
        let mut native_shared =
            <NativeFlowShop as native::Divisible>::initial_shared(&native_params(&name));
        let mut unit = FlowShop::init(&params(&name)).expect("valid");
        let mut native_unit =
            <NativeFlowShop as native::Divisible>::init(&native_params(&name)).expect("valid");

        let mut ctx = StepContext::new(first_budget, shared.clone());
        assert_eq!(unit.step(&mut ctx), Step::Continue, "{name}");
        shared = ctx.into_shared();
        let mut native_ctx = native::StepContext::new(&mut native_shared, first_budget);
        native::Divisible::step(&mut native_unit, &mut native_ctx);

        let mut units = Vec::new();
        for _ in 0..3 {
            let part = unit.divide();
            let native_part = native::Divisible::divide(&mut native_unit);
            assert_eq!(
                part.as_ref().map(FlowShop::open_nodes),
                native_part.as_ref().map(NativeFlowShop::open_nodes),
                "{name}"
            );
            unit = restore(&unit);
            match (part, native_part) {
                (Some(part), Some(native_part)) => units.push((restore(&part), native_part)),
                _ => break,
            }
        }
        assert!(!units.is_empty(), "{name}: the first division");
        divisions += units.len();
        units.push((unit, native_unit));

        let mut results = Vec::new();
        for (mut guest, mut native) in units {
            let mut work = 0;
            let best = loop {
                let mut ctx = StepContext::new(25, shared.clone());
                let step = guest.step(&mut ctx);
                work += ctx.work();
                shared = ctx.into_shared();
                match step {
                    Step::Done(best) => break best,
                    Step::Continue => guest = restore(&guest),
                }
            };
            let (native_best_found, native_work) =
                finish_native(&mut native, &mut native_shared, 25);
            assert_eq!(native_best(&best), native_best_found, "{name}");
            assert_eq!(work, native_work, "{name}");
            assert_eq!(
                shared_makespan(&shared),
                native_shared.get(SHARED_MAKESPAN),
                "{name}"
            );
            results.push(best);
        }
        let merged = results.into_iter().fold(Best::none(), FlowShop::merge);
        assert_eq!(
            merged.makespan,
            Some(taillard::BEST_KNOWN[number - 1]),
            "{name}"
        );
        assert_eq!(FlowShop::verify(&params(&name), &merged), Some(true));
    }
    assert!(divisions > 5, "{divisions} divisions in all");
}

#[test]
fn repeated_division_finds_the_optimum() {
    // Divide whatever can be divided after every step, round-tripping each
    // unit through its encoding, until every unit is finished.
    let mut shared = FlowShop::initial_shared(&params("ta004"));
    let mut units = vec![FlowShop::init(&params("ta004")).expect("valid")];
    let mut merged = Best::none();
    let mut divisions = 0;
    while let Some(mut unit) = units.pop() {
        let mut ctx = StepContext::new(2, shared.clone());
        let step = unit.step(&mut ctx);
        shared = ctx.into_shared();
        match step {
            Step::Done(best) => merged = FlowShop::merge(merged, best),
            Step::Continue => {
                if let Some(part) = unit.divide() {
                    divisions += 1;
                    units.insert(0, restore(&part));
                }
                units.push(restore(&unit));
            }
        }
    }
    assert!(divisions > 10, "{divisions} divisions");
    assert_eq!(merged.makespan, Some(taillard::BEST_KNOWN[3]));
    assert_eq!(
        shared_makespan(&shared),
        Some(i64::from(taillard::BEST_KNOWN[3]))
    );
    assert_eq!(FlowShop::verify(&params("ta004"), &merged), Some(true));
}

#[test]
fn a_unit_with_a_better_own_schedule_offers_it() {
    // The shared bound is worse than the unit's own (a restarted unit):
    // its first step offers its own makespan.
    let mut unit = FlowShop::init(&params("ta001")).expect("valid");
    let own = unit.best.makespan.expect("NEH schedule");
    let mut ctx = StepContext::new(1, Vec::new());
    unit.step(&mut ctx);
    assert!(ctx.improved());
    assert!(ctx.shared(SHARED_MAKESPAN).expect("offered") <= i64::from(own));
}

/// A small valid unit, mid-search, to break in various ways.
fn mid_search_unit() -> FlowShop {
    let mut unit = FlowShop::init(&params("ta001")).expect("valid");
    let mut ctx = StepContext::new(3, Vec::new());
    assert_eq!(unit.step(&mut ctx), Step::Continue);
    assert!(!unit.tree.path.is_empty() && unit.tree.open.len() > 2);
    restore(&unit)
}

#[test]
fn malformed_instances_are_refused() {
    let times = |unit: &mut FlowShop, jobs: usize, machines: usize, time: u16| {
        unit.instance.jobs = jobs;
        unit.instance.machines = machines;
        unit.instance.times = vec![time; jobs * machines];
        unit.tree = Tree::root();
    };
    let mut cases: Vec<(&str, FlowShop)> = Vec::new();
    let mut unit = mid_search_unit();
    unit.instance.times.pop();
    cases.push(("a time missing", unit));
    let mut unit = mid_search_unit();
    unit.instance.jobs = 21;
    cases.push(("jobs disagree with the times", unit));
    let mut unit = mid_search_unit();
    times(&mut unit, 0, 5, 1);
    cases.push(("no job", unit));
    let mut unit = mid_search_unit();
    times(&mut unit, 5, 0, 1);
    cases.push(("no machine", unit));
    let mut unit = mid_search_unit();
    times(&mut unit, 1, 700, 99);
    cases.push(("a job's total past u16", unit));
    let mut unit = mid_search_unit();
    times(&mut unit, 70_000, 1, 1);
    cases.push(("too many jobs", unit));
    let mut unit = mid_search_unit();
    unit.instance.jobs = usize::from(u16::MAX);
    unit.instance.machines = usize::MAX / usize::from(u16::MAX) + 1;
    cases.push(("sizes whose product overflows", unit));
    for (what, unit) in cases {
        assert!(unit.validate().is_err(), "{what}");
        assert!(restore_bytes(&encode(&unit)).is_err(), "{what}");
    }
}

#[test]
fn malformed_trees_are_refused() {
    let place = |job, back| Place { job, back };
    let open = |depth, job| Open {
        depth,
        place: place(job, false),
        lb: 0,
    };
    let mut cases: Vec<(&str, Tree)> = vec![
        (
            "a path job out of range",
            Tree {
                path: vec![place(20, false)],
                open: vec![],
            },
        ),
        (
            "a path job twice",
            Tree {
                path: vec![place(1, false), place(1, true)],
                open: vec![],
            },
        ),
        (
            "an entry too deep for the path",
            Tree {
                path: vec![],
                open: vec![open(2, 0)],
            },
        ),
        (
            "an entry repeating a path job",
            Tree {
                path: vec![place(0, false)],
                open: vec![open(2, 0)],
            },
        ),
        (
            "an entry's job out of range",
            Tree {
                path: vec![place(0, false)],
                open: vec![open(2, 20)],
            },
        ),
        (
            "depths decreasing up the stack",
            Tree {
                path: vec![place(0, false)],
                open: vec![open(2, 1), open(1, 2)],
            },
        ),
        (
            "deeper than the jobs",
            Tree {
                path: (0..20).map(|j| place(j, j % 2 == 0)).collect(),
                open: vec![open(21, 0)],
            },
        ),
    ];
    let valid = mid_search_unit();
    let mut twice = valid.tree.clone();
    let first = twice.path[0];
    twice.path.push(first);
    cases.push(("a real path with a job repeated", twice));
    for (what, tree) in cases {
        let unit = FlowShop {
            tree,
            ..mid_search_unit()
        };
        assert!(unit.validate().is_err(), "{what}");
        assert!(restore_bytes(&encode(&unit)).is_err(), "{what}");
    }
}

#[test]
fn a_malformed_unit_that_was_not_validated_finishes_with_what_it_has() {
    // As native: the first step checks again, and a malformed unit ends
    // with its best schedule rather than panicking.
    let mut unit = mid_search_unit();
    unit.tree.path = vec![Place {
        job: 99,
        back: false,
    }];
    let mut ctx = StepContext::new(100, Vec::new());
    match unit.step(&mut ctx) {
        Step::Done(best) => assert_eq!(best, unit.best),
        Step::Continue => panic!("a malformed unit must not keep running"),
    }
}

#[test]
fn truncated_padded_and_oversized_bytes_fail_to_decode() {
    let valid = encode(&mid_search_unit());
    assert!(restore_bytes(&valid).is_ok());
    for len in 0..valid.len() {
        assert!(restore_bytes(&valid[..len]).is_err(), "{len} bytes");
    }
    let mut padded = valid.clone();
    padded.push(0);
    assert!(restore_bytes(&padded).is_err());
    // A length of times far past what the bytes hold.
    let mut oversized = encode("ta001");
    oversized.extend_from_slice(&encode(&20u64));
    oversized.extend_from_slice(&encode(&5u64));
    oversized.extend_from_slice(&u32::MAX.to_le_bytes());
    oversized.extend_from_slice(&[0; 64]);
    assert!(restore_bytes(&oversized).is_err());
    // A size past 32 bits: an error on wasm32, refused by validate here.
    let mut unit = mid_search_unit();
    unit.instance.jobs = 1 << 40;
    assert!(restore_bytes(&encode(&unit)).is_err());
}

#[test]
fn mangled_checkpoints_never_panic() {
    // Flip bytes of a real mid-search checkpoint: each result is refused,
    // or is a state whose steps run without panicking.
    let checkpoint = encode(&mid_search_unit());
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut accepted = 0;
    for _ in 0..500 {
        let mut bytes = checkpoint.clone();
        for _ in 0..2 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let at = (seed % bytes.len() as u64) as usize;
            bytes[at] ^= (seed >> 32) as u8 | 1;
        }
        if let Ok(mut unit) = restore_bytes(&bytes) {
            accepted += 1;
            for _ in 0..20 {
                let mut ctx = StepContext::new(1000, Vec::new());
                if let Step::Done(best) = unit.step(&mut ctx) {
                    FlowShop::describe(&params("ta001"), &best);
                    FlowShop::verify(&params("ta001"), &best);
                    break;
                }
            }
            while let Some(part) = unit.divide() {
                restore(&part);
            }
        }
    }
    assert!(accepted > 0, "some mangled states are still valid searches");
}
