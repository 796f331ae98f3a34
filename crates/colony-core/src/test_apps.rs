//! Small applications for the cores' own tests.

use serde::{Deserialize, Serialize};

use crate::divisible::{AppError, Divisible, Step, StepContext};

/// Sums 1..=n; divides its remaining range in halves.
#[derive(Serialize, Deserialize)]
pub(crate) struct Sum {
    next: u64,
    end: u64,
    acc: u64,
}

impl Divisible for Sum {
    type Params = u64;
    type Output = u64;
    const NAME: &'static str = "sum";

    fn parse_args(args: &[String]) -> Result<u64, AppError> {
        let n: u64 = args
            .first()
            .and_then(|a| a.parse().ok())
            .ok_or_else(|| AppError::BadParams("usage: sum N".into()))?;
        if n == 0 {
            return Err(AppError::BadParams("N must be at least 1".into()));
        }
        Ok(n)
    }

    fn init(n: &u64) -> Result<Self, AppError> {
        if *n == 0 {
            return Err(AppError::BadParams("N must be at least 1".into()));
        }
        Ok(Sum {
            next: 1,
            end: n + 1,
            acc: 0,
        })
    }

    fn step(&mut self, ctx: &mut StepContext<'_>) -> Step<u64> {
        let stop = self.end.min(self.next + ctx.budget());
        while self.next < stop {
            self.acc += self.next;
            self.next += 1;
            ctx.count(1);
        }
        if self.next == self.end {
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
        let part = Sum {
            next: mid,
            end: self.end,
            acc: 0,
        };
        self.end = mid;
        Some(part)
    }

    fn merge(a: u64, b: u64) -> u64 {
        a + b
    }

    fn verify(n: &u64, output: &u64) -> Option<bool> {
        Some(*output == n * (n + 1) / 2)
    }
}
