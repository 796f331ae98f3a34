//! A sensor peer: it numbers the frames of each of its streams, sends them
//! to its parent super-peer, and keeps those of replicated classes until
//! they are acknowledged (they reached every client), sending them again
//! after a rebind or when an acknowledgement is late. The seed's sensors
//! kept nothing and lost frames whenever their parent died; these lose
//! none in a replicated class.

use std::collections::{BTreeMap, VecDeque};
use std::time::Instant;

use super::uplink::Uplink;
use super::{CellId, Frame, FrameId, FtPolicy, MeshConfig, MeshMsg, MeshOutput, StreamClass};
use crate::PeerKey;

/// Why [`Sensor::send`] refused a frame.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// The payload is larger than [`MeshConfig::max_frame_bytes`].
    #[error("frame of {size} bytes is larger than the mesh's limit of {max} bytes")]
    FrameTooLarge {
        /// Its size.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// The frames not yet acknowledged fill the buffer: try again once the
    /// parent catches up (or is rebound).
    #[error("{frames} frames ({bytes} bytes) await acknowledgement: the buffer is full")]
    BufferFull {
        /// Frames held.
        frames: usize,
        /// Their bytes.
        bytes: usize,
    },
}

/// What a sensor counted.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SensorStats {
    /// Frames sent for the first time.
    pub frames_sent: u64,
    /// Frames sent again (rebind or late acknowledgement).
    pub frames_resent: u64,
    /// Frames of unreplicated classes dropped because no parent was bound.
    pub dropped_unbound: u64,
    /// Messages from peers that are not on the parent's side, dropped.
    pub from_stranger: u64,
}

/// A frame waiting for its acknowledgement.
#[derive(Clone, Debug)]
struct Unacked {
    payload: Vec<u8>,
    /// When to send it again (if bound).
    resend_at: Instant,
    /// Times sent again to the same parent without an acknowledgement
    /// ([`MeshConfig::resend_delay`]).
    resends: u32,
}

/// A sensor peer. See the module docs.
pub struct Sensor<P> {
    me: P,
    config: MeshConfig,
    policy: FtPolicy,
    uplink: Uplink<P>,
    /// Next number of each class's stream, by class code.
    next_seq: [u64; 4],
    unacked: BTreeMap<(StreamClass, u64), Unacked>,
    unacked_bytes: usize,
    outputs: VecDeque<MeshOutput<P>>,
    stats: SensorStats,
}

impl<P: PeerKey> Sensor<P> {
    /// A sensor `me` under `policy`, not bound yet.
    pub fn new(me: P, config: MeshConfig, policy: FtPolicy) -> Sensor<P> {
        Sensor {
            me,
            config,
            policy,
            uplink: Uplink::new(),
            next_seq: [0; 4],
            unacked: BTreeMap::new(),
            unacked_bytes: 0,
            outputs: VecDeque::new(),
            stats: SensorStats::default(),
        }
    }

    /// Binds to a super-peer of `cell` (found through `RequestCell`), the
    /// `preferred`-th of its `members` first.
    pub fn bind(&mut self, now: Instant, cell: CellId, members: Vec<P>, preferred: usize) {
        self.uplink.bind(
            now,
            &self.config,
            cell,
            members,
            preferred,
            &mut self.outputs,
        );
    }

    /// The link to the parent.
    pub fn uplink(&self) -> &Uplink<P> {
        &self.uplink
    }

    /// What it counted.
    pub fn stats(&self) -> &SensorStats {
        &self.stats
    }

    /// Frames of replicated classes not yet acknowledged.
    pub fn unacked_frames(&self) -> usize {
        self.unacked.len()
    }

