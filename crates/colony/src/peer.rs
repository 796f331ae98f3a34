//! The public handle of a running peer.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use colony_core::acquaintance::Acquaintances;
use colony_core::divisible::AppRegistry;
use colony_core::ft::FaultTolerance;
use colony_core::job::Jobs;
use colony_core::job::{JobId, JobState, JobView};
use colony_core::membership::{MemberState, Membership, PeerStats};
use colony_core::node::{Node, NodeConfig};
use colony_core::pipe::{PipeError, Pipes, Receipt, TrafficClass};
use futures::StreamExt;
use libp2p::identity::Keypair;
use libp2p::multiaddr::Protocol;
use libp2p::swarm::SwarmEvent;
use libp2p::{Multiaddr, PeerId};
use rand::SeedableRng;
use tokio::sync::{mpsc, oneshot, watch};
use tracing::info;

use crate::command::Command;
pub use crate::command::InboundMessage;
use crate::config::PeerConfig;
use crate::driver::Driver;
use crate::error::ColonyError;
use crate::host;
use crate::info::{MemberInfo, PeerInfo, StatusInfo};

/// Longest job deadline accepted: 30 days.
pub const MAX_JOB_DEADLINE: Duration = Duration::from_secs(30 * 24 * 3600);

/// A job deadline given in seconds (`colony run --deadline`, the API's
/// `deadline_s`): a finite number in (0, [`MAX_JOB_DEADLINE`]].
pub fn job_deadline_from_secs(secs: f64) -> Result<Duration, String> {
    let max = MAX_JOB_DEADLINE.as_secs_f64();
    if secs.is_finite() && secs > 0.0 && secs <= max {
        Ok(Duration::from_secs_f64(secs))
    } else {
        Err(format!(
            "must be a number of seconds in (0, {max}], got {secs}"
        ))
    }
}

/// Longest wait for a job's primary to answer a cancellation.
const CANCEL_TIMEOUT: Duration = Duration::from_secs(10);

/// A message accepted for sending; resolves to its [`Receipt`] or the error
/// that ended it.
pub struct PendingReceipt {
    rx: oneshot::Receiver<Result<Receipt, PipeError>>,
}

impl Future for PendingReceipt {
    type Output = Result<Receipt, PipeError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.rx)
            .poll(cx)
            .map(|r| r.unwrap_or(Err(PipeError::Shutdown)))
    }
}

/// A job submitted from this peer: its id and a feed of its status.
pub struct JobHandle {
    id: JobId,
    updates: watch::Receiver<Option<JobView<PeerId>>>,
}

impl JobHandle {
    /// The job's id; `colony result <id>` on any peer finds it.
    pub fn id(&self) -> JobId {
        self.id
    }

    /// The latest status received, if any.
    pub fn latest(&self) -> Option<JobView<PeerId>> {
        self.updates.borrow().clone()
    }

    /// Waits for the next status update.
    pub async fn changed(&mut self) -> Result<Option<JobView<PeerId>>, ColonyError> {
        self.updates
            .changed()
            .await
            .map_err(|_| ColonyError::Stopped)?;
        Ok(self.latest())
    }

    /// Waits until the job is done or failed.
    pub async fn finished(mut self) -> Result<JobView<PeerId>, ColonyError> {
        loop {
            if let Some(view) = self.latest() {
                if !matches!(view.state, JobState::Running) {
                    return Ok(view);
                }
            }
            self.changed().await?;
        }
    }
}

/// A running peer. Cheap to clone; the peer runs until [`Peer::shutdown`]
/// or until every clone is dropped.
#[derive(Clone)]
pub struct Peer {
    commands: mpsc::Sender<Command>,
    info: Arc<PeerInfo>,
    peer_id: PeerId,
    inbox: Arc<Mutex<Option<mpsc::Receiver<InboundMessage>>>>,
    apps: AppRegistry,
    api_token: Option<crate::api::ApiToken>,
}

