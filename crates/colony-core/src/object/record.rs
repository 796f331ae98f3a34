//! An object as its home keeps it: the last checkpoint and, under
//! pessimistic message logging, every delivery served since (seed 000 §6.1,
//! seed 004 §4.2). A [`Replicated`] state of the generic home: the primary
//! runs the live object and logs each delivery before the reply and the
//! calls it made are released (they are the update's effects); backups keep
//! the checkpoint and the log as data. A member that becomes primary
//! rebuilds the live object by restoring the checkpoint and replaying the
//! log: the same state, and the same calls, which their callees answer from
//! their caches instead of running them again.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::activation::{Activation, Delivery, ObjectCheckpoint, Served};
use super::id::{CallId, Guid, ObjectUri};
use super::model::{CallError, ObjectTypes, Outgoing};
use crate::ft::{FaultTolerance, FtProtocol};
use crate::home::Replicated;

/// Deliveries logged before the primary checkpoints, so that the log, a
/// replay and a snapshot for a new backup stay bounded.
pub const MAX_LOG_ENTRIES: usize = 1024;

/// Bytes of logged deliveries before the primary checkpoints.
pub const MAX_LOG_BYTES: usize = 8 << 20;

/// Indexed checkpoints a `cic` object keeps, newest last: a rollback to a
/// line older than the oldest kept restores the oldest kept (and is
/// counted as such). Indexes spread with messages, so the objects of one
/// application stay within a few indexes of each other.
pub const MAX_LINE_CHECKPOINTS: usize = 16;

/// Rollbacks a `cic` object remembers (the most recent epochs); older
/// ones are taken as known to everyone.
pub const MAX_ROLLBACKS_KEPT: usize = 16;

/// Objects a `cic` object remembers exchanging messages with: those its
/// rollbacks are sent to.
pub const MAX_MET: usize = 4_096;

/// The rollbacks an object applied: epoch → recovery line (the lowest line
/// of that epoch heard of).
pub type Rollbacks = BTreeMap<u64, u64>;

/// What every message of a `cic` object carries (communication-induced
/// checkpointing, seed 000 §6.1): who sent it, the index of the sender's
/// latest checkpoint — a receiver whose index is lower checkpoints before
/// it delivers the message, so that the checkpoints of one index form a
/// consistent global state — and the rollbacks the sender applied, so that
/// a message from a state a rollback discarded is recognised and dropped.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CicStamp {
    /// The sending object.
    pub sender: Guid,
    /// Its checkpoint index.
    pub index: u64,
    /// The rollbacks it applied.
    pub rollbacks: Rollbacks,
}

/// The rollbacks in `theirs` that `ours` lacks, or knows with a higher
/// line: those the holder of `ours` has yet to apply. Epochs below the
/// oldest either side keeps are taken as known to both.
pub fn rollbacks_missing(ours: &Rollbacks, theirs: &Rollbacks) -> Vec<(u64, u64)> {
    let floor = [ours, theirs]
        .iter()
        .filter(|r| r.len() >= MAX_ROLLBACKS_KEPT)
        .filter_map(|r| r.keys().next().copied())
        .max()
        .unwrap_or(0);
    theirs
        .range(floor..)
        .filter(|(epoch, line)| ours.get(epoch).is_none_or(|mine| mine > line))
        .map(|(e, l)| (*e, *l))
        .collect()
}

/// How an object survives the loss of its peer, chosen per virtual node in
/// the deployment descriptor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ObjectProtocol {
    /// It dies with its peer; calls then fail with "object lost".
    None,
    /// Its checkpoint is replicated on its home every `ttc_ms`; after a
    /// crash it restarts from it and the calls served since are lost.
    Checkpoint {
        /// Milliseconds between checkpoints.
        ttc_ms: u64,
    },
    /// Every delivery is logged at a majority of its home (on disk) before
    /// its effects leave: a crash loses nothing, and a call acknowledged to
    /// its caller ran exactly once. Checkpoints every `ttc_ms` bound the
    /// log.
    Pml {
        /// Milliseconds between checkpoints.
        ttc_ms: u64,
    },
    /// Communication-induced checkpointing ([`CicStamp`]): a checkpoint at
    /// least every `ttc_ms`, and forced ones before deliveries that need
    /// them; a crash that lost served deliveries rolls every object that
    /// depends on them back to the recovery line of the lost object's
    /// last checkpoint, and the application goes on from that consistent
    /// state.
    Cic {
        /// Milliseconds between basic checkpoints.
        ttc_ms: u64,
    },
}

