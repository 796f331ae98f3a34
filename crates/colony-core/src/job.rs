//! Divisible jobs across peers (P³ seed 002 §3, Fig. 3–4, on Colony's
//! "every state has a home" rule): one sans-IO core per peer that plays
//! every role.
//!
//! - **Home.** A submitted job lives at its home, the live peer whose hashed
//!   id is closest (XOR) to the job id when it is submitted. The home keeps
//!   the job record — parameters, every unit with its holder, the merged
//!   partial results, shared variables, who contributed what — and
//!   advertises the job, with a lifetime, to every member (JXTA-style
//!   advertisement) so idle peers learn of it.
//! - **Brokered work stealing.** An idle peer asks the home for work. The
//!   home hands out an unassigned unit if it has one; otherwise it picks the
//!   most suitable donor (most running units, then lightest load) and asks it
//!   to divide, naming the new unit's id; the donor ships the part straight
//!   to the requester and both report to the home. Because the home names
//!   every unit before it exists, a job is complete exactly when every unit
//!   it named has been merged — each once.
//! - **Worker.** Computes units of one job at a time, up to `cores` at once;
//!   the driver runs them on low-priority threads and reports back.
//! - **Submitter.** Gets progress and the result; anyone can ask the home
//!   for the result by job id while it is retained.
//!
//! Messages travel on reliable pipes; the driver passes them in with
//! [`Jobs::handle_message`] and sends what [`Jobs::poll`] returns.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::divisible::{AppError, AppRegistry, SharedVars};
use crate::PeerKey;

/// A job's id: 128 random bits, also its key in the overlay.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct JobId(pub [u8; 16]);

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "JobId({self})")
    }
}

impl std::str::FromStr for JobId {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s.len() != 32 {
            return Err(format!("a job id has 32 hex digits, got {:?}", s));
        }
        let mut id = [0u8; 16];
        for (i, byte) in id.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&s[2 * i..2 * i + 2], 16)
                .map_err(|_| format!("not a job id: {s:?}"))?;
        }
        Ok(JobId(id))
    }
}

/// A unit's id within its job, assigned by the home.
pub type UnitId = u64;

/// Tuning of the job core.
#[derive(Clone, Debug, PartialEq)]
pub struct JobConfig {
    /// Units this peer computes at once.
    pub cores: u32,
    /// How often a home re-advertises its running jobs.
    pub advert_interval: Duration,
    /// Lifetime of an advertisement; a job not re-advertised within it is
    /// forgotten by idle peers.
    pub advert_lifetime: Duration,
    /// First pause of an idle peer after "no work"; doubles to the cap.
    pub request_backoff_initial: Duration,
    /// Cap of that pause.
    pub request_backoff_max: Duration,
    /// How long a home waits for a donor to divide before trying another.
    pub steal_timeout: Duration,
    /// How often the home sends progress to the submitter.
    pub progress_interval: Duration,
    /// How long a finished job's result stays retrievable.
    pub result_retention: Duration,
    /// Most finished jobs retained.
    pub max_retained_results: usize,
    /// Most jobs homed here at once.
    pub max_active_jobs: usize,
    /// Most advertised jobs remembered; further adverts are ignored until
    /// some expire.
    pub max_known_jobs: usize,
}

impl Default for JobConfig {
    fn default() -> Self {
        JobConfig {
            cores: 1,
            advert_interval: Duration::from_millis(500),
            advert_lifetime: Duration::from_secs(3),
            request_backoff_initial: Duration::from_millis(10),
            request_backoff_max: Duration::from_millis(100),
            steal_timeout: Duration::from_secs(2),
            progress_interval: Duration::from_millis(250),
            result_retention: Duration::from_secs(3600),
            max_retained_results: 1000,
            max_active_jobs: 64,
            max_known_jobs: 1024,
        }
    }
}

/// Counters of one job, as the home sees them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobStats {
    /// Units named so far (the root plus one per successful steal).
    pub units: u64,
    /// Units merged.
    pub units_done: u64,
    /// Successful steals.
    pub steals: u64,
    /// Work counted by the application (nodes explored, rows computed).
    pub work: u64,
    /// Peers that ran at least one unit.
    pub peers_used: u64,
}

/// One peer's part in a job.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Contribution {
    /// Units it finished.
    pub units_done: u64,
    /// Units it is running now.
    pub units_running: u64,
    /// Work it reported.
    pub work: u64,
    /// Units it gave away to others.
    pub donated: u64,
}

