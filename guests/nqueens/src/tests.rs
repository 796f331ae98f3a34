//! The counts checked against OEIS A000170 (and brute force), the texts
//! and errors users see, the work of divided parts against the undivided
//! search, and the handling of divided, checkpointed and hostile states.

use colony_guest::codec::{decode, encode};
use colony_guest::{run_sequential, Divisible, Step, StepContext};

use super::*;

const USAGE: &str = "usage: colony run nqueens N   (N = board size, 1 to 32, e.g. 12)";

/// Steps `unit` to the end with `budget` per step: its count and the work.
fn finish(unit: &mut NQueens, budget: u64) -> (u64, u64) {
    let mut work = 0;
    loop {
        let mut ctx = StepContext::new(budget, Vec::new());
        let step = unit.step(&mut ctx);
        work += ctx.work();
        if let Step::Done(count) = step {
            return (count, work);
        }
    }
}

/// The number of solutions of an `n`×`n` board by brute force: every
/// placement of one queen per row, checked pair by pair.
fn brute_force(n: usize) -> u64 {
    fn place(n: usize, columns: &mut Vec<usize>) -> u64 {
        if columns.len() == n {
            return 1;
        }
        let row = columns.len();
        let mut count = 0;
        for column in 0..n {
            let safe = columns
                .iter()
                .enumerate()
                .all(|(r, &c)| c != column && row - r != c.abs_diff(column));
            if safe {
                columns.push(column);
                count += place(n, columns);
                columns.pop();
            }
        }
        count
    }
    place(n, &mut Vec::new())
}

/// The state after an encode/decode round trip, validated as the host's
/// restore does.
fn restore(unit: &NQueens) -> NQueens {
    let restored: NQueens = decode(&encode(unit)).expect("decodes");
    restored.validate().expect("valid");
    assert_eq!(&restored, unit);
    restored
}

fn args(text: &str) -> Vec<String> {
    text.split_whitespace().map(String::from).collect()
}

#[test]
fn counts_match_the_table_and_brute_force() {
    for n in 1..=12u32 {
        let params = NQueens::parse_args(&[n.to_string()]).expect("valid N");
        assert_eq!(params, Params { n });
        let (count, work) = run_sequential::<NQueens>(&params, 1000).expect("runs");
        assert_eq!(Some(count), known_count(n), "N = {n}");
        if n <= 8 {
            assert_eq!(count, brute_force(n as usize), "N = {n}");
        }
        // The nodes explored do not depend on how the search is sliced.
        for budget in [1, 7, 1 << 20] {
            assert_eq!(
                run_sequential::<NQueens>(&params, budget),
                Ok((count, work)),
                "N = {n}, budget {budget}"
            );
        }
        assert!(work >= count, "N = {n}: every solution is a node");
        assert_eq!(NQueens::verify(&params, &count), Some(true));
        assert_eq!(NQueens::output_json(&count), count.to_string());
        assert_eq!(
            NQueens::describe(&params, &count),
            format!("{count} solutions to {n}-Queens on a {n}×{n} board; matches OEIS A000170"),
        );
    }
    assert_eq!(KNOWN_COUNTS[17], 666_090_624);
    assert_eq!(known_count(0), None);
    assert_eq!(known_count(19), None);
}

#[test]
fn a_wrong_count_is_reported() {
    let params = Params { n: 8 };
    assert_eq!(NQueens::verify(&params, &91), Some(false));
    assert_eq!(
        NQueens::describe(&params, &91),
        "91 solutions to 8-Queens on a 8×8 board; DOES NOT match OEIS A000170 (92)"
    );
    assert_eq!(NQueens::verify(&Params { n: 20 }, &1), None);
    assert_eq!(
        NQueens::describe(&Params { n: 20 }, &1),
        "1 solutions to 20-Queens on a 20×20 board; no tabulated count to check against"
    );
}

#[test]
fn argument_errors_say_what_is_wrong() {
    let cases = [
        ("", "missing N".to_string()),
        ("0", "N must be between 1 and 32, got 0".to_string()),
        ("33", "N must be between 1 and 32, got 33".to_string()),
        ("-1", "N is not a whole number: \"-1\"".to_string()),
        ("twelve", "N is not a whole number: \"twelve\"".to_string()),
        ("1.5", "N is not a whole number: \"1.5\"".to_string()),
        ("8 8", "expected one argument, got 2".to_string()),
    ];
    for (bad, message) in cases {
        assert_eq!(
            NQueens::parse_args(&args(bad)),
            Err(format!("{message}; {USAGE}")),
            "{bad:?}"
        );
    }
    assert_eq!(NQueens::parse_args(&args(" 12 ")), Ok(Params { n: 12 }));
    assert_eq!(NQueens::parse_args(&args("32")), Ok(Params { n: 32 }));
    assert_eq!(
        NQueens::init(&Params { n: 0 }),
        Err("N must be between 1 and 32, got 0".to_string())
    );
    assert!(NQueens::init(&Params { n: 33 }).is_err());
}

