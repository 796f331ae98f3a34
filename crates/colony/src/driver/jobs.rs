//! The driver's side of divisible jobs: job messages on pipes, worker
//! threads, submissions and queries from the API.

use std::time::Instant;

use colony_core::divisible::AppError;
use colony_core::ft::FaultTolerance;
use colony_core::job::{
    JobEvent, JobId, JobMsg, JobOutput, JobState, JobView, MessageKind, Piece, PieceKey, TooLarge,
};
use colony_core::membership::MemberState;
use colony_core::pipe::{PipeError, TrafficClass};
use colony_core::wire;
use libp2p::PeerId;
use rand::SeedableRng;
use tokio::sync::{oneshot, watch};
use tracing::{debug, info, warn};

use super::{Driver, JobQuery, JobSendKind, JobTicket, TAG_JOBS};
use crate::compute::ComputeEvent;

impl Driver {
    pub(super) fn handle_job_payload(&mut self, now: Instant, from: PeerId, bytes: &[u8]) {
        match wire::decode::<JobMsg<PeerId>>(bytes, self.config.pipes.max_message_bytes) {
            Ok(msg) => {
                let kind = MessageKind::of(&msg);
                if !self.config.jobs.limits.accepts(kind, bytes.len()) {
                    self.counters.oversized_job_messages += 1;
                    debug!(peer = %from, %kind, size = bytes.len(), "job message over its size limit dropped");
                    return;
                }
                self.jobs.handle_message(now, from, msg)
            }
            Err(error) => {
                self.counters.malformed_frames += 1;
                if let Some(suppressed) = self.may_warn(Some(from), "malformed job message") {
                    warn!(peer = %from, %error, suppressed, "malformed job message dropped");
                }
            }
        }
    }

    pub(super) fn on_job_output(&mut self, now: Instant, out: JobOutput<PeerId>) {
        match out {
            JobOutput::Send { to, msg, bulk } => {
                if to == *self.swarm.local_peer_id() {
                    self.jobs.handle_message(now, to, msg);
                    return;
                }
                let kind = match &msg {
                    JobMsg::WorkRequest { job, free } => JobSendKind::WorkRequest {
                        to,
                        job: *job,
                        free: *free,
                    },
                    JobMsg::Query { job } => JobSendKind::Query { job: *job },
                    JobMsg::Cancel { job } => JobSendKind::Cancel { to, job: *job },
                    _ => JobSendKind::Other,
                };
                if matches!(
                    self.membership.state_of(&to),
                    Some(MemberState::Dead | MemberState::Left)
                ) {
                    self.job_send_failed(
                        kind,
                        PipeError::PeerDead {
                            peer: to.to_string(),
                        },
                    );
                    return;
                }
                // One byte of the pipe's limit is the tag's.
                let ceiling = self.config.pipes.max_message_bytes.saturating_sub(1);
                let mut payload = vec![TAG_JOBS];
                match self.config.jobs.limits.encode(&msg, ceiling) {
                    Ok(bytes) => payload.extend_from_slice(&bytes),
                    Err(error) => {
                        self.job_message_too_large(now, to, msg, &error);
                        return;
                    }
                }
                let class = if bulk {
                    TrafficClass::BULK
                } else {
                    TrafficClass::EVENTS
                };
                let token = self.next_token;
                self.next_token += 1;
                let deadline = now + self.config.send_timeout;
                match self.pipes.send(now, to, class, payload, token, deadline) {
                    Ok(()) => {
                        self.job_sends.insert(token, kind);
                    }
                    Err(PipeError::MessageTooLarge { size, max }) => {
                        let error = TooLarge {
                            kind: MessageKind::of(&msg),
                            size,
                            max,
                        };
                        self.job_message_too_large(now, to, msg, &error);
                    }
                    Err(error) => self.job_send_failed(kind, error),
                }
            }
            JobOutput::Run {
                job,
                unit,
                app,
                state,
                shared,
            } => match self.jobs.registry().get(&app) {
                Ok(app) => {
                    debug!(%job, unit, "starting unit");
                    self.compute.start(job, unit, app, state, shared);
                }
                Err(error) => {
                    warn!(%job, unit, %error, "cannot run unit");
                    self.jobs.unit_failed(now, job, unit, error.to_string());
                }
            },
            JobOutput::Divide { job, unit } => {
                if !self.compute.divide(job, unit) {
                    self.jobs
                        .divided(now, job, unit, None, Vec::new(), Default::default());
                }
            }
            JobOutput::Checkpoint { job, unit } => {
                // A unit that already ended answers nothing; its result is on its way.
                self.compute.checkpoint(job, unit);
            }
            JobOutput::Stop { job, unit } => {
                if !self.compute.stop(job, unit) {
                    self.jobs.unit_stopped(now, job, unit, None);
                }
            }
            JobOutput::Persist { key, piece } => self.persist_piece(key, piece),
            JobOutput::Unpersist {
                key,
                epoch,
                version,
            } => self.unpersist_piece(key, epoch, version),
            JobOutput::Forget { job } => self.forget_pieces(job),
            JobOutput::Event(JobEvent::Refused { from, message, why }) => {
                self.log_refusal(from, message, why)
            }
            JobOutput::Event(event) => log_job_event(&event),
            JobOutput::CancelAnswer { job, refused } => {
                let result = match refused {
                    None => Ok(()),
                    Some(reason) => Err(reason),
                };
                for reply in self.job_cancels.remove(&job).unwrap_or_default() {
                    let _ = reply.send(result.clone());
                }
            }
            JobOutput::SharedChanged { job, vars } => self.compute.share(job, &vars),
            JobOutput::Status(view) => {
                let job = view.job;
                if let Some(query) = self.job_queries.remove(&job) {
                    for waiter in query.waiters {
                        let _ = waiter.send(Some(view.clone()));
                    }
                }
                if let Some(watcher) = self.job_watchers.get(&job) {
                    let _ = watcher.send(Some(view.clone()));
                }
                if !matches!(view.state, JobState::Running) {
                    self.job_watchers.remove(&job);
                }
            }
            JobOutput::Unknown(job) => self.query_answered_no(job),
        }
    }

