//! The NEH heuristic (Nawaz, Enscore and Ham, 1983) with Taillard's (1990)
//! acceleration: the initial upper bound of the branch-and-bound.
//!
//! Jobs are taken by decreasing total processing time (ties: smaller index
//! first) and each is inserted where the partial sequence's makespan is
//! smallest (ties: earliest position). Taillard's heads and tails evaluate
//! all insertion positions of a job in `O(k·m)` for a sequence of `k`, so
//! the whole heuristic is `O(n²·m)`: milliseconds even for 500 jobs.

use std::cmp::Reverse;

use super::Instance;

/// The NEH schedule of `instance` and its makespan.
pub fn neh(instance: &Instance) -> (u32, Vec<u16>) {
    let (n, m) = (instance.jobs(), instance.machines());
    let total = |j: usize| (0..m).map(|k| instance.time(k, j)).sum::<u32>();
    let mut order: Vec<u16> = (0..n as u16).collect();
    order.sort_by_key(|&j| (Reverse(total(usize::from(j))), j));

    let p = |k: usize, j: u16| instance.time(k, usize::from(j));
    let mut sequence: Vec<u16> = Vec::with_capacity(n);
    // heads[i * m + k]: completion of sequence[i] on machine k.
    let mut heads = vec![0u32; n * m];
    // tails[i * m + k]: from the start of sequence[i] on machine k to the
    // end of the sequence; row `len` is zero.
    let mut tails = vec![0u32; (n + 1) * m];
    let mut inserted = vec![0u32; m];
    for &job in &order {
        let len = sequence.len();
        for (i, &s) in sequence.iter().enumerate() {
            for k in 0..m {
                let up = if k > 0 { heads[i * m + k - 1] } else { 0 };
                let left = if i > 0 { heads[(i - 1) * m + k] } else { 0 };
                heads[i * m + k] = up.max(left) + p(k, s);
            }
        }
        tails[len * m..(len + 1) * m].fill(0);
        for i in (0..len).rev() {
            for k in (0..m).rev() {
                let down = if k + 1 < m { tails[i * m + k + 1] } else { 0 };
                let right = tails[(i + 1) * m + k];
                tails[i * m + k] = down.max(right) + p(k, sequence[i]);
            }
        }
        let mut best = (u32::MAX, 0);
        for position in 0..=len {
            let mut makespan = 0;
            for k in 0..m {
                let up = if k > 0 { inserted[k - 1] } else { 0 };
                let left = if position > 0 {
                    heads[(position - 1) * m + k]
                } else {
                    0
                };
                inserted[k] = up.max(left) + p(k, job);
                makespan = makespan.max(inserted[k] + tails[position * m + k]);
            }
            if makespan < best.0 {
                best = (makespan, position);
            }
        }
        sequence.insert(best.1, job);
    }
    (instance.makespan(&sequence), sequence)
}
