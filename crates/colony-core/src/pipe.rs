//! Reliable pipes (seed 003 §4.3, Fig. 7): exactly-once, in-order messages
//! between peers over a datagram service that may lose, duplicate, delay and
//! reorder frames.
//!
//! - Each sender→receiver pair has one *channel per traffic class*; messages
//!   are numbered per channel and delivered in that order. Classes have
//!   priorities (seed 001: mesh 10 > events 3 > audio/video 1): the driver
//!   gives each frame its class's priority, so bulk traffic never holds up
//!   urgent traffic behind it.
//! - The sender keeps every message until it is acknowledged, retransmitting
//!   it with progressive timeouts (doubling from an RTT-based estimate, capped)
//!   until its deadline, when the caller gets [`PipeError::DeadlineExceeded`].
//!   No message is dropped silently: each ends in a receipt or an error.
//! - The receiver suppresses duplicates by (sender session, sequence number),
//!   holds out-of-order messages in a bounded window, and hands messages to the
//!   application exactly once, in order. Acknowledgements are cumulative with
//!   selective ranges, one per channel per batch of input.
//! - A sender *session* (chosen by the driver, rising across restarts) tells
//!   a receiver when a peer restarted; every data frame carries the lowest
//!   unacknowledged number (`base`), so a receiver that meets a session for
//!   the first time knows where it starts, and skips numbers whose sender gave
//!   up on them.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::PeerKey;

/// A traffic class; its number is its priority (higher is more urgent).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct TrafficClass(pub u8);

impl TrafficClass {
    /// Overlay maintenance and coordination (seed 001's mesh traffic).
    pub const MESH: TrafficClass = TrafficClass(10);
    /// Application events and control messages.
    pub const EVENTS: TrafficClass = TrafficClass(3);
    /// Bulk data: work units, checkpoints, results.
    pub const BULK: TrafficClass = TrafficClass(1);
}

/// Tuning of the pipe core.
#[derive(Clone, Debug, PartialEq)]
pub struct PipeConfig {
    /// Largest message payload accepted by `send`.
    pub max_message_bytes: usize,
    /// Retransmission timeout before any round trip has been measured.
    pub initial_rto: Duration,
    /// Floor of the retransmission timeout.
    pub min_rto: Duration,
    /// Cap of the progressive (doubling) retransmission timeout.
    pub max_rto: Duration,
    /// Messages in flight (sent, unacknowledged) per channel.
    pub window_messages: usize,
    /// Payload bytes in flight per channel (at least one message is always
    /// let through): bounds memory and keeps bulk traffic from flooding the
    /// connection that urgent traffic shares.
    pub window_bytes: usize,
    /// Messages waiting for window space per channel; beyond it `send` fails
    /// with [`PipeError::Backpressure`].
    pub max_queued_messages: usize,
    /// How far ahead of the next expected number a receiver buffers.
    pub receive_window: usize,
    /// Payload bytes held out of order, across all receive channels:
    /// beyond it, data that cannot be delivered at once is dropped (the
    /// sender retransmits it), so a peer sending only far-ahead numbers
    /// cannot make the receiver hold `receive_window` full messages per
    /// channel.
    pub max_buffered_bytes: usize,
    /// Messages received in order but not yet taken by the application;
    /// beyond it the receiver stops acknowledging, which slows senders down.
    pub max_ready_messages: usize,
    /// Most selective-acknowledgement ranges in one ack.
    pub max_sack_ranges: usize,
    /// Most channels (peer × class) whose position is remembered, in each
    /// direction; beyond it the least recently active are forgotten.
    pub max_channels: usize,
}

impl Default for PipeConfig {
    fn default() -> Self {
        PipeConfig {
            max_message_bytes: 1 << 20,
            initial_rto: Duration::from_millis(100),
            min_rto: Duration::from_millis(10),
            max_rto: Duration::from_secs(1),
            window_messages: 4096,
            window_bytes: 4 << 20,
            max_queued_messages: 65_536,
            receive_window: 8192,
            max_buffered_bytes: 64 << 20,
            max_ready_messages: 65_536,
            max_sack_ranges: 32,
            max_channels: 65_536,
        }
    }
}

