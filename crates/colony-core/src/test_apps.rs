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

/// Where [`Panics`] panics.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum PanicAt {
    Step,
    Divide,
    Merge,
    /// In `init`, so at submission.
    Init,
    /// In `describe` and `verify`, where a result is shown.
    Describe,
}

/// A [`Sum`] whose application code panics at one place: a broken
/// application, as a volunteer may be handed one.
#[derive(Serialize, Deserialize)]
pub(crate) struct Panics {
    sum: Sum,
    at: PanicAt,
    /// Steps taken: it panics in its third step, not at once.
    steps: u32,
}

impl Panics {
    /// A unit of `1..=n` that panics at `at`.
    pub(crate) fn new(n: u64, at: PanicAt) -> Panics {
        Panics {
            sum: Sum {
                next: 1,
                end: n + 1,
                acc: 0,
            },
            at,
            steps: 0,
        }
    }
}

impl Divisible for Panics {
    type Params = (u64, PanicAt);
    type Output = (u64, PanicAt);
    const NAME: &'static str = "panics";

    fn parse_args(args: &[String]) -> Result<(u64, PanicAt), AppError> {
        let n = Sum::parse_args(&args[..args.len().min(1)])?;
        let at = match args.get(1).map(String::as_str) {
            Some("divide") => PanicAt::Divide,
            Some("merge") => PanicAt::Merge,
            Some("init") => PanicAt::Init,
            Some("describe") => PanicAt::Describe,
            _ => PanicAt::Step,
        };
        Ok((n, at))
    }

    fn init(&(n, at): &(u64, PanicAt)) -> Result<Self, AppError> {
        Sum::init(&n)?;
        if at == PanicAt::Init {
            panic!("init of a broken application");
        }
        Ok(Panics::new(n, at))
    }

    fn step(&mut self, ctx: &mut StepContext<'_>) -> Step<(u64, PanicAt)> {
        self.steps += 1;
        if self.at == PanicAt::Step && self.steps >= 3 {
            panic!("step {} of a broken application", self.steps);
        }
        match self.sum.step(ctx) {
            Step::Done(sum) => Step::Done((sum, self.at)),
            Step::Continue => Step::Continue,
        }
    }

    fn divide(&mut self) -> Option<Self> {
        if self.at == PanicAt::Divide {
            panic!("divide of a broken application");
        }
        self.sum.divide().map(|sum| Panics {
            sum,
            at: self.at,
            steps: 0,
        })
    }

    fn merge((a, at): (u64, PanicAt), (b, _): (u64, PanicAt)) -> (u64, PanicAt) {
        if at == PanicAt::Merge {
            panic!("merge of a broken application");
        }
        (a + b, at)
    }

    fn describe(_: &(u64, PanicAt), (_, at): &(u64, PanicAt)) -> String {
        if *at == PanicAt::Describe {
            panic!("describe of a broken application");
        }
        String::new()
    }

    fn verify(_: &(u64, PanicAt), (_, at): &(u64, PanicAt)) -> Option<bool> {
        if *at == PanicAt::Describe {
            panic!("verify of a broken application");
        }
        None
    }
}
