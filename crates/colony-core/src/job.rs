//! Divisible jobs across peers, fault tolerant (P³ seed 002 §2.1, §3; G2:P2P
//! seed 004 §4; seed 001 §III-C; on Colony's "every state has a home" rule).
//! One sans-IO core per peer plays every role.
//!
//! - **Home.** A job lives at its home: the `home_size` live peers whose
//!   hashed ids are XOR-closest to the job id. The closest is the
//!   *primary*; it keeps the job record — every unit with its holder, epoch
//!   and last checkpoint, the merged partial results, shared variables,
//!   counters — and copies every change to the *backups* (P³'s shadow
//!   managers) as a differential update. Anything a peer outside the home
//!   can observe (an acknowledgement, an assignment, a "stale", a shared
//!   bound, the result) is released only once a majority of the home's
//!   committed members, and of its latest ones, hold the change, so a
//!   takeover never contradicts what was said, and the two sides of a
//!   partition can never both make progress. A home of `2f + 1` members
//!   survives `f` lost or cut-off members; a lost member stays in the list
//!   until the next closest live peer has joined in its place.
//! - **Takeover.** When the primary leaves the live view or falls silent
//!   (it heartbeats when idle), the backups elect a successor under a
//!   higher *term*, Raft style: a member votes once per term, only for a
//!   candidate whose replica is at least as recent as its own, and not
//!   while it still hears its primary. Members campaign in the home's
//!   order, so the successor is normally the first live member of the
//!   record's home list, the one every peer computes. The new primary
//!   resynchronises the other members and reissues units whose holders are
//!   gone. When a closer peer joins, the primary hands the record over to
//!   it.
//! - **Checkpoints.** Every TTC, right after a divide, and before a better
//!   shared bound spreads, a worker sends its unit's state to the primary,
//!   which stores it per the job's [`CheckpointStorage`](crate::ft::CheckpointStorage): whole copies or
//!   Reed–Solomon shards on the home members (durable if asked), or only
//!   on the worker's disk. The worker keeps what it sent until the primary
//!   acknowledges it, and sends it again to a new primary.
//! - **Recovery.** A unit whose holder left the view is reissued, from its
//!   last checkpoint, under a new random *epoch*; reports carrying an older
//!   epoch are answered "stale" and that copy stops. A unit is merged once
//!   per unit id, so a slow "dead" worker cannot count twice. A worker that
//!   leaves gracefully hands its units back first.
//! - **Brokered work stealing.** An idle peer asks the primary for work; it
//!   gets a queued unit, or the primary asks the busiest holder to divide.
//!   The donor sends the part *to the primary* together with its own
//!   remaining state, so a part is recorded (and checkpointed) before
//!   anyone runs it; the primary then assigns it to the requester.
//!
//! Messages travel on reliable pipes; the driver passes them in with
//! [`Jobs::handle`] ([`JobInput`]) and sends what [`Jobs::poll`] returns;
//! [`Jobs::poll_timeout`] says when to call [`Jobs::handle_timeout`], which
//! runs only the timers due (see the `timers` module).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;
use std::time::{Duration, Instant};

use rand::rngs::SmallRng;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};

use crate::divisible::{AppError, AppRegistry};
use crate::ft::FaultTolerance;
use crate::PeerKey;

mod authorize;
mod context;
mod decline;
mod limits;
mod messages;
mod pieces;
mod record;
mod scheduler;
mod takeover;
mod timers;
mod views;
mod worker;

use crate::pieces::PieceStore;
pub use crate::pieces::{Piece, PieceData};
use authorize::Parked;
pub use authorize::{Refusal, SubmitPolicy};
use context::{Commit, HomeCtx};
use decline::{DeclinedJobs, Declines};
pub use limits::{MessageKind, MessageLimits, TooLarge};
pub use messages::{
    JobEvent, JobInput, JobMsg, JobOutput, Report, SentAssignment, SubmitOptions, UnitEvent,
};
pub use pieces::PieceKey;
use pieces::{Restoring, Staged, LOCAL_INDEX};
use record::{
    Assignment, CheckpointRef, HomeState, UnitRec, UnitStatus, RECORD_INDEX, RECORD_UNIT,
};
pub use record::{Delta, JobHomeMsg, Record};
use scheduler::{child_id, Steal};
use timers::{HomeDue, Timer, Timers};
pub use views::{Contribution, Declined, JobState, JobStats, JobView, MajorityLost};
pub use worker::LocalUnit;
use worker::WorkerUnit;

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
            *byte = u8::from_str_radix(s.get(2 * i..2 * i + 2).unwrap_or("-"), 16)
                .map_err(|_| format!("not a job id: {s:?}"))?;
        }
        Ok(JobId(id))
    }
}

