//! A rogue libp2p peer (written here, not a Colony peer) against a real
//! `colony peer` process and its network: floods of length prefixes, idle
//! streams and half-open TCP connections must not take the victim's memory,
//! its file descriptors, its API or its membership.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use colony::{MemberState, PeerInfo};
use colony_net::libp2p::futures::AsyncWriteExt;
use colony_net::libp2p::identity::Keypair;
use colony_net::libp2p::multiaddr::Protocol;
use colony_net::libp2p::swarm::SwarmEvent;
use colony_net::libp2p::{Multiaddr, PeerId, Stream};
use colony_net::libp2p_stream::Control;
use colony_net::NetConfig;
use common::*;
use futures::StreamExt;
use tokio::task::JoinHandle;

/// The victim's RSS must stay under this during the whole attack. Measured
/// on a debug build: about 31 MiB idle and a peak of 34 MiB under this
/// attack; before buffers were bounded, the same attack took it past 200 MiB
/// within 192 streams and to about 970 MiB after the 1,024.
const RSS_BOUND_BYTES: u64 = 200 * 1024 * 1024;

/// File-descriptor limit the victim runs under, as on a default Linux box.
const VICTIM_NOFILE: u32 = 1024;

/// A libp2p peer of the victim's network, driven by its own task, that
/// speaks identify and Kademlia (so it is not simply dropped as foreign) but
/// none of Colony's protocols: it only opens frames streams and writes what
/// it likes on them.
struct Attacker {
    peer: PeerId,
    control: Control,
    driver: JoinHandle<()>,
}

impl Drop for Attacker {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

impl Attacker {
    /// Connects a fresh identity to `victim`.
    async fn connect(victim: &PeerInfo) -> Attacker {
        let config = NetConfig {
            dns: false,
            ..NetConfig::default()
        };
        let mut swarm =
            colony_net::build_swarm(Keypair::generate_ed25519(), &config).expect("attacker swarm");
        let peer = *swarm.local_peer_id();
        let control = swarm.behaviour().stream.new_control();
        let victim_id: PeerId = victim.peer_id.parse().expect("victim peer id");
        swarm
            .dial(victim.listen_addrs[0].clone())
            .expect("attacker dial");
        let (connected_tx, connected) = tokio::sync::oneshot::channel();
        let driver = tokio::spawn(async move {
            let mut connected_tx = Some(connected_tx);
            loop {
                if let SwarmEvent::ConnectionEstablished { peer_id, .. } =
                    swarm.select_next_some().await
                {
                    if peer_id == victim_id {
                        if let Some(tx) = connected_tx.take() {
                            let _ = tx.send(());
                        }
                    }
                }
            }
        });
        tokio::time::timeout(Duration::from_secs(10), connected)
            .await
            .expect("attacker connected in time")
            .expect("attacker driver alive");
        Attacker {
            peer,
            control,
            driver,
        }
    }

