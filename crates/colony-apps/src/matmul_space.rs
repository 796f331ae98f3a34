//! The matrix multiply of P³'s listing (seed 002 §3.2) through the object
//! space: the job's first unit stores the rows of A and B in the job's
//! namespace (`A/<i>`, `B/<k>`, each row as little-endian `f64`s), and
//! every unit binds the rows it needs (its rows of A, all of B) and
//! computes while they arrive. A unit's state is only its row range and
//! the rows of C it computed; nothing of A or B travels with work or
//! checkpoints. The product is checked, bit for bit, against the
//! sequential multiply, as for [`crate::matmul`].
//!
//! ```text
//! colony run matmul-space 128 --seed 7
//! ```

use std::collections::BTreeMap;
use std::time::Duration;

use colony_core::divisible::{AppError, Binding, Divisible, Step, StepContext, UnitSpace};
use colony_core::space::SpaceError;
use serde::{Deserialize, Serialize};

use crate::matmul::{check_n, generate_row, multiply_row, Blocks, MatMul, Matrix, Params};

/// The largest side accepted: the upload is 2·N objects from one unit.
pub const MAX_SPACE_N: u32 = 1024;

/// Rows of A a unit binds ahead of the one it computes.
const A_WINDOW: u32 = 32;

/// How long a step waits for the first outcome it polls.
const PATIENCE: Duration = Duration::from_millis(20);

/// Tries of one binding that the space could not answer before the unit
/// fails.
const MAX_TRIES: u32 = 3;

/// The object holding row `row` of `which`.
fn object_name(which: Matrix, row: u32) -> String {
    match which {
        Matrix::A => format!("A/{row}"),
        Matrix::B => format!("B/{row}"),
    }
}

