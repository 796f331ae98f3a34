//! The flow-shop application against published data: Taillard's instances
//! (regenerated), their best-known makespans, and the divisible contract.

use std::sync::Arc;

use colony_apps::flowshop::{self, taillard, Best, FlowShop, Instance, Pairs, Params};
use colony_apps::native_guest::{decode, register_native_guest};
use colony_core::divisible::{
    run_sequential, App, AppError, AppRegistry, SharedVars, Step, StepContext,
};
use colony_guest::Divisible;

/// ta001 as published in Taillard's `tai20_5.txt` (one row per machine),
/// e.g. github.com/natani3l/algorithm-generic, `flowshop/tai20_5.txt`.
const TA001: [[u16; 20]; 5] = [
    [
        54, 83, 15, 71, 77, 36, 53, 38, 27, 87, 76, 91, 14, 29, 12, 77, 32, 87, 68, 94,
    ],
    [
        79, 3, 11, 99, 56, 70, 99, 60, 5, 56, 3, 61, 73, 75, 47, 14, 21, 86, 5, 77,
    ],
    [
        16, 89, 49, 15, 89, 45, 60, 23, 57, 64, 7, 1, 63, 41, 63, 47, 26, 75, 77, 40,
    ],
    [
        66, 58, 31, 68, 78, 91, 13, 59, 49, 85, 85, 9, 39, 41, 56, 40, 54, 77, 51, 31,
    ],
    [
        58, 56, 20, 85, 53, 35, 53, 41, 69, 13, 86, 72, 8, 49, 47, 87, 58, 18, 68, 28,
    ],
];

fn ta(number: usize) -> Instance {
    flowshop::instance(&format!("ta{number:03}")).unwrap()
}

fn params(name: &str) -> Params {
    FlowShop::parse_args(&[name.to_string()]).unwrap()
}

/// The flow-shop application as the runtime runs it (natively).
fn app() -> Arc<dyn App> {
    let mut registry = AppRegistry::new();
    register_native_guest::<FlowShop>(&mut registry);
    registry.get("flowshop").unwrap()
}

#[test]
fn generator_reproduces_published_matrices() {
    let ta001 = ta(1);
    assert_eq!((ta001.jobs(), ta001.machines()), (20, 5));
    for (machine, row) in TA001.iter().enumerate() {
        assert_eq!(
            ta001.machine_times(machine),
            row,
            "ta001 machine {}",
            machine + 1
        );
    }
    // ta002's first machine, from the same file.
    assert_eq!(
        ta(2).machine_times(0),
        [26, 38, 27, 88, 95, 55, 54, 63, 23, 45, 86, 43, 43, 40, 37, 54, 35, 59, 43, 50]
    );
    // ta081 (100 × 20: 2000 draws) from `tai100_20.txt` in
    // natani3l/algorithm-generic (`arquivos/tai100_20.txt`): first and last
    // rows, and the sum of all 2000 times.
    let ta081 = ta(81);
    assert_eq!(
        ta081.machine_times(0)[..20],
        [12, 72, 29, 16, 22, 61, 69, 71, 86, 16, 54, 53, 64, 96, 79, 68, 98, 87, 40, 74]
    );
    assert_eq!(
        ta081.machine_times(19)[90..],
        [58, 25, 93, 73, 45, 93, 37, 64, 92, 59]
    );
    let sum: u32 = (0..20)
        .flat_map(|k| ta081.machine_times(k).to_vec())
        .map(u32::from)
        .sum();
    assert_eq!(sum, 98766);
}

#[test]
fn all_120_instances_have_their_published_sizes() {
    let classes = [
        (20, 5),
        (20, 10),
        (20, 20),
        (50, 5),
        (50, 10),
        (50, 20),
        (100, 5),
        (100, 10),
        (100, 20),
        (200, 10),
        (200, 20),
        (500, 20),
    ];
    for number in 1..=120 {
        let instance = ta(number);
        assert_eq!(instance.name(), format!("ta{number:03}"));
        assert_eq!(
            (instance.jobs(), instance.machines()),
            classes[(number - 1) / 10]
        );
        let times: Vec<u16> = (0..instance.machines())
            .flat_map(|k| instance.machine_times(k).to_vec())
            .collect();
        assert!(times.iter().all(|t| (1..=99).contains(t)), "ta{number:03}");
    }
    // ta014 and ta022 share a seed; so do other pairs of different sizes.
    assert_eq!(taillard::SEEDS[13], taillard::SEEDS[21]);
    assert_eq!(ta(14).machine_times(0), ta(22).machine_times(0));
}

