//! The driver: one tokio task per peer that owns the swarm and runs the
//! peer's sans-IO [`Node`] (colony-core): it feeds the node frames,
//! commands, unit events and timers, and executes what it asks with
//! sockets, threads, the disk and the real clock. The routing between the
//! cores is the node's, the same the simulator runs.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use colony_core::job::{JobId, JobView};
use colony_core::membership::MemberState;
use colony_core::node::{NamespaceKept, Node, NodeInput, NodeOutput, Notice};
use colony_core::pipe::{PipeError, Receipt};
use colony_core::runner::UnitEvent;
use colony_net::{
    Behaviour, BehaviourEvent, FrameSender, LogLimiter, NetEvent, Priority, DEFAULT_WARN_KEYS,
};
use colony_store::PeerStore;
use futures::StreamExt;
use libp2p::swarm::dial_opts::DialOpts;
use libp2p::swarm::{ConnectionId, SwarmEvent};
use libp2p::{identify, Multiaddr, PeerId, Swarm};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info, warn};

use crate::command::{Command, InboundMessage};
use crate::compute::ComputePool;
use crate::config::PeerConfig;
use crate::host;
use crate::info::{DriverCounters, MemberInfo, PeerInfo, StatusInfo};

/// What woke the driver.
enum Wake {
    Command(Option<Command>),
    /// An object-space request of a running unit.
    UnitSpace(Option<Command>),
    Net(Option<NetEvent>),
    Swarm(SwarmEvent<BehaviourEvent>),
    Compute(Option<UnitEvent>),
    Persisted(Option<jobs::Persisted>),
    SpaceWritten(Option<space::Written>),
    ShardWritten(Option<shards::ShardWritten>),
    ObjectWritten(Option<objects::ObjectWritten>),
    ObjectRan(Option<colony_core::object::ObjectRun>),
    Module(Option<NodeInput<PeerId>>),
    Load(Option<crate::volunteer::LoadSample>),
    InboxReady,
    Timer,
}

/// Longest a leaving peer waits for its units' hand-backs to be
/// acknowledged and its job records to be taken over before it leaves
/// anyway (its units are then reissued from their last checkpoints).
const HAND_OVER_TIMEOUT: Duration = Duration::from_secs(5);

/// Checkpoint writes in flight at most: their completions fit the bounded
/// channel that brings them back, so a completion is never dropped; a
/// write beyond it is refused before anything is acknowledged (the worker
/// re-sends it).
const PERSISTS_IN_FLIGHT: usize = 1024;

/// Unit events waiting for the driver at most; a worker thread waits
/// (at its step boundary) while the channel is full.
const COMPUTE_EVENTS: usize = 1024;
/// Object-space requests of running units waiting for the driver; a unit
/// whose request finds the queue full is told the space is unavailable.
const UNIT_SPACE_REQUESTS: usize = 4096;

mod jobs;
mod mesh;
mod modules;
mod objects;
mod shards;
mod space;
mod volunteer;

pub(crate) use jobs::{overlay_key, restore_checkpoints};
pub(crate) use modules::store_module;
pub(crate) use objects::restore_objects;
pub(crate) use shards::restore_shards;
pub(crate) use space::restore_space;
pub(crate) use volunteer::Volunteer;

/// Most inputs of one kind handled before outputs are drained, so a burst
/// of frames is acknowledged with one ack per channel.
const BATCH: usize = 256;

/// Everything a driver is built from: the network, the stores, the node
/// and the channels to the peer's handles. Built by [`Driver::builder`].
pub(crate) struct DriverBuilder {
    config: PeerConfig,
    swarm: Swarm<Behaviour>,
    frames: FrameSender,
    net_events: mpsc::Receiver<NetEvent>,
    node: Node<PeerId>,
    info: Arc<PeerInfo>,
    store: Option<PeerStore>,
    checkpoints: Option<colony_store::CheckpointStore>,
    guests: Option<Arc<colony_wasm::GuestApps>>,
    commands: Option<mpsc::Receiver<Command>>,
    inbox: Option<mpsc::Sender<InboundMessage>>,
    volunteer: Option<Volunteer>,
}

impl DriverBuilder {
    /// The owner's computing preferences at work, if anything is watched.
    pub(crate) fn volunteer(mut self, volunteer: Option<Volunteer>) -> Self {
        self.volunteer = volunteer;
        self
    }

    /// The peer's identity and counter store.
    pub(crate) fn store(mut self, store: PeerStore) -> Self {
        self.store = Some(store);
        self
    }

    /// Where durable checkpoint pieces go.
    pub(crate) fn checkpoints(mut self, checkpoints: colony_store::CheckpointStore) -> Self {
        self.checkpoints = Some(checkpoints);
        self
    }

