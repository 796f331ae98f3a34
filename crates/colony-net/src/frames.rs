//! Frame plumbing: per-peer priority writers, stream readers, fault injection.
//!
//! Each node opens one long-lived outbound stream per peer it sends to (so a
//! pair of peers talking both ways uses two streams, one per direction). A
//! writer task per peer owns that stream; [`FrameSender::send`] only enqueues
//! and wakes it. Inbound streams get one reader task each, which pushes frames
//! straight into the caller's event channel.

use std::cmp::{Ordering, Reverse};
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use futures::{AsyncReadExt, AsyncWriteExt, StreamExt};
use libp2p::{PeerId, Stream, StreamProtocol};
use libp2p_stream::{Control, IncomingStreams};
use tokio::sync::{mpsc, Notify, OwnedSemaphorePermit, Semaphore};
use tokio::task::AbortHandle;
use tokio::time::Instant;
use tracing::{debug, warn};

use crate::config::{frames_protocol, NetConfig};
use crate::counters::{add, NetCounters};
use crate::error::NetError;
use crate::faults::{FaultInjector, FaultPlan};
use crate::protocol::{encode_frame, peek_header, Header, HEADER_BYTES};
use crate::ratelimit::{LogLimiter, DEFAULT_WARN_KEYS};

/// A writer stops adding frames to a write once it holds this many bytes.
const BATCH_BYTES: usize = 64 * 1024;
/// A writer's batch buffer grown beyond this (by a large frame) is shrunk back.
const BATCH_BUFFER_KEEP_BYTES: usize = 4 * BATCH_BYTES;
/// A reader reads into at least this much free space, and grows its buffer
/// by at least this much (at most doubling what it received).
const READ_MIN_ROOM_BYTES: usize = 4 * 1024;
/// A reader between frames keeps no more room than this.
const READ_CHUNK_BYTES: usize = 64 * 1024;
/// Delivered frames up to this size are copied out and bounded by the
/// capacity of the events channel; larger ones keep their bytes in the
/// inbound byte budget until the receiver drops them.
const SMALL_FRAME_BYTES: usize = 4 * 1024;
/// First wait before re-opening a stream to a peer that failed.
const INITIAL_BACKOFF: Duration = Duration::from_millis(50);
/// Longest wait before re-opening a stream to a peer that failed.
const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// At most one [`NetEvent::Unreachable`] per peer per this interval.
const UNREACHABLE_REPORT_INTERVAL: Duration = Duration::from_millis(100);

/// Priority of a frame in the per-peer writer: higher is sent first.
///
/// Within one priority frames are sent in the order they were queued.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Priority(pub u8);

impl Priority {
    /// Highest priority, for control traffic (membership, acknowledgements).
    pub const CONTROL: Priority = Priority(255);
    /// Lowest priority.
    pub const LOWEST: Priority = Priority(0);
}

/// What the frame plumbing reports to its owner.
#[derive(Clone, Debug)]
pub enum NetEvent {
    /// A frame arrived from `peer`.
    Frame {
        /// The sender.
        peer: PeerId,
        /// The payload, exactly as passed to [`FrameSender::send`].
        bytes: Bytes,
    },
    /// Opening a stream to, or writing to, this peer failed (dial refused,
    /// protocol unsupported, stream reset, timeout). Frames queued for it were
    /// dropped. At most one per peer per 100 ms.
    Unreachable {
        /// The peer.
        peer: PeerId,
        /// What failed, for logs.
        reason: String,
    },
}

/// Cheap-to-clone handle for sending frames.
///
/// Sending never blocks: [`send`](Self::send) enqueues into the per-peer
/// priority queue and wakes that peer's writer. Frames can be dropped (full
/// queue, unreachable peer, injected loss), which is counted in
/// [`counters`](Self::counters); the reliable layer above retransmits.
///
/// When the last clone is dropped, all writer tasks stop.
#[derive(Clone)]
pub struct FrameSender {
    inner: Arc<Inner>,
}

