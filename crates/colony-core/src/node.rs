//! One peer's protocol cores composed into one sans-IO node: membership,
//! pipes, acquaintances and jobs, and the routing between them. The tokio
//! driver (`crates/colony/src/driver.rs`) and the simulator
//! (`crates/colony-sim/src/peer.rs`) both run a [`Node`] and only execute
//! what it asks: they own the sockets or the virtual network, the threads
//! or the simulated executor, the disk, and the clock.
//!
//! The contract is the one of every core: apply an input
//! ([`Node::handle`], [`Node::handle_frame`], [`Node::handle_timeout`]),
//! then drain [`Node::poll`] until it returns `None`, and wake the node
//! again at [`Node::poll_timeout`].
//!
//! What the node routes:
//! - frames ([`wire::Frame`] behind the versioned header) to membership and
//!   the pipes; a frame of another protocol version is refused and counted;
//! - pipe messages by [`PayloadKind`]: job messages to the job core at once,
//!   application messages to the caller when it has room
//!   ([`Node::pop_app_message`]);
//! - membership events into the pipes (a dead peer's pipes fail), the
//!   acquaintances (how many are live) and the job core (who is alive with
//!   their loads, and who is only suspected);
//! - job messages out through the pipes, with their send tokens, and pipe
//!   failures back into the job core;
//! - job queries, asked of the probable home first and then of every live
//!   member.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use crate::acquaintance::{AcquaintanceOutput, Acquaintances};
use crate::divisible::{AppError, SharedVars};
use crate::ft::FaultTolerance;
use crate::job::{
    JobEvent, JobId, JobInput, JobMsg, JobOutput, JobView, Jobs, MessageKind, MessageLimits, Piece,
    PieceKey, Refusal, SentAssignment, SubmitOptions, TooLarge, UnitId,
};
use crate::membership::{self, Event, MemberState, Membership, PeerStats};
use crate::mesh::{MeshNotice, MeshPeer, MeshPeerMsg, MeshPeerOutput};
use crate::modules::{self, FetchConfig, FetchOutput, ModuleFetcher, ModuleMsg, ModuleSignature};
use crate::object::CallError;
use crate::object::{
    Guid, ObjectAnswer, ObjectMsg, ObjectOutput, ObjectRequest, ObjectRun, Objects, StoredObject,
};
use crate::pipe::{Delivery, PipeError, PipeFrame, PipeOutput, Pipes, Receipt, TrafficClass};
use crate::runner::{UnitEvent, UnitRequest, UnitStart};
use crate::space::{
    LockLost, PartitionId, RequestId, Space, SpaceError, SpaceInput, SpaceMsg, SpaceOp,
    SpaceOutput, SpaceReply, Unpersisted,
};
use crate::wire::{self, Frame, PayloadKind, WireError};
use crate::PeerKey;

/// Output-queue capacity kept once a burst of outputs is drained.
const OUTPUTS_KEPT: usize = 64;
/// Modules and senders remembered as asked for signatures.
const MAX_SIGNATURE_ASKS: usize = 256;
/// Space requests of the node's own in flight (namespace destructions).
const MAX_OWN_SPACE_REQUESTS: usize = 1024;

/// Settings of the node's own routing (each core has its own config).
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// How long a pipe keeps retrying a message before it fails with
    /// `DeadlineExceeded`.
    pub send_timeout: Duration,
    /// Largest encoded frame, in and out.
    pub max_frame_bytes: usize,
    /// How often this peer's statistics are sampled and republished
    /// ([`NodeOutput::SampleStats`]).
    pub stats_interval: Duration,
    /// Size limits of job messages, by kind.
    pub job_limits: MessageLimits,
    /// Emit [`NodeOutput::TraceJobMessage`] for every job message sent or
    /// received (verbose simulator runs; costs a copy of each).
    pub trace_job_messages: bool,
    /// Bounds of fetching guest modules on demand.
    pub module_fetch: FetchConfig,
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            send_timeout: Duration::from_secs(30),
            max_frame_bytes: 1024 * 1024 + 4 * 1024,
            stats_interval: Duration::from_secs(1),
            job_limits: MessageLimits::default(),
            trace_job_messages: false,
            module_fetch: FetchConfig::default(),
        }
    }
}

/// An input to the node, other than frames ([`Node::handle_frame`]).
#[derive(Debug)]
pub enum NodeInput<P> {
    /// The transport connected to `peer`; start talking to it.
    Contact {
        /// The peer.
        peer: P,
    },
    /// The transport could not reach `peer`.
    Unreachable {
        /// The peer.
        peer: P,
    },
    /// Bootstrap entry `index` could not be dialed.
    DialFailed {
        /// Its position in the bootstrap list.
        index: usize,
    },
    /// This peer's listen addresses changed.
    SetAddrs(Vec<String>),
    /// This peer's statistics were sampled (the answer to
    /// [`NodeOutput::SampleStats`]).
    SetStats(PeerStats),
    /// A running unit reported, or the executor answers for a unit that
    /// does not run ([`UnitEvent::not_running`]).
    Unit(UnitEvent),
    /// A piece written for [`NodeOutput::Persist`] is durable.
    Persisted {
        /// Where.
        key: PieceKey,
        /// Its epoch.
        epoch: u64,
        /// Its version.
        version: u64,
    },
    /// The answer to [`NodeOutput::ModuleReceived`]: the module was
    /// verified against its id and stored (`Ok`), or why not.
    ModuleStored {
        /// The module.
        id: String,
        /// Who sent it.
        from: P,
        /// Whether `from` pushed it here as a home member (then it hears
        /// back [`ModuleMsg::Stored`]) rather than answering a fetch.
        pushed: bool,
        /// Stored, or why not.
        result: Result<(), String>,
    },
    /// The answer to [`NodeOutput::ServeModule`]: the module's bytes and
    /// signatures, or `None` if this peer does not hold it.
    SendModule {
        /// Who asked.
        to: P,
        /// The module.
        id: String,
        /// Its bytes and who vouches for it.
        module: Option<(Vec<u8>, Vec<ModuleSignature>)>,
    },
    /// Push module `id` (stored here already) to its home, the peers that
    /// will serve it ([`Notice::ModuleHeld`] for each that stored it).
    PublishModule {
        /// The module.
        id: String,
        /// Its bytes.
        bytes: Vec<u8>,
        /// Who vouches for it.
        signatures: Vec<ModuleSignature>,
    },
    /// Fetch module `id` from its home ([`Notice::ModuleReady`] or
    /// [`Notice::ModuleUnavailable`]).
    FetchModule {
        /// The module.
        id: String,
    },
    /// Ask the job's primary to cancel it ([`NodeOutput::CancelAnswer`]).
    Cancel {
        /// The job.
        job: JobId,
    },
    /// Find out a job's status ([`NodeOutput::QueryAnswer`]).
    Query {
        /// The job.
        job: JobId,
    },
    /// Start leaving: hand units and job records over
    /// ([`Node::has_handed_over`] says when it is done).
    HandOver,
    /// Tell everyone this peer leaves the network.
    Leave,
    /// The space partition written for [`NodeOutput::PersistSpace`] is on
    /// disk up to update `seq` of `term`.
    SpaceDurable {
        /// The partition.
        partition: PartitionId,
        /// The home's term.
        term: u64,
        /// Its update.
        seq: u64,
    },
    /// The object record written for [`NodeOutput::PersistObject`] is on
    /// disk up to update `seq` of `term`.
    ObjectDurable {
        /// The object.
        guid: Guid,
        /// Its home's term.
        term: u64,
        /// Its update.
        seq: u64,
    },
    /// The object record of [`NodeOutput::PersistObject`] could not be
    /// written (the next update of the object is asked for instead).
    ObjectNotWritten {
        /// The object.
        guid: Guid,
    },
    /// The [`NodeOutput::RunObject`] is done.
    ObjectRan(Box<ObjectRun>),
    /// The shard written for [`NodeOutput::PersistShard`] is on disk.
    ShardDurable {
        /// Which.
        id: crate::space::ShardId,
    },
    /// Stop computing (the host's owner needs it, or its daily hours are
    /// used up): running units are stopped and handed back to their jobs'
    /// primaries, and no work is taken until [`NodeInput::Resume`]. The
    /// peer stays a member and keeps its part in every home.
    Pause,
    /// Compute again after [`NodeInput::Pause`].
    Resume,
    /// Stop retransmitting: the peer is going away.
    Shutdown,
}