    /// The peer's WebAssembly guests, if it runs any.
    pub(crate) fn guests(mut self, guests: Option<Arc<colony_wasm::GuestApps>>) -> Self {
        self.guests = guests;
        self
    }

    /// Where commands from the peer's handles arrive, and where application
    /// messages go.
    pub(crate) fn handles(
        mut self,
        commands: mpsc::Receiver<Command>,
        inbox: mpsc::Sender<InboundMessage>,
    ) -> Self {
        self.commands = Some(commands);
        self.inbox = Some(inbox);
        self
    }

    /// The driver; `None` if a part is missing.
    pub(crate) fn build(self) -> Option<Driver> {
        let (persisted_tx, persisted_rx) = mpsc::channel(PERSISTS_IN_FLIGHT);
        let (compute_tx, compute_events) = mpsc::channel(COMPUTE_EVENTS);
        let (unit_space_tx, unit_space_rx) = mpsc::channel(UNIT_SPACE_REQUESTS);
        let (module_tx, module_rx) = mpsc::channel(modules::MODULE_TASKS);
        Some(Driver {
            guests: self.guests,
            module_tx,
            module_rx,
            module_tasks: 0,
            module_holders: BTreeMap::new(),
            module_waiters: BTreeMap::new(),
            compute: ComputePool::new(compute_tx, unit_space_tx, self.config.volunteer.nice),
            compute_events,
            unit_space_rx,
            job_watchers: HashMap::new(),
            job_queries: HashMap::new(),
            job_cancels: HashMap::new(),
            checkpoints: self.checkpoints?,
            volunteer: self.volunteer,
            persisted_tx,
            persisted_rx,
            persists_in_flight: 0,
            space: space::SpaceIo::new(),
            shards: shards::ShardIo::new(),
            objects: objects::ObjectIo::new(
                std::thread::available_parallelism().map_or(1, |n| n.get()),
                self.config.volunteer.nice,
            ),
            warnings: LogLimiter::new(self.config.net.warn_interval, DEFAULT_WARN_KEYS),
            store: self.store?,
            commands: self.commands?,
            inbox: self.inbox?,
            config: self.config,
            swarm: self.swarm,
            frames: self.frames,
            node: self.node,
            info: self.info,
            net_events: self.net_events,
            receipts: HashMap::new(),
            bootstrap_dials: HashMap::new(),
            counters: DriverCounters::default(),
            crashed: false,
            mesh: mesh::MeshIo::default(),
        })
    }
}

pub(crate) struct Driver {
    config: PeerConfig,
    swarm: Swarm<Behaviour>,
    store: PeerStore,
    frames: FrameSender,
    node: Node<PeerId>,
    info: Arc<PeerInfo>,
    commands: mpsc::Receiver<Command>,
    net_events: mpsc::Receiver<NetEvent>,
    inbox: mpsc::Sender<InboundMessage>,
    /// Application messages in flight, by the node's token.
    receipts: HashMap<u64, oneshot::Sender<Result<Receipt, PipeError>>>,
    bootstrap_dials: HashMap<ConnectionId, usize>,
    counters: DriverCounters,
    /// Warnings a remote peer can cause: one per peer (or cause) per interval.
    warnings: LogLimiter<(Option<PeerId>, &'static str)>,
    compute: ComputePool,
    compute_events: mpsc::Receiver<UnitEvent>,
    /// Object-space requests of running units (only `Command::Space`).
    unit_space_rx: mpsc::Receiver<Command>,
    job_watchers: HashMap<JobId, tokio::sync::watch::Sender<Option<JobView<PeerId>>>>,
    /// Queries from handles waiting for the node's answer.
    job_queries: HashMap<JobId, Vec<oneshot::Sender<Option<JobView<PeerId>>>>>,
    /// Cancellations waiting for the primary's answer.
    job_cancels: HashMap<JobId, Vec<oneshot::Sender<Result<(), String>>>>,
    /// Durable checkpoint pieces (group-committed).
    checkpoints: colony_store::CheckpointStore,
    persisted_tx: mpsc::Sender<jobs::Persisted>,
    persisted_rx: mpsc::Receiver<jobs::Persisted>,
    /// Checkpoint writes whose completion has not come back yet.
    persists_in_flight: usize,
    /// Space partitions on their way to disk, and the handles' space
    /// requests and locks.
    space: space::SpaceIo,
    shards: shards::ShardIo,
    /// Object requests in flight and object records being written.
    objects: objects::ObjectIo,
    /// The peer's WebAssembly guests, if it runs any.
    guests: Option<Arc<colony_wasm::GuestApps>>,
    /// Answers of module reads and stores, for the node.
    module_tx: mpsc::Sender<NodeInput<PeerId>>,
    module_rx: mpsc::Receiver<NodeInput<PeerId>>,
    /// Module reads and stores running.
    module_tasks: usize,
    /// Home members that stored modules this peer published, by module
    /// (bounded: [`modules::PUBLISHES_KEPT`]).
    module_holders: BTreeMap<String, Vec<PeerId>>,
    /// Callers waiting for a module to be fetched.
    module_waiters: BTreeMap<String, Vec<oneshot::Sender<Result<(), String>>>>,
    /// The owner's computing preferences at work (`--when idle`, a daily
    /// limit); `None` computes always.
    volunteer: Option<Volunteer>,
    /// Asked to stop as a crash would ([`Command::Crash`]).
    crashed: bool,
    /// The mesh role taken for the handles, and what it told.
    mesh: mesh::MeshIo,
}

impl Driver {
    /// Starts building the driver of `node` over `swarm`.
    pub(crate) fn builder(
        config: PeerConfig,
        swarm: Swarm<Behaviour>,
        frames: FrameSender,
        net_events: mpsc::Receiver<NetEvent>,
        node: Node<PeerId>,
        info: Arc<PeerInfo>,
    ) -> DriverBuilder {
        DriverBuilder {
            config,
            swarm,
            frames,
            net_events,
            node,
            info,
            store: None,
            checkpoints: None,
            guests: None,
            commands: None,
            inbox: None,
            volunteer: None,
        }
    }

