//! The libp2p swarm: transport, behaviours, discovery plumbing.

use std::collections::HashMap;

use libp2p::core::muxing::StreamMuxerBox;
use libp2p::core::transport::Boxed;
use libp2p::core::upgrade::Version;
use libp2p::identity::Keypair;
use libp2p::pnet::{PnetConfig, PreSharedKey};
use libp2p::swarm::behaviour::toggle::Toggle;
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::swarm::NetworkBehaviour;
use libp2p::{
    connection_limits, dns, identify, kad, mdns, noise, tcp, yamux, Multiaddr, PeerId, Swarm,
    Transport,
};
use tracing::{debug, warn};

use crate::behaviours::{IdentifyGate, QuietKad};
use crate::config::{identify_protocol_version, kad_protocol, NetConfig};
use crate::error::NetError;

/// Most listen addresses of one identify message fed into Kademlia.
const MAX_IDENTIFY_ADDRS: usize = 16;

/// The behaviours of a Colony swarm.
#[derive(NetworkBehaviour)]
#[behaviour(to_swarm = "BehaviourEvent")]
pub struct Behaviour {
    /// Connection limits ([`NetConfig::max_pending_incoming`] and the
    /// others); first, so a connection over a limit is refused before any
    /// other behaviour spends anything on it.
    pub limits: connection_limits::Behaviour,
    /// Kademlia, forced into server mode, under [`kad_protocol`] of the
    /// network (dereferences to [`kad::Behaviour`]).
    pub kad: QuietKad,
    /// Identify, announcing [`identify_protocol_version`] of the network;
    /// peers that do not identify with it within
    /// [`NetConfig::identify_timeout`] are disconnected.
    pub identify: IdentifyGate,
    /// mDNS discovery, present when [`NetConfig::mdns`] is set.
    pub mdns: Toggle<mdns::tokio::Behaviour>,
    /// Raw streams; the frame plumbing ([`start_frames`](crate::start_frames)) runs on it.
    pub stream: libp2p_stream::Behaviour,
}

/// Events produced by [`Behaviour`].
#[derive(Debug)]
pub enum BehaviourEvent {
    /// From Kademlia (boxed: the event is large).
    Kad(Box<kad::Event>),
    /// From identify (boxed: the event is large).
    Identify(Box<identify::Event>),
    /// From mDNS.
    Mdns(mdns::Event),
    /// From the stream behaviour (it has no events).
    Stream,
}

impl From<kad::Event> for BehaviourEvent {
    fn from(e: kad::Event) -> Self {
        Self::Kad(Box::new(e))
    }
}

impl From<identify::Event> for BehaviourEvent {
    fn from(e: identify::Event) -> Self {
        Self::Identify(Box::new(e))
    }
}

impl From<mdns::Event> for BehaviourEvent {
    fn from(e: mdns::Event) -> Self {
        Self::Mdns(e)
    }
}

impl From<std::convert::Infallible> for BehaviourEvent {
    fn from(never: std::convert::Infallible) -> Self {
        match never {}
    }
}

impl From<()> for BehaviourEvent {
    fn from((): ()) -> Self {
        Self::Stream
    }
}

/// Builds the swarm: TCP (nodelay) + pnet (when [`NetConfig::psk`] is set) +
/// noise + yamux, optionally wrapped in DNS resolution, with the behaviours of
/// [`Behaviour`] and the configured idle-connection timeout.
///
/// The swarm does not listen or dial yet. Call from within a tokio runtime.
pub fn build_swarm(keypair: Keypair, config: &NetConfig) -> Result<Swarm<Behaviour>, NetError> {
    config.validate()?;
    let peer_id = keypair.public().to_peer_id();
    let transport = build_transport(&keypair, config)?;

    let mut kad_config = kad::Config::new(kad_protocol(&config.network));
    kad_config.set_query_timeout(config.kad_query_timeout);
    // Exploration is driven by the acquaintance core (NOA/TTU); kad's own
    // periodic bootstrap only warns when a peer starts a network alone.
    kad_config.set_periodic_bootstrap_interval(None);
    let mut kad = QuietKad::new(kad::Behaviour::with_config(
        peer_id,
        kad::store::MemoryStore::new(peer_id),
        kad_config,
    ));
    // Small private networks have no public addresses to confirm; without
    // this every peer would stay a client and nobody would answer queries.
    kad.set_mode(Some(kad::Mode::Server));

    let identify = IdentifyGate::new(
        identify::Behaviour::new(
            identify::Config::new(identify_protocol_version(&config.network), keypair.public())
                .with_agent_version(format!("colony-net/{}", env!("CARGO_PKG_VERSION")))
                .with_push_listen_addr_updates(true),
        ),
        identify_protocol_version(&config.network),
        config.identify_timeout,
    );
    let limits = connection_limits::Behaviour::new(
        connection_limits::ConnectionLimits::default()
            .with_max_pending_incoming(Some(config.max_pending_incoming))
            .with_max_pending_outgoing(Some(config.max_pending_outgoing))
            .with_max_established_per_peer(Some(config.max_established_per_peer))
            .with_max_established(Some(config.max_established)),
    );

    let mdns = if config.mdns {
        Some(
            mdns::tokio::Behaviour::new(mdns::Config::default(), peer_id)
                .map_err(NetError::Mdns)?,
        )
    } else {
        None
    };

    let behaviour = Behaviour {
        limits,
        kad,
        identify,
        mdns: Toggle::from(mdns),
        stream: libp2p_stream::Behaviour::new(),
    };

    let swarm_config = libp2p::swarm::Config::with_tokio_executor()
        .with_idle_connection_timeout(config.idle_connection_timeout);
    Ok(Swarm::new(transport, behaviour, peer_id, swarm_config))
}