#[test]
fn makespan_of_hand_computed_schedules() {
    // Two machines: times (3, 2), (2, 5), (4, 1).
    let two = Instance::new("two", &[vec![3, 2, 4], vec![2, 5, 1]]).unwrap();
    // 0,1,2: machine 1 ends 3, 5, 9; machine 2 ends 5, 10, 11.
    assert_eq!(two.makespan(&[0, 1, 2]), 11);
    // 1,0,2: machine 1 ends 2, 5, 9; machine 2 ends 7, 9, 10.
    assert_eq!(two.makespan(&[1, 0, 2]), 10);
    // Johnson's rule gives 1,0,2; it is optimal.
    let (makespan, permutation, _) = flowshop::solve_sequential(&two);
    assert_eq!((makespan, permutation), (10, vec![1, 0, 2]));

    // Three machines: times (1, 4, 2), (3, 1, 3).
    let three = Instance::new("three", &[vec![1, 3], vec![4, 1], vec![2, 3]]).unwrap();
    // 0,1: m1 1, 4; m2 5, 6; m3 7, 10.
    assert_eq!(three.makespan(&[0, 1]), 10);
    // 1,0: m1 3, 4; m2 4, 8; m3 7, 10.
    assert_eq!(three.makespan(&[1, 0]), 10);
    assert_eq!(flowshop::solve_sequential(&three).0, 10);

    assert!(Instance::new("empty", &[]).is_err());
    assert!(Instance::new("ragged", &[vec![1, 2], vec![3]]).is_err());
}

#[test]
fn neh_gives_valid_schedules_no_better_than_the_optimum() {
    for number in 1..=30 {
        let instance = ta(number);
        let (makespan, permutation) = flowshop::neh(&instance);
        assert!(instance.is_permutation(&permutation), "ta{number:03}");
        assert_eq!(instance.makespan(&permutation), makespan);
        assert!(
            makespan >= taillard::BEST_KNOWN[number - 1],
            "ta{number:03}"
        );
    }
    // On the largest class too (and quickly: it is O(n²m)).
    let instance = ta(120);
    let (makespan, permutation) = flowshop::neh(&instance);
    assert!(instance.is_permutation(&permutation));
    assert!(makespan >= taillard::BEST_KNOWN[119]);
}

#[test]
fn root_bound_is_below_every_published_makespan() {
    // The published values are optima or upper bounds of the optimum.
    for number in 1..=120 {
        let instance = ta(number);
        for pairs in [Pairs::All, Pairs::Adjacent] {
            let bound = flowshop::lower_bound_with(&instance, &[], &[], pairs);
            assert!(
                bound <= taillard::BEST_KNOWN[number - 1],
                "ta{number:03} {pairs:?}: {bound}"
            );
        }
    }
    // On ta001 the two-machine bound alone closes the gap at the root (the
    // one-machine bound is 1232 there, Taillard's 1993 lower bound).
    assert_eq!(
        flowshop::lower_bound_with(&ta(1), &[], &[], Pairs::All),
        1278
    );
}

#[test]
fn sequential_solver_proves_the_20x5_optima() {
    for number in 1..=10 {
        let instance = ta(number);
        let (makespan, permutation, nodes) = flowshop::solve_sequential(&instance);
        assert_eq!(makespan, taillard::BEST_KNOWN[number - 1], "ta{number:03}");
        assert!(instance.is_permutation(&permutation));
        assert_eq!(instance.makespan(&permutation), makespan);
        assert!(nodes > 0);
    }
}

#[test]
fn erased_app_runs_ta001_to_its_optimum() {
    let app = app();
    let params = app.parse_args(&["ta001".into()]).unwrap();
    assert_eq!(
        app.initial_shared(&params)
            .unwrap()
            .get(flowshop::SHARED_MAKESPAN),
        Some(i64::from(flowshop::neh(&ta(1)).0))
    );
    let (output, work) = run_sequential(app.as_ref(), &params, 64).unwrap();
    assert_eq!(app.verify(&params, &output).unwrap(), Some(true));
    let json = app.output_json(&output).unwrap();
    assert_eq!(json["makespan"], 1278);
    let description = app.describe(&params, &output).unwrap();
    assert!(
        description.starts_with("ta001 (20 jobs × 5 machines): makespan 1278"),
        "{description}"
    );
    assert!(
        description.contains("matches the published best known 1278"),
        "{description}"
    );
    // The unit explores exactly the tree of the plain solver.
    assert_eq!(work, flowshop::solve_sequential(&ta(1)).2);
}

