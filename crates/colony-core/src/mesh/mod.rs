//! The streaming mesh of seed 001 (§III-B, §III-C, Listings 1–8), as
//! sans-IO cores: sensors stream frames of events, audio and video up a
//! tree of cells of super-peers to the clients subscribed at the root.
//!
//! - [`cell_id`]: CellIds (`0`, `01`..`0k`, ...) and the breadth-first
//!   placement of a new super-peer (`RequestCell`).
//! - [`class`]: traffic classes with the seed's priorities and the four
//!   fault-tolerance policies saying which classes are replicated.
//! - [`cell`]: a cell's membership as a [`crate::home::Replicated`] state,
//!   kept on the home of [`CellId::key`]: the order every member reads the
//!   successor of a failed member from.
//! - [`relay`]: the data plane of one super-peer. A frame of a replicated
//!   class is copied to the cell's other members before it is forwarded
//!   up (`SendFTMessage`); they hold the copy until the owner's FT reply
//!   (`HandleFTCellMsg`), which the owner sends once its parent (at the
//!   root: every subscribed client) acknowledged the frame; when a member
//!   fails, the first surviving member in the cell's order takes its
//!   copies over and forwards them (`OnFail`). Frames of other classes are
//!   only forwarded.
//! - [`role`]: one peer's core whatever its role, as a driver holds it.
//! - [`peer`]: one peer of the mesh with the join protocol (Listings
//!   1–3): super-peers admitted to cells breadth-first by the primaries
//!   of the cell records, sensors and clients finding their cells the
//!   same way, slow rebinds to the nearest live cell above.
//! - [`sensor`], [`client`] and [`uplink`]: the child side. A sensor keeps
//!   the frames of replicated classes its parent has not acknowledged and
//!   sends them again once rebound, so a parent's death loses none of them
//!   (the seed lost these). A child whose parent fails rebinds *fast* to
//!   the first live super-peer of the same cell it already knows, or
//!   *slow*, through a new `RequestCell`, when that whole cell is gone. A
//!   client suppresses duplicates with a bounded window per stream.
//!
//! Acknowledgements travel back down only once the clients hold a frame,
//! so the pending frames of every hop are a chain from the sensor to the
//! root: when a whole cell dies (Listing 8 hands its frames to the
//! parent), its children still hold every unacknowledged frame and send
//! them again after a slow rebind. Failures come from membership
//! ([`relay::Relay::peer_failed`]), never from timeouts of this core.
//!
//! No IO: inputs come with `now`, outputs are drained with `poll()`, and
//! `poll_timeout()` says when to call `handle_timeout(now)`.

pub mod cell;
pub mod cell_id;
pub mod class;
pub mod client;
pub mod peer;
#[cfg(test)]
mod peer_tests;
pub mod relay;
pub mod role;
pub mod sensor;
#[cfg(test)]
mod tests;
pub mod uplink;

use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use cell::{CellChange, CellEffect, CellRecord, CellSnapshot};
pub use cell_id::{place_super_peer, CellId, CellIdError};
pub use class::{ClassError, FtPolicy, StreamClass};
pub use client::Client;
pub use peer::{MeshNotice, MeshPeer, MeshPeerConfig, MeshPeerError, MeshPeerMsg, MeshPeerOutput};
pub use relay::Relay;
pub use role::MeshRole;
pub use sensor::Sensor;

/// Limits and timing of the mesh cores, with defaults for the seed's
/// traffic (video frames of 4,180 bytes at 24/s are the largest).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MeshConfig {
    /// Largest frame payload accepted; larger frames are counted and
    /// dropped (a sensor's `send` refuses them). Default 64 KiB.
    pub max_frame_bytes: usize,
    /// Frames a super-peer owns and keeps until its parent (or, at the
    /// root, every client) acknowledges them; a frame beyond it is counted
    /// and dropped unacknowledged, so its child sends it again later.
    /// Default 4,096.
    pub max_pending_frames: usize,
    /// Payload bytes of those frames. Default 32 MiB.
    pub max_pending_bytes: usize,
    /// FT copies a super-peer keeps for the other members of its cell.
    /// Default 8,192.
    pub max_copy_frames: usize,
    /// Payload bytes of those copies. Default 64 MiB.
    pub max_copy_bytes: usize,
    /// Frames a sensor keeps until acknowledged; beyond it `send` fails
    /// with [`sensor::SendError::BufferFull`]. Default 1,024 (about 10 s
    /// of the seed's three streams).
    pub max_unacked_frames: usize,
    /// Payload bytes of those frames. Default 8 MiB.
    pub max_unacked_bytes: usize,
    /// Children (sensors and super-peers of child cells) a super-peer
    /// accepts. Default 64.
    pub max_children: usize,
    /// Clients a root super-peer serves. Default 16.
    pub max_clients: usize,
    /// Children a super-peer remembers per frame, to acknowledge it to
    /// (a child that rebound sends frames again). Default 4.
    pub max_ack_to: usize,
    /// Streams (sensor × class) a client tracks. Default 4,096.
    pub max_streams: usize,
    /// Sequence numbers below a stream's highest for which a client still
    /// recognises a duplicate; older frames are dropped as duplicates.
    /// Default 4,096.
    pub dedup_window_frames: u64,
    /// How long an unacknowledged frame waits before it is sent again (to
    /// the same parent: a lost message). Default 250 ms.
    pub resend_after: Duration,
    /// How long a super-peer keeps an FT copy without its owner's FT
    /// reply (lost on the way). Longer than a frame normally stays
    /// pending at its owner, slow rebinds included. Default 5 s.
    pub copy_ttl: Duration,
    /// How long a root super-peer without clients (it just reached the
    /// root, or its last client was declared dead) keeps the frames it
    /// owns for clients to subscribe, instead of taking them as delivered.
    /// A client wrongly declared dead is back once it has refuted the
    /// declaration and subscribed again at its next refresh: under load
    /// the peers' declarations alone can spread over seconds. Frames held
    /// stay within [`MeshConfig::max_pending_frames`]. Default 10 s.
    pub client_hold: Duration,
    /// How long a child waits for a super-peer to accept it before it
    /// tries the next one. Default 500 ms.
    pub bind_timeout: Duration,
    /// How long a child waits for an answer to `RequestCell` before it
    /// asks again. Default 1 s.
    pub discovery_timeout: Duration,
}