    pub(crate) async fn run(mut self) {
        let mut shutdown_reply: Option<oneshot::Sender<()>> = None;
        let mut leave_deadline: Option<Instant> = None;
        loop {
            let next = self.node.poll_timeout().unwrap_or_else(Instant::now);
            let wake_at = tokio::time::Instant::from_std(next);
            // Only application messages can wait for the inbox; job
            // messages are handled as they arrive.
            let deliverable = self.node.has_app_message();
            let woke = tokio::select! {
                command = self.commands.recv() => Wake::Command(command),
                event = self.net_events.recv() => Wake::Net(event),
                event = self.swarm.select_next_some() => Wake::Swarm(event),
                event = self.compute_events.recv() => Wake::Compute(event),
                request = self.unit_space_rx.recv() => Wake::UnitSpace(request),
                done = self.persisted_rx.recv() => Wake::Persisted(done),
                done = self.space.written_rx.recv() => Wake::SpaceWritten(done),
                done = self.shards.done_rx.recv() => Wake::ShardWritten(done),
                done = self.objects.done_rx.recv() => Wake::ObjectWritten(done),
                run = self.objects.ran_rx.recv() => Wake::ObjectRan(run),
                done = self.module_rx.recv() => Wake::Module(done),
                sample = Volunteer::next_sample(&mut self.volunteer) => Wake::Load(sample),
                // The permit is released at once; the slot it proved free is
                // taken again below with try_reserve (only this task sends).
                _ = self.inbox.reserve(), if deliverable => Wake::InboxReady,
                _ = tokio::time::sleep_until(wake_at) => Wake::Timer,
            };
            match woke {
                Wake::Command(Some(command)) => {
                    shutdown_reply = shutdown_reply.or(self.handle_command(command));
                    for _ in 0..BATCH {
                        let Ok(command) = self.commands.try_recv() else {
                            break;
                        };
                        shutdown_reply = shutdown_reply.or(self.handle_command(command));
                    }
                }
                Wake::UnitSpace(Some(request)) => {
                    // Units send only space requests: never a shutdown.
                    let _ = self.handle_command(request);
                    for _ in 0..BATCH {
                        let Ok(request) = self.unit_space_rx.try_recv() else {
                            break;
                        };
                        let _ = self.handle_command(request);
                    }
                }
                Wake::UnitSpace(None) => {}
                Wake::Command(None) => {
                    // Every handle dropped: leave quietly.
                    self.node.handle(Instant::now(), NodeInput::Leave);
                    self.flush();
                    break;
                }
                Wake::Net(Some(event)) => {
                    self.handle_net_event(event);
                    for _ in 0..BATCH {
                        let Ok(event) = self.net_events.try_recv() else {
                            break;
                        };
                        self.handle_net_event(event);
                    }
                }
                Wake::Net(None) => {}
                Wake::Swarm(event) => self.handle_swarm_event(event),
                Wake::Compute(Some(event)) => {
                    self.handle_compute_event(event);
                    for _ in 0..BATCH {
                        let Ok(event) = self.compute_events.try_recv() else {
                            break;
                        };
                        self.handle_compute_event(event);
                    }
                }
                Wake::Compute(None) => {}
                Wake::Persisted(Some(done)) => self.on_persisted(done),
                Wake::Persisted(None) => {}
                Wake::SpaceWritten(Some(done)) => {
                    self.on_space_written(done);
                    for _ in 0..BATCH {
                        let Ok(done) = self.space.written_rx.try_recv() else {
                            break;
                        };
                        self.on_space_written(done);
                    }
                }
                Wake::SpaceWritten(None) => {}
                Wake::ShardWritten(Some(done)) => self.on_shard_written(done),
                Wake::ShardWritten(None) => {}
                Wake::ObjectWritten(Some(done)) => self.on_object_written(done),
                Wake::ObjectWritten(None) => {}
                Wake::ObjectRan(Some(run)) => {
                    self.on_object_ran(run);
                    for _ in 0..BATCH {
                        let Ok(run) = self.objects.ran_rx.try_recv() else {
                            break;
                        };
                        self.on_object_ran(run);
                    }
                }
                Wake::ObjectRan(None) => {}
                Wake::Module(Some(answer)) => self.on_module_done(answer),
                Wake::Module(None) => {}
                Wake::Load(sample) => self.on_load_sample(sample),
                Wake::InboxReady => {
                    self.deliver();
                }
                Wake::Timer => self.node.handle_timeout(Instant::now()),
            }
            if self.crashed {
                // Nothing more leaves this peer: its connections drop with
                // the swarm, and the others find it dead as after a kill.
                warn!(peer_id = %self.info.peer_id, "crashed on request");
                return;
            }
            self.flush();
            // Writes that waited for room in a full store queue.
            self.drain_space_backlog();
            if shutdown_reply.is_some() {
                let deadline = *leave_deadline.get_or_insert(Instant::now() + HAND_OVER_TIMEOUT);
                let handed_over = self.node.has_handed_over();
                if handed_over || Instant::now() >= deadline {
                    if !handed_over {
                        warn!(
                            still_held = ?self.node.not_handed_over(),
                            waited_s = HAND_OVER_TIMEOUT.as_secs(),
                            "leaving before every unit was handed back and every job record handed over: those units restart from their last checkpoints"
                        );
                    }
                    info!(peer_id = %self.info.peer_id, "leaving the network");
                    self.node.handle(Instant::now(), NodeInput::Leave);
                    self.flush();
                    break;
                }
            }
        }
        // Give the leave announcements a moment to reach the wire.
        let deadline = tokio::time::Instant::now() + Duration::from_millis(200);
        while tokio::time::Instant::now() < deadline {
            tokio::select! {
                _ = self.swarm.select_next_some() => {}
                _ = tokio::time::sleep_until(deadline) => {}
            }
        }
        self.node.handle(Instant::now(), NodeInput::Shutdown);
        self.flush();
        info!(peer_id = %self.info.peer_id, "peer stopped");
        if let Some(reply) = shutdown_reply {
            let _ = reply.send(());
        }
    }

