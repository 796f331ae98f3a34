//! The distributed objects workload: simulated applications ("clients")
//! on some peers create a few [`Tally`] objects through their peer's node
//! and call them, each call adding a token no other call uses, while the
//! world's faults go on; once faults are over every object is read back.
//! What every call asked, when, and what it heard (a position, an error, or
//! nothing: its peer crashed) is recorded in virtual time and checked at
//! the end of the seed ([`ObjectsWorkload::finish`]):
//!
//! - **One history.** A tally answers an addition with the position its
//!   token took. Two acknowledged additions never share a position, and an
//!   addition acknowledged before another was asked took a lower one
//!   (`object-history`): a rollback or two primaries committing apart shows
//!   here, under every protocol — under `none` and `checkpoint` a failure
//!   must be an error, never a wrong answer. Under `none` and `checkpoint`
//!   an acknowledged token missing from the final read was lost by a
//!   rollback: the history is checked over the tokens the final read holds
//!   (the object's one surviving history), and a lost token must be
//!   reported — its client's next answered call to the object is an error,
//!   not a success from the restored state (`object-history`).
//! - **Exactly once** (`pml`): the final read holds every acknowledged
//!   token, at the position its caller was told, and no token twice
//!   (`object-exactly-once`); a call without an answer may be in it once or
//!   not at all. Under `checkpoint` an acknowledged token may be missing (a
//!   restart from an older checkpoint loses it) but one present must be
//!   where its caller was told, and none may be there twice.
//! - **One activation** ([`Activations`]): at no time do two peers' live
//!   activations of an object both execute deliveries
//!   (`object-double-activation`), see there for what is sampled.
//! - **Liveness**: once faults are over and the network healed, each
//!   object (under `pml` or `checkpoint`) answers a read within
//!   [`FINAL_ATTEMPTS`] attempts of [`FINAL_TIMEOUT`]
//!   (`object-final-read-unanswered`); under `none` the object may be gone,
//!   and the read must then fail with an error.
//!
//! Under `cic` the clients drive an application instead (feeders adding
//! numbers to counters they created), and the check is that it reaches
//! the fault-free answer: see [`crate::cic`].

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use colony_core::object::{
    decode_reply, encode, ActiveObject, CallError, Guid, ObjectAnswer, ObjectContext,
    ObjectProtocol, ObjectRequest, ObjectUri,
};
use serde::{Deserialize, Serialize};

use crate::check::Violation;
use crate::cic::CicApp;
use crate::rng::SimRng;

/// How many objects the clients share: few, so their calls collide.
pub const OBJECTS: usize = 2;

/// How long a client waits for an answer to a call.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(3);

/// How long a creation may take (retried, with a new object, after).
pub const CREATE_TIMEOUT: Duration = Duration::from_secs(4);

/// How long a final read may take, per attempt.
pub const FINAL_TIMEOUT: Duration = Duration::from_secs(8);

/// Attempts at the final read of each object, each from another peer.
pub const FINAL_ATTEMPTS: u32 = 3;

/// Checkpoints of the workload's objects under `pml` and `checkpoint`.
pub const TTC_MS: u64 = 500;

/// How long a client waits after a call that failed or got no answer.
pub(crate) const FAILED_BACKOFF: Duration = Duration::from_millis(500);

/// The object the clients call: the tokens added to it, in order.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Tally {
    tokens: Vec<u64>,
}

/// What a [`Tally`] is asked.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum TallyRequest {
    /// Append this token.
    Add(u64),
    /// Every token, in order.
    Read,
}

/// What a [`Tally`] answers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TallyReply {
    /// The token's position (1 for the first).
    Added(u64),
    /// Every token, in order.
    Tokens(Vec<u64>),
}

impl ActiveObject for Tally {
    type Params = ();
    type Request = TallyRequest;
    type Reply = TallyReply;
    const TYPE: &'static str = "sim-tally";

    fn create(_ctx: &mut ObjectContext<'_>, _params: ()) -> Result<Self, String> {
        Ok(Tally::default())
    }

    fn handle(
        &mut self,
        _ctx: &mut ObjectContext<'_>,
        request: TallyRequest,
    ) -> Result<TallyReply, String> {
        Ok(match request {
            TallyRequest::Add(token) => {
                self.tokens.push(token);
                TallyReply::Added(self.tokens.len() as u64)
            }
            TallyRequest::Read => TallyReply::Tokens(self.tokens.clone()),
        })
    }
}

