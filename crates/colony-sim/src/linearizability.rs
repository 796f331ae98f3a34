//! A linearizability checker for histories the simulator records, in the
//! manner of Knossos and Porcupine, and a model of one object of Colony's
//! P³ object space to check them against.
//!
//! # The checker
//!
//! A history is a list of [`Operation`]s: who called, with what input, when
//! (virtual nanoseconds), and when and with what output it returned — or
//! that the caller never heard back. The history is linearizable when the
//! operations can be put in one order that (a) respects real time: an
//! operation that returned before another was called comes first, and (b)
//! the [`Model`], started from its initial state and stepped through that
//! order, produces every recorded output. An operation without a reply may
//! take effect at any moment after its call, with any output, or never.
//!
//! [`check`] searches for such an order with the algorithm of Wing & Gong as
//! improved by Lowe (WGL), as Porcupine implements it: the calls and returns
//! are walked in time order; the search tries to linearize each operation
//! whose call comes before the earliest outstanding return, backtracks when
//! it meets a return whose operation it could not place, and remembers every
//! (set of operations linearized, model state) it has reached so that no
//! configuration is explored twice. The search is bounded by a budget of
//! model steps; past it the answer is [`CheckError::BudgetExceeded`], not a
//! verdict.
//!
//! [`check_partitioned`] uses P-compositionality (the locality of
//! linearizability): a history of independent objects is linearizable
//! exactly when each object's sub-history is, so each key's operations are
//! checked alone — exponentially cheaper than one search over all of them.
//! [`PerKey`] turns a model of one object into a model of a whole key space
//! for it.
//!
//! Cost: with few operations overlapping, the search is close to linear.
//! Calls without reply are the expensive part: each stays a candidate from
//! its call to the end of the history. At each point the search tries the
//! operations that returned before those that did not, and never places a
//! call without reply where it would change nothing; still, the work can
//! grow exponentially with the number of such calls on one object, above
//! all for a verdict of *not* linearizable, which must exhaust every order.
//! Measured on 300 generated histories of 2,000 operations (20 objects, two
//! of them taking 60% of the calls, 6 clients, 2% of calls without reply:
//! a dozen or so on each hot object), at the simulator's optimisation
//! level: correct ones check in 5 ms (median; 20 ms at the 90th
//! percentile, 0.5 s at worst); with one read corrupted, all but 2 were
//! rejected within the default budget, in at most 1.6 s.
//!
//! Times are closed intervals: two operations of which one returns at the
//! very nanosecond the other is called are taken as concurrent (as
//! Porcupine does), so two zero-length operations at one instant do not
//! contradict each other.
//!
//! # The object space model
//!
//! [`ObjectModel`] is one object of the space: a value, a version that
//! counts its successful writes, and a read/write lock whose leases expire
//! at moments the model cannot see (see [`ObjectModel`] for the rules).
//! [`fencing_monotonic`] is a cheaper, model-free check of the fencing
//! tokens alone, that scales to histories too large for the full search.
//!
//! ```
//! use colony_sim::linearizability::{
//!     check_partitioned, Keyed, ObjectKey, ObjectModel, Operation, PerKey, SpaceCall, SpaceRet,
//! };
//!
//! let key = ObjectKey::new("jobs", "leader");
//! let set = SpaceCall::Set { value: 7, token: None };
//! let history = vec![
//!     Operation {
//!         client: 1,
//!         input: Keyed { key: key.clone(), input: set },
//!         call: 0,
//!         ret: Some((10, SpaceRet::Written { version: 1 })),
//!     },
//!     Operation {
//!         client: 2,
//!         input: Keyed { key, input: SpaceCall::Get },
//!         call: 20,
//!         ret: Some((30, SpaceRet::Value { value: Some(7), version: 1 })),
//!     },
//! ];
//! let model = PerKey::new(ObjectModel);
//! assert!(check_partitioned(&model, &history, |call| call.key.clone()).is_ok());
//! //! ```

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fmt;
use std::hash::Hash;
use std::marker::PhantomData;

/// The budget [`check`] and [`check_partitioned`] use: model steps tried,
/// per partition; about 1.5 s of search at the simulator's optimisation
/// level. A correct history of a few hundred operations per object usually
/// needs a few thousand; pathological ones need exponentially many.
pub const DEFAULT_BUDGET: u64 = 1_000_000;

/// A sequential specification: the states an object can be in and how each
/// operation moves it.
pub trait Model {
    /// The object's state; compared and hashed to remember explored
    /// configurations, so equal states must mean equal futures.
    type State: Clone + Eq + Hash + fmt::Debug;
    /// What a caller asked for.
    type Input: Clone + fmt::Debug;
    /// What the caller heard back.
    type Output: Clone + fmt::Debug;

    /// The state before any operation.
    fn init(&self) -> Self::State;

    /// The state after applying `input` that returned `output`, or None if
    /// that output is impossible from `state`.
    fn step(
        &self,
        state: &Self::State,
        input: &Self::Input,
        output: &Self::Output,
    ) -> Option<Self::State>;

    /// Every state `input` can lead to from `state` when nobody saw its
    /// output (the caller timed out or crashed). Not taking effect at all
    /// is handled by the checker and need not be listed (though it may
    /// be, when some output leaves the state unchanged). An empty list
    /// means the operation cannot have taken effect from `state`.
    fn step_unknown(&self, state: &Self::State, input: &Self::Input) -> Vec<Self::State>;
}

/// One operation of a recorded history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Operation<I, O> {
    /// Who called (for the report only: the checker does not assume a
    /// client's operations are sequential, it reads that from the times).
    pub client: u64,
    /// What was asked.
    pub input: I,
    /// When the call was made, in virtual nanoseconds.
    pub call: u64,
    /// When the reply arrived and what it said; None if the caller never
    /// heard back, so the operation may have taken effect at any time
    /// after `call`, or not at all.
    pub ret: Option<(u64, O)>,
}

/// Why a history could not be shown linearizable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CheckError {
    /// No order of the operations explains their outputs.
    NotLinearizable(NotLinearizable),
    /// The search gave up: no verdict.
    BudgetExceeded(BudgetExceeded),
    /// An operation returned before it was called: the recorder is broken.
    ReturnBeforeCall {
        /// Its index in the history.
        index: usize,
        /// Its call time.
        call: u64,
        /// Its return time.
        ret: u64,
    },
}

/// The evidence that a history (or one partition of it) is not
/// linearizable: the longest order of its operations the search could
/// build, and the operations none of which could come next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NotLinearizable {
    /// The partition's key (its `Debug` form), when checked by partition.
    pub partition: Option<String>,
    /// The longest linearizable prefix found, in its linearization order.
    pub longest_prefix: Vec<OpSummary>,
    /// The model's state after that prefix (`Debug` form).
    pub state_after_prefix: String,
    /// The operations that could have come next after that prefix in real
    /// time (called no later than the earliest return among those not
    /// placed), ordered by call time: each was either impossible in that
    /// state or led only to dead ends.
    pub unplaced: Vec<OpSummary>,
}

/// The search ran out of budget before reaching a verdict.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BudgetExceeded {
    /// The partition's key (its `Debug` form), when checked by partition.
    pub partition: Option<String>,
    /// The budget, in model steps.
    pub budget: u64,
    /// How many operations the partition (or history) holds.
    pub operations: usize,
}

/// One operation, as a report shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpSummary {
    /// Its index in the history given to the checker.
    pub index: usize,
    /// Its client.
    pub client: u64,
    /// Its call time.
    pub call: u64,
    /// Its return time, None if there was no reply.
    pub ret: Option<u64>,
    /// Its input (`Debug` form).
    pub input: String,
    /// Its output (`Debug` form), None if there was no reply.
    pub output: Option<String>,
}

impl OpSummary {
    fn of<I: fmt::Debug, O: fmt::Debug>(index: usize, op: &Operation<I, O>) -> Self {
        OpSummary {
            index,
            client: op.client,
            call: op.call,
            ret: op.ret.as_ref().map(|(at, _)| *at),
            input: format!("{:?}", op.input),
            output: op.ret.as_ref().map(|(_, out)| format!("{out:?}")),
        }
    }
}

impl fmt::Display for OpSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{} client {} [{}, ", self.index, self.client, self.call)?;
        match self.ret {
            Some(at) => write!(f, "{at}]")?,
            None => write!(f, "no reply]")?,
        }
        write!(f, " {}", self.input)?;
        match &self.output {
            Some(out) => write!(f, " -> {out}"),
            None => write!(f, " -> ?"),
        }
    }
}

/// How many operations of the prefix a report's `Display` shows (the last
/// ones); the field holds them all.
const PREFIX_SHOWN: usize = 10;

