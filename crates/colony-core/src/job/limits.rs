//! How large a job message may be, per kind, and what happens to one that
//! is larger: its operation fails with a reason naming the size and the
//! limit — the job ends `Failed`, the submitter hears why — instead of the
//! message being dropped and retried forever.
//!
//! Both drivers (the tokio one and the simulator) encode job messages with
//! [`MessageLimits::encode`] and hand the ones that do not fit back to the
//! core with [`JobInput::TooLarge`](super::JobInput::TooLarge).

use std::fmt;
use std::time::Instant;

use serde::Serialize;

use super::{JobMsg, JobState, Jobs, Report};
use crate::wire;
use crate::PeerKey;

/// What a job message carries, for its size limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MessageKind {
    /// Coordination: adverts, requests, acknowledgements, votes, shared
    /// variables, queries.
    Control,
    /// A unit's state: assignments, checkpoints, divides, hand-backs,
    /// checkpoint pieces.
    State,
    /// A unit's partial result, or a finished job's status with its
    /// result.
    Result,
    /// A job record as replicated on its home (snapshots, changes), or a
    /// submission with its parameters.
    Record,
}

impl MessageKind {
    /// The kind of `msg`.
    pub fn of<P>(msg: &JobMsg<P>) -> MessageKind {
        match msg {
            JobMsg::Assign { .. }
            | JobMsg::StorePiece { .. }
            | JobMsg::Pieces { .. }
            | JobMsg::Report {
                report:
                    Report::Checkpoint { .. }
                    | Report::Divided { .. }
                    | Report::HandBack { .. }
                    | Report::Resume { .. },
                ..
            } => MessageKind::State,
            JobMsg::Report {
                report: Report::Done { .. },
                ..
            } => MessageKind::Result,
            JobMsg::Status { view } if matches!(view.state, JobState::Done { .. }) => {
                MessageKind::Result
            }
            JobMsg::Home(crate::home::HomeMsg::Replica { .. }) | JobMsg::Submit { .. } => {
                MessageKind::Record
            }
            _ => MessageKind::Control,
        }
    }
}

impl fmt::Display for MessageKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            MessageKind::Control => "control",
            MessageKind::State => "unit state",
            MessageKind::Result => "result",
            MessageKind::Record => "job record",
        })
    }
}

/// Largest encoded job message of each kind, in bytes. The pipes'
/// `max_message_bytes` caps them all.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MessageLimits {
    /// Coordination messages. Default 1 MiB.
    pub control_bytes: usize,
    /// Unit states and checkpoints. Default 48 MiB (a matmul 2048 unit
    /// holds up to 32 MiB of computed rows).
    pub state_bytes: usize,
    /// Partial results, and a job's merged result: a job whose result grows
    /// past it fails. Default 48 MiB (matmul 2048 has a 32 MiB result).
    pub result_bytes: usize,
    /// Replicated job records: a snapshot holds the result twice (merged,
    /// and in the final state), so keep it above twice `result_bytes`.
    /// Default 112 MiB.
    pub record_bytes: usize,
}

impl Default for MessageLimits {
    fn default() -> Self {
        MessageLimits {
            control_bytes: 1 << 20,
            state_bytes: 48 << 20,
            result_bytes: 48 << 20,
            record_bytes: 112 << 20,
        }
    }
}

/// A job message over its limit.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("a {kind} message of {size} bytes exceeds the limit of {max} bytes")]
pub struct TooLarge {
    /// What it carries.
    pub kind: MessageKind,
    /// Its encoded size (at least; encoding may stop at the limit).
    pub size: usize,
    /// The limit in force.
    pub max: usize,
}

impl MessageLimits {
    /// The limit of `kind`.
    pub fn of(&self, kind: MessageKind) -> usize {
        match kind {
            MessageKind::Control => self.control_bytes,
            MessageKind::State => self.state_bytes,
            MessageKind::Result => self.result_bytes,
            MessageKind::Record => self.record_bytes,
        }
    }

    /// Encodes `msg` within its kind's limit and `ceiling` (what the pipe
    /// takes, less the driver's own framing).
    pub fn encode<P: Serialize>(
        &self,
        msg: &JobMsg<P>,
        ceiling: usize,
    ) -> Result<Vec<u8>, TooLarge> {
        let kind = MessageKind::of(msg);
        let max = self.of(kind).min(ceiling);
        match wire::encode(msg, max) {
            Ok(bytes) => Ok(bytes),
            Err(wire::WireError::FrameTooLarge { size, .. }) => Err(TooLarge { kind, size, max }),
            // Encoding into memory does not fail otherwise; call it over
            // the limit rather than lose the message silently.
            Err(_) => Err(TooLarge {
                kind,
                size: usize::MAX,
                max,
            }),
        }
    }

    /// Whether `len` received bytes of a message of `kind` are within what
    /// this peer accepts.
    pub fn accepts(&self, kind: MessageKind, len: usize) -> bool {
        len <= self.of(kind)
    }
}

/// The reason a job fails when its merged result outgrows the limit.
pub(super) fn result_too_large(size: usize, max: usize) -> String {
    format!("the job's result of {size} bytes exceeds the limit of {max} bytes for results")
}

impl<P: PeerKey> Jobs<P> {
    /// A message the core asked to send to `to` could not be: it is over
    /// its size limit (`error`). Fails what it was for, once, instead of
    /// retrying it: a worker's report tells the primary (in a small
    /// message) and stops the unit; a primary's assignment, checkpoint
    /// piece or replica update fails the job; a status carrying a result
    /// goes out as a failure naming the limit.
    pub(super) fn send_too_large(&mut self, now: Instant, to: P, msg: JobMsg<P>, error: &TooLarge) {
        let reason = error.to_string();
        match msg {
            JobMsg::Report {
                job, unit, epoch, ..
            } => {
                self.send(
                    to,
                    JobMsg::TooLarge {
                        job,
                        unit,
                        epoch,
                        reason,
                    },
                    false,
                );
                self.on_stale(job, unit, epoch);
            }
            JobMsg::Assign { job, .. }
            | JobMsg::StorePiece { job, .. }
            | JobMsg::Home(crate::home::HomeMsg::Replica { key: job, .. }) => {
                self.fail_too_large(now, job, reason)
            }
            JobMsg::Status { mut view } => {
                if matches!(view.state, JobState::Done { .. }) {
                    view.state = JobState::Failed {
                        reason: format!("cannot send the result: {reason}"),
                    };
                    self.send(to, JobMsg::Status { view }, false);
                }
            }
            JobMsg::Submit {
                job,
                app,
                params,
                ft,
                keep_namespace,
                ..
            } => {
                // The submitter is this peer: tell its watcher.
                let view = super::JobView {
                    job,
                    app,
                    params,
                    home: to.clone(),
                    home_members: vec![to],
                    submitter: self.me.clone(),
                    ft,
                    keep_namespace,
                    state: JobState::Failed {
                        reason: format!("cannot submit the job: {reason}"),
                    },
                    stats: Default::default(),
                    contributions: Vec::new(),
                    shared: Default::default(),
                    elapsed_s: 0.0,
                    home_majority_lost: None,
                    declined: None,
                    replicated: false,
                };
                self.outputs.push_back(super::JobOutput::Status(view));
            }
            // Pieces: the primary's restore gives up after its patience.
            // Control messages are bounded by their senders' inputs.
            // Nothing to retry either way.
            _ => {}
        }
    }
}
