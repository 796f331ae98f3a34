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

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::divisible::{App, SharedVars, Step, StepContext, Unit};
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

/// What a unit (or its executor) reports to the node.
#[derive(Clone, Debug)]
pub enum UnitEvent {
    /// The unit finished with this partial result.
    Finished {
        /// The job.
        job: JobId,
        /// The unit.
        unit: UnitId,
        /// Its output.
        output: Vec<u8>,
    },
    /// Answer to a divide request.
    Divided {
        /// The job.
        job: JobId,
        /// The unit.
        unit: UnitId,
        /// The part given away, if any.
        part: Option<Vec<u8>>,
        /// The unit's own state after dividing (empty if it does not run).
        remaining: Vec<u8>,
        /// Its shared variables.
        shared: SharedVars,
    },
    /// A checkpoint: asked for, or after a step that improved a shared
    /// variable.
    Checkpointed {
        /// The job.
        job: JobId,
        /// The unit.
        unit: UnitId,
        /// Its state.
        state: Vec<u8>,
        /// Its shared variables.
        shared: SharedVars,
    },
    /// The unit stopped on request, with its last state (`None`: it was
    /// not running here).
    Stopped {
        /// The job.
        job: JobId,
        /// The unit.
        unit: UnitId,
        /// Its state.
        state: Option<Vec<u8>>,
    },
    /// Work done since the last report.
    Progress {
        /// The job.
        job: JobId,
        /// Work counted.
        work: u64,
    },
    /// The unit could not run (its state did not restore, no thread could
    /// be started for it).
    Failed {
        /// The job.
        job: JobId,
        /// The unit.
        unit: UnitId,
        /// Why.
        error: String,
    },
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
        match app.restore(state) {
            Ok(restored) => Ok(UnitRunner {
                job,
                unit_id: unit,
                unit: restored,
                shared,
                work_unreported: 0,
                last_report: now,
            }),
            Err(error) => Err(UnitEvent::Failed {
                job,
                unit,
                error: error.to_string(),
            }),
        }
    }

    /// The unit's current state.
    pub fn checkpoint(&self) -> Vec<u8> {
        self.unit.checkpoint()
    }

    /// Answers the requests that arrived since the last boundary, in
    /// order. True if the unit stopped (it must not be stepped again);
    /// requests after a stop are left in `requests`.
    pub fn handle_requests(
        &mut self,
        requests: &mut dyn Iterator<Item = UnitRequest>,
        events: &mut Vec<UnitEvent>,
    ) -> bool {
        let (job, unit) = (self.job, self.unit_id);
        for request in requests {
            match request {
                UnitRequest::Divide => {
                    let part = self.unit.divide();
                    events.push(UnitEvent::Divided {
                        job,
                        unit,
                        part,
                        remaining: self.unit.checkpoint(),
                        shared: self.shared.clone(),
                    });
                }
                UnitRequest::Checkpoint => events.push(UnitEvent::Checkpointed {
                    job,
                    unit,
                    state: self.unit.checkpoint(),
                    shared: self.shared.clone(),
                }),
                UnitRequest::Stop => {
                    events.push(UnitEvent::Progress {
                        job,
                        work: self.work_unreported,
                    });
                    events.push(UnitEvent::Stopped {
                        job,
                        unit,
                        state: Some(self.unit.checkpoint()),
                    });
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
    /// is in `events`). A step that improved a shared variable is followed
    /// at once by a checkpoint, so the improvement spreads only with the
    /// state that holds it; work is reported every [`PROGRESS_EVERY`].
    pub fn step(&mut self, now: Instant, budget: u64, events: &mut Vec<UnitEvent>) -> bool {
        let (job, unit) = (self.job, self.unit_id);
        let mut ctx = StepContext::new(&mut self.shared, budget);
        let step = self.unit.step(&mut ctx);
        let (work, improved) = (ctx.work(), ctx.improved());
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
            events.push(UnitEvent::Checkpointed {
                job,
                unit,
                state: self.unit.checkpoint(),
                shared: self.shared.clone(),
            });
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
        let state = app.init(&params).expect("init").checkpoint();
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
