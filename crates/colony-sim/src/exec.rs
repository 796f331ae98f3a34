//! The simulated compute executor of one peer: what `crates/colony/src/
//! compute.rs` does with one OS thread per unit, done synchronously in
//! virtual time. Every tick steps each running unit once with a budget; a
//! step costs virtual time, so computing takes time. Requests from the job
//! core (divide, checkpoint, stop, shared variables) wait in the unit's
//! inbox until its next step boundary, as they do in the thread's channel,
//! and the answers come out as [`ExecEvent`]s for the driver to hand to the
//! job core.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use colony_core::divisible::{App, SharedVars, Step, StepContext, Unit};
use colony_core::job::{JobId, UnitId};

/// How often a unit reports the work it did (the thread's `PROGRESS_EVERY`).
const PROGRESS_EVERY: Duration = Duration::from_millis(200);

/// What a unit's "thread" tells the driver (the runtime's `ComputeEvent`).
#[derive(Debug)]
pub enum ExecEvent {
    /// The unit finished with this partial result.
    Finished {
        /// The job.
        job: JobId,
        /// The unit.
        unit: UnitId,
        /// Its output.
        output: Vec<u8>,
        /// Its final state (for diagnostics).
        state: Vec<u8>,
    },
    /// Answer to a divide request.
    Divided {
        /// The job.
        job: JobId,
        /// The unit.
        unit: UnitId,
        /// The part given away, if any.
        part: Option<Vec<u8>>,
        /// The unit's own state after dividing.
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
    /// The unit stopped on request, with its last state.
    Stopped {
        /// The job.
        job: JobId,
        /// The unit.
        unit: UnitId,
        /// Its state.
        state: Vec<u8>,
    },
    /// Work done since the last report.
    Progress {
        /// The job.
        job: JobId,
        /// Work counted.
        work: u64,
    },
}

/// A request to a running unit (the thread's `Control`).
#[derive(Clone, Debug)]
enum Control {
    Divide,
    Checkpoint,
    Stop,
    Shared(SharedVars),
}

struct Running {
    unit: Box<dyn Unit>,
    shared: SharedVars,
    inbox: VecDeque<Control>,
    work_unreported: u64,
    last_report: Instant,
}

/// How a simulated peer computes: items per step and virtual cost of a step.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ExecSpeed {
    /// Budget handed to each step.
    pub budget: u64,
    /// Virtual time one step takes.
    pub step_cost: Duration,
}

/// The running units of one simulated peer.
pub struct Executor {
    speed: ExecSpeed,
    units: BTreeMap<(JobId, UnitId), Running>,
    next_step_at: Option<Instant>,
    /// Whether a deliberately broken executor drops divided parts.
    drop_parts: bool,
}

impl Executor {
    /// An idle executor.
    pub fn new(speed: ExecSpeed, drop_parts: bool) -> Self {
        Executor {
            speed,
            units: BTreeMap::new(),
            next_step_at: None,
            drop_parts,
        }
    }

    /// When the next step is due, if anything runs.
    pub fn next_step_at(&self) -> Option<Instant> {
        self.next_step_at
    }

    /// Units held.
    pub fn len(&self) -> usize {
        self.units.len()
    }

    /// Whether no unit is held.
    pub fn is_empty(&self) -> bool {
        self.units.is_empty()
    }

    /// Restores and starts a unit (the runtime's `ComputePool::start`).
    pub fn start(
        &mut self,
        now: Instant,
        job: JobId,
        unit: UnitId,
        app: &Arc<dyn App>,
        state: &[u8],
        shared: SharedVars,
    ) -> Result<(), String> {
        let restored = app.restore(state).map_err(|e| e.to_string())?;
        self.units.insert(
            (job, unit),
            Running {
                unit: restored,
                shared,
                inbox: VecDeque::new(),
                work_unreported: 0,
                last_report: now,
            },
        );
        if self.next_step_at.is_none() {
            self.next_step_at = Some(now + self.speed.step_cost);
        }
        Ok(())
    }

    fn control(&mut self, job: JobId, unit: UnitId, message: Control) -> bool {
        match self.units.get_mut(&(job, unit)) {
            Some(running) => {
                running.inbox.push_back(message);
                true
            }
            None => false,
        }
    }

    /// Asks a unit to divide; false if it does not run here.
    pub fn divide(&mut self, job: JobId, unit: UnitId) -> bool {
        self.control(job, unit, Control::Divide)
    }

    /// Asks a unit for a checkpoint; false if it does not run here.
    pub fn checkpoint(&mut self, job: JobId, unit: UnitId) -> bool {
        self.control(job, unit, Control::Checkpoint)
    }

    /// Asks a unit to stop; false if it does not run here.
    pub fn stop(&mut self, job: JobId, unit: UnitId) -> bool {
        self.control(job, unit, Control::Stop)
    }

    /// Passes shared variables to every unit of `job`.
    pub fn share(&mut self, job: JobId, vars: &SharedVars) {
        for ((j, _), running) in self.units.iter_mut() {
            if *j == job {
                running.inbox.push_back(Control::Shared(vars.clone()));
            }
        }
    }

    /// Runs one step boundary of every unit: its queued requests, then one
    /// step. Returns what the threads would have sent.
    pub fn tick(&mut self, now: Instant) -> Vec<ExecEvent> {
        let mut events = Vec::new();
        let mut ended = Vec::new();
        for (&(job, unit), running) in self.units.iter_mut() {
            let mut stopped = false;
            while let Some(message) = running.inbox.pop_front() {
                match message {
                    Control::Divide => {
                        let mut part = running.unit.divide();
                        if self.drop_parts {
                            part = None;
                        }
                        events.push(ExecEvent::Divided {
                            job,
                            unit,
                            part,
                            remaining: running.unit.checkpoint(),
                            shared: running.shared.clone(),
                        });
                    }
                    Control::Checkpoint => events.push(ExecEvent::Checkpointed {
                        job,
                        unit,
                        state: running.unit.checkpoint(),
                        shared: running.shared.clone(),
                    }),
                    Control::Stop => {
                        events.push(ExecEvent::Progress {
                            job,
                            work: running.work_unreported,
                        });
                        events.push(ExecEvent::Stopped {
                            job,
                            unit,
                            state: running.unit.checkpoint(),
                        });
                        stopped = true;
                        break;
                    }
                    Control::Shared(vars) => {
                        running.shared.merge(&vars);
                    }
                }
            }
            if stopped {
                ended.push((job, unit));
                continue;
            }
            let mut ctx = StepContext::new(&mut running.shared, self.speed.budget);
            let step = running.unit.step(&mut ctx);
            let (work, improved) = (ctx.work(), ctx.improved());
            running.work_unreported += work;
            if let Step::Done(output) = step {
                events.push(ExecEvent::Progress {
                    job,
                    work: running.work_unreported,
                });
                events.push(ExecEvent::Finished {
                    job,
                    unit,
                    output,
                    state: running.unit.checkpoint(),
                });
                ended.push((job, unit));
                continue;
            }
            if improved {
                events.push(ExecEvent::Checkpointed {
                    job,
                    unit,
                    state: running.unit.checkpoint(),
                    shared: running.shared.clone(),
                });
            }
            if now.saturating_duration_since(running.last_report) >= PROGRESS_EVERY {
                events.push(ExecEvent::Progress {
                    job,
                    work: running.work_unreported,
                });
                running.work_unreported = 0;
                running.last_report = now;
            }
        }
        for key in ended {
            self.units.remove(&key);
        }
        self.next_step_at = if self.units.is_empty() {
            None
        } else {
            Some(now + self.speed.step_cost)
        };
        events
    }
}
