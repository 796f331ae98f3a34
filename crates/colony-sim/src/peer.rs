//! One simulated peer: colony-core's sans-IO [`Node`] — the same one the
//! runtime's driver runs — and a simulated executor. What the driver does
//! with sockets, disks and threads comes out as [`Action`]s for the
//! simulated world; what is the simulator's own stays here: the executor in
//! virtual time, the application traffic of the pipe checker, and the
//! diagnostics.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use colony_core::acquaintance::{AcquaintanceConfig, Acquaintances};
use colony_core::divisible::AppRegistry;
use colony_core::ft::FaultTolerance;
use colony_core::job::{
    JobConfig, JobEvent, JobId, JobMsg, JobState, Jobs, LocalUnit, Piece, PieceData, PieceKey,
    SubmitOptions,
};
use colony_core::membership::{MemberState, Membership, MembershipConfig, PeerStats};
use colony_core::mesh::{FtPolicy, MeshPeer, MeshPeerConfig, MeshPeerError, StreamClass};
use colony_core::node::{Node, NodeConfig, NodeInput, NodeOutput, Notice};
use colony_core::object::{Guid, ObjectTypes, Objects, ObjectsConfig, StoredObject};
use colony_core::pipe::{Delivery, PipeConfig, Pipes, TrafficClass};
use colony_core::runner::UnitEvent;
use colony_core::space::{
    Change, Partition, PartitionId, RequestId, Space, SpaceConfig, SpaceError, SpaceOp, Unpersisted,
};

use crate::exec::{ExecEvent, ExecSpeed, Executor};
use crate::rng::{derive, splitmix64, SimRng};

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
    /// The object space core's settings (every peer offers it room).
    pub space: SpaceConfig,
    /// Distributed objects: home size, call timeout, limits.
    pub objects: ObjectsConfig,
    /// Object types every peer hosts.
    pub object_types: ObjectTypes,
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
            space: SpaceConfig {
                capacity_bytes: SPACE_CAPACITY_BYTES,
                ..SpaceConfig::default()
            },
            objects: ObjectsConfig::default(),
            object_types: ObjectTypes::new(),
        }
    }
}

/// Bytes of object values each simulated peer gives the space: far more
/// than a workload stores, so no write is refused as `Full`.
pub const SPACE_CAPACITY_BYTES: u64 = 1 << 20;

impl std::fmt::Debug for PeerSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "PeerSettings {{ send_timeout: {:?}, traffic_interval: {:?}, jobs: {:?}, apps: {:?}, drop_parts: {}, .. }}",
            self.send_timeout,
            self.traffic_interval,
            self.jobs,
            AppsDebug(&self.registry),
            self.drop_parts
        )
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
        let mut out = Vec::with_capacity(28);
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

/// What a peer asks of the simulated world: the node's own outputs, which
/// the world executes as the runtime's driver does, and what only the
/// simulator has (the pipe checker's traffic, the executor's diagnostics).
// As large as a `NodeOutput`, which the node already queues by value:
// boxing it would add an allocation per frame for nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Action {
    /// An output of the node for the world to execute: frames to put on the
    /// wire, dials, explorations, disk writes and deletions, membership and
    /// job events, status and query answers. The peer keeps for itself the
    /// outputs its executor and checker answer (statistics samples, settled
    /// application messages, units to run, unit requests, shared variables,
    /// notices and traced job messages); a
    /// [`NodeOutput::Persist`] is answered with [`SimPeer::handle_persisted`]
    /// once durable, a [`NodeOutput::PersistSpace`] with
    /// [`SimPeer::handle_space_durable`].
    Node(NodeOutput<u32>),
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
    /// Something the node dropped or could not decode (never expected in
    /// the sim).
    Malformed {
        /// Who sent it.
        from: u32,
        /// The error.
        error: String,
    },
}

