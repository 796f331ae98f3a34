//! `colony bench pipe`: two peers in one process, joined over loopback
//! through the fault-injecting wrapper, measured against raw TCP in the same
//! run.
//!
//! 1. Raw TCP round trip: a 16-byte ping-pong on a loopback socket (nodelay),
//!    the floor for any protocol on this machine.
//! 2. Pipe round trip: one message at a time, from `send` to its receipt
//!    (the data frame there, the acknowledgement back).
//! 3. Pipelined throughput: `messages` messages submitted back to back; the
//!    receiving application records each one to count deliveries, duplicates,
//!    reordering and one-way latency.

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use futures::stream::FuturesUnordered;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::{ColonyError, FaultConfig, LocalNetwork, TrafficClass};

mod calls;
mod space;
pub use calls::{calls, CallsBenchOptions, CallsBenchReport, ProtocolCalls};
pub use space::{space, SkewedReads, SpaceBenchOptions, SpaceBenchReport};

/// What to measure.
#[derive(Clone, Debug)]
pub struct PipeBenchOptions {
    /// Probability of dropping each frame.
    pub loss: f64,
    /// Probability of duplicating each frame.
    pub duplicate: f64,
    /// Fixed delay added to each frame.
    pub delay: Duration,
    /// Uniform random extra delay per frame (reorders frames).
    pub jitter: Duration,
    /// Messages in the pipelined phase.
    pub messages: usize,
    /// Round trips in each latency phase.
    pub round_trips: usize,
    /// Payload size of each message, at least 16 bytes.
    pub payload_bytes: usize,
    /// Most messages awaiting receipts at once in the pipelined phase.
    pub window: usize,
}

impl Default for PipeBenchOptions {
    fn default() -> Self {
        PipeBenchOptions {
            loss: 0.0,
            duplicate: 0.0,
            delay: Duration::ZERO,
            jitter: Duration::ZERO,
            messages: 100_000,
            round_trips: 2000,
            payload_bytes: 16,
            window: 4096,
        }
    }
}

/// Percentiles of a set of durations, in microseconds.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct LatencyUs {
    /// Median.
    pub p50: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Largest.
    pub max: f64,
}

impl LatencyUs {
    /// Percentiles of `samples`.
    pub fn of(samples: &mut [Duration]) -> LatencyUs {
        if samples.is_empty() {
            return LatencyUs::default();
        }
        samples.sort();
        let at = |q: f64| {
            let i = ((samples.len() as f64 - 1.0) * q).round() as usize;
            samples[i].as_secs_f64() * 1e6
        };
        LatencyUs {
            p50: at(0.5),
            p99: at(0.99),
            max: at(1.0),
        }
    }
}

/// The outcome of `colony bench pipe`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct PipeBenchReport {
    /// Injected loss probability.
    pub loss: f64,
    /// Injected duplication probability.
    pub duplicate: f64,
    /// Injected fixed delay, ms.
    pub delay_ms: f64,
    /// Injected jitter, ms.
    pub jitter_ms: f64,
    /// Messages sent in the pipelined phase.
    pub messages: usize,
    /// Distinct messages the receiving application got.
    pub delivered: usize,
    /// Messages never delivered.
    pub lost: usize,
    /// Deliveries of a message the application had already got.
    pub duplicated_at_handler: usize,
    /// Deliveries that came after a later message.
    pub out_of_order: usize,
    /// Sends that ended in an error.
    pub failed: usize,
    /// One-way latency, submit to handler, pipelined phase.
    pub latency_us: LatencyUs,
    /// Pipelined throughput.
    pub messages_per_s: f64,
    /// Pipe round trip: send to receipt, one message at a time.
    pub pipe_rtt_us: LatencyUs,
    /// Raw TCP ping-pong round trip on loopback, same run.
    pub tcp_rtt_us: LatencyUs,
    /// Pipe p50 round trip over raw TCP p50 round trip.
    pub rtt_ratio_p50: f64,
    /// Pipe p99 round trip over raw TCP p99 round trip.
    pub rtt_ratio_p99: f64,
}

