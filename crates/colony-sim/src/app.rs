//! `RangeSum`, the simulator's test application: cheap, deterministic, and
//! sensitive to every mistake a runtime can make with units. The result is
//! the wrapping sum of a 64-bit hash of every `i` in `[start, end)`, so a
//! unit lost, run twice from a stale checkpoint and merged twice, or merged
//! twice, changes it — comparing with [`RangeSum::direct`] checks "every
//! piece of the range merged exactly once".

use colony_core::divisible::{AppError, AppRegistry, Divisible, Step, StepContext};
use serde::{Deserialize, Serialize};

/// Job parameters: the half-open range `[start, end)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RangeParams {
    /// First item.
    pub start: u64,
    /// One past the last item.
    pub end: u64,
}

/// The hash summed over the range (splitmix64's finaliser).
pub fn item_hash(i: u64) -> u64 {
    let mut z = i.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A unit: the items `[next, end)` still to add, and the sum of
/// `[start, next)` so far.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RangeSum {
    /// First item this unit ever covered (so a finished unit's range is
    /// `[start, end)`, for diagnostics).
    pub start: u64,
    /// Next item to add.
    pub next: u64,
    /// One past the last item of this unit.
    pub end: u64,
    /// Wrapping sum of the hashes added so far.
    pub acc: u64,
}

impl RangeSum {
    /// The fault-free answer, computed directly.
    pub fn direct(params: &RangeParams) -> u64 {
        (params.start..params.end).fold(0u64, |acc, i| acc.wrapping_add(item_hash(i)))
    }

    /// Serialised parameters for a job over `[start, end)`.
    pub fn params(start: u64, end: u64) -> Vec<u8> {
        postcard::to_stdvec(&RangeParams { start, end }).unwrap_or_default()
    }

    /// Decodes a serialised result.
    pub fn decode_output(bytes: &[u8]) -> Option<u64> {
        postcard::from_bytes(bytes).ok()
    }

    /// The range `[start, end)` a serialised unit covers.
    pub fn covered(state: &[u8]) -> Option<(u64, u64)> {
        let unit: RangeSum = postcard::from_bytes(state).ok()?;
        Some((unit.start, unit.end))
    }
}

impl Divisible for RangeSum {
    type Params = RangeParams;
    type Output = u64;
    const NAME: &'static str = "rangesum";

    fn parse_args(args: &[String]) -> Result<RangeParams, AppError> {
        let usage = || AppError::BadParams("usage: rangesum START END".into());
        let start: u64 = args
            .first()
            .and_then(|a| a.parse().ok())
            .ok_or_else(usage)?;
        let end: u64 = args.get(1).and_then(|a| a.parse().ok()).ok_or_else(usage)?;
        if end <= start {
            return Err(AppError::BadParams("END must be above START".into()));
        }
        Ok(RangeParams { start, end })
    }

    fn init(params: &RangeParams) -> Result<Self, AppError> {
        Ok(RangeSum {
            start: params.start,
            next: params.start,
            end: params.end,
            acc: 0,
        })
    }

    fn step(&mut self, ctx: &mut StepContext<'_>) -> Step<u64> {
        let stop = self.end.min(self.next.saturating_add(ctx.budget().max(1)));
        let n = stop - self.next;
        while self.next < stop {
            self.acc = self.acc.wrapping_add(item_hash(self.next));
            self.next += 1;
        }
        ctx.count(n);
        if self.next >= self.end {
            Step::Done(self.acc)
        } else {
            Step::Continue
        }
    }

    fn divide(&mut self) -> Option<Self> {
        let left = self.end - self.next;
        if left < 2 {
            return None;
        }
        let mid = self.next + left / 2;
        let part = RangeSum {
            start: mid,
            next: mid,
            end: self.end,
            acc: 0,
        };
        self.end = mid;
        Some(part)
    }

    fn merge(a: u64, b: u64) -> u64 {
        a.wrapping_add(b)
    }

    fn verify(params: &RangeParams, output: &u64) -> Option<bool> {
        Some(*output == RangeSum::direct(params))
    }
}

/// The registry every simulated peer runs: `rangesum`, plus colony-apps'
/// `nqueens` for runs that want a real application.
pub fn registry() -> AppRegistry {
    let mut registry = AppRegistry::new();
    registry.register::<RangeSum>();
    colony_apps::native_guest::register_native_guest::<colony_apps::nqueens::NQueens>(
        &mut registry,
    );
    registry
}

#[cfg(test)]
mod tests {
    use super::*;
    use colony_core::divisible::{run_sequential, SharedVars};

    #[test]
    fn divided_and_merged_equals_direct() {
        let registry = registry();
        let app = registry.get("rangesum").unwrap();
        let params = RangeSum::params(10, 1000);
        let mut shared = SharedVars::default();
        let mut a = app.init(&params).unwrap();
        let mut ctx = StepContext::new(&mut shared, 7);
        assert_eq!(a.step(&mut ctx).unwrap(), Step::Continue);
        let part = a.divide().unwrap().unwrap();
        let mut a = app.restore(&a.checkpoint().unwrap()).unwrap();
        let mut b = app.restore(&part).unwrap();
        let mut finish = |u: &mut Box<dyn colony_core::divisible::Unit>| loop {
            let mut ctx = StepContext::new(&mut shared, 13);
            if let Step::Done(out) = u.step(&mut ctx).unwrap() {
                break out;
            }
        };
        let total = app.merge(&finish(&mut a), &finish(&mut b)).unwrap();
        let direct = RangeSum::direct(&RangeParams {
            start: 10,
            end: 1000,
        });
        assert_eq!(RangeSum::decode_output(&total), Some(direct));
        assert_eq!(app.verify(&params, &total).unwrap(), Some(true));
        let (seq, work) = run_sequential(app.as_ref(), &params, 64).unwrap();
        assert_eq!(seq, total);
        assert_eq!(work, 990);
    }

    #[test]
    fn tiny_units_do_not_divide() {
        let mut u = RangeSum {
            start: 5,
            next: 5,
            end: 6,
            acc: 0,
        };
        assert!(u.divide().is_none());
    }
}
