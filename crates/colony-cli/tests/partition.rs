//! A real network partition: `colony peer` processes in network namespaces
//! on one bridge; one peer's link is cut until each side has declared the
//! other dead, then restored, and the views must merge again.
//!
//! Needs root (skipped with a message otherwise).

mod common;

use std::time::{Duration, Instant};

use colony::MemberState;
use common::netns::{all_alive_in_ns, all_see, wait_for, NetNs, NsPeer};
use common::*;

/// Cuts host `cut`'s link and waits until it and the others have declared
/// each other dead.
async fn split(net: &NetNs, all: &[&NsPeer], cut: usize) {
    let lone = [all[cut]];
    let others: Vec<&NsPeer> = (0..all.len())
        .filter(|i| *i != cut)
        .map(|i| all[i])
        .collect();
    net.cut(cut);
    wait_for(
        all,
        Duration::from_secs(15),
        "both sides to declare the other dead",
        || async {
            all_see(&others, &lone, MemberState::Dead).await
                && all_see(&lone, &others, MemberState::Dead).await
        },
    )
    .await;
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
    let mut peers = net.start_network(&root, &["--noa".into(), "0".into()]);
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
    split(&net, &all, cut).await;
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

/// N-Queens for N = 17 has 95 815 104 solutions (OEIS A000170): a sum over
/// units, so a unit lost or merged twice changes it.
const QUEENS: &str = "17";
const QUEENS_SOLUTIONS: u64 = 95_815_104;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_completes_exactly_across_a_partition_of_a_worker() {
    let _serial = SERIAL.lock().await;
    let Some(net) = NetNs::create(4) else {
        return;
    };
    let root = test_dir("partition-job");
    let peers = net.start_network(
        &root,
        &["--noa".into(), "0".into(), "--cores".into(), "1".into()],
    );
    let all: Vec<&NsPeer> = peers.iter().collect();
    wait_for(
        &all,
        Duration::from_secs(15),
        "4 peers to see each other alive",
        || all_alive_in_ns(&all),
    )
    .await;
    // The submitter joins in host 1's namespace and computes too.
    let run_dir = root.join("run");
    std::fs::create_dir_all(&run_dir).expect("run dir");
    let run_log = std::fs::File::create(root.join("run.log")).expect("run log");
    let mut run = tokio::process::Command::from(net.command(1, env!("CARGO_BIN_EXE_colony")));
    run.args([
        "run",
        "--data-dir",
        &run_dir.display().to_string(),
        "--listen",
        &format!("/ip4/{}/tcp/0", net.addr(1)),
        "--cores",
        "1",
        "--json",
        "--bootstrap",
        &peers[1].addr(),
        "nqueens",
        QUEENS,
    ])
    .stdout(std::process::Stdio::piped())
    .stderr(run_log)
    .kill_on_drop(true);
    let child = run.spawn().expect("start colony run");
    tokio::time::sleep(Duration::from_secs(4)).await;

    // Cut a worker off until both sides have declared each other dead, and
    // a while longer: its units are reissued; it keeps computing alone.
    let cut = 3;
    split(&net, &all, cut).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    net.restore(cut);
    wait_for(
        &all,
        Duration::from_secs(20),
        "all 4 to see all 4 alive again",
        || all_alive_in_ns(&all),
    )
    .await;

    let run_log = || std::fs::read_to_string(root.join("run.log")).unwrap_or_default();
    let out = tokio::time::timeout(Duration::from_secs(300), child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("the job did not finish; colony run's log:\n{}", run_log()))
        .expect("colony run output");
    let json: serde_json::Value = String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| serde_json::from_str(l).ok())
        .unwrap_or_else(|| panic!("no JSON result; colony run's log:\n{}", run_log()));
    assert_eq!(json["state"], "done", "{json}");
    assert_eq!(
        json["result"], QUEENS_SOLUTIONS,
        "every unit counted exactly once: {json}"
    );
    eprintln!(
        "figure: nqueens {QUEENS} across a partition: {} units, {} steals, {:.1} s",
        json["units"], json["steals"], json["elapsed_s"]
    );
    drop(peers);
    drop(net);
    let _ = std::fs::remove_dir_all(&root);
}
