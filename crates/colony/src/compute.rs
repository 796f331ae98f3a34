//! Worker threads that run units of work: one OS thread per running unit,
//! at most `cores` of them plus one unit a primary pushed to restart it at
//! once (the job core enforces it), each at the OS priority the host chose
//! (`--nice`; by default the lowest, 19, so a volunteer's own work comes
//! first). A thread
//! steps its unit with colony-core's [`UnitRunner`] (the step boundary the
//! simulator's executor shares) in slices of a few milliseconds, the budget
//! adapted to the wall clock; between slices the runner answers divide,
//! checkpoint and stop requests and takes in shared-variable updates.
//! A panic in the application is caught by the runner at the step
//! boundary and reported as the unit's `Failed` event (the job fails with
//! the panic's message); one anywhere else in the thread is caught here
//! and reported the same way, so a unit thread never ends without a word.
//!
//! Objects' handlers run on a second, fixed set of threads
//! ([`ObjectRunner`], one per core, at the same priority), one delivery at
//! a time per object, handed over by the objects core and given back to it.

use std::collections::HashMap;
use std::sync::mpsc as std_mpsc;
use std::time::{Duration, Instant};

use colony_core::divisible::SharedVars;
use colony_core::job::{JobId, UnitId};
use colony_core::object::ObjectRun;
use colony_core::runner::{UnitEvent, UnitRequest, UnitRunner, UnitStart};
use tokio::sync::mpsc;
use tracing::{debug, warn};

use crate::command::Command;
use crate::unit_space::RuntimeUnitSpace;

/// Target duration of one step, so divide requests are answered promptly.
const STEP_TARGET: Duration = Duration::from_millis(4);

/// The running units of this peer.
pub(crate) struct ComputePool {
    events: mpsc::Sender<UnitEvent>,
    /// Where units that use the object space send their requests.
    space_requests: mpsc::Sender<Command>,
    units: HashMap<(JobId, UnitId), std_mpsc::Sender<UnitRequest>>,
    /// The nice value unit threads run at.
    nice: u8,
}

impl ComputePool {
    pub(crate) fn new(
        events: mpsc::Sender<UnitEvent>,
        space_requests: mpsc::Sender<Command>,
        nice: u8,
    ) -> Self {
        ComputePool {
            events,
            space_requests,
            units: HashMap::new(),
            nice,
        }
    }

    /// Starts a thread for a unit, from its serialised state.
    pub(crate) fn start(&mut self, start: UnitStart) {
        let (job, unit) = (start.job, start.unit);
        let (control_tx, control_rx) = std_mpsc::channel();
        self.units.insert((job, unit), control_tx);
        let events = self.events.clone();
        let nice = self.nice;
        let space = start.app.uses_space().then(|| {
            let namespace = colony_core::space::job_namespace(job);
            RuntimeUnitSpace::new(namespace, self.space_requests.clone())
        });
        let spawned = std::thread::Builder::new()
            .name(format!("colony-unit-{unit}"))
            .spawn(move || {
                let thread_events = events.clone();
                let ran = colony_core::runner::catch_panic("its unit thread", || {
                    run_unit(start, space, nice, control_rx, thread_events)
                });
                if let Err(error) = ran {
                    warn!(%job, unit, %error, "unit thread panicked");
                    let _ = events.blocking_send(UnitEvent::Failed { job, unit, error });
                }
            });
        if let Err(error) = spawned {
            warn!(%error, "cannot start a worker thread");
            let _ = self.events.try_send(UnitEvent::Failed {
                job,
                unit,
                error: error.to_string(),
            });
        }
    }

    /// Passes a request to a running unit, answered at its next step
    /// boundary. False if the unit does not run here.
    pub(crate) fn request(&mut self, job: JobId, unit: UnitId, request: UnitRequest) -> bool {
        match self.units.get(&(job, unit)) {
            Some(control) => control.send(request).is_ok(),
            None => false,
        }
    }

    /// Passes improved shared variables to every running unit of `job`.
    pub(crate) fn share(&mut self, job: JobId, vars: &SharedVars) {
        for ((j, _), control) in &self.units {
            if *j == job {
                let _ = control.send(UnitRequest::Shared(vars.clone()));
            }
        }
    }

    /// A unit's thread ended.
    pub(crate) fn finished(&mut self, job: JobId, unit: UnitId) {
        self.units.remove(&(job, unit));
    }
}

