//! Worker threads that run units of work: one OS thread per running unit,
//! at most `cores` of them plus one unit a primary pushed to restart it at
//! once (the job core enforces it), each at the lowest
//! OS priority (`nice 19`) so a volunteer's own work comes first. A thread
//! steps its unit in slices of a few milliseconds and, between slices,
//! answers divide, checkpoint and stop requests and takes in
//! shared-variable updates. A slice that improved a shared variable is
//! followed at once by a checkpoint, so the improvement spreads only with
//! the state that holds it.

use std::collections::HashMap;
use std::sync::mpsc as std_mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use colony_core::divisible::{App, SharedVars, Step, StepContext};
use colony_core::job::{JobId, UnitId};
use tokio::sync::mpsc;
use tracing::{debug, warn};

/// Target duration of one step, so divide requests are answered promptly.
const STEP_TARGET: Duration = Duration::from_millis(4);
/// How often a thread reports the work it did.
const PROGRESS_EVERY: Duration = Duration::from_millis(200);

/// What a worker thread reports to the driver.
pub(crate) enum ComputeEvent {
    Finished {
        job: JobId,
        unit: UnitId,
        output: Vec<u8>,
    },
    Divided {
        job: JobId,
        unit: UnitId,
        part: Option<Vec<u8>>,
        remaining: Vec<u8>,
        shared: SharedVars,
    },
    Checkpointed {
        job: JobId,
        unit: UnitId,
        state: Vec<u8>,
        shared: SharedVars,
    },
    Stopped {
        job: JobId,
        unit: UnitId,
        state: Vec<u8>,
    },
    Progress {
        job: JobId,
        work: u64,
    },
    Failed {
        job: JobId,
        unit: UnitId,
        error: String,
    },
}

enum Control {
    Divide,
    Checkpoint,
    Stop,
    Shared(SharedVars),
}

/// The running units of this peer.
pub(crate) struct ComputePool {
    events: mpsc::Sender<ComputeEvent>,
    units: HashMap<(JobId, UnitId), std_mpsc::Sender<Control>>,
}

impl ComputePool {
    pub(crate) fn new(events: mpsc::Sender<ComputeEvent>) -> Self {
        ComputePool {
            events,
            units: HashMap::new(),
        }
    }

    /// Starts a thread for `unit` from its serialised `state`.
    pub(crate) fn start(
        &mut self,
        job: JobId,
        unit: UnitId,
        app: Arc<dyn App>,
        state: Vec<u8>,
        shared: SharedVars,
    ) {
        let (control_tx, control_rx) = std_mpsc::channel();
        self.units.insert((job, unit), control_tx);
        let events = self.events.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("colony-unit-{unit}"))
            .spawn(move || run_unit(job, unit, app, state, shared, control_rx, events));
        if let Err(error) = spawned {
            warn!(%error, "cannot start a worker thread");
            let _ = self.events.try_send(ComputeEvent::Failed {
                job,
                unit,
                error: error.to_string(),
            });
        }
    }

    /// Asks a running unit to divide; the answer comes as `Divided`.
    /// False if the unit does not run here.
    pub(crate) fn divide(&mut self, job: JobId, unit: UnitId) -> bool {
        self.control(job, unit, Control::Divide)
    }

    /// Asks a running unit for its state; the answer comes as `Checkpointed`.
    pub(crate) fn checkpoint(&mut self, job: JobId, unit: UnitId) -> bool {
        self.control(job, unit, Control::Checkpoint)
    }

    /// Stops a running unit; the answer comes as `Stopped`.
    pub(crate) fn stop(&mut self, job: JobId, unit: UnitId) -> bool {
        self.control(job, unit, Control::Stop)
    }

    fn control(&mut self, job: JobId, unit: UnitId, message: Control) -> bool {
        match self.units.get(&(job, unit)) {
            Some(control) => control.send(message).is_ok(),
            None => false,
        }
    }

    /// Passes improved shared variables to every running unit of `job`.
    pub(crate) fn share(&mut self, job: JobId, vars: &SharedVars) {
        for ((j, _), control) in &self.units {
            if *j == job {
                let _ = control.send(Control::Shared(vars.clone()));
            }
        }
    }

    /// A unit's thread ended.
    pub(crate) fn finished(&mut self, job: JobId, unit: UnitId) {
        self.units.remove(&(job, unit));
    }
}

fn lower_priority() {
    #[cfg(target_os = "linux")]
    // SAFETY: setpriority only reads its integer arguments; with `who = 0`
    // it changes the calling thread's nice value (Linux threads are tasks).
    unsafe {
        if libc::setpriority(libc::PRIO_PROCESS, 0, 19) != 0 {
            debug!("cannot lower the worker thread's priority");
        }
    }
}

fn run_unit(
    job: JobId,
    unit_id: UnitId,
    app: Arc<dyn App>,
    state: Vec<u8>,
    mut shared: SharedVars,
    control: std_mpsc::Receiver<Control>,
    events: mpsc::Sender<ComputeEvent>,
) {
    lower_priority();
    let mut unit = match app.restore(&state) {
        Ok(unit) => unit,
        Err(error) => {
            let _ = events.blocking_send(ComputeEvent::Failed {
                job,
                unit: unit_id,
                error: error.to_string(),
            });
            return;
        }
    };
    let mut budget: u64 = 256;
    let mut work_unreported = 0u64;
    let mut last_report = Instant::now();
    loop {
        while let Ok(message) = control.try_recv() {
            match message {
                Control::Divide => {
                    let part = unit.divide();
                    let _ = events.blocking_send(ComputeEvent::Divided {
                        job,
                        unit: unit_id,
                        part,
                        remaining: unit.checkpoint(),
                        shared: shared.clone(),
                    });
                }
                Control::Checkpoint => {
                    let _ = events.blocking_send(ComputeEvent::Checkpointed {
                        job,
                        unit: unit_id,
                        state: unit.checkpoint(),
                        shared: shared.clone(),
                    });
                }
                Control::Stop => {
                    let _ = events.blocking_send(ComputeEvent::Progress {
                        job,
                        work: work_unreported,
                    });
                    let _ = events.blocking_send(ComputeEvent::Stopped {
                        job,
                        unit: unit_id,
                        state: unit.checkpoint(),
                    });
                    return;
                }
                Control::Shared(vars) => {
                    shared.merge(&vars);
                }
            }
        }
        let started = Instant::now();
        let mut ctx = StepContext::new(&mut shared, budget);
        let step = unit.step(&mut ctx);
        let (work, improved) = (ctx.work(), ctx.improved());
        work_unreported += work;
        let took = started.elapsed();
        if took < STEP_TARGET / 2 && budget < (1 << 30) {
            budget *= 2;
        } else if took > STEP_TARGET * 2 && budget > 1 {
            budget /= 2;
        }
        if let Step::Done(output) = step {
            let _ = events.blocking_send(ComputeEvent::Progress {
                job,
                work: work_unreported,
            });
            let _ = events.blocking_send(ComputeEvent::Finished {
                job,
                unit: unit_id,
                output,
            });
            return;
        }
        if improved {
            let _ = events.blocking_send(ComputeEvent::Checkpointed {
                job,
                unit: unit_id,
                state: unit.checkpoint(),
                shared: shared.clone(),
            });
        }
        if last_report.elapsed() >= PROGRESS_EVERY {
            let _ = events.blocking_send(ComputeEvent::Progress {
                job,
                work: work_unreported,
            });
            work_unreported = 0;
            last_report = Instant::now();
        }
    }
}