/// Most times the wait before an unacknowledged frame is sent again
/// doubles ([`MeshConfig::resend_delay`]).
pub const RESEND_MAX_DOUBLINGS: u32 = 2;

impl MeshConfig {
    /// How long an unacknowledged frame waits before it is sent again,
    /// after it was sent again `resends` times to the same parent:
    /// [`MeshConfig::resend_after`], doubled per resend up to
    /// [`RESEND_MAX_DOUBLINGS`] times (1 s by default, below
    /// [`MeshConfig::copy_ttl`]). Through a node the
    /// pipes already retransmit what the network lost, so an
    /// acknowledgement still missing is mostly one held up behind a busy
    /// link; sending every pending frame again at the first pace only
    /// queued more behind it (a relay of a lossy seed of the simulator's
    /// `mesh-node` workload resent its frames three times over and never
    /// drained).
    pub fn resend_delay(&self, resends: u32) -> Duration {
        self.resend_after * (1u32 << resends.min(RESEND_MAX_DOUBLINGS))
    }
}

impl Default for MeshConfig {
    fn default() -> Self {
        MeshConfig {
            max_frame_bytes: 64 << 10,
            max_pending_frames: 4096,
            max_pending_bytes: 32 << 20,
            max_copy_frames: 8192,
            max_copy_bytes: 64 << 20,
            max_unacked_frames: 1024,
            max_unacked_bytes: 8 << 20,
            max_children: 64,
            max_clients: 16,
            max_ack_to: 4,
            max_streams: 4096,
            dedup_window_frames: 4096,
            resend_after: Duration::from_millis(250),
            copy_ttl: Duration::from_secs(5),
            client_hold: Duration::from_secs(10),
            bind_timeout: Duration::from_millis(500),
            discovery_timeout: Duration::from_secs(1),
        }
    }
}

/// A frame of a stream as it travels: which sensor made it, in which
/// class (a wire code, checked by every receiver), its number in that
/// sensor's stream of that class, and the payload.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Frame<P> {
    /// The sensor that made it.
    pub origin: P,
    /// Its class's wire code ([`StreamClass::code`]); unknown codes are
    /// counted and dropped.
    pub class: u8,
    /// Its number in the stream, from 0.
    pub seq: u64,
    /// The data.
    #[serde(with = "serde_bytes")]
    pub payload: Vec<u8>,
}

/// Which frame: the key of pending frames, copies and acknowledgements.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct FrameId<P> {
    /// The sensor that made it.
    pub origin: P,
    /// Its class (decoding an unknown code is an error).
    pub class: StreamClass,
    /// Its number in the stream.
    pub seq: u64,
}

impl<P: Clone> Frame<P> {
    /// Its id, if its class is known.
    pub fn id(&self) -> Option<FrameId<P>> {
        Some(FrameId {
            origin: self.origin.clone(),
            class: StreamClass::from_code(self.class)?,
            seq: self.seq,
        })
    }
}

impl<P: Clone> FrameId<P> {
    /// The frame of this id carrying `payload`.
    pub fn frame(&self, payload: Vec<u8>) -> Frame<P> {
        Frame {
            origin: self.origin.clone(),
            class: self.class.code(),
            seq: self.seq,
            payload,
        }
    }
}

