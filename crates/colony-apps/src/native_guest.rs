//! Applications written once, against the WebAssembly guest SDK
//! ([`colony_guest::Divisible`]), run natively: [`NativeGuest`] is the
//! [`App`] of a guest type compiled into this binary, with the semantics
//! of a native application registered with [`AppRegistry::register`] —
//! parameters validated at submission, states and results in the guest's
//! [`codec`](colony_guest::codec) encoding, every undecodable input an
//! [`AppError::Corrupt`], every panic of application code an
//! [`AppError::Panicked`] naming the call.
//!
//! The same type built for `wasm32` (with `export_divisible!`) is the
//! sandboxed module: a peer running it natively and one running its module
//! exchange the same bytes.
//!
//! ```
//! use colony_apps::native_guest::register_native_guest;
//! use colony_core::divisible::{run_sequential, AppRegistry};
//!
//! let mut registry = AppRegistry::new();
//! register_native_guest::<colony_apps::nqueens::NQueens>(&mut registry);
//! let app = registry.get("nqueens").unwrap();
//! let params = app.parse_args(&["8".to_string()]).unwrap();
//! let (output, _) = run_sequential(app.as_ref(), &params, 1000).unwrap();
//! assert_eq!(app.output_json(&output).unwrap(), 92);
//! ```

use std::marker::PhantomData;
use std::sync::Arc;

use colony_core::divisible::{App, AppError, AppRegistry, SharedVars, Step, StepContext, Unit};
use colony_core::runner::catch_panic;
use colony_guest::codec::{Decode, Encode};
use colony_guest::Divisible;

/// The bytes of `value` in the guest encoding: what a [`NativeGuest`]
/// application's parameters, states and results are.
pub fn encode<T: Encode + ?Sized>(value: &T) -> Vec<u8> {
    colony_guest::codec::encode(value)
}

/// Decodes `bytes` in the guest encoding; an error is
/// [`AppError::Corrupt`] about `what` (`"job parameters"`, `"work unit"`,
/// `"partial result"`, `"result"`).
pub fn decode<T: Decode>(bytes: &[u8], what: &str) -> Result<T, AppError> {
    colony_guest::codec::decode(bytes).map_err(|e| AppError::Corrupt {
        what: what.to_string(),
        reason: e.to_string(),
    })
}

/// Runs application code, turning a panic into [`AppError::Panicked`], as
/// native applications' calls are.
fn guarded<T>(what: &str, f: impl FnOnce() -> Result<T, AppError>) -> Result<T, AppError> {
    catch_panic(what, f).unwrap_or_else(|message| Err(AppError::Panicked(message)))
}

/// The job parameters of `A` from bytes.
fn params_of<A: Divisible>(bytes: &[u8]) -> Result<A::Params, AppError> {
    decode(bytes, "job parameters")
}

/// A guest application `A` run natively, as a type-erased [`App`].
pub struct NativeGuest<A>(PhantomData<fn() -> A>);

impl<A> NativeGuest<A> {
    /// The application.
    pub fn new() -> Self {
        NativeGuest(PhantomData)
    }
}

impl<A> Default for NativeGuest<A> {
    fn default() -> Self {
        NativeGuest::new()
    }
}

/// Registers the guest application `A`, run natively, under its name.
pub fn register_native_guest<A: Divisible + Send + 'static>(registry: &mut AppRegistry) {
    registry.register_app(A::NAME, Arc::new(NativeGuest::<A>::new()));
}

/// A unit of a guest application run natively: its live state.
pub struct NativeGuestUnit<A>(A);

impl<A: Divisible + Send> Unit for NativeGuestUnit<A> {
    fn step(&mut self, ctx: &mut StepContext<'_>) -> Result<Step<Vec<u8>>, AppError> {
        let shared = ctx.vars().to_guest();
        let mut guest_ctx = colony_guest::StepContext::new(ctx.budget(), shared);
        let step = guarded("step", || Ok(self.0.step(&mut guest_ctx)))?;
        ctx.count(guest_ctx.work());
        // A variable changed only if an offer improved it.
        if guest_ctx.improved() {
            ctx.offer_guest(guest_ctx.into_shared());
        }
        Ok(match step {
            colony_guest::Step::Continue => Step::Continue,
            colony_guest::Step::Done(output) => Step::Done(encode(&output)),
        })
    }

