//! Permutation flow-shop scheduling by branch-and-bound, on Taillard's
//! benchmark instances, as a Colony WebAssembly guest — the application of
//! the ProActive fault-tolerance paper (seed 000 §6.2), where the best
//! makespan found so far is shared by every worker to prune the tree.
//!
//! Written once, against the [`colony_guest`] SDK: `colony_apps::flowshop`
//! is this crate, run natively in the `colony` binary (through
//! `colony_apps::native_guest`), and the same source built for `wasm32` is
//! the module that runs sandboxed on peers that never installed it. Both
//! explore the same nodes, return the same schedule and exchange the same
//! [`colony_guest::codec`] bytes.
//!
//! `n` jobs cross `m` machines in the same order; each machine runs one job
//! at a time; find the job order (a permutation, the same on every machine)
//! that finishes the last job on the last machine earliest.
//!
//! - Instances: [`taillard`] regenerates `ta001`…`ta120` from Taillard's time
//!   seeds with his generator, and holds the published best-known makespans.
//! - Search: depth-first; a node fixes the start and the end of the schedule
//!   and branches on whichever side its bound prunes better (bidirectional
//!   branching); children are ordered by lower bound, best first, so good
//!   schedules come early. The bound is the two-machine Johnson bound of
//!   Lageweg et al. ([`bound`]). The initial upper bound is the NEH heuristic
//!   ([`neh()`]). On one core, ta001–ta010 (20×5) are proven optimal in
//!   milliseconds each, the 20×10 class in seconds.
//! - Distribution: a unit is an instance plus a stack of open nodes (the
//!   private `search` module). [`step`](Divisible::step) expands about
//!   `ctx.budget()` nodes, pruning with the shared variable `"makespan"` and
//!   offering every better schedule to it. [`divide`](Divisible::divide) gives away every
//!   other open node, the shallowest first. A unit's result is the best
//!   schedule it found itself, if any; results merge by keeping the smaller
//!   makespan.
//!
//! The search is exhaustive, so a finished job's makespan is optimal; the
//! result is also checked against the published value.
//!
//! A unit's best schedule lives only in its state, while its makespan spreads
//! through the shared variable. Were the unit lost after that and restarted
//! from an older checkpoint, the bound would prune the very subtree holding
//! the schedule, and the job would end with the bound but not the schedule:
//! a step that improved a shared variable ([`StepContext::improved`]) must be
//! checkpointed before the improvement is propagated.
//!
//! Build the module with any rustc that has the `wasm32` standard library
//! (Debian's 1.63 and up), from the workspace root:
//!
//! ```text
//! rustc --edition 2021 --crate-type rlib --crate-name colony_guest \
//!     --target wasm32-unknown-unknown -C opt-level=3 -C panic=abort \
//!     crates/colony-guest/src/lib.rs -o libcolony_guest.rlib
//! rustc --edition 2021 --crate-type cdylib --crate-name flowshop \
//!     --target wasm32-unknown-unknown -C opt-level=3 -C panic=abort \
//!     -C strip=symbols -C lto --extern colony_guest=libcolony_guest.rlib \
//!     guests/flowshop/src/lib.rs -o flowshop.wasm
//! colony run --wasm flowshop.wasm ta001
//! ```
//!
//! Natively (`cargo test -p colony-guest-flowshop`) the same crate builds
//! without the exports, and its tests check it against Taillard's published
//! instances and best-known makespans and against brute force.

pub mod bound;
pub mod neh;
mod search;
pub mod taillard;

use colony_guest::codec::{Decode, DecodeError, Encode, Reader, Writer};
use colony_guest::{codec_struct, Divisible, Monotone, SharedVar, Step, StepContext};

pub use bound::Pairs;
pub use neh::neh;

use bound::Bounds;
use search::{Engine, Incumbent, Tree};

/// The shared variable holding the best makespan known to the job.
pub const SHARED_MAKESPAN: &str = "makespan";

