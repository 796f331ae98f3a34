//! The data plane of one super-peer (seed 001 Listings 5–8).
//!
//! - A frame of a replicated class from a child is *owned* here: copied to
//!   the other members of the cell first (`FtCopy`), then forwarded to the
//!   parent, or at the root delivered to the subscribed clients. It stays
//!   pending, and is sent again when late or after this super-peer
//!   rebinds, until the parent (at the root: every client) acknowledges
//!   it; then the owner sends its FT reply to the cell, which drops the
//!   copies, and acknowledges the frame to the children that sent it.
//! - When a member of the cell fails, every member computes the same
//!   successor: the first surviving member in the cell's order. The
//!   successor owns the failed member's copies and forwards them; the
//!   others record the successor as the copies' owner.
//! - A member restarted before anyone declared it failed is never reported
//!   failed: it joins its cell again as a newcomer and tells the others it
//!   starts with no state (`Fresh`). Its copies are taken over as above,
//!   and the others copy the frames they own to it again.
//! - When a child fails its frames stay owned here (they are forwarded;
//!   the acknowledgement has nobody to go to). When a whole child cell
//!   fails, its children still hold their unacknowledged frames and send
//!   them again through a slow rebind: the parent need not take ownership
//!   of frames it never held (Listing 8's parent branch).
//! - Frames of other classes are forwarded and forgotten.
//!
//! Messages are accepted only from the peers that may send them (frames
//! from bound children, copies and FT replies from the cell, acks from the
//! parent's cell or subscribed clients); oversized frames, unknown classes
//! and full tables are counted and dropped, never a panic.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Instant;

use super::cell::{successor_in, MAX_PEERS_PER_CELL};
use super::uplink::Uplink;
use super::{
    CellId, Frame, FrameId, FtPolicy, MeshConfig, MeshEvent, MeshMsg, MeshOutput, StreamClass,
};
use crate::PeerKey;

/// What a super-peer counted.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RelayStats {
    /// Frames forwarded up (or delivered, at the root) for the first time.
    pub forwarded: u64,
    /// Pending frames sent again (late, or after a rebind).
    pub resent: u64,
    /// Frames received again while pending here.
    pub duplicates: u64,
    /// Frames owned after taking over from failed cell members.
    pub taken_over: u64,
    /// Frames and copies larger than the limit, dropped.
    pub oversized: u64,
    /// Frames, copies and subscriptions naming an unknown class, dropped.
    pub unknown_class: u64,
    /// Messages from peers that may not send them, dropped.
    pub from_stranger: u64,
    /// Frames dropped because the pending table was full (the child sends
    /// them again).
    pub pending_full: u64,
    /// Copies dropped because the copy table was full.
    pub copies_full: u64,
    /// Copies dropped after [`MeshConfig::copy_ttl`] without an FT reply.
    pub copies_expired: u64,
    /// Frames of unreplicated classes dropped for want of a parent.
    pub dropped_unbound: u64,
    /// Children or clients refused because there were too many.
    pub refused: u64,
}

/// A frame owned here, until acknowledged.
#[derive(Clone, Debug)]
struct Owned<P> {
    payload: Vec<u8>,
    /// The children to acknowledge it to.
    ack_to: Vec<P>,
    /// Root: the clients that have yet to acknowledge it.
    waiting: BTreeSet<P>,
    /// When to send it again.
    resend_at: Instant,
    /// Times sent again to the same parent (or clients) without an
    /// acknowledgement ([`MeshConfig::resend_delay`]).
    resends: u32,
}

/// A copy held for another member of the cell.
#[derive(Clone, Debug)]
struct Copy<P> {
    owner: P,
    payload: Vec<u8>,
    ack_to: Vec<P>,
    /// When it is dropped if no FT reply came (the reply was lost): the
    /// owner's children still hold the frame until it is acknowledged,
    /// so a copy dropped too early costs a resend, never the frame.
    expires_at: Instant,
}

