//! A client peer: the sink the streams climb to. It subscribes at every
//! super-peer of the root cell (whichever of them owns a frame delivers
//! it, a successor included), acknowledges the frames of replicated
//! classes (every time: an acknowledgement may have been lost with a
//! failed super-peer), and hands each frame over once, suppressing
//! duplicates with a bounded window per stream.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Instant;

use super::{FrameId, MeshConfig, MeshEvent, MeshMsg, MeshOutput, StreamClass};
use crate::PeerKey;

/// What a client counted.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClientStats {
    /// Frames handed over.
    pub delivered: u64,
    /// Copies of frames already handed over (or older than the window).
    pub duplicates: u64,
    /// Frames of an unknown class.
    pub unknown_class: u64,
    /// Frames larger than the limit.
    pub oversized: u64,
    /// Frames of a new stream beyond [`MeshConfig::max_streams`].
    pub too_many_streams: u64,
    /// Messages from peers that are not root super-peers it subscribed at.
    pub from_stranger: u64,
}

/// The frames of one stream seen lately.
#[derive(Clone, Debug, Default)]
struct Window {
    /// Highest number seen.
    highest: u64,
    /// Numbers seen within the window below `highest` (inclusive).
    seen: BTreeSet<u64>,
}

impl Window {
    /// Records `seq`; whether it is new.
    fn insert(&mut self, seq: u64, width: u64) -> bool {
        if seq.saturating_add(width) <= self.highest {
            return false;
        }
        if !self.seen.insert(seq) {
            return false;
        }
        self.highest = self.highest.max(seq);
        let floor = self.highest.saturating_sub(width.saturating_sub(1));
        while self.seen.first().is_some_and(|s| *s < floor) {
            self.seen.pop_first();
        }
        true
    }
}

/// A client peer. See the module docs.
pub struct Client<P> {
    config: MeshConfig,
    /// The root super-peers it subscribed at.
    roots: Vec<P>,
    /// Those that answered the subscription (`Bound`).
    confirmed: BTreeSet<P>,
    /// When to subscribe again at the roots that have not answered (the
    /// subscription or its answer was lost).
    resubscribe_at: Option<Instant>,
    classes: Vec<StreamClass>,
    streams: BTreeMap<(P, StreamClass), Window>,
    outputs: VecDeque<MeshOutput<P>>,
    stats: ClientStats,
}

impl<P: PeerKey> Client<P> {
    /// A client that wants the frames of `classes`.
    pub fn new(config: MeshConfig, classes: Vec<StreamClass>) -> Client<P> {
        Client {
            config,
            roots: Vec::new(),
            confirmed: BTreeSet::new(),
            resubscribe_at: None,
            classes,
            streams: BTreeMap::new(),
            outputs: VecDeque::new(),
            stats: ClientStats::default(),
        }
    }

    /// Subscribes at the root cell's super-peers `roots` — again at those
    /// it is subscribed at already: a root that wrongly declared this
    /// client dead forgot it — then every [`MeshConfig::resend_after`] at
    /// those that have not answered.
    pub fn subscribe(&mut self, now: Instant, roots: Vec<P>) {
        for root in &roots {
            self.confirmed.remove(root);
            if !self.roots.contains(root) {
                self.roots.push(root.clone());
            }
        }
        self.send_subscriptions(now, &roots);
    }

    fn send_subscriptions(&mut self, now: Instant, roots: &[P]) {
        let classes: Vec<u8> = self.classes.iter().map(|c| c.code()).collect();
        self.resubscribe_at = None;
        for root in roots {
            if self.confirmed.contains(root) {
                continue;
            }
            self.resubscribe_at = Some(now + self.config.resend_after);
            self.outputs.push_back(MeshOutput::Send {
                to: root.clone(),
                msg: MeshMsg::Subscribe {
                    classes: classes.clone(),
                },
            });
        }
    }

    /// What it counted.
    pub fn stats(&self) -> &ClientStats {
        &self.stats
    }

    /// A message from `from`.
    pub fn handle(&mut self, _now: Instant, from: P, msg: MeshMsg<P>) {
        if !self.roots.contains(&from) {
            self.stats.from_stranger += 1;
            return;
        }
        let (frame, ack) = match msg {
            MeshMsg::Deliver { frame, ack } => (frame, ack),
            MeshMsg::Bound { .. } => {
                self.confirmed.insert(from);
                return;
            }
            _ => {
                self.stats.from_stranger += 1;
                return;
            }
        };
        if frame.payload.len() > self.config.max_frame_bytes {
            self.stats.oversized += 1;
            return;
        }
        let Some(class) = StreamClass::from_code(frame.class) else {
            self.stats.unknown_class += 1;
            return;
        };
        if ack {
            self.outputs.push_back(MeshOutput::Send {
                to: from,
                msg: MeshMsg::ClientAck(FrameId {
                    origin: frame.origin.clone(),
                    class,
                    seq: frame.seq,
                }),
            });
        }
        let stream = (frame.origin.clone(), class);
        if !self.streams.contains_key(&stream) && self.streams.len() >= self.config.max_streams {
            self.stats.too_many_streams += 1;
            return;
        }
        let window = self.streams.entry(stream).or_default();
        if window.insert(frame.seq, self.config.dedup_window_frames.max(1)) {
            self.stats.delivered += 1;
            self.outputs
                .push_back(MeshOutput::Event(MeshEvent::Delivered(frame)));
        } else {
            self.stats.duplicates += 1;
        }
    }

    /// Membership declared `peer` failed: it is no longer subscribed at.
    pub fn peer_failed(&mut self, _now: Instant, peer: &P) {
        self.roots.retain(|r| r != peer);
        self.confirmed.remove(peer);
    }

    /// When to call [`Client::handle_timeout`]: while a root has not
    /// answered the subscription.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.resubscribe_at
    }

    /// Subscribes again at the roots that have not answered.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.resubscribe_at.is_some_and(|t| t <= now) {
            let roots = self.roots.clone();
            self.send_subscriptions(now, &roots);
        }
    }

    /// The next thing to do.
    pub fn poll(&mut self) -> Option<MeshOutput<P>> {
        self.outputs.pop_front()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_suppresses_duplicates_and_stays_bounded() {
        let mut window = Window::default();
        assert!(window.insert(0, 4));
        assert!(!window.insert(0, 4));
        assert!(window.insert(2, 4));
        assert!(window.insert(1, 4));
        assert!(!window.insert(2, 4));
        assert!(window.insert(10, 4));
        // 6 is more than the window below 10: taken as a duplicate.
        assert!(!window.insert(6, 4));
        assert!(window.insert(7, 4));
        assert!(window.seen.len() <= 4);
        assert!(window.insert(u64::MAX, 4));
        assert!(!window.insert(u64::MAX, 4));
        assert!(!window.insert(11, 4));
    }
}
