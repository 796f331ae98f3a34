//! N-Queens and matrix multiply through the type-erased registry, as the
//! runtime drives them: divide into units, checkpoint and restore, merge.

use colony_apps::matmul::{self, Blocks, MatMul};
use colony_apps::nqueens::{self, NQueens};
use colony_core::divisible::{
    run_sequential, App, AppError, Divisible, SharedVars, Step, StepContext, Unit,
};
use colony_guest::Divisible as GuestDivisible;

fn app(name: &str) -> std::sync::Arc<dyn App> {
    colony_apps::examples().get(name).unwrap()
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

/// Steps an erased unit to the end; returns its serialised result.
fn finish(unit: &mut Box<dyn Unit>, budget: u64) -> Vec<u8> {
    let mut shared = SharedVars::default();
    loop {
        let mut ctx = StepContext::new(&mut shared, budget);
        if let Step::Done(out) = unit.step(&mut ctx).unwrap() {
            return out;
        }
    }
}

/// Splits the initial unit of a job into pieces by repeatedly dividing
/// every piece (stepping each a little first, so splits happen mid-search).
fn split(app: &dyn App, params: &[u8], rounds: usize, budget: u64) -> Vec<Box<dyn Unit>> {
    let mut units = vec![app.init(params).unwrap()];
    let mut shared = SharedVars::default();
    for _ in 0..rounds {
        let mut next = Vec::new();
        for mut unit in units {
            let mut ctx = StepContext::new(&mut shared, budget);
            match unit.step(&mut ctx).unwrap() {
                Step::Continue => {
                    if let Some(part) = unit.divide().unwrap() {
                        next.push(app.restore(&part).unwrap());
                    }
                    next.push(unit);
                }
                // Finished already: keep its result as a restorable stand-in.
                Step::Done(out) => next.push(Box::new(Finished(Some(out)))),
            }
        }
        units = next;
    }
    units
}

/// A unit that has already produced its result.
struct Finished(Option<Vec<u8>>);

impl Unit for Finished {
    fn step(&mut self, _: &mut StepContext<'_>) -> Result<Step<Vec<u8>>, AppError> {
        Ok(Step::Done(self.0.take().expect("stepped after done")))
    }
    fn divide(&mut self) -> Result<Option<Vec<u8>>, AppError> {
        Ok(None)
    }
    fn checkpoint(&mut self) -> Result<Vec<u8>, AppError> {
        Ok(Vec::new())
    }
}

fn run_all(app: &dyn App, units: Vec<Box<dyn Unit>>, budget: u64) -> Vec<u8> {
    units
        .into_iter()
        .map(|mut unit| finish(&mut unit, budget))
        .reduce(|a, b| app.merge(&a, &b).unwrap())
        .unwrap()
}

fn count_of(app: &dyn App, out: &[u8]) -> u64 {
    app.output_json(out).unwrap().as_u64().unwrap()
}

// ---------------------------------------------------------------- nqueens

#[test]
fn nqueens_counts_match_oeis_for_n_up_to_10() {
    let app = app("nqueens");
    for n in 1..=10u32 {
        let params = app.parse_args(&args(&[&n.to_string()])).unwrap();
        let (out, work) = run_sequential(app.as_ref(), &params, 5_000).unwrap();
        assert_eq!(
            count_of(app.as_ref(), &out),
            nqueens::known_count(n).unwrap(),
            "N = {n}"
        );
        assert_eq!(app.verify(&params, &out).unwrap(), Some(true), "N = {n}");
        assert!(work > 0);
    }
    assert_eq!(nqueens::KNOWN_COUNTS[17], 666_090_624);
}

#[test]
fn nqueens_divided_into_many_units_still_counts_724() {
    let app = app("nqueens");
    let params = app.parse_args(&args(&["10"])).unwrap();
    let units = split(app.as_ref(), &params, 5, 50);
    assert!(units.len() >= 8, "only {} units", units.len());
    let total = run_all(app.as_ref(), units, 200);
    assert_eq!(count_of(app.as_ref(), &total), 724);
    assert_eq!(app.verify(&params, &total).unwrap(), Some(true));
}

#[test]
fn nqueens_every_way_of_dividing_once_adds_up() {
    // Divide after k steps of one node each, for every k until the search
    // ends: each split must neither lose nor double count a solution.
    let params = nqueens::Params { n: 8 };
    let mut k = 0;
    loop {
        let mut unit = NQueens::init(&params).unwrap();
        let mut done = None;
        for _ in 0..k {
            let mut ctx = colony_guest::StepContext::new(1, Vec::new());
            if let colony_guest::Step::Done(c) = unit.step(&mut ctx) {
                done = Some(c);
                break;
            }
        }
        if done.is_some() {
            break;
        }
        let part = unit.divide();
        let mut total = 0;
        for mut u in std::iter::once(unit).chain(part) {
            total += loop {
                let mut ctx = colony_guest::StepContext::new(97, Vec::new());
                if let colony_guest::Step::Done(c) = u.step(&mut ctx) {
                    break c;
                }
            };
        }
        assert_eq!(total, 92, "divided after {k} nodes");
        k += 37;
    }
    assert!(k > 1000);
}

#[test]
fn nqueens_checkpoint_mid_search_then_finish() {
    let app = app("nqueens");
    let params = app.parse_args(&args(&["9"])).unwrap();
    let mut unit = app.init(&params).unwrap();
    let mut shared = SharedVars::default();
    for _ in 0..20 {
        let mut ctx = StepContext::new(&mut shared, 100);
        assert_eq!(unit.step(&mut ctx).unwrap(), Step::Continue);
    }
    let saved = unit.checkpoint().unwrap();
    drop(unit);
    let mut restored = app.restore(&saved).unwrap();
    assert_eq!(restored.checkpoint().unwrap(), saved);
    let out = finish(&mut restored, 100);
    assert_eq!(count_of(app.as_ref(), &out), 352);
}

#[test]
fn nqueens_bad_args_are_rejected() {
    let app = app("nqueens");
    for bad in [
        vec![],
        vec!["0"],
        vec!["33"],
        vec!["-1"],
        vec!["twelve"],
        vec!["12", "13"],
    ] {
        let result = app.parse_args(&args(&bad));
        assert!(
            matches!(&result, Err(AppError::BadParams(msg)) if msg.contains("usage")),
            "{bad:?} gave {result:?}"
        );
    }
    assert!(app.parse_args(&args(&["32"])).is_ok());
    assert!(app.restore(&[0xff; 3]).is_err());
    // A well-formed state with an impossible board is refused too:
    // N = 0, no open row, no solution.
    let no_board = colony_guest::codec::encode(&(0u32, Vec::<(u32, u32, u32, u32)>::new(), 0u64));
    assert!(matches!(
        app.restore(&no_board),
        Err(AppError::Corrupt { .. })
    ));
}

#[test]
fn nqueens_verify_and_describe() {
    let p = nqueens::Params { n: 8 };
    assert_eq!(NQueens::verify(&p, &92), Some(true));
    assert_eq!(NQueens::verify(&p, &91), Some(false));
    assert_eq!(NQueens::verify(&nqueens::Params { n: 19 }, &1), None);
    assert!(NQueens::describe(&p, &92).contains("92"));
}

// ---------------------------------------------------------------- matmul

fn matmul_units(params: &matmul::Params) -> Vec<MatMul> {
    let mut units = vec![MatMul::init(params).unwrap()];
    let mut shared = SharedVars::default();
    for round in 0..3 {
        let mut next = Vec::new();
        for mut unit in units {
            if round > 0 {
                // Compute a row or two first: the split must respect it.
                let mut ctx = StepContext::new(&mut shared, 1);
                assert_eq!(unit.step(&mut ctx), Step::Continue);
            }
            next.extend(unit.divide());
            next.push(unit);
        }
        units = next;
    }
    units
}

fn matmul_run(units: Vec<MatMul>, budget: u64) -> Blocks {
    let mut shared = SharedVars::default();
    units
        .into_iter()
        .map(|mut u| loop {
            if let Step::Done(b) = u.step(&mut StepContext::new(&mut shared, budget)) {
                break b;
            }
        })
        .reduce(MatMul::merge)
        .unwrap()
}

#[test]
fn matmul_divided_equals_the_sequential_product() {
    let params = matmul::Params { n: 64, seed: 11 };
    let units = matmul_units(&params);
    assert_eq!(units.len(), 8);
    let blocks = matmul_run(units, 64 * 64 * 3);
    assert_eq!(blocks.len(), 8);
    assert!(blocks.windows(2).all(|w| w[0].0 < w[1].0));
    let flat: Vec<f64> = blocks.iter().flat_map(|(_, r)| r.iter().copied()).collect();
    assert_eq!(flat, matmul::sequential_product(&params));
    assert_eq!(MatMul::verify(&params, &blocks), Some(true));
    assert!(MatMul::describe(&params, &blocks).contains("equals the sequential product"));
}

#[test]
fn matmul_through_the_registry_with_checkpoints() {
    let app = app("matmul");
    let params = app.parse_args(&args(&["48", "--seed", "5"])).unwrap();
    let units = split(app.as_ref(), &params, 3, 48 * 48 * 2);
    // Checkpoint and restore every unit mid-way.
    let units: Vec<Box<dyn Unit>> = units
        .into_iter()
        .map(|mut u| app.restore(&u.checkpoint().unwrap()).unwrap_or(u))
        .collect();
    let total = run_all(app.as_ref(), units, 48 * 48 * 5);
    assert_eq!(app.verify(&params, &total).unwrap(), Some(true));
    let (sequential, work) = run_sequential(app.as_ref(), &params, 1 << 20).unwrap();
    assert_eq!(work, 48 * 48 * 48);
    assert_eq!(app.verify(&params, &sequential).unwrap(), Some(true));
}

#[test]
fn matmul_a_changed_row_fails_verify() {
    let params = matmul::Params { n: 64, seed: 1 };
    let mut blocks = matmul_run(matmul_units(&params), 1 << 20);
    assert_eq!(MatMul::verify(&params, &blocks), Some(true));
    // Nudge one entry of row 40 by one unit in the last place.
    let block = blocks
        .iter_mut()
        .rev()
        .find(|(start, _)| *start <= 40)
        .unwrap();
    let at = (40 - block.0 as usize) * 64 + 7;
    block.1[at] = f64::from_bits(block.1[at].to_bits() + 1);
    assert_eq!(MatMul::verify(&params, &blocks), Some(false));
    assert!(MatMul::describe(&params, &blocks).contains("DIFFERS"));
}

#[test]
fn matmul_a_missing_or_repeated_block_fails_verify() {
    let params = matmul::Params { n: 64, seed: 1 };
    let blocks = matmul_run(matmul_units(&params), 1 << 20);
    let mut missing = blocks.clone();
    missing.remove(3);
    assert_eq!(MatMul::verify(&params, &missing), Some(false));
    assert!(MatMul::describe(&params, &missing).contains("INCOMPLETE"));
    let repeated = MatMul::merge(blocks.clone(), vec![blocks[2].clone()]);
    assert_eq!(MatMul::verify(&params, &repeated), Some(false));
    // The same rows under another seed are wrong.
    let other = matmul::Params { n: 64, seed: 2 };
    assert_eq!(MatMul::verify(&other, &blocks), Some(false));
}

#[test]
fn matmul_args() {
    let app = app("matmul");
    assert_eq!(
        MatMul::parse_args(&args(&["256"])).unwrap(),
        matmul::Params { n: 256, seed: 1 }
    );
    assert_eq!(
        MatMul::parse_args(&args(&["256", "--seed", "7"])).unwrap(),
        matmul::Params { n: 256, seed: 7 }
    );
    assert_eq!(
        MatMul::parse_args(&args(&["--seed", "7", "4096"])).unwrap(),
        matmul::Params { n: 4096, seed: 7 }
    );
    for bad in [
        vec![],
        vec!["0"],
        vec!["4097"],
        vec!["big"],
        vec!["8", "9"],
        vec!["8", "--seed"],
        vec!["8", "--seed", "x"],
        vec!["8", "--sed", "1"],
    ] {
        let result = app.parse_args(&args(&bad));
        assert!(
            matches!(&result, Err(AppError::BadParams(msg)) if msg.contains("usage")),
            "{bad:?} gave {result:?}"
        );
    }
    assert!(matches!(
        app.restore(&[1, 1, 2, 1, 1, 0]),
        Err(AppError::Corrupt { .. })
    ));
}