/// A permutation flow-shop instance: processing times of every job on every
/// machine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Instance {
    name: String,
    jobs: usize,
    machines: usize,
    /// Processing times, `[machine * jobs + job]`.
    times: Vec<u16>,
}

impl Instance {
    /// An instance from one row of processing times per machine (Taillard's
    /// file layout). Every row must have the same number of jobs, at least
    /// one; each job's total time must fit in a `u16`.
    pub fn new(name: impl Into<String>, rows: &[Vec<u16>]) -> Result<Instance, String> {
        let name = name.into();
        let machines = rows.len();
        let jobs = rows.first().map_or(0, Vec::len);
        if machines == 0 || jobs == 0 || rows.iter().any(|r| r.len() != jobs) {
            return Err(format!(
                "instance {name}: need at least one machine and one job, and as many times on every machine"
            ));
        }
        let instance = Instance::from_machine_rows(name, jobs, machines, rows.concat());
        if !instance.is_well_formed() {
            return Err(format!(
                "instance {}: at most {} jobs, and each job's total time at most {}",
                instance.name,
                u16::MAX,
                u16::MAX
            ));
        }
        Ok(instance)
    }

    /// An instance from its times `[machine * jobs + job]`.
    pub(crate) fn from_machine_rows(
        name: String,
        jobs: usize,
        machines: usize,
        times: Vec<u16>,
    ) -> Instance {
        assert_eq!(times.len(), jobs * machines, "one time per job and machine");
        Instance {
            name,
            jobs,
            machines,
            times,
        }
    }

    /// Whether the sizes agree and the bounds' integer types cannot overflow.
    fn is_well_formed(&self) -> bool {
        self.jobs >= 1
            && self.machines >= 1
            && self.jobs <= usize::from(u16::MAX)
            && self.jobs.checked_mul(self.machines) == Some(self.times.len())
            && (0..self.jobs).all(|j| {
                (0..self.machines).map(|k| self.time(k, j)).sum::<u32>() <= u32::from(u16::MAX)
            })
    }

    /// The instance's name (`ta001`, …).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Number of jobs.
    pub fn jobs(&self) -> usize {
        self.jobs
    }

    /// Number of machines.
    pub fn machines(&self) -> usize {
        self.machines
    }

    /// Processing time of `job` on `machine` (both from 0).
    pub fn time(&self, machine: usize, job: usize) -> u32 {
        u32::from(self.times[machine * self.jobs + job])
    }

    /// The row of processing times of `machine`, one per job.
    pub fn machine_times(&self, machine: usize) -> &[u16] {
        &self.times[machine * self.jobs..(machine + 1) * self.jobs]
    }

    /// Whether `order` holds every job exactly once.
    pub fn is_permutation(&self, order: &[u16]) -> bool {
        let mut seen = vec![false; self.jobs];
        order.len() == self.jobs
            && order.iter().all(|&j| {
                let j = usize::from(j);
                j < self.jobs && !std::mem::replace(&mut seen[j], true)
            })
    }

    /// When the last job of `order` (job numbers from 0) leaves the last
    /// machine. Panics if a job number is out of range.
    pub fn makespan(&self, order: &[u16]) -> u32 {
        let mut front = vec![0u32; self.machines];
        for &j in order {
            let mut previous = 0;
            for (k, f) in front.iter_mut().enumerate() {
                previous = (*f).max(previous) + self.time(k, usize::from(j));
                *f = previous;
            }
        }
        front.last().copied().unwrap_or(0)
    }
}

/// Sizes travel as `u64`, whatever the width of `usize` where they were
/// written.
fn encode_size(size: usize, w: &mut Writer) {
    (size as u64).encode(w);
}

/// A size written by [`encode_size`]; one past this platform's `usize` is
/// an error.
fn decode_size(r: &mut Reader<'_>) -> Result<usize, DecodeError> {
    let size = u64::decode(r)?;
    usize::try_from(size).map_err(|_| DecodeError(format!("a size of {size} is too large")))
}

