//! The objects of one peer, sans IO: the homes of the objects it holds
//! (their records on the generic home, and the live activations where it
//! is primary), and the calls it makes — for its clients and for its
//! objects — each resent under the same call identifier until a reply or
//! its deadline, so that a call crossing a crash or a move runs once.
//!
//! Routing: a request goes to the live peer closest to the object's GUID
//! (the primary of its home in a settled network). A member that is not
//! the primary answers `NotHere` naming the primary it follows; a peer
//! that holds no record answers `NotHere` with no hint, and the caller
//! tries again until its deadline (then: no such object).
//!
//! Exactly once under `pml`: a delivery is logged by a majority of the
//! object's home before its reply and the calls it made leave (they are
//! the update's effects); a member that takes over rebuilds the object by
//! replaying the log, and answers retried calls from the result cache.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::activation::{Activation, Delivery, Served};
use super::id::{CallId, Guid, ObjectUri};
use super::model::{CallError, ObjectTypes, Outgoing};
use super::record::{
    rollbacks_missing, CicStamp, ObjectEffect, ObjectProtocol, ObjectRecord, ObjectSnapshot,
};
use crate::home::{HomeConfig, HomeMsgOf, HomeOutput, Homes, Replicated};
use crate::membership::MemberState;
use crate::PeerKey;

/// Timing and limits of the objects core.
#[derive(Clone, Debug)]
pub struct ObjectsConfig {
    /// Peers in an object's home (protocols other than `none`).
    pub home_size: u8,
    /// How long a call is tried before it fails, unless the caller says.
    pub call_timeout: Duration,
    /// How often an unanswered request is sent again.
    pub resend_interval: Duration,
    /// Calls in flight from this peer (its clients' and its objects').
    pub max_pending_calls: usize,
    /// Largest request, reply or parameters, in bytes.
    pub max_message_bytes: usize,
    /// The objects' homes.
    pub home: HomeConfig,
}

impl Default for ObjectsConfig {
    fn default() -> Self {
        ObjectsConfig {
            home_size: 3,
            call_timeout: Duration::from_secs(30),
            resend_interval: Duration::from_millis(500),
            max_pending_calls: 65_536,
            max_message_bytes: 1 << 20,
            home: HomeConfig::default(),
        }
    }
}

/// Messages between the objects cores of peers.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(bound(deserialize = "P: DeserializeOwned"))]
pub enum ObjectMsg<P> {
    /// Create the object at `uri`.
    Create {
        /// The creating call.
        id: CallId,
        /// The new object.
        uri: ObjectUri,
        /// Its type.
        object_type: String,
        /// Its encoded parameters.
        params: Vec<u8>,
        /// Its fault tolerance.
        protocol: ObjectProtocol,
        /// `cic`: the creating object's stamp.
        cic: Option<CicStamp>,
    },
    /// Call the object at `to`.
    Call {
        /// The call.
        id: CallId,
        /// Every call of the caller numbered below this has had its reply.
        acked_below: u64,
        /// The highest ordinal the caller has had in replies from the
        /// callee: a callee that ran fewer of its calls was rolled back.
        known: u64,
        /// The callee.
        to: ObjectUri,
        /// The type the caller takes it for.
        object_type: String,
        /// The encoded request.
        request: Vec<u8>,
        /// `cic`: the calling object's stamp.
        cic: Option<CicStamp>,
    },
    /// Delete the object at `uri`.
    Delete {
        /// The deleting call.
        id: CallId,
        /// The object.
        uri: ObjectUri,
    },
    /// The outcome of a create, call or delete.
    Reply {
        /// The call answered.
        id: CallId,
        /// Its outcome (empty bytes for a create or delete).
        reply: Result<Vec<u8>, CallError>,
        /// For a call the object ran: how many of the caller's calls it had
        /// run with this one (0 otherwise).
        ordinal: u64,
        /// `cic`: the answering object's stamp.
        cic: Option<CicStamp>,
    },
    /// This peer is not the object's primary: try `primary`, or again
    /// later if none is known.
    NotHere {
        /// The call.
        id: CallId,
        /// The primary this peer follows for the object, if any.
        primary: Option<P>,
    },
    /// Between the members of an object's home.
    Home(HomeMsgOf<Guid, P, ObjectRecord>),
    /// What is the object at `uri`? Answered by its primary with an
    /// encoded [`ObjectFound`].
    Lookup {
        /// The looking-up call.
        id: CallId,
        /// The object.
        uri: ObjectUri,
    },
    /// `cic`: roll the object at `to` back to recovery line `line` of
    /// rollback `epoch` (an object `from` met rolled back). Answered with
    /// an empty reply once applied.
    Rollback {
        /// The notice, as a call.
        id: CallId,
        /// The object to roll back.
        to: ObjectUri,
        /// The object that sends the notice (not sent it back).
        from: Guid,
        /// The rollback.
        epoch: u64,
        /// Its recovery line.
        line: u64,
    },
}

impl<P> ObjectMsg<P> {
    /// The call a message is about, if it is about one.
    fn call_id(&self) -> Option<CallId> {
        match self {
            ObjectMsg::Create { id, .. }
            | ObjectMsg::Call { id, .. }
            | ObjectMsg::Delete { id, .. }
            | ObjectMsg::Reply { id, .. }
            | ObjectMsg::NotHere { id, .. }
            | ObjectMsg::Lookup { id, .. }
            | ObjectMsg::Rollback { id, .. } => Some(*id),
            ObjectMsg::Home(_) => None,
        }
    }
}

/// Requests held for objects whose primary here awaits its lease, at most
/// (beyond it they are refused and their callers send again).
pub const MAX_HELD: usize = 4_096;

/// What a lookup finds: enough to call the object without knowing its
/// type beforehand.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectFound {
    /// Its type.
    pub object_type: String,
    /// Its fault tolerance.
    pub protocol: ObjectProtocol,
}

/// What a client asks its peer's objects core.
#[derive(Clone, Debug)]
pub enum ObjectRequest {
    /// Create an object of `object_type` from `params`.
    Create {
        /// Its type.
        object_type: String,
        /// Its encoded parameters.
        params: Vec<u8>,
        /// Its fault tolerance.
        protocol: ObjectProtocol,
    },
    /// Call the object at `to`.
    Call {
        /// The object.
        to: ObjectUri,
        /// The type the caller takes it for.
        object_type: String,
        /// The encoded request.
        request: Vec<u8>,
    },
    /// Delete the object at `uri`.
    Delete {
        /// The object.
        uri: ObjectUri,
    },
    /// Look the object at `uri` up: its type and protocol.
    Lookup {
        /// The object.
        uri: ObjectUri,
    },
}

/// A successful answer to an [`ObjectRequest`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ObjectAnswer {
    /// The object was created there.
    Created(ObjectUri),
    /// The call's encoded reply.
    Replied(Vec<u8>),
    /// The object was deleted.
    Deleted,
    /// The object exists: its type and protocol.
    Found(ObjectFound),
}

/// What the core wants done.
#[derive(Debug)]
pub enum ObjectOutput<P> {
    /// Send `msg` to `to`; `bulk` for home snapshots and deltas.
    Send {
        /// The receiver.
        to: P,
        /// The message.
        msg: ObjectMsg<P>,
        /// Whether it is large.
        bulk: bool,
    },
    /// The answer to the client request `token`.
    Answer {
        /// The request's token.
        token: u64,
        /// Its outcome.
        result: Result<ObjectAnswer, CallError>,
    },
    /// Write this record to disk (replacing the object's previous one),
    /// then confirm with [`Objects::durable`] for its (`term`, `seq`).
    Persist(StoredObject<P>),
    /// Run this object's code ([`ObjectRun::run`], on any thread; it may
    /// take long), then give it back with [`Objects::ran`]. The object
    /// serves nothing else meanwhile.
    Run(ObjectRun),
}

/// Deliveries an object is to serve, in order, with the object itself
/// taken out of the core so that its code runs away from the thread that
/// drives the peer (a long handler must not stall membership or other
/// objects). The deliveries that arrived together go out together (at
/// most [`MAX_RUN_DELIVERIES`]), and are recorded together when the run is
/// back: one replication round for all of them.
pub struct ObjectRun {
    guid: Guid,
    /// Which run of the core this is: one given back after its object
    /// stepped down (and maybe came back) is stale.
    run: u64,
    live: Activation,
    deliveries: Vec<Delivery>,
    served: Vec<Served>,
}

