//! The home side of the job core: the job record, replicated by the
//! generic home core ([`crate::home`]) as its [`Replicated`] state,
//! checkpoint pieces on holders, restoring and reissuing units, and what a
//! new primary does when it takes a job over.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use rand::Rng;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::{
    Contribution, Epoch, JobEvent, JobId, JobMsg, JobOutput, JobState, JobStats, JobView, Jobs,
    Report, UnitId,
};
use crate::divisible::SharedVars;
use crate::erasure::{self, Shard};
use crate::ft::{CheckpointStorage, FaultTolerance};
use crate::home::{majority, HomeMsg, HomeOutput, Replicated, Role};
use crate::PeerKey;

/// Where `job`'s record is on disk.
fn record_key(job: JobId) -> PieceKey {
    PieceKey {
        job,
        unit: RECORD_UNIT,
        index: RECORD_INDEX,
    }
}

/// Piece index of a checkpoint kept on the worker's own disk.
pub(super) const LOCAL_INDEX: u8 = u8::MAX;

/// Where a home member keeps a durable job's record on disk: this unit
/// and piece index of the job, its term and update number as the piece's
/// epoch and version.
pub(super) const RECORD_UNIT: UnitId = u64::MAX;
/// See [`RECORD_UNIT`].
pub(super) const RECORD_INDEX: u8 = u8::MAX - 1;

/// How often a home member writes a durable job's record when it changed.
const RECORD_PERSIST_INTERVAL: Duration = Duration::from_millis(100);

/// How often a restore waiting for holders asks again.
const RESTORE_RETRY: Duration = Duration::from_secs(1);

/// Checkpoints of a unit a holder keeps.
pub(super) const KEPT_CHECKPOINTS: usize = 3;

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

/// One piece of a unit's checkpoint.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Piece {
    /// The unit epoch whose worker made the checkpoint.
    pub epoch: Epoch,
    /// The report that carried it.
    pub version: u64,
    /// Which piece.
    pub index: u8,
    /// The data.
    pub data: PieceData,
}

/// The data of a piece.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PieceData {
    /// A whole copy of the state.
    Copy(#[serde(with = "serde_bytes")] Vec<u8>),
    /// One erasure-coded shard.
    Shard(Shard),
    /// A [`super::LocalUnit`] on the worker's disk, serialised.
    Local(#[serde(with = "serde_bytes")] Vec<u8>),
}

/// Pieces held for primaries: the newest checkpoints of each unit, so the
/// one the record points to stays decodable while its successors are
/// stored.
pub(super) struct PieceStore<P> {
    pieces: BTreeMap<(JobId, UnitId), Vec<Piece>>,
    /// Per unit, the checkpoint its job record points to, as the primary
    /// last said: never dropped for newer ones.
    kept: BTreeMap<(JobId, UnitId), (Epoch, u64)>,
    /// When each job's pieces were last stored or asked for.
    touched: BTreeMap<JobId, Instant>,
    /// Durable writes in flight: who to answer once on disk.
    persisting: BTreeMap<(PieceKey, Epoch, u64), P>,
}

impl<P> Default for PieceStore<P> {
    fn default() -> Self {
        PieceStore {
            pieces: BTreeMap::new(),
            kept: BTreeMap::new(),
            touched: BTreeMap::new(),
            persisting: BTreeMap::new(),
        }
    }
}

impl<P> PieceStore<P> {
    /// Keeps `piece` of `unit`'s checkpoints; returns the pieces pushed out
    /// (beyond the newest checkpoints and the one the record points to) as
    /// (epoch, version, index), for their copies on disk to be deleted.
    #[must_use]
    pub(super) fn put(&mut self, job: JobId, unit: UnitId, piece: Piece) -> Vec<(Epoch, u64, u8)> {
        let list = self.pieces.entry((job, unit)).or_default();
        if list
            .iter()
            .any(|p| p.epoch == piece.epoch && p.version == piece.version && p.index == piece.index)
        {
            return Vec::new();
        }
        list.push(piece);
        // Keep the pieces of the three newest checkpoints.
        let mut groups: Vec<(Epoch, u64)> = Vec::new();
        for p in list.iter().rev() {
            if !groups.contains(&(p.epoch, p.version)) {
                groups.push((p.epoch, p.version));
            }
        }
        groups.truncate(KEPT_CHECKPOINTS);
        let kept = self.kept.get(&(job, unit));
        let mut evicted = Vec::new();
        list.retain(|p| {
            let keep =
                groups.contains(&(p.epoch, p.version)) || kept == Some(&(p.epoch, p.version));
            if !keep {
                evicted.push((p.epoch, p.version, p.index));
            }
            keep
        });
        evicted
    }

    /// Remembers which of `unit`'s checkpoints its job record points to.
    pub(super) fn keep(&mut self, job: JobId, unit: UnitId, checkpoint: Option<(Epoch, u64)>) {
        if let Some(checkpoint) = checkpoint {
            self.kept.insert((job, unit), checkpoint);
        }
    }

    pub(super) fn get(&self, job: JobId, unit: UnitId) -> Vec<Piece> {
        self.pieces.get(&(job, unit)).cloned().unwrap_or_default()
    }

    pub(super) fn touch(&mut self, job: JobId, now: Instant) {
        self.touched.insert(job, now);
    }

    /// Jobs whose pieces nobody stored or asked for since `before`.
    fn quiet_since(&self, before: Instant) -> Vec<JobId> {
        self.touched
            .iter()
            .filter(|(_, t)| **t < before)
            .map(|(job, _)| *job)
            .collect()
    }

    fn forget_job(&mut self, job: JobId) {
        self.touched.remove(&job);
        self.pieces.retain(|(j, _), _| *j != job);
        self.kept.retain(|(j, _), _| *j != job);
        self.persisting.retain(|(k, _, _), _| k.job != job);
    }
}

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
    epoch: Epoch,
    version: u64,
    /// Holder of piece `i`, in order.
    holders: Vec<P>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct UnitRec<P> {
    status: UnitStatus,
    holder: Option<P>,
    epoch: Epoch,
    /// Highest report applied from the current epoch.
    seq: u64,
    checkpoint: Option<CheckpointRef<P>>,
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
    params: Vec<u8>,
    submitter: P,
    pub(super) ft: FaultTolerance,
    pub(super) state: JobState,
    units: BTreeMap<UnitId, UnitRec<P>>,
    #[serde(with = "serde_bytes")]
    merged: Vec<u8>,
    has_merged: bool,
    shared: SharedVars,
    stats: JobStats,
    contributions: BTreeMap<P, Contribution>,
    elapsed_ms: u64,
    /// Cancel the job once it has run this long (ms), if set.
    deadline_ms: Option<u64>,
}

/// A change to the record, as the primary sends it to backups: data only,
/// applied without application code (the merged result travels as
/// bytes, so a backup's result is the primary's).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(bound(deserialize = "P: DeserializeOwned"))]
pub struct Delta<P> {
    units: Vec<(UnitId, UnitRec<P>)>,
    /// The merged result, if it changed.
    merged: Option<Vec<u8>>,
    has_merged: bool,
    shared: SharedVars,
    stats: JobStats,
    contributions: Vec<(P, Contribution)>,
    phase: Phase,
}

/// A job record as a durable home member keeps it on disk: the record and
/// the member lists it was replicated with.
#[derive(Serialize, Deserialize)]
#[serde(bound(deserialize = "P: DeserializeOwned + Ord"))]
struct DurableRecord<P> {
    record: Record<P>,
    members: Vec<P>,
    config: Vec<P>,
}

/// The home messages of job records.
pub type JobHomeMsg<P> = HomeMsg<JobId, P, Record<P>, Delta<P>>;

/// A report whose checkpoint pieces are being stored; it applies once
/// every holder has its piece.
struct Staged<P> {
    from: P,
    epoch: Epoch,
    seq: u64,
    report: Report,
    /// New checkpoint of each unit the report touches (itself, a part).
    refs: Vec<(UnitId, CheckpointRef<P>)>,
    /// (holder, unit, index) still to confirm.
    waiting: BTreeSet<(P, UnitId, u8)>,
    pieces: Vec<(P, UnitId, Piece)>,
    /// When the pieces still waited for were last sent.
    sent_at: Instant,
}

struct Restoring<P> {
    asked: BTreeSet<P>,
    got: Vec<Piece>,
    /// When the restore began; after the job's patience it is declared lost.
    since: Instant,
    /// When to ask holders that came back again.
    retry_at: Instant,
}

struct Steal<P> {
    requester: P,
    donor: P,
    since: Instant,
}

/// A record held here, with what its primary keeps beside it (not
/// replicated: a new primary rebuilds it).
pub struct HomeState<P> {
    pub(super) record: Record<P>,
    started: Instant,
    finished: Option<Instant>,
    /// Primary: states of queued units, ready to hand out.
    ready: BTreeMap<UnitId, Vec<u8>>,
    /// Primary, protocol `none`: the state each unit out with a worker
    /// restarts from if that worker is declared dead — the one it was
    /// handed out with, or what it kept at its last divide. Only here, in
    /// memory: a new primary has none.
    kept: BTreeMap<UnitId, Vec<u8>>,
    restoring: BTreeMap<UnitId, Restoring<P>>,
    /// Primary: reports waiting for their pieces, per unit, in order.
    staging: BTreeMap<UnitId, VecDeque<Staged<P>>>,
    assigned_at: BTreeMap<UnitId, Instant>,
    /// Primary: since when each ready unit has waited for a worker to ask.
    queued_since: BTreeMap<UnitId, Instant>,
    /// Primary: units pushed to a busy worker, beyond its cores, with that
    /// worker (one per worker at a time).
    pushed: BTreeMap<UnitId, P>,
    steals: BTreeMap<u64, Steal<P>>,
    next_steal: u64,
    next_progress_at: Instant,
    next_advert_at: Instant,
    /// Changes not yet sent to the backups.
    touched: BTreeSet<UnitId>,
    /// The merged result changed since the last update.
    merged_dirty: bool,
    /// Primary: workers asked which units they hold, with the question's
    /// token and the (unit, epoch) the record had running on them then.
    holds_asked: BTreeMap<P, (u64, BTreeSet<(UnitId, Epoch)>)>,
    /// Primary: when to ask the workers again.
    next_holds_at: Instant,
    /// Since when a majority of the home's members is gone from the view.
    majority_lost_since: Option<Instant>,
    /// Read back from disk after a restart and not yet resynchronised by
    /// a live primary: if this member becomes primary, every unit out is
    /// reissued from its checkpoint (the record may miss the last changes
    /// before the restart, so the workers' copies cannot be trusted).
    restored: bool,
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

    fn new(record: Record<P>, now: Instant) -> Self {
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
            assigned_at: BTreeMap::new(),
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
        }
    }

    fn unit(&mut self, unit: UnitId) -> Option<&mut UnitRec<P>> {
        self.touched.insert(unit);
        self.record.units.get_mut(&unit)
    }

    fn record_now(&self, now: Instant) -> Record<P> {
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
        self.assigned_at.clear();
        self.queued_since.clear();
        self.pushed.clear();
        self.touched.clear();
        self.merged_dirty = false;
    }
}

