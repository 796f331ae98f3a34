//! One peer of the mesh with its join protocol (seed 001 Listings 1–3): a
//! [`MeshRole`] core and the cell records it finds its place through.
//!
//! Every peer, whatever its role, holds replicas of some cell records: the
//! record of cell `c` lives on the home of [`CellId::key`] (the generic
//! [`Homes`] core does the consensus), so there is no registry and no
//! second agreement protocol.
//!
//! - **RequestCell / BindToCell** for a super-peer: it asks the cells
//!   breadth-first (`0`, `01`..`0k`, `011`, ...) to take it, each through
//!   the primary of its record's home (`JoinCell`). The primary admits it
//!   unless the cell is full; the join is acknowledged (`CellJoined`) only
//!   once a majority of the home holds it, so two newcomers racing for the
//!   last place cannot both get it. A cell nobody joined yet is founded by
//!   the peer closest to its key when the first newcomer asks for it. Once
//!   in a cell, a super-peer below the root asks the parent cell's record
//!   for its members (`GetCell`) and binds to one of them.
//! - A sensor binds under a given cell, a client subscribes at the root's
//!   members, both found the same way.
//! - **Changes** of a cell (a join, a member declared failed) are
//!   committed by its record's primary and then sent to every member
//!   (`CellInfo`), which gives its relay core the new order successors are
//!   read from.
//! - **Slow rebind** ([`MeshOutput::FindParent`]): the nearest cell at or
//!   above the lost one that has live members.
//! - **The root re-formed from below**: a super-peer whose slow rebind
//!   finds no live member up to the root asks the root's record to admit
//!   it (`JoinCell`); once admitted it becomes a root super-peer, keeping
//!   its children and the frames it holds (held for the clients until
//!   they subscribe again), and leaves its former cell (`LeaveCell`). The
//!   other orphans bind under it; clients ask for the root's members every
//!   [`MeshPeerConfig::refresh`] and subscribe at newcomers.
//! - **Renewal**: a peer wrongly declared dead (paused, overloaded) and
//!   alive again was forgotten by those who declared it: its cell's
//!   record dropped it, its siblings stopped copying to it, a root stopped
//!   delivering to it. Every [`MeshPeerConfig::refresh`] a client
//!   subscribes at every root member again, and a super-peer asks its
//!   cell's record to admit it again (`JoinCell`, answered at once while
//!   it is a member) and takes the members listed. Its children and
//!   parent need nothing: a parent refuses frames from a child it
//!   dropped, which then binds again.
//!
//! Requests are retried every [`MeshPeerConfig::request_timeout`] at the
//! then closest peer of the key, so a lost message or a primary that
//! changed delays a join and never stops it. No IO here.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::cell::{CellEffect, CellRecord, JoinError};
use super::sensor::SendError;
use super::{
    CellId, Client, FtPolicy, MeshConfig, MeshEvent, MeshMsg, MeshOutput, MeshRole, Relay, Sensor,
    StreamClass,
};
use crate::home::{Closeness, HomeConfig, HomeMsgOf, HomeOutput, Homes};
use crate::PeerKey;

/// The key of a cell record's home ([`CellId::key`]).
pub type CellKey = [u8; 32];

/// The home messages of cell records.
pub type CellHomeMsg<P> = HomeMsgOf<CellKey, P, CellRecord<P>>;

/// Most joins a cell record's primary holds while they commit or while the
/// cell is being founded; further ones are answered on the next retry.
const MAX_PENDING_JOINS: usize = 256;

/// Shape of the tree and timing of the join protocol.
#[derive(Clone, Debug)]
pub struct MeshPeerConfig {
    /// The data-plane cores' limits and timing.
    pub mesh: MeshConfig,
    /// Children of each cell (`k`).
    pub span: u8,
    /// Super-peers of each cell.
    pub peers_per_cell: u8,
    /// Deepest level a super-peer joins at (the root is level 0); a
    /// newcomer that finds every cell down to it full is refused.
    pub max_level: usize,
    /// Peers holding each cell record.
    pub record_home_size: u8,
    /// How long a request (`JoinCell`, `GetCell`) waits for its answer
    /// before it is asked again of the then closest peer of the key.
    pub request_timeout: Duration,
    /// How often a peer renews its place in the mesh, which a peer that
    /// wrongly declared it dead (a pause, an overloaded host) forgot:
    ///
    /// - a client asks again for the root's members and subscribes at
    ///   each of them again (also at super-peers that joined the root
    ///   since, after the root cell died and was re-formed from below);
    /// - a super-peer asks its cell's record to admit it again (answered
    ///   at once if it is still a member) and takes the members the
    ///   answer lists (a sibling it had declared dead is one again).
    pub refresh: Duration,
    /// How long bookkeeping off the frames' path (acknowledgements, FT
    /// copies and replies, see [`MeshPeerMsg::deferrable`]) may wait for
    /// more of its kind to the same peer, to travel as one frame: fewer
    /// frames, fewer wake-ups of the cell's other members. Zero batches
    /// only what one round of input produced together. The batches travel
    /// outside the pipes (the mesh sends again what must arrive), so they
    /// cost no per-hop acknowledgement either.
    pub batch_delay: Duration,
    /// The cell records' homes.
    pub home: HomeConfig,
}

impl Default for MeshPeerConfig {
    fn default() -> Self {
        MeshPeerConfig {
            mesh: MeshConfig::default(),
            span: 2,
            peers_per_cell: 2,
            max_level: 6,
            record_home_size: 3,
            request_timeout: Duration::from_millis(500),
            refresh: Duration::from_secs(2),
            batch_delay: Duration::from_millis(20),
            home: HomeConfig::default(),
        }
    }
}