    /// A job message over its size limit: its operation fails (the job
    /// ends `Failed` with the size and the limit in its reason); never
    /// retried.
    fn job_message_too_large(
        &mut self,
        now: Instant,
        to: PeerId,
        msg: JobMsg<PeerId>,
        error: &TooLarge,
    ) {
        self.counters.oversized_job_messages += 1;
        if matches!(msg, JobMsg::Status { .. }) {
            // Answers to queries, which any member may ask: not logged each.
            debug!(peer = %to, %error, "job status over its size limit; sent as a failure");
        } else {
            warn!(peer = %to, %error, "job message over its size limit; failing its job");
        }
        self.jobs.send_too_large(now, to, msg, error);
    }

    pub(super) fn job_send_failed(&mut self, kind: JobSendKind, error: PipeError) {
        let now = Instant::now();
        match kind {
            JobSendKind::WorkRequest { to, job, free } => {
                self.jobs
                    .send_failed(now, to, JobMsg::WorkRequest { job, free })
            }
            JobSendKind::Query { job, .. } => self.query_answered_no(job),
            JobSendKind::Cancel { to, job } => {
                self.jobs.send_failed(now, to, JobMsg::Cancel { job })
            }
            JobSendKind::Other => {}
        }
        debug!(%error, "job message not delivered");
    }

    pub(super) fn handle_compute_event(&mut self, event: ComputeEvent) {
        let now = Instant::now();
        match event {
            ComputeEvent::Finished { job, unit, output } => {
                self.compute.finished(job, unit);
                self.jobs.unit_finished(now, job, unit, output);
                let mut stats = self.membership.local().stats.clone();
                stats.units_done_session += 1;
                stats.units_done_total += 1;
                if let Err(error) = self
                    .store
                    .set_counter("units_done_total", stats.units_done_total)
                {
                    warn!(%error, "cannot record the unit counter");
                }
                self.membership
                    .handle(now, colony_core::membership::Input::SetStats(stats));
            }
            ComputeEvent::Divided {
                job,
                unit,
                part,
                remaining,
                shared,
            } => self.jobs.divided(now, job, unit, part, remaining, shared),
            ComputeEvent::Checkpointed {
                job,
                unit,
                state,
                shared,
            } => self.jobs.checkpointed(now, job, unit, state, shared),
            ComputeEvent::Stopped { job, unit, state } => {
                self.compute.finished(job, unit);
                self.jobs.unit_stopped(now, job, unit, Some(state));
            }
            ComputeEvent::Progress { job, work } => self.jobs.report_progress(job, work),
            ComputeEvent::Failed { job, unit, error } => {
                self.compute.finished(job, unit);
                warn!(%job, unit, %error, "unit failed");
                self.jobs.unit_failed(now, job, unit, error);
            }
        }
    }