/// A unit's id within its job, assigned by the primary.
pub type UnitId = u64;

/// Which incarnation of a unit a worker runs: random, new at every
/// (re)assignment, so two copies of a unit never share one.
pub type Epoch = u64;

/// Tuning of the job core.
#[derive(Clone, Debug, PartialEq)]
pub struct JobConfig {
    /// Units this peer computes at once.
    pub cores: u32,
    /// How often a primary re-advertises its running jobs.
    pub advert_interval: Duration,
    /// Lifetime of an advertisement; a job not re-advertised within it is
    /// forgotten by idle peers.
    pub advert_lifetime: Duration,
    /// First pause of an idle peer after "no work"; doubles to the cap.
    pub request_backoff_initial: Duration,
    /// Cap of that pause.
    pub request_backoff_max: Duration,
    /// How long a primary waits for a donor to divide before giving up.
    pub steal_timeout: Duration,
    /// How long an assigned unit may stay unconfirmed by its worker, once
    /// the pipe delivered it, before it is reissued.
    pub assign_timeout: Duration,
    /// How long an assignment the pipe has not settled (delivered or
    /// failed) may stay so before its unit is reissued anyway: a backstop
    /// longer than the pipe's own send deadline.
    pub assign_transit_timeout: Duration,
    /// How long a queued unit (one reissued after its worker was lost, or
    /// handed back) waits for an idle worker to ask for it before the
    /// primary pushes it to the job's least-loaded worker, which runs it
    /// besides its own units — at most one such extra unit per worker at a
    /// time. A little over `request_backoff_max`, so every idle worker has
    /// asked once.
    pub push_queued_after: Duration,
    /// How often a worker re-sends reports its primary has not acknowledged.
    pub resend_interval: Duration,
    /// How much later each home member campaigns than the one before it in
    /// the home's order when the primary is lost (the first live member
    /// campaigns at once).
    pub election_stagger: Duration,
    /// How long a candidate collects votes before it gives up and tries
    /// again later.
    pub election_timeout: Duration,
    /// How often a primary tells its backups it is there (when it has no
    /// update to send).
    pub heartbeat_interval: Duration,
    /// How long a backup goes without hearing from its primary before it
    /// campaigns, even if membership still sees the primary (a restarted
    /// peer has lost its role).
    pub primary_silence: Duration,
    /// How long a primary waits for the holders of a checkpoint it must
    /// restore to be back in the view before it declares the checkpoint lost
    /// (and the job failed).
    pub restore_patience: Duration,
    /// How often the primary sends progress to the submitter.
    pub progress_interval: Duration,
    /// How long a home member waits for a majority of its home's members
    /// to be back in the view before it fails the job (no change can be
    /// committed without them).
    pub majority_patience: Duration,
    /// How often the primary asks each worker the record names as running
    /// a unit which units it holds; a unit the worker does not hold is
    /// reissued from its last checkpoint.
    pub holdings_interval: Duration,
    /// How long a finished job's result stays retrievable.
    pub result_retention: Duration,
    /// Most finished jobs retained.
    pub max_retained_results: usize,
    /// Most jobs whose record this peer holds (as primary or backup).
    pub max_active_jobs: usize,
    /// Most advertised jobs remembered; further adverts are ignored until
    /// some expire.
    pub max_known_jobs: usize,
    /// Most reports a worker keeps waiting for acknowledgement, per unit.
    pub max_unacked_reports: usize,
    /// Largest job message of each kind; a job whose result outgrows
    /// `limits.result_bytes` fails.
    pub limits: MessageLimits,
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
            assign_timeout: Duration::from_secs(3),
            assign_transit_timeout: Duration::from_secs(60),
            push_queued_after: Duration::from_millis(150),
            resend_interval: Duration::from_millis(500),
            election_stagger: Duration::from_millis(200),
            election_timeout: Duration::from_millis(1000),
            heartbeat_interval: Duration::from_millis(250),
            primary_silence: Duration::from_millis(1500),
            restore_patience: Duration::from_secs(30),
            progress_interval: Duration::from_millis(250),
            holdings_interval: Duration::from_secs(2),
            majority_patience: Duration::from_secs(30),
            result_retention: Duration::from_secs(3600),
            max_retained_results: 1000,
            max_active_jobs: 64,
            max_known_jobs: 1024,
            max_unacked_reports: 64,
            limits: MessageLimits::default(),
        }
    }
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
    key_of: fn(&P) -> [u8; 32],
    rng: SmallRng,
    /// Job records this peer holds, as primary or backup.
    homes: crate::home::Homes<JobId, P, HomeState<P>>,
    /// Checkpoint pieces this peer holds for home primaries.
    pieces: PieceStore<JobId, P>,
    known: BTreeMap<JobId, KnownJob<P>>,
    /// Units computing here.
    running: BTreeMap<(JobId, UnitId), WorkerUnit<P>>,
    /// The job this peer works for (one at a time).
    current_job: Option<JobId>,
    next_request_at: Instant,
    backoff: Duration,
    finished_jobs: BTreeSet<JobId>,
    /// Live members (not this peer) and their loads.
    loads: BTreeMap<P, f32>,
    /// The same members, as a set: "is it live?" is asked for every unit,
    /// steal and backup on every membership change, so it must not be a
    /// scan of the whole view.
    members: BTreeSet<P>,
    /// Members added by [`JobInput::Member`] since the last
    /// [`JobInput::MembersChanged`], in the order they came.
    newcomers: Vec<P>,
    /// Members suspected but not yet declared dead.
    suspects: BTreeSet<P>,
    /// The members or the suspects changed since the last
    /// [`JobInput::MembersChanged`]: only then are homes and units checked
    /// again (a load refresh changes neither).
    members_dirty: bool,
    leaving: bool,
    /// Computing paused ([`JobInput::Pause`]): no units run here.
    paused: bool,
    outputs: VecDeque<JobOutput<P>>,
    /// Deadlines: see the `timers` module.
    timers: Timers,
    /// Homes due for a pass soon (a state they depend on changed), when.
    home_soon: BTreeMap<JobId, Instant>,
    /// The latest time an input or timeout brought.
    clock: Instant,
    /// Who may submit jobs here.
    submit_policy: SubmitPolicy<P>,
    /// Messages from senders not yet in the view.
    parked: Parked<P>,
    /// Messages refused so far.
    refused_messages: u64,
    /// Local checkpoints that could not be encoded (and were not written).
    encode_errors: u64,
    /// Durable job records on disk: the (term, update) of each.
    records_on_disk: BTreeMap<JobId, (u64, u64)>,
    /// When to write changed durable records next.
    next_record_persist: Instant,
    /// Pieces this peer held that were found damaged on disk, to report to
    /// their jobs' primaries once there is a view.
    lost_pieces: Vec<PieceKey>,
    /// Jobs this peer refused to work on, with the primary it told.
    declined_jobs: DeclinedJobs<P>,
}