/// One space partition as the simulated disk holds it: its rows (one per
/// object, lock, namespace, session and the token counter, keyed as
/// [`Change::row`] keys them, a later write of a row replacing it) and
/// where its home stood when last written.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StoredPartition {
    /// The home's term.
    pub term: u64,
    /// Its update.
    pub seq: u64,
    /// How many peers the home has.
    pub size: u8,
    /// The members, primary first.
    pub members: Vec<u32>,
    /// The members as last committed.
    pub config: Vec<u32>,
    /// Encoded changes by row key.
    pub rows: BTreeMap<Vec<u8>, Vec<u8>>,
}

impl StoredPartition {
    /// Writes what a [`NodeOutput::PersistSpace`] carries (the caller
    /// applies writes in the order the node made them); `Err` if a change
    /// does not encode.
    pub fn write(
        &mut self,
        (term, seq): (u64, u64),
        size: u8,
        members: &[u32],
        config: &[u32],
        data: &Unpersisted,
    ) -> Result<(), String> {
        let changes = match data {
            Unpersisted::Whole(changes) => {
                self.rows.clear();
                changes
            }
            Unpersisted::Changes(changes) => changes,
        };
        for change in changes {
            let (key, value) = change
                .row()
                .map_err(|e| format!("a space change does not encode: {e}"))?;
            match value {
                Some(bytes) => self.rows.insert(key, bytes),
                None => self.rows.remove(&key),
            };
        }
        (self.term, self.seq, self.size) = (term, seq, size);
        self.members = members.to_vec();
        self.config = config.to_vec();
        Ok(())
    }

