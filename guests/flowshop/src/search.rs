//! The depth-first branch-and-bound, shared by the divisible unit and the
//! plain sequential solver so both explore the same tree in the same order.
//!
//! A node fixes a prefix and a suffix of the permutation; its children place
//! one more job either right after the prefix or right before the suffix
//! (bidirectional branching, Potts 1980). Each node picks the direction whose
//! children the bound prunes best: fewer surviving children, then the larger
//! sum of their bounds. Forward-only branching leaves plateaus of nodes
//! whose bound cannot see the end of the schedule; on ta001 it does not find
//! the optimum in 3·10⁸ nodes, where this proves it in a few thousand.
//!
//! The open nodes are kept compactly. The search holds one current `path`
//! (the placements leading to the current node) and a stack of [`Open`]
//! entries, each one placement at some depth of that path: an entry at
//! depth `d` is the node `path[..d-1]` plus that placement. Entries are
//! pushed at non-decreasing depths, so popping one and truncating the path
//! to its parent keeps every entry below it valid. A node costs 9 bytes
//! in a checkpoint however many jobs it fixes, and the open set of even a
//! 500-job search stays small.

use colony_guest::codec_struct;

use super::bound::{Bounds, Pairs};
use super::Instance;

/// One job placed: after the prefix, or (`back`) before the suffix.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Place {
    pub(crate) job: u16,
    pub(crate) back: bool,
}

codec_struct!(Place { job, back });

/// An open node: `place` added at depth `depth` (to the first `depth − 1`
/// placements of the path), with the lower bound it had when generated.
/// Depth 0 is the root (place unused).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Open {
    pub(crate) depth: u16,
    pub(crate) place: Place,
    pub(crate) lb: u32,
}

codec_struct!(Open { depth, place, lb });

/// The part of a search that is state (encoded in checkpoints).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Tree {
    /// The placements the open entries hang from.
    pub(crate) path: Vec<Place>,
    /// Open nodes, the next to explore last.
    pub(crate) open: Vec<Open>,
}

codec_struct!(Tree { path, open });

impl Tree {
    /// The whole search: only the root is open.
    pub(crate) fn root() -> Tree {
        Tree {
            path: Vec::new(),
            open: vec![Open {
                depth: 0,
                place: Place {
                    job: 0,
                    back: false,
                },
                lb: 0,
            }],
        }
    }

    /// Whether the search is over.
    pub(crate) fn is_finished(&self) -> bool {
        self.open.is_empty()
    }

    /// Gives away the bottom half of the open stack: the shallowest nodes,
    /// which this search would reach last (classic depth-first work
    /// stealing). The donor keeps the nodes it is about to explore, so the
    /// split adds as little speculative work as possible. Declines with
    /// fewer than two open nodes.
    pub(crate) fn split(&mut self) -> Option<Tree> {
        if self.open.len() < 2 {
            return None;
        }
        // Half, rounded up (`div_ceil` is newer than the guest toolchain).
        let keep_from = self.open.len() - self.open.len() / 2;
        let given: Vec<Open> = self.open.drain(..keep_from).collect();
        let deepest = given
            .iter()
            .map(|o| usize::from(o.depth))
            .max()
            .unwrap_or(0);
        let path = self.path[..deepest.saturating_sub(1).min(self.path.len())].to_vec();
        Some(Tree { path, open: given })
    }

    /// Whether this tree is a well-formed search of an instance with `jobs`
    /// jobs (a decoded checkpoint could be anything).
    pub(crate) fn is_consistent(&self, jobs: usize) -> bool {
        let mut seen = vec![false; jobs];
        for place in &self.path {
            let j = usize::from(place.job);
            if j >= jobs || seen[j] {
                return false;
            }
            seen[j] = true;
        }
        let mut previous_depth = 0;
        self.open.iter().all(|o| {
            let depth = usize::from(o.depth);
            let job = o.place.job;
            let ok = depth >= previous_depth
                && depth <= self.path.len() + 1
                && depth <= jobs
                && (depth == 0 || usize::from(job) < jobs)
                && (depth == 0 || !self.path[..depth - 1].iter().any(|p| p.job == job));
            previous_depth = depth;
            ok
        })
    }
}

/// The best complete schedule known to a search.
#[derive(Clone, Debug)]
pub(crate) struct Incumbent {
    /// Prune nodes whose bound reaches this.
    pub(crate) ub: u32,
    /// A schedule this search found with makespan `ub`, if it found one.
    pub(crate) found: Option<(u32, Vec<u16>)>,
}

impl Incumbent {
    pub(crate) fn new(ub: u32) -> Incumbent {
        Incumbent { ub, found: None }
    }
}

