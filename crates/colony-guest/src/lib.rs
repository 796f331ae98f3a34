//! Write a Colony application once, compile it to WebAssembly, and run it
//! on peers that never installed it.
//!
//! A guest is a Rust library that implements [`Divisible`] — the same
//! model as native applications (`step` a bounded slice of work, `divide`
//! off part of what is left, `merge` partial results) — and ends with
//! [`export_divisible!`]. States, parameters and results cross the sandbox
//! as bytes in the [`codec`] encoding, so checkpoints, work stealing and
//! recovery treat a guest exactly like a native unit.
//!
//! ```
//! use colony_guest::{codec_struct, Divisible, Step, StepContext};
//!
//! /// Sums 1..=n, split in ranges.
//! struct SumTo { next: u64, end: u64, acc: u64 }
//! codec_struct!(SumTo { next, end, acc });
//!
//! impl Divisible for SumTo {
//!     type Params = u64;
//!     type Output = u64;
//!     const NAME: &'static str = "sum";
//!
//!     fn parse_args(args: &[String]) -> Result<u64, String> {
//!         args.first().and_then(|n| n.parse().ok()).ok_or_else(|| "usage: sum N".to_string())
//!     }
//!     fn init(n: &u64) -> Result<Self, String> {
//!         Ok(SumTo { next: 1, end: n + 1, acc: 0 })
//!     }
//!     fn step(&mut self, ctx: &mut StepContext) -> Step<u64> {
//!         let stop = self.end.min(self.next + ctx.budget());
//!         while self.next < stop { self.acc += self.next; self.next += 1; ctx.count(1); }
//!         if self.next == self.end { Step::Done(self.acc) } else { Step::Continue }
//!     }
//!     fn divide(&mut self) -> Option<Self> {
//!         let left = self.end - self.next;
//!         if left < 2 { return None; }
//!         let mid = self.next + left / 2;
//!         let part = SumTo { next: mid, end: self.end, acc: 0 };
//!         self.end = mid;
//!         Some(part)
//!     }
//!     fn merge(a: u64, b: u64) -> u64 { a + b }
//!     fn describe(n: &u64, sum: &u64) -> String { format!("1 + … + {n} = {sum}") }
//!     fn output_json(sum: &u64) -> String { sum.to_string() }
//! }
//!
//! colony_guest::export_divisible!(SumTo);
//!
//! let (sum, work) = colony_guest::run_sequential::<SumTo>(&100, 7).unwrap();
//! assert_eq!((sum, work), (5050, 100));
//! ```
//!
//! Build it for the sandbox with any rustc that has the `wasm32` standard
//! library (on Debian: `apt-get install rustc libstd-rust-dev-wasm32 lld`):
//!
//! ```text
//! rustc --edition 2021 --crate-type rlib --target wasm32-unknown-unknown -O \
//!     crates/colony-guest/src/lib.rs -o libcolony_guest.rlib
//! rustc --edition 2021 --crate-type cdylib --target wasm32-unknown-unknown -O \
//!     --extern colony_guest=libcolony_guest.rlib my_app/src/lib.rs -o my_app.wasm
//! ```
//!
//! The module imports nothing: a guest sees only the bytes the host hands
//! it, and no clock, file, network or environment.

pub mod abi;
pub mod codec;

use codec::{Decode, Encode};

/// The outcome of one [`Divisible::step`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step<O> {
    /// More work remains in this unit.
    Continue,
    /// The unit is finished; this is its partial result.
    Done(O),
}

/// Which way a shared variable may move.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Monotone {
    /// Only ever decreases (a best makespan).
    Min,
    /// Only ever increases.
    Max,
}

impl Encode for Monotone {
    fn encode(&self, w: &mut codec::Writer) {
        match self {
            Monotone::Min => 0u8.encode(w),
            Monotone::Max => 1u8.encode(w),
        }
    }
}

impl Decode for Monotone {
    fn decode(r: &mut codec::Reader<'_>) -> Result<Self, codec::DecodeError> {
        match u8::decode(r)? {
            0 => Ok(Monotone::Min),
            1 => Ok(Monotone::Max),
            other => Err(codec::DecodeError(format!(
                "{other} is not a monotone kind"
            ))),
        }
    }
}

/// One shared monotone variable of a job and its current value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SharedVar {
    /// Its name.
    pub name: String,
    /// Which way it moves.
    pub kind: Monotone,
    /// Its value.
    pub value: i64,
}

codec_struct!(SharedVar { name, kind, value });

