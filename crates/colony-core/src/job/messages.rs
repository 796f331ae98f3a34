//! What job cores say to each other and to their driver: reports, wire
//! messages, outputs and events.

use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::divisible::SharedVars;
use crate::ft::FaultTolerance;

use super::*;

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
        #[serde(with = "serde_bytes")]
        params: Vec<u8>,
        /// Fault-tolerance settings.
        ft: FaultTolerance,
        /// Cancel the job if it runs longer than this, in ms since
        /// submission (`colony run --deadline`).
        deadline_ms: Option<u64>,
        /// Keep the job's object-space namespace (`job-<id>`) when it
        /// ends, instead of destroying it (`colony run --keep-namespace`).
        keep_namespace: bool,
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
    Home(JobHomeMsg<P>),
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
    /// Worker → primary, once per advertised job it will not work on: it
    /// cannot run the job's application (none of that name, a guest it does
    /// not run) or does not accept jobs from its submitter. The primary
    /// lists it in the job's view ([`JobView::declined`]).
    Declined {
        /// The job.
        job: JobId,
        /// Why, in a sentence (at most 200 characters are kept).
        reason: String,
    },
}

/// An assignment on its way: to whom, of which unit, at which epoch (what
/// the driver keeps of a [`JobMsg::Assign`] until the pipe settles it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SentAssignment<P> {
    /// The worker.
    pub to: P,
    /// The job.
    pub job: JobId,
    /// The unit.
    pub unit: UnitId,
    /// The epoch it was assigned with.
    pub epoch: Epoch,
}

impl<P: Clone> SentAssignment<P> {
    /// What `msg` sent to `to` is, if it is an assignment.
    pub fn of(to: &P, msg: &JobMsg<P>) -> Option<Self> {
        match msg {
            JobMsg::Assign {
                job, unit, epoch, ..
            } => Some(SentAssignment {
                to: to.clone(),
                job: *job,
                unit: *unit,
                epoch: *epoch,
            }),
            _ => None,
        }
    }
}

/// What a submitter asks of its job besides the application, its
/// parameters and its fault tolerance; the default asks nothing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SubmitOptions {
    /// Cancel the job if it runs longer than this since submission (its
    /// primary keeps watch, so this holds after the submitter has gone).
    pub deadline: Option<Duration>,
    /// Keep the job's namespace in the object space (`job-<id>`, see
    /// [`crate::space::job_namespace`]) when the job ends, instead of
    /// destroying it: its objects stay readable until someone destroys it
    /// by name (`colony space ns-rm job-<id>`).
    pub keep_namespace: bool,
}

/// An input to the job core ([`Jobs::handle`]): a message, a request of
/// this peer's user, a unit's news from the executor, a membership change,
/// a write that reached the disk.
#[derive(Debug)]
pub enum JobInput<P> {
    /// A job message from `from` (authenticated by the transport); checked
    /// against who may send it first (refusals come as
    /// [`JobEvent::Refused`]).
    Message {
        /// The sender.
        from: P,
        /// The message.
        msg: JobMsg<P>,
    },
    /// A message sent to `to` could not be delivered.
    SendFailed {
        /// The peer it was for.
        to: P,
        /// The message.
        msg: JobMsg<P>,
    },
    /// The pipe settled an assignment this peer sent as a job's primary:
    /// `delivered`, or failed (deadline passed, worker dead).
    AssignSettled {
        /// The assignment.
        sent: SentAssignment<P>,
        /// Whether the worker's peer received it.
        delivered: bool,
    },
    /// Submit a job from this peer to its primary
    /// ([`Jobs::submit_home`]).
    Submit {
        /// The job's id.
        job: JobId,
        /// Its application.
        app: String,
        /// Its parameters, as the application parses them.
        params: Vec<u8>,
        /// Its fault tolerance.
        ft: FaultTolerance,
        /// Its deadline, and what happens to its namespace.
        options: SubmitOptions,
    },
    /// Ask `job`'s primary to cancel it. Only the job's submitter, or this
    /// peer when it is the primary (its operator), may; the answer comes as
    /// [`JobOutput::CancelAnswer`].
    Cancel {
        /// The job.
        job: JobId,
    },
    /// Ask `to` for the status of `job`.
    Query {
        /// The job.
        job: JobId,
        /// Who to ask.
        to: P,
    },
    /// The live members (not this peer) and their load averages, all at
    /// once. Homes are recomputed: primaries hand over to closer
    /// newcomers, backups take over from lost primaries, units of lost
    /// workers are reissued, and workers re-send unacknowledged reports to
    /// their job's new primary.
    Members(Vec<(P, f32)>),
    /// One member's change, for a driver that follows the view change by
    /// change: `load` is its load average if it is alive, `None` if not
    /// (suspect, dead, gone). Takes effect at the next
    /// [`JobInput::MembersChanged`]; changes and then that input do what
    /// [`JobInput::Members`] with the resulting list does, in O(changes).
    Member {
        /// The member.
        peer: P,
        /// Its load average, if it is alive.
        load: Option<f32>,
    },
    /// The [`JobInput::Member`] changes given so far are complete.
    MembersChanged,
    /// The members suspected, not yet declared dead.
    Suspects(Vec<P>),
    /// What a unit running here reported at its step boundary (divided,
    /// checkpointed, stopped, finished, failed, progress).
    Unit(UnitEvent),
    /// A piece asked for with [`JobOutput::Persist`] is on disk.
    Persisted {
        /// Where.
        key: PieceKey,
        /// Its epoch.
        epoch: Epoch,
        /// Its version.
        version: u64,
    },
    /// A message for `to` is too large to send (the pipe refused it): what
    /// it carried fails clearly (a report's unit, a submission's job).
    TooLarge {
        /// The peer it was for.
        to: P,
        /// The message.
        msg: JobMsg<P>,
        /// Its size and the limit.
        error: TooLarge,
    },
    /// This peer leaves: units are handed back, primary roles handed over
    /// ([`Jobs::has_left`] says when it is done).
    Leave,
    /// This peer stops computing (its owner needs the host, or its daily
    /// hours are used up): every running unit is stopped and its state
    /// handed back to its job's primary, and no work is asked for or
    /// accepted until [`JobInput::Resume`]. Unlike [`JobInput::Leave`] the
    /// peer stays a member and keeps its place in every home: it goes on
    /// holding job records and checkpoint pieces.
    Pause,
    /// This peer computes again after [`JobInput::Pause`]: it asks for work
    /// at once.
    Resume,
}

/// What a running unit (or its executor) reports at a step boundary; the
/// node hands it to the job core as [`JobInput::Unit`].
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
    /// Divide a running unit; answer with [`UnitEvent::Divided`].
    Divide {
        /// The job.
        job: JobId,
        /// The unit to divide.
        unit: UnitId,
    },
    /// Serialise a running unit's state; answer with [`UnitEvent::Checkpointed`].
    Checkpoint {
        /// The job.
        job: JobId,
        /// The unit.
        unit: UnitId,
    },
    /// Stop a running unit; answer with [`UnitEvent::Stopped`].
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
    /// Write this piece to disk; answer with [`JobInput::Persisted`] once durable.
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
    /// The answer to [`JobInput::Cancel`].
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