/// A message of the mesh between two peers.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(bound(serialize = "P: PeerKey", deserialize = "P: PeerKey"))]
pub enum MeshPeerMsg<P: PeerKey> {
    /// The data plane, for the role's core.
    Data(MeshMsg<P>),
    /// Replication of a cell record among its home.
    Record(Box<CellHomeMsg<P>>),
    /// Newcomer → primary of the cell's record: admit me as a super-peer.
    JoinCell {
        /// The cell.
        cell: CellId,
    },
    /// Primary → newcomer: admitted; the members in join order.
    CellJoined {
        /// The cell.
        cell: CellId,
        /// Its members, the newcomer last.
        members: Vec<P>,
    },
    /// Primary → newcomer: the cell is full; ask the next one.
    CellFull {
        /// The cell.
        cell: CellId,
    },
    /// Member → primary of the cell's record: I moved to another cell
    /// (up to an empty root); take me out.
    LeaveCell {
        /// The cell left.
        cell: CellId,
    },
    /// Any peer → primary of the cell's record: who are its members?
    GetCell {
        /// The cell.
        cell: CellId,
    },
    /// The answer to `GetCell`, and the primary's notice to every member
    /// once a change is committed: the live members in join order (empty:
    /// no record, or none live).
    CellInfo {
        /// The cell.
        cell: CellId,
        /// Its live members in join order.
        members: Vec<P>,
    },
    /// A peer that does not hold the cell's record as its primary: ask
    /// `primary` (or, if unknown, the then closest peer) again.
    NotPrimary {
        /// The cell.
        cell: CellId,
        /// Where the record's primary is, if known.
        primary: Option<P>,
    },
}

impl<P: PeerKey> MeshPeerMsg<P> {
    /// The class whose priority the message travels with: data frames
    /// their own, everything else the mesh's.
    pub fn class(&self) -> StreamClass {
        match self {
            MeshPeerMsg::Data(msg) => msg.class(),
            _ => StreamClass::Mesh,
        }
    }

    /// Whether the message may wait [`MeshPeerConfig::batch_delay`] to
    /// travel with others to the same peer: see [`MeshMsg::deferrable`].
    pub fn deferrable(&self) -> bool {
        matches!(self, MeshPeerMsg::Data(msg) if msg.deferrable())
    }

    /// Its name, for logs and counters.
    pub fn name(&self) -> &'static str {
        match self {
            MeshPeerMsg::Data(msg) => msg.name(),
            MeshPeerMsg::Record(_) => "Record",
            MeshPeerMsg::JoinCell { .. } => "JoinCell",
            MeshPeerMsg::CellJoined { .. } => "CellJoined",
            MeshPeerMsg::CellFull { .. } => "CellFull",
            MeshPeerMsg::LeaveCell { .. } => "LeaveCell",
            MeshPeerMsg::GetCell { .. } => "GetCell",
            MeshPeerMsg::CellInfo { .. } => "CellInfo",
            MeshPeerMsg::NotPrimary { .. } => "NotPrimary",
        }
    }
}

/// What the mesh peer wants done, or tells.
#[derive(Clone, Debug)]
pub enum MeshPeerOutput<P: PeerKey> {
    /// Send `msg` to `to` with the priority of `class`.
    Send {
        /// The receiver.
        to: P,
        /// The message.
        msg: MeshPeerMsg<P>,
        /// Its class ([`MeshPeerMsg::class`]).
        class: StreamClass,
    },
    /// Something to tell.
    Notice(MeshNotice<P>),
}

/// What the mesh peer tells its driver.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MeshNotice<P> {
    /// This super-peer is a member of `cell`.
    InCell {
        /// The cell.
        cell: CellId,
        /// Its members in join order.
        members: Vec<P>,
    },
    /// Every cell down to [`MeshPeerConfig::max_level`] is full: this
    /// super-peer has no place (it asks again after a while).
    NoCell,
    /// Something the role's core told.
    Event(MeshEvent<P>),
}

/// Why a mesh command was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MeshPeerError {
    /// The peer runs a mesh role already.
    #[error("this peer is a mesh {0} already")]
    HasRole(&'static str),
    /// Only a sensor sends frames.
    #[error("only a sensor sends frames; this peer is {0}")]
    NotASensor(&'static str),
    /// The sensor refused the frame.
    #[error(transparent)]
    Send(#[from] SendError),
    /// A cell outside the tree's span or depth.
    #[error("cell {cell} is not in a tree of span {span} and {levels} levels")]
    CellOutsideTree {
        /// The cell.
        cell: CellId,
        /// The tree's span.
        span: u8,
        /// Its levels.
        levels: usize,
    },
    /// A class the client cannot ask for.
    #[error("class {0} carries no stream (ask for events, audio or video)")]
    NotAStream(StreamClass),
}

/// What an outstanding request is for.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Purpose {
    /// A super-peer asks `cell` to admit it (breadth-first).
    Join,
    /// A super-peer in a cell asks for its parent cell's members.
    Parent,
    /// A sensor asks for the members of the cell it binds under.
    SensorBind,
    /// A child's parent cell is gone: the nearest cell at or above it with
    /// live members.
    Rebind,
    /// A client asks for the root's members.
    Subscribe,
    /// A super-peer whose rebind found the root empty asks the root to
    /// admit it (the root cell is re-formed from below).
    MoveUp,
    /// A super-peer in a cell asks its record to admit it again (see
    /// [`MeshPeerConfig::refresh`]).
    Renew,
}

/// The request in flight.
#[derive(Clone, Debug)]
struct Request<P> {
    purpose: Purpose,
    cell: CellId,
    /// Where it was sent (a `NotPrimary` naming a primary redirects it).
    to: P,
    retry_at: Instant,
}

/// What this peer counted.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MeshPeerStats {
    /// Requests sent again after `request_timeout`.
    pub requests_retried: u64,
    /// Joins admitted by records this peer is the primary of.
    pub joins_admitted: u64,
    /// Joins refused because the cell was full.
    pub joins_refused_full: u64,
    /// Messages naming a cell outside the tree, answered or dropped.
    pub bad_cells: u64,
    /// Answers that matched no request (late, duplicated or forged).
    pub unexpected_answers: u64,
    /// Renewals (see [`MeshPeerConfig::refresh`]) that found this
    /// super-peer dropped from its cell and the cell full: it joined
    /// the mesh again as a newcomer.
    #[serde(default)]
    pub renewals_refused: u64,
}