/// Pipe frames on the wire.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PipeFrame {
    /// A message.
    Data {
        /// Its traffic class.
        class: TrafficClass,
        /// The sender's session.
        session: u64,
        /// Its number in the channel.
        seq: u64,
        /// The lowest number the sender has not settled (acknowledged or
        /// given up on).
        base: u64,
        /// The message.
        #[serde(with = "serde_bytes")]
        payload: Vec<u8>,
    },
    /// Acknowledgement of a channel's messages.
    Ack {
        /// The channel's class.
        class: TrafficClass,
        /// The sender session being acknowledged.
        session: u64,
        /// Every number below this was received.
        cumulative: u64,
        /// Further received ranges, `[start, end)`.
        sack: Vec<(u64, u64)>,
    },
    /// The sender gave up on numbers below `base`: stop waiting for them.
    Base {
        /// The channel's class.
        class: TrafficClass,
        /// The sender's session.
        session: u64,
        /// The new base.
        base: u64,
    },
}

/// Why a message was not delivered. Every message ends in a [`Receipt`] or
/// one of these.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PipeError {
    /// Membership declared the destination dead (or it left).
    #[error("peer {peer} is dead")]
    PeerDead {
        /// The destination.
        peer: String,
    },
    /// No acknowledgement arrived before the deadline.
    #[error("no acknowledgement within {after:?}")]
    DeadlineExceeded {
        /// How long the pipe tried.
        after: Duration,
    },
    /// The payload is larger than the pipe accepts.
    #[error("message of {size} bytes exceeds the limit of {max} bytes")]
    MessageTooLarge {
        /// The payload's size.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// Too many messages are already waiting for this destination.
    #[error("{queued} messages already queued for this peer; slow down")]
    Backpressure {
        /// How many are queued.
        queued: usize,
    },
    /// The local peer is shutting down.
    #[error("the local peer is shutting down")]
    Shutdown,
}

/// Proof of delivery: the receiving peer accepted the message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Receipt {
    /// The message's number in its channel.
    pub seq: u64,
    /// Time from the first transmission to the acknowledgement.
    pub latency: Duration,
    /// How many times the message was transmitted.
    pub transmissions: u32,
}

/// A message ready for the application.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivery<P> {
    /// Who sent it.
    pub from: P,
    /// Its class.
    pub class: TrafficClass,
    /// Its number in the channel.
    pub seq: u64,
    /// The message.
    pub payload: Vec<u8>,
}

/// What the pipe core asks of the driver.
#[derive(Clone, Debug, PartialEq)]
pub enum PipeOutput<P> {
    /// Send `frame` to `to` with the priority of `class`.
    Transmit {
        /// Destination.
        to: P,
        /// Class whose priority applies.
        class: TrafficClass,
        /// The frame.
        frame: PipeFrame,
    },
    /// The message sent with `token` was delivered.
    Delivered {
        /// The caller's token.
        token: u64,
        /// Details.
        receipt: Receipt,
    },
    /// The message sent with `token` was not delivered.
    Failed {
        /// The caller's token.
        token: u64,
        /// Why.
        error: PipeError,
    },
}

/// Counters of one pipe core.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PipeStats {
    /// Messages accepted by `send`.
    pub messages_sent: u64,
    /// Data frames sent again after a timeout.
    pub retransmissions: u64,
    /// Messages acknowledged.
    pub messages_acked: u64,
    /// Messages failed (deadline, dead peer).
    pub messages_failed: u64,
    /// Messages handed to the application.
    pub messages_delivered: u64,
    /// Data frames dropped as duplicates.
    pub duplicates_suppressed: u64,
    /// Data frames dropped for lying beyond the receive window.
    pub out_of_window_dropped: u64,
    /// Frames from an older session of their sender.
    pub stale_frames_dropped: u64,
    /// Acknowledgement frames sent.
    pub acks_sent: u64,
}

type ChannelKey<P> = (P, TrafficClass);

