//! Configuration of a peer, in one place.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use colony_core::acquaintance::AcquaintanceConfig;
use colony_core::divisible::AppRegistry;
use colony_core::job::{JobConfig, SubmitPolicy};
use colony_core::membership::MembershipConfig;
use colony_core::object::{ObjectTypes, ObjectsConfig};
use colony_core::pipe::PipeConfig;
use colony_core::space::SpaceConfig;
use colony_net::NetConfig;
use libp2p::{Multiaddr, PeerId};

pub use crate::volunteer::{VolunteerConfig, LOWEST_NICE};

/// Everything needed to run a peer. `PeerConfig::new(dir)` gives defaults
/// that work for a small private network.
#[derive(Clone)]
pub struct PeerConfig {
    /// Where the identity, incarnation and `peer.json` live.
    pub data_dir: PathBuf,
    /// Addresses to listen on. Default: all interfaces, a free TCP port.
    pub listen: Vec<Multiaddr>,
    /// Peers to join through, tried in order with failover.
    pub bootstrap: Vec<Multiaddr>,
    /// Network layer: network name, pre-shared key, mDNS, limits, faults.
    pub net: NetConfig,
    /// Local HTTP API address; `None` serves no API. Every request must
    /// carry `Authorization: Bearer TOKEN`, the token kept in
    /// `DATA_DIR/api.token` ([`crate::API_TOKEN_FILE`]).
    pub api: Option<SocketAddr>,
    /// Whether the API may listen on an address other machines can reach
    /// (not loopback). Off: such an address is refused at start.
    pub api_allow_remote: bool,
    /// Timeouts and limits of the API's connections.
    pub api_limits: ApiLimits,
    /// Membership and failure detection.
    pub membership: MembershipConfig,
    /// Reliable pipes.
    pub pipes: PipeConfig,
    /// Bootstrap failover and NOA/TTU acquaintance maintenance.
    pub acquaintances: AcquaintanceConfig,
    /// How long `send` keeps retrying before `DeadlineExceeded`.
    pub send_timeout: Duration,
    /// Messages buffered between the peer and the inbox reader.
    pub inbox_capacity: usize,
    /// Commands (sends, queries) buffered towards the peer's driver.
    pub command_capacity: usize,
    /// Cores offered to Colony (published in statistics). Default: all.
    pub cores_offered: Option<u32>,
    /// How often host statistics are sampled and published.
    pub stats_interval: Duration,
    /// How long to wait for listeners to come up at start.
    pub listen_timeout: Duration,
    /// Applications this peer can run (and merge results of, as a home).
    pub apps: AppRegistry,
    /// Object types this peer can host (distributed objects).
    pub object_types: ObjectTypes,
    /// Distributed objects: home size, call timeout, limits.
    pub objects: ObjectsConfig,
    /// The streaming mesh: the tree's shape, the cores' limits and timing.
    pub mesh: colony_core::mesh::MeshPeerConfig,
    /// Divisible jobs: advert lifetimes, stealing, retention. `cores` is
    /// set from `cores_offered` at start.
    pub jobs: JobConfig,
    /// The object space: the room this peer gives it (`--space-mib`),
    /// object size limit, home size.
    pub space: SpaceConfig,
    /// Largest value this peer's library calls and API take into the
    /// object space (`--max-value-mib`): values larger than a chunk
    /// ([`crate::CHUNK_BYTES`], or `space.max_object_bytes` if smaller) are
    /// stored as several objects. Default: 1 GiB
    /// ([`crate::DEFAULT_MAX_VALUE_BYTES`]).
    pub max_value_bytes: u64,
    /// How the erasure-coded shards this peer holds are looked after:
    /// repaired when a holder dies, dropped when no value names them.
    pub shard_keeping: crate::ShardKeeping,
    /// Who may submit jobs to this peer (`--accept-jobs-from`). Default:
    /// members of the network.
    pub accept_jobs_from: SubmitPolicy<PeerId>,
    /// WebAssembly guests: `None` (the default) runs native applications
    /// only; `Some` runs the modules its trust admits (any member's with
    /// `--trust-network`, or those signed by `--trust` peers), fetching
    /// them on first use.
    pub guests: Option<GuestConfig>,
    /// When this peer computes (`--when`, `--idle-cpu`, `--idle-secs`,
    /// `--max-hours-per-day`). Default: always, no daily limit.
    pub volunteer: VolunteerConfig,
}

