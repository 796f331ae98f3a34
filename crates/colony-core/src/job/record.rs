//! The job record, replicated by the generic home core ([`crate::home`]) as
//! its [`Replicated`] state, and its durable copy on disk.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::divisible::SharedVars;
use crate::ft::FaultTolerance;
use crate::home::{HomeMsg, Replicated};
use crate::PeerKey;

use super::*;

/// Where `job`'s record is on disk.
pub(super) fn record_key(job: JobId) -> PieceKey {
    PieceKey {
        job,
        unit: RECORD_UNIT,
        index: RECORD_INDEX,
    }
}

/// Where a home member keeps a durable job's record on disk: this unit
/// and piece index of the job, its term and update number as the piece's
/// epoch and version.
pub(super) const RECORD_UNIT: UnitId = u64::MAX;

/// See [`RECORD_UNIT`].
pub(super) const RECORD_INDEX: u8 = u8::MAX - 1;

/// How often a home member writes a durable job's record when it changed.
pub(super) const RECORD_PERSIST_INTERVAL: Duration = Duration::from_millis(100);

/// A unit as the record knows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(super) enum UnitStatus {
    /// Waiting for a worker.
    Queued,
    /// Sent to a worker that has not confirmed yet.
    Assigned,
    /// Its worker reports on it.
    Running,
    /// Merged.
    Done,
}

/// Where a unit's last acknowledged checkpoint is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct CheckpointRef<P> {
    pub(super) epoch: Epoch,
    pub(super) version: u64,
    /// Holder of piece `i`, in order.
    pub(super) holders: Vec<P>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct UnitRec<P> {
    pub(super) status: UnitStatus,
    pub(super) holder: Option<P>,
    pub(super) epoch: Epoch,
    /// Highest report applied from the current epoch.
    pub(super) seq: u64,
    pub(super) checkpoint: Option<CheckpointRef<P>>,
}

/// A job's phase as replicated (the result is rebuilt from the merges).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(super) enum Phase {
    Running,
    Done,
    Failed(String),
    Cancelled(String),
}

/// The replicated job record.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(bound(deserialize = "P: DeserializeOwned + Ord"))]
pub struct Record<P> {
    pub(super) app: String,
    #[serde(with = "serde_bytes")]
    pub(super) params: Vec<u8>,
    pub(super) submitter: P,
    pub(super) ft: FaultTolerance,
    pub(super) state: JobState,
    pub(super) units: BTreeMap<UnitId, UnitRec<P>>,
    #[serde(with = "serde_bytes")]
    pub(super) merged: Vec<u8>,
    pub(super) has_merged: bool,
    pub(super) shared: SharedVars,
    pub(super) stats: JobStats,
    pub(super) contributions: BTreeMap<P, Contribution>,
    pub(super) elapsed_ms: u64,
    /// Cancel the job once it has run this long (ms), if set.
    pub(super) deadline_ms: Option<u64>,
    /// Its submitter asked to keep its object-space namespace when it
    /// ends (replicated, so a primary that takes over keeps it too).
    pub(super) keep_namespace: bool,
}

/// A change to the record, as the primary sends it to backups: data only,
/// applied without application code (the merged result travels as
/// bytes, so a backup's result is the primary's).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(bound(deserialize = "P: DeserializeOwned"))]
pub struct Delta<P> {
    pub(super) units: Vec<(UnitId, UnitRec<P>)>,
    /// The merged result, if it changed.
    #[serde(with = "serde_bytes")]
    pub(super) merged: Option<Vec<u8>>,
    pub(super) has_merged: bool,
    pub(super) shared: SharedVars,
    pub(super) stats: JobStats,
    pub(super) contributions: Vec<(P, Contribution)>,
    pub(super) phase: Phase,
}

/// A job record as a durable home member keeps it on disk: the record and
/// the member lists it was replicated with.
#[derive(Serialize, Deserialize)]
#[serde(bound(deserialize = "P: DeserializeOwned + Ord"))]
pub(super) struct DurableRecord<P> {
    pub(super) record: Record<P>,
    pub(super) members: Vec<P>,
    pub(super) config: Vec<P>,
}

/// The home messages of job records.
pub type JobHomeMsg<P> = HomeMsg<JobId, P, Record<P>, Delta<P>>;