/// One peer of the mesh: its role's core, the cell records it holds, and
/// its requests. See the module docs.
pub struct MeshPeer<P: PeerKey> {
    me: P,
    config: MeshPeerConfig,
    records: Homes<CellKey, P, CellRecord<P>>,
    live: BTreeSet<P>,
    role: Option<MeshRole<P>>,
    /// The fault-tolerance policy of this peer's role.
    policy: FtPolicy,
    /// The super-peer's cell once admitted.
    cell: Option<CellId>,
    request: Option<Request<P>>,
    /// Which of the parent cell's members a child tries first (spreads the
    /// children of a cell over its members).
    preferred: usize,
    /// Primary: joins admitted and not yet committed, or waiting for the
    /// cell to be founded, by record key: (newcomer, cell).
    joins: BTreeMap<CellKey, Vec<(P, CellId)>>,
    /// A client or a super-peer in a cell: when it renews its place (see
    /// [`MeshPeerConfig::refresh`]).
    refresh_at: Option<Instant>,
    /// Messages this peer sent itself, handled before the entry point
    /// returns.
    loopback: VecDeque<MeshPeerMsg<P>>,
    outputs: VecDeque<MeshPeerOutput<P>>,
    stats: MeshPeerStats,
}

impl<P: PeerKey> MeshPeer<P> {
    /// The mesh side of peer `me`; `key_of` places a peer in the key
    /// space (the record of a cell lives on the peers closest to its key).
    pub fn new(me: P, config: MeshPeerConfig, key_of: fn(&P) -> [u8; 32], seed: u64) -> Self {
        let closeness: Closeness<CellKey, P> =
            Box::new(move |key: &CellKey, p: &P| first_half(key) ^ first_half(&key_of(p)));
        MeshPeer {
            records: Homes::new(me.clone(), config.home.clone(), closeness, seed ^ 0xce11),
            me,
            config,
            live: BTreeSet::new(),
            role: None,
            policy: FtPolicy::FtAll,
            cell: None,
            request: None,
            preferred: 0,
            joins: BTreeMap::new(),
            refresh_at: None,
            loopback: VecDeque::new(),
            outputs: VecDeque::new(),
            stats: MeshPeerStats::default(),
        }
    }

    /// The role's core, once a role is taken.
    pub fn role(&self) -> Option<&MeshRole<P>> {
        self.role.as_ref()
    }

    /// The super-peer's cell, once admitted.
    pub fn cell(&self) -> Option<&CellId> {
        self.cell.as_ref()
    }

    /// What it counted.
    pub fn stats(&self) -> &MeshPeerStats {
        &self.stats
    }

    /// The record of `cell` as held here (primary or backup).
    pub fn record(&self, cell: &CellId) -> Option<&CellRecord<P>> {
        self.records.get(&cell.key()).map(|home| home.state())
    }

    /// The primary this peer follows for `cell`'s record, if it holds a
    /// replica of it.
    pub fn record_primary(&self, cell: &CellId) -> Option<&P> {
        self.records
            .get(&cell.key())
            .and_then(|home| home.primary())
    }

    /// Whether `cell` belongs to the configured tree.
    fn in_tree(&self, cell: &CellId) -> bool {
        cell.level() <= self.config.max_level
            && cell.digits().iter().all(|d| *d <= self.config.span)
    }

    fn check_cell(&self, cell: &CellId) -> Result<(), MeshPeerError> {
        if self.in_tree(cell) {
            Ok(())
        } else {
            Err(MeshPeerError::CellOutsideTree {
                cell: cell.clone(),
                span: self.config.span,
                levels: self.config.max_level + 1,
            })
        }
    }

