//! The divisible programming model (P³, seed 002 §3): an application is a
//! serialisable work state with `step` (a bounded slice of work), `divide`
//! (hand part of what is left to another peer) and `merge` (combine partial
//! results, associatively). Checkpoint is serialisation between steps;
//! restart is deserialisation. A small facility of shared monotone variables
//! (the best makespan so far) is read and offered inside `step`.
//!
//! ```
//! use colony_core::divisible::{AppError, Divisible, Step, StepContext};
//! use serde::{Deserialize, Serialize};
//!
//! /// Sums 1..=n, split in ranges.
//! #[derive(Serialize, Deserialize)]
//! struct SumTo { next: u64, end: u64, acc: u64 }
//!
//! impl Divisible for SumTo {
//!     type Params = u64;
//!     type Output = u64;
//!     const NAME: &'static str = "sum";
//!
//!     fn parse_args(args: &[String]) -> Result<u64, AppError> {
//!         let n = args.first().ok_or_else(|| AppError::BadParams("usage: sum N".into()))?;
//!         n.parse().map_err(|_| AppError::BadParams(format!("not a number: {n}")))
//!     }
//!     fn init(n: &u64) -> Result<Self, AppError> {
//!         Ok(SumTo { next: 1, end: n + 1, acc: 0 })
//!     }
//!     fn step(&mut self, ctx: &mut StepContext<'_>) -> Step<u64> {
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
//! }
//! ```
//!
//! Register it with [`AppRegistry::register`]; the runtime then runs it on
//! every peer that has it.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// What an application can get wrong.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum AppError {
    /// The job's parameters are invalid (unknown instance, N = 0, ...).
    #[error("bad job parameters: {0}")]
    BadParams(String),
    /// No application of this name on this peer. For a guest's name
    /// (`wasm:<id>`) on a peer with no source of guests, it says the peer
    /// runs native applications only.
    #[error("{}", unknown_app(.0))]
    UnknownApp(String),
    /// A serialised state or result did not decode.
    #[error("corrupt {what}: {reason}")]
    Corrupt {
        /// What was being decoded.
        what: String,
        /// Why it failed.
        reason: String,
    },
    /// The application's own code panicked (the message says where and
    /// why); the peer caught it and goes on.
    #[error("{0}")]
    Panicked(String),
    /// A WebAssembly guest failed: it trapped, ran past its step deadline,
    /// grew past its memory cap, broke the ABI, or reported an error. The
    /// sandbox stopped it; the peer goes on.
    #[error("guest module: {0}")]
    Guest(String),
    /// The application is a module this peer has not fetched yet (its id).
    #[error(
        "this peer does not hold module {0}: neither the module's home nor the peer that \
         sent the job gave it (or gave bytes of another module)"
    )]
    ModuleMissing(String),
    /// The module is here, but no signer this peer trusts vouches for it
    /// (the sentence says who signed it and whom the peer trusts).
    #[error("{1}")]
    Untrusted(String, String),
    /// The application uses the object space and this executor offers
    /// none, or the space failed it (the sentence says which).
    #[error("object space: {0}")]
    Space(String),
}

/// The outcome of a [`Binding`]: the object's bytes for a read (`None`
/// if it does not exist), `None` for a write, or why it failed.
pub type BindingOutcome = Result<Option<Vec<u8>>, crate::space::SpaceError>;

/// A read or write a unit started in the object space: its outcome is
/// collected with [`UnitSpace::poll`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Binding(pub u64);

/// What a running unit can do with the object space (P³'s `p3bind` and
/// `p3send`, seed 002 §3.2): start reading or writing objects of its job's
/// namespace, go on computing, and collect the outcomes later. The
/// executor provides it ([`StepContext::space`]); units must not assume
/// an outcome arrives within one step.
pub trait UnitSpace: Send {
    /// The job's namespace (created on first use, destroyed with the job).
    fn namespace(&self) -> &str;
    /// Starts reading object `name` of the job's namespace.
    fn bind(&mut self, name: &str) -> Binding;
    /// Starts writing object `name` of the job's namespace.
    fn send(&mut self, name: &str, value: Vec<u8>) -> Binding;
    /// The outcome of `binding` once it arrived (`None` while in flight,
    /// after waiting at most `patience`): the object's bytes (`None` if it
    /// does not exist) for a read, `None` for a write. A binding's outcome
    /// is returned once.
    fn poll(&mut self, binding: Binding, patience: std::time::Duration) -> Option<BindingOutcome>;
}

