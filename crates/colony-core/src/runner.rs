//! The step boundary of a running unit, written once for every executor:
//! the runtime's worker threads (`crates/colony/src/compute.rs`) and the
//! simulator's executor in virtual time (`crates/colony-sim/src/exec.rs`).
//!
//! A [`UnitRunner`] holds one restored unit. Its executor calls, in a loop,
//! [`UnitRunner::handle_requests`] with the requests the job core sent since
//! the last boundary (divide, checkpoint, stop, shared variables), then
//! [`UnitRunner::step`] with a budget; both push what the unit reports as
//! [`UnitEvent`]s, which the executor hands to the node
//! ([`crate::node::NodeInput::Unit`]). How budgets are chosen, where the
//! unit runs and how time passes are the executor's own.
//!
//! A unit's own code (step, divide, checkpoint) runs inside
//! [`catch_panic`], as every call through [`App`] does (restore among
//! them): a panic becomes the unit's [`UnitEvent::Failed`] with
//! the panic's message, so the job fails with a clear reason and the peer
//! keeps serving, instead of a unit thread ending without a word.

use std::any::Any;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::divisible::{App, SharedVars, Step, StepContext, Unit, UnitSpace};
use crate::job::{JobId, UnitId};

/// How often a running unit reports the work it did.
pub const PROGRESS_EVERY: Duration = Duration::from_millis(200);

/// A request to a running unit, answered at its next step boundary.
#[derive(Clone, Debug)]
pub enum UnitRequest {
    /// Give part of the remaining work away ([`UnitEvent::Divided`]).
    Divide,
    /// Report the current state ([`UnitEvent::Checkpointed`]).
    Checkpoint,
    /// Stop and hand the state back ([`UnitEvent::Stopped`]).
    Stop,
    /// Take in improved shared variables.
    Shared(SharedVars),
}

pub use crate::job::UnitEvent;

/// Runs application code `f`; a panic becomes `Err` with a sentence
/// naming `what` was running and the panic's message. (The panic hook still
/// prints the panic where the process sends its stderr.)
pub fn catch_panic<T>(what: &str, f: impl FnOnce() -> T) -> Result<T, String> {
    catch_unwind(AssertUnwindSafe(f)).map_err(|payload| {
        format!(
            "the application panicked in {what}: {}",
            panic_message(payload.as_ref())
        )
    })
}

/// The message of a panic, if it carried one.
fn panic_message(payload: &(dyn Any + Send)) -> &str {
    if let Some(text) = payload.downcast_ref::<&str>() {
        text
    } else if let Some(text) = payload.downcast_ref::<String>() {
        text
    } else {
        "(no message)"
    }
}

/// A unit to start: what the node asks an executor to run.
#[derive(Clone)]
pub struct UnitStart {
    /// The job.
    pub job: JobId,
    /// The unit.
    pub unit: UnitId,
    /// Its application.
    pub app: Arc<dyn App>,
    /// Its state.
    pub state: Vec<u8>,
    /// The job's shared variables.
    pub shared: SharedVars,
}

impl std::fmt::Debug for UnitStart {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UnitStart")
            .field("job", &self.job)
            .field("unit", &self.unit)
            .field("app", &self.app.name())
            .field("state_bytes", &self.state.len())
            .finish_non_exhaustive()
    }
}

/// One unit running on this peer, between two step boundaries.
pub struct UnitRunner {
    job: JobId,
    unit_id: UnitId,
    unit: Box<dyn Unit>,
    shared: SharedVars,
    work_unreported: u64,
    last_report: Instant,
    /// The object space the executor offers the unit, if any.
    space: Option<Box<dyn UnitSpace>>,
}

impl std::fmt::Debug for UnitRunner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UnitRunner")
            .field("job", &self.job)
            .field("unit", &self.unit_id)
            .field("work_unreported", &self.work_unreported)
            .finish_non_exhaustive()
    }
}

impl UnitRunner {
    /// Offers the unit the executor's object space ([`StepContext::space`]).
    pub fn set_space(&mut self, space: Box<dyn UnitSpace>) {
        self.space = Some(space);
    }

    /// Restores the unit `start` names; a state that does not restore is
    /// the unit's [`UnitEvent::Failed`].
    pub fn start_unit(now: Instant, start: UnitStart) -> Result<UnitRunner, UnitEvent> {
        let UnitStart {
            job,
            unit,
            app,
            state,
            shared,
        } = start;
        UnitRunner::start(now, job, unit, app.as_ref(), &state, shared)
    }

