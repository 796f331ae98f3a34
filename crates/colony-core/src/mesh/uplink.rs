//! A child's link to its parent super-peer (the child side of `BindToCell`
//! and `RejoinMesh`, seed 001 Listing 1), shared by sensors and by
//! super-peers below the root. When the parent fails the child rebinds
//! fast to the first live super-peer of the same cell it already knows;
//! once none is left it asks its driver for a new cell (a slow rebind).

use std::collections::VecDeque;
use std::time::Instant;

use super::cell::MAX_PEERS_PER_CELL;
use super::{CellId, MeshConfig, MeshEvent, MeshMsg, MeshOutput, RebindKind};
use crate::PeerKey;

/// Unanswered binds per known member before a child gives its parent's
/// cell up and asks for a new one (a slow rebind): a lost `Bind` or
/// `Bound` must not turn a fast rebind into a slow one.
const BIND_ATTEMPTS: usize = 4;

/// Where the link stands.
#[derive(Clone, Debug, PartialEq, Eq)]
enum LinkState<P> {
    /// Never asked to bind.
    Idle,
    /// Asked `to` to take it as a child; tries the next member at
    /// `deadline`.
    Binding {
        to: P,
        kind: RebindKind,
        deadline: Instant,
        /// Binds of this round that went unanswered so far.
        unanswered: usize,
    },
    /// Bound to its parent.
    Bound { parent: P },
    /// No known super-peer of the parent cell is left: waiting for
    /// `parent_found`, asks again at `deadline`.
    Discovering { deadline: Instant },
}

/// A child's link to its parent. See the module docs.
#[derive(Clone, Debug)]
pub struct Uplink<P> {
    state: LinkState<P>,
    /// The parent's cell.
    cell: Option<CellId>,
    /// Its super-peers in join order, as last heard, minus the failed ones.
    members: Vec<P>,
    /// When the first bind of the current round was asked, or the parent
    /// was lost: what a [`MeshEvent::Bound`] reports `after`.
    since: Option<Instant>,
}

impl<P: PeerKey> Default for Uplink<P> {
    fn default() -> Self {
        Uplink {
            state: LinkState::Idle,
            cell: None,
            members: Vec::new(),
            since: None,
        }
    }
}

impl<P: PeerKey> Uplink<P> {
    /// A link not bound yet.
    pub fn new() -> Uplink<P> {
        Uplink::default()
    }

    /// The parent, if bound.
    pub fn parent(&self) -> Option<&P> {
        match &self.state {
            LinkState::Bound { parent } => Some(parent),
            _ => None,
        }
    }

    /// Whether `peer` is the parent, or the super-peer asked to be.
    pub fn leads_to(&self, peer: &P) -> bool {
        match &self.state {
            LinkState::Bound { parent } => parent == peer,
            LinkState::Binding { to, .. } => to == peer,
            _ => false,
        }
    }

    /// The parent's cell, once known.
    pub fn cell(&self) -> Option<&CellId> {
        self.cell.as_ref()
    }

    /// The parent cell's super-peers as known here, in order.
    pub fn members(&self) -> &[P] {
        &self.members
    }

    /// Whether `peer` may acknowledge frames to this child: a super-peer of
    /// the parent's cell (a successor acknowledges the frames its failed
    /// sibling was sent).
    pub fn is_parent_side(&self, peer: &P) -> bool {
        self.parent() == Some(peer) || self.members.contains(peer)
    }

    /// Binds to a super-peer of `cell`, whose members are `members` in
    /// order: member `preferred` (modulo their number), so the children of
    /// a cell spread over its members.
    pub fn bind(
        &mut self,
        now: Instant,
        config: &MeshConfig,
        cell: CellId,
        members: Vec<P>,
        preferred: usize,
        out: &mut VecDeque<MeshOutput<P>>,
    ) {
        let kind = if self.cell.is_none() {
            RebindKind::Initial
        } else {
            RebindKind::Slow
        };
        self.since.get_or_insert(now);
        self.cell = Some(cell);
        self.members = members;
        self.members.truncate(MAX_PEERS_PER_CELL);
        if !self.members.is_empty() {
            let first = preferred % self.members.len();
            self.members.rotate_left(first);
        }
        self.try_next(now, config, kind, 0, out);
    }

    /// Asks the first known member to take this child, or asks the driver
    /// for a new cell if none is left; `unanswered` binds of this round
    /// went unanswered before.
    fn try_next(
        &mut self,
        now: Instant,
        config: &MeshConfig,
        kind: RebindKind,
        unanswered: usize,
        out: &mut VecDeque<MeshOutput<P>>,
    ) {
        match self.members.first() {
            Some(to) => {
                out.push_back(MeshOutput::Send {
                    to: to.clone(),
                    msg: MeshMsg::Bind,
                });
                self.state = LinkState::Binding {
                    to: to.clone(),
                    kind,
                    deadline: now + config.bind_timeout,
                    unanswered,
                };
            }
            None => {
                self.state = LinkState::Discovering {
                    deadline: now + config.discovery_timeout,
                };
                out.push_back(MeshOutput::FindParent {
                    lost: self.cell.clone().unwrap_or_else(CellId::root),
                });
            }
        }
    }

