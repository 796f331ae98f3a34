//! Tests of the search internals: exactness against brute force, validity of
//! the bound on partial schedules, and the open-node stack.

use colony_core::divisible::{Divisible, SharedVars, Step, StepContext};
use proptest::prelude::*;

use super::search::{Engine, Incumbent, Open, Place, Tree};
use super::*;

/// A random instance: Taillard's generator with an arbitrary seed.
fn random_instance(jobs: usize, machines: usize, seed: i64) -> Instance {
    let times = taillard::generate(jobs, machines, seed);
    let rows: Vec<Vec<u16>> = times.chunks(jobs).map(<[u16]>::to_vec).collect();
    Instance::new(format!("random-{seed}"), &rows).unwrap()
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

#[test]
fn a_malformed_checkpoint_finishes_with_what_it_has() {
    let instance = random_instance(6, 3, 7);
    let mut unit = FlowShop::for_instance(instance);
    unit.tree.path = vec![Place {
        job: 99,
        back: false,
    }];
    let mut shared = SharedVars::default();
    let mut ctx = StepContext::new(&mut shared, 100);
    match unit.step(&mut ctx) {
        Step::Done(best) => assert_eq!(best, unit.best),
        Step::Continue => panic!("a malformed unit must not keep running"),
    }
}
