//! Shared helpers: real swarms on loopback, each driven by its own task.

use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use colony_net::libp2p::identity::Keypair;
use colony_net::libp2p::swarm::SwarmEvent;
use colony_net::libp2p::{Multiaddr, PeerId, Swarm};
use colony_net::{build_swarm, start_frames, Behaviour, FrameSender, NetConfig, NetEvent};
use futures::StreamExt;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Generous deadline for anything in these tests.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// Runs `fut` with [`DEADLINE`], failing the test with `what` on timeout.
pub async fn within<T>(what: &str, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(DEADLINE, fut).await {
        Ok(v) => v,
        Err(_) => panic!("timed out after {DEADLINE:?} waiting for {what}"),
    }
}

/// Polls `cond` every millisecond until it holds, within [`DEADLINE`].
pub async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    within(what, async {
        while !cond() {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await
}

pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_test_writer()
        .try_init();
}

/// Swarm events the tests care about. The errors' details are read only
/// through `Debug`, in failure messages.
#[derive(Debug)]
#[allow(dead_code)]
pub enum Observed {
    Connected(PeerId),
    Disconnected(PeerId),
    DialFailed(Option<PeerId>, String),
    IncomingFailed(String),
}

type Cmd = Box<dyn FnOnce(&mut Swarm<Behaviour>) + Send>;

pub struct Node {
    pub peer: PeerId,
    pub addr: Multiaddr,
    pub config: NetConfig,
    pub sender: FrameSender,
    pub events: mpsc::Receiver<NetEvent>,
    pub observed: mpsc::Receiver<Observed>,
    pub control: colony_net::libp2p_stream::Control,
    cmds: mpsc::UnboundedSender<Cmd>,
    driver: JoinHandle<()>,
}

impl Drop for Node {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

impl Node {
    /// Builds a swarm listening on loopback, starts the frames and drives it.
    pub async fn start(config: NetConfig) -> Node {
        init_tracing();
        let mut swarm = build_swarm(Keypair::generate_ed25519(), &config).expect("build swarm");
        swarm
            .listen_on("/ip4/127.0.0.1/tcp/0".parse().expect("multiaddr"))
            .expect("listen");
        let addr = within("listen address", async {
            loop {
                if let SwarmEvent::NewListenAddr { address, .. } = swarm.select_next_some().await {
                    break address;
                }
            }
        })
        .await;
        let peer = *swarm.local_peer_id();
        let control = swarm.behaviour().stream.new_control();
        let (events_tx, events) = mpsc::channel(1024);
        let sender = start_frames(control.clone(), &config, events_tx).expect("start frames");
        let (obs_tx, observed) = mpsc::channel(1024);
        let (cmds, mut cmd_rx) = mpsc::unbounded_channel::<Cmd>();
        let driver = tokio::spawn(async move {
            loop {
                tokio::select! {
                    event = swarm.select_next_some() => {
                        let seen = match event {
                            SwarmEvent::ConnectionEstablished { peer_id, .. } => Some(Observed::Connected(peer_id)),
                            SwarmEvent::ConnectionClosed { peer_id, .. } => Some(Observed::Disconnected(peer_id)),
                            SwarmEvent::OutgoingConnectionError { peer_id, error, .. } => Some(Observed::DialFailed(peer_id, error.to_string())),
                            SwarmEvent::IncomingConnectionError { error, .. } => Some(Observed::IncomingFailed(error.to_string())),
                            _ => None,
                        };
                        if let Some(seen) = seen {
                            let _ = obs_tx.try_send(seen);
                        }
                    }
                    cmd = cmd_rx.recv() => match cmd {
                        Some(cmd) => cmd(&mut swarm),
                        None => break,
                    },
                }
            }
        });
        Node {
            peer,
            addr,
            config,
            sender,
            events,
            observed,
            control,
            cmds,
            driver,
        }
    }

    pub fn with_swarm(&self, f: impl FnOnce(&mut Swarm<Behaviour>) + Send + 'static) {
        self.cmds.send(Box::new(f)).expect("driver alive");
    }

    pub fn dial(&self, addr: Multiaddr) {
        self.with_swarm(move |swarm| swarm.dial(addr).expect("dial"));
    }

    /// Waits for the next observed swarm event matching `pred`.
    pub async fn observe(
        &mut self,
        what: &str,
        mut pred: impl FnMut(&Observed) -> bool,
    ) -> Observed {
        within(what, async {
            loop {
                let seen = self.observed.recv().await.expect("driver alive");
                if pred(&seen) {
                    return seen;
                }
            }
        })
        .await
    }

    /// Receives the next frame event (skipping nothing: an Unreachable fails the test).
    pub async fn next_frame(&mut self) -> (PeerId, Bytes) {
        match within("a frame", self.events.recv())
            .await
            .expect("events open")
        {
            NetEvent::Frame { peer, bytes } => (peer, bytes),
            other => panic!("expected a frame, got {other:?}"),
        }
    }
}

/// `dialer` dials `listener`; returns once both sides see the connection.
pub async fn connect(dialer: &mut Node, listener: &mut Node) {
    dialer.dial(listener.addr.clone());
    let l = listener.peer;
    dialer
        .observe(
            "dialer connected",
            |o| matches!(o, Observed::Connected(p) if *p == l),
        )
        .await;
    let d = dialer.peer;
    listener
        .observe(
            "listener connected",
            |o| matches!(o, Observed::Connected(p) if *p == d),
        )
        .await;
}

/// A frame carrying `seq` in its first 8 bytes, `len` bytes long (at least 8).
pub fn numbered(seq: u64, len: usize) -> Bytes {
    let mut v = vec![0u8; len.max(8)];
    v[..8].copy_from_slice(&seq.to_be_bytes());
    Bytes::from(v)
}

pub fn seq_of(frame: &[u8]) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&frame[..8]);
    u64::from_be_bytes(b)
}