    /// Hands application messages to the inbox while it has room.
    fn deliver(&mut self) -> bool {
        let mut delivered = false;
        while self.node.has_app_message() {
            let permit = match self.inbox.try_reserve() {
                Ok(permit) => permit,
                Err(mpsc::error::TrySendError::Full(())) => break,
                Err(mpsc::error::TrySendError::Closed(())) => {
                    // Nobody reads the inbox any more.
                    self.node.pop_app_message();
                    delivered = true;
                    continue;
                }
            };
            if let Some(d) = self.node.pop_app_message() {
                delivered = true;
                permit.send(InboundMessage {
                    from: d.from,
                    class: d.class,
                    seq: d.seq,
                    payload: d.payload,
                });
            }
        }
        delivered
    }

    /// Handles one command; returns the reply channel of a shutdown.
    fn handle_command(&mut self, command: Command) -> Option<oneshot::Sender<()>> {
        let now = Instant::now();
        match command {
            Command::Send {
                to,
                class,
                payload,
                reply,
            } => match self.node.send_app(now, to, class, &payload) {
                Ok(token) => {
                    self.receipts.insert(token, reply);
                }
                Err(error) => {
                    let _ = reply.send(Err(error));
                }
            },
            Command::Members { reply } => {
                let _ = reply.send(self.members(now));
            }
            Command::Status { reply } => {
                let _ = reply.send(self.status());
            }
            Command::SubmitJob {
                app,
                args,
                ft,
                options,
                reply,
            } => {
                let _ = reply.send(self.submit_job(app, args, ft, options));
            }
            Command::CancelJob { job, reply } => self.cancel_job(job, reply),
            Command::QueryJob { job, reply } => self.query_job(now, job, reply),
            Command::ListJobs { reply } => {
                let _ = reply.send(self.node.jobs().homed_views(now));
            }
            Command::PublishModule {
                id,
                bytes,
                signatures,
                reply,
            } => {
                let _ = reply.send(self.publish_module(now, id, bytes, signatures));
            }
            Command::ModuleHolders { id, reply } => {
                let holders = self.module_holders.get(&id).cloned().unwrap_or_default();
                let _ = reply.send(holders);
            }
            Command::FetchModule { id, reply } => self.fetch_module(now, id, reply),
            Command::Space {
                op,
                timeout,
                keep,
                to,
                reply,
            } => self.space_request(now, op, timeout, keep, to, reply),
            Command::Objects { reply } => {
                let _ = reply.send(self.node.objects().objects(now));
            }
            Command::Object {
                request,
                timeout,
                reply,
            } => self.object_request(now, request, timeout, reply),
            Command::ShardHolders { write, max, reply } => {
                let _ = reply.send(self.node.space().shard_holders(write, max));
            }
            Command::HeldShardWrites { after, max, reply } => {
                let _ = reply.send(self.node.space().held_shard_writes(after, max));
            }
            Command::SpaceReadCached {
                key,
                timeout,
                reply,
            } => self.space_read_cached(now, key, timeout, reply),
            Command::SpaceRelease { key, token } => self.release_space_lock(now, key, token),
            Command::Mesh { request, reply } => self.mesh_request(now, request, reply),
            Command::Crash => self.crashed = true,
            Command::Shutdown { reply } => {
                info!(peer_id = %self.info.peer_id, running_units = self.node.jobs().running_units(), "leaving: handing units and job records over");
                self.node.handle(now, NodeInput::HandOver);
                return Some(reply);
            }
        }
        None
    }

