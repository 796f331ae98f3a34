//! Reliable pipes end to end, through the public API of `colony`: real peers
//! on loopback, libp2p in between, faults injected by the network layer.
//!
//! Every wait has a deadline; nothing sleeps and hopes. Timings are printed
//! with `eprintln!` (visible with `--nocapture`).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::{
    joined, median, quantile, start_peer, state_of, wait_for_state, within, TempDir,
};
use colony::{
    FaultConfig, MemberState, Peer, PendingReceipt, PipeConfig, PipeError, Receipt, TrafficClass,
};
use futures::stream::FuturesUnordered;
use futures::StreamExt;

/// Faults of test 1: lose 30 % of frames, duplicate 5 % of the rest, and
/// reorder them with up to 5 ms of jitter.
fn lossy(seed: u64) -> FaultConfig {
    FaultConfig {
        loss: 0.3,
        duplicate: 0.05,
        delay: Duration::ZERO,
        jitter: Duration::from_millis(5),
        seed,
    }
}

fn payload_seq(payload: &[u8]) -> u64 {
    u64::from_be_bytes(
        payload
            .try_into()
            .unwrap_or_else(|_| panic!("payload of {} bytes, expected 8", payload.len())),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_messages_under_loss_duplication_reordering_arrive_exactly_once_in_order() {
    const MESSAGES: u64 = 10_000;
    const OUTSTANDING: usize = 4096;

    let receiver = start_peer("lossy-recv", &[], |c| c.net.faults = lossy(11)).await;
    let sender = start_peer("lossy-send", &receiver.info().listen_addrs, |c| {
        c.net.faults = lossy(12)
    })
    .await;
    let join_started = Instant::now();
    joined(&receiver, &sender).await;
    eprintln!("lossy: joined in {:?}", join_started.elapsed());

    // The receiving application: exactly 0..MESSAGES, in order, then silence.
    let mut inbox = receiver.take_inbox().expect("inbox is taken once");
    let from = sender.peer_id();
    let app = tokio::spawn(async move {
        for expected in 0..MESSAGES {
            let message = inbox.recv().await.expect("receiver stopped early");
            assert_eq!(message.from, from, "message from an unexpected peer");
            assert_eq!(message.class, TrafficClass::EVENTS);
            let got = payload_seq(&message.payload);
            assert_eq!(
                got, expected,
                "the application got message {got} when {expected} was due \
                 (lost, duplicated or out of order)"
            );
            assert_eq!(message.seq, expected, "channel number of message {got}");
        }
        let extra = tokio::time::timeout(Duration::from_millis(500), inbox.recv()).await;
        match extra {
            Err(_) => {}
            Ok(Some(message)) => panic!(
                "a message arrived after all {MESSAGES}: seq {} payload {:?}",
                message.seq, message.payload
            ),
            Ok(None) => panic!("the receiver's inbox closed"),
        }
    });

    let to = receiver.peer_id();
    let started = Instant::now();
    let settle = |outcome: (u64, Result<Receipt, PipeError>), max_tx: &mut u32| {
        let (seq, result) = outcome;
        let receipt = result.unwrap_or_else(|e| panic!("message {seq} failed: {e:?}"));
        assert_eq!(receipt.seq, seq, "receipt of message {seq} names another");
        *max_tx = (*max_tx).max(receipt.transmissions);
    };
    let mut max_transmissions = 0u32;
    within(
        "all receipts of the lossy run",
        Duration::from_secs(25),
        async {
            let mut pending = FuturesUnordered::new();
            for seq in 0..MESSAGES {
                while pending.len() >= OUTSTANDING {
                    let outcome = pending.next().await.expect("pending is not empty");
                    settle(outcome, &mut max_transmissions);
                }
                let receipt = sender
                    .submit(to, TrafficClass::EVENTS, seq.to_be_bytes().to_vec())
                    .await
                    .unwrap_or_else(|e| panic!("submit of message {seq} refused: {e:?}"));
                pending.push(async move { (seq, receipt.await) });
            }
            while let Some(outcome) = pending.next().await {
                settle(outcome, &mut max_transmissions);
            }
        },
    )
    .await;
    let receipts_after = started.elapsed();
    within(
        "the receiving application to get every message",
        Duration::from_secs(10),
        app,
    )
    .await
    .unwrap_or_else(|panic| std::panic::resume_unwind(panic.into_panic()));

    let receiver_status = receiver.status().await.expect("receiver running");
    let sender_status = sender.status().await.expect("sender running");
    eprintln!(
        "lossy: {MESSAGES} receipts in {receipts_after:?} ({:.0} msg/s), most transmissions \
         of one message {max_transmissions}; sender {:?}; receiver {:?}; sender net {:?}",
        MESSAGES as f64 / receipts_after.as_secs_f64(),
        sender_status.pipes,
        receiver_status.pipes,
        sender_status.net,
    );
    assert!(
        receiver_status.pipes.duplicates_suppressed > 0,
        "no duplicate was suppressed: faults were not exercised ({:?})",
        receiver_status.pipes
    );
    assert!(
        sender_status.pipes.retransmissions > 0,
        "nothing was retransmitted: faults were not exercised ({:?})",
        sender_status.pipes
    );
    assert_eq!(sender_status.pipes.messages_failed, 0);
    assert_eq!(receiver_status.pipes.messages_delivered, MESSAGES);

    sender.shutdown().await;
    receiver.shutdown().await;
}

/// A receipt with whether it was submitted after the crash and its index.
async fn tagged(
    after: bool,
    i: u64,
    receipt: PendingReceipt,
) -> (bool, u64, Result<Receipt, PipeError>) {
    (after, i, receipt.await)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sending_to_a_dead_peer_fails_with_peer_dead_within_the_deadline() {
    const SEND_TIMEOUT: Duration = Duration::from_secs(10);
    const SETTLE_WITHIN: Duration = Duration::from_secs(5);
    const BEFORE: u64 = 1000;
    const AFTER: u64 = 100;

    let sender = start_peer("crash-sender", &[], |c| c.send_timeout = SEND_TIMEOUT).await;

    // The victim runs in a runtime of its own, on its own thread, so that it
    // can be crashed: shutting that runtime down drops its tasks and closes
    // its sockets without a word (unlike dropping its handles or
    // `shutdown()`, which both leave gracefully).
    let victim_runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("victim")
        .enable_all()
        .build()
        .expect("victim runtime");
    let victim_dir = TempDir::new("crash-victim");
    let victim_config = crate::common::config(&victim_dir, &sender.info().listen_addrs);
    let victim_received = Arc::new(AtomicU64::new(0));
    let received = victim_received.clone();
    let victim = victim_runtime
        .spawn(async move {
            let peer = Peer::start(victim_config).await?;
            let mut inbox = peer.take_inbox().expect("inbox is taken once");
            tokio::spawn(async move {
                while inbox.recv().await.is_some() {
                    received.fetch_add(1, Ordering::Relaxed);
                }
            });
            Ok::<_, colony::ColonyError>(peer)
        })
        .await
        .expect("victim start task")
        .expect("victim starts");
    let victim_id = victim.peer_id();
    joined(&sender, &victim).await;
    sender
        .send(victim_id, TrafficClass::EVENTS, b"still alive".to_vec())
        .await
        .expect("a send to a live peer succeeds");

    // A burst submitted just before the crash, mostly still in flight...
    let mut pending = FuturesUnordered::new();
    for i in 0..BEFORE {
        let receipt = sender
            .submit(victim_id, TrafficClass::EVENTS, vec![1; 1024])
            .await
            .expect("submit before the crash");
        pending.push(tagged(false, i, receipt));
    }
    // ...the crash...
    victim_runtime.shutdown_background();
    let crashed_at = Instant::now();
    // ...and messages submitted right after it, before anyone can know.
    for i in 0..AFTER {
        let receipt = sender
            .submit(victim_id, TrafficClass::EVENTS, vec![2; 1024])
            .await
            .expect("submit after the crash");
        pending.push(tagged(true, i, receipt));
    }

    let (mut acked_before, mut dead_before, mut dead_after) = (0u64, 0u64, 0u64);
    let mut last_settled = crashed_at;
    within(
        "every message to the crashed peer to settle",
        SETTLE_WITHIN,
        async {
            while let Some((after, i, result)) = pending.next().await {
                last_settled = Instant::now();
                match (after, result) {
                    (false, Ok(_)) => acked_before += 1,
                    (_, Err(PipeError::PeerDead { peer })) => {
                        assert_eq!(
                            peer,
                            victim_id.to_string(),
                            "PeerDead names another peer: {peer}"
                        );
                        if after {
                            dead_after += 1;
                        } else {
                            dead_before += 1;
                        }
                    }
                    (after, other) => panic!(
                        "message {i} submitted {} the crash ended in {other:?}, expected PeerDead",
                        if after { "after" } else { "before" }
                    ),
                }
            }
        },
    )
    .await;
    let settled_after = last_settled.duration_since(crashed_at);
    assert_eq!(
        dead_after, AFTER,
        "every message sent after the crash fails"
    );
    assert_eq!(acked_before + dead_before, BEFORE);

    // The view says dead (a crash), not left (a goodbye).
    let (state, _) = wait_for_state(
        &sender,
        victim_id,
        &[MemberState::Dead, MemberState::Left],
        SETTLE_WITHIN.saturating_sub(crashed_at.elapsed()),
    )
    .await;
    assert_eq!(state, MemberState::Dead, "a crashed peer is dead, not left");

    // Once it is known dead, a send fails at once.
    let t = Instant::now();
    let late = within(
        "a send to a known-dead peer",
        Duration::from_secs(1),
        sender.send(victim_id, TrafficClass::BULK, b"too late".to_vec()),
    )
    .await;
    let late_after = t.elapsed();
    assert!(
        matches!(late, Err(PipeError::PeerDead { .. })),
        "a send to a known-dead peer ended in {late:?}"
    );
    eprintln!(
        "crash: before the crash {acked_before} acked, {dead_before} PeerDead; after it \
         {dead_after} PeerDead; all settled {settled_after:?} after the crash (send timeout \
         {SEND_TIMEOUT:?}); a send to the known-dead peer failed in {late_after:?}; the \
         victim's application got {} messages",
        victim_received.load(Ordering::Relaxed)
    );
    assert!(
        settled_after < SETTLE_WITHIN,
        "settled {settled_after:?} after the crash"
    );
    assert!(late_after < Duration::from_millis(500));

    sender.shutdown().await;
    drop(victim);
}

/// One message's wall time from `submit` to its receipt.
type Timed = (Instant, Duration, Result<Receipt, PipeError>);

/// MESH messages keep their latency while 64 KiB BULK messages flood the
/// same pair of peers, and the flood never gets the live receiver suspected.
/// Regression: this failed while bulk traffic had no byte window (4096
/// messages of any size in flight), payloads decoded byte by byte, and a
/// false death then broke exactly-once (see `regressions`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mesh_messages_are_not_delayed_by_a_bulk_flood() {
    const PROBES: usize = 50;
    const BULK_BYTES: usize = 64 * 1024;
    const BULK_OUTSTANDING: usize = 2000;

    let receiver = start_peer("flood-recv", &[], |_| {}).await;
    let sender = start_peer("flood-send", &receiver.info().listen_addrs, |_| {}).await;
    joined(&receiver, &sender).await;
    let mut inbox = receiver.take_inbox().expect("inbox is taken once");
    let app = tokio::spawn(async move {
        let (mut mesh, mut bulk) = (0u64, 0u64);
        while let Some(message) = inbox.recv().await {
            if message.class == TrafficClass::MESH {
                mesh += 1;
            } else {
                bulk += 1;
            }
        }
        (mesh, bulk)
    });
    let to = receiver.peer_id();

    async fn probe_mesh(sender: &Peer, to: colony::PeerId, n: usize) -> Vec<Duration> {
        let mut samples = Vec::with_capacity(n);
        for i in 0..n {
            let t = Instant::now();
            sender
                .send(to, TrafficClass::MESH, (i as u64).to_be_bytes().to_vec())
                .await
                .unwrap_or_else(|e| panic!("MESH probe {i} failed: {e:?}"));
            samples.push(t.elapsed());
        }
        samples
    }

    let mut baseline = within("baseline MESH probes", Duration::from_secs(10), async {
        probe_mesh(&sender, to, 10).await; // warm up the RTT estimate
        probe_mesh(&sender, to, PROBES).await
    })
    .await;

    // The flood: BULK messages back to back, BULK_OUTSTANDING in flight.
    let stop = Arc::new(AtomicBool::new(false));
    let (completed_tx, mut completed_rx) = tokio::sync::watch::channel(0usize);
    let flood = {
        let sender = sender.peer.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let payload = vec![0xB5u8; BULK_BYTES];
            let mut pending = FuturesUnordered::new();
            let mut done: Vec<Timed> = Vec::new();
            let mut submitted = 0usize;
            while !stop.load(Ordering::Relaxed) {
                if pending.len() >= BULK_OUTSTANDING {
                    done.push(pending.next().await.expect("pending is not empty"));
                    completed_tx.send_replace(done.len());
                    continue;
                }
                let t = Instant::now();
                let receipt = sender
                    .submit(to, TrafficClass::BULK, payload.clone())
                    .await
                    .expect("BULK submit accepted");
                submitted += 1;
                pending.push(async move {
                    let result = receipt.await;
                    (Instant::now(), t.elapsed(), result)
                });
            }
            while let Some(outcome) = pending.next().await {
                done.push(outcome);
            }
            (submitted, done)
        })
    };

    // Measure once the flood is in steady state: its first messages settled.
    let flood_started = Instant::now();
    within(
        "the BULK flood to reach steady state",
        Duration::from_secs(20),
        completed_rx.wait_for(|n| *n >= 200),
    )
    .await
    .expect("flood running");
    let warmup = flood_started.elapsed();
    let window_start = Instant::now();
    // Probe with a deadline, keeping what was measured if it runs out or a
    // probe fails, so that a failure shows what happened.
    let probe_deadline = window_start + Duration::from_secs(10);
    let mut during = Vec::with_capacity(PROBES);
    let mut probe_failure = None;
    for i in 0..PROBES {
        let t = Instant::now();
        let sent = tokio::time::timeout_at(
            probe_deadline.into(),
            sender.send(to, TrafficClass::MESH, (i as u64).to_be_bytes().to_vec()),
        )
        .await;
        match sent {
            Ok(Ok(_)) => during.push(t.elapsed()),
            Ok(Err(error)) => {
                probe_failure = Some(format!(
                    "MESH probe {i} failed after {:?}: {error:?}",
                    t.elapsed()
                ));
                break;
            }
            Err(_) => {
                probe_failure = Some(format!(
                    "MESH probe {i} still unanswered after {:?}",
                    t.elapsed()
                ));
                break;
            }
        }
    }
    eprintln!("flood: MESH probes under the flood: {during:?}");
    let window_end = Instant::now();
    let view = sender.members().await.expect("sender running");
    let receiver_state = view
        .iter()
        .find(|m| m.peer_id == to.to_string())
        .map(|m| (m.state, m.phi, m.times_declared_dead));
    let sender_status = sender.status().await.expect("sender running");
    let receiver_status = receiver.status().await.expect("receiver running");
    stop.store(true, Ordering::Relaxed);
    let (submitted, bulk) = within("the BULK flood to drain", Duration::from_secs(30), flood)
        .await
        .expect("flood task");

    let failed: Vec<_> = bulk
        .iter()
        .filter_map(|(_, _, r)| r.as_ref().err())
        .collect();
    let mut bulk_in_window: Vec<Duration> = bulk
        .iter()
        .filter(|(at, _, r)| *at >= window_start && *at <= window_end && r.is_ok())
        .map(|(_, latency, _)| *latency)
        .collect();
    let window = window_end - window_start;
    let bulk_rate = bulk_in_window.len() as f64 * BULK_BYTES as f64 / window.as_secs_f64() / 1e6;
    let base_p50 = median(&mut baseline);
    let base_p99 = quantile(&mut baseline, 0.99);
    let (mesh_p50, mesh_p99) = if during.is_empty() {
        (Duration::MAX, Duration::MAX)
    } else {
        (median(&mut during), quantile(&mut during, 0.99))
    };
    let (bulk_p50, bulk_p99) = if bulk_in_window.is_empty() {
        (Duration::ZERO, Duration::ZERO)
    } else {
        (
            median(&mut bulk_in_window),
            quantile(&mut bulk_in_window, 0.99),
        )
    };
    eprintln!(
        "flood: MESH alone p50 {base_p50:?} p99 {base_p99:?}; MESH under flood ({} probes) \
         p50 {mesh_p50:?} p99 {mesh_p99:?}; BULK (64 KiB, {BULK_OUTSTANDING} outstanding) \
         p50 {bulk_p50:?} p99 {bulk_p99:?}, {} settled in the {window:?} window \
         ({bulk_rate:.1} MB/s), {submitted} submitted, {} failed; warm-up {warmup:?}; \
         receiver in the sender's view (state, phi, times declared dead) {receiver_state:?}\n  \
         sender pipes {:?}\n  sender net {:?}\n  receiver pipes {:?}\n  receiver net {:?}",
        during.len(),
        bulk_in_window.len(),
        failed.len(),
        sender_status.pipes,
        sender_status.net,
        receiver_status.pipes,
        receiver_status.net,
    );

    assert_eq!(probe_failure, None, "MESH probes under the flood");
    assert!(
        failed.is_empty(),
        "{} of {} BULK messages failed, first: {:?}",
        failed.len(),
        bulk.len(),
        failed.first()
    );
    assert!(
        bulk_in_window.len() >= 10,
        "only {} BULK messages settled while MESH was probed: the flood stalled",
        bulk_in_window.len()
    );
    assert!(
        mesh_p50 < bulk_p50 / 4,
        "MESH p50 {mesh_p50:?} under the flood is not well below BULK p50 {bulk_p50:?}"
    );
    assert!(
        mesh_p50 < Duration::from_millis(50),
        "MESH p50 {mesh_p50:?} under the flood (alone: {base_p50:?})"
    );

    sender.shutdown().await;
    receiver.shutdown().await;
    let (mesh, bulk_delivered) = within(
        "the receiving application to stop",
        Duration::from_secs(5),
        app,
    )
    .await
    .expect("receiving application");
    assert_eq!(mesh, (10 + 2 * PROBES) as u64);
    assert_eq!(bulk_delivered, submitted as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_message_is_rejected_with_a_clear_error() {
    let max = PipeConfig::default().max_message_bytes;
    let receiver = start_peer("big-recv", &[], |_| {}).await;
    let sender = start_peer("big-send", &receiver.info().listen_addrs, |c| {
        assert_eq!(c.pipes.max_message_bytes, max);
    })
    .await;
    joined(&receiver, &sender).await;
    let mut inbox = receiver.take_inbox().expect("inbox is taken once");
    let to = receiver.peer_id();

    let t = Instant::now();
    let refused = within(
        "the oversized send to be refused",
        Duration::from_secs(5),
        sender.send(to, TrafficClass::BULK, vec![7; max + 1]),
    )
    .await;
    eprintln!("oversized: refused in {:?}: {refused:?}", t.elapsed());
    // The limit the runtime reports; the runtime may keep a few bytes of
    // `max_message_bytes` for its own framing of application messages.
    let limit = match refused {
        Err(PipeError::MessageTooLarge { size, max: limit }) => {
            assert_eq!(size, max + 1, "the error names the size sent");
            assert!(
                limit <= max && limit + 64 >= max,
                "reported limit {limit} is not about max_message_bytes {max}"
            );
            let text = refused.as_ref().unwrap_err().to_string();
            assert!(
                text.contains(&size.to_string()) && text.contains(&limit.to_string()),
                "the error names the size and the limit: {text}"
            );
            limit
        }
        other => panic!("an oversized message ended in {other:?}"),
    };
    // The reported limit is the real boundary: one byte more is refused...
    let just_over = within(
        "a send one byte over the limit",
        Duration::from_secs(5),
        sender.send(to, TrafficClass::BULK, vec![7; limit + 1]),
    )
    .await;
    assert_eq!(
        just_over,
        Err(PipeError::MessageTooLarge {
            size: limit + 1,
            max: limit
        })
    );

    // ...and the peer keeps working: a message of exactly the limit and a
    // small one both arrive intact, in order.
    let largest: Vec<u8> = (0..limit).map(|i| (i % 251) as u8).collect();
    within(
        "the largest allowed message",
        Duration::from_secs(10),
        async {
            sender
                .send(to, TrafficClass::BULK, largest.clone())
                .await
                .expect("a message of exactly the reported limit is delivered");
            sender
                .send(to, TrafficClass::BULK, b"small".to_vec())
                .await
                .expect("a small message is delivered");
            let first = inbox.recv().await.expect("receiver running");
            assert_eq!(first.payload.len(), limit);
            assert!(first.payload == largest, "largest message corrupted");
            let second = inbox.recv().await.expect("receiver running");
            assert_eq!(second.payload, b"small");
        },
    )
    .await;
    eprintln!("oversized: limit reported {limit} (max_message_bytes {max}); a message of exactly {limit} bytes delivered");

    sender.shutdown().await;
    receiver.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_is_seen_as_left_at_once() {
    let a = start_peer("leave-a", &[], |_| {}).await;
    let b = start_peer("leave-b", &a.info().listen_addrs, |_| {}).await;
    let c = start_peer("leave-c", &a.info().listen_addrs, |_| {}).await;
    joined(&a, &b).await;
    joined(&a, &c).await;
    joined(&b, &c).await;
    let leaver = c.peer_id();

    let t = Instant::now();
    let leaving = {
        let c = c.peer.clone();
        tokio::spawn(async move { c.shutdown().await })
    };
    let limit = Duration::from_secs(1);
    let (seen_a, seen_b) = tokio::join!(
        wait_for_state(&a, leaver, &[MemberState::Left, MemberState::Dead], limit),
        wait_for_state(&b, leaver, &[MemberState::Left, MemberState::Dead], limit),
    );
    within("shutdown() to return", Duration::from_secs(5), leaving)
        .await
        .expect("shutdown task");
    let returned = t.elapsed();
    eprintln!(
        "leave: A saw {:?} after {:?}, B saw {:?} after {:?}; shutdown() returned after {returned:?}",
        seen_a.0,
        seen_a.1.duration_since(t),
        seen_b.0,
        seen_b.1.duration_since(t)
    );
    assert_eq!(seen_a.0, MemberState::Left, "A's view of the leaver");
    assert_eq!(seen_b.0, MemberState::Left, "B's view of the leaver");

    // It stays left: the failure detector must not later declare it dead.
    // Watch for longer than the suspicion timeout.
    let watch_until = Instant::now() + Duration::from_millis(1500);
    while Instant::now() < watch_until {
        for (name, observer) in [("A", &a), ("B", &b)] {
            let state = state_of(observer, leaver).await;
            assert_eq!(
                state,
                Some(MemberState::Left),
                "{name}'s view of the leaver changed"
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    a.shutdown().await;
    b.shutdown().await;
}

/// Regression, at the level of the runtime (see `regressions` below): after
/// a FALSE death declaration, once the peer has refuted and is alive again,
/// an `Ok` receipt must still mean the receiving application got the
/// message. (It did not while `Pipes::peer_dead` restarted numbering.) The sender's
/// failure detector is given a hair trigger so that it declares the live
/// receiver dead within milliseconds (in production: a flood, a pause, a
/// lossy link).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ok_receipt_after_a_false_death_declaration_means_delivered() {
    let receiver = start_peer("revive-recv", &[], |_| {}).await;
    let sender = start_peer("revive-send", &receiver.info().listen_addrs, |c| {
        c.membership.probe_interval = Duration::from_millis(10);
        c.membership.phi.min_std_dev = Duration::from_millis(1);
        c.membership.phi_threshold = 0.1;
        c.membership.suspicion_timeout = Duration::from_millis(5);
    })
    .await;
    joined(&receiver, &sender).await;
    let mut inbox = receiver.take_inbox().expect("inbox is taken once");
    let to = receiver.peer_id();
    within(
        "messages before the false death",
        Duration::from_secs(5),
        async {
            for seq in 0..5u64 {
                // The hair trigger may fire already: a send refused as
                // PeerDead is retried (and may still arrive, once).
                loop {
                    match sender
                        .send(to, TrafficClass::EVENTS, seq.to_be_bytes().to_vec())
                        .await
                    {
                        Ok(_) => break,
                        Err(PipeError::PeerDead { .. }) => {
                            tokio::time::sleep(Duration::from_millis(5)).await
                        }
                        Err(other) => panic!("send failed: {other}"),
                    }
                }
                loop {
                    let got = inbox.recv().await.expect("receiver running");
                    let got = payload_seq(&got.payload);
                    assert!(got <= seq, "in order: got {got} while sending {seq}");
                    if got == seq {
                        break;
                    }
                }
            }
        },
    )
    .await;

    let t = Instant::now();
    let (_, dead_at) =
        wait_for_state(&sender, to, &[MemberState::Dead], Duration::from_secs(10)).await;
    let (_, alive_at) =
        wait_for_state(&sender, to, &[MemberState::Alive], Duration::from_secs(5)).await;
    // The detector keeps flapping: retry PeerDead until a receipt is Ok.
    let receipt = within(
        "an Ok receipt after the revival",
        Duration::from_secs(5),
        async {
            loop {
                match sender
                    .send(to, TrafficClass::EVENTS, 100u64.to_be_bytes().to_vec())
                    .await
                {
                    Ok(receipt) => return receipt,
                    Err(PipeError::PeerDead { .. }) => continue,
                    Err(other) => panic!("message 100 ended in {other:?}"),
                }
            }
        },
    )
    .await;
    eprintln!(
        "revive: declared dead after {:?}, alive again {:?} later; message 100 got {receipt:?}",
        dead_at - t,
        alive_at - dead_at
    );
    let got = tokio::time::timeout(Duration::from_secs(2), inbox.recv()).await;
    match got {
        Ok(Some(message)) => assert_eq!(payload_seq(&message.payload), 100),
        Ok(None) => panic!("the receiver stopped"),
        Err(_) => {
            panic!("message 100 got an Ok receipt ({receipt:?}) but the application never got it")
        }
    }
    sender.shutdown().await;
    receiver.shutdown().await;
}

/// Regressions of bugs found in the pipe core, reproduced deterministically
/// on the core itself (`colony_core::pipe::Pipes`, which the runtime drives).
/// Each failed before its fix.
mod regressions {
    use std::time::{Duration, Instant};

    use colony::{PipeConfig, PipeError, TrafficClass};
    use colony_core::pipe::{PipeFrame, PipeOutput, Pipes};

    const SENDER: u32 = 1;
    const RECEIVER: u32 = 2;
    /// Both cores keep their session throughout: neither process restarts.
    const SESSION: u64 = 1;

    fn drain(core: &mut Pipes<u32>) -> (Vec<PipeFrame>, Vec<PipeOutput<u32>>) {
        let (mut frames, mut other) = (Vec::new(), Vec::new());
        while let Some(out) = core.poll() {
            match out {
                PipeOutput::Transmit { frame, .. } => frames.push(frame),
                out => other.push(out),
            }
        }
        (frames, other)
    }

    fn deliveries(core: &mut Pipes<u32>) -> Vec<Vec<u8>> {
        std::iter::from_fn(|| core.pop_delivery())
            .map(|d| d.payload)
            .collect()
    }

    /// Was a bug (crates/colony-core/src/pipe.rs, `Pipes::peer_dead`, the
    /// `self.recv.retain(..)` line; called from crates/colony/src/driver.rs
    /// `on_membership_output` on every Dead/Left event): the receiver forgets
    /// the sender's receive channel, including `next_expected`. When the
    /// death was a false positive (the sender refutes and is alive again in
    /// the same session) its unacknowledged messages are retransmitted with
    /// `base` = lowest unacknowledged number; `recv_channel` creates a fresh
    /// channel starting at that base, and every message the application had
    /// already got whose ack was still on its way is delivered AGAIN.
    #[test]
    fn a_receiver_that_wrongly_declared_the_sender_dead_does_not_deliver_twice() {
        let now = Instant::now();
        let deadline = now + Duration::from_secs(30);
        let mut sender = Pipes::<u32>::new(PipeConfig::default(), SESSION);
        let mut receiver = Pipes::<u32>::new(PipeConfig::default(), SESSION);
        for i in 0..3u8 {
            sender
                .send(
                    now,
                    RECEIVER,
                    TrafficClass::EVENTS,
                    vec![i],
                    u64::from(i),
                    deadline,
                )
                .expect("accepted");
        }
        let (frames, _) = drain(&mut sender);
        for frame in frames {
            receiver.handle_frame(now, SENDER, frame);
        }
        assert_eq!(deliveries(&mut receiver), vec![vec![0], vec![1], vec![2]]);
        // The acknowledgement is lost (or stuck behind a flood) and the
        // receiver's failure detector declares the sender dead.
        let _lost_ack = drain(&mut receiver);
        receiver.peer_dead(&SENDER);
        // The sender was alive all along: it retransmits, the frames arrive.
        sender.handle_timeout(now + Duration::from_secs(1));
        let (frames, _) = drain(&mut sender);
        assert!(!frames.is_empty(), "the sender retransmits");
        for frame in frames {
            receiver.handle_frame(now + Duration::from_secs(1), SENDER, frame);
        }
        assert_eq!(
            deliveries(&mut receiver),
            Vec::<Vec<u8>>::new(),
            "messages 0..3 were already handed to the application once"
        );
    }

    /// Was a bug (crates/colony-core/src/pipe.rs, `Pipes::peer_dead`, the
    /// `self.send.remove(&key)` loop; and `Pipes::send`, which then creates
    /// a `SendChannel::default()` with `next_seq` 0 in the SAME session): the
    /// sender forgets its send channel to a peer declared dead. When the
    /// death was a false positive (the peer refutes and is alive again; the
    /// driver only refuses sends while the state is Dead/Left) new messages
    /// are numbered from 0 again in the same session. The receiver still has
    /// `next_expected` = N, so it drops them as duplicates and acknowledges
    /// them: the caller gets an Ok receipt for a message the application
    /// never sees.
    #[test]
    fn a_sender_that_wrongly_declared_the_receiver_dead_does_not_lose_new_messages() {
        let now = Instant::now();
        let deadline = now + Duration::from_secs(30);
        let mut sender = Pipes::<u32>::new(PipeConfig::default(), SESSION);
        let mut receiver = Pipes::<u32>::new(PipeConfig::default(), SESSION);
        let exchange = |sender: &mut Pipes<u32>, receiver: &mut Pipes<u32>| {
            let (frames, _) = drain(sender);
            for frame in frames {
                receiver.handle_frame(now, SENDER, frame);
            }
            let (acks, _) = drain(receiver);
            for ack in acks {
                sender.handle_frame(now, RECEIVER, ack);
            }
            drain(sender).1
        };
        for i in 0..3u8 {
            sender
                .send(
                    now,
                    RECEIVER,
                    TrafficClass::EVENTS,
                    vec![i],
                    u64::from(i),
                    deadline,
                )
                .expect("accepted");
        }
        exchange(&mut sender, &mut receiver);
        assert_eq!(deliveries(&mut receiver).len(), 3);
        // A false death declaration at the sender, then the receiver
        // refutes and is alive again; the application sends on.
        sender.peer_dead(&RECEIVER);
        sender
            .send(
                now,
                RECEIVER,
                TrafficClass::EVENTS,
                b"new".to_vec(),
                10,
                deadline,
            )
            .expect("accepted");
        let outcomes = exchange(&mut sender, &mut receiver);
        let delivered = deliveries(&mut receiver);
        let acked = outcomes
            .iter()
            .any(|o| matches!(o, PipeOutput::Delivered { token: 10, .. }));
        assert!(
            !(acked && delivered.is_empty()),
            "message 10 got an Ok receipt but the application never got it \
             (receiver stats {:?})",
            receiver.stats()
        );
        assert_eq!(delivered, vec![b"new".to_vec()]);
    }

    /// Was a bug (crates/colony-core/src/pipe.rs, `Pipes::peer_dead`:
    /// `format!("{peer:?}")`, vs crates/colony/src/driver.rs
    /// `handle_command`: `to.to_string()`): the same `PipeError::PeerDead`
    /// names the peer two ways. Messages in flight when the peer dies say
    /// `PeerId("12D3Koo…")` ("peer PeerId(\"12D3Koo…\") is dead"), messages
    /// sent after say `12D3Koo…`; a caller matching on the id misses the
    /// first kind.
    #[test]
    fn peer_dead_names_the_peer_as_the_runtime_does() {
        let now = Instant::now();
        let peer = colony::PeerId::random();
        let mut pipes = Pipes::<colony::PeerId>::new(PipeConfig::default(), SESSION);
        pipes
            .send(
                now,
                peer,
                TrafficClass::EVENTS,
                vec![1],
                7,
                now + Duration::from_secs(30),
            )
            .expect("accepted");
        pipes.peer_dead(&peer);
        let failed: Vec<PipeError> = std::iter::from_fn(|| pipes.poll())
            .filter_map(|o| match o {
                PipeOutput::Failed { error, .. } => Some(error),
                _ => None,
            })
            .collect();
        assert_eq!(
            failed,
            vec![PipeError::PeerDead {
                peer: peer.to_string()
            }]
        );
    }
}
