//! Multiplies two seeded random n×n matrices, C = A·B, by blocks of rows.
//!
//! A and B are never sent: both are generated from the job's seed (entries
//! uniform in [-1, 1), each row from its own generator so a worker makes
//! only the rows of A it needs). A unit is just `(n, seed, rows, next row)`
//! plus the rows of C it has computed; it rebuilds B on first use and keeps
//! it out of checkpoints. [`divide`](Divisible::divide) gives away the upper
//! half of the rows left. The result is the list of computed row blocks,
//! checked element by element against a sequential multiply that uses the
//! same summation order, so a correct run is bit-identical.
//!
//! ```text
//! colony run matmul 256 --seed 7
//! ```

use colony_core::divisible::{AppError, Divisible, Step, StepContext};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

/// The largest matrix side accepted.
pub const MAX_N: u32 = 4096;

/// The seed used when `--seed` is not given.
pub const DEFAULT_SEED: u64 = 1;

/// Above this side, [`Divisible::describe`] does not redo the product
/// (use [`Divisible::verify`]).
const DESCRIBE_RECHECK_MAX_N: u32 = 1024;

/// Job parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Params {
    /// Side of the square matrices, 1..=4096.
    pub n: u32,
    /// Seed of A and B.
    pub seed: u64,
}

/// A partial result: blocks of consecutive rows of C, each as the index of
/// its first row and its rows concatenated (row-major), sorted by first row.
pub type Blocks = Vec<(u32, Vec<f64>)>;

/// Which matrix a generated row belongs to.
#[derive(Clone, Copy)]
pub(crate) enum Matrix {
    A = 1,
    B = 2,
}

/// SplitMix64's finaliser: spreads a counter over 64 bits.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Row `row` of matrix `which`, `n` entries uniform in [-1, 1).
pub(crate) fn generate_row(n: u32, seed: u64, which: Matrix, row: u32, out: &mut Vec<f64>) {
    let stream = ((which as u64) << 32) | u64::from(row);
    let mut rng = SmallRng::seed_from_u64(mix(seed ^ mix(stream)));
    out.clear();
    out.extend((0..n).map(|_| rng.random::<f64>() * 2.0 - 1.0));
}

/// The whole of B, row-major.
fn generate_b(n: u32, seed: u64) -> Vec<f64> {
    let side = n as usize;
    let mut b = Vec::with_capacity(side * side);
    let mut row = Vec::with_capacity(side);
    for k in 0..n {
        generate_row(n, seed, Matrix::B, k, &mut row);
        b.extend_from_slice(&row);
    }
    b
}

/// `c_row = a_row · B`, summing over k in increasing order (i-k-j). Both
/// the units and [`verify`](Divisible::verify) use this, so equal inputs
/// give bit-identical rows.
pub(crate) fn multiply_row(a_row: &[f64], b: &[f64], c_row: &mut [f64]) {
    let n = c_row.len();
    c_row.fill(0.0);
    for (&a_ik, b_row) in a_row.iter().zip(b.chunks_exact(n)) {
        for (c, &b_kj) in c_row.iter_mut().zip(b_row) {
            *c += a_ik * b_kj;
        }
    }
}

/// C = A·B computed on one thread, row by row: the reference.
pub fn sequential_product(params: &Params) -> Vec<f64> {
    let side = params.n as usize;
    let b = generate_b(params.n, params.seed);
    let mut c = vec![0.0; side * side];
    let mut a_row = Vec::with_capacity(side);
    for (i, c_row) in (0..params.n).zip(c.chunks_exact_mut(side)) {
        generate_row(params.n, params.seed, Matrix::A, i, &mut a_row);
        multiply_row(&a_row, &b, c_row);
    }
    c
}

pub(crate) fn check_n(n: u32) -> Result<(), String> {
    if n == 0 || n > MAX_N {
        Err(format!("n must be between 1 and {MAX_N}, got {n}"))
    } else {
        Ok(())
    }
}