/// Most holes fast-retransmitted in answer to one acknowledgement.
const FAST_RETRANSMIT_BATCH: usize = 64;

/// Marks the timer entry of a pending base announcement.
const BASE_TIMER: u64 = u64::MAX;

struct InFlight {
    payload: Vec<u8>,
    token: u64,
    first_sent: Instant,
    last_sent: Instant,
    transmissions: u32,
    rto: Duration,
    deadline: Instant,
    timer_at: Instant,
    /// Selectively acknowledged: in the receiver's reorder buffer, not yet
    /// delivered; no fast retransmission, and no receipt until the
    /// cumulative acknowledgement covers it.
    sacked: bool,
}

struct Queued {
    payload: Vec<u8>,
    token: u64,
    deadline: Instant,
}

struct BaseAnnounce {
    rto: Duration,
    give_up: Instant,
    timer_at: Instant,
}

struct SendChannel {
    /// Numbers keep rising for the life of the session, also across a
    /// (possibly false) death of the peer: restarting them would make the
    /// receiver take new messages for old duplicates.
    next_seq: u64,
    in_flight: BTreeMap<u64, InFlight>,
    in_flight_bytes: usize,
    last_active: Instant,
    backlog: VecDeque<Queued>,
    /// Smoothed RTT and its variation (RFC 6298), once measured.
    srtt: Option<(Duration, Duration)>,
    base_announce: Option<BaseAnnounce>,
}

impl SendChannel {
    fn base(&self) -> u64 {
        self.in_flight
            .keys()
            .next()
            .copied()
            .unwrap_or(self.next_seq)
    }
}

struct RecvChannel {
    last_active: Instant,
    session: u64,
    next_expected: u64,
    /// The sender settled everything below this: missing numbers below it
    /// will never come and are skipped.
    floor: u64,
    buffer: BTreeMap<u64, Vec<u8>>,
}

/// The reliable-pipe core of one peer. See the module docs.
pub struct Pipes<P: PeerKey> {
    config: PipeConfig,
    session: u64,
    send: BTreeMap<ChannelKey<P>, SendChannel>,
    recv: BTreeMap<ChannelKey<P>, RecvChannel>,
    timers: BTreeSet<(Instant, P, TrafficClass, u64)>,
    ready: VecDeque<Delivery<P>>,
    stalled: BTreeSet<ChannelKey<P>>,
    ack_due: BTreeSet<ChannelKey<P>>,
    outputs: VecDeque<PipeOutput<P>>,
    stats: PipeStats,
    /// Payload bytes in the receive channels' buffers.
    buffered_bytes: usize,
}

impl<P: PeerKey> Pipes<P> {
    /// A pipe core whose outgoing messages belong to `session`, which must
    /// be higher than any session this peer used before (e.g. start time in
    /// milliseconds).
    pub fn new(config: PipeConfig, session: u64) -> Self {
        Pipes {
            config,
            session,
            send: BTreeMap::new(),
            recv: BTreeMap::new(),
            timers: BTreeSet::new(),
            ready: VecDeque::new(),
            stalled: BTreeSet::new(),
            ack_due: BTreeSet::new(),
            outputs: VecDeque::new(),
            stats: PipeStats::default(),
            buffered_bytes: 0,
        }
    }

    /// The configuration in force.
    pub fn config(&self) -> &PipeConfig {
        &self.config
    }

    /// Counters so far.
    pub fn stats(&self) -> &PipeStats {
        &self.stats
    }

    /// Messages accepted but not yet settled, across all channels.
    pub fn pending_messages(&self) -> usize {
        self.send
            .values()
            .map(|c| c.in_flight.len() + c.backlog.len())
            .sum()
    }