impl From<&FaultTolerance> for ObjectProtocol {
    /// The protocol a virtual node's fault-tolerance service gives the
    /// objects created there (seed 000 §6.1: chosen at deployment): its
    /// `protocol` (`none`, `checkpoint`, `pml`) with its TTC. Storage and
    /// home size are the objects core's (whole copies on a home of
    /// [`ObjectsConfig::home_size`](super::ObjectsConfig::home_size)).
    fn from(ft: &FaultTolerance) -> ObjectProtocol {
        let ttc_ms = u64::try_from(ft.ttc.as_millis()).unwrap_or(u64::MAX);
        match ft.protocol {
            FtProtocol::None => ObjectProtocol::None,
            FtProtocol::Checkpoint => ObjectProtocol::Checkpoint { ttc_ms },
            FtProtocol::Pml => ObjectProtocol::Pml { ttc_ms },
            FtProtocol::Cic => ObjectProtocol::Cic { ttc_ms },
        }
    }
}

impl ObjectProtocol {
    /// Whether deliveries are logged.
    pub fn logs(&self) -> bool {
        matches!(self, ObjectProtocol::Pml { .. })
    }

    /// Whether checkpoints are communication-induced.
    pub fn cic(&self) -> bool {
        matches!(self, ObjectProtocol::Cic { .. })
    }

    /// Milliseconds between (basic) checkpoints; `None` under `none`.
    pub fn ttc_ms(&self) -> Option<u64> {
        match *self {
            ObjectProtocol::None => None,
            ObjectProtocol::Checkpoint { ttc_ms }
            | ObjectProtocol::Pml { ttc_ms }
            | ObjectProtocol::Cic { ttc_ms } => Some(ttc_ms),
        }
    }

    /// Its name, as descriptors spell it.
    pub fn name(&self) -> &'static str {
        match self {
            ObjectProtocol::None => "none",
            ObjectProtocol::Checkpoint { .. } => "checkpoint",
            ObjectProtocol::Pml { .. } => "pml",
            ObjectProtocol::Cic { .. } => "cic",
        }
    }
}

/// A change to a record, as the primary sends it to its backups.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ObjectChange {
    /// Delivery number `index` (counted from the object's creation).
    Logged {
        /// Its number.
        index: u64,
        /// The delivery.
        delivery: Delivery,
    },
    /// A checkpoint taken after the first `covers` deliveries: the log
    /// before them is dropped.
    Checkpointed {
        /// Deliveries it includes.
        covers: u64,
        /// The checkpoint.
        checkpoint: ObjectCheckpoint,
        /// Its index (`cic`; 0 otherwise).
        index: u64,
    },
    /// The object was deleted.
    Deleted,
    /// `cic`: the object served a delivery after its last checkpoint, so
    /// a crash now loses state others may have seen (replicated before
    /// that delivery's effects leave).
    Served,
    /// `cic`: the object exchanged its first message with `0`.
    Met(Guid),
    /// `cic`: the object rolled back to the first checkpoint it kept whose
    /// index is at least `line`.
    RolledBack {
        /// The rollback's epoch.
        epoch: u64,
        /// Its recovery line.
        line: u64,
    },
}

/// What a `cic` record keeps beyond the last checkpoint.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CicRecord {
    /// The index of the last checkpoint.
    pub index: u64,
    /// The checkpoints kept, oldest first, with their indexes (the last
    /// is the record's checkpoint).
    pub line: Vec<(u64, ObjectCheckpoint)>,
    /// The rollbacks applied.
    pub rollbacks: Rollbacks,
    /// The objects it exchanged messages with.
    pub met: BTreeSet<Guid>,
    /// Whether it served a delivery since its last checkpoint.
    pub dirty: bool,
}

impl CicRecord {
    /// A checkpoint of index `index` was taken.
    fn checkpointed(&mut self, index: u64, checkpoint: ObjectCheckpoint) {
        self.index = index;
        self.line.push((index, checkpoint));
        if self.line.len() > MAX_LINE_CHECKPOINTS {
            self.line.remove(0);
        }
        self.dirty = false;
    }