/// A snapshot of a job for progress display, `colony jobs` and results.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(bound(deserialize = "P: DeserializeOwned"))]
pub struct JobView<P> {
    /// The job.
    pub job: JobId,
    /// Its application.
    pub app: String,
    /// Its serialised parameters.
    pub params: Vec<u8>,
    /// Its home.
    pub home: P,
    /// Who submitted it.
    pub submitter: P,
    /// Running, done or failed.
    pub state: JobState,
    /// Counters.
    pub stats: JobStats,
    /// Each peer's part.
    pub contributions: Vec<(P, Contribution)>,
    /// Current shared variables.
    pub shared: SharedVars,
    /// Seconds since submission (or until completion).
    pub elapsed_s: f64,
}

/// Where a job stands.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum JobState {
    /// Units are being computed.
    Running,
    /// Every unit is merged; the result is final.
    Done {
        /// The merged result, serialised by the application.
        result: Vec<u8>,
    },
    /// The job could not run.
    Failed {
        /// Why.
        reason: String,
    },
}

/// Messages between job cores.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(bound(deserialize = "P: DeserializeOwned"))]
pub enum JobMsg<P> {
    /// Submitter → home: run this job.
    Submit {
        /// Id chosen by the submitter.
        job: JobId,
        /// Application name.
        app: String,
        /// Serialised parameters.
        params: Vec<u8>,
    },
    /// Home → everyone: a job needs workers.
    Advert {
        /// The job.
        job: JobId,
        /// Its application.
        app: String,
        /// Where to ask for work.
        home: P,
        /// How long the advert stays valid, ms.
        lifetime_ms: u64,
    },
    /// Worker → home: I have `free` idle cores for this job.
    WorkRequest {
        /// The job.
        job: JobId,
        /// Idle cores.
        free: u32,
    },
    /// Home → worker: nothing to hand out now.
    NoWork {
        /// The job.
        job: JobId,
        /// Whether the job is over (stop asking).
        finished: bool,
    },
    /// Home → donor: divide a unit and ship the part to `requester` as `unit`.
    StealRequest {
        /// The job.
        job: JobId,
        /// The new unit's id.
        unit: UnitId,
        /// Who gets it.
        requester: P,
    },
    /// Donor → home: nothing to divide.
    StealDeclined {
        /// The job.
        job: JobId,
        /// The unit that will not exist.
        unit: UnitId,
    },
    /// Home or donor → worker: compute this unit.
    Assign {
        /// The job.
        job: JobId,
        /// The unit.
        unit: UnitId,
        /// Application name.
        app: String,
        /// Serialised unit state.
        state: Vec<u8>,
        /// Home of the job (where to report).
        home: P,
        /// Shared variables as known by the sender.
        shared: SharedVars,
    },
    /// Worker → home: I am running `unit`.
    Started {
        /// The job.
        job: JobId,
        /// The unit.
        unit: UnitId,
    },
    /// Worker → home: work done since the last report.
    Progress {
        /// The job.
        job: JobId,
        /// Work since the last report.
        work: u64,
    },
    /// Worker → home: a unit is finished.
    UnitDone {
        /// The job.
        job: JobId,
        /// The unit.
        unit: UnitId,
        /// Its partial result.
        output: Vec<u8>,
    },
    /// Worker ↔ home: improved shared variables.
    Shared {
        /// The job.
        job: JobId,
        /// The variables.
        vars: SharedVars,
    },
    /// Home → submitter (and to anyone who asks): the job's state.
    Status {
        /// The snapshot.
        view: JobView<P>,
    },
    /// Anyone → home: send me the job's status (for `colony result`).
    Query {
        /// The job.
        job: JobId,
    },
    /// Home → asker: no such job here.
    Unknown {
        /// The job.
        job: JobId,
    },
}

