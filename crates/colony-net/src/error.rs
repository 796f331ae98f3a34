//! Errors of the network layer.

/// What went wrong while setting up the network layer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NetError {
    /// The pre-shared key text could not be parsed.
    #[error("invalid pre-shared key: {reason}")]
    InvalidPsk {
        /// What is wrong with it.
        reason: String,
    },
    /// The network name cannot be used in protocol names.
    #[error("invalid network name {name:?}: use 1 to 64 ASCII letters, digits, '-', '_' or '.'")]
    InvalidNetworkName {
        /// The rejected name.
        name: String,
    },
    /// A configuration value is out of range.
    #[error("invalid network config `{field}`: {reason}")]
    InvalidConfig {
        /// The [`NetConfig`](crate::NetConfig) field at fault.
        field: &'static str,
        /// Why it was rejected.
        reason: String,
    },
    /// The noise handshake configuration could not be built from the keypair.
    #[error("cannot set up noise encryption with this keypair: {0}")]
    Noise(#[from] libp2p::noise::Error),
    /// mDNS was requested but could not start (no multicast socket?).
    #[error("cannot start mDNS (set mdns = false to run without it): {0}")]
    Mdns(#[source] std::io::Error),
    /// The frames protocol already has an acceptor on this swarm
    /// ([`start_frames`](crate::start_frames) called twice).
    #[error("the frames protocol {protocol} is already being accepted on this swarm")]
    AlreadyAccepting {
        /// The protocol name.
        protocol: String,
    },
    /// [`start_frames`](crate::start_frames) was called outside a tokio runtime.
    #[error("start_frames must be called from within a tokio runtime")]
    NoRuntime,
}