/// One super-peer's data plane. See the module docs.
pub struct Relay<P> {
    me: P,
    config: MeshConfig,
    policy: FtPolicy,
    cell: CellId,
    /// The cell's members in join order, this one included, minus the
    /// failed ones (from the cell record and membership).
    members: Vec<P>,
    /// The link to the parent cell; none at the root.
    uplink: Option<Uplink<P>>,
    children: BTreeSet<P>,
    /// Root: the clients with the classes they want.
    clients: BTreeMap<P, BTreeSet<StreamClass>>,
    pending: BTreeMap<FrameId<P>, Owned<P>>,
    pending_bytes: usize,
    copies: BTreeMap<FrameId<P>, Copy<P>>,
    copy_bytes: usize,
    /// Frames acknowledged upstream lately (at most
    /// [`MeshConfig::dedup_window_frames`]), oldest first: a late or
    /// duplicated copy of one is acknowledged again, not owned anew.
    completed: VecDeque<FrameId<P>>,
    completed_set: BTreeSet<FrameId<P>>,
    /// See [`Relay::hold_for_clients`] (a root that nobody subscribed to
    /// otherwise takes what it receives as delivered).
    hold_until: Option<Instant>,
    outputs: VecDeque<MeshOutput<P>>,
    stats: RelayStats,
}

impl<P: PeerKey> Relay<P> {
    /// Super-peer `me` of `cell`, whose members (from its cell record, in
    /// join order) are `members`; it binds to a parent with
    /// [`Relay::bind`] unless `cell` is the root.
    pub fn new(
        me: P,
        config: MeshConfig,
        policy: FtPolicy,
        cell: CellId,
        members: Vec<P>,
    ) -> Relay<P> {
        let uplink = (!cell.is_root()).then(Uplink::new);
        let mut relay = Relay {
            me,
            config,
            policy,
            cell,
            members: Vec::new(),
            uplink,
            children: BTreeSet::new(),
            clients: BTreeMap::new(),
            pending: BTreeMap::new(),
            pending_bytes: 0,
            copies: BTreeMap::new(),
            copy_bytes: 0,
            completed: VecDeque::new(),
            completed_set: BTreeSet::new(),
            hold_until: None,
            outputs: VecDeque::new(),
            stats: RelayStats::default(),
        };
        relay.set_members(members);
        relay
    }

    /// The cell's members changed (the cell record): `members` in join
    /// order. Failures are still reported by [`Relay::peer_failed`], which
    /// hands the failed member's frames over.
    pub fn set_members(&mut self, mut members: Vec<P>) {
        members.truncate(MAX_PEERS_PER_CELL);
        if !members.contains(&self.me) {
            members.push(self.me.clone());
        }
        self.members = members;
    }

    /// Admitted to the root, which had no live member left, from a cell
    /// below (`members`: the root's, in join order): frames go to clients
    /// from now on. Children stay bound here; frames held are kept for
    /// the clients, who subscribe again, for [`MeshConfig::client_hold`].
    /// Copies held for the former cell's members are dropped: their
    /// owners are alive, and their children hold the frames too.
    pub fn move_to_root(&mut self, now: Instant, members: Vec<P>) {
        self.cell = CellId::root();
        self.uplink = None;
        self.set_members(members);
        self.copies.clear();
        self.copy_bytes = 0;
        self.hold_for_clients(now);
    }

    /// A root super-peer without clients yet (it just joined the root,
    /// moved up to it, or lost its last client) keeps the frames it owns
    /// for [`MeshConfig::client_hold`] for clients to subscribe,
    /// instead of taking them as delivered: clients subscribe at every
    /// root member every `MeshPeerConfig::refresh`.
    pub fn hold_for_clients(&mut self, now: Instant) {
        if self.cell.is_root() {
            self.hold_until = Some(now + self.config.client_hold);
        }
    }

    /// Whether frames nobody subscribed to are kept (see
    /// [`Relay::hold_for_clients`]).
    fn holding(&self, now: Instant) -> bool {
        self.hold_until.is_some_and(|t| now < t)
    }