impl<P: PeerKey> Jobs<P> {
    /// A job core for peer `me` running the apps of `registry`; `key_of`
    /// gives a peer's position in the overlay's key space, `seed` seeds the
    /// epochs it draws.
    pub fn new(
        me: P,
        config: JobConfig,
        registry: AppRegistry,
        now: Instant,
        seed: u64,
        key_of: fn(&P) -> [u8; 32],
    ) -> Self {
        let homes = crate::home::Homes::new(
            me.clone(),
            crate::home::HomeConfig {
                election_stagger: config.election_stagger,
                election_timeout: config.election_timeout,
                heartbeat_interval: config.heartbeat_interval,
                primary_silence: config.primary_silence,
                recheck_interval: Duration::from_millis(20),
                max_homes: config.max_active_jobs + config.max_retained_results,
                lease: config.heartbeat_interval * 3 / 2,
                ..crate::home::HomeConfig::default()
            },
            Box::new(move |job: &JobId, p: &P| u128::from_be_bytes(xor_distance(*job, &key_of(p)))),
            seed ^ 0x486f_6d65_7321,
        );
        Jobs {
            me,
            backoff: config.request_backoff_initial,
            config,
            registry,
            key_of,
            rng: SmallRng::seed_from_u64(seed),
            homes,
            pieces: PieceStore::default(),
            known: BTreeMap::new(),
            running: BTreeMap::new(),
            current_job: None,
            next_request_at: now,
            finished_jobs: BTreeSet::new(),
            loads: BTreeMap::new(),
            members: BTreeSet::new(),
            newcomers: Vec::new(),
            members_dirty: false,
            suspects: BTreeSet::new(),
            leaving: false,
            paused: false,
            outputs: VecDeque::new(),
            timers: Timers::default(),
            home_soon: BTreeMap::new(),
            clock: now,
            submit_policy: SubmitPolicy::default(),
            parked: Parked::default(),
            refused_messages: 0,
            encode_errors: 0,
            records_on_disk: BTreeMap::new(),
            next_record_persist: now,
            lost_pieces: Vec::new(),
            declined_jobs: DeclinedJobs::default(),
        }
    }

