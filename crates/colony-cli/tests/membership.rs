//! Membership with real `colony peer` processes on loopback: convergence,
//! crash (SIGKILL) and hang (SIGSTOP) detection, rejoin after restart.

mod common;

use std::time::{Duration, Instant};

use colony::MemberState;
use common::*;

/// Waits until every survivor shows `victim` dead; returns each survivor's
/// detection time in ms, measured from `since_ms` to the moment its state
/// changed (as recorded by that survivor).
async fn detection_times(
    survivors: &[&PeerProc],
    victim: &PeerProc,
    since_ms: u64,
    within: Duration,
) -> Vec<u64> {
    let mut times = Vec::new();
    for observer in survivors {
        let member = wait_until(within, "the victim to be declared dead", || async {
            observer
                .state_of(victim)
                .await
                .filter(|m| m.state == MemberState::Dead)
        })
        .await;
        times.push(member.state_since_unix_ms.saturating_sub(since_ms));
    }
    times
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_peers_converge_then_crashes_are_detected_and_restarts_rejoin() {
    let _serial = SERIAL.lock().await;
    let root = test_dir("crash");
    let started = Instant::now();
    let mut peers = start_network(&root, 10, &[]);
    let refs: Vec<&PeerProc> = peers.iter().collect();
    wait_until(
        Duration::from_secs(10),
        "10 peers to see each other alive",
        || async { all_see_all_alive(&refs).await.then_some(()) },
    )
    .await;
    eprintln!(
        "figure: 10 peers converged in {} ms",
        started.elapsed().as_millis()
    );

    // SIGKILL three peers one after another — the seed among them: there is
    // no head node.
    let mut samples = Vec::new();
    for victim in [3usize, 0, 7] {
        let killed_at = unix_ms();
        peers[victim].kill();
        let survivors: Vec<&PeerProc> = peers.iter().filter(|p| p.is_running()).collect();
        let times = detection_times(
            &survivors,
            &peers[victim],
            killed_at,
            Duration::from_secs(6),
        )
        .await;
        eprintln!("figure: SIGKILL of p{victim} detected after {times:?} ms");
        samples.extend(times);
    }
    let (p50, max) = p50_max(&mut samples);
    eprintln!(
        "figure: SIGKILL detection over {} observations: p50 {p50} ms, max {max} ms",
        samples.len()
    );
    assert!(p50 <= 2000, "median SIGKILL detection {p50} ms > 2 s");

    // A killed peer restarted on the same data directory keeps its PeerId and
    // is alive again everywhere. Its first bootstrap entry (the seed) is dead
    // now; it fails over to a live one.
    let old_id = peers[3].info.peer_id.clone();
    let live_entry = peers[1].addr();
    peers[3].restart_with(&["--bootstrap".into(), live_entry]);
    assert_eq!(peers[3].info.peer_id, old_id, "same data dir, same PeerId");
    let living: Vec<&PeerProc> = peers
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 0 && *i != 7)
        .map(|(_, p)| p)
        .collect();
    wait_until(
        Duration::from_secs(10),
        "the restarted peer to be alive everywhere",
        || async { all_see_all_alive(&living).await.then_some(()) },
    )
    .await;
    let rejoined = living[0].state_of(&peers[3]).await.expect("member row");
    assert!(
        rejoined.incarnation >= 2,
        "a restart raises the incarnation"
    );
    let _ = std::fs::remove_dir_all(&root);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hung_peer_is_declared_dead_and_a_short_pause_is_not() {
    let _serial = SERIAL.lock().await;
    let root = test_dir("hang");
    let peers = start_network(&root, 10, &[]);
    let refs: Vec<&PeerProc> = peers.iter().collect();
    wait_until(
        Duration::from_secs(10),
        "10 peers to see each other alive",
        || async { all_see_all_alive(&refs).await.then_some(()) },
    )
    .await;

    // SIGSTOP: sockets stay open, nothing answers.
    let stopped_at = unix_ms();
    peers[4].signal("STOP");
    let survivors: Vec<&PeerProc> = peers
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 4)
        .map(|(_, p)| p)
        .collect();
    let mut times =
        detection_times(&survivors, &peers[4], stopped_at, Duration::from_secs(6)).await;
    let (p50, max) = p50_max(&mut times);
    eprintln!("figure: SIGSTOP detection: p50 {p50} ms, max {max} ms ({times:?})");
    assert!(
        max <= 3000,
        "a hung peer must be declared dead within 3 s, took {max} ms"
    );

    // Continued after being declared dead, it refutes and is alive again.
    peers[4].signal("CONT");
    wait_until(
        Duration::from_secs(10),
        "the continued peer to be alive again",
        || async { all_see_all_alive(&refs).await.then_some(()) },
    )
    .await;

    // A pause well inside the detection deadline is not a death.
    let observers: Vec<&PeerProc> = peers
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 6)
        .map(|(_, p)| p)
        .collect();
    let mut before = Vec::new();
    for observer in &observers {
        before.push(
            observer
                .state_of(&peers[6])
                .await
                .expect("row")
                .times_declared_dead,
        );
    }
    peers[6].signal("STOP");
    tokio::time::sleep(Duration::from_millis(1000)).await;
    peers[6].signal("CONT");
    // Watch long enough for any late verdict to surface.
    tokio::time::sleep(Duration::from_secs(4)).await;
    for (observer, before) in observers.iter().zip(before) {
        let row = observer.state_of(&peers[6]).await.expect("row");
        assert_eq!(row.state, MemberState::Alive, "a 1 s pause must not kill");
        assert_eq!(
            row.times_declared_dead, before,
            "never declared dead, even briefly"
        );
    }
    let _ = std::fs::remove_dir_all(&root);
}
