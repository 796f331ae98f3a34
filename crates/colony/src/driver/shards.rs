//! The driver's side of the erasure-coded shards this peer holds for
//! writers: each one written to disk (group-committed with everything else
//! the store writes) before the space core is told it is durable and the
//! writer is answered, deleted when the core drops it, and read back after
//! a restart. At most [`SHARD_WRITES_IN_FLIGHT`] wait for the disk at once;
//! more wait in a backlog bounded by the shards the core holds (which its
//! room in the space bounds).

use std::collections::VecDeque;
use std::time::Instant;

use colony_core::node::{Node, NodeInput, NodeOutput};
use colony_core::space::{ObjectKey, Shard, ShardId};
use colony_core::wire;
use colony_store::{CheckpointStore, StoreError};
use libp2p::PeerId;
use tokio::sync::mpsc;
use tracing::{info, warn};

use super::Driver;

/// Shard writes and deletions waiting for the disk at most; their
/// completions fit the bounded channel that brings them back.
pub(crate) const SHARD_WRITES_IN_FLIGHT: usize = 64;

/// A shard's id on disk: write, stripe (big-endian), index.
fn id_bytes(id: &ShardId) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(21);
    bytes.extend_from_slice(&id.write.to_be_bytes());
    bytes.extend_from_slice(&id.stripe.to_be_bytes());
    bytes.push(id.index);
    bytes
}

/// A shard id read back from disk.
fn id_from_bytes(bytes: &[u8]) -> Option<ShardId> {
    let (write, rest) = bytes.split_first_chunk::<16>()?;
    let (stripe, rest) = rest.split_first_chunk::<4>()?;
    let [index] = rest else { return None };
    Some(ShardId {
        write: u128::from_be_bytes(*write),
        stripe: u32::from_be_bytes(*stripe),
        index: *index,
    })
}

/// What to do on disk.
enum ShardDisk {
    Put { id: ShardId, bytes: Vec<u8> },
    Remove { ids: Vec<ShardId> },
}

/// A shard write or deletion finished.
pub(crate) struct ShardWritten {
    /// The shard written (`None`: a deletion).
    id: Option<ShardId>,
    result: Result<(), StoreError>,
}

/// The driver's state for shards.
pub(crate) struct ShardIo {
    done_tx: mpsc::Sender<ShardWritten>,
    pub(crate) done_rx: mpsc::Receiver<ShardWritten>,
    in_flight: usize,
    backlog: VecDeque<ShardDisk>,
    /// Shard writes or deletions that failed.
    pub(crate) errors: u64,
}

impl ShardIo {
    pub(crate) fn new() -> ShardIo {
        let (done_tx, done_rx) = mpsc::channel(SHARD_WRITES_IN_FLIGHT);
        ShardIo {
            done_tx,
            done_rx,
            in_flight: 0,
            backlog: VecDeque::new(),
            errors: 0,
        }
    }
}

impl Driver {
    /// Executes a shard output of the node.
    pub(super) fn on_shard_output(&mut self, out: NodeOutput<PeerId>) {
        let disk = match out {
            NodeOutput::PersistShard { key, id, shard } => {
                match wire::encode(&(key, shard), usize::MAX) {
                    Ok(bytes) => ShardDisk::Put { id, bytes },
                    Err(error) => {
                        // Never confirmed: the writer's request times out.
                        self.shards.errors += 1;
                        warn!(%error, "shard not encoded; not written");
                        return;
                    }
                }
            }
            NodeOutput::UnpersistShards { ids } => ShardDisk::Remove { ids },
            _ => return,
        };
        self.shards.backlog.push_back(disk);
        self.drain_shard_backlog();
    }

    /// Hands backlogged shard writes to the store while there is room.
    pub(super) fn drain_shard_backlog(&mut self) {
        while self.shards.in_flight < SHARD_WRITES_IN_FLIGHT {
            let Some(disk) = self.shards.backlog.pop_front() else {
                return;
            };
            let tx = self.shards.done_tx.clone();
            let id = match &disk {
                ShardDisk::Put { id, .. } => Some(*id),
                ShardDisk::Remove { .. } => None,
            };
            // Never full: at most SHARD_WRITES_IN_FLIGHT completions are due.
            let done: colony_store::Done = Box::new(move |result| {
                let _ = tx.try_send(ShardWritten { id, result });
            });
            let queued = match &disk {
                ShardDisk::Put { id, bytes } => {
                    self.checkpoints
                        .put_shard(id_bytes(id), bytes.clone(), done)
                }
                ShardDisk::Remove { ids } => self
                    .checkpoints
                    .remove_shards(ids.iter().map(id_bytes).collect(), done),
            };
            match queued {
                Ok(()) => self.shards.in_flight += 1,
                Err(StoreError::Backpressure { .. }) => {
                    // Tried again when a write completes.
                    self.shards.backlog.push_front(disk);
                    return;
                }
                Err(error) => {
                    self.shards.errors += 1;
                    if let Some(suppressed) = self.may_warn(None, "shard writes stopped") {
                        warn!(%error, suppressed, "shard not written: the store cannot take it");
                    }
                }
            }
        }
    }

    /// A shard write finished: the core is told it is durable.
    pub(super) fn on_shard_written(&mut self, done: ShardWritten) {
        self.shards.in_flight = self.shards.in_flight.saturating_sub(1);
        match (done.id, done.result) {
            (Some(id), Ok(())) => self
                .node
                .handle(Instant::now(), NodeInput::ShardDurable { id }),
            (None, Ok(())) => {}
            (_, Err(error)) => {
                self.shards.errors += 1;
                warn!(%error, "shard write or deletion failed");
            }
        }
        self.drain_shard_backlog();
    }
}

/// Reads the shards a previous run left on disk and gives them back to the
/// node; one that does not decode is deleted. Returns how many were
/// restored.
pub(crate) fn restore_shards(node: &mut Node<PeerId>, store: &CheckpointStore) -> usize {
    let stored = match store.shards() {
        Ok(stored) => stored,
        Err(error) => {
            warn!(%error, "cannot read the shards on disk; starting without them");
            return 0;
        }
    };
    let corrupt = store.stats().shards_corrupt;
    if corrupt > 0 {
        warn!(
            corrupt,
            "shards failed their checksum and were dropped; readers of their values use the others"
        );
    }
    let mut restored = 0;
    let mut unusable = Vec::new();
    for (id_on_disk, bytes) in stored {
        let decoded = id_from_bytes(&id_on_disk)
            .zip(wire::decode::<(ObjectKey, Shard)>(&bytes, usize::MAX).ok());
        match decoded {
            Some((id, (key, shard))) if shard.index == id.index => {
                node.restore_shard(key, id, shard);
                restored += 1;
            }
            _ => unusable.push(id_on_disk),
        }
    }
    if !unusable.is_empty() {
        warn!(
            count = unusable.len(),
            "shards on disk do not decode; deleted"
        );
        if let Err(error) = store.remove_shards(unusable, Box::new(|_| {})) {
            warn!(%error, "shards not deleted");
        }
    }
    if restored > 0 {
        info!(shards = restored, "shards found on disk: held again");
    }
    restored
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_ids_round_trip_through_their_disk_form() {
        let id = ShardId {
            write: u128::MAX - 5,
            stripe: 70_000,
            index: 9,
        };
        assert_eq!(id_from_bytes(&id_bytes(&id)), Some(id));
        assert_eq!(id_from_bytes(&id_bytes(&id)[..20]), None);
        assert_eq!(id_from_bytes(&[0; 22]), None);
    }
}