/// What the driver must do for the job core.
#[derive(Clone, Debug)]
pub enum JobOutput<P> {
    /// Send `msg` to `to` reliably; `bulk` ones carry units.
    Send {
        /// Destination.
        to: P,
        /// The message.
        msg: JobMsg<P>,
        /// Whether it carries bulk data (a unit).
        bulk: bool,
    },
    /// Start computing a unit on a worker thread.
    Run {
        /// The job.
        job: JobId,
        /// The unit.
        unit: UnitId,
        /// Application name.
        app: String,
        /// Serialised state.
        state: Vec<u8>,
        /// Shared variables to start from.
        shared: SharedVars,
    },
    /// Divide a running unit; report with [`Jobs::divided`].
    Divide {
        /// The job.
        job: JobId,
        /// The unit to divide.
        unit: UnitId,
        /// The id the part gets.
        new_unit: UnitId,
        /// Who gets the part.
        requester: P,
    },
    /// New shared variables for the running units of a job.
    SharedChanged {
        /// The job.
        job: JobId,
        /// The variables.
        vars: SharedVars,
    },
    /// A job's status reached this peer (it submitted or asked).
    Status(JobView<P>),
    /// A query about a job this peer knows nothing of was answered "unknown".
    Unknown(JobId),
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum UnitStatus {
    /// Named by a steal request; the donor has not confirmed.
    Pending,
    Running,
    Done,
}

struct UnitEntry<P> {
    holder: P,
    status: UnitStatus,
    since: Instant,
    /// For pending units: who was asked to divide.
    donor: Option<P>,
}

struct HomeJob<P> {
    app: String,
    params: Vec<u8>,
    submitter: P,
    started: Instant,
    finished: Option<Instant>,
    state: JobState,
    units: BTreeMap<UnitId, UnitEntry<P>>,
    next_unit: UnitId,
    /// Units with no holder yet, with their state.
    unassigned: VecDeque<(UnitId, Vec<u8>)>,
    merged: Option<Vec<u8>>,
    shared: SharedVars,
    stats: JobStats,
    contributions: BTreeMap<P, Contribution>,
    next_progress_at: Instant,
    next_advert_at: Instant,
}

struct KnownJob<P> {
    app: String,
    home: P,
    expires: Instant,
}

/// The job core of one peer. See the module docs.
pub struct Jobs<P: PeerKey> {
    me: P,
    config: JobConfig,
    registry: AppRegistry,
    homed: BTreeMap<JobId, HomeJob<P>>,
    known: BTreeMap<JobId, KnownJob<P>>,
    /// Units computing here, with the home they report to.
    running: BTreeMap<(JobId, UnitId), P>,
    /// The job this peer works for (one at a time).
    current_job: Option<JobId>,
    request_outstanding: bool,
    next_request_at: Instant,
    backoff: Duration,
    finished_jobs: BTreeSet<JobId>,
    /// Loads of members, for picking donors.
    loads: BTreeMap<P, f32>,
    members: Vec<P>,
    outputs: VecDeque<JobOutput<P>>,
    next_tick: Instant,
}

impl<P: PeerKey> Jobs<P> {
    /// A job core for peer `me` running the apps of `registry`.
    pub fn new(me: P, config: JobConfig, registry: AppRegistry, now: Instant) -> Self {
        Jobs {
            me,
            backoff: config.request_backoff_initial,
            config,
            registry,
            homed: BTreeMap::new(),
            known: BTreeMap::new(),
            running: BTreeMap::new(),
            current_job: None,
            request_outstanding: false,
            next_request_at: now,
            finished_jobs: BTreeSet::new(),
            loads: BTreeMap::new(),
            members: Vec::new(),
            outputs: VecDeque::new(),
            next_tick: now,
        }
    }

    /// The applications this peer can run.
    pub fn registry(&self) -> &AppRegistry {
        &self.registry
    }

    /// Membership changed: the live members (not including this peer) and
    /// their load averages.
    pub fn set_members(&mut self, members: Vec<(P, f32)>) {
        let newcomers: Vec<P> = members
            .iter()
            .map(|(p, _)| p.clone())
            .filter(|p| !self.members.contains(p))
            .collect();
        self.members = members.iter().map(|(p, _)| p.clone()).collect();
        self.loads = members.into_iter().collect();
        // Tell newcomers about running jobs at once, so they get work fast.
        for (job, record) in &self.homed {
            if record.state == JobState::Running {
                for to in &newcomers {
                    self.outputs.push_back(JobOutput::Send {
                        to: to.clone(),
                        msg: self.advert(*job, &record.app),
                        bulk: false,
                    });
                }
            }
        }
    }

    /// The home of a new job submitted here: among the other live peers,
    /// the one whose hashed id is XOR-closest to the job id; this peer only
    /// when it is alone. A submitter is often transient (`colony run`), and
    /// the record must outlive it.
    pub fn choose_home(&self, job: JobId, key_of: impl Fn(&P) -> [u8; 32]) -> P {
        self.closest(job, self.members.iter(), key_of)
    }

    /// Where to ask about `job` if no advert names its home: the live peer,
    /// this one included, closest to the job id now.
    pub fn probable_home(&self, job: JobId, key_of: impl Fn(&P) -> [u8; 32]) -> P {
        self.closest(job, std::iter::once(&self.me).chain(&self.members), key_of)
    }