/// When a job that has run for `elapsed_ms` (as a remote snapshot says)
/// started, on this peer's clock: `now` if the claim reaches back before
/// the clock's origin.
fn started_at(now: Instant, elapsed_ms: u64) -> Instant {
    now.checked_sub(Duration::from_millis(elapsed_ms))
        .unwrap_or(now)
}

fn phase_of(state: &JobState) -> Phase {
    match state {
        JobState::Running => Phase::Running,
        JobState::Done { .. } => Phase::Done,
        JobState::Failed { reason } => Phase::Failed(reason.clone()),
        JobState::Cancelled { reason } => Phase::Cancelled(reason.clone()),
    }
}

/// The id of the part a unit gives away in its report `seq` of `epoch`:
/// the same however often the report is re-sent, and unique with
/// overwhelming probability.
pub(super) fn child_id(unit: UnitId, epoch: Epoch, seq: u64) -> UnitId {
    let mut x = unit
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add(epoch.rotate_left(17))
        .wrapping_add(seq.wrapping_mul(0xBF58_476D_1CE4_E5B9));
    x ^= x >> 30;
    x = x.wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x ^= x >> 27;
    x = x.wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^= x >> 31;
    x.max(1)
}

/// Points a unit's checkpoint at its worker's disk (local storage), unless
/// it names a newer piece of the same epoch already.
fn set_local_checkpoint<P: Clone>(u: &mut UnitRec<P>, epoch: Epoch, version: u64, worker: &P) {
    let newer = u
        .checkpoint
        .as_ref()
        .is_none_or(|c| c.epoch != epoch || c.version < version);
    if newer {
        u.checkpoint = Some(CheckpointRef {
            epoch,
            version,
            holders: vec![worker.clone()],
        });
    }
}

/// The acknowledgement of a unit's reports up to `seq`, for the worker `to`.
fn ack<P>(to: P, job: JobId, unit: UnitId, epoch: Epoch, seq: u64) -> JobOutput<P> {
    JobOutput::Send {
        to,
        msg: JobMsg::Ack {
            job,
            unit,
            epoch,
            seq,
        },
        bulk: false,
    }
}