/// Deliveries one [`ObjectRun`] takes at most.
pub const MAX_RUN_DELIVERIES: usize = 256;

impl ObjectRun {
    /// The object.
    pub fn guid(&self) -> Guid {
        self.guid
    }

    /// Serves the deliveries in order: runs the object's handler (a panic
    /// in it is that call's error). Deterministic, like every delivery.
    pub fn run(&mut self) {
        while let Some(delivery) = self.deliveries.get(self.served.len()) {
            let served = self.live.deliver(delivery.clone());
            self.served.push(served);
        }
    }
}

impl std::fmt::Debug for ObjectRun {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectRun")
            .field("guid", &self.guid)
            .field("run", &self.run)
            .field("deliveries", &self.deliveries.len())
            .field("served", &self.served.len())
            .finish()
    }
}

/// An object out on an [`ObjectRun`], or about to go.
struct Running<P> {
    run: u64,
    /// Per delivery, for a call: where its reply goes.
    routes: Vec<Option<(CallId, P)>>,
    /// The object and its deliveries while the run still takes more (it
    /// goes out at the next [`Objects::poll`]); `None` once out.
    forming: Option<(Activation, Vec<Delivery>)>,
    /// Its type and deliveries served when it left, for listings.
    object_type: String,
    served: u64,
    /// When it left.
    started: Instant,
    /// A checkpoint fell due while it ran.
    checkpoint_due: bool,
}

/// An object's record as a peer keeps it on disk: the record, and where its
/// home stood when it was written.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(bound(deserialize = "P: DeserializeOwned"))]
pub struct StoredObject<P> {
    /// The home's term.
    pub term: u64,
    /// Its update.
    pub seq: u64,
    /// How many peers the home has.
    pub size: u8,
    /// The home's members, primary first.
    pub members: Vec<P>,
    /// The members as last committed.
    pub config: Vec<P>,
    /// The record (the object's GUID is in its URI).
    pub snapshot: ObjectSnapshot,
}

/// Who made a call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Origin {
    /// A client of this peer, by its request token.
    Client(u64),
    /// An object whose primary is this peer.
    Object(Guid),
    /// A rollback notice this peer sends for an object: nobody waits for
    /// its answer.
    Notice,
}

/// A request this peer sends until it is answered or its deadline passes.
#[derive(Debug)]
struct Pending<P> {
    msg: ObjectMsg<P>,
    target: Guid,
    origin: Origin,
    deadline: Instant,
    next_send: Instant,
    /// The primary named by the last `NotHere`.
    redirect: Option<P>,
    /// Whether any answer other than "not here, no idea" came.
    found: bool,
    /// The deadline, for the error.
    timeout: Duration,
}

/// What the core counted.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectStats {
    /// Deliveries served by primaries here (repeats excluded).
    pub served: u64,
    /// Calls answered from the result cache.
    pub repeats: u64,
    /// Requests sent again (no answer yet, or redirected).
    pub resent: u64,
    /// Calls that failed at their deadline.
    pub timed_out: u64,
    /// Objects rebuilt here by replaying their log.
    pub recovered: u64,
    /// Requests refused: over a size limit, or too many in flight.
    pub refused: u64,
    /// `cic`: checkpoints forced by a message from a sender with a higher
    /// index.
    pub forced_checkpoints: u64,
    /// `cic`: recoveries that lost served deliveries and started a
    /// rollback of the application.
    pub rollbacks_started: u64,
    /// `cic`: rollbacks applied to objects here that took their state
    /// back.
    pub rolled_back: u64,
    /// `cic`: messages dropped because their sender had not yet applied a
    /// rollback the receiver had (they came from a discarded state).
    pub stale_dropped: u64,
}

/// One object as `colony objects` lists it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectInfo {
    /// The object.
    pub uri: ObjectUri,
    /// Its type.
    pub object_type: String,
    /// Its fault tolerance.
    pub protocol: ObjectProtocol,
    /// Deliveries it served.
    pub served: u64,
    /// Deliveries logged since its last checkpoint.
    pub logged: usize,
    /// Deliveries its last checkpoint includes.
    pub checkpoint_covers: u64,
    /// Milliseconds since that checkpoint was taken (or the object was
    /// created or rebuilt here).
    pub checkpoint_age_ms: u64,
    /// Milliseconds its handler has been running the current delivery, if
    /// one runs now.
    pub running_ms: Option<u64>,
}

/// An object created here, waiting for its would-be home to promise term 1
/// ([`Homes::found`]) before it exists.
struct Creating<P> {
    /// Who asked, and its call.
    from: P,
    id: CallId,
    size: u8,
    live: Activation,
    record: ObjectRecord,
    /// The creation's effects, its reply last.
    effects: Vec<ObjectEffect>,
}

/// The objects core of one peer. See the module docs.
pub struct Objects<P: PeerKey> {
    me: P,
    network: String,
    config: ObjectsConfig,
    types: ObjectTypes,
    homes: Homes<Guid, P, ObjectRecord>,
    /// The objects this peer is primary of, but those out running.
    live: BTreeMap<Guid, Activation>,
    /// The objects out running ([`ObjectOutput::Run`]).
    running: BTreeMap<Guid, Running<P>>,
    /// Runs started, numbering them.
    runs: u64,
    /// Deliveries that arose here (replies, bounced calls) for objects out
    /// running, served when they are back.
    local: BTreeMap<Guid, VecDeque<Delivery>>,
    /// Objects gathering a run, sent out at the next [`Objects::poll`]
    /// (one that stepped down meanwhile is skipped there).
    forming: BTreeSet<Guid>,
    /// When each live object checkpoints next.
    checkpoints: BTreeSet<(Instant, Guid)>,
    checkpoint_at: BTreeMap<Guid, Instant>,
    /// When each live object last checkpointed, was created or rebuilt.
    checkpointed: BTreeMap<Guid, Instant>,
    rng: SmallRng,
    /// This peer's client session: the caller of its clients' calls.
    session: Guid,
    next_seq: u64,
    pending: BTreeMap<CallId, Pending<P>>,
    resends: BTreeSet<(Instant, CallId)>,
    /// Primary: where to send the reply of a call it serves.
    routes: BTreeMap<CallId, P>,
    /// Primary without a lease yet ([`Homes::has_lease`]): the requests
    /// for each object, in arrival order, with when they came; served once
    /// it holds one, sent elsewhere if it stops being primary, refused
    /// after `resend_interval` (the caller sends again by then).
    held: BTreeMap<Guid, VecDeque<(Instant, P, ObjectMsg<P>)>>,
    /// Messages in `held`, at most [`MAX_HELD`].
    held_count: usize,
    /// Objects whose home is being founded here (at most the homes'
    /// `max_homes`).
    creating: BTreeMap<Guid, Creating<P>>,
    on_disk: BTreeMap<Guid, (u64, u64)>,
    /// Caller side, by (caller, callee): the highest ordinal a reply of
    /// the callee carried, sent back as `known` with the next calls.
    known: BTreeMap<(Guid, Guid), u64>,
    /// Objects whose record is being written: the next write waits for
    /// it, and takes every update made meanwhile (group commit).
    writing: BTreeSet<Guid>,
    /// This peer is leaving ([`Objects::hand_over_all`]): its objects
    /// serve no new call.
    leaving: bool,
    outputs: VecDeque<ObjectOutput<P>>,
    stats: ObjectStats,
}

/// (caller, callee) pairs whose ordinals a peer remembers; past it, one is
/// forgotten (its caller then cannot tell a rollback of that callee).
pub const MAX_KNOWN: usize = 65_536;

/// The message of call `id` (its `acked_below` is set when it is sent).
fn call_msg<P>(id: CallId, to: ObjectUri, object_type: String, request: Vec<u8>) -> ObjectMsg<P> {
    ObjectMsg::Call {
        id,
        acked_below: 0,
        known: 0,
        to,
        object_type,
        request,
        cic: None,
    }
}

/// How close a peer's key is to an object's: the XOR of the first 16
/// bytes (smaller is closer).
fn distance(guid: &Guid, peer_key: &[u8; 32]) -> u128 {
    let key = guid.key();
    let mut a = [0u8; 16];
    let mut b = [0u8; 16];
    a.copy_from_slice(&key[..16]);
    b.copy_from_slice(&peer_key[..16]);
    u128::from_be_bytes(a) ^ u128::from_be_bytes(b)
}

