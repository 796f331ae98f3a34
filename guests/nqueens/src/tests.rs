//! The guest checked against the native application (same counts, same
//! work, same texts), and its handling of divided, checkpointed and hostile
//! states.

use colony_core::divisible::{self as native, AppError, SharedVars};
use colony_guest::codec::{decode, encode};
use colony_guest::{run_sequential, Divisible, Step, StepContext};

use super::*;

type NativeNQueens = colony_apps::nqueens::NQueens;

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

/// The same for a native unit.
fn finish_native(unit: &mut NativeNQueens, budget: u64) -> (u64, u64) {
    let mut shared = SharedVars::default();
    let mut work = 0;
    loop {
        let mut ctx = native::StepContext::new(&mut shared, budget);
        let step = native::Divisible::step(unit, &mut ctx);
        work += ctx.work();
        if let native::Step::Done(count) = step {
            return (count, work);
        }
    }
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
fn counts_work_and_texts_match_the_native_application() {
    let app = colony_apps::examples().get("nqueens").expect("registered");
    for n in 1..=12u32 {
        let native_params = app.parse_args(&[n.to_string()]).expect("valid N");
        let (native_output, native_work) =
            native::run_sequential(&*app, &native_params, 1000).expect("runs");

        let params = NQueens::parse_args(&[n.to_string()]).expect("valid N");
        let (count, work) = run_sequential::<NQueens>(&params, 1000).expect("runs");

        assert_eq!(Some(count), known_count(n), "N = {n}");
        assert_eq!(work, native_work, "N = {n}: the same nodes");
        assert_eq!(
            NQueens::output_json(&count),
            app.output_json(&native_output).expect("json").to_string(),
            "N = {n}"
        );
        assert_eq!(
            NQueens::describe(&params, &count),
            app.describe(&native_params, &native_output)
                .expect("describes"),
            "N = {n}"
        );
        assert_eq!(NQueens::verify(&params, &count), Some(true));
    }
}

#[test]
fn a_wrong_count_is_reported() {
    let params = Params { n: 8 };
    assert_eq!(NQueens::verify(&params, &91), Some(false));
    assert!(NQueens::describe(&params, &91).contains("DOES NOT match OEIS A000170 (92)"));
    assert_eq!(NQueens::verify(&Params { n: 20 }, &1), None);
}

#[test]
fn argument_errors_are_the_native_ones() {
    let app = colony_apps::examples().get("nqueens").expect("registered");
    for bad in ["", "0", "33", "-1", "twelve", "8 8", "1.5"] {
        let native_message = match app.parse_args(&args(bad)) {
            Err(AppError::BadParams(message)) => message,
            other => panic!("{bad:?}: native answered {other:?}"),
        };
        assert_eq!(
            NQueens::parse_args(&args(bad)),
            Err(native_message),
            "{bad:?}"
        );
    }
    assert_eq!(NQueens::parse_args(&args(" 12 ")), Ok(Params { n: 12 }));
    assert!(NQueens::init(&Params { n: 0 }).is_err());
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
fn divided_and_checkpointed_parts_match_the_native_ones() {
    // Step both implementations the same way, divide, checkpoint and
    // restore both parts, finish them: every part counts what its native
    // twin counts, with the same work, and the parts add up.
    for (n, first_budget) in [(10u32, 37u64), (11, 500), (12, 5000)] {
        let mut unit = NQueens::init(&Params { n }).expect("valid N");
        let mut native_unit =
            <NativeNQueens as native::Divisible>::init(&colony_apps::nqueens::Params { n })
                .expect("valid N");
        let mut ctx = StepContext::new(first_budget, Vec::new());
        assert_eq!(unit.step(&mut ctx), Step::Continue);
        let mut shared = SharedVars::default();
        let mut native_ctx = native::StepContext::new(&mut shared, first_budget);
        native::Divisible::step(&mut native_unit, &mut native_ctx);
        assert_eq!(ctx.work(), native_ctx.work());

        let mut part = restore(&unit.divide().expect("divides"));
        let mut native_part = native::Divisible::divide(&mut native_unit).expect("divides");
        let mut unit = restore(&unit);
        // Divide the rest once more, mid-way, to cover a deeper split.
        let mut second = restore(&unit.divide().expect("divides again"));
        let mut native_second = native::Divisible::divide(&mut native_unit).expect("divides");

        let counts = [
            (finish(&mut unit, 300), finish_native(&mut native_unit, 300)),
            (finish(&mut part, 300), finish_native(&mut native_part, 300)),
            (
                finish(&mut second, 300),
                finish_native(&mut native_second, 300),
            ),
        ];
        for (guest, native) in counts {
            assert_eq!(guest, native, "N = {n}");
        }
        let total = counts
            .iter()
            .map(|(guest, _)| guest.0)
            .fold(0, NQueens::merge);
        assert_eq!(Some(total), known_count(n), "N = {n}");
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
