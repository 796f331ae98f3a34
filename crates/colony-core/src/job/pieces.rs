//! Checkpoint pieces: whole copies, Reed–Solomon shards or the worker's
//! own disk; staging and storing them on holders, and restoring a unit's
//! checkpoint from them.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::erasure;
use crate::ft::CheckpointStorage;
use crate::PeerKey;

use super::*;

/// Most lost pieces remembered for reporting.
pub(super) const MAX_LOST_PIECES: usize = 1024;

/// Piece index of a checkpoint kept on the worker's own disk.
pub(super) const LOCAL_INDEX: u8 = u8::MAX;

/// How often a restore waiting for holders asks again.
pub(super) const RESTORE_RETRY: Duration = Duration::from_secs(1);

/// Where a checkpoint piece lives on disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PieceKey {
    /// The job.
    pub job: JobId,
    /// The unit.
    pub unit: UnitId,
    /// Which piece (a shard's index, 0 for a copy, 255 for local).
    pub index: u8,
}

/// A report whose checkpoint pieces are being stored; it applies once
/// every holder has its piece.
pub(super) struct Staged<P> {
    pub(super) from: P,
    pub(super) epoch: Epoch,
    pub(super) seq: u64,
    pub(super) report: Report,
    /// New checkpoint of each unit the report touches (itself, a part).
    pub(super) refs: Vec<(UnitId, CheckpointRef<P>)>,
    /// (holder, unit, index) still to confirm.
    pub(super) waiting: BTreeSet<(P, UnitId, u8)>,
    pub(super) pieces: Vec<(P, UnitId, Piece)>,
    /// When the pieces still waited for were last sent.
    pub(super) sent_at: Instant,
}

pub(super) struct Restoring<P> {
    pub(super) asked: BTreeSet<P>,
    pub(super) got: Vec<Piece>,
    /// When the restore began; after the job's patience it is declared lost.
    pub(super) since: Instant,
    /// When to ask holders that came back again.
    pub(super) retry_at: Instant,
}

/// Rebuilds a checkpoint from the pieces gathered, if they suffice.
pub(super) fn decode_pieces<P>(checkpoint: &CheckpointRef<P>, pieces: &[Piece]) -> Option<Vec<u8>> {
    let matching = pieces
        .iter()
        .filter(|p| p.epoch == checkpoint.epoch && p.version == checkpoint.version);
    let mut shards = Vec::new();
    for piece in matching {
        match &piece.data {
            PieceData::Copy(state) => return Some(state.clone()),
            PieceData::Shard(shard) => shards.push(shard.clone()),
            // A worker's own copy: every divide it names was applied before
            // the checkpoint pointing at it.
            PieceData::Local(bytes) => {
                if let Ok(local) = postcard::from_bytes::<super::LocalUnit>(bytes) {
                    if local.epoch == checkpoint.epoch {
                        return Some(local.state);
                    }
                }
            }
        }
    }
    if shards.is_empty() {
        return None;
    }
    erasure::decode(&shards).ok()
}

impl<P: PeerKey> Jobs<P> {
    /// Pieces this peer held that were lost (they failed their checksum on
    /// disk): their primaries are told, once this peer sees the network, so
    /// that the units' next checkpoints store them again at once.
    pub fn pieces_lost(&mut self, keys: Vec<PieceKey>) {
        self.lost_pieces.extend(keys);
        self.lost_pieces.truncate(MAX_LOST_PIECES);
        self.report_lost_pieces();
    }