    /// The candidate XOR-closest to `job`; this peer if there is none.
    fn closest<'a>(
        &'a self,
        job: JobId,
        candidates: impl Iterator<Item = &'a P>,
        key_of: impl Fn(&P) -> [u8; 32],
    ) -> P {
        candidates
            .min_by_key(|p| xor_distance(job, &key_of(p)))
            .cloned()
            .unwrap_or_else(|| self.me.clone())
    }

    fn advert(&self, job: JobId, app: &str) -> JobMsg<P> {
        JobMsg::Advert {
            job,
            app: app.to_string(),
            home: self.me.clone(),
            lifetime_ms: self.config.advert_lifetime.as_millis() as u64,
        }
    }

    /// Handles a job message from `from`.
    pub fn handle_message(&mut self, now: Instant, from: P, msg: JobMsg<P>) {
        match msg {
            JobMsg::Submit { job, app, params } => self.on_submit(now, from, job, app, params),
            JobMsg::Advert {
                job,
                app,
                home,
                lifetime_ms,
            } => {
                if self.finished_jobs.contains(&job) || self.registry.get(&app).is_err() {
                    return;
                }
                if !self.known.contains_key(&job) && self.known.len() >= self.config.max_known_jobs
                {
                    return;
                }
                let expires = now + Duration::from_millis(lifetime_ms.min(60_000));
                self.known.insert(job, KnownJob { app, home, expires });
            }
            JobMsg::WorkRequest { job, free } => self.on_work_request(now, from, job, free),
            JobMsg::NoWork { job, finished } => {
                self.request_outstanding = false;
                if finished {
                    self.forget_job(job);
                }
                self.next_request_at = now + self.backoff;
                self.backoff = (self.backoff * 2).min(self.config.request_backoff_max);
            }
            JobMsg::StealRequest {
                job,
                unit,
                requester,
            } => {
                // Divide the unit of this job we have run longest.
                match self
                    .running
                    .keys()
                    .find(|(j, _)| *j == job)
                    .map(|(_, id)| *id)
                {
                    Some(victim) => self.outputs.push_back(JobOutput::Divide {
                        job,
                        unit: victim,
                        new_unit: unit,
                        requester,
                    }),
                    None => self.send(from, JobMsg::StealDeclined { job, unit }, false),
                }
            }
            JobMsg::StealDeclined { job, unit } => self.on_steal_declined(now, job, unit),
            JobMsg::Assign {
                job,
                unit,
                app,
                state,
                home,
                shared,
            } => {
                self.request_outstanding = false;
                self.backoff = self.config.request_backoff_initial;
                self.known.entry(job).or_insert(KnownJob {
                    app: app.clone(),
                    home: home.clone(),
                    expires: now + self.config.advert_lifetime,
                });
                self.current_job = Some(job);
                self.running.insert((job, unit), home.clone());
                self.send(home, JobMsg::Started { job, unit }, false);
                self.outputs.push_back(JobOutput::Run {
                    job,
                    unit,
                    app,
                    state,
                    shared,
                });
            }
            JobMsg::Started { job, unit } => {
                if let Some(record) = self.homed.get_mut(&job) {
                    if let Some(entry) = record.units.get_mut(&unit) {
                        if entry.status == UnitStatus::Pending {
                            entry.status = UnitStatus::Running;
                            if let Some(donor) = entry.donor.take() {
                                record.contributions.entry(donor).or_default().donated += 1;
                                record.stats.steals += 1;
                            }
                        }
                        entry.holder = from.clone();
                        record.contributions.entry(from).or_default().units_running += 1;
                        record.stats.peers_used = record
                            .contributions
                            .values()
                            .filter(|c| c.units_running + c.units_done > 0)
                            .count() as u64;
                    }
                }
            }
            JobMsg::Progress { job, work } => {
                if let Some(record) = self.homed.get_mut(&job) {
                    record.stats.work += work;
                    record.contributions.entry(from).or_default().work += work;
                }
            }
            JobMsg::UnitDone { job, unit, output } => {
                self.on_unit_done(now, from, job, unit, output)
            }
            JobMsg::Shared { job, vars } => {
                if let Some(record) = self.homed.get_mut(&job) {
                    if record.shared.merge(&vars) {
                        let vars = record.shared.clone();
                        let holders: BTreeSet<P> = record
                            .units
                            .values()
                            .filter(|u| u.status == UnitStatus::Running)
                            .map(|u| u.holder.clone())
                            .collect();
                        for to in holders {
                            if to != from {
                                self.send(
                                    to,
                                    JobMsg::Shared {
                                        job,
                                        vars: vars.clone(),
                                    },
                                    false,
                                );
                            }
                        }
                        if self.current_job == Some(job) {
                            self.outputs
                                .push_back(JobOutput::SharedChanged { job, vars });
                        }
                    }
                } else if self.current_job == Some(job) {
                    self.outputs
                        .push_back(JobOutput::SharedChanged { job, vars });
                }
            }
            JobMsg::Status { view } => {
                if !matches!(view.state, JobState::Running) {
                    self.finished_jobs.insert(view.job);
                }
                self.outputs.push_back(JobOutput::Status(view));
            }
            JobMsg::Query { job } => match self.view(now, job) {
                Some(view) => self.send(from, JobMsg::Status { view }, false),
                None => self.send(from, JobMsg::Unknown { job }, false),
            },
            JobMsg::Unknown { job } => self.outputs.push_back(JobOutput::Unknown(job)),
        }
    }