/// Starts the frame plumbing on a built swarm.
///
/// `control` comes from `swarm.behaviour().stream.new_control()`. This
/// registers the frames protocol of `config.network` for inbound streams and
/// spawns (on the current tokio runtime) the acceptor, which spawns one reader
/// per inbound stream. Readers push [`NetEvent::Frame`]s into `events`,
/// awaiting room: a slow consumer slows the senders down through TCP.
/// Writers are spawned lazily, one per peer, on the first
/// [`FrameSender::send`] to that peer; they report [`NetEvent::Unreachable`]
/// into `events` too.
///
/// The swarm must be polled (by its owner) for anything to move.
pub fn start_frames(
    mut control: Control,
    config: &NetConfig,
    events: mpsc::Sender<NetEvent>,
) -> Result<FrameSender, NetError> {
    config.validate()?;
    let runtime = tokio::runtime::Handle::try_current().map_err(|_| NetError::NoRuntime)?;
    let protocol = frames_protocol(&config.network);
    let incoming = control
        .accept(protocol.clone())
        .map_err(|_| NetError::AlreadyAccepting {
            protocol: protocol.to_string(),
        })?;
    let counters = Arc::new(NetCounters::default());

    let reader = ReaderCtx {
        counters: counters.clone(),
        events: events.clone(),
        max_frame_bytes: config.max_frame_bytes,
        idle_timeout: config.inbound_stream_idle_timeout,
        limits: Arc::new(InboundLimits {
            streams: Arc::new(Semaphore::new(config.max_inbound_streams)),
            max_streams: config.max_inbound_streams,
            max_per_peer: config.max_inbound_streams_per_peer,
            per_peer: Mutex::new(HashMap::new()),
            buffered: Arc::new(Semaphore::new(config.max_inbound_buffered_bytes)),
            warnings: Mutex::new(LogLimiter::new(config.warn_interval, DEFAULT_WARN_KEYS)),
        }),
    };
    runtime.spawn(accept_streams(incoming, reader));

    let inner = Inner {
        writer: WriterCtx {
            control,
            protocol,
            counters,
            events,
            open_stream_timeout: config.open_stream_timeout,
            queue_frames: config.writer_queue_frames,
        },
        max_frame_bytes: config.max_frame_bytes,
        faults: config.faults.is_active().then(|| config.faults.clone()),
        runtime,
        peers: Mutex::new(HashMap::new()),
    };
    Ok(FrameSender {
        inner: Arc::new(inner),
    })
}

impl FrameSender {
    /// Queues `frame` for `peer` at `priority`. Never blocks.
    ///
    /// The frame is dropped and counted when it is empty or larger than
    /// `max_frame_bytes`, when the peer is in its reconnect backoff after a
    /// failure, when its queue is full, or by fault injection.
    pub fn send(&self, peer: PeerId, priority: Priority, frame: Bytes) {
        let inner = &*self.inner;
        let counters = &inner.writer.counters;
        if frame.is_empty() || frame.len() > inner.max_frame_bytes {
            debug!(%peer, size = frame.len(), max = inner.max_frame_bytes, "not sending an empty or oversized frame");
            add(&counters.oversized_dropped, 1);
            return;
        }
        let slot = inner.slot(peer);
        let mut st = slot.lock();
        if st.writer.is_none() {
            if st.retry_at.is_some_and(|at| Instant::now() < at) {
                add(&counters.unreachable_dropped, 1);
                return;
            }
            st.retry_at = None;
            st.writer = Some(inner.spawn_writer(peer, slot.clone()));
        }
        let plan = match st.faults.as_mut() {
            Some(faults) => faults.plan(),
            None => FaultPlan {
                copies: 1,
                delays: [Duration::ZERO; 2],
            },
        };
        match plan.copies {
            0 => {
                add(&counters.injected_drops, 1);
                return;
            }
            1 => {}
            _ => add(&counters.injected_duplicates, 1),
        }
        let queue_frames = inner.writer.queue_frames;
        for delay in &plan.delays[..plan.copies] {
            if delay.is_zero() {
                if !st.queues.push(priority, frame.clone(), queue_frames) {
                    add(&counters.queue_full_dropped, 1);
                }
            } else if st.delayed.len() >= queue_frames {
                add(&counters.queue_full_dropped, 1);
            } else {
                add(&counters.injected_delays, 1);
                let seq = st.delay_seq;
                st.delay_seq += 1;
                st.delayed.push(Reverse(Delayed {
                    due: Instant::now() + *delay,
                    seq,
                    priority,
                    frame: frame.clone(),
                }));
            }
        }
        drop(st);
        slot.notify.notify_one();
    }