    /// Binds to a super-peer of the parent cell, whose members are
    /// `members`, the `preferred`-th first. Nothing at the root.
    pub fn bind(&mut self, now: Instant, members: Vec<P>, preferred: usize) {
        let Some(parent_cell) = self.cell.parent() else {
            return;
        };
        if let Some(uplink) = self.uplink.as_mut() {
            uplink.bind(
                now,
                &self.config,
                parent_cell,
                members,
                preferred,
                &mut self.outputs,
            );
        }
    }

    /// This super-peer's cell.
    pub fn cell(&self) -> &CellId {
        &self.cell
    }

    /// The cell's members as known here.
    pub fn members(&self) -> &[P] {
        &self.members
    }

    /// The link to the parent (none at the root).
    pub fn uplink(&self) -> Option<&Uplink<P>> {
        self.uplink.as_ref()
    }

    /// What it counted.
    pub fn stats(&self) -> &RelayStats {
        &self.stats
    }

    /// Frames owned here awaiting acknowledgement.
    pub fn pending_frames(&self) -> usize {
        self.pending.len()
    }

    /// Copies held for the cell's other members.
    pub fn copy_frames(&self) -> usize {
        self.copies.len()
    }

    /// The bound children.
    pub fn children(&self) -> &BTreeSet<P> {
        &self.children
    }

    /// A message from `from`.
    pub fn handle(&mut self, now: Instant, from: P, msg: MeshMsg<P>) {
        match msg {
            MeshMsg::Bind => self.on_bind(from),
            MeshMsg::Subscribe { classes } => self.on_subscribe(from, classes),
            MeshMsg::Up(frame) => self.on_up(now, from, frame),
            MeshMsg::FtCopy { frame, ack_to } => self.on_copy(now, from, frame, ack_to),
            MeshMsg::FtReply(id) if self.is_sibling(&from) => self.drop_copy(&id),
            MeshMsg::Fresh if self.is_sibling(&from) => self.on_fresh(now, from),
            MeshMsg::ClientAck(id) if self.clients.contains_key(&from) => {
                let done = match self.pending.get_mut(&id) {
                    Some(owned) => owned.waiting.remove(&from) && owned.waiting.is_empty(),
                    None => false,
                };
                if done {
                    self.complete(&id);
                }
            }
            MeshMsg::Ack(id) if self.is_parent_side(&from) => {
                if self.pending.contains_key(&id) {
                    self.complete(&id);
                }
            }
            MeshMsg::Bound { cell, members } => {
                let rebound = match self.uplink.as_mut() {
                    Some(uplink) => uplink
                        .on_bound(now, &from, cell, members, &mut self.outputs)
                        .is_some(),
                    None => false,
                };
                if rebound {
                    self.resend(now, true);
                } else {
                    self.stats.from_stranger += 1;
                }
            }
            MeshMsg::Refused => match self.uplink.as_mut() {
                Some(uplink) => uplink.on_refused(now, &self.config, &from, &mut self.outputs),
                None => self.stats.from_stranger += 1,
            },
            _ => self.stats.from_stranger += 1,
        }
    }

    /// Tells the cell's other members that this relay starts with no
    /// state ([`MeshMsg::Fresh`]): called once, when it joins its cell.
    pub fn announce_fresh(&mut self) {
        let siblings = self.siblings();
        for sibling in siblings {
            self.send(sibling, MeshMsg::Fresh);
        }
    }

    /// A sibling's relay started afresh: a newcomer, or a peer restarted
    /// before anyone declared it failed, whose former life owned frames
    /// copied here. Those are taken over as on a failure (membership
    /// never reports one), and the frames owned here are copied to it,
    /// which holds no copy of them.
    fn on_fresh(&mut self, now: Instant, from: P) {
        if self.copies.values().any(|copy| copy.owner == from) {
            if let Some(successor) = successor_in(&self.members, &from, |_| true).cloned() {
                self.take_over(now, &from, successor);
            }
        }
        let copies: Vec<MeshMsg<P>> = self
            .pending
            .iter()
            .map(|(id, owned)| MeshMsg::FtCopy {
                frame: id.frame(owned.payload.clone()),
                ack_to: owned.ack_to.clone(),
            })
            .collect();
        for copy in copies {
            self.send(from.clone(), copy);
        }
    }