    /// Queues a message; one addressed to this peer itself (it is home and
    /// worker at once) is looped back by the driver.
    fn send(&mut self, to: P, msg: JobMsg<P>, bulk: bool) {
        self.outputs.push_back(JobOutput::Send { to, msg, bulk });
    }

    fn on_submit(&mut self, now: Instant, from: P, job: JobId, app_name: String, params: Vec<u8>) {
        if self.homed.contains_key(&job) {
            return; // a retransmitted submission
        }
        let fail = |reason: String| JobView {
            job,
            app: app_name.clone(),
            params: params.clone(),
            home: self.me.clone(),
            submitter: from.clone(),
            state: JobState::Failed { reason },
            stats: JobStats::default(),
            contributions: Vec::new(),
            shared: SharedVars::default(),
            elapsed_s: 0.0,
        };
        let active = self
            .homed
            .values()
            .filter(|j| j.state == JobState::Running)
            .count();
        if active >= self.config.max_active_jobs {
            let view = fail(format!(
                "the home peer already runs {active} jobs, its limit; try later"
            ));
            self.send(from, JobMsg::Status { view }, false);
            return;
        }
        let prepared = self.registry.get(&app_name).and_then(|app| {
            let unit = app.init(&params)?;
            let shared = app.initial_shared(&params)?;
            Ok((unit.checkpoint(), shared))
        });
        let (root, shared) = match prepared {
            Ok(ok) => ok,
            Err(error) => {
                let view = fail(error.to_string());
                self.send(from, JobMsg::Status { view }, false);
                return;
            }
        };
        let mut record = HomeJob {
            app: app_name.clone(),
            params,
            submitter: from,
            started: now,
            finished: None,
            state: JobState::Running,
            units: BTreeMap::new(),
            next_unit: 1,
            unassigned: VecDeque::from([(0, root)]),
            merged: None,
            shared,
            stats: JobStats {
                units: 1,
                ..JobStats::default()
            },
            contributions: BTreeMap::new(),
            next_progress_at: now,
            next_advert_at: now,
        };
        record.units.insert(
            0,
            UnitEntry {
                holder: self.me.clone(),
                status: UnitStatus::Pending,
                since: now,
                donor: None,
            },
        );
        self.homed.insert(job, record);
        self.known.insert(
            job,
            KnownJob {
                app: app_name,
                home: self.me.clone(),
                expires: now + self.config.advert_lifetime,
            },
        );
        self.advertise(now, job);
    }

    fn advertise(&mut self, now: Instant, job: JobId) {
        let Some(record) = self.homed.get_mut(&job) else {
            return;
        };
        record.next_advert_at = now + self.config.advert_interval;
        let msg = JobMsg::Advert {
            job,
            app: record.app.clone(),
            home: self.me.clone(),
            lifetime_ms: self.config.advert_lifetime.as_millis() as u64,
        };
        for to in self.members.clone() {
            self.send(to, msg.clone(), false);
        }
    }

