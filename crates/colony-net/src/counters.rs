//! Counters of the frame plumbing.

use std::sync::atomic::{AtomicU64, Ordering};

/// Live counters of one node's frame plumbing, shared by its writers and
/// readers. Byte counts are payload bytes, without the 4-byte length prefix.
#[derive(Debug, Default)]
pub struct NetCounters {
    /// Frames written to a stream.
    pub frames_sent: AtomicU64,
    /// Frames read from a stream and delivered as [`NetEvent::Frame`](crate::NetEvent::Frame).
    pub frames_received: AtomicU64,
    /// Payload bytes written.
    pub bytes_sent: AtomicU64,
    /// Payload bytes delivered.
    pub bytes_received: AtomicU64,
    /// Frames dropped because their priority queue (or the delay queue) was full.
    pub queue_full_dropped: AtomicU64,
    /// Frames not sent because they were empty or larger than `max_frame_bytes`.
    pub oversized_dropped: AtomicU64,
    /// Inbound streams closed because a frame announced an empty or too large payload.
    pub oversized_rejected: AtomicU64,
    /// Streams that failed to open, failed while writing, or failed while reading.
    pub stream_errors: AtomicU64,
    /// Frames dropped because their peer was unreachable (queued when the
    /// writer failed, sent during the reconnect backoff) or forgotten.
    pub unreachable_dropped: AtomicU64,
    /// Inbound streams taken by the acceptor and given a reader.
    pub inbound_streams_accepted: AtomicU64,
    /// Inbound streams refused because `max_inbound_streams` (over all
    /// peers) or `max_inbound_streams_per_peer` (from that peer) were
    /// already open.
    pub inbound_streams_refused: AtomicU64,
    /// Inbound streams closed because their first frame, or the rest of a
    /// started frame, did not come within `inbound_stream_idle_timeout`.
    pub inbound_streams_idle_closed: AtomicU64,
    /// Inbound streams closed because their reader waited longer than
    /// `inbound_stream_idle_timeout` for room in `max_inbound_buffered_bytes`.
    pub inbound_budget_closed: AtomicU64,
    /// Warning lines about remote peers held back by rate limiting.
    pub warnings_suppressed: AtomicU64,
    /// Frames dropped by fault injection.
    pub injected_drops: AtomicU64,
    /// Extra copies enqueued by fault injection.
    pub injected_duplicates: AtomicU64,
    /// Frames (copies included) held back by fault injection.
    pub injected_delays: AtomicU64,
    /// [`NetEvent::Unreachable`](crate::NetEvent::Unreachable) events emitted.
    pub unreachable_reported: AtomicU64,
}

/// A plain copy of [`NetCounters`] at one moment.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NetCountersSnapshot {
    /// See [`NetCounters::frames_sent`].
    pub frames_sent: u64,
    /// See [`NetCounters::frames_received`].
    pub frames_received: u64,
    /// See [`NetCounters::bytes_sent`].
    pub bytes_sent: u64,
    /// See [`NetCounters::bytes_received`].
    pub bytes_received: u64,
    /// See [`NetCounters::queue_full_dropped`].
    pub queue_full_dropped: u64,
    /// See [`NetCounters::oversized_dropped`].
    pub oversized_dropped: u64,
    /// See [`NetCounters::oversized_rejected`].
    pub oversized_rejected: u64,
    /// See [`NetCounters::stream_errors`].
    pub stream_errors: u64,
    /// See [`NetCounters::unreachable_dropped`].
    pub unreachable_dropped: u64,
    /// See [`NetCounters::inbound_streams_accepted`].
    pub inbound_streams_accepted: u64,
    /// See [`NetCounters::inbound_streams_refused`].
    pub inbound_streams_refused: u64,
    /// See [`NetCounters::inbound_streams_idle_closed`].
    #[serde(default)]
    pub inbound_streams_idle_closed: u64,
    /// See [`NetCounters::inbound_budget_closed`].
    #[serde(default)]
    pub inbound_budget_closed: u64,
    /// See [`NetCounters::warnings_suppressed`].
    #[serde(default)]
    pub warnings_suppressed: u64,
    /// See [`NetCounters::injected_drops`].
    pub injected_drops: u64,
    /// See [`NetCounters::injected_duplicates`].
    pub injected_duplicates: u64,
    /// See [`NetCounters::injected_delays`].
    pub injected_delays: u64,
    /// See [`NetCounters::unreachable_reported`].
    pub unreachable_reported: u64,
}

impl NetCounters {
    /// Reads every counter (each individually; the set is not atomic).
    pub fn snapshot(&self) -> NetCountersSnapshot {
        let r = |c: &AtomicU64| c.load(Ordering::Relaxed);
        NetCountersSnapshot {
            frames_sent: r(&self.frames_sent),
            frames_received: r(&self.frames_received),
            bytes_sent: r(&self.bytes_sent),
            bytes_received: r(&self.bytes_received),
            queue_full_dropped: r(&self.queue_full_dropped),
            oversized_dropped: r(&self.oversized_dropped),
            oversized_rejected: r(&self.oversized_rejected),
            stream_errors: r(&self.stream_errors),
            unreachable_dropped: r(&self.unreachable_dropped),
            inbound_streams_accepted: r(&self.inbound_streams_accepted),
            inbound_streams_refused: r(&self.inbound_streams_refused),
            inbound_streams_idle_closed: r(&self.inbound_streams_idle_closed),
            inbound_budget_closed: r(&self.inbound_budget_closed),
            warnings_suppressed: r(&self.warnings_suppressed),
            injected_drops: r(&self.injected_drops),
            injected_duplicates: r(&self.injected_duplicates),
            injected_delays: r(&self.injected_delays),
            unreachable_reported: r(&self.unreachable_reported),
        }
    }
}

/// Adds `n` to a counter.
pub(crate) fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}