/// The prefix of a WebAssembly guest's application name: `wasm:<id>`.
pub const GUEST_APP_PREFIX: &str = "wasm:";

/// What [`AppError::UnknownApp`] says about `name`.
fn unknown_app(name: &str) -> String {
    if name.starts_with(GUEST_APP_PREFIX) {
        format!(
            "this peer runs native applications only, not the WebAssembly module {name:?} \
             (its operator has not allowed guests)"
        )
    } else {
        format!("this peer has no application named {name:?}")
    }
}

/// The outcome of one [`Divisible::step`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step<O> {
    /// More work remains in this unit.
    Continue,
    /// The unit is finished; this is its partial result.
    Done(O),
}

/// Kind of a shared monotone variable.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Monotone {
    /// Only ever decreases (a best makespan).
    Min,
    /// Only ever increases.
    Max,
}

/// Shared monotone variables of one job: each name holds an `i64` that only
/// moves one way, so merging copies in any order converges (a CRDT).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SharedVars {
    values: BTreeMap<String, (Monotone, i64)>,
}

impl SharedVars {
    /// The current value of `name`.
    pub fn get(&self, name: &str) -> Option<i64> {
        self.values.get(name).map(|v| v.1)
    }

    /// Offers `value` for `name`; returns whether it improved the variable.
    pub fn offer(&mut self, name: &str, kind: Monotone, value: i64) -> bool {
        match self.values.get_mut(name) {
            None => {
                self.values.insert(name.to_string(), (kind, value));
                true
            }
            Some((k, current)) => {
                let better = match k {
                    Monotone::Min => value < *current,
                    Monotone::Max => value > *current,
                };
                if better {
                    *current = value;
                }
                better
            }
        }
    }

    /// Merges another copy in; returns whether anything improved.
    pub fn merge(&mut self, other: &SharedVars) -> bool {
        let mut improved = false;
        for (name, (kind, value)) in &other.values {
            improved |= self.offer(name, *kind, *value);
        }
        improved
    }

    /// Every variable with its value.
    pub fn iter(&self) -> impl Iterator<Item = (&str, i64)> {
        self.values
            .iter()
            .map(|(name, (_, value))| (name.as_str(), *value))
    }

    /// Every variable with its kind and value.
    pub fn entries(&self) -> impl Iterator<Item = (&str, Monotone, i64)> {
        self.values
            .iter()
            .map(|(name, (kind, value))| (name.as_str(), *kind, *value))
    }

    /// Whether no variable is set.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// The variables as a WebAssembly guest sees them (`colony_guest`).
    pub fn to_guest(&self) -> Vec<colony_guest::SharedVar> {
        self.entries()
            .map(|(name, kind, value)| colony_guest::SharedVar {
                name: name.to_string(),
                kind: kind.into(),
                value,
            })
            .collect()
    }

    /// Variables a guest reported.
    pub fn from_guest(vars: Vec<colony_guest::SharedVar>) -> SharedVars {
        let mut shared = SharedVars::default();
        for var in vars {
            shared.offer(&var.name, var.kind.into(), var.value);
        }
        shared
    }
}

impl From<Monotone> for colony_guest::Monotone {
    fn from(kind: Monotone) -> Self {
        match kind {
            Monotone::Min => colony_guest::Monotone::Min,
            Monotone::Max => colony_guest::Monotone::Max,
        }
    }
}

impl From<colony_guest::Monotone> for Monotone {
    fn from(kind: colony_guest::Monotone) -> Self {
        match kind {
            colony_guest::Monotone::Min => Monotone::Min,
            colony_guest::Monotone::Max => Monotone::Max,
        }
    }
}

/// What a step can see and do besides its own state.
pub struct StepContext<'a> {
    shared: &'a mut SharedVars,
    budget: u64,
    work: u64,
    improved: bool,
    space: Option<&'a mut dyn UnitSpace>,
    failure: Option<AppError>,
}

impl<'a> StepContext<'a> {
    /// A context over `shared`, asking for about `budget` units of work.
    pub fn new(shared: &'a mut SharedVars, budget: u64) -> Self {
        StepContext {
            shared,
            budget,
            work: 0,
            improved: false,
            space: None,
            failure: None,
        }
    }

