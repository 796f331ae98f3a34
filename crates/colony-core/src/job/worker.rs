//! The worker side: units this peer runs, their reports, acknowledgements,
//! checkpoints, hand-back, leaving and pausing.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::divisible::SharedVars;
use crate::ft::{CheckpointStorage, FaultTolerance};
use crate::PeerKey;

use super::*;

/// How far past the last report on its disk a restarted worker numbers its
/// reports: beyond any its previous life could have sent.
pub(super) const RESTART_SEQ_GAP: u64 = 1 << 32;

/// Longest wait between two checkpoints of a unit: a job's TTC comes from
/// a peer, and a longer one (up to `Duration::MAX`) cannot be added to an
/// `Instant`.
pub(super) const MAX_TTC: Duration = Duration::from_secs(365 * 24 * 3600);

/// A unit computing on this peer.
pub(super) struct WorkerUnit<P> {
    pub(super) epoch: Epoch,
    pub(super) app: String,
    pub(super) ft: FaultTolerance,
    /// Number of the last report made.
    pub(super) seq: u64,
    /// Reports not yet acknowledged, oldest first: (seq, after, report).
    pub(super) unacked: VecDeque<(u64, u64, Report)>,
    /// The last report that must be applied (not a checkpoint).
    pub(super) last_must: u64,
    pub(super) last_sent: Instant,
    pub(super) next_checkpoint_at: Instant,
    pub(super) checkpoint_asked: bool,
    /// Steals waiting for a divide answer, oldest first.
    pub(super) steals: VecDeque<u64>,
    /// Why the unit is being stopped, if it is.
    pub(super) stopping: Option<StopReason>,
    /// The primary the unacknowledged reports went to.
    pub(super) sent_to: Option<P>,
    /// Local storage: the last local piece written (its version).
    pub(super) local_version: u64,
    /// Local storage: local pieces being written, oldest first: (version,
    /// last report made before it, shared variables it holds).
    pub(super) local_inflight: VecDeque<(u64, u64, SharedVars)>,
    /// Local storage: reports up to this one are covered by a local piece
    /// on disk; a divide is sent only then, so a restart never resumes from
    /// a state that still holds a part the primary has recorded.
    pub(super) durable_seq: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum StopReason {
    /// The primary said the copy is stale: drop it.
    Stale,
    /// The peer is leaving, or pausing its computing: hand the state back.
    HandBack,
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

impl<P> WorkerUnit<P> {
    pub(super) fn new(
        epoch: Epoch,
        app: String,
        ft: FaultTolerance,
        now: Instant,
        _c: &JobConfig,
    ) -> Self {
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
    pub(super) fn local(&self) -> bool {
        self.ft.checkpoints() && self.ft.storage == CheckpointStorage::Local
    }

    /// Whether report `seq` must wait before it is sent: a divide with
    /// local storage waits until the state it left is on disk.
    pub(super) fn held(&self, seq: u64, report: &Report) -> bool {
        self.local() && matches!(report, Report::Divided { .. }) && seq > self.durable_seq
    }

    /// Its thread is done (result or hand-back reported).
    pub(super) fn finished(&self) -> bool {
        self.unacked
            .iter()
            .any(|(_, _, r)| matches!(r, Report::Done { .. } | Report::HandBack { .. }))
    }
}

impl<P: PeerKey> Jobs<P> {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn on_assign(
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
        if self.leaving || self.paused || over_limit || self.running.contains_key(&(job, unit)) {
            // Leaving, paused, over the core limit, or an old copy still
            // stopping: hand it straight back.
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
    pub(super) fn report(&mut self, now: Instant, job: JobId, unit: UnitId, report: Report) {
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

    pub(super) fn resend_reports(&mut self, now: Instant, job: JobId, unit: UnitId) {
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

    pub(super) fn on_ack(
        &mut self,
        now: Instant,
        job: JobId,
        unit: UnitId,
        epoch: Epoch,
        seq: u64,
    ) {
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
            if self.paused {
                // Taken back while this peer computes nothing: it goes on
                // elsewhere.
                self.report(now, job, unit, Report::HandBack { state });
                return;
            }
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

    pub(super) fn on_stale(&mut self, job: JobId, unit: UnitId, epoch: Epoch) {
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

    pub(super) fn drop_unit(&mut self, job: JobId, unit: UnitId) {
        self.running.remove(&(job, unit));
        if !self.running.keys().any(|(j, _)| *j == job) && self.current_job == Some(job) {
            self.current_job = None;
        }
    }

    pub(super) fn on_steal_request(&mut self, from: P, job: JobId, steal: u64) {
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
    pub(super) fn divided(
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
    pub(super) fn checkpointed(
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

    pub(super) fn config_ttc(&self, job: JobId, unit: UnitId) -> Duration {
        self.running
            .get(&(job, unit))
            .map(|w| w.ft.ttc)
            .unwrap_or(Duration::from_secs(1))
    }

    /// Local storage: a divide's part goes to disk as a copy of the new
    /// unit's first checkpoint (this peer serves it to a primary that must
    /// restore the part), then the remaining state with the divide still to
    /// report. The divide is sent once both are durable.
    pub(super) fn persist_divide(
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
        let child = child_id(unit, w.epoch, w.seq);
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
    /// with the divides not yet acknowledged; [`JobInput::Persisted`] reports it.
    pub(super) fn persist_local(
        &mut self,
        job: JobId,
        unit: UnitId,
        state: Vec<u8>,
        shared: SharedVars,
    ) {
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
            index: LOCAL_INDEX,
            data: PieceData::Local(bytes),
        };
        // Served to a primary restoring the unit (its worker then gone).
        let evicted = self.pieces.put(job, unit, piece.clone());
        self.unpersist(job, unit, evicted);
        self.outputs.push_back(JobOutput::Persist {
            key: PieceKey {
                job,
                unit,
                index: LOCAL_INDEX,
            },
            piece,
        });
    }

    /// A [`JobOutput::Persist`] is durable on disk.
    pub(super) fn persisted(&mut self, now: Instant, key: PieceKey, epoch: Epoch, version: u64) {
        if key.index != LOCAL_INDEX {
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
        self.rearm(now);
    }

    /// A unit's worker thread stopped after [`JobOutput::Stop`], with its
    /// last state.
    pub(super) fn unit_stopped(
        &mut self,
        now: Instant,
        job: JobId,
        unit: UnitId,
        state: Option<Vec<u8>>,
    ) {
        let Some(w) = self.running.get(&(job, unit)) else {
            return;
        };
        match (w.stopping, state) {
            (Some(StopReason::HandBack), Some(state)) => {
                self.report(now, job, unit, Report::HandBack { state });
            }
            _ => self.drop_unit(job, unit),
        }
    }

    /// A unit finished on a worker thread.
    pub(super) fn unit_finished(
        &mut self,
        now: Instant,
        job: JobId,
        unit: UnitId,
        output: Vec<u8>,
    ) {
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
    pub(super) fn unit_failed(&mut self, now: Instant, job: JobId, unit: UnitId, error: String) {
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
    pub(super) fn report_progress(&mut self, job: JobId, work: u64) {
        let primary = self.primary_of(job);
        // Same channel as results: a unit's last progress arrives first.
        self.send(primary, JobMsg::Progress { job, work }, true);
    }

    /// This peer is leaving gracefully: stop asking for work, hand every
    /// running unit back and the primary role of every job to the next
    /// home member. Done when [`Jobs::has_left`] says so.
    pub(super) fn leave(&mut self, now: Instant) {
        self.leaving = true;
        self.known.clear();
        self.hand_back_running();
        self.hand_over_homes(now);
    }

    /// Stops every unit running here that is not stopping or finished
    /// already; each hands its state back to its job's primary.
    fn hand_back_running(&mut self) {
        for ((job, unit), w) in self.running.iter_mut() {
            if w.stopping.is_none() && !w.finished() {
                w.stopping = Some(StopReason::HandBack);
                self.outputs.push_back(JobOutput::Stop {
                    job: *job,
                    unit: *unit,
                });
            }
        }
    }

    /// This peer stops computing: every unit running here is stopped and
    /// its state handed back to its job's primary (as on a graceful leave,
    /// so no work is lost), and no work is asked for or accepted until
    /// [`Jobs::resume`]. Membership and homes are untouched: the peer still
    /// holds job records and checkpoint pieces.
    pub(super) fn pause(&mut self) {
        if self.paused {
            return;
        }
        self.paused = true;
        self.hand_back_running();
    }

    /// This peer computes again after [`Jobs::pause`]: it asks for work at
    /// once.
    pub(super) fn resume(&mut self, now: Instant) {
        if !self.paused {
            return;
        }
        self.paused = false;
        self.next_request_at = now;
        self.backoff = self.config.request_backoff_initial;
    }

    /// Whether computing is paused ([`JobInput::Pause`]).
    pub fn is_paused(&self) -> bool {
        self.paused
    }

    /// Whether this peer computes now: a unit runs here and computing is
    /// not paused (units still stopping after a pause do not count).
    pub fn computing(&self) -> bool {
        !self.paused && self.running_units() > 0
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
            .filter(|w| w.stopping == Some(StopReason::HandBack) || !w.unacked.is_empty())
            .count()
    }

    /// Units this peer is computing.
    pub fn running_units(&self) -> usize {
        self.running.values().filter(|w| !w.finished()).count()
    }

    /// `job` has a new primary: a request for work made to the former
    /// one may never be answered (it dropped its steals when it stepped
    /// down), so free cores ask the new one at once rather than after the
    /// request's timeout.
    pub(super) fn primary_changed(&mut self, now: Instant, job: JobId) {
        let asking_for_it = match self.current_job {
            Some(current) => current == job,
            None => true,
        };
        if asking_for_it {
            self.next_request_at = self.next_request_at.min(now);
            self.backoff = self.config.request_backoff_initial;
        }
    }

    pub(super) fn maybe_request_work(&mut self, now: Instant) {
        if self.leaving || self.paused {
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
}
