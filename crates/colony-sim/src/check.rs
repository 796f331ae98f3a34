//! The invariants a run must keep, and the bookkeeping that checks the
//! pipes' promise: within one life of a receiver, every application message
//! is delivered at most once and in order; a message skipped is one its
//! sender was told failed (or that an earlier life of the receiver got); a
//! receipt means the receiver's application got it; every message ends in
//! exactly one outcome.
//!
//! One exception is known and counted rather than failed: the pipe core
//! issues a receipt on a *selective* acknowledgement, while the message
//! waits in the receiver's reorder buffer for an earlier one. If the sender
//! crashes, the receiver crashes, or the sender declares the receiver dead
//! (failing the earlier message without announcing a new base) before the
//! gap is filled, the receipted message never reaches the application.
//! Such a lost receipt is excused only when one of those three happened
//! after the message was sent; any other is a violation.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::Duration;

use colony_core::membership::MemberState;

use crate::peer::AppMsgId;

/// A broken promise, found by the checker.
#[derive(Clone, Debug, PartialEq)]
pub enum Violation {
    /// A core (or the simulator) panicked.
    Panic {
        /// The panic message.
        message: String,
    },
    /// The job had not finished by the deadline.
    JobNotFinished {
        /// The virtual deadline.
        deadline: Duration,
        /// What was known of the job then.
        state: String,
    },
    /// The job failed.
    JobFailed {
        /// The reason it gave.
        reason: String,
    },
    /// The job's result differs from the fault-free one.
    WrongResult {
        /// What the job produced.
        got: String,
        /// The direct answer.
        expected: String,
    },
    /// The final statistics do not show every unit merged exactly once.
    UnitsMismatch {
        /// Units named.
        units: u64,
        /// Units merged.
        done: u64,
    },
    /// No surviving peer could get the result by query.
    QueryUnanswered {
        /// Who asked.
        asker: u32,
        /// What came back, if anything.
        answer: String,
    },
    /// An acknowledged checkpoint was lost although no more than the
    /// tolerated number of its holders had crashed.
    CheckpointLost {
        /// The unit.
        unit: u64,
        /// Its holders.
        holders: Vec<u32>,
        /// Those of them that crashed.
        crashed: Vec<u32>,
        /// Failures the storage tolerates.
        tolerated: usize,
    },
    /// After the run settled, a live peer does not see another as alive.
    ViewsDiverged {
        /// Who looks.
        observer: u32,
        /// At whom.
        peer: u32,
        /// What it sees.
        state: Option<MemberState>,
    },
    /// A receiver's application got the same message twice in one life.
    PipeDuplicate {
        /// The message.
        id: AppMsgId,
    },
    /// A receiver's application got a message after a later one.
    PipeOutOfOrder {
        /// The message.
        id: AppMsgId,
        /// The later message delivered before it.
        after: u64,
    },
    /// A message was skipped although its sender was not told it failed.
    PipeGap {
        /// The skipped message.
        id: AppMsgId,
    },
    /// The sender got a receipt for a message no receiver got.
    PipeReceiptWithoutDelivery {
        /// The message.
        id: AppMsgId,
    },
    /// A message got two outcomes.
    PipeTwoOutcomes {
        /// The message.
        id: AppMsgId,
    },
    /// A peer received bytes it could not decode, or could not encode.
    Malformed {
        /// Receiver.
        peer: u32,
        /// Sender.
        from: u32,
        /// Decoder's complaint.
        error: String,
    },
    /// A core kept asking to be woken at the same instant.
    TimerLivelock {
        /// The peer.
        peer: u32,
        /// When.
        at: Duration,
    },
    /// The object space's history has no linearization: some answer
    /// contradicts every order of the calls (a stale read, a lost write,
    /// a lock granted twice, ...).
    SpaceNotLinearizable {
        /// The checker's report: the longest order found and the calls
        /// none of which could come next.
        report: String,
    },
    /// The linearizability search ran out of budget: no verdict, which is
    /// not a pass (shorten the workload).
    SpaceCheckUndecided {
        /// The checker's report.
        report: String,
    },
    /// A fencing token went backwards in real time: a grant not above an
    /// earlier one, or a write accepted with an older token than one
    /// granted before it.
    SpaceFencing {
        /// Which object and operations.
        error: String,
    },
    /// A call got an answer it cannot get (a reply of the wrong kind, an
    /// error the workload never provokes).
    SpaceUnexpectedAnswer {
        /// The workload's client.
        client: u64,
        /// The call and what it got.
        answer: String,
    },
    /// Once faults were over and the network healed, an object could not
    /// be read within the attempts allowed.
    SpaceFinalReadUnanswered {
        /// The object.
        key: String,
        /// What the last attempt got.
        answer: String,
    },
    /// Distributed objects: acknowledged additions that no single history
    /// of the object explains (one position given twice, or an addition
    /// acknowledged before another was asked placed after it): a rollback
    /// answered as if nothing happened, or two primaries committing apart.
    ObjectHistory {
        /// The object.
        object: String,
        /// What contradicts.
        what: String,
    },
    /// Distributed objects: the final state has a token twice, one never
    /// asked, or (under `pml`) lacks an acknowledged one or has it at
    /// another position than its caller was told.
    ObjectExactlyOnce {
        /// The object.
        object: String,
        /// What is wrong.
        what: String,
    },
    /// Distributed objects: two peers' live activations of one object
    /// executed deliveries over overlapping spans of time.
    ObjectDoubleActivation {
        /// The object.
        object: String,
        /// The two activations.
        what: String,
    },
    /// Distributed objects: an answer of a kind the call cannot get.
    ObjectUnexpectedAnswer {
        /// The call and what it got.
        answer: String,
    },
    /// Distributed objects: once faults were over and the network healed,
    /// an object could not be read within the attempts allowed (or was
    /// never created).
    ObjectFinalReadUnanswered {
        /// The object.
        object: String,
        /// What the last attempt got.
        answer: String,
    },
    /// Distributed objects under `cic`: once faults were over and the
    /// network healed, the application did not finish within the run.
    ObjectAppUnfinished {
        /// The object driving it.
        object: String,
        /// How far it got.
        state: String,
    },
    /// Distributed objects under `cic`: the application's answer is not
    /// the fault-free one, or its objects' states do not match.
    ObjectWrongAnswer {
        /// The object.
        object: String,
        /// What is wrong.
        what: String,
    },
    /// The mesh workload broke one of its invariants ([`crate::mesh`]).
    Mesh {
        /// The invariant's name (`mesh-duplicate`, `mesh-lost`, ...).
        invariant: &'static str,
        /// What happened.
        what: String,
    },
}