/// What the node asks its driver to do, or tells it.
#[derive(Debug)]
pub enum NodeOutput<P> {
    /// Put `bytes` on the wire to `to`.
    Transmit {
        /// Destination.
        to: P,
        /// The traffic class whose priority applies (`None`: control).
        class: Option<TrafficClass>,
        /// The encoded frame.
        bytes: Vec<u8>,
    },
    /// `peer` is declared dead yet probed (has it come back?): make sure the
    /// transport can find it at `addrs`.
    Redial {
        /// The peer.
        peer: P,
        /// Its listen addresses.
        addrs: Vec<String>,
    },
    /// Dial bootstrap entry `index`.
    DialBootstrap {
        /// Its position in the bootstrap list.
        index: usize,
    },
    /// Too few acquaintances: look for more.
    Explore,
    /// Persist the membership incarnation.
    PersistIncarnation(u64),
    /// A membership view change (already routed into the cores).
    Member(Event<P>),
    /// Time to sample this peer's statistics: answer with
    /// [`NodeInput::SetStats`].
    SampleStats,
    /// One more unit finished here: the lifetime count, to persist.
    UnitsDone {
        /// Units done over every life of this peer.
        total: u64,
    },
    /// An application message sent with [`Node::send_app`] is settled.
    AppSettled {
        /// The token `send_app` returned.
        token: u64,
        /// Its receipt, or why it failed.
        result: Result<Receipt, PipeError>,
    },
    /// Start a unit.
    Run(UnitStart),
    /// Pass a request to a running unit; if it does not run, answer with
    /// [`UnitEvent::not_running`].
    Unit {
        /// The job.
        job: JobId,
        /// The unit.
        unit: UnitId,
        /// The request (divide, checkpoint, stop).
        request: UnitRequest,
    },
    /// Pass improved shared variables to every running unit of `job`.
    Share {
        /// The job.
        job: JobId,
        /// The variables.
        vars: SharedVars,
    },
    /// Write a checkpoint piece durably; answer with
    /// [`NodeInput::Persisted`].
    Persist {
        /// Where.
        key: PieceKey,
        /// What.
        piece: Piece,
    },
    /// Delete this version of a piece (the job core no longer keeps it).
    Unpersist {
        /// Where.
        key: PieceKey,
        /// Its epoch.
        epoch: u64,
        /// Its version.
        version: u64,
    },
    /// Delete a finished job's pieces.
    Forget {
        /// The job.
        job: JobId,
    },
    /// A notable moment of the job protocol (refusals included: log them
    /// rate-limited).
    Job(JobEvent<P>),
    /// A job's status reached this peer.
    Status(JobView<P>),
    /// The answer to [`NodeInput::Query`] (`None`: nobody knew the job).
    QueryAnswer {
        /// The job.
        job: JobId,
        /// Its status.
        view: Option<Box<JobView<P>>>,
    },
    /// The primary's answer to [`NodeInput::Cancel`] (`None`: cancelled).
    CancelAnswer {
        /// The job.
        job: JobId,
        /// Why it was refused.
        refused: Option<String>,
    },
    /// `to` asked for guest module `id`: read it from the module store and
    /// answer with [`NodeInput::SendModule`].
    ServeModule {
        /// Who asked.
        to: P,
        /// The module.
        id: String,
    },
    /// Guest module `id` arrived from `from` (asked for, or pushed to this
    /// home member) and its bytes hash to `id`: store it with its
    /// signatures (checking it is a guest this peer can run), and answer
    /// with [`NodeInput::ModuleStored`].
    ModuleReceived {
        /// Who sent it.
        from: P,
        /// The module.
        id: String,
        /// Its bytes.
        bytes: Vec<u8>,
        /// Who vouches for it (within [`modules::MAX_SIGNATURES`]).
        signatures: Vec<ModuleSignature>,
        /// Pushed by a publisher, not fetched.
        pushed: bool,
    },
    /// Something a remote peer sent was dropped, or something could not be
    /// sent (already counted in [`NodeCounters`]; log it rate-limited).
    Notice(Notice<P>),
    /// The answer to [`Node::object_request`] with this token.
    ObjectAnswer {
        /// The request's token.
        token: u64,
        /// Its outcome.
        result: Result<ObjectAnswer, CallError>,
    },
    /// Write the record of an object held here (replacing its previous
    /// one), then answer with [`NodeInput::ObjectDurable`], or
    /// [`NodeInput::ObjectNotWritten`] if it failed: the object's next
    /// record waits for that answer.
    PersistObject(StoredObject<P>),
    /// Something the mesh core tells (its place in a cell, a bind, a
    /// frame delivered to this client).
    Mesh(MeshNotice<P>),
    /// Run an object's code ([`ObjectRun::run`]) away from the thread
    /// that drives the node, then give it back with
    /// [`NodeInput::ObjectRan`].
    RunObject(ObjectRun),
    /// Write what changed in a space partition held here, then answer with
    /// [`NodeInput::SpaceDurable`].
    PersistSpace {
        /// The partition.
        partition: PartitionId,
        /// The home's term.
        term: u64,
        /// Its update.
        seq: u64,
        /// How many peers the home has.
        size: u8,
        /// The members, primary first.
        members: Vec<P>,
        /// The members as last committed.
        config: Vec<P>,
        /// What to write.
        data: Unpersisted,
    },
    /// Write an erasure-coded shard this peer now holds, then answer with
    /// [`NodeInput::ShardDurable`].
    PersistShard {
        /// The object it is part of.
        key: crate::space::ObjectKey,
        /// Which shard.
        id: crate::space::ShardId,
        /// The shard.
        shard: crate::space::Shard,
    },
    /// Delete these shards from disk.
    UnpersistShards {
        /// Which.
        ids: Vec<crate::space::ShardId>,
    },
    /// This peer no longer holds a space partition: delete it from disk.
    UnpersistSpace {
        /// The partition.
        partition: PartitionId,
    },
    /// The answer to [`Node::space_request`] or
    /// [`Node::space_read_cached`].
    SpaceAnswer {
        /// The request.
        id: RequestId,
        /// What happened.
        result: Result<SpaceReply, SpaceError>,
    },
    /// A lock this peer held in the space was lost (its lease could not be
    /// renewed): writes with its token will be refused.
    SpaceLockLost(LockLost),
    /// A job message went out or came in (only with
    /// [`NodeConfig::trace_job_messages`]).
    TraceJobMessage {
        /// Whether it was sent (else received).
        sent: bool,
        /// The other peer.
        peer: P,
        /// The message.
        msg: Box<JobMsg<P>>,
    },
}

/// Why a finished job's namespace was kept ([`Notice::JobNamespaceKept`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NamespaceKept {
    /// Its submitter asked for it
    /// ([`SubmitOptions::keep_namespace`](crate::job::SubmitOptions::keep_namespace)).
    SubmitterAsked,
    /// Destroying it failed with this error.
    DestroyFailed(String),
}

impl std::fmt::Display for NamespaceKept {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NamespaceKept::SubmitterAsked => f.write_str("its submitter asked to keep it"),
            NamespaceKept::DestroyFailed(error) => write!(f, "it could not be destroyed: {error}"),
        }
    }
}

/// Something dropped or refused, for the driver's log.
#[derive(Debug)]
pub enum Notice<P> {
    /// The namespace of a finished job that used the object space was not
    /// destroyed: its objects stay until someone destroys it by name
    /// (`colony space ns-rm job-<id>`, see [`crate::space::job_namespace`]).
    JobNamespaceKept {
        /// The job.
        job: JobId,
        /// Why it was kept.
        because: NamespaceKept,
    },
    /// Bytes that are not a frame, a pipe message of no known kind, or a
    /// job message that does not decode.
    Malformed {
        /// Who sent them.
        from: P,
        /// What they were meant to be.
        what: &'static str,
        /// The error.
        error: String,
    },
    /// A frame of another wire protocol version, refused unparsed.
    WrongVersion {
        /// Who sent it.
        from: P,
        /// Its version.
        theirs: u8,
        /// Ours.
        ours: u8,
    },
    /// A membership message whose sender is not the peer it came from.
    ForgedSender {
        /// Who sent it.
        from: P,
        /// Who it claims to be from.
        claimed: P,
    },
    /// A record about this peer that it never published was gossiped to
    /// it (a hostile member's "it is draining", or false addresses):
    /// refuted with a higher incarnation.
    ForgedRecordRefuted {
        /// The forged record's version.
        version: u64,
    },
    /// A job message over the size limit of its kind.
    Oversized {
        /// Who sent it.
        from: P,
        /// Its kind.
        kind: MessageKind,
        /// Its size.
        size: usize,
    },
    /// A job message this peer wanted to send is over its limit; what it
    /// was for fails instead.
    TooLargeToSend {
        /// Its destination.
        to: P,
        /// Whether it was a status (an answer to a query any member may
        /// ask, not worth a warning each).
        status: bool,
        /// Its size and the limit.
        error: TooLarge,
    },
    /// A frame could not be encoded.
    FrameNotSent {
        /// Its destination.
        to: P,
        /// Why.
        error: WireError,
    },
    /// A unit could not be started: its application is not installed here.
    UnitNotRunnable {
        /// The job.
        job: JobId,
        /// The unit.
        unit: UnitId,
        /// Why.
        error: String,
    },
    /// No peer asked could give a guest module; the job messages waiting
    /// for it went on to the job core, which refuses them.
    ModuleUnavailable {
        /// The module.
        id: String,
        /// What each peer asked answered.
        why: String,
    },
    /// A module message nobody asked for, or about a module not asked of
    /// its sender, or a module pushed to a peer outside its home.
    UnsolicitedModule {
        /// Who sent it.
        from: P,
    },
    /// Module `id` is stored here now (fetched, or pushed to this home
    /// member).
    ModuleReady {
        /// The module.
        id: String,
    },
    /// Home member `by` stored module `id` this peer published.
    ModuleHeld {
        /// The module.
        id: String,
        /// The home member.
        by: P,
    },
    /// An object message from a peer this one does not know as a member
    /// (a stranger to its membership view): dropped unread, since it could
    /// plant or take over an object's home.
    ObjectRefused {
        /// Who sent it.
        from: P,
        /// Its kind.
        message: &'static str,
    },
    /// A mesh message from a peer this one does not know as a member:
    /// dropped unread, since it could found cell records or take a place
    /// in a cell.
    MeshRefused {
        /// Who sent it.
        from: P,
        /// Its kind.
        message: &'static str,
    },
    /// A job message was refused by the job core (who may send what).
    Refused {
        /// Who sent it.
        from: P,
        /// Its name.
        message: &'static str,
        /// Why.
        why: Refusal,
    },
}

/// What the node dropped, counted.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeCounters {
    /// Frames, pipe messages and job messages that did not decode.
    pub malformed_frames: u64,
    /// Frames of another wire protocol version.
    pub wrong_version_frames: u64,
    /// Membership messages with a forged sender.
    pub forged_senders: u64,
    /// Records about this peer it never published, refuted.
    pub forged_records_refuted: u64,
    /// Job messages over their size limit, in or out.
    pub oversized_job_messages: u64,
    /// Guest modules fetched from another peer and stored.
    pub modules_fetched: u64,
    /// Of those, modules fetched from a member of the module's home.
    pub modules_fetched_from_home: u64,
    /// Guest modules stored here as a member of their home.
    pub modules_homed: u64,
    /// Guest modules sent to peers that asked.
    pub modules_served: u64,
    /// Module messages nobody asked for.
    pub unsolicited_modules: u64,
    /// Object messages from peers outside the membership view, dropped.
    pub refused_object_messages: u64,
    /// Mesh messages from peers outside the membership view, dropped.
    pub refused_mesh_messages: u64,
    /// Frames of mesh bookkeeping sent outside the pipes, each a batch
    /// of the messages owed to one peer
    /// ([`crate::mesh::MeshPeerConfig::batch_delay`]).
    pub mesh_batches_sent: u64,
    /// The mesh messages those batches carried.
    pub mesh_messages_batched: u64,
}

/// What a message in flight was, for what to do with its outcome.
#[derive(Clone, Debug)]
enum SendKind<P> {
    App,
    WorkRequest {
        to: P,
        job: JobId,
        free: u32,
    },
    ModuleWant {
        to: P,
    },
    Query {
        job: JobId,
    },
    Cancel {
        to: P,
        job: JobId,
    },
    Assign(SentAssignment<P>),
    /// Space messages (one, or a batch), with the requests they carry.
    Space {
        to: P,
        requests: Vec<RequestId>,
    },
    Other,
}

