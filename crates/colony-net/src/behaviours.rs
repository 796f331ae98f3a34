//! Thin wrappers around libp2p behaviours that Colony needs to behave a
//! little differently: identify that disconnects peers which never identify
//! as peers of this network, and Kademlia that does not try to bootstrap
//! before it has anyone to ask.

use std::collections::{HashMap, HashSet, VecDeque};
use std::future::Future;
use std::ops::{Deref, DerefMut};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use libp2p::core::transport::PortUse;
use libp2p::core::Endpoint;
use libp2p::swarm::{
    CloseConnection, ConnectionDenied, ConnectionId, FromSwarm, NetworkBehaviour, THandler,
    THandlerInEvent, THandlerOutEvent, ToSwarm,
};
use libp2p::{identify, kad, Multiaddr, PeerId};
use tokio::time::{Instant, Sleep};
use tracing::debug;

/// Identify, plus a deadline: a peer connected for `timeout` without having
/// identified itself with this network's protocol version is disconnected
/// (all its connections). A peer that identifies with another version is
/// disconnected at once.
///
/// Foreign libp2p peers and silent ones would otherwise keep a connection
/// (and use Kademlia and the frames protocol) until the idle timeout.
pub struct IdentifyGate {
    inner: identify::Behaviour,
    protocol_version: String,
    timeout: Duration,
    /// Connected peers not identified yet, with their deadline.
    pending: HashMap<PeerId, Instant>,
    /// Connected peers identified as peers of this network.
    verified: HashSet<PeerId>,
    to_close: VecDeque<PeerId>,
    timer: Option<Pin<Box<Sleep>>>,
    disconnected: u64,
}

impl IdentifyGate {
    /// Wraps `inner`, which must announce `protocol_version`, the version
    /// every peer must answer with within `timeout` of connecting.
    pub fn new(inner: identify::Behaviour, protocol_version: String, timeout: Duration) -> Self {
        Self {
            inner,
            protocol_version,
            timeout,
            pending: HashMap::new(),
            verified: HashSet::new(),
            to_close: VecDeque::new(),
            timer: None,
            disconnected: 0,
        }
    }

    /// Peers disconnected so far because they did not identify in time or
    /// identified as peers of another network.
    pub fn disconnected(&self) -> u64 {
        self.disconnected
    }

    /// Whether `peer` has identified itself as a peer of this network (and
    /// is still connected).
    pub fn is_verified(&self, peer: &PeerId) -> bool {
        self.verified.contains(peer)
    }

    fn arm(&mut self) {
        let next = self.pending.values().min().copied();
        self.timer = next.map(|at| Box::pin(tokio::time::sleep_until(at)));
    }

    fn on_identified(&mut self, peer: PeerId, version: &str) {
        if version == self.protocol_version {
            self.pending.remove(&peer);
            self.verified.insert(peer);
        } else if self.pending.remove(&peer).is_some() || self.verified.remove(&peer) {
            debug!(%peer, %version, "peer identified as one of another network; disconnecting");
            self.disconnected += 1;
            self.to_close.push_back(peer);
        }
    }
}

impl NetworkBehaviour for IdentifyGate {
    type ConnectionHandler = <identify::Behaviour as NetworkBehaviour>::ConnectionHandler;
    type ToSwarm = identify::Event;

    fn handle_pending_inbound_connection(
        &mut self,
        connection_id: ConnectionId,
        local_addr: &Multiaddr,
        remote_addr: &Multiaddr,
    ) -> Result<(), ConnectionDenied> {
        self.inner
            .handle_pending_inbound_connection(connection_id, local_addr, remote_addr)
    }

    fn handle_established_inbound_connection(
        &mut self,
        connection_id: ConnectionId,
        peer: PeerId,
        local_addr: &Multiaddr,
        remote_addr: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        self.inner.handle_established_inbound_connection(
            connection_id,
            peer,
            local_addr,
            remote_addr,
        )
    }

    fn handle_pending_outbound_connection(
        &mut self,
        connection_id: ConnectionId,
        maybe_peer: Option<PeerId>,
        addresses: &[Multiaddr],
        effective_role: Endpoint,
    ) -> Result<Vec<Multiaddr>, ConnectionDenied> {
        self.inner.handle_pending_outbound_connection(
            connection_id,
            maybe_peer,
            addresses,
            effective_role,
        )
    }

    fn handle_established_outbound_connection(
        &mut self,
        connection_id: ConnectionId,
        peer: PeerId,
        addr: &Multiaddr,
        role_override: Endpoint,
        port_use: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        self.inner.handle_established_outbound_connection(
            connection_id,
            peer,
            addr,
            role_override,
            port_use,
        )
    }

    fn on_swarm_event(&mut self, event: FromSwarm) {
        match &event {
            FromSwarm::ConnectionEstablished(e)
                if !self.verified.contains(&e.peer_id)
                    && !self.pending.contains_key(&e.peer_id) =>
            {
                self.pending
                    .insert(e.peer_id, Instant::now() + self.timeout);
                if self.timer.is_none() {
                    self.arm();
                }
            }
            FromSwarm::ConnectionClosed(e) if e.remaining_established == 0 => {
                self.pending.remove(&e.peer_id);
                self.verified.remove(&e.peer_id);
            }
            _ => {}
        }
        self.inner.on_swarm_event(event);
    }