    /// Queues `payload` for `to`. Its outcome arrives later as
    /// [`PipeOutput::Delivered`] or [`PipeOutput::Failed`] with `token`.
    pub fn send(
        &mut self,
        now: Instant,
        to: P,
        class: TrafficClass,
        payload: Vec<u8>,
        token: u64,
        deadline: Instant,
    ) -> Result<(), PipeError> {
        if payload.len() > self.config.max_message_bytes {
            return Err(PipeError::MessageTooLarge {
                size: payload.len(),
                max: self.config.max_message_bytes,
            });
        }
        let key = (to, class);
        if !self.send.contains_key(&key) {
            if self.send.len() >= self.config.max_channels {
                self.evict_idle_send_channel();
            }
            self.send.insert(
                key.clone(),
                SendChannel {
                    next_seq: 0,
                    in_flight: BTreeMap::new(),
                    in_flight_bytes: 0,
                    last_active: now,
                    backlog: VecDeque::new(),
                    srtt: None,
                    base_announce: None,
                },
            );
        }
        let Some(channel) = self.send.get_mut(&key) else {
            return Err(PipeError::Backpressure { queued: 0 });
        };
        if channel.backlog.len() >= self.config.max_queued_messages {
            return Err(PipeError::Backpressure {
                queued: channel.backlog.len(),
            });
        }
        channel.backlog.push_back(Queued {
            payload,
            token,
            deadline,
        });
        self.stats.messages_sent += 1;
        self.admit(now, &key);
        Ok(())
    }

    /// Moves queued messages of a channel into its window and transmits them.
    fn admit(&mut self, now: Instant, key: &ChannelKey<P>) {
        let Some(channel) = self.send.get_mut(key) else {
            return;
        };
        channel.last_active = now;
        while channel.in_flight.len() < self.config.window_messages {
            let fits = channel.backlog.front().is_some_and(|next| {
                channel.in_flight.is_empty()
                    || channel.in_flight_bytes + next.payload.len() <= self.config.window_bytes
            });
            if !fits {
                break;
            }
            let Some(queued) = channel.backlog.pop_front() else {
                break;
            };
            if queued.deadline <= now {
                self.stats.messages_failed += 1;
                self.outputs.push_back(PipeOutput::Failed {
                    token: queued.token,
                    error: PipeError::DeadlineExceeded {
                        after: Duration::ZERO,
                    },
                });
                continue;
            }
            let seq = channel.next_seq;
            channel.next_seq += 1;
            let rto = rto_of(channel.srtt, &self.config);
            let timer_at = (now + rto).min(queued.deadline);
            let base = channel.base().min(seq);
            self.outputs
                .push_back(transmit_data(key, self.session, seq, base, &queued.payload));
            channel.in_flight_bytes += queued.payload.len();
            channel.in_flight.insert(
                seq,
                InFlight {
                    payload: queued.payload,
                    token: queued.token,
                    first_sent: now,
                    last_sent: now,
                    transmissions: 1,
                    rto,
                    deadline: queued.deadline,
                    timer_at,
                    sacked: false,
                },
            );
            self.timers.insert((timer_at, key.0.clone(), key.1, seq));
        }
    }

    /// Handles a pipe frame from `from` (authenticated by the transport).
    pub fn handle_frame(&mut self, now: Instant, from: P, frame: PipeFrame) {
        match frame {
            PipeFrame::Data {
                class,
                session,
                seq,
                base,
                payload,
            } => self.on_data(now, from, class, session, seq, base, payload),
            PipeFrame::Ack {
                class,
                session,
                cumulative,
                sack,
            } => self.on_ack(now, from, class, session, cumulative, &sack),
            PipeFrame::Base {
                class,
                session,
                base,
            } => {
                let key = (from, class);
                if self.recv_channel(now, &key, session, base).is_some() {
                    self.skip_to(&key, base);
                    self.advance(&key);
                    self.ack_due.insert(key);
                }
            }
        }
    }

