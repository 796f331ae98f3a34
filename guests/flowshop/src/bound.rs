//! Lower bounds on the makespan of every completion of a partial schedule.
//!
//! A node of the search fixes a prefix and a suffix of the permutation. What
//! is known about it is `front[k]`, when machine `k` finishes the prefix,
//! `back[k]`, how long machine `k` needs from starting the suffix to the end
//! of the schedule, and the set of unscheduled jobs in between. Machine `k`
//! can start them at `start(k) = max(front[k], front[0] + min head)` (the
//! first of them must cross machines `0..k` first) and needs, after the last,
//! `end(k) = max(back[k], min tail + back[m−1])`. Two bounds are combined,
//! the larger wins:
//!
//! - the one-machine bound (LB1): `start(k)` + the unscheduled work on `k` +
//!   `end(k)`, for every machine;
//! - the two-machine bound (LB2) of Lageweg, Lenstra and Rinnooy Kan (1978),
//!   in the form used by Ladhari and Haouari (2005) and Gmys et al. (2020):
//!   for a pair of machines `k < l`, relax every other machine to infinite
//!   capacity. Machines between `k` and `l` become a time lag (the job's
//!   total time on them) and the result is a two-machine flow shop with time
//!   lags, which Johnson's rule extended by Mitten (1959) solves exactly:
//!   jobs with `a ≤ b` first by increasing `a + lag`, then the others by
//!   decreasing `b + lag`. Its makespan, with the machines available at
//!   `start(k)` and `start(l)`, plus `end(l)`, bounds the node.
//!
//! Johnson's order of a pair does not depend on which jobs are left, so it is
//! sorted once per instance; a node walks it skipping scheduled jobs, which
//! costs `O(n)` per pair and allocates nothing.

use super::Instance;

/// Which machine pairs the two-machine bound uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pairs {
    /// Only neighbours `(k, k+1)`: `m − 1` pairs, cheaper per node.
    Adjacent,
    /// Every pair `k < l`: `m(m−1)/2` pairs, stronger.
    All,
}

impl Pairs {
    /// The default for an instance with `machines` machines: all pairs up
    /// to five machines, neighbours beyond. Measured with
    /// [`solve_sequential_with`](super::solve_sequential_with), release, one
    /// core: on Taillard's 20×5 class all pairs need fewer nodes and less
    /// time (ta001–ta010 together: 6.7·10³ nodes in 12 ms, against 2.9·10⁴
    /// nodes in 26 ms for neighbours); on 20×10, neighbours are two to four
    /// times faster on nine instances of ten (ta017 is the exception).
    pub fn default_for(machines: usize) -> Pairs {
        if machines <= 5 {
            Pairs::All
        } else {
            Pairs::Adjacent
        }
    }
}

/// One job of a pair's Johnson order.
#[derive(Clone, Copy, Debug)]
struct PairJob {
    job: u16,
    /// Time on the first machine of the pair.
    a: u16,
    /// Time on the second machine of the pair.
    b: u16,
    /// Total time on the machines strictly between them.
    lag: u16,
}

/// Per-instance data for the bounds and for advancing fronts.
pub(crate) struct Bounds {
    jobs: usize,
    machines: usize,
    /// Processing times, `[job * machines + machine]`.
    p: Vec<u32>,
    /// `head[job * machines + k]`: the job's total time on machines before `k`.
    head: Vec<u32>,
    /// `tail[job * machines + k]`: the job's total time on machines after `k`.
    tail: Vec<u32>,
    /// The machine pairs of LB2.
    pairs: Vec<(usize, usize)>,
    /// For each pair, every job in Johnson's order: `[pair * jobs + rank]`.
    order: Vec<PairJob>,
}

impl Bounds {
    pub(crate) fn new(instance: &Instance, pairs: Pairs) -> Bounds {
        let (n, m) = (instance.jobs(), instance.machines());
        let mut p = vec![0; n * m];
        let mut head = vec![0; n * m];
        let mut tail = vec![0; n * m];
        for j in 0..n {
            let mut before = 0;
            for k in 0..m {
                p[j * m + k] = instance.time(k, j);
                head[j * m + k] = before;
                before += instance.time(k, j);
            }
            let mut after = 0;
            for k in (0..m).rev() {
                tail[j * m + k] = after;
                after += instance.time(k, j);
            }
        }
        let pairs: Vec<(usize, usize)> = match pairs {
            Pairs::Adjacent => (1..m).map(|l| (l - 1, l)).collect(),
            Pairs::All => (0..m)
                .flat_map(|k| (k + 1..m).map(move |l| (k, l)))
                .collect(),
        };
        let mut order = Vec::with_capacity(pairs.len() * n);
        for &(k, l) in &pairs {
            let mut entries: Vec<PairJob> = (0..n)
                .map(|j| PairJob {
                    job: j as u16,
                    a: p[j * m + k] as u16,
                    b: p[j * m + l] as u16,
                    lag: (k + 1..l).map(|i| p[j * m + i]).sum::<u32>() as u16,
                })
                .collect();
            entries.sort_by_key(|e| {
                let (a, b, lag) = (u32::from(e.a), u32::from(e.b), u32::from(e.lag));
                if a <= b {
                    (0, a + lag, e.job)
                } else {
                    (1, u32::MAX - (b + lag), e.job)
                }
            });
            order.extend(entries);
        }
        Bounds {
            jobs: n,
            machines: m,
            p,
            head,
            tail,
            pairs,
            order,
        }
    }

