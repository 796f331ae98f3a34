//! The driver's side of distributed objects: requests from [`crate::Peer`]
//! handles answered when the node's objects core answers them, and the
//! records of the objects this peer holds written to disk (group-committed
//! with everything else the store writes) before the node counts them as
//! held, then read back after a restart.
//!
//! At most [`OBJECT_WRITES_IN_FLIGHT`] writes wait for the disk at once.
//! Past that, an object's newer record replaces its older one still waiting
//! (the disk only ever needs the newest), so the backlog holds at most one
//! record per object held here.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use colony_core::node::{Node, NodeInput, NodeOutput};
use colony_core::object::{CallError, Guid, ObjectAnswer, ObjectRequest, ObjectRun, StoredObject};
use colony_core::wire;
use colony_store::{CheckpointStore, StoreError};
use libp2p::PeerId;
use tokio::sync::{mpsc, oneshot};
use tracing::{info, warn};

use super::Driver;
use crate::compute::{ObjectRunner, OBJECT_RUNS_DONE};

/// Object record writes waiting for the disk at most; their completions fit
/// the bounded channel that brings them back.
pub(crate) const OBJECT_WRITES_IN_FLIGHT: usize = 64;

/// A record write finished.
pub(crate) struct ObjectWritten {
    guid: Guid,
    term: u64,
    seq: u64,
    /// Why it failed, if it did.
    result: Result<(), String>,
}

/// The driver's state for objects.
pub(crate) struct ObjectIo {
    done_tx: mpsc::Sender<ObjectWritten>,
    pub(crate) done_rx: mpsc::Receiver<ObjectWritten>,
    in_flight: usize,
    /// Objects whose newest record waits, in the order they first did.
    backlog: VecDeque<Guid>,
    waiting: HashMap<Guid, StoredObject<PeerId>>,
    /// Requests of handles waiting for the node's answer, by token.
    answers: HashMap<u64, oneshot::Sender<Result<ObjectAnswer, CallError>>>,
    next_token: u64,
    /// Record writes that failed.
    pub(crate) errors: u64,
    /// The threads that run objects' handlers.
    runner: ObjectRunner,
    /// Runs coming back from them.
    pub(crate) ran_rx: mpsc::Receiver<ObjectRun>,
}

impl ObjectIo {
    /// With `threads` threads running handlers at `nice`.
    pub(crate) fn new(threads: usize, nice: u8) -> ObjectIo {
        let (done_tx, done_rx) = mpsc::channel(OBJECT_WRITES_IN_FLIGHT);
        let (ran_tx, ran_rx) = mpsc::channel(OBJECT_RUNS_DONE);
        ObjectIo {
            runner: ObjectRunner::new(threads, nice, ran_tx),
            ran_rx,
            done_tx,
            done_rx,
            in_flight: 0,
            backlog: VecDeque::new(),
            waiting: HashMap::new(),
            answers: HashMap::new(),
            next_token: 0,
            errors: 0,
        }
    }
}

impl Driver {
    /// A handle's object request: answered on `reply` when the node's
    /// objects core answers (every request is answered, at the latest at
    /// its deadline).
    pub(super) fn object_request(
        &mut self,
        now: Instant,
        request: ObjectRequest,
        timeout: Option<Duration>,
        reply: oneshot::Sender<Result<ObjectAnswer, CallError>>,
    ) {
        self.objects.next_token += 1;
        let token = self.objects.next_token;
        self.objects.answers.insert(token, reply);
        self.node.object_request(now, token, request, timeout);
    }

    /// Executes an object output of the node.
    pub(super) fn on_object_output(&mut self, out: NodeOutput<PeerId>) {
        match out {
            NodeOutput::ObjectAnswer { token, result } => {
                if let Some(reply) = self.objects.answers.remove(&token) {
                    // The handle may have stopped waiting.
                    let _ = reply.send(result);
                }
            }
            NodeOutput::RunObject(run) => self.objects.runner.submit(run),
            NodeOutput::PersistObject(record) => {
                let guid = record.snapshot.uri.guid;
                if self.objects.waiting.insert(guid, record).is_none() {
                    self.objects.backlog.push_back(guid);
                }
                self.drain_object_backlog();
            }
            _ => {}
        }
    }

