//! The flow-shop application against published data (Taillard's
//! instances and best-known makespans) and brute force: exactness of the
//! search, validity of the bound on partial schedules, the open-node stack,
//! the texts and errors users see, and the handling of divided,
//! checkpointed and malformed states.

use colony_guest::codec::{decode, encode};
use colony_guest::{run_sequential, Divisible, Monotone, SharedVar, Step, StepContext};
use proptest::prelude::*;

use super::search::{Engine, Incumbent, Open, Place, Tree};
use super::*;

/// What every error about an instance name ends with.
const EXPECTED: &str = "expected one of Taillard's ta001 … ta120";

fn params(name: &str) -> Params {
    Params {
        instance: name.to_string(),
    }
}

/// A random instance: Taillard's generator with an arbitrary seed.
fn random_instance(jobs: usize, machines: usize, seed: i64) -> Instance {
    let times = taillard::generate(jobs, machines, seed);
    let rows: Vec<Vec<u16>> = times.chunks(jobs).map(<[u16]>::to_vec).collect();
    Instance::new(format!("random-{seed}"), &rows).expect("a valid instance")
}

/// Calls `visit` with every ordering of `jobs`.
fn for_each_order(jobs: &mut Vec<u16>, k: usize, visit: &mut impl FnMut(&[u16])) {
    if k == jobs.len() {
        visit(jobs);
        return;
    }
    for i in k..jobs.len() {
        jobs.swap(k, i);
        for_each_order(jobs, k + 1, visit);
        jobs.swap(k, i);
    }
}