/// The search machinery for one instance: bound data and reusable buffers.
/// Not state: rebuilt from the instance after a restore.
pub(crate) struct Engine {
    bounds: Bounds,
    jobs: usize,
    machines: usize,
    /// `fronts[d * m..]`: when each machine finishes the prefix fixed by
    /// `path[..d]`.
    fronts: Vec<u32>,
    /// `backs[d * m..]`: how long each machine needs from starting the
    /// suffix fixed by `path[..d]` to the end.
    backs: Vec<u32>,
    /// Whether each job is on the path.
    scheduled: Vec<bool>,
    unscheduled: Vec<u16>,
    remaining: Vec<u32>,
    heads: SmallestTwo,
    tails: SmallestTwo,
    child_front: Vec<u32>,
    child_back: Vec<u32>,
    child_remaining: Vec<u32>,
    child_head: Vec<u32>,
    child_tail: Vec<u32>,
    forward: Vec<(u32, u16)>,
    backward: Vec<(u32, u16)>,
}

/// The smallest and second smallest value per machine over a set of jobs,
/// so the minimum without any one job is found in O(1).
struct SmallestTwo {
    first: Vec<u32>,
    first_job: Vec<u16>,
    second: Vec<u32>,
}

impl SmallestTwo {
    fn new(machines: usize) -> SmallestTwo {
        SmallestTwo {
            first: vec![0; machines],
            first_job: vec![0; machines],
            second: vec![0; machines],
        }
    }

    fn clear(&mut self) {
        self.first.fill(u32::MAX);
        self.second.fill(u32::MAX);
    }

    #[inline]
    fn add(&mut self, job: u16, values: &[u32]) {
        for (k, &v) in values.iter().enumerate() {
            if v < self.first[k] {
                self.second[k] = self.first[k];
                self.first[k] = v;
                self.first_job[k] = job;
            } else if v < self.second[k] {
                self.second[k] = v;
            }
        }
    }

    #[inline]
    fn without(&self, job: u16, out: &mut [u32]) {
        for (k, o) in out.iter_mut().enumerate() {
            *o = if self.first_job[k] == job {
                self.second[k]
            } else {
                self.first[k]
            };
        }
    }
}

impl Engine {
    pub(crate) fn new(instance: &Instance, pairs: Pairs) -> Engine {
        let (n, m) = (instance.jobs(), instance.machines());
        Engine {
            bounds: Bounds::new(instance, pairs),
            jobs: n,
            machines: m,
            fronts: vec![0; (n + 1) * m],
            backs: vec![0; (n + 1) * m],
            scheduled: vec![false; n],
            unscheduled: Vec::with_capacity(n),
            remaining: vec![0; m],
            heads: SmallestTwo::new(m),
            tails: SmallestTwo::new(m),
            child_front: vec![0; m],
            child_back: vec![0; m],
            child_remaining: vec![0; m],
            child_head: vec![0; m],
            child_tail: vec![0; m],
            forward: Vec::with_capacity(n),
            backward: Vec::with_capacity(n),
        }
    }

    /// Sets the fronts and backs of depth `depth` from those of `depth − 1`
    /// and the placement `place`.
    fn place(&mut self, depth: usize, place: Place) {
        let m = self.machines;
        let (parent, at) = ((depth - 1) * m, depth * m);
        self.fronts.copy_within(parent..parent + m, at);
        self.backs.copy_within(parent..parent + m, at);
        let job = usize::from(place.job);
        if place.back {
            self.bounds.advance_back(&mut self.backs[at..at + m], job);
        } else {
            self.bounds.advance(&mut self.fronts[at..at + m], job);
        }
        self.scheduled[job] = true;
    }

    /// Recomputes the fronts, backs and flags of `path`.
    fn sync(&mut self, path: &[Place]) {
        let m = self.machines;
        self.scheduled.fill(false);
        self.fronts[..m].fill(0);
        self.backs[..m].fill(0);
        for (d, &place) in path.iter().enumerate() {
            self.place(d + 1, place);
        }
    }

    /// Explores open nodes of `tree` until about `budget` nodes were
    /// expanded or the tree is finished; returns the number expanded.
    /// Nodes whose bound reaches `incumbent.ub` are pruned; better complete
    /// schedules lower it and are recorded in `incumbent.found`.
    pub(crate) fn explore(
        &mut self,
        tree: &mut Tree,
        incumbent: &mut Incumbent,
        budget: u64,
    ) -> u64 {
        self.sync(&tree.path);
        let mut nodes = 0;
        while nodes < budget {
            let node = match tree.open.pop() {
                Some(node) => node,
                None => break,
            };
            if node.lb >= incumbent.ub {
                continue;
            }
            let depth = usize::from(node.depth);
            while tree.path.len() + 1 > depth.max(1) {
                if let Some(place) = tree.path.pop() {
                    self.scheduled[usize::from(place.job)] = false;
                }
            }
            if depth > 0 {
                self.place(depth, node.place);
                tree.path.push(node.place);
            }
            nodes += 1;
            self.expand(tree, incumbent);
        }
        nodes
    }

