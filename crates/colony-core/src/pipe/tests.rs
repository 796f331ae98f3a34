//! Two pipe cores over a virtual lossy network (quinn-proto's `Pair` style).

use super::*;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::collections::HashMap;

struct Pair {
    now: Instant,
    a: Pipes<u32>,
    b: Pipes<u32>,
    /// (deliver_at, to, from, frame)
    wire: Vec<(Instant, u32, u32, PipeFrame)>,
    loss: f64,
    duplicate: f64,
    jitter_ms: u64,
    /// Drop everything (a dead or cut-off peer).
    blackhole: bool,
    /// Drop every transmission of this data frame number.
    drop_data_seq: Option<u64>,
    rng: SmallRng,
    delivered_to_b: Vec<Delivery<u32>>,
    outcomes: HashMap<u64, Result<Receipt, PipeError>>,
}

impl Pair {
    fn new(seed: u64) -> Pair {
        Pair {
            now: Instant::now(),
            a: Pipes::new(PipeConfig::default(), 1),
            b: Pipes::new(PipeConfig::default(), 1),
            wire: Vec::new(),
            loss: 0.0,
            duplicate: 0.0,
            jitter_ms: 0,
            blackhole: false,
            drop_data_seq: None,
            rng: SmallRng::seed_from_u64(seed),
            delivered_to_b: Vec::new(),
            outcomes: HashMap::new(),
        }
    }

    fn send(&mut self, token: u64, payload: Vec<u8>) -> Result<(), PipeError> {
        let deadline = self.now + Duration::from_secs(30);
        self.a
            .send(self.now, 1, TrafficClass::EVENTS, payload, token, deadline)
    }

    fn drain(&mut self) {
        for (id, to) in [(0u32, 1u32), (1, 0)] {
            let core = if id == 0 { &mut self.a } else { &mut self.b };
            let mut transmits = Vec::new();
            while let Some(out) = core.poll() {
                match out {
                    PipeOutput::Transmit { frame, .. } => transmits.push(frame),
                    PipeOutput::Delivered { token, receipt } => {
                        assert!(self.outcomes.insert(token, Ok(receipt)).is_none());
                    }
                    PipeOutput::Failed { token, error } => {
                        assert!(self.outcomes.insert(token, Err(error)).is_none());
                    }
                }
            }
            while let Some(d) = self.b.pop_delivery() {
                self.delivered_to_b.push(d);
            }
            for frame in transmits {
                let targeted = matches!(
                    frame,
                    PipeFrame::Data { seq, .. } | PipeFrame::Fragment { seq, .. }
                        if Some(seq) == self.drop_data_seq
                );
                if targeted || self.blackhole || self.rng.random_bool(self.loss) {
                    continue;
                }
                let copies = if self.rng.random_bool(self.duplicate) {
                    2
                } else {
                    1
                };
                for _ in 0..copies {
                    let delay = 1 + self.rng.random_range(0..=self.jitter_ms);
                    let at = self.now + Duration::from_millis(delay);
                    self.wire.push((at, to, id, frame.clone()));
                }
            }
        }
    }

    /// Runs until nothing is in flight and no timer is pending, or `limit` passes.
    fn run(&mut self, limit: Duration) {
        let end = self.now + limit;
        self.drain();
        loop {
            let next_wire = self.wire.iter().map(|w| w.0).min();
            let next_timer = [self.a.poll_timeout(), self.b.poll_timeout()]
                .into_iter()
                .flatten()
                .min();
            let Some(next) = [next_wire, next_timer].into_iter().flatten().min() else {
                return;
            };
            if next > end {
                self.now = end;
                return;
            }
            self.now = next;
            // Deliver every frame due now as one batch, then run timers.
            let (due, rest): (Vec<_>, Vec<_>) = self.wire.drain(..).partition(|w| w.0 <= self.now);
            self.wire = rest;
            for (_, to, from, frame) in due {
                let core = if to == 0 { &mut self.a } else { &mut self.b };
                core.handle_frame(self.now, from, frame);
            }
            self.a.handle_timeout(self.now);
            self.b.handle_timeout(self.now);
            self.drain();
        }
    }
}

fn payload(i: u64) -> Vec<u8> {
    i.to_be_bytes().to_vec()
}