/// Sets the calling thread's nice value (Linux threads are tasks).
fn set_thread_nice(nice: u8) {
    #[cfg(target_os = "linux")]
    // SAFETY: setpriority only reads its integer arguments; with `who = 0`
    // it changes the calling thread's nice value.
    unsafe {
        if libc::setpriority(libc::PRIO_PROCESS, 0, libc::c_int::from(nice)) != 0 {
            debug!(nice, "cannot set the worker thread's priority");
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = nice;
}

fn run_unit(
    start: UnitStart,
    space: Option<RuntimeUnitSpace>,
    nice: u8,
    control: std_mpsc::Receiver<UnitRequest>,
    events: mpsc::Sender<UnitEvent>,
) {
    set_thread_nice(nice);
    let mut runner = match UnitRunner::start_unit(Instant::now(), start) {
        Ok(runner) => runner,
        Err(failed) => {
            let _ = events.blocking_send(failed);
            return;
        }
    };
    if let Some(space) = space {
        runner.set_space(Box::new(space));
    }
    let mut budget: u64 = 256;
    let mut reported = Vec::new();
    loop {
        let mut requests = std::iter::from_fn(|| control.try_recv().ok());
        let stopped = runner.handle_requests(&mut requests, &mut reported);
        let mut finished = false;
        if !stopped {
            let started = Instant::now();
            finished = runner.step(started, budget, &mut reported);
            let took = started.elapsed();
            if took < STEP_TARGET / 2 && budget < (1 << 30) {
                budget *= 2;
            } else if took > STEP_TARGET * 2 && budget > 1 {
                budget /= 2;
            }
        }
        for event in reported.drain(..) {
            // Waits while the driver is behind: the unit holds still.
            let _ = events.blocking_send(event);
        }
        if stopped || finished {
            return;
        }
    }
}

/// Threads that run objects' handlers ([`ObjectRun`]), so that a long one
/// stalls neither the peer's event loop (membership, pipes, homes) nor the
/// objects on other threads. The objects core sends out one run per object
/// at a time, so the queue holds at most one run per object this peer is
/// primary of (bounded by the homes' `max_homes`).
pub(crate) struct ObjectRunner {
    runs: Option<std_mpsc::Sender<ObjectRun>>,
    /// Runs lost to a failed thread, given back unserved.
    ran: mpsc::Sender<ObjectRun>,
}

/// Completed runs waiting for the event loop, at most (a thread that finds
/// it full waits).
pub(crate) const OBJECT_RUNS_DONE: usize = 256;

impl ObjectRunner {
    /// `threads` threads at `nice`, giving runs back on `ran`.
    pub(crate) fn new(threads: usize, nice: u8, ran: mpsc::Sender<ObjectRun>) -> ObjectRunner {
        let (tx, rx) = std_mpsc::channel::<ObjectRun>();
        let rx = std::sync::Arc::new(std::sync::Mutex::new(rx));
        let mut started = 0;
        for index in 0..threads.max(1) {
            let rx = rx.clone();
            let done = ran.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("colony-objects-{index}"))
                .spawn(move || run_objects(&rx, nice, &done));
            match spawned {
                Ok(_) => started += 1,
                Err(error) => warn!(%error, "cannot start an object thread"),
            }
        }
        ObjectRunner {
            runs: (started > 0).then_some(tx),
            ran,
        }
    }

    /// Runs `run` on the next free thread. With no thread left, it comes
    /// back unserved at once (its object is rebuilt from its record).
    pub(crate) fn submit(&self, run: ObjectRun) {
        let refused = match &self.runs {
            Some(runs) => match runs.send(run) {
                Ok(()) => return,
                Err(std_mpsc::SendError(run)) => run,
            },
            None => run,
        };
        warn!(guid = %refused.guid(), "no object thread runs; the object is rebuilt from its record");
        if self.ran.try_send(refused).is_err() {
            warn!("the event loop takes no object run back");
        }
    }
}

fn run_objects(
    runs: &std::sync::Mutex<std_mpsc::Receiver<ObjectRun>>,
    nice: u8,
    done: &mpsc::Sender<ObjectRun>,
) {
    set_thread_nice(nice);
    loop {
        // The lock is held only to take the next run, never while running.
        let next = match runs.lock() {
            Ok(rx) => rx.recv(),
            Err(_) => return,
        };
        let Ok(mut run) = next else {
            return; // the peer stopped
        };
        // A panic past the handler's own guard leaves the run unserved,
        // and the core rebuilds the object from its record.
        if let Err(error) = colony_core::runner::catch_panic("an object run", || run.run()) {
            warn!(guid = %run.guid(), %error, "an object run panicked");
        }
        if done.blocking_send(run).is_err() {
            return;
        }
    }
}
