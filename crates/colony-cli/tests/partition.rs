//! A real network partition: `colony peer` processes in network namespaces
//! on one bridge; one peer's link is cut until each side has declared the
//! other dead, then restored, and the views must merge again.
//!
//! Needs root (skipped with a message otherwise).

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use colony::MemberState;
use common::netns::{all_alive_in_ns, states_seen, NetNs, NsPeer};
use common::*;

/// Polls `check` every 100 ms until it holds; on timeout prints every
/// peer's view and the end of its log, then panics.
pub async fn wait_for<F, Fut>(peers: &[&NsPeer], within: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    loop {
        if check().await {
            return;
        }
        if Instant::now() >= deadline {
            for (i, peer) in peers.iter().enumerate() {
                let seen = states_seen(peer, peers).await;
                let log = peer.log();
                let tail: Vec<&str> = log.lines().rev().take(30).collect();
                eprintln!("p{i} sees {seen:?}; its log ends with:");
                for line in tail.iter().rev() {
                    eprintln!("    {line}");
                }
            }
            panic!("timed out after {within:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Starts one peer per host of `net`, all bootstrapped from the first.
pub fn start_ns_network(net: &NetNs, root: &Path, extra_args: &[String]) -> Vec<NsPeer> {
    let seed = net.spawn_peer(0, &root.join("p0"), extra_args);
    let mut args = extra_args.to_vec();
    args.extend(["--bootstrap".to_string(), seed.addr()]);
    let mut peers = vec![seed];
    for i in 1..net.len() {
        peers.push(net.spawn_peer(i, &root.join(format!("p{i}")), &args));
    }
    peers
}

/// Whether every peer of `observers` sees every peer of `subjects` in `state`.
pub async fn all_see(observers: &[&NsPeer], subjects: &[&NsPeer], state: MemberState) -> bool {
    for observer in observers {
        let seen = states_seen(observer, subjects).await;
        if seen.iter().any(|s| *s != Some(state)) {
            return false;
        }
    }
    true
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cut_peer_is_declared_dead_on_both_sides_and_the_partition_heals() {
    let _serial = SERIAL.lock().await;
    let Some(net) = NetNs::create(4) else {
        return;
    };
    let root = test_dir("partition");
    // NOA 0: no peer goes looking for acquaintances (DHT walks, bootstrap
    // dials), which would reconnect the sides by chance; only membership
    // may heal the partition here.
    let mut peers = start_ns_network(&net, &root, &["--noa".into(), "0".into()]);
    let all: Vec<&NsPeer> = peers.iter().collect();
    wait_for(
        &all,
        Duration::from_secs(15),
        "4 peers to see each other alive",
        || all_alive_in_ns(&all),
    )
    .await;

    // Cut off the seed: it has no bootstrap list to rejoin through.
    let cut = 0;
    let lone = [all[cut]];
    let others: Vec<&NsPeer> = all[1..].to_vec();
    let cut_at = Instant::now();
    net.cut(cut);
    wait_for(
        &all,
        Duration::from_secs(15),
        "both sides to declare the other dead",
        || async {
            all_see(&others, &lone, MemberState::Dead).await
                && all_see(&lone, &others, MemberState::Dead).await
        },
    )
    .await;
    eprintln!(
        "figure: partition detected on both sides after {} ms",
        cut_at.elapsed().as_millis()
    );
    assert!(all_alive_in_ns(&others).await, "the majority stays whole");
    // Long enough for dials and connections of before the cut to have
    // failed: whatever reconnects the sides is the membership protocol.
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert!(
        all_see(&others, &lone, MemberState::Dead).await
            && all_see(&lone, &others, MemberState::Dead).await,
        "still split while the link is down"
    );

    let restored_ms = unix_ms();
    let restored_at = Instant::now();
    net.restore(cut);
    wait_for(
        &all,
        Duration::from_secs(20),
        "all 4 to see all 4 alive again",
        || all_alive_in_ns(&all),
    )
    .await;
    let polled = restored_at.elapsed();
    // The peers' own records of when each row last changed, to the ms.
    let mut healed_ms = 0;
    for observer in &all {
        for m in observer.members().await.expect("view") {
            if !m.local && m.state_since_unix_ms >= restored_ms {
                healed_ms = healed_ms.max(m.state_since_unix_ms - restored_ms);
            }
        }
    }
    eprintln!(
        "figure: partition healed {healed_ms} ms after the link came back (seen by polling after {} ms)",
        polled.as_millis()
    );

    for observer in &others {
        for m in observer.members().await.expect("view") {
            if m.peer_id == peers[cut].info.peer_id {
                // It learnt it had been declared dead and refuted.
                assert!(m.incarnation >= 2, "the cut peer raised its incarnation");
            } else {
                // Nobody on the majority side was declared dead by another,
                // even while the two views merged.
                assert_eq!(m.times_declared_dead, 0, "{} declared dead", m.peer_id);
            }
        }
    }

    // A peer that really died is probed like the cut one was, and stays dead.
    let victim = 3;
    peers[victim].kill();
    let survivors: Vec<&NsPeer> = peers.iter().filter(|p| p.is_running()).collect();
    let gone = [&peers[victim]];
    wait_for(
        &survivors,
        Duration::from_secs(10),
        "the killed peer to be declared dead",
        || all_see(&survivors, &gone, MemberState::Dead),
    )
    .await;
    // Several probe rounds (one every 1–3 s per peer).
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert!(
        all_see(&survivors, &gone, MemberState::Dead).await,
        "a killed peer stays dead"
    );
    assert!(all_alive_in_ns(&survivors).await);

    drop(survivors);
    drop(peers);
    drop(net);
    let _ = std::fs::remove_dir_all(&root);
}