    /// Drops the writer, its stream and every queued frame for `peer` (the
    /// peer was declared dead). A later [`send`](Self::send) starts afresh,
    /// without backoff.
    pub fn forget(&self, peer: &PeerId) {
        let slot = lock(&self.inner.peers).remove(peer);
        if let Some(slot) = slot {
            let mut st = slot.lock();
            st.forgotten = true;
            let dropped = st.clear();
            add(&self.inner.writer.counters.unreachable_dropped, dropped);
            if let Some(writer) = st.writer.take() {
                writer.abort();
            }
        }
    }

    /// The counters of this node's frame plumbing (writers and readers).
    pub fn counters(&self) -> &Arc<NetCounters> {
        &self.inner.writer.counters
    }
}

struct Inner {
    writer: WriterCtx,
    max_frame_bytes: usize,
    /// `Some` when fault injection is active.
    faults: Option<crate::faults::FaultConfig>,
    runtime: tokio::runtime::Handle,
    peers: Mutex<HashMap<PeerId, Arc<PeerSlot>>>,
}

impl Inner {
    fn slot(&self, peer: PeerId) -> Arc<PeerSlot> {
        lock(&self.peers)
            .entry(peer)
            .or_insert_with(|| {
                let faults = self
                    .faults
                    .as_ref()
                    .map(|f| FaultInjector::for_peer(f, &peer));
                Arc::new(PeerSlot::new(faults))
            })
            .clone()
    }