impl Peer {
    /// Opens the data directory, starts listening, joins through the
    /// bootstrap list and serves the local API. Returns once listening, with
    /// `peer.json` written.
    pub async fn start(config: PeerConfig) -> Result<Peer, ColonyError> {
        // Refuse an exposed API before anything starts.
        if let Some(addr) = config.api {
            crate::api::check_bind_addr(addr, config.api_allow_remote)?;
        }
        let store = colony_store::PeerStore::open(&config.data_dir)?;
        let key_bytes = store.load_or_create_identity(|| {
            Keypair::generate_ed25519()
                .to_protobuf_encoding()
                .unwrap_or_default()
        })?;
        let keypair =
            Keypair::from_protobuf_encoding(&key_bytes).map_err(|e| ColonyError::BadIdentity {
                dir: config.data_dir.clone(),
                reason: e.to_string(),
            })?;
        let peer_id = keypair.public().to_peer_id();
        // Opened before anything is announced, so a damaged file stops the
        // start with its error.
        let checkpoints = colony_store::CheckpointStore::open(
            &config.data_dir.join(colony_store::CHECKPOINTS_FILE),
        )?;
        let incarnation = store.next_incarnation()?;

        let mut swarm = colony_net::build_swarm(keypair, &config.net)?;
        for addr in &config.listen {
            swarm
                .listen_on(addr.clone())
                .map_err(|e| ColonyError::Listen {
                    addr: addr.to_string(),
                    reason: e.to_string(),
                })?;
        }
        let listen_addrs = wait_for_listeners(&mut swarm, &config, peer_id).await?;

        let (net_tx, net_rx) = mpsc::channel(8192);
        let control = swarm.behaviour().stream.new_control();
        let frames = colony_net::start_frames(control, &config.net, net_tx)?;

        let (api_listener, api_token) = match config.api {
            Some(addr) => {
                let token = crate::api::load_or_create_token(&config.data_dir)?;
                let listener = tokio::net::TcpListener::bind(addr)
                    .await
                    .map_err(|source| ColonyError::Api { addr, source })?;
                (Some(listener), Some(token))
            }
            None => (None, None),
        };
        let api_addr = match &api_listener {
            Some(listener) => Some(listener.local_addr().map_err(|source| ColonyError::Api {
                addr: config.api.unwrap_or_else(|| ([127, 0, 0, 1], 0).into()),
                source,
            })?),
            None => None,
        };

        let info = Arc::new(PeerInfo {
            peer_id: peer_id.to_string(),
            network: config.net.network.clone(),
            listen_addrs: listen_addrs.clone(),
            api_addr,
            pid: std::process::id(),
        });

        let now = Instant::now();
        let mut stats = PeerStats {
            session_start_unix_s: host::unix_now_s(),
            units_done_total: store.counter("units_done_total")?,
            jobs_done_total: store.counter("jobs_done_total")?,
            ..PeerStats::default()
        };
        host::sample(&mut stats, config.cores_offered);
        let membership = Membership::new(
            peer_id,
            incarnation,
            listen_addrs.iter().map(|a| a.to_string()).collect(),
            stats,
            config.membership.clone(),
            rand::Rng::random(&mut rand::rngs::StdRng::from_os_rng()),
            now,
        );
        // Sessions rise across restarts: start time in microseconds.
        let pipes = Pipes::new(
            config.pipes.clone(),
            host::unix_now_ms() * 1000 + u64::from(now.elapsed().subsec_micros()),
        );
        let acquaintances =
            Acquaintances::new(config.acquaintances.clone(), config.bootstrap.len(), now);
        let mut job_config = config.jobs.clone();
        job_config.cores = membership.local().stats.cores_offered.max(1);
        let mut jobs = Jobs::new(
            peer_id,
            job_config,
            config.apps.clone(),
            now,
            rand::Rng::random(&mut rand::rngs::StdRng::from_os_rng()),
            crate::driver::overlay_key,
        );
        jobs.set_submit_policy(config.accept_jobs_from.clone());

        let (cmd_tx, cmd_rx) = mpsc::channel(config.command_capacity);
        let (inbox_tx, inbox_rx) = mpsc::channel(config.inbox_capacity);
        let peer = Peer {
            commands: cmd_tx,
            info: info.clone(),
            peer_id,
            inbox: Arc::new(Mutex::new(Some(inbox_rx))),
            apps: config.apps.clone(),
            api_token: api_token.clone(),
        };

        write_peer_json(&config, &info)?;
        if let (Some(listener), Some(bound), Some(token)) = (api_listener, api_addr, api_token) {
            crate::api::serve(
                listener,
                bound,
                peer.clone(),
                token,
                config.api_limits.clone(),
            );
        }
        info!(
            peer_id = %peer_id,
            network = %config.net.network,
            incarnation,
            listen = ?listen_addrs.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
            api = ?api_addr,
            "peer started"
        );

        crate::driver::restore_checkpoints(&mut jobs, &checkpoints, Instant::now());
        let node_config = NodeConfig {
            send_timeout: config.send_timeout,
            max_frame_bytes: config.net.max_frame_bytes,
            stats_interval: config.stats_interval,
            job_limits: config.jobs.limits,
            trace_job_messages: false,
        };
        let node = Node::new(node_config, membership, pipes, acquaintances, jobs, now);
        let driver = Driver::builder(config, swarm, frames, net_rx, node, info)
            .store(store)
            .checkpoints(checkpoints)
            .handles(cmd_rx, inbox_tx)
            .build()
            .ok_or(ColonyError::Stopped)?;
        tokio::spawn(driver.run());
        Ok(peer)
    }