/// What a step can see and do besides its own state: its budget, a work
/// counter, and the job's shared variables as they stood when it began.
pub struct StepContext {
    budget: u64,
    work: u64,
    shared: Vec<SharedVar>,
    improved: bool,
}

impl StepContext {
    /// A context asking for about `budget` operations over `shared`.
    pub fn new(budget: u64, shared: Vec<SharedVar>) -> StepContext {
        StepContext {
            budget,
            work: 0,
            shared,
            improved: false,
        }
    }

    /// Roughly how many elementary operations this step should do.
    pub fn budget(&self) -> u64 {
        self.budget
    }

    /// Counts `n` operations done.
    pub fn count(&mut self, n: u64) {
        self.work += n;
    }

    /// Operations counted so far.
    pub fn work(&self) -> u64 {
        self.work
    }

    /// The current value of a shared variable.
    pub fn shared(&self, name: &str) -> Option<i64> {
        self.shared.iter().find(|v| v.name == name).map(|v| v.value)
    }

    /// Offers a value for a shared minimum; true if it improved it.
    pub fn offer_min(&mut self, name: &str, value: i64) -> bool {
        self.offer(name, Monotone::Min, value)
    }

    /// Offers a value for a shared maximum; true if it improved it.
    pub fn offer_max(&mut self, name: &str, value: i64) -> bool {
        self.offer(name, Monotone::Max, value)
    }

    fn offer(&mut self, name: &str, kind: Monotone, value: i64) -> bool {
        let better = match self.shared.iter_mut().find(|v| v.name == name) {
            None => {
                self.shared.push(SharedVar {
                    name: name.to_string(),
                    kind,
                    value,
                });
                true
            }
            Some(var) => {
                let better = match var.kind {
                    Monotone::Min => value < var.value,
                    Monotone::Max => value > var.value,
                };
                if better {
                    var.value = value;
                }
                better
            }
        };
        self.improved |= better;
        better
    }

    /// Whether this step improved a shared variable.
    pub fn improved(&self) -> bool {
        self.improved
    }

    /// The shared variables with this step's offers applied.
    pub fn into_shared(self) -> Vec<SharedVar> {
        self.shared
    }
}

/// A divisible application compiled to WebAssembly. The same contract as
/// native applications: `step` is deterministic given the state and the
/// shared variables, and `merge` is associative and commutative.
pub trait Divisible: Encode + Decode + Sized {
    /// Job parameters, parsed from `colony run --wasm MODULE [args]`.
    type Params: Encode + Decode + Clone;
    /// A partial result; the job's result is the merge of every unit's.
    type Output: Encode + Decode + Clone;

    /// The application's name, shown beside the module id.
    const NAME: &'static str;

    /// Parses command-line arguments into parameters, with a clear error.
    fn parse_args(args: &[String]) -> Result<Self::Params, String>;

    /// The whole job as one unit.
    fn init(params: &Self::Params) -> Result<Self, String>;

    /// Checks a state decoded from bytes that came from elsewhere (a
    /// checkpoint, a divided part): an error fails the unit cleanly.
    fn validate(&self) -> Result<(), String> {
        Ok(())
    }

    /// Does about `ctx.budget()` operations of work.
    fn step(&mut self, ctx: &mut StepContext) -> Step<Self::Output>;

    /// Hands over part of the remaining work as a new unit, or declines.
    fn divide(&mut self) -> Option<Self>;

    /// Combines two partial results (associative and commutative).
    fn merge(a: Self::Output, b: Self::Output) -> Self::Output;

    /// Initial values of shared variables (e.g. a heuristic's bound).
    fn initial_shared(_params: &Self::Params) -> Vec<SharedVar> {
        Vec::new()
    }

    /// Checks a final result against a known answer, if one is known.
    fn verify(_params: &Self::Params, _output: &Self::Output) -> Option<bool> {
        None
    }

    /// A human-readable account of a final result.
    fn describe(params: &Self::Params, output: &Self::Output) -> String;

    /// The result as a JSON text (for `--json` output).
    fn output_json(output: &Self::Output) -> String;
}

/// Runs a job to completion in this process, dividing nothing: what a
/// guest's native tests check it against.
pub fn run_sequential<A: Divisible>(
    params: &A::Params,
    budget: u64,
) -> Result<(A::Output, u64), String> {
    let mut shared = A::initial_shared(params);
    let mut unit = A::init(params)?;
    let mut work = 0;
    loop {
        let mut ctx = StepContext::new(budget, shared);
        let step = unit.step(&mut ctx);
        work += ctx.work();
        shared = ctx.into_shared();
        if let Step::Done(output) = step {
            return Ok((output, work));
        }
    }
}