    /// Applies rollback `epoch` to `line`: the checkpoint to restore, if
    /// the state goes back.
    fn roll_back(&mut self, epoch: u64, line: u64) -> Option<ObjectCheckpoint> {
        let known = self.rollbacks.entry(epoch).or_insert(line);
        *known = (*known).min(line);
        while self.rollbacks.len() > MAX_ROLLBACKS_KEPT {
            self.rollbacks.pop_first();
        }
        if self.index < line {
            // Nothing it did since its last checkpoint is past the line.
            return None;
        }
        let first = self
            .line
            .iter()
            .position(|(index, _)| *index >= line)
            .unwrap_or(0);
        self.line.truncate(first + 1);
        let (index, checkpoint) = self.line.last()?.clone();
        self.index = index;
        self.dirty = false;
        Some(checkpoint)
    }
}

/// The whole record, for a new backup.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectSnapshot {
    /// The object.
    pub uri: ObjectUri,
    /// Its protocol.
    pub protocol: ObjectProtocol,
    /// Deliveries the checkpoint includes.
    pub covers: u64,
    /// The last checkpoint.
    pub checkpoint: ObjectCheckpoint,
    /// Deliveries since, in order.
    pub log: Vec<Delivery>,
    /// Whether the object was deleted.
    pub deleted: bool,
    /// `cic` only: indexes, kept checkpoints, rollbacks.
    pub cic: Option<CicRecord>,
}

/// What the primary releases once the update that made it is held by a
/// majority: the answers and calls of the deliveries it logged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ObjectEffect {
    /// The reply to a call.
    Reply {
        /// The call.
        call: CallId,
        /// Its outcome.
        reply: Result<Vec<u8>, CallError>,
        /// Its [`Served::ordinal`] (0 for a creation or deletion).
        ordinal: u64,
    },
    /// A call or creation the object made.
    Send(Outgoing),
    /// A call refused at once; to deliver back to the object.
    Bounced {
        /// The call.
        call: CallId,
        /// Why.
        error: CallError,
    },
}

/// An object's record. See the module docs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectRecord {
    uri: ObjectUri,
    protocol: ObjectProtocol,
    covers: u64,
    checkpoint: ObjectCheckpoint,
    log: Vec<Delivery>,
    log_bytes: usize,
    deleted: bool,
    /// `cic` only.
    cic: Option<CicRecord>,
    /// Changes not yet taken for replication (primary).
    changes: Vec<ObjectChange>,
}

fn delivery_bytes(delivery: &Delivery) -> usize {
    match delivery {
        Delivery::Call { request, .. } => request.len() + 32,
        Delivery::Reply { reply, .. } => reply.as_ref().map_or(64, Vec::len) + 32,
    }
}

impl ObjectRecord {
    /// The record of a new object, from its first checkpoint (taken right
    /// after its creation).
    pub fn new(
        uri: ObjectUri,
        protocol: ObjectProtocol,
        checkpoint: ObjectCheckpoint,
    ) -> ObjectRecord {
        ObjectRecord::new_from(uri, protocol, checkpoint, None)
    }

    /// The record of a new object created by a message carrying `stamp`
    /// (`cic`: the object starts at its creator's index, knowing its
    /// creator's rollbacks, and has met its creator).
    pub fn new_from(
        uri: ObjectUri,
        protocol: ObjectProtocol,
        checkpoint: ObjectCheckpoint,
        stamp: Option<&CicStamp>,
    ) -> ObjectRecord {
        let index = stamp.map_or(0, |s| s.index);
        let first = ObjectChange::Checkpointed {
            covers: 0,
            checkpoint: checkpoint.clone(),
            index,
        };
        let cic = protocol.cic().then(|| {
            let mut cic = CicRecord {
                rollbacks: stamp.map(|s| s.rollbacks.clone()).unwrap_or_default(),
                met: stamp
                    .map(|s| BTreeSet::from([s.sender]))
                    .unwrap_or_default(),
                ..CicRecord::default()
            };
            cic.checkpointed(index, checkpoint.clone());
            cic
        });
        // What the stamp brought is in the snapshot a new backup gets.
        let changes = vec![first];
        ObjectRecord {
            uri,
            protocol,
            covers: 0,
            checkpoint,
            log: Vec::new(),
            log_bytes: 0,
            deleted: false,
            cic,
            changes,
        }
    }