impl fmt::Display for NotLinearizable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "not linearizable")?;
        if let Some(partition) = &self.partition {
            write!(f, " (partition {partition})")?;
        }
        writeln!(
            f,
            ": the longest order found places {} operations",
            self.longest_prefix.len()
        )?;
        let skipped = self.longest_prefix.len().saturating_sub(PREFIX_SHOWN);
        if skipped > 0 {
            writeln!(f, "  ... {skipped} earlier")?;
        }
        for op in self.longest_prefix.iter().skip(skipped) {
            writeln!(f, "  {op}")?;
        }
        writeln!(f, "state then: {}", self.state_after_prefix)?;
        write!(f, "none of these could come next:")?;
        for op in &self.unplaced {
            write!(f, "\n  {op}")?;
        }
        Ok(())
    }
}

impl fmt::Display for BudgetExceeded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "no verdict")?;
        if let Some(partition) = &self.partition {
            write!(f, " for partition {partition}")?;
        }
        write!(
            f,
            ": {} operations needed more than {} model steps (raise the budget, or shorten the history)",
            self.operations, self.budget
        )
    }
}

impl fmt::Display for CheckError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CheckError::NotLinearizable(report) => report.fmt(f),
            CheckError::BudgetExceeded(report) => report.fmt(f),
            CheckError::ReturnBeforeCall { index, call, ret } => write!(
                f,
                "operation #{index} returned at {ret}, before its call at {call}: the history is malformed"
            ),
        }
    }
}

impl std::error::Error for CheckError {}

/// Checks that `history` is linearizable with respect to `model`, with the
/// [`DEFAULT_BUDGET`].
pub fn check<M: Model>(
    model: &M,
    history: &[Operation<M::Input, M::Output>],
) -> Result<(), CheckError> {
    check_with_budget(model, history, DEFAULT_BUDGET)
}

/// Checks that `history` is linearizable with respect to `model`, trying at
/// most `budget` model steps.
pub fn check_with_budget<M: Model>(
    model: &M,
    history: &[Operation<M::Input, M::Output>],
    budget: u64,
) -> Result<(), CheckError> {
    let indexes: Vec<usize> = (0..history.len()).collect();
    check_part(model, history, &indexes, None, budget)
}

/// Checks `history` one partition at a time, the operations of a partition
/// being those whose inputs have the same `key_of`, with the
/// [`DEFAULT_BUDGET`] for each partition. Sound when the partitions are
/// independent objects (each key's state is touched only by its own
/// operations). The first partition found not linearizable (in key order)
/// is reported; a partition without verdict is reported only if no other
/// is found not linearizable.
pub fn check_partitioned<M: Model, K: Ord + fmt::Debug>(
    model: &M,
    history: &[Operation<M::Input, M::Output>],
    key_of: impl Fn(&M::Input) -> K,
) -> Result<(), CheckError> {
    check_partitioned_with_budget(model, history, key_of, DEFAULT_BUDGET)
}

/// [`check_partitioned`] with a budget of `budget` model steps per
/// partition.
pub fn check_partitioned_with_budget<M: Model, K: Ord + fmt::Debug>(
    model: &M,
    history: &[Operation<M::Input, M::Output>],
    key_of: impl Fn(&M::Input) -> K,
    budget: u64,
) -> Result<(), CheckError> {
    let mut partitions: BTreeMap<K, Vec<usize>> = BTreeMap::new();
    for (index, op) in history.iter().enumerate() {
        partitions.entry(key_of(&op.input)).or_default().push(index);
    }
    let mut undecided = None;
    for (key, indexes) in &partitions {
        let name = format!("{key:?}");
        match check_part(model, history, indexes, Some(name), budget) {
            Ok(()) => {}
            Err(CheckError::BudgetExceeded(report)) => {
                undecided.get_or_insert(report);
            }
            Err(other) => return Err(other),
        }
    }
    match undecided {
        Some(report) => Err(CheckError::BudgetExceeded(report)),
        None => Ok(()),
    }
}

/// Checks the operations of `history` at `indexes` as one history.
fn check_part<M: Model>(
    model: &M,
    history: &[Operation<M::Input, M::Output>],
    indexes: &[usize],
    partition: Option<String>,
    budget: u64,
) -> Result<(), CheckError> {
    // The operations, and their indexes in `history`, side by side.
    let mut ops = Vec::with_capacity(indexes.len());
    let mut op_indexes = Vec::with_capacity(indexes.len());
    for &index in indexes {
        let Some(op) = history.get(index) else {
            continue;
        };
        if let Some((ret, _)) = &op.ret {
            if *ret < op.call {
                return Err(CheckError::ReturnBeforeCall {
                    index,
                    call: op.call,
                    ret: *ret,
                });
            }
        }
        ops.push(op);
        op_indexes.push(index);
    }
    match search(model, &ops, budget) {
        SearchOutcome::Linearizable => Ok(()),
        SearchOutcome::OutOfBudget => Err(CheckError::BudgetExceeded(BudgetExceeded {
            partition,
            budget,
            operations: ops.len(),
        })),
        SearchOutcome::Stuck { prefix, state } => {
            let mut placed = vec![false; ops.len()];
            for &local in &prefix {
                placed[local] = true;
            }
            let earliest_return = (0..ops.len())
                .filter(|&local| !placed[local])
                .filter_map(|local| ops[local].ret.as_ref().map(|(at, _)| *at))
                .min()
                .unwrap_or(u64::MAX);
            let mut unplaced: Vec<usize> = (0..ops.len())
                .filter(|&local| !placed[local] && ops[local].call <= earliest_return)
                .collect();
            unplaced.sort_by_key(|&local| (ops[local].call, local));
            let summary = |local: usize| OpSummary::of(op_indexes[local], ops[local]);
            Err(CheckError::NotLinearizable(NotLinearizable {
                partition,
                longest_prefix: prefix.iter().map(|&local| summary(local)).collect(),
                state_after_prefix: format!("{state:?}"),
                unplaced: unplaced.into_iter().map(summary).collect(),
            }))
        }
    }
}

/// What the search found.
enum SearchOutcome<S> {
    /// An order exists.
    Linearizable,
    /// None exists; the longest prefix found (local indexes) and the state
    /// after it.
    Stuck { prefix: Vec<usize>, state: S },
    /// The budget ran out.
    OutOfBudget,
}

/// No node (the end of the event list).
const NIL: usize = usize::MAX;

/// The calls and returns of a history in time order, as a doubly linked
/// list from which an operation's two events can be lifted and put back
/// (last lifted, first put back). Node `2 * op` is the call of `op`,
/// `2 * op + 1` its return; the last node is the head.
struct EventList {
    next: Vec<usize>,
    prev: Vec<usize>,
    head: usize,
}

impl EventList {
    fn new<I, O>(ops: &[&Operation<I, O>]) -> Self {
        let head = 2 * ops.len();
        let mut order: Vec<usize> = (0..head).collect();
        // Calls before returns at the same instant; returns that never
        // came after everything else.
        order.sort_by_key(|&node| {
            let op = ops[node / 2];
            if node % 2 == 0 {
                (false, op.call, false, node)
            } else {
                match &op.ret {
                    Some((at, _)) => (false, *at, true, node),
                    None => (true, 0, true, node),
                }
            }
        });
        let mut next = vec![NIL; head + 1];
        let mut prev = vec![NIL; head + 1];
        let mut last = head;
        for node in order {
            next[last] = node;
            prev[node] = last;
            last = node;
        }
        EventList { next, prev, head }
    }

    fn first(&self) -> usize {
        self.next[self.head]
    }

    fn unlink(&mut self, node: usize) {
        let (before, after) = (self.prev[node], self.next[node]);
        self.next[before] = after;
        if after != NIL {
            self.prev[after] = before;
        }
    }

    fn relink(&mut self, node: usize) {
        let (before, after) = (self.prev[node], self.next[node]);
        self.next[before] = node;
        if after != NIL {
            self.prev[after] = node;
        }
    }

    fn lift(&mut self, op: usize) {
        self.unlink(2 * op);
        self.unlink(2 * op + 1);
    }

    fn unlift(&mut self, op: usize) {
        self.relink(2 * op + 1);
        self.relink(2 * op);
    }
}

/// A set of operations (local indexes), hashable for the memo.
#[derive(Clone, PartialEq, Eq, Hash)]
struct OpSet(Vec<u64>);

impl OpSet {
    fn new(len: usize) -> Self {
        OpSet(vec![0; len.div_ceil(64)])
    }

    fn insert(&mut self, op: usize) {
        self.0[op / 64] |= 1 << (op % 64);
    }

    fn remove(&mut self, op: usize) {
        self.0[op / 64] &= !(1 << (op % 64));
    }
}

/// One linearized operation on the search stack.
struct Frame<S> {
    /// The operation (local index).
    op: usize,
    /// The state before it.
    state_before: S,
    /// The states it could lead to.
    successors: Vec<S>,
    /// The next of `successors` to try if this choice fails.
    next_choice: usize,
}