    fn on_work_request(&mut self, now: Instant, from: P, job: JobId, free: u32) {
        let Some(record) = self
            .homed
            .get_mut(&job)
            .filter(|r| r.state == JobState::Running)
        else {
            self.send(
                from,
                JobMsg::NoWork {
                    job,
                    finished: true,
                },
                false,
            );
            return;
        };
        let mut handed = 0;
        while handed < free.max(1) {
            let Some((unit, state)) = record.unassigned.pop_front() else {
                break;
            };
            if let Some(entry) = record.units.get_mut(&unit) {
                entry.holder = from.clone();
                entry.since = now;
            }
            handed += 1;
            let msg = JobMsg::Assign {
                job,
                unit,
                app: record.app.clone(),
                state,
                home: self.me.clone(),
                shared: record.shared.clone(),
            };
            self.outputs.push_back(JobOutput::Send {
                to: from.clone(),
                msg,
                bulk: true,
            });
        }
        if handed > 0 {
            return;
        }
        // Steal: the donor with the most running units, then the lightest load.
        let mut running: BTreeMap<P, u32> = BTreeMap::new();
        for entry in record.units.values() {
            if entry.status == UnitStatus::Running && entry.holder != from {
                *running.entry(entry.holder.clone()).or_default() += 1;
            }
        }
        let pending_from_donor = |donor: &P| {
            record
                .units
                .values()
                .filter(|u| u.status == UnitStatus::Pending && u.donor.as_ref() == Some(donor))
                .count() as u32
        };
        let donor = running
            .iter()
            .filter(|(p, n)| **n > pending_from_donor(p))
            .max_by(|a, b| {
                a.1.cmp(b.1).then_with(|| {
                    let la = self.loads.get(a.0).copied().unwrap_or(0.0);
                    let lb = self.loads.get(b.0).copied().unwrap_or(0.0);
                    lb.partial_cmp(&la).unwrap_or(std::cmp::Ordering::Equal)
                })
            })
            .map(|(p, _)| p.clone());
        let Some(donor) = donor else {
            self.send(
                from,
                JobMsg::NoWork {
                    job,
                    finished: false,
                },
                false,
            );
            return;
        };
        let unit = record.next_unit;
        record.next_unit += 1;
        record.stats.units += 1;
        record.units.insert(
            unit,
            UnitEntry {
                holder: from.clone(),
                status: UnitStatus::Pending,
                since: now,
                donor: Some(donor.clone()),
            },
        );
        self.send(
            donor,
            JobMsg::StealRequest {
                job,
                unit,
                requester: from,
            },
            false,
        );
    }

    fn on_steal_declined(&mut self, now: Instant, job: JobId, unit: UnitId) {
        let Some(record) = self.homed.get_mut(&job) else {
            return;
        };
        let Some(entry) = record.units.get(&unit) else {
            return;
        };
        if entry.status != UnitStatus::Pending {
            return;
        }
        let requester = entry.holder.clone();
        record.units.remove(&unit);
        record.stats.units -= 1;
        self.send(
            requester,
            JobMsg::NoWork {
                job,
                finished: false,
            },
            false,
        );
        self.check_complete(now, job);
    }

    fn on_unit_done(&mut self, now: Instant, from: P, job: JobId, unit: UnitId, output: Vec<u8>) {
        let Some(record) = self.homed.get_mut(&job) else {
            return;
        };
        let Some(entry) = record.units.get_mut(&unit) else {
            return;
        };
        if entry.status == UnitStatus::Done {
            return; // merged once per unit id
        }
        if entry.status == UnitStatus::Pending {
            // Done before its Started arrived (reordering across pipes).
            record.stats.steals += u64::from(entry.donor.is_some());
        }
        entry.status = UnitStatus::Done;
        let merged = match (record.merged.take(), self.registry.get(&record.app)) {
            (None, _) => Ok(output),
            (Some(previous), Ok(app)) => app.merge(&previous, &output),
            (Some(_), Err(e)) => Err(e),
        };
        match merged {
            Ok(m) => record.merged = Some(m),
            Err(error) => {
                record.state = JobState::Failed {
                    reason: format!("merging unit {unit}: {error}"),
                };
            }
        }
        record.stats.units_done += 1;
        let c = record.contributions.entry(from).or_default();
        c.units_done += 1;
        c.units_running = c.units_running.saturating_sub(1);
        self.check_complete(now, job);
    }

    fn check_complete(&mut self, now: Instant, job: JobId) {
        let Some(record) = self.homed.get_mut(&job) else {
            return;
        };
        let all_done = record.units.values().all(|u| u.status == UnitStatus::Done)
            && record.unassigned.is_empty();
        if record.state == JobState::Running && all_done {
            record.state = JobState::Done {
                result: record.merged.clone().unwrap_or_default(),
            };
        }
        if record.state != JobState::Running && record.finished.is_none() {
            record.finished = Some(now);
            if let Some(view) = self.view(now, job) {
                let submitter = view.submitter.clone();
                self.send(submitter, JobMsg::Status { view }, false);
            }
        }
    }