/// Under `none` and `checkpoint`: each acknowledged addition to `object`
/// that the final read lacks (a rollback lost it) must be reported to its
/// client — the client's next answered call to the object fails — before
/// the client hears a success that the final read holds. Unless the
/// client's peer crashed in between: a caller's core keeps what it heard
/// in memory only, and a restarted one cannot tell.
fn unreported_losses(
    history: &[Op],
    object: usize,
    name: &str,
    final_tokens: &[u64],
) -> Vec<Violation> {
    let mut violations = Vec::new();
    let clients: BTreeSet<usize> = history.iter().map(|op| op.client).collect();
    for client in clients {
        let mut lost: Option<&Op> = None;
        for op in history
            .iter()
            .filter(|op| op.client == client && op.object == object)
        {
            if lost.is_some_and(|gone| gone.crashes != op.crashes) {
                lost = None;
            }
            match &op.answer {
                Some((_, Ok(_))) if !final_tokens.contains(&op.token) => {
                    lost = lost.or(Some(op));
                }
                Some((at, Ok(position))) => {
                    if let Some(gone) = lost.take() {
                        violations.push(Violation::ObjectHistory {
                            object: name.to_string(),
                            what: format!(
                                "token {:#x} (client {client}) was acknowledged, then lost by a rollback, and the client's next call was answered (position {position}, at {at:?}) with no error telling it",
                                gone.token
                            ),
                        });
                    }
                }
                // An error reports the loss (or may have: a deadline); no
                // answer means the client's peer crashed and forgot.
                Some((_, Err(_))) | None => lost = None,
            }
        }
    }
    violations
}

/// Which protocol the workload's objects get.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProtocolChoice {
    /// Every object under `pml`.
    Pml,
    /// Every object under `checkpoint`.
    Checkpoint,
    /// Every object under `none`.
    None,
    /// Every object under `cic`; the clients drive an application whose
    /// answer is checked instead ([`crate::cic`]).
    Cic,
}

impl ProtocolChoice {
    /// The protocol objects are created with.
    pub fn protocol(self) -> ObjectProtocol {
        match self {
            ProtocolChoice::Pml => ObjectProtocol::Pml { ttc_ms: TTC_MS },
            ProtocolChoice::Checkpoint => ObjectProtocol::Checkpoint { ttc_ms: TTC_MS },
            ProtocolChoice::None => ObjectProtocol::None,
            ProtocolChoice::Cic => ObjectProtocol::Cic { ttc_ms: TTC_MS },
        }
    }
}

impl fmt::Display for ProtocolChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProtocolChoice::Pml => write!(f, "pml"),
            ProtocolChoice::Checkpoint => write!(f, "checkpoint"),
            ProtocolChoice::None => write!(f, "none"),
            ProtocolChoice::Cic => write!(f, "cic"),
        }
    }
}

impl FromStr for ProtocolChoice {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "pml" => Ok(ProtocolChoice::Pml),
            "checkpoint" => Ok(ProtocolChoice::Checkpoint),
            "none" => Ok(ProtocolChoice::None),
            "cic" => Ok(ProtocolChoice::Cic),
            other => Err(format!(
                "unknown object protocol {other:?}; use pml, checkpoint, none or cic"
            )),
        }
    }
}

/// The request a tally call makes of the node.
pub fn call(uri: &ObjectUri, request: &TallyRequest) -> ObjectRequest {
    ObjectRequest::Call {
        to: uri.clone(),
        object_type: Tally::TYPE.into(),
        request: encode(request),
    }
}

/// One recorded addition.
#[derive(Clone, Debug)]
struct Op {
    client: usize,
    object: usize,
    token: u64,
    asked: Duration,
    /// How many times the client's peer had crashed when it was asked.
    crashes: u32,
    /// When and what came back: a position, or an error.
    answer: Option<(Duration, Result<u64, CallError>)>,
}

/// Who waits for the answer to a request (by the peer's token).
#[derive(Clone, Copy, Debug)]
enum Waiter {
    /// A client's addition, at this entry of the history.
    Add { client: usize, index: usize },
    /// The creation of this object.
    Create { client: usize, object: usize },
    /// The final read of this object.
    Final { object: usize },
}

/// What the world does after an answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Next {
    /// Wake the client after this pause.
    Client {
        /// The client.
        client: usize,
        /// When.
        after: Duration,
    },
    /// The final read of this object must be tried again (elsewhere).
    RetryFinal,
    /// Nothing.
    Nothing,
}