/// Encoded as its name, jobs, machines and times. A decoded instance can
/// be anything: [`FlowShop::validate`](Divisible::validate) checks it.
impl Encode for Instance {
    fn encode(&self, w: &mut Writer) {
        self.name.encode(w);
        encode_size(self.jobs, w);
        encode_size(self.machines, w);
        self.times.encode(w);
    }
}

impl Decode for Instance {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Instance {
            name: String::decode(r)?,
            jobs: decode_size(r)?,
            machines: decode_size(r)?,
            times: Vec::decode(r)?,
        })
    }
}

/// Taillard's instance `name` (`ta001`…`ta120`; `ta1` and `TA001` work too).
pub fn instance(name: &str) -> Result<Instance, String> {
    Ok(taillard::instance(taillard::parse_name(name)?))
}

/// Solves `instance` to optimality with a plain depth-first branch-and-bound
/// on the calling thread: the same bound, NEH start and search order as the
/// divisible unit, without any of its machinery. The baseline the runtime's
/// overhead is measured against. Returns the optimal makespan, an optimal
/// permutation (jobs from 0) and the number of nodes expanded.
pub fn solve_sequential(instance: &Instance) -> (u32, Vec<u16>, u64) {
    solve_sequential_with(instance, Pairs::default_for(instance.machines()))
}

/// [`solve_sequential`] with a chosen set of machine pairs for the bound.
pub fn solve_sequential_with(instance: &Instance, pairs: Pairs) -> (u32, Vec<u16>, u64) {
    let (makespan, permutation) = neh(instance);
    let mut engine = Engine::new(instance, pairs);
    let mut tree = Tree::root();
    let mut incumbent = Incumbent::new(makespan);
    let nodes = engine.explore(&mut tree, &mut incumbent, u64::MAX);
    let (makespan, permutation) = incumbent.found.unwrap_or((makespan, permutation));
    (makespan, permutation, nodes)
}

/// The search's lower bound of the node that fixes `prefix` at the start of
/// the schedule and `suffix` at its end (jobs from 0, each in schedule
/// order): a bound on the makespan of every schedule that starts with
/// `prefix` and ends with `suffix`. With both empty, a bound on the optimum.
pub fn lower_bound(instance: &Instance, prefix: &[u16], suffix: &[u16]) -> u32 {
    lower_bound_with(
        instance,
        prefix,
        suffix,
        Pairs::default_for(instance.machines()),
    )
}

/// [`lower_bound`] with a chosen set of machine pairs.
pub fn lower_bound_with(instance: &Instance, prefix: &[u16], suffix: &[u16], pairs: Pairs) -> u32 {
    Bounds::new(instance, pairs).partial_bound(prefix, suffix)
}

/// Parameters of a flow-shop job.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Params {
    /// Taillard's instance name, canonical: `ta001`…`ta120`.
    pub instance: String,
}

codec_struct!(Params { instance });

/// A partial or final result: the best schedule a unit found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Best {
    /// Its makespan; `None` if the unit found nothing better than the bound
    /// it was given.
    pub makespan: Option<u32>,
    /// The job order, jobs numbered from 0 (Taillard's job `j` is `j − 1`).
    pub permutation: Vec<u16>,
}

impl Best {
    /// No schedule.
    pub fn none() -> Best {
        Best::default()
    }

    /// Whether `self` is a strictly better result than `other`: a smaller
    /// makespan, or the same and a lexicographically smaller permutation.
    fn beats(&self, other: &Best) -> bool {
        match (self.makespan, other.makespan) {
            (Some(_), None) => true,
            (Some(a), Some(b)) => (a, &self.permutation) < (b, &other.permutation),
            (None, _) => false,
        }
    }
}

codec_struct!(Best {
    makespan,
    permutation
});

/// A unit of a flow-shop job: the instance, the open nodes of its part of the
/// search tree, and the best schedule it found. Encoded, it is the
/// checkpoint.
pub struct FlowShop {
    instance: Instance,
    tree: Tree,
    best: Best,
    /// Bound data and buffers, rebuilt after a restore (not encoded).
    engine: Option<Box<Engine>>,
}

