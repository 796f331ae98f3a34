//! Frames between real libp2p swarms on loopback.

use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::common::{connect, numbered, seq_of, wait_until, within, Node, Observed};
use bytes::Bytes;
use colony_net::libp2p::PeerId;
use colony_net::{frames_protocol, FaultConfig, NetConfig, NetEvent, Priority};
use futures::AsyncWriteExt;

fn config() -> NetConfig {
    NetConfig {
        dns: false,
        ..NetConfig::default()
    }
}

fn faulty(faults: FaultConfig) -> NetConfig {
    NetConfig { faults, ..config() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn frames_arrive_in_order() {
    let mut a = Node::start(config()).await;
    let mut b = Node::start(config()).await;
    connect(&mut b, &mut a).await;

    const N: u64 = 10_000;
    for i in 0..N {
        a.sender.send(b.peer, Priority(3), numbered(i, 24));
    }
    for i in 0..N {
        let (from, frame) = b.next_frame().await;
        assert_eq!(from, a.peer);
        assert_eq!(frame.len(), 24);
        assert_eq!(seq_of(&frame), i, "frame {i} out of order");
    }
    let sent = a.sender.counters().snapshot();
    assert_eq!(sent.frames_sent, N);
    assert_eq!(sent.bytes_sent, N * 24);
    assert_eq!(sent.queue_full_dropped, 0);
    let got = b.sender.counters().snapshot();
    assert_eq!(got.frames_received, N);
    assert_eq!(got.bytes_received, N * 24);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn both_directions_share_nothing_but_the_connection() {
    let mut a = Node::start(config()).await;
    let mut b = Node::start(config()).await;
    connect(&mut a, &mut b).await;
    for i in 0..100 {
        a.sender.send(b.peer, Priority(1), numbered(i, 8));
        b.sender.send(a.peer, Priority(1), numbered(1000 + i, 8));
    }
    for i in 0..100 {
        assert_eq!(seq_of(&b.next_frame().await.1), i);
        assert_eq!(seq_of(&a.next_frame().await.1), 1000 + i);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn control_frames_overtake_bulk() {
    let mut a = Node::start(config()).await;
    let mut b = Node::start(config()).await;
    connect(&mut b, &mut a).await;

    const LOW: u64 = 5_000;
    let bulk: Vec<Bytes> = (0..LOW).map(|i| numbered(i, 8 * 1024)).collect();
    for frame in bulk {
        a.sender.send(b.peer, Priority(1), frame);
    }
    a.sender
        .send(b.peer, Priority::CONTROL, Bytes::from_static(b"CONTROL"));

    let mut control_at = None;
    let mut low_seen = 0u64;
    for _ in 0..=LOW {
        let (_, frame) = b.next_frame().await;
        if frame.as_ref() == b"CONTROL" {
            control_at = Some(low_seen);
        } else {
            assert_eq!(
                seq_of(&frame),
                low_seen,
                "low-priority frames stay in order"
            );
            low_seen += 1;
        }
    }
    let control_at = control_at.expect("control frame received");
    assert!(
        control_at < LOW / 2,
        "control frame arrived after {control_at} of {LOW} low-priority frames"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn injected_loss() {
    let mut a = Node::start(faulty(FaultConfig {
        loss: 0.3,
        seed: 42,
        ..FaultConfig::default()
    }))
    .await;
    let mut b = Node::start(config()).await;
    connect(&mut b, &mut a).await;

    const N: u64 = 5_000;
    for i in 0..N {
        a.sender.send(b.peer, Priority(1), numbered(i, 16));
    }
    let drops = a.sender.counters().injected_drops.load(Ordering::Relaxed);
    assert!(
        (N / 5..=2 * N / 5).contains(&drops),
        "dropped {drops} of {N}, expected 20-40%"
    );
    let mut last = None;
    for _ in 0..N - drops {
        let seq = seq_of(&b.next_frame().await.1);
        assert!(last.is_none_or(|l| seq > l), "loss alone never reorders");
        last = Some(seq);
    }
    assert_eq!(b.sender.counters().snapshot().frames_received, N - drops);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn injected_duplicates() {
    let mut a = Node::start(faulty(FaultConfig {
        duplicate: 0.5,
        seed: 7,
        ..FaultConfig::default()
    }))
    .await;
    let mut b = Node::start(config()).await;
    connect(&mut b, &mut a).await;

    const N: u64 = 2_000;
    for i in 0..N {
        a.sender.send(b.peer, Priority(1), numbered(i, 16));
    }
    let dups = a
        .sender
        .counters()
        .injected_duplicates
        .load(Ordering::Relaxed);
    assert!(dups > N / 4 && dups < 3 * N / 4, "{dups} duplicates of {N}");
    let mut seen = vec![0u32; N as usize];
    for _ in 0..N + dups {
        seen[seq_of(&b.next_frame().await.1) as usize] += 1;
    }
    assert!(seen.iter().all(|&c| c == 1 || c == 2));
    assert_eq!(seen.iter().filter(|&&c| c == 2).count() as u64, dups);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn injected_jitter_reorders() {
    let mut a = Node::start(faulty(FaultConfig {
        delay: Duration::from_millis(1),
        jitter: Duration::from_millis(5),
        seed: 3,
        ..FaultConfig::default()
    }))
    .await;
    let mut b = Node::start(config()).await;
    connect(&mut b, &mut a).await;

    const N: u64 = 500;
    for i in 0..N {
        a.sender.send(b.peer, Priority(1), numbered(i, 16));
    }
    assert_eq!(
        a.sender.counters().injected_delays.load(Ordering::Relaxed),
        N
    );
    let mut order = Vec::new();
    for _ in 0..N {
        order.push(seq_of(&b.next_frame().await.1));
    }
    let reorderings = order.windows(2).filter(|w| w[1] < w[0]).count();
    assert!(reorderings > 0, "jitter should reorder some frames");
    order.sort_unstable();
    assert_eq!(
        order,
        (0..N).collect::<Vec<_>>(),
        "every frame arrives once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn oversized_frame_closes_only_that_stream() {
    let mut a = Node::start(config()).await;
    let mut b = Node::start(config()).await;
    connect(&mut b, &mut a).await;
    let protocol = frames_protocol(&a.config.network);
    let mut raw = a.control.clone();

    // A length prefix of 100 MB: rejected before any payload is read.
    let mut stream = within("raw stream", raw.open_stream(b.peer, protocol.clone()))
        .await
        .expect("open raw stream");
    stream
        .write_all(&100_000_000u32.to_be_bytes())
        .await
        .expect("write prefix");
    stream.flush().await.expect("flush");
    let counters = b.sender.counters().clone();
    wait_until("oversized frame rejected", || {
        counters.oversized_rejected.load(Ordering::Relaxed) == 1
    })
    .await;

    // A zero-length frame is rejected the same way.
    let mut stream = within("raw stream", raw.open_stream(b.peer, protocol.clone()))
        .await
        .expect("open raw stream");
    stream.write_all(&[0, 0, 0, 0]).await.expect("write prefix");
    stream.flush().await.expect("flush");
    wait_until("empty frame rejected", || {
        counters.oversized_rejected.load(Ordering::Relaxed) == 2
    })
    .await;

    // A fresh stream from the same peer still delivers.
    let mut stream = within("raw stream", raw.open_stream(b.peer, protocol))
        .await
        .expect("open raw stream");
    stream
        .write_all(&[0, 0, 0, 5, b'h', b'e', b'l', b'l', b'o'])
        .await
        .expect("write frame");
    stream.flush().await.expect("flush");
    let (from, frame) = b.next_frame().await;
    assert_eq!(from, a.peer);
    assert_eq!(frame.as_ref(), b"hello");

    // And so does the regular writer.
    a.sender.send(b.peer, Priority(1), numbered(9, 8));
    assert_eq!(seq_of(&b.next_frame().await.1), 9);
    assert_eq!(counters.snapshot().oversized_rejected, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn oversized_frames_are_not_sent() {
    let a = Node::start(NetConfig {
        max_frame_bytes: 100,
        ..config()
    })
    .await;
    a.sender
        .send(PeerId::random(), Priority(1), Bytes::from(vec![1u8; 101]));
    a.sender.send(PeerId::random(), Priority(1), Bytes::new());
    let c = a.sender.counters().snapshot();
    assert_eq!(c.oversized_dropped, 2);
    assert_eq!(c.frames_sent, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn other_network_is_unreachable() {
    let mut a = Node::start(NetConfig {
        network: "alpha".into(),
        ..config()
    })
    .await;
    let mut b = Node::start(NetConfig {
        network: "beta".into(),
        ..config()
    })
    .await;
    connect(&mut b, &mut a).await;

    a.sender.send(b.peer, Priority(1), numbered(1, 8));
    match within("unreachable", a.events.recv()).await {
        Some(NetEvent::Unreachable { peer, reason }) => {
            assert_eq!(peer, b.peer);
            // The stream is refused on the connection ("does not
            // support"), or the identify gate closes the connection first
            // (the request is cancelled, its answer channel dropped with
            // the connection, or a new dial has no address).
            assert!(
                [
                    "does not support",
                    "no addresses",
                    "canceled",
                    "receiver is gone"
                ]
                .iter()
                .any(|why| reason.contains(why)),
                "reason: {reason}"
            );
        }
        other => panic!("expected Unreachable, got {other:?}"),
    }
    let c = a.sender.counters().snapshot();
    assert_eq!(c.unreachable_reported, 1);
    assert_eq!(c.frames_sent, 0);
    assert_eq!(b.sender.counters().snapshot().frames_received, 0);
    assert!(b.events.try_recv().is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unknown_peer_is_unreachable_then_backs_off() {
    let mut a = Node::start(config()).await;
    let nobody = PeerId::random();
    a.sender.send(nobody, Priority(1), numbered(1, 8));
    match within("unreachable", a.events.recv()).await {
        Some(NetEvent::Unreachable { peer, .. }) => assert_eq!(peer, nobody),
        other => panic!("expected Unreachable, got {other:?}"),
    }
    // Within the 50 ms backoff, frames are dropped and counted.
    a.sender.send(nobody, Priority(1), numbered(2, 8));
    let c = a.sender.counters().snapshot();
    assert!(c.unreachable_dropped >= 1, "{c:?}");
    // After forget, the next send starts afresh (and fails afresh).
    a.sender.forget(&nobody);
    a.sender.send(nobody, Priority(1), numbered(3, 8));
    let counters = a.sender.counters().clone();
    wait_until("second failure", || {
        counters.stream_errors.load(Ordering::Relaxed) >= 2
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn private_network_needs_the_key() {
    let key = [7u8; 32];
    // A wrong key is only noticed when the handshake times out.
    let quick = || NetConfig {
        handshake_timeout: Duration::from_secs(1),
        ..config()
    };
    let private = || NetConfig {
        psk: Some(key),
        ..quick()
    };
    let mut a = Node::start(private()).await;
    let mut b = Node::start(private()).await;
    let mut c = Node::start(NetConfig {
        psk: Some([8u8; 32]),
        ..quick()
    })
    .await;

    connect(&mut b, &mut a).await;
    a.sender.send(b.peer, Priority(1), numbered(5, 8));
    let (from, frame) = b.next_frame().await;
    assert_eq!(from, a.peer);
    assert_eq!(seq_of(&frame), 5);

    c.dial(a.addr.clone());
    let failed = c
        .observe("dial with the wrong key fails", |o| {
            matches!(o, Observed::DialFailed(..) | Observed::Connected(_))
        })
        .await;
    assert!(matches!(failed, Observed::DialFailed(..)), "{failed:?}");

    // A node without any key cannot connect either.
    let mut d = Node::start(quick()).await;
    d.dial(a.addr.clone());
    let failed = d
        .observe("dial without a key fails", |o| {
            matches!(o, Observed::DialFailed(..) | Observed::Connected(_))
        })
        .await;
    assert!(matches!(failed, Observed::DialFailed(..)), "{failed:?}");
}