    pub(super) fn report_lost_pieces(&mut self) {
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

    /// Stores the checkpoints a report carries, then applies it; reports
    /// without state apply at once.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn stage(
        &mut self,
        now: Instant,
        job: JobId,
        unit: UnitId,
        from: P,
        epoch: Epoch,
        seq: u64,
        report: Report,
    ) {
        let Some(mut h) = self.home_ctx(now, job) else {
            return;
        };
        let ft = h.home.record.ft;
        let stored = ft.checkpoints() && ft.storage != CheckpointStorage::Local;
        let states: Vec<(UnitId, Epoch, &[u8])> = match &report {
            Report::Checkpoint { state, .. }
            | Report::HandBack { state }
            | Report::Resume { state, .. } => vec![(unit, epoch, state.as_slice())],
            Report::Divided {
                part, remaining, ..
            } => vec![
                (unit, epoch, remaining.as_slice()),
                (child_id(unit, epoch, seq), 0, part.as_slice()),
            ],
            _ => Vec::new(),
        };
        let busy = h.home.staging.get(&unit).is_some_and(|q| !q.is_empty());
        if (!stored || states.is_empty()) && !busy {
            if let Some(effects) = h.apply_report(unit, from, epoch, seq, report, Vec::new()) {
                self.commit(now, job, effects);
            }
            return;
        }
        let mut refs = Vec::new();
        let mut pieces = Vec::new();
        // Behind a report still being stored, even one without state waits.
        let states = if stored { states } else { Vec::new() };
        for (id, e, state) in states {
            let version = if id == unit { seq } else { 0 };
            let (checkpoint, p) = h.pieces_for(id, e, version, state);
            refs.push((id, checkpoint));
            pieces.extend(p);
        }
        let waiting = pieces
            .iter()
            .map(|(holder, id, piece)| (holder.clone(), *id, piece.index))
            .collect();
        let staged = Staged {
            from,
            epoch,
            seq,
            report,
            refs,
            waiting,
            pieces,
            sent_at: now,
        };
        let queue = h.home.staging.entry(unit).or_default();
        queue.push_back(staged);
        if queue.len() == 1 {
            self.send_staged_pieces(now, job, unit);
        }
    }

    /// Sends the pieces of `unit`'s first staged report that their holders
    /// have not confirmed yet (all of them the first time; again when a
    /// message was lost with a pipe that gave up).
    pub(super) fn send_staged_pieces(&mut self, now: Instant, job: JobId, unit: UnitId) {
        let Some(h) = self.homes.get_mut(&job) else {
            return;
        };
        let durable = h.record.ft.durable;
        let Some(staged) = h.staging.get_mut(&unit).and_then(|q| q.front_mut()) else {
            return;
        };
        if staged.pieces.is_empty() {
            self.staged_done(now, job, unit);
            return;
        }
        staged.sent_at = now;
        let pieces: Vec<(P, UnitId, Piece)> = staged
            .pieces
            .iter()
            .filter(|(holder, id, piece)| {
                staged.waiting.contains(&(holder.clone(), *id, piece.index))
            })
            .cloned()
            .collect();
        let me = self.me.clone();
        // The checkpoint each unit's record points to, for the holders to keep.
        let kept: BTreeMap<UnitId, (Epoch, u64)> = pieces
            .iter()
            .filter_map(|(_, id, _)| {
                let c = h.record.units.get(id)?.checkpoint.as_ref()?;
                Some((*id, (c.epoch, c.version)))
            })
            .collect();
        for (holder, id, piece) in pieces {
            let keep = kept.get(&id).copied();
            if holder == me {
                self.pieces.keep(job, id, keep);
                self.store_piece_here(now, me.clone(), job, id, piece, durable);
            } else {
                self.send(
                    holder,
                    JobMsg::StorePiece {
                        job,
                        unit: id,
                        piece,
                        durable,
                        keep,
                    },
                    true,
                );
            }
        }
    }

    pub(super) fn store_piece_here(
        &mut self,
        now: Instant,
        reply_to: P,
        job: JobId,
        unit: UnitId,
        piece: Piece,
        durable: bool,
    ) {
        let (epoch, version, index) = (piece.epoch, piece.version, piece.index);
        let evicted = self.pieces.put(job, unit, piece.clone());
        self.pieces.touch(job, now);
        if durable {
            self.unpersist(job, unit, evicted);
            let key = PieceKey { job, unit, index };
            self.pieces.persisting(job, unit, &piece, reply_to);
            self.outputs.push_back(JobOutput::Persist { key, piece });
        } else {
            self.confirm_piece(now, reply_to, PieceKey { job, unit, index }, epoch, version);
        }
    }

    pub(super) fn piece_persisted(
        &mut self,
        now: Instant,
        key: PieceKey,
        epoch: Epoch,
        version: u64,
    ) {
        if let Some(reply_to) = self
            .pieces
            .persisted(key.job, key.unit, key.index, epoch, version)
        {
            self.confirm_piece(now, reply_to, key, epoch, version);
        }
    }

    /// Tells the primary that asked (this peer, perhaps) that a piece is
    /// stored.
    pub(super) fn confirm_piece(
        &mut self,
        now: Instant,
        reply_to: P,
        key: PieceKey,
        epoch: Epoch,
        version: u64,
    ) {
        let PieceKey { job, unit, index } = key;
        if reply_to == self.me {
            let me = self.me.clone();
            self.on_piece_stored(now, me, job, unit, epoch, version, index);
        } else {
            self.send(
                reply_to,
                JobMsg::PieceStored {
                    job,
                    unit,
                    epoch,
                    version,
                    index,
                },
                false,
            );
        }
    }