    /// Sets who may submit jobs to this peer (default: members of the view).
    pub fn set_submit_policy(&mut self, policy: SubmitPolicy<P>) {
        self.submit_policy = policy;
    }

    /// Messages refused so far because their sender may not send them.
    pub fn refused_messages(&self) -> u64 {
        self.refused_messages
    }

    /// Local checkpoints that could not be encoded, and so were not written.
    pub fn encode_errors(&self) -> u64 {
        self.encode_errors
    }

    /// The applications this peer can run.
    pub fn registry(&self) -> &AppRegistry {
        &self.registry
    }

    /// Membership changed: the live members (not including this peer) and
    /// their load averages. Homes are recomputed: primaries hand over to
    /// closer newcomers, backups take over from lost primaries, units of
    /// lost workers are reissued, and workers re-send unacknowledged
    /// reports to their job's new primary.
    fn set_members(&mut self, now: Instant, members: Vec<(P, f32)>) {
        // A driver calls this on every membership event, often with the
        // list it gave last time (a message brings many changes at once,
        // one event each): then the checks run again only if the suspects
        // changed (`set_suspects` comes first).
        let unchanged = members.len() == self.loads.len()
            && members
                .iter()
                .zip(&self.loads)
                .all(|((p, load), (q, known))| p == q && load.to_bits() == known.to_bits());
        if unchanged {
            self.refresh_members(now);
            return;
        }
        self.newcomers.clear();
        self.members_dirty = false;
        let newcomers: Vec<P> = members
            .iter()
            .map(|(p, _)| p.clone())
            .filter(|p| !self.members.contains(p))
            .collect();
        self.members = members.iter().map(|(p, _)| p.clone()).collect();
        self.homes.set_live(self.members.iter().cloned());
        self.loads = members.into_iter().collect();
        self.members_updated(now, newcomers);
    }

    /// One member's change, for a driver that follows the view change by
    /// change ([`Membership::take_changed`](crate::membership::Membership::take_changed))
    /// rather than passing the whole list: `load` is its load average if
    /// it is alive, `None` if it is not (suspect, dead, gone). Takes effect
    /// at the next [`JobInput::MembersChanged`]; a sequence of these and then
    /// that input does what [`JobInput::Members`] with the resulting list
    /// does, in O(changes) instead of O(members).
    fn update_member(&mut self, peer: P, load: Option<f32>) {
        if peer == self.me {
            return;
        }
        self.homes.update_member(peer.clone(), load.is_some());
        match load {
            Some(load) => {
                if self.members.insert(peer.clone()) {
                    self.newcomers.push(peer.clone());
                    self.members_dirty = true;
                }
                self.loads.insert(peer, load);
            }
            None => {
                if self.members.remove(&peer) {
                    self.members_dirty = true;
                    self.newcomers.retain(|p| *p != peer);
                }
                self.loads.remove(&peer);
            }
        }
    }

    /// The members changed ([`JobInput::Member`]) or may have: homes are
    /// recomputed, as [`JobInput::Members`] does, if the members or the
    /// suspects did change.
    fn refresh_members(&mut self, now: Instant) {
        if std::mem::take(&mut self.members_dirty) {
            let newcomers = std::mem::take(&mut self.newcomers);
            self.members_updated(now, newcomers);
        }
    }