impl<P: PeerKey> Objects<P> {
    /// The objects core of peer `me` in `network`, hosting `types`;
    /// `key_of` places peers in the key space, `seed` seeds GUIDs and
    /// election jitter.
    pub fn new(
        me: P,
        network: &str,
        config: ObjectsConfig,
        types: ObjectTypes,
        key_of: fn(&P) -> [u8; 32],
        seed: u64,
    ) -> Objects<P> {
        let closeness = Box::new(move |guid: &Guid, p: &P| distance(guid, &key_of(p)));
        let mut rng = SmallRng::seed_from_u64(seed);
        let session = Guid::from_random(rng.random());
        Objects {
            homes: Homes::new(me.clone(), config.home.clone(), closeness, seed ^ 0x5eed),
            me,
            network: network.to_string(),
            config,
            types,
            live: BTreeMap::new(),
            running: BTreeMap::new(),
            runs: 0,
            local: BTreeMap::new(),
            forming: BTreeSet::new(),
            checkpoints: BTreeSet::new(),
            checkpoint_at: BTreeMap::new(),
            checkpointed: BTreeMap::new(),
            rng,
            session,
            next_seq: 0,
            pending: BTreeMap::new(),
            resends: BTreeSet::new(),
            routes: BTreeMap::new(),
            held: BTreeMap::new(),
            held_count: 0,
            creating: BTreeMap::new(),
            on_disk: BTreeMap::new(),
            known: BTreeMap::new(),
            writing: BTreeSet::new(),
            leaving: false,
            outputs: VecDeque::new(),
            stats: ObjectStats::default(),
        }
    }

    /// Requests sent and not yet answered.
    pub fn pending_calls(&self) -> usize {
        self.pending.len()
    }

    /// What was counted.
    pub fn stats(&self) -> &ObjectStats {
        &self.stats
    }

    /// The objects whose primary is this peer (not those deleted, whose
    /// record stays a while to answer late calls).
    pub fn objects(&self, now: Instant) -> Vec<ObjectInfo> {
        let live = self
            .live
            .iter()
            .map(|(guid, live)| (guid, live.object_type(), live.served(), None));
        let running = self.running.iter().map(|(guid, r)| {
            let ran = now.saturating_duration_since(r.started);
            (guid, r.object_type.as_str(), r.served, Some(ran))
        });
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        live.chain(running)
            .filter_map(|(guid, object_type, served, running)| {
                let record = self.homes.get(guid).filter(|record| !record.deleted())?;
                let age = self
                    .checkpointed
                    .get(guid)
                    .map_or(Duration::ZERO, |at| now.saturating_duration_since(*at));
                Some(ObjectInfo {
                    uri: record.state().uri().clone(),
                    object_type: object_type.to_string(),
                    protocol: record.protocol(),
                    served,
                    logged: record.logged(),
                    checkpoint_covers: record.covers(),
                    checkpoint_age_ms: ms(age),
                    running_ms: running.map(ms),
                })
            })
            .collect()
    }

    /// An object record read back from this peer's disk after a restart:
    /// it rejoins its home as a backup, and campaigns if no primary is
    /// heard from. `false` if the record is unusable or already held.
    pub fn restore(&mut self, now: Instant, stored: StoredObject<P>) -> bool {
        let guid = stored.snapshot.uri.guid;
        let update = (stored.term, stored.seq);
        let Some(record) = ObjectRecord::restore(now, stored.snapshot) else {
            return false;
        };
        // What it holds is on disk: no need to write it again.
        self.on_disk.insert(guid, update);
        let restored = self.homes.restore_backup(
            now,
            guid,
            record,
            stored.size,
            stored.members,
            stored.config,
            update,
        );
        self.drain_homes(now);
        restored
    }

    /// Leaving gracefully: every object whose primary is here moves to the
    /// next member of its home ([`Objects::released`] says when done).
    pub fn hand_over_all(&mut self, now: Instant) {
        self.leaving = true;
        // The record is what moves: it takes the live state along.
        let live: Vec<Guid> = self.live.keys().copied().collect();
        for guid in live {
            self.checkpoint_unlogged(now, guid);
        }
        self.homes.hand_over_all(now);
        self.drain_homes(now);
    }

    /// Whether no object's home counts on this peer any more.
    pub fn released(&self) -> bool {
        self.homes.released()
    }

    /// The object homes that keep [`Objects::released`] false.
    pub fn unreleased(&self) -> Vec<String> {
        self.homes.unreleased()
    }

    /// One peer's change, for a caller that follows the view change by
    /// change: its state in this peer's view (`None`: unknown), and
    /// whether it is leaving gracefully. Takes effect at
    /// [`Objects::refresh_members`].
    pub fn update_member(
        &mut self,
        now: Instant,
        peer: P,
        state: Option<MemberState>,
        draining: bool,
    ) {
        let alive = state == Some(MemberState::Alive);
        let dead = state == Some(MemberState::Dead);
        self.homes
            .set_suspected(peer.clone(), state == Some(MemberState::Suspect));
        self.homes.set_lost(peer.clone(), dead.then_some(now));
        self.homes.set_draining(peer.clone(), alive && draining);
        self.homes.update_member(peer, alive && !draining);
    }

    /// The changes given by [`Objects::update_member`] take effect: every
    /// home adjusts.
    pub fn refresh_members(&mut self, now: Instant) {
        // A closer peer takes over once it holds the latest update: the
        // record it gets must have the live state.
        let moving: Vec<Guid> = self
            .live
            .keys()
            .filter(|guid| self.moving(guid))
            .copied()
            .collect();
        for guid in moving {
            self.checkpoint_unlogged(now, guid);
        }
        self.homes.refresh(now);
        self.drain_homes(now);
    }

    /// A client's request; answered by [`ObjectOutput::Answer`] with
    /// `token`, within `timeout` (or the configured call timeout).
    pub fn request(
        &mut self,
        now: Instant,
        token: u64,
        request: ObjectRequest,
        timeout: Option<Duration>,
    ) {
        self.next_seq += 1;
        let id = CallId {
            caller: self.session,
            seq: self.next_seq,
        };
        let (target, msg) = match request {
            ObjectRequest::Create {
                object_type,
                params,
                protocol,
            } => {
                let guid = Guid::from_random(self.rng.random());
                let uri = ObjectUri {
                    network: self.network.clone(),
                    guid,
                };
                let msg = ObjectMsg::Create {
                    id,
                    uri,
                    object_type,
                    params,
                    protocol,
                    cic: None,
                };
                (guid, msg)
            }
            ObjectRequest::Call {
                to,
                object_type,
                request,
            } => (to.guid, call_msg(id, to, object_type, request)),
            ObjectRequest::Delete { uri } => (uri.guid, ObjectMsg::Delete { id, uri }),
            ObjectRequest::Lookup { uri } => (uri.guid, ObjectMsg::Lookup { id, uri }),
        };
        let timeout = timeout.unwrap_or(self.config.call_timeout);
        if let Err(error) = self.check_request(&msg) {
            self.stats.refused += 1;
            self.outputs.push_back(ObjectOutput::Answer {
                token,
                result: Err(error),
            });
            return;
        }
        self.start(now, id, msg, target, Origin::Client(token), timeout);
        self.drain_homes(now);
    }

    /// Whether a request may be sent: its network, its size, room.
    fn check_request(&self, msg: &ObjectMsg<P>) -> Result<(), CallError> {
        let (uri, bytes) = match msg {
            ObjectMsg::Create { uri, params, .. } => (uri, params.len()),
            ObjectMsg::Call { to, request, .. } => (to, request.len()),
            ObjectMsg::Delete { uri, .. } | ObjectMsg::Lookup { uri, .. } => (uri, 0),
            _ => return Ok(()),
        };
        if uri.network != self.network {
            return Err(CallError::NoSuchObject(uri.clone()));
        }
        if bytes > self.config.max_message_bytes {
            return Err(CallError::TooLarge {
                what: "request".into(),
                size: bytes,
                max: self.config.max_message_bytes,
            });
        }
        if self.pending.len() >= self.config.max_pending_calls {
            return Err(CallError::Handler(format!(
                "this peer has {} calls in flight, its limit",
                self.pending.len()
            )));
        }
        Ok(())
    }

    fn start(
        &mut self,
        now: Instant,
        id: CallId,
        msg: ObjectMsg<P>,
        target: Guid,
        origin: Origin,
        timeout: Duration,
    ) {
        let pending = Pending {
            msg,
            target,
            origin,
            deadline: now + timeout,
            next_send: now,
            redirect: None,
            found: false,
            timeout,
        };
        if let Some(old) = self.pending.insert(id, pending) {
            self.resends.remove(&(old.next_send.min(old.deadline), id));
        }
        self.send_pending(now, id);
    }