    /// `cic`: what this object's messages carry now.
    pub fn stamp(&self) -> Option<CicStamp> {
        self.cic.as_ref().map(|c| CicStamp {
            sender: self.uri.guid,
            index: c.index,
            rollbacks: c.rollbacks.clone(),
        })
    }

    /// `cic`: the kept checkpoints, rollbacks and objects met.
    pub fn cic(&self) -> Option<&CicRecord> {
        self.cic.as_ref()
    }

    /// `cic`: a message stamped `stamp` is about to be delivered. Records
    /// its sender as met, and checkpoints first (a forced checkpoint) if
    /// the sender's index is ahead: `true` if it did. The caller has dealt
    /// with rollbacks already.
    pub fn admit(&mut self, live: &Activation, stamp: &CicStamp) -> bool {
        let Some(cic) = self.cic.as_mut() else {
            return false;
        };
        if cic.met.len() < MAX_MET && cic.met.insert(stamp.sender) {
            self.changes.push(ObjectChange::Met(stamp.sender));
        }
        if stamp.index <= cic.index {
            return false;
        }
        self.take_checkpoint(live, stamp.index);
        true
    }

    /// `cic`: applies rollback `epoch` to `line`; the checkpoint the live
    /// object is to restart from, if its state goes back. Nothing if the
    /// rollback was applied already.
    pub fn roll_back(&mut self, epoch: u64, line: u64) -> Option<ObjectCheckpoint> {
        if self.knows_rollback(epoch, line) {
            return None;
        }
        let cic = self.cic.as_mut()?;
        self.changes.push(ObjectChange::RolledBack { epoch, line });
        let checkpoint = cic.roll_back(epoch, line)?;
        self.checkpoint = checkpoint.clone();
        Some(checkpoint)
    }

    /// `cic`: whether rollback `epoch` to `line` (or below) was applied.
    pub fn knows_rollback(&self, epoch: u64, line: u64) -> bool {
        self.cic
            .as_ref()
            .is_some_and(|c| c.rollbacks.get(&epoch).is_some_and(|known| *known <= line))
    }

    /// `cic`: whether the object served a delivery after its last
    /// replicated checkpoint, so that a crash lost state whose effects
    /// others may hold.
    pub fn dirty(&self) -> bool {
        self.cic.as_ref().is_some_and(|c| c.dirty)
    }

    /// The object.
    pub fn uri(&self) -> &ObjectUri {
        &self.uri
    }

    /// Its protocol.
    pub fn protocol(&self) -> ObjectProtocol {
        self.protocol
    }

    /// Whether it was deleted.
    pub fn deleted(&self) -> bool {
        self.deleted
    }

    /// Deliveries served since its creation, as far as this record knows.
    pub fn deliveries(&self) -> u64 {
        self.covers + self.log.len() as u64
    }

    /// Deliveries the last checkpoint includes.
    pub fn covers(&self) -> u64 {
        self.covers
    }

    /// Deliveries logged since the last checkpoint.
    pub fn logged(&self) -> usize {
        self.log.len()
    }

    /// Primary: serves `delivery` on the live object and records it as the
    /// protocol asks; what must leave once the record is replicated.
    pub fn serve(&mut self, live: &mut Activation, delivery: Delivery) -> Vec<ObjectEffect> {
        let served = live.deliver(delivery.clone());
        self.record(delivery, served)
    }