    /// What follows a change of the members: `newcomers` joined.
    fn members_updated(&mut self, now: Instant, newcomers: Vec<P>) {
        self.reconcile_homes(now);
        // Tell newcomers about running jobs at once, so they get work fast.
        let adverts: Vec<JobMsg<P>> = self
            .homes
            .iter()
            .filter(|(_, h)| h.is_primary() && h.record.state == JobState::Running)
            .map(|(job, h)| self.advert(*job, &h.record.app, h.submitter()))
            .collect();
        for msg in adverts {
            for to in &newcomers {
                self.send(to.clone(), msg.clone(), false);
            }
        }
        // Reports waiting for a primary that is gone go to its successor.
        let keys: Vec<(JobId, UnitId)> = self.running.keys().copied().collect();
        for (job, unit) in keys {
            let primary = self.primary_of(job);
            let changed = self
                .running
                .get(&(job, unit))
                .is_some_and(|u| u.sent_to.as_ref() != Some(&primary));
            if changed {
                self.resend_reports(now, job, unit);
            }
        }
        self.release_parked(now);
        self.report_lost_pieces();
    }

    /// Members suspected now, not in [`JobInput::Members`]' list: units of
    /// jobs without checkpoints stay with them until they are declared dead
    /// (reissuing would fail such a job on a false suspicion); everything
    /// else treats them as gone. Call before `set_members`.
    fn set_suspects(&mut self, suspects: Vec<P>) {
        let suspects: BTreeSet<P> = suspects.into_iter().collect();
        if suspects != self.suspects {
            self.suspects = suspects;
            self.members_dirty = true;
        }
    }

    /// The live peers, this one included, XOR-closest to `job`: its home.
    pub fn home_of(&self, job: JobId, size: usize) -> Vec<P> {
        let size = size.max(1);
        // Each key is computed once, and only the `size` closest are
        // sorted: this runs for every unit on every membership change.
        // Ties (equal key prefixes) keep the view's order, as a stable
        // sort of the whole view would.
        let mut candidates: Vec<([u8; 16], usize, &P)> = std::iter::once(&self.me)
            .chain(&self.members)
            .enumerate()
            .map(|(i, p)| (xor_distance(job, &(self.key_of)(p)), i, p))
            .collect();
        let by_distance =
            |a: &([u8; 16], usize, &P), b: &([u8; 16], usize, &P)| (a.0, a.1).cmp(&(b.0, b.1));
        if candidates.len() > size {
            candidates.select_nth_unstable_by(size - 1, by_distance);
            candidates.truncate(size);
        }
        candidates.sort_unstable_by(by_distance);
        candidates.into_iter().map(|(_, _, p)| p.clone()).collect()
    }

    /// The primary of `job` as this peer sees it now.
    fn primary_of(&self, job: JobId) -> P {
        let live = |p: &P| *p == self.me || self.members.contains(p);
        // A home member's record names the primary it follows.
        if let Some(h) = self.homes.get(&job) {
            if let Some(primary) = h.primary().filter(|p| live(p)) {
                return primary.clone();
            }
        }
        // Else the primary that advertised the job last.
        if let Some(k) = self.known.get(&job).filter(|k| live(&k.home)) {
            return k.home.clone();
        }
        self.probable_home(job)
    }

    /// `job`'s home size, as a unit of it running here or its record here
    /// says.
    fn home_size_of(&self, job: JobId) -> Option<u8> {
        self.running
            .iter()
            .find(|((j, _), _)| *j == job)
            .map(|(_, u)| u.ft.home_size)
            .or_else(|| self.homes.get(&job).map(|h| h.record.ft.home_size))
    }

    /// Where to ask about `job` if no advert names its home: the live peer,
    /// this one included, closest to the job id now.
    pub fn probable_home(&self, job: JobId) -> P {
        // The first of `home_of(job, 1)`, by one scan that keeps nothing:
        // it runs for every unit running here on every membership change.
        std::iter::once(&self.me)
            .chain(&self.members)
            .enumerate()
            .min_by_key(|(i, p)| (xor_distance(job, &(self.key_of)(p)), *i))
            .map_or_else(|| self.me.clone(), |(_, p)| p.clone())
    }

    fn advert(&self, job: JobId, app: &str, submitter: &P) -> JobMsg<P> {
        JobMsg::Advert {
            job,
            app: app.to_string(),
            home: self.me.clone(),
            lifetime_ms: self.config.advert_lifetime.as_millis() as u64,
            submitter: submitter.clone(),
        }
    }