    /// Sends (again) the request of call `id` to the object's primary as
    /// this peer sees it.
    fn send_pending(&mut self, now: Instant, id: CallId) {
        let Some(p) = self.pending.get_mut(&id) else {
            return;
        };
        self.resends.remove(&(p.next_send.min(p.deadline), id));
        let to = p
            .redirect
            .take()
            .or_else(|| self.homes.home_of(&p.target, 1).into_iter().next())
            .unwrap_or_else(|| self.me.clone());
        p.next_send = now + self.config.resend_interval;
        self.resends.insert((p.next_send.min(p.deadline), id));
        let target = p.target;
        let origin = p.origin;
        let mut msg = p.msg.clone();
        let stamp = match origin {
            Origin::Object(guid) => self.stamp_of(&guid),
            Origin::Client(_) | Origin::Notice => None,
        };
        match &mut msg {
            ObjectMsg::Call {
                acked_below,
                known,
                cic,
                ..
            } => {
                *acked_below = self.acked_below(id.caller);
                *known = self.known.get(&(id.caller, target)).copied().unwrap_or(0);
                *cic = stamp;
            }
            ObjectMsg::Create { cic, .. } => *cic = stamp,
            _ => {}
        }
        self.deliver_or_send(now, to, msg);
    }

    /// `cic`: the stamp of object `guid`'s messages, as of now.
    fn stamp_of(&self, guid: &Guid) -> Option<CicStamp> {
        self.homes.get(guid).and_then(|h| h.state().stamp())
    }

    /// Every call of `caller` below the lowest still pending here has its
    /// reply.
    fn acked_below(&self, caller: Guid) -> u64 {
        let from = CallId { caller, seq: 0 };
        self.pending
            .range(from..)
            .next()
            .filter(|(id, _)| id.caller == caller)
            .map_or(u64::MAX, |(id, _)| id.seq)
    }

    fn deliver_or_send(&mut self, now: Instant, to: P, msg: ObjectMsg<P>) {
        if to == self.me {
            let me = self.me.clone();
            self.on_message(now, me, msg);
        } else {
            let bulk = matches!(msg, ObjectMsg::Home(_));
            self.outputs.push_back(ObjectOutput::Send { to, msg, bulk });
        }
    }

    fn answer(&mut self, now: Instant, to: P, id: CallId, reply: Result<Vec<u8>, CallError>) {
        self.answer_ran(now, to, id, reply, 0, None);
    }

    /// Answers call `id`, which ran as its caller's `ordinal`-th (0: it
    /// did not run), stamped `cic` by a `cic` object.
    fn answer_ran(
        &mut self,
        now: Instant,
        to: P,
        id: CallId,
        reply: Result<Vec<u8>, CallError>,
        ordinal: u64,
        cic: Option<CicStamp>,
    ) {
        let msg = ObjectMsg::Reply {
            id,
            reply,
            ordinal,
            cic,
        };
        self.deliver_or_send(now, to, msg);
    }

    /// A message from `from` (this peer itself for local delivery). Every
    /// field is untrusted.
    pub fn handle(&mut self, now: Instant, from: P, msg: ObjectMsg<P>) {
        self.on_message(now, from, msg);
        self.drain_homes(now);
        self.serve_held(now);
    }

    /// Holds `msg` if it asks an object this peer is primary of to run,
    /// change or tell something while this peer holds no lease on it: a
    /// primary cut off or paused past its lease may already have a
    /// successor, and two activations must never both execute (the lease
    /// comes back with the next acknowledged update or heartbeat), or
    /// while the object is out running (it serves one message at a time).
    /// Returns the message when it may be served now.
    fn hold_until_servable(
        &mut self,
        now: Instant,
        from: P,
        msg: ObjectMsg<P>,
    ) -> Option<(P, ObjectMsg<P>)> {
        let guid = match &msg {
            ObjectMsg::Call { to, .. } | ObjectMsg::Rollback { to, .. } => to.guid,
            ObjectMsg::Delete { uri, .. } | ObjectMsg::Lookup { uri, .. } => uri.guid,
            // A reply runs the calling object's handler.
            ObjectMsg::Reply { id, .. } => match self.pending.get(id).map(|p| &p.origin) {
                Some(Origin::Object(guid)) => *guid,
                _ => return Some((from, msg)),
            },
            _ => return Some((from, msg)),
        };
        if !self.serves(&guid) {
            return Some((from, msg));
        }
        // An object out running takes the next message once it is back;
        // one about to move takes none (calls wait for its next primary).
        let idle = !self.busy(&guid) && !self.moving_soon(&guid);
        if idle && self.homes.has_lease(now, &guid) && !self.held.contains_key(&guid) {
            return Some((from, msg));
        }
        if self.held_count >= MAX_HELD {
            // The caller sends again.
            if matches!(msg, ObjectMsg::Reply { .. }) {
                return None;
            }
            let id = msg.call_id()?;
            self.deliver_or_send(now, from, ObjectMsg::NotHere { id, primary: None });
            return None;
        }
        self.held_count += 1;
        self.held
            .entry(guid)
            .or_default()
            .push_back((now, from, msg));
        None
    }

    /// Whether this peer is the primary of `guid` with its object live.
    fn serves(&self, guid: &Guid) -> bool {
        self.homes.get(guid).is_some_and(|h| h.is_primary()) && self.activated(guid)
    }

    /// Whether object `guid` is live here, serving or out running.
    fn activated(&self, guid: &Guid) -> bool {
        self.live.contains_key(guid) || self.running.contains_key(guid)
    }

    /// Whether object `guid` moves as soon as it stops changing: a closer
    /// peer is a member of its home already, and takes over once it holds
    /// the latest update. No run starts for a call meanwhile: under steady
    /// calls the object would be out at every acknowledgement that could
    /// hand it over, and never move.
    fn moving_soon(&self, guid: &Guid) -> bool {
        let Some(h) = self.homes.get(guid) else {
            return false;
        };
        let closest = self.homes.home_of(guid, 1).into_iter().next();
        closest.is_some_and(|c| c != self.me && h.members().contains(&c))
    }

    /// Whether object `guid` is out running (not just gathering a run).
    fn busy(&self, guid: &Guid) -> bool {
        self.running.get(guid).is_some_and(|r| r.forming.is_none())
    }

    /// The type of the object `guid` live here.
    fn type_of(&self, guid: &Guid) -> Option<&str> {
        match self.live.get(guid) {
            Some(live) => Some(live.object_type()),
            None => self.running.get(guid).map(|r| r.object_type.as_str()),
        }
    }

    /// Serves the held requests of objects whose lease came (in order,
    /// until one sends its object out running), sends those of objects
    /// this peer no longer serves to their primary, and refuses those held
    /// too long without a lease.
    fn serve_held(&mut self, now: Instant) {
        if self.held.is_empty() {
            return;
        }
        let guids: Vec<Guid> = self.held.keys().copied().collect();
        for guid in guids {
            if self.busy(&guid) {
                continue;
            }
            let serving = self.serves(&guid);
            let leased = serving && self.homes.has_lease(now, &guid) && !self.moving_soon(&guid);
            let Some(mut queue) = self.held.remove(&guid) else {
                continue;
            };
            self.held_count = self.held_count.saturating_sub(queue.len());
            let mut kept = VecDeque::new();
            while let Some((at, from, msg)) = queue.pop_front() {
                if leased && self.busy(&guid) {
                    // Out running now: the rest waits, in order.
                    queue.push_front((at, from, msg));
                    kept = queue;
                    break;
                }
                if leased {
                    self.dispatch(now, from, msg);
                } else if serving && now.saturating_duration_since(at) < self.config.resend_interval
                {
                    kept.push_back((at, from, msg));
                } else if matches!(msg, ObjectMsg::Reply { .. }) {
                    // Its call is sent again, by this peer or the next
                    // primary, and answered again from the callee's cache.
                } else if let Some(id) = msg.call_id() {
                    let primary = self
                        .homes
                        .get(&guid)
                        .and_then(|h| h.primary())
                        .filter(|p| **p != self.me)
                        .cloned();
                    self.deliver_or_send(now, from, ObjectMsg::NotHere { id, primary });
                }
            }
            if !kept.is_empty() {
                self.held_count += kept.len();
                // Dispatching may have held newer messages behind these.
                if let Some(newer) = self.held.remove(&guid) {
                    kept.extend(newer);
                }
                self.held.insert(guid, kept);
            }
        }
        self.drain_homes(now);
    }