    /// Processing times of `job` on every machine.
    #[inline]
    pub(crate) fn times(&self, job: usize) -> &[u32] {
        &self.p[job * self.machines..(job + 1) * self.machines]
    }

    /// Heads of `job`: its total time before each machine.
    #[inline]
    pub(crate) fn heads(&self, job: usize) -> &[u32] {
        &self.head[job * self.machines..(job + 1) * self.machines]
    }

    /// Tails of `job`: its total time after each machine.
    #[inline]
    pub(crate) fn tails(&self, job: usize) -> &[u32] {
        &self.tail[job * self.machines..(job + 1) * self.machines]
    }

    /// Appends `job` to a prefix whose machines finish at `front`.
    #[inline]
    pub(crate) fn advance(&self, front: &mut [u32], job: usize) {
        let times = self.times(job);
        let mut previous = 0;
        for (f, &t) in front.iter_mut().zip(times) {
            previous = (*f).max(previous) + t;
            *f = previous;
        }
    }

    /// Puts `job` in front of a suffix: `back[k]` is the time from when
    /// machine `k` starts the suffix to the end of the schedule.
    #[inline]
    pub(crate) fn advance_back(&self, back: &mut [u32], job: usize) {
        let times = self.times(job);
        let mut previous = 0;
        for (b, &t) in back.iter_mut().zip(times).rev() {
            previous = (*b).max(previous) + t;
            *b = previous;
        }
    }

    /// A lower bound of a node that fixes a prefix and a suffix of the
    /// schedule: `front[k]` is when machine `k` finishes the prefix,
    /// `back[k]` how long machine `k` needs from starting the suffix to the
    /// end of the schedule; `scheduled[j]` whether job `j` is in either;
    /// about the unscheduled jobs (at least one), `remaining[k]` is their
    /// total time on machine `k` and `min_head[k]` / `min_tail[k]` their
    /// smallest time before / after machine `k`. Returns as soon as the
    /// bound reaches `cutoff` (the node is pruned then and the exact value
    /// does not matter).
    ///
    /// Machine `k` cannot start an unscheduled job before `front[k]`, nor
    /// before the first one crossed the earlier machines,
    /// `front[0] + min_head[k]`; after its last one it still needs
    /// `back[k]`, and that job still needs `min_tail[k]` then the suffix's
    /// `back[m−1]` on the last machine.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn node_bound(
        &self,
        front: &[u32],
        back: &[u32],
        scheduled: &[bool],
        remaining: &[u32],
        min_head: &[u32],
        min_tail: &[u32],
        cutoff: u32,
    ) -> u32 {
        let m = self.machines;
        let start = |k: usize| front[k].max(front[0] + min_head[k]);
        let end = |k: usize| back[k].max(min_tail[k] + back[m - 1]);
        let mut bound = 0;
        for (k, work) in remaining.iter().enumerate() {
            bound = bound.max(start(k) + work + end(k));
        }
        if bound >= cutoff {
            return bound;
        }
        let n = self.jobs;
        for (pair, &(k, l)) in self.pairs.iter().enumerate() {
            let mut t1 = start(k);
            let mut t2 = start(l);
            for e in &self.order[pair * n..(pair + 1) * n] {
                if scheduled[usize::from(e.job)] {
                    continue;
                }
                t1 += u32::from(e.a);
                t2 = t2.max(t1 + u32::from(e.lag)) + u32::from(e.b);
            }
            bound = bound.max(t2 + end(l));
            if bound >= cutoff {
                return bound;
            }
        }
        bound
    }

    /// The bound of the node that fixes `prefix` at the start of the
    /// schedule and `suffix` at its end (slow path, for tests and reports):
    /// the same code as the search's, with its inputs computed from scratch.
    /// A complete schedule has its makespan as bound.
    pub(crate) fn partial_bound(&self, prefix: &[u16], suffix: &[u16]) -> u32 {
        let (n, m) = (self.jobs, self.machines);
        let mut front = vec![0; m];
        let mut back = vec![0; m];
        let mut scheduled = vec![false; n];
        for &j in prefix {
            self.advance(&mut front, usize::from(j));
            scheduled[usize::from(j)] = true;
        }
        for &j in suffix.iter().rev() {
            self.advance_back(&mut back, usize::from(j));
            scheduled[usize::from(j)] = true;
        }
        if scheduled.iter().all(|&s| s) {
            return (0..m).map(|k| front[k] + back[k]).max().unwrap_or(0);
        }
        let mut remaining = vec![0; m];
        let mut min_head = vec![u32::MAX; m];
        let mut min_tail = vec![u32::MAX; m];
        for j in (0..n).filter(|&j| !scheduled[j]) {
            for k in 0..m {
                remaining[k] += self.times(j)[k];
                min_head[k] = min_head[k].min(self.heads(j)[k]);
                min_tail[k] = min_tail[k].min(self.tails(j)[k]);
            }
        }
        self.node_bound(
            &front,
            &back,
            &scheduled,
            &remaining,
            &min_head,
            &min_tail,
            u32::MAX,
        )
    }
}