impl FlowShop {
    /// The whole search of `instance` as one unit, starting from the NEH
    /// schedule (so the job always has a schedule to return).
    pub fn for_instance(instance: Instance) -> FlowShop {
        let (makespan, permutation) = neh(&instance);
        FlowShop {
            instance,
            tree: Tree::root(),
            best: Best {
                makespan: Some(makespan),
                permutation,
            },
            engine: None,
        }
    }

    /// The instance this unit searches.
    pub fn instance(&self) -> &Instance {
        &self.instance
    }

    /// The best schedule this unit found (or started with), as soon as it
    /// is found: a master that shares the bound also needs the schedule,
    /// or losing the unit that found it would lose the schedule too.
    pub fn best(&self) -> &Best {
        &self.best
    }

    /// How many nodes are open (waiting to be explored) in this unit.
    pub fn open_nodes(&self) -> usize {
        self.tree.open.len()
    }

    /// Builds the engine on first use; `false` if the state is malformed.
    fn prepare(&mut self) -> bool {
        if self.engine.is_none() {
            if !self.instance.is_well_formed() || !self.tree.is_consistent(self.instance.jobs) {
                return false;
            }
            let pairs = Pairs::default_for(self.instance.machines);
            self.engine = Some(Box::new(Engine::new(&self.instance, pairs)));
        }
        true
    }
}

/// Encoded as its instance, tree and best schedule; the engine is rebuilt
/// from the instance on the first step after a decode.
impl Encode for FlowShop {
    fn encode(&self, w: &mut Writer) {
        self.instance.encode(w);
        self.tree.encode(w);
        self.best.encode(w);
    }
}

impl Decode for FlowShop {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(FlowShop {
            instance: Instance::decode(r)?,
            tree: Tree::decode(r)?,
            best: Best::decode(r)?,
            engine: None,
        })
    }
}

fn to_bound(shared: Option<i64>) -> u32 {
    shared.map_or(u32::MAX, |v| u32::try_from(v.max(0)).unwrap_or(u32::MAX))
}

impl Divisible for FlowShop {
    type Params = Params;
    type Output = Best;
    const NAME: &'static str = "flowshop";

    fn parse_args(args: &[String]) -> Result<Params, String> {
        match args {
            [name] => Ok(Params {
                instance: taillard::name(taillard::parse_name(name)?),
            }),
            _ => Err(
                "usage: flowshop INSTANCE, where INSTANCE is one of Taillard's ta001 … ta120"
                    .into(),
            ),
        }
    }

    fn init(params: &Params) -> Result<FlowShop, String> {
        Ok(FlowShop::for_instance(instance(&params.instance)?))
    }

    /// Refuses a decoded state the search cannot run on, as a unit's first
    /// step checks again: an instance whose sizes disagree with its
    /// times or whose totals overflow the bounds' integers, or a tree that
    /// is not a search of it (jobs out of range or repeated on the path,
    /// open nodes deeper than the path or with depths decreasing).
    fn validate(&self) -> Result<(), String> {
        if !self.instance.is_well_formed() {
            return Err(format!(
                "instance {:?}: {} jobs × {} machines with {} times, at most {} jobs, and each job's total time at most {}",
                self.instance.name,
                self.instance.jobs,
                self.instance.machines,
                self.instance.times.len(),
                u16::MAX,
                u16::MAX
            ));
        }
        if !self.tree.is_consistent(self.instance.jobs) {
            return Err(format!(
                "the open nodes are not a search of instance {:?} ({} jobs)",
                self.instance.name, self.instance.jobs
            ));
        }
        Ok(())
    }