    fn on_message(&mut self, now: Instant, from: P, msg: ObjectMsg<P>) {
        if let Some((from, msg)) = self.hold_until_servable(now, from, msg) {
            self.dispatch(now, from, msg);
        }
    }

    fn dispatch(&mut self, now: Instant, from: P, msg: ObjectMsg<P>) {
        match msg {
            ObjectMsg::Create {
                id,
                uri,
                object_type,
                params,
                protocol,
                cic,
            } => {
                let made = (protocol, cic);
                self.on_create(now, from, id, uri, &object_type, &params, made)
            }
            ObjectMsg::Call {
                id,
                acked_below,
                known,
                to,
                object_type,
                request,
                cic,
            } => {
                let seen = (acked_below, known, cic);
                self.on_call(now, from, id, seen, to, &object_type, request)
            }
            ObjectMsg::Delete { id, uri } => self.on_delete(now, from, id, uri),
            ObjectMsg::Reply {
                id,
                reply,
                ordinal,
                cic,
            } => self.on_reply(now, id, reply, ordinal, cic),
            ObjectMsg::Rollback {
                id,
                to,
                from: sender,
                epoch,
                line,
            } => self.on_rollback(now, from, id, to, sender, (epoch, line)),
            ObjectMsg::NotHere { id, primary } => self.on_not_here(now, id, primary),
            ObjectMsg::Home(msg) => self.homes.handle(now, from, msg),
            ObjectMsg::Lookup { id, uri } => self.on_lookup(now, from, id, uri),
        }
    }