    /// Hands waiting record writes to the store while there is room.
    pub(super) fn drain_object_backlog(&mut self) {
        while self.objects.in_flight < OBJECT_WRITES_IN_FLIGHT {
            let Some(guid) = self.objects.backlog.pop_front() else {
                return;
            };
            let Some(record) = self.objects.waiting.remove(&guid) else {
                continue;
            };
            let (term, seq) = (record.term, record.seq);
            let tx = self.objects.done_tx.clone();
            // A failure is answered like a completion, through the channel:
            // the node waits for one answer per record asked for.
            let fail_tx = tx.clone();
            let failed = move |error: String| {
                let _ = fail_tx.try_send(ObjectWritten {
                    guid,
                    term,
                    seq,
                    result: Err(error),
                });
            };
            let bytes = match wire::encode(&record, usize::MAX) {
                Ok(bytes) => bytes,
                Err(error) => {
                    self.objects.in_flight += 1;
                    failed(format!("object record not encoded: {error}"));
                    continue;
                }
            };
            // Never full: at most OBJECT_WRITES_IN_FLIGHT completions are due.
            let done: colony_store::Done = Box::new(move |result| {
                let _ = tx.try_send(ObjectWritten {
                    guid,
                    term,
                    seq,
                    result: result.map_err(|e| e.to_string()),
                });
            });
            match self
                .checkpoints
                .put_object(guid.0.to_be_bytes(), bytes, done)
            {
                Ok(()) => self.objects.in_flight += 1,
                Err(StoreError::Backpressure { .. }) => {
                    // Tried again when a write completes (a newer record of
                    // the object may replace it meanwhile).
                    self.objects.waiting.entry(guid).or_insert(record);
                    self.objects.backlog.push_front(guid);
                    return;
                }
                Err(error) => {
                    self.objects.in_flight += 1;
                    failed(format!("the store cannot take it: {error}"));
                }
            }
        }
    }

    /// An object's run is back from its thread.
    pub(super) fn on_object_ran(&mut self, run: ObjectRun) {
        self.node
            .handle(Instant::now(), NodeInput::ObjectRan(Box::new(run)));
    }

    /// A record write finished: the node is told it is durable.
    pub(super) fn on_object_written(&mut self, done: ObjectWritten) {
        self.objects.in_flight = self.objects.in_flight.saturating_sub(1);
        match done.result {
            Ok(()) => self.node.handle(
                Instant::now(),
                NodeInput::ObjectDurable {
                    guid: done.guid,
                    term: done.term,
                    seq: done.seq,
                },
            ),
            Err(error) => {
                self.objects.errors += 1;
                if let Some(suppressed) = self.may_warn(None, "object record writes failing") {
                    warn!(guid = %done.guid, %error, suppressed, "object record not written; this peer does not confirm it");
                }
                self.node.handle(
                    Instant::now(),
                    NodeInput::ObjectNotWritten { guid: done.guid },
                );
            }
        }
        self.drain_object_backlog();
    }
}

/// Reads the object records a previous run left on disk and gives them back
/// to the node (each rejoins its home as a backup). Returns how many.
pub(crate) fn restore_objects(node: &mut Node<PeerId>, store: &CheckpointStore) -> usize {
    let stored = match store.objects() {
        Ok(stored) => stored,
        Err(error) => {
            warn!(%error, "cannot read the object records on disk; starting without them");
            return 0;
        }
    };
    let corrupt = store.stats().objects_corrupt;
    if corrupt > 0 {
        warn!(
            corrupt,
            "object records failed their checksum and were dropped; their homes' other members hold them"
        );
    }
    let now = Instant::now();
    let mut restored = 0;
    for (id, bytes) in stored {
        let record = wire::decode::<StoredObject<PeerId>>(&bytes, usize::MAX)
            .ok()
            .filter(|r| r.snapshot.uri.guid.0.to_be_bytes() == id);
        let ok = record.is_some_and(|r| node.restore_object(now, r));
        if ok {
            restored += 1;
        } else {
            warn!(guid = %Guid(u128::from_be_bytes(id)), "object record on disk unusable; deleted");
            if let Err(error) = store.remove_object(id, Box::new(|_| {})) {
                warn!(%error, "object record not deleted");
            }
        }
    }
    if restored > 0 {
        info!(restored, "object records restored from disk");
    }
    restored
}