/// An assignment its worker has not confirmed yet.
///
/// Its confirmation clock starts when the pipe delivered it, not when it
/// was queued: a unit state of megabytes on a slow or busy link may take
/// longer than [`JobConfig::assign_timeout`] to arrive, and reissuing it
/// then only queues another copy behind the first.
#[derive(Clone, Copy, Debug)]
pub(super) struct Assignment {
    /// When it was sent, or delivered once `delivered`.
    pub(super) since: Instant,
    /// Whether the pipe delivered it (or, after a takeover, may have).
    pub(super) delivered: bool,
}

impl Assignment {
    /// When the worker's silence about it makes the unit lost: the
    /// confirmation timeout after delivery; before delivery, a backstop
    /// past the pipe's own deadline, which settles every message first.
    pub(super) fn expires(&self, c: &JobConfig) -> Instant {
        let wait = if self.delivered {
            c.assign_timeout
        } else {
            c.assign_transit_timeout
        };
        self.since + wait
    }
}

/// A record held here, with what its primary keeps beside it (not
/// replicated: a new primary rebuilds it).
pub struct HomeState<P> {
    pub(super) record: Record<P>,
    pub(super) started: Instant,
    pub(super) finished: Option<Instant>,
    /// Primary: states of queued units, ready to hand out.
    pub(super) ready: BTreeMap<UnitId, Vec<u8>>,
    /// Primary, protocol `none`: the state each unit out with a worker
    /// restarts from if that worker is declared dead — the one it was
    /// handed out with, or what it kept at its last divide. Only here, in
    /// memory: a new primary has none.
    pub(super) kept: BTreeMap<UnitId, Vec<u8>>,
    pub(super) restoring: BTreeMap<UnitId, Restoring<P>>,
    /// Primary: reports waiting for their pieces, per unit, in order.
    pub(super) staging: BTreeMap<UnitId, VecDeque<Staged<P>>>,
    /// Primary: assignments their workers have not confirmed yet.
    pub(super) assigned: BTreeMap<UnitId, Assignment>,
    /// Primary: since when each ready unit has waited for a worker to ask.
    pub(super) queued_since: BTreeMap<UnitId, Instant>,
    /// Primary: units pushed to a busy worker, beyond its cores, with that
    /// worker (one per worker at a time).
    pub(super) pushed: BTreeMap<UnitId, P>,
    pub(super) steals: BTreeMap<u64, Steal<P>>,
    pub(super) next_steal: u64,
    pub(super) next_progress_at: Instant,
    pub(super) next_advert_at: Instant,
    /// Changes not yet sent to the backups.
    pub(super) touched: BTreeSet<UnitId>,
    /// The merged result changed since the last update.
    pub(super) merged_dirty: bool,
    /// Primary: workers asked which units they hold, with the question's
    /// token and the (unit, epoch) the record had running on them then.
    pub(super) holds_asked: BTreeMap<P, (u64, BTreeSet<(UnitId, Epoch)>)>,
    /// Primary: when to ask the workers again.
    pub(super) next_holds_at: Instant,
    /// Since when a majority of the home's members is gone from the view.
    pub(super) majority_lost_since: Option<Instant>,
    /// Read back from disk after a restart and not yet resynchronised by
    /// a live primary: if this member becomes primary, every unit out is
    /// reissued from its checkpoint (the record may miss the last changes
    /// before the restart, so the workers' copies cannot be trusted).
    pub(super) restored: bool,
    /// Primary: the peers that refused to work on the job, and why (see
    /// the `decline` module). Not replicated: lost on a takeover.
    pub(super) declines: Declines<P>,
    /// Primary: the submitter has been told the job is replicated (see
    /// [`JobView::replicated`](super::JobView)).
    pub(super) told_replicated: bool,
}

impl<P: PeerKey> HomeState<P> {
    /// Where `unit`'s last acknowledged checkpoint is: (epoch, version,
    /// holders).
    #[cfg(test)]
    pub(super) fn checkpoint_of(&self, unit: UnitId) -> Option<(Epoch, u64, Vec<P>)> {
        let c = self.record.units.get(&unit)?.checkpoint.as_ref()?;
        Some((c.epoch, c.version, c.holders.clone()))
    }

    /// The peer that submitted the job.
    pub(super) fn submitter(&self) -> &P {
        &self.record.submitter
    }

