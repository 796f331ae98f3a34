//! What a peer's handles ([`crate::Peer`]) ask of its driver, and what the
//! driver hands back: the one module both sides depend on, so that neither
//! depends on the other.

use std::time::Duration;

use colony_core::divisible::AppError;
use colony_core::ft::FaultTolerance;
use colony_core::job::{JobId, JobView};
use colony_core::modules::ModuleSignature;
use colony_core::pipe::{PipeError, Receipt, TrafficClass};
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
    SubmitJob {
        app: String,
        args: Vec<String>,
        ft: FaultTolerance,
        deadline: Option<Duration>,
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