    /// The receive channel for `key` in `session`, created or reset as
    /// needed; `None` for a frame of an older session.
    fn recv_channel(
        &mut self,
        now: Instant,
        key: &ChannelKey<P>,
        session: u64,
        base: u64,
    ) -> Option<&mut RecvChannel> {
        let fresh = RecvChannel {
            last_active: now,
            session,
            next_expected: base,
            floor: base,
            buffer: BTreeMap::new(),
        };
        if !self.recv.contains_key(key) && self.recv.len() >= self.config.max_channels {
            let idlest = self
                .recv
                .iter()
                .min_by_key(|(_, c)| c.last_active)
                .map(|(k, _)| k.clone());
            if let Some(idlest) = idlest {
                if let Some(gone) = self.recv.remove(&idlest) {
                    self.buffered_bytes -= buffer_bytes(&gone);
                }
            }
        }
        let channel = self.recv.entry(key.clone()).or_insert(RecvChannel {
            last_active: now,
            session,
            next_expected: base,
            floor: base,
            buffer: BTreeMap::new(),
        });
        channel.last_active = now;
        if session < channel.session {
            self.stats.stale_frames_dropped += 1;
            return None;
        }
        if session > channel.session {
            self.buffered_bytes -= buffer_bytes(channel);
            *channel = fresh;
        }
        Some(channel)
    }

    #[allow(clippy::too_many_arguments)]
    fn on_data(
        &mut self,
        now: Instant,
        from: P,
        class: TrafficClass,
        session: u64,
        seq: u64,
        base: u64,
        payload: Vec<u8>,
    ) {
        let key = (from, class);
        let window = self.config.receive_window as u64;
        let Some(channel) = self.recv_channel(now, &key, session, base) else {
            return;
        };
        channel.floor = channel.floor.max(base);
        self.ack_due.insert(key.clone());
        let Some(channel) = self.recv.get_mut(&key) else {
            return;
        };
        if seq < channel.next_expected || channel.buffer.contains_key(&seq) {
            self.stats.duplicates_suppressed += 1;
            return;
        }
        // The highest number is never taken: the receiver could not count
        // past it.
        if seq >= channel.next_expected.saturating_add(window) || seq == u64::MAX {
            self.stats.out_of_window_dropped += 1;
            return;
        }
        let deliverable =
            seq == channel.next_expected && self.ready.len() < self.config.max_ready_messages;
        if !deliverable && self.buffered_bytes + payload.len() > self.config.max_buffered_bytes {
            self.stats.out_of_window_dropped += 1;
            return;
        }
        self.buffered_bytes += payload.len();
        channel.buffer.insert(seq, payload);
        self.advance(&key);
    }

    /// The sender settled everything below `base` (acknowledged or gave up):
    /// stop waiting for numbers below it that never arrived.
    fn skip_to(&mut self, key: &ChannelKey<P>, base: u64) {
        if let Some(channel) = self.recv.get_mut(key) {
            channel.floor = channel.floor.max(base);
        }
    }

    /// Moves the in-order prefix of a channel's buffer to the ready queue,
    /// as far as the ready queue's bound allows.
    fn advance(&mut self, key: &ChannelKey<P>) {
        let Some(channel) = self.recv.get_mut(key) else {
            return;
        };
        loop {
            if !channel.buffer.contains_key(&channel.next_expected) {
                if channel.next_expected >= channel.floor {
                    break;
                }
                // A gap the sender gave up on: jump to what did arrive.
                let next_arrived = channel.buffer.keys().next().copied();
                channel.next_expected = next_arrived.unwrap_or(channel.floor).min(channel.floor);
                continue;
            }
            if self.ready.len() >= self.config.max_ready_messages {
                self.stalled.insert(key.clone());
                return;
            }
            let Some(payload) = channel.buffer.remove(&channel.next_expected) else {
                break;
            };
            self.buffered_bytes -= payload.len();
            self.ready.push_back(Delivery {
                from: key.0.clone(),
                class: key.1,
                seq: channel.next_expected,
                payload,
            });
            channel.next_expected += 1;
        }
        self.stalled.remove(key);
    }