    fn handle_net_event(&mut self, event: NetEvent) {
        let now = Instant::now();
        match event {
            NetEvent::Frame { peer, bytes } => self.node.handle_frame(now, peer, &bytes),
            NetEvent::Unreachable { peer, reason } => {
                debug!(%peer, %reason, "peer unreachable");
                self.node.handle(now, NodeInput::Unreachable { peer });
            }
        }
    }

    /// Whether a log line a remote peer caused (a warning, or a notice it
    /// can repeat at will) may be written now; `Some(n)`: yes, and `n` like
    /// it were held back since the last one.
    fn may_warn(&mut self, peer: Option<PeerId>, cause: &'static str) -> Option<u64> {
        let verdict = self.warnings.check((peer, cause), Instant::now());
        if verdict.is_none() {
            self.counters.warnings_suppressed += 1;
        }
        verdict
    }

    fn handle_swarm_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        let now = Instant::now();
        match event {
            SwarmEvent::NewListenAddr { address, .. } => {
                debug!(%address, "listening");
                let mut addrs: Vec<String> = self.node.membership().local().addrs.clone();
                let full = address.with(libp2p::multiaddr::Protocol::P2p(
                    *self.swarm.local_peer_id(),
                ));
                if !addrs.contains(&full.to_string()) {
                    addrs.push(full.to_string());
                    self.node.handle(now, NodeInput::SetAddrs(addrs));
                }
            }
            SwarmEvent::ConnectionEstablished {
                peer_id,
                connection_id,
                ..
            } => {
                if let Some(index) = self.bootstrap_dials.remove(&connection_id) {
                    info!(%peer_id, entry = index, "connected to bootstrap peer");
                }
            }
            SwarmEvent::OutgoingConnectionError {
                connection_id,
                peer_id,
                error,
            } => {
                if let Some(index) = self.bootstrap_dials.remove(&connection_id) {
                    warn!(entry = index, addr = %self.config.bootstrap[index], %error, "bootstrap entry unreachable; failing over");
                    self.node.handle(now, NodeInput::DialFailed { index });
                } else if let Some(peer) = peer_id {
                    debug!(%peer, %error, "dial failed");
                }
            }
            SwarmEvent::IncomingConnectionError {
                send_back_addr,
                error,
                ..
            } => {
                self.counters.rejected_connections += 1;
                // Nothing proves who is behind a failed handshake: one line
                // per interval for all of them.
                if let Some(suppressed) = self.may_warn(None, "rejected connection") {
                    warn!(from = %send_back_addr, %error, suppressed, "rejected an incoming connection");
                }
            }
            SwarmEvent::Behaviour(event) => {
                colony_net::feed_discovery(&mut self.swarm, &self.config.net.network, &event);
                if let BehaviourEvent::Identify(event) = &event {
                    if let identify::Event::Received { peer_id, info, .. } = event.as_ref() {
                        if info.protocol_version
                            == colony_net::identify_protocol_version(&self.config.net.network)
                        {
                            self.node.handle(now, NodeInput::Contact { peer: *peer_id });
                        } else {
                            self.counters.foreign_peers += 1;
                            let theirs: String = info.protocol_version.chars().take(100).collect();
                            let p2p = libp2p::multiaddr::Protocol::P2p(*peer_id);
                            if self
                                .config
                                .bootstrap
                                .iter()
                                .any(|a| a.iter().any(|p| p == p2p))
                            {
                                warn!(peer = %peer_id, theirs = %theirs, ours = %self.config.net.network, "bootstrap peer belongs to another network; disconnecting (check --network)");
                            } else if let Some(suppressed) = self.may_warn(None, "foreign peer") {
                                // Identities are free: one line per interval for all.
                                info!(peer = %peer_id, version = %theirs, suppressed, "peer of another network; disconnecting");
                            }
                            self.counters.last_foreign_protocol = Some(theirs);
                            let _ = self.swarm.disconnect_peer_id(*peer_id);
                        }
                    }
                }
            }
            _ => {}
        }
    }

