//! Joining, isolation and hostile input with real `colony peer` processes.

mod common;

use std::time::Duration;

use colony::MemberState;
use colony_net::libp2p::futures::AsyncWriteExt;
use colony_net::libp2p::identity::Keypair;
use colony_net::libp2p::{Multiaddr, PeerId};
use colony_net::NetConfig;
use common::*;
use futures::StreamExt;
use tokio::io::AsyncWriteExt as _;

/// A loopback address nobody listens on (connection refused).
fn dead_addr() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    drop(listener);
    format!("/ip4/127.0.0.1/tcp/{port}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bootstrap_fails_over_past_two_dead_entries() {
    let _serial = SERIAL.lock().await;
    let root = test_dir("failover");
    let seed = PeerProc::spawn(&root.join("seed"), &[]);
    let args: Vec<String> = [dead_addr(), dead_addr(), seed.addr()]
        .into_iter()
        .flat_map(|a| ["--bootstrap".to_string(), a])
        .collect();
    let joiner = PeerProc::spawn(&root.join("joiner"), &args);
    wait_until(
        Duration::from_secs(10),
        "the joiner to join through the third entry",
        || async { all_see_all_alive(&[&seed, &joiner]).await.then_some(()) },
    )
    .await;
    let log = joiner.log();
    assert_eq!(
        log.matches("bootstrap entry unreachable; failing over")
            .count(),
        2,
        "{log}"
    );
    let _ = std::fs::remove_dir_all(&root);
}