fn row_bytes(row: &[f64]) -> Vec<u8> {
    row.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// A row read back from the space; `None` if it has the wrong length.
fn row_from(bytes: &[u8], n: u32) -> Option<Vec<f64>> {
    if bytes.len() != n as usize * 8 {
        return None;
    }
    Some(
        bytes
            .chunks_exact(8)
            .map(|c| {
                let mut b = [0u8; 8];
                b.copy_from_slice(c);
                f64::from_le_bytes(b)
            })
            .collect(),
    )
}

/// What a unit has in flight, rebuilt on each peer it runs on.
#[derive(Default)]
struct InFlight {
    /// Writes of the upload, by binding.
    uploads: BTreeMap<Binding, (Matrix, u32, u32)>,
    /// Reads, by binding: which row, and how many tries so far.
    reads: BTreeMap<Binding, (Matrix, u32, u32)>,
    /// Rows of B arrived (all are needed).
    b: Vec<Option<Vec<f64>>>,
    b_missing: u32,
    /// Rows of A arrived, by index.
    a: BTreeMap<u32, Vec<f64>>,
    /// Next row of A to bind.
    a_bound_to: u32,
}

/// A unit: rows `row_start..row_end` of C, of which `row_start..next_row`
/// are done and held in `rows`; the first unit uploads A and B first.
#[derive(Serialize, Deserialize)]
pub struct MatMulSpace {
    n: u32,
    seed: u64,
    /// Whether A and B are in the job's namespace.
    uploaded: bool,
    row_start: u32,
    row_end: u32,
    next_row: u32,
    rows: Vec<f64>,
    #[serde(skip)]
    io: Option<InFlight>,
}

impl MatMulSpace {
    fn check(&self) -> Result<(), String> {
        check_n(self.n)?;
        if self.n > MAX_SPACE_N {
            return Err(format!(
                "n must be at most {MAX_SPACE_N} here, got {}",
                self.n
            ));
        }
        let fits = self.row_start <= self.next_row
            && self.next_row <= self.row_end
            && self.row_end <= self.n;
        let expected = (self.next_row - self.row_start) as usize * self.n as usize;
        if !fits || self.rows.len() != expected {
            return Err("row range and computed rows do not fit".into());
        }
        Ok(())
    }

    /// Starts the upload, or collects its acknowledgements; `true` once
    /// every row is stored.
    fn upload(&mut self, space: &mut dyn UnitSpace) -> Result<bool, AppError> {
        let (n, seed) = (self.n, self.seed);
        let io = self.io.get_or_insert_with(InFlight::default);
        if io.uploads.is_empty() {
            let mut row = Vec::with_capacity(n as usize);
            for which in [Matrix::A, Matrix::B] {
                for i in 0..n {
                    generate_row(n, seed, which, i, &mut row);
                    let binding = space.send(&object_name(which, i), row_bytes(&row));
                    io.uploads.insert(binding, (which, i, 1));
                }
            }
        }
        let pending: Vec<Binding> = io.uploads.keys().copied().collect();
        let mut patience = PATIENCE;
        for binding in pending {
            let Some(outcome) = space.poll(binding, patience) else {
                continue;
            };
            patience = Duration::ZERO;
            let Some((which, i, tries)) = io.uploads.remove(&binding) else {
                continue;
            };
            if let Err(error) = outcome {
                if tries >= MAX_TRIES || !retryable(&error) {
                    return Err(space_failed(&object_name(which, i), &error));
                }
                let mut row = Vec::with_capacity(n as usize);
                generate_row(n, seed, which, i, &mut row);
                let again = space.send(&object_name(which, i), row_bytes(&row));
                io.uploads.insert(again, (which, i, tries + 1));
            }
        }
        Ok(io.uploads.is_empty())
    }

    /// Binds what is needed next and collects what arrived.
    fn fetch(&mut self, space: &mut dyn UnitSpace) -> Result<(), AppError> {
        let n = self.n;
        let (next_row, row_end) = (self.next_row, self.row_end);
        let io = self.io.get_or_insert_with(InFlight::default);
        if io.b.is_empty() {
            io.b = vec![None; n as usize];
            io.b_missing = n;
            for k in 0..n {
                let binding = space.bind(&object_name(Matrix::B, k));
                io.reads.insert(binding, (Matrix::B, k, 1));
            }
            io.a_bound_to = next_row;
        }
        io.a_bound_to = io.a_bound_to.max(next_row);
        while io.a_bound_to < row_end && io.a_bound_to < next_row + A_WINDOW {
            let binding = space.bind(&object_name(Matrix::A, io.a_bound_to));
            io.reads.insert(binding, (Matrix::A, io.a_bound_to, 1));
            io.a_bound_to += 1;
        }
        let pending: Vec<Binding> = io.reads.keys().copied().collect();
        let mut patience = PATIENCE;
        for binding in pending {
            let Some(outcome) = space.poll(binding, patience) else {
                continue;
            };
            patience = Duration::ZERO;
            let Some((which, i, tries)) = io.reads.remove(&binding) else {
                continue;
            };
            let name = object_name(which, i);
            match outcome {
                Ok(Some(bytes)) => {
                    let row = row_from(&bytes, n).ok_or_else(|| {
                        AppError::Space(format!(
                            "object {name} of the job's namespace holds {} bytes, not a row of {n}",
                            bytes.len()
                        ))
                    })?;
                    match which {
                        Matrix::B => {
                            if let Some(slot) = io.b.get_mut(i as usize) {
                                if slot.replace(row).is_none() {
                                    io.b_missing -= 1;
                                }
                            }
                        }
                        Matrix::A => {
                            io.a.insert(i, row);
                        }
                    }
                }
                Ok(None) => {
                    return Err(AppError::Space(format!(
                        "object {name} is missing from the job's namespace {}",
                        space.namespace()
                    )))
                }
                Err(error) if tries < MAX_TRIES && retryable(&error) => {
                    let again = space.bind(&name);
                    io.reads.insert(again, (which, i, tries + 1));
                }
                Err(error) => return Err(space_failed(&name, &error)),
            }
        }
        Ok(())
    }

    /// Computes the rows whose inputs arrived, within the budget.
    fn compute(&mut self, ctx: &mut StepContext<'_>) {
        let side = self.n as usize;
        let per_row = u64::from(self.n) * u64::from(self.n);
        let Some(io) = self.io.as_mut() else {
            return;
        };
        if io.b_missing > 0 {
            return;
        }
        let b: Vec<f64> = io.b.iter().flatten().flatten().copied().collect();
        let mut done = 0u64;
        while self.next_row < self.row_end && (done == 0 || done + per_row <= ctx.budget()) {
            let Some(a_row) = io.a.remove(&self.next_row) else {
                break;
            };
            let at = self.rows.len();
            self.rows.resize(at + side, 0.0);
            multiply_row(&a_row, &b, &mut self.rows[at..]);
            self.next_row += 1;
            done += per_row;
        }
        ctx.count(done);
    }
}

/// Whether a space error may pass if the request is made again.
fn retryable(error: &SpaceError) -> bool {
    matches!(
        error,
        SpaceError::Timeout { .. } | SpaceError::Unavailable(_) | SpaceError::Busy { .. }
    )
}

fn space_failed(name: &str, error: &SpaceError) -> AppError {
    AppError::Space(format!("object {name}: {error}"))
}

impl Divisible for MatMulSpace {
    type Params = Params;
    type Output = Blocks;

    const NAME: &'static str = "matmul-space";
    const USES_SPACE: bool = true;

    fn parse_args(args: &[String]) -> Result<Params, AppError> {
        let params = crate::matmul::parse_args(Self::NAME, args)?;
        if params.n > MAX_SPACE_N {
            return Err(AppError::BadParams(format!(
                "N must be at most {MAX_SPACE_N} for {}, got {}",
                Self::NAME,
                params.n
            )));
        }
        Ok(params)
    }

    fn init(params: &Params) -> Result<Self, AppError> {
        let unit = MatMulSpace {
            n: params.n,
            seed: params.seed,
            uploaded: false,
            row_start: 0,
            row_end: params.n,
            next_row: 0,
            rows: Vec::new(),
            io: None,
        };
        unit.check().map_err(AppError::BadParams)?;
        Ok(unit)
    }

    fn step(&mut self, ctx: &mut StepContext<'_>) -> Step<Blocks> {
        if let Err(why) = self.check() {
            ctx.fail(AppError::Corrupt {
                what: "matmul-space unit".into(),
                reason: why,
            });
            return Step::Continue;
        }
        let outcome = match ctx.space() {
            Err(error) => Err(error),
            Ok(space) if !self.uploaded => self.upload(space).map(|done| {
                if done {
                    self.uploaded = true;
                    // Bindings start afresh for the computation.
                    self.io = None;
                }
            }),
            Ok(space) => self.fetch(space),
        };
        if let Err(error) = outcome {
            ctx.fail(error);
            return Step::Continue;
        }
        if self.uploaded {
            self.compute(ctx);
        }
        if self.next_row < self.row_end {
            return Step::Continue;
        }
        Step::Done(vec![(self.row_start, std::mem::take(&mut self.rows))])
    }

    fn divide(&mut self) -> Option<Self> {
        let left = self.row_end - self.next_row;
        if !self.uploaded || left < 2 {
            return None;
        }
        let mid = self.next_row + left / 2;
        let part = MatMulSpace {
            n: self.n,
            seed: self.seed,
            uploaded: true,
            row_start: mid,
            row_end: self.row_end,
            next_row: mid,
            rows: Vec::new(),
            io: None,
        };
        self.row_end = mid;
        if let Some(io) = self.io.as_mut() {
            // Rows of A bound for the part given away are dropped here.
            io.a.retain(|i, _| *i < mid);
            io.a_bound_to = io.a_bound_to.min(mid);
        }
        Some(part)
    }

    fn merge(a: Blocks, b: Blocks) -> Blocks {
        MatMul::merge(a, b)
    }

    fn verify(params: &Params, output: &Blocks) -> Option<bool> {
        MatMul::verify(params, output)
    }

    fn describe(params: &Params, output: &Blocks) -> String {
        MatMul::describe(params, output)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, VecDeque};

    use colony_core::divisible::{BindingOutcome, SharedVars};

    use super::*;

    /// An object space in memory whose outcomes arrive `delay` polls late:
    /// the test double of a unit's view of the space.
    #[derive(Default)]
    struct MemorySpace {
        objects: BTreeMap<String, Vec<u8>>,
        pending: BTreeMap<Binding, (u32, BindingOutcome)>,
        next: u64,
        delay: u32,
        /// Errors to answer the next reads with, in order.
        failures: VecDeque<SpaceError>,
        reads: u64,
    }

    impl UnitSpace for MemorySpace {
        fn namespace(&self) -> &str {
            "job-test"
        }

        fn bind(&mut self, name: &str) -> Binding {
            self.next += 1;
            self.reads += 1;
            let outcome = match self.failures.pop_front() {
                Some(error) => Err(error),
                None => Ok(self.objects.get(name).cloned()),
            };
            self.pending
                .insert(Binding(self.next), (self.delay, outcome));
            Binding(self.next)
        }

        fn send(&mut self, name: &str, value: Vec<u8>) -> Binding {
            self.next += 1;
            self.objects.insert(name.to_string(), value);
            self.pending
                .insert(Binding(self.next), (self.delay, Ok(None)));
            Binding(self.next)
        }

        fn poll(&mut self, binding: Binding, _patience: Duration) -> Option<BindingOutcome> {
            let (wait, _) = self.pending.get_mut(&binding)?;
            if *wait > 0 {
                *wait -= 1;
                return None;
            }
            self.pending.remove(&binding).map(|(_, outcome)| outcome)
        }
    }

    fn run(unit: &mut MatMulSpace, space: &mut MemorySpace) -> Result<Blocks, AppError> {
        let mut shared = SharedVars::default();
        for _ in 0..10_000 {
            let mut ctx = StepContext::new(&mut shared, 10_000).with_space(space);
            let step = unit.step(&mut ctx);
            if let Some(error) = ctx.take_failure() {
                return Err(error);
            }
            if let Step::Done(blocks) = step {
                return Ok(blocks);
            }
        }
        panic!("the unit never finished");
    }

    #[test]
    fn units_bind_their_rows_and_the_product_is_the_sequential_one() {
        let params = Params { n: 24, seed: 5 };
        let mut space = MemorySpace {
            delay: 2,
            ..MemorySpace::default()
        };
        let mut root = MatMulSpace::init(&params).expect("valid");
        assert!(root.divide().is_none(), "no division before the upload");
        // Upload, then divide into three units computed one after another.
        let mut shared = SharedVars::default();
        while !root.uploaded {
            let mut ctx = StepContext::new(&mut shared, 1).with_space(&mut space);
            assert!(matches!(root.step(&mut ctx), Step::Continue));
        }
        assert_eq!(space.objects.len(), 48);
        let mut part = root.divide().expect("divides");
        let mut quarter = part.divide().expect("divides");
        // Parts carry index ranges only.
        let bytes = postcard::to_stdvec(&quarter).expect("encodes");
        assert!(bytes.len() < 32, "{} bytes", bytes.len());
        let mut output = Vec::new();
        for unit in [&mut root, &mut part, &mut quarter] {
            output = MatMulSpace::merge(output, run(unit, &mut space).expect("finishes"));
        }
        assert_eq!(MatMulSpace::verify(&params, &output), Some(true));
        // Without the space: a clear error.
        let mut lonely = MatMulSpace::init(&params).expect("valid");
        let mut shared = SharedVars::default();
        let mut ctx = StepContext::new(&mut shared, 10);
        let _ = lonely.step(&mut ctx);
        assert!(matches!(ctx.take_failure(), Some(AppError::Space(_))));
    }

    #[test]
    fn a_missing_or_damaged_row_fails_the_unit_and_transient_errors_are_retried() {
        let params = Params { n: 4, seed: 1 };
        let mut space = MemorySpace::default();
        let mut unit = MatMulSpace::init(&params).expect("valid");
        unit.uploaded = true;
        // Nothing was uploaded: the first row read is missing.
        match run(&mut unit, &mut space) {
            Err(AppError::Space(why)) => assert!(why.contains("missing"), "{why}"),
            other => panic!("{other:?}"),
        }
        // Uploaded, but the space times out twice: retried, and it works.
        let mut unit = MatMulSpace::init(&params).expect("valid");
        while !unit.uploaded {
            let mut shared = SharedVars::default();
            let mut ctx = StepContext::new(&mut shared, 1).with_space(&mut space);
            let _ = unit.step(&mut ctx);
        }
        let timeout = SpaceError::Timeout {
            waited_ms: 1,
            why: "test".into(),
        };
        space.failures = VecDeque::from([timeout.clone(), timeout]);
        let output = run(&mut unit, &mut space).expect("retried");
        assert_eq!(MatMulSpace::verify(&params, &output), Some(true));
        // A row of the wrong length is refused, not multiplied.
        space.objects.insert("B/2".into(), vec![0; 3]);
        let mut unit = MatMulSpace::init(&params).expect("valid");
        unit.uploaded = true;
        match run(&mut unit, &mut space) {
            Err(AppError::Space(why)) => assert!(why.contains("B/2"), "{why}"),
            other => panic!("{other:?}"),
        }
    }
}