impl Violation {
    /// The invariant's short name, for summaries.
    pub fn kind(&self) -> &'static str {
        match self {
            Violation::Panic { .. } => "panic",
            Violation::JobNotFinished { .. } => "job-not-finished",
            Violation::JobFailed { .. } => "job-failed",
            Violation::WrongResult { .. } => "wrong-result",
            Violation::UnitsMismatch { .. } => "units-mismatch",
            Violation::QueryUnanswered { .. } => "query-unanswered",
            Violation::CheckpointLost { .. } => "checkpoint-lost",
            Violation::ViewsDiverged { .. } => "views-diverged",
            Violation::PipeDuplicate { .. } => "pipe-duplicate",
            Violation::PipeOutOfOrder { .. } => "pipe-out-of-order",
            Violation::PipeGap { .. } => "pipe-gap",
            Violation::PipeReceiptWithoutDelivery { .. } => "pipe-receipt-without-delivery",
            Violation::PipeTwoOutcomes { .. } => "pipe-two-outcomes",
            Violation::Malformed { .. } => "malformed",
            Violation::TimerLivelock { .. } => "timer-livelock",
            Violation::SpaceNotLinearizable { .. } => "space-not-linearizable",
            Violation::SpaceCheckUndecided { .. } => "space-check-undecided",
            Violation::SpaceFencing { .. } => "space-fencing",
            Violation::SpaceUnexpectedAnswer { .. } => "space-unexpected-answer",
            Violation::SpaceFinalReadUnanswered { .. } => "space-final-read-unanswered",
            Violation::ObjectHistory { .. } => "object-history",
            Violation::ObjectExactlyOnce { .. } => "object-exactly-once",
            Violation::ObjectDoubleActivation { .. } => "object-double-activation",
            Violation::ObjectUnexpectedAnswer { .. } => "object-unexpected-answer",
            Violation::ObjectFinalReadUnanswered { .. } => "object-final-read-unanswered",
            Violation::ObjectAppUnfinished { .. } => "object-app-unfinished",
            Violation::ObjectWrongAnswer { .. } => "object-wrong-answer",
            Violation::Mesh { invariant, .. } => invariant,
        }
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Violation::Panic { message } => write!(f, "panic: {message}"),
            Violation::JobNotFinished { deadline, state } => {
                write!(f, "job not finished by {deadline:?}: {state}")
            }
            Violation::JobFailed { reason } => write!(f, "job failed: {reason}"),
            Violation::WrongResult { got, expected } => {
                write!(f, "wrong result: got {got}, fault-free answer {expected}")
            }
            Violation::UnitsMismatch { units, done } => {
                write!(f, "{done} of {units} units merged")
            }
            Violation::QueryUnanswered { asker, answer } => {
                write!(f, "query from surviving peer {asker} got {answer}")
            }
            Violation::CheckpointLost {
                unit,
                holders,
                crashed,
                tolerated,
            } => write!(
                f,
                "checkpoint of unit {unit} lost: holders {holders:?}, crashed {crashed:?}, tolerated {tolerated}"
            ),
            Violation::ViewsDiverged {
                observer,
                peer,
                state,
            } => write!(
                f,
                "after settling, peer {observer} sees live peer {peer} as {state:?}"
            ),
            Violation::PipeDuplicate { id } => write!(f, "pipe delivered {id:?} twice"),
            Violation::PipeOutOfOrder { id, after } => {
                write!(f, "pipe delivered {id:?} after message {after}")
            }
            Violation::PipeGap { id } => {
                write!(f, "pipe skipped {id:?} without telling its sender")
            }
            Violation::PipeReceiptWithoutDelivery { id } => {
                write!(f, "receipt for {id:?}, which no receiver got")
            }
            Violation::PipeTwoOutcomes { id } => write!(f, "two outcomes for {id:?}"),
            Violation::Malformed { peer, from, error } => {
                write!(f, "peer {peer}: malformed input from {from}: {error}")
            }
            Violation::TimerLivelock { peer, at } => {
                write!(f, "peer {peer} keeps asking to be woken at {at:?}")
            }
            Violation::SpaceNotLinearizable { report } => write!(f, "object space: {report}"),
            Violation::SpaceCheckUndecided { report } => write!(f, "object space: {report}"),
            Violation::SpaceFencing { error } => write!(f, "object space fencing: {error}"),
            Violation::SpaceUnexpectedAnswer { client, answer } => {
                write!(f, "object space client {client}: {answer}")
            }
            Violation::SpaceFinalReadUnanswered { key, answer } => write!(
                f,
                "object {key} could not be read after the faults ended: {answer}"
            ),
            Violation::ObjectHistory { object, what } => {
                write!(f, "object {object}: no single history: {what}")
            }
            Violation::ObjectExactlyOnce { object, what } => {
                write!(f, "object {object}: not exactly once: {what}")
            }
            Violation::ObjectDoubleActivation { object, what } => {
                write!(f, "object {object}: two activations executing at once: {what}")
            }
            Violation::ObjectUnexpectedAnswer { answer } => write!(f, "objects: {answer}"),
            Violation::ObjectFinalReadUnanswered { object, answer } => write!(
                f,
                "object {object} could not be read after the faults ended: {answer}"
            ),
            Violation::ObjectAppUnfinished { object, state } => write!(
                f,
                "the application of {object} did not finish after the faults ended: {state}"
            ),
            Violation::ObjectWrongAnswer { object, what } => {
                write!(f, "object {object}: not the fault-free answer: {what}")
            }
            Violation::Mesh { what, .. } => write!(f, "{what}"),
        }
    }
}

