//! One simulated peer: the real sans-IO cores glued together the way the
//! runtime's driver (`crates/colony/src/driver.rs`, `driver/jobs.rs`) glues
//! them — membership and pipe frames as [`wire::Frame`], job messages as
//! pipe payloads behind a tag byte, membership events into the pipes, the
//! acquaintances and the job core, pipe failures back into the job core,
//! timers via `poll_timeout`. What the driver would do with sockets, disks
//! and threads comes out as [`Action`]s for the simulated world.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use colony_core::acquaintance::{AcquaintanceConfig, AcquaintanceOutput, Acquaintances};
use colony_core::divisible::{AppRegistry, SharedVars};
use colony_core::ft::FaultTolerance;
use colony_core::job::{
    JobConfig, JobEvent, JobId, JobMsg, JobOutput, JobState, JobView, Jobs, LocalUnit, MessageKind,
    Piece, PieceData, PieceKey, TooLarge,
};
use colony_core::membership::{self, Event, MemberState, Membership, MembershipConfig, PeerStats};
use colony_core::pipe::{PipeConfig, PipeError, PipeOutput, Pipes, TrafficClass};
use colony_core::wire::{self, Frame};

use crate::exec::{ExecEvent, ExecSpeed, Executor};
use crate::rng::{derive, splitmix64, SimRng};

/// First byte of every pipe payload: application traffic (as the driver's
/// `TAG_APP`).
pub const TAG_APP: u8 = 0;
/// First byte of job protocol payloads (as the driver's `TAG_JOBS`).
pub const TAG_JOBS: u8 = 1;

/// Settings shared by every simulated peer.
#[derive(Clone)]
pub struct PeerSettings {
    /// Membership tuning (the runtime's defaults unless a test changes them).
    pub membership: MembershipConfig,
    /// Pipe tuning.
    pub pipes: PipeConfig,
    /// Bootstrap failover and NOA/TTU.
    pub acquaintances: AcquaintanceConfig,
    /// How long a pipe keeps retrying before `DeadlineExceeded` (the
    /// driver's `send_timeout`).
    pub send_timeout: Duration,
    /// Largest encoded frame (the network's `max_frame_bytes`).
    pub max_frame_bytes: usize,
    /// How often statistics are republished (the driver's `stats_interval`).
    pub stats_interval: Duration,
    /// Mean pause between two application messages a peer sends to a random
    /// live member, to exercise the pipes; `None` sends none.
    pub traffic_interval: Option<Duration>,
    /// Job core tuning.
    pub jobs: JobConfig,
    /// Applications every peer runs.
    pub registry: AppRegistry,
    /// A deliberately broken executor that loses divided parts.
    pub drop_parts: bool,
    /// Log every job message about this unit (verbose runs).
    pub trace_unit: Option<u64>,
    /// Log every replica message (verbose runs).
    pub trace_replicas: bool,
}

impl std::fmt::Debug for AppsDebug<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.0.names())
    }
}

struct AppsDebug<'a>(&'a AppRegistry);

impl Default for PeerSettings {
    fn default() -> Self {
        PeerSettings {
            membership: MembershipConfig::default(),
            pipes: PipeConfig::default(),
            acquaintances: AcquaintanceConfig::default(),
            send_timeout: Duration::from_secs(30),
            max_frame_bytes: 1024 * 1024 + 4 * 1024,
            stats_interval: Duration::from_secs(1),
            traffic_interval: Some(Duration::from_millis(250)),
            jobs: JobConfig::default(),
            registry: crate::app::registry(),
            drop_parts: false,
            trace_unit: None,
            trace_replicas: false,
        }
    }
}

impl std::fmt::Debug for PeerSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerSettings")
            .field("send_timeout", &self.send_timeout)
            .field("traffic_interval", &self.traffic_interval)
            .field("jobs", &self.jobs)
            .field("apps", &AppsDebug(&self.registry))
            .field("drop_parts", &self.drop_parts)
            .finish_non_exhaustive()
    }
}

/// A peer's position in the overlay's key space: its id hashed to 32
/// bytes (splitmix64, four times), as uniform as an Ed25519 key.
pub fn key_of(peer: &u32) -> [u8; 32] {
    let mut state = u64::from(*peer) ^ 0xC010_5EED;
    let mut key = [0u8; 32];
    for chunk in key.chunks_mut(8) {
        chunk.copy_from_slice(&splitmix64(&mut state).to_be_bytes());
    }
    key
}