    /// The cell's other members.
    fn siblings(&self) -> Vec<P> {
        self.members
            .iter()
            .filter(|m| **m != self.me)
            .cloned()
            .collect()
    }

    fn is_sibling(&self, peer: &P) -> bool {
        *peer != self.me && self.members.contains(peer)
    }

    fn is_parent_side(&self, peer: &P) -> bool {
        self.uplink.as_ref().is_some_and(|u| u.is_parent_side(peer))
    }

    fn send(&mut self, to: P, msg: MeshMsg<P>) {
        self.outputs.push_back(MeshOutput::Send { to, msg });
    }

    fn on_bind(&mut self, from: P) {
        // Its own parent is never its child: two super-peers bound to each
        // other would both be cut off from the root.
        let full =
            !self.children.contains(&from) && self.children.len() >= self.config.max_children;
        let upward = self.uplink.as_ref().is_some_and(|u| u.leads_to(&from));
        if full || upward {
            self.stats.refused += 1;
            self.send(from, MeshMsg::Refused);
            return;
        }
        self.children.insert(from.clone());
        let reply = MeshMsg::Bound {
            cell: self.cell.clone(),
            members: self.members.clone(),
        };
        self.send(from, reply);
    }

    fn on_subscribe(&mut self, from: P, codes: Vec<u8>) {
        let full =
            !self.clients.contains_key(&from) && self.clients.len() >= self.config.max_clients;
        if !self.cell.is_root() || full {
            self.stats.refused += 1;
            self.send(from, MeshMsg::Refused);
            return;
        }
        let mut classes = BTreeSet::new();
        for code in codes.iter().take(StreamClass::ALL.len() * 4) {
            match StreamClass::from_code(*code) {
                Some(class) => {
                    classes.insert(class);
                }
                None => self.stats.unknown_class += 1,
            }
        }
        self.clients.insert(from.clone(), classes.clone());
        let reply = MeshMsg::Bound {
            cell: self.cell.clone(),
            members: self.members.clone(),
        };
        self.send(from.clone(), reply);
        // Frames held for clients (after moving up) go to this one now.
        let mut held = Vec::new();
        for (id, owned) in self.pending.iter_mut() {
            if owned.waiting.is_empty() && classes.contains(&id.class) {
                owned.waiting.insert(from.clone());
                held.push(id.frame(owned.payload.clone()));
            }
        }
        for frame in held {
            self.send(from.clone(), MeshMsg::Deliver { frame, ack: true });
        }
    }

    /// Checks a frame from the network: its id, if it may be handled.
    fn admit(&mut self, frame: &Frame<P>) -> Option<FrameId<P>> {
        if frame.payload.len() > self.config.max_frame_bytes {
            self.stats.oversized += 1;
            return None;
        }
        let id = frame.id();
        if id.is_none() {
            self.stats.unknown_class += 1;
        }
        id
    }