    /// `colony peer --repair`: repairs the stores of `data_dir` before a
    /// start, with redb's own repair (which may roll back a damaged latest
    /// commit), or by moving a damaged file aside and keeping what can still
    /// be read from it. Says what it did to each file. Fails, leaving the
    /// file in place, if the identity cannot be read back: then restore
    /// `peer.redb` from a backup, or use a new data directory.
    pub fn repair(
        data_dir: &std::path::Path,
    ) -> Result<Vec<colony_store::RepairReport>, ColonyError> {
        let checkpoints = data_dir.join(colony_store::CHECKPOINTS_FILE);
        Ok(vec![
            colony_store::PeerStore::repair(data_dir, find_keypair)?,
            colony_store::CheckpointStore::repair(&checkpoints)?,
        ])
    }

    /// This peer's id.
    pub fn peer_id(&self) -> PeerId {
        self.peer_id
    }

    /// How to reach this peer (also in `peer.json`).
    pub fn info(&self) -> &PeerInfo {
        &self.info
    }

    /// The token its local HTTP API asks for (`Authorization: Bearer …`),
    /// also in `DATA_DIR/api.token`; `None` if it serves no API.
    pub fn api_token(&self) -> Option<&str> {
        self.api_token.as_ref().map(|t| t.as_str())
    }

    /// The receiving end of this peer's inbox; `None` after the first call.
    pub fn take_inbox(&self) -> Option<mpsc::Receiver<InboundMessage>> {
        self.inbox.lock().ok().and_then(|mut inbox| inbox.take())
    }

    /// Queues `payload` for `to` and returns once it is accepted (waiting
    /// only if the peer's command queue is full). Messages submitted one
    /// after another to the same peer and class are delivered in that order.
    pub async fn submit(
        &self,
        to: PeerId,
        class: TrafficClass,
        payload: Vec<u8>,
    ) -> Result<PendingReceipt, PipeError> {
        let (reply, rx) = oneshot::channel();
        self.commands
            .send(Command::Send {
                to,
                class,
                payload,
                reply,
            })
            .await
            .map_err(|_| PipeError::Shutdown)?;
        Ok(PendingReceipt { rx })
    }

    /// Sends `payload` to `to` reliably: resolves once the receiving peer
    /// has accepted it, or with the error that ended it — the peer died, the
    /// deadline passed, the message is too large.
    pub async fn send(
        &self,
        to: PeerId,
        class: TrafficClass,
        payload: Vec<u8>,
    ) -> Result<Receipt, PipeError> {
        self.submit(to, class, payload).await?.await
    }