#[test]
fn divided_units_sharing_the_bound_find_the_optimum() {
    let app = app();
    for name in ["ta005", "ta010"] {
        let params = app.parse_args(&[name.to_string()]).unwrap();
        let instance = flowshop::instance(name).unwrap();
        let optimum = flowshop::solve_sequential(&instance).0;
        let mut shared = app.initial_shared(&params).unwrap();
        let mut units = vec![app.init(&params).unwrap()];
        let mut results = Vec::new();
        let mut round = 0;
        while !units.is_empty() {
            round += 1;
            // Every few rounds, each unit hands half of its work to a new one.
            if round % 3 == 1 && units.len() < 16 {
                let mut parts = Vec::new();
                for unit in &mut units {
                    if let Some(part) = unit.divide().unwrap() {
                        parts.push(app.restore(&part).unwrap());
                    }
                }
                units.extend(parts);
            }
            let mut still = Vec::new();
            for mut unit in units {
                let mut ctx = StepContext::new(&mut shared, 25);
                match unit.step(&mut ctx).unwrap() {
                    Step::Continue => still.push(unit),
                    Step::Done(best) => results.push(best),
                }
            }
            units = still;
        }
        assert!(results.len() > 4, "{name}: the job was divided");
        let merged = results
            .iter()
            .cloned()
            .reduce(|a, b| app.merge(&a, &b).unwrap())
            .unwrap();
        let best: Best = decode(&merged, "result").unwrap();
        assert_eq!(best.makespan, Some(optimum), "{name}");
        assert_eq!(instance.makespan(&best.permutation), optimum);
        assert_eq!(app.verify(&params, &merged).unwrap(), Some(true));
        // Merging in another order gives the same result.
        let reversed = results
            .into_iter()
            .rev()
            .reduce(|a, b| app.merge(&a, &b).unwrap())
            .unwrap();
        assert_eq!(reversed, merged);
        assert_eq!(
            shared.get(flowshop::SHARED_MAKESPAN),
            Some(i64::from(optimum))
        );
    }
}

#[test]
fn checkpoints_restore_mid_search() {
    let app = app();
    let params = app.parse_args(&["ta005".into()]).unwrap();
    let mut shared = app.initial_shared(&params).unwrap();
    let mut unit = app.init(&params).unwrap();
    let mut part = None;
    let output = loop {
        let mut ctx = StepContext::new(&mut shared, 200);
        if let Step::Done(output) = unit.step(&mut ctx).unwrap() {
            break output;
        }
        if part.is_none() {
            part = unit.divide().unwrap();
        }
        // Restart from the checkpoint after every step.
        unit = app.restore(&unit.checkpoint().unwrap()).unwrap();
    };
    let mut part = app.restore(&part.expect("ta005 divides")).unwrap();
    let other = loop {
        let mut ctx = StepContext::new(&mut shared, 200);
        if let Step::Done(output) = part.step(&mut ctx).unwrap() {
            break output;
        }
    };
    let merged = app.merge(&output, &other).unwrap();
    assert_eq!(app.verify(&params, &merged).unwrap(), Some(true));
}

#[test]
fn merge_keeps_the_better_schedule_whatever_the_order() {
    let none = Best::none();
    let a = Best {
        makespan: Some(1280),
        permutation: vec![1, 0],
    };
    let b = Best {
        makespan: Some(1278),
        permutation: vec![1, 0],
    };
    let c = Best {
        makespan: Some(1278),
        permutation: vec![0, 1],
    };
    for (x, y, expected) in [
        (&none, &a, &a),
        (&a, &b, &b),
        (&b, &c, &c),
        (&none, &none, &none),
    ] {
        assert_eq!(&FlowShop::merge(x.clone(), y.clone()), expected);
        assert_eq!(&FlowShop::merge(y.clone(), x.clone()), expected);
    }
}