    /// The role taken: `super-peer` (from its first request to a cell on,
    /// before any cell admitted it), `sensor` or `client`.
    pub fn role_name(&self) -> Option<&'static str> {
        match (&self.role, &self.request) {
            (Some(role), _) => Some(role.name()),
            (None, Some(r)) if r.purpose == Purpose::Join => Some("super-peer"),
            _ => None,
        }
    }

    fn no_role(&self) -> Result<(), MeshPeerError> {
        match self.role_name() {
            Some(name) => Err(MeshPeerError::HasRole(name)),
            None => Ok(()),
        }
    }

    /// Becomes a super-peer replicating the classes of `policy`: asks the
    /// cells breadth-first to admit it ([`MeshPeerOutput::InCell`] once
    /// one did).
    pub fn start_super_peer(
        &mut self,
        now: Instant,
        policy: FtPolicy,
    ) -> Result<(), MeshPeerError> {
        self.no_role()?;
        self.policy = policy;
        self.ask(now, Purpose::Join, CellId::root());
        self.settle(now);
        Ok(())
    }

    /// Becomes a sensor streaming under `policy`, bound under `cell`, the
    /// `preferred`-th of its members first.
    pub fn start_sensor(
        &mut self,
        now: Instant,
        policy: FtPolicy,
        cell: CellId,
        preferred: usize,
    ) -> Result<(), MeshPeerError> {
        self.no_role()?;
        self.check_cell(&cell)?;
        let sensor = Sensor::new(self.me.clone(), self.config.mesh.clone(), policy);
        self.role = Some(MeshRole::Sensor(Box::new(sensor)));
        self.policy = policy;
        self.preferred = preferred;
        self.ask(now, Purpose::SensorBind, cell);
        self.settle(now);
        Ok(())
    }

    /// Becomes a client of `classes`, subscribed at the root's members.
    pub fn start_client(
        &mut self,
        now: Instant,
        classes: Vec<StreamClass>,
    ) -> Result<(), MeshPeerError> {
        self.no_role()?;
        if let Some(class) = classes.iter().find(|c| !StreamClass::DATA.contains(c)) {
            return Err(MeshPeerError::NotAStream(*class));
        }
        let client = Client::new(self.config.mesh.clone(), classes);
        self.role = Some(MeshRole::Client(Box::new(client)));
        self.ask(now, Purpose::Subscribe, CellId::root());
        self.settle(now);
        Ok(())
    }

    /// A sensor streams a frame; its number in its class's stream.
    pub fn send_frame(
        &mut self,
        now: Instant,
        class: StreamClass,
        payload: Vec<u8>,
    ) -> Result<u64, MeshPeerError> {
        match self.role.as_mut() {
            Some(MeshRole::Sensor(sensor)) => {
                let seq = sensor.send(now, class, payload)?;
                self.drain_role(now);
                self.settle(now);
                Ok(seq)
            }
            _ => Err(MeshPeerError::NotASensor(
                self.role_name().unwrap_or("no mesh peer"),
            )),
        }
    }

    /// Membership sees `peer` live (or no longer suspected).
    pub fn peer_alive(&mut self, now: Instant, peer: P) {
        // Called on every change of a live member's record (its statistics
        // too): nothing to do for one already live here.
        if self.live.contains(&peer) {
            return;
        }
        self.records.set_lost(peer.clone(), None);
        self.records.update_member(peer.clone(), true);
        self.live.insert(peer);
        self.records.refresh(now);
        self.drain_records(now);
        self.settle(now);
    }

    /// Membership declared `peer` failed (dead, or gone): the role's core
    /// hands its frames over or rebinds, and the records it was a member
    /// of drop it.
    pub fn peer_failed(&mut self, now: Instant, peer: P) {
        if peer == self.me {
            return;
        }
        self.live.remove(&peer);
        self.records.set_lost(peer.clone(), Some(now));
        self.records.update_member(peer.clone(), false);
        if let Some(role) = self.role.as_mut() {
            role.peer_failed(now, &peer);
        }
        self.drain_role(now);
        self.records.refresh(now);
        self.drain_records(now);
        let keys: Vec<CellKey> = self.records.keys().copied().collect();
        for key in keys {
            self.drop_failed_members(now, key);
        }
        if self.request.as_ref().is_some_and(|r| r.to == peer) {
            self.retry(now);
        }
        self.settle(now);
    }

    /// Primary of `key`: members no longer live leave the record.
    fn drop_failed_members(&mut self, now: Instant, key: CellKey) {
        let Some(home) = self.records.get_mut(&key).filter(|h| h.is_primary()) else {
            return;
        };
        let failed: Vec<P> = home
            .state()
            .members()
            .iter()
            .filter(|m| **m != self.me && !self.live.contains(*m))
            .cloned()
            .collect();
        let effects: Vec<CellEffect<P>> = failed
            .iter()
            .filter_map(|m| home.state_mut().leave(m))
            .collect();
        if !effects.is_empty() {
            let _ = self.records.propose(now, key, effects);
            self.drain_records(now);
        }
    }

    /// A message from `from`.
    pub fn handle(&mut self, now: Instant, from: P, msg: MeshPeerMsg<P>) {
        self.handle_one(now, from, msg);
        self.settle(now);
    }

    /// Handles what this peer sent itself meanwhile.
    fn settle(&mut self, now: Instant) {
        // Bounded: each message handled here was queued by a handler of a
        // message from another peer or a timer, and a cell record's own
        // exchanges end once committed.
        while let Some(msg) = self.loopback.pop_front() {
            self.handle_one(now, self.me.clone(), msg);
        }
    }

    fn handle_one(&mut self, now: Instant, from: P, msg: MeshPeerMsg<P>) {
        match msg {
            MeshPeerMsg::Data(mut msg) => {
                // A parent lists its cell as it sees it: members this peer
                // already declared dead are no fast rebind's choice (trying
                // one costs every bind attempt's timeout).
                if let MeshMsg::Bound { members, .. } = &mut msg {
                    members.retain(|m| *m == from || self.live.contains(m));
                }
                if let Some(role) = self.role.as_mut() {
                    role.handle(now, from, msg);
                    self.drain_role(now);
                }
            }
            MeshPeerMsg::Record(msg) => {
                self.records.handle(now, from, *msg);
                self.drain_records(now);
            }
            MeshPeerMsg::JoinCell { cell } => self.on_join_cell(now, from, cell),
            MeshPeerMsg::GetCell { cell } => self.on_get_cell(from, cell),
            MeshPeerMsg::CellJoined { cell, members } => {
                if self.awaits(&from, Purpose::MoveUp, &cell) {
                    self.request = None;
                    self.moved_up(now, cell, members);
                } else if self.awaits(&from, Purpose::Renew, &cell) {
                    self.request = None;
                    self.renewed(cell, members);
                } else if self.answers(&from, Purpose::Join, &cell) {
                    self.joined(now, cell, members);
                }
            }
            MeshPeerMsg::CellFull { cell } => {
                if self.awaits(&from, Purpose::MoveUp, &cell) {
                    // Another super-peer re-formed the root first: bind
                    // under it instead.
                    self.ask(now, Purpose::Rebind, cell);
                } else if self.awaits(&from, Purpose::Renew, &cell) {
                    // Dropped, and replaced meanwhile: a newcomer again.
                    // Its children, refused, bind elsewhere.
                    self.stats.renewals_refused += 1;
                    self.ask(now, Purpose::Join, CellId::root());
                } else if self.answers(&from, Purpose::Join, &cell) {
                    self.next_cell(now, cell);
                }
            }
            MeshPeerMsg::LeaveCell { cell } => self.on_leave_cell(now, from, cell),
            MeshPeerMsg::CellInfo { cell, members } => self.on_cell_info(now, from, cell, members),
            MeshPeerMsg::NotPrimary { cell, primary } => {
                let Some(request) = self
                    .request
                    .as_mut()
                    .filter(|r| r.to == from && r.cell == cell)
                else {
                    self.stats.unexpected_answers += 1;
                    return;
                };
                // Without a live primary named, asked again at the timeout,
                // of the then closest peer.
                let me = &self.me;
                let live = &self.live;
                let usable = |p: &P| *p != from && (p == me || live.contains(p));
                if let Some(primary) = primary.filter(usable) {
                    request.to = primary;
                    request.retry_at = now + self.config.request_timeout;
                    let to = request.to.clone();
                    let msg = request_msg(request);
                    self.send(to, msg);
                }
            }
        }
    }

    /// Whether the request in flight is for `purpose` about `cell`, sent
    /// to `from`.
    fn awaits(&self, from: &P, purpose: Purpose, cell: &CellId) -> bool {
        self.request
            .as_ref()
            .is_some_and(|r| r.purpose == purpose && r.cell == *cell && r.to == *from)
    }

    /// Whether an answer from `from` about `cell` is the one awaited for
    /// `purpose` (then the request is done).
    fn answers(&mut self, from: &P, purpose: Purpose, cell: &CellId) -> bool {
        let awaited = self.awaits(from, purpose, cell);
        if awaited {
            self.request = None;
        } else {
            self.stats.unexpected_answers += 1;
        }
        awaited
    }

    fn on_join_cell(&mut self, now: Instant, from: P, cell: CellId) {
        if !self.in_tree(&cell) {
            self.stats.bad_cells += 1;
            return;
        }
        let key = cell.key();
        match self.records.get(&key) {
            Some(home) if home.is_primary() => {
                if home.state().cell() != &cell {
                    self.stats.bad_cells += 1;
                    return;
                }
                self.admit(now, key, from, cell);
            }
            Some(home) => {
                let primary = home.primary().cloned();
                self.send(from, MeshPeerMsg::NotPrimary { cell, primary });
            }
            None => {
                if let Some(closest) = self.closer_peer(&key) {
                    let primary = Some(closest);
                    self.send(from, MeshPeerMsg::NotPrimary { cell, primary });
                    return;
                }
                // The first newcomer for this cell: found its record here.
                self.queue_join(key, from, cell);
                self.records.found(now, key, self.config.record_home_size);
                self.drain_records(now);
            }
        }
    }

    /// Primary of `cell`'s record: `from` moved to another cell and leaves
    /// this one (the change reaches the members once committed). Anyone
    /// else: dropped (the member asks the closest peer of the key, which
    /// is the primary once the home has settled).
    fn on_leave_cell(&mut self, now: Instant, from: P, cell: CellId) {
        if !self.in_tree(&cell) {
            self.stats.bad_cells += 1;
            return;
        }
        let key = cell.key();
        let Some(home) = self.records.get_mut(&key).filter(|h| h.is_primary()) else {
            self.stats.unexpected_answers += 1;
            return;
        };
        if let Some(effect) = home.state_mut().leave(&from) {
            let _ = self.records.propose(now, key, vec![effect]);
            self.drain_records(now);
        }
    }

    /// Admitted to the empty root from `cell`: the relay becomes a root
    /// super-peer, keeping its children and the frames it holds, and
    /// leaves its former cell's record.
    fn moved_up(&mut self, now: Instant, root: CellId, members: Vec<P>) {
        let members = self.live_members(&members);
        let Some(MeshRole::Relay(relay)) = self.role.as_mut() else {
            return;
        };
        let former = relay.cell().clone();
        relay.move_to_root(now, members.clone());
        self.cell = Some(root.clone());
        self.refresh_at = Some(now + self.config.refresh);
        let to = self.closest(&former);
        self.send(to, MeshPeerMsg::LeaveCell { cell: former });
        self.notify(MeshNotice::InCell {
            cell: root,
            members,
        });
        self.drain_role(now);
    }

    fn queue_join(&mut self, key: CellKey, from: P, cell: CellId) -> bool {
        let queued: usize = self.joins.values().map(Vec::len).sum();
        let joins = self.joins.entry(key).or_default();
        if joins.iter().any(|(p, _)| *p == from) {
            return true;
        }
        if queued >= MAX_PENDING_JOINS {
            return false;
        }
        joins.push((from, cell));
        true
    }

    /// Primary of `key`: admits `from` unless the cell is full; answered
    /// once the join is committed.
    fn admit(&mut self, now: Instant, key: CellKey, from: P, cell: CellId) {
        let Some(home) = self.records.get_mut(&key) else {
            return;
        };
        let queued: usize = self.joins.values().map(Vec::len).sum();
        if queued >= MAX_PENDING_JOINS {
            // Too many in flight: the newcomer asks again later.
            return;
        }
        match home.state_mut().join(from.clone()) {
            Ok(effect) => {
                self.queue_join(key, from, cell);
                self.stats.joins_admitted += 1;
                let _ = self.records.propose(now, key, vec![effect]);
                self.drain_records(now);
            }
            Err(JoinError::AlreadyMember { .. }) => {
                let members = home.state().members().to_vec();
                // Committed already unless its join is still in flight.
                let in_flight = self
                    .joins
                    .get(&key)
                    .is_some_and(|j| j.iter().any(|(p, _)| *p == from));
                if !in_flight {
                    self.send(from, MeshPeerMsg::CellJoined { cell, members });
                }
            }
            Err(JoinError::CellFull { .. }) => {
                self.stats.joins_refused_full += 1;
                self.send(from, MeshPeerMsg::CellFull { cell });
            }
        }
    }

    fn on_get_cell(&mut self, from: P, cell: CellId) {
        if !self.in_tree(&cell) {
            self.stats.bad_cells += 1;
            self.send(
                from,
                MeshPeerMsg::CellInfo {
                    cell,
                    members: Vec::new(),
                },
            );
            return;
        }
        let key = cell.key();
        match self.records.get(&key) {
            // Any replica answers, the primary's or a backup's: finding a
            // parent needs no commit (the parent accepts or refuses the
            // bind, and the asker drops members it knows dead), while a
            // redirect to the primary could name a peer the asker already
            // declared dead and this one not yet, or one that died with
            // its cell, leaving the asker waiting.
            Some(home) => {
                let members = self.live_members(home.state().members());
                self.send(from, MeshPeerMsg::CellInfo { cell, members });
            }
            None => {
                if let Some(closest) = self.closer_peer(&key) {
                    let primary = Some(closest);
                    self.send(from, MeshPeerMsg::NotPrimary { cell, primary });
                } else {
                    self.send(
                        from,
                        MeshPeerMsg::CellInfo {
                            cell,
                            members: Vec::new(),
                        },
                    );
                }
            }
        }
    }

    /// The live peer closest to `key`, if it is not this one (a peer with
    /// no replica of a record sends requests about it there).
    fn closer_peer(&self, key: &CellKey) -> Option<P> {
        let closest = self.records.home_of(key, 1).into_iter().next()?;
        (closest != self.me).then_some(closest)
    }

    fn live_members(&self, members: &[P]) -> Vec<P> {
        members
            .iter()
            .filter(|m| **m == self.me || self.live.contains(*m))
            .cloned()
            .collect()
    }

    fn on_cell_info(&mut self, now: Instant, from: P, cell: CellId, members: Vec<P>) {
        let members = self.live_members(&members);
        // A committed change of this super-peer's own cell, from the
        // record's primary.
        if self.cell.as_ref() == Some(&cell) && self.is_record_primary(&cell, &from) {
            if let Some(MeshRole::Relay(relay)) = self.role.as_mut() {
                if members.contains(&self.me) {
                    relay.set_members(members.clone());
                }
            }
        }
        // A `JoinCell` (a join, a move up, a renewal) is answered by
        // `CellJoined` or `CellFull` only: the `CellInfo` a primary sends
        // its members when the join commits is no answer to it.
        let Some(request) = self.request.clone().filter(|r| {
            r.cell == cell
                && r.to == from
                && !matches!(request_msg(r), MeshPeerMsg::JoinCell { .. })
        }) else {
            if self.cell.as_ref() != Some(&cell) {
                self.stats.unexpected_answers += 1;
            }
            return;
        };
        // A child never binds to itself (its own replica may list it while
        // its move up to the root commits).
        let members = match request.purpose {
            Purpose::Rebind => members.into_iter().filter(|m| *m != self.me).collect(),
            _ => members,
        };
        if members.is_empty() {
            match request.purpose {
                // The nearest cell above with live members.
                Purpose::Rebind | Purpose::SensorBind => match cell.parent() {
                    Some(parent) => self.ask(now, request.purpose, parent),
                    // No live cell above at all: a super-peer re-forms the
                    // root (the seed's P3 rebuilds the mesh); a sensor
                    // waits for it.
                    None if matches!(self.role, Some(MeshRole::Relay(_))) => {
                        self.ask(now, Purpose::MoveUp, cell)
                    }
                    None => self.wait(now),
                },
                _ => self.wait(now),
            }
            return;
        }
        self.request = None;
        let preferred = self.preferred;
        match (request.purpose, self.role.as_mut()) {
            (Purpose::Parent, Some(MeshRole::Relay(relay))) => relay.bind(now, members, preferred),
            (Purpose::SensorBind, Some(MeshRole::Sensor(sensor))) => {
                sensor.bind(now, cell, members, preferred)
            }
            (Purpose::Rebind, Some(role)) => role.parent_found(now, cell, members),
            (Purpose::Subscribe, Some(MeshRole::Client(client))) => {
                client.subscribe(now, members);
                self.refresh_at = Some(now + self.config.refresh);
            }
            _ => self.stats.unexpected_answers += 1,
        }
        self.drain_role(now);
    }

    /// Whether `from` is the primary of `cell`'s record, as far as this
    /// peer knows: the primary of its replica here, or else the closest
    /// live peer of its key.
    fn is_record_primary(&self, cell: &CellId, from: &P) -> bool {
        let key = cell.key();
        match self.records.get(&key) {
            Some(home) => home.primary() == Some(from),
            None => self.records.home_of(&key, 1).first() == Some(from),
        }
    }

    /// Admitted to `cell`: the relay core starts, and binds under the
    /// parent cell's members.
    fn joined(&mut self, now: Instant, cell: CellId, members: Vec<P>) {
        let members = self.live_members(&members);
        let rank = members.iter().position(|m| *m == self.me).unwrap_or(0);
        let mut relay = Relay::new(
            self.me.clone(),
            self.config.mesh.clone(),
            self.policy,
            cell.clone(),
            members.clone(),
        );
        relay.hold_for_clients(now);
        relay.announce_fresh();
        self.role = Some(MeshRole::Relay(Box::new(relay)));
        self.cell = Some(cell.clone());
        self.preferred = rank;
        self.refresh_at = Some(now + self.config.refresh);
        self.notify(MeshNotice::InCell {
            cell: cell.clone(),
            members,
        });
        self.drain_role(now);
        if let Some(parent) = cell.parent() {
            self.ask(now, Purpose::Parent, parent);
        }
    }

    /// The answer to a renewal: this super-peer is (again) a member of
    /// its cell, whose members are `members`.
    fn renewed(&mut self, cell: CellId, members: Vec<P>) {
        let members = self.live_members(&members);
        if let Some(MeshRole::Relay(relay)) = self.role.as_mut() {
            if relay.cell() == &cell {
                relay.set_members(members);
            }
        }
    }

    /// `cell` is full: the next cell breadth-first, or none left.
    fn next_cell(&mut self, now: Instant, cell: CellId) {
        match next_breadth_first(&cell, self.config.span) {
            Some(next) if next.level() <= self.config.max_level => {
                self.ask(now, Purpose::Join, next)
            }
            _ => {
                self.notify(MeshNotice::NoCell);
                // Start over later: a member may have left meanwhile.
                self.request = Some(Request {
                    purpose: Purpose::Join,
                    cell: CellId::root(),
                    to: self.me.clone(),
                    retry_at: now + self.config.request_timeout * 4,
                });
            }
        }
    }

    /// Sends a request about `cell` to the closest peer of its key.
    fn ask(&mut self, now: Instant, purpose: Purpose, cell: CellId) {
        let to = self.closest(&cell);
        let request = Request {
            purpose,
            cell,
            to: to.clone(),
            retry_at: now + self.config.request_timeout,
        };
        let msg = request_msg(&request);
        self.request = Some(request);
        self.send(to, msg);
    }

    /// Keeps the request and asks again at its timeout.
    fn wait(&mut self, now: Instant) {
        if let Some(request) = self.request.as_mut() {
            request.retry_at = now + self.config.request_timeout;
        }
    }

    fn retry(&mut self, now: Instant) {
        if let Some(request) = self.request.take() {
            self.stats.requests_retried += 1;
            self.ask(now, request.purpose, request.cell);
        }
    }

    fn closest(&self, cell: &CellId) -> P {
        self.records
            .home_of(&cell.key(), 1)
            .into_iter()
            .next()
            .unwrap_or_else(|| self.me.clone())
    }

    fn send(&mut self, to: P, msg: MeshPeerMsg<P>) {
        if to == self.me {
            // Handled at once, as if it came back over the network.
            self.loopback.push_back(msg);
            return;
        }
        let class = msg.class();
        self.outputs
            .push_back(MeshPeerOutput::Send { to, msg, class });
    }

    fn notify(&mut self, notice: MeshNotice<P>) {
        self.outputs.push_back(MeshPeerOutput::Notice(notice));
    }

    fn drain_role(&mut self, now: Instant) {
        let mut lost_cell = None;
        let Some(role) = self.role.as_mut() else {
            return;
        };
        while let Some(out) = role.poll() {
            match out {
                MeshOutput::Send { to, msg } => {
                    let msg = MeshPeerMsg::Data(msg);
                    let class = msg.class();
                    self.outputs
                        .push_back(MeshPeerOutput::Send { to, msg, class });
                }
                MeshOutput::FindParent { lost } => lost_cell = Some(lost),
                MeshOutput::Event(event) => self
                    .outputs
                    .push_back(MeshPeerOutput::Notice(MeshNotice::Event(event))),
            }
        }
        // A move up to the root in flight goes on: another failure below
        // changes nothing about it.
        let moving_up = self
            .request
            .as_ref()
            .is_some_and(|r| r.purpose == Purpose::MoveUp);
        if let (Some(lost), false) = (lost_cell, moving_up) {
            self.ask(now, Purpose::Rebind, lost);
        }
    }

    /// Committed changes of a record this peer is the primary of: the
    /// newcomers hear they are in, every member hears the new order.
    fn released(&mut self, key: CellKey, effects: Vec<CellEffect<P>>) {
        let Some(home) = self.records.get(&key) else {
            return;
        };
        let cell = home.state().cell().clone();
        let members = home.state().members().to_vec();
        let mut joined = Vec::new();
        for effect in effects {
            if let CellEffect::Joined { peer, .. } = effect {
                if let Some(joins) = self.joins.get_mut(&key) {
                    joins.retain(|(p, _)| *p != peer);
                }
                joined.push(peer);
            }
        }
        if self.joins.get(&key).is_some_and(Vec::is_empty) {
            self.joins.remove(&key);
        }
        for member in &members {
            let msg = if joined.contains(member) {
                MeshPeerMsg::CellJoined {
                    cell: cell.clone(),
                    members: members.clone(),
                }
            } else {
                MeshPeerMsg::CellInfo {
                    cell: cell.clone(),
                    members: members.clone(),
                }
            };
            self.send(member.clone(), msg);
        }
    }

    /// The record of a cell is founded here: created, and the newcomers
    /// that asked meanwhile admitted.
    fn founded(&mut self, now: Instant, key: CellKey) {
        let waiting = self.joins.remove(&key).unwrap_or_default();
        let Some((_, cell)) = waiting.first() else {
            return;
        };
        let record = CellRecord::new(cell.clone(), self.config.peers_per_cell);
        self.records
            .create(now, key, record, self.config.record_home_size);
        for (newcomer, cell) in waiting {
            self.admit(now, key, newcomer, cell);
        }
    }

    /// The next thing to do.
    pub fn poll(&mut self) -> Option<MeshPeerOutput<P>> {
        self.outputs.pop_front()
    }

    /// See [`MeshPeerConfig::batch_delay`].
    pub fn batch_delay(&self) -> Duration {
        self.config.batch_delay
    }

    /// When to call [`MeshPeer::handle_timeout`].
    pub fn poll_timeout(&self) -> Option<Instant> {
        [
            self.records.poll_timeout(),
            self.request.as_ref().map(|r| r.retry_at),
            self.refresh_at.filter(|_| self.request.is_none()),
            self.role.as_ref().and_then(MeshRole::poll_timeout),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Timers due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.records.handle_timeout(now);
        self.drain_records(now);
        if let Some(role) = self.role.as_mut() {
            role.handle_timeout(now);
        }
        self.drain_role(now);
        if self.request.as_ref().is_some_and(|r| r.retry_at <= now) {
            self.retry(now);
        }
        if self.request.is_none() && self.refresh_at.is_some_and(|t| t <= now) {
            self.refresh_at = Some(now + self.config.refresh);
            match (&self.role, &self.cell) {
                (Some(MeshRole::Client(_)), _) => self.ask(now, Purpose::Subscribe, CellId::root()),
                (Some(MeshRole::Relay(_)), Some(cell)) => {
                    let cell = cell.clone();
                    self.ask(now, Purpose::Renew, cell)
                }
                _ => self.refresh_at = None,
            }
        }
        self.settle(now);
    }

    fn drain_records(&mut self, now: Instant) {
        while let Some(out) = self.records.poll() {
            match out {
                HomeOutput::Send { to, msg, .. } => {
                    self.send(to, MeshPeerMsg::Record(Box::new(msg)))
                }
                HomeOutput::Released { key, effects } => self.released(key, effects),
                HomeOutput::Founded { key } => self.founded(now, key),
                HomeOutput::NotFounded { key, primary } => {
                    for (newcomer, cell) in self.joins.remove(&key).unwrap_or_default() {
                        self.send(
                            newcomer,
                            MeshPeerMsg::NotPrimary {
                                cell,
                                primary: primary.clone(),
                            },
                        );
                    }
                }
                // Members that failed while no primary was there leave now.
                HomeOutput::BecamePrimary { key, .. } => self.drop_failed_members(now, key),
                HomeOutput::SteppedDown { key } | HomeOutput::Dropped { key } => {
                    // Its newcomers ask again, of the new primary.
                    self.joins.remove(&key);
                }
                HomeOutput::Committed { .. } | HomeOutput::Left { .. } => {}
            }
        }
    }
}