/// An application message of the pipe checker: who sent it, in which pipe
/// session, and its number among the messages from that session to that
/// destination.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct AppMsgId {
    /// Sender.
    pub from: u32,
    /// The sender's pipe session.
    pub session: u64,
    /// Destination.
    pub to: u32,
    /// Number, from 0 per (session, destination).
    pub no: u64,
}

impl AppMsgId {
    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(29);
        out.push(TAG_APP);
        out.extend_from_slice(&self.from.to_le_bytes());
        out.extend_from_slice(&self.session.to_le_bytes());
        out.extend_from_slice(&self.to.to_le_bytes());
        out.extend_from_slice(&self.no.to_le_bytes());
        out.extend_from_slice(&APP_MARKER);
        out
    }

    fn decode(bytes: &[u8]) -> Option<AppMsgId> {
        if bytes.len() != 28 {
            return None;
        }
        Some(AppMsgId {
            from: u32::from_le_bytes(bytes[0..4].try_into().ok()?),
            session: u64::from_le_bytes(bytes[4..12].try_into().ok()?),
            to: u32::from_le_bytes(bytes[12..16].try_into().ok()?),
            no: u64::from_le_bytes(bytes[16..24].try_into().ok()?),
        })
        .filter(|_| bytes[24..28] == APP_MARKER)
    }
}

/// Trailer of application messages, so a corrupted one is noticed.
const APP_MARKER: [u8; 4] = [0xA5; 4];

/// What a peer asks of the simulated world.
#[derive(Clone, Debug)]
pub enum Action {
    /// Put these bytes on the wire to `to`.
    Frame {
        /// Destination.
        to: u32,
        /// Encoded [`wire::Frame`].
        bytes: Vec<u8>,
    },
    /// Dial bootstrap entry `index` (the acquaintance core's request).
    Dial {
        /// Position in the bootstrap list.
        index: usize,
    },
    /// Too few acquaintances: look for more (a DHT random walk).
    Explore,
    /// Persist the membership incarnation on disk.
    PersistIncarnation(u64),
    /// A membership view change, for the trace.
    Member(Event<u32>),
    /// An application message was handed to the pipes.
    AppSent(AppMsgId),
    /// The pipes settled an application message: delivered or failed.
    AppOutcome {
        /// The message.
        id: AppMsgId,
        /// Whether a receipt came back.
        delivered: bool,
    },
    /// An application message reached this peer's application.
    AppDelivered(AppMsgId),
    /// Write a checkpoint piece to disk; answer with
    /// [`SimPeer::handle_persisted`] once durable.
    Persist {
        /// Where.
        key: PieceKey,
        /// What.
        piece: Piece,
    },
    /// Delete this version of a piece from disk.
    Unpersist {
        /// Where.
        key: PieceKey,
        /// Its epoch.
        epoch: u64,
        /// Its version.
        version: u64,
    },
    /// Delete a job's pieces from disk.
    Forget {
        /// The job.
        job: JobId,
    },
    /// A notable moment of the job protocol.
    Job(JobEvent<u32>),
    /// A job's status reached this peer.
    Status(JobView<u32>),
    /// A query started with [`SimPeer::query`] is answered (`None`: nobody
    /// knew the job).
    QueryAnswer {
        /// The job.
        job: JobId,
        /// The answer.
        view: Option<Box<JobView<u32>>>,
    },
    /// A unit could not be restored.
    UnitFailed {
        /// The job.
        job: JobId,
        /// The unit.
        unit: u64,
        /// Why.
        error: String,
    },
    /// A line for the verbose log.
    Log(String),
    /// A unit started computing here (its state, for diagnostics).
    Started {
        /// The job.
        job: JobId,
        /// The unit.
        unit: u64,
        /// Its state.
        state: Vec<u8>,
    },
    /// A unit finished computing here (its final state, for diagnostics).
    Finished {
        /// The job.
        job: JobId,
        /// The unit.
        unit: u64,
        /// Its final state.
        state: Vec<u8>,
    },
    /// Bytes from the wire did not decode (never expected in the sim).
    Malformed {
        /// Who sent them.
        from: u32,
        /// The error.
        error: String,
    },
}

/// What a pipe message in flight was, for what to do with its outcome
/// (the driver's `JobSendKind`, plus the checker's application messages).
#[derive(Clone, Copy, Debug)]
enum SendKind {
    App(AppMsgId),
    WorkRequest { to: u32, job: JobId, free: u32 },
    Query { job: JobId },
    Other,
}

