//! Colony's network plumbing on libp2p.
//!
//! The protocol logic of Colony lives in sans-IO cores elsewhere; this crate
//! only moves bytes:
//!
//! - [`build_swarm`] builds a libp2p swarm for a small private network: TCP
//!   (nodelay), an optional pre-shared key ([`NetConfig::psk`], libp2p pnet),
//!   noise, yamux, Kademlia in server mode under a per-network protocol name,
//!   identify, optional mDNS, and [`libp2p_stream`] for our own streams.
//! - [`start_frames`] runs the frame plumbing on top of it: one long-lived
//!   stream per peer and direction carrying length-prefixed opaque frames, a
//!   per-peer writer with strict priorities ([`Priority`]) and bounded queues,
//!   inbound frames delivered as [`NetEvent`]s, counters ([`NetCounters`]), and
//!   sender-side fault injection ([`FaultConfig`]) for tests and benchmarks.
//!
//! Frames have datagram semantics: a frame may be dropped (queue full, peer
//! unreachable, injected loss) and the reliable layer above retransmits.
//!
//! Every remote peer may be hostile, so everything a peer can make a node
//! hold is bounded ([`NetConfig`] documents each limit): connections
//! (pending, per peer, in total), yamux streams per connection, inbound frame
//! streams per peer and in total, and bytes buffered by readers, which grow
//! as bytes arrive rather than by what a length prefix announces. Streams that
//! bring nothing are closed after an idle timeout, peers that do not identify
//! as peers of the network are disconnected ([`IdentifyGate`]), and warnings
//! a peer can cause are rate-limited ([`LogLimiter`]).

#![warn(missing_docs)]

mod behaviours;
mod config;
mod counters;
mod error;
mod faults;
mod frames;
mod protocol;
mod ratelimit;
mod swarm;

pub use behaviours::{IdentifyGate, QuietKad};
pub use config::{
    frames_protocol, identify_protocol_version, kad_protocol, parse_psk, validate_network_name,
    NetConfig,
};
pub use counters::{NetCounters, NetCountersSnapshot};
pub use error::NetError;
pub use faults::FaultConfig;
pub use frames::{start_frames, FrameSender, NetEvent, Priority};
pub use ratelimit::{LogLimiter, DEFAULT_WARN_INTERVAL, DEFAULT_WARN_KEYS};
pub use swarm::{build_swarm, feed_discovery, Behaviour, BehaviourEvent};

/// Re-exported so callers use exactly the libp2p this crate was built with.
pub use libp2p;
/// Re-exported so callers use exactly the libp2p-stream this crate was built with.
pub use libp2p_stream;