/// The first of `successors` from `from` that, with `op` added to
/// `linearized`, makes a configuration not seen before (and records it).
fn first_unseen<S: Clone + Eq + Hash>(
    successors: &[S],
    from: usize,
    op: usize,
    linearized: &mut OpSet,
    seen: &mut HashSet<(OpSet, S)>,
) -> Option<usize> {
    linearized.insert(op);
    for (choice, state) in successors.iter().enumerate().skip(from) {
        if seen.insert((linearized.clone(), state.clone())) {
            return Some(choice);
        }
    }
    linearized.remove(op);
    None
}

/// The WGL search over `ops`.
fn search<M: Model>(
    model: &M,
    ops: &[&Operation<M::Input, M::Output>],
    budget: u64,
) -> SearchOutcome<M::State> {
    let mut list = EventList::new(ops);
    let mut state = model.init();
    let mut linearized = OpSet::new(ops.len());
    let mut seen: HashSet<(OpSet, M::State)> = HashSet::new();
    let mut stack: Vec<Frame<M::State>> = Vec::new();
    let mut longest: Vec<usize> = Vec::new();
    let mut longest_state = state.clone();
    let mut steps: u64 = 0;
    // At each configuration the candidates are the calls before the first
    // return still in the list: first the completed operations, then (a
    // second pass over the same calls) those without reply. Trying the
    // completed ones first finds a linearizable history's order without
    // first placing every subset of the calls without reply that were
    // made so far.
    let mut pass = Pass::Completed;
    let mut entry = list.first();
    loop {
        let end_of_candidates = entry == NIL || entry % 2 == 1;
        if end_of_candidates && pass == Pass::Completed {
            // Every completed operation is placed when the list is empty
            // or goes on with returns that never came: the rest can be
            // left out.
            if entry == NIL || ops[entry / 2].ret.is_none() {
                return SearchOutcome::Linearizable;
            }
            pass = Pass::WithoutReply;
            entry = list.first();
            continue;
        }
        if end_of_candidates {
            // No candidate works and the operation returning here had to
            // be placed by now: undo the last choice.
            let Some(frame) = stack.pop() else {
                return SearchOutcome::Stuck {
                    prefix: longest,
                    state: longest_state,
                };
            };
            list.unlift(frame.op);
            linearized.remove(frame.op);
            state = frame.state_before;
            match first_unseen(
                &frame.successors,
                frame.next_choice,
                frame.op,
                &mut linearized,
                &mut seen,
            ) {
                Some(choice) => {
                    list.lift(frame.op);
                    let before = std::mem::replace(&mut state, frame.successors[choice].clone());
                    stack.push(Frame {
                        op: frame.op,
                        state_before: before,
                        successors: frame.successors,
                        next_choice: choice + 1,
                    });
                    pass = Pass::Completed;
                    entry = list.first();
                }
                None => {
                    pass = Pass::of(ops[frame.op]);
                    entry = list.next[2 * frame.op];
                }
            }
            continue;
        }
        let op = entry / 2;
        if Pass::of(ops[op]) != pass {
            entry = list.next[entry];
            continue;
        }
        steps += 1;
        if steps > budget {
            return SearchOutcome::OutOfBudget;
        }
        let successors = match &ops[op].ret {
            Some((_, output)) => model
                .step(&state, &ops[op].input, output)
                .into_iter()
                .collect(),
            // Placing a call without reply where it leaves the state as it
            // was can do nothing that leaving it out (for now, or for
            // ever) cannot: skip those, or each such call would double
            // the configurations explored from its call on.
            None => {
                let mut successors = model.step_unknown(&state, &ops[op].input);
                successors.retain(|next| *next != state);
                successors
            }
        };
        match first_unseen(&successors, 0, op, &mut linearized, &mut seen) {
            Some(choice) => {
                list.lift(op);
                let before = std::mem::replace(&mut state, successors[choice].clone());
                stack.push(Frame {
                    op,
                    state_before: before,
                    successors,
                    next_choice: choice + 1,
                });
                if stack.len() > longest.len() {
                    longest = stack.iter().map(|frame| frame.op).collect();
                    longest_state = state.clone();
                }
                pass = Pass::Completed;
                entry = list.first();
            }
            None => entry = list.next[entry],
        }
    }
}

/// Which candidates the search is trying at a configuration.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Pass {
    /// Operations that returned.
    Completed,
    /// Operations whose caller never heard back.
    WithoutReply,
}

impl Pass {
    fn of<I, O>(op: &Operation<I, O>) -> Self {
        if op.ret.is_some() {
            Pass::Completed
        } else {
            Pass::WithoutReply
        }
    }
}

/// An input addressed to one of many independent objects.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Keyed<K, I> {
    /// The object.
    pub key: K,
    /// What was asked of it.
    pub input: I,
}

/// A space of independent objects, each following the model `M`: the model
/// of a whole history, to be checked with [`check_partitioned`] by key (or
/// with [`check`], which gives the same verdict far more slowly).
#[derive(Clone, Debug)]
pub struct PerKey<M, K> {
    /// The model of one object.
    pub object: M,
    keys: PhantomData<fn() -> K>,
}

impl<M, K> PerKey<M, K> {
    /// A space of objects that each follow `object`.
    pub fn new(object: M) -> Self {
        PerKey {
            object,
            keys: PhantomData,
        }
    }
}

impl<M: Model, K: Clone + Ord + Hash + fmt::Debug> PerKey<M, K> {
    /// The state of the object `key` in `space`.
    fn object_state(&self, space: &BTreeMap<K, M::State>, key: &K) -> M::State {
        space
            .get(key)
            .cloned()
            .unwrap_or_else(|| self.object.init())
    }

    /// `space` with `key`'s object in `object_state` (objects in their
    /// initial state are left out, so equal spaces compare equal).
    fn with_object(
        &self,
        space: &BTreeMap<K, M::State>,
        key: &K,
        object_state: M::State,
    ) -> BTreeMap<K, M::State> {
        let mut space = space.clone();
        if object_state == self.object.init() {
            space.remove(key);
        } else {
            space.insert(key.clone(), object_state);
        }
        space
    }
}

impl<M: Model, K: Clone + Ord + Hash + fmt::Debug> Model for PerKey<M, K> {
    type State = BTreeMap<K, M::State>;
    type Input = Keyed<K, M::Input>;
    type Output = M::Output;

    fn init(&self) -> Self::State {
        BTreeMap::new()
    }

    fn step(
        &self,
        state: &Self::State,
        input: &Self::Input,
        output: &Self::Output,
    ) -> Option<Self::State> {
        let object = self.object_state(state, &input.key);
        let next = self.object.step(&object, &input.input, output)?;
        Some(self.with_object(state, &input.key, next))
    }

    fn step_unknown(&self, state: &Self::State, input: &Self::Input) -> Vec<Self::State> {
        let object = self.object_state(state, &input.key);
        self.object
            .step_unknown(&object, &input.input)
            .into_iter()
            .map(|next| self.with_object(state, &input.key, next))
            .collect()
    }
}

/// The name of an object of the space: unique within its namespace.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectKey {
    /// The namespace.
    pub namespace: String,
    /// The object's name in it.
    pub name: String,
}