/// A question about a job, asked of its probable home first and, if that
/// peer does not know it, of every other live member (the driver's
/// `JobQuery`).
struct JobQuery {
    outstanding: usize,
    fanned_out: bool,
    asked: Vec<u32>,
}

/// Who a peer is when it (re)starts: what its disk and configuration say.
#[derive(Clone, Copy, Debug)]
pub struct PeerStart {
    /// Peer id.
    pub id: u32,
    /// How many times it started before.
    pub life: u32,
    /// Membership incarnation, above any persisted before.
    pub incarnation: u64,
    /// Pipe session, above any used before.
    pub session: u64,
    /// Entries in its bootstrap list.
    pub bootstrap_len: usize,
    /// The run's seed (each core's randomness is derived from it).
    pub seed: u64,
    /// How fast it computes.
    pub speed: ExecSpeed,
}

/// A running simulated peer: its cores and the driver's bookkeeping.
pub struct SimPeer {
    /// Peer id.
    pub id: u32,
    /// How many times this peer has started (0 for the first life).
    pub life: u32,
    /// Membership and failure detection.
    pub membership: Membership<u32>,
    /// Reliable pipes.
    pub pipes: Pipes<u32>,
    /// Bootstrap failover and NOA/TTU.
    pub acquaintances: Acquaintances,
    /// Divisible jobs: homes, checkpoints, stealing, worker side.
    pub jobs: Jobs<u32>,
    /// The units computing here.
    pub exec: Executor,
    /// The pipe session of this life.
    pub session: u64,
    settings: PeerSettings,
    next_token: u64,
    sends: BTreeMap<u64, SendKind>,
    /// Every pipe message not yet settled, by destination and class.
    unsettled: BTreeMap<(u32, TrafficClass), std::collections::BTreeSet<u64>>,
    /// Pipe token of each application message sent in this life.
    app_tokens: BTreeMap<AppMsgId, u64>,
    next_stats_at: Instant,
    next_traffic_at: Option<Instant>,
    traffic_no: BTreeMap<u32, u64>,
    queries: BTreeMap<JobId, JobQuery>,
    units_done: u64,
    rng: SimRng,
    /// What the world must do; drained by the world after every input.
    pub actions: Vec<Action>,
}

impl SimPeer {
    /// Starts a peer at `now` as `start` describes, with the checkpoint
    /// pieces its disk holds.
    pub fn start(
        start: PeerStart,
        settings: PeerSettings,
        disk: Vec<(PieceKey, Piece)>,
        now: Instant,
    ) -> SimPeer {
        let PeerStart {
            id,
            life,
            incarnation,
            session,
            bootstrap_len,
            seed,
            speed,
        } = start;
        let stats = PeerStats {
            cores: 2,
            cores_offered: 1,
            ..PeerStats::default()
        };
        let membership = Membership::new(
            id,
            incarnation,
            vec![format!("/sim/{id}")],
            stats,
            settings.membership.clone(),
            derive(&[seed, 1, u64::from(id), u64::from(life)]),
            now,
        );
        let pipes = Pipes::new(settings.pipes.clone(), session);
        let acquaintances = Acquaintances::new(settings.acquaintances.clone(), bootstrap_len, now);
        let mut rng = SimRng::new(derive(&[seed, 2, u64::from(id), u64::from(life)]));
        let next_traffic_at = settings
            .traffic_interval
            .map(|i| now + jittered(i, &mut rng));
        let mut jobs = Jobs::new(
            id,
            settings.jobs.clone(),
            settings.registry.clone(),
            now,
            derive(&[seed, 3, u64::from(id), u64::from(life)]),
            key_of,
        );
        // What the disk kept: pieces held for homes, and units of this
        // worker checkpointed locally.
        let mut locals = Vec::new();
        let mut held = Vec::new();
        for (key, piece) in disk {
            match &piece.data {
                PieceData::Local(bytes) => {
                    if let Ok(local) = postcard::from_bytes::<LocalUnit>(bytes) {
                        locals.push(local);
                    }
                }
                _ => held.push((key, piece)),
            }
        }
        jobs.load_pieces(held);
        if !locals.is_empty() {
            jobs.restore_local(now, locals);
        }
        let exec = Executor::new(speed, settings.drop_parts);
        SimPeer {
            id,
            life,
            membership,
            pipes,
            acquaintances,
            jobs,
            exec,
            session,
            next_token: 0,
            sends: BTreeMap::new(),
            unsettled: BTreeMap::new(),
            app_tokens: BTreeMap::new(),
            next_stats_at: now + settings.stats_interval,
            next_traffic_at,
            traffic_no: BTreeMap::new(),
            queries: BTreeMap::new(),
            units_done: 0,
            rng,
            settings,
            actions: Vec::new(),
        }
    }