    /// Handles a job message from `from`, once it is checked against who
    /// may send it (see the `authorize` module); refused messages are
    /// counted ([`Jobs::refused_messages`]) and reported as
    /// [`JobEvent::Refused`].
    fn handle_message(&mut self, now: Instant, from: P, msg: JobMsg<P>) {
        self.admit(now, from, msg);
    }

    /// Hands an admitted message to its handler.
    fn dispatch(&mut self, now: Instant, from: P, msg: JobMsg<P>) {
        match msg {
            JobMsg::Submit {
                job,
                app,
                params,
                ft,
                deadline_ms,
                keep_namespace,
            } => self.on_submit(now, from, job, app, params, ft, deadline_ms, keep_namespace),
            JobMsg::Advert {
                job,
                app,
                home,
                lifetime_ms,
                submitter,
            } => {
                if self.finished_jobs.contains(&job) {
                    return;
                }
                if self.refuses_advert(job, &app, &home, &submitter) {
                    // Not seen, so its assignments are refused too.
                    return;
                }
                if !self.known.contains_key(&job) && self.known.len() >= self.config.max_known_jobs
                {
                    return;
                }
                let expires = now + Duration::from_millis(lifetime_ms.min(60_000));
                let moved = self.known.get(&job).is_some_and(|k| k.home != home);
                self.known.insert(job, KnownJob { app, home, expires });
                if moved {
                    self.primary_changed(now, job);
                }
            }
            JobMsg::WorkRequest { job, free } => self.on_work_request(now, from, job, free),
            JobMsg::NoWork { job, finished } => {
                if finished {
                    self.forget_job(job);
                }
                self.next_request_at = now + self.backoff;
                self.backoff = (self.backoff * 2).min(self.config.request_backoff_max);
            }
            JobMsg::StealRequest { job, steal } => self.on_steal_request(from, job, steal),
            JobMsg::StealDeclined { job, steal } => self.on_steal_declined(now, job, steal),
            JobMsg::Assign {
                job,
                unit,
                epoch,
                app,
                state,
                shared,
                ft,
            } => self.on_assign(now, from, job, unit, epoch, app, state, shared, ft),
            JobMsg::Report {
                job,
                unit,
                epoch,
                seq,
                after,
                report,
            } => self.on_report(now, from, job, unit, epoch, seq, after, report),
            JobMsg::Ack {
                job,
                unit,
                epoch,
                seq,
            } => self.on_ack(now, job, unit, epoch, seq),
            JobMsg::Stale { job, unit, epoch } => self.on_stale(job, unit, epoch),
            JobMsg::Progress { job, work } => self.on_progress(now, from, job, work),
            JobMsg::Shared { job, vars } => {
                if self.running.keys().any(|(j, _)| *j == job) {
                    self.outputs
                        .push_back(JobOutput::SharedChanged { job, vars });
                }
            }
            JobMsg::Improved { job, vars } => self.on_improved(now, job, vars),
            JobMsg::Status { view } => {
                if !matches!(view.state, JobState::Running) {
                    self.finished_jobs.insert(view.job);
                    self.trim_finished_jobs();
                }
                self.outputs.push_back(JobOutput::Status(view));
            }
            JobMsg::Query { job } => match self.view(now, job) {
                Some(view) => self.send(from, JobMsg::Status { view }, false),
                None => self.send(from, JobMsg::Unknown { job }, false),
            },
            JobMsg::Unknown { job } => self.outputs.push_back(JobOutput::Unknown(job)),
            JobMsg::Home(msg) => {
                self.homes.handle(now, from, msg);
                self.drain_homes(now);
            }
            JobMsg::StorePiece {
                job,
                unit,
                piece,
                durable,
                keep,
            } => {
                self.pieces.keep(job, unit, keep);
                self.store_piece_here(now, from, job, unit, piece, durable)
            }
            JobMsg::PieceStored {
                job,
                unit,
                epoch,
                version,
                index,
            } => self.on_piece_stored(now, from, job, unit, epoch, version, index),
            JobMsg::FetchPieces { job, unit } => {
                self.pieces.touch(job, now);
                let pieces = self.pieces.get(job, unit);
                self.send(from, JobMsg::Pieces { job, unit, pieces }, true);
            }
            JobMsg::Pieces { job, unit, pieces } => self.on_pieces(now, from, job, unit, pieces),
            JobMsg::Cancel { job } => self.on_cancel(now, from, job),
            JobMsg::PiecesLost { job, unit } => self.on_pieces_lost(from, job, unit),
            JobMsg::CheckpointNow { job, unit, epoch } => {
                if let Some(w) = self.running.get_mut(&(job, unit)) {
                    if w.epoch == epoch {
                        w.next_checkpoint_at = now;
                    }
                }
            }
            JobMsg::CancelReply { job, refused } => {
                self.outputs
                    .push_back(JobOutput::CancelAnswer { job, refused });
            }
            JobMsg::TooLarge {
                job,
                unit,
                epoch,
                reason,
            } => self.on_too_large(now, from, job, unit, epoch, reason),
            JobMsg::Holds { job, token } => {
                let units = self
                    .running
                    .iter()
                    .filter(|((j, _), _)| *j == job)
                    .map(|((_, unit), w)| (*unit, w.epoch))
                    .collect();
                self.send(from, JobMsg::Held { job, token, units }, false);
            }
            JobMsg::Held { job, token, units } => self.on_held(now, from, job, token, units),
            JobMsg::Declined { job, reason } => self.on_declined(from, job, &reason),
        }
    }