/// One simulated application.
#[derive(Debug)]
struct Client {
    peer: u32,
    /// Waiting for an answer.
    busy: bool,
    calls: u32,
    next_token: u64,
    /// Times its peer crashed (and its core forgot what it had heard).
    crashes: u32,
}

/// The final read of one object.
#[derive(Clone, Debug, Default)]
struct FinalRead {
    attempts: u32,
    tokens: Option<Vec<u64>>,
    /// The error a read got (allowed under `none`).
    error: Option<CallError>,
    last: String,
}

/// What the workload did, for reports.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ObjectStats {
    /// Additions asked.
    pub calls: u64,
    /// Additions acknowledged with a position.
    pub acked: u64,
    /// Additions answered with an error.
    pub failed: u64,
    /// Additions without answer (their peer crashed).
    pub unanswered: u64,
    /// Objects read back at the end.
    pub final_reads: u64,
    /// Executions seen by the activation sampler.
    pub executions: u64,
    /// Activations seen (an object live on a peer, from when it appears
    /// to when it goes).
    pub activations: u64,
    /// Pairs of activations whose executions overlapped (a failure only
    /// with [`Activations::strict`]; see there).
    pub overlapping: u64,
    /// `cic`: rollbacks a client saw (a step answered `RolledBack`, or a
    /// feeder less far than a step before had it).
    pub rollbacks_seen: u64,
}

impl ObjectStats {
    /// Adds another run's counts.
    pub fn add(&mut self, other: &ObjectStats) {
        self.calls += other.calls;
        self.acked += other.acked;
        self.failed += other.failed;
        self.unanswered += other.unanswered;
        self.final_reads += other.final_reads;
        self.executions += other.executions;
        self.activations += other.activations;
        self.overlapping += other.overlapping;
        self.rollbacks_seen += other.rollbacks_seen;
    }
}

/// The workload of one seed.
pub struct ObjectsWorkload {
    protocol: ProtocolChoice,
    /// What the checker holds the objects to (`pml` also when they are
    /// created otherwise, to see the checker catch it).
    expect: ProtocolChoice,
    objects: Vec<Option<ObjectUri>>,
    clients: Vec<Client>,
    calls_per_client: u32,
    think: Duration,
    history: Vec<Op>,
    waiting: BTreeMap<(u32, u64), Waiter>,
    next_request: u64,
    finals: Vec<FinalRead>,
    rng: SimRng,
    violations: Vec<Violation>,
    /// The application the clients drive under `cic`.
    cic: Option<CicApp>,
    /// The activation sampler.
    pub activations: Activations,
}

impl ObjectsWorkload {
    /// `clients` clients on distinct peers (while there are enough) of
    /// `peers`, making about `calls_per_client` additions each, one every
    /// `think` on average, on objects created under `protocol` and checked
    /// as `expect` asks.
    pub fn new(
        seed: u64,
        peers: u32,
        clients: u32,
        calls_per_client: u32,
        think: Duration,
        protocol: ProtocolChoice,
        expect: ProtocolChoice,
    ) -> ObjectsWorkload {
        let mut rng = SimRng::new(seed);
        let mut hosts: Vec<u32> = (0..peers).collect();
        rng.shuffle(&mut hosts);
        let clients: Vec<Client> = (0..clients.max(1) as usize)
            .map(|i| Client {
                peer: hosts[i % hosts.len().max(1)],
                busy: false,
                calls: 0,
                next_token: 0,
                crashes: 0,
            })
            .collect();
        let cic = (protocol == ProtocolChoice::Cic).then(|| {
            let peers: Vec<u32> = clients.iter().map(|c| c.peer).collect();
            let seeds: Vec<u64> = peers.iter().map(|_| rng.next_u64()).collect();
            CicApp::new(
                &peers,
                &seeds,
                u64::from(calls_per_client) * crate::cic::STEP,
            )
        });
        ObjectsWorkload {
            protocol,
            expect,
            objects: vec![None; OBJECTS],
            clients,
            calls_per_client,
            think,
            history: Vec::new(),
            waiting: BTreeMap::new(),
            next_request: 0,
            finals: vec![FinalRead::default(); OBJECTS],
            rng,
            violations: Vec::new(),
            cic,
            activations: Activations::default(),
        }
    }