    /// Tells the job core who is alive, with their loads.
    pub(super) fn update_job_members(&mut self, now: Instant) {
        let view = self.membership.view(now);
        let suspects = view
            .iter()
            .filter(|m| m.record.state == MemberState::Suspect)
            .map(|m| m.record.peer)
            .collect();
        let members = view
            .into_iter()
            .filter(|m| m.record.state == MemberState::Alive)
            .map(|m| (m.record.peer, m.record.stats.load_avg_1m))
            .collect();
        self.jobs.set_suspects(suspects);
        self.jobs.set_members(now, members);
    }

    pub(super) fn submit_job(
        &mut self,
        app: String,
        args: Vec<String>,
        ft: FaultTolerance,
        deadline: Option<std::time::Duration>,
    ) -> Result<JobTicket, AppError> {
        let params = self.jobs.prepare(&app, &args)?;
        let job = JobId(rand::Rng::random(&mut rand::rngs::StdRng::from_os_rng()));
        let (tx, rx) = watch::channel(None);
        self.job_watchers.insert(job, tx);
        let home = self
            .jobs
            .submit(Instant::now(), job, app.clone(), params, ft, deadline);
        info!(%job, %app, %home, protocol = ?ft.protocol, storage = %ft.storage, "submitting job");
        Ok(JobTicket { job, updates: rx })
    }

    /// Asks the job's primary to cancel it; the answer goes to `reply`.
    pub(super) fn cancel_job(&mut self, job: JobId, reply: oneshot::Sender<Result<(), String>>) {
        let waiting = self.job_cancels.entry(job).or_default();
        waiting.push(reply);
        if waiting.len() == 1 {
            info!(%job, "asking the job's primary to cancel it");
            self.jobs.cancel(job);
        }
    }

    /// Logs a refused job message: at most one line per peer per
    /// `warn_interval` (a minute), with the count held back since.
    fn log_refusal(&mut self, from: PeerId, message: &'static str, why: colony_core::job::Refusal) {
        if let Some(suppressed) = self.may_warn(Some(from), "refused job message") {
            warn!(peer = %from, message, %why, suppressed, "job message refused");
        }
    }

    pub(super) fn query_job(
        &mut self,
        now: Instant,
        job: JobId,
        reply: oneshot::Sender<Option<JobView<PeerId>>>,
    ) {
        if let Some(view) = self.jobs.view(now, job) {
            let _ = reply.send(Some(view));
            return;
        }
        let home = self
            .jobs
            .home_for(job)
            .unwrap_or_else(|| self.jobs.probable_home(job));
        if let Some(query) = self.job_queries.get_mut(&job) {
            query.waiters.push(reply);
            return;
        }
        self.job_queries.insert(
            job,
            JobQuery {
                waiters: vec![reply],
                outstanding: 0,
                fanned_out: false,
                asked: Vec::new(),
            },
        );
        if home == *self.swarm.local_peer_id() {
            self.query_answered_no(job);
        } else {
            self.ask(job, vec![home]);
        }
    }

    fn ask(&mut self, job: JobId, peers: Vec<PeerId>) {
        if let Some(query) = self.job_queries.get_mut(&job) {
            query.outstanding += peers.len();
            query.asked.extend(peers.iter().copied());
        }
        for peer in peers {
            self.jobs.query(job, peer);
        }
    }