    /// Fails the unit (and so its job) with `error`: what a step returns
    /// is then ignored. For failures the unit cannot work around, such as
    /// an object it needs that the space cannot give.
    pub fn fail(&mut self, error: AppError) {
        self.failure.get_or_insert(error);
    }

    /// The failure a step reported with [`StepContext::fail`], if any
    /// (what an executor checks after each step).
    pub fn take_failure(&mut self) -> Option<AppError> {
        self.failure.take()
    }

    /// The same context, with the object space the executor offers.
    pub fn with_space(mut self, space: &'a mut dyn UnitSpace) -> Self {
        self.space = Some(space);
        self
    }

    /// The object space, for applications that use it
    /// ([`Divisible::USES_SPACE`]); an error if this executor offers none.
    pub fn space(&mut self) -> Result<&mut (dyn UnitSpace + 'a), AppError> {
        self.space
            .as_deref_mut()
            .ok_or_else(|| AppError::Space("this executor offers no object space".into()))
    }

    /// Roughly how many elementary operations (nodes, rows, cells) this
    /// step should do before returning.
    pub fn budget(&self) -> u64 {
        self.budget
    }

    /// Counts `n` elementary operations done (shown as nodes explored).
    pub fn count(&mut self, n: u64) {
        self.work += n;
    }

    /// Operations counted so far in this step.
    pub fn work(&self) -> u64 {
        self.work
    }

    /// Every shared variable as this step sees it.
    pub fn vars(&self) -> &SharedVars {
        self.shared
    }

    /// The current value of a shared variable (cheap: a local copy kept
    /// up to date by gossip).
    pub fn shared(&self, name: &str) -> Option<i64> {
        self.shared.get(name)
    }

    /// Offers a value for a shared minimum (e.g. a better makespan).
    pub fn offer_min(&mut self, name: &str, value: i64) -> bool {
        let better = self.shared.offer(name, Monotone::Min, value);
        self.improved |= better;
        better
    }

    /// Offers a value for a shared maximum.
    pub fn offer_max(&mut self, name: &str, value: i64) -> bool {
        let better = self.shared.offer(name, Monotone::Max, value);
        self.improved |= better;
        better
    }

    /// Offers every variable a guest's step reported, each by its kind.
    pub fn offer_guest(&mut self, vars: Vec<colony_guest::SharedVar>) {
        for var in vars {
            let better = self.shared.offer(&var.name, var.kind.into(), var.value);
            self.improved |= better;
        }
    }

    /// Whether this step improved a shared variable (to be propagated).
    pub fn improved(&self) -> bool {
        self.improved
    }
}

/// A divisible application. See the module docs for an example.
pub trait Divisible: Sized + Serialize + DeserializeOwned + Send + 'static {
    /// Job parameters, parsed from `colony run <app> [args]`.
    type Params: Serialize + DeserializeOwned + Clone + Debug + Send + Sync;
    /// A partial result; the job's result is the merge of every unit's.
    type Output: Serialize + DeserializeOwned + Clone + Debug + Send;

    /// The application's name in `colony run <name>`.
    const NAME: &'static str;

    /// Whether its units use the object space ([`StepContext::space`]):
    /// the job's namespace is then destroyed when the job ends.
    const USES_SPACE: bool = false;

    /// Parses command-line arguments into parameters, with a clear error.
    fn parse_args(args: &[String]) -> Result<Self::Params, AppError>;

    /// The whole job as one unit. Shared variables may be seeded by
    /// [`Divisible::initial_shared`].
    fn init(params: &Self::Params) -> Result<Self, AppError>;

    /// Does about `ctx.budget()` operations of work.
    fn step(&mut self, ctx: &mut StepContext<'_>) -> Step<Self::Output>;

    /// Hands over part of the remaining work as a new unit, or declines.
    fn divide(&mut self) -> Option<Self>;

    /// Combines two partial results. Must be associative and commutative:
    /// units finish in any order on any peer.
    fn merge(a: Self::Output, b: Self::Output) -> Self::Output;

    /// Initial values of shared variables (e.g. an upper bound from a heuristic).
    fn initial_shared(_params: &Self::Params) -> SharedVars {
        SharedVars::default()
    }

    /// Checks a final result against a known answer: `Some(true)` if it
    /// matches, `Some(false)` if not, `None` if no answer is known.
    fn verify(_params: &Self::Params, _output: &Self::Output) -> Option<bool> {
        None
    }

    /// A human-readable account of a final result.
    fn describe(_params: &Self::Params, output: &Self::Output) -> String {
        format!("{output:?}")
    }
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    // Serialising plain data into a Vec cannot fail for these types.
    postcard::to_stdvec(value).unwrap_or_default()
}