/// Encoded space messages for one peer and lane, not sent yet.
#[derive(Debug, Default)]
struct SpaceBatch {
    bodies: Vec<Vec<u8>>,
    /// Their bytes in a batch ([`wire::BATCH_ENTRY_BYTES`] each included).
    bytes: usize,
    /// The requests among them (told to the space core if the send fails).
    requests: Vec<RequestId>,
}

/// A mesh batch is sent once it holds this many bytes, whatever its
/// delay: under a flood, copies go in steady small batches rather than
/// bursts that hold up more urgent traffic.
const MESH_BATCH_BYTES: usize = 64 * 1024;

/// Encoded mesh messages for one peer, sent together at `send_at` (or
/// earlier, when full or overtaken by a message that may not wait).
#[derive(Debug)]
struct MeshBatch {
    bodies: Vec<Vec<u8>>,
    /// Their bytes in a batch ([`wire::BATCH_ENTRY_BYTES`] each included).
    bytes: usize,
    send_at: Instant,
    /// The most urgent class among them: the batch's priority.
    class: TrafficClass,
}

/// A message in flight on a pipe.
#[derive(Clone, Debug)]
struct InFlight<P> {
    to: P,
    class: TrafficClass,
    kind: SendKind<P>,
}

/// A question about a job, asked of its probable home first and, if that
/// peer does not know it, of every other live member.
#[derive(Debug)]
struct JobQuery<P> {
    /// Answers still awaited.
    outstanding: usize,
    /// Whether every member has been asked already.
    fanned_out: bool,
    asked: Vec<P>,
}

/// One peer's protocol cores and the routing between them.
pub struct Node<P: PeerKey> {
    me: P,
    config: NodeConfig,
    membership: Membership<P>,
    pipes: Pipes<P>,
    acquaintances: Acquaintances,
    jobs: Jobs<P>,
    /// The partitions of the object space homed here, and this peer's
    /// requests to it.
    space: Space<P>,
    /// Job messages waiting for a guest module, and its fetch.
    modules: ModuleFetcher<P>,
    /// Modules and senders already asked for signatures ([`AppError::Untrusted`]).
    signature_asks: VecDeque<(String, P)>,
    /// The time of the last input, for routing done while polling.
    now: Instant,
    next_stats_at: Instant,
    next_token: u64,
    in_flight: BTreeMap<u64, InFlight<P>>,
    queries: BTreeMap<JobId, JobQuery<P>>,
    /// Members membership suspects now, kept change by change.
    suspects: BTreeSet<P>,
    /// The distributed objects homed here, and the calls this peer makes.
    objects: Objects<P>,
    /// This peer's part in the streaming mesh: its role, if it took one,
    /// and the cell records it holds.
    mesh: MeshPeer<P>,
    /// Space requests the node made itself (destroying the namespaces of
    /// finished jobs), with their job.
    own_space_requests: BTreeMap<RequestId, JobId>,
    /// Space messages produced since the space core was last polled dry,
    /// by destination and lane: sent as one pipe message each.
    space_batches: BTreeMap<(P, bool), SpaceBatch>,
    /// Deferrable mesh messages by destination, waiting for others to
    /// travel with ([`crate::mesh::MeshPeerConfig::batch_delay`]).
    mesh_batches: BTreeMap<P, MeshBatch>,
    counters: NodeCounters,
    outputs: VecDeque<NodeOutput<P>>,
}

impl<P: PeerKey> std::fmt::Debug for Node<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("me", &self.me)
            .field("in_flight", &self.in_flight.len())
            .field("queries", &self.queries.len())
            .field("counters", &self.counters)
            .finish_non_exhaustive()
    }
}

impl UnitEvent {
    /// The answer to `request` for a unit that does not run here (it
    /// ended, or never started): `None` if none is due.
    pub fn not_running(job: JobId, unit: UnitId, request: &UnitRequest) -> Option<UnitEvent> {
        match request {
            UnitRequest::Divide => Some(UnitEvent::Divided {
                job,
                unit,
                part: None,
                remaining: Vec::new(),
                shared: SharedVars::default(),
            }),
            UnitRequest::Stop => Some(UnitEvent::Stopped {
                job,
                unit,
                state: None,
            }),
            UnitRequest::Checkpoint | UnitRequest::Shared(_) => None,
        }
    }
}

