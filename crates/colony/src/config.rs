//! Configuration of a peer, in one place.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use colony_core::acquaintance::AcquaintanceConfig;
use colony_core::divisible::AppRegistry;
use colony_core::job::{JobConfig, SubmitPolicy};
use colony_core::membership::MembershipConfig;
use colony_core::pipe::PipeConfig;
use colony_net::NetConfig;
use libp2p::{Multiaddr, PeerId};

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
    /// Local HTTP API address; `None` serves no API.
    pub api: Option<SocketAddr>,
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
    /// Divisible jobs: advert lifetimes, stealing, retention. `cores` is
    /// set from `cores_offered` at start.
    pub jobs: JobConfig,
    /// Who may submit jobs to this peer (`--accept-jobs-from`). Default:
    /// members of the network.
    pub accept_jobs_from: SubmitPolicy<PeerId>,
}

impl std::fmt::Debug for PeerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerConfig")
            .field("data_dir", &self.data_dir)
            .field("listen", &self.listen)
            .field("bootstrap", &self.bootstrap)
            .field("net", &self.net)
            .field("api", &self.api)
            .field("apps", &self.apps.names())
            .field("cores_offered", &self.cores_offered)
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
            jobs: JobConfig::default(),
            accept_jobs_from: SubmitPolicy::default(),
        }
    }
}
