//! The streaming mesh on a running peer (seed 001): take a role — super-peer,
//! sensor or client — stream frames from a sensor, receive them at a client.
//! The cores are `colony_core::mesh`; this module is the handle's side.

use std::collections::BTreeMap;
use std::time::Instant;

use colony_core::mesh::{CellId, FtPolicy, MeshPeerError, RebindKind, StreamClass};
use libp2p::PeerId;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

use crate::command::Command;
use crate::{ColonyError, Peer};

/// Frames a client's receiver holds before further ones are dropped (and
/// counted in [`MeshInfo::frames_dropped`]).
pub const CLIENT_FRAME_CAPACITY: usize = 8192;

/// A frame a client received, once, as the mesh delivered it.
#[derive(Clone, Debug)]
pub struct MeshFrame {
    /// The sensor that made it.
    pub origin: PeerId,
    /// Its class.
    pub class: StreamClass,
    /// Its number in that sensor's stream of that class.
    pub seq: u64,
    /// The data.
    pub payload: Vec<u8>,
    /// When this peer received it.
    pub received: Instant,
}

/// One rebind of a child (a sensor, or a super-peer below the root).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RebindInfo {
    /// `initial`, `fast` or `slow`.
    pub kind: String,
    /// The new parent.
    pub parent: String,
    /// Its cell.
    pub cell: String,
    /// From the loss of the former parent (or the first request) to the
    /// acceptance, in milliseconds.
    pub after_ms: f64,
}

/// This peer's part in the mesh, in `/v1/status`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct MeshInfo {
    /// `super-peer`, `sensor` or `client`; `None` without a role.
    pub role: Option<String>,
    /// A super-peer's cell, once admitted.
    pub cell: Option<String>,
    /// The members of that cell as this super-peer sees them (itself
    /// included, in the order a failed member's successor is read from).
    #[serde(default)]
    pub cell_members: Vec<String>,
    /// The parent a child is bound to.
    pub parent: Option<String>,
    /// Every bind, the first included (at most the last 64).
    pub rebinds: Vec<RebindInfo>,
    /// Frames a super-peer took over from failed members of its cell.
    pub frames_taken_over: u64,
    /// Frames a client received, by class name.
    pub frames_delivered: BTreeMap<String, u64>,
    /// Each stream a client received, as `SENSOR/CLASS` (at most
    /// [`MAX_STREAMS_COUNTED`] streams).
    pub streams: BTreeMap<String, StreamInfo>,
    /// Frames a client received while its receiver was full, dropped.
    pub frames_dropped: u64,
    /// Cells full down to the deepest level when this super-peer asked.
    pub no_cell: u64,
    /// The join protocol's counters (requests retried, joins admitted and
    /// refused here, bad cells and unexpected answers received).
    pub joins: colony_core::mesh::peer::MeshPeerStats,
}

/// Most streams counted in [`MeshInfo::streams`].
pub const MAX_STREAMS_COUNTED: usize = 4096;

/// One stream as a client received it. A live stream starts for a client
/// when it subscribes: frames made before reached nobody.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamInfo {
    /// Frames received (each once).
    pub received: u64,
    /// The lowest frame number received.
    pub lowest: u64,
    /// The highest frame number received.
    pub highest: u64,
}

impl StreamInfo {
    /// Frames numbered between the lowest and the highest received that
    /// have not arrived (lost, or still on their way).
    pub fn missing(&self) -> u64 {
        (self.highest - self.lowest.min(self.highest) + 1).saturating_sub(self.received)
    }
}

/// Most rebinds kept in [`MeshInfo::rebinds`].
pub(crate) const MAX_REBINDS_KEPT: usize = 64;

/// What a handle asks of the mesh.
pub(crate) enum MeshRequest {
    SuperPeer(FtPolicy),
    Sensor {
        policy: FtPolicy,
        cell: CellId,
        preferred: usize,
    },
    Client(Vec<StreamClass>),
    Frame {
        class: StreamClass,
        payload: Vec<u8>,
    },
}

/// What the driver answers.
pub(crate) enum MeshAccepted {
    Started,
    Client(mpsc::Receiver<MeshFrame>),
    Sent(u64),
}

/// The reply channel of a mesh request.
pub(crate) type MeshReply = oneshot::Sender<Result<MeshAccepted, MeshPeerError>>;

impl RebindInfo {
    /// A bind as the core reported it.
    pub(crate) fn new(
        kind: RebindKind,
        parent: PeerId,
        cell: &CellId,
        after: std::time::Duration,
    ) -> Self {
        RebindInfo {
            kind: match kind {
                RebindKind::Initial => "initial",
                RebindKind::Fast => "fast",
                RebindKind::Slow => "slow",
            }
            .into(),
            parent: parent.to_string(),
            cell: cell.to_string(),
            after_ms: after.as_secs_f64() * 1e3,
        }
    }
}

impl Peer {
    async fn mesh(&self, request: MeshRequest) -> Result<MeshAccepted, ColonyError> {
        let (reply, rx) = oneshot::channel();
        self.command(Command::Mesh { request, reply }).await?;
        Ok(rx.await.map_err(|_| ColonyError::Stopped)??)
    }

    /// Becomes a super-peer of the mesh, replicating the classes of
    /// `policy` in its cell: it asks the cells breadth-first to admit it
    /// (its cell shows in [`crate::StatusInfo::mesh`] once admitted).
    pub async fn mesh_super_peer(&self, policy: FtPolicy) -> Result<(), ColonyError> {
        self.mesh(MeshRequest::SuperPeer(policy)).await.map(|_| ())
    }

    /// Becomes a sensor bound under `cell`, the `preferred`-th of its
    /// members first; frames are streamed with [`Peer::mesh_send`].
    pub async fn mesh_sensor(
        &self,
        policy: FtPolicy,
        cell: CellId,
        preferred: usize,
    ) -> Result<(), ColonyError> {
        self.mesh(MeshRequest::Sensor {
            policy,
            cell,
            preferred,
        })
        .await
        .map(|_| ())
    }

    /// Becomes a client of `classes`, subscribed at the root cell: every
    /// frame arrives once on the receiver (at most
    /// [`CLIENT_FRAME_CAPACITY`] waiting).
    pub async fn mesh_client(
        &self,
        classes: Vec<StreamClass>,
    ) -> Result<mpsc::Receiver<MeshFrame>, ColonyError> {
        match self.mesh(MeshRequest::Client(classes)).await? {
            MeshAccepted::Client(frames) => Ok(frames),
            _ => Err(ColonyError::Stopped),
        }
    }

    /// A sensor streams a frame of `class`; its number in the stream.
    pub async fn mesh_send(
        &self,
        class: StreamClass,
        payload: Vec<u8>,
    ) -> Result<u64, ColonyError> {
        match self.mesh(MeshRequest::Frame { class, payload }).await? {
            MeshAccepted::Sent(seq) => Ok(seq),
            _ => Err(ColonyError::Stopped),
        }
    }
}