/// Parses `N [--seed S]` for the matrix applications named `app`.
pub(crate) fn parse_args(app: &str, args: &[String]) -> Result<Params, AppError> {
    let usage = format!(
        "usage: colony run {app} N [--seed S]   (N = matrix side, 1 to {MAX_N}; \
         S = seed of the random matrices, default 1)"
    );
    let bad = |what: String| AppError::BadParams(format!("{what}; {usage}"));
    let mut n = None;
    let mut seed = None;
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        // `--seed S` or `--seed=S`.
        let seed_value = if arg == "--seed" {
            Some(
                args.next()
                    .map(String::as_str)
                    .ok_or_else(|| bad("--seed needs a value".into()))?,
            )
        } else {
            arg.strip_prefix("--seed=")
        };
        if let Some(value) = seed_value {
            if seed.is_some() {
                return Err(bad("--seed given twice".into()));
            }
            let value = value
                .trim()
                .parse::<u64>()
                .map_err(|_| bad(format!("the seed is not a whole number: {value:?}")))?;
            seed = Some(value);
        } else if arg.starts_with("--") {
            return Err(bad(format!("unknown option {arg:?}")));
        } else if n.is_some() {
            return Err(bad(format!("unexpected extra argument {arg:?}")));
        } else {
            let value = arg
                .trim()
                .parse::<u32>()
                .map_err(|_| bad(format!("N is not a whole number: {arg:?}")))?;
            check_n(value).map_err(bad)?;
            n = Some(value);
        }
    }
    let n = n.ok_or_else(|| bad("missing N".into()))?;
    Ok(Params {
        n,
        seed: seed.unwrap_or(DEFAULT_SEED),
    })
}

/// A unit of matrix multiply work: rows `row_start..row_end` of C, of which
/// `row_start..next_row` are done and held in `rows`.
#[derive(Serialize, Deserialize)]
#[serde(try_from = "Wire")]
pub struct MatMul {
    n: u32,
    seed: u64,
    row_start: u32,
    row_end: u32,
    next_row: u32,
    /// Computed rows `row_start..next_row`, row-major.
    rows: Vec<f64>,
    /// B, rebuilt from the seed on first use; never serialised.
    #[serde(skip)]
    b: Option<Vec<f64>>,
}

/// The serialised form, validated before it becomes a unit so a corrupt
/// or hostile state is an error rather than a panic.
#[derive(Deserialize)]
struct Wire {
    n: u32,
    seed: u64,
    row_start: u32,
    row_end: u32,
    next_row: u32,
    rows: Vec<f64>,
}

impl TryFrom<Wire> for MatMul {
    type Error = String;

    fn try_from(w: Wire) -> Result<Self, String> {
        check_n(w.n)?;
        if !(w.row_start <= w.next_row && w.next_row <= w.row_end && w.row_end <= w.n) {
            return Err(format!(
                "row range {}..{} (next {}) does not fit {} rows",
                w.row_start, w.row_end, w.next_row, w.n
            ));
        }
        let expected = (w.next_row - w.row_start) as usize * w.n as usize;
        if w.rows.len() != expected {
            return Err(format!(
                "{} computed entries, expected {expected}",
                w.rows.len()
            ));
        }
        Ok(MatMul {
            n: w.n,
            seed: w.seed,
            row_start: w.row_start,
            row_end: w.row_end,
            next_row: w.next_row,
            rows: w.rows,
            b: None,
        })
    }
}

impl MatMul {
    /// The rows this unit covers, `start..end`.
    pub fn row_range(&self) -> std::ops::Range<u32> {
        self.row_start..self.row_end
    }

    /// Rows not computed yet.
    pub fn rows_left(&self) -> u32 {
        self.row_end - self.next_row
    }
}

/// Orders blocks by first row, then (only for duplicates, which
/// [`Divisible::verify`] rejects) by content, so merging is commutative.
pub(crate) fn block_order(x: &(u32, Vec<f64>), y: &(u32, Vec<f64>)) -> std::cmp::Ordering {
    x.0.cmp(&y.0)
        .then_with(|| x.1.len().cmp(&y.1.len()))
        .then_with(|| {
            let bits = |v: &[f64]| v.iter().map(|e| e.to_bits()).collect::<Vec<_>>();
            bits(&x.1).cmp(&bits(&y.1))
        })
}

