//! Counts every solution of the N-Queens problem: the ways to place N queens
//! on an N×N board so that no two share a row, column or diagonal.
//!
//! The search is the classic bitmask backtracking, one row at a time, kept on
//! an explicit stack so a [`step`](Divisible::step) can stop after about
//! `ctx.budget()` nodes and resume later, and so the state serialises as a
//! checkpoint. [`divide`](Divisible::divide) gives away half of the untried
//! columns at the shallowest row that still has some, which hands over the
//! largest subtrees first. Partial counts merge by addition; the final count
//! is checked against OEIS A000170 for N ≤ 18.
//!
//! ```text
//! colony run nqueens 14
//! ```

use colony_core::divisible::{AppError, Divisible, Step, StepContext};
use serde::{Deserialize, Serialize};

/// The largest board: one bit per column in a `u32`.
pub const MAX_N: u32 = 32;

/// Known solution counts for N = 1..=18 (OEIS A000170).
pub const KNOWN_COUNTS: [u64; 18] = [
    1, 0, 0, 2, 10, 4, 40, 92, 352, 724, 2680, 14200, 73712, 365596, 2279184, 14772512, 95815104,
    666090624,
];

/// The known number of solutions for an `n`×`n` board, if tabulated.
pub fn known_count(n: u32) -> Option<u64> {
    let index = usize::try_from(n).ok()?.checked_sub(1)?;
    KNOWN_COUNTS.get(index).copied()
}

/// Job parameters: the board size.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Params {
    /// Board size, 1..=32.
    pub n: u32,
}

/// One open row of the search: the attacked squares of the queens placed
/// above it, and the columns of this row not tried yet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Frame {
    /// Columns taken by the queens above.
    cols: u32,
    /// Squares of this row attacked along down-left diagonals.
    left: u32,
    /// Squares of this row attacked along down-right diagonals.
    right: u32,
    /// Safe columns of this row still to try.
    untried: u32,
}

/// A unit of N-Queens work: the part of the search tree still to explore
/// and the solutions found so far.
///
/// `stack[d]` is row `d`; rows whose `untried` set is empty are kept only
/// so that a row's depth is its index (they are popped when reached).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "Wire")]
pub struct NQueens {
    n: u32,
    stack: Vec<Frame>,
    solutions: u64,
}

/// The serialised form, validated before it becomes a unit so a corrupt
/// or hostile state is an error rather than a panic.
#[derive(Deserialize)]
struct Wire {
    n: u32,
    stack: Vec<Frame>,
    solutions: u64,
}

impl TryFrom<Wire> for NQueens {
    type Error = String;

    fn try_from(wire: Wire) -> Result<Self, String> {
        check_n(wire.n)?;
        if wire.stack.len() > wire.n as usize {
            return Err(format!(
                "{} open rows on a board of {} rows",
                wire.stack.len(),
                wire.n
            ));
        }
        let full = full_mask(wire.n);
        if wire
            .stack
            .iter()
            .any(|f| (f.cols | f.left | f.right | f.untried) & !full != 0)
        {
            return Err(format!(
                "a row mask has bits outside the {} columns",
                wire.n
            ));
        }
        Ok(NQueens {
            n: wire.n,
            stack: wire.stack,
            solutions: wire.solutions,
        })
    }
}

fn check_n(n: u32) -> Result<(), String> {
    if n == 0 || n > MAX_N {
        Err(format!("N must be between 1 and {MAX_N}, got {n}"))
    } else {
        Ok(())
    }
}

/// The mask of the `n` columns.
fn full_mask(n: u32) -> u32 {
    if n >= 32 {
        u32::MAX
    } else {
        (1u32 << n) - 1
    }
}

/// Splits `set` into its lowest `keep` bits and the rest.
fn split_bits(set: u32, keep: u32) -> (u32, u32) {
    let mut low = 0;
    let mut rest = set;
    for _ in 0..keep {
        let bit = rest & rest.wrapping_neg();
        low |= bit;
        rest ^= bit;
    }
    (low, rest)
}

impl NQueens {
    /// Solutions found so far by this unit.
    pub fn solutions(&self) -> u64 {
        self.solutions
    }

    /// Whether nothing is left to explore.
    pub fn is_finished(&self) -> bool {
        self.stack.iter().all(|f| f.untried == 0)
    }
}

/// Do not divide a row with fewer than this many rows below it: its
/// subtrees are too small to be worth a message.
const MIN_ROWS_BELOW_TO_DIVIDE: usize = 3;

impl Divisible for NQueens {
    type Params = Params;
    /// Number of solutions found.
    type Output = u64;

    const NAME: &'static str = "nqueens";

    fn parse_args(args: &[String]) -> Result<Params, AppError> {
        let usage = "usage: colony run nqueens N   (N = board size, 1 to 32, e.g. 12)";
        let [arg] = args else {
            return Err(AppError::BadParams(if args.is_empty() {
                format!("missing N; {usage}")
            } else {
                format!("expected one argument, got {}; {usage}", args.len())
            }));
        };
        let n: u32 = arg.trim().parse().map_err(|_| {
            AppError::BadParams(format!("N is not a whole number: {arg:?}; {usage}"))
        })?;
        check_n(n).map_err(|e| AppError::BadParams(format!("{e}; {usage}")))?;
        Ok(Params { n })
    }

    fn init(params: &Params) -> Result<Self, AppError> {
        check_n(params.n).map_err(AppError::BadParams)?;
        Ok(NQueens {
            n: params.n,
            stack: vec![Frame {
                cols: 0,
                left: 0,
                right: 0,
                untried: full_mask(params.n),
            }],
            solutions: 0,
        })
    }