/// A peer short of acquaintances (NOA 6 in a network of 2) explores every
/// TTU, but does not dial its bootstrap entry again while connected to it:
/// each dial was one more connection to the same peer, refused past the
/// per-peer limit of 4 and logged on both sides.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_short_of_acquaintances_does_not_redial_a_connected_bootstrap_peer() {
    let _serial = SERIAL.lock().await;
    let root = test_dir("redial");
    let ttu = Duration::from_millis(200);
    let fast_ttu = ["--ttu-s".to_string(), ttu.as_secs_f64().to_string()];
    let seed = PeerProc::spawn(&root.join("seed"), &fast_ttu);
    let mut args = fast_ttu.to_vec();
    args.extend(["--bootstrap".to_string(), seed.addr()]);
    let joiner = PeerProc::spawn(&root.join("joiner"), &args);
    wait_until(Duration::from_secs(10), "the network to form", || async {
        all_see_all_alive(&[&seed, &joiner]).await.then_some(())
    })
    .await;
    // Ten explorations: the old behaviour hit the limit at the fifth.
    tokio::time::sleep(ttu * 10).await;
    let status = seed.status().await.expect("the seed's status");
    assert_eq!(
        status.driver.rejected_connections,
        0,
        "the seed refused connections: {:?}\n{}",
        status.driver,
        seed.log()
    );
    let log = joiner.log();
    assert_eq!(
        log.matches("connected to bootstrap peer").count(),
        1,
        "{log}"
    );
    let _ = std::fs::remove_dir_all(&root);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn networks_with_different_names_or_keys_never_see_each_other() {
    let _serial = SERIAL.lock().await;
    let root = test_dir("isolation");
    let name = |n: &str| vec!["--network".to_string(), n.to_string()];

    // Two names on one machine; a "blue" peer is even pointed at a "red" one first.
    let red = start_network(&root.join("red"), 2, &name("red"));
    let blue_seed = PeerProc::spawn(&root.join("blue0"), &name("blue"));
    let mut args = name("blue");
    args.extend([
        "--bootstrap".into(),
        red[0].addr(),
        "--bootstrap".into(),
        blue_seed.addr(),
    ]);
    let blue_joiner = PeerProc::spawn(&root.join("blue1"), &args);

    // Two private networks with the same name and different keys.
    let key = |dir: &str, byte: u8| {
        let path = root.join(format!("{dir}.key"));
        let hex: String = std::iter::repeat_n(format!("{byte:02x}"), 32).collect();
        std::fs::write(&path, format!("/key/swarm/psk/1.0.0/\n/base16/\n{hex}\n"))
            .expect("write key");
        vec!["--psk".to_string(), path.display().to_string()]
    };
    let green = start_network(&root.join("green"), 2, &key("green", 0x11));
    let mut args = key("violet", 0x22);
    args.extend(["--bootstrap".into(), green[0].addr()]);
    let violet_lost = PeerProc::spawn(&root.join("violet"), &args);

    wait_until(Duration::from_secs(10), "each network to form", || async {
        let ok = all_see_all_alive(&[&red[0], &red[1]]).await
            && all_see_all_alive(&[&blue_seed, &blue_joiner]).await
            && all_see_all_alive(&[&green[0], &green[1]]).await;
        ok.then_some(())
    })
    .await;
    // Give any leak time to show: several sync rounds.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let groups: Vec<Vec<&PeerProc>> = vec![
        vec![&red[0], &red[1]],
        vec![&blue_seed, &blue_joiner],
        vec![&green[0], &green[1]],
        vec![&violet_lost],
    ];
    for (g, group) in groups.iter().enumerate() {
        let ids: Vec<&str> = group.iter().map(|p| p.info.peer_id.as_str()).collect();
        for peer in group {
            let members = peer.members().await.expect("view");
            for m in members {
                assert!(
                    ids.contains(&m.peer_id.as_str()),
                    "group {g}: a peer of another network ({}) leaked in",
                    m.peer_id
                );
            }
        }
    }
    let _ = std::fs::remove_dir_all(&root);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_and_oversized_frames_are_rejected_and_the_peer_keeps_serving() {
    let _serial = SERIAL.lock().await;
    let root = test_dir("garbage");
    let peers = start_network(&root, 2, &[]);
    let (target, other) = (&peers[0], &peers[1]);
    wait_until(Duration::from_secs(10), "two peers to join", || async {
        all_see_all_alive(&[target, other]).await.then_some(())
    })
    .await;

    // 1. Garbage bytes on the libp2p TCP port and on the API port.
    let tcp_port = target.info.listen_addrs[0]
        .iter()
        .find_map(|p| match p {
            colony_net::libp2p::multiaddr::Protocol::Tcp(port) => Some(port),
            _ => None,
        })
        .expect("tcp port");
    let garbage: Vec<u8> = (0..65_536u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    for addr in [
        format!("127.0.0.1:{tcp_port}"),
        target.info.api_addr.expect("api").to_string(),
    ] {
        let mut socket = tokio::net::TcpStream::connect(&addr)
            .await
            .expect("connect");
        let _ = socket.write_all(&garbage).await;
        let _ = socket.shutdown().await;
    }

    // 2. A real libp2p peer of the network that sends a garbage frame and then
    //    a 100 MB length prefix on the frames protocol.
    let mut swarm =
        colony_net::build_swarm(Keypair::generate_ed25519(), &NetConfig::default()).expect("swarm");
    let mut control = swarm.behaviour().stream.new_control();
    let target_id: PeerId = target.info.peer_id.parse().expect("peer id");
    let addr: Multiaddr = target.info.listen_addrs[0].clone();
    swarm.dial(addr).expect("dial");
    let driver = tokio::spawn(async move {
        loop {
            swarm.select_next_some().await;
        }
    });
    let protocol = colony_net::frames_protocol("colony");
    let mut stream = tokio::time::timeout(
        Duration::from_secs(10),
        control.open_stream(target_id, protocol.clone()),
    )
    .await
    .expect("open in time")
    .expect("open stream");
    let junk = b"\xffthis is not a colony frame";
    let mut frame = (junk.len() as u32).to_be_bytes().to_vec();
    frame.extend_from_slice(junk);
    stream.write_all(&frame).await.expect("write garbage frame");
    stream.flush().await.expect("flush");
    let mut huge = control
        .open_stream(target_id, protocol)
        .await
        .expect("second stream");
    let _ = huge.write_all(&(100_000_000u32).to_be_bytes()).await;
    let _ = huge.write_all(&[0u8; 4096]).await;
    let _ = huge.flush().await;

    let status = wait_until(
        Duration::from_secs(10),
        "the rejections to be counted",
        || async {
            target.status().await.filter(|s| {
                s.driver.malformed_frames >= 1
                    && s.net.oversized_rejected >= 1
                    && s.driver.rejected_connections >= 1
            })
        },
    )
    .await;
    eprintln!(
        "counters after hostile input: driver {:?}, oversized_rejected {}",
        status.driver, status.net.oversized_rejected
    );
    let log = target.log();
    for needle in [
        "rejected an incoming connection",
        "malformed frame dropped",
        "oversized frame",
    ] {
        assert!(log.contains(needle), "log lacks {needle:?}:\n{log}");
    }
    driver.abort();

    // 3. Still serving: the API answers and membership is intact both ways.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(all_see_all_alive(&[target, other]).await);
    let row = other.state_of(target).await.expect("row");
    assert_eq!(row.state, MemberState::Alive);
    assert_eq!(row.times_declared_dead, 0);
    let _ = std::fs::remove_dir_all(&root);
}
