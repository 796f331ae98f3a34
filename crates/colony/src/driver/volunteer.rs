//! The driver's side of volunteer hosts (see `crate::volunteer`): load
//! samples from the monitor thread go through the owner's [`Policy`];
//! when its decision changes the node is paused (running units stopped
//! and handed back) or resumed, and the peer's published statistics say so
//! at once.

use std::time::{Duration, Instant};

use colony_core::membership::{ComputeWhen, PauseReason};
use colony_core::node::NodeInput;
use colony_store::PeerStore;
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use super::Driver;
use crate::error::ColonyError;
use crate::host;
use crate::info::ComputeInfo;
use crate::volunteer::{self, LoadSample, Policy, VolunteerConfig};

/// The store counter holding today's compute time
/// ([`volunteer::encode_day_use`]).
const DAY_USE_COUNTER: &str = "compute_today";

/// How often today's compute time is written while it grows.
const PERSIST_EVERY: Duration = Duration::from_secs(60);

/// The owner's preferences at work: the policy and the monitor feeding it.
pub(crate) struct Volunteer {
    policy: Policy,
    /// Load samples; `None` once the monitor stopped.
    samples: Option<mpsc::Receiver<LoadSample>>,
    /// Times the peer paused since it started.
    pauses: u64,
    /// The compute time of today last written to the store.
    persisted: (u64, Duration),
    next_persist: Instant,
}

impl Volunteer {
    /// Starts watching the host as `config` asks, counting today's compute
    /// time on from what `store` holds. `None` when nothing needs watching
    /// (`--when always` without a daily limit).
    pub(crate) fn start(
        config: &VolunteerConfig,
        store: &PeerStore,
        now: Instant,
    ) -> Result<Option<Volunteer>, ColonyError> {
        if !config.watches() {
            return Ok(None);
        }
        let read_load = config.when == ComputeWhen::Idle;
        if read_load && !volunteer::can_read_load() {
            return Err(ColonyError::Volunteer(
                "`--when idle` reads the host's CPU use from /proc/stat, which cannot be read here (Linux only); use `--when always`".into(),
            ));
        }
        let today = volunteer::utc_day(host::unix_now_s());
        let (day, used) = volunteer::decode_day_use(store.counter(DAY_USE_COUNTER)?);
        let used = if day == today { used } else { Duration::ZERO };
        let samples = volunteer::spawn_monitor(config.sample_interval, read_load).map_err(|e| {
            ColonyError::Volunteer(format!("cannot start the load monitor thread: {e}"))
        })?;
        Ok(Some(Volunteer {
            policy: Policy::new(config.clone(), today, used),
            samples: Some(samples),
            pauses: 0,
            persisted: (today, used),
            next_persist: now + PERSIST_EVERY,
        }))
    }

    /// Why the peer must not compute now, if it must not.
    pub(crate) fn paused(&self) -> Option<PauseReason> {
        self.policy.paused()
    }

    /// The next load sample; never, once the monitor stopped.
    pub(super) async fn next_sample(volunteer: &mut Option<Volunteer>) -> Option<LoadSample> {
        match volunteer.as_mut().and_then(|v| v.samples.as_mut()) {
            Some(samples) => samples.recv().await,
            None => std::future::pending().await,
        }
    }
}

impl Driver {
    /// A load sample (or `None`: the monitor stopped).
    pub(super) fn on_load_sample(&mut self, sample: Option<LoadSample>) {
        let now = Instant::now();
        let units = self.node.jobs().running_units();
        let computing = self.node.jobs().computing();
        let Some(v) = self.volunteer.as_mut() else {
            return;
        };
        if let Some(foreign) = sample.and_then(|s| s.foreign) {
            debug!(other_cpu_percent = foreign * 100.0, units, "load sample");
        }
        let decision = match sample {
            Some(sample) => v.policy.tick(
                sample.at,
                volunteer::utc_day(host::unix_now_s()),
                sample.foreign,
                computing,
            ),
            None => {
                v.samples = None;
                warn!("the load monitor stopped: the host's load is no longer watched");
                v.policy.blind()
            }
        };
        if let Some(decision) = decision {
            let other_cpu_percent = v.policy.last_foreign().map(|f| (f * 1000.0).round() / 10.0);
            match decision {
                Some(reason) => {
                    v.pauses += 1;
                    info!(%reason, ?other_cpu_percent, running_units = units, "pausing: running units go back to their jobs");
                    self.node.handle(now, NodeInput::Pause);
                }
                None => {
                    info!(?other_cpu_percent, "resuming: this peer computes again");
                    self.node.handle(now, NodeInput::Resume);
                }
            }
            self.sample_stats(now);
        }
        self.persist_day_use(now, decision.is_some());
    }

    /// Writes today's compute time when it changed and is due (a daily
    /// limit is set), or at once if `now_anyway`.
    fn persist_day_use(&mut self, now: Instant, now_anyway: bool) {
        let Some(v) = self.volunteer.as_mut() else {
            return;
        };
        if v.policy.config().max_per_day.is_none() {
            return;
        }
        let day_use = v.policy.day_use();
        if day_use == v.persisted {
            return;
        }
        if !now_anyway && now < v.next_persist {
            return;
        }
        v.next_persist = now + PERSIST_EVERY;
        v.persisted = day_use;
        let value = volunteer::encode_day_use(day_use.0, day_use.1);
        if let Err(error) = self.store.set_counter(DAY_USE_COUNTER, value) {
            warn!(%error, "cannot record today's compute time");
        }
    }

    /// This peer as a volunteer host, for `/v1/status`.
    pub(super) fn compute_info(&self) -> ComputeInfo {
        let config = &self.config.volunteer;
        let idle = config.when == ComputeWhen::Idle;
        let policy = self.volunteer.as_ref().map(|v| &v.policy);
        ComputeInfo {
            when: config.when,
            paused: self.volunteer.as_ref().and_then(Volunteer::paused),
            computing: self.node.jobs().computing(),
            other_cpu_percent: policy
                .and_then(Policy::last_foreign)
                .map(|f| (f * 1000.0).round() / 10.0),
            idle_cpu_percent: idle.then_some(config.idle_cpu * 100.0),
            idle_secs: idle.then_some(config.idle_after.as_secs_f64()),
            computed_today_s: config
                .max_per_day
                .and(policy)
                .map(|p| p.day_use().1.as_secs()),
            max_hours_per_day: config.max_per_day.map(|d| d.as_secs_f64() / 3600.0),
            pauses: self.volunteer.as_ref().map_or(0, |v| v.pauses),
        }
    }
}