    fn on_up(&mut self, now: Instant, from: P, frame: Frame<P>) {
        if !self.children.contains(&from) {
            // A child this relay dropped (declared failed, wrongly or from
            // the far side of a partition, and alive after all) keeps
            // sending here: told, it binds again instead of resending for
            // good.
            self.stats.from_stranger += 1;
            self.send(from, MeshMsg::Refused);
            return;
        }
        let Some(id) = self.admit(&frame) else {
            return;
        };
        if !self.policy.replicates(id.class) {
            self.stats.forwarded += 1;
            self.pass_on(frame, false);
            return;
        }
        if self.completed_set.contains(&id) {
            // Acknowledged already (the child's ack was lost, or the
            // network duplicated the frame): acknowledge it again.
            self.stats.duplicates += 1;
            self.send(from, MeshMsg::Ack(id));
            return;
        }
        if let Some(owned) = self.pending.get_mut(&id) {
            self.stats.duplicates += 1;
            if !owned.ack_to.contains(&from) && owned.ack_to.len() < self.config.max_ack_to {
                owned.ack_to.push(from);
            }
            return;
        }
        // A frame copied here for a sibling that a child now sends itself
        // (it rebound here): owned here from now on, the copy's children
        // acknowledged too.
        let mut ack_to = match self.copies.remove(&id) {
            Some(copy) => {
                self.copy_bytes -= copy.payload.len();
                copy.ack_to
            }
            None => Vec::new(),
        };
        if !ack_to.contains(&from) {
            ack_to.push(from);
        }
        ack_to.truncate(self.config.max_ack_to);
        self.own(now, id, frame, ack_to, false);
    }

    /// Takes `frame` as owned: copies it to the cell (unless `quiet`: the
    /// cell holds it already), then forwards it. Dropped unacknowledged if
    /// the table is full.
    fn own(&mut self, now: Instant, id: FrameId<P>, frame: Frame<P>, ack_to: Vec<P>, quiet: bool) {
        if self.pending.len() >= self.config.max_pending_frames
            || self.pending_bytes + frame.payload.len() > self.config.max_pending_bytes
        {
            self.stats.pending_full += 1;
            return;
        }
        // Replicated in the cell before it goes anywhere else.
        let siblings = self.siblings();
        if !quiet {
            for sibling in siblings {
                self.send(
                    sibling,
                    MeshMsg::FtCopy {
                        frame: frame.clone(),
                        ack_to: ack_to.clone(),
                    },
                );
            }
        }
        let waiting = self.subscribers(id.class);
        self.pending_bytes += frame.payload.len();
        self.pending.insert(
            id.clone(),
            Owned {
                payload: frame.payload.clone(),
                ack_to,
                waiting: waiting.clone(),
                resend_at: now + self.config.resend_delay(0),
                resends: 0,
            },
        );
        self.stats.forwarded += 1;
        if self.cell.is_root() && waiting.is_empty() {
            // Nobody wants it: done at once, unless held for the clients
            // of a root re-formed from below.
            if !self.holding(now) {
                self.complete(&id);
            }
            return;
        }
        self.pass_on(frame, true);
    }

    /// Root: the clients subscribed to `class`.
    fn subscribers(&self, class: StreamClass) -> BTreeSet<P> {
        if !self.cell.is_root() {
            return BTreeSet::new();
        }
        self.clients
            .iter()
            .filter(|(_, classes)| classes.contains(&class))
            .map(|(client, _)| client.clone())
            .collect()
    }

    /// Forwards a frame to the parent, or at the root delivers it to the
    /// subscribed clients; `reliable` frames are acknowledged by them.
    fn pass_on(&mut self, frame: Frame<P>, reliable: bool) {
        if self.cell.is_root() {
            let Some(class) = StreamClass::from_code(frame.class) else {
                return;
            };
            for client in self.subscribers(class) {
                self.send(
                    client,
                    MeshMsg::Deliver {
                        frame: frame.clone(),
                        ack: reliable,
                    },
                );
            }
            return;
        }
        match self.uplink.as_ref().and_then(|u| u.parent()).cloned() {
            Some(parent) => self.send(parent, MeshMsg::Up(frame)),
            // A pending frame goes once rebound; another is lost.
            None if !reliable => self.stats.dropped_unbound += 1,
            None => {}
        }
    }

