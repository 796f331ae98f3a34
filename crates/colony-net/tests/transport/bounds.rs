//! What a hostile peer can make a node hold: buffers, streams, connections.
//! Each attacker here is a libp2p peer writing raw bytes, not a Colony peer.

use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::common::{connect, numbered, seq_of, wait_until, within, Node, Observed};
use bytes::Bytes;
use colony_net::libp2p::swarm::{dummy, SwarmEvent};
use colony_net::libp2p::{noise, tcp, yamux, Multiaddr, PeerId, Stream, SwarmBuilder};
use colony_net::{frames_protocol, NetConfig, NetEvent, Priority};
use futures::{AsyncWriteExt, StreamExt};

fn config() -> NetConfig {
    NetConfig {
        dns: false,
        ..NetConfig::default()
    }
}

/// Opens a raw frames stream from `from` to `to`.
async fn raw_stream(from: &Node, to: PeerId) -> Stream {
    let mut control = from.control.clone();
    within(
        "raw frames stream",
        control.open_stream(to, frames_protocol(&from.config.network)),
    )
    .await
    .expect("open raw frames stream")
}

/// Opens a raw frames stream from `from` to `to` and waits until `to`
/// took it (accepted or refused it): libp2p-stream drops an inbound
/// stream that arrives while its acceptor has not yet taken the previous
/// one, so streams a test writes to are opened one at a time.
async fn taken_raw_stream(from: &Node, to: &Node) -> Stream {
    let counters = to.sender.counters().clone();
    let taken = move || {
        counters.inbound_streams_accepted.load(Ordering::Relaxed)
            + counters.inbound_streams_refused.load(Ordering::Relaxed)
    };
    let before = taken();
    let stream = raw_stream(from, to.peer).await;
    wait_until("the victim to take the stream", || taken() > before).await;
    stream
}

async fn write(stream: &mut Stream, bytes: &[u8]) {
    stream.write_all(bytes).await.expect("write");
    stream.flush().await.expect("flush");
}

/// A length prefix announcing `len` payload bytes.
fn prefix(len: u32) -> [u8; 4] {
    len.to_be_bytes()
}

/// The next frame `victim` receives within `wait`, if any.
async fn frame_within(victim: &mut Node, wait: Duration) -> Option<(PeerId, Bytes)> {
    match tokio::time::timeout(wait, victim.events.recv()).await {
        Ok(Some(NetEvent::Frame { peer, bytes })) => Some((peer, bytes)),
        Ok(other) => panic!("expected a frame, got {other:?}"),
        Err(_) => None,
    }
}

/// Calls `send(attempt)` until `victim` receives a frame, once a second
/// within the deadline, as the pipes above retransmit: libp2p-stream drops
/// an inbound stream that arrives while its acceptor has not yet taken the
/// one before (its queue holds one), and what was written to it is lost.
async fn deliver_retrying<F, Fut>(victim: &mut Node, mut send: F) -> (PeerId, Bytes)
where
    F: FnMut(u64) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    within("a frame, sent again each second", async {
        for attempt in 0u64.. {
            send(attempt).await;
            if let Some(got) = frame_within(victim, Duration::from_secs(1)).await {
                return got;
            }
        }
        unreachable!("the attempts never end")
    })
    .await
}

/// Sends `honest`'s numbered frames of `len` bytes to `victim` until one
/// arrives (see [`deliver_retrying`]); returns it.
async fn honest_frame(victim: &mut Node, honest: &Node, len: usize) -> Bytes {
    let to = victim.peer;
    let (from, frame) = deliver_retrying(victim, |attempt| {
        honest.sender.send(to, Priority(1), numbered(attempt, len));
        async {}
    })
    .await;
    assert_eq!(from, honest.peer);
    frame
}