/// Per receiver life and sender session: the numbers delivered, in order.
type StreamKey = (u32, u32, u32, u64);

/// Bookkeeping of the application messages on the pipes.
#[derive(Default)]
pub struct PipeChecker {
    streams: BTreeMap<StreamKey, Vec<u64>>,
    delivered_any: BTreeMap<AppMsgId, BTreeSet<u32>>,
    outcomes: BTreeMap<AppMsgId, bool>,
    sent_at: BTreeMap<AppMsgId, Duration>,
    crashes: BTreeMap<u32, Vec<Duration>>,
    deaths: BTreeMap<(u32, u32), Vec<Duration>>,
    /// Violations found as messages went by.
    pub violations: Vec<Violation>,
    /// Receipted messages never delivered, excused by a crash or a death
    /// declaration (see the module docs).
    pub early_receipts_lost: Vec<AppMsgId>,
}

impl PipeChecker {
    /// A message was handed to the sender's pipes at `at`.
    pub fn sent(&mut self, id: AppMsgId, at: Duration) {
        self.sent_at.insert(id, at);
    }

    /// `peer` crashed at `at`.
    pub fn crashed(&mut self, peer: u32, at: Duration) {
        self.crashes.entry(peer).or_default().push(at);
    }

    /// `observer` declared `peer` dead at `at`.
    pub fn declared_dead(&mut self, observer: u32, peer: u32, at: Duration) {
        self.deaths.entry((observer, peer)).or_default().push(at);
    }

    /// Messages sent so far.
    pub fn sent_count(&self) -> u64 {
        self.sent_at.len() as u64
    }

