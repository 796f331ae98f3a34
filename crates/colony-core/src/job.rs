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
//!   which stores it per the job's [`CheckpointStorage`]: whole copies or
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
//! [`Jobs::handle_message`] and sends what [`Jobs::poll`] returns.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;
use std::time::{Duration, Instant};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::divisible::{AppError, AppRegistry, SharedVars};
use crate::ft::{CheckpointStorage, FaultTolerance};
use crate::PeerKey;

mod authorize;
mod home;
mod limits;

use authorize::Parked;
pub use authorize::{Refusal, SubmitPolicy};
use home::HomeState;
pub use home::{Delta, JobHomeMsg, Piece, PieceData, PieceKey, Record};
pub use limits::{MessageKind, MessageLimits, TooLarge};

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

/// Most lost pieces remembered for reporting.
const MAX_LOST_PIECES: usize = 1024;

/// How far past the last report on its disk a restarted worker numbers its
/// reports: beyond any its previous life could have sent.
const RESTART_SEQ_GAP: u64 = 1 << 32;

/// Longest wait between two checkpoints of a unit: a job's TTC comes from
/// a peer, and a longer one (up to `Duration::MAX`) cannot be added to an
/// `Instant`.
const MAX_TTC: Duration = Duration::from_secs(365 * 24 * 3600);

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
    /// How long an assigned unit may stay unconfirmed by its worker before
    /// it is reissued.
    pub assign_timeout: Duration,
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

/// Counters of one job, as the primary sees them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobStats {
    /// Units named so far (the root plus one per successful divide).
    pub units: u64,
    /// Units merged.
    pub units_done: u64,
    /// Successful steals.
    pub steals: u64,
    /// Work counted by the application (nodes explored, rows computed).
    pub work: u64,
    /// Peers that ran at least one unit.
    pub peers_used: u64,
    /// Checkpoints stored.
    pub checkpoints: u64,
    /// Bytes of checkpoint state received.
    pub checkpoint_bytes: u64,
    /// Units reissued after their holder was lost or left.
    pub reissued: u64,
    /// Times another home member took the primary role over.
    pub takeovers: u64,
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
    /// Its primary, as the peer answering sees it.
    pub home: P,
    /// The home's members, primary first.
    pub home_members: Vec<P>,
    /// Who submitted it.
    pub submitter: P,
    /// Its fault-tolerance settings.
    pub ft: FaultTolerance,
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
        #[serde(with = "serde_bytes")]
        result: Vec<u8>,
    },
    /// The job could not run.
    Failed {
        /// Why.
        reason: String,
    },
    /// The job was cancelled (by its submitter, the operator of its
    /// primary, or its deadline) before it finished.
    Cancelled {
        /// By whom, or why.
        reason: String,
    },
}

/// What a worker tells the primary about one of its units. Reports are
/// numbered per unit epoch and kept by the worker until acknowledged.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Report {
    /// The worker runs the unit (protocol `none`, or local checkpoints).
    Started,
    /// The unit's state now.
    Checkpoint {
        /// Serialised state.
        #[serde(with = "serde_bytes")]
        state: Vec<u8>,
        /// The worker's shared variables (spread once the state is stored).
        shared: SharedVars,
    },
    /// The state is on the worker's disk (local storage), as its local
    /// piece `version`; every divide made before it is reported first.
    LocalCheckpoint {
        /// The worker's shared variables.
        shared: SharedVars,
        /// The local piece now on disk.
        version: u64,
    },
    /// The unit divided: `part` becomes a new unit, `remaining` is the
    /// unit's own state after giving it away.
    Divided {
        /// The steal this answers, if the primary still remembers it.
        steal: u64,
        /// The part given away.
        #[serde(with = "serde_bytes")]
        part: Vec<u8>,
        /// What the unit kept (its checkpoint).
        #[serde(with = "serde_bytes")]
        remaining: Vec<u8>,
        /// The donor's shared variables.
        shared: SharedVars,
    },
    /// The unit is finished.
    Done {
        /// Its partial result.
        #[serde(with = "serde_bytes")]
        output: Vec<u8>,
    },
    /// The worker is leaving: compute this state elsewhere.
    HandBack {
        /// Serialised state.
        #[serde(with = "serde_bytes")]
        state: Vec<u8>,
    },
    /// The worker is back after a restart with this unit on its disk (local
    /// storage), as its local piece `version`; the divides that piece still
    /// waited to report are re-sent first. The primary answers with an
    /// acknowledgement (the worker runs the unit again, under the same
    /// epoch) or "stale".
    Resume {
        /// Serialised state.
        #[serde(with = "serde_bytes")]
        state: Vec<u8>,
        /// Its shared variables.
        shared: SharedVars,
        /// The local piece it comes from.
        version: u64,
    },
}