impl ObjectKey {
    /// The object `name` of `namespace`.
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        ObjectKey {
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

/// The whole object space: every object an [`ObjectModel`], addressed by
/// its [`ObjectKey`].
pub type SpaceModel = PerKey<ObjectModel, ObjectKey>;

/// A call on one object of the space.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SpaceCall {
    /// Read the value and version.
    Get,
    /// Write `value`; with `token`, only as the current write-lock holder.
    Set {
        /// The new value.
        value: u64,
        /// The fencing token of the caller's write lock, if it writes
        /// under one.
        token: Option<u64>,
    },
    /// Write `value` only if the object's version is `expected_version`.
    CompareAndSet {
        /// The version the caller last saw.
        expected_version: u64,
        /// The new value.
        value: u64,
    },
    /// Remove the object (its reply counts the version up, but the object
    /// is absent afterwards, at version 0).
    Delete,
    /// Take the write lock.
    WriteLock,
    /// Release the write lock taken with `token`.
    WriteUnlock {
        /// The token the grant returned.
        token: u64,
    },
    /// Take a read lock.
    ReadLock,
    /// Release the read lock taken with `token`.
    ReadUnlock {
        /// The token the grant returned.
        token: u64,
    },
}

/// The reply to a [`SpaceCall`].
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SpaceRet {
    /// The object's value (None when never written or deleted) and version.
    Value {
        /// The value.
        value: Option<u64>,
        /// How many successful writes the object has had since it was
        /// last absent (0 when absent).
        version: u64,
    },
    /// The write was applied; the object's version is now `version`.
    Written {
        /// The version after the write.
        version: u64,
    },
    /// Not done: a write whose expected version did not match or that a
    /// lock held by someone else blocked (or whose token was stale), or a
    /// lock that someone else's lock blocked.
    Refused,
    /// The lock was granted with this fencing token.
    Granted {
        /// The token: greater than every token the object granted before.
        token: u64,
    },
    /// The lock was released.
    Released,
    /// The token did not name a lock that was held (released, revoked by a
    /// newer grant, or expired).
    NotHeld,
}

/// The model of one object of the space.
///
/// Versions count the successful writes of an object's current life, as
/// the space core numbers them: an absent object (never written, or
/// deleted) has no value and version 0, which is the version a
/// compare-and-set that creates it expects; every successful set and
/// compare-and-set adds one. A successful delete answers the version it
/// would have made (one more than the object's), and leaves the object
/// absent, at version 0 again: the core drops a deleted object with its
/// count (`colony_core::space::Condition::Version(0)` means "absent"), so
/// a recreated object counts from 1 anew.
///
/// Locks are leases that expire at moments the model cannot see, so the
/// model keeps a lock as held until an operation proves it had expired,
/// and allows either outcome where expiry would change one:
///
/// - Tokens: every grant (read or write) returns a token strictly greater
///   than every token the object granted before.
/// - A write lock grant revokes every other lock (readers and the previous
///   writer: their leases may have expired); a read lock grant revokes a
///   writer and shares with other readers. While a lock is held, a grant it
///   conflicts with may instead be `Refused`; with no lock held it may not.
/// - `Set` with a token succeeds only if the token is the current write
///   lock's; it may still be `Refused` (the lease expired, which frees the
///   lock); with any other token it must be `Refused`.
/// - `Set` without token, `CompareAndSet` and `Delete` while any lock is
///   held are `Refused`, or succeed if the lock had expired, which frees
///   it. With no lock held they succeed (a compare-and-set whose expected
///   version differs is always `Refused`).
/// - An unlock with the current token is `Released` or `NotHeld` (expired);
///   either frees it. An unlock with any other token is `NotHeld`.
/// - `Get` is never blocked.
///
/// A token is a capability: only the caller that got the grant's reply
/// knows it. A grant whose reply nobody saw holds the lock with a token no
/// operation of the history can present (and raises the floor for later
/// tokens by the least it can); a workload that guesses tokens may guess
/// that one, and the model would then refuse the history, so workloads
/// should present only tokens some reply carried.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ObjectModel;

/// The state of one object of the space.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ObjectState {
    /// The value; None when never written or deleted.
    pub value: Option<u64>,
    /// How many successful writes the object has had since it was last
    /// absent (0 when absent).
    pub version: u64,
    /// The greatest token granted so far, None before the first grant.
    pub highest_token: Option<u64>,
    /// Who holds the lock, as far as anyone has seen.
    pub lock: LockState,
}

/// The lock of one object.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum LockState {
    /// Not held.
    Free,
    /// Held for writing.
    Write {
        /// The holder's token; None when the grant's reply was never seen,
        /// so no caller knows the token.
        token: Option<u64>,
    },
    /// Held for reading.
    Read {
        /// The tokens of the readers whose grants were seen.
        tokens: BTreeSet<u64>,
        /// How many readers hold grants whose replies were never seen.
        unseen: u32,
    },
}

impl ObjectState {
    /// A fresh object.
    fn new() -> Self {
        ObjectState {
            value: None,
            version: 0,
            highest_token: None,
            lock: LockState::Free,
        }
    }

    /// Whether `token` may be granted next.
    fn may_grant(&self, token: u64) -> bool {
        self.highest_token.is_none_or(|highest| token > highest)
    }

    /// The smallest token that may be granted next, if any is left.
    fn least_grantable(&self) -> Option<u64> {
        match self.highest_token {
            None => Some(0),
            Some(highest) => highest.checked_add(1),
        }
    }

    /// This state with the write lock granted under `token` (None: unseen).
    fn write_locked(&self, highest_token: u64, token: Option<u64>) -> Self {
        ObjectState {
            highest_token: Some(highest_token),
            lock: LockState::Write { token },
            ..self.clone()
        }
    }

    /// This state with one more read lock, under `token` (None: unseen).
    fn read_locked(&self, highest_token: u64, token: Option<u64>) -> Self {
        let (mut tokens, mut unseen) = match &self.lock {
            LockState::Read { tokens, unseen } => (tokens.clone(), *unseen),
            LockState::Free | LockState::Write { .. } => (BTreeSet::new(), 0),
        };
        match token {
            Some(token) => {
                tokens.insert(token);
            }
            None => unseen = unseen.saturating_add(1),
        }
        ObjectState {
            highest_token: Some(highest_token),
            lock: LockState::Read { tokens, unseen },
            ..self.clone()
        }
    }

    /// This state with `value` written (None: deleted, so back at version
    /// 0), as the reply `version` says, and the lock as `lock`; None if
    /// `version` is not the next one.
    fn written(&self, value: Option<u64>, version: u64, lock: LockState) -> Option<Self> {
        (self.version.checked_add(1) == Some(version)).then_some(ObjectState {
            value,
            version: if value.is_some() { version } else { 0 },
            highest_token: self.highest_token,
            lock,
        })
    }

    /// This state with the lock freed.
    fn unlocked(&self) -> Self {
        ObjectState {
            lock: LockState::Free,
            ..self.clone()
        }
    }

    /// Whether `token` is the current write lock's.
    fn holds_write(&self, token: u64) -> bool {
        self.lock == LockState::Write { token: Some(token) }
    }

    /// The outcome of a write that takes no token (`Set` without one,
    /// `CompareAndSet` whose version matched, `Delete`).
    fn unfenced_write(&self, value: Option<u64>, output: &SpaceRet) -> Option<Self> {
        match output {
            SpaceRet::Written { version } => self.written(value, *version, LockState::Free),
            SpaceRet::Refused if self.lock != LockState::Free => Some(self.clone()),
            _ => None,
        }
    }
}

impl ObjectModel {
    /// Every reply `call` could get, but for grants (whose tokens are
    /// unbounded): those `step_unknown` adds itself.
    fn finite_outputs(state: &ObjectState, call: &SpaceCall) -> Vec<SpaceRet> {
        let next_version = state.version.checked_add(1);
        match call {
            SpaceCall::Get => vec![SpaceRet::Value {
                value: state.value,
                version: state.version,
            }],
            SpaceCall::Set { .. } | SpaceCall::CompareAndSet { .. } | SpaceCall::Delete => {
                let mut outputs = vec![SpaceRet::Refused];
                if let Some(version) = next_version {
                    outputs.push(SpaceRet::Written { version });
                }
                outputs
            }
            SpaceCall::WriteLock | SpaceCall::ReadLock => vec![SpaceRet::Refused],
            SpaceCall::WriteUnlock { .. } | SpaceCall::ReadUnlock { .. } => {
                vec![SpaceRet::Released, SpaceRet::NotHeld]
            }
        }
    }
}

impl Model for ObjectModel {
    type State = ObjectState;
    type Input = SpaceCall;
    type Output = SpaceRet;

    fn init(&self) -> ObjectState {
        ObjectState::new()
    }