    /// Executes everything the node asks, until it is quiet.
    fn flush(&mut self) {
        let now = Instant::now();
        loop {
            while let Some(out) = self.node.poll() {
                self.on_output(now, out);
            }
            if !self.node.has_app_message() || !self.deliver() {
                break;
            }
        }
    }

    fn on_output(&mut self, now: Instant, out: NodeOutput<PeerId>) {
        match out {
            NodeOutput::Transmit { to, class, bytes } => {
                let priority = class.map_or(Priority::CONTROL, |c| Priority(c.0));
                self.frames.send(to, priority, Bytes::from(bytes));
            }
            // Finding out whether a dead member is back (a healed
            // partition): the dials that failed meanwhile may have pruned
            // its addresses from Kademlia, where the dialer looks them up.
            NodeOutput::Redial { peer, addrs } => self.add_member_addrs(&peer, &addrs),
            NodeOutput::DialBootstrap { index } => self.dial_bootstrap(now, index),
            NodeOutput::Explore => {
                debug!(
                    live = self.node.membership().live_count(),
                    noa = self.config.acquaintances.noa,
                    "below NOA; exploring"
                );
                self.swarm
                    .behaviour_mut()
                    .kad
                    .get_closest_peers(PeerId::random());
            }
            NodeOutput::PersistIncarnation(incarnation) => {
                if let Err(error) = self.store.record_incarnation(incarnation) {
                    warn!(%error, "cannot persist incarnation");
                }
            }
            NodeOutput::Member(event) => {
                info!(peer = %event.peer, from = ?event.from, to = ?event.to, "membership change");
                match event.to {
                    MemberState::Alive => self.add_member_addrs(&event.peer, &event.addrs),
                    MemberState::Dead | MemberState::Left => {
                        self.frames.forget(&event.peer);
                        // Its connections are dead too (a partition leaves
                        // TCP connections open but silent, behind long
                        // retransmission backoffs): close them, so that
                        // frames sent to find out whether it is back dial
                        // afresh rather than queue on a stale connection.
                        let _ = self.swarm.disconnect_peer_id(event.peer);
                    }
                    MemberState::Suspect => {}
                }
            }
            NodeOutput::SampleStats => self.sample_stats(now),
            NodeOutput::UnitsDone { total } => {
                if let Err(error) = self.store.set_counter("units_done_total", total) {
                    warn!(%error, "cannot record the unit counter");
                }
            }
            NodeOutput::AppSettled { token, result } => {
                if let Some(reply) = self.receipts.remove(&token) {
                    let _ = reply.send(result);
                }
            }
            NodeOutput::Notice(notice) => self.on_notice(notice),
            NodeOutput::Mesh(notice) => self.on_mesh_notice(notice),
            NodeOutput::TraceJobMessage { .. } => {}
            out @ (NodeOutput::PersistShard { .. } | NodeOutput::UnpersistShards { .. }) => {
                self.on_shard_output(out)
            }
            out @ (NodeOutput::PersistSpace { .. }
            | NodeOutput::UnpersistSpace { .. }
            | NodeOutput::SpaceAnswer { .. }
            | NodeOutput::SpaceLockLost(_)) => self.on_space_output(now, out),
            out @ (NodeOutput::ObjectAnswer { .. }
            | NodeOutput::PersistObject { .. }
            | NodeOutput::RunObject(_)) => self.on_object_output(out),
            out @ (NodeOutput::ServeModule { .. } | NodeOutput::ModuleReceived { .. }) => {
                self.on_module_output(out)
            }
            job => self.on_job_output(now, job),
        }
    }