/// Whether `blocks` hold every row of C exactly once, in order.
fn covers_every_row_once(n: u32, blocks: &Blocks) -> bool {
    let side = n as usize;
    if side == 0 {
        // Parameters from a peer: no side, no rows to cover.
        return false;
    }
    let mut sorted: Vec<&(u32, Vec<f64>)> = blocks.iter().collect();
    sorted.sort_by(|x, y| block_order(x, y));
    let mut next = 0usize;
    for (start, rows) in sorted {
        if *start as usize != next || rows.is_empty() || rows.len() % side != 0 {
            return false;
        }
        next += rows.len() / side;
    }
    next == side
}

impl Divisible for MatMul {
    type Params = Params;
    type Output = Blocks;

    const NAME: &'static str = "matmul";

    fn parse_args(args: &[String]) -> Result<Params, AppError> {
        parse_args(Self::NAME, args)
    }

    fn init(params: &Params) -> Result<Self, AppError> {
        check_n(params.n).map_err(AppError::BadParams)?;
        Ok(MatMul {
            n: params.n,
            seed: params.seed,
            row_start: 0,
            row_end: params.n,
            next_row: 0,
            rows: Vec::new(),
            b: None,
        })
    }

    fn step(&mut self, ctx: &mut StepContext<'_>) -> Step<Blocks> {
        let side = self.n as usize;
        let per_row = u64::from(self.n) * u64::from(self.n);
        if self.row_start == self.row_end {
            return Step::Done(Vec::new());
        }
        let b = self.b.get_or_insert_with(|| generate_b(self.n, self.seed));
        let mut a_row = Vec::with_capacity(side);
        let mut done = 0u64;
        // At least one row per step, then as many as the budget allows.
        while self.next_row < self.row_end && (done == 0 || done + per_row <= ctx.budget()) {
            generate_row(self.n, self.seed, Matrix::A, self.next_row, &mut a_row);
            let at = self.rows.len();
            self.rows.resize(at + side, 0.0);
            multiply_row(&a_row, b, &mut self.rows[at..]);
            self.next_row += 1;
            done += per_row;
        }
        ctx.count(done);
        if self.next_row < self.row_end {
            return Step::Continue;
        }
        Step::Done(vec![(self.row_start, std::mem::take(&mut self.rows))])
    }

    fn divide(&mut self) -> Option<Self> {
        let left = self.rows_left();
        if left < 2 {
            return None;
        }
        let mid = self.next_row + left / 2;
        let part = MatMul {
            n: self.n,
            seed: self.seed,
            row_start: mid,
            row_end: self.row_end,
            next_row: mid,
            rows: Vec::new(),
            b: None,
        };
        self.row_end = mid;
        Some(part)
    }

    fn merge(mut a: Blocks, b: Blocks) -> Blocks {
        a.extend(b);
        a.sort_by(block_order);
        a
    }

    fn verify(params: &Params, output: &Blocks) -> Option<bool> {
        if check_n(params.n).is_err() || !covers_every_row_once(params.n, output) {
            return Some(false);
        }
        let side = params.n as usize;
        let b = generate_b(params.n, params.seed);
        let mut a_row = Vec::with_capacity(side);
        let mut expected = vec![0.0; side];
        for (start, rows) in output {
            for (i, got) in (*start..).zip(rows.chunks_exact(side)) {
                generate_row(params.n, params.seed, Matrix::A, i, &mut a_row);
                multiply_row(&a_row, &b, &mut expected);
                if got
                    .iter()
                    .zip(&expected)
                    .any(|(g, e)| g.to_bits() != e.to_bits())
                {
                    return Some(false);
                }
            }
        }
        Some(true)
    }