/// A message between mesh peers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MeshMsg<P> {
    /// Child → super-peer: take me as your child (a sensor, or a
    /// super-peer of a child cell).
    Bind,
    /// Super-peer → child: accepted; the super-peers of my cell in order
    /// (what a fast rebind chooses from).
    Bound {
        /// The super-peer's cell.
        cell: CellId,
        /// Its members in join order.
        members: Vec<P>,
    },
    /// Super-peer → child or client: refused (it serves as many as it
    /// may, or it is not at the root).
    Refused,
    /// Child → parent: a frame travelling up.
    Up(Frame<P>),
    /// Parent → child: every client holds the frame; forget it.
    Ack(FrameId<P>),
    /// Owner → the other members of its cell: keep this frame until my
    /// FT reply, and forward it if I fail.
    FtCopy {
        /// The frame.
        frame: Frame<P>,
        /// The children to acknowledge it to.
        ack_to: Vec<P>,
    },
    /// Owner → the other members of its cell: the frame is acknowledged;
    /// drop the copy.
    FtReply(FrameId<P>),
    /// Client → root super-peer: send me the frames of these classes
    /// (wire codes; unknown ones are counted and ignored).
    Subscribe {
        /// The classes wanted.
        classes: Vec<u8>,
    },
    /// Root super-peer → client: a frame.
    Deliver {
        /// The frame.
        frame: Frame<P>,
        /// Whether the client must acknowledge it (replicated class).
        ack: bool,
    },
    /// Client → root super-peer: I hold this frame.
    ClientAck(FrameId<P>),
    /// New member → the other members of its cell: my relay starts with
    /// no state. A peer restarted before anyone declared it failed is
    /// still a member, and lost the frames it owned and the copies it
    /// held: its successor takes over its copies, the others copy their
    /// frames to it again.
    Fresh,
}

impl<P> MeshMsg<P> {
    /// The class whose priority the message travels with: a frame's own
    /// class (mesh if unknown), mesh for everything else.
    pub fn class(&self) -> StreamClass {
        match self {
            MeshMsg::Up(frame) | MeshMsg::FtCopy { frame, .. } | MeshMsg::Deliver { frame, .. } => {
                StreamClass::from_code(frame.class).unwrap_or(StreamClass::Mesh)
            }
            _ => StreamClass::Mesh,
        }
    }

    /// Whether the message is bookkeeping off the frames' path, which may
    /// be lost (the mesh sends again what must arrive) and may wait a few
    /// milliseconds to travel with others to the same peer:
    /// acknowledgements and FT replies (the frames are held until they
    /// arrive) and FT copies (the owner's children hold the frame too, so
    /// a copy late by a few milliseconds narrows nothing but the window
    /// in which two failures need a resend).
    pub fn deferrable(&self) -> bool {
        matches!(
            self,
            MeshMsg::Ack(_) | MeshMsg::FtCopy { .. } | MeshMsg::FtReply(_) | MeshMsg::ClientAck(_)
        )
    }

    /// The message's name, for logs and counters.
    pub fn name(&self) -> &'static str {
        match self {
            MeshMsg::Bind => "Bind",
            MeshMsg::Bound { .. } => "Bound",
            MeshMsg::Refused => "Refused",
            MeshMsg::Up(_) => "Up",
            MeshMsg::Ack(_) => "Ack",
            MeshMsg::FtCopy { .. } => "FtCopy",
            MeshMsg::FtReply(_) => "FtReply",
            MeshMsg::Subscribe { .. } => "Subscribe",
            MeshMsg::Deliver { .. } => "Deliver",
            MeshMsg::ClientAck(_) => "ClientAck",
            MeshMsg::Fresh => "Fresh",
        }
    }
}

/// How a child came to its current parent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum RebindKind {
    /// Its first parent.
    Initial,
    /// Another super-peer of its former parent's cell, known beforehand.
    Fast,
    /// A super-peer found through a new `RequestCell` (the whole former
    /// cell was gone).
    Slow,
}

/// What a mesh core tells its driver.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MeshEvent<P> {
    /// This child is bound to `parent`, of `cell`.
    Bound {
        /// How it got there.
        kind: RebindKind,
        /// Its parent.
        parent: P,
        /// The parent's cell.
        cell: CellId,
        /// Time from the loss of the former parent (from the first bind
        /// request for [`RebindKind::Initial`]) to the acceptance.
        after: Duration,
    },
    /// This super-peer took over the pending frames of `failed`, a member
    /// of its cell, as its successor.
    TookOver {
        /// The failed member (or restarted: see [`MeshMsg::Fresh`]).
        failed: P,
        /// How many frames it took over.
        frames: usize,
    },
    /// A client received a frame for the first time.
    Delivered(Frame<P>),
}

/// What a mesh core wants done.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MeshOutput<P> {
    /// Send `msg` to `to`, with the priority of [`MeshMsg::class`].
    Send {
        /// The receiver.
        to: P,
        /// The message.
        msg: MeshMsg<P>,
    },
    /// Slow rebind: every super-peer of `lost` (the former parent's cell)
    /// is gone; find a cell to bind to (`RequestCell`) and answer with the
    /// core's `parent_found`.
    FindParent {
        /// The cell that was lost.
        lost: CellId,
    },
    /// Something to tell.
    Event(MeshEvent<P>),
}