fn decode<T: DeserializeOwned>(bytes: &[u8], what: &str) -> Result<T, AppError> {
    postcard::from_bytes(bytes).map_err(|e| AppError::Corrupt {
        what: what.to_string(),
        reason: e.to_string(),
    })
}

/// A unit of work with its type erased: what the runtime holds. A native
/// unit never fails these calls (a panic is caught around them); a guest
/// unit fails when its sandbox stops it, and then must not run again.
pub trait Unit: Send {
    /// Runs one step.
    fn step(&mut self, ctx: &mut StepContext<'_>) -> Result<Step<Vec<u8>>, AppError>;
    /// Splits off part of the remaining work, serialised.
    fn divide(&mut self) -> Result<Option<Vec<u8>>, AppError>;
    /// The unit's state, serialised (a checkpoint).
    fn checkpoint(&mut self) -> Result<Vec<u8>, AppError>;
}

struct TypedUnit<A: Divisible>(A);

impl<A: Divisible> Unit for TypedUnit<A> {
    fn step(&mut self, ctx: &mut StepContext<'_>) -> Result<Step<Vec<u8>>, AppError> {
        let step = self.0.step(ctx);
        if let Some(error) = ctx.take_failure() {
            return Err(error);
        }
        Ok(match step {
            Step::Continue => Step::Continue,
            Step::Done(output) => Step::Done(encode(&output)),
        })
    }

    fn divide(&mut self) -> Result<Option<Vec<u8>>, AppError> {
        Ok(self.0.divide().map(|part| encode(&part)))
    }

    fn checkpoint(&mut self) -> Result<Vec<u8>, AppError> {
        Ok(encode(&self.0))
    }
}

/// An application with its types erased: parameters, states and results
/// travel as bytes between peers.
pub trait App: Send + Sync {
    /// The application's name.
    fn name(&self) -> &str;
    /// Parses arguments into serialised parameters.
    fn parse_args(&self, args: &[String]) -> Result<Vec<u8>, AppError>;
    /// The initial unit of a job.
    fn init(&self, params: &[u8]) -> Result<Box<dyn Unit>, AppError>;
    /// Restores a unit from a checkpoint or a divided part.
    fn restore(&self, state: &[u8]) -> Result<Box<dyn Unit>, AppError>;
    /// Merges two serialised partial results.
    fn merge(&self, a: &[u8], b: &[u8]) -> Result<Vec<u8>, AppError>;
    /// Initial shared variables of a job.
    fn initial_shared(&self, params: &[u8]) -> Result<SharedVars, AppError>;
    /// Checks a final result against a known answer.
    fn verify(&self, params: &[u8], output: &[u8]) -> Result<Option<bool>, AppError>;
    /// Describes a final result.
    fn describe(&self, params: &[u8], output: &[u8]) -> Result<String, AppError>;
    /// The result as JSON (for `--json` output).
    fn output_json(&self, output: &[u8]) -> Result<serde_json::Value, AppError>;
    /// Whether its units use the object space.
    fn uses_space(&self) -> bool {
        false
    }
}

struct TypedApp<A: Divisible>(std::marker::PhantomData<fn() -> A>);

/// Runs application code, turning a panic into [`AppError::Panicked`]:
/// every call into an application goes through here, so a bug in one
/// fails its job, never the peer.
fn guarded<T>(what: &str, f: impl FnOnce() -> Result<T, AppError>) -> Result<T, AppError> {
    crate::runner::catch_panic(what, f).unwrap_or_else(|message| Err(AppError::Panicked(message)))
}

impl<A: Divisible> App for TypedApp<A> {
    fn name(&self) -> &str {
        A::NAME
    }

    fn uses_space(&self) -> bool {
        A::USES_SPACE
    }

    fn parse_args(&self, args: &[String]) -> Result<Vec<u8>, AppError> {
        guarded("parse_args", || {
            let params = A::parse_args(args)?;
            // Validate eagerly so a bad job fails at submission.
            A::init(&params)?;
            Ok(encode(&params))
        })
    }