fn seq_of(d: &Delivery<u32>) -> u64 {
    u64::from_be_bytes(d.payload[..8].try_into().unwrap())
}

#[test]
fn clean_network_delivers_in_order() {
    let mut pair = Pair::new(1);
    for i in 0..1000 {
        pair.send(i, payload(i)).unwrap();
    }
    pair.run(Duration::from_secs(10));
    let got: Vec<u64> = pair.delivered_to_b.iter().map(seq_of).collect();
    assert_eq!(got, (0..1000).collect::<Vec<_>>());
    assert_eq!(pair.outcomes.len(), 1000);
    assert!(pair.outcomes.values().all(|o| o.is_ok()));
    assert_eq!(pair.a.stats().retransmissions, 0);
}

#[test]
fn loss_duplication_reordering_deliver_exactly_once_in_order() {
    for seed in 0..3 {
        let mut pair = Pair::new(seed);
        pair.loss = 0.3;
        pair.duplicate = 0.05;
        pair.jitter_ms = 20;
        for i in 0..10_000 {
            pair.send(i, payload(i)).unwrap();
        }
        pair.run(Duration::from_secs(60));
        let got: Vec<u64> = pair.delivered_to_b.iter().map(seq_of).collect();
        assert_eq!(got.len(), 10_000, "seed {seed}: every message handled once");
        assert!(
            got.windows(2).all(|w| w[0] + 1 == w[1]),
            "seed {seed}: in order"
        );
        assert_eq!(pair.outcomes.len(), 10_000);
        let failed: Vec<_> = pair.outcomes.iter().filter(|(_, o)| o.is_err()).collect();
        assert!(failed.is_empty(), "seed {seed}: {failed:?}");
        assert!(pair.b.stats().duplicates_suppressed > 0);
        assert!(pair.a.stats().retransmissions > 0);
    }
}

#[test]
fn blackholed_peer_fails_every_message_by_its_deadline() {
    let mut pair = Pair::new(2);
    pair.blackhole = true;
    for i in 0..10 {
        pair.send(i, payload(i)).unwrap();
    }
    pair.run(Duration::from_secs(30) + Duration::from_millis(1));
    assert_eq!(
        pair.outcomes.len(),
        10,
        "every message settled by its deadline"
    );
    for outcome in pair.outcomes.values() {
        assert!(matches!(outcome, Err(PipeError::DeadlineExceeded { .. })));
    }
    // Progressive timeouts: 100 ms doubling to a 1 s cap is about 35 tries
    // per message in 30 s, where a fixed minimum RTO would be 3,000.
    let retransmissions = pair.a.stats().retransmissions;
    assert!(
        (10 * 25..10 * 40).contains(&retransmissions),
        "{retransmissions}"
    );
}

#[test]
fn gap_left_by_an_expired_message_does_not_stall_later_ones() {
    let mut pair = Pair::new(3);
    pair.drop_data_seq = Some(0);
    let deadline = pair.now + Duration::from_millis(500);
    pair.a
        .send(pair.now, 1, TrafficClass::EVENTS, payload(0), 0, deadline)
        .unwrap();
    pair.send(1, payload(1)).unwrap();
    pair.run(Duration::from_secs(5));
    assert!(matches!(
        pair.outcomes[&0],
        Err(PipeError::DeadlineExceeded { .. })
    ));
    assert!(pair.outcomes[&1].is_ok());
    let got: Vec<u64> = pair.delivered_to_b.iter().map(seq_of).collect();
    assert_eq!(
        got,
        vec![1],
        "1 delivered once the sender gave up on 0; 0 never"
    );
}

#[test]
fn dead_peer_fails_pending_messages() {
    let mut pair = Pair::new(4);
    pair.blackhole = true;
    for i in 0..5 {
        pair.send(i, payload(i)).unwrap();
    }
    pair.drain();
    pair.a.peer_dead(&1);
    pair.drain();
    assert_eq!(pair.outcomes.len(), 5);
    assert!(pair
        .outcomes
        .values()
        .all(|o| matches!(o, Err(PipeError::PeerDead { .. }))));
    assert_eq!(pair.a.poll_timeout(), None, "no timers left behind");
}