    pub(super) fn new(record: Record<P>, now: Instant) -> Self {
        let started = started_at(now, record.elapsed_ms);
        let finished = (record.state != JobState::Running).then_some(now);
        HomeState {
            record,
            started,
            finished,
            ready: BTreeMap::new(),
            kept: BTreeMap::new(),
            restoring: BTreeMap::new(),
            staging: BTreeMap::new(),
            assigned: BTreeMap::new(),
            queued_since: BTreeMap::new(),
            pushed: BTreeMap::new(),
            steals: BTreeMap::new(),
            next_steal: 1,
            next_progress_at: now,
            next_advert_at: now,
            touched: BTreeSet::new(),
            merged_dirty: false,
            holds_asked: BTreeMap::new(),
            next_holds_at: now,
            majority_lost_since: None,
            restored: false,
            declines: Declines::default(),
            told_replicated: false,
        }
    }

    pub(super) fn unit(&mut self, unit: UnitId) -> Option<&mut UnitRec<P>> {
        self.touched.insert(unit);
        self.record.units.get_mut(&unit)
    }

    pub(super) fn record_now(&self, now: Instant) -> Record<P> {
        let mut record = self.record.clone();
        record.elapsed_ms = self
            .finished
            .unwrap_or(now)
            .saturating_duration_since(self.started)
            .as_millis() as u64;
        record
    }
}

/// The job record as the home core replicates it.
impl<P: PeerKey> Replicated for HomeState<P> {
    type Snapshot = Record<P>;
    type Delta = Delta<P>;
    type Effect = JobOutput<P>;

    fn snapshot(&self, now: Instant) -> Record<P> {
        self.record_now(now)
    }

    fn restore(now: Instant, record: Record<P>) -> Option<Self> {
        Some(HomeState::new(record, now))
    }

    fn apply_snapshot(&mut self, now: Instant, record: Record<P>) -> bool {
        let finished = record.state != JobState::Running;
        self.started = started_at(now, record.elapsed_ms);
        self.record = record;
        if finished && self.finished.is_none() {
            self.finished = Some(now);
        }
        true
    }

    fn take_delta(&mut self, force: bool) -> Option<Delta<P>> {
        if self.touched.is_empty() && !self.merged_dirty && !force {
            return None;
        }
        let record = &self.record;
        let delta = Delta {
            units: self
                .touched
                .iter()
                .filter_map(|u| record.units.get(u).map(|r| (*u, r.clone())))
                .collect(),
            merged: self.merged_dirty.then(|| record.merged.clone()),
            has_merged: record.has_merged,
            shared: record.shared.clone(),
            stats: record.stats.clone(),
            contributions: record
                .contributions
                .iter()
                .map(|(p, c)| (p.clone(), c.clone()))
                .collect(),
            phase: phase_of(&record.state),
        };
        self.touched.clear();
        self.merged_dirty = false;
        Some(delta)
    }

    fn apply_delta(&mut self, now: Instant, delta: Delta<P>) -> bool {
        let record = &mut self.record;
        if let Some(merged) = delta.merged {
            record.merged = merged;
        }
        record.has_merged = delta.has_merged;
        for (unit, rec) in delta.units {
            record.units.insert(unit, rec);
        }
        record.shared = delta.shared;
        record.stats = delta.stats;
        record.contributions = delta.contributions.into_iter().collect();
        record.state = match delta.phase {
            Phase::Running => JobState::Running,
            Phase::Done => JobState::Done {
                result: record.merged.clone(),
            },
            Phase::Failed(reason) => JobState::Failed { reason },
            Phase::Cancelled(reason) => JobState::Cancelled { reason },
        };
        if record.state != JobState::Running && self.finished.is_none() {
            self.finished = Some(now);
        }
        true
    }

    fn active(&self) -> bool {
        self.record.state == JobState::Running
    }

    fn settled(&self) -> bool {
        self.staging.is_empty() && self.restoring.is_empty()
    }

    fn clear_primary_state(&mut self) {
        self.ready.clear();
        self.kept.clear();
        self.restoring.clear();
        self.staging.clear();
        self.steals.clear();
        self.assigned.clear();
        self.queued_since.clear();
        self.pushed.clear();
        self.touched.clear();
        self.merged_dirty = false;
        self.declines.clear();
    }
}

/// When a job that has run for `elapsed_ms` (as a remote snapshot says)
/// started, on this peer's clock: `now` if the claim reaches back before
/// the clock's origin.
pub(super) fn started_at(now: Instant, elapsed_ms: u64) -> Instant {
    now.checked_sub(Duration::from_millis(elapsed_ms))
        .unwrap_or(now)
}

pub(super) fn phase_of(state: &JobState) -> Phase {
    match state {
        JobState::Running => Phase::Running,
        JobState::Done { .. } => Phase::Done,
        JobState::Failed { reason } => Phase::Failed(reason.clone()),
        JobState::Cancelled { reason } => Phase::Cancelled(reason.clone()),
    }
}