/// Rebuilds a checkpoint from the pieces gathered, if they suffice.
fn decode_pieces<P>(checkpoint: &CheckpointRef<P>, pieces: &[Piece]) -> Option<Vec<u8>> {
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
    fn is_live(&self, peer: &P) -> bool {
        *peer == self.me || self.members.contains(peer)
    }

    /// Whether a unit held by `holder` must be given up: its holder is out
    /// of the view, and (for jobs without checkpoints, which cannot restart
    /// a unit) declared dead rather than only suspected.
    fn holder_lost(&self, holder: &P, ft: &FaultTolerance) -> bool {
        !self.is_live(holder) && (ft.checkpoints() || !self.suspects.contains(holder))
    }

    /// Orders peers by the load average membership reports, lightest first.
    fn by_load(&self, a: &P, b: &P) -> std::cmp::Ordering {
        let load = |p: &P| self.loads.get(p).copied().unwrap_or(0.0);
        load(a).total_cmp(&load(b))
    }

    /// Whether a handed-out unit must be given up: its holder is lost, or
    /// it is this peer and does not run the unit any more (it restarted).
    fn unit_lost(&self, job: JobId, unit: UnitId, rec: &UnitRec<P>, ft: &FaultTolerance) -> bool {
        let Some(holder) = rec.holder.as_ref() else {
            return false;
        };
        if *holder == self.me {
            return rec.status == UnitStatus::Running && !self.running.contains_key(&(job, unit));
        }
        self.holder_lost(holder, ft)
    }

    /// The view of a submission that failed before it became a job.
    pub(super) fn failed_view(
        &self,
        submitter: &P,
        job: JobId,
        app: &str,
        params: &[u8],
        ft: FaultTolerance,
        reason: String,
    ) -> JobView<P> {
        JobView {
            job,
            app: app.to_string(),
            params: params.to_vec(),
            home: self.me.clone(),
            home_members: vec![self.me.clone()],
            submitter: submitter.clone(),
            ft,
            state: JobState::Failed { reason },
            stats: JobStats::default(),
            contributions: Vec::new(),
            shared: SharedVars::default(),
            elapsed_s: 0.0,
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn on_submit(
        &mut self,
        now: Instant,
        from: P,
        job: JobId,
        app_name: String,
        params: Vec<u8>,
        ft: FaultTolerance,
        deadline_ms: Option<u64>,
    ) {
        if self.homes.contains_key(&job) {
            return; // a retransmitted submission
        }
        let fail = |jobs: &Self, reason: String| {
            jobs.failed_view(&from, job, &app_name, &params, ft, reason)
        };
        if let Err(error) = ft.validate() {
            let view = fail(self, error.to_string());
            self.send(from, JobMsg::Status { view }, false);
            return;
        }
        let active = self
            .homes
            .values()
            .filter(|h| h.record.state == JobState::Running)
            .count();
        if active >= self.config.max_active_jobs {
            let view = fail(
                self,
                format!("the home peer already holds {active} running jobs, its limit; try later"),
            );
            self.send(from, JobMsg::Status { view }, false);
            return;
        }
        let prepared = self.registry.get(&app_name).and_then(|app| {
            let unit = app.init(&params)?;
            let shared = app.initial_shared(&params)?;
            Ok((unit.checkpoint(), shared))
        });
        let (root, shared) = match prepared {
            Ok(ok) => ok,
            Err(error) => {
                let view = fail(self, error.to_string());
                self.send(from, JobMsg::Status { view }, false);
                return;
            }
        };
        let record = Record {
            app: app_name.clone(),
            params,
            submitter: from,
            ft,
            state: JobState::Running,
            units: BTreeMap::from([(
                0,
                UnitRec {
                    status: UnitStatus::Queued,
                    holder: None,
                    epoch: 0,
                    seq: 0,
                    checkpoint: None,
                },
            )]),
            merged: Vec::new(),
            has_merged: false,
            shared,
            stats: JobStats {
                units: 1,
                ..JobStats::default()
            },
            contributions: BTreeMap::new(),
            elapsed_ms: 0,
            deadline_ms,
        };
        let mut home = HomeState::new(record, now);
        home.ready.insert(0, root.clone());
        self.homes.create(now, job, home, ft.home_size);
        self.event(JobEvent::Primary {
            job,
            previous: None,
        });
        self.known.insert(
            job,
            super::KnownJob {
                app: app_name,
                home: self.me.clone(),
                expires: now + self.config.advert_lifetime,
            },
        );
        self.drain_homes(now);
        // The root's state is its first checkpoint.
        if ft.checkpoints() && ft.storage != CheckpointStorage::Local {
            let me = self.me.clone();
            self.stage(now, job, 0, me, 0, 0, Report::HandBack { state: root });
        }
        self.advertise(now, job);
    }

    /// Splits `state` into pieces for the home's current members.
    fn pieces_for(
        &self,
        job: JobId,
        unit: UnitId,
        epoch: Epoch,
        version: u64,
        state: &[u8],
    ) -> (CheckpointRef<P>, Vec<(P, UnitId, Piece)>) {
        let mut pieces = Vec::new();
        let mut holders = Vec::new();
        if let Some(h) = self.homes.get(&job) {
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
        }
        let checkpoint = CheckpointRef {
            epoch,
            version,
            holders,
        };
        (checkpoint, pieces)
    }

    /// Stores the checkpoints a report carries, then applies it; reports
    /// without state apply at once.
    #[allow(clippy::too_many_arguments)]
    fn stage(
        &mut self,
        now: Instant,
        job: JobId,
        unit: UnitId,
        from: P,
        epoch: Epoch,
        seq: u64,
        report: Report,
    ) {
        let Some(h) = self.homes.get(&job) else {
            return;
        };
        let ft = h.record.ft;
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
        let busy = h.staging.get(&unit).is_some_and(|q| !q.is_empty());
        if (!stored || states.is_empty()) && !busy {
            self.apply_report(now, job, unit, from, epoch, seq, report, Vec::new());
            return;
        }
        let mut refs = Vec::new();
        let mut pieces = Vec::new();
        // Behind a report still being stored, even one without state waits.
        let states = if stored { states } else { Vec::new() };
        for (id, e, state) in states {
            let version = if id == unit { seq } else { 0 };
            let (checkpoint, p) = self.pieces_for(job, id, e, version, state);
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
        let Some(h) = self.homes.get_mut(&job) else {
            return;
        };
        let queue = h.staging.entry(unit).or_default();
        queue.push_back(staged);
        if queue.len() == 1 {
            self.send_staged_pieces(now, job, unit);
        }
    }

    /// Sends the pieces of `unit`'s first staged report that their holders
    /// have not confirmed yet (all of them the first time; again when a
    /// message was lost with a pipe that gave up).
    fn send_staged_pieces(&mut self, now: Instant, job: JobId, unit: UnitId) {
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
            self.pieces
                .persisting
                .insert((key, epoch, version), reply_to);
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
        if let Some(reply_to) = self.pieces.persisting.remove(&(key, epoch, version)) {
            self.confirm_piece(now, reply_to, key, epoch, version);
        }
    }

    /// Tells the primary that asked (this peer, perhaps) that a piece is
    /// stored.
    fn confirm_piece(
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
        records
    }

    /// A durable job's record this member wrote before a restart: it
    /// rejoins the home as a backup without a primary, and campaigns.
    fn restore_record(&mut self, job: JobId, piece: Piece) -> bool {
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
        let now = self.next_tick;
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
    fn resume_restored(&mut self, now: Instant, job: JobId) {
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
    fn staged_done(&mut self, now: Instant, job: JobId, unit: UnitId) {
        let Some(staged) = self
            .homes
            .get_mut(&job)
            .and_then(|h| h.staging.get_mut(&unit))
            .and_then(|q| q.pop_front())
        else {
            return;
        };
        self.apply_report(
            now,
            job,
            unit,
            staged.from,
            staged.epoch,
            staged.seq,
            staged.report,
            staged.refs,
        );
        let more = self
            .homes
            .get(&job)
            .and_then(|h| h.staging.get(&unit))
            .is_some_and(|q| !q.is_empty());
        if more {
            self.send_staged_pieces(now, job, unit);
        } else if let Some(h) = self.homes.get_mut(&job) {
            h.staging.remove(&unit);
        }
    }

    /// A report from a worker reached this peer.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn on_report(
        &mut self,
        now: Instant,
        from: P,
        job: JobId,
        unit: UnitId,
        epoch: Epoch,
        seq: u64,
        after: u64,
        report: Report,
    ) {
        let Some(h) = self.homes.get(&job) else {
            return; // not (yet) a home member: the worker re-sends
        };
        if !h.is_primary() {
            return;
        }
        // Told only once the state that makes the unit stale is committed:
        // a primary about to be replaced may hold changes no one else has.
        let stale = JobOutput::Send {
            to: from.clone(),
            msg: JobMsg::Stale { job, unit, epoch },
            bulk: false,
        };
        if h.record.state != JobState::Running {
            self.commit(now, job, vec![stale]);
            return;
        }
        let Some(u) = h.record.units.get(&unit) else {
            self.commit(now, job, vec![stale]);
            return;
        };
        // A restarted worker offering a unit from its disk: it takes the
        // unit back if it still holds it, or if the unit waits for a worker
        // and was not given out since (a restore under way is dropped).
        let resuming = matches!(report, Report::Resume { .. });
        let holds = u.holder.as_ref() == Some(&from)
            || (resuming && u.holder.is_none() && u.status == UnitStatus::Queued);
        if u.status == UnitStatus::Done || u.epoch != epoch || !holds {
            self.commit(now, job, vec![stale]);
            return;
        }
        let staged_max = h
            .staging
            .get(&unit)
            .and_then(|q| q.back())
            .map(|s| s.seq)
            .unwrap_or(0);
        if after > u.seq.max(staged_max) {
            // A report it depends on was lost (a new primary, a dropped
            // message): the worker re-sends them all, in order.
            return;
        }
        if seq <= u.seq.max(staged_max) {
            // Already applied (or being stored): confirm once replicated.
            let applied = u.seq;
            if seq <= applied {
                let ack = ack(from, job, unit, epoch, applied);
                self.commit(now, job, vec![ack]);
            }
            return;
        }
        self.stage(now, job, unit, from, epoch, seq, report);
    }

    /// Applies a worker's report to the record (its pieces, if any, are
    /// stored) and commits it.
    #[allow(clippy::too_many_arguments)]
    fn apply_report(
        &mut self,
        now: Instant,
        job: JobId,
        unit: UnitId,
        from: P,
        epoch: Epoch,
        seq: u64,
        report: Report,
        refs: Vec<(UnitId, CheckpointRef<P>)>,
    ) {
        let me = self.me.clone();
        let app = match self.homes.get(&job).map(|h| h.record.app.clone()) {
            Some(app) => app,
            None => return,
        };
        let merge_fn = self.registry.get(&app);
        let result_max = self.config.limits.result_bytes;
        let Some(h) = self.homes.get_mut(&job) else {
            return;
        };
        if from == me && seq == 0 {
            // The root's initial checkpoint, stored at submission.
            if let Some(u) = h.unit(unit) {
                u.checkpoint = refs.into_iter().next().map(|(_, c)| c);
            }
            self.commit(now, job, Vec::new());
            return;
        }
        let Some(u) = h.record.units.get(&unit) else {
            return;
        };
        let resuming = matches!(report, Report::Resume { .. });
        let holds = u.holder.as_ref() == Some(&from)
            || (resuming && u.holder.is_none() && u.status == UnitStatus::Queued);
        if u.status == UnitStatus::Done || u.epoch != epoch || seq <= u.seq || !holds {
            // Reissued (or finished) while its pieces were being stored.
            return;
        }
        let mut effects = vec![ack(from.clone(), job, unit, epoch, seq)];
        let local = h.record.ft.checkpoints() && h.record.ft.storage == CheckpointStorage::Local;
        if resuming && local && u.status == UnitStatus::Queued {
            // Back with its worker: no restore, no other worker.
            h.ready.remove(&unit);
            h.restoring.remove(&unit);
            let c = h.record.contributions.entry(from.clone()).or_default();
            c.units_running = c.units_running.saturating_add(1);
            if let Some(u) = h.unit(unit) {
                u.status = UnitStatus::Running;
                u.holder = Some(from.clone());
            }
        }
        let Some(u) = h.record.units.get(&unit) else {
            return;
        };
        let was_assigned = u.status == UnitStatus::Assigned;
        for (id, checkpoint) in &refs {
            if *id == unit {
                if let Some(u) = h.unit(unit) {
                    u.checkpoint = Some(checkpoint.clone());
                }
            }
        }
        if let Some(u) = h.unit(unit) {
            u.seq = seq;
            if was_assigned {
                u.status = UnitStatus::Running;
            }
        }
        if was_assigned {
            h.assigned_at.remove(&unit);
            let c = h.record.contributions.entry(from.clone()).or_default();
            c.units_running = c.units_running.saturating_add(1);
            h.record.stats.peers_used = h
                .record
                .contributions
                .values()
                .filter(|c| c.units_running > 0 || c.units_done > 0)
                .count() as u64;
        }
        let mut improved = None;
        match report {
            Report::Started => {}
            Report::Checkpoint { state, shared } => {
                h.record.stats.checkpoints = h.record.stats.checkpoints.saturating_add(1);
                h.record.stats.checkpoint_bytes = h
                    .record
                    .stats
                    .checkpoint_bytes
                    .saturating_add(state.len() as u64);
                if h.record.shared.merge(&shared) {
                    improved = Some(h.record.shared.clone());
                }
            }
            Report::LocalCheckpoint { shared, version } => {
                h.record.stats.checkpoints = h.record.stats.checkpoints.saturating_add(1);
                if let Some(u) = h.unit(unit) {
                    set_local_checkpoint(u, epoch, version, &from);
                }
                if h.record.shared.merge(&shared) {
                    improved = Some(h.record.shared.clone());
                }
            }
            Report::Divided {
                steal,
                part,
                remaining,
                shared,
            } => {
                h.record.stats.checkpoints = h.record.stats.checkpoints.saturating_add(1);
                h.record.stats.checkpoint_bytes = h
                    .record
                    .stats
                    .checkpoint_bytes
                    .saturating_add((part.len() + remaining.len()) as u64);
                if h.record.shared.merge(&shared) {
                    improved = Some(h.record.shared.clone());
                }
                let child = child_id(unit, epoch, seq);
                h.record.stats.units = h.record.stats.units.saturating_add(1);
                h.record.stats.steals = h.record.stats.steals.saturating_add(1);
                let c = h.record.contributions.entry(from.clone()).or_default();
                c.donated = c.donated.saturating_add(1);
                let checkpoint = refs
                    .iter()
                    .find(|(id, _)| *id == child)
                    .map(|(_, c)| c.clone())
                    .or_else(|| {
                        // Local storage: the donor keeps the part on its
                        // disk until the part's own worker stores it.
                        local.then(|| CheckpointRef {
                            epoch: 0,
                            version: 0,
                            holders: vec![from.clone()],
                        })
                    });
                h.touched.insert(child);
                h.record.units.insert(
                    child,
                    UnitRec {
                        status: UnitStatus::Queued,
                        holder: None,
                        epoch: 0,
                        seq: 0,
                        checkpoint,
                    },
                );
                h.ready.insert(child, part);
                if !h.record.ft.checkpoints() {
                    // Without checkpoints, what a unit restarts from.
                    h.kept.insert(unit, remaining.clone());
                }
                let requester = h.steals.remove(&steal).map(|s| s.requester);
                if let Some(requester) = requester.filter(|r| *r == me || self.members.contains(r))
                {
                    if let Some(assign) = self.assign(now, job, child, requester) {
                        effects.push(assign);
                    }
                }
                let _ = remaining;
            }
            Report::Done { output } => {
                let merged = if h.record.has_merged {
                    merge_fn.and_then(|a| a.merge(&h.record.merged, &output))
                } else {
                    Ok(output.clone())
                };
                match merged {
                    // Nobody could receive it: fail now, not at the end.
                    Ok(m) if m.len() > result_max => {
                        h.record.state = JobState::Failed {
                            reason: super::limits::result_too_large(m.len(), result_max),
                        };
                    }
                    Ok(m) => {
                        h.record.merged = m;
                        h.record.has_merged = true;
                    }
                    Err(error) => {
                        h.record.state = JobState::Failed {
                            reason: format!("merging unit {unit}: {error}"),
                        };
                    }
                }
                h.merged_dirty = true;
                let _ = output;
                h.kept.remove(&unit);
                if let Some(u) = h.unit(unit) {
                    u.status = UnitStatus::Done;
                    u.holder = None;
                }
                h.record.stats.units_done = h.record.stats.units_done.saturating_add(1);
                let c = h.record.contributions.entry(from.clone()).or_default();
                c.units_done = c.units_done.saturating_add(1);
                c.units_running = c.units_running.saturating_sub(1);
                self.event(JobEvent::Merged { job, unit });
            }
            Report::Resume {
                state,
                shared,
                version,
            } if local => {
                // It runs on from the state on its worker's disk.
                if let Some(u) = h.unit(unit) {
                    set_local_checkpoint(u, epoch, version, &from);
                }
                h.record.stats.checkpoint_bytes = h
                    .record
                    .stats
                    .checkpoint_bytes
                    .saturating_add(state.len() as u64);
                if h.record.shared.merge(&shared) {
                    improved = Some(h.record.shared.clone());
                }
            }
            Report::HandBack { state } | Report::Resume { state, .. } => {
                h.kept.remove(&unit);
                if let Some(u) = h.unit(unit) {
                    u.status = UnitStatus::Queued;
                    u.holder = None;
                }
                let c = h.record.contributions.entry(from.clone()).or_default();
                c.units_running = c.units_running.saturating_sub(1);
                h.ready.insert(unit, state);
            }
        }
        if let Some(vars) = improved {
            effects.extend(self.shared_broadcast(job, vars));
        }
        self.check_complete(now, job, &mut effects);
        self.commit(now, job, effects);
    }

    /// Messages giving `vars` to every worker of `job`.
    fn shared_broadcast(&self, job: JobId, vars: SharedVars) -> Vec<JobOutput<P>> {
        let Some(h) = self.homes.get(&job) else {
            return Vec::new();
        };
        let holders: BTreeSet<P> = h
            .record
            .units
            .values()
            .filter(|u| matches!(u.status, UnitStatus::Running | UnitStatus::Assigned))
            .filter_map(|u| u.holder.clone())
            .collect();
        holders
            .into_iter()
            .map(|to| JobOutput::Send {
                to,
                msg: JobMsg::Shared {
                    job,
                    vars: vars.clone(),
                },
                bulk: false,
            })
            .collect()
    }

    /// Protocol `none`: a worker's improved shared variables.
    pub(super) fn on_improved(&mut self, now: Instant, job: JobId, vars: SharedVars) {
        let Some(h) = self.homes.get_mut(&job).filter(|h| h.is_primary()) else {
            return;
        };
        if h.record.shared.merge(&vars) {
            let vars = h.record.shared.clone();
            let effects = self.shared_broadcast(job, vars);
            self.commit(now, job, effects);
        }
    }

    pub(super) fn on_progress(&mut self, from: P, job: JobId, work: u64) {
        if let Some(h) = self.homes.get_mut(&job).filter(|h| h.is_primary()) {
            h.record.stats.work = h.record.stats.work.saturating_add(work);
            let c = h.record.contributions.entry(from).or_default();
            c.work = c.work.saturating_add(work);
        }
    }

    /// Assigns a queued unit whose state is ready to `to`; the message is
    /// returned, to be released with the update.
    fn assign(&mut self, now: Instant, job: JobId, unit: UnitId, to: P) -> Option<JobOutput<P>> {
        let epoch = self.random_epoch();
        let h = self.homes.get_mut(&job)?;
        let state = h.ready.remove(&unit)?;
        h.queued_since.remove(&unit);
        if !h.record.ft.checkpoints() {
            h.kept.insert(unit, state.clone());
        }
        let reissue = h
            .record
            .units
            .get(&unit)
            .is_some_and(|u| u.epoch != 0 || u.seq != 0);
        let u = h.unit(unit)?;
        u.status = UnitStatus::Assigned;
        u.holder = Some(to.clone());
        u.epoch = epoch;
        u.seq = 0;
        h.assigned_at.insert(unit, now);
        let msg = JobMsg::Assign {
            job,
            unit,
            epoch,
            app: h.record.app.clone(),
            state,
            shared: h.record.shared.clone(),
            ft: h.record.ft,
        };
        self.event(JobEvent::Assigned {
            job,
            unit,
            to: to.clone(),
            reissue,
        });
        Some(JobOutput::Send {
            to,
            msg,
            bulk: true,
        })
    }

    pub(super) fn on_work_request(&mut self, now: Instant, from: P, job: JobId, free: u32) {
        let Some(h) = self.homes.get(&job) else {
            self.send(
                from,
                JobMsg::NoWork {
                    job,
                    finished: self.finished_jobs.contains(&job),
                },
                false,
            );
            return;
        };
        if !h.is_primary() || h.record.state != JobState::Running {
            let finished = h.record.state != JobState::Running;
            self.send(from, JobMsg::NoWork { job, finished }, false);
            return;
        }
        let ready: Vec<UnitId> = h
            .ready
            .keys()
            .copied()
            .filter(|u| {
                h.record
                    .units
                    .get(u)
                    .is_some_and(|r| r.status == UnitStatus::Queued)
            })
            .take(free.max(1) as usize)
            .collect();
        if !ready.is_empty() {
            let mut effects = Vec::new();
            for unit in ready {
                effects.extend(self.assign(now, job, unit, from.clone()));
            }
            self.commit(now, job, effects);
            return;
        }
        // Steal: the holder with the most running units, then the lightest load.
        let mut running: BTreeMap<P, u32> = BTreeMap::new();
        for u in h.record.units.values() {
            if u.status == UnitStatus::Running {
                if let Some(holder) = u.holder.as_ref().filter(|p| **p != from) {
                    *running.entry(holder.clone()).or_default() += 1;
                }
            }
        }
        let asked = |donor: &P| h.steals.values().filter(|s| &s.donor == donor).count() as u32;
        let donor = running
            .iter()
            .filter(|(p, n)| **n > asked(p))
            .max_by(|a, b| a.1.cmp(b.1).then_with(|| self.by_load(b.0, a.0)))
            .map(|(p, _)| p.clone());
        let Some(donor) = donor else {
            self.send(
                from,
                JobMsg::NoWork {
                    job,
                    finished: false,
                },
                false,
            );
            return;
        };
        let Some(h) = self.homes.get_mut(&job) else {
            return;
        };
        let steal = h.next_steal;
        h.next_steal += 1;
        h.steals.insert(
            steal,
            Steal {
                requester: from,
                donor: donor.clone(),
                since: now,
            },
        );
        self.send(donor, JobMsg::StealRequest { job, steal }, false);
    }

    /// Queued units that no idle worker asked for within
    /// `push_queued_after` go to the job's least-loaded worker, which runs
    /// them besides its own: a lost unit restarts at once even when every
    /// worker is busy (as a Dask scheduler hands a task to a busy worker's
    /// queue), instead of waiting for some unit to finish. A worker holds at
    /// most one pushed unit at a time, so the overload stays bounded, and it
    /// asks for no more work until it is below its cores again.
    fn push_queued(&mut self, now: Instant, job: JobId) {
        let patience = self.config.push_queued_after;
        let Some(h) = self.homes.get_mut(&job) else {
            return;
        };
        if !h.is_primary() || h.record.state != JobState::Running {
            return;
        }
        let h = h.state_mut();
        let held = |u: &UnitRec<P>| matches!(u.status, UnitStatus::Running | UnitStatus::Assigned);
        // Pushes end when their unit leaves the worker (merged, lost).
        let units = &h.record.units;
        h.pushed.retain(|id, p| {
            units
                .get(id)
                .is_some_and(|u| held(u) && u.holder.as_ref() == Some(p))
        });
        let ready = &h.ready;
        h.queued_since.retain(|id, _| ready.contains_key(id));
        let mut due = Vec::new();
        for id in h.ready.keys() {
            if units
                .get(id)
                .is_some_and(|u| u.status == UnitStatus::Queued)
            {
                let since = *h.queued_since.entry(*id).or_insert(now);
                if now.saturating_duration_since(since) >= patience {
                    due.push(*id);
                }
            }
        }
        if due.is_empty() {
            return;
        }
        // The job's live workers, with the units each holds.
        let mut load: BTreeMap<P, usize> = BTreeMap::new();
        for u in units.values().filter(|u| held(u)) {
            if let Some(p) = u.holder.clone() {
                *load.entry(p).or_default() += 1;
            }
        }
        let mut pushed: BTreeSet<P> = h.pushed.values().cloned().collect();
        load.retain(|p, _| self.is_live(p));
        let mut effects = Vec::new();
        for unit in due {
            let target = load
                .iter()
                .filter(|(p, _)| !pushed.contains(*p))
                .min_by(|a, b| a.1.cmp(b.1).then_with(|| self.by_load(a.0, b.0)))
                .map(|(p, _)| p.clone());
            let Some(to) = target else {
                break;
            };
            if let Some(msg) = self.assign(now, job, unit, to.clone()) {
                effects.push(msg);
                if let Some(h) = self.homes.get_mut(&job) {
                    h.pushed.insert(unit, to.clone());
                }
                *load.entry(to.clone()).or_default() += 1;
                pushed.insert(to);
            }
        }
        self.commit(now, job, effects);
    }

    pub(super) fn on_steal_declined(&mut self, _now: Instant, job: JobId, steal: u64) {
        let Some(s) = self
            .homes
            .get_mut(&job)
            .and_then(|h| h.steals.remove(&steal))
        else {
            return;
        };
        self.send(
            s.requester,
            JobMsg::NoWork {
                job,
                finished: false,
            },
            false,
        );
    }

    /// Marks the job done once every unit is merged; the result goes to
    /// the submitter with the update.
    fn check_complete(&mut self, now: Instant, job: JobId, effects: &mut Vec<JobOutput<P>>) {
        let Some(h) = self.homes.get_mut(&job) else {
            return;
        };
        if h.record.state == JobState::Running
            && h.record
                .units
                .values()
                .all(|u| u.status == UnitStatus::Done)
        {
            h.record.state = JobState::Done {
                result: h.record.merged.clone(),
            };
        }
        if h.record.state != JobState::Running && h.finished.is_none() {
            h.finished = Some(now);
            let ok = matches!(h.record.state, JobState::Done { .. });
            let submitter = h.record.submitter.clone();
            if let Some(view) = self.view(now, job) {
                effects.push(JobOutput::Send {
                    to: submitter,
                    msg: JobMsg::Status { view },
                    bulk: true,
                });
            }
            effects.push(JobOutput::Event(JobEvent::Finished { job, ok }));
        }
    }

    /// A worker cannot send its report on `unit`: over a size limit. Only
    /// the unit's current holder may say so.
    pub(super) fn on_too_large(
        &mut self,
        now: Instant,
        from: P,
        job: JobId,
        unit: UnitId,
        epoch: Epoch,
        reason: String,
    ) {
        let holds = self.homes.get(&job).is_some_and(|h| {
            h.is_primary()
                && h.record
                    .units
                    .get(&unit)
                    .is_some_and(|u| u.holder.as_ref() == Some(&from) && u.epoch == epoch)
        });
        if holds {
            self.fail_too_large(now, job, format!("unit {unit} on {from}: {reason}"));
        }
    }

    /// A message of this primary's for `job` is over its size limit: the
    /// job fails, and its partial result, which nobody will read, is
    /// dropped so the record's snapshots stay small.
    pub(super) fn fail_too_large(&mut self, now: Instant, job: JobId, reason: String) {
        if let Some(h) = self.homes.get_mut(&job).filter(|h| h.is_primary()) {
            if h.record.state == JobState::Running {
                h.record.merged = Vec::new();
                h.record.has_merged = false;
                h.merged_dirty = true;
            }
        }
        self.fail_job(now, job, reason);
    }

    fn fail_job(&mut self, now: Instant, job: JobId, reason: String) {
        if let Some(h) = self.homes.get_mut(&job) {
            if h.record.state == JobState::Running {
                h.record.state = JobState::Failed { reason };
            }
        }
        let mut effects = Vec::new();
        self.check_complete(now, job, &mut effects);
        self.commit(now, job, effects);
    }

    /// A request to cancel `job` from `from`: granted to the job's
    /// submitter and to this peer itself (the operator of the primary).
    pub(super) fn on_cancel(&mut self, now: Instant, from: P, job: JobId) {
        let reply = |refused: Option<String>| JobOutput::Send {
            to: from.clone(),
            msg: JobMsg::CancelReply { job, refused },
            bulk: false,
        };
        let Some(h) = self.homes.get(&job) else {
            let answer = reply(Some(super::Refusal::UnknownJob.to_string()));
            self.outputs.push_back(answer);
            return;
        };
        if !h.is_primary() {
            let primary = h.primary().map(|p| format!("{p:?}")).unwrap_or_default();
            let answer = reply(Some(format!(
                "this peer is not the job's primary (that is {primary})"
            )));
            self.outputs.push_back(answer);
            return;
        }
        if from != self.me && from != h.record.submitter {
            let msg = JobMsg::Cancel { job };
            self.refuse(&from, &msg, super::Refusal::NotTheSubmitter);
            return;
        }
        match &h.record.state {
            JobState::Running => {
                let by = if from == h.record.submitter {
                    "its submitter"
                } else {
                    "the operator of its primary"
                };
                self.cancel_job(now, job, format!("cancelled by {by}"), vec![reply(None)]);
            }
            JobState::Cancelled { .. } => self.commit(now, job, vec![reply(None)]),
            JobState::Done { .. } | JobState::Failed { .. } => {
                let answer = reply(Some("the job has already finished".to_string()));
                self.outputs.push_back(answer);
            }
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

    /// Ends a running job as cancelled: no more work is handed out, and
    /// once that is committed every worker is told its unit is stale (its
    /// thread stops within a step), the submitter gets the final status,
    /// and `effects` are released.
    fn cancel_job(
        &mut self,
        now: Instant,
        job: JobId,
        reason: String,
        mut effects: Vec<JobOutput<P>>,
    ) {
        let Some(h) = self.homes.get_mut(&job) else {
            return;
        };
        if h.record.state != JobState::Running {
            return;
        }
        h.record.state = JobState::Cancelled { reason };
        h.ready.clear();
        h.queued_since.clear();
        h.pushed.clear();
        h.steals.clear();
        h.restoring.clear();
        let holders: Vec<(UnitId, P, Epoch)> = h
            .record
            .units
            .iter()
            .filter(|(_, u)| u.status != UnitStatus::Done)
            .filter_map(|(id, u)| u.holder.clone().map(|p| (*id, p, u.epoch)))
            .collect();
        h.touched.insert(0);
        for (unit, to, epoch) in holders {
            effects.push(JobOutput::Send {
                to,
                msg: JobMsg::Stale { job, unit, epoch },
                bulk: false,
            });
        }
        self.check_complete(now, job, &mut effects);
        self.commit(now, job, effects);
    }

    /// Sends the record's changes to every backup and holds `effects`
    /// until a majority of the home confirms them (nothing, if this peer
    /// is not the primary).
    fn commit(&mut self, now: Instant, job: JobId, effects: Vec<JobOutput<P>>) {
        let _ = self.homes.propose(now, job, effects);
        self.drain_homes(now);
    }

    /// Carries out what the home core asks for.
    pub(super) fn drain_homes(&mut self, now: Instant) {
        while let Some(out) = self.homes.poll() {
            match out {
                HomeOutput::Send { to, msg, bulk } => self.send(to, JobMsg::Home(msg), bulk),
                HomeOutput::Released { effects, .. } => self.outputs.extend(effects),
                HomeOutput::BecamePrimary { key, previous } => self.took_over(now, key, previous),
                HomeOutput::Left { key, peer } => self.holder_left(now, key, peer),
                HomeOutput::Committed { .. }
                | HomeOutput::SteppedDown { .. }
                | HomeOutput::Dropped { .. } => {}
            }
        }
    }

    /// `peer` left the home of `job`: it drops the job's pieces, so stop
    /// waiting for its confirmations (the checkpoint has fewer copies).
    fn holder_left(&mut self, now: Instant, job: JobId, peer: P) {
        let Some(h) = self.homes.get_mut(&job) else {
            return;
        };
        let mut unblocked = Vec::new();
        for (owner, queue) in h.staging.iter_mut() {
            if let Some(front) = queue.front_mut() {
                let before = front.waiting.len();
                front.waiting.retain(|(holder, _, _)| *holder != peer);
                if before > 0 && front.waiting.is_empty() {
                    unblocked.push(*owner);
                }
            }
        }
        for owner in unblocked {
            self.staged_done(now, job, owner);
        }
    }

    pub(super) fn advertise(&mut self, now: Instant, job: JobId) {
        let Some(h) = self.homes.get_mut(&job) else {
            return;
        };
        h.next_advert_at = now + self.config.advert_interval;
        let Some(h) = self.homes.get(&job) else {
            return;
        };
        let msg = self.advert(job, &h.record.app, h.submitter());
        for to in self.members.clone() {
            self.send(to, msg.clone(), false);
        }
        if let Some(k) = self.known.get_mut(&job) {
            k.expires = now + self.config.advert_lifetime;
            k.home = self.me.clone();
        }
    }

    /// This peer took the primary role of `job` over (from a lost primary,
    /// or handed over by `previous`): units whose holders are gone are
    /// reissued, queued ones restored, the submitter told.
    fn took_over(&mut self, now: Instant, job: JobId, previous: Option<P>) {
        let assign_grace = now;
        let Some(h) = self.homes.get_mut(&job) else {
            return;
        };
        h.record.stats.takeovers = h
            .record
            .stats
            .takeovers
            .saturating_add(u64::from(previous.is_none()));
        let assigned: Vec<UnitId> = h
            .record
            .units
            .iter()
            .filter(|(_, u)| u.status == UnitStatus::Assigned)
            .map(|(id, _)| *id)
            .collect();
        for id in assigned {
            h.assigned_at.insert(id, assign_grace);
        }
        self.event(JobEvent::Primary { job, previous });
        // Units whose holders are gone, and queued ones, need their state.
        let Some(h) = self.homes.get(&job) else {
            return;
        };
        let lost: Vec<(UnitId, Option<P>)> = h
            .record
            .units
            .iter()
            .filter(|(id, u)| match u.status {
                UnitStatus::Queued => true,
                UnitStatus::Assigned | UnitStatus::Running => {
                    u.holder.is_none() || self.unit_lost(job, **id, u, &h.record.ft)
                }
                UnitStatus::Done => false,
            })
            .map(|(id, u)| (*id, u.holder.clone()))
            .collect();
        for (unit, holder) in lost {
            match holder {
                Some(holder) => self.lose_unit(now, job, unit, holder),
                None => self.restore_unit(now, job, unit),
            }
        }
        let Some(finished) = self
            .homes
            .get(&job)
            .map(|h| h.record.state != JobState::Running)
        else {
            return;
        };
        if finished {
            // The submitter may have missed the result.
            if let Some(view) = self.view(now, job) {
                let to = view.submitter.clone();
                self.send(to, JobMsg::Status { view }, true);
            }
        } else {
            self.advertise(now, job);
        }
        self.commit(now, job, Vec::new());
    }

    /// `unit`'s holder is gone: reissue it from its last checkpoint.
    fn lose_unit(&mut self, now: Instant, job: JobId, unit: UnitId, lost: P) {
        self.reissue_unit(now, job, unit, lost, false);
    }

    /// Reissues `unit` of `job`, lost with `lost`; `unheld` when `lost` is
    /// live and said it does not hold the unit (a local-storage unit is
    /// then not waited for: no disk will offer it back).
    fn reissue_unit(&mut self, now: Instant, job: JobId, unit: UnitId, lost: P, unheld: bool) {
        let Some(h) = self.homes.get_mut(&job) else {
            return;
        };
        let ft = h.record.ft;
        let Some(u) = h.record.units.get(&unit) else {
            return;
        };
        if u.status == UnitStatus::Done {
            return;
        }
        if ft.checkpoints()
            && ft.storage == CheckpointStorage::Local
            && u.status == UnitStatus::Running
            && !unheld
        {
            // Its state is on the lost peer's disk: wait for it to come back
            // and resume it. One only assigned may never have reached that
            // disk: it restarts from its last checkpoint (and its worker, if
            // it did store it, may still take it back until it is given out).
            return;
        }
        let was_running = u.status == UnitStatus::Running;
        if let Some(u) = h.unit(unit) {
            u.status = UnitStatus::Queued;
            u.holder = None;
        }
        h.assigned_at.remove(&unit);
        // Reports of the lost copy still being stored must not apply.
        h.staging.remove(&unit);
        if was_running {
            let c = h.record.contributions.entry(lost.clone()).or_default();
            c.units_running = c.units_running.saturating_sub(1);
        }
        h.record.stats.reissued = h.record.stats.reissued.saturating_add(1);
        self.event(JobEvent::Reissued {
            job,
            unit,
            lost: lost.clone(),
        });
        if !ft.checkpoints() {
            // It restarts from the state it was handed out with (or kept at
            // its last divide); its worker's reports are stale from now on.
            if let Some(h) = self.homes.get_mut(&job) {
                if let Some(state) = h.kept.remove(&unit) {
                    h.ready.insert(unit, state);
                }
            }
            let has_state = self
                .homes
                .get(&job)
                .is_some_and(|h| h.ready.contains_key(&unit));
            if !has_state {
                self.fail_job(
                    now,
                    job,
                    format!(
                        "unit {unit} was lost with peer {lost}, and the state it was handed out with was lost with the job's primary; the job's fault tolerance is \"none\", so nothing can restart it"
                    ),
                );
            }
            return;
        }
        self.restore_unit(now, job, unit);
    }

    /// Fails `job` here, with a reason naming the lost members, once a
    /// majority of its home's members (latest or committed) has been gone
    /// from the view for `majority_patience`: no update can commit and no
    /// election can be won without them, so the job would wait forever.
    /// The failure cannot be committed (that needs the majority): this
    /// member ends the job on its own, stops its units and tells the
    /// submitter; any peer asking about the job hears it from here.
    fn watch_majority(&mut self, now: Instant, job: JobId) {
        let patience = self.config.majority_patience;
        let live = |p: &P| *p == self.me || self.members.contains(p);
        let Some(h) = self.homes.get(&job) else {
            return;
        };
        let lost_in = |set: &[P]| !set.is_empty() && !majority(set, live);
        let lost = h.record.state == JobState::Running
            && h.has_member(&self.me)
            && (lost_in(h.members()) || lost_in(h.config()));
        if !lost {
            if let Some(h) = self.homes.get_mut(&job) {
                h.majority_lost_since = None;
            }
            return;
        }
        let mut gone: Vec<P> = h
            .members()
            .iter()
            .chain(h.config())
            .filter(|p| !live(p))
            .cloned()
            .collect();
        gone.sort();
        gone.dedup();
        let members = h.members().len().max(h.config().len());
        // Live holders of units out: told to stop once the job fails.
        let holders: Vec<(UnitId, Epoch, P)> = h
            .record
            .units
            .iter()
            .filter(|(_, u)| matches!(u.status, UnitStatus::Assigned | UnitStatus::Running))
            .filter_map(|(id, u)| u.holder.clone().map(|p| (*id, u.epoch, p)))
            .filter(|(_, _, p)| live(p))
            .collect();
        let since = h.majority_lost_since;
        let Some(since) = since else {
            if let Some(h) = self.homes.get_mut(&job) {
                h.majority_lost_since = Some(now);
            }
            self.event(JobEvent::HomeMajorityLost {
                job,
                gone,
                fails_in: patience,
            });
            return;
        };
        if now.saturating_duration_since(since) < patience {
            return;
        }
        let reason = format!(
            "the job's home lost its majority: {} of its {members} members ({gone:?}) left the network and did not come back within {:.0} s, so no change to the job can be committed any more",
            gone.len(),
            patience.as_secs_f64()
        );
        if let Some(h) = self.homes.get_mut(&job) {
            h.record.state = JobState::Failed { reason };
        }
        let mut effects = Vec::new();
        self.check_complete(now, job, &mut effects);
        for (unit, epoch, holder) in holders {
            self.send(holder, JobMsg::Stale { job, unit, epoch }, false);
        }
        self.outputs.extend(effects);
    }

    /// Asks every worker the record names as running a unit of `job` which
    /// units it holds, every `holdings_interval`: a unit recorded on a
    /// live worker that no longer runs it (a lost hand-back, a thread that
    /// failed to start) would otherwise wait forever.
    fn ask_holders(&mut self, now: Instant, job: JobId) {
        let interval = self.config.holdings_interval;
        let Some(h) = self.homes.get(&job) else {
            return;
        };
        if !h.is_primary() || h.record.state != JobState::Running || h.next_holds_at > now {
            return;
        }
        let mut running: BTreeMap<P, BTreeSet<(UnitId, Epoch)>> = BTreeMap::new();
        for (id, u) in &h.record.units {
            if let (UnitStatus::Running, Some(holder)) = (u.status, &u.holder) {
                running
                    .entry(holder.clone())
                    .or_default()
                    .insert((*id, u.epoch));
            }
        }
        let mut asked = BTreeMap::new();
        for (worker, units) in running {
            let token = self.rng.random();
            self.send(worker.clone(), JobMsg::Holds { job, token }, false);
            asked.insert(worker, (token, units));
        }
        if let Some(h) = self.homes.get_mut(&job) {
            h.next_holds_at = now + interval;
            // An unanswered question is replaced: its answer is ignored.
            h.holds_asked = asked;
        }
    }

    /// A worker's answer to [`JobMsg::Holds`]: a unit the record had
    /// running on it when asked, still does under the same epoch, and the
    /// worker does not hold is reissued from its last checkpoint. (A unit
    /// the worker dropped legitimately — finished, handed back, stale —
    /// changed in the record before the worker could drop it.)
    pub(super) fn on_held(
        &mut self,
        now: Instant,
        from: P,
        job: JobId,
        token: u64,
        units: Vec<(UnitId, Epoch)>,
    ) {
        let Some(h) = self.homes.get_mut(&job) else {
            return;
        };
        if !h.is_primary() || h.record.state != JobState::Running {
            return;
        }
        if h.holds_asked.get(&from).is_none_or(|(t, _)| *t != token) {
            return;
        }
        let Some((_, asked)) = h.holds_asked.remove(&from) else {
            return;
        };
        let held: BTreeSet<(UnitId, Epoch)> = units.into_iter().collect();
        let missing: Vec<UnitId> = asked
            .difference(&held)
            .filter(|(id, epoch)| {
                h.record.units.get(id).is_some_and(|u| {
                    u.status == UnitStatus::Running
                        && u.epoch == *epoch
                        && u.holder.as_ref() == Some(&from)
                })
            })
            .map(|(id, _)| *id)
            .collect();
        if missing.is_empty() {
            return;
        }
        for unit in missing {
            self.reissue_unit(now, job, unit, from.clone(), true);
        }
        self.commit(now, job, Vec::new());
    }

    /// Gets `unit`'s last checkpoint back from its holders, then queues it.
    fn restore_unit(&mut self, now: Instant, job: JobId, unit: UnitId) {
        let me = self.me.clone();
        let Some(h) = self.homes.get(&job) else {
            return;
        };
        if h.ready.contains_key(&unit) || h.restoring.contains_key(&unit) {
            return;
        }
        let Some(checkpoint) = h.record.units.get(&unit).and_then(|u| u.checkpoint.clone()) else {
            // Before any divide, the root restarts from the job's parameters.
            let root = (unit == 0 && h.record.stats.units == 1)
                .then(|| self.registry.get(&h.record.app).ok())
                .flatten()
                .and_then(|app| app.init(&h.record.params).ok())
                .map(|root| root.checkpoint());
            if let Some(state) = root {
                if let Some(h) = self.homes.get_mut(&job) {
                    h.ready.insert(unit, state);
                }
                return;
            }
            let reason = if h.record.ft.checkpoints() {
                format!("unit {unit} has no checkpoint to restart from")
            } else {
                format!(
                    "unit {unit} has no state to restart from: it was with the job's lost primary, and the job's fault tolerance is \"none\""
                )
            };
            self.fail_job(now, job, reason);
            return;
        };
        let own = self.pieces.get(job, unit);
        if let Some(state) = decode_pieces(&checkpoint, &own) {
            if let Some(h) = self.homes.get_mut(&job) {
                h.ready.insert(unit, state);
            }
            return;
        }
        let asked: BTreeSet<P> = checkpoint
            .holders
            .iter()
            .filter(|p| **p != me && self.is_live(p))
            .cloned()
            .collect();
        if let Some(h) = self.homes.get_mut(&job) {
            h.restoring.insert(
                unit,
                Restoring {
                    asked: asked.clone(),
                    got: own,
                    since: now,
                    retry_at: now + RESTORE_RETRY,
                },
            );
        }
        for to in asked {
            self.send(to, JobMsg::FetchPieces { job, unit }, false);
        }
        self.try_restore(now, job, unit);
    }

    pub(super) fn on_pieces(
        &mut self,
        now: Instant,
        from: P,
        job: JobId,
        unit: UnitId,
        pieces: Vec<Piece>,
    ) {
        let Some(r) = self
            .homes
            .get_mut(&job)
            .and_then(|h| h.restoring.get_mut(&unit))
        else {
            return;
        };
        if r.asked.remove(&from) {
            r.got.extend(pieces);
        }
        self.try_restore(now, job, unit);
    }

    fn try_restore(&mut self, now: Instant, job: JobId, unit: UnitId) {
        let Some(h) = self.homes.get_mut(&job) else {
            return;
        };
        let Some(checkpoint) = h.record.units.get(&unit).and_then(|u| u.checkpoint.clone()) else {
            return;
        };
        let Some(r) = h.restoring.get(&unit) else {
            return;
        };
        if let Some(state) = decode_pieces(&checkpoint, &r.got) {
            h.restoring.remove(&unit);
            h.ready.insert(unit, state);
            return;
        }
        if r.asked.is_empty() {
            // Holders may only be suspected (a loaded machine, a partition):
            // wait for them to come back, within the job's patience.
            if now.saturating_duration_since(r.since) < self.config.restore_patience {
                return;
            }
            h.restoring.remove(&unit);
            let holders = checkpoint.holders.clone();
            self.event(JobEvent::CheckpointLost {
                job,
                unit,
                holders: holders.clone(),
            });
            let names: Vec<String> = holders.iter().map(|p| p.to_string()).collect();
            self.fail_job(
                now,
                job,
                format!(
                    "the checkpoint of unit {unit} is lost: too few of its holders ({}) are alive",
                    names.join(", ")
                ),
            );
        }
    }

    /// Asks again, every second, the holders of checkpoints being restored
    /// that have not answered (or all of them, if none could be asked: they
    /// were out of the view), and gives up on those waiting longer than the
    /// job's patience.
    fn retry_restores(&mut self, now: Instant, job: JobId) {
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
            if let Some(r) = self
                .homes
                .get_mut(&job)
                .and_then(|h| h.restoring.get_mut(&unit))
            {
                r.retry_at = now + RESTORE_RETRY;
                r.asked.clone_from(&live);
            }
            for to in live {
                self.send(to, JobMsg::FetchPieces { job, unit }, false);
            }
            self.try_restore(now, job, unit);
        }
    }

    /// Membership changed: every record held here adjusts (the home core
    /// already replaced lost members and started elections).
    pub(super) fn reconcile_homes(&mut self, now: Instant) {
        self.homes.refresh(now);
        self.drain_homes(now);
        let jobs: Vec<JobId> = self.homes.keys().copied().collect();
        for job in jobs {
            let Some(h) = self.homes.get(&job) else {
                continue;
            };
            match h.role().clone() {
                Role::Primary => {
                    // Lost workers.
                    let lost: Vec<(UnitId, P)> = h
                        .record
                        .units
                        .iter()
                        .filter(|(_, u)| {
                            matches!(u.status, UnitStatus::Assigned | UnitStatus::Running)
                        })
                        .filter(|(id, u)| self.unit_lost(job, **id, u, &h.record.ft))
                        .filter_map(|(id, u)| u.holder.clone().map(|p| (*id, p)))
                        .collect();
                    let dead_steals: Vec<u64> = h
                        .steals
                        .iter()
                        .filter(|(_, s)| !self.is_live(&s.donor) || !self.is_live(&s.requester))
                        .map(|(id, _)| *id)
                        .collect();
                    let dead_asked: Vec<(UnitId, P)> = h
                        .restoring
                        .iter()
                        .flat_map(|(u, r)| r.asked.iter().map(move |p| (*u, p.clone())))
                        .filter(|(_, p)| !self.is_live(p))
                        .collect();
                    // Pieces promised by lost holders will not come.
                    let dead_holders: Vec<(UnitId, P, UnitId, u8)> = h
                        .staging
                        .iter()
                        .filter_map(|(owner, q)| q.front().map(|s| (owner, s)))
                        .flat_map(|(owner, s)| {
                            s.waiting
                                .iter()
                                .map(move |(p, id, i)| (*owner, p.clone(), *id, *i))
                        })
                        .filter(|(_, p, _, _)| !self.is_live(p))
                        .collect();
                    if let Some(h) = self.homes.get_mut(&job) {
                        for steal in dead_steals {
                            h.steals.remove(&steal);
                        }
                        for (unit, p) in &dead_asked {
                            if let Some(r) = h.restoring.get_mut(unit) {
                                r.asked.remove(p);
                            }
                        }
                        let mut finished = Vec::new();
                        for (owner, p, id, i) in dead_holders {
                            if let Some(front) =
                                h.staging.get_mut(&owner).and_then(|q| q.front_mut())
                            {
                                front.waiting.remove(&(p, id, i));
                                if front.waiting.is_empty() {
                                    finished.push(owner);
                                }
                            }
                        }
                        for owner in finished {
                            self.staged_done(now, job, owner);
                        }
                    }
                    for (unit, _) in dead_asked {
                        self.try_restore(now, job, unit);
                    }
                    for (unit, holder) in lost {
                        self.lose_unit(now, job, unit, holder);
                    }
                    self.commit(now, job, Vec::new());
                }
                Role::Backup { .. } => {}
            }
        }
    }

    /// Leaving: every primary role goes to the next member.
    pub(super) fn hand_over_homes(&mut self, now: Instant) {
        self.homes.hand_over_all(now);
        self.drain_homes(now);
    }

    pub(super) fn homes_handed_over(&self) -> bool {
        self.homes.handed_over()
    }

    /// Periodic work of homes: adverts, progress, steals and assignments
    /// that timed out, retention.
    pub(super) fn home_timeouts(&mut self, now: Instant) {
        // Elections, heartbeats, members joining and leaving.
        self.homes.handle_timeout(now);
        self.drain_homes(now);
        let jobs: Vec<JobId> = self.homes.keys().copied().collect();
        self.persist_records(now);
        for job in jobs {
            self.watch_majority(now, job);
            self.resume_restored(now, job);
            let Some(h) = self.homes.get(&job) else {
                continue;
            };
            if !h.is_primary() || h.record.state != JobState::Running {
                continue;
            }
            if let Some(deadline_ms) = h.record.deadline_ms {
                let elapsed = now.saturating_duration_since(h.started);
                if elapsed >= Duration::from_millis(deadline_ms) {
                    let reason = format!(
                        "cancelled: its deadline of {:.1} s passed",
                        deadline_ms as f64 / 1000.0
                    );
                    self.cancel_job(now, job, reason, Vec::new());
                    continue;
                }
            }
            if h.next_advert_at <= now {
                self.advertise(now, job);
            }
            let Some(h) = self.homes.get(&job) else {
                continue;
            };
            let stale_steals: Vec<u64> = h
                .steals
                .iter()
                .filter(|(_, s)| now.saturating_duration_since(s.since) > self.config.steal_timeout)
                .map(|(id, _)| *id)
                .collect();
            let unconfirmed: Vec<(UnitId, P)> = h
                .assigned_at
                .iter()
                .filter(|(_, at)| now.saturating_duration_since(**at) > self.config.assign_timeout)
                .filter_map(|(id, _)| {
                    h.record
                        .units
                        .get(id)
                        .and_then(|u| u.holder.clone())
                        .map(|p| (*id, p))
                })
                .collect();
            // Queued units that have no state here yet (after a takeover).
            let unready: Vec<UnitId> = h
                .record
                .units
                .iter()
                .filter(|(id, u)| {
                    u.status == UnitStatus::Queued
                        && !h.ready.contains_key(id)
                        && !h.restoring.contains_key(id)
                })
                .map(|(id, _)| *id)
                .collect();
            for steal in stale_steals {
                self.on_steal_declined(now, job, steal);
            }
            for (unit, holder) in unconfirmed {
                self.lose_unit(now, job, unit, holder);
            }
            for unit in unready {
                self.restore_unit(now, job, unit);
            }
            self.retry_restores(now, job);
            let resend: Vec<UnitId> = self.homes.get(&job).map_or(Vec::new(), |h| {
                h.staging
                    .iter()
                    .filter(|(_, q)| {
                        q.front().is_some_and(|s| {
                            !s.waiting.is_empty()
                                && now.saturating_duration_since(s.sent_at)
                                    >= self.config.resend_interval
                        })
                    })
                    .map(|(unit, _)| *unit)
                    .collect()
            });
            for unit in resend {
                self.send_staged_pieces(now, job, unit);
            }
            self.push_queued(now, job);
            self.ask_holders(now, job);
            if let Some(h) = self.homes.get_mut(&job) {
                if h.next_progress_at <= now {
                    h.next_progress_at = now + self.config.progress_interval;
                    let submitter = h.record.submitter.clone();
                    if let Some(view) = self.view(now, job) {
                        self.send(submitter, JobMsg::Status { view }, false);
                    }
                }
            }
            self.commit(now, job, Vec::new());
        }
        // Drop finished records past their retention, and the oldest over the cap.
        let retention = self.config.result_retention;
        let expired: Vec<JobId> = self
            .homes
            .iter()
            .filter(|(_, h)| {
                h.finished
                    .is_some_and(|f| now.saturating_duration_since(f) >= retention)
            })
            .map(|(id, _)| *id)
            .collect();
        for job in expired {
            self.homes.remove(&job);
            self.pieces.forget_job(job);
            self.outputs.push_back(JobOutput::Forget { job });
        }
        // Pieces of jobs this peer no longer holds a record of.
        if let Some(before) = now.checked_sub(retention) {
            for job in self.pieces.quiet_since(before) {
                if !self.homes.contains_key(&job) {
                    self.pieces.forget_job(job);
                    self.outputs.push_back(JobOutput::Forget { job });
                }
            }
        }
        while self.homes.len() > self.config.max_retained_results {
            let oldest = self
                .homes
                .iter()
                .filter(|(_, h)| h.finished.is_some())
                .min_by_key(|(_, h)| h.finished)
                .map(|(id, _)| *id);
            match oldest {
                Some(id) => {
                    self.homes.remove(&id);
                    self.pieces.forget_job(id);
                    self.outputs.push_back(JobOutput::Forget { job: id });
                }
                None => break,
            }
        }
    }

    /// For diagnostics: the units of `job`'s record here that are not
    /// done, each described in one line (status, holder, epoch, report
    /// sequence, and whether the primary has its state or restores it).
    pub fn open_units(&self, job: JobId) -> Vec<(UnitId, String)> {
        let Some(h) = self.homes.get(&job) else {
            return Vec::new();
        };
        h.record
            .units
            .iter()
            .filter(|(_, u)| u.status != UnitStatus::Done)
            .map(|(id, u)| {
                let line = format!(
                    "{:?} on {:?} epoch {} seq {} ready {} restoring {} staged {} (first waits for {:?})",
                    u.status,
                    u.holder,
                    u.epoch,
                    u.seq,
                    h.ready.contains_key(id),
                    h.restoring.contains_key(id),
                    h.staging.get(id).map_or(0, |q| q.len()),
                    h.staging
                        .get(id)
                        .and_then(|q| q.front())
                        .map(|s| (s.seq, s.waiting.len())),
                );
                (*id, line)
            })
            .collect()
    }

    /// A job's snapshot, if this peer holds its record (as primary or
    /// backup).
    pub fn view(&self, now: Instant, job: JobId) -> Option<JobView<P>> {
        let h = self.homes.get(&job)?;
        let record = &h.record;
        Some(JobView {
            job,
            app: record.app.clone(),
            params: record.params.clone(),
            home: h.primary().cloned().unwrap_or_else(|| self.me.clone()),
            home_members: h.members().to_vec(),
            submitter: record.submitter.clone(),
            ft: record.ft,
            state: record.state.clone(),
            stats: record.stats.clone(),
            contributions: record
                .contributions
                .iter()
                .map(|(p, c)| (p.clone(), c.clone()))
                .collect(),
            shared: record.shared.clone(),
            elapsed_s: h
                .finished
                .unwrap_or(now)
                .saturating_duration_since(h.started)
                .as_secs_f64(),
        })
    }

    /// Snapshots of every job whose primary is this peer.
    pub fn homed_views(&self, now: Instant) -> Vec<JobView<P>> {
        self.homes
            .iter()
            .filter(|(_, h)| h.is_primary())
            .filter_map(|(job, _)| self.view(now, *job))
            .collect()
    }
}