    /// Restores `unit` of `job` from `state`; a state that does not restore
    /// is the unit's [`UnitEvent::Failed`].
    pub fn start(
        now: Instant,
        job: JobId,
        unit: UnitId,
        app: &dyn App,
        state: &[u8],
        shared: SharedVars,
    ) -> Result<UnitRunner, UnitEvent> {
        let restored = app.restore(state).map_err(|error| error.to_string());
        match restored {
            Ok(restored) => Ok(UnitRunner {
                job,
                unit_id: unit,
                unit: restored,
                shared,
                work_unreported: 0,
                last_report: now,
                space: None,
            }),
            Err(error) => Err(UnitEvent::Failed { job, unit, error }),
        }
    }

    /// The unit's current state; `Err` (in words) if the application
    /// panicked or its sandbox stopped it producing it.
    pub fn checkpoint(&mut self) -> Result<Vec<u8>, String> {
        catch_panic("checkpoint", || self.unit.checkpoint())
            .and_then(|state| state.map_err(|e| e.to_string()))
    }

    /// The unit's failure after a panic in its application code: it must
    /// not run again.
    fn failed(&self, error: String) -> UnitEvent {
        UnitEvent::Failed {
            job: self.job,
            unit: self.unit_id,
            error,
        }
    }

    /// Answers the requests that arrived since the last boundary, in
    /// order. True if the unit stopped (it must not be stepped again);
    /// requests after a stop are left in `requests`. A panic in the
    /// application is the unit's [`UnitEvent::Failed`], and stops it.
    pub fn handle_requests(
        &mut self,
        requests: &mut dyn Iterator<Item = UnitRequest>,
        events: &mut Vec<UnitEvent>,
    ) -> bool {
        let (job, unit) = (self.job, self.unit_id);
        for request in requests {
            match request {
                UnitRequest::Divide => {
                    let divided = catch_panic("divide", || {
                        let part = self.unit.divide()?;
                        Ok((part, self.unit.checkpoint()?))
                    })
                    .and_then(
                        |divided: Result<_, crate::divisible::AppError>| {
                            divided.map_err(|e| e.to_string())
                        },
                    );
                    let (part, remaining) = match divided {
                        Ok(divided) => divided,
                        Err(error) => {
                            events.push(self.failed(error));
                            return true;
                        }
                    };
                    events.push(UnitEvent::Divided {
                        job,
                        unit,
                        part,
                        remaining,
                        shared: self.shared.clone(),
                    });
                }
                UnitRequest::Checkpoint => match self.checkpoint() {
                    Ok(state) => events.push(UnitEvent::Checkpointed {
                        job,
                        unit,
                        state,
                        shared: self.shared.clone(),
                    }),
                    Err(error) => {
                        events.push(self.failed(error));
                        return true;
                    }
                },
                UnitRequest::Stop => {
                    events.push(UnitEvent::Progress {
                        job,
                        work: self.work_unreported,
                    });
                    match self.checkpoint() {
                        Ok(state) => events.push(UnitEvent::Stopped {
                            job,
                            unit,
                            state: Some(state),
                        }),
                        Err(error) => events.push(self.failed(error)),
                    }
                    return true;
                }
                UnitRequest::Shared(vars) => {
                    self.shared.merge(&vars);
                }
            }
        }
        false
    }

