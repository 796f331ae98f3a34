//! The driver: one tokio task per peer that owns the swarm and the protocol
//! cores, feeds them frames, commands and timers, and executes what they ask.
//! The cores never see a clock or a socket; this is the only place that does.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use colony_core::acquaintance::{AcquaintanceOutput, Acquaintances};
use colony_core::job::{JobId, JobView, Jobs};
use colony_core::membership::{self, MemberState, Membership};
use colony_core::pipe::{PipeError, PipeOutput, Pipes, Receipt, TrafficClass};
use colony_core::wire::{self, Frame};
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

use crate::compute::{ComputeEvent, ComputePool};
use crate::config::PeerConfig;
use crate::host;
use crate::info::{DriverCounters, MemberInfo, PeerInfo, StatusInfo};
use crate::peer::InboundMessage;

/// Requests from [`crate::Peer`] handles.
pub(crate) enum Command {
    Send {
        to: PeerId,
        class: TrafficClass,
        payload: Vec<u8>,
        reply: oneshot::Sender<Result<Receipt, PipeError>>,
    },
    Members {
        reply: oneshot::Sender<Vec<MemberInfo>>,
    },
    Status {
        reply: oneshot::Sender<StatusInfo>,
    },
    Shutdown {
        reply: oneshot::Sender<()>,
    },
    SubmitJob {
        app: String,
        args: Vec<String>,
        ft: colony_core::ft::FaultTolerance,
        deadline: Option<Duration>,
        reply: oneshot::Sender<Result<JobTicket, colony_core::divisible::AppError>>,
    },
    CancelJob {
        job: JobId,
        reply: oneshot::Sender<Result<(), String>>,
    },
    QueryJob {
        job: JobId,
        reply: oneshot::Sender<Option<JobView<PeerId>>>,
    },
    ListJobs {
        reply: oneshot::Sender<Vec<JobView<PeerId>>>,
    },
}

/// A submitted job: its id and a feed of its status.
pub(crate) struct JobTicket {
    pub(crate) job: JobId,
    pub(crate) updates: tokio::sync::watch::Receiver<Option<JobView<PeerId>>>,
}

/// First byte of every pipe payload: who it is for.
pub(crate) const TAG_APP: u8 = 0;
/// Job protocol messages, handled by the peer itself.
pub(crate) const TAG_JOBS: u8 = 1;

/// What woke the driver.
enum Wake {
    Command(Option<Command>),
    Net(Option<NetEvent>),
    Swarm(SwarmEvent<BehaviourEvent>),
    Compute(Option<ComputeEvent>),
    Persisted(Option<jobs::Persisted>),
    InboxReady,
    Timer,
}

/// Longest a leaving peer waits for its units' hand-backs to be
/// acknowledged and its job records to be taken over before it leaves
/// anyway (its units are then reissued from their last checkpoints).
const HAND_OVER_TIMEOUT: Duration = Duration::from_secs(5);

mod jobs;

pub(crate) use jobs::{overlay_key, restore_checkpoints};

/// Most inputs of one kind handled before outputs are drained, so a burst
/// of frames is acknowledged with one ack per channel.
const BATCH: usize = 256;