    fn on_connection_handler_event(
        &mut self,
        peer_id: PeerId,
        connection_id: ConnectionId,
        event: THandlerOutEvent<Self>,
    ) {
        self.inner
            .on_connection_handler_event(peer_id, connection_id, event);
    }

    fn poll(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<ToSwarm<Self::ToSwarm, THandlerInEvent<Self>>> {
        if let Poll::Ready(event) = self.inner.poll(cx) {
            if let ToSwarm::GenerateEvent(identify::Event::Received { peer_id, info, .. }) = &event
            {
                let version = info.protocol_version.clone();
                self.on_identified(*peer_id, &version);
            }
            return Poll::Ready(event);
        }
        while let Some(timer) = self.timer.as_mut() {
            if timer.as_mut().poll(cx).is_pending() {
                break;
            }
            let now = Instant::now();
            let expired: Vec<PeerId> = self
                .pending
                .iter()
                .filter(|(_, at)| **at <= now)
                .map(|(peer, _)| *peer)
                .collect();
            for peer in expired {
                self.pending.remove(&peer);
                debug!(%peer, timeout = ?self.timeout, "peer did not identify as one of this network in time; disconnecting");
                self.disconnected += 1;
                self.to_close.push_back(peer);
            }
            self.arm();
        }
        if let Some(peer_id) = self.to_close.pop_front() {
            return Poll::Ready(ToSwarm::CloseConnection {
                peer_id,
                connection: CloseConnection::All,
            });
        }
        Poll::Pending
    }
}

/// Kademlia that is not told about new listen addresses while no peer is
/// connected.
///
/// Kademlia starts a bootstrap on a new listen address when it has no
/// connection, which for a peer starting a network alone only logs
/// `WARN Failed to trigger bootstrap: No known peers`. Exploration is driven
/// by the acquaintance core anyway; Kademlia still bootstraps by itself when
/// peers enter its routing table.
pub struct QuietKad {
    inner: kad::Behaviour<kad::store::MemoryStore>,
    connections: usize,
}

impl QuietKad {
    /// Wraps `inner`.
    pub fn new(inner: kad::Behaviour<kad::store::MemoryStore>) -> Self {
        Self {
            inner,
            connections: 0,
        }
    }
}

impl Deref for QuietKad {
    type Target = kad::Behaviour<kad::store::MemoryStore>;

    fn deref(&self) -> &Self::Target {
        &self.inner
    }
}

impl DerefMut for QuietKad {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.inner
    }
}

impl NetworkBehaviour for QuietKad {
    type ConnectionHandler =
        <kad::Behaviour<kad::store::MemoryStore> as NetworkBehaviour>::ConnectionHandler;
    type ToSwarm = kad::Event;

    fn handle_pending_inbound_connection(
        &mut self,
        connection_id: ConnectionId,
        local_addr: &Multiaddr,
        remote_addr: &Multiaddr,
    ) -> Result<(), ConnectionDenied> {
        self.inner
            .handle_pending_inbound_connection(connection_id, local_addr, remote_addr)
    }

    fn handle_established_inbound_connection(
        &mut self,
        connection_id: ConnectionId,
        peer: PeerId,
        local_addr: &Multiaddr,
        remote_addr: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        self.inner.handle_established_inbound_connection(
            connection_id,
            peer,
            local_addr,
            remote_addr,
        )
    }

    fn handle_pending_outbound_connection(
        &mut self,
        connection_id: ConnectionId,
        maybe_peer: Option<PeerId>,
        addresses: &[Multiaddr],
        effective_role: Endpoint,
    ) -> Result<Vec<Multiaddr>, ConnectionDenied> {
        self.inner.handle_pending_outbound_connection(
            connection_id,
            maybe_peer,
            addresses,
            effective_role,
        )
    }

    fn handle_established_outbound_connection(
        &mut self,
        connection_id: ConnectionId,
        peer: PeerId,
        addr: &Multiaddr,
        role_override: Endpoint,
        port_use: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        self.inner.handle_established_outbound_connection(
            connection_id,
            peer,
            addr,
            role_override,
            port_use,
        )
    }

    fn on_swarm_event(&mut self, event: FromSwarm) {
        match &event {
            FromSwarm::ConnectionEstablished(_) => self.connections += 1,
            FromSwarm::ConnectionClosed(_) => self.connections = self.connections.saturating_sub(1),
            FromSwarm::NewListenAddr(_) if self.connections == 0 => return,
            _ => {}
        }
        self.inner.on_swarm_event(event);
    }

    fn on_connection_handler_event(
        &mut self,
        peer_id: PeerId,
        connection_id: ConnectionId,
        event: THandlerOutEvent<Self>,
    ) {
        self.inner
            .on_connection_handler_event(peer_id, connection_id, event);
    }

    fn poll(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<ToSwarm<Self::ToSwarm, THandlerInEvent<Self>>> {
        self.inner.poll(cx)
    }
}