    /// Logs what the node dropped or refused: a line a remote peer can
    /// cause is rate-limited (the node has counted it already).
    fn on_notice(&mut self, notice: Notice<PeerId>) {
        match notice {
            Notice::JobNamespaceKept { job, because } => {
                let namespace = colony_core::space::job_namespace(job);
                let remove = format!("remove it with `colony space ns-rm {namespace}`");
                match because {
                    NamespaceKept::SubmitterAsked => {
                        info!(%job, %namespace, "the finished job's namespace is kept, as its submitter asked; {remove}")
                    }
                    NamespaceKept::DestroyFailed(error) => {
                        warn!(%job, %namespace, %error, "the finished job's namespace could not be destroyed, so its objects stay; {remove}")
                    }
                }
            }
            Notice::Malformed { from, what, error } => {
                let cause = match what {
                    "frame" => "malformed frame",
                    "job message" => "malformed job message",
                    _ => "unknown payload kind",
                };
                if let Some(suppressed) = self.may_warn(Some(from), cause) {
                    warn!(peer = %from, %error, suppressed, "malformed {what} dropped");
                }
            }
            Notice::WrongVersion { from, theirs, ours } => {
                if let Some(suppressed) = self.may_warn(Some(from), "wrong version") {
                    warn!(peer = %from, theirs, ours, suppressed, "frame of another wire protocol version refused (upgrade the older peer)");
                }
            }
            Notice::ForgedSender { from, claimed } => {
                if let Some(suppressed) = self.may_warn(Some(from), "forged sender") {
                    warn!(peer = %from, %claimed, suppressed, "membership message with a forged sender dropped");
                }
            }
            Notice::ForgedRecordRefuted { version } => {
                if let Some(suppressed) = self.may_warn(None, "forged record") {
                    warn!(version, suppressed, "a record about this peer that it never published was gossiped (forged, or left by an earlier run that kept no incarnation); refuted with a higher incarnation");
                }
            }
            Notice::Oversized { from, kind, size } => {
                debug!(peer = %from, %kind, size, "job message over its size limit dropped");
            }
            Notice::TooLargeToSend { to, status, error } => {
                if status {
                    // Answers to queries, which any member may ask: not logged each.
                    debug!(peer = %to, %error, "job status over its size limit; sent as a failure");
                } else {
                    warn!(peer = %to, %error, "job message over its size limit; failing its job");
                }
            }
            Notice::FrameNotSent { to, error } => warn!(peer = %to, %error, "frame not sent"),
            Notice::UnitNotRunnable { job, unit, error } => {
                warn!(%job, unit, %error, "cannot run unit")
            }
            Notice::ModuleUnavailable { id, why } => {
                warn!(module = %id, %why, "no peer could give a guest module; its jobs fail here");
                self.module_fetched(&id, Err(why));
            }
            Notice::ModuleReady { id } => self.module_fetched(&id, Ok(())),
            Notice::ModuleHeld { id, by } => self.module_held(id, by),
            Notice::UnsolicitedModule { from } => {
                if let Some(suppressed) = self.may_warn(Some(from), "unsolicited module") {
                    warn!(peer = %from, suppressed, "module message nobody asked for dropped");
                }
            }
            Notice::MeshRefused { from, message } => {
                if let Some(suppressed) = self.may_warn(Some(from), "refused mesh message") {
                    warn!(peer = %from, message, suppressed, "mesh message from a peer outside the membership refused");
                }
            }
            Notice::ObjectRefused { from, message } => {
                if let Some(suppressed) = self.may_warn(Some(from), "refused object message") {
                    warn!(peer = %from, message, suppressed, "object message from a peer outside the membership refused");
                }
            }
            Notice::Refused { from, message, why } => {
                if let Some(suppressed) = self.may_warn(Some(from), "refused job message") {
                    warn!(peer = %from, message, %why, suppressed, "job message refused");
                }
            }
        }
    }

    fn dial_bootstrap(&mut self, now: Instant, index: usize) {
        let Some(addr) = self.config.bootstrap.get(index).cloned() else {
            return;
        };
        let named = addr.iter().find_map(|p| match p {
            libp2p::multiaddr::Protocol::P2p(peer) => Some(peer),
            _ => None,
        });
        if named.is_some_and(|peer| self.swarm.is_connected(&peer)) {
            // Another connection to a peer this one is connected to finds
            // nobody new, and piles up against the per-peer limit.
            debug!(entry = index, %addr, "bootstrap entry connected already; not dialing it");
            return;
        }
        let opts = DialOpts::unknown_peer_id().address(addr.clone()).build();
        let connection_id = opts.connection_id();
        debug!(entry = index, %addr, "dialing bootstrap entry");
        match self.swarm.dial(opts) {
            Ok(()) => {
                self.bootstrap_dials.insert(connection_id, index);
            }
            Err(error) => {
                warn!(entry = index, %addr, %error, "cannot dial bootstrap entry; failing over");
                self.node.handle(now, NodeInput::DialFailed { index });
            }
        }
    }

