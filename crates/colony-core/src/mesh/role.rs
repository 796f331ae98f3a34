//! One mesh peer's core, whatever its role: what a driver (or the
//! simulator) holds per peer and feeds with the same inputs.

use std::time::Instant;

use super::{CellId, Client, MeshMsg, MeshOutput, Relay, Sensor};
use crate::PeerKey;

/// The core of one mesh peer: a super-peer, a sensor or a client.
pub enum MeshRole<P: PeerKey> {
    /// A super-peer of a cell.
    Relay(Box<Relay<P>>),
    /// A peer producing streams.
    Sensor(Box<Sensor<P>>),
    /// A peer consuming streams.
    Client(Box<Client<P>>),
}

impl<P: PeerKey> MeshRole<P> {
    /// `super-peer`, `sensor` or `client`.
    pub fn name(&self) -> &'static str {
        match self {
            MeshRole::Relay(_) => "super-peer",
            MeshRole::Sensor(_) => "sensor",
            MeshRole::Client(_) => "client",
        }
    }

    /// A message from `from`.
    pub fn handle(&mut self, now: Instant, from: P, msg: MeshMsg<P>) {
        match self {
            MeshRole::Relay(c) => c.handle(now, from, msg),
            MeshRole::Sensor(c) => c.handle(now, from, msg),
            MeshRole::Client(c) => c.handle(now, from, msg),
        }
    }

    /// The next thing to do.
    pub fn poll(&mut self) -> Option<MeshOutput<P>> {
        match self {
            MeshRole::Relay(c) => c.poll(),
            MeshRole::Sensor(c) => c.poll(),
            MeshRole::Client(c) => c.poll(),
        }
    }

    /// When to call [`MeshRole::handle_timeout`] next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self {
            MeshRole::Relay(c) => c.poll_timeout(),
            MeshRole::Sensor(c) => c.poll_timeout(),
            MeshRole::Client(c) => c.poll_timeout(),
        }
    }

    /// Timers due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        match self {
            MeshRole::Relay(c) => c.handle_timeout(now),
            MeshRole::Sensor(c) => c.handle_timeout(now),
            MeshRole::Client(c) => c.handle_timeout(now),
        }
    }

    /// Membership declared `peer` failed.
    pub fn peer_failed(&mut self, now: Instant, peer: &P) {
        match self {
            MeshRole::Relay(c) => c.peer_failed(now, peer),
            MeshRole::Sensor(c) => c.peer_failed(now, peer),
            MeshRole::Client(c) => c.peer_failed(now, peer),
        }
    }

    /// Discovery's answer to a child's `RequestCell`: the cell to bind
    /// under and its members (a client binds to no parent: ignored).
    pub fn parent_found(&mut self, now: Instant, cell: CellId, members: Vec<P>) {
        match self {
            MeshRole::Relay(c) => c.parent_found(now, cell, members),
            MeshRole::Sensor(c) => c.parent_found(now, cell, members),
            MeshRole::Client(_) => {}
        }
    }

    /// The parent a child is bound to (none for a root super-peer or a
    /// client).
    pub fn parent(&self) -> Option<&P> {
        match self {
            MeshRole::Relay(c) => c.uplink().and_then(|u| u.parent()),
            MeshRole::Sensor(c) => c.uplink().parent(),
            MeshRole::Client(_) => None,
        }
    }
}