    fn on_ack(
        &mut self,
        now: Instant,
        from: P,
        class: TrafficClass,
        session: u64,
        cumulative: u64,
        sack: &[(u64, u64)],
    ) {
        if session != self.session {
            self.stats.stale_frames_dropped += 1;
            return;
        }
        let key = (from, class);
        let Some(channel) = self.send.get_mut(&key) else {
            return;
        };
        let highest_sacked = sack
            .iter()
            .take(self.config.max_sack_ranges)
            .map(|r| r.1)
            .max()
            .unwrap_or(0);
        // Only the cumulative acknowledgement delivers: a message held in
        // the receiver's reorder buffer is lost if the receiver crashes.
        let rest = channel.in_flight.split_off(&cumulative);
        let acked = std::mem::replace(&mut channel.in_flight, rest);
        for &(start, end) in sack.iter().take(self.config.max_sack_ranges) {
            if end <= start {
                continue;
            }
            for (_, msg) in channel.in_flight.range_mut(start..end) {
                msg.sacked = true;
            }
        }
        for (seq, msg) in acked {
            channel.in_flight_bytes = channel.in_flight_bytes.saturating_sub(msg.payload.len());
            self.timers
                .remove(&(msg.timer_at, key.0.clone(), key.1, seq));
            let latency = now.saturating_duration_since(msg.first_sent);
            if msg.transmissions == 1 {
                channel.srtt = Some(update_srtt(channel.srtt, latency));
            }
            self.stats.messages_acked += 1;
            self.outputs.push_back(PipeOutput::Delivered {
                token: msg.token,
                receipt: Receipt {
                    seq,
                    latency,
                    transmissions: msg.transmissions,
                },
            });
        }
        self.fast_retransmit(now, &key, highest_sacked);
        let Some(channel) = self.send.get_mut(&key) else {
            return;
        };
        // The receiver is behind a base we moved past: repeat the news.
        if channel.base_announce.is_some() && cumulative < channel.base() {
            let base = channel.base();
            self.outputs.push_back(PipeOutput::Transmit {
                to: key.0.clone(),
                class,
                frame: PipeFrame::Base {
                    class,
                    session: self.session,
                    base,
                },
            });
        } else if let Some(announce) = channel.base_announce.take() {
            self.timers
                .remove(&(announce.timer_at, key.0.clone(), key.1, BASE_TIMER));
        }
        self.admit(now, &key);
    }

    /// Holes below the highest selectively acknowledged number were
    /// overtaken by later messages: once they have had time to arrive
    /// (about one smoothed RTT), send them again without waiting for their
    /// timer, and without raising their timeout.
    fn fast_retransmit(&mut self, now: Instant, key: &ChannelKey<P>, highest_sacked: u64) {
        let Some(channel) = self.send.get_mut(key) else {
            return;
        };
        let Some((srtt, rttvar)) = channel.srtt else {
            return;
        };
        let overdue_after = (srtt + rttvar * 2).max(Duration::from_millis(1));
        let base = channel.base();
        let holes: Vec<u64> = channel
            .in_flight
            .range(..highest_sacked)
            .filter(|(_, m)| {
                !m.sacked && now.saturating_duration_since(m.last_sent) >= overdue_after
            })
            .map(|(seq, _)| *seq)
            .take(FAST_RETRANSMIT_BATCH)
            .collect();
        for seq in holes {
            let Some(msg) = channel.in_flight.get_mut(&seq) else {
                continue;
            };
            msg.transmissions += 1;
            msg.last_sent = now;
            self.stats.retransmissions += 1;
            self.outputs
                .push_back(transmit_data(key, self.session, seq, base, &msg.payload));
        }
    }