    /// Whether a receipt for `id` that led to no delivery is explained by
    /// the known early-receipt behaviour.
    fn excused(&self, id: &AppMsgId) -> bool {
        let since = self.sent_at.get(id).copied().unwrap_or_default();
        let after =
            |times: Option<&Vec<Duration>>| times.is_some_and(|t| t.iter().any(|t| *t >= since));
        after(self.crashes.get(&id.from))
            || after(self.crashes.get(&id.to))
            || after(self.deaths.get(&(id.from, id.to)))
    }

    /// Messages delivered so far (any life).
    pub fn delivered_count(&self) -> usize {
        self.delivered_any.len()
    }

    /// The sender settled `id`.
    pub fn outcome(&mut self, id: AppMsgId, delivered: bool) {
        if self.outcomes.insert(id, delivered).is_some() {
            self.violations.push(Violation::PipeTwoOutcomes { id });
        }
    }

    /// Life `life` of the receiver delivered `id` to its application.
    pub fn delivered(&mut self, life: u32, id: AppMsgId) {
        let key = (id.to, life, id.from, id.session);
        let stream = self.streams.entry(key).or_default();
        if let Some(&last) = stream.last() {
            if id.no == last || stream.contains(&id.no) {
                self.violations.push(Violation::PipeDuplicate { id });
                return;
            }
            if id.no < last {
                self.violations
                    .push(Violation::PipeOutOfOrder { id, after: last });
                return;
            }
        }
        stream.push(id.no);
        self.delivered_any.entry(id).or_default().insert(life);
    }

    /// End-of-run checks: gaps only where the sender was told, receipts
    /// only for delivered messages. `waiting` says whether a message still
    /// waits at its live sender for an earlier message on its channel.
    pub fn finish(&mut self, waiting: impl Fn(&AppMsgId) -> bool) {
        for ((to, life, from, session), nos) in &self.streams {
            for pair in nos.windows(2) {
                for no in pair[0] + 1..pair[1] {
                    let id = AppMsgId {
                        from: *from,
                        session: *session,
                        to: *to,
                        no,
                    };
                    let failed = self.outcomes.get(&id) == Some(&false);
                    let earlier_life = self
                        .delivered_any
                        .get(&id)
                        .is_some_and(|lives| lives.iter().any(|l| l < life));
                    // A receipted message skipped by a later life: settled
                    // by an early receipt to a life that crashed (counted
                    // below as a lost early receipt).
                    let early = self.outcomes.get(&id) == Some(&true) && self.excused(&id);
                    if !failed && !earlier_life && !early {
                        self.violations.push(Violation::PipeGap { id });
                    }
                }
            }
        }
        for (id, delivered) in &self.outcomes {
            if *delivered && !self.delivered_any.contains_key(id) {
                // Receipted on a selective ack, waiting in the receiver's
                // buffer for an earlier message still in flight at the end.
                if waiting(id) {
                    continue;
                }
                if self.excused(id) {
                    self.early_receipts_lost.push(*id);
                } else {
                    self.violations
                        .push(Violation::PipeReceiptWithoutDelivery { id: *id });
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(no: u64) -> AppMsgId {
        AppMsgId {
            from: 1,
            session: 9,
            to: 2,
            no,
        }
    }

    #[test]
    fn catches_duplicates_reordering_gaps_and_false_receipts() {
        let mut c = PipeChecker::default();
        c.delivered(0, id(0));
        c.delivered(0, id(0));
        c.delivered(0, id(2));
        c.delivered(0, id(1));
        c.sent(id(5), Duration::from_secs(1));
        c.crashed(2, Duration::ZERO);
        c.outcome(id(5), true);
        c.finish(|_| false);
        let kinds: Vec<&str> = c.violations.iter().map(|v| v.kind()).collect();
        assert_eq!(
            kinds,
            vec![
                "pipe-duplicate",
                "pipe-out-of-order",
                "pipe-gap",
                "pipe-receipt-without-delivery"
            ]
        );
    }

    #[test]
    fn failed_or_earlier_life_gaps_are_fine() {
        let mut c = PipeChecker::default();
        c.delivered(0, id(0));
        c.delivered(0, id(1));
        c.delivered(1, id(0));
        c.delivered(1, id(2));
        c.delivered(1, id(4));
        c.outcome(id(3), false);
        c.sent(id(7), Duration::from_secs(1));
        c.outcome(id(7), true);
        c.crashed(2, Duration::from_secs(2));
        c.finish(|_| false);
        assert!(c.violations.is_empty(), "{:?}", c.violations);
        assert_eq!(c.early_receipts_lost, vec![id(7)]);
    }
}