#[test]
fn oversized_message_and_backpressure_are_errors() {
    let mut pair = Pair::new(5);
    pair.a = Pipes::new(
        PipeConfig {
            max_message_bytes: 1 << 20,
            ..PipeConfig::default()
        },
        1,
    );
    let err = pair.send(0, vec![0; (1 << 20) + 1]).unwrap_err();
    assert!(matches!(
        err,
        PipeError::MessageTooLarge {
            size: 1_048_577,
            max: 1_048_576
        }
    ));
    let config = PipeConfig {
        window_messages: 2,
        max_queued_messages: 3,
        ..PipeConfig::default()
    };
    pair.a = Pipes::new(config, 1);
    for i in 0..5 {
        pair.send(i, payload(i)).unwrap();
    }
    assert!(matches!(
        pair.send(5, payload(5)),
        Err(PipeError::Backpressure { queued: 3 })
    ));
}

#[test]
fn restarted_sender_starts_a_new_session() {
    let mut pair = Pair::new(6);
    for i in 0..10 {
        pair.send(i, payload(i)).unwrap();
    }
    pair.run(Duration::from_secs(5));
    // The sender restarts: fresh core, higher session, numbers from 0 again.
    pair.a = Pipes::new(PipeConfig::default(), 2);
    for i in 100..105 {
        pair.send(i, payload(i)).unwrap();
    }
    pair.run(Duration::from_secs(5));
    let got: Vec<u64> = pair.delivered_to_b.iter().map(seq_of).collect();
    let mut expected: Vec<u64> = (0..10).collect();
    expected.extend(100..105);
    assert_eq!(got, expected);
    // A late frame of the old session is ignored.
    pair.b.handle_frame(
        pair.now,
        0,
        PipeFrame::Data {
            class: TrafficClass::EVENTS,
            session: 1,
            seq: 50,
            base: 0,
            payload: payload(999),
        },
    );
    assert!(pair.b.pop_delivery().is_none());
}

#[test]
fn slow_application_applies_backpressure_without_loss() {
    let mut pair = Pair::new(7);
    let config = PipeConfig {
        max_ready_messages: 16,
        receive_window: 32,
        ..PipeConfig::default()
    };
    pair.b = Pipes::new(config, 1);
    for i in 0..200 {
        pair.send(i, payload(i)).unwrap();
    }
    // Run without consuming at b: deliveries pile up to the bound only.
    let mut got = Vec::new();
    for _ in 0..200 {
        let end = pair.now + Duration::from_millis(20);
        // Step the network without draining b's ready queue.
        let (due, rest): (Vec<_>, Vec<_>) = pair.wire.drain(..).partition(|w| w.0 <= end);
        pair.wire = rest;
        pair.now = end;
        for (_, to, from, frame) in due {
            let core = if to == 0 { &mut pair.a } else { &mut pair.b };
            core.handle_frame(pair.now, from, frame);
        }
        pair.a.handle_timeout(pair.now);
        pair.b.handle_timeout(pair.now);
        assert!(pair.b.ready.len() <= 16);
        // The application takes a few now and then.
        for _ in 0..3 {
            if let Some(d) = pair.b.pop_delivery() {
                got.push(seq_of(&d));
            }
        }
        let mut transmits = Vec::new();
        for (id, core) in [(0u32, &mut pair.a), (1, &mut pair.b)] {
            while let Some(out) = core.poll() {
                if let PipeOutput::Transmit { frame, .. } = out {
                    transmits.push((if id == 0 { 1 } else { 0 }, id, frame));
                }
            }
        }
        for (to, from, frame) in transmits {
            pair.wire
                .push((pair.now + Duration::from_millis(1), to, from, frame));
        }
    }
    while let Some(d) = pair.b.pop_delivery() {
        got.push(seq_of(&d));
    }
    pair.run(Duration::from_secs(30));
    got.extend(pair.delivered_to_b.iter().map(seq_of));
    assert_eq!(got, (0..200).collect::<Vec<_>>());
}

#[test]
fn a_message_waiting_behind_a_gap_gets_no_receipt_until_delivered() {
    let mut pair = Pair::new(7);
    pair.drop_data_seq = Some(0);
    pair.send(0, payload(0)).unwrap();
    pair.send(1, payload(1)).unwrap();
    // Long enough for 1 to be selectively acknowledged, not for 0's retransmission timer.
    pair.run(Duration::from_millis(50));
    assert!(pair.delivered_to_b.is_empty(), "1 waits behind 0");
    assert!(
        !pair.outcomes.contains_key(&1),
        "no receipt for a message in the receiver's reorder buffer"
    );
    // The receiver dies with 1 buffered: the sender must not think it got it.
    pair.a.peer_dead(&1);
    pair.drain();
    assert!(matches!(pair.outcomes[&1], Err(PipeError::PeerDead { .. })));
}