    fn step(&self, state: &ObjectState, call: &SpaceCall, ret: &SpaceRet) -> Option<ObjectState> {
        match (call, ret) {
            (SpaceCall::Get, SpaceRet::Value { value, version }) => {
                (state.value == *value && state.version == *version).then(|| state.clone())
            }
            (SpaceCall::Set { value, token: None }, _) => state.unfenced_write(Some(*value), ret),
            (SpaceCall::Delete, _) => state.unfenced_write(None, ret),
            (
                SpaceCall::CompareAndSet {
                    expected_version,
                    value,
                },
                _,
            ) => {
                if *expected_version == state.version {
                    state.unfenced_write(Some(*value), ret)
                } else {
                    (*ret == SpaceRet::Refused).then(|| state.clone())
                }
            }
            (
                SpaceCall::Set {
                    value,
                    token: Some(token),
                },
                SpaceRet::Written { version },
            ) => {
                if state.holds_write(*token) {
                    state.written(Some(*value), *version, state.lock.clone())
                } else {
                    None
                }
            }
            (
                SpaceCall::Set {
                    token: Some(token), ..
                },
                SpaceRet::Refused,
            ) => {
                if state.holds_write(*token) {
                    // Refused with the current token: its lease had expired.
                    Some(state.unlocked())
                } else {
                    Some(state.clone())
                }
            }
            (SpaceCall::WriteLock, SpaceRet::Granted { token }) => state
                .may_grant(*token)
                .then(|| state.write_locked(*token, Some(*token))),
            (SpaceCall::WriteLock, SpaceRet::Refused) => {
                (state.lock != LockState::Free).then(|| state.clone())
            }
            (SpaceCall::ReadLock, SpaceRet::Granted { token }) => state
                .may_grant(*token)
                .then(|| state.read_locked(*token, Some(*token))),
            (SpaceCall::ReadLock, SpaceRet::Refused) => {
                matches!(state.lock, LockState::Write { .. }).then(|| state.clone())
            }
            (SpaceCall::WriteUnlock { token }, SpaceRet::Released) => {
                state.holds_write(*token).then(|| state.unlocked())
            }
            (SpaceCall::WriteUnlock { token }, SpaceRet::NotHeld) => {
                if state.holds_write(*token) {
                    Some(state.unlocked())
                } else {
                    Some(state.clone())
                }
            }
            (SpaceCall::ReadUnlock { token }, SpaceRet::Released | SpaceRet::NotHeld) => {
                let LockState::Read { tokens, unseen } = &state.lock else {
                    return (*ret == SpaceRet::NotHeld).then(|| state.clone());
                };
                if !tokens.contains(token) {
                    return (*ret == SpaceRet::NotHeld).then(|| state.clone());
                }
                let mut tokens = tokens.clone();
                tokens.remove(token);
                let lock = if tokens.is_empty() && *unseen == 0 {
                    LockState::Free
                } else {
                    LockState::Read {
                        tokens,
                        unseen: *unseen,
                    }
                };
                Some(ObjectState {
                    lock,
                    ..state.clone()
                })
            }
            _ => None,
        }
    }

    fn step_unknown(&self, state: &ObjectState, call: &SpaceCall) -> Vec<ObjectState> {
        let mut successors: Vec<ObjectState> = Vec::new();
        let mut add = |next: ObjectState| {
            if !successors.contains(&next) {
                successors.push(next);
            }
        };
        for output in Self::finite_outputs(state, call) {
            if let Some(next) = self.step(state, call, &output) {
                add(next);
            }
        }
        // A grant nobody saw: its token is unknown, and the least possible
        // one constrains later grants least.
        if let Some(token) = state.least_grantable() {
            match call {
                SpaceCall::WriteLock => add(state.write_locked(token, None)),
                SpaceCall::ReadLock => add(state.read_locked(token, None)),
                _ => {}
            }
        }
        successors
    }
}

/// Checks the fencing tokens of one object's history by real time alone,
/// without the model: the cheap part of the lock guarantees, for histories
/// too large for the full search. Two operations are ordered when one
/// returned strictly before the other was called; among ordered ones:
///
/// 1. a grant (read or write: one counter) carries a greater token than
///    every grant and every successful fenced write before it;
/// 2. a successful `Set` with a token carries a token no lower than every
///    grant and every successful fenced write before it — a lower one is a
///    stale holder's write accepted after a newer holder got the lock.
///
/// Operations without a reply are ignored. The error names both operations
/// by their indexes in `history`.
pub fn fencing_monotonic(history: &[Operation<SpaceCall, SpaceRet>]) -> Result<(), String> {
    let indexes: Vec<usize> = (0..history.len()).collect();
    fencing_among(history, &indexes, |call| call)
}

/// [`fencing_monotonic`] for each object of a history of the whole space;
/// the error names the object and indexes in `history`.
pub fn fencing_monotonic_per_key<K: Ord + fmt::Debug>(
    history: &[Operation<Keyed<K, SpaceCall>, SpaceRet>],
) -> Result<(), String> {
    let mut objects: BTreeMap<&K, Vec<usize>> = BTreeMap::new();
    for (index, op) in history.iter().enumerate() {
        objects.entry(&op.input.key).or_default().push(index);
    }
    for (key, indexes) in objects {
        fencing_among(history, &indexes, |call| &call.input)
            .map_err(|error| format!("object {key:?}: {error}"))?;
    }
    Ok(())
}

/// A grant or a successful fenced write, for [`fencing_among`].
struct Fenced {
    index: usize,
    call: u64,
    ret: u64,
    token: u64,
    grant: bool,
}