/// Messages between job cores.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(bound(deserialize = "P: DeserializeOwned + Ord"))]
pub enum JobMsg<P> {
    /// Submitter → primary: run this job.
    Submit {
        /// Id chosen by the submitter.
        job: JobId,
        /// Application name.
        app: String,
        /// Serialised parameters.
        params: Vec<u8>,
        /// Fault-tolerance settings.
        ft: FaultTolerance,
        /// Cancel the job if it runs longer than this, in ms since
        /// submission (`colony run --deadline`).
        deadline_ms: Option<u64>,
    },
    /// Primary → everyone: a job needs workers.
    Advert {
        /// The job.
        job: JobId,
        /// Its application.
        app: String,
        /// Where to ask for work.
        home: P,
        /// How long the advert stays valid, ms.
        lifetime_ms: u64,
        /// Who submitted the job (a peer that accepts jobs only from some
        /// peers works only for theirs).
        submitter: P,
    },
    /// Worker → primary: I have `free` idle cores for this job.
    WorkRequest {
        /// The job.
        job: JobId,
        /// Idle cores.
        free: u32,
    },
    /// Primary → worker: nothing to hand out now.
    NoWork {
        /// The job.
        job: JobId,
        /// Whether the job is over (stop asking).
        finished: bool,
    },
    /// Primary → donor: divide a unit of this job and report the part.
    StealRequest {
        /// The job.
        job: JobId,
        /// Token to quote in the answer.
        steal: u64,
    },
    /// Donor → primary: nothing to divide.
    StealDeclined {
        /// The job.
        job: JobId,
        /// The steal declined.
        steal: u64,
    },
    /// Primary → worker: compute this unit.
    Assign {
        /// The job.
        job: JobId,
        /// The unit.
        unit: UnitId,
        /// Its new epoch.
        epoch: Epoch,
        /// Application name.
        app: String,
        /// Serialised unit state.
        #[serde(with = "serde_bytes")]
        state: Vec<u8>,
        /// Shared variables as known by the primary.
        shared: SharedVars,
        /// The job's fault-tolerance settings.
        ft: FaultTolerance,
    },
    /// Worker → primary: news of a unit.
    Report {
        /// The job.
        job: JobId,
        /// The unit.
        unit: UnitId,
        /// The epoch the worker runs.
        epoch: Epoch,
        /// Number of this report within the epoch (from 1).
        seq: u64,
        /// The last report before it that must be applied first (0 if
        /// none): checkpoints superseded by newer ones may be skipped,
        /// divides, results and hand-backs never.
        after: u64,
        /// What happened.
        report: Report,
    },
    /// Primary → worker: reports up to `seq` are applied and replicated.
    Ack {
        /// The job.
        job: JobId,
        /// The unit.
        unit: UnitId,
        /// The epoch.
        epoch: Epoch,
        /// Highest report applied.
        seq: u64,
    },
    /// Primary → worker: that copy of the unit is no longer wanted (it was
    /// reissued, is finished, or the job is over); stop it.
    Stale {
        /// The job.
        job: JobId,
        /// The unit.
        unit: UnitId,
        /// The epoch the worker ran.
        epoch: Epoch,
    },
    /// Worker → primary: work done since the last report.
    Progress {
        /// The job.
        job: JobId,
        /// Work since the last report.
        work: u64,
    },
    /// Primary → workers: better shared variables.
    Shared {
        /// The job.
        job: JobId,
        /// The variables.
        vars: SharedVars,
    },
    /// Worker → primary (protocol `none` only): improved shared variables.
    Improved {
        /// The job.
        job: JobId,
        /// The variables.
        vars: SharedVars,
    },
    /// Primary → submitter (and to anyone who asks): the job's state.
    Status {
        /// The snapshot.
        view: JobView<P>,
    },
    /// Anyone → home member: send me the job's status.
    Query {
        /// The job.
        job: JobId,
    },
    /// Home member → asker: no such job here.
    Unknown {
        /// The job.
        job: JobId,
    },
    /// Between the members of a job's home: replication of the job record
    /// and elections (see [`crate::home`]).
    Home(home::JobHomeMsg<P>),
    /// Primary → holder: keep this piece of a unit's checkpoint.
    StorePiece {
        /// The job.
        job: JobId,
        /// The unit.
        unit: UnitId,
        /// The piece.
        piece: Piece,
        /// Write it to disk before answering.
        durable: bool,
        /// The unit's checkpoint (epoch, version) the job record points to
        /// now: the holder keeps it even when newer pieces, not yet
        /// committed, would push it out.
        keep: Option<(Epoch, u64)>,
    },
    /// Holder → primary: the piece is stored.
    PieceStored {
        /// The job.
        job: JobId,
        /// The unit.
        unit: UnitId,
        /// Its epoch.
        epoch: Epoch,
        /// Its checkpoint version.
        version: u64,
        /// Which piece.
        index: u8,
    },
    /// Primary → holder: send me what you hold of a unit's checkpoints.
    FetchPieces {
        /// The job.
        job: JobId,
        /// The unit.
        unit: UnitId,
    },
    /// Holder → primary: what it holds (possibly nothing).
    Pieces {
        /// The job.
        job: JobId,
        /// The unit.
        unit: UnitId,
        /// The pieces.
        pieces: Vec<Piece>,
    },
    /// Submitter (or the primary's own operator) → primary: cancel the job.
    /// The transport authenticates the sender, so its peer id proves who
    /// asks.
    Cancel {
        /// The job.
        job: JobId,
    },
    /// Primary → canceller: the answer to [`JobMsg::Cancel`].
    CancelReply {
        /// The job.
        job: JobId,
        /// Why it was refused; `None` once the job is cancelled.
        refused: Option<String>,
    },
    /// Holder → primary: after a restart, this peer's piece of the unit's
    /// checkpoint failed its checksum and was dropped; have it stored again.
    PiecesLost {
        /// The job.
        job: JobId,
        /// The unit.
        unit: UnitId,
    },
    /// Primary → worker: checkpoint this unit now (a piece of its last
    /// checkpoint was lost), rather than at the next TTC.
    CheckpointNow {
        /// The job.
        job: JobId,
        /// The unit.
        unit: UnitId,
        /// The epoch the worker runs.
        epoch: Epoch,
    },
    /// Worker → primary: a report on this unit is over its size limit and
    /// cannot be sent, or the unit cannot run on the worker; the job fails
    /// with `reason`.
    TooLarge {
        /// The job.
        job: JobId,
        /// The unit.
        unit: UnitId,
        /// The epoch the worker ran.
        epoch: Epoch,
        /// What was too large, with its size and the limit.
        reason: String,
    },
    /// Primary → worker: which units of this job do you hold? Asked now
    /// and then of every worker the record names as running a unit, so a
    /// unit recorded on a live worker that no longer has it is found.
    Holds {
        /// The job.
        job: JobId,
        /// Token to quote in the answer.
        token: u64,
    },
    /// Worker → primary: the answer to [`JobMsg::Holds`]: every unit of the
    /// job this worker still has, with the epoch it runs.
    Held {
        /// The job.
        job: JobId,
        /// The question's token.
        token: u64,
        /// (unit, epoch) of each unit held.
        units: Vec<(UnitId, Epoch)>,
    },
}