/// Runs the pipe benchmark.
pub async fn pipe(options: &PipeBenchOptions) -> Result<PipeBenchReport, ColonyError> {
    let payload_bytes = options.payload_bytes.max(16);
    let tcp = raw_tcp_round_trips(options.round_trips, payload_bytes).await?;

    let faults = FaultConfig {
        loss: options.loss,
        duplicate: options.duplicate,
        delay: options.delay,
        jitter: options.jitter,
        seed: 7,
    };
    let network = LocalNetwork::start(2, move |i, config| {
        config.net.faults = FaultConfig {
            seed: 7 + i as u64,
            ..faults.clone()
        };
    })
    .await?;
    let (receiver, sender) = (network.peers()[0].clone(), network.peers()[1].clone());

    let mut inbox = receiver.take_inbox().ok_or(ColonyError::Stopped)?;
    let start = Instant::now();
    let total = options.messages;
    let handler = tokio::spawn(async move {
        let mut seen = HashSet::with_capacity(total);
        let mut latencies = Vec::with_capacity(total);
        let (mut duplicates, mut out_of_order, mut highest) = (0usize, 0usize, None::<u64>);
        let mut last_at = Instant::now();
        while seen.len() < total {
            let Some(message) = inbox.recv().await else {
                break;
            };
            let (seq, sent_ns) = parse_payload(&message.payload);
            if seq == u64::MAX {
                continue; // a round-trip probe
            }
            last_at = Instant::now();
            if !seen.insert(seq) {
                duplicates += 1;
                continue;
            }
            if highest.is_some_and(|h| seq < h) {
                out_of_order += 1;
            }
            highest = highest.max(Some(seq));
            latencies.push(
                last_at
                    .duration_since(start)
                    .saturating_sub(Duration::from_nanos(sent_ns)),
            );
        }
        (seen.len(), duplicates, out_of_order, latencies, last_at)
    });

    let to = receiver.peer_id();
    let mut rtts = Vec::with_capacity(options.round_trips);
    for _ in 0..options.round_trips {
        let t = Instant::now();
        let payload = make_payload(u64::MAX, start, payload_bytes);
        sender.send(to, TrafficClass::EVENTS, payload).await?;
        rtts.push(t.elapsed());
    }

    let pipelined_start = Instant::now();
    let mut failed = 0usize;
    let mut pending = FuturesUnordered::new();
    for seq in 0..options.messages as u64 {
        while pending.len() >= options.window {
            if let Some(Err(_)) = pending.next().await {
                failed += 1;
            }
        }
        let payload = make_payload(seq, start, payload_bytes);
        pending.push(sender.submit(to, TrafficClass::EVENTS, payload).await?);
    }
    while let Some(outcome) = pending.next().await {
        if outcome.is_err() {
            failed += 1;
        }
    }
    // Every message is settled; whatever the handler has not got by now
    // (plus a grace period for in-flight hand-over) is lost.
    let handled = tokio::time::timeout(Duration::from_secs(5), handler).await;
    let (delivered, duplicated_at_handler, out_of_order, mut latencies, last_at) = match handled {
        Ok(Ok(result)) => result,
        _ => (0, 0, 0, Vec::new(), Instant::now()),
    };
    let elapsed = last_at.saturating_duration_since(pipelined_start);
    network.shutdown().await;

    let pipe_rtt_us = LatencyUs::of(&mut rtts);
    let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { 0.0 };
    Ok(PipeBenchReport {
        loss: options.loss,
        duplicate: options.duplicate,
        delay_ms: options.delay.as_secs_f64() * 1e3,
        jitter_ms: options.jitter.as_secs_f64() * 1e3,
        messages: options.messages,
        delivered,
        lost: options.messages.saturating_sub(delivered),
        duplicated_at_handler,
        out_of_order,
        failed,
        latency_us: LatencyUs::of(&mut latencies),
        messages_per_s: options.messages as f64 / elapsed.as_secs_f64().max(1e-9),
        rtt_ratio_p50: ratio(pipe_rtt_us.p50, tcp.p50),
        rtt_ratio_p99: ratio(pipe_rtt_us.p99, tcp.p99),
        pipe_rtt_us,
        tcp_rtt_us: tcp,
    })
}

fn make_payload(seq: u64, start: Instant, len: usize) -> Vec<u8> {
    let mut payload = vec![0u8; len];
    payload[..8].copy_from_slice(&seq.to_be_bytes());
    let sent_ns = start.elapsed().as_nanos() as u64;
    payload[8..16].copy_from_slice(&sent_ns.to_be_bytes());
    payload
}

fn parse_payload(payload: &[u8]) -> (u64, u64) {
    let word = |range: std::ops::Range<usize>| {
        payload
            .get(range)
            .and_then(|b| <[u8; 8]>::try_from(b).ok())
            .map(u64::from_be_bytes)
            .unwrap_or(u64::MAX)
    };
    (word(0..8), word(8..16))
}

/// An error of the raw TCP baseline.
fn io_err(source: std::io::Error) -> ColonyError {
    ColonyError::Io {
        path: PathBuf::from("tcp://127.0.0.1 (raw TCP baseline)"),
        source,
    }
}

/// Round trips of a `len`-byte ping-pong over a loopback TCP socket.
async fn raw_tcp_round_trips(count: usize, len: usize) -> Result<LatencyUs, ColonyError> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(io_err)?;
    let addr = listener.local_addr().map_err(io_err)?;
    let echo = tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await?;
        socket.set_nodelay(true)?;
        let mut buf = vec![0u8; len];
        loop {
            if socket.read_exact(&mut buf).await.is_err() {
                return Ok::<_, std::io::Error>(());
            }
            socket.write_all(&buf).await?;
        }
    });
    let mut client = tokio::net::TcpStream::connect(addr).await.map_err(io_err)?;
    client.set_nodelay(true).map_err(io_err)?;
    let mut buf = vec![0u8; len];
    let mut samples = Vec::with_capacity(count);
    for _ in 0..count {
        let t = Instant::now();
        client.write_all(&buf).await.map_err(io_err)?;
        client.read_exact(&mut buf).await.map_err(io_err)?;
        samples.push(t.elapsed());
    }
    drop(client);
    let _ = echo.await;
    Ok(LatencyUs::of(&mut samples))
}

