//! An object as its home keeps it: the last checkpoint and, under
//! pessimistic message logging, every delivery served since (seed 000 §6.1,
//! seed 004 §4.2). A [`Replicated`] state of the generic home: the primary
//! runs the live object and logs each delivery before the reply and the
//! calls it made are released (they are the update's effects); backups keep
//! the checkpoint and the log as data. A member that becomes primary
//! rebuilds the live object by restoring the checkpoint and replaying the
//! log: the same state, and the same calls, which their callees answer from
//! their caches instead of running them again.

use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::activation::{Activation, Delivery, ObjectCheckpoint, Served};
use super::id::{CallId, ObjectUri};
use super::model::{CallError, ObjectTypes, Outgoing};
use crate::ft::{FaultTolerance, FtProtocol};
use crate::home::Replicated;

/// Deliveries logged before the primary checkpoints, so that the log, a
/// replay and a snapshot for a new backup stay bounded.
pub const MAX_LOG_ENTRIES: usize = 1024;

/// Bytes of logged deliveries before the primary checkpoints.
pub const MAX_LOG_BYTES: usize = 8 << 20;

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
        }
    }
}

impl ObjectProtocol {
    /// Whether deliveries are logged.
    pub fn logs(&self) -> bool {
        matches!(self, ObjectProtocol::Pml { .. })
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
    },
    /// The object was deleted.
    Deleted,
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
        let first = ObjectChange::Checkpointed {
            covers: 0,
            checkpoint: checkpoint.clone(),
        };
        ObjectRecord {
            uri,
            protocol,
            covers: 0,
            checkpoint,
            log: Vec::new(),
            log_bytes: 0,
            deleted: false,
            changes: vec![first],
        }
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
        let logged = self.protocol.logs().then(|| delivery.clone());
        let call = match &delivery {
            Delivery::Call { id, .. } => Some(*id),
            Delivery::Reply { .. } => None,
        };
        let served = live.deliver(delivery);
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
    /// includes every delivery served so far) and drops the log.
    pub fn checkpoint(&mut self, live: &Activation) {
        self.covers = self.deliveries();
        self.checkpoint = live.checkpoint();
        self.log.clear();
        self.log_bytes = 0;
        self.changes.push(ObjectChange::Checkpointed {
            covers: self.covers,
            checkpoint: self.checkpoint.clone(),
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
            ObjectChange::Checkpointed { covers, checkpoint } => {
                let dropped = (covers - self.covers) as usize;
                self.log.drain(..dropped.min(self.log.len()));
                self.log_bytes = self.log.iter().map(delivery_bytes).sum();
                self.covers = covers;
                self.checkpoint = checkpoint;
            }
            ObjectChange::Deleted => self.deleted = true,
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
        }
    }

    fn restore(_now: Instant, snapshot: ObjectSnapshot) -> Option<Self> {
        if snapshot.log.len() > 2 * MAX_LOG_ENTRIES {
            return None;
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
                ObjectChange::Deleted => {}
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
        self.protocol.logs()
    }
}
