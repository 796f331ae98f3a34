//! Who may send which job message (DESIGN.md, "hostile input is normal").
//!
//! Every message is checked before any handler sees it:
//!
//! - anything but a submission comes only from a member of the live view
//!   (a peer that is still joining is held back briefly, see [`Parked`]);
//! - assignments, stale notices, acknowledgements, shared bounds, steal
//!   requests, checkpoint pieces, questions about the units a worker
//!   holds and answers to cancellations come only
//!   from a plausible primary of their job — the primary this peer knows
//!   of, a member of the record it holds, or one of the peers closest to
//!   the job id — and work is taken only for a job this peer can see
//!   (advertised to it, or homed here);
//! - replica traffic comes only from the job's home;
//! - submissions follow the peer's [`SubmitPolicy`], and so does the work
//!   it takes: a peer that accepts jobs only from some peers ignores the
//!   adverts of others' jobs, so their units are refused as unseen;
//! - a refusal to work on a job ([`JobMsg::Declined`]) comes from any
//!   member, and is kept only by a primary of that job while it runs.
//!
//! Reports are checked further by the primary (only the unit's current
//! holder, under its current epoch, is heard), votes by the voter (only
//! home members), and cancellations by the primary (only the submitter or
//! the primary's own operator).

use std::collections::{BTreeSet, VecDeque};
use std::fmt;
use std::time::{Duration, Instant};

use super::{JobId, JobMsg, Jobs};
use crate::home::{HomeMsg, Update};
use crate::PeerKey;

/// How many times the home size a plausible primary's distance may reach:
/// views differ between peers for a while after joins and deaths.
const PLAUSIBLE_HOME_FACTOR: usize = 2;
/// Home size assumed for a job this peer holds nothing of.
const ASSUMED_HOME_SIZE: usize = 5;
/// A message from a peer that is not (yet) in the view is held this long
/// for the view to catch up (a newcomer learns of us before we of it).
const PARK_PATIENCE: Duration = Duration::from_secs(3);
/// Most messages held for senders outside the view, in all.
const MAX_PARKED: usize = 64;
/// Most messages held for one sender outside the view.
const MAX_PARKED_PER_PEER: usize = 8;
/// Largest message (roughly, in payload bytes) held for a sender outside
/// the view; larger ones are refused at once.
const MAX_PARKED_MESSAGE_BYTES: usize = 64 * 1024;

/// Who may submit jobs to this peer (`colony peer --accept-jobs-from`).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum SubmitPolicy<P> {
    /// Any peer that can connect (with a pre-shared key, only holders of
    /// the key can).
    Any,
    /// Members of the live view (the default).
    #[default]
    Network,
    /// Only these peers (this peer's own submissions are always accepted).
    Peers(BTreeSet<P>),
}

/// Why a job message was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The sender is not a member of this peer's live view.
    NotAMember,
    /// Only the job's primary may send this, and the sender is not it.
    NotThePrimary,
    /// Work or pieces for a job this peer has never been told of.
    UnknownJob,
    /// Replica traffic from outside the job's home.
    NotAHomeMember,
    /// An advert naming a home other than its sender.
    ForgedAdvert,
    /// The peer's `--accept-jobs-from` policy excludes the submitter.
    SubmitterNotAccepted,
    /// Only the submitter or the primary's operator may cancel a job.
    NotTheSubmitter,
    /// More units than this peer's cores (plus one pushed unit).
    OverCoreLimit,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Refusal::NotAMember => "the sender is not a member of the live view",
            Refusal::NotThePrimary => "only the job's primary may send this",
            Refusal::UnknownJob => "the job is unknown here",
            Refusal::NotAHomeMember => "the sender is not a member of the job's home",
            Refusal::ForgedAdvert => "the advert names a home other than its sender",
            Refusal::SubmitterNotAccepted => "this peer does not accept jobs from the submitter",
            Refusal::NotTheSubmitter => {
                "only the job's submitter or the operator of its primary may cancel it"
            }
            Refusal::OverCoreLimit => "the peer already runs as many units as it offers cores",
        })
    }
}

/// Messages from senders not yet in the view, waiting for it to catch up.
pub(super) struct Parked<P> {
    queue: VecDeque<(Instant, P, JobMsg<P>)>,
}

impl<P> Default for Parked<P> {
    fn default() -> Self {
        Parked {
            queue: VecDeque::new(),
        }
    }
}

impl<P: PeerKey> Parked<P> {
    /// Holds `msg`, unless the bounds are reached: then it is handed back.
    fn park(&mut self, now: Instant, from: P, msg: JobMsg<P>) -> Option<JobMsg<P>> {
        let from_peer = self.queue.iter().filter(|(_, p, _)| *p == from).count();
        if self.queue.len() >= MAX_PARKED
            || from_peer >= MAX_PARKED_PER_PEER
            || payload_bytes(&msg) > MAX_PARKED_MESSAGE_BYTES
        {
            return Some(msg);
        }
        self.queue.push_back((now + PARK_PATIENCE, from, msg));
        None
    }

