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
//! - A message larger than [`PipeConfig::fragment_bytes`] travels as
//!   fragments on consecutive numbers of its channel ([`PipeFrame::Fragment`]),
//!   each retransmitted, acknowledged and flow-controlled like any other
//!   number; the receiver reassembles them in order, checks the whole
//!   message against its CRC-32 and hands it over once. Receipts and
//!   failures are per message, never per fragment: a message the sender
//!   gives up on part-way is never delivered in part. Reassembly is bounded:
//!   one partial message per channel, buffers grown as fragments arrive
//!   (never from an announced size), and a cap on the bytes all partial
//!   messages together may claim.

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
    /// Largest message payload accepted by `send` (and reassembled on
    /// receipt). Messages above `fragment_bytes` are fragmented.
    pub max_message_bytes: usize,
    /// Largest payload of one data frame: messages above it are sent as
    /// fragments of this size. Keep it well under the network's
    /// `max_frame_bytes`, so a fragment plus its header always fits a frame.
    pub fragment_bytes: usize,
    /// Bytes of messages waiting for window space per channel; beyond it
    /// `send` fails with [`PipeError::Backpressure`] (at least one message
    /// is always accepted).
    pub max_queued_bytes: usize,
    /// Bytes a receiver buffers out of order per channel (the next expected
    /// number is always taken).
    pub receive_window_bytes: usize,
    /// Bytes all partially received messages together may claim (by their
    /// announced size, which is only counted, never allocated before the
    /// bytes arrive); a message that would exceed it waits, unacknowledged,
    /// until others complete (one is always let through).
    pub max_reassembly_bytes: usize,
    /// Retransmission timeout before any round trip has been measured.
    pub initial_rto: Duration,
    /// Floor of the retransmission timeout.
    pub min_rto: Duration,
    /// Cap of the progressive (doubling) retransmission timeout.
    pub max_rto: Duration,
    /// Data frames (messages or fragments) in flight (sent,
    /// unacknowledged) per channel.
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
            max_message_bytes: 128 << 20,
            fragment_bytes: 64 << 10,
            max_queued_bytes: 512 << 20,
            receive_window_bytes: 16 << 20,
            max_reassembly_bytes: 512 << 20,
            initial_rto: Duration::from_millis(100),
            min_rto: Duration::from_millis(10),
            max_rto: Duration::from_secs(1),
            window_messages: 4096,
            window_bytes: 1 << 20,
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
    /// A fragment of a message larger than one frame: fragment `part` of
    /// `parts`, on consecutive numbers of the channel. Everything but the
    /// payload and `part` is the same in every fragment of a message.
    Fragment {
        /// Its traffic class.
        class: TrafficClass,
        /// The sender's session.
        session: u64,
        /// Its number in the channel.
        seq: u64,
        /// The lowest number the sender has not settled.
        base: u64,
        /// Which fragment of which message.
        header: FragmentHeader,
        /// This fragment's bytes.
        #[serde(with = "serde_bytes")]
        payload: Vec<u8>,
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

/// Where a fragment belongs in its message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FragmentHeader {
    /// This fragment's index, from 0.
    pub part: u32,
    /// How many fragments the message has (at least 2).
    pub parts: u32,
    /// The whole message's length in bytes.
    pub len: u64,
    /// CRC-32 (IEEE) of the whole message.
    pub crc32: u32,
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

/// Messages ready for the application: in order within a channel, the
/// most urgent class first across channels, so a burst of bulk messages
/// received together never holds up an event behind it.
#[derive(Debug)]
struct ReadyQueue<P> {
    /// One FIFO per class, the most urgent first.
    lanes: BTreeMap<std::cmp::Reverse<TrafficClass>, VecDeque<Delivery<P>>>,
    len: usize,
}

impl<P> Default for ReadyQueue<P> {
    fn default() -> Self {
        ReadyQueue {
            lanes: BTreeMap::new(),
            len: 0,
        }
    }
}

impl<P> ReadyQueue<P> {
    fn push_back(&mut self, delivery: Delivery<P>) {
        let lane = std::cmp::Reverse(delivery.class);
        self.lanes.entry(lane).or_default().push_back(delivery);
        self.len += 1;
    }

    fn front(&self) -> Option<&Delivery<P>> {
        self.lanes.values().find_map(VecDeque::front)
    }

    fn pop_front(&mut self) -> Option<Delivery<P>> {
        let mut lane = self.lanes.first_entry()?;
        let delivery = lane.get_mut().pop_front();
        if lane.get().is_empty() {
            lane.remove();
        }
        if delivery.is_some() {
            self.len -= 1;
        }
        delivery
    }

    fn len(&self) -> usize {
        self.len
    }

    fn is_empty(&self) -> bool {
        self.len == 0
    }
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
    /// Fragments sent (first transmissions).
    pub fragments_sent: u64,
    /// Messages reassembled from fragments and handed over.
    pub messages_reassembled: u64,
    /// Partially received messages dropped: their sender gave up on a
    /// fragment, restarted, or a fragment did not continue them.
    pub partials_dropped: u64,
    /// Reassembled messages dropped for failing their length or CRC check.
    pub integrity_failures: u64,
    /// Fragments dropped for a header no sender of ours would write.
    pub malformed_fragments: u64,
}

type ChannelKey<P> = (P, TrafficClass);

/// Most holes fast-retransmitted in answer to one acknowledgement.
const FAST_RETRANSMIT_BATCH: usize = 64;

/// Marks the timer entry of a pending base announcement.
const BASE_TIMER: u64 = u64::MAX;

/// One data frame in flight: a whole message, or a fragment of one.
struct InFlight {
    payload: Vec<u8>,
    /// The message it belongs to: the number of its first data frame.
    msg: u64,
    /// Set for a fragment.
    header: Option<FragmentHeader>,
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

/// A message waiting for window space; a fragmented one stays at the front
/// of the backlog until its last fragment is in flight.
struct Queued {
    payload: Vec<u8>,
    token: u64,
    deadline: Instant,
    /// How many data frames it takes.
    parts: u32,
    /// The next fragment to send.
    next_part: u32,
    crc32: u32,
    /// The number of its first fragment, once that is in flight.
    first_seq: Option<u64>,
}

/// A message with at least one data frame sent, not yet settled.
struct Outstanding {
    token: u64,
    first_sent: Instant,
    /// Data frames not yet acknowledged, those still to send included.
    unacked: u32,
    /// Most transmissions of any of its data frames.
    transmissions: u32,
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
    /// Messages with data frames sent, by the number of their first.
    outstanding: BTreeMap<u64, Outstanding>,
    last_active: Instant,
    backlog: VecDeque<Queued>,
    backlog_bytes: usize,
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

/// A data frame received out of order, waiting for the ones before it.
struct Held {
    header: Option<FragmentHeader>,
    payload: Vec<u8>,
}

/// A message being reassembled from its fragments.
struct Partial {
    /// Number of its first fragment (the message's number).
    first_seq: u64,
    /// Every fragment repeats the header, but for `part`.
    header: FragmentHeader,
    /// The next fragment expected.
    next_part: u32,
    bytes: Vec<u8>,
}

struct RecvChannel {
    last_active: Instant,
    session: u64,
    next_expected: u64,
    /// The sender settled everything below this: missing numbers below it
    /// will never come and are skipped.
    floor: u64,
    buffer: BTreeMap<u64, Held>,
    buffered_bytes: usize,
    partial: Option<Partial>,
}

impl RecvChannel {
    fn new(now: Instant, session: u64, base: u64) -> Self {
        RecvChannel {
            last_active: now,
            session,
            next_expected: base,
            floor: base,
            buffer: BTreeMap::new(),
            buffered_bytes: 0,
            partial: None,
        }
    }
}

/// The reliable-pipe core of one peer. See the module docs.
pub struct Pipes<P: PeerKey> {
    config: PipeConfig,
    session: u64,
    send: BTreeMap<ChannelKey<P>, SendChannel>,
    recv: BTreeMap<ChannelKey<P>, RecvChannel>,
    timers: BTreeSet<(Instant, P, TrafficClass, u64)>,
    ready: ReadyQueue<P>,
    stalled: BTreeSet<ChannelKey<P>>,
    ack_due: BTreeSet<ChannelKey<P>>,
    outputs: VecDeque<PipeOutput<P>>,
    stats: PipeStats,
    /// Payload bytes held out of order in every receive channel's buffer
    /// (bounded by `max_buffered_bytes`).
    buffered_bytes: usize,
    /// Bytes claimed by partial messages of every channel (their announced
    /// lengths).
    reassembly_bytes: usize,
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
            ready: ReadyQueue::default(),
            stalled: BTreeSet::new(),
            ack_due: BTreeSet::new(),
            outputs: VecDeque::new(),
            stats: PipeStats::default(),
            buffered_bytes: 0,
            reassembly_bytes: 0,
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
            .map(|c| {
                c.outstanding.len() + c.backlog.iter().filter(|q| q.first_seq.is_none()).count()
            })
            .sum()
    }

    /// Bytes held for partially received messages, across all channels.
    pub fn reassembly_bytes(&self) -> usize {
        self.recv
            .values()
            .filter_map(|c| c.partial.as_ref())
            .map(|p| p.bytes.capacity())
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
        let fragment = self.config.fragment_bytes.max(1);
        let parts = u32::try_from(payload.len().div_ceil(fragment).max(1)).map_err(|_| {
            PipeError::MessageTooLarge {
                size: payload.len(),
                max: fragment.saturating_mul(u32::MAX as usize),
            }
        })?;
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
                    outstanding: BTreeMap::new(),
                    last_active: now,
                    backlog: VecDeque::new(),
                    backlog_bytes: 0,
                    srtt: None,
                    base_announce: None,
                },
            );
        }
        let Some(channel) = self.send.get_mut(&key) else {
            return Err(PipeError::Backpressure { queued: 0 });
        };
        if channel.backlog.len() >= self.config.max_queued_messages
            || (!channel.backlog.is_empty()
                && channel.backlog_bytes + payload.len() > self.config.max_queued_bytes)
        {
            return Err(PipeError::Backpressure {
                queued: channel.backlog.len(),
            });
        }
        let crc32 = if parts > 1 {
            crc32fast::hash(&payload)
        } else {
            0
        };
        channel.backlog_bytes += payload.len();
        channel.backlog.push_back(Queued {
            payload,
            token,
            deadline,
            parts,
            next_part: 0,
            crc32,
            first_seq: None,
        });
        self.stats.messages_sent += 1;
        self.admit(now, &key);
        Ok(())
    }

    /// Moves queued messages (or their next fragments) of a channel into its
    /// window and transmits them.
    fn admit(&mut self, now: Instant, key: &ChannelKey<P>) {
        let fragment = self.config.fragment_bytes.max(1);
        loop {
            let Some(channel) = self.send.get_mut(key) else {
                return;
            };
            channel.last_active = now;
            if channel.in_flight.len() >= self.config.window_messages {
                return;
            }
            let Some(next) = channel.backlog.front_mut() else {
                return;
            };
            let offset = next.next_part as usize * fragment;
            let len = next.payload.len().saturating_sub(offset).min(fragment);
            if !channel.in_flight.is_empty()
                && channel.in_flight_bytes + len > self.config.window_bytes
            {
                return;
            }
            if next.deadline <= now {
                match next.first_seq {
                    // Part of it is on its way: fail it as a whole.
                    Some(msg) => self.fail_message(
                        now,
                        key,
                        msg,
                        PipeError::DeadlineExceeded {
                            after: Duration::ZERO,
                        },
                    ),
                    None => {
                        let Some(queued) = channel.backlog.pop_front() else {
                            return;
                        };
                        channel.backlog_bytes =
                            channel.backlog_bytes.saturating_sub(queued.payload.len());
                        self.stats.messages_failed += 1;
                        self.outputs.push_back(PipeOutput::Failed {
                            token: queued.token,
                            error: PipeError::DeadlineExceeded {
                                after: Duration::ZERO,
                            },
                        });
                    }
                }
                continue;
            }
            let seq = channel.next_seq;
            channel.next_seq += 1;
            let msg = *next.first_seq.get_or_insert(seq);
            if next.next_part == 0 {
                channel.outstanding.insert(
                    seq,
                    Outstanding {
                        token: next.token,
                        first_sent: now,
                        unacked: next.parts,
                        transmissions: 1,
                    },
                );
            }
            let deadline = next.deadline;
            let (payload, header) = if next.parts == 1 {
                (std::mem::take(&mut next.payload), None)
            } else {
                let header = FragmentHeader {
                    part: next.next_part,
                    parts: next.parts,
                    len: next.payload.len() as u64,
                    crc32: next.crc32,
                };
                self.stats.fragments_sent += 1;
                (next.payload[offset..offset + len].to_vec(), Some(header))
            };
            next.next_part += 1;
            if next.next_part >= next.parts {
                if let Some(done) = channel.backlog.pop_front() {
                    let size = if done.parts == 1 {
                        payload.len()
                    } else {
                        done.payload.len()
                    };
                    channel.backlog_bytes = channel.backlog_bytes.saturating_sub(size);
                }
            }
            let rto = rto_of(channel.srtt, &self.config);
            let timer_at = (now + rto).min(deadline);
            let base = channel.base().min(seq);
            self.outputs.push_back(transmit_data(
                key,
                self.session,
                seq,
                base,
                header,
                &payload,
            ));
            channel.in_flight_bytes += payload.len();
            channel.in_flight.insert(
                seq,
                InFlight {
                    payload,
                    msg,
                    header,
                    first_sent: now,
                    last_sent: now,
                    transmissions: 1,
                    rto,
                    deadline,
                    timer_at,
                    sacked: false,
                },
            );
            self.timers.insert((timer_at, key.0.clone(), key.1, seq));
        }
    }

    /// Gives up on message `msg` of a channel as a whole: its data frames
    /// in flight, and those not yet sent. Does not refill the window.
    fn fail_message(&mut self, now: Instant, key: &ChannelKey<P>, msg: u64, error: PipeError) {
        let Some(channel) = self.send.get_mut(key) else {
            return;
        };
        let Some(outstanding) = channel.outstanding.remove(&msg) else {
            return;
        };
        let frames: Vec<u64> = channel
            .in_flight
            .range(msg..)
            .take_while(|(_, f)| f.msg == msg)
            .map(|(seq, _)| *seq)
            .collect();
        let had_frames = !frames.is_empty();
        for seq in frames {
            if let Some(frame) = channel.in_flight.remove(&seq) {
                channel.in_flight_bytes =
                    channel.in_flight_bytes.saturating_sub(frame.payload.len());
                self.timers
                    .remove(&(frame.timer_at, key.0.clone(), key.1, seq));
            }
        }
        if channel
            .backlog
            .front()
            .is_some_and(|q| q.first_seq == Some(msg))
        {
            if let Some(rest) = channel.backlog.pop_front() {
                channel.backlog_bytes = channel.backlog_bytes.saturating_sub(rest.payload.len());
            }
        }
        self.stats.messages_failed += 1;
        self.outputs.push_back(PipeOutput::Failed {
            token: outstanding.token,
            error,
        });
        if had_frames {
            self.start_base_announce(now, key);
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
            } => self.on_data(
                now,
                (from, class),
                (session, seq, base),
                Held {
                    header: None,
                    payload,
                },
            ),
            PipeFrame::Fragment {
                class,
                session,
                seq,
                base,
                header,
                payload,
            } => self.on_data(
                now,
                (from, class),
                (session, seq, base),
                Held {
                    header: Some(header),
                    payload,
                },
            ),
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
        if !self.recv.contains_key(key) && self.recv.len() >= self.config.max_channels {
            let idlest = self
                .recv
                .iter()
                .min_by_key(|(_, c)| c.last_active)
                .map(|(k, _)| k.clone());
            if let Some(idlest) = idlest {
                if let Some(mut gone) = self.recv.remove(&idlest) {
                    self.buffered_bytes = self.buffered_bytes.saturating_sub(gone.buffered_bytes);
                    self.drop_partial(&mut gone);
                }
                self.stalled.remove(&idlest);
            }
        }
        let mut channel = self
            .recv
            .remove(key)
            .unwrap_or_else(|| RecvChannel::new(now, session, base));
        channel.last_active = now;
        if session < channel.session {
            self.stats.stale_frames_dropped += 1;
            self.recv.insert(key.clone(), channel);
            return None;
        }
        if session > channel.session {
            self.buffered_bytes = self.buffered_bytes.saturating_sub(channel.buffered_bytes);
            self.drop_partial(&mut channel);
            channel = RecvChannel::new(now, session, base);
        }
        Some(self.recv.entry(key.clone()).or_insert(channel))
    }

    /// Drops a channel's partial message, if any, releasing its claim.
    fn drop_partial(&mut self, channel: &mut RecvChannel) {
        if let Some(partial) = channel.partial.take() {
            self.release(partial.header.len);
            self.stats.partials_dropped += 1;
        }
    }

    fn release(&mut self, len: u64) {
        self.reassembly_bytes = self
            .reassembly_bytes
            .saturating_sub(usize::try_from(len).unwrap_or(usize::MAX));
    }

    fn on_data(
        &mut self,
        now: Instant,
        key: ChannelKey<P>,
        (session, seq, base): (u64, u64, u64),
        held: Held,
    ) {
        let window = self.config.receive_window as u64;
        let window_bytes = self.config.receive_window_bytes;
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
            // A retransmission of what waits for room: try again.
            if self.stalled.contains(&key) {
                self.advance(&key);
            }
            return;
        }
        // The highest number is never taken: the receiver could not count
        // past it. Data that cannot be delivered at once is held only
        // within the channel's and the whole core's byte bounds.
        let len = held.payload.len();
        if seq >= channel.next_expected.saturating_add(window)
            || seq == u64::MAX
            || (seq != channel.next_expected
                && (channel.buffered_bytes + len > window_bytes
                    || self.buffered_bytes + len > self.config.max_buffered_bytes))
        {
            self.stats.out_of_window_dropped += 1;
            return;
        }
        channel.buffered_bytes += len;
        self.buffered_bytes += len;
        channel.buffer.insert(seq, held);
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
    /// reassembling fragmented messages, as far as the ready queue's bound
    /// and the reassembly budget allow.
    fn advance(&mut self, key: &ChannelKey<P>) {
        let Some(mut channel) = self.recv.remove(key) else {
            return;
        };
        let stalled = self.advance_channel(key, &mut channel);
        self.recv.insert(key.clone(), channel);
        if stalled {
            self.stalled.insert(key.clone());
        } else {
            self.stalled.remove(key);
        }
    }

    /// [`Pipes::advance`] on a channel taken out of the map; whether it
    /// stalled.
    fn advance_channel(&mut self, key: &ChannelKey<P>, channel: &mut RecvChannel) -> bool {
        loop {
            let Some(next) = channel.buffer.get(&channel.next_expected) else {
                if channel.next_expected >= channel.floor {
                    return false;
                }
                // A gap the sender gave up on: jump to what did arrive, and
                // drop a message that lost fragments in it.
                self.drop_partial(channel);
                let next_arrived = channel.buffer.keys().next().copied();
                channel.next_expected = next_arrived.unwrap_or(channel.floor).min(channel.floor);
                continue;
            };
            if self.ready.len() >= self.config.max_ready_messages {
                return true;
            }
            let seq = channel.next_expected;
            if let Some(header) = next.header.filter(|h| h.part == 0) {
                // A new message claims its announced length (counted, not
                // allocated); it waits, unacknowledged, while the claims of
                // other channels leave no room for it.
                let own = channel.partial.as_ref().map_or(0, |p| p.header.len);
                let others = self
                    .reassembly_bytes
                    .saturating_sub(usize::try_from(own).unwrap_or(usize::MAX));
                let len = usize::try_from(header.len).unwrap_or(usize::MAX);
                if others > 0 && others.saturating_add(len) > self.config.max_reassembly_bytes {
                    return true;
                }
            }
            let Some(held) = channel.buffer.remove(&seq) else {
                return false;
            };
            channel.buffered_bytes = channel.buffered_bytes.saturating_sub(held.payload.len());
            self.buffered_bytes = self.buffered_bytes.saturating_sub(held.payload.len());
            channel.next_expected += 1;
            let Some(header) = held.header else {
                // A whole message: any partial one before it lost its end.
                self.drop_partial(channel);
                self.ready.push_back(Delivery {
                    from: key.0.clone(),
                    class: key.1,
                    seq,
                    payload: held.payload,
                });
                continue;
            };
            if let Some(message) = self.reassemble(channel, seq, header, held.payload) {
                self.stats.messages_reassembled += 1;
                self.ready.push_back(Delivery {
                    from: key.0.clone(),
                    class: key.1,
                    seq: message.0,
                    payload: message.1,
                });
            }
        }
    }

    /// Adds fragment `seq` to the channel's partial message; the message's
    /// number and bytes once it is complete and intact.
    fn reassemble(
        &mut self,
        channel: &mut RecvChannel,
        seq: u64,
        header: FragmentHeader,
        payload: Vec<u8>,
    ) -> Option<(u64, Vec<u8>)> {
        if header.part == 0 {
            // A new message: one before it that did not finish never will.
            self.drop_partial(channel);
            let len = usize::try_from(header.len).unwrap_or(usize::MAX);
            if header.parts < 2
                || len > self.config.max_message_bytes
                || u64::from(header.parts) > header.len
            {
                self.stats.malformed_fragments += 1;
                return None;
            }
            self.reassembly_bytes = self.reassembly_bytes.saturating_add(len);
            channel.partial = Some(Partial {
                first_seq: seq,
                header,
                next_part: 0,
                bytes: Vec::new(),
            });
        }
        let continues = channel.partial.as_ref().is_some_and(|p| {
            p.next_part == header.part
                && p.first_seq + u64::from(header.part) == seq
                && FragmentHeader {
                    part: header.part,
                    ..p.header
                } == header
        });
        if !continues {
            // Not the continuation of what we hold (its start was lost in a
            // gap the sender gave up on): drop both.
            self.drop_partial(channel);
            return None;
        }
        let partial = channel.partial.as_mut()?;
        let len = usize::try_from(header.len).unwrap_or(usize::MAX);
        let have = partial.bytes.len() + payload.len();
        if have > len || payload.is_empty() {
            self.stats.malformed_fragments += 1;
            self.drop_partial(channel);
            return None;
        }
        // Grow by doubling, as the bytes arrive, never past the announced
        // length.
        if have > partial.bytes.capacity() {
            let target = have.max(partial.bytes.capacity() * 2).min(len);
            partial.bytes.reserve_exact(target - partial.bytes.len());
        }
        partial.bytes.extend_from_slice(&payload);
        partial.next_part += 1;
        if partial.next_part < header.parts {
            return None;
        }
        let done = channel.partial.take()?;
        self.release(done.header.len);
        if done.bytes.len() != len || crc32fast::hash(&done.bytes) != done.header.crc32 {
            self.stats.integrity_failures += 1;
            return None;
        }
        Some((done.first_seq, done.bytes))
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
        for (seq, frame) in acked {
            channel.in_flight_bytes = channel.in_flight_bytes.saturating_sub(frame.payload.len());
            self.timers
                .remove(&(frame.timer_at, key.0.clone(), key.1, seq));
            let latency = now.saturating_duration_since(frame.first_sent);
            if frame.transmissions == 1 {
                channel.srtt = Some(update_srtt(channel.srtt, latency));
            }
            let Some(message) = channel.outstanding.get_mut(&frame.msg) else {
                continue;
            };
            message.unacked = message.unacked.saturating_sub(1);
            message.transmissions = message.transmissions.max(frame.transmissions);
            if message.unacked > 0 {
                continue;
            }
            let Some(message) = channel.outstanding.remove(&frame.msg) else {
                continue;
            };
            self.stats.messages_acked += 1;
            self.outputs.push_back(PipeOutput::Delivered {
                token: message.token,
                receipt: Receipt {
                    seq: frame.msg,
                    latency: now.saturating_duration_since(message.first_sent),
                    transmissions: message.transmissions,
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
            let Some(frame) = channel.in_flight.get_mut(&seq) else {
                continue;
            };
            frame.transmissions += 1;
            frame.last_sent = now;
            self.stats.retransmissions += 1;
            self.outputs.push_back(transmit_data(
                key,
                self.session,
                seq,
                base,
                frame.header,
                &frame.payload,
            ));
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
            let Some(frame) = channel.in_flight.get_mut(&seq) else {
                continue;
            };
            if frame.deadline <= now {
                let msg = frame.msg;
                let after = channel.outstanding.get(&msg).map_or(Duration::ZERO, |m| {
                    now.saturating_duration_since(m.first_sent)
                });
                self.fail_message(now, &key, msg, PipeError::DeadlineExceeded { after });
                self.admit(now, &key);
                continue;
            }
            frame.transmissions += 1;
            frame.last_sent = now;
            frame.rto = (frame.rto * 2).min(self.config.max_rto);
            frame.timer_at = (now + frame.rto).min(frame.deadline);
            self.timers
                .insert((frame.timer_at, key.0.clone(), key.1, seq));
            self.stats.retransmissions += 1;
            self.outputs.push_back(transmit_data(
                &key,
                self.session,
                seq,
                base,
                frame.header,
                &frame.payload,
            ));
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
            for (seq, frame) in std::mem::take(&mut channel.in_flight) {
                self.timers
                    .remove(&(frame.timer_at, key.0.clone(), key.1, seq));
            }
            channel.in_flight_bytes = 0;
            if let Some(announce) = channel.base_announce.take() {
                self.timers
                    .remove(&(announce.timer_at, key.0.clone(), key.1, BASE_TIMER));
            }
            let tokens: Vec<u64> = std::mem::take(&mut channel.outstanding)
                .into_values()
                .map(|m| m.token)
                .chain(
                    std::mem::take(&mut channel.backlog)
                        .into_iter()
                        .filter(|q| q.first_seq.is_none())
                        .map(|q| q.token),
                )
                .collect();
            channel.backlog_bytes = 0;
            for token in tokens {
                self.stats.messages_failed += 1;
                self.outputs.push_back(PipeOutput::Failed {
                    token,
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
            .filter(|(_, c)| {
                c.in_flight.is_empty() && c.backlog.is_empty() && c.outstanding.is_empty()
            })
            .min_by_key(|(_, c)| c.last_active)
            .map(|(k, _)| k.clone());
        if let Some(idlest) = idlest {
            self.send.remove(&idlest);
        }
    }

    /// Fails every pending message with [`PipeError::Shutdown`].
    pub fn shutdown(&mut self) {
        for (_, channel) in std::mem::take(&mut self.send) {
            let tokens = channel.outstanding.into_values().map(|m| m.token).chain(
                channel
                    .backlog
                    .into_iter()
                    .filter(|q| q.first_seq.is_none())
                    .map(|q| q.token),
            );
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

    /// The next message for the application, exactly once: in order within
    /// its channel, the most urgent class first.
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

/// A transmission of data frame `seq` of channel `key`: a whole message,
/// or a fragment of one.
fn transmit_data<P: Clone>(
    key: &ChannelKey<P>,
    session: u64,
    seq: u64,
    base: u64,
    header: Option<FragmentHeader>,
    payload: &[u8],
) -> PipeOutput<P> {
    let class = key.1;
    let payload = payload.to_vec();
    let frame = match header {
        None => PipeFrame::Data {
            class,
            session,
            seq,
            base,
            payload,
        },
        Some(header) => PipeFrame::Fragment {
            class,
            session,
            seq,
            base,
            header,
            payload,
        },
    };
    PipeOutput::Transmit {
        to: key.0.clone(),
        class,
        frame,
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