    /// When the core next needs [`Pipes::handle_timeout`], if ever.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.first().map(|t| t.0)
    }

    /// Retransmits and expires whatever is due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(first) = self.timers.first() {
            if first.0 > now {
                break;
            }
            let Some((_, peer, class, seq)) = self.timers.pop_first() else {
                break;
            };
            let key = (peer, class);
            if seq == BASE_TIMER {
                self.announce_base(now, &key);
                continue;
            }
            let Some(channel) = self.send.get_mut(&key) else {
                continue;
            };
            let base = channel.base();
            let Some(msg) = channel.in_flight.get_mut(&seq) else {
                continue;
            };
            if msg.deadline <= now {
                let after = now.saturating_duration_since(msg.first_sent);
                let token = msg.token;
                channel.in_flight_bytes = channel.in_flight_bytes.saturating_sub(msg.payload.len());
                channel.in_flight.remove(&seq);
                self.stats.messages_failed += 1;
                self.outputs.push_back(PipeOutput::Failed {
                    token,
                    error: PipeError::DeadlineExceeded { after },
                });
                self.start_base_announce(now, &key);
                self.admit(now, &key);
                continue;
            }
            msg.transmissions += 1;
            msg.last_sent = now;
            msg.rto = (msg.rto * 2).min(self.config.max_rto);
            msg.timer_at = (now + msg.rto).min(msg.deadline);
            self.timers
                .insert((msg.timer_at, key.0.clone(), key.1, seq));
            self.stats.retransmissions += 1;
            self.outputs
                .push_back(transmit_data(&key, self.session, seq, base, &msg.payload));
        }
    }

    fn start_base_announce(&mut self, now: Instant, key: &ChannelKey<P>) {
        let Some(channel) = self.send.get_mut(key) else {
            return;
        };
        if let Some(old) = channel.base_announce.take() {
            self.timers
                .remove(&(old.timer_at, key.0.clone(), key.1, BASE_TIMER));
        }
        let rto = rto_of(channel.srtt, &self.config);
        let give_up = now + self.config.max_rto * 8;
        channel.base_announce = Some(BaseAnnounce {
            rto,
            give_up,
            timer_at: now,
        });
        self.timers.insert((now, key.0.clone(), key.1, BASE_TIMER));
    }

    fn announce_base(&mut self, now: Instant, key: &ChannelKey<P>) {
        let Some(channel) = self.send.get_mut(key) else {
            return;
        };
        let base = channel.base();
        let Some(announce) = channel.base_announce.as_mut() else {
            return;
        };
        if now >= announce.give_up {
            channel.base_announce = None;
            return;
        }
        self.outputs.push_back(PipeOutput::Transmit {
            to: key.0.clone(),
            class: key.1,
            frame: PipeFrame::Base {
                class: key.1,
                session: self.session,
                base,
            },
        });
        announce.timer_at = now + announce.rto;
        announce.rto = (announce.rto * 2).min(self.config.max_rto);
        self.timers
            .insert((announce.timer_at, key.0.clone(), key.1, BASE_TIMER));
    }

    /// Fails everything queued for `peer` with [`PipeError::PeerDead`]
    /// (membership declared it dead or it left). Channel positions are kept:
    /// should the peer turn out alive, numbering continues where it was, and
    /// messages it already delivered are still recognised as duplicates.
    pub fn peer_dead(&mut self, peer: &P) {
        let keys: Vec<ChannelKey<P>> = self
            .send
            .keys()
            .filter(|(p, _)| p == peer)
            .cloned()
            .collect();
        let error = PipeError::PeerDead {
            peer: peer.to_string(),
        };
        for key in keys {
            let Some(channel) = self.send.get_mut(&key) else {
                continue;
            };
            for (seq, msg) in std::mem::take(&mut channel.in_flight) {
                self.timers
                    .remove(&(msg.timer_at, key.0.clone(), key.1, seq));
                self.stats.messages_failed += 1;
                self.outputs.push_back(PipeOutput::Failed {
                    token: msg.token,
                    error: error.clone(),
                });
            }
            channel.in_flight_bytes = 0;
            if let Some(announce) = channel.base_announce.take() {
                self.timers
                    .remove(&(announce.timer_at, key.0.clone(), key.1, BASE_TIMER));
            }
            for msg in std::mem::take(&mut channel.backlog) {
                self.stats.messages_failed += 1;
                self.outputs.push_back(PipeOutput::Failed {
                    token: msg.token,
                    error: error.clone(),
                });
            }
        }
    }

    /// Forgets the least recently active send channel with nothing pending.
    fn evict_idle_send_channel(&mut self) {
        let idlest = self
            .send
            .iter()
            .filter(|(_, c)| c.in_flight.is_empty() && c.backlog.is_empty())
            .min_by_key(|(_, c)| c.last_active)
            .map(|(k, _)| k.clone());
        if let Some(idlest) = idlest {
            self.send.remove(&idlest);
        }
    }

    /// Fails every pending message with [`PipeError::Shutdown`].
    pub fn shutdown(&mut self) {
        for (_, channel) in std::mem::take(&mut self.send) {
            let tokens = channel
                .in_flight
                .into_values()
                .map(|m| m.token)
                .chain(channel.backlog.into_iter().map(|m| m.token));
            for token in tokens {
                self.outputs.push_back(PipeOutput::Failed {
                    token,
                    error: PipeError::Shutdown,
                });
            }
        }
        self.timers.clear();
    }

    /// Whether messages are waiting for the application.
    pub fn has_delivery(&self) -> bool {
        !self.ready.is_empty()
    }

    /// The next message for the application, without taking it.
    pub fn peek_delivery(&self) -> Option<&Delivery<P>> {
        self.ready.front()
    }

    /// The next message for the application, in order, exactly once.
    pub fn pop_delivery(&mut self) -> Option<Delivery<P>> {
        let delivery = self.ready.pop_front()?;
        self.stats.messages_delivered += 1;
        if !self.stalled.is_empty() && self.ready.len() < self.config.max_ready_messages / 2 {
            let stalled: Vec<ChannelKey<P>> = self.stalled.iter().cloned().collect();
            for key in stalled {
                self.advance(&key);
                self.ack_due.insert(key);
            }
        }
        Some(delivery)
    }

    /// The next thing the driver must do. Acknowledgements are produced
    /// once queued outputs run out, one per channel that received data since
    /// the last ones — so draining after a batch of input acks the batch.
    pub fn poll(&mut self) -> Option<PipeOutput<P>> {
        if let Some(out) = self.outputs.pop_front() {
            return Some(out);
        }
        while let Some(key) = self.ack_due.pop_first() {
            let Some(channel) = self.recv.get(&key) else {
                continue;
            };
            let mut sack: Vec<(u64, u64)> = Vec::new();
            for &seq in channel.buffer.keys() {
                if let Some((_, end)) = sack.last_mut().filter(|(_, end)| *end == seq) {
                    *end += 1;
                } else if sack.len() == self.config.max_sack_ranges {
                    break;
                } else {
                    sack.push((seq, seq + 1));
                }
            }
            self.stats.acks_sent += 1;
            return Some(PipeOutput::Transmit {
                to: key.0.clone(),
                class: key.1,
                frame: PipeFrame::Ack {
                    class: key.1,
                    session: channel.session,
                    cumulative: channel.next_expected,
                    sack,
                },
            });
        }
        None
    }
}