    /// Pieces read back from disk after a restart, this worker's local
    /// units included: served to primaries that need them.
    /// Durable job records among them rejoin their homes (as backups
    /// without a primary, which campaign); returns how many.
    pub fn load_pieces(&mut self, pieces: Vec<(PieceKey, Piece)>) -> usize {
        let mut records = 0;
        for (key, piece) in pieces {
            if key.unit == RECORD_UNIT && key.index == RECORD_INDEX {
                records += usize::from(self.restore_record(key.job, piece));
                continue;
            }
            let evicted = self.pieces.put(key.job, key.unit, piece);
            self.unpersist(key.job, key.unit, evicted);
        }
        let now = self.clock;
        self.homes_touched(now);
        self.rearm(now);
        records
    }

    /// Deletes from disk the pieces of `unit` no longer kept.
    pub(super) fn unpersist(&mut self, job: JobId, unit: UnitId, evicted: Vec<(Epoch, u64, u8)>) {
        for (epoch, version, index) in evicted {
            self.outputs.push_back(JobOutput::Unpersist {
                key: PieceKey { job, unit, index },
                epoch,
                version,
            });
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn on_piece_stored(
        &mut self,
        now: Instant,
        from: P,
        job: JobId,
        unit: UnitId,
        epoch: Epoch,
        version: u64,
        index: u8,
    ) {
        let Some(h) = self.homes.get_mut(&job) else {
            return;
        };
        // The piece belongs to the head staged report of some unit.
        let mut finished = None;
        for (owner, queue) in h.staging.iter_mut() {
            if let Some(front) = queue.front_mut() {
                let matches = front.pieces.iter().any(|(holder, id, p)| {
                    holder == &from
                        && *id == unit
                        && p.epoch == epoch
                        && p.version == version
                        && p.index == index
                });
                if matches {
                    front.waiting.remove(&(from.clone(), unit, index));
                    if front.waiting.is_empty() {
                        finished = Some(*owner);
                    }
                    break;
                }
            }
        }
        if let Some(owner) = finished {
            self.staged_done(now, job, owner);
        }
    }

    /// The head staged report of `unit` has every piece stored: apply it
    /// and start the next.
    pub(super) fn staged_done(&mut self, now: Instant, job: JobId, unit: UnitId) {
        let Some(mut h) = self.home_ctx(now, job) else {
            return;
        };
        let Some(staged) = h.home.staging.get_mut(&unit).and_then(|q| q.pop_front()) else {
            return;
        };
        let commit = h.apply_report(
            unit,
            staged.from,
            staged.epoch,
            staged.seq,
            staged.report,
            staged.refs,
        );
        if let Some(effects) = commit {
            self.commit(now, job, effects);
        }
        // The commit may have changed the home: look it up again.
        let Some(h) = self.homes.get_mut(&job) else {
            return;
        };
        if h.staging.get(&unit).is_some_and(|q| !q.is_empty()) {
            self.send_staged_pieces(now, job, unit);
        } else {
            h.staging.remove(&unit);
        }
    }

    /// A holder lost its piece of `unit`'s checkpoint (damaged on its disk):
    /// the unit's worker checkpoints at once, which stores every piece anew
    /// on the home's current members.
    pub(super) fn on_pieces_lost(&mut self, from: P, job: JobId, unit: UnitId) {
        let Some(h) = self.homes.get(&job).filter(|h| h.is_primary()) else {
            return;
        };
        let Some(u) = h.record.units.get(&unit) else {
            return;
        };
        let held_here = u
            .checkpoint
            .as_ref()
            .is_some_and(|c| c.holders.contains(&from));
        let running = matches!(u.status, UnitStatus::Assigned | UnitStatus::Running);
        if let (true, true, Some(worker)) = (held_here, running, u.holder.clone()) {
            let epoch = u.epoch;
            self.send(worker, JobMsg::CheckpointNow { job, unit, epoch }, false);
        }
    }

    /// Gets `unit`'s last checkpoint back from its holders, then queues it.
    pub(super) fn restore_unit(&mut self, now: Instant, job: JobId, unit: UnitId) {
        let failed = self
            .home_ctx(now, job)
            .and_then(|mut h| h.restore_unit(unit));
        if let Some(reason) = failed {
            self.fail_job(now, job, reason);
        }
    }

    /// Pieces of `unit`'s checkpoint from `from`, asked for its restore.
    pub(super) fn on_pieces(
        &mut self,
        now: Instant,
        from: P,
        job: JobId,
        unit: UnitId,
        pieces: Vec<Piece>,
    ) {
        let Some(mut h) = self.home_ctx(now, job) else {
            return;
        };
        let Some(r) = h.home.restoring.get_mut(&unit) else {
            return;
        };
        if r.asked.remove(&from) {
            r.got.extend(pieces);
        }
        if let Some(reason) = h.try_restore(unit) {
            self.fail_job(now, job, reason);
        }
    }

    /// Queues `unit` once enough pieces of its checkpoint are back, or fails
    /// the job once its holders stayed away for the restore patience.
    pub(super) fn try_restore(&mut self, now: Instant, job: JobId, unit: UnitId) {
        let failed = self
            .home_ctx(now, job)
            .and_then(|mut h| h.try_restore(unit));
        if let Some(reason) = failed {
            self.fail_job(now, job, reason);
        }
    }

    /// Asks again, every second, the holders of checkpoints being restored
    /// that have not answered (or all of them, if none could be asked: they
    /// were out of the view), and gives up on those waiting longer than the
    /// job's patience.
    pub(super) fn retry_restores(&mut self, now: Instant, job: JobId) {
        let me = self.me.clone();
        let Some(h) = self.homes.get(&job) else {
            return;
        };
        let due: Vec<(UnitId, Vec<P>)> = h
            .restoring
            .iter()
            .filter(|(_, r)| r.retry_at <= now)
            .filter_map(|(id, r)| {
                // Holders that have not answered (an answer can be lost with
                // a pipe that gave up), else every holder again.
                let holders = if r.asked.is_empty() {
                    h.record.units.get(id)?.checkpoint.as_ref()?.holders.clone()
                } else {
                    r.asked.iter().cloned().collect()
                };
                Some((*id, holders))
            })
            .collect();
        for (unit, holders) in due {
            let live: BTreeSet<P> = holders
                .into_iter()
                .filter(|p| *p != me && self.is_live(p))
                .collect();
            // A failed restore commits, which may change the home: it is
            // looked up once per unit.
            let Some(mut h) = self.home_ctx(now, job) else {
                for to in live {
                    self.send(to, JobMsg::FetchPieces { job, unit }, false);
                }
                continue;
            };
            if let Some(r) = h.home.restoring.get_mut(&unit) {
                r.retry_at = now + RESTORE_RETRY;
                r.asked.clone_from(&live);
            }
            for to in live {
                h.send(to, JobMsg::FetchPieces { job, unit }, false);
            }
            if let Some(reason) = h.try_restore(unit) {
                self.fail_job(now, job, reason);
            }
        }
    }
}

impl<P: PeerKey> HomeCtx<'_, P> {
    /// Splits `state` into pieces for the home's current members.
    pub(super) fn pieces_for(
        &self,
        unit: UnitId,
        epoch: Epoch,
        version: u64,
        state: &[u8],
    ) -> (CheckpointRef<P>, Vec<(P, UnitId, Piece)>) {
        let mut pieces = Vec::new();
        let mut holders = Vec::new();
        let h = &*self.home;
        let members = h.members();
        match h.record.ft.storage {
            CheckpointStorage::Local => {}
            CheckpointStorage::Copies { r } => {
                for (i, holder) in members.iter().take(usize::from(r)).enumerate() {
                    holders.push(holder.clone());
                    pieces.push((
                        holder.clone(),
                        unit,
                        Piece {
                            epoch,
                            version,
                            index: i as u8,
                            data: PieceData::Copy(state.to_vec()),
                        },
                    ));
                }
            }
            CheckpointStorage::Shards { k, m } => {
                if let Ok(shards) = erasure::encode(state, k, m) {
                    for shard in shards {
                        let slot = usize::from(shard.index) % members.len().max(1);
                        let Some(holder) = members.get(slot).cloned() else {
                            continue;
                        };
                        holders.push(holder.clone());
                        pieces.push((
                            holder,
                            unit,
                            Piece {
                                epoch,
                                version,
                                index: shard.index,
                                data: PieceData::Shard(shard),
                            },
                        ));
                    }
                }
            }
        }
        let checkpoint = CheckpointRef {
            epoch,
            version,
            holders,
        };
        (checkpoint, pieces)
    }

    /// Gets `unit`'s last checkpoint back from its holders, then queues it;
    /// returns why the job fails, if it must.
    pub(super) fn restore_unit(&mut self, unit: UnitId) -> Option<String> {
        let (job, now) = (self.job, self.now);
        let me = self.me.clone();
        let h = &mut *self.home;
        if h.ready.contains_key(&unit) || h.restoring.contains_key(&unit) {
            return None;
        }
        let Some(checkpoint) = h.record.units.get(&unit).and_then(|u| u.checkpoint.clone()) else {
            if let Some(restarted) = self.restart_root(unit) {
                return restarted;
            }
            let reason = if self.home.record.ft.checkpoints() {
                format!("unit {unit} has no checkpoint to restart from")
            } else {
                format!(
                    "unit {unit} has no state to restart from: it was with the job's lost primary, and the job's fault tolerance is \"none\""
                )
            };
            return Some(reason);
        };
        let own = self.pieces.get(job, unit);
        if let Some(state) = decode_pieces(&checkpoint, &own) {
            h.ready.insert(unit, state);
            return None;
        }
        let asked: BTreeSet<P> = checkpoint
            .holders
            .iter()
            .filter(|p| **p != me && self.is_live(p))
            .cloned()
            .collect();
        if asked.is_empty() {
            // The root's only checkpoint was with a lost peer (the primary
            // that ran it, in the job's first second): before any divide,
            // the parameters are as good.
            if let Some(restarted) = self.restart_root(unit) {
                return restarted;
            }
        }
        self.home.restoring.insert(
            unit,
            Restoring {
                asked: asked.clone(),
                got: own,
                since: now,
                retry_at: now + RESTORE_RETRY,
            },
        );
        for to in asked {
            self.send(to, JobMsg::FetchPieces { job, unit }, false);
        }
        self.try_restore(unit)
    }

    /// Before any divide, the root unit restarts from the job's parameters:
    /// `Some` if `unit` is that root (`Some(None)` once queued or while its
    /// module is being fetched, `Some(Some(why))` if it cannot restart),
    /// `None` for any other unit.
    fn restart_root(&mut self, unit: UnitId) -> Option<Option<String>> {
        let now = self.now;
        let h = &mut *self.home;
        if unit != 0 || h.record.stats.units != 1 {
            return None;
        }
        let app = match self.registry.get(&h.record.app) {
            Ok(app) => app,
            Err(AppError::ModuleMissing(module)) => {
                // A guest's job taken over before this peer had its module:
                // the node is fetching it for the homes here; the unit
                // waits, for the restore patience at most.
                let since = *h.queued_since.entry(unit).or_insert(now);
                let patience = self.config.restore_patience;
                if now.saturating_duration_since(since) < patience {
                    return Some(None);
                }
                return Some(Some(format!(
                    "unit {unit} cannot restart: its module {module} did not arrive within {patience:?}"
                )));
            }
            Err(_) => return None,
        };
        let state = app
            .init(&h.record.params)
            .and_then(|mut root| root.checkpoint())
            .ok()?;
        h.restoring.remove(&unit);
        h.ready.insert(unit, state);
        Some(None)
    }

    /// Queues `unit` once enough pieces of its checkpoint are back;
    /// returns why the job fails, if its holders stayed away too long.
    pub(super) fn try_restore(&mut self, unit: UnitId) -> Option<String> {
        let (job, now) = (self.job, self.now);
        let h = &mut *self.home;
        let checkpoint = h
            .record
            .units
            .get(&unit)
            .and_then(|u| u.checkpoint.clone())?;
        let r = h.restoring.get(&unit)?;
        if let Some(state) = decode_pieces(&checkpoint, &r.got) {
            h.restoring.remove(&unit);
            h.ready.insert(unit, state);
            return None;
        }
        if r.asked.is_empty() {
            // Holders may only be suspected (a loaded machine, a partition):
            // wait for them to come back, within the job's patience.
            if now.saturating_duration_since(r.since) < self.config.restore_patience {
                return None;
            }
            h.restoring.remove(&unit);
            // The root's holders were only suspected when the restore began
            // and never came back: before any divide, the parameters serve.
            if let Some(restarted) = self.restart_root(unit) {
                return restarted;
            }
            let holders = checkpoint.holders.clone();
            self.event(JobEvent::CheckpointLost {
                job,
                unit,
                holders: holders.clone(),
            });
            let names: Vec<String> = holders.iter().map(|p| p.to_string()).collect();
            return Some(format!(
                "the checkpoint of unit {unit} is lost: too few of its holders ({}) are alive",
                names.join(", ")
            ));
        }
        None
    }
}