    fn describe(params: &Params, output: &Blocks) -> String {
        let side = params.n as usize;
        let entries: usize = output.iter().map(|(_, rows)| rows.len()).sum();
        let checksum: f64 = output.iter().flat_map(|(_, rows)| rows.iter()).sum();
        let check = if !covers_every_row_once(params.n, output) {
            "INCOMPLETE: rows are missing or repeated".to_string()
        } else if params.n > DESCRIBE_RECHECK_MAX_N {
            "every row present once (verify recomputes the product)".to_string()
        } else if Self::verify(params, output) == Some(true) {
            "equals the sequential product".to_string()
        } else {
            "DIFFERS from the sequential product".to_string()
        };
        format!(
            "C = A·B for {n}×{n} (seed {seed}): {rows} rows in {blocks} block{s}, \
             checksum {checksum:.6} (sum of entries); {check}",
            n = params.n,
            seed = params.seed,
            rows = entries / side.max(1),
            blocks = output.len(),
            s = if output.len() == 1 { "" } else { "s" },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use colony_core::divisible::SharedVars;

    fn finish(unit: &mut MatMul, budget: u64) -> Blocks {
        let mut shared = SharedVars::default();
        loop {
            let mut ctx = StepContext::new(&mut shared, budget);
            if let Step::Done(blocks) = unit.step(&mut ctx) {
                return blocks;
            }
        }
    }

    #[test]
    fn one_unit_equals_the_sequential_product() {
        let params = Params { n: 17, seed: 3 };
        let mut unit = MatMul::init(&params).unwrap();
        let blocks = finish(&mut unit, 17 * 17 * 4);
        assert_eq!(blocks.len(), 1);
        let expected = sequential_product(&params);
        assert_eq!(blocks[0].1, expected);
        assert_eq!(MatMul::verify(&params, &blocks), Some(true));
    }

    #[test]
    fn small_product_is_right() {
        // 1×1: C = a·b, a and b from their own rows.
        let params = Params { n: 1, seed: 9 };
        let (mut a, mut b) = (Vec::new(), Vec::new());
        generate_row(1, 9, Matrix::A, 0, &mut a);
        generate_row(1, 9, Matrix::B, 0, &mut b);
        assert_eq!(sequential_product(&params), vec![a[0] * b[0]]);
    }

    #[test]
    fn entries_are_in_range_and_depend_on_the_seed() {
        let b1 = generate_b(32, 1);
        let b2 = generate_b(32, 2);
        assert!(b1.iter().all(|x| (-1.0..1.0).contains(x)));
        assert_ne!(b1, b2);
        assert_eq!(b1, generate_b(32, 1));
        let mut a = Vec::new();
        generate_row(32, 1, Matrix::A, 0, &mut a);
        assert_ne!(a[..], b1[..32]);
    }

    #[test]
    fn divide_gives_away_the_upper_half() {
        let mut unit = MatMul::init(&Params { n: 9, seed: 1 }).unwrap();
        let part = unit.divide().unwrap();
        assert_eq!(unit.row_range(), 0..4);
        assert_eq!(part.row_range(), 4..9);
        let mut small = MatMul::init(&Params { n: 1, seed: 1 }).unwrap();
        assert!(small.divide().is_none());
    }

    #[test]
    fn merge_is_commutative() {
        let a: Blocks = vec![(2, vec![1.0, 2.0])];
        let b: Blocks = vec![(0, vec![3.0, 4.0, 5.0, 6.0])];
        assert_eq!(MatMul::merge(a.clone(), b.clone()), MatMul::merge(b, a));
    }

    #[test]
    fn coverage_rejects_gaps_overlaps_and_ragged_blocks() {
        assert!(covers_every_row_once(
            2,
            &vec![(0, vec![0.0; 2]), (1, vec![0.0; 2])]
        ));
        assert!(!covers_every_row_once(2, &vec![(0, vec![0.0; 2])]));
        assert!(!covers_every_row_once(
            2,
            &vec![(0, vec![0.0; 4]), (1, vec![0.0; 2])]
        ));
        assert!(!covers_every_row_once(2, &vec![(0, vec![0.0; 3])]));
        assert!(!covers_every_row_once(
            2,
            &vec![(0, vec![0.0; 2]), (1, vec![0.0; 2]), (2, vec![])]
        ));
    }
}
