//! The driver's side of divisible jobs: unit threads, durable checkpoint
//! pieces, and the submissions, queries and cancellations of the peer's
//! handles. What goes between the job core and the other cores is the
//! node's.

use std::time::Instant;

use colony_core::divisible::AppError;
use colony_core::ft::FaultTolerance;
use colony_core::job::{JobEvent, JobId, JobState, JobView, Piece, PieceKey, SubmitOptions};
use colony_core::node::{NodeInput, NodeOutput};
use colony_core::runner::UnitEvent;
use colony_core::wire;
use libp2p::PeerId;
use rand::SeedableRng;
use tokio::sync::{oneshot, watch};
use tracing::{debug, info, warn};

use super::Driver;
use crate::command::JobTicket;

/// Job ids drawn at most to home a guest's job at a peer running guests.
const GUEST_HOME_DRAWS: usize = 256;

impl Driver {
    /// Executes a job output of the node.
    pub(super) fn on_job_output(&mut self, now: Instant, out: NodeOutput<PeerId>) {
        match out {
            NodeOutput::Run(start) => {
                debug!(job = %start.job, unit = start.unit, "starting unit");
                self.compute.start(start);
            }
            // A unit that already ended: its result is on its way, or the
            // node answers for it.
            NodeOutput::Unit { job, unit, request }
                if !self.compute.request(job, unit, request.clone()) =>
            {
                self.node.unit_not_running(now, job, unit, &request);
            }
            NodeOutput::Share { job, vars } => self.compute.share(job, &vars),
            NodeOutput::Persist { key, piece } => self.persist_piece(key, piece),
            NodeOutput::Unpersist {
                key,
                epoch,
                version,
            } => self.unpersist_piece(key, epoch, version),
            NodeOutput::Forget { job } => self.forget_pieces(job),
            NodeOutput::Job(event) => log_job_event(&event),
            NodeOutput::CancelAnswer { job, refused } => {
                let result = match refused {
                    None => Ok(()),
                    Some(reason) => Err(reason),
                };
                for reply in self.job_cancels.remove(&job).unwrap_or_default() {
                    let _ = reply.send(result.clone());
                }
            }
            NodeOutput::Status(view) => {
                let job = view.job;
                if let Some(watcher) = self.job_watchers.get(&job) {
                    let _ = watcher.send(Some(view.clone()));
                }
                if !matches!(view.state, JobState::Running) {
                    self.job_watchers.remove(&job);
                }
            }
            NodeOutput::QueryAnswer { job, view } => {
                for waiter in self.job_queries.remove(&job).unwrap_or_default() {
                    let _ = waiter.send(view.as_deref().cloned());
                }
            }
            _ => {}
        }
    }

    /// What a unit thread reported.
    pub(super) fn handle_compute_event(&mut self, event: UnitEvent) {
        let now = Instant::now();
        match &event {
            UnitEvent::Finished { job, unit, .. } | UnitEvent::Stopped { job, unit, .. } => {
                self.compute.finished(*job, *unit)
            }
            UnitEvent::Failed { job, unit, error } => {
                self.compute.finished(*job, *unit);
                warn!(%job, unit, %error, "unit failed");
            }
            _ => {}
        }
        self.node.handle(now, NodeInput::Unit(event));
    }

    pub(super) fn submit_job(
        &mut self,
        app: String,
        args: Vec<String>,
        ft: FaultTolerance,
        options: SubmitOptions,
    ) -> Result<JobTicket, AppError> {
        let params = self.node.jobs().prepare(&app, &args)?;
        let job = self.new_job_id(&app, &ft)?;
        let (tx, rx) = watch::channel(None);
        self.job_watchers.insert(job, tx);
        let home = self
            .node
            .submit(Instant::now(), job, app.clone(), params, ft, options);
        info!(%job, %app, %home, protocol = ?ft.protocol, storage = %ft.storage, keep_namespace = options.keep_namespace, "submitting job");
        Ok(JobTicket { job, updates: rx })
    }