/// What the driver must do for the job core.
#[derive(Clone, Debug)]
pub enum JobOutput<P> {
    /// Send `msg` to `to` reliably; `bulk` ones carry states and results.
    Send {
        /// Destination.
        to: P,
        /// The message.
        msg: JobMsg<P>,
        /// Whether it carries bulk data.
        bulk: bool,
    },
    /// Start computing a unit; answer [`JobOutput::Checkpoint`],
    /// [`JobOutput::Divide`] and [`JobOutput::Stop`] for it later.
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
    /// Divide a running unit; answer with [`Jobs::divided`].
    Divide {
        /// The job.
        job: JobId,
        /// The unit to divide.
        unit: UnitId,
    },
    /// Serialise a running unit's state; answer with [`Jobs::checkpointed`].
    Checkpoint {
        /// The job.
        job: JobId,
        /// The unit.
        unit: UnitId,
    },
    /// Stop a running unit; answer with [`Jobs::unit_stopped`].
    Stop {
        /// The job.
        job: JobId,
        /// The unit.
        unit: UnitId,
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
    /// Write this piece to disk; call [`Jobs::persisted`] once durable.
    Persist {
        /// Where.
        key: PieceKey,
        /// What.
        piece: Piece,
    },
    /// Delete this version of a piece from disk: a newer checkpoint
    /// replaced it (pieces are stored under versioned keys, so a newer,
    /// not yet committed piece never overwrites the committed one).
    Unpersist {
        /// Which piece.
        key: PieceKey,
        /// Its epoch.
        epoch: Epoch,
        /// Its version.
        version: u64,
    },
    /// Delete every piece of this job from disk.
    Forget {
        /// The job.
        job: JobId,
    },
    /// The answer to [`Jobs::cancel`].
    CancelAnswer {
        /// The job.
        job: JobId,
        /// Why it was refused; `None` once the job is cancelled.
        refused: Option<String>,
    },
    /// Something worth logging and measuring happened.
    Event(JobEvent<P>),
}

/// Notable moments of the fault-tolerance protocol, for logs, figures and
/// the simulator's invariant checks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JobEvent<P> {
    /// The primary merged a unit's result.
    Merged {
        /// The job.
        job: JobId,
        /// The unit.
        unit: UnitId,
    },
    /// A unit lost with its holder is ready to run again.
    Reissued {
        /// The job.
        job: JobId,
        /// The unit.
        unit: UnitId,
        /// The peer that held it.
        lost: P,
    },
    /// A unit (new or reissued) was assigned to a worker.
    Assigned {
        /// The job.
        job: JobId,
        /// The unit.
        unit: UnitId,
        /// The worker.
        to: P,
        /// Whether it is a reissue.
        reissue: bool,
    },
    /// This peer became the job's primary.
    Primary {
        /// The job.
        job: JobId,
        /// The previous primary.
        previous: Option<P>,
    },
    /// A worker's checkpoint was acknowledged (stored on every holder).
    CheckpointAcked {
        /// The job.
        job: JobId,
        /// The unit.
        unit: UnitId,
        /// The report acknowledged.
        seq: u64,
    },
    /// A unit's checkpoint could not be restored from its holders.
    CheckpointLost {
        /// The job.
        job: JobId,
        /// The unit.
        unit: UnitId,
        /// Who held its pieces.
        holders: Vec<P>,
    },
    /// The job finished, failed or not, at this primary.
    Finished {
        /// The job.
        job: JobId,
        /// Whether it succeeded.
        ok: bool,
    },
    /// A unit's local checkpoint could not be encoded: nothing was written
    /// (the next checkpoint tries again).
    EncodeFailed {
        /// The job.
        job: JobId,
        /// The unit.
        unit: UnitId,
        /// The encoder's error.
        error: String,
    },
    /// A majority of the job's home members left the view: nothing can be
    /// committed until they return; the job fails after `fails_in`.
    HomeMajorityLost {
        /// The job.
        job: JobId,
        /// The members gone.
        gone: Vec<P>,
        /// How long until the job fails if they stay away.
        fails_in: Duration,
    },
    /// A message was refused: its sender may not send it (see
    /// [`Refusal`]). The driver logs these rate-limited per peer.
    Refused {
        /// The sender.
        from: P,
        /// The message's kind.
        message: &'static str,
        /// Why.
        why: Refusal,
    },
}

struct KnownJob<P> {
    app: String,
    home: P,
    expires: Instant,
}