    fn spawn_writer(&self, peer: PeerId, slot: Arc<PeerSlot>) -> AbortHandle {
        let ctx = self.writer.clone();
        self.runtime
            .spawn(async move {
                if let Err(reason) = write_frames(&ctx, peer, &slot).await {
                    ctx.fail(peer, &slot, reason).await;
                }
            })
            .abort_handle()
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        for slot in lock(&self.peers).values() {
            if let Some(writer) = slot.lock().writer.take() {
                writer.abort();
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // The data behind these mutexes stays consistent even if a holder panicked.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Per-peer state shared by [`FrameSender`] and the peer's writer task.
struct PeerSlot {
    state: Mutex<PeerState>,
    /// Wakes the writer: new frames, new delayed frames, or forgotten.
    notify: Notify,
}

impl PeerSlot {
    fn new(faults: Option<FaultInjector>) -> Self {
        Self {
            state: Mutex::new(PeerState {
                queues: Lanes::default(),
                delayed: BinaryHeap::new(),
                delay_seq: 0,
                faults,
                writer: None,
                retry_at: None,
                backoff: INITIAL_BACKOFF,
                last_unreachable: None,
                forgotten: false,
            }),
            notify: Notify::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, PeerState> {
        lock(&self.state)
    }
}

struct PeerState {
    queues: Lanes,
    /// Frames held back by fault injection, earliest first.
    delayed: BinaryHeap<Reverse<Delayed>>,
    delay_seq: u64,
    faults: Option<FaultInjector>,
    /// Set while a writer task runs.
    writer: Option<AbortHandle>,
    /// After a failure: no new writer before this instant.
    retry_at: Option<Instant>,
    /// The wait applied after the next failure.
    backoff: Duration,
    last_unreachable: Option<Instant>,
    forgotten: bool,
}

impl PeerState {
    /// Drops every queued and delayed frame; returns how many.
    fn clear(&mut self) -> u64 {
        let n = self.queues.clear() + self.delayed.len();
        self.delayed.clear();
        n as u64
    }

    /// Moves delayed frames that are due into the priority queues.
    fn release_due(&mut self, now: Instant, queue_frames: usize, counters: &NetCounters) {
        while self.delayed.peek().is_some_and(|d| d.0.due <= now) {
            if let Some(Reverse(d)) = self.delayed.pop() {
                if !self.queues.push(d.priority, d.frame, queue_frames) {
                    add(&counters.queue_full_dropped, 1);
                }
            }
        }
    }
}

/// A frame held back by fault injection.
struct Delayed {
    due: Instant,
    seq: u64,
    priority: Priority,
    frame: Bytes,
}

impl PartialEq for Delayed {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Delayed {}
impl PartialOrd for Delayed {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Delayed {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.due, self.seq).cmp(&(other.due, other.seq))
    }
}

/// One FIFO queue per priority in use, highest priority first.
#[derive(Default)]
struct Lanes {
    lanes: Vec<(Priority, VecDeque<Bytes>)>,
    len: usize,
}

impl Lanes {
    /// Queues `frame`; `false` if that priority already holds `bound` frames.
    fn push(&mut self, priority: Priority, frame: Bytes, bound: usize) -> bool {
        let i = match self.lanes.iter().position(|(p, _)| *p <= priority) {
            Some(i) if self.lanes[i].0 == priority => i,
            Some(i) => {
                self.lanes.insert(i, (priority, VecDeque::new()));
                i
            }
            None => {
                self.lanes.push((priority, VecDeque::new()));
                self.lanes.len() - 1
            }
        };
        let lane = &mut self.lanes[i].1;
        if lane.len() >= bound {
            return false;
        }
        lane.push_back(frame);
        self.len += 1;
        true
    }

    /// Encodes frames into `buf`, highest priority first, until `buf` holds
    /// at least `max_bytes` or the queues are empty. Returns
    /// `(frames, payload bytes)` taken.
    fn fill_batch(&mut self, buf: &mut Vec<u8>, max_bytes: usize) -> (u64, u64) {
        let (mut frames, mut bytes) = (0u64, 0u64);
        'lanes: for (_, lane) in &mut self.lanes {
            while let Some(frame) = lane.pop_front() {
                encode_frame(buf, &frame);
                frames += 1;
                bytes += frame.len() as u64;
                if buf.len() >= max_bytes {
                    break 'lanes;
                }
            }
        }
        self.len -= frames as usize;
        (frames, bytes)
    }

    fn clear(&mut self) -> usize {
        let n = self.len;
        for (_, lane) in &mut self.lanes {
            lane.clear();
        }
        self.len = 0;
        n
    }
}

/// What a writer task needs; cloned into each.
#[derive(Clone)]
struct WriterCtx {
    control: Control,
    protocol: StreamProtocol,
    counters: Arc<NetCounters>,
    events: mpsc::Sender<NetEvent>,
    open_stream_timeout: Duration,
    queue_frames: usize,
}

/// The body of a writer task: open a stream, then write batches until an
/// error. Returns `Ok` only when the peer was forgotten.
async fn write_frames(ctx: &WriterCtx, peer: PeerId, slot: &PeerSlot) -> Result<(), String> {
    let mut control = ctx.control.clone();
    let open = control.open_stream(peer, ctx.protocol.clone());
    let mut stream: Stream = match tokio::time::timeout(ctx.open_stream_timeout, open).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => return Err(e.to_string()),
        Err(_) => {
            return Err(format!(
                "no stream opened within {:?}",
                ctx.open_stream_timeout
            ))
        }
    };
    debug!(%peer, "frames stream open");
    let mut buf: Vec<u8> = Vec::with_capacity(BATCH_BYTES + 1024);
    let mut healthy = false;
    loop {
        let (frames, bytes, next_due) = {
            let mut st = slot.lock();
            if st.forgotten {
                return Ok(());
            }
            if !st.delayed.is_empty() {
                st.release_due(Instant::now(), ctx.queue_frames, &ctx.counters);
            }
            let (frames, bytes) = st.queues.fill_batch(&mut buf, BATCH_BYTES);
            (frames, bytes, st.delayed.peek().map(|d| d.0.due))
        };
        if frames == 0 {
            match next_due {
                Some(due) => {
                    tokio::select! {
                        () = slot.notify.notified() => {}
                        () = tokio::time::sleep_until(due) => {}
                    }
                }
                None => slot.notify.notified().await,
            }
            continue;
        }
        let written = async {
            stream.write_all(&buf).await?;
            stream.flush().await
        };
        if let Err(e) = written.await {
            let lost = frames;
            add(&ctx.counters.unreachable_dropped, lost);
            return Err(format!("writing to the frames stream failed: {e}"));
        }
        add(&ctx.counters.frames_sent, frames);
        add(&ctx.counters.bytes_sent, bytes);
        if !healthy {
            healthy = true;
            let mut st = slot.lock();
            st.backoff = INITIAL_BACKOFF;
        }
        if buf.capacity() > BATCH_BUFFER_KEEP_BYTES {
            buf = Vec::with_capacity(BATCH_BYTES + 1024);
        } else {
            buf.clear();
        }
    }
}

impl WriterCtx {
    /// Ends a failed writer: drops its queue, starts the backoff, reports.
    async fn fail(&self, peer: PeerId, slot: &PeerSlot, reason: String) {
        add(&self.counters.stream_errors, 1);
        let report = {
            let mut st = slot.lock();
            let dropped = st.clear();
            add(&self.counters.unreachable_dropped, dropped);
            st.writer = None;
            let now = Instant::now();
            st.retry_at = Some(now + st.backoff);
            st.backoff = (st.backoff * 2).min(MAX_BACKOFF);
            let due = st
                .last_unreachable
                .is_none_or(|t| now.duration_since(t) >= UNREACHABLE_REPORT_INTERVAL);
            if due {
                st.last_unreachable = Some(now);
            }
            due && !st.forgotten
        };
        debug!(%peer, %reason, "peer unreachable");
        if report {
            add(&self.counters.unreachable_reported, 1);
            // Err only if the owner dropped the receiver; nothing to tell then.
            let _ = self
                .events
                .send(NetEvent::Unreachable { peer, reason })
                .await;
        }
    }
}

/// What a reader task needs; cloned into each.
#[derive(Clone)]
struct ReaderCtx {
    counters: Arc<NetCounters>,
    events: mpsc::Sender<NetEvent>,
    max_frame_bytes: usize,
    idle_timeout: Duration,
    limits: Arc<InboundLimits>,
}

/// The bounds shared by every inbound stream.
struct InboundLimits {
    /// One permit per inbound stream, over all peers.
    streams: Arc<Semaphore>,
    max_streams: usize,
    max_per_peer: usize,
    /// Inbound streams open per peer.
    per_peer: Mutex<HashMap<PeerId, usize>>,
    /// One permit per byte held by readers.
    buffered: Arc<Semaphore>,
    /// Warnings about remote peers, one per peer and cause per interval.
    warnings: Mutex<LogLimiter<(PeerId, &'static str)>>,
}

/// Why an inbound stream was refused.
enum Refused {
    PerPeer,
    Total,
}

impl InboundLimits {
    /// Takes a stream slot for `peer`, or says why there is none.
    fn admit(self: &Arc<Self>, peer: PeerId) -> Result<StreamSlot, Refused> {
        let mut per_peer = lock(&self.per_peer);
        let open = per_peer.get(&peer).copied().unwrap_or(0);
        if open >= self.max_per_peer {
            return Err(Refused::PerPeer);
        }
        let permit = self
            .streams
            .clone()
            .try_acquire_owned()
            .map_err(|_| Refused::Total)?;
        per_peer.insert(peer, open + 1);
        Ok(StreamSlot {
            limits: self.clone(),
            peer,
            _permit: permit,
        })
    }
}

/// An inbound stream's place in [`InboundLimits`], given back on drop.
struct StreamSlot {
    limits: Arc<InboundLimits>,
    peer: PeerId,
    _permit: OwnedSemaphorePermit,
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut per_peer = lock(&self.limits.per_peer);
        if let Some(open) = per_peer.get_mut(&self.peer) {
            *open -= 1;
            if *open == 0 {
                per_peer.remove(&self.peer);
            }
        }
    }
}

impl ReaderCtx {
    /// Whether a warning about `peer` for `cause` may be logged now;
    /// `Some(n)`: yes, and `n` were held back since the last one.
    fn may_warn(&self, peer: PeerId, cause: &'static str) -> Option<u64> {
        let verdict = lock(&self.limits.warnings).check((peer, cause), std::time::Instant::now());
        if verdict.is_none() {
            add(&self.counters.warnings_suppressed, 1);
        }
        verdict
    }
}

/// Bytes of [`InboundLimits::buffered`] held by one reader.
struct Budget {
    pool: Arc<Semaphore>,
    held: usize,
}

impl Budget {
    /// Waits until this reader holds at least `bytes`.
    async fn reserve_to(&mut self, bytes: usize) -> Result<(), tokio::sync::AcquireError> {
        while self.held < bytes {
            let want = u32::try_from(bytes - self.held).unwrap_or(u32::MAX);
            self.pool.acquire_many(want).await?.forget();
            self.held += want as usize;
        }
        Ok(())
    }

    /// Gives back what this reader holds beyond `bytes`.
    fn release_to(&mut self, bytes: usize) {
        if self.held > bytes {
            self.pool.add_permits(self.held - bytes);
            self.held = bytes;
        }
    }
}

impl Drop for Budget {
    fn drop(&mut self) {
        self.release_to(0);
    }
}

/// The bytes of a delivered frame larger than [`SMALL_FRAME_BYTES`]: they
/// stay counted in the byte budget until the owner of the events channel
/// drops the last reference to them.
struct BudgetedFrame {
    bytes: Vec<u8>,
    _budget: Budget,
}

impl AsRef<[u8]> for BudgetedFrame {
    fn as_ref(&self) -> &[u8] {
        &self.bytes
    }
}

/// Accepts inbound frames streams and spawns a reader for each, within the
/// per-peer and total stream limits.
async fn accept_streams(mut incoming: IncomingStreams, ctx: ReaderCtx) {
    loop {
        let next = tokio::select! {
            next = incoming.next() => next,
            () = ctx.events.closed() => None,
        };
        let Some((peer, stream)) = next else {
            debug!("frames acceptor stopping");
            return;
        };
        match ctx.limits.admit(peer) {
            Ok(slot) => {
                add(&ctx.counters.inbound_streams_accepted, 1);
                tokio::spawn(read_frames(ctx.clone(), peer, stream, slot));
            }
            Err(why) => {
                add(&ctx.counters.inbound_streams_refused, 1);
                let (cause, limit) = match why {
                    Refused::PerPeer => ("streams per peer", ctx.limits.max_per_peer),
                    Refused::Total => ("streams in total", ctx.limits.max_streams),
                };
                if let Some(suppressed) = ctx.may_warn(peer, cause) {
                    warn!(%peer, limit, suppressed, "too many inbound frames streams ({cause}); refusing one");
                }
            }
        }
    }
}

/// The room a reader with `filled` bytes received should grow its buffer to,
/// `next_total` being the announced size of the frame being received.
///
/// Never more than twice what has arrived plus [`READ_MIN_ROOM_BYTES`]: what
/// a peer announces costs nothing until it sends it.
fn grown_len(filled: usize, next_total: Option<usize>) -> usize {
    let doubled = filled + filled.max(READ_MIN_ROOM_BYTES);
    match next_total {
        Some(total) => doubled.min(total.max(filled + READ_MIN_ROOM_BYTES)),
        None => filled + READ_MIN_ROOM_BYTES,
    }
}

/// Reads frames from one inbound stream until it ends, fails, misbehaves or
/// stays idle too long.
async fn read_frames(ctx: ReaderCtx, peer: PeerId, mut stream: Stream, _slot: StreamSlot) {
    // `buf[..filled]` holds received bytes; `buf[filled..]` is initialised
    // room for the next read. Its capacity is held in the byte budget.
    let mut buf: Vec<u8> = Vec::new();
    let mut filled = 0usize;
    let mut budget = Budget {
        pool: ctx.limits.buffered.clone(),
        held: 0,
    };
    let opened = Instant::now();
    let mut last_byte = opened;
    let mut delivered_any = false;
    let mut read_filled_room = false;
    loop {
        // Deliver every whole frame received.
        let mut pos = 0usize;
        let next_total = loop {
            match peek_header(&buf[pos..filled], ctx.max_frame_bytes) {
                Header::Complete { total } => {
                    let len = total - HEADER_BYTES;
                    let bytes = if len <= SMALL_FRAME_BYTES {
                        let bytes = Bytes::copy_from_slice(&buf[pos + HEADER_BYTES..pos + total]);
                        pos += total;
                        bytes
                    } else if pos == 0 {
                        // Hand the buffer itself over, with the budget it
                        // holds, rather than copy it; keep what follows.
                        let mut whole = std::mem::take(&mut buf);
                        buf = whole.split_off(total);
                        buf.truncate(filled - total);
                        filled -= total;
                        let moved = budget.held.min(whole.capacity());
                        budget.held -= moved;
                        let owner = BudgetedFrame {
                            bytes: whole,
                            _budget: Budget {
                                pool: budget.pool.clone(),
                                held: moved,
                            },
                        };
                        Bytes::from_owner(owner).slice(HEADER_BYTES..)
                    } else {
                        let mut frame_budget = Budget {
                            pool: budget.pool.clone(),
                            held: 0,
                        };
                        let reserved =
                            tokio::time::timeout(ctx.idle_timeout, frame_budget.reserve_to(len))
                                .await;
                        if !matches!(reserved, Ok(Ok(()))) {
                            add(&ctx.counters.inbound_budget_closed, 1);
                            if let Some(suppressed) = ctx.may_warn(peer, "buffer budget") {
                                warn!(%peer, waited = ?ctx.idle_timeout, suppressed, "no room in the inbound buffer budget; closing a frames stream");
                            }
                            return;
                        }
                        let owner = BudgetedFrame {
                            bytes: buf[pos + HEADER_BYTES..pos + total].to_vec(),
                            _budget: frame_budget,
                        };
                        pos += total;
                        Bytes::from_owner(owner)
                    };
                    delivered_any = true;
                    add(&ctx.counters.frames_received, 1);
                    add(&ctx.counters.bytes_received, bytes.len() as u64);
                    if ctx
                        .events
                        .send(NetEvent::Frame { peer, bytes })
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
                Header::Incomplete { total } => break total,
                Header::Rejected { len } => {
                    add(&ctx.counters.oversized_rejected, 1);
                    if let Some(suppressed) = ctx.may_warn(peer, "bad frame length") {
                        warn!(%peer, size = len, max = ctx.max_frame_bytes, suppressed, "peer sent an empty or oversized frame; closing its stream");
                    }
                    return;
                }
            }
        };
        if pos > 0 {
            buf.copy_within(pos..filled, 0);
            filled -= pos;
        }
        if filled == 0 && buf.capacity() > READ_CHUNK_BYTES {
            // Between frames: do not keep a large frame's room.
            buf = Vec::new();
        }
        budget.release_to(buf.capacity());

        let room = buf.len() - filled;
        let frame_fits = next_total.is_some_and(|total| buf.len() >= total);
        // A read that filled all the room means more is waiting: read more
        // at a time (up to READ_CHUNK_BYTES), which is still growing by what
        // arrives.
        let busy = read_filled_room && buf.len() < READ_CHUNK_BYTES;
        if room == 0 || (room < READ_MIN_ROOM_BYTES && !frame_fits) || busy {
            let mut target = grown_len(filled, next_total);
            if busy {
                target = target.max((buf.len() * 2).min(READ_CHUNK_BYTES));
            }
            let reserved = tokio::time::timeout(ctx.idle_timeout, budget.reserve_to(target)).await;
            if !matches!(reserved, Ok(Ok(()))) {
                add(&ctx.counters.inbound_budget_closed, 1);
                if let Some(suppressed) = ctx.may_warn(peer, "buffer budget") {
                    warn!(%peer, waited = ?ctx.idle_timeout, suppressed, "no room in the inbound buffer budget; closing a frames stream");
                }
                return;
            }
            buf.reserve_exact(target - buf.len());
            buf.resize(target, 0);
            // The allocator may have given a little more than asked.
            if budget.reserve_to(buf.capacity()).await.is_err() {
                return;
            }
        }

        // A stream must bring its first frame, and a started frame its
        // next bytes, within the idle timeout; between frames it may rest.
        let deadline = if !delivered_any {
            Some(opened + ctx.idle_timeout)
        } else if filled > 0 {
            Some(last_byte + ctx.idle_timeout)
        } else {
            None
        };
        let room = buf.len() - filled;
        let read = stream.read(&mut buf[filled..]);
        let read = match deadline {
            Some(at) => match tokio::time::timeout_at(at, read).await {
                Ok(read) => read,
                Err(_) => {
                    add(&ctx.counters.inbound_streams_idle_closed, 1);
                    debug!(%peer, pending = filled, first_frame = !delivered_any, "inbound frames stream idle too long; closing it");
                    return;
                }
            },
            None => read.await,
        };
        match read {
            Ok(0) => {
                if filled > 0 {
                    debug!(%peer, pending = filled, "frames stream ended inside a frame");
                }
                return;
            }
            Ok(n) => {
                filled += n;
                last_byte = Instant::now();
                read_filled_room = n == room;
            }
            Err(e) => {
                debug!(%peer, error = %e, "frames stream failed");
                add(&ctx.counters.stream_errors, 1);
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(x: u8) -> Bytes {
        Bytes::from(vec![x])
    }

    #[test]
    fn lanes_serve_highest_priority_first_and_are_bounded() {
        let mut lanes = Lanes::default();
        assert!(lanes.push(Priority(1), b(1), 2));
        assert!(lanes.push(Priority(1), b(2), 2));
        assert!(!lanes.push(Priority(1), b(3), 2));
        assert!(lanes.push(Priority::CONTROL, b(4), 2));
        assert!(lanes.push(Priority(10), b(5), 2));
        assert!(lanes.push(Priority::LOWEST, b(6), 2));
        let mut buf = Vec::new();
        assert_eq!(lanes.fill_batch(&mut buf, usize::MAX), (5, 5));
        let payloads: Vec<u8> = buf.chunks(5).map(|c| c[4]).collect();
        assert_eq!(payloads, vec![4, 5, 1, 2, 6]);
        assert_eq!(lanes.len, 0);
    }

    #[test]
    fn batches_stop_at_the_byte_limit() {
        let mut lanes = Lanes::default();
        for _ in 0..10 {
            assert!(lanes.push(Priority(1), Bytes::from(vec![0u8; 100]), 100));
        }
        let mut buf = Vec::new();
        assert_eq!(lanes.fill_batch(&mut buf, 250), (3, 300));
        assert_eq!(lanes.len, 7);
        assert_eq!(lanes.clear(), 7);
    }

    #[test]
    fn delayed_frames_release_in_due_order() {
        let counters = NetCounters::default();
        let slot = PeerSlot::new(None);
        let mut st = slot.lock();
        let now = Instant::now();
        for (i, ms) in [30u64, 10, 20].iter().enumerate() {
            st.delayed.push(Reverse(Delayed {
                due: now + Duration::from_millis(*ms),
                seq: i as u64,
                priority: Priority(1),
                frame: b(i as u8),
            }));
        }
        st.release_due(now + Duration::from_millis(25), 10, &counters);
        let mut buf = Vec::new();
        assert_eq!(st.queues.fill_batch(&mut buf, usize::MAX), (2, 2));
        assert_eq!(buf[4], 1);
        assert_eq!(buf[9], 2);
        assert_eq!(st.delayed.len(), 1);
    }
}
