//! What a peer's handles ([`crate::Peer`]) ask of its driver, and what the
//! driver hands back: the one module both sides depend on, so that neither
//! depends on the other.

use std::time::Duration;

use colony_core::divisible::AppError;
use colony_core::ft::FaultTolerance;
use colony_core::job::{JobId, JobView, SubmitOptions};
use colony_core::modules::ModuleSignature;
use colony_core::pipe::{PipeError, Receipt, TrafficClass};
use colony_core::space::{LockLost, ObjectKey, SpaceError, SpaceOp, SpaceReply};
use libp2p::PeerId;
use tokio::sync::{oneshot, watch};

use crate::info::{MemberInfo, StatusInfo};

/// Requests from [`crate::Peer`] handles.
pub(crate) enum Command {
    Send {
        to: PeerId,
        class: TrafficClass,
        payload: Vec<u8>,
        reply: oneshot::Sender<Result<Receipt, PipeError>>,
    },
    Members {
        reply: oneshot::Sender<Vec<MemberInfo>>,
    },
    Status {
        reply: oneshot::Sender<StatusInfo>,
    },
    Shutdown {
        reply: oneshot::Sender<()>,
    },
    /// Stop at once, telling nobody, as a killed process would.
    Crash,
    SubmitJob {
        app: String,
        args: Vec<String>,
        ft: FaultTolerance,
        options: SubmitOptions,
        reply: oneshot::Sender<Result<JobTicket, AppError>>,
    },
    CancelJob {
        job: JobId,
        reply: oneshot::Sender<Result<(), String>>,
    },
    QueryJob {
        job: JobId,
        reply: oneshot::Sender<Option<JobView<PeerId>>>,
    },
    ListJobs {
        reply: oneshot::Sender<Vec<JobView<PeerId>>>,
    },
    /// Push a stored module to its home; the reply names the home members
    /// it was pushed to.
    PublishModule {
        id: String,
        bytes: Vec<u8>,
        signatures: Vec<ModuleSignature>,
        reply: oneshot::Sender<Vec<PeerId>>,
    },
    /// The home members that said they stored module `id`.
    ModuleHolders {
        id: String,
        reply: oneshot::Sender<Vec<PeerId>>,
    },
    /// Fetch module `id` from its home.
    FetchModule {
        id: String,
        reply: oneshot::Sender<Result<(), String>>,
    },
    /// Apply `op` to the object space, answered within `timeout`. A lock
    /// granted is watched for its guard (`keep: None`), or kept for a
    /// holder outside this process: renewed until unlocked by token
    /// (`Some(true)`) or left to run out at its lease (`Some(false)`).
    Space {
        op: SpaceOp,
        timeout: Duration,
        keep: Option<bool>,
        /// The peer asked itself (a shard holder), instead of the object's
        /// home.
        to: Option<libp2p::PeerId>,
        reply: oneshot::Sender<SpaceAnswer>,
    },
    /// The objects whose primary is this peer.
    Objects {
        reply: oneshot::Sender<Vec<colony_core::object::ObjectInfo>>,
    },
    /// Create, call or delete an object.
    Object {
        request: colony_core::object::ObjectRequest,
        timeout: Option<Duration>,
        reply: oneshot::Sender<
            Result<colony_core::object::ObjectAnswer, colony_core::object::CallError>,
        >,
    },
    /// The peers that may hold the shards of write `write`, best first, at
    /// most `max`.
    ShardHolders {
        write: u128,
        max: usize,
        reply: oneshot::Sender<Vec<libp2p::PeerId>>,
    },
    /// The writes whose shards this peer holds, after the cursor `after`,
    /// at most `max`.
    HeldShardWrites {
        after: Option<u128>,
        max: usize,
        reply: oneshot::Sender<Vec<colony_core::space::HeldWrite>>,
    },
    /// Read `key` the cached way (from this peer's copy, else from any
    /// replica), answered within `timeout`.
    SpaceReadCached {
        key: ObjectKey,
        timeout: Duration,
        reply: oneshot::Sender<SpaceAnswer>,
    },
    /// Take a mesh role, or stream a frame.
    Mesh {
        request: crate::mesh::MeshRequest,
        reply: crate::mesh::MeshReply,
    },
    /// Stop renewing the lock `token` on `key` and release it (its guard
    /// was dropped).
    SpaceRelease {
        key: ObjectKey,
        token: u64,
    },
}

/// The answer to [`Command::Space`]: what the space said, and for a lock
/// granted, where its loss will be told.
pub(crate) struct SpaceAnswer {
    pub(crate) result: Result<SpaceReply, SpaceError>,
    pub(crate) lost: Option<watch::Receiver<Option<LockLost>>>,
}

/// A submitted job: its id and a feed of its status.
pub(crate) struct JobTicket {
    pub(crate) job: JobId,
    pub(crate) updates: watch::Receiver<Option<JobView<PeerId>>>,
}

/// A message handed to the application, exactly once and in order per
/// sender and traffic class.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InboundMessage {
    /// Who sent it.
    pub from: PeerId,
    /// Its traffic class.
    pub class: TrafficClass,
    /// Its number in the sender's channel.
    pub seq: u64,
    /// The message.
    pub payload: Vec<u8>,
}