    /// A super-peer accepted this child: the kind of bind that completed,
    /// if `from` is the one asked (the owner then sends its unacknowledged
    /// frames to it).
    pub fn on_bound(
        &mut self,
        now: Instant,
        from: &P,
        cell: CellId,
        members: Vec<P>,
        out: &mut VecDeque<MeshOutput<P>>,
    ) -> Option<RebindKind> {
        let LinkState::Binding { to, kind, .. } = &self.state else {
            return None;
        };
        // A late acceptance from a member asked before (its answer took
        // longer than the bind timeout) is as good as the one awaited:
        // waiting only for the latest would never bind on a slow link.
        let asked = to == from || self.members.contains(from);
        if !asked || members.len() > MAX_PEERS_PER_CELL || !members.contains(from) {
            return None;
        }
        let kind = *kind;
        self.members = members;
        self.cell = Some(cell.clone());
        self.state = LinkState::Bound {
            parent: from.clone(),
        };
        let after = self
            .since
            .take()
            .map(|since| now.saturating_duration_since(since))
            .unwrap_or_default();
        out.push_back(MeshOutput::Event(MeshEvent::Bound {
            kind,
            parent: from.clone(),
            cell,
            after,
        }));
        Some(kind)
    }

    /// A super-peer refused this child: the next one is asked; the parent
    /// itself refusing (a frame from a child it dropped) starts a bind
    /// again.
    pub fn on_refused(
        &mut self,
        now: Instant,
        config: &MeshConfig,
        from: &P,
        out: &mut VecDeque<MeshOutput<P>>,
    ) {
        match &self.state {
            LinkState::Binding { to, kind, .. } if to == from => {
                let kind = *kind;
                self.members.retain(|m| m != from);
                self.try_next(now, config, kind, 0, out);
            }
            // The parent no longer counts this child among its own: it
            // declared it failed (wrongly, or from the far side of a
            // partition) and drops its frames. Bind again, in the same
            // cell.
            LinkState::Bound { parent } if parent == from => {
                self.since.get_or_insert(now);
                self.try_next(now, config, RebindKind::Fast, 0, out);
            }
            _ => {}
        }
    }

    /// Membership declared `peer` failed: if it is the parent (or the one
    /// asked), a fast rebind to the next member of its cell starts, or a
    /// slow one if none is left. Whether the parent was lost.
    pub fn peer_failed(
        &mut self,
        now: Instant,
        config: &MeshConfig,
        peer: &P,
        out: &mut VecDeque<MeshOutput<P>>,
    ) -> bool {
        self.members.retain(|m| m != peer);
        let (lost, kind) = match &self.state {
            LinkState::Bound { parent } if parent == peer => (true, RebindKind::Fast),
            LinkState::Binding { to, kind, .. } if to == peer => (true, *kind),
            _ => (false, RebindKind::Fast),
        };
        if lost {
            self.since.get_or_insert(now);
            // With no member left this asks for a new cell: a slow rebind.
            self.try_next(now, config, kind, 0, out);
        }
        lost
    }

    /// The driver's answer to [`MeshOutput::FindParent`]: bind to a
    /// super-peer of `cell` (slow rebind). Ignored unless discovering.
    pub fn parent_found(
        &mut self,
        now: Instant,
        config: &MeshConfig,
        cell: CellId,
        members: Vec<P>,
        out: &mut VecDeque<MeshOutput<P>>,
    ) {
        if !matches!(self.state, LinkState::Discovering { .. }) {
            return;
        }
        self.cell = Some(cell);
        self.members = members;
        self.members.truncate(MAX_PEERS_PER_CELL);
        self.try_next(now, config, RebindKind::Slow, 0, out);
    }

    /// When [`Uplink::handle_timeout`] has something to do.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match &self.state {
            LinkState::Binding { deadline, .. } | LinkState::Discovering { deadline } => {
                Some(*deadline)
            }
            _ => None,
        }
    }

    /// An unanswered bind moves on to the next member; an unanswered
    /// `RequestCell` is asked again.
    pub fn handle_timeout(
        &mut self,
        now: Instant,
        config: &MeshConfig,
        out: &mut VecDeque<MeshOutput<P>>,
    ) {
        match self.state.clone() {
            LinkState::Binding {
                to,
                kind,
                deadline,
                unanswered,
            } if deadline <= now => {
                // Tried again last, after the others; once every member
                // went unanswered `BIND_ATTEMPTS` times, the cell is given
                // up and a new one is asked for.
                let unanswered = unanswered + 1;
                self.members.retain(|m| *m != to);
                if unanswered >= BIND_ATTEMPTS * (self.members.len() + 1) {
                    self.members.clear();
                    self.try_next(now, config, RebindKind::Slow, 0, out);
                } else {
                    self.members.push(to);
                    self.try_next(now, config, kind, unanswered, out);
                }
            }
            LinkState::Discovering { deadline } if deadline <= now => {
                self.try_next(now, config, RebindKind::Slow, 0, out);
            }
            _ => {}
        }
    }
}