/// The smallest makespan of `prefix ++ (any order of the rest) ++ suffix`.
fn best_completion(instance: &Instance, prefix: &[u16], suffix: &[u16]) -> u32 {
    let mut middle: Vec<u16> = (0..instance.jobs() as u16)
        .filter(|j| !prefix.contains(j) && !suffix.contains(j))
        .collect();
    let mut best = u32::MAX;
    let mut schedule = Vec::with_capacity(instance.jobs());
    for_each_order(&mut middle, 0, &mut |order| {
        schedule.clear();
        schedule.extend_from_slice(prefix);
        schedule.extend_from_slice(order);
        schedule.extend_from_slice(suffix);
        best = best.min(instance.makespan(&schedule));
    });
    best
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

/// The schedule of `best` as `describe` lists it (jobs from 1).
fn listed(best: &Best) -> String {
    let jobs: Vec<String> = best
        .permutation
        .iter()
        .map(|j| (u32::from(*j) + 1).to_string())
        .collect();
    jobs.join(" ")
}

#[test]
fn the_unit_reaches_the_published_optimum_with_the_plain_solvers_search() {
    for number in 1..=3 {
        let name = taillard::name(number);
        let params = FlowShop::parse_args(std::slice::from_ref(&name)).expect("valid");
        let (best, work) = run_sequential::<FlowShop>(&params, 1000).expect("runs");

        let published = taillard::BEST_KNOWN[number - 1];
        assert_eq!(best.makespan, Some(published), "{name}");
        assert_eq!(FlowShop::verify(&params, &best), Some(true), "{name}");
        // The unit explores exactly the tree of the plain solver, and
        // returns its schedule, however the search is sliced.
        let (makespan, permutation, nodes) = solve_sequential(&taillard::instance(number));
        assert_eq!(
            (makespan, &permutation, nodes),
            (published, &best.permutation, work)
        );
        assert_eq!(
            run_sequential::<FlowShop>(&params, 7),
            Ok((best.clone(), work)),
            "{name}"
        );
        let jobs: Vec<String> = best.permutation.iter().map(u16::to_string).collect();
        assert_eq!(
            FlowShop::output_json(&best),
            format!(
                "{{\"makespan\":{published},\"permutation\":[{}]}}",
                jobs.join(",")
            ),
            "{name}"
        );
        assert_eq!(
            FlowShop::describe(&params, &best),
            format!(
                "{name} (20 jobs × 5 machines): makespan {published}, optimal (exhaustive search); \
                 matches the published best known {published}; schedule (jobs from 1): {}",
                listed(&best)
            ),
        );
    }
}

#[test]
fn plain_solver_reaches_the_published_optima_above_its_bounds() {
    for number in [1, 2, 3, 7, 10] {
        let instance = taillard::instance(number);
        let (makespan, permutation, nodes) = solve_sequential(&instance);
        assert_eq!(makespan, taillard::BEST_KNOWN[number - 1], "ta{number:03}");
        assert!(instance.is_permutation(&permutation));
        assert_eq!(instance.makespan(&permutation), makespan);
        assert!(nodes > 0);
        for pairs in [Pairs::All, Pairs::Adjacent] {
            // Any node on the way to the optimal schedule is bounded by it;
            // a complete schedule's bound is its makespan.
            assert!(lower_bound_with(&instance, &[], &[], pairs) <= makespan);
            for cut in [0, 1, 5, 19, 20] {
                let (prefix, suffix) = (&permutation[..cut / 2], &permutation[cut..]);
                assert!(lower_bound_with(&instance, prefix, suffix, pairs) <= makespan);
                let (prefix, suffix) = permutation.split_at(cut);
                assert_eq!(
                    lower_bound_with(&instance, prefix, suffix, pairs),
                    makespan,
                    "ta{number:03} cut {cut} {pairs:?}"
                );
            }
            let (other, _, _) = solve_sequential_with(&instance, pairs);
            assert_eq!(other, makespan, "ta{number:03} {pairs:?}");
        }
    }
    // 20 × 5 uses every pair; 20 × 10 neighbouring pairs only.
    let instance = taillard::instance(1);
    assert_eq!(
        lower_bound(&instance, &[], &[]),
        lower_bound_with(&instance, &[], &[], Pairs::All)
    );
    let instance = taillard::instance(11);
    assert_eq!(Pairs::default_for(instance.machines()), Pairs::Adjacent);
    assert_eq!(
        lower_bound(&instance, &[], &[]),
        lower_bound_with(&instance, &[], &[], Pairs::Adjacent)
    );
}

#[test]
fn neh_gives_the_initial_shared_makespan_and_the_first_schedule() {
    for number in (1..=taillard::COUNT).step_by(10) {
        let name = taillard::name(number);
        let instance = taillard::instance(number);
        let (makespan, permutation) = neh(&instance);
        assert!(instance.is_permutation(&permutation), "{name}");
        assert_eq!(instance.makespan(&permutation), makespan, "{name}");
        assert!(makespan >= taillard::BEST_KNOWN[number - 1], "{name}");
        assert_eq!(
            FlowShop::initial_shared(&params(&name)),
            vec![SharedVar {
                name: SHARED_MAKESPAN.to_string(),
                kind: Monotone::Min,
                value: i64::from(makespan),
            }],
            "{name}"
        );
        // The first unit starts from the NEH schedule.
        let unit = FlowShop::init(&params(&name)).expect("valid");
        assert_eq!(unit.best.makespan, Some(makespan));
        assert_eq!(unit.best.permutation, permutation);
    }
    assert!(FlowShop::initial_shared(&params("ta121")).is_empty());
}

#[test]
fn generated_instances_are_taillards() {
    assert_eq!(taillard::SEEDS.len(), taillard::COUNT);
    // Taillard's published upper bounds, first and last.
    assert_eq!(taillard::BEST_KNOWN[0], 1278);
    assert_eq!(taillard::BEST_KNOWN[119], 26457);
    // ta001 as published in Taillard's `tai20_5.txt`: its first machine.
    assert_eq!(
        taillard::instance(1).machine_times(0),
        [54, 83, 15, 71, 77, 36, 53, 38, 27, 87, 76, 91, 14, 29, 12, 77, 32, 87, 68, 94]
    );
    assert_eq!(taillard::instance(1).time(4, 19), 28);
    for number in [1, 2, 11, 23, 37, 60, 75, 89, 100, 104, 120] {
        let (jobs, machines) = taillard::size(number);
        let instance = taillard::instance(number);
        assert_eq!(instance.name(), format!("ta{number:03}"));
        assert_eq!((instance.jobs(), instance.machines()), (jobs, machines));
        let times = taillard::generate(jobs, machines, taillard::SEEDS[number - 1]);
        assert_eq!(times.len(), jobs * machines);
        assert!(times.iter().all(|t| (1..=99).contains(t)), "ta{number:03}");
        for machine in 0..machines {
            assert_eq!(
                instance.machine_times(machine),
                &times[machine * jobs..(machine + 1) * jobs]
            );
        }
    }
    let mut seed = 12345;
    for _ in 0..1000 {
        assert!((1..=99).contains(&taillard::unif(&mut seed, 1, 99)));
    }
}

#[test]
fn argument_errors_and_names_say_what_is_wrong() {
    for (text, number) in [
        ("ta001", 1),
        ("ta1", 1),
        ("TA001", 1),
        ("Ta01", 1),
        (" ta010 ", 10),
        ("ta120", 120),
    ] {
        assert_eq!(
            FlowShop::parse_args(&[text.to_string()]),
            Ok(params(&taillard::name(number))),
            "{text:?}"
        );
    }
    for text in [
        "ta0", "ta000", "ta121", "ta0001", "tb001", "ta", "ta-1", "ta+1", "ta1.0", "1", "foo",
    ] {
        assert_eq!(
            FlowShop::parse_args(&[text.to_string()]),
            Err(format!("unknown flow-shop instance {text:?}: {EXPECTED}")),
            "{text:?}"
        );
    }
    let usage = "usage: flowshop INSTANCE, where INSTANCE is one of Taillard's ta001 … ta120";
    for args in [vec![], vec!["ta001".to_string(), "ta002".to_string()]] {
        assert_eq!(
            FlowShop::parse_args(&args),
            Err(usage.to_string()),
            "{args:?}"
        );
    }
    let unknown = format!("unknown flow-shop instance \"ta999\": {EXPECTED}");
    assert_eq!(
        FlowShop::init(&params("ta999")).err(),
        Some(unknown.clone())
    );
    assert_eq!(instance("ta999"), Err(unknown));
}

#[test]
fn results_merge_read_and_verify() {
    let instance = taillard::instance(1);
    let (neh_makespan, neh_order) = neh(&instance);
    let (optimum, optimal_order, _) = solve_sequential(&instance);
    assert_eq!(optimum, 1278);
    assert!(neh_makespan > optimum, "NEH is not optimal on ta001");
    let mut swapped = optimal_order.clone();
    swapped.swap(0, 1);
    let swapped_makespan = instance.makespan(&swapped);
    let neh_best = Best {
        makespan: Some(neh_makespan),
        permutation: neh_order,
    };
    let optimal = Best {
        makespan: Some(optimum),
        permutation: optimal_order.clone(),
    };
    let candidates = vec![
        Best::none(),
        neh_best.clone(),
        optimal.clone(),
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
    let head = "ta001 (20 jobs × 5 machines)";
    assert_eq!(
        FlowShop::describe(&params("ta001"), &Best::none()),
        format!("{head}: no schedule found")
    );
    assert_eq!(
        FlowShop::describe(&params("ta001"), &neh_best),
        format!(
            "{head}: makespan {neh_makespan}, optimal (exhaustive search); DOES NOT match the \
             published best known 1278; schedule (jobs from 1): {}",
            listed(&neh_best)
        )
    );
    assert_eq!(
        FlowShop::describe(&params("ta001"), &optimal),
        format!(
            "{head}: makespan 1278, optimal (exhaustive search); matches the published best \
             known 1278; schedule (jobs from 1): {}",
            listed(&optimal)
        )
    );
    for claim in &candidates[4..] {
        assert_eq!(
            FlowShop::describe(&params("ta001"), claim),
            format!(
                "{head}: makespan {} claimed, but the schedule is invalid or does not achieve it",
                claim.makespan.expect("a claim")
            )
        );
    }
    let ta002_head = "ta002 (20 jobs × 5 machines): ";
    // Better first: a smaller makespan, then the smaller permutation; no
    // schedule last.
    let key = |best: &Best| match best.makespan {
        Some(makespan) => (false, makespan, best.permutation.clone()),
        None => (true, 0, Vec::new()),
    };
    for a in &candidates {
        // Only the optimal schedule of ta001, for ta001: the candidates'
        // makespans are ta001's, none is ta002's published one.
        let expected = |name: &str| a == &optimal && name == "ta001";
        for name in ["ta001", "ta002"] {
            assert_eq!(
                FlowShop::verify(&params(name), a),
                Some(expected(name)),
                "{name} {a:?}"
            );
        }
        assert!(FlowShop::describe(&params("ta002"), a).starts_with(ta002_head));
        assert_eq!(FlowShop::verify(&params("ta500"), a), None);
        assert_eq!(
            FlowShop::describe(&params("ta500"), a),
            "ta500: unknown instance"
        );
        for b in &candidates {
            let merged = FlowShop::merge(a.clone(), b.clone());
            assert_eq!(merged, FlowShop::merge(b.clone(), a.clone()), "commutes");
            let better = if key(b) < key(a) { b } else { a };
            assert_eq!(&merged, better, "{a:?} {b:?}");
            for c in &candidates {
                assert_eq!(
                    FlowShop::merge(merged.clone(), c.clone()),
                    FlowShop::merge(a.clone(), FlowShop::merge(b.clone(), c.clone())),
                    "associates"
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
fn checkpointed_parts_do_what_parts_never_encoded_do() {
    // Step two identical units alike, divide each up to three times, and
    // finish the parts in the same order: one side checkpointed and
    // restored after every step (its engine rebuilt each time), the other
    // never encoded. Each part returns what its twin returns, with the
    // same work and the same shared bound, and the merge is the optimum.
    let mut divisions = 0;
    for (number, first_budget) in [(1, 1u64), (1, 7), (2, 30), (3, 60), (5, 3)] {
        let name = taillard::name(number);
        let mut shared = FlowShop::initial_shared(&params(&name));
        let mut twin_shared = shared.clone();
        let mut unit = FlowShop::init(&params(&name)).expect("valid");
        let mut twin = FlowShop::init(&params(&name)).expect("valid");

        for (unit, shared) in [(&mut unit, &mut shared), (&mut twin, &mut twin_shared)] {
            let mut ctx = StepContext::new(first_budget, shared.clone());
            assert_eq!(unit.step(&mut ctx), Step::Continue, "{name}");
            *shared = ctx.into_shared();
        }

        let mut units = Vec::new();
        for _ in 0..3 {
            let part = unit.divide();
            let twin_part = twin.divide();
            assert_eq!(
                part.as_ref().map(FlowShop::open_nodes),
                twin_part.as_ref().map(FlowShop::open_nodes),
                "{name}"
            );
            unit = restore(&unit);
            match (part, twin_part) {
                (Some(part), Some(twin_part)) => units.push((restore(&part), twin_part)),
                _ => break,
            }
        }
        assert!(!units.is_empty(), "{name}: the first division");
        divisions += units.len();
        units.push((unit, twin));

        let mut results = Vec::new();
        for (mut unit, mut twin) in units {
            let run = |unit: &mut FlowShop, shared: &mut Vec<SharedVar>, checkpoint: bool| {
                let mut work = 0;
                loop {
                    let mut ctx = StepContext::new(25, shared.clone());
                    let step = unit.step(&mut ctx);
                    work += ctx.work();
                    *shared = ctx.into_shared();
                    match step {
                        Step::Done(best) => break (best, work),
                        Step::Continue if checkpoint => *unit = restore(unit),
                        Step::Continue => {}
                    }
                }
            };
            let (best, work) = run(&mut unit, &mut shared, true);
            assert_eq!(
                run(&mut twin, &mut twin_shared, false),
                (best.clone(), work),
                "{name}"
            );
            assert_eq!(
                shared_makespan(&shared),
                shared_makespan(&twin_shared),
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
        assert_eq!(
            shared_makespan(&shared),
            Some(i64::from(taillard::BEST_KNOWN[number - 1]))
        );
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
    // A unit stepped without the restore's check: its first step checks
    // again, and a malformed unit ends
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

// ---------------------------------------------------------------------------
// The search's internals against brute force.

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// The branch-and-bound is exact: on random 7-job instances it finds the
    /// brute-force optimum, and its schedule achieves it.
    #[test]
    fn branch_and_bound_equals_brute_force(seed in 1i64..2_000_000_000, machines in 2usize..7) {
        let instance = random_instance(7, machines, seed);
        let optimum = best_completion(&instance, &[], &[]);
        for pairs in [Pairs::All, Pairs::Adjacent] {
            let (makespan, permutation, _) = solve_sequential_with(&instance, pairs);
            prop_assert_eq!(makespan, optimum);
            prop_assert!(instance.is_permutation(&permutation));
            prop_assert_eq!(instance.makespan(&permutation), optimum);
        }
    }

    /// The bound of any node (a fixed prefix and suffix) never exceeds the
    /// makespan of the node's best completion, and is exact on complete
    /// schedules.
    #[test]
    fn bound_never_exceeds_a_completion(
        seed in 1i64..2_000_000_000,
        jobs in 2usize..8,
        machines in 1usize..7,
        shuffle in any::<u64>(),
        cut in any::<(u8, u8)>(),
    ) {
        let instance = random_instance(jobs, machines, seed);
        let mut order: Vec<u16> = (0..jobs as u16).collect();
        // A cheap deterministic shuffle from `shuffle`.
        let mut state = shuffle | 1;
        for i in (1..jobs).rev() {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            order.swap(i, (state % (i as u64 + 1)) as usize);
        }
        let fixed_front = usize::from(cut.0) % (jobs + 1);
        let fixed_back = usize::from(cut.1) % (jobs - fixed_front + 1);
        let prefix = &order[..fixed_front];
        let suffix = &order[jobs - fixed_back..];
        let best = best_completion(&instance, prefix, suffix);
        for pairs in [Pairs::All, Pairs::Adjacent] {
            let bound = lower_bound_with(&instance, prefix, suffix, pairs);
            prop_assert!(bound <= best, "bound {} > best completion {} ({:?})", bound, best, pairs);
            if fixed_front + fixed_back == jobs {
                prop_assert_eq!(bound, instance.makespan(&order));
            }
        }
    }

    /// Splitting the open stack partitions it, and both halves are
    /// well-formed trees over the same path.
    #[test]
    fn split_partitions_the_open_nodes(seed in 1i64..1_000_000, budget in 1u64..40) {
        let instance = random_instance(9, 3, seed);
        let mut engine = Engine::new(&instance, Pairs::All);
        let mut tree = Tree::root();
        let mut incumbent = Incumbent::new(u32::MAX);
        engine.explore(&mut tree, &mut incumbent, budget);
        let before = tree.open.clone();
        match tree.split() {
            None => prop_assert!(before.len() < 2),
            Some(given) => {
                prop_assert!(tree.is_consistent(9) && given.is_consistent(9));
                prop_assert_eq!(tree.open.len() + given.open.len(), before.len());
                prop_assert!(given.open.len() >= tree.open.len());
                prop_assert_eq!(given.open[0], before[0]);
                // The bottom of the stack (explored last by the donor) goes;
                // the donor keeps the nodes it was about to explore.
                prop_assert_eq!(&given.open[..], &before[..given.open.len()]);
                prop_assert_eq!(&tree.open[..], &before[given.open.len()..]);
                prop_assert!(given.path.len() <= tree.path.len());
                prop_assert_eq!(&tree.path[..given.path.len()], &given.path[..]);
            }
        }
    }
}

#[test]
fn splitting_repeatedly_loses_no_solution() {
    // Every unit, whatever the division, finds nothing better than the
    // optimum and the union of units finds it (no incoming bound).
    let instance = random_instance(8, 4, 42);
    let optimum = best_completion(&instance, &[], &[]);
    let mut engine = Engine::new(&instance, Pairs::All);
    let mut units = vec![Tree::root()];
    let mut best = u32::MAX;
    while let Some(mut tree) = units.pop() {
        let mut incumbent = Incumbent::new(u32::MAX);
        engine.explore(&mut tree, &mut incumbent, 3);
        if let Some((makespan, permutation)) = incumbent.found {
            assert_eq!(instance.makespan(&permutation), makespan);
            assert!(makespan >= optimum);
            best = best.min(makespan);
        }
        if let Some(part) = tree.split() {
            units.push(part);
        }
        if !tree.is_finished() {
            units.push(tree);
        }
    }
    assert_eq!(best, optimum);
}

#[test]
fn consistency_rejects_malformed_trees() {
    let place = |job, back| Place { job, back };
    let open = |depth, job| Open {
        depth,
        place: place(job, false),
        lb: 0,
    };
    assert!(Tree::root().is_consistent(3));
    let good = Tree {
        path: vec![place(2, true)],
        open: vec![open(1, 0), open(2, 1)],
    };
    assert!(good.is_consistent(3));
    let cases = [
        // A job out of range on the path, or twice.
        Tree {
            path: vec![place(3, false)],
            open: vec![],
        },
        Tree {
            path: vec![place(1, false), place(1, true)],
            open: vec![],
        },
        // An entry too deep for the path, or repeating a path job.
        Tree {
            path: vec![],
            open: vec![open(2, 0)],
        },
        Tree {
            path: vec![place(0, false)],
            open: vec![open(2, 0)],
        },
        // Depths decreasing up the stack.
        Tree {
            path: vec![place(0, false)],
            open: vec![open(2, 1), open(1, 2)],
        },
    ];
    for tree in cases {
        assert!(!tree.is_consistent(3), "{tree:?}");
    }
}