    /// Submits a job from this peer; returns the primary it went to.
    pub fn submit(
        &mut self,
        now: Instant,
        job: JobId,
        app: &str,
        params: Vec<u8>,
        ft: FaultTolerance,
    ) -> u32 {
        let home = self
            .jobs
            .submit(now, job, app.to_string(), params, ft, None);
        self.flush(now);
        home
    }

    /// Asks about `job` the way `colony result` does: the local record, else
    /// its probable home, else every live member. The answer comes as
    /// [`Action::QueryAnswer`].
    pub fn query(&mut self, now: Instant, job: JobId) {
        if let Some(view) = self.jobs.view(now, job) {
            self.actions.push(Action::QueryAnswer {
                job,
                view: Some(Box::new(view)),
            });
            return;
        }
        let home = self
            .jobs
            .home_for(job)
            .unwrap_or_else(|| self.jobs.probable_home(job));
        if self.queries.contains_key(&job) {
            return;
        }
        self.queries.insert(
            job,
            JobQuery {
                outstanding: 0,
                fanned_out: false,
                asked: Vec::new(),
            },
        );
        if home == self.id {
            self.query_answered_no(now, job);
        } else {
            self.ask(job, vec![home]);
        }
        self.flush(now);
    }

    fn ask(&mut self, job: JobId, peers: Vec<u32>) {
        if let Some(query) = self.queries.get_mut(&job) {
            query.outstanding += peers.len();
            query.asked.extend(peers.iter().copied());
        }
        for peer in peers {
            self.jobs.query(job, peer);
        }
    }

    /// A peer asked about `job` does not know it (or could not be reached):
    /// once all have answered, ask everyone else, then give up.
    fn query_answered_no(&mut self, now: Instant, job: JobId) {
        let Some(query) = self.queries.get_mut(&job) else {
            return;
        };
        query.outstanding = query.outstanding.saturating_sub(1);
        if query.outstanding > 0 {
            return;
        }
        if !query.fanned_out {
            query.fanned_out = true;
            let asked = query.asked.clone();
            let others: Vec<u32> = self
                .membership
                .view(now)
                .into_iter()
                .filter(|m| m.record.state == MemberState::Alive)
                .map(|m| m.record.peer)
                .filter(|p| !asked.contains(p))
                .collect();
            if !others.is_empty() {
                self.ask(job, others);
                return;
            }
        }
        if self.queries.remove(&job).is_some() {
            self.actions.push(Action::QueryAnswer { job, view: None });
        }
    }

    /// A piece written with [`Action::Persist`] is durable.
    pub fn handle_persisted(&mut self, now: Instant, key: PieceKey, epoch: u64, version: u64) {
        self.jobs.persisted(now, key, epoch, version);
        self.flush(now);
    }

    /// When this peer next needs [`SimPeer::handle_timers`].
    pub fn next_wakeup(&self) -> Instant {
        let mut at = self.membership.poll_timeout().min(self.next_stats_at);
        if let Some(t) = self.pipes.poll_timeout() {
            at = at.min(t);
        }
        if let Some(t) = self.acquaintances.poll_timeout() {
            at = at.min(t);
        }
        if let Some(t) = self.next_traffic_at {
            at = at.min(t);
        }
        if let Some(t) = self.exec.next_step_at() {
            at = at.min(t);
        }
        at.min(self.jobs.poll_timeout())
    }

    /// Bytes arrived from `from` (the transport authenticates `from`).
    pub fn handle_frame(&mut self, now: Instant, from: u32, bytes: &[u8]) {
        match wire::decode::<Frame<u32>>(bytes, self.settings.max_frame_bytes) {
            Ok(Frame::Membership(msg)) => {
                if msg.sender().peer != from {
                    self.actions.push(Action::Malformed {
                        from,
                        error: "forged membership sender".into(),
                    });
                    return;
                }
                self.membership
                    .handle(now, membership::Input::Message { from, msg });
            }
            Ok(Frame::Pipe(frame)) => self.pipes.handle_frame(now, from, frame),
            Err(error) => self.actions.push(Action::Malformed {
                from,
                error: error.to_string(),
            }),
        }
        self.flush(now);
    }