    /// Primary: records `delivery`, which the live object served as
    /// `served` (on another thread: [`crate::object::ObjectRun`]), as the
    /// protocol asks; what must leave once the record is replicated.
    pub fn record(&mut self, delivery: Delivery, served: Served) -> Vec<ObjectEffect> {
        let call = match &delivery {
            Delivery::Call { id, .. } => Some(*id),
            Delivery::Reply { .. } => None,
        };
        let logged = self.protocol.logs().then_some(delivery);
        if let Some(cic) = self.cic.as_mut().filter(|_| !served.repeat) {
            if !cic.dirty {
                cic.dirty = true;
                self.changes.push(ObjectChange::Served);
            }
            for out in &served.outgoing {
                let to = match out {
                    Outgoing::Call { to, .. } => to.guid,
                    Outgoing::Create { uri, .. } => uri.guid,
                };
                if cic.met.len() < MAX_MET && cic.met.insert(to) {
                    self.changes.push(ObjectChange::Met(to));
                }
            }
        }
        if let Some(delivery) = logged.filter(|_| !served.repeat) {
            let index = self.deliveries();
            self.log_bytes += delivery_bytes(&delivery);
            self.log.push(delivery.clone());
            self.changes.push(ObjectChange::Logged { index, delivery });
        }
        effects_of(call, served)
    }

    /// Whether the log is long enough that the primary should checkpoint
    /// now, whatever the time since the last one.
    pub fn log_full(&self) -> bool {
        self.log.len() >= MAX_LOG_ENTRIES || self.log_bytes >= MAX_LOG_BYTES
    }

    /// Primary: replaces the checkpoint by the live object's state (which
    /// includes every delivery served so far) and drops the log. Under
    /// `cic` a basic checkpoint: the next index, and none if nothing was
    /// served since the last (the same state under a new index would push
    /// the checkpoints a rollback to an older line needs out of the
    /// [`MAX_LINE_CHECKPOINTS`] kept: an idle object fills them in 8 s).
    pub fn checkpoint(&mut self, live: &Activation) {
        if self.cic.as_ref().is_some_and(|c| !c.dirty) {
            return;
        }
        let index = self.cic.as_ref().map_or(0, |c| c.index + 1);
        self.take_checkpoint(live, index);
    }

    fn take_checkpoint(&mut self, live: &Activation, index: u64) {
        self.covers = self.deliveries();
        self.checkpoint = live.checkpoint();
        self.log.clear();
        self.log_bytes = 0;
        if let Some(cic) = self.cic.as_mut() {
            cic.checkpointed(index, self.checkpoint.clone());
        }
        self.changes.push(ObjectChange::Checkpointed {
            covers: self.covers,
            checkpoint: self.checkpoint.clone(),
            index,
        });
    }

    /// Primary: marks the object deleted.
    pub fn delete(&mut self) {
        self.deleted = true;
        self.changes.push(ObjectChange::Deleted);
    }

    /// The live object rebuilt from the checkpoint and the log, with what
    /// the replay sent again (callees answer those from their caches; the
    /// replies to calls already answered are not released twice, since
    /// each caller's own cache or counter recognises them).
    pub fn recover(
        &self,
        types: &ObjectTypes,
    ) -> Result<(Activation, Vec<ObjectEffect>), CallError> {
        let mut live = Activation::restore(types, self.uri.clone(), self.checkpoint.clone())?;
        let mut effects = Vec::new();
        for delivery in &self.log {
            let call = match delivery {
                Delivery::Call { id, .. } => Some(*id),
                Delivery::Reply { .. } => None,
            };
            effects.extend(effects_of(call, live.deliver(delivery.clone())));
        }
        Ok((live, effects))
    }

    /// Applies a change [`Replicated::apply_delta`] checked.
    fn apply_change(&mut self, change: ObjectChange) {
        match change {
            ObjectChange::Logged { delivery, .. } => {
                self.log_bytes += delivery_bytes(&delivery);
                self.log.push(delivery);
            }
            ObjectChange::Checkpointed {
                covers,
                checkpoint,
                index,
            } => {
                let dropped = (covers - self.covers) as usize;
                self.log.drain(..dropped.min(self.log.len()));
                self.log_bytes = self.log.iter().map(delivery_bytes).sum();
                self.covers = covers;
                if let Some(cic) = self.cic.as_mut() {
                    cic.checkpointed(index, checkpoint.clone());
                }
                self.checkpoint = checkpoint;
            }
            ObjectChange::Deleted => self.deleted = true,
            ObjectChange::Served => {
                if let Some(cic) = self.cic.as_mut() {
                    cic.dirty = true;
                }
            }
            ObjectChange::Met(guid) => {
                if let Some(cic) = self.cic.as_mut().filter(|c| c.met.len() < MAX_MET) {
                    cic.met.insert(guid);
                }
            }
            ObjectChange::RolledBack { epoch, line } => {
                if let Some(checkpoint) = self.cic.as_mut().and_then(|c| c.roll_back(epoch, line)) {
                    self.checkpoint = checkpoint;
                }
            }
        }
    }
}

