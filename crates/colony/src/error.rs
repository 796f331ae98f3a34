//! Errors of the runtime.

use std::path::PathBuf;

/// Why a peer could not start or an operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ColonyError {
    /// An object could not be created, called or deleted: why, as the
    /// objects core answered.
    #[error(transparent)]
    Object(#[from] colony_core::object::CallError),
    /// A mesh command was refused.
    #[error(transparent)]
    Mesh(#[from] colony_core::mesh::MeshPeerError),
    /// The peer's durable store failed (or is in use by another peer).
    #[error(transparent)]
    Store(#[from] colony_store::StoreError),
    /// The network layer could not be set up.
    #[error(transparent)]
    Net(#[from] colony_net::NetError),
    /// The stored identity key is corrupt.
    #[error("identity key in {dir} is unreadable: {reason}; move the directory away to start as a new peer")]
    BadIdentity {
        /// The data directory.
        dir: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A listen address could not be used.
    #[error("cannot listen on {addr}: {reason}")]
    Listen {
        /// The address.
        addr: String,
        /// What went wrong.
        reason: String,
    },
    /// The local HTTP API could not bind.
    #[error("cannot serve the local API on {addr}: {source}")]
    Api {
        /// The address.
        addr: std::net::SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
    /// The local HTTP API was asked to listen where other machines can
    /// reach it, without consent.
    #[error(
        "refusing to serve the local API on {addr}: it is reachable from other machines; \
         use a loopback address such as 127.0.0.1:{port}, or pass --api-allow-remote \
         (PeerConfig::api_allow_remote) if you mean it: anyone who can reach it with the \
         token may submit jobs, over plain HTTP",
        port = addr.port()
    )]
    ApiNotLoopback {
        /// The address.
        addr: std::net::SocketAddr,
    },
    /// The local API's token file cannot be used.
    #[error("API token file {path}: {reason}")]
    ApiToken {
        /// The file.
        path: PathBuf,
        /// What is wrong and what to do.
        reason: String,
    },
    /// A file in the data directory could not be written.
    #[error("cannot write {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A job's primary refused to cancel it (or could not be reached).
    #[error("job {job} was not cancelled: {reason}")]
    CancelRefused {
        /// The job.
        job: colony_core::job::JobId,
        /// The primary's reason.
        reason: String,
    },
    /// A message could not be delivered.
    #[error(transparent)]
    Pipe(#[from] colony_core::pipe::PipeError),
    /// A job could not be submitted.
    #[error(transparent)]
    App(#[from] colony_core::divisible::AppError),
    /// A job's fault-tolerance settings are incoherent.
    #[error("invalid fault-tolerance settings: {0}")]
    FaultTolerance(#[from] colony_core::ft::FtError),
    /// A condition did not hold in time.
    #[error("timed out after {after:?} waiting for {what}")]
    Timeout {
        /// What was awaited.
        what: String,
        /// How long.
        after: std::time::Duration,
    },
    /// The peer has shut down.
    #[error("the peer has shut down")]
    Stopped,
    /// The owner's computing preferences cannot be followed here.
    #[error("cannot compute as asked: {0}")]
    Volunteer(String),
    /// The object space refused or could not answer an operation.
    #[error(transparent)]
    Space(#[from] colony_core::space::SpaceError),
    /// A value stored in chunks cannot be put back together: a chunk is
    /// missing, or its size or BLAKE3 differs from what the value's
    /// manifest says, or the manifest itself does not parse.
    #[error("the value of {key} is damaged: {reason}")]
    DamagedValue {
        /// The object (`namespace/name`).
        key: String,
        /// What is wrong, naming the chunk.
        reason: String,
    },
}