#[test]
fn budget_of_one_still_progresses() {
    let mut unit = NQueens::init(&Params { n: 6 }).expect("valid N");
    assert_eq!(finish(&mut unit, 1).0, 4);
    let mut zero = NQueens::init(&Params { n: 6 }).expect("valid N");
    assert_eq!(finish(&mut zero, 0).0, 4, "a budget of 0 counts as 1");
}

#[test]
fn divide_splits_the_shallowest_open_row() {
    let mut unit = NQueens::init(&Params { n: 8 }).expect("valid N");
    let mut part = unit.divide().expect("divides");
    assert_eq!(unit.stack[0].untried, 0x0f);
    assert_eq!(part.stack[0].untried, 0xf0);
    assert_eq!(part.stack.len(), 1);
    assert_eq!(finish(&mut unit, 100).0 + finish(&mut part, 100).0, 92);
}

#[test]
fn tiny_boards_and_finished_units_decline_to_divide() {
    for n in 1..=3 {
        let mut unit = NQueens::init(&Params { n }).expect("valid N");
        assert!(unit.divide().is_none(), "N = {n}");
    }
    let mut unit = NQueens::init(&Params { n: 8 }).expect("valid N");
    finish(&mut unit, 1000);
    assert!(unit.is_finished());
    assert!(unit.divide().is_none());
}

#[test]
fn split_bits_keeps_the_lowest() {
    assert_eq!(split_bits(0b1011_0110, 2), (0b0000_0110, 0b1011_0000));
    assert_eq!(split_bits(0, 3), (0, 0));
}

#[test]
fn largest_board_is_accepted_and_divides() {
    let mut unit = NQueens::init(&Params { n: 32 }).expect("valid N");
    assert_eq!(unit.stack[0].untried, u32::MAX);
    let mut ctx = StepContext::new(10_000, Vec::new());
    assert_eq!(unit.step(&mut ctx), Step::Continue);
    assert!(ctx.work() >= 10_000);
    assert!(unit.divide().is_some());
    restore(&unit);
}

#[test]
fn divided_and_checkpointed_parts_add_up_to_the_whole_search() {
    // Step, divide, checkpoint and restore both parts, divide once more,
    // finish them: the parts count what the whole board has, and together
    // explore exactly the nodes of the undivided search; each restored part
    // does what its never-encoded copy does.
    for (n, first_budget) in [(10u32, 37u64), (11, 500), (12, 5000)] {
        let (_, whole_work) = run_sequential::<NQueens>(&Params { n }, 1000).expect("runs");
        let mut unit = NQueens::init(&Params { n }).expect("valid N");
        let mut ctx = StepContext::new(first_budget, Vec::new());
        assert_eq!(unit.step(&mut ctx), Step::Continue);
        let first_work = ctx.work();

        let part = unit.divide().expect("divides");
        let mut unit = restore(&unit);
        // Divide the rest once more, mid-way, to cover a deeper split.
        let second = unit.divide().expect("divides again");
        let parts = [unit, part, second];
        let mut total = 0;
        let mut work = first_work;
        for part in &parts {
            let restored = finish(&mut restore(part), 300);
            assert_eq!(restored, finish(&mut part.clone(), 300), "N = {n}");
            total = NQueens::merge(total, restored.0);
            work += restored.1;
        }
        assert_eq!(Some(total), known_count(n), "N = {n}");
        assert_eq!(work, whole_work, "N = {n}: no node lost or explored twice");
    }
}

#[test]
fn repeated_division_loses_no_solution() {
    // Divide whatever can be divided after every step, round-tripping each
    // unit through its encoding, until every unit is finished.
    let mut units = vec![NQueens::init(&Params { n: 10 }).expect("valid N")];
    let mut total = 0;
    let mut divisions = 0;
    while let Some(mut unit) = units.pop() {
        let mut ctx = StepContext::new(50, Vec::new());
        match unit.step(&mut ctx) {
            Step::Done(count) => total = NQueens::merge(total, count),
            Step::Continue => {
                if let Some(part) = unit.divide() {
                    divisions += 1;
                    units.push(restore(&part));
                }
                units.push(restore(&unit));
            }
        }
    }
    assert!(divisions > 10, "{divisions} divisions");
    assert_eq!(total, 724);
}