    fn on_copy(&mut self, now: Instant, from: P, frame: Frame<P>, mut ack_to: Vec<P>) {
        if !self.is_sibling(&from) {
            self.stats.from_stranger += 1;
            return;
        }
        let Some(id) = self.admit(&frame) else {
            return;
        };
        if self.pending.contains_key(&id) || self.completed_set.contains(&id) {
            return;
        }
        if let Some(old) = self.copies.get(&id) {
            self.copy_bytes -= old.payload.len();
            self.copies.remove(&id);
        }
        if self.copies.len() >= self.config.max_copy_frames
            || self.copy_bytes + frame.payload.len() > self.config.max_copy_bytes
        {
            self.stats.copies_full += 1;
            return;
        }
        ack_to.truncate(self.config.max_ack_to);
        self.copy_bytes += frame.payload.len();
        self.copies.insert(
            id,
            Copy {
                owner: from,
                payload: frame.payload,
                ack_to,
                expires_at: now + self.config.copy_ttl,
            },
        );
    }

    /// The owner's FT reply: the copy goes. A reply that overtook its
    /// copy (they travel on different channels, and may wait to be
    /// batched) is remembered, so the late copy is not kept for nothing.
    fn drop_copy(&mut self, id: &FrameId<P>) {
        match self.copies.remove(id) {
            Some(copy) => self.copy_bytes -= copy.payload.len(),
            None if !self.pending.contains_key(id) => self.remember_completed(id),
            None => {}
        }
    }

    /// Keeps `id` among the frames acknowledged lately.
    fn remember_completed(&mut self, id: &FrameId<P>) {
        if self.completed_set.insert(id.clone()) {
            self.completed.push_back(id.clone());
            while self.completed.len() > self.config.dedup_window_frames.max(1) as usize {
                if let Some(oldest) = self.completed.pop_front() {
                    self.completed_set.remove(&oldest);
                }
            }
        }
    }

    /// The frame is acknowledged upstream: the cell drops its copies, the
    /// children that sent it drop it.
    fn complete(&mut self, id: &FrameId<P>) {
        let Some(owned) = self.pending.remove(id) else {
            return;
        };
        self.pending_bytes -= owned.payload.len();
        self.remember_completed(id);
        let siblings = self.siblings();
        for sibling in siblings {
            self.send(sibling, MeshMsg::FtReply(id.clone()));
        }
        for child in owned.ack_to {
            self.send(child, MeshMsg::Ack(id.clone()));
        }
    }

    /// Sends pending frames again: all of them (a new parent) or the late
    /// ones.
    fn resend(&mut self, now: Instant, all: bool) {
        let root = self.cell.is_root();
        let parent = self.uplink.as_ref().and_then(|u| u.parent()).cloned();
        if !root && parent.is_none() {
            return;
        }
        let mut sends = Vec::new();
        for (id, owned) in &mut self.pending {
            if !all && owned.resend_at > now {
                continue;
            }
            // A new parent starts the backoff over.
            owned.resends = if all {
                0
            } else {
                owned.resends.saturating_add(1)
            };
            owned.resend_at = now + self.config.resend_delay(owned.resends);
            let frame = id.frame(owned.payload.clone());
            match &parent {
                Some(parent) => sends.push((parent.clone(), MeshMsg::Up(frame))),
                None => {
                    for client in &owned.waiting {
                        sends.push((
                            client.clone(),
                            MeshMsg::Deliver {
                                frame: frame.clone(),
                                ack: true,
                            },
                        ));
                    }
                }
            }
        }
        self.stats.resent += sends.len() as u64;
        for (to, msg) in sends {
            self.send(to, msg);
        }
    }

