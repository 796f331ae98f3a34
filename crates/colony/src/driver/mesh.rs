//! The driver's side of the streaming mesh: roles taken for the handles,
//! frames handed to a client's receiver, and what `/v1/status` shows.

use std::time::Instant;

use colony_core::mesh::{MeshEvent, MeshNotice, MeshRole, StreamClass};
use libp2p::PeerId;
use tokio::sync::mpsc;
use tracing::{info, warn};

use super::Driver;
use crate::mesh::{
    MeshAccepted, MeshFrame, MeshInfo, MeshReply, MeshRequest, RebindInfo, StreamInfo,
    CLIENT_FRAME_CAPACITY, MAX_REBINDS_KEPT, MAX_STREAMS_COUNTED,
};

/// The mesh as the driver keeps it.
#[derive(Default)]
pub(crate) struct MeshIo {
    info: MeshInfo,
    /// A client's receiver of frames.
    frames: Option<mpsc::Sender<MeshFrame>>,
}

impl Driver {
    pub(super) fn mesh_request(&mut self, now: Instant, request: MeshRequest, reply: MeshReply) {
        let mesh = self.node.mesh_mut();
        let result = match request {
            MeshRequest::SuperPeer(policy) => mesh
                .start_super_peer(now, policy)
                .map(|()| MeshAccepted::Started),
            MeshRequest::Sensor {
                policy,
                cell,
                preferred,
            } => mesh
                .start_sensor(now, policy, cell, preferred)
                .map(|()| MeshAccepted::Started),
            MeshRequest::Client(classes) => mesh.start_client(now, classes).map(|()| {
                let (tx, rx) = mpsc::channel(CLIENT_FRAME_CAPACITY);
                self.mesh.frames = Some(tx);
                MeshAccepted::Client(rx)
            }),
            MeshRequest::Frame { class, payload } => {
                mesh.send_frame(now, class, payload).map(MeshAccepted::Sent)
            }
        };
        if let Ok(MeshAccepted::Started | MeshAccepted::Client(_)) = &result {
            info!(role = self.node.mesh().role_name(), "mesh role taken");
        }
        let _ = reply.send(result);
    }

    pub(super) fn on_mesh_notice(&mut self, notice: MeshNotice<PeerId>) {
        let info = &mut self.mesh.info;
        match notice {
            MeshNotice::InCell { cell, members } => {
                info!(%cell, members = members.len(), "admitted to mesh cell");
            }
            MeshNotice::NoCell => {
                info.no_cell += 1;
                warn!("every mesh cell is full down to the deepest level; asking again later");
            }
            MeshNotice::Event(MeshEvent::Bound {
                kind,
                parent,
                cell,
                after,
            }) => {
                info!(?kind, %parent, %cell, after_ms = after.as_secs_f64() * 1e3, "mesh parent bound");
                info.parent = Some(parent.to_string());
                if info.rebinds.len() >= MAX_REBINDS_KEPT {
                    info.rebinds.remove(0);
                }
                info.rebinds
                    .push(RebindInfo::new(kind, parent, &cell, after));
            }
            MeshNotice::Event(MeshEvent::TookOver { failed, frames }) => {
                info!(%failed, frames, "took over a failed cell member's frames");
                info.frames_taken_over += frames as u64;
            }
            MeshNotice::Event(MeshEvent::Delivered(frame)) => {
                let Some(class) = StreamClass::from_code(frame.class) else {
                    return;
                };
                *info
                    .frames_delivered
                    .entry(class.name().to_string())
                    .or_default() += 1;
                let stream = format!("{}/{}", frame.origin, class.name());
                let counted = info.streams.len() < MAX_STREAMS_COUNTED;
                if let Some(s) = info.streams.get_mut(&stream) {
                    s.received += 1;
                    s.lowest = s.lowest.min(frame.seq);
                    s.highest = s.highest.max(frame.seq);
                } else if counted {
                    let first = StreamInfo {
                        received: 1,
                        lowest: frame.seq,
                        highest: frame.seq,
                    };
                    info.streams.insert(stream, first);
                }
                let delivered = MeshFrame {
                    origin: frame.origin,
                    class,
                    seq: frame.seq,
                    payload: frame.payload,
                    received: Instant::now(),
                };
                if let Some(frames) = &self.mesh.frames {
                    if frames.try_send(delivered).is_err() {
                        info.frames_dropped += 1;
                    }
                }
            }
        }
    }

    pub(super) fn mesh_info(&self) -> MeshInfo {
        let mesh = self.node.mesh();
        MeshInfo {
            role: mesh.role_name().map(String::from),
            cell: mesh.cell().map(ToString::to_string),
            cell_members: match mesh.role() {
                Some(MeshRole::Relay(relay)) => {
                    relay.members().iter().map(ToString::to_string).collect()
                }
                _ => Vec::new(),
            },
            joins: mesh.stats().clone(),
            ..self.mesh.info.clone()
        }
    }
}