    /// The transport connected to `peer` (a dial or an exploration
    /// succeeded, identify ran).
    pub fn handle_contact(&mut self, now: Instant, peer: u32) {
        self.membership
            .handle(now, membership::Input::Contact { peer });
        self.flush(now);
    }

    /// The transport could not reach `peer`.
    pub fn handle_unreachable(&mut self, now: Instant, peer: u32) {
        self.membership
            .handle(now, membership::Input::Unreachable { peer });
        self.flush(now);
    }

    /// Bootstrap entry `index` could not be dialed.
    pub fn handle_dial_failed(&mut self, now: Instant, index: usize) {
        self.acquaintances.dial_failed(now, index);
        self.flush(now);
    }

    /// Runs the cores' timers due at `now`, and the driver's own.
    pub fn handle_timers(&mut self, now: Instant) {
        self.membership.handle_timeout(now);
        self.pipes.handle_timeout(now);
        self.acquaintances.handle_timeout(now);
        self.jobs.handle_timeout(now);
        if now >= self.next_stats_at {
            self.next_stats_at = now + self.settings.stats_interval;
            let mut stats = self.membership.local().stats.clone();
            // The host's load: the units computing here.
            stats.load_avg_1m = self.exec.len() as f32;
            self.membership
                .handle(now, membership::Input::SetStats(stats));
        }
        if self.exec.next_step_at().is_some_and(|t| t <= now) {
            self.flush(now);
            let events = self.exec.tick(now);
            for event in events {
                self.on_exec_event(now, event);
            }
        }
        if let Some(at) = self.next_traffic_at {
            if now >= at {
                self.send_app_traffic(now);
                let interval = self.settings.traffic_interval.unwrap_or(Duration::MAX);
                self.next_traffic_at = Some(now + jittered(interval, &mut self.rng));
            }
        }
        self.flush(now);
    }

    /// Sends one application message to a random live member, the way
    /// `Peer::send` does through the driver's `Command::Send`.
    fn send_app_traffic(&mut self, now: Instant) {
        let alive: Vec<u32> = self
            .membership
            .records()
            .filter(|r| r.state == MemberState::Alive)
            .map(|r| r.peer)
            .collect();
        let Some(&to) = self.rng.pick(&alive) else {
            return;
        };
        let no = self.traffic_no.entry(to).or_insert(0);
        let id = AppMsgId {
            from: self.id,
            session: self.session,
            to,
            no: *no,
        };
        *no += 1;
        let payload = id.encode();
        let token = self.next_token;
        self.next_token += 1;
        let deadline = now + self.settings.send_timeout;
        self.actions.push(Action::AppSent(id));
        match self
            .pipes
            .send(now, to, TrafficClass::EVENTS, payload, token, deadline)
        {
            Ok(()) => {
                self.sends.insert(token, SendKind::App(id));
                self.app_tokens.insert(id, token);
                self.unsettled
                    .entry((to, TrafficClass::EVENTS))
                    .or_default()
                    .insert(token);
            }
            Err(_) => self.actions.push(Action::AppOutcome {
                id,
                delivered: false,
            }),
        }
    }

    /// Executes everything the cores asked for, until they are quiet (the
    /// driver's `flush`).
    pub fn flush(&mut self, now: Instant) {
        loop {
            let mut progressed = false;
            while let Some(out) = self.membership.poll() {
                progressed = true;
                self.on_membership_output(now, out);
            }
            while let Some(out) = self.pipes.poll() {
                progressed = true;
                self.on_pipe_output(now, out);
            }
            while let Some(out) = self.acquaintances.poll() {
                progressed = true;
                match out {
                    AcquaintanceOutput::DialBootstrap { index } => {
                        self.actions.push(Action::Dial { index })
                    }
                    AcquaintanceOutput::Explore => self.actions.push(Action::Explore),
                }
            }
            while let Some(out) = self.jobs.poll() {
                progressed = true;
                self.on_job_output(now, out);
            }
            if self.pipes.has_delivery() {
                progressed = true;
                self.deliver(now);
            }
            if !progressed {
                break;
            }
        }
    }