    /// Membership declared `peer` failed (seed 001 Listing 8, `OnFail`):
    /// as a cell member, its successor takes its copies over; as a child
    /// or client it is forgotten (the frames held for the last client
    /// are kept for the next subscriber for [`MeshConfig::client_hold`]);
    /// as the parent, a rebind starts.
    pub fn peer_failed(&mut self, now: Instant, peer: &P) {
        if *peer == self.me {
            return;
        }
        if self.members.contains(peer) {
            let successor = successor_in(&self.members, peer, |_| true).cloned();
            self.members.retain(|m| m != peer);
            if let Some(successor) = successor {
                self.take_over(now, peer, successor);
            }
        }
        self.children.remove(peer);
        for owned in self.pending.values_mut() {
            owned.ack_to.retain(|c| c != peer);
        }
        for copy in self.copies.values_mut() {
            copy.ack_to.retain(|c| c != peer);
        }
        if self.clients.remove(peer).is_some() {
            let mut done = Vec::new();
            for (id, owned) in self.pending.iter_mut() {
                if owned.waiting.remove(peer) && owned.waiting.is_empty() {
                    done.push(id.clone());
                }
            }
            if self.clients.is_empty() {
                // The last client: its frames are held for it to subscribe
                // again (it was wrongly declared dead) or another to come.
                self.hold_for_clients(now);
            } else {
                for id in done {
                    self.complete(&id);
                }
            }
        }
        if let Some(uplink) = self.uplink.as_mut() {
            uplink.peer_failed(now, &self.config, peer, &mut self.outputs);
        }
    }

    /// The copies owned by `failed` now belong to `successor`: taken and
    /// forwarded here if that is this super-peer.
    fn take_over(&mut self, now: Instant, failed: &P, successor: P) {
        let theirs: Vec<FrameId<P>> = self
            .copies
            .iter()
            .filter(|(_, copy)| copy.owner == *failed)
            .map(|(id, _)| id.clone())
            .collect();
        if successor != self.me {
            for id in theirs {
                if let Some(copy) = self.copies.get_mut(&id) {
                    copy.owner = successor.clone();
                }
            }
            return;
        }
        let frames = theirs.len();
        for id in theirs {
            let Some(copy) = self.copies.remove(&id) else {
                continue;
            };
            self.copy_bytes -= copy.payload.len();
            let frame = id.frame(copy.payload);
            // The other members hold the copy already, under this owner.
            self.own(now, id, frame, copy.ack_to, true);
        }
        self.stats.taken_over += frames as u64;
        self.outputs
            .push_back(MeshOutput::Event(MeshEvent::TookOver {
                failed: failed.clone(),
                frames,
            }));
    }

    /// The answer to [`MeshOutput::FindParent`].
    pub fn parent_found(&mut self, now: Instant, cell: CellId, members: Vec<P>) {
        if let Some(uplink) = self.uplink.as_mut() {
            uplink.parent_found(now, &self.config, cell, members, &mut self.outputs);
        }
    }

    /// When to call [`Relay::handle_timeout`].
    pub fn poll_timeout(&self) -> Option<Instant> {
        let can_send =
            self.cell.is_root() || self.uplink.as_ref().is_some_and(|u| u.parent().is_some());
        let resend = can_send
            .then(|| self.pending.values().map(|o| o.resend_at).min())
            .flatten();
        let uplink = self.uplink.as_ref().and_then(Uplink::poll_timeout);
        let expiry = self.copies.values().map(|c| c.expires_at).min();
        [resend, uplink, expiry, self.hold_until]
            .into_iter()
            .flatten()
            .min()
    }

    /// Moves unanswered binds on and sends late frames again.
    pub fn handle_timeout(&mut self, now: Instant) {
        if let Some(uplink) = self.uplink.as_mut() {
            uplink.handle_timeout(now, &self.config, &mut self.outputs);
        }
        self.resend(now, false);
        let expired: Vec<FrameId<P>> = self
            .copies
            .iter()
            .filter(|(_, c)| c.expires_at <= now)
            .map(|(id, _)| id.clone())
            .collect();
        self.stats.copies_expired += expired.len() as u64;
        for id in expired {
            self.drop_copy(&id);
        }
        if self.hold_until.is_some_and(|t| t <= now) {
            // No client came for them: done, as at any root.
            self.hold_until = None;
            let unwanted: Vec<FrameId<P>> = self
                .pending
                .iter()
                .filter(|(_, o)| o.waiting.is_empty())
                .map(|(id, _)| id.clone())
                .collect();
            for id in unwanted {
                self.complete(&id);
            }
        }
    }

    /// The next thing to do.
    pub fn poll(&mut self) -> Option<MeshOutput<P>> {
        self.outputs.pop_front()
    }
}