#[test]
fn the_byte_window_refills_as_messages_are_acknowledged() {
    let mut pair = Pair::new(8);
    // 40 messages of an eighth of the byte window, all at once: eight per
    // round trip (1 ms each way), so five round trips, not one message per
    // round trip once the first window is spent.
    let big = vec![7u8; PipeConfig::default().window_bytes / 8 - 64];
    let start = pair.now;
    for i in 0..40 {
        pair.send(i, big.clone()).unwrap();
    }
    pair.run(Duration::from_secs(5));
    assert_eq!(pair.delivered_to_b.len(), 40);
    assert_eq!(pair.outcomes.len(), 40);
    let took = pair.now.saturating_duration_since(start);
    assert!(
        took <= Duration::from_millis(20),
        "all acknowledged after {took:?}"
    );
}

/// Bytes that tell where they were cut: byte `i` of message `token` is a
/// function of both, so a fragment out of place shows.
fn big(token: u64, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u64).wrapping_mul(31).wrapping_add(token * 7) as u8)
        .collect()
}

#[test]
fn multi_mib_messages_arrive_intact_under_loss_duplication_and_reordering() {
    for seed in 0..3 {
        let mut pair = Pair::new(100 + seed);
        pair.loss = 0.2;
        pair.duplicate = 0.05;
        pair.jitter_ms = 20;
        let sizes = [5 << 20, 10, 3 << 20, 256 << 10, (256 << 10) + 1, 7];
        for (token, len) in sizes.iter().enumerate() {
            pair.send(token as u64, big(token as u64, *len)).unwrap();
        }
        pair.run(Duration::from_secs(120));
        let got: Vec<Vec<u8>> = pair
            .delivered_to_b
            .iter()
            .map(|d| d.payload.clone())
            .collect();
        let expected: Vec<Vec<u8>> = sizes
            .iter()
            .enumerate()
            .map(|(t, len)| big(t as u64, *len))
            .collect();
        assert_eq!(got.len(), expected.len(), "seed {seed}: once each");
        assert!(got == expected, "seed {seed}: intact and in order");
        // One receipt per message, whatever its fragments went through.
        assert_eq!(pair.outcomes.len(), sizes.len());
        assert!(pair.outcomes.values().all(|o| o.is_ok()), "seed {seed}");
        let a = pair.a.stats();
        let b = pair.b.stats();
        assert_eq!(a.messages_acked, sizes.len() as u64);
        let fragment = PipeConfig::default().fragment_bytes;
        let fragmented = sizes.iter().filter(|len| **len > fragment).count();
        let fragments: usize = sizes
            .iter()
            .filter(|len| **len > fragment)
            .map(|len| len.div_ceil(fragment))
            .sum();
        assert_eq!(
            b.messages_reassembled, fragmented as u64,
            "seed {seed}: {b:?}"
        );
        assert_eq!(b.integrity_failures, 0);
        assert_eq!(a.fragments_sent, fragments as u64, "{a:?}");
        assert!(a.retransmissions > 0 && b.duplicates_suppressed > 0);
        assert_eq!(pair.b.reassembly_bytes(), 0, "nothing left half-built");
        assert_eq!(pair.a.pending_messages(), 0);
    }
}

#[test]
fn small_messages_travel_as_before_in_one_data_frame() {
    let mut pair = Pair::new(101);
    let limit = PipeConfig::default().fragment_bytes;
    pair.send(0, big(0, limit)).unwrap();
    let frames: Vec<PipeFrame> = std::iter::from_fn(|| pair.a.poll())
        .filter_map(|o| match o {
            PipeOutput::Transmit { frame, .. } => Some(frame),
            _ => None,
        })
        .collect();
    assert!(
        matches!(frames.as_slice(), [PipeFrame::Data { seq: 0, base: 0, payload, .. }] if payload.len() == limit),
        "{} frames",
        frames.len()
    );
    assert_eq!(pair.a.stats().fragments_sent, 0);
}