/// Streams announcing 1 MiB frames and sending a few bytes must not take the
/// buffer budget: with room for one largest frame and the small read room of
/// each stream (far less than the 32 MiB announced), a real frame from
/// another peer still arrives, and so does one of the announced frames once
/// it is sent in full.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn announced_lengths_cost_nothing_until_sent() {
    let victim_config = NetConfig {
        max_inbound_buffered_bytes: 1024 * 1024 + 512 * 1024,
        max_inbound_streams_per_peer: 64,
        // The attacker's streams are held for the whole test, not closed
        // as idle: only the byte budget is at stake.
        inbound_stream_idle_timeout: Duration::from_secs(120),
        ..config()
    };
    let mut victim = Node::start(victim_config).await;
    let mut attacker = Node::start(config()).await;
    let mut honest = Node::start(config()).await;
    connect(&mut attacker, &mut victim).await;
    connect(&mut honest, &mut victim).await;
    let victim_peer = victim.peer;

    const MIB: u32 = 1024 * 1024;
    let mut streams = Vec::new();
    for _ in 0..32 {
        let mut stream = raw_stream(&attacker, victim.peer).await;
        // libp2p-stream drops inbound streams arriving faster than they are
        // accepted; a write to such a stream fails, which is fine here.
        let _ = stream.write_all(&prefix(MIB)).await;
        let _ = stream.write_all(&[7u8; 100]).await;
        let _ = stream.flush().await;
        streams.push(stream);
    }

    let frame = honest_frame(&mut victim, &honest, 200_000).await;
    assert_eq!(frame.len(), 200_000);
    drop(frame);

    // A largest frame, sent in full, is delivered too.
    let (from, frame) = deliver_retrying(&mut victim, |_| {
        let attacker = &attacker;
        async move {
            let mut stream = raw_stream(attacker, victim_peer).await;
            let _ = stream.write_all(&prefix(MIB)).await;
            let _ = stream.write_all(&vec![7u8; MIB as usize]).await;
            let _ = stream.flush().await;
            // Kept open: the frame is read before the stream ends.
            tokio::spawn(async move {
                tokio::time::sleep(crate::common::DEADLINE).await;
                drop(stream);
            });
        }
    })
    .await;
    assert_eq!(from, attacker.peer);
    assert_eq!(frame.len(), MIB as usize);
    let c = victim.sender.counters().snapshot();
    assert_eq!(c.inbound_budget_closed, 0, "{c:?}");
    assert_eq!(c.inbound_streams_idle_closed, 0, "{c:?}");
}

fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .unwrap_or(0)
}

/// 250 streams each announcing a 1 MiB frame and sending 100 bytes: the
/// node's memory grows by what arrived, not by the 250 MiB announced.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn announced_lengths_do_not_raise_rss() {
    // Neither the per-peer stream cap nor the byte budget may be what
    // protects here: only growing buffers as bytes arrive.
    let mut victim = Node::start(NetConfig {
        max_inbound_streams_per_peer: 64,
        max_inbound_buffered_bytes: 1 << 30,
        ..config()
    })
    .await;
    let mut attackers = Vec::new();
    for _ in 0..5 {
        let mut attacker = Node::start(config()).await;
        connect(&mut attacker, &mut victim).await;
        attackers.push(attacker);
    }
    let mut honest = Node::start(config()).await;
    connect(&mut honest, &mut victim).await;
    let before = rss_bytes();
    let mut streams = Vec::new();
    for attacker in &attackers {
        for _ in 0..50 {
            let mut stream = raw_stream(attacker, victim.peer).await;
            let _ = stream.write_all(&prefix(1024 * 1024)).await;
            let _ = stream.write_all(&[7u8; 100]).await;
            let _ = stream.flush().await;
            streams.push(stream);
        }
    }
    // Let the readers take what was sent (a real frame behind them proves
    // the victim has read its streams).
    honest_frame(&mut victim, &honest, 8).await;
    let grown = rss_bytes().saturating_sub(before);
    assert!(
        grown < 64 * 1024 * 1024,
        "RSS grew by {} MiB for 250 streams announcing 1 MiB each",
        grown / (1024 * 1024)
    );
}

