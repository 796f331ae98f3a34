//! Serialisable views of a peer for `peer.json`, the HTTP API and the CLI.

use serde::{Deserialize, Serialize};

use colony_core::membership::{MemberState, PeerStats};
use colony_core::pipe::PipeStats;
use colony_net::NetCountersSnapshot;

/// What `DATA_DIR/peer.json` holds: how to reach this peer.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct PeerInfo {
    /// The peer's id (stable across restarts).
    pub peer_id: String,
    /// The network it belongs to.
    pub network: String,
    /// Listen addresses, each ending in `/p2p/<peer_id>`: give one to
    /// `--bootstrap` of another peer.
    pub listen_addrs: Vec<libp2p::Multiaddr>,
    /// Local HTTP API address, if served.
    pub api_addr: Option<std::net::SocketAddr>,
    /// Process id of the peer.
    pub pid: u32,
}

/// One row of `colony peers`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct MemberInfo {
    /// The member's id.
    pub peer_id: String,
    /// Whether this row is the answering peer itself.
    pub local: bool,
    /// Liveness.
    pub state: MemberState,
    /// Incarnation (raised by the member to refute suspicion or rejoin).
    pub incarnation: u64,
    /// Its addresses.
    pub addrs: Vec<String>,
    /// Its published statistics.
    pub stats: PeerStats,
    /// When its state last changed here, ms since the Unix epoch.
    pub state_since_unix_ms: u64,
    /// Milliseconds since a message from it arrived, if ever.
    pub last_heard_ms_ago: Option<u64>,
    /// How many times this peer declared it dead.
    pub times_declared_dead: u32,
    /// Failure-detector suspicion level, if this peer monitors it.
    pub phi: Option<f64>,
}

/// Counters of the driver itself.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct DriverCounters {
    /// Frames that did not decode (garbage, wrong version).
    pub malformed_frames: u64,
    /// Membership messages whose sender record named another peer.
    pub forged_senders: u64,
    /// Incoming connections that failed (bad handshake, garbage bytes).
    pub rejected_connections: u64,
    /// Peers of another network that connected and were dropped.
    pub foreign_peers: u64,
}

/// `GET /v1/status`: the peer and its counters.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct StatusInfo {
    /// Reachability.
    pub peer: PeerInfo,
    /// Current incarnation.
    pub incarnation: u64,
    /// Whether it has joined a network (or started its own).
    pub joined: bool,
    /// Other members alive or suspect.
    pub live_members: usize,
    /// Frame plumbing counters.
    pub net: NetCountersSnapshot,
    /// Reliable pipe counters.
    pub pipes: PipeStats,
    /// Driver counters.
    pub driver: DriverCounters,
}