    fn step(&mut self, ctx: &mut StepContext<'_>) -> Step<u64> {
        let budget = ctx.budget().max(1);
        let full = full_mask(self.n);
        let last = self.n as usize - 1;
        let mut nodes = 0u64;
        while nodes < budget {
            let depth = match self.stack.len() {
                0 => break,
                len => len - 1,
            };
            let top = &mut self.stack[depth];
            if top.untried == 0 {
                self.stack.pop();
                continue;
            }
            let bit = top.untried & top.untried.wrapping_neg();
            top.untried ^= bit;
            let Frame {
                cols, left, right, ..
            } = *top;
            nodes += 1;
            if depth == last {
                // Only for N = 1: the first row is the last.
                self.solutions = self.solutions.saturating_add(1);
                continue;
            }
            let cols = cols | bit;
            let left = ((left | bit) << 1) & full;
            let right = (right | bit) >> 1;
            let untried = full & !(cols | left | right);
            if untried == 0 {
                continue;
            }
            if depth + 1 == last {
                // Every safe square of the last row is a solution.
                let placed = u64::from(untried.count_ones());
                nodes += placed;
                self.solutions = self.solutions.saturating_add(placed);
                continue;
            }
            self.stack.push(Frame {
                cols,
                left,
                right,
                untried,
            });
        }
        ctx.count(nodes);
        if self.stack.is_empty() {
            Step::Done(self.solutions)
        } else {
            Step::Continue
        }
    }

    fn divide(&mut self) -> Option<Self> {
        let n = self.n as usize;
        let top = self.stack.len().checked_sub(1)?;
        // The shallowest row with untried columns and enough rows below it.
        let depth = (0..self.stack.len())
            .take_while(|&d| d + 1 + MIN_ROWS_BELOW_TO_DIVIDE <= n)
            .find(|&d| self.stack[d].untried != 0)?;
        let untried = self.stack[depth].untried;
        let choices = untried.count_ones();
        let (keep, give) = if choices >= 2 {
            split_bits(untried, choices / 2)
        } else if depth < top {
            // A single column left here: give all of it, this unit still
            // has the subtree below it in progress.
            (0, untried)
        } else {
            return None;
        };
        self.stack[depth].untried = keep;
        let mut stack: Vec<Frame> = self.stack[..=depth]
            .iter()
            .map(|f| Frame { untried: 0, ..*f })
            .collect();
        stack[depth].untried = give;
        Some(NQueens {
            n: self.n,
            stack,
            solutions: 0,
        })
    }

    fn merge(a: u64, b: u64) -> u64 {
        // Counts may come from a hostile peer: saturate rather than panic.
        a.saturating_add(b)
    }

    fn verify(params: &Params, output: &u64) -> Option<bool> {
        known_count(params.n).map(|known| known == *output)
    }

    fn describe(params: &Params, output: &u64) -> String {
        let check = match Self::verify(params, output) {
            Some(true) => "matches OEIS A000170".to_string(),
            Some(false) => format!(
                "DOES NOT match OEIS A000170 ({})",
                known_count(params.n).unwrap_or_default()
            ),
            None => "no tabulated count to check against".to_string(),
        };
        format!(
            "{output} solutions to {n}-Queens on a {n}×{n} board; {check}",
            n = params.n
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use colony_core::divisible::SharedVars;

    fn finish(unit: &mut NQueens, budget: u64) -> u64 {
        let mut shared = SharedVars::default();
        loop {
            let mut ctx = StepContext::new(&mut shared, budget);
            if let Step::Done(count) = unit.step(&mut ctx) {
                return count;
            }
        }
    }

    #[test]
    fn small_boards_match_the_table() {
        for n in 1..=9 {
            let mut unit = NQueens::init(&Params { n }).unwrap();
            assert_eq!(finish(&mut unit, 1000), known_count(n).unwrap(), "N = {n}");
        }
    }

    #[test]
    fn budget_of_one_still_progresses() {
        let mut unit = NQueens::init(&Params { n: 6 }).unwrap();
        assert_eq!(finish(&mut unit, 1), 4);
    }

    #[test]
    fn divide_splits_the_shallowest_open_row() {
        let mut unit = NQueens::init(&Params { n: 8 }).unwrap();
        let part = unit.divide().unwrap();
        assert_eq!(unit.stack[0].untried, 0x0f);
        assert_eq!(part.stack[0].untried, 0xf0);
        assert_eq!(part.stack.len(), 1);
        assert_eq!(finish(&mut unit, 100) + finish(&mut part.clone(), 100), 92);
    }

    #[test]
    fn tiny_boards_decline_to_divide() {
        for n in 1..=3 {
            let mut unit = NQueens::init(&Params { n }).unwrap();
            assert!(unit.divide().is_none(), "N = {n}");
        }
    }

    #[test]
    fn a_finished_unit_declines_to_divide() {
        let mut unit = NQueens::init(&Params { n: 8 }).unwrap();
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
        let mut unit = NQueens::init(&Params { n: 32 }).unwrap();
        assert_eq!(unit.stack[0].untried, u32::MAX);
        let mut shared = SharedVars::default();
        let mut ctx = StepContext::new(&mut shared, 10_000);
        assert_eq!(unit.step(&mut ctx), Step::Continue);
        assert!(ctx.work() >= 10_000);
        assert!(unit.divide().is_some());
    }
}