pub(crate) struct Driver {
    config: PeerConfig,
    swarm: Swarm<Behaviour>,
    store: PeerStore,
    frames: FrameSender,
    membership: Membership<PeerId>,
    pipes: Pipes<PeerId>,
    acquaintances: Acquaintances,
    info: Arc<PeerInfo>,
    commands: mpsc::Receiver<Command>,
    net_events: mpsc::Receiver<NetEvent>,
    inbox: mpsc::Sender<InboundMessage>,
    receipts: HashMap<u64, oneshot::Sender<Result<Receipt, PipeError>>>,
    next_token: u64,
    bootstrap_dials: HashMap<ConnectionId, usize>,
    counters: DriverCounters,
    /// Warnings a remote peer can cause: one per peer (or cause) per interval.
    warnings: LogLimiter<(Option<PeerId>, &'static str)>,
    next_stats_at: Instant,
    max_frame_bytes: usize,
    jobs: Jobs<PeerId>,
    compute: ComputePool,
    compute_events: mpsc::Receiver<ComputeEvent>,
    job_watchers: HashMap<JobId, tokio::sync::watch::Sender<Option<JobView<PeerId>>>>,
    job_queries: HashMap<JobId, JobQuery>,
    /// Tokens of job messages in flight, for what to do if one fails.
    job_sends: HashMap<u64, JobSendKind>,
    /// Cancellations waiting for the primary's answer.
    job_cancels: HashMap<JobId, Vec<oneshot::Sender<Result<(), String>>>>,
    /// Durable checkpoint pieces (group-committed).
    checkpoints: colony_store::CheckpointStore,
    persisted_tx: mpsc::UnboundedSender<jobs::Persisted>,
    persisted_rx: mpsc::UnboundedReceiver<jobs::Persisted>,
}

/// A question about a job, asked of its probable home first and, if that
/// peer does not know it, of every other live member.
pub(crate) struct JobQuery {
    waiters: Vec<oneshot::Sender<Option<JobView<PeerId>>>>,
    /// Answers still awaited.
    outstanding: usize,
    /// Whether every member has been asked already.
    fanned_out: bool,
    asked: Vec<PeerId>,
}

/// What a job message in flight was, should its delivery fail.
#[derive(Clone, Copy)]
enum JobSendKind {
    WorkRequest { to: PeerId, job: JobId, free: u32 },
    Query { job: JobId },
    Cancel { to: PeerId, job: JobId },
    Other,
}

impl Driver {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        config: PeerConfig,
        swarm: Swarm<Behaviour>,
        store: PeerStore,
        frames: FrameSender,
        membership: Membership<PeerId>,
        pipes: Pipes<PeerId>,
        acquaintances: Acquaintances,
        info: Arc<PeerInfo>,
        commands: mpsc::Receiver<Command>,
        net_events: mpsc::Receiver<NetEvent>,
        inbox: mpsc::Sender<InboundMessage>,
        jobs: Jobs<PeerId>,
        checkpoints: colony_store::CheckpointStore,
    ) -> Self {
        let max_frame_bytes = config.net.max_frame_bytes;
        let (persisted_tx, persisted_rx) = mpsc::unbounded_channel();
        let (compute_tx, compute_events) = mpsc::channel(1024);
        Driver {
            jobs,
            compute: ComputePool::new(compute_tx),
            compute_events,
            job_watchers: HashMap::new(),
            job_queries: HashMap::new(),
            job_sends: HashMap::new(),
            job_cancels: HashMap::new(),
            checkpoints,
            persisted_tx,
            persisted_rx,
            next_stats_at: Instant::now() + config.stats_interval,
            warnings: LogLimiter::new(config.net.warn_interval, DEFAULT_WARN_KEYS),
            config,
            swarm,
            store,
            frames,
            membership,
            pipes,
            acquaintances,
            info,
            commands,
            net_events,
            inbox,
            receipts: HashMap::new(),
            next_token: 0,
            bootstrap_dials: HashMap::new(),
            counters: DriverCounters::default(),
            max_frame_bytes,
        }
    }

    fn next_wakeup(&self) -> Instant {
        let mut at = self.membership.poll_timeout().min(self.next_stats_at);
        if let Some(t) = self.pipes.poll_timeout() {
            at = at.min(t);
        }
        if let Some(t) = self.acquaintances.poll_timeout() {
            at = at.min(t);
        }
        at.min(self.jobs.poll_timeout())
    }