    /// The clients, by the peer each runs on.
    pub fn client_peers(&self) -> impl Iterator<Item = (usize, u32)> + '_ {
        self.clients.iter().enumerate().map(|(i, c)| (i, c.peer))
    }

    /// The GUIDs of the objects created so far.
    pub fn guids(&self) -> Vec<Guid> {
        if let Some(app) = &self.cic {
            return app.guids();
        }
        self.objects.iter().flatten().map(|u| u.guid).collect()
    }

    /// A pause before a client's next call.
    pub fn pause(&mut self) -> Duration {
        self.think.mul_f64(2.0 * self.rng.unit())
    }

    /// A token for the node's request: unique per peer.
    fn request_token(&mut self) -> u64 {
        self.next_request += 1;
        self.next_request
    }

    /// What `client` asks now, if anything: the creation of an object no
    /// one has created yet (client `i` creates object `i`), else an
    /// addition to an object while `start_new` and it has calls left.
    /// Returns the node's request token and the request.
    pub fn next_call(
        &mut self,
        client: usize,
        start_new: bool,
        at: Duration,
    ) -> Option<(u64, ObjectRequest)> {
        if let Some(app) = self.cic.as_mut() {
            return app.next_call(client, start_new, self.protocol.protocol());
        }
        let c = self.clients.get(client)?;
        if c.busy {
            return None;
        }
        let peer = c.peer;
        let creating = (0..OBJECTS)
            .filter(|o| o % self.clients.len() == client)
            .find(|o| self.objects[*o].is_none());
        if let Some(object) = creating {
            let token = self.request_token();
            self.clients[client].busy = true;
            self.waiting
                .insert((peer, token), Waiter::Create { client, object });
            let request = ObjectRequest::Create {
                object_type: Tally::TYPE.into(),
                params: encode(&()),
                protocol: self.protocol.protocol(),
            };
            return Some((token, request));
        }
        let created: Vec<usize> = (0..OBJECTS)
            .filter(|o| self.objects[*o].is_some())
            .collect();
        if !start_new || c.calls >= self.calls_per_client || created.is_empty() {
            return None;
        }
        let object = created[self.rng.below(created.len() as u64) as usize];
        let uri = self.objects[object].clone()?;
        let c = &mut self.clients[client];
        c.next_token += 1;
        c.calls += 1;
        c.busy = true;
        let value = ((client as u64 + 1) << 32) | c.next_token;
        let crashes = c.crashes;
        let index = self.history.len();
        self.history.push(Op {
            client,
            object,
            token: value,
            asked: at,
            crashes,
            answer: None,
        });
        let token = self.request_token();
        self.waiting
            .insert((peer, token), Waiter::Add { client, index });
        Some((token, call(&uri, &TallyRequest::Add(value))))
    }

    /// Whether the client waits for a creation (the world retries it soon).
    pub fn creating(&self) -> bool {
        if let Some(app) = &self.cic {
            return app.creating();
        }
        self.objects.iter().any(Option::is_none)
    }

    /// `peer` answered its request `token` with `result` at `at`.
    pub fn answered(
        &mut self,
        peer: u32,
        token: u64,
        result: Result<ObjectAnswer, CallError>,
        at: Duration,
    ) -> Next {
        if self.cic.is_some() {
            let pause = self.pause();
            return match self.cic.as_mut() {
                Some(app) => app.answered(peer, token, result, pause),
                None => Next::Nothing,
            };
        }
        let Some(waiter) = self.waiting.remove(&(peer, token)) else {
            return Next::Nothing;
        };
        match waiter {
            Waiter::Create { client, object } => {
                self.clients[client].busy = false;
                match result {
                    Ok(ObjectAnswer::Created(uri)) => self.objects[object] = Some(uri),
                    // The creation failed (or may have happened unseen):
                    // another object is created instead.
                    Err(_) => {}
                    Ok(other) => self.violations.push(Violation::ObjectUnexpectedAnswer {
                        answer: format!("a creation answered {other:?}"),
                    }),
                }
                Next::Client {
                    client,
                    after: Duration::from_millis(50),
                }
            }
            Waiter::Add { client, index } => {
                self.clients[client].busy = false;
                let answer = match result {
                    Ok(ObjectAnswer::Replied(bytes)) => match decode_reply::<Tally>(&bytes) {
                        Ok(TallyReply::Added(position)) => Ok(position),
                        other => {
                            self.violations.push(Violation::ObjectUnexpectedAnswer {
                                answer: format!("an addition answered {other:?}"),
                            });
                            return Next::Nothing;
                        }
                    },
                    Ok(other) => {
                        self.violations.push(Violation::ObjectUnexpectedAnswer {
                            answer: format!("an addition answered {other:?}"),
                        });
                        return Next::Nothing;
                    }
                    Err(error) => Err(error),
                };
                let failed = answer.is_err();
                self.history[index].answer = Some((at, answer));
                let after = if failed {
                    FAILED_BACKOFF + self.pause()
                } else {
                    self.pause()
                };
                Next::Client { client, after }
            }
            Waiter::Final { object } => {
                let f = &mut self.finals[object];
                match result {
                    Ok(ObjectAnswer::Replied(bytes)) => match decode_reply::<Tally>(&bytes) {
                        Ok(TallyReply::Tokens(tokens)) => {
                            f.tokens = Some(tokens);
                            Next::Nothing
                        }
                        other => {
                            self.violations.push(Violation::ObjectUnexpectedAnswer {
                                answer: format!("a read answered {other:?}"),
                            });
                            Next::Nothing
                        }
                    },
                    Err(error) => {
                        f.last = error.to_string();
                        let gone = matches!(
                            error,
                            CallError::NoSuchObject(_) | CallError::ObjectLost { .. }
                        );
                        if gone {
                            f.error = Some(error);
                        }
                        Next::RetryFinal
                    }
                    Ok(other) => {
                        self.violations.push(Violation::ObjectUnexpectedAnswer {
                            answer: format!("a read answered {other:?}"),
                        });
                        Next::Nothing
                    }
                }
            }
        }
    }

    /// `peer` crashed: what its clients waited for stays without answer,
    /// and its final reads are tried again elsewhere.
    pub fn crashed(&mut self, peer: u32) -> bool {
        for c in self.clients.iter_mut().filter(|c| c.peer == peer) {
            c.crashes += 1;
        }
        if let Some(app) = self.cic.as_mut() {
            return app.crashed(peer);
        }
        let lost: Vec<(u32, u64)> = self
            .waiting
            .range((peer, 0)..=(peer, u64::MAX))
            .map(|(k, _)| *k)
            .collect();
        let mut retry = false;
        for k in lost {
            if let Some(waiter) = self.waiting.remove(&k) {
                match waiter {
                    Waiter::Add { client, .. } | Waiter::Create { client, .. } => {
                        self.clients[client].busy = false
                    }
                    Waiter::Final { .. } => retry = true,
                }
            }
        }
        retry
    }

    /// Whether no client waits for an answer.
    pub fn clients_idle(&self) -> bool {
        if let Some(app) = &self.cic {
            return app.clients_idle();
        }
        self.clients.iter().all(|c| !c.busy)
    }

    /// The objects whose final read is due: created, not read, not being
    /// read, attempts left.
    pub fn finals_due(&self) -> Vec<usize> {
        if let Some(app) = &self.cic {
            return app.finals_due();
        }
        let reading: BTreeSet<usize> = self
            .waiting
            .values()
            .filter_map(|w| match w {
                Waiter::Final { object } => Some(*object),
                _ => None,
            })
            .collect();
        (0..OBJECTS)
            .filter(|o| {
                let f = &self.finals[*o];
                self.objects[*o].is_some()
                    && f.tokens.is_none()
                    && f.attempts < FINAL_ATTEMPTS
                    && !reading.contains(o)
            })
            .collect()
    }

    /// Whether every final read is done or out of attempts.
    pub fn finals_over(&self) -> bool {
        if let Some(app) = &self.cic {
            return app.finals_over();
        }
        self.finals_due().is_empty()
            && !self
                .waiting
                .values()
                .any(|w| matches!(w, Waiter::Final { .. }))
    }

    /// The final read of `object`, to ask of `peer`: the node's token and
    /// the request.
    pub fn final_call(&mut self, object: usize, peer: u32) -> Option<(u64, ObjectRequest)> {
        if let Some(app) = self.cic.as_mut() {
            return app.final_call(object, peer);
        }
        let uri = self.objects.get(object)?.clone()?;
        self.finals[object].attempts += 1;
        let token = self.request_token();
        self.waiting.insert((peer, token), Waiter::Final { object });
        Some((token, call(&uri, &TallyRequest::Read)))
    }

    /// What the workload did.
    pub fn stats(&self) -> ObjectStats {
        if let Some(app) = &self.cic {
            return ObjectStats {
                executions: self.activations.executions,
                activations: self.activations.count(),
                overlapping: self.activations.overlaps.len() as u64,
                ..app.stats()
            };
        }
        let mut stats = ObjectStats {
            calls: self.history.len() as u64,
            final_reads: self.finals.iter().filter(|f| f.tokens.is_some()).count() as u64,
            executions: self.activations.executions,
            activations: self.activations.count(),
            overlapping: self.activations.overlaps.len() as u64,
            ..ObjectStats::default()
        };
        for op in &self.history {
            match &op.answer {
                None => stats.unanswered += 1,
                Some((_, Ok(_))) => stats.acked += 1,
                Some((_, Err(_))) => stats.failed += 1,
            }
        }
        stats
    }

    /// The checks of the end of the seed (see the module docs).
    pub fn finish(&mut self) -> Vec<Violation> {
        let mut violations = std::mem::take(&mut self.violations);
        if self.activations.strict {
            violations.extend(self.activations.overlaps.iter().cloned());
        }
        if let Some(app) = self.cic.as_mut() {
            violations.extend(app.finish());
            violations.truncate(20);
            return violations;
        }
        let issued: BTreeSet<u64> = self.history.iter().map(|op| op.token).collect();
        for object in 0..OBJECTS {
            let Some(uri) = self.objects[object].clone() else {
                violations.push(Violation::ObjectFinalReadUnanswered {
                    object: format!("#{object}"),
                    answer: "never created".into(),
                });
                continue;
            };
            let name = uri.to_string();
            let mut acked: Vec<(&Op, Duration, u64)> = self
                .history
                .iter()
                .filter(|op| op.object == object)
                .filter_map(|op| match &op.answer {
                    Some((at, Ok(position))) => Some((op, *at, *position)),
                    _ => None,
                })
                .collect();
            let f = &self.finals[object];
            if self.expect != ProtocolChoice::Pml {
                if let Some(tokens) = &f.tokens {
                    violations.extend(unreported_losses(&self.history, object, &name, tokens));
                    // Rolled-back additions are not in the one history.
                    acked.retain(|(op, _, _)| tokens.contains(&op.token));
                }
            }
            // One history: no position given twice, and real-time order.
            let mut by_position: BTreeMap<u64, &Op> = BTreeMap::new();
            for (op, _, position) in &acked {
                if let Some(other) = by_position.insert(*position, op) {
                    violations.push(Violation::ObjectHistory {
                        object: name.clone(),
                        what: format!(
                            "tokens {:#x} (client {}) and {:#x} (client {}) were both acknowledged at position {position}",
                            other.token, other.client, op.token, op.client
                        ),
                    });
                }
            }
            'order: for (a, a_at, a_pos) in &acked {
                for (b, _, b_pos) in &acked {
                    if *a_at < b.asked && a_pos >= b_pos {
                        violations.push(Violation::ObjectHistory {
                            object: name.clone(),
                            what: format!(
                                "token {:#x} was acknowledged at position {a_pos} at {a_at:?}, before token {:#x} was asked at {:?}, which got position {b_pos}",
                                a.token, b.token, b.asked
                            ),
                        });
                        break 'order;
                    }
                }
            }
            let Some(tokens) = &f.tokens else {
                let gone_allowed = self.expect == ProtocolChoice::None && f.error.is_some();
                if !gone_allowed {
                    violations.push(Violation::ObjectFinalReadUnanswered {
                        object: name.clone(),
                        answer: if f.last.is_empty() {
                            "never asked (the clients were still busy)".into()
                        } else {
                            f.last.clone()
                        },
                    });
                }
                continue;
            };
            let mut seen = BTreeSet::new();
            for (i, token) in tokens.iter().enumerate() {
                if !seen.insert(*token) {
                    violations.push(Violation::ObjectExactlyOnce {
                        object: name.clone(),
                        what: format!(
                            "token {token:#x} applied twice (again at position {})",
                            i + 1
                        ),
                    });
                } else if !issued.contains(token) {
                    violations.push(Violation::ObjectExactlyOnce {
                        object: name.clone(),
                        what: format!("token {token:#x} at position {} was never asked", i + 1),
                    });
                }
            }
            for (op, _, position) in &acked {
                let at = tokens.iter().position(|t| *t == op.token);
                let wrong = match at {
                    Some(i) => i as u64 + 1 != *position,
                    None => self.expect == ProtocolChoice::Pml,
                };
                if wrong {
                    violations.push(Violation::ObjectExactlyOnce {
                        object: name.clone(),
                        what: format!(
                            "token {:#x} (client {}) was acknowledged at position {position}, but the final read has it {}",
                            op.token,
                            op.client,
                            match at {
                                Some(i) => format!("at position {}", i + 1),
                                None => format!("nowhere (of {} tokens)", tokens.len()),
                            }
                        ),
                    });
                }
            }
        }
        violations.truncate(20);
        violations
    }
}

