//! The simulated compute executor of one peer: the runtime's worker threads
//! (`crates/colony/src/compute.rs`) done synchronously in virtual time. Both
//! run each unit with colony-core's [`UnitRunner`], which owns the step
//! boundary; what is the simulator's own is here: every tick steps each
//! running unit once with a fixed budget and a step costs virtual time.
//! Requests from the node (divide, checkpoint, stop, shared variables) wait
//! in the unit's inbox until its next step boundary, as they do in the
//! thread's channel.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use colony_core::divisible::SharedVars;
use colony_core::job::{JobId, UnitId};
use colony_core::runner::{UnitEvent, UnitRequest, UnitRunner, UnitStart};

/// What a unit's "thread" reports.
#[derive(Debug)]
pub enum ExecEvent {
    /// For the node.
    Unit(UnitEvent),
    /// A unit is about to report `Finished`: its final state (for
    /// diagnostics).
    FinalState {
        /// The job.
        job: JobId,
        /// The unit.
        unit: UnitId,
        /// Its final state.
        state: Vec<u8>,
    },
}

struct Running {
    runner: UnitRunner,
    inbox: VecDeque<UnitRequest>,
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

    /// Restores and starts a unit (the runtime's `ComputePool::start`); a
    /// state that does not restore is the unit's `Failed` event.
    pub fn start(&mut self, now: Instant, start: UnitStart) -> Result<(), UnitEvent> {
        let key = (start.job, start.unit);
        let runner = UnitRunner::start_unit(now, start)?;
        self.units.insert(
            key,
            Running {
                runner,
                inbox: VecDeque::new(),
            },
        );
        if self.next_step_at.is_none() {
            self.next_step_at = Some(now + self.speed.step_cost);
        }
        Ok(())
    }

    /// Queues a request for a unit's next step boundary; false if it does
    /// not run here.
    pub fn request(&mut self, job: JobId, unit: UnitId, request: UnitRequest) -> bool {
        match self.units.get_mut(&(job, unit)) {
            Some(running) => {
                running.inbox.push_back(request);
                true
            }
            None => false,
        }
    }

    /// Passes shared variables to every unit of `job`.
    pub fn share(&mut self, job: JobId, vars: &SharedVars) {
        for ((j, _), running) in self.units.iter_mut() {
            if *j == job {
                running.inbox.push_back(UnitRequest::Shared(vars.clone()));
            }
        }
    }

    /// Runs one step boundary of every unit: its queued requests, then one
    /// step. Returns what the threads would have sent.
    pub fn tick(&mut self, now: Instant) -> Vec<ExecEvent> {
        let mut events = Vec::new();
        let mut ended = Vec::new();
        let mut reported = Vec::new();
        for (&(job, unit), running) in self.units.iter_mut() {
            let inbox = &mut running.inbox;
            let mut requests = std::iter::from_fn(|| inbox.pop_front());
            let stopped = running.runner.handle_requests(&mut requests, &mut reported);
            let finished = !stopped && running.runner.step(now, self.speed.budget, &mut reported);
            for event in reported.drain(..) {
                match event {
                    UnitEvent::Divided {
                        job,
                        unit,
                        part,
                        remaining,
                        shared,
                    } => events.push(ExecEvent::Unit(UnitEvent::Divided {
                        job,
                        unit,
                        part: part.filter(|_| !self.drop_parts),
                        remaining,
                        shared,
                    })),
                    finish @ UnitEvent::Finished { .. } => {
                        // The simulator's apps are native: their checkpoint
                        // cannot fail, and an empty diagnostic would show it.
                        let state = running.runner.checkpoint().unwrap_or_default();
                        events.push(ExecEvent::FinalState { job, unit, state });
                        events.push(ExecEvent::Unit(finish));
                    }
                    other => events.push(ExecEvent::Unit(other)),
                }
            }
            if stopped || finished {
                ended.push((job, unit));
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