    /// A peer asked about `job` does not know it (or could not be reached):
    /// once all have answered, ask everyone else, then give up.
    fn query_answered_no(&mut self, job: JobId) {
        let Some(query) = self.job_queries.get_mut(&job) else {
            return;
        };
        query.outstanding = query.outstanding.saturating_sub(1);
        if query.outstanding > 0 {
            return;
        }
        if !query.fanned_out {
            query.fanned_out = true;
            let asked = query.asked.clone();
            let others: Vec<PeerId> = self
                .membership
                .view(Instant::now())
                .into_iter()
                .filter(|m| m.record.state == MemberState::Alive)
                .map(|m| m.record.peer)
                .filter(|p| !asked.contains(p))
                .collect();
            if !others.is_empty() {
                self.ask(job, others);
                return;
            }
        }
        if let Some(query) = self.job_queries.remove(&job) {
            for waiter in query.waiters {
                let _ = waiter.send(None);
            }
        }
    }

    pub(super) fn list_jobs(&self, now: Instant) -> Vec<JobView<PeerId>> {
        self.jobs.homed_views(now)
    }
}

/// A peer's position in the overlay's key space. Ed25519 peer ids embed the
/// public key, whose bytes are uniformly distributed: the last 32 bytes of
/// the id serve as its key.
pub(crate) fn overlay_key(peer: &PeerId) -> [u8; 32] {
    let bytes = peer.to_bytes();
    let mut key = [0u8; 32];
    let tail = &bytes[bytes.len().saturating_sub(32)..];
    key[32 - tail.len()..].copy_from_slice(tail);
    key
}

/// Logs the fault-tolerance protocol's notable moments (recovery and
/// takeover times are read off these lines).
fn log_job_event(event: &JobEvent<PeerId>) {
    match event {
        JobEvent::Merged { job, unit } => debug!(%job, unit, "unit merged"),
        JobEvent::Reissued { job, unit, lost } => {
            info!(%job, unit, %lost, "unit reissued from its last checkpoint")
        }
        JobEvent::Assigned {
            job,
            unit,
            to,
            reissue,
        } => {
            if *reissue {
                info!(%job, unit, %to, "reissued unit assigned");
            } else {
                debug!(%job, unit, %to, "unit assigned");
            }
        }
        JobEvent::Primary { job, previous } => match previous {
            Some(previous) => info!(%job, %previous, "became the job's primary (handed over)"),
            None => info!(%job, "became the job's primary"),
        },
        JobEvent::CheckpointAcked { job, unit, seq } => {
            debug!(%job, unit, seq, "checkpoint acknowledged")
        }
        JobEvent::CheckpointLost { job, unit, holders } => {
            warn!(%job, unit, holders = holders.len(), "checkpoint lost")
        }
        JobEvent::Finished { job, ok } => info!(%job, ok, "job finished"),
        JobEvent::EncodeFailed { job, unit, error } => {
            warn!(%job, unit, %error, "local checkpoint not encoded; not written")
        }
        JobEvent::HomeMajorityLost {
            job,
            gone,
            fails_in,
        } => warn!(
            %job,
            gone = ?gone,
            fails_in_s = fails_in.as_secs(),
            "the job's home lost its majority: nothing can be committed until those members return; the job fails if they do not"
        ),
        JobEvent::Refused { .. } => {}
    }
}

/// A durable write finished: which piece, and whether it is on disk.
pub(crate) struct Persisted {
    key: PieceKey,
    epoch: u64,
    version: u64,
    result: Result<(), colony_store::StoreError>,
}

impl Driver {
    /// Writes a checkpoint piece to disk; the job core hears when it is
    /// durable (one fsync per group of writes).
    fn persist_piece(&mut self, key: PieceKey, piece: Piece) {
        let bytes = match wire::encode(&piece, usize::MAX) {
            Ok(bytes) => bytes,
            Err(error) => {
                // Empty bytes on disk would be taken for the piece: nothing
                // is written, the primary keeps waiting and re-sends.
                self.counters.checkpoint_write_errors += 1;
                warn!(%error, job = %key.job, unit = key.unit, "checkpoint piece not encoded; not written");
                return;
            }
        };
        let stored = colony_store::StoredPiece {
            epoch: piece.epoch,
            version: piece.version,
            bytes,
        };
        let store_key = colony_store::PieceKey {
            job: key.job.0,
            unit: key.unit,
            holder_index: key.index,
        };
        let tx = self.persisted_tx.clone();
        let (epoch, version) = (piece.epoch, piece.version);
        let queued = self.checkpoints.put(
            store_key,
            stored,
            Box::new(move |result| {
                let _ = tx.send(Persisted {
                    key,
                    epoch,
                    version,
                    result,
                });
            }),
        );
        if let Err(error) = queued {
            // Not on disk: the primary keeps waiting and the worker re-sends.
            self.counters.checkpoint_write_errors += 1;
            warn!(%error, job = %key.job, unit = key.unit, "checkpoint piece not written");
        }
    }