    /// A job's snapshot, if this peer is its home.
    pub fn view(&self, now: Instant, job: JobId) -> Option<JobView<P>> {
        let record = self.homed.get(&job)?;
        Some(JobView {
            job,
            app: record.app.clone(),
            params: record.params.clone(),
            home: self.me.clone(),
            submitter: record.submitter.clone(),
            state: record.state.clone(),
            stats: record.stats.clone(),
            contributions: record
                .contributions
                .iter()
                .map(|(p, c)| (p.clone(), c.clone()))
                .collect(),
            shared: record.shared.clone(),
            elapsed_s: record
                .finished
                .unwrap_or(now)
                .saturating_duration_since(record.started)
                .as_secs_f64(),
        })
    }

    /// Snapshots of every job homed here.
    pub fn homed_views(&self, now: Instant) -> Vec<JobView<P>> {
        self.homed
            .keys()
            .filter_map(|job| self.view(now, *job))
            .collect()
    }

    /// Jobs this peer knows of by advertisement: (job, app, home).
    pub fn known_jobs(&self) -> Vec<(JobId, String, P)> {
        self.known
            .iter()
            .map(|(job, k)| (*job, k.app.clone(), k.home.clone()))
            .collect()
    }

    /// The home of `job`, if known here: this peer, the home of a unit it
    /// runs, or the one an advertisement named.
    pub fn home_for(&self, job: JobId) -> Option<P> {
        if self.homed.contains_key(&job) {
            return Some(self.me.clone());
        }
        self.running
            .iter()
            .find(|((j, _), _)| *j == job)
            .map(|(_, home)| home.clone())
            .or_else(|| self.known.get(&job).map(|k| k.home.clone()))
    }

    /// The driver finished dividing: `part` (if any) becomes `new_unit` at
    /// `requester`, starting from the donor's `shared` variables (the best
    /// bound so far: without it the part would search unpruned).
    pub fn divided(
        &mut self,
        job: JobId,
        new_unit: UnitId,
        requester: P,
        part: Option<Vec<u8>>,
        shared: SharedVars,
    ) {
        let Some(home) = self.home_for(job) else {
            return;
        };
        match part {
            Some(state) => {
                let app = self
                    .known
                    .get(&job)
                    .map(|k| k.app.clone())
                    .unwrap_or_default();
                let msg = JobMsg::Assign {
                    job,
                    unit: new_unit,
                    app,
                    state,
                    home,
                    shared,
                };
                self.outputs.push_back(JobOutput::Send {
                    to: requester,
                    msg,
                    bulk: true,
                });
            }
            None => self.send(
                home,
                JobMsg::StealDeclined {
                    job,
                    unit: new_unit,
                },
                false,
            ),
        }
    }

    /// A unit finished on a worker thread.
    pub fn unit_finished(&mut self, now: Instant, job: JobId, unit: UnitId, output: Vec<u8>) {
        if let Some(home) = self
            .running
            .remove(&(job, unit))
            .or_else(|| self.home_for(job))
        {
            self.send(home, JobMsg::UnitDone { job, unit, output }, true);
        }
        if !self.running.keys().any(|(j, _)| *j == job) {
            self.current_job = None;
        }
        // Ask for more at once.
        self.next_request_at = now;
        self.backoff = self.config.request_backoff_initial;
    }

    /// Work done by worker threads since the last report.
    pub fn report_progress(&mut self, job: JobId, work: u64) {
        if let Some(home) = self.home_for(job) {
            // On the bulk channel, like `UnitDone`: pipes keep order within
            // a channel, so a unit's last progress reaches the home before
            // its result does.
            self.send(home, JobMsg::Progress { job, work }, true);
        }
    }

    /// A worker thread improved a shared variable.
    pub fn shared_improved(&mut self, job: JobId, vars: SharedVars) {
        if let Some(home) = self.home_for(job) {
            self.send(home, JobMsg::Shared { job, vars }, false);
        }
    }

    /// Submits a job from this peer to `home`.
    pub fn submit(&mut self, job: JobId, app: String, params: Vec<u8>, home: P) {
        self.send(home, JobMsg::Submit { job, app, params }, false);
    }

    /// Asks `home` for the status of `job`.
    pub fn query(&mut self, job: JobId, home: P) {
        self.send(home, JobMsg::Query { job }, false);
    }