    /// The partition read back, as a restarted peer rebuilds it; `None` if
    /// a row does not decode or the rows are inconsistent.
    pub fn read(&self, now: Instant, id: PartitionId) -> Option<Partition> {
        let changes: Option<Vec<Change>> =
            self.rows.values().map(|b| Change::from_row(b)).collect();
        Partition::from_changes(now, id, changes?)
    }
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

/// A running simulated peer: its node, its executor and the pipe checker's
/// traffic.
pub struct SimPeer {
    /// Peer id.
    pub id: u32,
    /// How many times this peer has started (0 for the first life).
    pub life: u32,
    /// The protocol cores and their routing.
    pub node: Node<u32>,
    /// The units computing here.
    pub exec: Executor,
    /// The pipe session of this life.
    pub session: u64,
    settings: PeerSettings,
    /// Application messages in flight, by pipe token.
    app_sends: BTreeMap<u64, AppMsgId>,
    /// Pipe token of each application message sent in this life.
    app_tokens: BTreeMap<AppMsgId, u64>,
    next_traffic_at: Option<Instant>,
    traffic_no: BTreeMap<u32, u64>,
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
        // The virtual network routes by peer id, so records carry no
        // addresses: every record is copied and encoded thousands of times
        // a second at 1,000 peers, and an address list is two allocations
        // each time, for nothing the simulator reads.
        let membership = Membership::new(
            id,
            incarnation,
            Vec::new(),
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
        let config = NodeConfig {
            send_timeout: settings.send_timeout,
            max_frame_bytes: settings.max_frame_bytes,
            stats_interval: settings.stats_interval,
            job_limits: settings.jobs.limits,
            trace_job_messages: settings.trace_unit.is_some() || settings.trace_replicas,
            module_fetch: Default::default(),
        };
        // The partitions on disk are restored by the world
        // (`SimPeer::restore_space`) before the first input.
        let space = Space::new(
            id,
            settings.space.clone(),
            key_of,
            derive(&[seed, 4, u64::from(id), u64::from(life)]),
            derive(&[seed, 5, u64::from(id), u64::from(life)]),
        );
        let objects = Objects::new(
            id,
            "sim",
            settings.objects.clone(),
            settings.object_types.clone(),
            key_of,
            derive(&[seed, 6, u64::from(id), u64::from(life)]),
        );
        let mesh = MeshPeer::new(
            id,
            MeshPeerConfig::default(),
            key_of,
            derive(&[seed, 7, u64::from(id), u64::from(life)]),
        );
        let node = Node::new(
            config,
            membership,
            pipes,
            acquaintances,
            jobs,
            space,
            objects,
            mesh,
            now,
        );
        let exec = Executor::new(speed, settings.drop_parts);
        SimPeer {
            id,
            life,
            node,
            exec,
            session,
            app_sends: BTreeMap::new(),
            app_tokens: BTreeMap::new(),
            next_traffic_at,
            traffic_no: BTreeMap::new(),
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
        let home = self.node.submit(
            now,
            job,
            app.to_string(),
            params,
            ft,
            SubmitOptions::default(),
        );
        self.flush(now);
        home
    }

    /// Asks about `job` the way `colony result` does: the local record, else
    /// its probable home, else every live member. The answer comes as
    /// [`NodeOutput::QueryAnswer`] in an [`Action::Node`].
    pub fn query(&mut self, now: Instant, job: JobId) {
        self.input(now, NodeInput::Query { job });
    }

    /// A piece written for [`NodeOutput::Persist`] is durable.
    pub fn handle_persisted(&mut self, now: Instant, key: PieceKey, epoch: u64, version: u64) {
        self.input(
            now,
            NodeInput::Persisted {
                key,
                epoch,
                version,
            },
        );
    }

    /// The space partitions this peer's disk holds rejoin their homes as
    /// backups (right after [`SimPeer::start`], before any input). A
    /// partition that cannot be read back or restored is reported as
    /// [`Action::Malformed`]: the disk only ever holds what the node wrote.
    pub fn restore_space(&mut self, now: Instant, disk: &BTreeMap<PartitionId, StoredPartition>) {
        for (id, stored) in disk {
            let restored = match stored.read(now, *id) {
                Some(partition) => self.node.restore_space(
                    now,
                    partition,
                    stored.size,
                    stored.members.clone(),
                    stored.config.clone(),
                    (stored.term, stored.seq),
                ),
                None => false,
            };
            if !restored {
                self.actions.push(Action::Malformed {
                    from: self.id,
                    error: format!(
                        "space partition {id} on disk (term {}, update {}, {} rows) could not be restored",
                        stored.term,
                        stored.seq,
                        stored.rows.len()
                    ),
                });
            }
        }
    }

    /// The object records this peer's disk holds rejoin their homes as
    /// backups (right after [`SimPeer::start`], before any input); one that
    /// cannot be restored is reported as [`Action::Malformed`].
    pub fn restore_objects(&mut self, now: Instant, disk: &BTreeMap<Guid, StoredObject<u32>>) {
        for (guid, stored) in disk {
            if !self.node.restore_object(now, stored.clone()) {
                self.actions.push(Action::Malformed {
                    from: self.id,
                    error: format!(
                        "object {guid} on disk (term {}, update {}) could not be restored",
                        stored.term, stored.seq
                    ),
                });
            }
        }
    }

    /// An object record written for [`NodeOutput::PersistObject`] is
    /// durable up to update `seq` of `term`.
    pub fn handle_object_durable(&mut self, now: Instant, guid: Guid, term: u64, seq: u64) {
        self.input(now, NodeInput::ObjectDurable { guid, term, seq });
    }

    /// An object run of [`NodeOutput::RunObject`] is done.
    pub fn handle_object_ran(&mut self, now: Instant, run: colony_core::object::ObjectRun) {
        self.input(now, NodeInput::ObjectRan(Box::new(run)));
    }

    /// Creates, calls or deletes an object on behalf of an application of
    /// this peer; the answer comes as [`NodeOutput::ObjectAnswer`] with
    /// `token` in an [`Action::Node`], within `timeout`.
    pub fn object_request(
        &mut self,
        now: Instant,
        token: u64,
        request: colony_core::object::ObjectRequest,
        timeout: Duration,
    ) {
        self.node.object_request(now, token, request, Some(timeout));
        self.flush(now);
    }

    /// The objects this peer serves as primary, with the deliveries each
    /// executed (`Objects::objects`), for the activation sampler.
    pub fn live_objects(&self, now: Instant) -> BTreeMap<Guid, u64> {
        self.node
            .objects()
            .objects(now)
            .into_iter()
            .map(|o| (o.uri.guid, o.served))
            .collect()
    }

    /// Asks the object space to apply `op` on behalf of an application of
    /// this peer; the answer comes as [`NodeOutput::SpaceAnswer`] in an
    /// [`Action::Node`], within `timeout`.
    pub fn space_request(
        &mut self,
        now: Instant,
        op: SpaceOp,
        timeout: Duration,
    ) -> Result<RequestId, SpaceError> {
        let id = self.node.space_request(now, op, timeout);
        self.flush(now);
        id
    }

    /// A space partition written for [`NodeOutput::PersistSpace`] is
    /// durable up to update `seq` of `term`.
    pub fn handle_space_durable(
        &mut self,
        now: Instant,
        partition: PartitionId,
        term: u64,
        seq: u64,
    ) {
        self.input(
            now,
            NodeInput::SpaceDurable {
                partition,
                term,
                seq,
            },
        );
    }

    /// Takes a mesh role through the node, as the runtime's driver does
    /// (`Node::mesh_mut`): what it asks comes out as actions.
    pub fn mesh_start(
        &mut self,
        now: Instant,
        part: &crate::mesh_node::Part,
        policy: FtPolicy,
    ) -> Result<(), MeshPeerError> {
        use crate::mesh_node::Part;
        let mesh = self.node.mesh_mut();
        let result = match part {
            Part::SuperPeer => mesh.start_super_peer(now, policy),
            Part::Sensor { cell, preferred } => {
                mesh.start_sensor(now, policy, cell.clone(), *preferred)
            }
            Part::Client => mesh.start_client(now, StreamClass::DATA.to_vec()),
        };
        self.flush(now);
        result
    }

    /// A sensor streams a frame through its node; its number.
    pub fn mesh_send(
        &mut self,
        now: Instant,
        class: StreamClass,
        payload: Vec<u8>,
    ) -> Result<u64, MeshPeerError> {
        let result = self.node.mesh_mut().send_frame(now, class, payload);
        self.flush(now);
        result
    }

    /// When this peer next needs [`SimPeer::handle_timers`].
    pub fn next_wakeup(&self) -> Instant {
        [
            self.node.poll_timeout(),
            self.next_traffic_at,
            self.exec.next_step_at(),
        ]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or_else(|| self.node.membership().poll_timeout())
    }

    /// Bytes arrived from `from` (the transport authenticates `from`).
    pub fn handle_frame(&mut self, now: Instant, from: u32, bytes: &[u8]) {
        self.node.handle_frame(now, from, bytes);
        self.flush(now);
    }

    /// The transport connected to `peer` (a dial or an exploration
    /// succeeded, identify ran).
    pub fn handle_contact(&mut self, now: Instant, peer: u32) {
        self.input(now, NodeInput::Contact { peer });
    }

    /// The transport could not reach `peer`.
    pub fn handle_unreachable(&mut self, now: Instant, peer: u32) {
        self.input(now, NodeInput::Unreachable { peer });
    }

    /// Bootstrap entry `index` could not be dialed.
    pub fn handle_dial_failed(&mut self, now: Instant, index: usize) {
        self.input(now, NodeInput::DialFailed { index });
    }

    fn input(&mut self, now: Instant, input: NodeInput<u32>) {
        self.node.handle(now, input);
        self.flush(now);
    }

    /// Runs the node's timers due at `now`, the executor's step and the
    /// checker's traffic.
    pub fn handle_timers(&mut self, now: Instant) {
        self.node.handle_timeout(now);
        self.flush(now);
        if self.exec.next_step_at().is_some_and(|t| t <= now) {
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
    /// `Peer::send` does through the driver.
    fn send_app_traffic(&mut self, now: Instant) {
        let alive: Vec<u32> = self
            .node
            .membership()
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
        self.actions.push(Action::AppSent(id));
        match self
            .node
            .send_app(now, to, TrafficClass::EVENTS, &id.encode())
        {
            Ok(token) => {
                self.app_sends.insert(token, id);
                self.app_tokens.insert(id, token);
            }
            Err(_) => self.actions.push(Action::AppOutcome {
                id,
                delivered: false,
            }),
        }
    }

    /// Executes everything the node asks, until it is quiet.
    pub fn flush(&mut self, now: Instant) {
        loop {
            while let Some(out) = self.node.poll() {
                self.on_output(now, out);
            }
            match self.node.pop_app_message() {
                Some(delivery) => self.on_app_message(delivery),
                None => break,
            }
        }
    }

    fn on_app_message(&mut self, d: Delivery<u32>) {
        match AppMsgId::decode(&d.payload) {
            Some(id) if id.from == d.from && id.to == self.id => {
                self.actions.push(Action::AppDelivered(id))
            }
            _ => self.actions.push(Action::Malformed {
                from: d.from,
                error: "bad application message".into(),
            }),
        }
    }

    fn on_output(&mut self, now: Instant, out: NodeOutput<u32>) {
        match out {
            NodeOutput::SampleStats => {
                let mut stats = self.node.membership().local().stats.clone();
                // The host's load: the units computing here.
                stats.load_avg_1m = self.exec.len() as f32;
                self.node.handle(now, NodeInput::SetStats(stats));
            }
            NodeOutput::AppSettled { token, result } => {
                if let Some(id) = self.app_sends.remove(&token) {
                    self.actions.push(Action::AppOutcome {
                        id,
                        delivered: result.is_ok(),
                    });
                }
            }
            NodeOutput::Run(start) => {
                let (job, unit) = (start.job, start.unit);
                let state = start.state.clone();
                let started = self.exec.start(now, start);
                self.actions.push(Action::Started { job, unit, state });
                if let Err(failed) = started {
                    if let UnitEvent::Failed { error, .. } = &failed {
                        self.actions.push(Action::UnitFailed {
                            job,
                            unit,
                            error: error.clone(),
                        });
                    }
                    self.node.handle(now, NodeInput::Unit(failed));
                }
            }
            NodeOutput::Unit { job, unit, request } => {
                if !self.exec.request(job, unit, request.clone()) {
                    self.node.unit_not_running(now, job, unit, &request);
                }
            }
            NodeOutput::Share { job, vars } => self.exec.share(job, &vars),
            NodeOutput::Notice(notice) => self.on_notice(notice),
            NodeOutput::TraceJobMessage { sent, peer, msg } => {
                let verb = if sent { "sends to" } else { "got from" };
                self.trace_msg(verb, peer, &msg);
            }
            // The simulator's applications are native: it holds no guest
            // modules, and takes none.
            NodeOutput::ServeModule { to, id } => {
                let answer = NodeInput::SendModule {
                    to,
                    id,
                    module: None,
                };
                self.node.handle(now, answer);
            }
            NodeOutput::ModuleReceived {
                from, id, pushed, ..
            } => {
                let result = Err("the simulator holds no modules".to_string());
                let answer = NodeInput::ModuleStored {
                    id,
                    from,
                    pushed,
                    result,
                };
                self.node.handle(now, answer);
            }
            other => self.actions.push(Action::Node(other)),
        }
    }

    /// What the node dropped: never expected in the simulator, so each is
    /// a violation (a refusal is the job core's, and checked as such).
    fn on_notice(&mut self, notice: Notice<u32>) {
        let (from, error) = match notice {
            Notice::Refused { from, message, why } => {
                let refused = JobEvent::Refused { from, message, why };
                self.actions.push(Action::Node(NodeOutput::Job(refused)));
                return;
            }
            // An operation over its size limit fails its job, visibly.
            Notice::TooLargeToSend { .. } => return,
            // A peer not yet (or no longer) in the view: its sender resends.
            Notice::ObjectRefused { .. } | Notice::MeshRefused { .. } => return,
            Notice::UnitNotRunnable { job, unit, error } => {
                self.actions.push(Action::UnitFailed { job, unit, error });
                return;
            }
            Notice::Malformed { from, what, error } => (from, format!("{what}: {error}")),
            Notice::WrongVersion { from, theirs, ours } => {
                (from, format!("wire version {theirs}, ours {ours}"))
            }
            Notice::ForgedSender { from, .. } => (from, "forged membership sender".into()),
            Notice::ForgedRecordRefuted { version } => (
                self.id,
                format!("refuted a forged record of version {version}"),
            ),
            Notice::Oversized { from, .. } => (from, "job message over its size limit".into()),
            Notice::FrameNotSent { error, .. } => {
                (self.id, format!("cannot encode a frame: {error}"))
            }
            // Never raised: the simulator's peers run no guests, and no
            // application of theirs uses the object space.
            Notice::ModuleReady { .. } | Notice::ModuleHeld { .. } => return,
            Notice::JobNamespaceKept { job, because } => {
                (self.id, format!("namespace of job {job} kept: {because}"))
            }
            Notice::ModuleUnavailable { id, why } => {
                (self.id, format!("module {id} unavailable: {why}"))
            }
            Notice::UnsolicitedModule { from } => (from, "a module nobody asked for".into()),
        };
        self.actions.push(Action::Malformed { from, error });
    }

    /// Hands what a unit's "thread" reported to the node.
    fn on_exec_event(&mut self, now: Instant, event: ExecEvent) {
        match event {
            ExecEvent::FinalState { job, unit, state } => {
                self.actions.push(Action::Finished { job, unit, state })
            }
            ExecEvent::Unit(event) => self.input(now, NodeInput::Unit(event)),
        }
    }

    /// Whether an application message sent in this life still waits for
    /// an earlier message on its channel (so its early receipt may yet be
    /// followed by its delivery).
    pub fn app_message_waiting(&self, id: &AppMsgId) -> bool {
        let Some(token) = self.app_tokens.get(id) else {
            return false;
        };
        self.node
            .sent_before_in_flight(&id.to, TrafficClass::EVENTS, *token)
    }

    /// Whether a job's state is final in this peer's record.
    pub fn job_state(&self, now: Instant, job: JobId) -> Option<JobState> {
        self.node.jobs().view(now, job).map(|v| v.state)
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Rows are replaced by a later write of the same row, a whole write
    /// replaces them all, and what is stored reads back as a partition.
    #[test]
    fn stored_partitions_keep_the_latest_row_and_read_back() {
        let now = Instant::now();
        let mut stored = StoredPartition::default();
        let whole = Unpersisted::Whole(vec![
            Change::NextToken(3),
            Change::Purged("a".into(), 1),
            Change::Purged("b".into(), 1),
        ]);
        stored
            .write((1, 1), 3, &[1, 2], &[1], &whole)
            .expect("encodes");
        assert_eq!(stored.rows.len(), 3);
        let changes =
            Unpersisted::Changes(vec![Change::NextToken(9), Change::Purged("a".into(), 2)]);
        stored
            .write((1, 2), 3, &[1, 2, 3], &[1, 2, 3], &changes)
            .expect("encodes");
        assert_eq!(stored.rows.len(), 3, "rows replaced, not added");
        assert_eq!((stored.term, stored.seq), (1, 2));
        assert_eq!(stored.members, vec![1, 2, 3]);
        assert!(stored.read(now, 7).is_some());
        let whole = Unpersisted::Whole(vec![Change::NextToken(10)]);
        stored
            .write((2, 1), 3, &[2], &[2], &whole)
            .expect("encodes");
        assert_eq!(stored.rows.len(), 1, "a whole write replaces everything");
        // A row that does not decode makes the partition unreadable.
        stored.rows.insert(vec![9], vec![0xff; 3]);
        assert!(stored.read(now, 7).is_none());
    }
}