    /// Runs one step with `budget`; true if the unit finished (its result
    /// is in `events`) or failed (a panic in the application: its
    /// [`UnitEvent::Failed`] is in `events`; it must not run again). A
    /// step that improved a shared variable is followed at once by a
    /// checkpoint, so the improvement spreads only with the state that
    /// holds it; work is reported every [`PROGRESS_EVERY`].
    pub fn step(&mut self, now: Instant, budget: u64, events: &mut Vec<UnitEvent>) -> bool {
        let (job, unit) = (self.job, self.unit_id);
        let stepped = catch_panic("step", || {
            let mut ctx = StepContext::new(&mut self.shared, budget);
            if let Some(space) = self.space.as_deref_mut() {
                ctx = ctx.with_space(space);
            }
            let step = self.unit.step(&mut ctx);
            step.map(|step| (step, ctx.work(), ctx.improved()))
        })
        .and_then(|stepped| stepped.map_err(|e| e.to_string()));
        let (step, work, improved) = match stepped {
            Ok(stepped) => stepped,
            Err(error) => {
                events.push(self.failed(error));
                return true;
            }
        };
        self.work_unreported += work;
        if let Step::Done(output) = step {
            events.push(UnitEvent::Progress {
                job,
                work: self.work_unreported,
            });
            events.push(UnitEvent::Finished { job, unit, output });
            return true;
        }
        if improved {
            match self.checkpoint() {
                Ok(state) => events.push(UnitEvent::Checkpointed {
                    job,
                    unit,
                    state,
                    shared: self.shared.clone(),
                }),
                Err(error) => {
                    events.push(self.failed(error));
                    return true;
                }
            }
        }
        if now.saturating_duration_since(self.last_report) >= PROGRESS_EVERY {
            events.push(UnitEvent::Progress {
                job,
                work: self.work_unreported,
            });
            self.work_unreported = 0;
            self.last_report = now;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::divisible::AppRegistry;

    fn registry() -> AppRegistry {
        let mut registry = AppRegistry::new();
        registry.register::<crate::test_apps::Sum>();
        registry
    }

    fn runner(now: Instant) -> UnitRunner {
        let registry = registry();
        let app = registry.get("sum").expect("test app");
        let params = app.parse_args(&["1000".into()]).expect("args");
        let state = app
            .init(&params)
            .expect("init")
            .checkpoint()
            .expect("state");
        UnitRunner::start(
            now,
            JobId([1; 16]),
            0,
            app.as_ref(),
            &state,
            SharedVars::default(),
        )
        .expect("restores")
    }

    #[test]
    fn a_state_that_does_not_restore_fails_the_unit() {
        let registry = registry();
        let app = registry.get("sum").expect("test app");
        let failed = UnitRunner::start(
            Instant::now(),
            JobId([1; 16]),
            3,
            app.as_ref(),
            b"\xff\xff\xff",
            SharedVars::default(),
        );
        assert!(matches!(failed, Err(UnitEvent::Failed { unit: 3, .. })));
    }

    #[test]
    fn steps_to_the_end_and_answers_requests_at_boundaries() {
        let now = Instant::now();
        let mut r = runner(now);
        let mut events = Vec::new();
        let mut requests = vec![UnitRequest::Checkpoint, UnitRequest::Divide].into_iter();
        assert!(!r.handle_requests(&mut requests, &mut events));
        assert!(matches!(events[0], UnitEvent::Checkpointed { .. }));
        assert!(matches!(events[1], UnitEvent::Divided { .. }));
        events.clear();
        let mut finished = false;
        for _ in 0..10_000 {
            if r.step(now, 64, &mut events) {
                finished = true;
                break;
            }
        }
        assert!(finished, "the unit never finished");
        assert!(matches!(events.last(), Some(UnitEvent::Finished { .. })));
    }

    fn panicking(now: Instant, at: &str) -> UnitRunner {
        let mut registry = AppRegistry::new();
        registry.register::<crate::test_apps::Panics>();
        let app = registry.get("panics").expect("test app");
        let params = app
            .parse_args(&["1000000".into(), at.into()])
            .expect("args");
        let state = app
            .init(&params)
            .expect("init")
            .checkpoint()
            .expect("state");
        UnitRunner::start(
            now,
            JobId([2; 16]),
            5,
            app.as_ref(),
            &state,
            SharedVars::default(),
        )
        .expect("restores")
    }

    #[test]
    fn a_panic_in_a_step_is_the_units_failure_with_its_message() {
        let now = Instant::now();
        let mut r = panicking(now, "step");
        let mut events = Vec::new();
        let mut ended = false;
        for _ in 0..10 {
            if r.step(now, 64, &mut events) {
                ended = true;
                break;
            }
        }
        assert!(ended, "the runner reports the unit ended");
        match events.last() {
            Some(UnitEvent::Failed { job, unit, error }) => {
                assert_eq!((*job, *unit), (JobId([2; 16]), 5));
                assert!(
                    error.contains("panicked in step")
                        && error.contains("step 3 of a broken application"),
                    "{error}"
                );
            }
            other => panic!("expected Failed, got {other:?}"),
        }
    }

    #[test]
    fn a_panic_in_a_divide_is_the_units_failure_and_stops_it() {
        let now = Instant::now();
        let mut r = panicking(now, "divide");
        let mut events = Vec::new();
        assert!(!r.step(now, 64, &mut events));
        events.clear();
        let mut requests = vec![UnitRequest::Divide, UnitRequest::Checkpoint].into_iter();
        assert!(r.handle_requests(&mut requests, &mut events), "stopped");
        assert_eq!(events.len(), 1, "{events:?}");
        assert!(
            matches!(&events[0], UnitEvent::Failed { error, .. } if error.contains("panicked in divide: divide of a broken application")),
            "{events:?}"
        );
    }

    #[test]
    fn stop_hands_the_state_back_and_leaves_later_requests() {
        let now = Instant::now();
        let mut r = runner(now);
        let mut events = Vec::new();
        let mut requests = vec![UnitRequest::Stop, UnitRequest::Checkpoint].into_iter();
        assert!(r.handle_requests(&mut requests, &mut events));
        assert!(matches!(
            events.last(),
            Some(UnitEvent::Stopped { state: Some(_), .. })
        ));
        assert_eq!(requests.count(), 1);
    }
}