    /// Whether this peer may serve `uri` now: `Ok` as its primary, else
    /// the `NotHere` to answer.
    fn route(&self, uri: &ObjectUri) -> Result<(), Option<P>> {
        match self.homes.get(&uri.guid) {
            // Leaving, no call starts here (seed 004 §3.4): the object
            // moves once those in flight are committed, with no new one
            // racing the hand-over; callers try again meanwhile.
            Some(h) if h.is_primary() && self.leaving => Err(None),
            Some(_) if self.serves(&uri.guid) => Ok(()),
            Some(h) => Err(h.primary().filter(|p| **p != self.me).cloned()),
            None => Err(None),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn on_create(
        &mut self,
        now: Instant,
        from: P,
        id: CallId,
        uri: ObjectUri,
        object_type: &str,
        params: &[u8],
        (protocol, stamp): (ObjectProtocol, Option<CicStamp>),
    ) {
        let guid = uri.guid;
        if self.homes.contains_key(&guid) {
            // A retry: answered once the record is committed.
            match self.route(&uri) {
                Ok(()) => self.release_after_commit(now, guid, from, id),
                Err(primary) => self.deliver_or_send(now, from, ObjectMsg::NotHere { id, primary }),
            }
            return;
        }
        let closest = self.homes.home_of(&guid, 1).into_iter().next();
        if closest.as_ref().is_some_and(|c| *c != self.me) {
            self.deliver_or_send(
                now,
                from,
                ObjectMsg::NotHere {
                    id,
                    primary: closest,
                },
            );
            return;
        }
        if uri.network != self.network || params.len() > self.config.max_message_bytes {
            self.stats.refused += 1;
            self.answer(now, from, id, Err(CallError::NoSuchObject(uri)));
            return;
        }
        if let Some(c) = self.creating.get_mut(&guid) {
            // The home is being founded: a resend asks again those that
            // have not answered; another creator of the GUID tries later.
            if c.id == id {
                c.from = from;
                let size = c.size;
                self.homes.found(now, guid, size);
            } else {
                let primary = None;
                self.deliver_or_send(now, from, ObjectMsg::NotHere { id, primary });
            }
            return;
        }
        if self.creating.len() >= self.config.home.max_homes {
            let primary = None;
            self.deliver_or_send(now, from, ObjectMsg::NotHere { id, primary });
            return;
        }
        let (live, served) = match Activation::create(&self.types, uri.clone(), object_type, params)
        {
            Ok(created) => created,
            Err(error) => {
                self.answer(now, from, id, Err(error));
                return;
            }
        };
        let stamp = stamp.filter(|_| protocol.cic());
        let record = ObjectRecord::new_from(uri, protocol, live.checkpoint(), stamp.as_ref());
        let size = match protocol {
            ObjectProtocol::None => 1,
            _ => self.config.home_size,
        };
        let mut effects: Vec<ObjectEffect> = served
            .outgoing
            .into_iter()
            .map(ObjectEffect::Send)
            .collect();
        effects.extend(
            served
                .bounced
                .into_iter()
                .map(|(call, error)| ObjectEffect::Bounced { call, error }),
        );
        effects.push(ObjectEffect::Reply {
            call: id,
            reply: Ok(Vec::new()),
            ordinal: 0,
        });
        // Holding no record is no proof that no home exists: this Create
        // may have waited in a paused peer's socket while the creator's
        // resend made the home on the next peer. The would-be home is
        // asked first; the object exists only with a majority of it.
        let creating = Creating {
            from,
            id,
            size,
            live,
            record,
            effects,
        };
        self.creating.insert(guid, creating);
        self.homes.found(now, guid, size);
    }

    /// The would-be home of `guid` promised it to this peer: the object
    /// created here exists now.
    fn founded(&mut self, now: Instant, guid: Guid) {
        let Some(c) = self.creating.remove(&guid) else {
            return;
        };
        if self.homes.contains_key(&guid) {
            let primary = self
                .homes
                .get(&guid)
                .and_then(|h| h.primary().filter(|p| **p != self.me).cloned());
            let id = c.id;
            self.deliver_or_send(now, c.from, ObjectMsg::NotHere { id, primary });
            return;
        }
        let protocol = c.record.protocol();
        self.homes.create(now, guid, c.record, c.size);
        self.live.insert(guid, c.live);
        self.checkpointed.insert(guid, now);
        self.schedule_checkpoint(now, guid, protocol);
        self.routes.insert(c.id, c.from);
        let _ = self.homes.propose(now, guid, c.effects);
    }

    /// The would-be home of `guid` did not promise it: the object is not
    /// created here; its creator is sent to `primary`, or tries again.
    fn not_founded(&mut self, now: Instant, guid: Guid, primary: Option<P>) {
        if let Some(c) = self.creating.remove(&guid) {
            let id = c.id;
            self.deliver_or_send(now, c.from, ObjectMsg::NotHere { id, primary });
        }
    }

    /// Answers `id` with success once everything proposed in the home of
    /// `guid` so far is committed.
    fn release_after_commit(&mut self, now: Instant, guid: Guid, from: P, id: CallId) {
        self.routes.insert(id, from);
        let effects = vec![ObjectEffect::Reply {
            call: id,
            reply: Ok(Vec::new()),
            ordinal: 0,
        }];
        let _ = self.homes.propose(now, guid, effects);
    }

    #[allow(clippy::too_many_arguments)]
    fn on_call(
        &mut self,
        now: Instant,
        from: P,
        id: CallId,
        (acked_below, known, stamp): (u64, u64, Option<CicStamp>),
        to: ObjectUri,
        object_type: &str,
        request: Vec<u8>,
    ) {
        if let Err(primary) = self.route(&to) {
            self.deliver_or_send(now, from, ObjectMsg::NotHere { id, primary });
            return;
        }
        let guid = to.guid;
        let (Some(h), Some(its_type)) = (self.homes.get(&guid), self.type_of(&guid)) else {
            return;
        };
        let refusal = if h.deleted() {
            Some(CallError::NoSuchObject(to.clone()))
        } else if its_type != object_type {
            Some(CallError::BadMessage(format!(
                "{to} is a {:?}, called as a {:?}",
                its_type,
                object_type.chars().take(80).collect::<String>()
            )))
        } else if request.len() > self.config.max_message_bytes {
            Some(CallError::TooLarge {
                what: "request".into(),
                size: request.len(),
                max: self.config.max_message_bytes,
            })
        } else {
            None
        };
        if let Some(error) = refusal {
            self.answer(now, from, id, Err(error));
            return;
        }
        if let Some(stamp) = stamp.filter(|_| h.protocol().cic()) {
            if !self.admit_cic(now, guid, &stamp, false) {
                return;
            }
        }
        let delivery = Delivery::Call {
            id,
            acked_below,
            known,
            request,
        };
        self.start_run(now, guid, delivery, Some((id, from)));
    }

    /// Gives `delivery` to live object `guid`: the first one takes the
    /// object out of `live` into a run that goes out at the next
    /// [`Objects::poll`] ([`ObjectOutput::Run`]) and takes the deliveries
    /// dispatched meanwhile; a call's reply goes by `route`. Not for an
    /// object already out (its deliveries wait: `held`, `local`).
    fn start_run(
        &mut self,
        now: Instant,
        guid: Guid,
        delivery: Delivery,
        route: Option<(CallId, P)>,
    ) {
        if let Some(forming) = self.running.get_mut(&guid) {
            if let Some((_, deliveries)) = forming.forming.as_mut() {
                deliveries.push(delivery);
                forming.routes.push(route);
                if deliveries.len() >= MAX_RUN_DELIVERIES {
                    self.send_run(guid);
                }
            }
            return;
        }
        let Some(live) = self.live.remove(&guid) else {
            return;
        };
        // Its record lacks what the run changes: no planned move now.
        let mut cic = false;
        if let Some(h) = self.homes.get_mut(&guid) {
            h.set_pinned(true);
            cic = h.protocol().cic();
        }
        self.runs += 1;
        self.running.insert(
            guid,
            Running {
                run: self.runs,
                routes: vec![route],
                object_type: live.object_type().to_string(),
                served: live.served(),
                started: now,
                checkpoint_due: false,
                forming: Some((live, vec![delivery])),
            },
        );
        // cic: a message may force a checkpoint before it is delivered,
        // which needs the object here: one delivery per run.
        if cic {
            self.send_run(guid);
        } else {
            self.forming.insert(guid);
        }
    }

    /// Sends the run `guid` is gathering out.
    fn send_run(&mut self, guid: Guid) {
        let Some(running) = self.running.get_mut(&guid) else {
            return;
        };
        let Some((live, deliveries)) = running.forming.take() else {
            return;
        };
        self.outputs.push_back(ObjectOutput::Run(ObjectRun {
            guid,
            run: running.run,
            live,
            deliveries,
            served: Vec::new(),
        }));
    }

    /// An [`ObjectRun`] is back: its object is live again, what it served
    /// is recorded (under `pml`, logged before anything it made leaves),
    /// and it takes its next delivery. A run whose object stopped being
    /// primary here meanwhile is dropped (none of it left; its caller
    /// tries the next primary). One given back unserved (its thread
    /// failed) rebuilds the object from its record.
    pub fn ran(&mut self, now: Instant, run: ObjectRun) {
        let ObjectRun {
            guid,
            run,
            live,
            deliveries,
            served,
        } = run;
        if self.running.get(&guid).is_none_or(|r| r.run != run) {
            return;
        }
        let Some(running) = self.running.remove(&guid) else {
            return;
        };
        let Some(h) = self.homes.get_mut(&guid).filter(|h| h.is_primary()) else {
            return;
        };
        h.set_pinned(false);
        if served.len() != deliveries.len() {
            self.recover(now, guid);
            self.drain_homes(now);
            return;
        }
        let mut effects = Vec::new();
        let served = deliveries.into_iter().zip(served).zip(running.routes);
        for ((delivery, served), route) in served {
            if served.repeat {
                self.stats.repeats += 1;
            } else {
                self.stats.served += 1;
            }
            effects.extend(h.state_mut().record(delivery, served));
            if let Some((id, from)) = route {
                self.routes.insert(id, from);
            }
        }
        let log_full = h.log_full();
        self.live.insert(guid, live);
        if log_full || running.checkpoint_due {
            self.checkpoint(now, guid);
        } else if self.moving(&guid) || self.leaving {
            self.checkpoint_unlogged(now, guid);
        }
        let _ = self.homes.propose(now, guid, effects);
        for next in self.local.remove(&guid).unwrap_or_default() {
            if self.busy(&guid) {
                // The run filled up: the rest waits for its return.
                self.local.entry(guid).or_default().push_back(next);
            } else {
                self.start_run(now, guid, next, None);
            }
        }
        self.drain_homes(now);
        self.serve_held(now);
    }

    fn on_delete(&mut self, now: Instant, from: P, id: CallId, uri: ObjectUri) {
        if let Err(primary) = self.route(&uri) {
            self.deliver_or_send(now, from, ObjectMsg::NotHere { id, primary });
            return;
        }
        if let Some(h) = self.homes.get_mut(&uri.guid) {
            if !h.deleted() {
                h.state_mut().delete();
            }
        }
        self.release_after_commit(now, uri.guid, from, id);
    }

    /// Answered at once: a lookup changes nothing, so nothing waits for a
    /// commit.
    fn on_lookup(&mut self, now: Instant, from: P, id: CallId, uri: ObjectUri) {
        if let Err(primary) = self.route(&uri) {
            self.deliver_or_send(now, from, ObjectMsg::NotHere { id, primary });
            return;
        }
        let found = match (self.homes.get(&uri.guid), self.type_of(&uri.guid)) {
            (Some(h), Some(object_type)) if !h.deleted() => {
                Ok(super::model::encode(&ObjectFound {
                    object_type: object_type.to_string(),
                    protocol: h.protocol(),
                }))
            }
            _ => Err(CallError::NoSuchObject(uri)),
        };
        self.answer(now, from, id, found);
    }

    fn on_reply(
        &mut self,
        now: Instant,
        id: CallId,
        reply: Result<Vec<u8>, CallError>,
        ordinal: u64,
        stamp: Option<CicStamp>,
    ) {
        let Some(p) = self.pending.get(&id) else {
            return; // answered already, or not ours
        };
        if let (Origin::Object(guid), Some(stamp)) = (p.origin, stamp) {
            // Checked before the call is taken as answered: a stale reply
            // leaves it pending (resent), and a rollback it brings cancels
            // it with the rest of the discarded state's calls.
            if !self.admit_cic(now, guid, &stamp, true) {
                return;
            }
        }
        let Some(p) = self.pending.remove(&id) else {
            return;
        };
        if ordinal > 0 && matches!(p.msg, ObjectMsg::Call { .. }) {
            let key = (id.caller, p.target);
            if !self.known.contains_key(&key) && self.known.len() >= MAX_KNOWN {
                // Forgetting one only weakens its rollback check.
                self.known.pop_first();
            }
            let known = self.known.entry(key).or_default();
            *known = (*known).max(ordinal);
        }
        self.resends.remove(&(p.next_send.min(p.deadline), id));
        self.finish(now, id, p, reply);
    }

    /// Hands the outcome of call `id` to whoever made it.
    fn finish(
        &mut self,
        now: Instant,
        id: CallId,
        p: Pending<P>,
        reply: Result<Vec<u8>, CallError>,
    ) {
        match p.origin {
            Origin::Client(token) => {
                let result = reply.and_then(|bytes| match p.msg {
                    ObjectMsg::Create { uri, .. } => Ok(ObjectAnswer::Created(uri)),
                    ObjectMsg::Delete { .. } => Ok(ObjectAnswer::Deleted),
                    ObjectMsg::Lookup { .. } => postcard::from_bytes(&bytes)
                        .map(ObjectAnswer::Found)
                        .map_err(|e| CallError::BadMessage(format!("lookup answer: {e}"))),
                    _ => Ok(ObjectAnswer::Replied(bytes)),
                });
                self.outputs
                    .push_back(ObjectOutput::Answer { token, result });
            }
            Origin::Notice => {}
            Origin::Object(guid) => {
                if !matches!(p.msg, ObjectMsg::Call { .. } | ObjectMsg::Create { .. }) {
                    return;
                }
                self.serve_locally(now, guid, Delivery::Reply { call: id, reply });
            }
        }
    }

    /// Serves a delivery that arose here (a reply, a bounced call) on the
    /// live object `guid`, if this peer still is its primary.
    fn serve_locally(&mut self, now: Instant, guid: Guid, delivery: Delivery) {
        if !self.serves(&guid) {
            return;
        }
        if self.busy(&guid) {
            // Bounded: one per call the object awaits, and per bounced one.
            self.local.entry(guid).or_default().push_back(delivery);
            return;
        }
        self.start_run(now, guid, delivery, None);
    }

    fn on_not_here(&mut self, now: Instant, id: CallId, primary: Option<P>) {
        // Named primary: this peer itself, when the caller's closest peer
        // is a backup of an object this peer serves (after a failover,
        // until the home hands over): served here, or it never would be.
        let serving = self
            .pending
            .get(&id)
            .is_some_and(|p| self.homes.get(&p.target).is_some_and(|h| h.is_primary()))
            && primary.as_ref() == Some(&self.me);
        let Some(p) = self.pending.get_mut(&id) else {
            return;
        };
        match primary {
            Some(primary) if primary != self.me || serving => {
                p.found = true;
                p.redirect = Some(primary);
                self.stats.resent += 1;
                self.send_pending(now, id);
            }
            // Try again at the next resend: the home may be forming, or
            // the view of who is closest settling.
            _ => {}
        }
    }

    fn schedule_checkpoint(&mut self, now: Instant, guid: Guid, protocol: ObjectProtocol) {
        let Some(ttc) = protocol.ttc_ms() else {
            return;
        };
        let at = now + Duration::from_millis(ttc.max(100));
        if let Some(old) = self.checkpoint_at.insert(guid, at) {
            self.checkpoints.remove(&(old, guid));
        }
        self.checkpoints.insert((at, guid));
    }

    fn checkpoint(&mut self, now: Instant, guid: Guid) {
        if let Some(running) = self.running.get_mut(&guid) {
            running.checkpoint_due = true;
            return;
        }
        let (Some(h), Some(live)) = (self.homes.get_mut(&guid), self.live.get(&guid)) else {
            return;
        };
        if !h.is_primary() || h.deleted() {
            return;
        }
        h.state_mut().checkpoint(live);
        self.checkpointed.insert(guid, now);
        let protocol = h.protocol();
        let _ = self.homes.propose(now, guid, Vec::new());
        self.schedule_checkpoint(now, guid, protocol);
    }

    /// Whether a closer live peer is to take object `guid` over from this
    /// peer (its home hands over once that peer holds the latest update).
    fn moving(&self, guid: &Guid) -> bool {
        let closest = self.homes.home_of(guid, 1).into_iter().next();
        closest.is_some_and(|c| c != self.me)
    }

    /// Checkpoints `guid` now unless its protocol logs (`pml` loses
    /// nothing it served): before a planned hand-over, so that the object
    /// moves with its state instead of restarting from an older one.
    fn checkpoint_unlogged(&mut self, now: Instant, guid: Guid) {
        if self.homes.get(&guid).is_some_and(|h| !h.protocol().logs()) {
            self.checkpoint(now, guid);
        }
    }

    /// Executes what the homes want done, and releases committed effects.
    fn drain_homes(&mut self, now: Instant) {
        while let Some(out) = self.homes.poll() {
            match out {
                HomeOutput::Send { to, msg, bulk } => self.outputs.push_back(ObjectOutput::Send {
                    to,
                    msg: ObjectMsg::Home(msg),
                    bulk,
                }),
                HomeOutput::Released { key, effects } => {
                    for effect in effects {
                        self.release(now, key, effect);
                    }
                }
                HomeOutput::BecamePrimary { key, .. } => self.recover(now, key),
                HomeOutput::SteppedDown { key } | HomeOutput::Dropped { key } => {
                    // A run out now is dropped when it comes back.
                    self.live.remove(&key);
                    self.running.remove(&key);
                    self.local.remove(&key);
                    self.drop_calls_of(key);
                    self.forget_known(key);
                    self.checkpointed.remove(&key);
                    if let Some(at) = self.checkpoint_at.remove(&key) {
                        self.checkpoints.remove(&(at, key));
                    }
                }
                HomeOutput::Founded { key } => self.founded(now, key),
                HomeOutput::NotFounded { key, primary } => self.not_founded(now, key, primary),
                HomeOutput::Committed { .. } | HomeOutput::Left { .. } => {}
            }
        }
        self.flush_persist(now);
    }

    fn release(&mut self, now: Instant, guid: Guid, effect: ObjectEffect) {
        match effect {
            ObjectEffect::Reply {
                call,
                reply,
                ordinal,
            } => {
                if let Some(to) = self.routes.remove(&call) {
                    let stamp = self.stamp_of(&guid);
                    self.answer_ran(now, to, call, reply, ordinal, stamp);
                }
            }
            ObjectEffect::Send(out) => self.send_outgoing(now, guid, out),
            ObjectEffect::Bounced { call, error } => self.serve_locally(
                now,
                guid,
                Delivery::Reply {
                    call,
                    reply: Err(error),
                },
            ),
        }
    }

    /// Sends a call or creation object `guid` made.
    fn send_outgoing(&mut self, now: Instant, guid: Guid, out: Outgoing) {
        let timeout = self.config.call_timeout;
        let id = out.id();
        match out {
            Outgoing::Call {
                to,
                object_type,
                request,
                ..
            } => {
                let target = to.guid;
                let msg = call_msg(id, to, object_type, request);
                self.start(now, id, msg, target, Origin::Object(guid), timeout);
            }
            Outgoing::Create {
                uri,
                object_type,
                params,
            } => {
                // Identified by the new object's GUID: a replay's repeat
                // finds it created.
                let target = uri.guid;
                let msg = ObjectMsg::Create {
                    id,
                    uri,
                    object_type,
                    params,
                    protocol: self
                        .homes
                        .get(&guid)
                        .map_or(ObjectProtocol::None, |h| h.protocol()),
                    cic: None,
                };
                self.start(now, id, msg, target, Origin::Object(guid), timeout);
            }
        }
    }

    /// This peer became the primary of `guid`: the object is rebuilt from
    /// its record, and the calls it awaits are sent again.
    fn recover(&mut self, now: Instant, guid: Guid) {
        let Some(h) = self.homes.get(&guid) else {
            return;
        };
        let protocol = h.protocol();
        // cic: the state lost since the last checkpoint had effects others
        // may hold; everything that depends on it rolls back to the line
        // of that checkpoint, a new epoch.
        let line = h
            .state()
            .cic()
            .filter(|_| h.state().dirty())
            .map(|c| (c.rollbacks.keys().last().map_or(1, |e| e + 1), c.index));
        match h.state().recover(&self.types) {
            Ok((live, _)) => {
                self.stats.recovered += 1;
                self.checkpointed.insert(guid, now);
                self.schedule_checkpoint(now, guid, protocol);
                if let Some(rollback) = line {
                    self.stats.rollbacks_started += 1;
                    // Restores the same checkpoint and goes live from it.
                    self.live.insert(guid, live);
                    self.apply_rollbacks(now, guid, &[rollback], None);
                    return;
                }
                // The calls and creations the replay made again are among
                // those it awaits, sent again.
                self.go_live(now, guid, live);
            }
            Err(_) => {
                // Unknown type here, or a damaged checkpoint: calls are
                // answered "not here" until a member that can run it
                // takes over, or they pass their deadline.
                self.live.remove(&guid);
            }
        }
    }

    /// `live` serves object `guid` here from now on; the calls it awaits
    /// replies to are sent again (their callees answer repeats from their
    /// caches).
    fn go_live(&mut self, now: Instant, guid: Guid, live: Activation) {
        self.drop_calls_of(guid);
        let awaiting: Vec<Outgoing> = live.awaited().cloned().collect();
        self.live.insert(guid, live);
        for out in awaiting {
            self.send_outgoing(now, guid, out);
        }
    }

    /// Drops the calls and creations object `guid` made from an earlier
    /// activation here: the one going live sends those it awaits itself,
    /// and one of a state a rollback discarded, or of a primary that lost
    /// the role, must not reach its callee now (a pause or partition can outlast
    /// its resend, and the object be back here by then).
    fn drop_calls_of(&mut self, guid: Guid) {
        let calls: Vec<CallId> = self
            .pending
            .iter()
            .filter(|(_, p)| p.origin == Origin::Object(guid))
            .map(|(id, _)| *id)
            .collect();
        for id in calls {
            if let Some(p) = self.pending.remove(&id) {
                self.resends.remove(&(p.next_send.min(p.deadline), id));
            }
        }
    }

    /// `cic`: whether a message stamped `stamp` may be delivered to object
    /// `guid` (a call, or the reply to one of its calls if `reply`). A
    /// message from a state a rollback discarded is dropped, and its
    /// sender told of the rollback; a rollback the message brings is
    /// applied first (a reply is then dropped: the call it answers was
    /// the discarded state's); a sender ahead in index forces a
    /// checkpoint first.
    fn admit_cic(&mut self, now: Instant, guid: Guid, stamp: &CicStamp, reply: bool) -> bool {
        let Some(ours) = self
            .homes
            .get(&guid)
            .and_then(|h| h.state().cic())
            .map(|c| c.rollbacks.clone())
        else {
            return true;
        };
        let unheard = rollbacks_missing(&stamp.rollbacks, &ours);
        if !unheard.is_empty() {
            self.stats.stale_dropped += 1;
            let told = self.pending.values().any(
                |p| matches!(&p.msg, ObjectMsg::Rollback { to, .. } if to.guid == stamp.sender),
            );
            if !told {
                for rollback in unheard {
                    self.notify_rollback(now, guid, stamp.sender, rollback);
                }
            }
            return false;
        }
        let brought = rollbacks_missing(&ours, &stamp.rollbacks);
        if self.apply_rollbacks(now, guid, &brought, Some(stamp.sender)) && reply {
            return false;
        }
        let (Some(h), Some(live)) = (self.homes.get_mut(&guid), self.live.get(&guid)) else {
            return false;
        };
        if h.state_mut().admit(live, stamp) {
            self.stats.forced_checkpoints += 1;
            self.checkpointed.insert(guid, now);
        }
        true
    }

    /// `cic`: applies `rollbacks` (epoch, line) to object `guid`, which
    /// this peer is primary of, and passes those it had not applied on to
    /// every object it met but `from`. If its state goes back, the live
    /// object restarts from the checkpoint on the line, what the discarded
    /// state was about to send is dropped, and its calls awaiting replies
    /// are sent again. Whether the state went back.
    fn apply_rollbacks(
        &mut self,
        now: Instant,
        guid: Guid,
        rollbacks: &[(u64, u64)],
        from: Option<Guid>,
    ) -> bool {
        let Some(h) = self
            .homes
            .get_mut(&guid)
            .filter(|h| h.is_primary() && h.protocol().cic())
        else {
            return false;
        };
        let mut fresh = Vec::new();
        let mut restore = None;
        for &(epoch, line) in rollbacks {
            if h.state().knows_rollback(epoch, line) {
                continue;
            }
            fresh.push((epoch, line));
            if let Some(checkpoint) = h.state_mut().roll_back(epoch, line) {
                restore = Some(checkpoint);
            }
        }
        if fresh.is_empty() {
            return false;
        }
        let met: Vec<Guid> = h
            .state()
            .cic()
            .map(|c| c.met.iter().copied().filter(|g| Some(*g) != from).collect())
            .unwrap_or_default();
        let uri = h.state().uri().clone();
        let rolled = restore.is_some();
        if let Some(checkpoint) = restore {
            self.stats.rolled_back += 1;
            h.discard_effects();
            self.checkpointed.insert(guid, now);
            self.forget_known(guid);
            match Activation::restore(&self.types, uri, checkpoint) {
                Ok(live) => self.go_live(now, guid, live),
                Err(_) => {
                    self.live.remove(&guid);
                }
            }
        }
        for to in met {
            for &rollback in &fresh {
                self.notify_rollback(now, guid, to, rollback);
            }
        }
        let _ = self.homes.propose(now, guid, Vec::new());
        rolled
    }

    /// Forgets what object `caller` heard in replies: it goes with the
    /// live object (stepping down, or rolled back to a state that had not
    /// heard it).
    fn forget_known(&mut self, caller: Guid) {
        let heard: Vec<(Guid, Guid)> = self
            .known
            .range((caller, Guid(0))..)
            .take_while(|((c, _), _)| *c == caller)
            .map(|(k, _)| *k)
            .collect();
        for k in heard {
            self.known.remove(&k);
        }
    }

    /// `cic`: tells object `to` (by a notice resent until answered or past
    /// the call timeout) of rollback (`epoch`, `line`) that object `from`
    /// applied.
    fn notify_rollback(&mut self, now: Instant, from: Guid, to: Guid, (epoch, line): (u64, u64)) {
        self.next_seq += 1;
        let id = CallId {
            caller: self.session,
            seq: self.next_seq,
        };
        let to_uri = ObjectUri {
            network: self.network.clone(),
            guid: to,
        };
        let msg = ObjectMsg::Rollback {
            id,
            to: to_uri,
            from,
            epoch,
            line,
        };
        let timeout = self.config.call_timeout;
        self.start(now, id, msg, to, Origin::Notice, timeout);
    }

    /// `cic`: an object `sender` met rolled back; so does object `to` if
    /// it is `cic` and has not yet.
    fn on_rollback(
        &mut self,
        now: Instant,
        from: P,
        id: CallId,
        to: ObjectUri,
        sender: Guid,
        rollback: (u64, u64),
    ) {
        if let Err(primary) = self.route(&to) {
            self.deliver_or_send(now, from, ObjectMsg::NotHere { id, primary });
            return;
        }
        self.apply_rollbacks(now, to.guid, &[rollback], Some(sender));
        self.answer(now, from, id, Ok(Vec::new()));
    }

    /// Asks for every durable record whose update moved to be written, one
    /// write per object at a time: the updates made while a write is in
    /// flight go together in the next, so a pipelined caller's deliveries
    /// share the disk's flushes instead of queueing one snapshot each.
    fn flush_persist(&mut self, now: Instant) {
        let changed: Vec<Guid> = self
            .homes
            .iter()
            .filter(|(g, h)| {
                h.durable()
                    && !self.writing.contains(g)
                    && self.on_disk.get(g) != Some(&(h.term(), h.seq()))
            })
            .map(|(g, _)| *g)
            .collect();
        for guid in changed {
            let Some(h) = self.homes.get(&guid) else {
                continue;
            };
            let stored = StoredObject {
                term: h.term(),
                seq: h.seq(),
                size: u8::try_from(h.size()).unwrap_or(u8::MAX),
                members: h.members().to_vec(),
                config: h.config().to_vec(),
                snapshot: h.state().snapshot(now),
            };
            self.on_disk.insert(guid, (stored.term, stored.seq));
            self.writing.insert(guid);
            self.outputs.push_back(ObjectOutput::Persist(stored));
        }
    }

    /// The record of `guid` is on disk up to (`term`, `seq`).
    pub fn durable(&mut self, now: Instant, guid: Guid, term: u64, seq: u64) {
        self.writing.remove(&guid);
        self.homes.durable(now, guid, term, seq);
        self.drain_homes(now);
    }

    /// The last record of `guid` asked for could not be written: this peer
    /// does not confirm it, and writes the object's next update when it
    /// comes.
    pub fn not_written(&mut self, now: Instant, guid: Guid) {
        self.writing.remove(&guid);
        self.drain_homes(now);
    }

    /// Calls whose resend or deadline is due.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.homes.handle_timeout(now);
        self.serve_held(now);
        while let Some(&(at, id)) = self.resends.first() {
            if at > now {
                break;
            }
            self.resends.remove(&(at, id));
            let Some(p) = self.pending.get(&id) else {
                continue;
            };
            if p.deadline <= now {
                if let Some(p) = self.pending.remove(&id) {
                    self.stats.timed_out += 1;
                    let error = if p.found || matches!(p.msg, ObjectMsg::Create { .. }) {
                        CallError::DeadlinePassed {
                            after_ms: p.timeout.as_millis() as u64,
                        }
                    } else {
                        CallError::NoSuchObject(ObjectUri {
                            network: self.network.clone(),
                            guid: p.target,
                        })
                    };
                    self.finish(now, id, p, Err(error));
                }
            } else if p.next_send <= now {
                // An object's call goes on only while this peer is its
                // primary; its next primary sends it again.
                if let Origin::Object(guid) = p.origin {
                    if !self.activated(&guid) {
                        self.pending.remove(&id);
                        continue;
                    }
                }
                self.stats.resent += 1;
                self.send_pending(now, id);
            }
        }
        while let Some(&(at, guid)) = self.checkpoints.first() {
            if at > now {
                break;
            }
            self.checkpoints.remove(&(at, guid));
            self.checkpoint_at.remove(&guid);
            self.checkpoint(now, guid);
        }
        self.drain_homes(now);
    }

    /// When [`Objects::handle_timeout`] is next needed.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let held_expires = self
            .held
            .iter()
            .filter(|(guid, _)| !self.busy(guid))
            .filter_map(|(_, q)| q.front())
            .map(|(at, _, _)| *at + self.config.resend_interval)
            .min();
        [
            held_expires,
            self.homes.poll_timeout(),
            self.resends.first().map(|(at, _)| *at),
            self.checkpoints.first().map(|(at, _)| *at),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// The next thing to do.
    pub fn poll(&mut self) -> Option<ObjectOutput<P>> {
        while let Some(guid) = self.forming.pop_first() {
            self.send_run(guid);
        }
        self.outputs.pop_front()
    }
}