#[test]
fn merge_saturates() {
    assert_eq!(NQueens::merge(u64::MAX, 5), u64::MAX);
    assert_eq!(NQueens::merge(3, 4), 7);
}

/// A state with the given fields, encoded as a peer would send it.
fn encoded(n: u32, frames: &[[u32; 4]], solutions: u64) -> Vec<u8> {
    let stack = frames
        .iter()
        .map(|&[cols, left, right, untried]| Frame {
            cols,
            left,
            right,
            untried,
        })
        .collect();
    encode(&NQueens {
        n,
        stack,
        solutions,
    })
}

/// What the host's restore does: decode, then validate.
fn restore_bytes(bytes: &[u8]) -> Result<NQueens, String> {
    let unit: NQueens = decode(bytes).map_err(|e| e.to_string())?;
    unit.validate()?;
    Ok(unit)
}

#[test]
fn hostile_states_are_refused() {
    assert!(restore_bytes(&encoded(4, &[[0, 0, 0, 0b1111]], 0)).is_ok());
    let cases = [
        // Bits outside the board, in each mask.
        encoded(4, &[[0, 0, 0, 0b1_0000]], 0),
        encoded(4, &[[0b1_0000, 0, 0, 1]], 0),
        encoded(4, &[[0, 1 << 31, 0, 1]], 0),
        encoded(4, &[[0, 0, 0b10_0000, 1]], 0),
        // More open rows than the board has.
        encoded(4, &[[0, 0, 0, 1]; 5], 0),
        // No board, or one past the largest.
        encoded(0, &[], 0),
        encoded(0, &[[0, 0, 0, 1]], 0),
        encoded(33, &[[0, 0, 0, 1]], 0),
        encoded(u32::MAX, &[], 0),
    ];
    for bytes in &cases {
        let refused = restore_bytes(bytes);
        assert!(refused.is_err(), "{bytes:?} was accepted");
    }
    assert!(restore_bytes(&encoded(4, &[[0, 0, 0, 1]; 5], 0))
        .unwrap_err()
        .contains("5 open rows on a board of 4 rows"));
    assert!(restore_bytes(&encoded(4, &[[0, 0, 0, 0b1_0000]], 0))
        .unwrap_err()
        .contains("bits outside the 4 columns"));
}

#[test]
fn truncated_padded_and_oversized_bytes_fail_to_decode() {
    let valid = encoded(8, &[[1, 2, 4, 0xf0], [1, 2, 4, 0x0f]], 3);
    assert!(restore_bytes(&valid).is_ok());
    for len in 0..valid.len() {
        assert!(restore_bytes(&valid[..len]).is_err(), "{len} bytes");
    }
    let mut padded = valid.clone();
    padded.push(0);
    assert!(restore_bytes(&padded).is_err());
    // A stack length far past what the bytes hold.
    let mut oversized = encode(&8u32);
    oversized.extend_from_slice(&u32::MAX.to_le_bytes());
    oversized.extend_from_slice(&[0; 24]);
    assert!(restore_bytes(&oversized).is_err());
}

#[test]
fn mangled_checkpoints_never_panic() {
    // Flip bytes of a real mid-search checkpoint: each result is refused
    // or is a state that steps without panicking (a flipped N may make it
    // a search of a far larger board: step it a while, not to the end).
    let mut unit = NQueens::init(&Params { n: 9 }).expect("valid N");
    let mut ctx = StepContext::new(200, Vec::new());
    unit.step(&mut ctx);
    let checkpoint = encode(&unit);
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut accepted = 0;
    for _ in 0..2000 {
        let mut bytes = checkpoint.clone();
        for _ in 0..3 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let at = (seed % bytes.len() as u64) as usize;
            bytes[at] ^= (seed >> 32) as u8 | 1;
        }
        if let Ok(mut unit) = restore_bytes(&bytes) {
            accepted += 1;
            for _ in 0..10 {
                let mut ctx = StepContext::new(10_000, Vec::new());
                if let Step::Done(_) = unit.step(&mut ctx) {
                    break;
                }
                if let Some(part) = unit.divide() {
                    restore(&part);
                }
            }
        }
    }
    assert!(accepted > 0, "some mangled states are still valid searches");
}