    pub(super) fn on_persisted(&mut self, done: Persisted) {
        match done.result {
            Ok(()) => self
                .jobs
                .persisted(Instant::now(), done.key, done.epoch, done.version),
            Err(error) => {
                self.counters.checkpoint_write_errors += 1;
                warn!(%error, job = %done.key.job, unit = done.key.unit, "checkpoint piece not written");
            }
        }
    }

    /// Deletes one version of a piece the job core no longer keeps.
    fn unpersist_piece(&mut self, key: PieceKey, epoch: u64, version: u64) {
        let store_key = colony_store::PieceKey {
            job: key.job.0,
            unit: key.unit,
            holder_index: key.index,
        };
        if let Err(error) = self
            .checkpoints
            .remove(store_key, epoch, version, Box::new(|_| {}))
        {
            // Left on disk until the job's pieces are forgotten.
            warn!(%error, job = %key.job, unit = key.unit, "old checkpoint piece not deleted");
        }
    }

    /// Deletes a finished job's pieces from disk.
    fn forget_pieces(&mut self, job: JobId) {
        if let Err(error) = self.checkpoints.remove_job(job.0, Box::new(|_| {})) {
            warn!(%error, %job, "pieces of a finished job not deleted");
        }
    }
}

/// Reads the checkpoint pieces a previous run left on disk: pieces held
/// for homes are served again, units kept locally are offered back to
/// their jobs.
pub(crate) fn restore_checkpoints(
    jobs: &mut colony_core::job::Jobs<PeerId>,
    store: &colony_store::CheckpointStore,
    now: Instant,
) {
    let stored = match store.all() {
        Ok(stored) => stored,
        Err(error) => {
            warn!(%error, "cannot read stored checkpoints");
            return;
        }
    };
    // Dropped by the store for failing their checksum; the homes treat them
    // as missing. Counted in the status (`checkpoint_pieces_corrupt`).
    let corrupt = store.corrupt_pieces();
    for key in corrupt.iter().take(16) {
        warn!(job = %JobId(key.job), unit = key.unit, holder_index = key.holder_index,
            file = %store.path().display(), "checkpoint piece failed its checksum; dropped");
    }
    if corrupt.len() > 16 {
        warn!(
            more = corrupt.len() - 16,
            "more checkpoint pieces failed their checksum; dropped"
        );
    }
    // Their primaries have the units checkpointed again at once.
    jobs.pieces_lost(
        corrupt
            .iter()
            .map(|key| PieceKey {
                job: JobId(key.job),
                unit: key.unit,
                index: key.holder_index,
            })
            .collect(),
    );
    let mut pieces = Vec::new();
    // Per unit, its newest local piece (the store lists versions oldest
    // first).
    let mut local = std::collections::BTreeMap::new();
    for (key, stored) in stored {
        let Ok(piece) = wire::decode::<Piece>(&stored.bytes, usize::MAX) else {
            warn!(unit = key.unit, "corrupt checkpoint piece skipped");
            continue;
        };
        match &piece.data {
            colony_core::job::PieceData::Local(bytes) => {
                match wire::decode::<colony_core::job::LocalUnit>(bytes, usize::MAX) {
                    Ok(unit) => {
                        local.insert((unit.job, unit.unit), unit);
                    }
                    Err(_) => warn!(unit = key.unit, "corrupt local checkpoint skipped"),
                }
            }
            _ => pieces.push((
                PieceKey {
                    job: JobId(key.job),
                    unit: key.unit,
                    index: key.holder_index,
                },
                piece,
            )),
        }
    }
    if !pieces.is_empty() || !local.is_empty() {
        info!(
            pieces = pieces.len(),
            local_units = local.len(),
            "checkpoints found on disk"
        );
    }
    let records = jobs.load_pieces(pieces);
    if records > 0 {
        info!(
            records,
            "durable job records found on disk: rejoining their homes"
        );
    }
    jobs.restore_local(now, local.into_values().collect());
}