    fn init(&self, params: &[u8]) -> Result<Box<dyn Unit>, AppError> {
        guarded("init", || {
            let params: A::Params = decode(params, "job parameters")?;
            Ok(Box::new(TypedUnit(A::init(&params)?)) as Box<dyn Unit>)
        })
    }

    fn restore(&self, state: &[u8]) -> Result<Box<dyn Unit>, AppError> {
        guarded("restore", || {
            Ok(Box::new(TypedUnit(decode::<A>(state, "work unit")?)) as Box<dyn Unit>)
        })
    }

    fn merge(&self, a: &[u8], b: &[u8]) -> Result<Vec<u8>, AppError> {
        guarded("merge", || {
            let a: A::Output = decode(a, "partial result")?;
            let b: A::Output = decode(b, "partial result")?;
            Ok(encode(&A::merge(a, b)))
        })
    }

    fn initial_shared(&self, params: &[u8]) -> Result<SharedVars, AppError> {
        guarded("initial_shared", || {
            Ok(A::initial_shared(&decode(params, "job parameters")?))
        })
    }

    fn verify(&self, params: &[u8], output: &[u8]) -> Result<Option<bool>, AppError> {
        guarded("verify", || {
            let params: A::Params = decode(params, "job parameters")?;
            let output: A::Output = decode(output, "result")?;
            Ok(A::verify(&params, &output))
        })
    }

    fn describe(&self, params: &[u8], output: &[u8]) -> Result<String, AppError> {
        guarded("describe", || {
            let params: A::Params = decode(params, "job parameters")?;
            let output: A::Output = decode(output, "result")?;
            Ok(A::describe(&params, &output))
        })
    }

    fn output_json(&self, output: &[u8]) -> Result<serde_json::Value, AppError> {
        guarded("output_json", || {
            let output: A::Output = decode(output, "result")?;
            serde_json::to_value(&output).map_err(|e| AppError::Corrupt {
                what: "result".into(),
                reason: e.to_string(),
            })
        })
    }
}

/// Applications found by name at run time rather than registered up
/// front: WebAssembly modules, named `wasm:<hash>`, loaded from a peer's
/// module cache.
pub trait AppSource: Send + Sync {
    /// `None` if `name` is not one of this source's names; otherwise the
    /// application, or why it cannot be had ([`AppError::ModuleMissing`]
    /// if this peer does not hold it yet).
    fn lookup(&self, name: &str) -> Option<Result<Arc<dyn App>, AppError>>;
}

/// The applications a peer can run, by name.
#[derive(Clone, Default)]
pub struct AppRegistry {
    apps: BTreeMap<&'static str, Arc<dyn App>>,
    sources: Vec<Arc<dyn AppSource>>,
}

impl AppRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        AppRegistry::default()
    }

    /// Registers application `A` under [`Divisible::NAME`].
    pub fn register<A: Divisible>(&mut self) -> &mut Self {
        self.register_app(A::NAME, Arc::new(TypedApp::<A>(std::marker::PhantomData)))
    }

    /// Registers an application already type-erased (one written against
    /// another model, such as the WebAssembly guest SDK's) under `name`.
    pub fn register_app(&mut self, name: &'static str, app: Arc<dyn App>) -> &mut Self {
        self.apps.insert(name, app);
        self
    }

    /// Adds a source of applications found by name at run time.
    pub fn add_source(&mut self, source: Arc<dyn AppSource>) -> &mut Self {
        self.sources.push(source);
        self
    }

    /// The application called `name`: a registered one, or one a source
    /// finds.
    pub fn get(&self, name: &str) -> Result<Arc<dyn App>, AppError> {
        if let Some(app) = self.apps.get(name) {
            return Ok(app.clone());
        }
        self.sources
            .iter()
            .find_map(|source| source.lookup(name))
            .unwrap_or_else(|| Err(AppError::UnknownApp(name.to_string())))
    }

    /// Names of every registered application.
    pub fn names(&self) -> Vec<&'static str> {
        self.apps.keys().copied().collect()
    }
}