    /// Queues a message; one addressed to this peer itself is looped back
    /// by the driver.
    fn send(&mut self, to: P, msg: JobMsg<P>, bulk: bool) {
        self.outputs.push_back(JobOutput::Send { to, msg, bulk });
    }

    fn event(&mut self, event: JobEvent<P>) {
        self.outputs.push_back(JobOutput::Event(event));
    }

    /// Submits a job from this peer to its primary, which is returned.
    fn submit(
        &mut self,
        _now: Instant,
        job: JobId,
        app: String,
        params: Vec<u8>,
        ft: FaultTolerance,
        options: SubmitOptions,
    ) -> P {
        let home = self.submit_home(job, &ft);
        let SubmitOptions {
            deadline,
            keep_namespace,
        } = options;
        self.send(
            home.clone(),
            JobMsg::Submit {
                job,
                app,
                params,
                ft,
                deadline_ms: deadline.map(|d| d.as_millis().min(u128::from(u64::MAX)) as u64),
                keep_namespace,
            },
            false,
        );
        home
    }

    /// The peer a job submitted here with `ft` goes to: its primary as this
    /// peer computes it.
    pub fn submit_home(&self, job: JobId, ft: &FaultTolerance) -> P {
        self.home_of(job, usize::from(ft.home_size))
            .into_iter()
            .next()
            .unwrap_or_else(|| self.me.clone())
    }

    /// Asks `job`'s primary to cancel it. Only the job's submitter, or this
    /// peer when it is the primary (its operator), may; the answer comes
    /// as [`JobOutput::CancelAnswer`].
    fn cancel(&mut self, job: JobId) {
        let primary = self.primary_of(job);
        self.send(primary, JobMsg::Cancel { job }, false);
    }

    /// Asks `to` for the status of `job`.
    fn query(&mut self, job: JobId, to: P) {
        self.send(to, JobMsg::Query { job }, false);
    }

    fn forget_job(&mut self, job: JobId) {
        self.known.remove(&job);
        self.finished_jobs.insert(job);
        self.trim_finished_jobs();
    }

    /// Keeps at most `max_retained_results` finished jobs in mind: any
    /// peer can announce one.
    fn trim_finished_jobs(&mut self) {
        if self.finished_jobs.len() > self.config.max_retained_results {
            if let Some(first) = self.finished_jobs.iter().next().copied() {
                self.finished_jobs.remove(&first);
            }
        }
    }

    /// Jobs this peer knows of by advertisement: (job, app, home).
    pub fn known_jobs(&self) -> Vec<(JobId, String, P)> {
        self.known
            .iter()
            .map(|(job, k)| (*job, k.app.clone(), k.home.clone()))
            .collect()
    }

    /// The primary of `job`, if this peer knows the job: a home member, a
    /// worker of it, or an advert named it.
    pub fn home_for(&self, job: JobId) -> Option<P> {
        if self.homes.contains_key(&job) || self.running.keys().any(|(j, _)| *j == job) {
            return Some(self.primary_of(job));
        }
        self.known.get(&job).map(|k| k.home.clone())
    }