/// A unit computing on this peer.
struct WorkerUnit<P> {
    epoch: Epoch,
    app: String,
    ft: FaultTolerance,
    /// Number of the last report made.
    seq: u64,
    /// Reports not yet acknowledged, oldest first: (seq, after, report).
    unacked: VecDeque<(u64, u64, Report)>,
    /// The last report that must be applied (not a checkpoint).
    last_must: u64,
    last_sent: Instant,
    next_checkpoint_at: Instant,
    checkpoint_asked: bool,
    /// Steals waiting for a divide answer, oldest first.
    steals: VecDeque<u64>,
    /// Why the unit is being stopped, if it is.
    stopping: Option<StopReason>,
    /// The primary the unacknowledged reports went to.
    sent_to: Option<P>,
    /// Local storage: the last local piece written (its version).
    local_version: u64,
    /// Local storage: local pieces being written, oldest first: (version,
    /// last report made before it, shared variables it holds).
    local_inflight: VecDeque<(u64, u64, SharedVars)>,
    /// Local storage: reports up to this one are covered by a local piece
    /// on disk; a divide is sent only then, so a restart never resumes from
    /// a state that still holds a part the primary has recorded.
    durable_seq: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum StopReason {
    /// The primary said the copy is stale: drop it.
    Stale,
    /// The peer is leaving: hand the state back.
    Leaving,
    /// Found on disk after a restart and offered to the primary with
    /// [`Report::Resume`]; no thread runs it until the primary acknowledges.
    Resuming,
}

/// A unit stored on the worker's own disk (local storage), as persisted.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LocalUnit {
    /// The job.
    pub job: JobId,
    /// The unit.
    pub unit: UnitId,
    /// The epoch it ran under.
    pub epoch: Epoch,
    /// The local piece's version (rises with each write in an epoch).
    pub version: u64,
    /// The last report the worker had made when it wrote the piece.
    pub seq: u64,
    /// Divides made before the piece and not yet acknowledged then, as
    /// (seq, after, report): re-sent on resume (the primary ignores those it
    /// applied already).
    pub pending: Vec<(u64, u64, Report)>,
    /// Application name.
    pub app: String,
    /// Fault-tolerance settings of the job.
    pub ft: FaultTolerance,
    /// The state.
    #[serde(with = "serde_bytes")]
    pub state: Vec<u8>,
    /// Shared variables then.
    pub shared: SharedVars,
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
    pieces: home::PieceStore<P>,
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
    /// Members added by [`Jobs::update_member`] since the last
    /// [`Jobs::refresh_members`], in the order they came.
    newcomers: Vec<P>,
    /// Members suspected but not yet declared dead.
    suspects: BTreeSet<P>,
    leaving: bool,
    outputs: VecDeque<JobOutput<P>>,
    next_tick: Instant,
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
            pieces: home::PieceStore::default(),
            known: BTreeMap::new(),
            running: BTreeMap::new(),
            current_job: None,
            next_request_at: now,
            finished_jobs: BTreeSet::new(),
            loads: BTreeMap::new(),
            members: BTreeSet::new(),
            newcomers: Vec::new(),
            suspects: BTreeSet::new(),
            leaving: false,
            outputs: VecDeque::new(),
            next_tick: now,
            submit_policy: SubmitPolicy::default(),
            parked: Parked::default(),
            refused_messages: 0,
            encode_errors: 0,
            records_on_disk: BTreeMap::new(),
            next_record_persist: now,
            lost_pieces: Vec::new(),
        }
    }

    /// Pieces this peer held that were lost (they failed their checksum on
    /// disk): their primaries are told, once this peer sees the network, so
    /// that the units' next checkpoints store them again at once.
    pub fn pieces_lost(&mut self, keys: Vec<PieceKey>) {
        self.lost_pieces.extend(keys);
        self.lost_pieces.truncate(MAX_LOST_PIECES);
        self.report_lost_pieces();
    }

    fn report_lost_pieces(&mut self) {
        if self.members.is_empty() {
            return;
        }
        let mut units: Vec<(JobId, UnitId)> = self
            .lost_pieces
            .drain(..)
            .map(|k| (k.job, k.unit))
            .collect();
        units.sort_unstable();
        units.dedup();
        for (job, unit) in units {
            let primary = self.primary_of(job);
            self.send(primary, JobMsg::PiecesLost { job, unit }, false);
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
    pub fn set_members(&mut self, now: Instant, members: Vec<(P, f32)>) {
        // A driver calls this on every membership event, often with the
        // list it gave last time (a message brings many changes at once,
        // one event each): then only the checks run again.
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
    /// at the next [`Jobs::refresh_members`]; a sequence of these and then
    /// that call does what [`Jobs::set_members`] with the resulting list
    /// does, in O(changes) instead of O(members).
    pub fn update_member(&mut self, peer: P, load: Option<f32>) {
        if peer == self.me {
            return;
        }
        self.homes.update_member(peer.clone(), load.is_some());
        match load {
            Some(load) => {
                if self.members.insert(peer.clone()) {
                    self.newcomers.push(peer.clone());
                }
                self.loads.insert(peer, load);
            }
            None => {
                self.members.remove(&peer);
                self.loads.remove(&peer);
                self.newcomers.retain(|p| *p != peer);
            }
        }
    }

    /// The members changed ([`Jobs::update_member`]) or may have: homes are
    /// recomputed, as [`Jobs::set_members`] does.
    pub fn refresh_members(&mut self, now: Instant) {
        let newcomers = std::mem::take(&mut self.newcomers);
        self.members_updated(now, newcomers);
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

    /// Members suspected now, not in [`Jobs::set_members`]'s list: units of
    /// jobs without checkpoints stay with them until they are declared dead
    /// (reissuing would fail such a job on a false suspicion); everything
    /// else treats them as gone. Call before `set_members`.
    pub fn set_suspects(&mut self, suspects: Vec<P>) {
        self.suspects = suspects.into_iter().collect();
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
        let size = self.home_size_of(job).unwrap_or(1);
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
        let home = self.home_of(job, usize::from(size));
        home.into_iter().next().unwrap_or_else(|| self.me.clone())
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
        self.home_of(job, 1)
            .into_iter()
            .next()
            .unwrap_or_else(|| self.me.clone())
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
    pub fn handle_message(&mut self, now: Instant, from: P, msg: JobMsg<P>) {
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
            } => self.on_submit(now, from, job, app, params, ft, deadline_ms),
            JobMsg::Advert {
                job,
                app,
                home,
                lifetime_ms,
                submitter,
            } => {
                if self.finished_jobs.contains(&job) || self.registry.get(&app).is_err() {
                    return;
                }
                if !self.works_for(&submitter) {
                    // Not seen, so its assignments are refused too.
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
            JobMsg::Progress { job, work } => self.on_progress(from, job, work),
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
    pub fn submit(
        &mut self,
        _now: Instant,
        job: JobId,
        app: String,
        params: Vec<u8>,
        ft: FaultTolerance,
        deadline: Option<Duration>,
    ) -> P {
        let home = self
            .home_of(job, usize::from(ft.home_size))
            .into_iter()
            .next()
            .unwrap_or_else(|| self.me.clone());
        self.send(
            home.clone(),
            JobMsg::Submit {
                job,
                app,
                params,
                ft,
                deadline_ms: deadline.map(|d| d.as_millis().min(u128::from(u64::MAX)) as u64),
            },
            false,
        );
        home
    }

    /// Asks `job`'s primary to cancel it. Only the job's submitter, or this
    /// peer when it is the primary (its operator), may; the answer comes
    /// as [`JobOutput::CancelAnswer`].
    pub fn cancel(&mut self, job: JobId) {
        let primary = self.primary_of(job);
        self.send(primary, JobMsg::Cancel { job }, false);
    }

    /// Asks `to` for the status of `job`.
    pub fn query(&mut self, job: JobId, to: P) {
        self.send(to, JobMsg::Query { job }, false);
    }

    // ---- worker side ----

    #[allow(clippy::too_many_arguments)]
    fn on_assign(
        &mut self,
        now: Instant,
        from: P,
        job: JobId,
        unit: UnitId,
        epoch: Epoch,
        app: String,
        state: Vec<u8>,
        shared: SharedVars,
        ft: FaultTolerance,
    ) {
        // Answered: free cores may ask again at once.
        self.next_request_at = now;
        self.backoff = self.config.request_backoff_initial;
        if self
            .running
            .get(&(job, unit))
            .is_some_and(|w| w.stopping == Some(StopReason::Resuming))
        {
            // A copy found on disk and not taken back: the primary gave the
            // unit out again (from its last acknowledged checkpoint).
            self.running.remove(&(job, unit));
        }
        // The cores this peer offers, plus the one unit a primary may push
        // to a busy worker.
        let active = self
            .running
            .values()
            .filter(|w| w.stopping.is_none() && !w.finished())
            .count();
        let over_limit = active > self.config.cores as usize;
        if over_limit {
            self.count_refusal(&from, "Assign", Refusal::OverCoreLimit);
        }
        if self.leaving || over_limit || self.running.contains_key(&(job, unit)) {
            // Leaving, over the core limit, or an old copy still stopping:
            // hand it straight back.
            let unit_state = WorkerUnit::new(epoch, app, ft, now, &self.config);
            self.running.insert((job, unit), unit_state);
            self.report(now, job, unit, Report::HandBack { state });
            return;
        }
        self.known.entry(job).or_insert(KnownJob {
            app: app.clone(),
            home: from,
            expires: now + self.config.advert_lifetime,
        });
        self.current_job = Some(job);
        let mut worker = WorkerUnit::new(epoch, app.clone(), ft, now, &self.config);
        let local = ft.checkpoints() && ft.storage == CheckpointStorage::Local;
        if local {
            // The state it starts from goes to disk first.
            worker.checkpoint_asked = true;
        }
        self.running.insert((job, unit), worker);
        if local {
            self.persist_local(job, unit, state.clone(), shared.clone());
        } else {
            self.report(now, job, unit, Report::Started);
        }
        self.outputs.push_back(JobOutput::Run {
            job,
            unit,
            app,
            state,
            shared,
        });
    }

    /// Records a report and sends it to the job's primary.
    fn report(&mut self, now: Instant, job: JobId, unit: UnitId, report: Report) {
        let primary = self.primary_of(job);
        let max = self.config.max_unacked_reports;
        let Some(w) = self.running.get_mut(&(job, unit)) else {
            return;
        };
        w.seq = w.seq.saturating_add(1);
        let seq = w.seq;
        let after = w.last_must;
        let skippable = matches!(
            report,
            Report::Checkpoint { .. } | Report::LocalCheckpoint { .. } | Report::Started
        );
        if !skippable {
            w.last_must = seq;
        }
        // A newer checkpoint makes unacknowledged older ones pointless.
        if matches!(report, Report::Checkpoint { .. }) {
            w.unacked
                .retain(|(_, _, r)| !matches!(r, Report::Checkpoint { .. }));
        }
        if w.unacked.len() >= max {
            // The primary is unreachable for long: keep the newest reports;
            // divides and results are never dropped.
            if let Some(pos) = w
                .unacked
                .iter()
                .position(|(_, _, r)| matches!(r, Report::Started | Report::LocalCheckpoint { .. }))
            {
                w.unacked.remove(pos);
            }
        }
        w.unacked.push_back((seq, after, report.clone()));
        if w.held(seq, &report) {
            // Sent once the state it leaves is on disk (`persisted`).
            return;
        }
        w.last_sent = now;
        w.sent_to = Some(primary.clone());
        let epoch = w.epoch;
        let bulk = !matches!(report, Report::Started);
        self.send(
            primary,
            JobMsg::Report {
                job,
                unit,
                epoch,
                seq,
                after,
                report,
            },
            bulk,
        );
    }

    fn resend_reports(&mut self, now: Instant, job: JobId, unit: UnitId) {
        let primary = self.primary_of(job);
        let Some(w) = self.running.get_mut(&(job, unit)) else {
            return;
        };
        if w.unacked.is_empty() {
            w.sent_to = Some(primary.clone());
            return;
        }
        w.last_sent = now;
        w.sent_to = Some(primary.clone());
        let epoch = w.epoch;
        let reports: Vec<(u64, u64, Report)> = w
            .unacked
            .iter()
            .filter(|(seq, _, r)| !w.held(*seq, r))
            .cloned()
            .collect();
        for (seq, after, report) in reports {
            self.send(
                primary.clone(),
                JobMsg::Report {
                    job,
                    unit,
                    epoch,
                    seq,
                    after,
                    report,
                },
                true,
            );
        }
    }

    fn on_ack(&mut self, now: Instant, job: JobId, unit: UnitId, epoch: Epoch, seq: u64) {
        let mut acked_checkpoint = false;
        let mut finished = false;
        let mut resumed = None;
        if let Some(w) = self.running.get_mut(&(job, unit)) {
            if w.epoch != epoch {
                return;
            }
            while w.unacked.front().is_some_and(|(s, _, _)| *s <= seq) {
                if let Some((_, _, r)) = w.unacked.pop_front() {
                    acked_checkpoint |=
                        matches!(r, Report::Checkpoint { .. } | Report::Divided { .. });
                    finished |= matches!(r, Report::Done { .. } | Report::HandBack { .. });
                    if let Report::Resume { state, shared, .. } = r {
                        resumed = Some((state, shared));
                    }
                }
            }
            if resumed.is_some() && w.stopping == Some(StopReason::Resuming) {
                // The primary takes the unit back from this disk: it runs
                // here again, its reports numbered after the primary's.
                w.stopping = None;
                w.seq = w.seq.max(seq);
                w.checkpoint_asked = false;
                w.next_checkpoint_at = now + w.ft.ttc.min(MAX_TTC);
            } else {
                resumed = None;
            }
        }
        if acked_checkpoint {
            self.event(JobEvent::CheckpointAcked { job, unit, seq });
        }
        if finished {
            self.drop_unit(job, unit);
        }
        if let Some((state, shared)) = resumed {
            let app = self
                .running
                .get(&(job, unit))
                .map(|w| w.app.clone())
                .unwrap_or_default();
            self.current_job = Some(job);
            self.outputs.push_back(JobOutput::Run {
                job,
                unit,
                app,
                state,
                shared,
            });
        }
    }

    fn on_stale(&mut self, job: JobId, unit: UnitId, epoch: Epoch) {
        let Some(w) = self.running.get_mut(&(job, unit)) else {
            return;
        };
        if w.epoch != epoch {
            return;
        }
        if w.finished() || w.stopping == Some(StopReason::Resuming) {
            // Its thread has ended already, or never started.
            self.drop_unit(job, unit);
            return;
        }
        if w.stopping.is_none() {
            w.stopping = Some(StopReason::Stale);
            self.outputs.push_back(JobOutput::Stop { job, unit });
        }
    }

    fn drop_unit(&mut self, job: JobId, unit: UnitId) {
        self.running.remove(&(job, unit));
        if !self.running.keys().any(|(j, _)| *j == job) && self.current_job == Some(job) {
            self.current_job = None;
        }
    }

    fn on_steal_request(&mut self, from: P, job: JobId, steal: u64) {
        // Divide the unit of this job that has been running longest.
        let victim = self
            .running
            .iter_mut()
            .filter(|((j, _), w)| *j == job && w.stopping.is_none() && !w.finished())
            .min_by_key(|((_, u), _)| *u);
        match victim {
            Some(((_, unit), w)) => {
                let unit = *unit;
                w.steals.push_back(steal);
                if w.steals.len() == 1 {
                    self.outputs.push_back(JobOutput::Divide { job, unit });
                }
            }
            None => self.send(from, JobMsg::StealDeclined { job, steal }, false),
        }
    }

    /// The driver finished dividing `unit`: `part` (if any) is what it
    /// gives away, `remaining` its own state now, `shared` its variables.
    pub fn divided(
        &mut self,
        now: Instant,
        job: JobId,
        unit: UnitId,
        part: Option<Vec<u8>>,
        remaining: Vec<u8>,
        shared: SharedVars,
    ) {
        let Some(w) = self.running.get_mut(&(job, unit)) else {
            return;
        };
        let Some(steal) = w.steals.pop_front() else {
            return;
        };
        let more = !w.steals.is_empty();
        let local = w.local();
        match part {
            Some(part) if local => {
                self.report(
                    now,
                    job,
                    unit,
                    Report::Divided {
                        steal,
                        part: part.clone(),
                        remaining: remaining.clone(),
                        shared: shared.clone(),
                    },
                );
                self.persist_divide(job, unit, part, remaining, shared);
            }
            Some(part) => self.report(
                now,
                job,
                unit,
                Report::Divided {
                    steal,
                    part,
                    remaining,
                    shared,
                },
            ),
            None => {
                let primary = self.primary_of(job);
                self.send(primary, JobMsg::StealDeclined { job, steal }, false);
            }
        }
        if more {
            self.outputs.push_back(JobOutput::Divide { job, unit });
        }
    }

    /// The driver serialised a running unit: `state` and the unit's shared
    /// variables. Call it to answer [`JobOutput::Checkpoint`], and on its
    /// own after a step that improved a shared variable — the improvement
    /// spreads once the state that holds it is stored.
    pub fn checkpointed(
        &mut self,
        now: Instant,
        job: JobId,
        unit: UnitId,
        state: Vec<u8>,
        shared: SharedVars,
    ) {
        let ttc = self.config_ttc(job, unit);
        let Some(w) = self.running.get_mut(&(job, unit)) else {
            return;
        };
        w.checkpoint_asked = false;
        w.next_checkpoint_at = now + ttc.min(MAX_TTC);
        if w.stopping.is_some() || w.finished() {
            return;
        }
        let ft = w.ft;
        if !ft.checkpoints() {
            let primary = self.primary_of(job);
            self.send(primary, JobMsg::Improved { job, vars: shared }, false);
            return;
        }
        if ft.storage == CheckpointStorage::Local {
            self.persist_local(job, unit, state, shared);
            return;
        }
        self.report(now, job, unit, Report::Checkpoint { state, shared });
    }

    fn config_ttc(&self, job: JobId, unit: UnitId) -> Duration {
        self.running
            .get(&(job, unit))
            .map(|w| w.ft.ttc)
            .unwrap_or(Duration::from_secs(1))
    }

    /// Local storage: a divide's part goes to disk as a copy of the new
    /// unit's first checkpoint (this peer serves it to a primary that must
    /// restore the part), then the remaining state with the divide still to
    /// report. The divide is sent once both are durable.
    fn persist_divide(
        &mut self,
        job: JobId,
        unit: UnitId,
        part: Vec<u8>,
        remaining: Vec<u8>,
        shared: SharedVars,
    ) {
        let Some(w) = self.running.get(&(job, unit)) else {
            return;
        };
        let child = home::child_id(unit, w.epoch, w.seq);
        let piece = Piece {
            epoch: 0,
            version: 0,
            index: 0,
            data: PieceData::Copy(part),
        };
        let evicted = self.pieces.put(job, child, piece.clone());
        self.unpersist(job, child, evicted);
        self.outputs.push_back(JobOutput::Persist {
            key: PieceKey {
                job,
                unit: child,
                index: 0,
            },
            piece,
        });
        self.persist_local(job, unit, remaining, shared);
    }

    /// Writes a running unit's state to this peer's disk (local storage),
    /// with the divides not yet acknowledged; [`Jobs::persisted`] reports it.
    fn persist_local(&mut self, job: JobId, unit: UnitId, state: Vec<u8>, shared: SharedVars) {
        let Some(w) = self.running.get_mut(&(job, unit)) else {
            return;
        };
        w.checkpoint_asked = true;
        w.local_version += 1;
        let version = w.local_version;
        let pending = w
            .unacked
            .iter()
            .filter(|(_, _, r)| matches!(r, Report::Divided { .. }))
            .cloned()
            .collect();
        w.local_inflight.push_back((version, w.seq, shared.clone()));
        let local = LocalUnit {
            job,
            unit,
            epoch: w.epoch,
            version,
            seq: w.seq,
            pending,
            app: w.app.clone(),
            ft: w.ft,
            state,
            shared,
        };
        let bytes = match postcard::to_stdvec(&local) {
            Ok(bytes) => bytes,
            Err(error) => {
                // Nothing written: empty bytes on disk would be taken for
                // the unit. The next checkpoint tries again.
                w.local_inflight.pop_back();
                w.local_version -= 1;
                w.checkpoint_asked = false;
                self.encode_errors += 1;
                self.event(JobEvent::EncodeFailed {
                    job,
                    unit,
                    error: error.to_string(),
                });
                return;
            }
        };
        let piece = Piece {
            epoch: w.epoch,
            version,
            index: home::LOCAL_INDEX,
            data: PieceData::Local(bytes),
        };
        // Served to a primary restoring the unit (its worker then gone).
        let evicted = self.pieces.put(job, unit, piece.clone());
        self.unpersist(job, unit, evicted);
        self.outputs.push_back(JobOutput::Persist {
            key: PieceKey {
                job,
                unit,
                index: home::LOCAL_INDEX,
            },
            piece,
        });
    }

    /// A [`JobOutput::Persist`] is durable on disk.
    pub fn persisted(&mut self, now: Instant, key: PieceKey, epoch: Epoch, version: u64) {
        if key.index != home::LOCAL_INDEX {
            self.piece_persisted(now, key, epoch, version);
            return;
        }
        let (job, unit) = (key.job, key.unit);
        let Some(w) = self.running.get_mut(&(job, unit)) else {
            return;
        };
        if w.epoch != epoch {
            return;
        }
        let mut done = None;
        while w
            .local_inflight
            .front()
            .is_some_and(|(v, _, _)| *v <= version)
        {
            done = w.local_inflight.pop_front();
        }
        let Some((_, covers, shared)) = done else {
            return;
        };
        let newest = w.local_inflight.is_empty();
        if newest {
            w.checkpoint_asked = false;
        }
        let unblocked = w.unacked.iter().any(|(s, _, r)| {
            matches!(r, Report::Divided { .. }) && *s > w.durable_seq && *s <= covers
        });
        w.durable_seq = w.durable_seq.max(covers);
        let report = newest && w.stopping.is_none() && !w.finished();
        if unblocked {
            self.resend_reports(now, job, unit);
        }
        // Only the newest piece is worth naming: an older one may predate
        // a divide.
        if report {
            self.report(now, job, unit, Report::LocalCheckpoint { shared, version });
        }
    }

    /// Units found on this peer's disk after a restart (local storage):
    /// each is offered back to its job's primary, which lets it run here
    /// again (or answers "stale"). Call after [`Jobs::load_pieces`].
    pub fn restore_local(&mut self, now: Instant, units: Vec<LocalUnit>) {
        for local in units {
            if self.running.contains_key(&(local.job, local.unit)) {
                continue;
            }
            let mut w = WorkerUnit::new(local.epoch, local.app, local.ft, now, &self.config);
            w.stopping = Some(StopReason::Resuming);
            // Numbered past anything its previous life may still have in
            // flight, so the primary never takes one for the other.
            w.seq = local.seq.saturating_add(RESTART_SEQ_GAP);
            w.local_version = local.version;
            w.durable_seq = local.seq;
            w.last_must = local.pending.last().map_or(0, |(s, _, _)| *s);
            w.unacked = local.pending.into_iter().collect();
            self.running.insert((local.job, local.unit), w);
            // Divides it had not heard acknowledged first, then the offer.
            self.resend_reports(now, local.job, local.unit);
            self.report(
                now,
                local.job,
                local.unit,
                Report::Resume {
                    state: local.state,
                    shared: local.shared,
                    version: local.version,
                },
            );
        }
    }

    /// A unit's worker thread stopped after [`JobOutput::Stop`], with its
    /// last state.
    pub fn unit_stopped(&mut self, now: Instant, job: JobId, unit: UnitId, state: Option<Vec<u8>>) {
        let Some(w) = self.running.get(&(job, unit)) else {
            return;
        };
        match (w.stopping, state) {
            (Some(StopReason::Leaving), Some(state)) => {
                self.report(now, job, unit, Report::HandBack { state });
            }
            _ => self.drop_unit(job, unit),
        }
    }

    /// A unit finished on a worker thread.
    pub fn unit_finished(&mut self, now: Instant, job: JobId, unit: UnitId, output: Vec<u8>) {
        if let Some(w) = self.running.get_mut(&(job, unit)) {
            // Divide requests still queued get nothing.
            let steals: Vec<u64> = w.steals.drain(..).collect();
            let primary = self.primary_of(job);
            for steal in steals {
                self.send(primary.clone(), JobMsg::StealDeclined { job, steal }, false);
            }
            self.report(now, job, unit, Report::Done { output });
        }
        // Ask for more at once.
        self.next_request_at = now;
        self.backoff = self.config.request_backoff_initial;
    }

    /// A unit could not run here (its state did not decode, its app is
    /// missing, no thread): the job fails with `error` as its reason (a
    /// state that does not decode here will not decode elsewhere), rather
    /// than the unit waiting on a peer that dropped it.
    pub fn unit_failed(&mut self, now: Instant, job: JobId, unit: UnitId, error: String) {
        if let Some(w) = self.running.get(&(job, unit)) {
            let epoch = w.epoch;
            let primary = self.primary_of(job);
            let reason = format!("the unit could not run there: {error}");
            self.send(
                primary,
                JobMsg::TooLarge {
                    job,
                    unit,
                    epoch,
                    reason,
                },
                false,
            );
        }
        self.drop_unit(job, unit);
        self.next_request_at = now + self.config.request_backoff_max;
    }

    /// Work done by worker threads since the last report.
    pub fn report_progress(&mut self, job: JobId, work: u64) {
        let primary = self.primary_of(job);
        // Same channel as results: a unit's last progress arrives first.
        self.send(primary, JobMsg::Progress { job, work }, true);
    }

    /// This peer is leaving gracefully: stop asking for work, hand every
    /// running unit back and the primary role of every job to the next
    /// home member. Done when [`Jobs::has_left`] says so.
    pub fn leave(&mut self, now: Instant) {
        self.leaving = true;
        self.known.clear();
        let keys: Vec<(JobId, UnitId)> = self.running.keys().copied().collect();
        for (job, unit) in keys {
            if let Some(w) = self.running.get_mut(&(job, unit)) {
                if w.stopping.is_none() && !w.finished() {
                    w.stopping = Some(StopReason::Leaving);
                    self.outputs.push_back(JobOutput::Stop { job, unit });
                }
            }
        }
        self.hand_over_homes(now);
    }

    /// Whether a graceful leave is complete: every unit handed back and
    /// acknowledged, every primary role handed over. A unit being stopped
    /// for the leave counts until the primary acknowledged its hand-back
    /// (it is dropped then): leaving before its thread stopped would lose
    /// the work done since its last checkpoint.
    pub fn has_left(&self) -> bool {
        self.leaving
            && self.running.values().all(|w| {
                matches!(w.stopping, Some(StopReason::Stale | StopReason::Resuming))
                    && w.unacked.is_empty()
            })
            && self.homes_handed_over()
    }

    /// Units still to hand back before a graceful leave is complete.
    pub fn units_to_hand_back(&self) -> usize {
        self.running
            .values()
            .filter(|w| w.stopping == Some(StopReason::Leaving) || !w.unacked.is_empty())
            .count()
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

    /// Units this peer is computing.
    pub fn running_units(&self) -> usize {
        self.running.values().filter(|w| !w.finished()).count()
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

    /// When the core next needs [`Jobs::handle_timeout`].
    pub fn poll_timeout(&self) -> Instant {
        self.next_tick
    }

    /// Checkpoints, re-sends, advertises, requests work, expires what is
    /// stale.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.next_tick = now + Duration::from_millis(20);
        self.expire_parked(now);
        self.known.retain(|_, k| k.expires > now);
        // Worker: checkpoints due, reports to re-send.
        let keys: Vec<(JobId, UnitId)> = self.running.keys().copied().collect();
        for (job, unit) in keys {
            let Some(w) = self.running.get_mut(&(job, unit)) else {
                continue;
            };
            if w.ft.checkpoints()
                && !w.checkpoint_asked
                && w.stopping.is_none()
                && !w.finished()
                && w.next_checkpoint_at <= now
            {
                w.checkpoint_asked = true;
                self.outputs.push_back(JobOutput::Checkpoint { job, unit });
            }
            let Some(w) = self.running.get(&(job, unit)) else {
                continue;
            };
            if !w.unacked.is_empty()
                && now.saturating_duration_since(w.last_sent) >= self.config.resend_interval
            {
                self.resend_reports(now, job, unit);
            }
        }
        self.home_timeouts(now);
        self.maybe_request_work(now);
    }

    fn maybe_request_work(&mut self, now: Instant) {
        if self.leaving {
            return;
        }
        let free = self.config.cores.saturating_sub(self.running.len() as u32);
        // An unanswered request expires at `next_request_at`: the answer
        // may be lost with a primary that stepped down or a pipe that gave up.
        if free == 0 || now < self.next_request_at {
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
        // A steal may take the primary up to its timeout to answer.
        self.next_request_at = now + self.config.steal_timeout * 2;
        self.send(home, JobMsg::WorkRequest { job, free }, false);
    }

    /// A message could not be delivered to `to` (it is dead or the pipe
    /// gave up).
    pub fn send_failed(&mut self, now: Instant, to: P, msg: JobMsg<P>) {
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

    fn random_epoch(&mut self) -> Epoch {
        self.rng.random()
    }
}

impl<P> WorkerUnit<P> {
    fn new(epoch: Epoch, app: String, ft: FaultTolerance, now: Instant, _c: &JobConfig) -> Self {
        WorkerUnit {
            epoch,
            app,
            ft,
            seq: 0,
            unacked: VecDeque::new(),
            last_must: 0,
            last_sent: now,
            next_checkpoint_at: now + ft.ttc.min(MAX_TTC),
            checkpoint_asked: false,
            steals: VecDeque::new(),
            stopping: None,
            sent_to: None,
            local_version: 0,
            local_inflight: VecDeque::new(),
            durable_seq: 0,
        }
    }

    /// Whether its checkpoints stay on this peer's disk.
    fn local(&self) -> bool {
        self.ft.checkpoints() && self.ft.storage == CheckpointStorage::Local
    }

    /// Whether report `seq` must wait before it is sent: a divide with
    /// local storage waits until the state it left is on disk.
    fn held(&self, seq: u64, report: &Report) -> bool {
        self.local() && matches!(report, Report::Divided { .. }) && seq > self.durable_seq
    }

    /// Its thread is done (result or hand-back reported).
    fn finished(&self) -> bool {
        self.unacked
            .iter()
            .any(|(_, _, r)| matches!(r, Report::Done { .. } | Report::HandBack { .. }))
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
