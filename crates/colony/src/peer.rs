//! The public handle of a running peer: what applications and the local
//! API hold. It talks to the driver only through [`crate::command`]; the
//! peer is started by `crate::daemon`.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use colony_core::divisible::{AppError, AppRegistry};
use colony_core::ft::FaultTolerance;
use colony_core::job::{JobId, JobState, JobView, SubmitOptions};
use colony_core::membership::MemberState;
use colony_core::pipe::{PipeError, Receipt, TrafficClass};
use libp2p::PeerId;
use tokio::sync::{mpsc, oneshot, watch};

use crate::command::Command;
pub use crate::command::InboundMessage;
use crate::error::ColonyError;
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
/// How long a submission waits for the job's home to confirm holding it.
const ACKNOWLEDGE_TIMEOUT: Duration = Duration::from_secs(10);

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

    /// Whether a majority of the job's home is known to hold it, so that
    /// it survives the loss of any minority of its home, its primary
    /// included ([`JobView::replicated`]).
    pub fn replicated(&self) -> bool {
        self.updates.borrow().as_ref().is_some_and(|v| v.replicated)
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

/// A module published by [`Peer::publish_module`].
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PublishedModule {
    /// The application name jobs use: `wasm:<id>`.
    pub app: String,
    /// The module's id (BLAKE3 of its bytes, in hex).
    pub id: String,
    /// The module's home as this peer saw it (other peers only).
    pub home: Vec<PeerId>,
    /// The home members that said they stored it in time.
    pub stored_by: Vec<PeerId>,
}

/// A running peer. Cheap to clone; the peer runs until [`Peer::shutdown`]
/// or until every clone is dropped.
#[derive(Clone)]
pub struct Peer {
    pub(crate) commands: mpsc::Sender<Command>,
    pub(crate) info: Arc<PeerInfo>,
    pub(crate) peer_id: PeerId,
    pub(crate) inbox: Arc<Mutex<Option<mpsc::Receiver<InboundMessage>>>>,
    pub(crate) apps: AppRegistry,
    /// The object types it hosts, to read and write their calls as JSON.
    pub(crate) object_types: colony_core::object::ObjectTypes,
    /// Its WebAssembly guests, if it runs any.
    pub(crate) guests: Option<Arc<colony_wasm::GuestApps>>,
    /// Its identity, to sign the modules it publishes.
    pub(crate) signer: Arc<libp2p::identity::Keypair>,
    /// The token of its local API, if it serves one.
    pub(crate) api_token: Option<Arc<str>>,
    /// Limits and counters of values stored in chunks.
    pub(crate) values: Arc<crate::space::Values>,
}

/// A handle that does not keep its peer running: background tasks of the
/// library hold one, and end once every [`Peer`] is dropped.
pub(crate) struct WeakPeer {
    commands: mpsc::WeakSender<Command>,
    info: Arc<PeerInfo>,
    peer_id: PeerId,
    inbox: Arc<Mutex<Option<mpsc::Receiver<InboundMessage>>>>,
    apps: AppRegistry,
    object_types: colony_core::object::ObjectTypes,
    guests: Option<Arc<colony_wasm::GuestApps>>,
    signer: Arc<libp2p::identity::Keypair>,
    api_token: Option<Arc<str>>,
    values: Arc<crate::space::Values>,
}

impl WeakPeer {
    /// The peer, while some handle keeps it running.
    pub(crate) fn upgrade(&self) -> Option<Peer> {
        Some(Peer {
            commands: self.commands.upgrade()?,
            info: self.info.clone(),
            peer_id: self.peer_id,
            inbox: self.inbox.clone(),
            apps: self.apps.clone(),
            object_types: self.object_types.clone(),
            guests: self.guests.clone(),
            signer: self.signer.clone(),
            api_token: self.api_token.clone(),
            values: self.values.clone(),
        })
    }
}

impl Peer {
    /// A handle to this peer that does not keep it running.
    pub(crate) fn downgrade(&self) -> WeakPeer {
        WeakPeer {
            commands: self.commands.downgrade(),
            info: self.info.clone(),
            peer_id: self.peer_id,
            inbox: self.inbox.clone(),
            apps: self.apps.clone(),
            object_types: self.object_types.clone(),
            guests: self.guests.clone(),
            signer: self.signer.clone(),
            api_token: self.api_token.clone(),
            values: self.values.clone(),
        }
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
        self.api_token.as_deref()
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
        self.command(Command::Members { reply }).await?;
        rx.await.map_err(|_| ColonyError::Stopped)
    }

    /// The peer's status and counters.
    pub async fn status(&self) -> Result<StatusInfo, ColonyError> {
        let (reply, rx) = oneshot::channel();
        self.command(Command::Status { reply }).await?;
        let mut status = rx.await.map_err(|_| ColonyError::Stopped)?;
        let values = &self.values;
        status.space.max_value_bytes = values.max_value_bytes;
        status.space.chunked_writes = values.chunked_writes.load(Ordering::Relaxed);
        status.space.coded_writes = values.coded_writes.load(Ordering::Relaxed);
        status.space.shard_repairs = values.shard_repairs.load(Ordering::Relaxed);
        status.space.shard_orphans_dropped = values.orphans_dropped.load(Ordering::Relaxed);
        status.space.chunk_cleanup_failures = values.cleanup_failures.load(Ordering::Relaxed);
        Ok(status)
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

    /// Publishes a WebAssembly module: checks it is a guest this peer can
    /// run, keeps it in its module store, signs its id with this peer's key
    /// (vouching for the code, for hosts that trust this peer), and pushes
    /// module and signature to the module's home, the peers closest to its
    /// hash that run guests, waiting up to `wait` for them to store it.
    /// Fails if this peer runs native applications only.
    pub async fn publish_module(
        &self,
        bytes: Vec<u8>,
        wait: Duration,
    ) -> Result<PublishedModule, ColonyError> {
        let guests = self.guests()?;
        let signer = self.signer.clone();
        let (app, id, bytes, signatures) = tokio::task::spawn_blocking(move || {
            let module = guests.publish(&bytes)?;
            let id = module.id().to_string();
            let signature = crate::trust::sign(&signer, &id).map_err(AppError::Guest)?;
            let signatures = crate::driver::store_module(&guests, &bytes, &[signature])
                .map_err(AppError::Guest)?;
            let app = colony_core::divisible::App::name(module.as_ref()).to_string();
            Ok::<_, AppError>((app, id, bytes, signatures))
        })
        .await
        .map_err(|_| ColonyError::Stopped)??;
        let (reply, answer) = oneshot::channel();
        self.command(Command::PublishModule {
            id: id.clone(),
            bytes,
            signatures,
            reply,
        })
        .await?;
        let home = answer.await.map_err(|_| ColonyError::Stopped)?;
        let deadline = Instant::now() + wait;
        let stored_by = loop {
            let (reply, answer) = oneshot::channel();
            self.command(Command::ModuleHolders {
                id: id.clone(),
                reply,
            })
            .await?;
            let holders = answer.await.map_err(|_| ColonyError::Stopped)?;
            if holders.len() >= home.len() || Instant::now() >= deadline {
                break holders;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        Ok(PublishedModule {
            app,
            id,
            home,
            stored_by,
        })
    }

    /// Publishes module `id` (`wasm:<id>` or the bare hash) under this
    /// peer's signature, fetching it from its home first if this peer does
    /// not hold it: what running someone else's published module takes.
    pub async fn publish_module_by_id(
        &self,
        id: &str,
        wait: Duration,
    ) -> Result<PublishedModule, ColonyError> {
        let guests = self.guests()?;
        let module = id
            .strip_prefix(colony_wasm::APP_PREFIX)
            .unwrap_or(id)
            .parse::<colony_wasm::ModuleId>()
            .map_err(|e| ColonyError::App(AppError::UnknownApp(e)))?;
        let read = |guests: Arc<colony_wasm::GuestApps>| async move {
            tokio::task::spawn_blocking(move || guests.store().get(&module))
                .await
                .map_err(|_| ColonyError::Stopped)?
                .map_err(|e| ColonyError::App(AppError::Guest(e.to_string())))
        };
        let bytes = match read(guests.clone()).await? {
            Some(bytes) => bytes,
            None => {
                self.fetch_module(&module.to_string()).await?;
                read(guests)
                    .await?
                    .ok_or_else(|| ColonyError::App(AppError::ModuleMissing(module.to_string())))?
            }
        };
        self.publish_module(bytes, wait).await
    }

    /// Fetches module `id` (its bare hash) from its home into this peer's
    /// module store, verified and checked to be a guest; an error says what
    /// each home member answered.
    pub async fn fetch_module(&self, id: &str) -> Result<(), ColonyError> {
        let (reply, answer) = oneshot::channel();
        self.command(Command::FetchModule {
            id: id.to_string(),
            reply,
        })
        .await?;
        answer
            .await
            .map_err(|_| ColonyError::Stopped)?
            .map_err(|why| {
                ColonyError::App(AppError::Guest(format!(
                    "cannot fetch module {id} from its home: {why}"
                )))
            })
    }

    /// Whether this peer's module store holds module `id`.
    pub fn holds_module(&self, id: &str) -> bool {
        let (Some(guests), Ok(module)) = (&self.guests, id.parse::<colony_wasm::ModuleId>()) else {
            return false;
        };
        guests.store().get(&module).ok().flatten().is_some()
    }

    pub(crate) async fn command(&self, command: Command) -> Result<(), ColonyError> {
        self.commands
            .send(command)
            .await
            .map_err(|_| ColonyError::Stopped)
    }

    fn guests(&self) -> Result<Arc<colony_wasm::GuestApps>, ColonyError> {
        self.guests.clone().ok_or_else(|| {
            ColonyError::App(AppError::Guest(
                "this peer runs native applications only (start it with guests enabled)".into(),
            ))
        })
    }

    /// What this peer can run: its native applications and the guest
    /// modules it holds.
    pub fn apps_info(&self) -> crate::info::AppsInfo {
        let modules = self
            .guests
            .as_ref()
            .and_then(|guests| guests.store().list().ok())
            .unwrap_or_default();
        crate::info::AppsInfo {
            native: self.apps.names().into_iter().map(String::from).collect(),
            guests_enabled: self.guests.is_some(),
            modules: modules
                .into_iter()
                .map(|m| crate::info::ModuleInfo {
                    app: m.id.app_name(),
                    size_bytes: m.size,
                })
                .collect(),
        }
    }

    /// Submits a job: `app` with command-line style `args`, protected by
    /// the default fault tolerance (checkpoints every second, two copies on
    /// a home of three), with no deadline, its namespace in the object
    /// space destroyed when it ends. Bad parameters or an unknown
    /// application are reported here, before anything runs.
    pub async fn submit_job(&self, app: &str, args: &[String]) -> Result<JobHandle, ColonyError> {
        self.submit_job_with(
            app,
            args,
            FaultTolerance::default(),
            SubmitOptions::default(),
        )
        .await
    }

    /// Submits a job protected by `ft` (protocol, TTC, checkpoint storage,
    /// home size), as chosen in a deployment descriptor, with `options`: a
    /// deadline past which it is cancelled (its primary keeps watch, so
    /// this holds after the submitter has gone), and whether its namespace
    /// in the object space (`job-<id>`) is kept when it ends. Incoherent
    /// settings, bad parameters or an unknown application are reported
    /// here, before anything runs.
    pub async fn submit_job_with(
        &self,
        app: &str,
        args: &[String],
        ft: FaultTolerance,
        options: SubmitOptions,
    ) -> Result<JobHandle, ColonyError> {
        ft.validate_for_job()?;
        let submit = || async {
            let (reply, rx) = oneshot::channel();
            self.command(Command::SubmitJob {
                app: app.to_string(),
                args: args.to_vec(),
                ft,
                options,
                reply,
            })
            .await?;
            rx.await.map_err(|_| ColonyError::Stopped)
        };
        let ticket = match submit().await? {
            // A published module this peer does not hold (or held damaged):
            // fetched from its home, then submitted.
            Err(AppError::ModuleMissing(id)) => {
                self.fetch_module(&id).await?;
                submit().await??
            }
            answer => answer?,
        };
        let handle = JobHandle {
            id: ticket.job,
            updates: ticket.updates,
        };
        // Acknowledged once a majority of its home holds it: a crash of its
        // primary (this peer, often) then loses nothing. Watched through a
        // copy of the receiver, so the caller's `changed` still sees every
        // view this wait saw.
        let mut watching = handle.updates.clone();
        let acknowledged = async {
            loop {
                let settled = watching
                    .borrow_and_update()
                    .as_ref()
                    .is_some_and(|v| v.replicated || v.state != JobState::Running);
                if settled {
                    return Ok::<_, ColonyError>(());
                }
                watching.changed().await.map_err(|_| ColonyError::Stopped)?;
            }
        };
        match tokio::time::timeout(ACKNOWLEDGE_TIMEOUT, acknowledged).await {
            Ok(result) => result?,
            Err(_) => tracing::warn!(
                job = %handle.id,
                "the job's home did not confirm holding it within {} s: it runs, but a crash of its primary now would lose it",
                ACKNOWLEDGE_TIMEOUT.as_secs()
            ),
        }
        Ok(handle)
    }

    /// The status of any job, asked of its home; `None` if no home knows it.
    pub async fn job(&self, id: JobId) -> Result<Option<JobView<PeerId>>, ColonyError> {
        let (reply, rx) = oneshot::channel();
        self.command(Command::QueryJob { job: id, reply }).await?;
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
        self.command(Command::CancelJob { job: id, reply }).await?;
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
        self.command(Command::ListJobs { reply }).await?;
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

    /// Stops this peer at once without a word to anyone, as a killed
    /// process would: its connections drop, nothing is handed over, and
    /// the others find it dead through their failure detectors. For
    /// benchmarks and tests of what survives a crash in one process.
    pub async fn crash(&self) {
        let _ = self.commands.send(Command::Crash).await;
        self.commands.closed().await;
    }
}