    fn divide(&mut self) -> Result<Option<Vec<u8>>, AppError> {
        guarded("divide", || Ok(self.0.divide().map(|part| encode(&part))))
    }

    fn checkpoint(&mut self) -> Result<Vec<u8>, AppError> {
        guarded("checkpoint", || Ok(encode(&self.0)))
    }
}

impl<A: Divisible + Send + 'static> App for NativeGuest<A> {
    fn name(&self) -> &str {
        A::NAME
    }

    fn parse_args(&self, args: &[String]) -> Result<Vec<u8>, AppError> {
        guarded("parse_args", || {
            let params = A::parse_args(args).map_err(AppError::BadParams)?;
            // Validate eagerly so a bad job fails at submission.
            A::init(&params).map_err(AppError::BadParams)?;
            Ok(encode(&params))
        })
    }

    fn init(&self, params: &[u8]) -> Result<Box<dyn Unit>, AppError> {
        guarded("init", || {
            let params = params_of::<A>(params)?;
            let unit = A::init(&params).map_err(AppError::BadParams)?;
            Ok(Box::new(NativeGuestUnit(unit)) as Box<dyn Unit>)
        })
    }

    fn restore(&self, state: &[u8]) -> Result<Box<dyn Unit>, AppError> {
        guarded("restore", || {
            let unit: A = decode(state, "work unit")?;
            unit.validate().map_err(|reason| AppError::Corrupt {
                what: "work unit".into(),
                reason,
            })?;
            Ok(Box::new(NativeGuestUnit(unit)) as Box<dyn Unit>)
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
            Ok(SharedVars::from_guest(A::initial_shared(&params_of::<A>(
                params,
            )?)))
        })
    }

    fn verify(&self, params: &[u8], output: &[u8]) -> Result<Option<bool>, AppError> {
        guarded("verify", || {
            let params = params_of::<A>(params)?;
            let output: A::Output = decode(output, "result")?;
            Ok(A::verify(&params, &output))
        })
    }

    fn describe(&self, params: &[u8], output: &[u8]) -> Result<String, AppError> {
        guarded("describe", || {
            let params = params_of::<A>(params)?;
            let output: A::Output = decode(output, "result")?;
            Ok(A::describe(&params, &output))
        })
    }

    fn output_json(&self, output: &[u8]) -> Result<serde_json::Value, AppError> {
        guarded("output_json", || {
            let output: A::Output = decode(output, "result")?;
            let text = A::output_json(&output);
            serde_json::from_str(&text).map_err(|e| {
                AppError::Guest(format!(
                    "output_json answered something that is not JSON: {e}"
                ))
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use colony_core::divisible::run_sequential;
    use colony_guest::{codec_struct, SharedVar};

    /// Sums 1..=n in ranges, offering its partial sums to a shared maximum
    /// and its range starts to a shared minimum; panics where told to.
    struct Sum {
        next: u64,
        end: u64,
        acc: u64,
        panic_at: u8,
    }
    codec_struct!(Sum {
        next,
        end,
        acc,
        panic_at
    });

    /// Where [`Sum`] panics.
    const NOWHERE: u8 = 0;
    const STEP: u8 = 1;
    const DESCRIBE: u8 = 2;
    const VALIDATE: u8 = 3;

    impl Divisible for Sum {
        /// n, and where to panic.
        type Params = (u64, u8);
        type Output = u64;
        const NAME: &'static str = "sum";

        fn parse_args(args: &[String]) -> Result<(u64, u8), String> {
            let n = args
                .first()
                .and_then(|n| n.parse().ok())
                .ok_or_else(|| "usage: sum N [step|describe|validate|init]".to_string())?;
            let at = match args.get(1).map(String::as_str) {
                None => NOWHERE,
                Some("step") => STEP,
                Some("describe") => DESCRIBE,
                Some("validate") => VALIDATE,
                Some("init") => 9,
                Some(other) => return Err(format!("no place {other:?}")),
            };
            Ok((n, at))
        }

        fn init(&(n, at): &(u64, u8)) -> Result<Sum, String> {
            assert!(at != 9, "init of a broken application");
            if n == 0 {
                return Err("N must be at least 1".into());
            }
            Ok(Sum {
                next: 1,
                end: n + 1,
                acc: 0,
                panic_at: at,
            })
        }

        fn validate(&self) -> Result<(), String> {
            assert!(
                self.panic_at != VALIDATE,
                "validate of a broken application"
            );
            if self.next > self.end {
                return Err(format!("next {} past end {}", self.next, self.end));
            }
            Ok(())
        }

        fn step(&mut self, ctx: &mut colony_guest::StepContext) -> colony_guest::Step<u64> {
            assert!(self.panic_at != STEP, "step of a broken application");
            ctx.offer_min("start", self.next as i64);
            let stop = self.end.min(self.next + ctx.budget());
            while self.next < stop {
                self.acc += self.next;
                self.next += 1;
                ctx.count(1);
            }
            ctx.offer_max("partial", self.acc as i64);
            if self.next == self.end {
                colony_guest::Step::Done(self.acc)
            } else {
                colony_guest::Step::Continue
            }
        }

        fn divide(&mut self) -> Option<Sum> {
            let left = self.end - self.next;
            if left < 2 {
                return None;
            }
            let mid = self.next + left / 2;
            let part = Sum {
                next: mid,
                end: self.end,
                acc: 0,
                panic_at: self.panic_at,
            };
            self.end = mid;
            Some(part)
        }

        fn merge(a: u64, b: u64) -> u64 {
            a + b
        }

        fn initial_shared(&(n, _): &(u64, u8)) -> Vec<SharedVar> {
            vec![SharedVar {
                name: "start".into(),
                kind: colony_guest::Monotone::Min,
                value: n as i64 + 1,
            }]
        }

        fn verify(&(n, _): &(u64, u8), sum: &u64) -> Option<bool> {
            Some(*sum == n * (n + 1) / 2)
        }

        fn describe(&(n, at): &(u64, u8), sum: &u64) -> String {
            assert!(at != DESCRIBE, "describe of a broken application");
            format!("1 + … + {n} = {sum}")
        }

        fn output_json(sum: &u64) -> String {
            if *sum == 7 {
                "not json".into()
            } else {
                sum.to_string()
            }
        }
    }

    fn app() -> Arc<dyn App> {
        let mut registry = AppRegistry::new();
        register_native_guest::<Sum>(&mut registry);
        registry.get("sum").expect("registered")
    }

    fn args(text: &str) -> Vec<String> {
        text.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn units_divide_checkpoint_restore_and_merge() {
        let app = app();
        assert_eq!(app.name(), "sum");
        let params = app.parse_args(&args("1000")).expect("valid");
        assert_eq!(params, encode(&(1000u64, NOWHERE)));
        let mut shared = app.initial_shared(&params).expect("shared");
        assert_eq!(shared.get("start"), Some(1001));
        let mut first = app.init(&params).expect("init");
        let mut ctx = StepContext::new(&mut shared, 10);
        assert_eq!(first.step(&mut ctx), Ok(Step::Continue));
        assert_eq!(ctx.work(), 10);
        // Both offers reached the runtime's variables, with their kinds.
        assert!(ctx.improved());
        assert_eq!(shared.get("start"), Some(1));
        assert_eq!(shared.get("partial"), Some(55));
        let part = first.divide().expect("divides").expect("a part");
        let mut first = app
            .restore(&first.checkpoint().expect("checkpoint"))
            .expect("restores");
        let mut second = app.restore(&part).expect("restores");
        let finish = |unit: &mut Box<dyn Unit>, shared: &mut SharedVars| loop {
            let mut ctx = StepContext::new(shared, 64);
            if let Ok(Step::Done(out)) = unit.step(&mut ctx) {
                break out;
            }
        };
        let a = finish(&mut first, &mut shared);
        let b = finish(&mut second, &mut shared);
        let total = app.merge(&a, &b).expect("merges");
        assert_eq!(total, encode(&500_500u64));
        assert_eq!(app.verify(&params, &total), Ok(Some(true)));
        assert_eq!(
            app.describe(&params, &total).as_deref(),
            Ok("1 + … + 1000 = 500500")
        );
        assert_eq!(app.output_json(&total), Ok(serde_json::json!(500_500)));
        let (sequential, work) = run_sequential(app.as_ref(), &params, 100).expect("runs");
        assert_eq!(sequential, total);
        assert_eq!(work, 1000);
    }

    #[test]
    fn a_step_that_improves_nothing_changes_nothing() {
        let app = app();
        let params = app.parse_args(&args("100")).expect("valid");
        let mut unit = app.init(&params).expect("init");
        let mut shared = SharedVars::default();
        shared.offer("start", colony_core::divisible::Monotone::Min, -5);
        shared.offer("partial", colony_core::divisible::Monotone::Max, i64::MAX);
        let before = shared.clone();
        let mut ctx = StepContext::new(&mut shared, 10);
        assert_eq!(unit.step(&mut ctx), Ok(Step::Continue));
        assert!(!ctx.improved());
        assert_eq!(shared, before);
    }

    #[test]
    fn bad_params_and_corrupt_bytes_are_the_native_errors() {
        let app = app();
        for bad in ["", "0", "x", "5 nowhere"] {
            assert!(
                matches!(app.parse_args(&args(bad)), Err(AppError::BadParams(_))),
                "{bad:?}"
            );
        }
        assert_eq!(
            app.parse_args(&args("0")),
            Err(AppError::BadParams("N must be at least 1".into()))
        );
        assert!(matches!(
            app.init(&encode(&(0u64, NOWHERE))),
            Err(AppError::BadParams(_))
        ));
        let corrupt = |result: Result<(), AppError>| match result {
            Err(AppError::Corrupt { what, .. }) => what,
            other => panic!("{other:?}"),
        };
        let params = encode(&(10u64, NOWHERE));
        let output = encode(&55u64);
        let short = [1u8, 2, 3];
        assert_eq!(corrupt(app.init(&short).map(drop)), "job parameters");
        assert_eq!(
            corrupt(app.initial_shared(&short).map(drop)),
            "job parameters"
        );
        assert_eq!(
            corrupt(app.verify(&short, &output).map(drop)),
            "job parameters"
        );
        assert_eq!(
            corrupt(app.describe(&short, &output).map(drop)),
            "job parameters"
        );
        assert_eq!(corrupt(app.verify(&params, &short).map(drop)), "result");
        assert_eq!(corrupt(app.describe(&params, &short).map(drop)), "result");
        assert_eq!(corrupt(app.output_json(&short).map(drop)), "result");
        assert_eq!(
            corrupt(app.merge(&output, &short).map(drop)),
            "partial result"
        );
        assert_eq!(
            corrupt(app.merge(&short, &output).map(drop)),
            "partial result"
        );
        assert_eq!(corrupt(app.restore(&short).map(drop)), "work unit");
        // Decodes, but fails the application's own check.
        let invalid = encode(&(9u64, 3u64, 0u64, NOWHERE));
        match app.restore(&invalid).map(drop) {
            Err(AppError::Corrupt { what, reason }) => {
                assert_eq!(what, "work unit");
                assert_eq!(reason, "next 9 past end 3");
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            app.output_json(&encode(&7u64)),
            Err(AppError::Guest(_))
        ));
    }

    #[test]
    fn a_panic_is_an_error_naming_the_call() {
        let app = app();
        let panicked = |result: Result<(), AppError>, what: &str| match result {
            Err(AppError::Panicked(message)) => {
                assert!(message.contains(what), "{message}");
                assert!(message.contains("of a broken application"), "{message}");
            }
            other => panic!("{what}: {other:?}"),
        };
        panicked(app.parse_args(&args("5 init")).map(drop), "parse_args");
        let params = app.parse_args(&args("5 step")).expect("valid");
        let mut unit = app.init(&params).expect("init");
        let mut shared = SharedVars::default();
        panicked(
            unit.step(&mut StepContext::new(&mut shared, 10)).map(drop),
            "step",
        );
        let params = app.parse_args(&args("5 describe")).expect("valid");
        let (output, _) = run_sequential(app.as_ref(), &params, 10).expect("runs");
        panicked(app.describe(&params, &output).map(drop), "describe");
        assert_eq!(app.verify(&params, &output), Ok(Some(true)));
        let state = encode(&(1u64, 6u64, 0u64, VALIDATE));
        panicked(app.restore(&state).map(drop), "restore");
    }
}