/// One activation of an object on a peer, as the sampler saw it.
#[derive(Clone, Debug)]
struct Activation {
    peer: u32,
    life: u32,
    since: Duration,
    /// Its `served` counter when last sampled.
    served: u64,
    /// When it first and last executed a delivery.
    first_exec: Option<Duration>,
    last_exec: Option<Duration>,
    /// When it went (stepped down, dropped, crashed).
    until: Option<Duration>,
}

/// The sampler behind `object-double-activation`.
///
/// After every input to a peer (a frame, a timer, a disk confirmation, a
/// client's request), the simulator lists the objects that peer's node
/// serves as primary (`Objects::objects`: a live activation, and its
/// `served` counter of deliveries executed, repeats answered from the
/// result cache excluded). An activation lasts from the first sample that
/// lists the object to the first that does not (or the peer's crash). It
/// *executes* at each sample where its counter rose. The check: no two
/// activations of an object on different peers have execution spans
/// (first to last execution) that overlap — whether or not the deliveries
/// they executed were ever committed or answered. Whether two primaries
/// *committed* apart is the workload's `object-history` check.
///
/// Overlaps are counted, and fail the seed only when `strict` (the CLI's
/// `--strict-activations`): the generic home has no leases, so a primary
/// cut off by a partition, or paused, goes on executing the calls that
/// reach it until it hears of its successor's term. Those executions are
/// never committed (under `pml` their replies and calls are withheld, and
/// `object-history` / `object-exactly-once` hold), but Orleans-style single
/// activation is not what the home gives.
#[derive(Clone, Debug, Default)]
pub struct Activations {
    /// Whether overlaps are violations.
    pub strict: bool,
    by_object: BTreeMap<Guid, Vec<Activation>>,
    executions: u64,
    reported: BTreeSet<(Guid, usize, usize)>,
    overlaps: Vec<Violation>,
}