impl<P: PeerKey> Jobs<P> {
    /// A durable job's record this member wrote before a restart: it
    /// rejoins the home as a backup without a primary, and campaigns.
    pub(super) fn restore_record(&mut self, job: JobId, piece: Piece) -> bool {
        let (term, seq) = (piece.epoch, piece.version);
        let PieceData::Copy(bytes) = piece.data else {
            return false;
        };
        let Ok(durable) = postcard::from_bytes::<DurableRecord<P>>(&bytes) else {
            return false;
        };
        let DurableRecord {
            record,
            members,
            config,
        } = durable;
        let newer = self
            .records_on_disk
            .get(&job)
            .is_none_or(|on_disk| *on_disk < (term, seq));
        if !newer || self.homes.len() >= self.config.max_active_jobs {
            return false;
        }
        let now = self.clock;
        let size = record.ft.home_size;
        let mut state = HomeState::new(record, now);
        state.restored = true;
        if state.record.state != JobState::Running {
            state.finished = Some(now);
        }
        if !self
            .homes
            .restore_backup(now, job, state, size, members, config, (term, seq))
        {
            return false;
        }
        self.records_on_disk.insert(job, (term, seq));
        true
    }

    /// Writes the record of every durable job homed here that changed
    /// since it was last written (at most every 100 ms, so writes of many
    /// commits share one fsync), and deletes the records of jobs no longer
    /// homed here.
    pub(super) fn persist_records(&mut self, now: Instant) {
        if now < self.next_record_persist {
            return;
        }
        self.next_record_persist = now + RECORD_PERSIST_INTERVAL;
        let gone: Vec<JobId> = self
            .records_on_disk
            .keys()
            .filter(|job| !self.homes.contains_key(job))
            .copied()
            .collect();
        for job in gone {
            if let Some((term, seq)) = self.records_on_disk.remove(&job) {
                self.outputs.push_back(JobOutput::Unpersist {
                    key: record_key(job),
                    epoch: term,
                    version: seq,
                });
            }
        }
        let changed: Vec<(JobId, u64, u64)> = self
            .homes
            .iter()
            .filter(|(_, h)| h.record.ft.durable)
            .filter(|(job, h)| self.records_on_disk.get(job) != Some(&(h.term(), h.seq())))
            .map(|(job, h)| (*job, h.term(), h.seq()))
            .collect();
        for (job, term, seq) in changed {
            let Some(h) = self.homes.get(&job) else {
                continue;
            };
            let durable = DurableRecord {
                record: h.state().snapshot(now),
                members: h.members().to_vec(),
                config: h.config().to_vec(),
            };
            let bytes = match postcard::to_stdvec(&durable) {
                Ok(bytes) => bytes,
                Err(error) => {
                    self.encode_errors += 1;
                    self.event(JobEvent::EncodeFailed {
                        job,
                        unit: RECORD_UNIT,
                        error: error.to_string(),
                    });
                    continue;
                }
            };
            let piece = Piece {
                epoch: term,
                version: seq,
                index: RECORD_INDEX,
                data: PieceData::Copy(bytes),
            };
            self.outputs.push_back(JobOutput::Persist {
                key: record_key(job),
                piece,
            });
            // The older version goes once the newer is queued before it.
            if let Some((term, seq)) = self.records_on_disk.insert(job, (term, seq)) {
                self.outputs.push_back(JobOutput::Unpersist {
                    key: record_key(job),
                    epoch: term,
                    version: seq,
                });
            }
        }
    }

    /// A record read back from disk: once this member follows a live
    /// primary it is resynchronised; once it is the primary itself, every
    /// unit out is reissued from its last checkpoint.
    pub(super) fn resume_restored(&mut self, now: Instant, job: JobId) {
        let Some(h) = self.homes.get_mut(&job) else {
            return;
        };
        if !h.restored {
            return;
        }
        if !h.is_primary() {
            if h.primary().is_some() {
                h.restored = false;
            }
            return;
        }
        h.restored = false;
        if h.record.state != JobState::Running {
            return;
        }
        let out: Vec<(UnitId, P)> = h
            .record
            .units
            .iter()
            .filter(|(_, u)| matches!(u.status, UnitStatus::Assigned | UnitStatus::Running))
            .filter_map(|(id, u)| u.holder.clone().map(|p| (*id, p)))
            .collect();
        for (unit, holder) in out {
            self.reissue_unit(now, job, unit, holder, true);
        }
        self.commit(now, job, Vec::new());
    }
}