    /// When the core next needs [`Jobs::handle_timeout`]: the earliest
    /// deadline of its timer table, `None` when nothing is due ever (an
    /// idle peer).
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.next()
    }

    /// Runs the timers due at `now`, and only those: checkpoints and
    /// re-sends of units, the home core's timers, each home's deadlines,
    /// work requests, expiries.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.clock = self.clock.max(now);
        let due = self.timers.take_due(now);
        for timer in &due {
            match *timer {
                Timer::Expiry => {
                    self.expire_parked(now);
                    self.known.retain(|_, k| k.expires > now);
                }
                Timer::Unit(job, unit) => self.unit_timeout(now, job, unit),
                Timer::Homes => self.homes_timeout(now),
                Timer::Home(job) => {
                    self.home_soon.remove(&job);
                    self.home_timeout(now, job);
                }
                Timer::WorkRequest => self.maybe_request_work(now),
            }
        }
        self.rearm(now);
        // A timer that ran and is due again at once waits a pass delay:
        // never a busy loop at one instant.
        for timer in due {
            if self.timers.deadline(timer).is_some_and(|at| at <= now) {
                self.timers.set(timer, Some(now + timers::HOME_PASS_DELAY));
            }
        }
    }

    /// Applies one input; what it causes comes out of [`Jobs::poll`].
    pub fn handle(&mut self, now: Instant, input: JobInput<P>) {
        self.clock = self.clock.max(now);
        match input {
            JobInput::Message { from, msg } => self.handle_message(now, from, msg),
            JobInput::SendFailed { to, msg } => self.send_failed(now, to, msg),
            JobInput::AssignSettled { sent, delivered } => {
                self.assign_settled(now, sent, delivered)
            }
            JobInput::Submit {
                job,
                app,
                params,
                ft,
                options,
            } => {
                self.submit(now, job, app, params, ft, options);
            }
            JobInput::Cancel { job } => self.cancel(job),
            JobInput::Query { job, to } => self.query(job, to),
            JobInput::Members(members) => self.set_members(now, members),
            JobInput::Member { peer, load } => self.update_member(peer, load),
            JobInput::MembersChanged => self.refresh_members(now),
            JobInput::Suspects(suspects) => self.set_suspects(suspects),
            JobInput::Unit(event) => self.unit_event(now, event),
            JobInput::Persisted {
                key,
                epoch,
                version,
            } => self.persisted(now, key, epoch, version),
            JobInput::TooLarge { to, msg, error } => self.send_too_large(now, to, msg, &error),
            JobInput::Leave => self.leave(now),
            JobInput::Pause => self.pause(),
            JobInput::Resume => self.resume(now),
        }
        self.homes_touched(now);
        self.rearm(now);
    }

    /// What a unit running here reported, routed to the worker side.
    fn unit_event(&mut self, now: Instant, event: UnitEvent) {
        match event {
            UnitEvent::Divided {
                job,
                unit,
                part,
                remaining,
                shared,
            } => self.divided(now, job, unit, part, remaining, shared),
            UnitEvent::Checkpointed {
                job,
                unit,
                state,
                shared,
            } => self.checkpointed(now, job, unit, state, shared),
            UnitEvent::Stopped { job, unit, state } => self.unit_stopped(now, job, unit, state),
            UnitEvent::Finished { job, unit, output } => self.unit_finished(now, job, unit, output),
            UnitEvent::Failed { job, unit, error } => self.unit_failed(now, job, unit, error),
            UnitEvent::Progress { job, work } => self.report_progress(job, work),
        }
    }

    /// A message could not be delivered to `to` (it is dead or the pipe
    /// gave up).
    fn send_failed(&mut self, now: Instant, to: P, msg: JobMsg<P>) {
        match msg {
            JobMsg::WorkRequest { job, .. } => {
                self.next_request_at = now + self.config.request_backoff_max;
                // Ask the job's primary as this peer computes it next time.
                let next = self.probable_home(job);
                if let Some(k) = self.known.get_mut(&job) {
                    if k.home == to {
                        k.home = next;
                    }
                }
            }
            JobMsg::Query { job } => self.outputs.push_back(JobOutput::Unknown(job)),
            JobMsg::Cancel { job } => self.outputs.push_back(JobOutput::CancelAnswer {
                job,
                refused: Some(format!("the job's primary {to:?} cannot be reached")),
            }),
            // Reports stay queued and are re-sent to the next primary.
            _ => {}
        }
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