    /// Hands delivered pipe messages to their owner by tag.
    fn deliver(&mut self, now: Instant) {
        while let Some(d) = self.pipes.pop_delivery() {
            match d.payload.first().copied() {
                Some(TAG_JOBS) => {
                    match wire::decode::<JobMsg<u32>>(
                        &d.payload[1..],
                        self.settings.pipes.max_message_bytes,
                    ) {
                        Ok(msg)
                            if !self
                                .settings
                                .jobs
                                .limits
                                .accepts(MessageKind::of(&msg), d.payload.len() - 1) =>
                        {
                            self.actions.push(Action::Malformed {
                                from: d.from,
                                error: "job message over its size limit".to_string(),
                            })
                        }
                        Ok(msg) => {
                            self.trace_msg("got from", d.from, &msg);
                            self.jobs.handle_message(now, d.from, msg)
                        }
                        Err(error) => self.actions.push(Action::Malformed {
                            from: d.from,
                            error: format!("job message: {error}"),
                        }),
                    }
                }
                Some(TAG_APP) => match AppMsgId::decode(&d.payload[1..]) {
                    Some(id) if id.from == d.from && id.to == self.id => {
                        self.actions.push(Action::AppDelivered(id))
                    }
                    _ => self.actions.push(Action::Malformed {
                        from: d.from,
                        error: "bad application message".into(),
                    }),
                },
                _ => self.actions.push(Action::Malformed {
                    from: d.from,
                    error: "unknown pipe payload tag".into(),
                }),
            }
        }
    }

    fn send_frame(&mut self, to: u32, frame: &Frame<u32>) {
        match wire::encode(frame, self.settings.max_frame_bytes) {
            Ok(bytes) => self.actions.push(Action::Frame { to, bytes }),
            Err(error) => self.actions.push(Action::Malformed {
                from: self.id,
                error: format!("cannot encode a frame: {error}"),
            }),
        }
    }

    fn on_membership_output(&mut self, now: Instant, out: membership::Output<u32>) {
        match out {
            membership::Output::Send { to, msg } => {
                self.send_frame(to, &Frame::Membership(msg));
            }
            membership::Output::Event(event) => {
                if matches!(event.to, MemberState::Dead | MemberState::Left) {
                    self.pipes.peer_dead(&event.peer);
                }
                self.acquaintances
                    .set_live_members(now, self.membership.live_count());
                self.update_job_members(now);
                self.actions.push(Action::Member(event));
            }
            membership::Output::PersistIncarnation(incarnation) => {
                self.actions.push(Action::PersistIncarnation(incarnation));
            }
        }
    }

    fn on_pipe_output(&mut self, now: Instant, out: PipeOutput<u32>) {
        match out {
            PipeOutput::Transmit { to, frame, .. } => {
                self.send_frame(to, &Frame::Pipe(frame));
            }
            PipeOutput::Delivered { token, .. } => {
                self.settle(token);
                if let Some(SendKind::App(id)) = self.sends.remove(&token) {
                    self.actions.push(Action::AppOutcome {
                        id,
                        delivered: true,
                    });
                }
            }
            PipeOutput::Failed { token, .. } => {
                self.settle(token);
                match self.sends.remove(&token) {
                    Some(SendKind::App(id)) => self.actions.push(Action::AppOutcome {
                        id,
                        delivered: false,
                    }),
                    Some(kind) => self.job_send_failed(now, kind),
                    None => {}
                }
            }
        }
    }
}

impl SimPeer {
    /// Logs a job message about the traced unit.
    fn trace_msg(&mut self, verb: &str, other: u32, msg: &JobMsg<u32>) {
        if self.settings.trace_replicas {
            let line = match msg {
                JobMsg::Home(msg) => Some(msg.describe()),
                _ => None,
            };
            if let Some(line) = line {
                let line = format!("peer {} {verb} {other}: {line}", self.id);
                self.actions.push(Action::Log(line));
            }
        }
        let Some(traced) = self.settings.trace_unit else {
            return;
        };
        let unit = match msg {
            JobMsg::Assign { unit, .. }
            | JobMsg::Report { unit, .. }
            | JobMsg::Ack { unit, .. }
            | JobMsg::Stale { unit, .. }
            | JobMsg::StorePiece { unit, .. }
            | JobMsg::PieceStored { unit, .. }
            | JobMsg::FetchPieces { unit, .. }
            | JobMsg::Pieces { unit, .. } => Some(*unit),
            _ => None,
        };
        if unit != Some(traced) {
            return;
        }
        let text = match msg {
            JobMsg::Assign { epoch, .. } => format!("Assign epoch {epoch}"),
            JobMsg::Report {
                epoch, seq, report, ..
            } => format!("Report epoch {epoch} seq {seq} {}", report_name(report)),
            JobMsg::Ack { epoch, seq, .. } => format!("Ack epoch {epoch} seq {seq}"),
            JobMsg::Stale { epoch, .. } => format!("Stale epoch {epoch}"),
            JobMsg::StorePiece { piece, .. } => format!(
                "StorePiece epoch {} version {} index {}",
                piece.epoch, piece.version, piece.index
            ),
            JobMsg::PieceStored {
                epoch,
                version,
                index,
                ..
            } => format!("PieceStored epoch {epoch} version {version} index {index}"),
            JobMsg::FetchPieces { .. } => "FetchPieces".into(),
            JobMsg::Pieces { pieces, .. } => format!("Pieces ({} of them)", pieces.len()),
            _ => String::new(),
        };
        let line = format!("peer {} {verb} {other}: unit {traced} {text}", self.id);
        self.actions.push(Action::Log(line));
    }