/// Payload bytes held in a receive channel's buffer.
fn buffer_bytes(channel: &RecvChannel) -> usize {
    channel.buffer.values().map(Vec::len).sum()
}

/// A transmission of message `seq` of channel `key`.
fn transmit_data<P: Clone>(
    key: &ChannelKey<P>,
    session: u64,
    seq: u64,
    base: u64,
    payload: &[u8],
) -> PipeOutput<P> {
    PipeOutput::Transmit {
        to: key.0.clone(),
        class: key.1,
        frame: PipeFrame::Data {
            class: key.1,
            session,
            seq,
            base,
            payload: payload.to_vec(),
        },
    }
}

fn rto_of(srtt: Option<(Duration, Duration)>, config: &PipeConfig) -> Duration {
    match srtt {
        None => config.initial_rto,
        Some((srtt, rttvar)) => (srtt + rttvar * 4).clamp(config.min_rto, config.max_rto),
    }
}

/// RFC 6298 smoothing: srtt ← 7/8 srtt + 1/8 r, rttvar ← 3/4 rttvar + 1/4 |srtt − r|.
fn update_srtt(current: Option<(Duration, Duration)>, sample: Duration) -> (Duration, Duration) {
    match current {
        None => (sample, sample / 2),
        Some((srtt, rttvar)) => {
            let delta = srtt.abs_diff(sample);
            (srtt * 7 / 8 + sample / 8, rttvar * 3 / 4 + delta / 4)
        }
    }
}

#[cfg(test)]
mod tests;