impl Activations {
    /// Activations seen.
    pub fn count(&self) -> u64 {
        self.by_object.values().map(|v| v.len() as u64).sum()
    }

    /// `peer` (in `life`) serves, as primary, these objects with these
    /// `served` counters, at `now`; `watched` are the objects the check
    /// covers.
    pub fn sample(
        &mut self,
        peer: u32,
        life: u32,
        now: Duration,
        live: &BTreeMap<Guid, u64>,
        watched: &[Guid],
    ) {
        for guid in watched {
            let list = self.by_object.entry(*guid).or_default();
            let current = list
                .iter()
                .position(|a| a.peer == peer && a.life == life && a.until.is_none());
            match (current, live.get(guid)) {
                (None, Some(served)) => list.push(Activation {
                    peer,
                    life,
                    since: now,
                    served: *served,
                    first_exec: None,
                    last_exec: None,
                    until: None,
                }),
                (Some(i), None) => list[i].until = Some(now),
                (Some(i), Some(served)) if *served > list[i].served => {
                    self.executions += served - list[i].served;
                    let a = &mut list[i];
                    a.served = *served;
                    a.first_exec.get_or_insert(now);
                    a.last_exec = Some(now);
                    let first = a.first_exec.unwrap_or(now);
                    self.check(*guid, i, first);
                }
                _ => {}
            }
        }
    }