    /// Opens a frames stream to `victim`; `None` if the victim (or yamux)
    /// refuses it.
    async fn open_frames(&self, victim: PeerId) -> Option<Stream> {
        let mut control = self.control.clone();
        let open = control.open_stream(victim, colony_net::frames_protocol("colony"));
        tokio::time::timeout(Duration::from_secs(5), open)
            .await
            .ok()?
            .ok()
    }
}

/// Writes one frame (a `u32` big-endian length, then `payload`) on a frames
/// stream. The payload is arbitrary: garbage, a forged membership message,
/// or a pipe frame from [`pipe_frame_with_job_message`].
async fn write_frame(stream: &mut Stream, payload: &[u8]) -> std::io::Result<()> {
    let len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
    stream.write_all(&len.to_be_bytes()).await?;
    stream.write_all(payload).await?;
    stream.flush().await
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

fn tcp_addr(addr: &Multiaddr) -> SocketAddr {
    let mut ip = None;
    let mut port = None;
    for p in addr.iter() {
        match p {
            Protocol::Ip4(a) => ip = Some(std::net::IpAddr::V4(a)),
            Protocol::Tcp(p) => port = Some(p),
            _ => {}
        }
    }
    SocketAddr::new(ip.expect("ip4 listen address"), port.expect("tcp port"))
}

/// Tracks the victim's peak RSS and fails as soon as it passes the bound
/// (so a vulnerable build is stopped before it eats the machine).
struct RssWatch {
    pid: u32,
    peak: u64,
}

impl RssWatch {
    fn check(&mut self, when: &str) {
        let rss = rss_bytes(self.pid);
        self.peak = self.peak.max(rss);
        assert!(
            rss < RSS_BOUND_BYTES,
            "victim RSS {} MiB {when} (bound {} MiB)",
            rss >> 20,
            RSS_BOUND_BYTES >> 20
        );
    }
}

/// Whether `observer` has never declared any peer of `real` dead and holds
/// none of them dead or gone now (suspicion, which a member refutes, is
/// allowed: it is checked separately that everyone ends up alive).
async fn no_false_death(observer: &PeerProc, real: &[&PeerProc]) -> Result<(), String> {
    let members = observer
        .members()
        .await
        .ok_or_else(|| format!("{} does not answer", observer.info.peer_id))?;
    for peer in real {
        if peer.info.peer_id == observer.info.peer_id {
            continue;
        }
        let row = members
            .iter()
            .find(|m| m.peer_id == peer.info.peer_id)
            .ok_or_else(|| format!("{} missing from a view", peer.info.peer_id))?;
        if matches!(row.state, MemberState::Dead | MemberState::Left)
            || row.times_declared_dead != 0
        {
            return Err(format!(
                "{} is {:?} (declared dead {} times) in the view of {}",
                peer.info.peer_id, row.state, row.times_declared_dead, observer.info.peer_id
            ));
        }
    }
    Ok(())
}

/// Waits (at most 5 s) for the victim's API to answer `GET /v1/status`.
async fn api_answers(victim: &PeerProc, when: &str) {
    wait_until(
        Duration::from_secs(5),
        &format!("the victim's API to answer {when}"),
        || async { victim.status().await.map(|_| ()) },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rogue_peer_cannot_exhaust_a_peer() {
    let _serial = SERIAL.lock().await;
    let started = Instant::now();
    let root = test_dir("rogue");
    let peers = start_network(&root, 3, &[]);
    let victim = &peers[0];
    let real: Vec<&PeerProc> = peers.iter().collect();
    let limited = std::process::Command::new("prlimit")
        .args([
            "--pid".to_string(),
            victim.pid().to_string(),
            format!("--nofile={VICTIM_NOFILE}:{VICTIM_NOFILE}"),
        ])
        .status()
        .expect("run prlimit");
    assert!(limited.success(), "prlimit failed");
    wait_until(Duration::from_secs(15), "three peers to join", || async {
        all_see_all_alive(&real).await.then_some(())
    })
    .await;
    let victim_id: PeerId = victim.info.peer_id.parse().expect("victim id");
    let mut rss = RssWatch {
        pid: victim.pid(),
        peak: 0,
    };
    let rss_idle = rss_bytes(victim.pid());
    let log_before = victim.log().lines().count();
    eprintln!("victim idle: RSS {} MiB", rss_idle >> 20);
    for (i, p) in peers.iter().enumerate() {
        eprintln!("real peer p{i}: {}", p.info.peer_id);
    }

    // 0. A pipe frame carrying a job message that is not one.
    let prober = Attacker::connect(&victim.info).await;
    let mut stream = prober
        .open_frames(victim_id)
        .await
        .expect("a first frames stream is accepted");
    let frame = pipe_frame_with_job_message(1, 0, b"\xffnot a job message");
    write_frame(&mut stream, &frame)
        .await
        .expect("write a pipe frame");
    eprintln!("attacker {} sent a pipe frame", prober.peer);

    // 1. 1,024 streams, each announcing a 1 MiB frame and sending 100 bytes,
    //    from 16 identities (64 each).
    let mut attackers = Vec::new();
    let mut held = Vec::new();
    let mut opened = 0usize;
    for _ in 0..16 {
        let attacker = Attacker::connect(&victim.info).await;
        for _ in 0..64 {
            if let Some(mut stream) = attacker.open_frames(victim_id).await {
                opened += 1;
                let _ = stream.write_all(&(1024u32 * 1024).to_be_bytes()).await;
                let _ = stream.write_all(&[0x5a; 100]).await;
                let _ = stream.flush().await;
                held.push(stream);
            }
        }
        rss.check("during the length-prefix flood");
        attackers.push(attacker);
    }
    eprintln!(
        "length-prefix flood: {opened} of 1024 streams opened; victim RSS {} MiB",
        rss_bytes(victim.pid()) >> 20
    );
    api_answers(victim, "after the length-prefix flood").await;

    // 2. 4,096 idle streams, from 32 identities (128 each).
    let mut idle_opened = 0usize;
    for _ in 0..32 {
        let attacker = Attacker::connect(&victim.info).await;
        for _ in 0..128 {
            if let Some(stream) = attacker.open_frames(victim_id).await {
                idle_opened += 1;
                held.push(stream);
            }
        }
        rss.check("during the idle-stream flood");
        attackers.push(attacker);
    }
    eprintln!(
        "idle-stream flood: {idle_opened} of 4096 streams opened; victim RSS {} MiB",
        rss_bytes(victim.pid()) >> 20
    );

    // 3. 1,100 TCP connections that never handshake, kept open.
    let target = tcp_addr(&victim.info.listen_addrs[0]);
    let mut half_open = Vec::new();
    for _ in 0..1100 {
        let connect = tokio::net::TcpStream::connect(target);
        if let Ok(Ok(socket)) = tokio::time::timeout(Duration::from_secs(1), connect).await {
            half_open.push(socket);
        }
    }
    eprintln!(
        "half-open flood: {} of 1100 connected; victim holds {} fds",
        half_open.len(),
        open_fds(victim.pid())
    );
    rss.check("during the half-open flood");
    api_answers(victim, "during the half-open flood").await;

    // 4. While all of it is held: a new real peer joins (through another
    //    peer) and the victim sees it alive.
    let join_started = Instant::now();
    let joiner = PeerProc::spawn(
        &root.join("joiner"),
        &["--bootstrap".to_string(), peers[1].addr()],
    );
    wait_until(
        Duration::from_secs(20),
        "the new peer to be alive in the victim's view",
        || async {
            let row = victim.state_of(&joiner).await?;
            (row.state == MemberState::Alive).then_some(())
        },
    )
    .await;
    eprintln!(
        "joiner alive in the victim's view after {:?}",
        join_started.elapsed()
    );
    rss.check("after the join");
    api_answers(victim, "after the join").await;

    // 5. Everyone (the joiner too) ends up alive in every real view, and no
    //    real peer was ever declared dead.
    let mut all_real = real.clone();
    all_real.push(&joiner);
    wait_until(
        Duration::from_secs(10),
        "every real peer to see every other alive",
        || async { all_see_all_alive(&all_real).await.then_some(()) },
    )
    .await;

    for observer in &all_real {
        if let Err(why) = no_false_death(observer, &all_real).await {
            panic!("false death: {why}");
        }
    }

    // 6. The attack did not flood the log: remote-caused warnings are rate
    //    limited.
    let log = victim.log();
    let warnings = log
        .lines()
        .skip(log_before)
        .filter(|l| l.contains("WARN"))
        .count();
    let status = victim.status().await.expect("victim status");
    eprintln!(
        "victim after the attack: peak RSS {} MiB, {} WARN lines, {} fds; net {:?}; driver {:?}; {:?} elapsed",
        rss.peak >> 20,
        warnings,
        open_fds(victim.pid()),
        status.net,
        status.driver,
        started.elapsed()
    );
    // Each rate limiter lets at most 17 lines through per minute, whatever
    // the number of attacking identities (48 here).
    assert!(
        warnings <= 40,
        "{warnings} WARN lines during the attack:\n{}",
        log.lines()
            .skip(log_before)
            .filter(|l| l.contains("WARN"))
            .take(20)
            .collect::<Vec<_>>()
            .join("\n")
    );
    drop(half_open);
    drop(held);
    drop(attackers);
    drop(prober);
    if std::env::var_os("ROGUE_KEEP_DIR").is_none() {
        let _ = std::fs::remove_dir_all(&root);
    } else {
        eprintln!("kept {}", root.display());
    }
}