    /// Records the complete schedule `prefix ++ middle ++ suffix` of
    /// makespan `cmax` if it beats the incumbent.
    fn offer(&self, path: &[Place], middle: &[u16], cmax: u32, incumbent: &mut Incumbent) {
        if cmax < incumbent.ub {
            let mut permutation = Vec::with_capacity(self.jobs);
            permutation.extend(path.iter().filter(|p| !p.back).map(|p| p.job));
            permutation.extend_from_slice(middle);
            permutation.extend(path.iter().rev().filter(|p| p.back).map(|p| p.job));
            incumbent.ub = cmax;
            incumbent.found = Some((cmax, permutation));
        }
    }

    /// Makespan of the node's prefix, then `middle`, then its suffix.
    fn finish(&mut self, depth: usize, middle: &[u16]) -> u32 {
        let m = self.machines;
        self.child_front
            .copy_from_slice(&self.fronts[depth * m..(depth + 1) * m]);
        for &j in middle {
            self.bounds.advance(&mut self.child_front, usize::from(j));
        }
        let back = &self.backs[depth * m..(depth + 1) * m];
        self.child_front
            .iter()
            .zip(back)
            .map(|(f, b)| f + b)
            .max()
            .unwrap_or(0)
    }

    /// Generates the children of the node `tree.path` in the better
    /// direction, pushing those whose bound beats the incumbent, best last.
    /// With two or fewer jobs left the completions are evaluated directly.
    fn expand(&mut self, tree: &mut Tree, incumbent: &mut Incumbent) {
        let m = self.machines;
        let depth = tree.path.len();
        self.unscheduled.clear();
        self.unscheduled
            .extend((0..self.jobs as u16).filter(|&j| !self.scheduled[usize::from(j)]));
        match *self.unscheduled.as_slice() {
            [] => {
                let cmax = self.finish(depth, &[]);
                self.offer(&tree.path, &[], cmax, incumbent);
                return;
            }
            [a] => {
                let cmax = self.finish(depth, &[a]);
                self.offer(&tree.path, &[a], cmax, incumbent);
                return;
            }
            [a, b] => {
                let cmax = self.finish(depth, &[a, b]);
                self.offer(&tree.path, &[a, b], cmax, incumbent);
                let cmax = self.finish(depth, &[b, a]);
                self.offer(&tree.path, &[b, a], cmax, incumbent);
                return;
            }
            _ => {}
        }

        // Remaining work and the two smallest heads and tails per machine,
        // so each child gets its own in O(m).
        self.remaining.fill(0);
        self.heads.clear();
        self.tails.clear();
        for &j in &self.unscheduled {
            let job = usize::from(j);
            for (r, t) in self.remaining.iter_mut().zip(self.bounds.times(job)) {
                *r += t;
            }
            self.heads.add(j, self.bounds.heads(job));
            self.tails.add(j, self.bounds.tails(job));
        }

        self.forward.clear();
        self.backward.clear();
        let (mut forward_sum, mut backward_sum) = (0u64, 0u64);
        for i in 0..self.unscheduled.len() {
            let j = self.unscheduled[i];
            let job = usize::from(j);
            for (c, (r, t)) in self
                .child_remaining
                .iter_mut()
                .zip(self.remaining.iter().zip(self.bounds.times(job)))
            {
                *c = r - t;
            }
            self.heads.without(j, &mut self.child_head);
            self.tails.without(j, &mut self.child_tail);
            self.scheduled[job] = true;
            for back in [false, true] {
                self.child_front
                    .copy_from_slice(&self.fronts[depth * m..(depth + 1) * m]);
                self.child_back
                    .copy_from_slice(&self.backs[depth * m..(depth + 1) * m]);
                if back {
                    self.bounds.advance_back(&mut self.child_back, job);
                } else {
                    self.bounds.advance(&mut self.child_front, job);
                }
                let lb = self.bounds.node_bound(
                    &self.child_front,
                    &self.child_back,
                    &self.scheduled,
                    &self.child_remaining,
                    &self.child_head,
                    &self.child_tail,
                    incumbent.ub,
                );
                let (children, sum) = if back {
                    (&mut self.backward, &mut backward_sum)
                } else {
                    (&mut self.forward, &mut forward_sum)
                };
                *sum += u64::from(lb.min(incumbent.ub));
                if lb < incumbent.ub {
                    children.push((lb, j));
                }
            }
            self.scheduled[job] = false;
        }

        // Branch where fewer children survive; then where the bounds are
        // larger (the subtrees will prune sooner); then forward.
        let back = (self.backward.len(), std::cmp::Reverse(backward_sum))
            < (self.forward.len(), std::cmp::Reverse(forward_sum));
        let children = if back {
            &mut self.backward
        } else {
            &mut self.forward
        };
        // Best child (smallest bound, then smallest job) on top.
        children.sort_unstable_by(|x, y| y.cmp(x));
        let child_depth = (depth + 1) as u16;
        tree.open.extend(children.iter().map(|&(lb, job)| Open {
            depth: child_depth,
            place: Place { job, back },
            lb,
        }));
    }
}
