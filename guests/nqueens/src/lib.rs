//! N-Queens as a Colony WebAssembly guest: counts every way to place N
//! queens on an N×N board so that no two share a row, column or diagonal.
//!
//! Written once, against the [`colony_guest`] SDK: `colony_apps::nqueens`
//! is this crate, run natively in the `colony` binary (through
//! `colony_apps::native_guest`), and the same source built for `wasm32` is
//! the module that runs sandboxed on peers that never installed it. Both
//! exchange the same [`colony_guest::codec`] bytes.
//!
//! The search is the classic bitmask backtracking, one row at a time, kept on
//! an explicit stack so a [`step`](Divisible::step) can stop after about
//! `ctx.budget()` nodes and resume later, and so the state encodes as a
//! checkpoint. [`divide`](Divisible::divide) gives away half of the untried
//! columns at the shallowest row that still has some, which hands over the
//! largest subtrees first. Partial counts merge by addition; the final count
//! is checked against OEIS A000170 for N ≤ 18.
//!
//! Build the module with any rustc that has the `wasm32` standard library
//! (Debian's 1.63 and up), from the workspace root:
//!
//! ```text
//! rustc --edition 2021 --crate-type rlib --crate-name colony_guest \
//!     --target wasm32-unknown-unknown -C opt-level=3 -C panic=abort \
//!     crates/colony-guest/src/lib.rs -o libcolony_guest.rlib
//! rustc --edition 2021 --crate-type cdylib --crate-name nqueens \
//!     --target wasm32-unknown-unknown -C opt-level=3 -C panic=abort \
//!     -C strip=symbols -C lto --extern colony_guest=libcolony_guest.rlib \
//!     guests/nqueens/src/lib.rs -o nqueens.wasm
//! colony run --wasm nqueens.wasm 14
//! ```
//!
//! Natively (`cargo test -p colony-guest-nqueens`) the same crate builds
//! without the exports, and its tests check it against OEIS A000170.

use colony_guest::{codec_struct, Divisible, Step, StepContext};

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
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Params {
    /// Board size, 1..=32.
    pub n: u32,
}

codec_struct!(Params { n });

/// One open row of the search: the attacked squares of the queens placed
/// above it, and the columns of this row not tried yet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
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

codec_struct!(Frame {
    cols,
    left,
    right,
    untried
});

/// A unit of N-Queens work: the part of the search tree still to explore
/// and the solutions found so far. Encoded, it is the checkpoint.
///
/// `stack[d]` is row `d`; rows whose `untried` set is empty are kept only
/// so that a row's depth is its index (they are popped when reached).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NQueens {
    n: u32,
    stack: Vec<Frame>,
    solutions: u64,
}

codec_struct!(NQueens {
    n,
    stack,
    solutions
});

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

    fn parse_args(args: &[String]) -> Result<Params, String> {
        let usage = "usage: colony run nqueens N   (N = board size, 1 to 32, e.g. 12)";
        let arg = match args {
            [arg] => arg,
            [] => return Err(format!("missing N; {usage}")),
            _ => {
                return Err(format!(
                    "expected one argument, got {}; {usage}",
                    args.len()
                ))
            }
        };
        let n: u32 = arg
            .trim()
            .parse()
            .map_err(|_| format!("N is not a whole number: {arg:?}; {usage}"))?;
        check_n(n).map_err(|e| format!("{e}; {usage}"))?;
        Ok(Params { n })
    }

    fn init(params: &Params) -> Result<Self, String> {
        check_n(params.n)?;
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

    /// Refuses a decoded state that is not a search of a board of `n` rows:
    /// `n` out of range, more open rows than the board has, or a mask with
    /// bits outside its columns (so a corrupt or hostile state is an error
    /// rather than a panic).
    fn validate(&self) -> Result<(), String> {
        check_n(self.n)?;
        if self.stack.len() > self.n as usize {
            return Err(format!(
                "{} open rows on a board of {} rows",
                self.stack.len(),
                self.n
            ));
        }
        let full = full_mask(self.n);
        if self
            .stack
            .iter()
            .any(|f| (f.cols | f.left | f.right | f.untried) & !full != 0)
        {
            return Err(format!(
                "a row mask has bits outside the {} columns",
                self.n
            ));
        }
        Ok(())
    }

    fn step(&mut self, ctx: &mut StepContext) -> Step<u64> {
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

    fn output_json(output: &u64) -> String {
        output.to_string()
    }
}

colony_guest::export_divisible!(NQueens);

#[cfg(test)]
mod tests;