#[test]
fn verify_rejects_wrong_results() {
    let params = params("ta001");
    let (_, optimal, _) = flowshop::solve_sequential(&ta(1));
    let good = Best {
        makespan: Some(1278),
        permutation: optimal.clone(),
    };
    assert_eq!(FlowShop::verify(&params, &good), Some(true));
    let (neh, neh_order) = flowshop::neh(&ta(1));
    let worse = Best {
        makespan: Some(neh),
        permutation: neh_order.clone(),
    };
    assert_eq!(FlowShop::verify(&params, &worse), Some(false));
    assert!(FlowShop::describe(&params, &worse).contains("DOES NOT match"));
    let lying = Best {
        makespan: Some(1278),
        permutation: neh_order,
    };
    assert_eq!(FlowShop::verify(&params, &lying), Some(false));
    let mut repeated = optimal;
    repeated[0] = repeated[1];
    let invalid = Best {
        makespan: Some(1278),
        permutation: repeated,
    };
    assert_eq!(FlowShop::verify(&params, &invalid), Some(false));
    assert_eq!(FlowShop::verify(&params, &Best::none()), Some(false));
    assert!(FlowShop::describe(&params, &Best::none()).contains("no schedule"));
}

#[test]
fn instance_names_are_parsed_and_bad_ones_rejected() {
    for good in ["ta001", "ta1", "TA001", "Ta01", " ta001 "] {
        assert_eq!(params(good).instance, "ta001", "{good:?}");
    }
    assert_eq!(params("ta120").instance, "ta120");
    let bad_args: [&[&str]; 8] = [
        &["ta000"],
        &["ta121"],
        &["foo"],
        &[],
        &["ta"],
        &["ta0001"],
        &["ta-1"],
        &["ta001", "ta002"],
    ];
    let app = app();
    for args in bad_args {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        match app.parse_args(&args) {
            Err(AppError::BadParams(message)) => {
                assert!(
                    message.contains("ta001") && message.contains("ta120"),
                    "{message}"
                )
            }
            other => panic!("{args:?}: {other:?}"),
        }
    }
    let unknown = flowshop::instance("ta121").unwrap_err();
    assert!(
        unknown.contains("\"ta121\"") && unknown.contains("ta001 … ta120"),
        "{unknown}"
    );
}

#[test]
fn a_unit_offers_its_own_best_when_the_bound_was_not_seeded() {
    let app = app();
    let params = app.parse_args(&["ta002".to_string()]).unwrap();
    let mut unit = app.init(&params).unwrap();
    let mut shared = SharedVars::default();
    let mut ctx = StepContext::new(&mut shared, 1);
    let _ = unit.step(&mut ctx).unwrap();
    assert!(ctx.improved());
    assert!(shared.get(flowshop::SHARED_MAKESPAN).is_some());
}

/// Per-instance nodes and time of the plain solver (run in release):
/// `cargo test --release -p colony-apps --test flowshop -- --ignored --nocapture`.
#[test]
#[ignore = "a report; run in release"]
fn report_sequential_20x5() {
    let mut total = (0, 0.0);
    for number in 1..=10 {
        let instance = ta(number);
        let start = std::time::Instant::now();
        let (makespan, _, nodes) = flowshop::solve_sequential(&instance);
        let seconds = start.elapsed().as_secs_f64();
        total = (total.0 + nodes, total.1 + seconds);
        println!(
            "ta{number:03}: makespan {makespan} (published {}), {nodes} nodes, {:.1} ms, {:.0} nodes/s",
            taillard::BEST_KNOWN[number - 1],
            seconds * 1e3,
            nodes as f64 / seconds
        );
        assert_eq!(makespan, taillard::BEST_KNOWN[number - 1]);
    }
    println!("total: {} nodes, {:.1} ms", total.0, total.1 * 1e3);
}

/// Nodes per second of the plain solver against the divisible unit run by
/// `run_sequential` (the erased app, steps of a few thousand nodes), on the
/// 20×10 instances that take about a second.
#[test]
#[ignore = "a report; run in release"]
fn report_unit_overhead() {
    let app = app();
    for name in ["ta011", "ta012", "ta013", "ta016"] {
        let instance = flowshop::instance(name).unwrap();
        let start = std::time::Instant::now();
        let (makespan, _, nodes) = flowshop::solve_sequential(&instance);
        let plain = nodes as f64 / start.elapsed().as_secs_f64();
        let params = app.parse_args(&[name.to_string()]).unwrap();
        for budget in [1_000, 10_000] {
            let start = std::time::Instant::now();
            let (output, work) = run_sequential(app.as_ref(), &params, budget).unwrap();
            let unit = work as f64 / start.elapsed().as_secs_f64();
            assert_eq!(work, nodes);
            assert_eq!(app.verify(&params, &output).unwrap(), Some(true));
            println!(
                "{name}: makespan {makespan}, {nodes} nodes; plain {plain:.0} nodes/s, unit (budget {budget}) {unit:.0} nodes/s ({:+.1}%)",
                (unit / plain - 1.0) * 100.0
            );
        }
    }
}