    fn settle(&mut self, token: u64) {
        for tokens in self.unsettled.values_mut() {
            if tokens.remove(&token) {
                break;
            }
        }
    }

    /// Whether an application message sent in this life still waits for
    /// an earlier message on its channel (so its early receipt may yet be
    /// followed by its delivery).
    pub fn app_message_waiting(&self, id: &AppMsgId) -> bool {
        let Some(token) = self.app_tokens.get(id) else {
            return false;
        };
        self.unsettled
            .get(&(id.to, TrafficClass::EVENTS))
            .is_some_and(|t| t.range(..*token).next().is_some())
    }

    /// Tells the job core who is alive, with their loads.
    fn update_job_members(&mut self, now: Instant) {
        // Only the members whose record changed since the last time, not
        // the whole view (O(n) on each of O(n) events per peer).
        for peer in self.membership.take_changed() {
            let load = self
                .membership
                .record_of(&peer)
                .filter(|r| r.state == MemberState::Alive)
                .map(|r| r.stats.load_avg_1m);
            self.jobs.update_member(peer, load);
        }
        self.jobs.refresh_members(now);
    }

    /// Executes one job core output (the driver's `on_job_output`).
    fn on_job_output(&mut self, now: Instant, out: JobOutput<u32>) {
        match out {
            JobOutput::Send { to, msg, bulk } => {
                self.trace_msg("sends to", to, &msg);
                if to == self.id {
                    self.jobs.handle_message(now, to, msg);
                    return;
                }
                let kind = match &msg {
                    JobMsg::WorkRequest { job, free } => SendKind::WorkRequest {
                        to,
                        job: *job,
                        free: *free,
                    },
                    JobMsg::Query { job } => SendKind::Query { job: *job },
                    _ => SendKind::Other,
                };
                if matches!(
                    self.membership.state_of(&to),
                    Some(MemberState::Dead | MemberState::Left)
                ) {
                    self.job_send_failed(now, kind);
                    return;
                }
                // As the driver: one byte of the pipe's limit is the tag's,
                // and a message over its kind's limit fails its operation.
                let ceiling = self.settings.pipes.max_message_bytes.saturating_sub(1);
                let mut payload = vec![TAG_JOBS];
                match self.settings.jobs.limits.encode(&msg, ceiling) {
                    Ok(bytes) => payload.extend_from_slice(&bytes),
                    Err(error) => {
                        self.jobs.send_too_large(now, to, msg, &error);
                        return;
                    }
                }
                let class = if bulk {
                    TrafficClass::BULK
                } else {
                    TrafficClass::EVENTS
                };
                let token = self.next_token;
                self.next_token += 1;
                let deadline = now + self.settings.send_timeout;
                match self.pipes.send(now, to, class, payload, token, deadline) {
                    Ok(()) => {
                        self.sends.insert(token, kind);
                        self.unsettled.entry((to, class)).or_default().insert(token);
                    }
                    Err(PipeError::MessageTooLarge { size, max }) => {
                        let error = TooLarge {
                            kind: MessageKind::of(&msg),
                            size,
                            max,
                        };
                        self.jobs.send_too_large(now, to, msg, &error);
                    }
                    Err(_) => self.job_send_failed(now, kind),
                }
            }
            JobOutput::Run {
                job,
                unit,
                app,
                state,
                shared,
            } => {
                let started = self
                    .jobs
                    .registry()
                    .get(&app)
                    .map_err(|e| e.to_string())
                    .and_then(|app| self.exec.start(now, job, unit, &app, &state, shared));
                self.actions.push(Action::Started {
                    job,
                    unit,
                    state: state.clone(),
                });
                if let Err(error) = started {
                    self.actions.push(Action::UnitFailed {
                        job,
                        unit,
                        error: error.clone(),
                    });
                    self.jobs.unit_failed(now, job, unit, error);
                }
            }
            JobOutput::Divide { job, unit } => {
                if !self.exec.divide(job, unit) {
                    self.jobs
                        .divided(now, job, unit, None, Vec::new(), SharedVars::default());
                }
            }
            JobOutput::Checkpoint { job, unit } => {
                // A unit that already ended answers nothing.
                self.exec.checkpoint(job, unit);
            }
            JobOutput::Stop { job, unit } => {
                if !self.exec.stop(job, unit) {
                    self.jobs.unit_stopped(now, job, unit, None);
                }
            }
            JobOutput::SharedChanged { job, vars } => self.exec.share(job, &vars),
            JobOutput::Status(view) => {
                if self.queries.remove(&view.job).is_some() {
                    self.actions.push(Action::QueryAnswer {
                        job: view.job,
                        view: Some(Box::new(view.clone())),
                    });
                }
                self.actions.push(Action::Status(view));
            }
            JobOutput::Unknown(job) => self.query_answered_no(now, job),
            JobOutput::CancelAnswer { .. } => {}
            JobOutput::Persist { key, piece } => self.actions.push(Action::Persist { key, piece }),
            JobOutput::Unpersist {
                key,
                epoch,
                version,
            } => self.actions.push(Action::Unpersist {
                key,
                epoch,
                version,
            }),
            JobOutput::Forget { job } => self.actions.push(Action::Forget { job }),
            JobOutput::Event(event) => self.actions.push(Action::Job(event)),
        }
    }