    pub(crate) async fn run(mut self) {
        let mut shutdown_reply: Option<oneshot::Sender<()>> = None;
        let mut leave_deadline: Option<Instant> = None;
        loop {
            let wake_at = tokio::time::Instant::from_std(self.next_wakeup());
            // Only application messages can wait for the inbox; job
            // messages are handled as they arrive.
            let deliverable = self.pipes.has_delivery();
            let woke = tokio::select! {
                command = self.commands.recv() => Wake::Command(command),
                event = self.net_events.recv() => Wake::Net(event),
                event = self.swarm.select_next_some() => Wake::Swarm(event),
                event = self.compute_events.recv() => Wake::Compute(event),
                done = self.persisted_rx.recv() => Wake::Persisted(done),
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
                Wake::Command(None) => {
                    // Every handle dropped: leave quietly.
                    self.membership
                        .handle(Instant::now(), membership::Input::Leave);
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
                Wake::InboxReady => self.deliver(),
                Wake::Timer => self.handle_timers(),
            }
            self.flush();
            if shutdown_reply.is_some() {
                let deadline = *leave_deadline.get_or_insert(Instant::now() + HAND_OVER_TIMEOUT);
                if self.jobs.has_left() || Instant::now() >= deadline {
                    if !self.jobs.has_left() {
                        warn!(
                            units_not_handed_back = self.jobs.units_to_hand_back(),
                            waited_s = HAND_OVER_TIMEOUT.as_secs(),
                            "leaving before every unit was handed back and every job record handed over: those units restart from their last checkpoints"
                        );
                    }
                    info!(peer_id = %self.info.peer_id, "leaving the network");
                    self.membership
                        .handle(Instant::now(), membership::Input::Leave);
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
        self.pipes.shutdown();
        self.flush();
        info!(peer_id = %self.info.peer_id, "peer stopped");
        if let Some(reply) = shutdown_reply {
            let _ = reply.send(());
        }
    }

    /// Hands ready messages over: job messages to the job core at once,
    /// application messages to the inbox while it has room.
    fn deliver(&mut self) {
        let now = Instant::now();
        while let Some(next) = self.pipes.peek_delivery() {
            match next.payload.first().copied() {
                Some(TAG_JOBS) => {
                    if let Some(d) = self.pipes.pop_delivery() {
                        self.handle_job_payload(now, d.from, &d.payload[1..]);
                    }
                }
                Some(TAG_APP) => {
                    let permit = match self.inbox.try_reserve() {
                        Ok(permit) => permit,
                        Err(mpsc::error::TrySendError::Full(())) => break,
                        Err(mpsc::error::TrySendError::Closed(())) => {
                            // Nobody reads the inbox any more.
                            self.pipes.pop_delivery();
                            continue;
                        }
                    };
                    if let Some(mut d) = self.pipes.pop_delivery() {
                        d.payload.remove(0);
                        permit.send(InboundMessage {
                            from: d.from,
                            class: d.class,
                            seq: d.seq,
                            payload: d.payload,
                        });
                    }
                }
                _ => {
                    if let Some(d) = self.pipes.pop_delivery() {
                        self.counters.malformed_frames += 1;
                        if let Some(suppressed) = self.may_warn(Some(d.from), "unknown tag") {
                            warn!(peer = %d.from, suppressed, "message with an unknown tag dropped");
                        }
                    }
                }
            }
        }
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
            } => {
                if matches!(
                    self.membership.state_of(&to),
                    Some(MemberState::Dead | MemberState::Left)
                ) {
                    let _ = reply.send(Err(PipeError::PeerDead {
                        peer: to.to_string(),
                    }));
                    return None;
                }
                let max = self.config.pipes.max_message_bytes.saturating_sub(1);
                if payload.len() > max {
                    let _ = reply.send(Err(PipeError::MessageTooLarge {
                        size: payload.len(),
                        max,
                    }));
                    return None;
                }
                let mut tagged = Vec::with_capacity(payload.len() + 1);
                tagged.push(TAG_APP);
                tagged.extend_from_slice(&payload);
                let token = self.next_token;
                self.next_token += 1;
                let deadline = now + self.config.send_timeout;
                match self.pipes.send(now, to, class, tagged, token, deadline) {
                    Ok(()) => {
                        self.receipts.insert(token, reply);
                    }
                    Err(error) => {
                        let _ = reply.send(Err(error));
                    }
                }
            }
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
                deadline,
                reply,
            } => {
                let _ = reply.send(self.submit_job(app, args, ft, deadline));
            }
            Command::CancelJob { job, reply } => self.cancel_job(job, reply),
            Command::QueryJob { job, reply } => self.query_job(now, job, reply),
            Command::ListJobs { reply } => {
                let _ = reply.send(self.list_jobs(now));
            }
            Command::Shutdown { reply } => {
                info!(peer_id = %self.info.peer_id, running_units = self.jobs.running_units(), "leaving: handing units and job records over");
                self.jobs.leave(now);
                return Some(reply);
            }
        }
        None
    }

    fn handle_net_event(&mut self, event: NetEvent) {
        let now = Instant::now();
        match event {
            NetEvent::Frame { peer, bytes } => {
                match wire::decode::<Frame<PeerId>>(&bytes, self.max_frame_bytes) {
                    Ok(Frame::Membership(msg)) => {
                        if msg.sender().peer != peer {
                            self.counters.forged_senders += 1;
                            if let Some(suppressed) = self.may_warn(Some(peer), "forged sender") {
                                warn!(%peer, claimed = %msg.sender().peer, suppressed, "membership message with a forged sender dropped");
                            }
                            return;
                        }
                        self.membership
                            .handle(now, membership::Input::Message { from: peer, msg });
                    }
                    Ok(Frame::Pipe(frame)) => self.pipes.handle_frame(now, peer, frame),
                    Err(error) => {
                        self.counters.malformed_frames += 1;
                        if let Some(suppressed) = self.may_warn(Some(peer), "malformed frame") {
                            warn!(%peer, %error, len = bytes.len(), suppressed, "malformed frame dropped");
                        }
                    }
                }
            }
            NetEvent::Unreachable { peer, reason } => {
                debug!(%peer, %reason, "peer unreachable");
                self.membership
                    .handle(now, membership::Input::Unreachable { peer });
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
                let mut addrs: Vec<String> = self.membership.local().addrs.clone();
                let full = address.with(libp2p::multiaddr::Protocol::P2p(
                    *self.swarm.local_peer_id(),
                ));
                if !addrs.contains(&full.to_string()) {
                    addrs.push(full.to_string());
                    self.membership
                        .handle(now, membership::Input::SetAddrs(addrs));
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
                    self.acquaintances.dial_failed(now, index);
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
                            self.membership
                                .handle(now, membership::Input::Contact { peer: *peer_id });
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

    fn handle_timers(&mut self) {
        let now = Instant::now();
        self.membership.handle_timeout(now);
        self.pipes.handle_timeout(now);
        self.acquaintances.handle_timeout(now);
        self.jobs.handle_timeout(now);
        if now >= self.next_stats_at {
            self.next_stats_at = now + self.config.stats_interval;
            let mut stats = self.membership.local().stats.clone();
            host::sample(&mut stats, self.config.cores_offered);
            self.membership
                .handle(now, membership::Input::SetStats(stats));
        }
    }

    /// Executes everything the cores asked for.
    fn flush(&mut self) {
        let now = Instant::now();
        loop {
            let mut progressed = false;
            while let Some(out) = self.membership.poll() {
                progressed = true;
                self.on_membership_output(now, out);
            }
            while let Some(out) = self.pipes.poll() {
                progressed = true;
                self.on_pipe_output(out);
            }
            while let Some(out) = self.acquaintances.poll() {
                progressed = true;
                self.on_acquaintance_output(out);
            }
            while let Some(out) = self.jobs.poll() {
                progressed = true;
                self.on_job_output(now, out);
            }
            if self.pipes.has_delivery() {
                let before = self.pipes.stats().messages_delivered;
                self.deliver();
                progressed |= self.pipes.stats().messages_delivered != before;
            }
            if !progressed {
                break;
            }
        }
    }

    fn send_frame(&mut self, to: PeerId, priority: Priority, frame: &Frame<PeerId>) {
        match wire::encode(frame, self.max_frame_bytes) {
            Ok(bytes) => self.frames.send(to, priority, Bytes::from(bytes)),
            Err(error) => warn!(peer = %to, %error, "frame not sent"),
        }
    }

    fn on_membership_output(&mut self, now: Instant, out: membership::Output<PeerId>) {
        match out {
            membership::Output::Send { to, msg } => {
                if self.membership.state_of(&to) == Some(MemberState::Dead) {
                    // Finding out whether a dead member is back (a healed
                    // partition): the dials that failed meanwhile may have
                    // pruned its addresses from Kademlia, where the dialer
                    // looks them up.
                    let addrs = self.membership.addrs_of(&to).unwrap_or_default().to_vec();
                    self.add_member_addrs(&to, &addrs);
                }
                self.send_frame(to, Priority::CONTROL, &Frame::Membership(msg));
            }
            membership::Output::Event(event) => {
                info!(peer = %event.peer, from = ?event.from, to = ?event.to, "membership change");
                match event.to {
                    MemberState::Alive => self.add_member_addrs(&event.peer, &event.addrs),
                    MemberState::Dead | MemberState::Left => {
                        self.pipes.peer_dead(&event.peer);
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
                self.acquaintances
                    .set_live_members(now, self.membership.live_count());
                self.update_job_members(now);
            }
            membership::Output::PersistIncarnation(incarnation) => {
                if let Err(error) = self.store.record_incarnation(incarnation) {
                    warn!(%error, "cannot persist incarnation");
                }
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

    fn on_pipe_output(&mut self, out: PipeOutput<PeerId>) {
        match out {
            PipeOutput::Transmit { to, class, frame } => {
                let priority = match frame {
                    colony_core::pipe::PipeFrame::Data { .. }
                    | colony_core::pipe::PipeFrame::Fragment { .. } => Priority(class.0),
                    _ => Priority::CONTROL,
                };
                self.send_frame(to, priority, &Frame::Pipe(frame));
            }
            PipeOutput::Delivered { token, receipt } => {
                if let Some(reply) = self.receipts.remove(&token) {
                    let _ = reply.send(Ok(receipt));
                }
                self.job_sends.remove(&token);
            }
            PipeOutput::Failed { token, error } => {
                if let Some(reply) = self.receipts.remove(&token) {
                    let _ = reply.send(Err(error));
                } else if let Some(kind) = self.job_sends.remove(&token) {
                    self.job_send_failed(kind, error);
                }
            }
        }
    }

    fn on_acquaintance_output(&mut self, out: AcquaintanceOutput) {
        let now = Instant::now();
        match out {
            AcquaintanceOutput::DialBootstrap { index } => {
                let Some(addr) = self.config.bootstrap.get(index).cloned() else {
                    return;
                };
                let opts = DialOpts::unknown_peer_id().address(addr.clone()).build();
                let connection_id = opts.connection_id();
                debug!(entry = index, %addr, "dialing bootstrap entry");
                match self.swarm.dial(opts) {
                    Ok(()) => {
                        self.bootstrap_dials.insert(connection_id, index);
                    }
                    Err(error) => {
                        warn!(entry = index, %addr, %error, "cannot dial bootstrap entry; failing over");
                        self.acquaintances.dial_failed(now, index);
                    }
                }
            }
            AcquaintanceOutput::Explore => {
                debug!(
                    live = self.membership.live_count(),
                    noa = self.config.acquaintances.noa,
                    "below NOA; exploring"
                );
                self.swarm
                    .behaviour_mut()
                    .kad
                    .get_closest_peers(PeerId::random());
            }
        }
    }

    fn members(&self, now: Instant) -> Vec<MemberInfo> {
        let now_ms = host::unix_now_ms();
        let to_unix_ms =
            |t: Instant| now_ms.saturating_sub(now.saturating_duration_since(t).as_millis() as u64);
        let local = self.membership.local();
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
        out.extend(self.membership.view(now).into_iter().map(|m| {
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
        StatusInfo {
            peer: (*self.info).clone(),
            incarnation: self.membership.local().incarnation,
            joined: self.acquaintances.joined(),
            live_members: self.membership.live_count(),
            net: self.frames.counters().snapshot(),
            pipes: self.pipes.stats().clone(),
            driver: DriverCounters {
                checkpoint_pieces_corrupt: self.checkpoints.stats().pieces_corrupt,
                unidentified_peers: self.swarm.behaviour().identify.disconnected(),
                ..self.counters.clone()
            },
            jobs: crate::info::JobCounters {
                running_units: self.jobs.running_units(),
                refused_messages: self.jobs.refused_messages(),
            },
        }
    }
}