    /// A fresh job id. A guest's job must be homed at a peer that runs
    /// this submitter's guests (it builds the first unit and merges
    /// results): ids are drawn until the job's primary would be one. If no
    /// live peer would, the error says what each refuses.
    fn new_job_id(&self, app: &str, ft: &FaultTolerance) -> Result<JobId, AppError> {
        let mut rng = rand::rngs::StdRng::from_os_rng();
        if !app.starts_with(colony_wasm::APP_PREFIX) {
            return Ok(JobId(rand::Rng::random(&mut rng)));
        }
        let membership = self.node.membership();
        let me = self.info.peer_id.to_string();
        let runs_mine = |stats: &colony_core::membership::PeerStats| {
            stats.runs_guests
                && (stats.guest_signers.is_empty() || stats.guest_signers.contains(&me))
        };
        for _ in 0..GUEST_HOME_DRAWS {
            let job = JobId(rand::Rng::random(&mut rng));
            let home = self.node.jobs().submit_home(job, ft);
            let record = if home == *self.node.me() {
                Some(membership.local())
            } else {
                membership.record_of(&home)
            };
            if record.is_some_and(|record| runs_mine(&record.stats)) {
                return Ok(job);
            }
        }
        let refusals: Vec<String> = std::iter::once(membership.local())
            .chain(membership.records().filter(|r| {
                matches!(
                    r.state,
                    colony_core::membership::MemberState::Alive
                        | colony_core::membership::MemberState::Suspect
                )
            }))
            .filter(|r| !runs_mine(&r.stats))
            .map(|r| {
                let why = if !r.stats.runs_guests {
                    "runs native applications only".to_string()
                } else {
                    format!(
                        "runs only code signed by {}",
                        r.stats.guest_signers.join(", ")
                    )
                };
                format!("{} {why}", r.peer)
            })
            .collect();
        Err(AppError::Guest(format!(
            "no live peer of this network runs WebAssembly guests signed by this peer ({me}) \
             to be the job's home: {}",
            refusals.join("; ")
        )))
    }

    /// Asks the job's primary to cancel it; the answer goes to `reply`.
    pub(super) fn cancel_job(&mut self, job: JobId, reply: oneshot::Sender<Result<(), String>>) {
        let waiting = self.job_cancels.entry(job).or_default();
        waiting.push(reply);
        if waiting.len() == 1 {
            info!(%job, "asking the job's primary to cancel it");
            self.node.handle(Instant::now(), NodeInput::Cancel { job });
        }
    }

    /// Asks the node about `job`; the answer goes to `reply`.
    pub(super) fn query_job(
        &mut self,
        now: Instant,
        job: JobId,
        reply: oneshot::Sender<Option<JobView<PeerId>>>,
    ) {
        self.job_queries.entry(job).or_default().push(reply);
        self.node.handle(now, NodeInput::Query { job });
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
        if self.persists_in_flight >= super::PERSISTS_IN_FLIGHT {
            // Backpressure: not acknowledged, so nothing is lost; the
            // primary keeps waiting and the worker re-sends.
            self.counters.checkpoint_write_errors += 1;
            if let Some(suppressed) = self.may_warn(None, "checkpoint writes backlogged") {
                warn!(job = %key.job, unit = key.unit, suppressed, "checkpoint writes backlogged; piece not written");
            }
            return;
        }
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
            // Never full: at most PERSISTS_IN_FLIGHT completions are due.
            Box::new(move |result| {
                let _ = tx.try_send(Persisted {
                    key,
                    epoch,
                    version,
                    result,
                });
            }),
        );
        match queued {
            Ok(()) => self.persists_in_flight += 1,
            Err(error) => {
                // Not on disk: the primary keeps waiting and the worker re-sends.
                self.counters.checkpoint_write_errors += 1;
                warn!(%error, job = %key.job, unit = key.unit, "checkpoint piece not written");
            }
        }
    }

    pub(super) fn on_persisted(&mut self, done: Persisted) {
        self.persists_in_flight = self.persists_in_flight.saturating_sub(1);
        match done.result {
            Ok(()) => self.node.handle(
                Instant::now(),
                NodeInput::Persisted {
                    key: done.key,
                    epoch: done.epoch,
                    version: done.version,
                },
            ),
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