    /// A job message could not be delivered (the driver's `job_send_failed`).
    fn job_send_failed(&mut self, now: Instant, kind: SendKind) {
        match kind {
            SendKind::WorkRequest { to, job, free } => {
                self.jobs
                    .send_failed(now, to, JobMsg::WorkRequest { job, free })
            }
            SendKind::Query { job } => self.query_answered_no(now, job),
            SendKind::Other | SendKind::App(_) => {}
        }
    }

    /// Hands what a unit's "thread" reported to the job core (the driver's
    /// `handle_compute_event`).
    fn on_exec_event(&mut self, now: Instant, event: ExecEvent) {
        match event {
            ExecEvent::Finished {
                job,
                unit,
                output,
                state,
            } => {
                self.actions.push(Action::Finished { job, unit, state });
                self.jobs.unit_finished(now, job, unit, output);
                self.units_done += 1;
                let mut stats = self.membership.local().stats.clone();
                stats.units_done_session = self.units_done;
                stats.units_done_total += 1;
                self.membership
                    .handle(now, membership::Input::SetStats(stats));
            }
            ExecEvent::Divided {
                job,
                unit,
                part,
                remaining,
                shared,
            } => self.jobs.divided(now, job, unit, part, remaining, shared),
            ExecEvent::Checkpointed {
                job,
                unit,
                state,
                shared,
            } => self.jobs.checkpointed(now, job, unit, state, shared),
            ExecEvent::Stopped { job, unit, state } => {
                self.jobs.unit_stopped(now, job, unit, Some(state))
            }
            ExecEvent::Progress { job, work } => self.jobs.report_progress(job, work),
        }
        self.flush(now);
    }

    /// Whether a job's state is final in this peer's record.
    pub fn job_state(&self, now: Instant, job: JobId) -> Option<JobState> {
        self.jobs.view(now, job).map(|v| v.state)
    }
}

/// A report's kind, for logs.
fn report_name(report: &colony_core::job::Report) -> &'static str {
    use colony_core::job::Report;
    match report {
        Report::Started => "Started",
        Report::Checkpoint { .. } => "Checkpoint",
        Report::LocalCheckpoint { .. } => "LocalCheckpoint",
        Report::Divided { .. } => "Divided",
        Report::Done { .. } => "Done",
        Report::HandBack { .. } => "HandBack",
        Report::Resume { .. } => "Resume",
    }
}

/// `interval` scaled by a random factor in [0.5, 1.5).
fn jittered(interval: Duration, rng: &mut SimRng) -> Duration {
    interval.mul_f64(0.5 + rng.unit())
}
