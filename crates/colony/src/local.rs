//! An embedded network: several peers in one process on loopback, each
//! with its own data directory (removed afterwards). For `colony demo`,
//! benchmarks and tests.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::{ColonyError, MemberState, Peer, PeerConfig};

/// Adjusts the configuration of the i-th peer.
type Configure = Box<dyn Fn(usize, &mut PeerConfig) + Send + Sync>;

/// Peers in this process, joined through the first one.
pub struct LocalNetwork {
    peers: Vec<Peer>,
    root: PathBuf,
    configure: Configure,
}

impl LocalNetwork {
    /// Starts `n` peers; `configure(i, config)` adjusts each one's
    /// configuration (applications, cores, faults). Returns once every peer
    /// sees every other alive.
    pub async fn start(
        n: usize,
        configure: impl Fn(usize, &mut PeerConfig) + Send + Sync + 'static,
    ) -> Result<LocalNetwork, ColonyError> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let root =
            std::env::temp_dir().join(format!("colony-local-{}-{nanos}", std::process::id()));
        let mut network = LocalNetwork {
            peers: Vec::new(),
            root,
            configure: Box::new(configure),
        };
        for _ in 0..n {
            network.add_peer_unjoined().await?;
        }
        network.wait_joined(Duration::from_secs(30)).await?;
        Ok(network)
    }

    async fn add_peer_unjoined(&mut self) -> Result<Peer, ColonyError> {
        let index = self.peers.len();
        let mut config = PeerConfig::new(self.root.join(format!("peer{index}")));
        config.listen = vec!["/ip4/127.0.0.1/tcp/0".parse().expect("static multiaddr")];
        if let Some(first) = self.peers.first() {
            config.bootstrap = first.info().listen_addrs.clone();
        }
        (self.configure)(index, &mut config);
        let peer = Peer::start(config).await?;
        self.peers.push(peer.clone());
        Ok(peer)
    }

    /// Adds a peer (a late joiner) and waits until everyone sees it.
    pub async fn add_peer(&mut self) -> Result<Peer, ColonyError> {
        let peer = self.add_peer_unjoined().await?;
        self.wait_joined(Duration::from_secs(30)).await?;
        Ok(peer)
    }

    /// Waits until every peer sees every other alive.
    pub async fn wait_joined(&self, within: Duration) -> Result<(), ColonyError> {
        let deadline = Instant::now() + within;
        loop {
            let mut joined = true;
            for peer in &self.peers {
                let alive = peer
                    .members()
                    .await?
                    .iter()
                    .filter(|m| m.state == MemberState::Alive)
                    .count();
                joined &= alive == self.peers.len();
            }
            if joined {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(ColonyError::Timeout {
                    what: format!("{} local peers to see each other", self.peers.len()),
                    after: within,
                });
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The peers, in start order.
    pub fn peers(&self) -> &[Peer] {
        &self.peers
    }

    /// Stops every peer gracefully and removes their data.
    pub async fn shutdown(self) {
        for peer in &self.peers {
            peer.shutdown().await;
        }
    }
}

impl Drop for LocalNetwork {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}