/// Large frames delivered but not yet consumed stay in the byte budget: a
/// receiver that falls behind slows its senders down instead of queueing
/// without bound, and nothing is lost once it catches up.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unconsumed_large_frames_hold_the_budget() {
    let mut victim = Node::start(NetConfig {
        max_inbound_buffered_bytes: 2 * 1024 * 1024 + 16 * 1024,
        ..config()
    })
    .await;
    let mut sender = Node::start(config()).await;
    connect(&mut sender, &mut victim).await;
    const N: u64 = 10;
    for i in 0..N {
        sender
            .sender
            .send(victim.peer, Priority(1), numbered(i, 512 * 1024));
    }
    let counters = victim.sender.counters().clone();
    wait_until("the budget to fill", || {
        counters.frames_received.load(Ordering::Relaxed) >= 3
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let held = counters.frames_received.load(Ordering::Relaxed);
    assert!(
        held <= 4,
        "{held} frames of 512 KiB delivered into a 2 MiB budget"
    );
    for i in 0..N {
        assert_eq!(seq_of(&victim.next_frame().await.1), i);
    }
    assert_eq!(counters.snapshot().inbound_budget_closed, 0);
}

/// One peer gets at most `max_inbound_streams_per_peer` streams; the others
/// keep theirs.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn inbound_streams_are_capped_per_peer() {
    let mut victim = Node::start(NetConfig {
        max_inbound_streams_per_peer: 4,
        ..config()
    })
    .await;
    let mut attacker = Node::start(config()).await;
    let mut honest = Node::start(config()).await;
    connect(&mut attacker, &mut victim).await;
    connect(&mut honest, &mut victim).await;

    // One stream at a time, each carrying one frame: every stream is either
    // read (its frame counted) or refused (counted).
    let counters = victim.sender.counters().clone();
    let outcomes = || {
        counters.frames_received.load(Ordering::Relaxed)
            + counters.inbound_streams_refused.load(Ordering::Relaxed)
    };
    let mut streams = Vec::new();
    for i in 0..12u64 {
        let mut stream = raw_stream(&attacker, victim.peer).await;
        let mut bytes = prefix(8).to_vec();
        bytes.extend_from_slice(&numbered(i, 8));
        // Refused streams may fail to write; that is the point.
        let _ = stream.write_all(&bytes).await;
        let _ = stream.flush().await;
        streams.push(stream);
        wait_until("the stream read or refused", || outcomes() == i + 1).await;
    }
    let c = counters.snapshot();
    assert_eq!(c.frames_received, 4, "{c:?}");
    assert_eq!(c.inbound_streams_refused, 8, "{c:?}");

    honest
        .sender
        .send(victim.peer, Priority(1), numbered(99, 8));
    loop {
        let (from, frame) = victim.next_frame().await;
        if from == honest.peer {
            assert_eq!(seq_of(&frame), 99);
            break;
        }
    }
    // The refusals were logged at most once (rate limited) and counted.
    assert!(counters.warnings_suppressed.load(Ordering::Relaxed) >= 7);
}

/// A stream that brings nothing, or stops inside a frame, is closed after the
/// idle timeout; a stream resting between frames stays open.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn idle_inbound_streams_are_closed() {
    let idle = Duration::from_secs(1);
    let mut victim = Node::start(NetConfig {
        inbound_stream_idle_timeout: idle,
        ..config()
    })
    .await;
    let mut attacker = Node::start(config()).await;
    connect(&mut attacker, &mut victim).await;

    let _silent = taken_raw_stream(&attacker, &victim).await;
    let mut stalled = taken_raw_stream(&attacker, &victim).await;
    write(&mut stalled, &prefix(1000)).await;
    write(&mut stalled, &[1u8; 10]).await;
    let mut resting = taken_raw_stream(&attacker, &victim).await;
    let mut bytes = prefix(8).to_vec();
    bytes.extend_from_slice(&numbered(1, 8));
    write(&mut resting, &bytes).await;
    assert_eq!(seq_of(&victim.next_frame().await.1), 1);

    let counters = victim.sender.counters().clone();
    wait_until("two idle streams closed", || {
        counters.inbound_streams_idle_closed.load(Ordering::Relaxed) == 2
    })
    .await;
    // Resting longer than the idle timeout is fine between frames.
    tokio::time::sleep(idle * 2).await;
    let mut bytes = prefix(8).to_vec();
    bytes.extend_from_slice(&numbered(2, 8));
    write(&mut resting, &bytes).await;
    assert_eq!(seq_of(&victim.next_frame().await.1), 2);
    assert_eq!(
        counters.inbound_streams_idle_closed.load(Ordering::Relaxed),
        2
    );
}

/// A libp2p peer that never runs identify is disconnected after the identify
/// timeout; one of another network at once; a peer of this network stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn silent_and_foreign_peers_are_disconnected() {
    let mut victim = Node::start(NetConfig {
        identify_timeout: Duration::from_millis(500),
        ..config()
    })
    .await;
    let mut honest = Node::start(config()).await;
    connect(&mut honest, &mut victim).await;

    // Silent: noise and yamux, no identify.
    let mut silent = SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_tcp(
            tcp::Config::default(),
            noise::Config::new,
            yamux::Config::default,
        )
        .expect("transport")
        .with_behaviour(|_| dummy::Behaviour)
        .expect("behaviour")
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
        .build();
    let silent_peer = *silent.local_peer_id();
    silent.dial(victim.addr.clone()).expect("dial");
    let silent_task = tokio::spawn(async move {
        loop {
            if let SwarmEvent::ConnectionClosed { .. } = silent.select_next_some().await {
                return;
            }
        }
    });
    victim
        .observe(
            "silent peer connected",
            |o| matches!(o, Observed::Connected(p) if *p == silent_peer),
        )
        .await;
    victim
        .observe(
            "silent peer disconnected",
            |o| matches!(o, Observed::Disconnected(p) if *p == silent_peer),
        )
        .await;
    within("silent peer sees the close", silent_task)
        .await
        .expect("silent task");

    // Foreign: a Colony peer of another network, disconnected long before a
    // 30 s deadline would pass.
    let mut victim_slow = Node::start(NetConfig {
        identify_timeout: Duration::from_secs(30),
        ..config()
    })
    .await;
    let mut foreign = Node::start(NetConfig {
        network: "elsewhere".into(),
        ..config()
    })
    .await;
    connect(&mut foreign, &mut victim_slow).await;
    let foreign_peer = foreign.peer;
    tokio::time::timeout(
        Duration::from_secs(5),
        victim_slow.observe(
            "foreign peer disconnected",
            |o| matches!(o, Observed::Disconnected(p) if *p == foreign_peer),
        ),
    )
    .await
    .expect("foreign peer disconnected within 5 s");

    // The honest peer was never disconnected and still delivers.
    honest.sender.send(victim.peer, Priority(1), numbered(5, 8));
    assert_eq!(seq_of(&victim.next_frame().await.1), 5);
    let honest_peer = honest.peer;
    while let Ok(seen) = victim.observed.try_recv() {
        assert!(
            !matches!(seen, Observed::Disconnected(p) if p == honest_peer),
            "honest peer was disconnected"
        );
    }
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count())
        .unwrap_or(0)
}