#[test]
fn a_message_given_up_part_way_is_never_delivered_in_part() {
    let mut pair = Pair::new(102);
    // Message 0 is 4 fragments (numbers 0..4); its third never gets through.
    pair.drop_data_seq = Some(2);
    let fragment = PipeConfig::default().fragment_bytes;
    let deadline = pair.now + Duration::from_millis(500);
    pair.a
        .send(
            pair.now,
            1,
            TrafficClass::EVENTS,
            big(0, 4 * fragment),
            0,
            deadline,
        )
        .unwrap();
    pair.send(1, big(1, 2 * fragment + 5)).unwrap();
    pair.send(2, payload(2)).unwrap();
    pair.run(Duration::from_secs(10));
    assert!(
        matches!(pair.outcomes[&0], Err(PipeError::DeadlineExceeded { .. })),
        "{:?}",
        pair.outcomes.get(&0)
    );
    assert!(pair.outcomes[&1].is_ok() && pair.outcomes[&2].is_ok());
    let got: Vec<Vec<u8>> = pair
        .delivered_to_b
        .iter()
        .map(|d| d.payload.clone())
        .collect();
    assert_eq!(got, vec![big(1, 2 * fragment + 5), payload(2)]);
    // Receipts name the message by its first number.
    assert_eq!(pair.delivered_to_b[0].seq, 4);
    assert_eq!(pair.b.stats().partials_dropped, 1);
    assert_eq!(pair.b.reassembly_bytes(), 0);
    assert_eq!(pair.a.stats().messages_failed, 1, "one failure, not four");
}

/// A fragment frame as a hostile or broken sender might write it.
fn fragment(seq: u64, part: u32, parts: u32, len: u64, crc32: u32, bytes: &[u8]) -> PipeFrame {
    PipeFrame::Fragment {
        class: TrafficClass::BULK,
        session: 1,
        seq,
        base: 0,
        header: FragmentHeader {
            part,
            parts,
            len,
            crc32,
        },
        payload: bytes.to_vec(),
    }
}

#[test]
fn reassembly_memory_grows_with_the_bytes_not_the_announcement() {
    let config = PipeConfig {
        max_message_bytes: 64 << 20,
        ..PipeConfig::default()
    };
    let mut b = Pipes::<u32>::new(config, 1);
    let now = Instant::now();
    // Announces 64 MiB, sends 1 KiB, then stops.
    b.handle_frame(now, 0, fragment(0, 0, 65_536, 64 << 20, 0, &[1; 1024]));
    assert!(b.reassembly_bytes() <= 2048, "{}", b.reassembly_bytes());
    // Announcing more than the limit is refused outright.
    b.handle_frame(now, 2, fragment(0, 0, 2, (64 << 20) + 1, 0, &[1; 1024]));
    assert_eq!(b.stats().malformed_fragments, 1);
    assert!(b.reassembly_bytes() <= 2048);
    // A fragment that does not continue the partial message drops it.
    b.handle_frame(now, 0, fragment(1, 5, 65_536, 64 << 20, 0, &[1; 1024]));
    assert_eq!(b.stats().partials_dropped, 1);
    assert_eq!(b.reassembly_bytes(), 0);
    assert!(b.pop_delivery().is_none());
    // Bytes past the announced length are refused.
    b.handle_frame(now, 3, fragment(0, 0, 2, 1500, 0, &[1; 1024]));
    b.handle_frame(now, 3, fragment(1, 1, 2, 1500, 0, &[1; 1024]));
    assert_eq!(b.stats().malformed_fragments, 2);
    assert!(b.pop_delivery().is_none());
}

#[test]
fn a_damaged_message_fails_its_integrity_check() {
    let mut b = Pipes::<u32>::new(PipeConfig::default(), 1);
    let now = Instant::now();
    let message = big(9, 2000);
    let crc = crc32fast::hash(&message);
    b.handle_frame(now, 0, fragment(0, 0, 2, 2000, crc, &message[..1000]));
    let mut damaged = message[1000..].to_vec();
    damaged[17] ^= 1;
    b.handle_frame(now, 0, fragment(1, 1, 2, 2000, crc, &damaged));
    assert!(b.pop_delivery().is_none());
    assert_eq!(b.stats().integrity_failures, 1);
    // The intact message, resent under new numbers, gets through.
    b.handle_frame(now, 0, fragment(2, 0, 2, 2000, crc, &message[..1000]));
    b.handle_frame(now, 0, fragment(3, 1, 2, 2000, crc, &message[1000..]));
    let got = b.pop_delivery().expect("delivered");
    assert_eq!((got.seq, got.payload), (2, message));
}