/// What `colony bench modules` measured: fetching a guest module of a
/// given size from its home, against sending the same bytes over raw TCP
/// on loopback in the same run.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ModuleBenchReport {
    /// Size of each module fetched.
    pub module_bytes: usize,
    /// Fetches measured (each of a module nobody fetched before).
    pub runs: usize,
    /// Time from asking to holding the module (asked of its home, sent,
    /// hash checked, compiled, stored), in microseconds.
    pub fetch_us: LatencyUs,
    /// Compiling the same module alone (part of every fetch: a peer keeps
    /// only modules that are guests it can run), in microseconds.
    pub compile_us: LatencyUs,
    /// Sending the same bytes over a raw loopback TCP socket and reading a
    /// one-byte answer, in microseconds.
    pub tcp_us: LatencyUs,
    /// Fetch p50 over raw TCP p50.
    pub fetch_over_tcp_p50: f64,
}

/// `module` grown to `size` bytes by a custom section holding `salt` (so
/// each run's module has its own id): still the same guest.
pub fn padded_module(module: &[u8], size: usize, salt: u64) -> Vec<u8> {
    let name = b"colony-bench-padding";
    let fixed = module.len() + 1 + 5 + 1 + name.len() + 8;
    let padding = size.saturating_sub(fixed);
    let content = 1 + name.len() + 8 + padding;
    let mut out = module.to_vec();
    out.push(0); // custom section
                 // A 5-byte LEB128, so the module's size does not depend on `content`.
    let len = content as u32;
    for i in 0..5 {
        let more = if i < 4 { 0x80 } else { 0 };
        out.push(((len >> (7 * i)) & 0x7f) as u8 | more);
    }
    out.push(name.len() as u8);
    out.extend_from_slice(name);
    out.extend_from_slice(&salt.to_le_bytes());
    out.resize(out.len() + padding, 0);
    out
}

/// Runs the module fetch benchmark: `runs` modules of `size` bytes grown
/// from `module`, each published at one peer of an embedded network of 5
/// and fetched by a peer outside its home.
pub async fn modules(
    module: &[u8],
    size: usize,
    runs: usize,
) -> Result<ModuleBenchReport, ColonyError> {
    let network = LocalNetwork::start(5, |_, config| {
        config.guests = Some(crate::GuestConfig::default());
    })
    .await?;
    let sandbox = colony_wasm::Sandbox::new(colony_wasm::SandboxLimits::default())?;
    let (mut fetches, mut compiles, mut tcp) = (Vec::new(), Vec::new(), Vec::new());
    for run in 0..runs {
        let bytes = padded_module(module, size, run as u64 + 1);
        tcp.push(raw_tcp_transfer(&bytes).await?);
        let compile = Instant::now();
        sandbox.load(&bytes)?;
        compiles.push(compile.elapsed());
        let publisher = &network.peers()[run % 5];
        let published = publisher
            .publish_module(bytes, Duration::from_secs(10))
            .await?;
        let Some(fetcher) = network
            .peers()
            .iter()
            .find(|p| !p.holds_module(&published.id))
        else {
            continue;
        };
        let start = Instant::now();
        fetcher.fetch_module(&published.id).await?;
        fetches.push(start.elapsed());
    }
    network.shutdown().await;
    let (fetch_us, compile_us, tcp_us) = (
        LatencyUs::of(&mut fetches),
        LatencyUs::of(&mut compiles),
        LatencyUs::of(&mut tcp),
    );
    Ok(ModuleBenchReport {
        module_bytes: size,
        runs: fetches.len(),
        fetch_over_tcp_p50: fetch_us.p50 / tcp_us.p50.max(1.0),
        fetch_us,
        compile_us,
        tcp_us,
    })
}

/// Sends `bytes` over a fresh loopback TCP connection and waits for a
/// one-byte answer.
async fn raw_tcp_transfer(bytes: &[u8]) -> Result<Duration, ColonyError> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(io_err)?;
    let addr = listener.local_addr().map_err(io_err)?;
    let len = bytes.len();
    let server = tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await?;
        let mut buf = vec![0u8; len];
        socket.read_exact(&mut buf).await?;
        socket.write_all(&[1]).await?;
        Ok::<_, std::io::Error>(())
    });
    let start = Instant::now();
    let mut socket = tokio::net::TcpStream::connect(addr).await.map_err(io_err)?;
    socket.set_nodelay(true).map_err(io_err)?;
    socket.write_all(bytes).await.map_err(io_err)?;
    let mut answer = [0u8; 1];
    socket.read_exact(&mut answer).await.map_err(io_err)?;
    let elapsed = start.elapsed();
    server
        .await
        .map_err(|_| ColonyError::Stopped)?
        .map_err(io_err)?;
    Ok(elapsed)
}