    fn forget_job(&mut self, job: JobId) {
        self.known.remove(&job);
        self.finished_jobs.insert(job);
        if self.finished_jobs.len() > self.config.max_retained_results {
            if let Some(first) = self.finished_jobs.iter().next().copied() {
                self.finished_jobs.remove(&first);
            }
        }
    }

    /// Units this peer is computing.
    pub fn running_units(&self) -> usize {
        self.running.len()
    }

    /// When the core next needs [`Jobs::handle_timeout`].
    pub fn poll_timeout(&self) -> Instant {
        self.next_tick
    }

    /// Advertises, requests work, reports progress, expires what is stale.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.next_tick = now + Duration::from_millis(50);
        self.known.retain(|_, k| k.expires > now);
        let jobs: Vec<JobId> = self.homed.keys().copied().collect();
        for job in jobs {
            let Some(record) = self.homed.get(&job) else {
                continue;
            };
            let running = record.state == JobState::Running;
            if running && record.next_advert_at <= now {
                self.advertise(now, job);
                // Keep our own advert fresh too.
                if let Some(k) = self.known.get_mut(&job) {
                    k.expires = now + self.config.advert_lifetime;
                }
            }
            // Steals whose donor never answered: give up on them.
            let stale: Vec<UnitId> = self
                .homed
                .get(&job)
                .map(|r| {
                    r.units
                        .iter()
                        .filter(|(_, u)| {
                            u.status == UnitStatus::Pending
                                && u.donor.is_some()
                                && now.saturating_duration_since(u.since)
                                    > self.config.steal_timeout
                        })
                        .map(|(id, _)| *id)
                        .collect()
                })
                .unwrap_or_default();
            for unit in stale {
                self.on_steal_declined(now, job, unit);
            }
            if let Some(record) = self.homed.get_mut(&job) {
                if running && record.next_progress_at <= now {
                    record.next_progress_at = now + self.config.progress_interval;
                    let submitter = record.submitter.clone();
                    if let Some(view) = self.view(now, job) {
                        self.send(submitter, JobMsg::Status { view }, false);
                    }
                }
            }
        }
        // Drop finished records past their retention, and the oldest over the cap.
        let retention = self.config.result_retention;
        self.homed.retain(|_, r| {
            r.finished
                .is_none_or(|f| now.saturating_duration_since(f) < retention)
        });
        while self.homed.len() > self.config.max_retained_results {
            let oldest = self
                .homed
                .iter()
                .filter(|(_, r)| r.finished.is_some())
                .min_by_key(|(_, r)| r.finished)
                .map(|(id, _)| *id);
            match oldest {
                Some(id) => {
                    self.homed.remove(&id);
                }
                None => break,
            }
        }
        self.maybe_request_work(now);
    }

    fn maybe_request_work(&mut self, now: Instant) {
        let free = self.config.cores.saturating_sub(self.running.len() as u32);
        if free == 0 || self.request_outstanding || now < self.next_request_at {
            return;
        }
        // One job at a time: stay with the current one, else take the oldest advert.
        let target = match self.current_job {
            Some(job) => self.known.get(&job).map(|k| (job, k.home.clone())),
            None => self
                .known
                .iter()
                .find(|(job, _)| !self.finished_jobs.contains(job))
                .map(|(job, k)| (*job, k.home.clone())),
        };
        let Some((job, home)) = target else {
            return;
        };
        self.request_outstanding = true;
        // If the answer is lost with a dead home, ask again later.
        self.next_request_at = now + self.config.steal_timeout * 2;
        self.send(home, JobMsg::WorkRequest { job, free }, false);
    }

    /// The request in flight failed (its home is unreachable): try later.
    pub fn request_failed(&mut self, now: Instant) {
        self.request_outstanding = false;
        self.next_request_at = now + self.config.request_backoff_max;
    }

    /// The next thing the driver must do.
    pub fn poll(&mut self) -> Option<JobOutput<P>> {
        self.outputs.pop_front()
    }

    /// Parses and validates a job for `app` with `args` (clear errors for an
    /// unknown app or bad parameters).
    pub fn prepare(&self, app: &str, args: &[String]) -> Result<Vec<u8>, AppError> {
        self.registry.get(app)?.parse_args(args)
    }
}

/// XOR distance between a job id and a peer's overlay key (its first 16 bytes).
fn xor_distance(job: JobId, key: &[u8; 32]) -> [u8; 16] {
    let mut d = [0u8; 16];
    for (i, byte) in d.iter_mut().enumerate() {
        *byte = key[i] ^ job.0[i];
    }
    d
}

#[cfg(test)]
mod tests;