    /// Takes the held messages of senders that `admitted` now accepts.
    fn release(&mut self, admitted: impl Fn(&P) -> bool) -> Vec<(P, JobMsg<P>)> {
        let mut out = Vec::new();
        let mut keep = VecDeque::new();
        for (until, from, msg) in self.queue.drain(..) {
            if admitted(&from) {
                out.push((from, msg));
            } else {
                keep.push_back((until, from, msg));
            }
        }
        self.queue = keep;
        out
    }

    /// When the oldest held message runs out of patience.
    pub(super) fn next_expiry(&self) -> Option<Instant> {
        self.queue.front().map(|(until, _, _)| *until)
    }

    /// Takes the messages held past their patience.
    fn expired(&mut self, now: Instant) -> Vec<(P, JobMsg<P>)> {
        let mut out = Vec::new();
        while self
            .queue
            .front()
            .is_some_and(|(until, _, _)| *until <= now)
        {
            if let Some((_, from, msg)) = self.queue.pop_front() {
                out.push((from, msg));
            }
        }
        out
    }
}

/// Rough payload size of a message, for the parking bound.
fn payload_bytes<P>(msg: &JobMsg<P>) -> usize {
    match msg {
        JobMsg::Submit { params, .. } => params.len(),
        JobMsg::Assign { state, .. } => state.len(),
        JobMsg::Report { .. }
        | JobMsg::Home(HomeMsg::Replica { .. })
        | JobMsg::StorePiece { .. }
        | JobMsg::Pieces { .. }
        | JobMsg::Status { .. } => usize::MAX,
        _ => 0,
    }
}

/// The name of a message's kind, for logs.
pub(super) fn kind_of<P>(msg: &JobMsg<P>) -> &'static str {
    match msg {
        JobMsg::Submit { .. } => "Submit",
        JobMsg::Advert { .. } => "Advert",
        JobMsg::WorkRequest { .. } => "WorkRequest",
        JobMsg::NoWork { .. } => "NoWork",
        JobMsg::StealRequest { .. } => "StealRequest",
        JobMsg::StealDeclined { .. } => "StealDeclined",
        JobMsg::Assign { .. } => "Assign",
        JobMsg::Report { .. } => "Report",
        JobMsg::Ack { .. } => "Ack",
        JobMsg::Stale { .. } => "Stale",
        JobMsg::Progress { .. } => "Progress",
        JobMsg::Shared { .. } => "Shared",
        JobMsg::Improved { .. } => "Improved",
        JobMsg::Status { .. } => "Status",
        JobMsg::Query { .. } => "Query",
        JobMsg::Unknown { .. } => "Unknown",
        JobMsg::Home(msg) => msg.name(),
        JobMsg::StorePiece { .. } => "StorePiece",
        JobMsg::PieceStored { .. } => "PieceStored",
        JobMsg::FetchPieces { .. } => "FetchPieces",
        JobMsg::Pieces { .. } => "Pieces",
        JobMsg::Cancel { .. } => "Cancel",
        JobMsg::CancelReply { .. } => "CancelReply",
        JobMsg::TooLarge { .. } => "TooLarge",
        JobMsg::PiecesLost { .. } => "PiecesLost",
        JobMsg::CheckpointNow { .. } => "CheckpointNow",
        JobMsg::Holds { .. } => "Holds",
        JobMsg::Held { .. } => "Held",
        JobMsg::Declined { .. } => "Declined",
    }
}

/// What to do with a message.
pub(super) enum Verdict {
    Accept,
    /// Hold it until the sender joins the view (or the patience runs out).
    Park,
    Refuse(Refusal),
}

impl<P: PeerKey> Jobs<P> {
    /// Whether `peer` is in the live view (suspects included) or is this peer.
    pub(super) fn in_view(&self, peer: &P) -> bool {
        *peer == self.me || self.members.contains(peer) || self.suspects.contains(peer)
    }

    /// Whether `peer` may act as `job`'s primary as this peer sees it.
    pub(super) fn plausible_primary(&self, job: JobId, peer: &P, home_size: Option<u8>) -> bool {
        if self.known.get(&job).is_some_and(|k| k.home == *peer) {
            return true;
        }
        if let Some(h) = self.homes.get(&job) {
            if h.has_member(peer) {
                return true;
            }
        }
        let size = home_size
            .or_else(|| self.home_size_of(job))
            .map_or(ASSUMED_HOME_SIZE, usize::from);
        self.home_of(job, size.max(1) * PLAUSIBLE_HOME_FACTOR)
            .contains(peer)
    }

    /// Whether this peer can see `job`: advertised to it, homed here, or
    /// one of its units runs here.
    fn sees_job(&self, job: JobId) -> bool {
        self.known.contains_key(&job)
            || self.homes.contains_key(&job)
            || self.running.keys().any(|(j, _)| *j == job)
    }

    /// Whether `submitter` may submit jobs here.
    pub(super) fn accepts_submitter(&self, submitter: &P) -> bool {
        if *submitter == self.me {
            return true;
        }
        match &self.submit_policy {
            SubmitPolicy::Any => true,
            SubmitPolicy::Network => self.in_view(submitter),
            SubmitPolicy::Peers(peers) => peers.contains(submitter),
        }
    }