    /// Streams a frame of `class`; its number in the stream. A frame of a
    /// replicated class is kept until acknowledged (and sent once bound);
    /// one of another class is dropped if no parent is bound.
    pub fn send(
        &mut self,
        now: Instant,
        class: StreamClass,
        payload: Vec<u8>,
    ) -> Result<u64, SendError> {
        if payload.len() > self.config.max_frame_bytes {
            return Err(SendError::FrameTooLarge {
                size: payload.len(),
                max: self.config.max_frame_bytes,
            });
        }
        let reliable = self.policy.replicates(class);
        if reliable
            && (self.unacked.len() >= self.config.max_unacked_frames
                || self.unacked_bytes + payload.len() > self.config.max_unacked_bytes)
        {
            return Err(SendError::BufferFull {
                frames: self.unacked.len(),
                bytes: self.unacked_bytes,
            });
        }
        let slot = &mut self.next_seq[usize::from(class.code())];
        let seq = *slot;
        *slot += 1;
        let frame = Frame {
            origin: self.me.clone(),
            class: class.code(),
            seq,
            payload,
        };
        match self.uplink.parent().cloned() {
            Some(parent) => {
                self.stats.frames_sent += 1;
                self.outputs.push_back(MeshOutput::Send {
                    to: parent,
                    msg: MeshMsg::Up(frame.clone()),
                });
            }
            None if !reliable => self.stats.dropped_unbound += 1,
            None => {}
        }
        if reliable {
            self.unacked_bytes += frame.payload.len();
            self.unacked.insert(
                (class, seq),
                Unacked {
                    payload: frame.payload,
                    resend_at: now + self.config.resend_delay(0),
                    resends: 0,
                },
            );
        }
        Ok(seq)
    }

    /// A message from `from`.
    pub fn handle(&mut self, now: Instant, from: P, msg: MeshMsg<P>) {
        match msg {
            MeshMsg::Bound { cell, members } => {
                if self
                    .uplink
                    .on_bound(now, &from, cell, members, &mut self.outputs)
                    .is_some()
                {
                    self.resend(now, true);
                } else {
                    self.stats.from_stranger += 1;
                }
            }
            MeshMsg::Refused => self
                .uplink
                .on_refused(now, &self.config, &from, &mut self.outputs),
            MeshMsg::Ack(id) if self.uplink.is_parent_side(&from) => self.acked(&id),
            _ => self.stats.from_stranger += 1,
        }
    }

    fn acked(&mut self, id: &FrameId<P>) {
        if id.origin != self.me {
            return;
        }
        if let Some(frame) = self.unacked.remove(&(id.class, id.seq)) {
            self.unacked_bytes -= frame.payload.len();
        }
    }

    /// Sends the unacknowledged frames to the parent: all of them (a new
    /// parent), or those whose acknowledgement is late.
    fn resend(&mut self, now: Instant, all: bool) {
        let Some(parent) = self.uplink.parent().cloned() else {
            return;
        };
        for ((class, seq), frame) in &mut self.unacked {
            if !all && frame.resend_at > now {
                continue;
            }
            // A new parent starts the backoff over.
            frame.resends = if all {
                0
            } else {
                frame.resends.saturating_add(1)
            };
            frame.resend_at = now + self.config.resend_delay(frame.resends);
            self.stats.frames_resent += 1;
            self.outputs.push_back(MeshOutput::Send {
                to: parent.clone(),
                msg: MeshMsg::Up(Frame {
                    origin: self.me.clone(),
                    class: class.code(),
                    seq: *seq,
                    payload: frame.payload.clone(),
                }),
            });
        }
    }

    /// Membership declared `peer` failed.
    pub fn peer_failed(&mut self, now: Instant, peer: &P) {
        self.uplink
            .peer_failed(now, &self.config, peer, &mut self.outputs);
    }

    /// The answer to [`MeshOutput::FindParent`].
    pub fn parent_found(&mut self, now: Instant, cell: CellId, members: Vec<P>) {
        self.uplink
            .parent_found(now, &self.config, cell, members, &mut self.outputs);
    }

    /// When to call [`Sensor::handle_timeout`].
    pub fn poll_timeout(&self) -> Option<Instant> {
        let resend = self
            .uplink
            .parent()
            .and_then(|_| self.unacked.values().map(|f| f.resend_at).min());
        [resend, self.uplink.poll_timeout()]
            .into_iter()
            .flatten()
            .min()
    }

    /// Moves unanswered binds on, and sends late frames again.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.uplink
            .handle_timeout(now, &self.config, &mut self.outputs);
        self.resend(now, false);
    }

    /// The next thing to do.
    pub fn poll(&mut self) -> Option<MeshOutput<P>> {
        self.outputs.pop_front()
    }

    /// Whether a bind is in progress (for tests and the bench).
    pub fn rebinding(&self) -> bool {
        self.uplink.parent().is_none()
    }
}