    fn step(&mut self, ctx: &mut StepContext) -> Step<Best> {
        let shared = to_bound(ctx.shared(SHARED_MAKESPAN));
        let own = self.best.makespan.unwrap_or(u32::MAX);
        if own < shared {
            ctx.offer_min(SHARED_MAKESPAN, i64::from(own));
        }
        let budget = ctx.budget().max(1);
        let mut incumbent = Incumbent::new(shared.min(own));
        if self.prepare() {
            if let Some(engine) = self.engine.as_deref_mut() {
                let nodes = engine.explore(&mut self.tree, &mut incumbent, budget);
                ctx.count(nodes);
            }
        } else {
            // A malformed checkpoint: nothing can be searched, keep the best.
            self.tree.open.clear();
        }
        if let Some((makespan, permutation)) = incumbent.found {
            ctx.offer_min(SHARED_MAKESPAN, i64::from(makespan));
            self.best = Best {
                makespan: Some(makespan),
                permutation,
            };
        }
        if self.tree.is_finished() {
            Step::Done(self.best.clone())
        } else {
            Step::Continue
        }
    }

    fn divide(&mut self) -> Option<FlowShop> {
        let tree = self.tree.split()?;
        Some(FlowShop {
            instance: self.instance.clone(),
            tree,
            best: Best::none(),
            engine: None,
        })
    }

    fn merge(a: Best, b: Best) -> Best {
        if b.beats(&a) {
            b
        } else {
            a
        }
    }

    fn initial_shared(params: &Params) -> Vec<SharedVar> {
        let mut shared = Vec::new();
        if let Ok(instance) = instance(&params.instance) {
            let (makespan, _) = neh(&instance);
            shared.push(SharedVar {
                name: SHARED_MAKESPAN.to_string(),
                kind: Monotone::Min,
                value: i64::from(makespan),
            });
        }
        shared
    }

    fn verify(params: &Params, output: &Best) -> Option<bool> {
        let number = taillard::parse_name(&params.instance).ok()?;
        let published = taillard::BEST_KNOWN[number - 1];
        let instance = taillard::instance(number);
        Some(
            output.makespan == Some(published)
                && instance.is_permutation(&output.permutation)
                && instance.makespan(&output.permutation) == published,
        )
    }

    fn describe(params: &Params, output: &Best) -> String {
        let instance = match instance(&params.instance) {
            Ok(instance) => instance,
            Err(_) => return format!("{}: unknown instance", params.instance),
        };
        let number = taillard::parse_name(&params.instance).unwrap_or(1);
        let published = taillard::BEST_KNOWN[number - 1];
        let head = format!(
            "{} ({} jobs × {} machines)",
            instance.name(),
            instance.jobs(),
            instance.machines()
        );
        let makespan = match output.makespan {
            Some(makespan) => makespan,
            None => return format!("{head}: no schedule found"),
        };
        if !instance.is_permutation(&output.permutation)
            || instance.makespan(&output.permutation) != makespan
        {
            return format!("{head}: makespan {makespan} claimed, but the schedule is invalid or does not achieve it");
        }
        let comparison = match makespan.cmp(&published) {
            std::cmp::Ordering::Equal => format!("matches the published best known {published}"),
            std::cmp::Ordering::Less => format!("improves on the published best known {published}"),
            std::cmp::Ordering::Greater => {
                format!("DOES NOT match the published best known {published}")
            }
        };
        let schedule: Vec<String> = output
            .permutation
            .iter()
            .map(|j| (u32::from(*j) + 1).to_string())
            .collect();
        format!(
            "{head}: makespan {makespan}, optimal (exhaustive search); {comparison}; schedule (jobs from 1): {}",
            schedule.join(" ")
        )
    }

    /// `{"makespan":N,"permutation":[…]}`, with `null` for no schedule (what
    /// the serde-based application wrote before it became this guest).
    fn output_json(output: &Best) -> String {
        let makespan = match output.makespan {
            Some(makespan) => makespan.to_string(),
            None => "null".to_string(),
        };
        let jobs: Vec<String> = output.permutation.iter().map(u16::to_string).collect();
        format!(
            "{{\"makespan\":{makespan},\"permutation\":[{}]}}",
            jobs.join(",")
        )
    }
}

colony_guest::export_divisible!(FlowShop);

#[cfg(test)]
mod tests;