fn effects_of(call: Option<CallId>, served: Served) -> Vec<ObjectEffect> {
    let mut effects = Vec::new();
    if let (Some(call), Some(reply)) = (call, served.reply) {
        effects.push(ObjectEffect::Reply {
            call,
            reply,
            ordinal: served.ordinal,
        });
    }
    effects.extend(served.outgoing.into_iter().map(ObjectEffect::Send));
    effects.extend(
        served
            .bounced
            .into_iter()
            .map(|(call, error)| ObjectEffect::Bounced { call, error }),
    );
    effects
}

impl Replicated for ObjectRecord {
    type Snapshot = ObjectSnapshot;
    type Delta = Vec<ObjectChange>;
    type Effect = ObjectEffect;

    fn snapshot(&self, _now: Instant) -> ObjectSnapshot {
        ObjectSnapshot {
            uri: self.uri.clone(),
            protocol: self.protocol,
            covers: self.covers,
            checkpoint: self.checkpoint.clone(),
            log: self.log.clone(),
            deleted: self.deleted,
            cic: self.cic.clone(),
        }
    }

    fn restore(_now: Instant, snapshot: ObjectSnapshot) -> Option<Self> {
        if snapshot.log.len() > 2 * MAX_LOG_ENTRIES {
            return None;
        }
        // A cic record must come with its kept checkpoints, within bounds.
        match &snapshot.cic {
            Some(cic)
                if !snapshot.protocol.cic()
                    || cic.line.is_empty()
                    || cic.line.len() > MAX_LINE_CHECKPOINTS
                    || cic.met.len() > MAX_MET
                    || cic.rollbacks.len() > MAX_ROLLBACKS_KEPT =>
            {
                return None
            }
            None if snapshot.protocol.cic() => return None,
            _ => {}
        }
        let log_bytes = snapshot.log.iter().map(delivery_bytes).sum();
        Some(ObjectRecord {
            uri: snapshot.uri,
            protocol: snapshot.protocol,
            covers: snapshot.covers,
            checkpoint: snapshot.checkpoint,
            log: snapshot.log,
            log_bytes,
            deleted: snapshot.deleted,
            cic: snapshot.cic,
            changes: Vec::new(),
        })
    }

    fn apply_snapshot(&mut self, now: Instant, snapshot: ObjectSnapshot) -> bool {
        if snapshot.uri != self.uri {
            return false;
        }
        match ObjectRecord::restore(now, snapshot) {
            Some(record) => {
                *self = record;
                true
            }
            None => false,
        }
    }

    fn take_delta(&mut self, force: bool) -> Option<Vec<ObjectChange>> {
        if self.changes.is_empty() && !force {
            return None;
        }
        Some(std::mem::take(&mut self.changes))
    }

    fn apply_delta(&mut self, _now: Instant, delta: Vec<ObjectChange>) -> bool {
        // Checked first: a delta is applied whole or not at all, and one
        // that does not fit (a missed update) asks for a snapshot.
        let (mut covers, mut deliveries) = (self.covers, self.deliveries());
        for change in &delta {
            match change {
                ObjectChange::Logged { index, .. } if *index == deliveries => deliveries += 1,
                ObjectChange::Checkpointed { covers: c, .. }
                    if (covers..=deliveries).contains(c) =>
                {
                    covers = *c
                }
                ObjectChange::Deleted
                | ObjectChange::Served
                | ObjectChange::Met(_)
                | ObjectChange::RolledBack { .. } => {}
                _ => return false,
            }
        }
        if deliveries - covers > 2 * MAX_LOG_ENTRIES as u64 {
            return false;
        }
        for change in delta {
            self.apply_change(change);
        }
        true
    }

    fn changes_nothing(delta: &Vec<ObjectChange>) -> bool {
        delta.is_empty()
    }

    fn durable(&self) -> bool {
        // Only `none` lives in memory alone: a checkpoint on the disks of
        // the home survives the home's peers crashing together.
        self.protocol != ObjectProtocol::None
    }
}