#[test]
fn partial_messages_together_stay_within_the_reassembly_budget() {
    let config = PipeConfig {
        max_reassembly_bytes: 3000,
        ..PipeConfig::default()
    };
    let mut b = Pipes::<u32>::new(config, 1);
    let now = Instant::now();
    let acks = |b: &mut Pipes<u32>| -> Vec<(u32, u64)> {
        std::iter::from_fn(|| b.poll())
            .filter_map(|o| match o {
                PipeOutput::Transmit {
                    to,
                    frame: PipeFrame::Ack { cumulative, .. },
                    ..
                } => Some((to, cumulative)),
                _ => None,
            })
            .collect()
    };
    let one = big(1, 2000);
    let two = big(2, 2000);
    b.handle_frame(
        now,
        0,
        fragment(0, 0, 2, 2000, crc32fast::hash(&one), &one[..1000]),
    );
    // Peer 2's message would take the claims past the budget: it waits,
    // unacknowledged, rather than being dropped.
    b.handle_frame(
        now,
        2,
        fragment(0, 0, 2, 2000, crc32fast::hash(&two), &two[..1000]),
    );
    let mut got = acks(&mut b);
    got.sort();
    assert_eq!(got, vec![(0, 1), (2, 0)]);
    assert!(b.reassembly_bytes() <= 2000);
    // Peer 0's message completes; the waiting one goes on at its next
    // retransmission.
    b.handle_frame(
        now,
        0,
        fragment(1, 1, 2, 2000, crc32fast::hash(&one), &one[1000..]),
    );
    assert_eq!(b.pop_delivery().map(|d| d.payload), Some(one));
    b.handle_frame(
        now,
        2,
        fragment(0, 0, 2, 2000, crc32fast::hash(&two), &two[..1000]),
    );
    b.handle_frame(
        now,
        2,
        fragment(1, 1, 2, 2000, crc32fast::hash(&two), &two[1000..]),
    );
    assert_eq!(b.pop_delivery().map(|d| d.payload), Some(two));
    assert_eq!(b.reassembly_bytes(), 0);
}

#[test]
fn a_dead_peer_fails_a_fragmented_message_once() {
    let mut pair = Pair::new(103);
    pair.blackhole = true;
    pair.send(0, big(0, 3 << 20)).unwrap();
    pair.send(1, payload(1)).unwrap();
    pair.drain();
    assert_eq!(pair.a.pending_messages(), 2);
    pair.a.peer_dead(&1);
    pair.drain();
    assert_eq!(pair.outcomes.len(), 2);
    assert!(pair
        .outcomes
        .values()
        .all(|o| matches!(o, Err(PipeError::PeerDead { .. }))));
    assert_eq!(pair.a.pending_messages(), 0);
    assert_eq!(pair.a.poll_timeout(), None, "no timers left behind");
}

/// Bulk messages and an event received in one batch: the event is handed
/// over first, the bulk ones after it in their order (priority holds at
/// the receiver, not only on the sender's wire).
#[test]
fn an_urgent_message_received_with_bulk_ones_is_delivered_first() {
    let mut pair = Pair::new(2);
    let deadline = pair.now + Duration::from_secs(30);
    for i in 0..50 {
        pair.a
            .send(pair.now, 1, TrafficClass::BULK, payload(i), i, deadline)
            .unwrap();
    }
    pair.a
        .send(
            pair.now,
            1,
            TrafficClass::EVENTS,
            payload(999),
            999,
            deadline,
        )
        .unwrap();
    pair.run(Duration::from_secs(10));
    let got: Vec<(TrafficClass, u64)> = pair
        .delivered_to_b
        .iter()
        .map(|d| (d.class, seq_of(d)))
        .collect();
    let mut expected = vec![(TrafficClass::EVENTS, 999)];
    expected.extend((0..50).map(|i| (TrafficClass::BULK, i)));
    assert_eq!(got, expected);
}
