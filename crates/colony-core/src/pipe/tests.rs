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
                let targeted =
                    matches!(frame, PipeFrame::Data { seq, .. } if Some(seq) == self.drop_data_seq);
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
    let err = pair.send(0, vec![0; (1 << 20) + 1]).unwrap_err();
    assert!(matches!(err, PipeError::MessageTooLarge { .. }));
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