    /// The membership view, this peer first.
    pub async fn members(&self) -> Result<Vec<MemberInfo>, ColonyError> {
        let (reply, rx) = oneshot::channel();
        self.commands
            .send(Command::Members { reply })
            .await
            .map_err(|_| ColonyError::Stopped)?;
        rx.await.map_err(|_| ColonyError::Stopped)
    }

    /// The peer's status and counters.
    pub async fn status(&self) -> Result<StatusInfo, ColonyError> {
        let (reply, rx) = oneshot::channel();
        self.commands
            .send(Command::Status { reply })
            .await
            .map_err(|_| ColonyError::Stopped)?;
        rx.await.map_err(|_| ColonyError::Stopped)
    }

    /// Waits until `peer` is alive in this peer's view.
    pub async fn wait_for_member(&self, peer: PeerId, within: Duration) -> Result<(), ColonyError> {
        let wanted = peer.to_string();
        let deadline = Instant::now() + within;
        loop {
            let members = self.members().await?;
            if members
                .iter()
                .any(|m| m.peer_id == wanted && m.state == MemberState::Alive)
            {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(ColonyError::Timeout {
                    what: format!("{peer} to be alive"),
                    after: within,
                });
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The applications this peer runs.
    pub fn apps(&self) -> &AppRegistry {
        &self.apps
    }

    /// Submits a job: `app` with command-line style `args`, protected by
    /// the default fault tolerance (checkpoints every second, two copies on
    /// a home of three). Bad parameters or an unknown application are
    /// reported here, before anything runs.
    pub async fn submit_job(&self, app: &str, args: &[String]) -> Result<JobHandle, ColonyError> {
        self.submit_job_with(app, args, FaultTolerance::default(), None)
            .await
    }

    /// Submits a job protected by `ft` (protocol, TTC, checkpoint storage,
    /// home size), as chosen in a deployment descriptor, and cancelled if it
    /// runs longer than `deadline` (its primary keeps watch, so this holds
    /// after the submitter has gone). Incoherent settings, bad parameters or
    /// an unknown application are reported here, before anything runs.
    pub async fn submit_job_with(
        &self,
        app: &str,
        args: &[String],
        ft: FaultTolerance,
        deadline: Option<Duration>,
    ) -> Result<JobHandle, ColonyError> {
        ft.validate()?;
        let (reply, rx) = oneshot::channel();
        self.commands
            .send(Command::SubmitJob {
                app: app.to_string(),
                args: args.to_vec(),
                ft,
                deadline,
                reply,
            })
            .await
            .map_err(|_| ColonyError::Stopped)?;
        let ticket = rx.await.map_err(|_| ColonyError::Stopped)??;
        Ok(JobHandle {
            id: ticket.job,
            updates: ticket.updates,
        })
    }

    /// The status of any job, asked of its home; `None` if no home knows it.
    pub async fn job(&self, id: JobId) -> Result<Option<JobView<PeerId>>, ColonyError> {
        let (reply, rx) = oneshot::channel();
        self.commands
            .send(Command::QueryJob { job: id, reply })
            .await
            .map_err(|_| ColonyError::Stopped)?;
        match tokio::time::timeout(Duration::from_secs(10), rx).await {
            Ok(Ok(view)) => Ok(view),
            Ok(Err(_)) => Err(ColonyError::Stopped),
            Err(_) => Err(ColonyError::Timeout {
                what: format!("the home of job {id} to answer"),
                after: Duration::from_secs(10),
            }),
        }
    }

    /// Cancels a job: the home stops handing out work, its workers stop
    /// their units within a step, and it ends `cancelled`. Only the job's
    /// submitter (this peer, if it submitted the job) or the operator of its
    /// primary (this peer, if it is the primary) may; others get
    /// [`ColonyError::CancelRefused`] with the primary's reason.
    pub async fn cancel_job(&self, id: JobId) -> Result<(), ColonyError> {
        let (reply, rx) = oneshot::channel();
        self.commands
            .send(Command::CancelJob { job: id, reply })
            .await
            .map_err(|_| ColonyError::Stopped)?;
        match tokio::time::timeout(CANCEL_TIMEOUT, rx).await {
            Ok(Ok(Ok(()))) => Ok(()),
            Ok(Ok(Err(reason))) => Err(ColonyError::CancelRefused { job: id, reason }),
            Ok(Err(_)) => Err(ColonyError::Stopped),
            Err(_) => Err(ColonyError::Timeout {
                what: format!("the primary of job {id} to answer the cancellation"),
                after: CANCEL_TIMEOUT,
            }),
        }
    }

    /// Jobs whose home is this peer.
    pub async fn homed_jobs(&self) -> Result<Vec<JobView<PeerId>>, ColonyError> {
        let (reply, rx) = oneshot::channel();
        self.commands
            .send(Command::ListJobs { reply })
            .await
            .map_err(|_| ColonyError::Stopped)?;
        rx.await.map_err(|_| ColonyError::Stopped)
    }

    /// Leaves the network gracefully (members see `left` at once) and stops
    /// the peer.
    pub async fn shutdown(&self) {
        let (reply, rx) = oneshot::channel();
        if self
            .commands
            .send(Command::Shutdown { reply })
            .await
            .is_ok()
        {
            let _ = rx.await;
        }
    }
}

/// Polls the swarm until every listener reports an address; returns them
/// with `/p2p/<id>` appended.
async fn wait_for_listeners(
    swarm: &mut libp2p::Swarm<colony_net::Behaviour>,
    config: &PeerConfig,
    peer_id: PeerId,
) -> Result<Vec<Multiaddr>, ColonyError> {
    let mut addrs: Vec<Multiaddr> = Vec::new();
    let mut listeners_up = std::collections::HashSet::new();
    let deadline = tokio::time::Instant::now() + config.listen_timeout;
    while listeners_up.len() < config.listen.len() {
        let event = tokio::time::timeout_at(deadline, swarm.select_next_some())
            .await
            .map_err(|_| ColonyError::Listen {
                addr: format!("{:?}", config.listen),
                reason: "no listener came up in time".into(),
            })?;
        match event {
            SwarmEvent::NewListenAddr {
                listener_id,
                address,
            } => {
                listeners_up.insert(listener_id);
                addrs.push(address.with(Protocol::P2p(peer_id)));
            }
            SwarmEvent::ListenerError { error, .. }
            | SwarmEvent::ListenerClosed {
                reason: Err(error), ..
            } => {
                return Err(ColonyError::Listen {
                    addr: format!("{:?}", config.listen),
                    reason: error.to_string(),
                })
            }
            _ => {}
        }
    }
    Ok(addrs)
}

/// An ed25519 identity key in the raw bytes of a damaged `peer.redb`: its
/// protobuf encoding (key type 1, 64 bytes of secret and public key) whose
/// public half matches its secret, so a damaged copy is never taken for it.
fn find_keypair(bytes: &[u8]) -> Option<Vec<u8>> {
    const PREFIX: [u8; 4] = [0x08, 0x01, 0x12, 0x40];
    bytes
        .windows(PREFIX.len() + 64)
        .filter(|w| w.starts_with(&PREFIX))
        .find(|w| Keypair::from_protobuf_encoding(w).is_ok())
        .map(<[u8]>::to_vec)
}

fn write_peer_json(config: &PeerConfig, info: &PeerInfo) -> Result<(), ColonyError> {
    let path = config.data_dir.join("peer.json");
    let tmp = config.data_dir.join("peer.json.tmp");
    let text = serde_json::to_string_pretty(info).unwrap_or_default();
    std::fs::write(&tmp, text)
        .and_then(|_| std::fs::rename(&tmp, &path))
        .map_err(|source| ColonyError::Io { path, source })
}
