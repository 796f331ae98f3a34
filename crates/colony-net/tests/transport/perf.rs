//! Throughput and latency against raw TCP on loopback. Ignored by default;
//! run with `cargo test --release -p colony-net --test transport perf:: -- --ignored --nocapture`.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::common::{connect, within, Node};
use bytes::Bytes;
use colony_net::{NetConfig, NetEvent, Priority};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn config() -> NetConfig {
    NetConfig {
        dns: false,
        ..NetConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "performance measurement; run in release"]
async fn small_frame_throughput() {
    let mut a = Node::start(config()).await;
    let mut b = Node::start(config()).await;
    connect(&mut b, &mut a).await;

    const N: u64 = 500_000;
    const WINDOW: u64 = 8_192;
    let frame = Bytes::from(vec![7u8; 64]);
    let received = b.sender.counters().clone();
    let mut events = std::mem::replace(&mut b.events, tokio::sync::mpsc::channel(1).1);
    let consumer = tokio::spawn(async move {
        let mut n = 0u64;
        while n < N {
            match events.recv().await {
                Some(NetEvent::Frame { .. }) => n += 1,
                Some(other) => panic!("{other:?}"),
                None => break,
            }
        }
        n
    });
    let start = Instant::now();
    let mut sent = 0u64;
    while sent < N {
        let got = received.frames_received.load(Ordering::Relaxed);
        if sent - got < WINDOW {
            for _ in 0..(WINDOW - (sent - got)).min(N - sent) {
                a.sender.send(b.peer, Priority(1), frame.clone());
                sent += 1;
            }
        } else {
            tokio::task::yield_now().await;
        }
    }
    let n = within("all frames", consumer).await.expect("consumer");
    let elapsed = start.elapsed();
    let rate = n as f64 / elapsed.as_secs_f64();
    println!("{n} frames of 64 B in {elapsed:?}: {rate:.0} frames/s");
    println!("sender {:?}", a.sender.counters().snapshot());
    assert_eq!(a.sender.counters().snapshot().queue_full_dropped, 0);
    assert!(rate > 50_000.0, "{rate:.0} frames/s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "performance measurement; run in release"]
async fn round_trip_latency_vs_raw_tcp() {
    const ROUNDS: u32 = 5_000;

    // Raw TCP ping-pong baseline.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let echo = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.expect("accept");
        s.set_nodelay(true).expect("nodelay");
        let mut buf = [0u8; 68];
        while s.read_exact(&mut buf).await.is_ok() {
            if s.write_all(&buf).await.is_err() {
                break;
            }
        }
    });
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    s.set_nodelay(true).expect("nodelay");
    let mut buf = [0u8; 68];
    let start = Instant::now();
    for _ in 0..ROUNDS {
        s.write_all(&buf).await.expect("write");
        s.read_exact(&mut buf).await.expect("read");
    }
    let raw = start.elapsed() / ROUNDS;
    drop(s);
    echo.abort();

    // Through colony-net.
    let mut a = Node::start(config()).await;
    let mut b = Node::start(config()).await;
    connect(&mut b, &mut a).await;
    let b_sender = b.sender.clone();
    let mut b_events = std::mem::replace(&mut b.events, tokio::sync::mpsc::channel(1).1);
    let echo = tokio::spawn(async move {
        while let Some(ev) = b_events.recv().await {
            if let NetEvent::Frame { peer, bytes } = ev {
                b_sender.send(peer, Priority(1), bytes);
            }
        }
    });
    let frame = Bytes::from(vec![1u8; 64]);
    // Warm up: opens both streams.
    for _ in 0..100 {
        a.sender.send(b.peer, Priority(1), frame.clone());
        a.next_frame().await;
    }
    let start = Instant::now();
    for _ in 0..ROUNDS {
        a.sender.send(b.peer, Priority(1), frame.clone());
        a.next_frame().await;
    }
    let net = start.elapsed() / ROUNDS;
    echo.abort();
    let ratio = net.as_secs_f64() / raw.as_secs_f64();
    println!("round trip: raw TCP {raw:?}, colony-net {net:?} ({ratio:.1}x)");
    assert!(net < Duration::from_millis(2), "{net:?}");
}