    /// `peer` crashed: its activations end.
    pub fn crashed(&mut self, peer: u32, now: Duration) {
        for list in self.by_object.values_mut() {
            for a in list
                .iter_mut()
                .filter(|a| a.peer == peer && a.until.is_none())
            {
                a.until = Some(now);
            }
        }
    }

    /// Activation `i` of `guid` executed, its span starting at `first`:
    /// does another peer's span overlap it?
    fn check(&mut self, guid: Guid, i: usize, first: Duration) {
        let Some(list) = self.by_object.get(&guid) else {
            return;
        };
        let me = &list[i];
        for (j, other) in list.iter().enumerate() {
            if other.peer == me.peer {
                continue;
            }
            let Some(last) = other.last_exec else {
                continue;
            };
            if last < first {
                continue;
            }
            let key = (guid, i.min(j), i.max(j));
            if !self.reported.insert(key) {
                continue;
            }
            let show = |a: &Activation| {
                format!(
                    "peer {} (life {}, live from {:?}{}) executed from {:?} to {:?}",
                    a.peer,
                    a.life,
                    a.since,
                    a.until.map(|u| format!(" to {u:?}")).unwrap_or_default(),
                    a.first_exec.unwrap_or_default(),
                    a.last_exec.unwrap_or_default()
                )
            };
            self.overlaps.push(Violation::ObjectDoubleActivation {
                object: guid.to_string(),
                what: format!("{}; {}", show(other), show(me)),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uri() -> ObjectUri {
        ObjectUri::new("sim", Guid(7)).unwrap()
    }

    fn workload(expect: ProtocolChoice) -> ObjectsWorkload {
        let mut w = ObjectsWorkload::new(
            1,
            4,
            2,
            10,
            Duration::from_millis(10),
            ProtocolChoice::Pml,
            expect,
        );
        w.objects = vec![Some(uri()); OBJECTS];
        w
    }

    fn added(position: u64) -> Result<ObjectAnswer, CallError> {
        Ok(ObjectAnswer::Replied(encode(&TallyReply::Added(position))))
    }

    /// Two additions, acknowledged at `positions`, then a final read of
    /// `tokens` (the additions' tokens by index, `None`: one never asked).
    fn run(
        expect: ProtocolChoice,
        positions: [u64; 2],
        tokens: &[Option<usize>],
    ) -> Vec<&'static str> {
        let mut w = workload(expect);
        let mut asked = Vec::new();
        for (i, position) in positions.iter().enumerate() {
            let at = Duration::from_millis(10 * i as u64);
            let (token, request) = w.next_call(i % 2, true, at).unwrap();
            let ObjectRequest::Call { .. } = request else {
                panic!("{request:?}");
            };
            let peer = w.clients[i % 2].peer;
            asked.push(w.history.last().unwrap().token);
            w.answered(peer, token, added(*position), at + Duration::from_millis(5));
        }
        let list: Vec<u64> = tokens
            .iter()
            .map(|t| t.map_or(0xdead, |i| asked[i]))
            .collect();
        for f in &mut w.finals {
            f.tokens = Some(list.clone());
        }
        // Only object 0's checks matter: put every op on it.
        for op in &mut w.history {
            op.object = 0;
        }
        w.objects[1] = None;
        let mut kinds: Vec<&'static str> = w
            .finish()
            .iter()
            .map(Violation::kind)
            .filter(|k| *k != "object-final-read-unanswered")
            .collect();
        kinds.dedup();
        kinds
    }

    #[test]
    fn the_checker_tells_right_from_wrong_histories() {
        let (pml, checkpoint) = (ProtocolChoice::Pml, ProtocolChoice::Checkpoint);
        let none: Vec<&str> = Vec::new();
        assert_eq!(run(pml, [1, 2], &[Some(0), Some(1)]), none);
        // Rolled back and run again: the same position twice.
        assert_eq!(
            run(pml, [1, 1], &[Some(1)]),
            ["object-history", "object-exactly-once"]
        );
        // An acknowledged token lost: only pml promises it.
        assert_eq!(run(pml, [1, 2], &[Some(0)]), ["object-exactly-once"]);
        assert_eq!(run(checkpoint, [1, 2], &[Some(0)]), none);
        // Applied twice, or something never asked.
        assert_eq!(
            run(checkpoint, [1, 2], &[Some(0), Some(1), Some(1)]),
            ["object-exactly-once"]
        );
        assert_eq!(
            run(pml, [1, 2], &[Some(0), Some(1), None]),
            ["object-exactly-once"]
        );
        // Acknowledged at a position the final state does not have it at.
        assert_eq!(
            run(checkpoint, [1, 2], &[Some(1), Some(0)]),
            ["object-exactly-once"]
        );
    }

    #[test]
    fn overlapping_executions_on_two_peers_are_caught() {
        let g = Guid(7);
        let ms = Duration::from_millis;
        let mut a = Activations::default();
        let live = |n: u64| BTreeMap::from([(g, n)]);
        let gone = BTreeMap::new();
        // A failover: peer 1 executes, goes, then peer 2 executes.
        a.sample(1, 0, ms(0), &live(0), &[g]);
        a.sample(1, 0, ms(1), &live(1), &[g]);
        a.sample(1, 0, ms(2), &gone, &[g]);
        a.sample(2, 0, ms(3), &live(1), &[g]);
        a.sample(2, 0, ms(4), &live(2), &[g]);
        assert!(a.overlaps.is_empty());
        // Peer 1 is live again and executes while peer 2 still does.
        a.sample(1, 0, ms(5), &live(1), &[g]);
        a.sample(1, 0, ms(6), &live(2), &[g]);
        assert!(a.overlaps.is_empty(), "peer 2's last execution came first");
        a.sample(2, 0, ms(7), &live(3), &[g]);
        assert_eq!(a.overlaps.len(), 1, "{:?}", a.overlaps);
        assert_eq!(a.executions, 4);
    }
}