impl<P: PeerKey> Node<P> {
    /// A node of the given cores (built, and restored from disk, by the
    /// driver), at `now`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        config: NodeConfig,
        membership: Membership<P>,
        pipes: Pipes<P>,
        acquaintances: Acquaintances,
        jobs: Jobs<P>,
        space: Space<P>,
        objects: Objects<P>,
        mesh: MeshPeer<P>,
        now: Instant,
    ) -> Self {
        Node {
            space,
            objects,
            mesh,
            me: membership.local().peer.clone(),
            next_stats_at: now + config.stats_interval,
            modules: ModuleFetcher::new(config.module_fetch.clone()),
            signature_asks: VecDeque::new(),
            config,
            membership,
            pipes,
            acquaintances,
            jobs,
            now,
            next_token: 0,
            in_flight: BTreeMap::new(),
            queries: BTreeMap::new(),
            suspects: BTreeSet::new(),
            own_space_requests: BTreeMap::new(),
            space_batches: BTreeMap::new(),
            mesh_batches: BTreeMap::new(),
            counters: NodeCounters::default(),
            outputs: VecDeque::new(),
        }
    }

    /// This peer.
    pub fn me(&self) -> &P {
        &self.me
    }

    /// The membership core (read only: inputs go through the node).
    pub fn membership(&self) -> &Membership<P> {
        &self.membership
    }

    /// The pipe core.
    pub fn pipes(&self) -> &Pipes<P> {
        &self.pipes
    }

    /// The acquaintance core.
    pub fn acquaintances(&self) -> &Acquaintances {
        &self.acquaintances
    }

    /// The job core.
    pub fn jobs(&self) -> &Jobs<P> {
        &self.jobs
    }

    /// What the node dropped, counted.
    pub fn counters(&self) -> &NodeCounters {
        &self.counters
    }

    /// The mesh core (read only: commands go through [`Node::mesh_mut`]).
    pub fn mesh(&self) -> &MeshPeer<P> {
        &self.mesh
    }

    /// The mesh core, to take a role or stream a frame; drain
    /// [`Node::poll`] afterwards.
    pub fn mesh_mut(&mut self) -> &mut MeshPeer<P> {
        &mut self.mesh
    }

    /// The objects core (read only: requests go through
    /// [`Node::object_request`]).
    pub fn objects(&self) -> &Objects<P> {
        &self.objects
    }

    /// Creates, calls or deletes an object; the answer comes as
    /// [`NodeOutput::ObjectAnswer`] with `token`, within `timeout` (or the
    /// configured call timeout).
    pub fn object_request(
        &mut self,
        now: Instant,
        token: u64,
        request: ObjectRequest,
        timeout: Option<Duration>,
    ) {
        self.now = now;
        self.objects.request(now, token, request, timeout);
    }

    /// An object record read back from this peer's disk: it rejoins its
    /// home as a backup. `false` if it cannot.
    pub fn restore_object(&mut self, now: Instant, stored: StoredObject<P>) -> bool {
        self.objects.restore(now, stored)
    }

    /// The object space core (read only: requests go through
    /// [`Node::space_request`]).
    pub fn space(&self) -> &Space<P> {
        &self.space
    }

    /// Asks the object space to apply `op`; the answer comes as
    /// [`NodeOutput::SpaceAnswer`] with the returned id, within `timeout`.
    pub fn space_request(
        &mut self,
        now: Instant,
        op: SpaceOp,
        timeout: Duration,
    ) -> Result<RequestId, SpaceError> {
        self.now = now;
        self.space.request(now, op, timeout)
    }

    /// Reads `key` the cached way ([`Space::read_cached`]): from this
    /// peer's copy if it has one, else from any replica of its home. The
    /// answer may miss the latest writes but never shows one that was not
    /// made; it comes as [`NodeOutput::SpaceAnswer`] with the returned id,
    /// within `timeout`.
    pub fn space_read_cached(
        &mut self,
        now: Instant,
        key: crate::space::ObjectKey,
        timeout: Duration,
    ) -> Result<RequestId, SpaceError> {
        self.now = now;
        self.space.read_cached(now, key, timeout)
    }

    /// Asks peer `to` itself to apply `op`, a shard operation
    /// ([`Space::request_at`]); the answer comes as
    /// [`NodeOutput::SpaceAnswer`] with the returned id, within `timeout`.
    pub fn space_request_at(
        &mut self,
        now: Instant,
        to: P,
        op: SpaceOp,
        timeout: Duration,
    ) -> Result<RequestId, SpaceError> {
        self.now = now;
        self.space.request_at(now, to, op, timeout)
    }

    /// An erasure-coded shard read back from this peer's disk.
    pub fn restore_shard(
        &mut self,
        key: crate::space::ObjectKey,
        id: crate::space::ShardId,
        shard: crate::space::Shard,
    ) {
        self.space.restore_shard(key, id, shard);
    }

    /// Stops renewing the space lock with this token (its holder gave it up).
    pub fn space_forget_lock(&mut self, token: u64) {
        self.space.forget_lock(token);
    }

    /// A space partition read back from this peer's disk: it rejoins its
    /// home as a backup. `false` if it cannot be used.
    #[allow(clippy::too_many_arguments)]
    pub fn restore_space(
        &mut self,
        now: Instant,
        partition: crate::space::Partition,
        size: u8,
        members: Vec<P>,
        config: Vec<P>,
        update: (u64, u64),
    ) -> bool {
        self.space
            .restore(now, partition, size, members, config, update)
    }

    /// Whether every unit and job record has been handed over since
    /// [`NodeInput::HandOver`], every space partition and object home
    /// shared with others goes on without this peer, and the namespaces of
    /// jobs that ended here are destroyed (a primary that leaves as its job
    /// ends, as a submitting peer does once it has the result, is the only
    /// one that would destroy it).
    pub fn has_handed_over(&self) -> bool {
        self.jobs.has_left()
            && self.space.homes().released()
            && self.objects.released()
            && self.own_space_requests.is_empty()
    }

    /// What still holds a leaving peer ([`Node::has_handed_over`] false),
    /// one line each, for the log of a leave that ran out of time.
    pub fn not_handed_over(&self) -> Vec<String> {
        let mut held = Vec::new();
        if !self.jobs.has_left() {
            held.push(format!(
                "{} units to hand back, job records not handed over",
                self.jobs.units_to_hand_back()
            ));
        }
        held.extend(
            self.space
                .homes()
                .unreleased()
                .into_iter()
                .map(|h| format!("space partition {h}")),
        );
        held.extend(
            self.objects
                .unreleased()
                .into_iter()
                .map(|h| format!("object {h}")),
        );
        if !self.own_space_requests.is_empty() {
            held.push(format!(
                "{} namespaces of finished jobs not yet destroyed",
                self.own_space_requests.len()
            ));
        }
        held
    }

    /// When the node next needs [`Node::handle_timeout`].
    pub fn poll_timeout(&self) -> Option<Instant> {
        let mut at = self.membership.poll_timeout().min(self.next_stats_at);
        if let Some(t) = self.jobs.poll_timeout() {
            at = at.min(t);
        }
        if let Some(t) = self.pipes.poll_timeout() {
            at = at.min(t);
        }
        if let Some(t) = self.acquaintances.poll_timeout() {
            at = at.min(t);
        }
        if let Some(t) = self.modules.poll_timeout() {
            at = at.min(t);
        }
        if let Some(t) = self.space.poll_timeout() {
            at = at.min(t);
        }
        if let Some(t) = self.objects.poll_timeout() {
            at = at.min(t);
        }
        if let Some(t) = self.mesh.poll_timeout() {
            at = at.min(t);
        }
        if let Some(t) = self.mesh_batches.values().map(|b| b.send_at).min() {
            at = at.min(t);
        }
        Some(at)
    }

    /// Runs every timer due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.now = now;
        self.membership.handle_timeout(now);
        self.pipes.handle_timeout(now);
        self.acquaintances.handle_timeout(now);
        self.jobs.handle_timeout(now);
        self.modules.handle_timeout(now);
        self.drain_modules(now);
        self.space.handle_timeout(now);
        if self.objects.poll_timeout().is_some_and(|at| at <= now) {
            self.objects.handle_timeout(now);
        }
        if self.mesh.poll_timeout().is_some_and(|at| at <= now) {
            self.mesh.handle_timeout(now);
        }
        if now >= self.next_stats_at {
            self.next_stats_at = now + self.config.stats_interval;
            self.refresh_space_members(now);
            self.outputs.push_back(NodeOutput::SampleStats);
            self.prefetch_for_backups(now);
        }
    }

    /// Bytes arrived from `from` (authenticated by the transport).
    pub fn handle_frame(&mut self, now: Instant, from: P, bytes: &[u8]) {
        self.now = now;
        match wire::decode_frame::<P>(bytes, self.config.max_frame_bytes) {
            Ok(Frame::Membership(msg)) => {
                if msg.sender().peer != from {
                    self.counters.forged_senders += 1;
                    let claimed = msg.sender().peer.clone();
                    self.notice(Notice::ForgedSender { from, claimed });
                    return;
                }
                self.membership
                    .handle(now, membership::Input::Message { from, msg });
            }
            Ok(Frame::Pipe(frame)) => self.pipes.handle_frame(now, from, frame),
            Ok(Frame::MeshBatch(batch)) => {
                self.handle_batch(now, from, &batch, "mesh batch", Self::handle_mesh_payload)
            }
            Err(WireError::Version { theirs, ours }) => {
                self.counters.wrong_version_frames += 1;
                self.notice(Notice::WrongVersion { from, theirs, ours });
            }
            Err(error) => {
                self.malformed(from, "frame", error.to_string());
            }
        }
    }

    /// Applies one input.
    pub fn handle(&mut self, now: Instant, input: NodeInput<P>) {
        self.now = now;
        match input {
            NodeInput::Contact { peer } => self
                .membership
                .handle(now, membership::Input::Contact { peer }),
            NodeInput::Unreachable { peer } => self
                .membership
                .handle(now, membership::Input::Unreachable { peer }),
            NodeInput::DialFailed { index } => self.acquaintances.dial_failed(now, index),
            NodeInput::SetAddrs(addrs) => self
                .membership
                .handle(now, membership::Input::SetAddrs(addrs)),
            NodeInput::SetStats(mut stats) => {
                stats.space_free_bytes = self.space.free_bytes();
                self.membership
                    .handle(now, membership::Input::SetStats(stats))
            }
            NodeInput::Unit(event) => self.on_unit_event(now, event),
            NodeInput::Persisted {
                key,
                epoch,
                version,
            } => self.jobs.handle(
                now,
                JobInput::Persisted {
                    key,
                    epoch,
                    version,
                },
            ),
            NodeInput::ModuleStored {
                id,
                from,
                pushed: true,
                result,
            } => {
                if result.is_ok() {
                    self.counters.modules_homed += 1;
                    self.notice(Notice::ModuleReady { id: id.clone() });
                    self.send_module_msg(now, from, ModuleMsg::Stored { id }, SendKind::Other);
                }
            }
            NodeInput::ModuleStored {
                id,
                from,
                pushed: false,
                result,
            } => {
                match result {
                    Ok(()) => {
                        self.counters.modules_fetched += 1;
                        if self.module_home(&id).contains(&from) {
                            self.counters.modules_fetched_from_home += 1;
                        }
                        self.modules.stored(&id);
                        self.notice(Notice::ModuleReady { id: id.clone() });
                    }
                    Err(why) => self.modules.failed(now, &id, &from, why),
                }
                self.drain_modules(now);
            }
            NodeInput::SendModule { to, id, module } => {
                let msg = match module {
                    Some((bytes, signatures)) => {
                        self.counters.modules_served += 1;
                        ModuleMsg::Module {
                            id,
                            bytes,
                            signatures,
                        }
                    }
                    None => ModuleMsg::Missing { id },
                };
                self.send_module_msg(now, to, msg, SendKind::Other);
            }
            NodeInput::PublishModule {
                id,
                bytes,
                signatures,
            } => {
                let me = self.membership.local().peer.clone();
                for to in self.module_home(&id).into_iter().filter(|p| *p != me) {
                    let msg = ModuleMsg::Store {
                        id: id.clone(),
                        bytes: bytes.clone(),
                        signatures: signatures.clone(),
                    };
                    self.send_module_msg(now, to, msg, SendKind::Other);
                }
            }
            NodeInput::FetchModule { id } => self.prefetch_module(now, id, None),
            NodeInput::Cancel { job } => self.jobs.handle(now, JobInput::Cancel { job }),
            NodeInput::Query { job } => self.query(now, job),
            NodeInput::HandOver => {
                // First, so that the peers taking roles over already count
                // this one out of their homes.
                self.membership.handle(now, membership::Input::Drain);
                self.jobs.handle(now, JobInput::Leave);
                self.space.hand_over_all(now);
                self.objects.hand_over_all(now);
            }
            NodeInput::SpaceDurable {
                partition,
                term,
                seq,
            } => self.space.handle(
                now,
                SpaceInput::Durable {
                    partition,
                    term,
                    seq,
                },
            ),
            NodeInput::ObjectDurable { guid, term, seq } => {
                self.objects.durable(now, guid, term, seq)
            }
            NodeInput::ObjectNotWritten { guid } => self.objects.not_written(now, guid),
            NodeInput::ObjectRan(run) => self.objects.ran(now, *run),
            NodeInput::ShardDurable { id } => {
                self.space.handle(now, SpaceInput::ShardDurable { id })
            }
            NodeInput::Leave => self.membership.handle(now, membership::Input::Leave),
            NodeInput::Pause => self.jobs.handle(now, JobInput::Pause),
            NodeInput::Resume => self.jobs.handle(now, JobInput::Resume),
            NodeInput::Shutdown => self.pipes.shutdown(),
        }
    }

    /// The executor has no unit `unit` of `job` to pass `request` to (it
    /// ended, or never started): answers for it what is due.
    pub fn unit_not_running(
        &mut self,
        now: Instant,
        job: JobId,
        unit: UnitId,
        request: &UnitRequest,
    ) {
        if let Some(answer) = UnitEvent::not_running(job, unit, request) {
            self.handle(now, NodeInput::Unit(answer));
        }
    }

    /// Submits a job from this peer; returns the primary it went to.
    pub fn submit(
        &mut self,
        now: Instant,
        job: JobId,
        app: String,
        params: Vec<u8>,
        ft: FaultTolerance,
        options: SubmitOptions,
    ) -> P {
        self.now = now;
        let home = self.jobs.submit_home(job, &ft);
        self.jobs.handle(
            now,
            JobInput::Submit {
                job,
                app,
                params,
                ft,
                options,
            },
        );
        home
    }

    /// Sends an application message to `to` on the pipe of `class`; its
    /// outcome comes as [`NodeOutput::AppSettled`] with the token returned.
    pub fn send_app(
        &mut self,
        now: Instant,
        to: P,
        class: TrafficClass,
        payload: &[u8],
    ) -> Result<u64, PipeError> {
        self.now = now;
        if matches!(
            self.membership.state_of(&to),
            Some(MemberState::Dead | MemberState::Left)
        ) {
            return Err(PipeError::PeerDead {
                peer: to.to_string(),
            });
        }
        let max = self.max_body_bytes();
        if payload.len() > max {
            return Err(PipeError::MessageTooLarge {
                size: payload.len(),
                max,
            });
        }
        let payload = wire::encode_payload(PayloadKind::App, payload);
        self.send_payload(now, to, class, payload, SendKind::App)
    }

    /// Whether an application message is ready for [`Node::pop_app_message`].
    pub fn has_app_message(&self) -> bool {
        self.pipes.peek_delivery().is_some_and(|d| {
            wire::decode_payload(&d.payload).map(|(k, _)| k) == Some(PayloadKind::App)
        })
    }

    /// The next application message, if one is first in line (job messages
    /// queued behind it are handled at the next [`Node::poll`]).
    pub fn pop_app_message(&mut self) -> Option<Delivery<P>> {
        if !self.has_app_message() {
            return None;
        }
        let mut delivery = self.pipes.pop_delivery()?;
        delivery.payload.drain(..wire::PAYLOAD_HEADER_BYTES);
        Some(delivery)
    }

    /// Whether an earlier message than `token` to `to` on `class` is still
    /// in flight (so the message of `token` may yet be delivered after its
    /// receipt came back).
    pub fn sent_before_in_flight(&self, to: &P, class: TrafficClass, token: u64) -> bool {
        self.in_flight
            .range(..token)
            .any(|(_, f)| f.to == *to && f.class == class)
    }

    /// The next thing to do, or `None` once every core is quiet.
    pub fn poll(&mut self) -> Option<NodeOutput<P>> {
        loop {
            if let Some(out) = self.outputs.pop_front() {
                return Some(out);
            }
            if !self.route() {
                // A burst (a whole view learnt at once) can queue thousands
                // of outputs; do not keep that capacity for the peer's life.
                if self.outputs.capacity() > OUTPUTS_KEPT {
                    self.outputs.shrink_to(OUTPUTS_KEPT);
                }
                return None;
            }
        }
    }

    /// One round of routing between the cores; false if nothing moved.
    fn route(&mut self) -> bool {
        let now = self.now;
        let mut progressed = false;
        let mut members_changed = false;
        while let Some(out) = self.membership.poll() {
            progressed = true;
            members_changed |= matches!(out, membership::Output::Event(_));
            self.on_membership_output(out);
        }
        members_changed |= self.membership.take_draining_news();
        // Once per batch: a message can bring a dozen changes, each an event.
        if members_changed {
            self.acquaintances
                .set_live_members(now, self.membership.live_count());
            self.update_job_members(now);
        }
        while let Some(out) = self.pipes.poll() {
            progressed = true;
            self.on_pipe_output(now, out);
        }
        while let Some(out) = self.acquaintances.poll() {
            progressed = true;
            self.outputs.push_back(match out {
                AcquaintanceOutput::DialBootstrap { index } => NodeOutput::DialBootstrap { index },
                AcquaintanceOutput::Explore => NodeOutput::Explore,
            });
        }
        while let Some(out) = self.jobs.poll() {
            progressed = true;
            self.on_job_output(now, out);
        }
        while let Some(out) = self.space.poll() {
            progressed = true;
            self.on_space_output(now, out);
        }
        while let Some(out) = self.objects.poll() {
            progressed = true;
            self.on_object_output(now, out);
        }
        while let Some(out) = self.mesh.poll() {
            progressed = true;
            self.on_mesh_output(now, out);
        }
        self.send_due_mesh_batches(now);
        self.flush_space(now);
        progressed | self.deliver_job_messages(now)
    }

    fn notice(&mut self, notice: Notice<P>) {
        self.outputs.push_back(NodeOutput::Notice(notice));
    }

    /// Counts and reports something from `from` that did not decode.
    fn malformed(&mut self, from: P, what: &'static str, error: String) {
        self.counters.malformed_frames += 1;
        self.notice(Notice::Malformed { from, what, error });
    }

    /// What a pipe message may carry after its kind byte.
    fn max_body_bytes(&self) -> usize {
        self.pipes
            .config()
            .max_message_bytes
            .saturating_sub(wire::PAYLOAD_HEADER_BYTES)
    }

    fn send_payload(
        &mut self,
        now: Instant,
        to: P,
        class: TrafficClass,
        payload: Vec<u8>,
        kind: SendKind<P>,
    ) -> Result<u64, PipeError> {
        let token = self.next_token;
        self.next_token += 1;
        let deadline = now + self.config.send_timeout;
        self.pipes
            .send(now, to.clone(), class, payload, token, deadline)?;
        self.in_flight.insert(token, InFlight { to, class, kind });
        Ok(token)
    }

    fn transmit(&mut self, to: P, class: Option<TrafficClass>, frame: &Frame<P>) {
        match wire::encode_frame(frame, self.config.max_frame_bytes) {
            Ok(bytes) => self
                .outputs
                .push_back(NodeOutput::Transmit { to, class, bytes }),
            Err(error) => self.notice(Notice::FrameNotSent { to, error }),
        }
    }

    fn on_membership_output(&mut self, out: membership::Output<P>) {
        match out {
            membership::Output::Send { to, msg } => {
                if self.membership.state_of(&to) == Some(MemberState::Dead) {
                    let addrs = self.membership.addrs_of(&to).unwrap_or_default().to_vec();
                    self.outputs.push_back(NodeOutput::Redial {
                        peer: to.clone(),
                        addrs,
                    });
                }
                self.transmit(to, None, &Frame::Membership(msg));
            }
            membership::Output::Event(event) => {
                if matches!(event.to, MemberState::Dead | MemberState::Left) {
                    self.pipes.peer_dead(&event.peer);
                }
                self.outputs.push_back(NodeOutput::Member(event));
            }
            membership::Output::PersistIncarnation(incarnation) => self
                .outputs
                .push_back(NodeOutput::PersistIncarnation(incarnation)),
            membership::Output::ForgeryRefuted { version } => {
                self.counters.forged_records_refuted += 1;
                self.notice(Notice::ForgedRecordRefuted { version });
            }
        }
    }

    /// Tells the job core who is alive, with their loads, and who is only
    /// suspected: only the members whose record changed since the last
    /// time, not the whole view (O(n) on each of O(n) events per peer).
    fn update_job_members(&mut self, now: Instant) {
        let mut suspects_changed = false;
        for peer in self.membership.take_changed() {
            let record = self.membership.record_of(&peer);
            let state = record.map(|r| (r.state, r.stats.load_avg_1m));
            let alive = record.is_some_and(|r| r.state == MemberState::Alive);
            // A peer that left gracefully was released from its partition
            // homes first: unlike a dead one, it holds none that a new home
            // of the partition could duplicate.
            let offers_space = record
                .is_some_and(|r| r.stats.space_free_bytes > 0 && r.state != MemberState::Left);
            let draining = record.is_some_and(|r| r.draining);
            self.space
                .update_member(peer.clone(), alive, offers_space, draining);
            self.objects
                .update_member(now, peer.clone(), record.map(|r| r.state), draining);
            match record.map(|r| r.state) {
                Some(MemberState::Alive) => self.mesh.peer_alive(now, peer.clone()),
                Some(MemberState::Dead | MemberState::Left) => {
                    self.mesh.peer_failed(now, peer.clone())
                }
                _ => {}
            }
            let load = match state {
                Some((MemberState::Alive, load)) => Some(load),
                _ => None,
            };
            let suspect = matches!(state, Some((MemberState::Suspect, _)));
            suspects_changed |= if suspect {
                self.suspects.insert(peer.clone())
            } else {
                self.suspects.remove(&peer)
            };
            self.jobs.handle(now, JobInput::Member { peer, load });
        }
        if suspects_changed {
            let suspects = self.suspects.iter().cloned().collect();
            self.jobs.handle(now, JobInput::Suspects(suspects));
        }
        self.jobs.handle(now, JobInput::MembersChanged);
        self.space.refresh_members(now);
        self.objects.refresh_members(now);
    }

    /// Tells the space who offers it room: published with the peers'
    /// statistics, whose changes raise no membership event.
    fn refresh_space_members(&mut self, now: Instant) {
        let members: Vec<(P, bool, bool)> = self
            .membership
            .records()
            .filter(|r| r.state == MemberState::Alive && r.peer != self.me)
            .map(|r| (r.peer.clone(), r.stats.space_free_bytes > 0, r.draining))
            .collect();
        self.space.set_members(now, members);
    }

    fn on_pipe_output(&mut self, now: Instant, out: PipeOutput<P>) {
        match out {
            PipeOutput::Transmit { to, class, frame } => {
                let class = match frame {
                    PipeFrame::Data { .. } | PipeFrame::Fragment { .. } => Some(class),
                    _ => None,
                };
                self.transmit(to, class, &Frame::Pipe(frame));
            }
            PipeOutput::Delivered { token, receipt } => match self.in_flight.remove(&token) {
                Some(InFlight {
                    kind: SendKind::App,
                    ..
                }) => self.outputs.push_back(NodeOutput::AppSettled {
                    token,
                    result: Ok(receipt),
                }),
                Some(InFlight {
                    kind: SendKind::Assign(sent),
                    ..
                }) => self.assign_settled(now, sent, true),
                _ => {}
            },
            PipeOutput::Failed { token, error } => match self.in_flight.remove(&token) {
                Some(InFlight {
                    kind: SendKind::App,
                    ..
                }) => self.outputs.push_back(NodeOutput::AppSettled {
                    token,
                    result: Err(error),
                }),
                Some(sent) => self.job_send_failed(now, sent.kind),
                None => {}
            },
        }
    }

    /// Hands received messages to the cores, one class at a time (the
    /// most urgent first): the next round of routing sends what they
    /// produced before a less urgent class is handled. Stops at an
    /// application message (the caller takes it when it has room).
    fn deliver_job_messages(&mut self, now: Instant) -> bool {
        let mut progressed = false;
        let mut class = None;
        while let Some(next) = self.pipes.peek_delivery() {
            let kind = wire::decode_payload(&next.payload).map(|(kind, _)| kind);
            if kind == Some(PayloadKind::App) || *class.get_or_insert(next.class) != next.class {
                break;
            }
            let Some(delivery) = self.pipes.pop_delivery() else {
                break;
            };
            progressed = true;
            match kind {
                Some(PayloadKind::Job) => self.handle_job_payload(
                    now,
                    delivery.from,
                    &delivery.payload[wire::PAYLOAD_HEADER_BYTES..],
                ),
                Some(PayloadKind::Module) => self.handle_module_payload(
                    now,
                    delivery.from,
                    &delivery.payload[wire::PAYLOAD_HEADER_BYTES..],
                ),
                Some(PayloadKind::Space) => self.handle_space_payload(
                    now,
                    delivery.from,
                    &delivery.payload[wire::PAYLOAD_HEADER_BYTES..],
                ),
                Some(PayloadKind::Object) => self.handle_object_payload(
                    now,
                    delivery.from,
                    &delivery.payload[wire::PAYLOAD_HEADER_BYTES..],
                ),
                Some(PayloadKind::Mesh) => self.handle_mesh_payload(
                    now,
                    delivery.from,
                    &delivery.payload[wire::PAYLOAD_HEADER_BYTES..],
                ),
                Some(PayloadKind::SpaceBatch) => self.handle_batch(
                    now,
                    delivery.from,
                    &delivery.payload[wire::PAYLOAD_HEADER_BYTES..],
                    "space batch",
                    Self::handle_space_payload,
                ),
                _ => {
                    self.malformed(delivery.from, "pipe message", "unknown payload kind".into());
                }
            }
        }
        progressed
    }

    fn handle_job_payload(&mut self, now: Instant, from: P, bytes: &[u8]) {
        match wire::decode::<JobMsg<P>>(bytes, self.pipes.config().max_message_bytes) {
            Ok(msg) => {
                let kind = MessageKind::of(&msg);
                if !self.config.job_limits.accepts(kind, bytes.len()) {
                    self.counters.oversized_job_messages += 1;
                    self.notice(Notice::Oversized {
                        from,
                        kind,
                        size: bytes.len(),
                    });
                    return;
                }
                if self.config.trace_job_messages {
                    self.outputs.push_back(NodeOutput::TraceJobMessage {
                        sent: false,
                        peer: from.clone(),
                        msg: Box::new(msg.clone()),
                    });
                }
                self.job_message_in(now, from, msg)
            }
            Err(error) => {
                self.malformed(from, "job message", error.to_string());
            }
        }
    }

    fn on_job_output(&mut self, now: Instant, out: JobOutput<P>) {
        match out {
            JobOutput::Send { to, msg, bulk } => self.send_job_message(now, to, msg, bulk),
            JobOutput::Run {
                job,
                unit,
                app,
                state,
                shared,
            } => match self.jobs.registry().get(&app) {
                Ok(app) => self.outputs.push_back(NodeOutput::Run(UnitStart {
                    job,
                    unit,
                    app,
                    state,
                    shared,
                })),
                Err(error) => {
                    let error = error.to_string();
                    self.notice(Notice::UnitNotRunnable {
                        job,
                        unit,
                        error: error.clone(),
                    });
                    self.jobs
                        .handle(now, JobInput::Unit(UnitEvent::Failed { job, unit, error }));
                }
            },
            JobOutput::Divide { job, unit } => self.outputs.push_back(NodeOutput::Unit {
                job,
                unit,
                request: UnitRequest::Divide,
            }),
            JobOutput::Checkpoint { job, unit } => self.outputs.push_back(NodeOutput::Unit {
                job,
                unit,
                request: UnitRequest::Checkpoint,
            }),
            JobOutput::Stop { job, unit } => self.outputs.push_back(NodeOutput::Unit {
                job,
                unit,
                request: UnitRequest::Stop,
            }),
            JobOutput::SharedChanged { job, vars } => {
                self.outputs.push_back(NodeOutput::Share { job, vars })
            }
            JobOutput::Persist { key, piece } => {
                self.outputs.push_back(NodeOutput::Persist { key, piece })
            }
            JobOutput::Unpersist {
                key,
                epoch,
                version,
            } => self.outputs.push_back(NodeOutput::Unpersist {
                key,
                epoch,
                version,
            }),
            JobOutput::Forget { job } => self.outputs.push_back(NodeOutput::Forget { job }),
            JobOutput::Event(JobEvent::Refused { from, message, why }) => {
                self.notice(Notice::Refused { from, message, why })
            }
            JobOutput::Event(event) => {
                match &event {
                    JobEvent::Finished { job, .. } => self.destroy_job_namespace(now, *job),
                    // The primary it ended at may have left (or died)
                    // before its namespace was destroyed: the successor
                    // destroys it again (an unknown namespace is no error).
                    JobEvent::Primary { job, .. } if self.jobs.has_ended(*job) => {
                        self.destroy_job_namespace(now, *job)
                    }
                    _ => {}
                }
                self.outputs.push_back(NodeOutput::Job(event))
            }
            JobOutput::CancelAnswer { job, refused } => self
                .outputs
                .push_back(NodeOutput::CancelAnswer { job, refused }),
            JobOutput::Status(view) => {
                if self.queries.remove(&view.job).is_some() {
                    self.outputs.push_back(NodeOutput::QueryAnswer {
                        job: view.job,
                        view: Some(Box::new(view.clone())),
                    });
                }
                self.outputs.push_back(NodeOutput::Status(view));
            }
            JobOutput::Unknown(job) => self.query_answered_no(now, job),
        }
    }

    fn send_job_message(&mut self, now: Instant, to: P, msg: JobMsg<P>, bulk: bool) {
        if self.config.trace_job_messages {
            self.outputs.push_back(NodeOutput::TraceJobMessage {
                sent: true,
                peer: to.clone(),
                msg: Box::new(msg.clone()),
            });
        }
        let kind = match &msg {
            JobMsg::WorkRequest { job, free } => SendKind::WorkRequest {
                to: to.clone(),
                job: *job,
                free: *free,
            },
            JobMsg::Query { job } => SendKind::Query { job: *job },
            JobMsg::Cancel { job } => SendKind::Cancel {
                to: to.clone(),
                job: *job,
            },
            _ => SentAssignment::of(&to, &msg).map_or(SendKind::Other, SendKind::Assign),
        };
        if to == self.me {
            self.jobs.handle(now, JobInput::Message { from: to, msg });
            if let SendKind::Assign(sent) = kind {
                self.assign_settled(now, sent, true);
            }
            return;
        }
        if matches!(
            self.membership.state_of(&to),
            Some(MemberState::Dead | MemberState::Left)
        ) {
            self.job_send_failed(now, kind);
            return;
        }
        let body = match self.config.job_limits.encode(&msg, self.max_body_bytes()) {
            Ok(body) => body,
            Err(error) => {
                self.job_message_too_large(now, to, msg, error);
                return;
            }
        };
        let payload = wire::encode_payload(PayloadKind::Job, &body);
        let class = if bulk {
            TrafficClass::BULK
        } else {
            TrafficClass::EVENTS
        };
        match self.send_payload(now, to.clone(), class, payload, kind.clone()) {
            Ok(_) => {}
            Err(PipeError::MessageTooLarge { size, max }) => {
                let error = TooLarge {
                    kind: MessageKind::of(&msg),
                    size,
                    max,
                };
                self.job_message_too_large(now, to, msg, error);
            }
            Err(_) => self.job_send_failed(now, kind),
        }
    }

    /// A job message over its size limit: its operation fails (the job
    /// ends `Failed` with the size and the limit in its reason); never
    /// retried.
    fn job_message_too_large(&mut self, now: Instant, to: P, msg: JobMsg<P>, error: TooLarge) {
        self.counters.oversized_job_messages += 1;
        self.jobs.handle(
            now,
            JobInput::TooLarge {
                to: to.clone(),
                msg: msg.clone(),
                error: error.clone(),
            },
        );
        let status = matches!(msg, JobMsg::Status { .. });
        self.notice(Notice::TooLargeToSend { to, status, error });
    }

    /// A job ended at this primary: if its application uses the object
    /// space, its namespace goes with it, unless its submitter asked to
    /// keep it.
    fn destroy_job_namespace(&mut self, now: Instant, job: JobId) {
        let uses_space = self
            .jobs
            .homed_apps()
            .find(|(id, _, _)| *id == job)
            .and_then(|(_, app, _)| self.jobs.registry().get(app).ok())
            .is_some_and(|app| app.uses_space());
        if !uses_space {
            return;
        }
        if self.jobs.keeps_namespace(job) {
            return self.notice(Notice::JobNamespaceKept {
                job,
                because: NamespaceKept::SubmitterAsked,
            });
        }
        let op = SpaceOp::DestroyNamespace {
            name: crate::space::job_namespace(job),
        };
        match self.space.request(now, op, self.config.send_timeout) {
            Ok(id) => {
                if self.own_space_requests.len() >= MAX_OWN_SPACE_REQUESTS {
                    self.own_space_requests.pop_first();
                }
                self.own_space_requests.insert(id, job);
            }
            Err(error) => self.notice(Notice::JobNamespaceKept {
                job,
                because: NamespaceKept::DestroyFailed(error.to_string()),
            }),
        }
    }

    /// Hands each message of a batch ([`wire::encode_batch`]) to
    /// `handle`; a damaged batch is counted as malformed `what`.
    fn handle_batch(
        &mut self,
        now: Instant,
        from: P,
        bytes: &[u8],
        what: &'static str,
        handle: fn(&mut Self, Instant, P, &[u8]),
    ) {
        match wire::decode_batch(bytes) {
            Ok(bodies) => {
                for body in bodies {
                    handle(self, now, from.clone(), body);
                }
            }
            Err(error) => {
                self.malformed(from, what, error.to_string());
            }
        }
    }

    fn handle_object_payload(&mut self, now: Instant, from: P, bytes: &[u8]) {
        match wire::decode::<ObjectMsg<P>>(bytes, self.pipes.config().max_message_bytes) {
            // Objects are created, called and homed by members only: a peer
            // the view has never heard of could otherwise found homes here
            // or outrank an object's primary with a forged replica. A
            // member not yet known here resends until it is.
            Ok(msg) if self.membership.state_of(&from).is_none() => {
                self.counters.refused_object_messages += 1;
                let message = object_msg_name(&msg);
                self.notice(Notice::ObjectRefused { from, message });
            }
            Ok(msg) => self.objects.handle(now, from, msg),
            Err(error) => {
                self.malformed(from, "object message", error.to_string());
            }
        }
    }

    fn handle_mesh_payload(&mut self, now: Instant, from: P, bytes: &[u8]) {
        match wire::decode::<MeshPeerMsg<P>>(bytes, self.pipes.config().max_message_bytes) {
            // Like objects: a peer the view has never heard of could found
            // cell records here or take a place in a cell.
            Ok(msg) if self.membership.state_of(&from).is_none() => {
                self.counters.refused_mesh_messages += 1;
                let message = msg.name();
                self.notice(Notice::MeshRefused { from, message });
            }
            Ok(msg) => self.mesh.handle(now, from, msg),
            Err(error) => {
                self.malformed(from, "mesh message", error.to_string());
            }
        }
    }

    fn on_mesh_output(&mut self, now: Instant, out: MeshPeerOutput<P>) {
        match out {
            MeshPeerOutput::Send { to, msg, class } => {
                let body = match wire::encode(&msg, self.max_body_bytes()) {
                    Ok(body) => body,
                    Err(error) => {
                        self.notice(Notice::FrameNotSent { to, error });
                        return;
                    }
                };
                let class = class.traffic_class();
                if msg.deferrable() {
                    let delay = self.mesh.batch_delay();
                    self.batch_mesh(now, to, class, body, delay);
                    return;
                }
                // What waits for this peer goes first: the messages leave
                // in the order they were produced.
                if let Some(batch) = self.mesh_batches.remove(&to) {
                    self.send_mesh_batch(to.clone(), batch);
                }
                let payload = wire::encode_payload(PayloadKind::Mesh, &body);
                // The mesh cores resend what must arrive; a send that
                // fails here is one to a peer about to be declared failed.
                let _ = self.send_payload(now, to, class, payload, SendKind::Other);
            }
            MeshPeerOutput::Notice(notice) => self.outputs.push_back(NodeOutput::Mesh(notice)),
        }
    }

    /// Queues a deferrable mesh message of `class` for `to`; a batch it
    /// would take past [`MESH_BATCH_BYTES`] goes first.
    fn batch_mesh(
        &mut self,
        now: Instant,
        to: P,
        class: TrafficClass,
        body: Vec<u8>,
        delay: Duration,
    ) {
        let entry = body.len() + wire::BATCH_ENTRY_BYTES;
        let full = self.mesh_batches.get(&to).is_some_and(|b| {
            b.bodies.len() >= wire::MAX_BATCH_MESSAGES || b.bytes + entry > MESH_BATCH_BYTES
        });
        if full {
            if let Some(batch) = self.mesh_batches.remove(&to) {
                self.send_mesh_batch(to.clone(), batch);
            }
        }
        let batch = self.mesh_batches.entry(to).or_insert_with(|| MeshBatch {
            bodies: Vec::new(),
            bytes: 0,
            send_at: now + delay,
            class,
        });
        batch.bytes += entry;
        batch.bodies.push(body);
        batch.class = batch.class.max(class);
    }

    fn send_due_mesh_batches(&mut self, now: Instant) {
        if !self.mesh_batches.values().any(|b| b.send_at <= now) {
            return;
        }
        let (due, waiting) = std::mem::take(&mut self.mesh_batches)
            .into_iter()
            .partition(|(_, b)| b.send_at <= now);
        self.mesh_batches = waiting;
        for (to, batch) in due {
            self.send_mesh_batch(to, batch);
        }
    }

    /// Sends deferrable mesh messages to one peer as one frame, outside
    /// the pipes ([`Frame::MeshBatch`]), with the priority of the most
    /// urgent of them.
    fn send_mesh_batch(&mut self, to: P, batch: MeshBatch) {
        if batch.bodies.is_empty() {
            return;
        }
        self.counters.mesh_batches_sent += 1;
        self.counters.mesh_messages_batched += batch.bodies.len() as u64;
        let bytes = wire::encode_batch(&batch.bodies);
        self.transmit(to, Some(batch.class), &Frame::MeshBatch(bytes));
    }

    fn on_object_output(&mut self, now: Instant, out: ObjectOutput<P>) {
        match out {
            ObjectOutput::Send { to, msg, bulk } => {
                let body = match wire::encode(&msg, self.max_body_bytes()) {
                    Ok(body) => body,
                    Err(error) => {
                        // The caller resends, then fails at its deadline.
                        self.notice(Notice::FrameNotSent { to, error });
                        return;
                    }
                };
                let class = if bulk {
                    TrafficClass::BULK
                } else {
                    TrafficClass::EVENTS
                };
                let payload = wire::encode_payload(PayloadKind::Object, &body);
                // A send that fails is resent by the objects core.
                let _ = self.send_payload(now, to, class, payload, SendKind::Other);
            }
            ObjectOutput::Answer { token, result } => self
                .outputs
                .push_back(NodeOutput::ObjectAnswer { token, result }),
            ObjectOutput::Persist(stored) => {
                self.outputs.push_back(NodeOutput::PersistObject(stored))
            }
            ObjectOutput::Run(run) => self.outputs.push_back(NodeOutput::RunObject(run)),
        }
    }

    fn handle_space_payload(&mut self, now: Instant, from: P, bytes: &[u8]) {
        match wire::decode::<SpaceMsg<P>>(bytes, self.pipes.config().max_message_bytes) {
            Ok(msg) => self.space.handle(now, SpaceInput::Message { from, msg }),
            Err(error) => {
                self.malformed(from, "space message", error.to_string());
            }
        }
    }

    /// Queues an encoded space message for `to`; the queue goes out as one
    /// pipe message when the space core is quiet ([`Node::flush_space`])
    /// or the batch is full.
    fn batch_space(
        &mut self,
        now: Instant,
        to: P,
        bulk: bool,
        body: Vec<u8>,
        requests: Vec<RequestId>,
    ) {
        let max = self.max_body_bytes();
        let entry = body.len() + wire::BATCH_ENTRY_BYTES;
        let key = (to, bulk);
        let full = self
            .space_batches
            .get(&key)
            .is_some_and(|b| b.bodies.len() >= wire::MAX_BATCH_MESSAGES || b.bytes + entry > max);
        if full {
            if let Some(batch) = self.space_batches.remove(&key) {
                self.send_space_batch(now, key.0.clone(), key.1, batch);
            }
        }
        let batch = self.space_batches.entry(key).or_default();
        batch.bytes += entry;
        batch.bodies.push(body);
        batch.requests.extend(requests);
    }

    /// Sends every queued space batch.
    fn flush_space(&mut self, now: Instant) {
        for ((to, bulk), batch) in std::mem::take(&mut self.space_batches) {
            self.send_space_batch(now, to, bulk, batch);
        }
    }

    /// Sends one batch: a lone message as itself. (A batch of several
    /// fits in a pipe message: [`Node::batch_space`] sends a batch before
    /// a message that would overflow it.)
    fn send_space_batch(&mut self, now: Instant, to: P, bulk: bool, batch: SpaceBatch) {
        let class = if bulk {
            TrafficClass::BULK
        } else {
            TrafficClass::EVENTS
        };
        let payload = match batch.bodies.as_slice() {
            [one] => wire::encode_payload(PayloadKind::Space, one),
            many => wire::encode_payload(PayloadKind::SpaceBatch, &wire::encode_batch(many)),
        };
        let kind = SendKind::Space {
            to: to.clone(),
            requests: batch.requests,
        };
        if self
            .send_payload(now, to, class, payload, kind.clone())
            .is_err()
        {
            self.job_send_failed(now, kind);
        }
    }

    fn on_space_output(&mut self, now: Instant, out: SpaceOutput<P>) {
        match out {
            SpaceOutput::Send { to, msg, bulk } => {
                let requests: Vec<RequestId> = match &msg {
                    SpaceMsg::Request { id, .. } => vec![*id],
                    _ => Vec::new(),
                };
                if matches!(
                    self.membership.state_of(&to),
                    Some(MemberState::Dead | MemberState::Left)
                ) {
                    return self.job_send_failed(now, SendKind::Space { to, requests });
                }
                match wire::encode(&msg, self.max_body_bytes()) {
                    Ok(body) => self.batch_space(now, to, bulk, body, requests),
                    Err(_) => self.job_send_failed(now, SendKind::Space { to, requests }),
                }
            }
            SpaceOutput::Persist {
                partition,
                term,
                seq,
                size,
                members,
                config,
                data,
            } => self.outputs.push_back(NodeOutput::PersistSpace {
                partition,
                term,
                seq,
                size,
                members,
                config,
                data,
            }),
            SpaceOutput::Unpersist { partition } => self
                .outputs
                .push_back(NodeOutput::UnpersistSpace { partition }),
            SpaceOutput::PersistShard { key, id, shard } => self
                .outputs
                .push_back(NodeOutput::PersistShard { key, id, shard }),
            SpaceOutput::UnpersistShards { ids } => {
                self.outputs.push_back(NodeOutput::UnpersistShards { ids })
            }
            SpaceOutput::Answer { id, result } => match self.own_space_requests.remove(&id) {
                Some(job) => match result {
                    // A job that never wrote to the space has no namespace.
                    Ok(_) | Err(SpaceError::UnknownNamespace(_)) => {}
                    Err(error) => self.notice(Notice::JobNamespaceKept {
                        job,
                        because: NamespaceKept::DestroyFailed(error.to_string()),
                    }),
                },
                None => self
                    .outputs
                    .push_back(NodeOutput::SpaceAnswer { id, result }),
            },
            SpaceOutput::LockLost(lost) => self.outputs.push_back(NodeOutput::SpaceLockLost(lost)),
        }
    }

    /// A job message could not be delivered.
    fn job_send_failed(&mut self, now: Instant, kind: SendKind<P>) {
        match kind {
            SendKind::WorkRequest { to, job, free } => {
                let msg = JobMsg::WorkRequest { job, free };
                self.jobs.handle(now, JobInput::SendFailed { to, msg })
            }
            SendKind::Query { job } => self.query_answered_no(now, job),
            SendKind::Cancel { to, job } => {
                let msg = JobMsg::Cancel { job };
                self.jobs.handle(now, JobInput::SendFailed { to, msg })
            }
            SendKind::Assign(sent) => self.assign_settled(now, sent, false),
            SendKind::ModuleWant { to } => {
                self.modules
                    .unreachable(now, &to, format!("{to} could not be reached"));
                self.drain_modules(now);
            }
            SendKind::Space { to, requests } => {
                for id in requests {
                    let failed = SpaceInput::SendFailed {
                        to: to.clone(),
                        id: Some(id),
                    };
                    self.space.handle(now, failed);
                }
            }
            SendKind::App | SendKind::Other => {}
        }
    }

    /// A job message for the job core, unless its job waits for a guest
    /// module and the message needs it ([`modules::waits_for_module`]):
    /// then it is held, in order, until the module is here.
    fn job_message_in(&mut self, now: Instant, from: P, msg: JobMsg<P>) {
        let Some(job) = modules::job_of(&msg) else {
            return self.jobs.handle(now, JobInput::Message { from, msg });
        };
        let msg = if self.modules.holds(job) && modules::waits_for_module(&msg) {
            match self.modules.hold_more(job, from.clone(), msg) {
                None => return,
                Some(msg) => {
                    // Too many held: let the job core see them, in order.
                    for (held_from, held) in self.modules.release_job(job) {
                        self.jobs.handle(
                            now,
                            JobInput::Message {
                                from: held_from,
                                msg: held,
                            },
                        );
                    }
                    msg
                }
            }
        } else {
            match modules::app_of(&msg).map(|app| self.jobs.registry().get(app)) {
                Some(Err(AppError::ModuleMissing(id))) => {
                    let me = self.membership.local().peer.clone();
                    let home: Vec<P> = self
                        .module_home(&id)
                        .into_iter()
                        .filter(|p| *p != me && *p != from)
                        .collect();
                    match self.modules.hold(now, job, id, &home, from.clone(), msg) {
                        None => return self.drain_modules(now),
                        Some(msg) => msg,
                    }
                }
                // The module is here, but without a signature this peer
                // trusts: the sender may hold the submitter's (it had to,
                // to submit or assign it). Asked once per module and
                // sender; what comes back is merged and judged again.
                Some(Err(AppError::Untrusted(id, _))) if self.ask_signatures_of(&id, &from) => {
                    match self.modules.hold(now, job, id, &[], from.clone(), msg) {
                        None => return self.drain_modules(now),
                        Some(msg) => msg,
                    }
                }
                _ => msg,
            }
        };
        self.jobs.handle(now, JobInput::Message { from, msg })
    }

    /// Whether to ask `from` for the signatures it holds for module `id`
    /// (once per module and sender, remembering a bounded number).
    fn ask_signatures_of(&mut self, id: &str, from: &P) -> bool {
        if self
            .signature_asks
            .iter()
            .any(|(asked, of)| asked == id && of == from)
        {
            return false;
        }
        if self.signature_asks.len() >= MAX_SIGNATURE_ASKS {
            self.signature_asks.pop_front();
        }
        self.signature_asks
            .push_back((id.to_string(), from.clone()));
        true
    }

    /// Module `id`'s home as this peer sees it: the live peers that run
    /// guests (this one included) XOR-closest to its hash.
    pub fn module_home(&self, id: &str) -> Vec<P> {
        self.closest_guest_runners(id, modules::MODULE_HOME_SIZE)
    }

    /// Whether this peer could be in module `id`'s home, allowing for views
    /// that differ for a while after joins: among the twice as many peers
    /// closest to it.
    fn module_home_plausibly_here(&self, id: &str) -> bool {
        let me = &self.membership.local().peer;
        self.closest_guest_runners(id, 2 * modules::MODULE_HOME_SIZE)
            .contains(me)
    }

    /// The `size` live peers that run guests (this one included, if it
    /// does) XOR-closest to module `id`'s hash, closest first; none if `id`
    /// is not a module id.
    fn closest_guest_runners(&self, id: &str, size: usize) -> Vec<P> {
        let Some(key) = modules::module_key(id) else {
            return Vec::new();
        };
        let distance = |peer: &P| {
            let theirs = self.jobs.key_of(peer);
            let mut d = [0u8; 32];
            for (i, byte) in d.iter_mut().enumerate() {
                *byte = key[i] ^ theirs[i];
            }
            d
        };
        let mut candidates: Vec<([u8; 32], &P)> = std::iter::once(self.membership.local())
            .chain(
                self.membership
                    .records()
                    .filter(|r| matches!(r.state, MemberState::Alive | MemberState::Suspect)),
            )
            .filter(|r| r.stats.runs_guests)
            .map(|r| (distance(&r.peer), &r.peer))
            .collect();
        candidates.sort_unstable_by_key(|c| c.0);
        candidates
            .into_iter()
            .take(size)
            .map(|(_, p)| p.clone())
            .collect()
    }

    /// Starts fetching module `id` with nothing waiting for it: from its
    /// home, then from `also` (a job's primary).
    fn prefetch_module(&mut self, now: Instant, id: String, also: Option<P>) {
        let me = self.membership.local().peer.clone();
        let mut sources: Vec<P> = self
            .module_home(&id)
            .into_iter()
            .filter(|p| *p != me)
            .collect();
        sources.extend(also.filter(|p| *p != me));
        if sources.is_empty() {
            let why = "no other live peer runs guests to hold it".to_string();
            return self.notice(Notice::ModuleUnavailable { id, why });
        }
        if !self.modules.prefetch(now, id.clone(), sources) {
            let why = "too many modules are being fetched".to_string();
            return self.notice(Notice::ModuleUnavailable { id, why });
        }
        self.drain_modules(now);
    }

    /// A backup of a guest's job must be able to take over and restart its
    /// units: it fetches the job's module as soon as it holds the record,
    /// while the primary and the module's home are there to give it (and a
    /// peer that took over without it fetches it from the home).
    fn prefetch_for_backups(&mut self, now: Instant) {
        let missing: Vec<(String, Option<P>)> = self
            .jobs
            .homed_apps()
            .filter_map(|(_, app, primary)| match self.jobs.registry().get(app) {
                Err(AppError::ModuleMissing(id)) if !self.modules.is_fetching(&id) => {
                    Some((id, primary.cloned()))
                }
                _ => None,
            })
            .collect();
        for (id, primary) in missing {
            if !self.modules.is_fetching(&id) {
                self.prefetch_module(now, id, primary);
            }
        }
    }

    fn drain_modules(&mut self, now: Instant) {
        while let Some(out) = self.modules.poll() {
            match out {
                FetchOutput::Want { to, id } => {
                    let kind = SendKind::ModuleWant { to: to.clone() };
                    self.send_module_msg(now, to, ModuleMsg::Want { id }, kind);
                }
                FetchOutput::Release(messages) => {
                    for (from, msg) in messages {
                        self.jobs.handle(now, JobInput::Message { from, msg });
                    }
                }
                FetchOutput::GaveUp { id, why } => {
                    self.notice(Notice::ModuleUnavailable { id, why })
                }
            }
        }
    }

    fn send_module_msg(&mut self, now: Instant, to: P, msg: ModuleMsg, kind: SendKind<P>) {
        let class = match msg {
            ModuleMsg::Module { .. } | ModuleMsg::Store { .. } => TrafficClass::BULK,
            _ => TrafficClass::EVENTS,
        };
        let sent = wire::encode(&msg, self.pipes.config().max_message_bytes)
            .map_err(|e| e.to_string())
            .and_then(|body| {
                let payload = wire::encode_payload(PayloadKind::Module, &body);
                self.send_payload(now, to.clone(), class, payload, kind.clone())
                    .map_err(|e| e.to_string())
            });
        if sent.is_err() {
            self.job_send_failed(now, kind);
        }
    }

    fn handle_module_payload(&mut self, now: Instant, from: P, bytes: &[u8]) {
        let msg = match wire::decode::<ModuleMsg>(bytes, self.pipes.config().max_message_bytes) {
            Ok(msg) => msg,
            Err(error) => return self.malformed(from, "module message", error.to_string()),
        };
        match msg {
            ModuleMsg::Want { id } => self
                .outputs
                .push_back(NodeOutput::ServeModule { to: from, id }),
            ModuleMsg::Module {
                id,
                bytes,
                signatures,
            } if self.modules.is_asking(&id, &from) => {
                if modules::module_id(&bytes) != id {
                    let why = format!("{from} sent bytes that do not hash to the module's id");
                    self.modules.failed(now, &id, &from, why);
                    self.drain_modules(now);
                } else if !modules::signatures_in_bounds(&signatures) {
                    let why = format!("{from} sent more or larger signatures than allowed");
                    self.modules.failed(now, &id, &from, why);
                    self.drain_modules(now);
                } else {
                    self.outputs.push_back(NodeOutput::ModuleReceived {
                        from,
                        id,
                        bytes,
                        signatures,
                        pushed: false,
                    })
                }
            }
            ModuleMsg::Store {
                id,
                bytes,
                signatures,
            } if self.membership.record_of(&from).is_some()
                && self.module_home_plausibly_here(&id)
                && modules::module_id(&bytes) == id
                && modules::signatures_in_bounds(&signatures) =>
            {
                self.outputs.push_back(NodeOutput::ModuleReceived {
                    from,
                    id,
                    bytes,
                    signatures,
                    pushed: true,
                })
            }
            ModuleMsg::Stored { id } => self.notice(Notice::ModuleHeld { id, by: from }),
            ModuleMsg::Missing { id } if self.modules.is_asking(&id, &from) => {
                let why = format!("{from} does not hold it");
                self.modules.failed(now, &id, &from, why);
                self.drain_modules(now);
            }
            ModuleMsg::Module { .. } | ModuleMsg::Missing { .. } | ModuleMsg::Store { .. } => {
                self.counters.unsolicited_modules += 1;
                self.notice(Notice::UnsolicitedModule { from });
            }
        }
    }

    fn assign_settled(&mut self, now: Instant, sent: SentAssignment<P>, delivered: bool) {
        self.jobs
            .handle(now, JobInput::AssignSettled { sent, delivered });
    }

    fn on_unit_event(&mut self, now: Instant, event: UnitEvent) {
        let finished = matches!(event, UnitEvent::Finished { .. });
        self.jobs.handle(now, JobInput::Unit(event));
        if finished {
            let mut stats = self.membership.local().stats.clone();
            stats.units_done_session += 1;
            stats.units_done_total += 1;
            let total = stats.units_done_total;
            self.membership
                .handle(now, membership::Input::SetStats(stats));
            self.outputs.push_back(NodeOutput::UnitsDone { total });
        }
    }

    /// Asks about `job` the way `colony result` does: the local record,
    /// else its probable home, else every live member.
    fn query(&mut self, now: Instant, job: JobId) {
        if let Some(view) = self.jobs.view(now, job) {
            self.outputs.push_back(NodeOutput::QueryAnswer {
                job,
                view: Some(Box::new(view)),
            });
            return;
        }
        if self.queries.contains_key(&job) {
            return;
        }
        let home = self
            .jobs
            .home_for(job)
            .unwrap_or_else(|| self.jobs.probable_home(job));
        self.queries.insert(
            job,
            JobQuery {
                outstanding: 0,
                fanned_out: false,
                asked: Vec::new(),
            },
        );
        if home == self.me {
            self.query_answered_no(now, job);
        } else {
            self.ask(job, vec![home]);
        }
    }

    fn ask(&mut self, job: JobId, peers: Vec<P>) {
        if let Some(query) = self.queries.get_mut(&job) {
            query.outstanding += peers.len();
            query.asked.extend(peers.iter().cloned());
        }
        for peer in peers {
            self.jobs
                .handle(self.now, JobInput::Query { job, to: peer });
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
            let others: Vec<P> = self
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
            self.outputs
                .push_back(NodeOutput::QueryAnswer { job, view: None });
        }
    }
}

/// The name of an object message's kind, for logs.
fn object_msg_name<P>(msg: &ObjectMsg<P>) -> &'static str {
    match msg {
        ObjectMsg::Create { .. } => "create",
        ObjectMsg::Call { .. } => "call",
        ObjectMsg::Delete { .. } => "delete",
        ObjectMsg::Reply { .. } => "reply",
        ObjectMsg::NotHere { .. } => "not here",
        ObjectMsg::Home(_) => "home",
        ObjectMsg::Lookup { .. } => "lookup",
        ObjectMsg::Rollback { .. } => "rollback",
    }
}