    /// Gives Kademlia (and so the dialer) a member's listen addresses.
    fn add_member_addrs(&mut self, peer: &PeerId, addrs: &[String]) {
        for addr in addrs {
            if let Ok(addr) = addr.parse::<Multiaddr>() {
                let addr: Multiaddr = addr
                    .into_iter()
                    .filter(|p| !matches!(p, libp2p::multiaddr::Protocol::P2p(_)))
                    .collect();
                self.swarm.behaviour_mut().kad.add_address(peer, addr);
            }
        }
    }

    /// Samples the host into this peer's published statistics, with its
    /// computing policy and whether it computes now.
    fn sample_stats(&mut self, now: Instant) {
        let mut stats = self.node.membership().local().stats.clone();
        host::sample(&mut stats, self.config.cores_offered);
        stats.when = self.config.volunteer.when;
        stats.paused = self.volunteer.as_ref().and_then(Volunteer::paused);
        stats.computing = self.node.jobs().computing();
        self.node.handle(now, NodeInput::SetStats(stats));
    }

    fn members(&self, now: Instant) -> Vec<MemberInfo> {
        let now_ms = host::unix_now_ms();
        let to_unix_ms =
            |t: Instant| now_ms.saturating_sub(now.saturating_duration_since(t).as_millis() as u64);
        let membership = self.node.membership();
        let local = membership.local();
        let mut out = vec![MemberInfo {
            peer_id: local.peer.to_string(),
            local: true,
            state: local.state,
            incarnation: local.incarnation,
            addrs: local.addrs.clone(),
            stats: local.stats.clone(),
            state_since_unix_ms: 0,
            last_heard_ms_ago: Some(0),
            times_declared_dead: 0,
            phi: None,
        }];
        out.extend(membership.view(now).into_iter().map(|m| {
            MemberInfo {
                peer_id: m.record.peer.to_string(),
                local: false,
                state: m.record.state,
                incarnation: m.record.incarnation,
                addrs: m.record.addrs,
                stats: m.record.stats,
                state_since_unix_ms: to_unix_ms(m.state_since),
                last_heard_ms_ago: m
                    .last_heard
                    .map(|t| now.saturating_duration_since(t).as_millis() as u64),
                times_declared_dead: m.times_declared_dead,
                phi: m.phi.filter(|p| p.is_finite()),
            }
        }));
        out
    }

    fn status(&self) -> StatusInfo {
        let node_counters = self.node.counters();
        StatusInfo {
            peer: (*self.info).clone(),
            incarnation: self.node.membership().local().incarnation,
            joined: self.node.acquaintances().joined(),
            live_members: self.node.membership().live_count(),
            net: self.frames.counters().snapshot(),
            pipes: self.node.pipes().stats().clone(),
            driver: DriverCounters {
                malformed_frames: node_counters.malformed_frames
                    + node_counters.wrong_version_frames,
                wrong_version_frames: node_counters.wrong_version_frames,
                forged_senders: node_counters.forged_senders,
                forged_records_refuted: node_counters.forged_records_refuted,
                oversized_job_messages: node_counters.oversized_job_messages,
                refused_object_messages: node_counters.refused_object_messages,
                checkpoint_pieces_corrupt: self.checkpoints.stats().pieces_corrupt,
                unidentified_peers: self.swarm.behaviour().identify.disconnected(),
                ..self.counters.clone()
            },
            jobs: crate::info::JobCounters {
                running_units: self.node.jobs().running_units(),
                refused_messages: self.node.jobs().refused_messages(),
            },
            modules: crate::info::ModuleCounters {
                guests_enabled: self.guests.is_some(),
                fetched: node_counters.modules_fetched,
                fetched_from_home: node_counters.modules_fetched_from_home,
                homed: node_counters.modules_homed,
                served: node_counters.modules_served,
                unsolicited: node_counters.unsolicited_modules,
                held: self
                    .guests
                    .as_ref()
                    .and_then(|g| g.store().list().ok())
                    .map_or(0, |l| l.len()),
            },
            compute: self.compute_info(),
            space: self.space_info(),
            objects: self.node.objects().stats().clone(),
            mesh: self.mesh_info(),
        }
    }
}
