//! Micro-benchmarks of the sans-IO pipe core: two `Pipes` cores wired in
//! memory (no sockets, no tasks, virtual time), and the wire codec.
//!
//! - `pipe_core/transfer/*`: 10 000 messages of 16 bytes from one core to the
//!   other until every message is delivered and acknowledged, with no loss and
//!   with 10 % of frames (data and acks) dropped by a seeded generator. Time
//!   only moves when nothing else can: it jumps to the next timer.
//! - `pipe_core/wire/*`: `wire::encode` / `wire::decode` of a data frame with a
//!   64-byte payload.
//!
//! `cargo bench -p colony-core` (about 15 s of measurement); under
//! `cargo test --benches` each benchmark runs once.

use std::hint::black_box;
use std::time::{Duration, Instant};

use colony_core::pipe::{PipeConfig, PipeFrame, PipeOutput, Pipes, TrafficClass};
use colony_core::wire::{self, Frame};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

const SENDER: u32 = 1;
const RECEIVER: u32 = 2;
const MESSAGES: u64 = 10_000;
const PAYLOAD_BYTES: usize = 16;
const MAX_FRAME_BYTES: usize = 1 << 20;

/// Two cores and a lossy in-memory link between them.
struct Link {
    now: Instant,
    sender: Pipes<u32>,
    receiver: Pipes<u32>,
    loss: f64,
    rng: SmallRng,
}

impl Link {
    fn new(loss: f64, seed: u64) -> Link {
        Link {
            now: Instant::now(),
            sender: Pipes::new(PipeConfig::default(), 1),
            receiver: Pipes::new(PipeConfig::default(), 1),
            loss,
            rng: SmallRng::seed_from_u64(seed),
        }
    }

    fn lost(&mut self) -> bool {
        self.loss > 0.0 && self.rng.random::<f64>() < self.loss
    }

    /// Sends `MESSAGES` messages and runs the pair until each is delivered
    /// and settled; returns (delivered, transmissions of data frames).
    fn transfer(&mut self) -> (u64, u64) {
        let deadline = self.now + Duration::from_secs(3600);
        for token in 0..MESSAGES {
            self.sender
                .send(
                    self.now,
                    RECEIVER,
                    TrafficClass::EVENTS,
                    vec![0xA5; PAYLOAD_BYTES],
                    token,
                    deadline,
                )
                .expect("the backlog holds every message");
        }
        let (mut delivered, mut acked, mut data_frames) = (0u64, 0u64, 0u64);
        for _round in 0..1_000_000 {
            let mut moved = false;
            while let Some(out) = self.sender.poll() {
                match out {
                    PipeOutput::Transmit { frame, .. } => {
                        moved = true;
                        data_frames += u64::from(matches!(frame, PipeFrame::Data { .. }));
                        if !self.lost() {
                            self.receiver.handle_frame(self.now, SENDER, frame);
                        }
                    }
                    PipeOutput::Delivered { .. } => acked += 1,
                    PipeOutput::Failed { token, error } => {
                        panic!("message {token} failed: {error}")
                    }
                }
            }
            while let Some(delivery) = self.receiver.pop_delivery() {
                black_box(delivery);
                delivered += 1;
            }
            while let Some(out) = self.receiver.poll() {
                if let PipeOutput::Transmit { frame, .. } = out {
                    moved = true;
                    if !self.lost() {
                        self.sender.handle_frame(self.now, RECEIVER, frame);
                    }
                }
            }
            if acked == MESSAGES && delivered == MESSAGES {
                return (delivered, data_frames);
            }
            if !moved {
                // Quiet: jump to the next timer (a retransmission).
                let next = [self.sender.poll_timeout(), self.receiver.poll_timeout()]
                    .into_iter()
                    .flatten()
                    .min()
                    .expect("unsettled messages have timers");
                self.now = self.now.max(next);
                self.sender.handle_timeout(self.now);
                self.receiver.handle_timeout(self.now);
            }
        }
        panic!("no progress: {delivered} delivered, {acked} acknowledged");
    }
}

fn transfer(c: &mut Criterion) {
    let mut group = c.benchmark_group("pipe_core/transfer");
    group
        .throughput(Throughput::Elements(MESSAGES))
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    for (name, loss) in [("no_loss", 0.0), ("loss_10pct", 0.1)] {
        // Check once, outside the measurement, that the run is what it says.
        let (delivered, data_frames) = Link::new(loss, 42).transfer();
        assert_eq!(delivered, MESSAGES);
        if loss == 0.0 {
            assert_eq!(data_frames, MESSAGES, "no retransmission without loss");
        } else {
            assert!(data_frames > MESSAGES, "loss makes the sender retransmit");
        }
        group.bench_with_input(BenchmarkId::from_parameter(name), &loss, |b, &loss| {
            b.iter(|| black_box(Link::new(loss, 42).transfer()))
        });
    }
    group.finish();
}

fn data_frame() -> Frame<u32> {
    Frame::Pipe(PipeFrame::Data {
        class: TrafficClass::EVENTS,
        session: 1_764_000_000_000_000,
        seq: 123_456,
        base: 123_000,
        payload: vec![0x5A; 64],
    })
}

fn codec(c: &mut Criterion) {
    let frame = data_frame();
    let bytes = wire::encode(&frame, MAX_FRAME_BYTES).expect("encodes");
    match wire::decode::<Frame<u32>>(&bytes, MAX_FRAME_BYTES).expect("decodes") {
        Frame::Pipe(decoded) => assert!(matches!(&frame, Frame::Pipe(f) if *f == decoded)),
        _ => panic!("decoded into another kind of frame"),
    }

    let mut group = c.benchmark_group("pipe_core/wire");
    group
        .throughput(Throughput::Bytes(bytes.len() as u64))
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    group.bench_function("encode_data_64B", |b| {
        b.iter(|| wire::encode(black_box(&frame), MAX_FRAME_BYTES).expect("encodes"))
    });
    group.bench_function("decode_data_64B", |b| {
        b.iter(|| wire::decode::<Frame<u32>>(black_box(&bytes), MAX_FRAME_BYTES).expect("decodes"))
    });
    group.finish();
}

criterion_group!(benches, transfer, codec);
criterion_main!(benches);