/// How this peer runs WebAssembly guests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GuestConfig {
    /// What each guest may use.
    pub limits: colony_wasm::SandboxLimits,
    /// Disk given to cached modules (`DATA_DIR/modules`).
    pub store_bytes: u64,
    /// Whose modules this peer runs.
    pub trust: crate::GuestTrust,
}

impl Default for GuestConfig {
    fn default() -> Self {
        GuestConfig {
            limits: colony_wasm::SandboxLimits::default(),
            store_bytes: 1 << 30,
            trust: crate::GuestTrust::Network,
        }
    }
}

impl std::fmt::Debug for PeerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerConfig")
            .field("data_dir", &self.data_dir)
            .field("listen", &self.listen)
            .field("bootstrap", &self.bootstrap)
            .field("net", &self.net)
            .field("api", &self.api)
            .field("api_allow_remote", &self.api_allow_remote)
            .field("apps", &self.apps.names())
            .field("cores_offered", &self.cores_offered)
            .field("volunteer", &self.volunteer)
            .finish_non_exhaustive()
    }
}

impl PeerConfig {
    /// Defaults with the given data directory.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        PeerConfig {
            data_dir: data_dir.into(),
            listen: vec!["/ip4/0.0.0.0/tcp/0".parse().expect("static multiaddr")],
            bootstrap: Vec::new(),
            net: NetConfig::default(),
            api: None,
            api_allow_remote: false,
            api_limits: ApiLimits::default(),
            membership: MembershipConfig::default(),
            pipes: PipeConfig::default(),
            acquaintances: AcquaintanceConfig::default(),
            send_timeout: Duration::from_secs(30),
            inbox_capacity: 4096,
            command_capacity: 8192,
            cores_offered: None,
            stats_interval: Duration::from_secs(1),
            listen_timeout: Duration::from_secs(5),
            apps: AppRegistry::new(),
            object_types: ObjectTypes::new(),
            objects: ObjectsConfig::default(),
            mesh: colony_core::mesh::MeshPeerConfig::default(),
            jobs: JobConfig::default(),
            space: SpaceConfig::default(),
            max_value_bytes: crate::DEFAULT_MAX_VALUE_BYTES,
            shard_keeping: crate::ShardKeeping::default(),
            accept_jobs_from: SubmitPolicy::default(),
            guests: None,
            volunteer: VolunteerConfig::default(),
        }
    }
}

/// Bounds on the local HTTP API, so that slow or stalled clients cannot
/// hold it: every connection gets a deadline for its headers, its body and
/// its whole life, and only so many are served at once.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiLimits {
    /// Time a client has to send a request's headers (also the longest an
    /// idle kept-alive connection stays open).
    pub header_timeout: Duration,
    /// Time a client has to send a request's body, once its headers are in.
    pub body_timeout: Duration,
    /// Time a request has to be answered; longer ones get 503.
    pub request_timeout: Duration,
    /// Longest a connection stays open, whatever it does.
    pub connection_lifetime: Duration,
    /// Largest request body accepted (413 beyond).
    pub max_body_bytes: usize,
    /// Largest module `POST /v1/modules` accepts.
    pub max_module_bytes: usize,
    /// Connections served at once; more are answered 503 and closed.
    pub max_connections: usize,
}

impl Default for ApiLimits {
    /// 5 s for headers and for a body, 30 s per request, 60 s per
    /// connection, bodies up to 256 KiB, 64 connections.
    fn default() -> Self {
        ApiLimits {
            header_timeout: Duration::from_secs(5),
            body_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(30),
            connection_lifetime: Duration::from_secs(60),
            max_body_bytes: 256 * 1024,
            max_module_bytes: 16 << 20,
            max_connections: 64,
        }
    }
}