/// [`fencing_monotonic`] over the operations of `history` at `indexes`.
fn fencing_among<I>(
    history: &[Operation<I, SpaceRet>],
    indexes: &[usize],
    call_of: impl Fn(&I) -> &SpaceCall,
) -> Result<(), String> {
    let mut fenced: Vec<Fenced> = Vec::new();
    for &index in indexes {
        let Some(op) = history.get(index) else {
            continue;
        };
        let Some((ret, output)) = &op.ret else {
            continue;
        };
        let (token, grant) = match (call_of(&op.input), output) {
            (SpaceCall::WriteLock | SpaceCall::ReadLock, SpaceRet::Granted { token }) => {
                (*token, true)
            }
            (
                SpaceCall::Set {
                    token: Some(token), ..
                },
                SpaceRet::Written { .. },
            ) => (*token, false),
            _ => continue,
        };
        fenced.push(Fenced {
            index,
            call: op.call,
            ret: *ret,
            token,
            grant,
        });
    }
    let mut by_return: Vec<&Fenced> = fenced.iter().collect();
    by_return.sort_by_key(|f| (f.ret, f.index));
    let mut by_call: Vec<&Fenced> = fenced.iter().collect();
    by_call.sort_by_key(|f| (f.call, f.index));
    // The operation with the greatest token among those returned so far.
    let mut highest: Option<&Fenced> = None;
    let mut returned = by_return.iter().peekable();
    for later in by_call {
        while let Some(earlier) = returned.next_if(|earlier| earlier.ret < later.call) {
            if highest.is_none_or(|highest| earlier.token > highest.token) {
                highest = Some(earlier);
            }
        }
        let Some(earlier) = highest else {
            continue;
        };
        let stale = if later.grant {
            later.token <= earlier.token
        } else {
            later.token < earlier.token
        };
        if stale {
            let what = |f: &Fenced| if f.grant { "grant" } else { "fenced write" };
            return Err(format!(
                "{} #{} (called at {}) carries token {}, but {} #{} with token {} had returned at {}",
                what(later),
                later.index,
                later.call,
                later.token,
                what(earlier),
                earlier.index,
                earlier.token,
                earlier.ret
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::SimRng;
    use std::time::{Duration, Instant};

    type SpaceOp = Operation<SpaceCall, SpaceRet>;

    fn op(client: u64, call: u64, ret: u64, input: SpaceCall, output: SpaceRet) -> SpaceOp {
        Operation {
            client,
            input,
            call,
            ret: Some((ret, output)),
        }
    }

    fn no_reply(client: u64, call: u64, input: SpaceCall) -> SpaceOp {
        Operation {
            client,
            input,
            call,
            ret: None,
        }
    }

    fn set(value: u64) -> SpaceCall {
        SpaceCall::Set { value, token: None }
    }

    fn fenced_set(value: u64, token: u64) -> SpaceCall {
        SpaceCall::Set {
            value,
            token: Some(token),
        }
    }

    fn written(version: u64) -> SpaceRet {
        SpaceRet::Written { version }
    }

    fn read(value: Option<u64>, version: u64) -> SpaceRet {
        SpaceRet::Value { value, version }
    }

    fn granted(token: u64) -> SpaceRet {
        SpaceRet::Granted { token }
    }

    fn not_linearizable(result: Result<(), CheckError>) -> NotLinearizable {
        match result {
            Err(CheckError::NotLinearizable(report)) => report,
            other => panic!("expected not linearizable, got {other:?}"),
        }
    }

    fn unplaced_indexes(report: &NotLinearizable) -> Vec<usize> {
        report.unplaced.iter().map(|op| op.index).collect()
    }

    /// Applies `steps` in order from a fresh object; panics naming the
    /// first the model refuses.
    fn run_model(steps: &[(SpaceCall, SpaceRet)]) -> ObjectState {
        let mut state = ObjectModel.init();
        for (n, (call, ret)) in steps.iter().enumerate() {
            state = ObjectModel
                .step(&state, call, ret)
                .unwrap_or_else(|| panic!("step {n} {call:?} -> {ret:?} refused from {state:?}"));
        }
        state
    }

    #[test]
    fn model_lock_rules() {
        let locked = run_model(&[(SpaceCall::WriteLock, granted(3))]);
        let m = ObjectModel;
        // A tokenless write while locked: refused (held), or written
        // (expired), which frees the lock.
        assert_eq!(
            m.step(&locked, &set(1), &SpaceRet::Refused),
            Some(locked.clone())
        );
        let after = m.step(&locked, &set(1), &written(1)).expect("expired lock");
        assert_eq!(after.lock, LockState::Free);
        // Unlocked, a tokenless write may not be refused.
        assert_eq!(
            m.step(&ObjectModel.init(), &set(1), &SpaceRet::Refused),
            None
        );
        // The holder's token writes, or is refused by expiry (freeing).
        assert!(m.step(&locked, &fenced_set(1, 3), &written(1)).is_some());
        let expired = m
            .step(&locked, &fenced_set(1, 3), &SpaceRet::Refused)
            .expect("expiry");
        assert_eq!(expired.lock, LockState::Free);
        // Any other token is refused, and cannot write.
        assert_eq!(m.step(&locked, &fenced_set(1, 2), &written(1)), None);
        assert_eq!(
            m.step(&locked, &fenced_set(1, 2), &SpaceRet::Refused),
            Some(locked.clone())
        );
        // Grants: strictly increasing tokens; a new writer revokes the old.
        assert_eq!(m.step(&locked, &SpaceCall::WriteLock, &granted(3)), None);
        let relocked = m
            .step(&locked, &SpaceCall::WriteLock, &granted(4))
            .expect("grant");
        assert_eq!(m.step(&relocked, &fenced_set(1, 3), &written(1)), None);
        assert_eq!(
            m.step(
                &relocked,
                &SpaceCall::WriteUnlock { token: 3 },
                &SpaceRet::Released
            ),
            None
        );
        // The current holder's unlock: released, or not held (expired).
        for reply in [SpaceRet::Released, SpaceRet::NotHeld] {
            let freed = m.step(&relocked, &SpaceCall::WriteUnlock { token: 4 }, &reply);
            assert_eq!(freed.map(|s| s.lock), Some(LockState::Free));
        }
        // Readers share; a reader revokes the writer; a writer revokes readers.
        let read = run_model(&[
            (SpaceCall::WriteLock, granted(1)),
            (SpaceCall::ReadLock, granted(2)),
            (SpaceCall::ReadLock, granted(5)),
        ]);
        assert_eq!(m.step(&read, &fenced_set(9, 1), &written(1)), None);
        assert_eq!(
            m.step(&read, &SpaceCall::ReadLock, &SpaceRet::Refused),
            None
        );
        let one_left = m
            .step(
                &read,
                &SpaceCall::ReadUnlock { token: 2 },
                &SpaceRet::Released,
            )
            .expect("reader 2 holds");
        assert_eq!(
            m.step(
                &one_left,
                &SpaceCall::ReadUnlock { token: 2 },
                &SpaceRet::Released
            ),
            None
        );
        let writer = m
            .step(&read, &SpaceCall::WriteLock, &granted(6))
            .expect("grant");
        assert_eq!(
            m.step(
                &writer,
                &SpaceCall::ReadUnlock { token: 5 },
                &SpaceRet::Released
            ),
            None
        );
        // A refused grant needs a conflicting lock.
        assert_eq!(
            m.step(
                &ObjectModel.init(),
                &SpaceCall::WriteLock,
                &SpaceRet::Refused
            ),
            None
        );
        assert_eq!(
            m.step(&read, &SpaceCall::WriteLock, &SpaceRet::Refused),
            Some(read.clone())
        );
    }

    #[test]
    fn model_unseen_grant_blocks_and_raises_the_token_floor() {
        let m = ObjectModel;
        let fresh = m.init();
        let successors = m.step_unknown(&fresh, &SpaceCall::WriteLock);
        // Unlocked, a grant cannot be refused: the only way it took effect
        // is a grant of an unknown token.
        assert_eq!(successors.len(), 1);
        let locked = &successors[0];
        assert_eq!(locked.lock, LockState::Write { token: None });
        assert_eq!(m.step(locked, &SpaceCall::WriteLock, &granted(0)), None);
        assert!(m.step(locked, &SpaceCall::WriteLock, &granted(1)).is_some());
        assert_eq!(
            m.step(locked, &set(1), &SpaceRet::Refused),
            Some(locked.clone())
        );
    }

    #[test]
    fn sequential_history_is_linearizable() {
        let history = vec![
            op(1, 0, 1, SpaceCall::Get, read(None, 0)),
            op(1, 2, 3, set(10), written(1)),
            op(2, 4, 5, SpaceCall::Get, read(Some(10), 1)),
            op(
                2,
                6,
                7,
                SpaceCall::CompareAndSet {
                    expected_version: 1,
                    value: 11,
                },
                written(2),
            ),
            op(
                1,
                8,
                9,
                SpaceCall::CompareAndSet {
                    expected_version: 1,
                    value: 12,
                },
                SpaceRet::Refused,
            ),
            op(3, 10, 11, SpaceCall::WriteLock, granted(1)),
            op(2, 12, 13, set(13), SpaceRet::Refused),
            op(3, 14, 15, fenced_set(14, 1), written(3)),
            op(
                3,
                16,
                17,
                SpaceCall::WriteUnlock { token: 1 },
                SpaceRet::Released,
            ),
            op(1, 18, 19, SpaceCall::Delete, written(4)),
            op(2, 20, 21, SpaceCall::Get, read(None, 0)),
            op(
                2,
                22,
                23,
                SpaceCall::CompareAndSet {
                    expected_version: 0,
                    value: 15,
                },
                written(1),
            ),
        ];
        assert_eq!(check(&ObjectModel, &history), Ok(()));
        assert_eq!(fencing_monotonic(&history), Ok(()));
    }

    /// A deleted object is absent at version 0, as the core keeps it: a
    /// read that still counts the delete is refused, and a recreation
    /// counts from 1 again.
    #[test]
    fn a_deleted_object_is_back_at_version_zero() {
        let deleted = |seen: SpaceRet| {
            vec![
                op(1, 0, 1, set(10), written(1)),
                op(1, 2, 3, SpaceCall::Delete, written(2)),
                op(2, 4, 5, SpaceCall::Get, seen),
            ]
        };
        assert_eq!(check(&ObjectModel, &deleted(read(None, 0))), Ok(()));
        assert!(check(&ObjectModel, &deleted(read(None, 2))).is_err());
        let mut again = deleted(read(None, 0));
        again.push(op(2, 6, 7, set(11), written(1)));
        again.push(op(1, 8, 9, SpaceCall::Get, read(Some(11), 1)));
        assert_eq!(check(&ObjectModel, &again), Ok(()));
    }

    #[test]
    fn overlapping_set_and_get_may_go_either_way() {
        for seen in [read(None, 0), read(Some(1), 1)] {
            let history = vec![
                op(1, 0, 10, set(1), written(1)),
                op(2, 5, 15, SpaceCall::Get, seen.clone()),
            ];
            assert_eq!(check(&ObjectModel, &history), Ok(()), "get saw {seen:?}");
        }
        // Two overlapping sets: a later get may see either, as long as the
        // version counts both.
        for last in [1, 2] {
            let history = vec![
                op(1, 0, 10, set(1), written(1)),
                op(2, 0, 10, set(2), written(2)),
                op(3, 20, 30, SpaceCall::Get, read(Some(last), 2)),
            ];
            let verdict = check(&ObjectModel, &history);
            // The set that wrote version 2 is the one a get sees.
            assert_eq!(verdict.is_ok(), last == 2, "last {last}: {verdict:?}");
        }
    }

    #[test]
    fn stale_read_is_rejected() {
        let history = vec![
            op(1, 0, 10, set(1), written(1)),
            op(2, 20, 30, SpaceCall::Get, read(None, 0)),
        ];
        let report = not_linearizable(check(&ObjectModel, &history));
        assert_eq!(report.longest_prefix.len(), 1);
        assert_eq!(report.longest_prefix[0].index, 0);
        assert_eq!(unplaced_indexes(&report), vec![1]);
        assert!(
            report.to_string().contains("#1 client 2 [20, 30] Get"),
            "{report}"
        );
    }

    #[test]
    fn lost_write_is_rejected() {
        // Both sets acknowledged in turn, yet reads keep seeing the first.
        let history = vec![
            op(1, 0, 10, set(1), written(1)),
            op(2, 20, 30, set(2), written(2)),
            op(1, 40, 50, SpaceCall::Get, read(Some(1), 1)),
            op(3, 60, 70, SpaceCall::Get, read(Some(1), 1)),
        ];
        let report = not_linearizable(check(&ObjectModel, &history));
        assert_eq!(unplaced_indexes(&report), vec![2]);
    }

    #[test]
    fn cas_against_an_overwritten_version_is_rejected() {
        let history = vec![
            op(1, 0, 10, set(1), written(1)),
            op(2, 20, 30, set(2), written(2)),
            op(
                1,
                40,
                50,
                SpaceCall::CompareAndSet {
                    expected_version: 1,
                    value: 3,
                },
                written(3),
            ),
        ];
        let report = not_linearizable(check(&ObjectModel, &history));
        assert_eq!(unplaced_indexes(&report), vec![2]);
        // Overlapping the overwrite, it may have come first.
        let mut overlapping = history.clone();
        overlapping[2].call = 25;
        overlapping[2].ret = Some((50, written(2)));
        overlapping[1].ret = Some((30, written(3)));
        assert_eq!(check(&ObjectModel, &overlapping), Ok(()));
    }

    #[test]
    fn non_increasing_write_lock_tokens_are_rejected() {
        for second in [5, 4] {
            let history = vec![
                op(1, 0, 10, SpaceCall::WriteLock, granted(5)),
                op(2, 20, 30, SpaceCall::WriteLock, granted(second)),
            ];
            let report = not_linearizable(check(&ObjectModel, &history));
            assert_eq!(unplaced_indexes(&report), vec![1]);
            let error = fencing_monotonic(&history).expect_err("token did not rise");
            assert!(error.contains("grant #1"), "{error}");
        }
        // Overlapping grants may be ordered either way.
        let overlapping = vec![
            op(1, 0, 10, SpaceCall::WriteLock, granted(5)),
            op(2, 5, 30, SpaceCall::WriteLock, granted(4)),
        ];
        assert_eq!(check(&ObjectModel, &overlapping), Ok(()));
        assert_eq!(fencing_monotonic(&overlapping), Ok(()));
    }

    #[test]
    fn stale_token_write_after_a_newer_grant_is_rejected() {
        let history = vec![
            op(1, 0, 10, SpaceCall::WriteLock, granted(1)),
            op(2, 20, 30, SpaceCall::WriteLock, granted(2)),
            op(1, 40, 50, fenced_set(7, 1), written(1)),
        ];
        let report = not_linearizable(check(&ObjectModel, &history));
        assert_eq!(unplaced_indexes(&report), vec![2]);
        let error = fencing_monotonic(&history).expect_err("stale write");
        assert!(error.contains("fenced write #2"), "{error}");
        // Refused, it is fine.
        let mut refused = history.clone();
        refused[2].ret = Some((50, SpaceRet::Refused));
        assert_eq!(check(&ObjectModel, &refused), Ok(()));
        assert_eq!(fencing_monotonic(&refused), Ok(()));
        // A stale write after a newer holder's write, found by real time.
        let after_write = vec![
            op(1, 0, 10, SpaceCall::WriteLock, granted(1)),
            op(2, 0, 60, SpaceCall::WriteLock, granted(2)),
            op(2, 65, 70, fenced_set(8, 2), written(1)),
            op(1, 80, 90, fenced_set(7, 1), written(2)),
        ];
        assert!(check(&ObjectModel, &after_write).is_err());
        let error = fencing_monotonic(&after_write).expect_err("stale write");
        assert!(error.contains("fenced write #3"), "{error}");
    }

    #[test]
    fn operations_without_reply_may_take_effect_or_not() {
        // Seen by a later get.
        let observed = vec![
            no_reply(1, 0, set(1)),
            op(2, 20, 30, SpaceCall::Get, read(Some(1), 1)),
        ];
        assert_eq!(check(&ObjectModel, &observed), Ok(()));
        // Never seen.
        let lost = vec![
            no_reply(1, 0, set(1)),
            op(2, 20, 30, SpaceCall::Get, read(None, 0)),
            op(2, 40, 50, set(2), written(1)),
            op(2, 60, 70, SpaceCall::Get, read(Some(2), 1)),
        ];
        assert_eq!(check(&ObjectModel, &lost), Ok(()));
        // Taking effect late: after a later write, seen by the last get.
        let late = vec![
            no_reply(1, 0, set(1)),
            op(2, 40, 50, set(2), written(1)),
            op(2, 60, 70, SpaceCall::Get, read(Some(1), 2)),
        ];
        assert_eq!(check(&ObjectModel, &late), Ok(()));
        // But not seen before it was called.
        let early = vec![
            op(2, 0, 10, SpaceCall::Get, read(Some(1), 1)),
            no_reply(1, 20, set(1)),
        ];
        let report = not_linearizable(check(&ObjectModel, &early));
        assert_eq!(unplaced_indexes(&report), vec![0]);
        // A write lock nobody heard of still blocks, and still counts.
        let unseen_grant = vec![
            no_reply(1, 0, SpaceCall::WriteLock),
            op(2, 20, 30, set(5), SpaceRet::Refused),
            op(3, 40, 50, SpaceCall::WriteLock, granted(1)),
        ];
        assert_eq!(check(&ObjectModel, &unseen_grant), Ok(()));
        let mut reused_token = unseen_grant.clone();
        reused_token[2].ret = Some((50, granted(0)));
        assert!(check(&ObjectModel, &reused_token).is_err());
    }

    #[test]
    fn operations_touching_at_one_instant_are_concurrent() {
        // The get returns at 10, the set is called at 10: either order.
        let history = vec![
            op(1, 0, 10, SpaceCall::Get, read(Some(1), 1)),
            op(2, 10, 20, set(1), written(1)),
        ];
        assert_eq!(check(&ObjectModel, &history), Ok(()));
        // One nanosecond apart, the get came first and cannot see it.
        let mut apart = history.clone();
        apart[1].call = 11;
        assert!(check(&ObjectModel, &apart).is_err());
    }

    #[test]
    fn malformed_operation_is_reported() {
        let history = vec![op(1, 10, 5, SpaceCall::Get, read(None, 0))];
        assert_eq!(
            check(&ObjectModel, &history),
            Err(CheckError::ReturnBeforeCall {
                index: 0,
                call: 10,
                ret: 5
            })
        );
    }

    /// One object of a reference implementation of the space, with leases
    /// that really expire.
    #[derive(Default)]
    struct RefObject {
        value: Option<u64>,
        version: u64,
        next_token: u64,
        writer: Option<(u64, u64)>,
        readers: BTreeMap<u64, u64>,
    }

    impl RefObject {
        /// Forgets the leases expired by `now`.
        fn expire(&mut self, now: u64) {
            if self.writer.is_some_and(|(_, until)| until <= now) {
                self.writer = None;
            }
            self.readers.retain(|_, until| *until > now);
        }

        fn grant(&mut self, rng: &mut SimRng) -> u64 {
            self.next_token += rng.range(1, 3);
            self.next_token
        }

        fn apply(&mut self, call: &SpaceCall, now: u64, lease: u64, rng: &mut SimRng) -> SpaceRet {
            self.expire(now);
            let locked = self.writer.is_some() || !self.readers.is_empty();
            let unfenced_write = matches!(
                call,
                SpaceCall::Set { token: None, .. }
                    | SpaceCall::CompareAndSet { .. }
                    | SpaceCall::Delete
            );
            if locked && unfenced_write {
                return SpaceRet::Refused;
            }
            let write = |object: &mut RefObject, value: Option<u64>| {
                object.value = value;
                object.version += 1;
                SpaceRet::Written {
                    version: object.version,
                }
            };
            match *call {
                SpaceCall::Get => SpaceRet::Value {
                    value: self.value,
                    version: self.version,
                },
                SpaceCall::Set { value, token: None } => write(self, Some(value)),
                SpaceCall::CompareAndSet {
                    expected_version,
                    value,
                } => {
                    if expected_version == self.version {
                        write(self, Some(value))
                    } else {
                        SpaceRet::Refused
                    }
                }
                SpaceCall::Delete => {
                    let reply = write(self, None);
                    self.version = 0;
                    reply
                }
                SpaceCall::Set {
                    value,
                    token: Some(token),
                } => {
                    if self.writer.is_some_and(|(held, _)| held == token) {
                        write(self, Some(value))
                    } else {
                        SpaceRet::Refused
                    }
                }
                SpaceCall::WriteLock => {
                    if locked {
                        SpaceRet::Refused
                    } else {
                        let token = self.grant(rng);
                        self.writer = Some((token, now + lease));
                        SpaceRet::Granted { token }
                    }
                }
                SpaceCall::ReadLock => {
                    if self.writer.is_some() {
                        SpaceRet::Refused
                    } else {
                        let token = self.grant(rng);
                        self.readers.insert(token, now + lease);
                        SpaceRet::Granted { token }
                    }
                }
                SpaceCall::WriteUnlock { token } => {
                    if self.writer.is_some_and(|(held, _)| held == token) {
                        self.writer = None;
                        SpaceRet::Released
                    } else {
                        SpaceRet::NotHeld
                    }
                }
                SpaceCall::ReadUnlock { token } => {
                    if self.readers.remove(&token).is_some() {
                        SpaceRet::Released
                    } else {
                        SpaceRet::NotHeld
                    }
                }
            }
        }
    }

    type SpaceHistory = Vec<Operation<Keyed<ObjectKey, SpaceCall>, SpaceRet>>;

    /// A history of `count` operations by `clients` clients on `keys`
    /// objects (two of them hot), from a sequential execution of the
    /// reference space: each
    /// operation takes effect at an instant inside its [call, return]
    /// window, the windows of different clients overlap, and some calls
    /// get no reply (half of those took effect). Linearizable by
    /// construction.
    fn generate(seed: u64, count: usize, keys: usize, clients: u64) -> SpaceHistory {
        const WINDOW: u64 = 30;
        const LEASE: u64 = 150;
        let mut rng = SimRng::new(seed);
        let names: Vec<ObjectKey> = (0..keys)
            .map(|k| ObjectKey::new(format!("ns{}", k % 3), format!("object{k}")))
            .collect();
        let mut objects: Vec<RefObject> = (0..keys).map(|_| RefObject::default()).collect();
        // Per client: when its last call returned, and its locks by object.
        let mut last_return = vec![0u64; clients as usize];
        let mut held: BTreeMap<(u64, usize), (bool, u64)> = BTreeMap::new();
        // Per object, the tokens replies carried: stale ones are presented
        // too, but never one nobody was told (see `ObjectModel`).
        let mut told: Vec<Vec<u64>> = vec![Vec::new(); keys];
        let mut history = Vec::with_capacity(count);
        let mut now = 100;
        while history.len() < count {
            now += rng.range(1, 8);
            let free: Vec<u64> = (0..clients)
                .filter(|&c| last_return[c as usize] < now)
                .collect();
            let Some(&client) = rng.pick(&free) else {
                continue;
            };
            // Two hot objects take most calls, so their calls overlap.
            let key = if rng.chance(0.6) {
                rng.below(2.min(keys as u64))
            } else {
                rng.below(keys as u64)
            } as usize;
            let object = &mut objects[key];
            let mine = held.get(&(client, key)).copied();
            let any_token = rng.pick(&told[key]).copied().unwrap_or(0);
            let call = match rng.below(100) {
                0..35 => SpaceCall::Get,
                35..50 => SpaceCall::Set {
                    value: rng.below(1000),
                    token: None,
                },
                50..60 => SpaceCall::Set {
                    value: rng.below(1000),
                    token: Some(match mine {
                        Some((true, token)) if rng.chance(0.9) => token,
                        _ => any_token,
                    }),
                },
                60..70 => SpaceCall::CompareAndSet {
                    expected_version: object.version.saturating_sub(rng.below(2)),
                    value: rng.below(1000),
                },
                70..75 => SpaceCall::Delete,
                75..83 => SpaceCall::WriteLock,
                83..88 => SpaceCall::WriteUnlock {
                    token: match mine {
                        Some((true, token)) => token,
                        _ => any_token,
                    },
                },
                88..95 => SpaceCall::ReadLock,
                _ => SpaceCall::ReadUnlock {
                    token: match mine {
                        Some((false, token)) => token,
                        _ => any_token,
                    },
                },
            };
            let earliest_call = (last_return[client as usize] + 1).max(now.saturating_sub(WINDOW));
            let call_at = rng.range(earliest_call, now);
            let return_at = now + rng.below(WINDOW);
            last_return[client as usize] = return_at;
            let ret = if rng.chance(0.02) {
                if rng.chance(0.5) {
                    object.apply(&call, now, LEASE, &mut rng);
                }
                None
            } else {
                let reply = object.apply(&call, now, LEASE, &mut rng);
                if let SpaceRet::Granted { token } = reply {
                    told[key].push(token);
                }
                match (&call, &reply) {
                    (SpaceCall::WriteLock, SpaceRet::Granted { token }) => {
                        held.insert((client, key), (true, *token));
                    }
                    (SpaceCall::ReadLock, SpaceRet::Granted { token }) => {
                        held.insert((client, key), (false, *token));
                    }
                    (SpaceCall::WriteUnlock { .. } | SpaceCall::ReadUnlock { .. }, _) => {
                        held.remove(&(client, key));
                    }
                    _ => {}
                }
                Some((return_at, reply))
            };
            history.push(Operation {
                client,
                input: Keyed {
                    key: names[key].clone(),
                    input: call,
                },
                call: call_at,
                ret,
            });
        }
        history
    }

    fn check_space(history: &SpaceHistory) -> Result<(), CheckError> {
        check_partitioned(&SpaceModel::new(ObjectModel), history, |call| {
            call.key.clone()
        })
    }

    /// A read in the middle of `history`, its value changed to one never
    /// written; its index.
    fn corrupt_a_read(history: &mut SpaceHistory) -> usize {
        let index = (history.len() / 2..history.len())
            .find(|&i| {
                history[i].input.input == SpaceCall::Get
                    && matches!(history[i].ret, Some((_, SpaceRet::Value { .. })))
            })
            .expect("the history has a read in its second half");
        if let Some((_, SpaceRet::Value { value, .. })) = &mut history[index].ret {
            *value = Some(1_000_000_007);
        }
        index
    }

    #[test]
    fn generated_history_is_accepted_quickly_and_one_wrong_read_rejected() {
        let mut history = generate(7, 2_000, 20, 6);
        assert!(
            history.iter().any(|op| op.ret.is_none()),
            "some calls get no reply"
        );
        assert!(
            history.iter().any(|op| matches!(
                (&op.input.input, &op.ret),
                (
                    SpaceCall::Set { token: Some(_), .. },
                    Some((_, SpaceRet::Written { .. }))
                )
            )),
            "some fenced writes succeed"
        );
        let started = Instant::now();
        let verdict = check_space(&history);
        let took = started.elapsed();
        assert_eq!(verdict, Ok(()));
        assert!(took < Duration::from_secs(1), "took {took:?}");
        assert_eq!(fencing_monotonic_per_key(&history), Ok(()));

        let corrupted = corrupt_a_read(&mut history);
        let report = not_linearizable(check_space(&history));
        let key = &history[corrupted].input.key;
        assert_eq!(report.partition, Some(format!("{key:?}")));
        assert!(report.longest_prefix.iter().all(|op| op.index != corrupted));
        assert!(unplaced_indexes(&report).contains(&corrupted), "{report}");
    }

    #[test]
    fn partitioned_and_whole_checks_agree() {
        for seed in 0..20 {
            let mut history = generate(seed, 60, 3, 4);
            let model = SpaceModel::new(ObjectModel);
            assert_eq!(check(&model, &history), Ok(()), "seed {seed}");
            assert_eq!(check_space(&history), Ok(()), "seed {seed}");
            corrupt_a_read(&mut history);
            assert!(
                matches!(check(&model, &history), Err(CheckError::NotLinearizable(_))),
                "seed {seed}"
            );
            assert!(
                matches!(check_space(&history), Err(CheckError::NotLinearizable(_))),
                "seed {seed}"
            );
        }
    }

    #[test]
    fn fencing_check_finds_reordered_grants_in_a_generated_history() {
        let mut history = generate(11, 2_000, 20, 6);
        // Swap the tokens of two grants of one object, far apart in time.
        let grants: Vec<usize> = (0..history.len())
            .filter(|&i| {
                history[i].input.key == history[0].input.key
                    && matches!(history[i].ret, Some((_, SpaceRet::Granted { .. })))
            })
            .collect();
        assert!(grants.len() >= 2, "object 0 has grants");
        let (first, last) = (grants[0], grants[grants.len() - 1]);
        let token_of = |op: &Operation<_, SpaceRet>| match op.ret {
            Some((_, SpaceRet::Granted { token })) => token,
            _ => unreachable!("a grant"),
        };
        let (a, b) = (token_of(&history[first]), token_of(&history[last]));
        history[first].ret = history[first].ret.take().map(|(at, _)| (at, granted(b)));
        history[last].ret = history[last].ret.take().map(|(at, _)| (at, granted(a)));
        assert!(fencing_monotonic_per_key(&history).is_err());
        assert!(matches!(
            check_space(&history),
            Err(CheckError::NotLinearizable(_))
        ));
    }

    #[test]
    fn pathological_history_exceeds_the_budget() {
        // Thirty writes that never replied and a read of a value none of
        // them wrote: every subset of the writes, in every order, must be
        // tried before the read is known impossible — some 30 * 2^29
        // configurations, even remembered.
        let mut history: Vec<SpaceOp> = (0..30).map(|n| no_reply(n, 0, set(n))).collect();
        history.push(op(99, 200, 300, SpaceCall::Get, read(Some(999), 30)));
        let started = Instant::now();
        let verdict = check_with_budget(&ObjectModel, &history, 100_000);
        assert!(started.elapsed() < Duration::from_secs(10));
        assert_eq!(
            verdict,
            Err(CheckError::BudgetExceeded(BudgetExceeded {
                partition: None,
                budget: 100_000,
                operations: 31,
            }))
        );
        // With a few writes, the same search ends with a verdict.
        history.drain(..25);
        assert!(matches!(
            check_with_budget(&ObjectModel, &history, 100_000),
            Err(CheckError::NotLinearizable(_))
        ));
    }
}