    /// Whether this peer computes units of jobs `submitter` submitted: all
    /// of them, unless it accepts jobs only from a list of peers (a job
    /// whose submitter has left must still finish, so `Network` does not
    /// ask for a live submitter).
    pub(super) fn works_for(&self, submitter: &P) -> bool {
        match &self.submit_policy {
            SubmitPolicy::Peers(peers) => *submitter == self.me || peers.contains(submitter),
            SubmitPolicy::Any | SubmitPolicy::Network => true,
        }
    }

    /// Checks `msg` from `from` against who may send it.
    pub(super) fn authorize(&self, from: &P, msg: &JobMsg<P>) -> Verdict {
        if *from == self.me {
            return Verdict::Accept;
        }
        if let JobMsg::Submit { .. } = msg {
            return if self.accepts_submitter(from) {
                Verdict::Accept
            } else if self.submit_policy == SubmitPolicy::Network {
                // Not in the view yet: it may be a moment from joining.
                Verdict::Park
            } else {
                Verdict::Refuse(Refusal::SubmitterNotAccepted)
            };
        }
        if !self.in_view(from) {
            return Verdict::Park;
        }
        let primary_only = |job: JobId, home_size: Option<u8>| {
            if self.plausible_primary(job, from, home_size) {
                Verdict::Accept
            } else {
                Verdict::Refuse(Refusal::NotThePrimary)
            }
        };
        match msg {
            JobMsg::Advert { home, .. } if home != from => Verdict::Refuse(Refusal::ForgedAdvert),
            JobMsg::Assign { job, ft, .. } => {
                let submitter = self.homes.get(job).map(|h| h.submitter());
                if !self.sees_job(*job) {
                    Verdict::Refuse(Refusal::UnknownJob)
                } else if submitter.is_some_and(|s| !self.works_for(s)) {
                    Verdict::Refuse(Refusal::SubmitterNotAccepted)
                } else {
                    primary_only(*job, Some(ft.home_size))
                }
            }
            JobMsg::Stale { job, .. }
            | JobMsg::Ack { job, .. }
            | JobMsg::Shared { job, .. }
            | JobMsg::StealRequest { job, .. }
            | JobMsg::CheckpointNow { job, .. }
            | JobMsg::Holds { job, .. }
            | JobMsg::CancelReply { job, .. } => primary_only(*job, None),
            JobMsg::StorePiece { job, .. } | JobMsg::FetchPieces { job, .. } => {
                primary_only(*job, None)
            }
            JobMsg::Home(HomeMsg::Replica {
                key: job, update, ..
            }) => {
                let size = match update {
                    Update::Snapshot { size, .. } => Some(*size),
                    _ => None,
                };
                if self.plausible_primary(*job, from, size) {
                    Verdict::Accept
                } else {
                    Verdict::Refuse(Refusal::NotAHomeMember)
                }
            }
            _ => Verdict::Accept,
        }
    }

    /// Checks and dispatches one message; refused ones are counted and
    /// reported as [`super::JobEvent::Refused`].
    pub(super) fn admit(&mut self, now: Instant, from: P, msg: JobMsg<P>) {
        match self.authorize(&from, &msg) {
            Verdict::Accept => self.dispatch(now, from, msg),
            Verdict::Park => {
                if let Some(msg) = self.parked.park(now, from.clone(), msg) {
                    self.refuse(&from, &msg, Refusal::NotAMember);
                }
            }
            Verdict::Refuse(why) => self.refuse(&from, &msg, why),
        }
    }

    /// Counts and reports a refused message; a refused submission or
    /// cancellation is answered, so its sender fails clearly.
    pub(super) fn refuse(&mut self, from: &P, msg: &JobMsg<P>, why: Refusal) {
        self.count_refusal(from, kind_of(msg), why);
        match msg {
            JobMsg::Submit {
                job,
                app,
                params,
                ft,
                ..
            } => {
                let view = self.failed_view(from, *job, app, params, *ft, why.to_string());
                self.send(from.clone(), JobMsg::Status { view }, false);
            }
            JobMsg::Cancel { job } => {
                let refused = Some(why.to_string());
                self.send(
                    from.clone(),
                    JobMsg::CancelReply { job: *job, refused },
                    false,
                );
            }
            _ => {}
        }
    }

    /// Counts a refused message of kind `message` and reports it.
    pub(super) fn count_refusal(&mut self, from: &P, message: &'static str, why: Refusal) {
        self.refused_messages += 1;
        self.event(super::JobEvent::Refused {
            from: from.clone(),
            message,
            why,
        });
    }

    /// Hands held messages of senders now in the view to their handlers.
    pub(super) fn release_parked(&mut self, now: Instant) {
        let mut parked = std::mem::take(&mut self.parked);
        let released = parked.release(|p| self.in_view(p));
        self.parked = parked;
        for (from, msg) in released {
            self.admit(now, from, msg);
        }
    }

    /// Refuses held messages whose senders never joined the view.
    pub(super) fn expire_parked(&mut self, now: Instant) {
        for (from, msg) in self.parked.expired(now) {
            self.refuse(&from, &msg, Refusal::NotAMember);
        }
    }
}