/// The first 128 bits of a key, as a number (distances are XOR of these).
fn first_half(key: &[u8; 32]) -> u128 {
    let mut half = [0u8; 16];
    half.copy_from_slice(&key[..16]);
    u128::from_be_bytes(half)
}

/// The message a request sends.
fn request_msg<P: PeerKey>(request: &Request<P>) -> MeshPeerMsg<P> {
    match request.purpose {
        Purpose::Join | Purpose::MoveUp | Purpose::Renew => MeshPeerMsg::JoinCell {
            cell: request.cell.clone(),
        },
        _ => MeshPeerMsg::GetCell {
            cell: request.cell.clone(),
        },
    }
}

/// The cell after `cell` in breadth-first order in a tree of `span`.
pub fn next_breadth_first(cell: &CellId, span: u8) -> Option<CellId> {
    let span = span.max(1);
    let mut digits = cell.digits().to_vec();
    // Increment as a number in base `span` with digits 1..=span; past the
    // last cell of a level comes the first of the next.
    let mut i = digits.len();
    loop {
        if i == 0 {
            digits = vec![1; cell.level() + 1];
            break;
        }
        i -= 1;
        if digits[i] < span {
            digits[i] += 1;
            break;
        }
        digits[i] = 1;
    }
    let text: String = std::iter::once('0')
        .chain(digits.iter().map(|d| char::from(b'0' + d)))
        .collect();
    CellId::parse_with_span(&text, span).ok()
}