fn tcp_target(addr: &Multiaddr) -> std::net::SocketAddr {
    use colony_net::libp2p::multiaddr::Protocol;
    let mut ip = None;
    let mut port = None;
    for p in addr.iter() {
        match p {
            Protocol::Ip4(a) => ip = Some(std::net::IpAddr::V4(a)),
            Protocol::Tcp(p) => port = Some(p),
            _ => {}
        }
    }
    std::net::SocketAddr::new(ip.expect("ip4"), port.expect("tcp port"))
}

/// TCP connections that never handshake hold at most
/// `max_pending_incoming` descriptors of the node, and only for the
/// handshake timeout; a real peer connects once they are gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn half_open_connections_are_bounded() {
    let mut victim = Node::start(NetConfig {
        max_pending_incoming: 8,
        handshake_timeout: Duration::from_secs(1),
        ..config()
    })
    .await;
    let before = open_fds();
    let target = tcp_target(&victim.addr);
    const N: usize = 300;
    let mut conns = Vec::with_capacity(N);
    for _ in 0..N {
        conns.push(
            within("tcp connect", tokio::net::TcpStream::connect(target))
                .await
                .expect("tcp connect"),
        );
    }
    let mut refused = 0;
    victim
        .observe("all but 8 connections refused", |o| {
            if matches!(o, Observed::IncomingFailed(_)) {
                refused += 1;
            }
            refused >= N - 8
        })
        .await;
    // Ours (N) plus the node's (at most 8 pending) plus a little slack.
    let held = open_fds().saturating_sub(before);
    assert!(
        held <= N + 8 + 16,
        "{held} descriptors for {N} half-open connections"
    );

    // After the handshake timeout the pending ones are closed too; a real
    // peer connects even though the attacker keeps its sockets open.
    let mut refused_total = refused;
    victim
        .observe("the pending ones time out", |o| {
            if matches!(o, Observed::IncomingFailed(_)) {
                refused_total += 1;
            }
            refused_total >= N
        })
        .await;
    let mut honest = Node::start(config()).await;
    connect(&mut honest, &mut victim).await;
    drop(conns);
}

/// Captures log lines of the current thread.
#[derive(Clone, Default)]
struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A peer starting a network alone does not warn that Kademlia has no
/// known peers to bootstrap from.
#[tokio::test(flavor = "current_thread")]
async fn a_lone_peer_does_not_warn_about_bootstrap() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("warn"))
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let mut swarm = colony_net::build_swarm(
        colony_net::libp2p::identity::Keypair::generate_ed25519(),
        &config(),
    )
    .expect("swarm");
    swarm
        .listen_on("/ip4/127.0.0.1/tcp/0".parse().expect("multiaddr"))
        .expect("listen");
    // Kademlia bootstraps 500 ms after a new listen address when it has no
    // connection; drive the swarm well past that.
    let until = tokio::time::Instant::now() + Duration::from_millis(1500);
    let mut listening = false;
    while let Ok(event) = tokio::time::timeout_at(until, swarm.select_next_some()).await {
        listening |= matches!(event, SwarmEvent::NewListenAddr { .. });
    }
    assert!(listening);
    let logs =
        String::from_utf8_lossy(&captured.0.lock().unwrap_or_else(|e| e.into_inner())).into_owned();
    assert!(!logs.contains("bootstrap"), "{logs}");
}