/// Runs a job to completion on the calling thread, dividing nothing: the
/// reference the distributed runs are checked and benchmarked against.
/// Returns the serialised result and the work counted.
pub fn run_sequential(
    app: &dyn App,
    params: &[u8],
    budget: u64,
) -> Result<(Vec<u8>, u64), AppError> {
    let mut shared = app.initial_shared(params)?;
    let mut unit = app.init(params)?;
    let mut work = 0;
    loop {
        let mut ctx = StepContext::new(&mut shared, budget);
        let step = unit.step(&mut ctx)?;
        work += ctx.work();
        if let Step::Done(output) = step {
            return Ok((output, work));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_apps::Sum;

    #[test]
    fn erased_units_divide_checkpoint_restore_and_merge() {
        let mut registry = AppRegistry::new();
        registry.register::<Sum>();
        let app = registry.get("sum").unwrap();
        let params = app.parse_args(&["1000".into()]).unwrap();
        let mut shared = SharedVars::default();
        let mut first = app.init(&params).unwrap();
        let mut ctx = StepContext::new(&mut shared, 10);
        assert_eq!(first.step(&mut ctx), Ok(Step::Continue));
        let part = first.divide().unwrap().unwrap();
        // Checkpoint and restart the first unit mid-way.
        let mut first = app.restore(&first.checkpoint().unwrap()).unwrap();
        let mut second = app.restore(&part).unwrap();
        let finish = |unit: &mut Box<dyn Unit>, shared: &mut SharedVars| loop {
            let mut ctx = StepContext::new(shared, 64);
            if let Ok(Step::Done(out)) = unit.step(&mut ctx) {
                break out;
            }
        };
        let a = finish(&mut first, &mut shared);
        let b = finish(&mut second, &mut shared);
        let total = app.merge(&a, &b).unwrap();
        assert_eq!(app.verify(&params, &total).unwrap(), Some(true));
        let (sequential, work) = run_sequential(app.as_ref(), &params, 100).unwrap();
        assert_eq!(sequential, total);
        assert_eq!(work, 1000);
    }

    #[test]
    fn bad_params_and_unknown_apps_are_errors() {
        let mut registry = AppRegistry::new();
        registry.register::<Sum>();
        let app = registry.get("sum").unwrap();
        assert!(matches!(
            app.parse_args(&["0".into()]),
            Err(AppError::BadParams(_))
        ));
        assert!(matches!(app.parse_args(&[]), Err(AppError::BadParams(_))));
        assert!(matches!(registry.get("nope"), Err(AppError::UnknownApp(_))));
        // A guest's name on a peer without guests says why.
        let guest = registry.get("wasm:00ff").err().map(|e| e.to_string());
        assert!(
            guest
                .as_deref()
                .is_some_and(|e| e.contains("runs native applications only")),
            "{guest:?}"
        );
        assert!(matches!(
            app.restore(&[0xff, 0xff]),
            Err(AppError::Corrupt { .. })
        ));
    }

    #[test]
    fn shared_variables_only_improve() {
        let mut a = SharedVars::default();
        assert!(a.offer("best", Monotone::Min, 100));
        assert!(!a.offer("best", Monotone::Min, 120));
        assert!(a.offer("best", Monotone::Min, 90));
        let mut b = SharedVars::default();
        b.offer("best", Monotone::Min, 95);
        assert!(!b.clone().merge(&SharedVars::default()));
        assert!(b.merge(&a));
        assert_eq!(b.get("best"), Some(90));
    }

    /// Every call into an application is guarded: a panic in `init` at
    /// submission, or in `describe` / `verify` where a result is shown,
    /// comes back as [`AppError::Panicked`] naming the call, and the peer
    /// goes on.
    #[test]
    fn an_application_that_panics_gives_an_error_not_a_dead_peer() {
        use crate::test_apps::Panics;
        let mut registry = AppRegistry::new();
        registry.register::<Panics>();
        let app = registry.get("panics").expect("registered");
        let args = |at: &str| vec!["100".to_string(), at.to_string()];

        let err = app.parse_args(&args("init")).expect_err("init panics");
        assert!(
            matches!(&err, AppError::Panicked(m) if m.contains("parse_args") && m.contains("init of a broken application")),
            "{err}"
        );

        let params = app.parse_args(&args("describe")).expect("valid");
        let (output, _) = run_sequential(app.as_ref(), &params, 1_000).expect("steps do not panic");
        for (what, result) in [
            ("describe", app.describe(&params, &output).map(|_| ())),
            ("verify", app.verify(&params, &output).map(|_| ())),
        ] {
            let err = result.expect_err("it panics");
            assert!(
                matches!(&err, AppError::Panicked(m) if m.contains(what)),
                "{what}: {err}"
            );
        }
        // The same application still answers calls that do not panic.
        assert!(app.output_json(&output).is_ok());
    }
}