fn build_transport(
    keypair: &Keypair,
    config: &NetConfig,
) -> Result<Boxed<(PeerId, StreamMuxerBox)>, NetError> {
    let upgraded = || -> Result<Boxed<(PeerId, StreamMuxerBox)>, NetError> {
        let tcp = tcp::tokio::Transport::new(tcp::Config::new().nodelay(true));
        let noise = noise::Config::new(keypair)?;
        let mut yamux = yamux::Config::default();
        yamux.set_max_num_streams(config.max_streams_per_connection);
        Ok(match config.psk {
            Some(key) => {
                let pnet = PnetConfig::new(PreSharedKey::new(key));
                tcp.and_then(move |socket, _| pnet.handshake(socket))
                    .upgrade(Version::V1Lazy)
                    .authenticate(noise)
                    .multiplex(yamux)
                    .timeout(config.handshake_timeout)
                    .map(|(peer, muxer), _| (peer, StreamMuxerBox::new(muxer)))
                    .boxed()
            }
            None => tcp
                .upgrade(Version::V1Lazy)
                .authenticate(noise)
                .multiplex(yamux)
                .timeout(config.handshake_timeout)
                .map(|(peer, muxer), _| (peer, StreamMuxerBox::new(muxer)))
                .boxed(),
        })
    };
    if !config.dns {
        return upgraded();
    }
    match dns::tokio::Transport::system(upgraded()?) {
        Ok(with_dns) => Ok(with_dns.boxed()),
        Err(e) => {
            warn!(error = %e, "cannot read the system DNS configuration; /dns addresses will not resolve");
            upgraded()
        }
    }
}

/// Feeds discoveries into Kademlia and the dialer; call it with every
/// behaviour event of the swarm.
///
/// - identify: the listen addresses of a peer of the same network (same
///   identify protocol version, speaks our Kademlia protocol) are added to
///   Kademlia's routing table; peers of other networks are ignored.
/// - mDNS: discovered peers are remembered and dialed, so identify can run.
pub fn feed_discovery(swarm: &mut Swarm<Behaviour>, network: &str, event: &BehaviourEvent) {
    match event {
        BehaviourEvent::Identify(event) => {
            if let identify::Event::Received { peer_id, info, .. } = event.as_ref() {
                if info.protocol_version != identify_protocol_version(network)
                    || !info.protocols.contains(&kad_protocol(network))
                {
                    debug!(peer = %peer_id, version = %info.protocol_version, "peer of another network; not added to Kademlia");
                    return;
                }
                for addr in info.listen_addrs.iter().take(MAX_IDENTIFY_ADDRS) {
                    swarm.behaviour_mut().kad.add_address(peer_id, addr.clone());
                }
            }
        }
        BehaviourEvent::Mdns(mdns::Event::Discovered(found)) => {
            let mut by_peer: HashMap<PeerId, Vec<Multiaddr>> = HashMap::new();
            for (peer, addr) in found {
                by_peer.entry(*peer).or_default().push(addr.clone());
            }
            for (peer, addrs) in by_peer {
                for addr in &addrs {
                    swarm.add_peer_address(peer, addr.clone());
                }
                if !swarm.is_connected(&peer) {
                    let opts = DialOpts::peer_id(peer)
                        .condition(PeerCondition::DisconnectedAndNotDialing)
                        .addresses(addrs)
                        .build();
                    if let Err(e) = swarm.dial(opts) {
                        debug!(%peer, error = %e, "cannot dial a peer found by mDNS");
                    }
                }
            }
        }
        _ => {}
    }
}
