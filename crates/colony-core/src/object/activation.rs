//! One live object: its state, its call counter, and the results of the
//! calls it served, kept by call identifier so that a call delivered again
//! (a retransmission, a caller's retry after a failover, a replaying
//! caller's repeat) is answered from the cache instead of executed twice
//! (seed 004 §4.3: results cached on the callee's side). Deterministic:
//! the same deliveries from the same checkpoint give the same state, the
//! same replies and the same outgoing calls.
//!
//! Rollback detection (`checkpoint`, and `none` moved without its latest
//! state): the object numbers the calls it runs for each caller, and each
//! reply carries its number ([`Served::ordinal`]). A caller sends with
//! every call the highest number it has heard from the object (`known`).
//! An object whose count for that caller is lower was restarted from a
//! state that lacks calls whose replies the caller had: it answers
//! [`CallError::RolledBack`] instead of running the call, and takes the
//! caller's number so that the loss is reported once. Exact whatever the
//! order calls arrive in: executions are counted in the order they
//! happen, so a state that lacks one lacks every later number too.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::id::{CallId, Guid, ObjectUri};
use super::model::{CallError, Instance, ObjectContext, ObjectTypes, Outgoing};

/// Results kept per caller beyond what it acknowledged; older ones are
/// forgotten (a repeat of one is answered [`CallError::Forgotten`]).
pub const MAX_RESULTS_PER_CALLER: usize = 256;

/// Callers whose executed calls an object remembers. Past it, the caller
/// seen longest ago is forgotten: a repeat of one of its calls would then
/// run again, so it is sized far above the callers an object has at once.
pub const MAX_CALLERS: usize = 65_536;

/// Calls and creations an object may have made and not yet had answered;
/// one past it is answered at once with an error, delivered as any reply.
pub const MAX_AWAITING: usize = 4_096;

/// Something delivered to an object, in the order it is served (the order
/// logged under `pml`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Delivery {
    /// A request.
    Call {
        /// Who calls, and which of its calls this is.
        id: CallId,
        /// Every call of this caller numbered below this has had its reply:
        /// their results need not be kept.
        acked_below: u64,
        /// The highest [`Served::ordinal`] the caller has had in replies
        /// from this object (0: none, or it does not know).
        known: u64,
        /// The encoded request.
        request: Vec<u8>,
    },
    /// The reply to a call this object made.
    Reply {
        /// The call.
        call: CallId,
        /// Its outcome.
        reply: Result<Vec<u8>, CallError>,
    },
}

/// What serving one delivery did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Served {
    /// The reply to send back, for a call (executed now, or from the cache
    /// for a repeat).
    pub reply: Option<Result<Vec<u8>, CallError>>,
    /// Calls and creations made, to release once the delivery is safe.
    pub outgoing: Vec<Outgoing>,
    /// Calls and creations refused at once (over [`MAX_AWAITING`]), not in `outgoing`:
    /// deliver each back to this object as a [`Delivery::Reply`].
    pub bounced: Vec<(CallId, CallError)>,
    /// Whether the delivery was a repeat, served without running the
    /// object's code.
    pub repeat: bool,
    /// For a call: how many of its caller's calls the object had run with
    /// this one (the same for a repeat), for the caller to send back as
    /// `known`; 0 otherwise.
    pub ordinal: u64,
}

/// What an object remembers of one caller. Calls may arrive out of order
/// (one was redirected, another went straight to the primary), so every
/// call at or above the floor that ran is kept; one below it is never run
/// (its caller acknowledged it, or its result had to be evicted).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
struct CallerResults {
    /// Calls numbered below are answered [`CallError::Forgotten`].
    floor: u64,
    /// Results of the calls run at or above the floor, by call number,
    /// with their ordinals.
    kept: BTreeMap<u64, (Result<Vec<u8>, CallError>, u64)>,
    /// Calls of this caller run (or taken as run after a rollback).
    executed: u64,
    /// When this caller was last heard of, in deliveries served.
    last_seen: u64,
}

/// Everything needed to bring an object back exactly as it was: its state
/// and what it knows of calls, made and served.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectCheckpoint {
    /// Its type.
    pub object_type: String,
    /// The object's own state, encoded by its type.
    pub state: Vec<u8>,
    /// The number of its last call made.
    pub next_seq: u64,
    /// Deliveries served.
    pub served: u64,
    results: BTreeMap<Guid, CallerResults>,
    awaiting: BTreeMap<CallId, Outgoing>,
    forgot_callers: bool,
}

/// A live object. See the module docs.
pub struct Activation {
    uri: ObjectUri,
    object_type: String,
    instance: Box<dyn Instance>,
    next_seq: u64,
    served: u64,
    results: BTreeMap<Guid, CallerResults>,
    /// Calls and creations made and not yet answered, as sent: a member
    /// that takes the object over sends them again.
    awaiting: BTreeMap<CallId, Outgoing>,
    /// Whether callers were forgotten ([`MAX_CALLERS`]): an unknown
    /// caller's `known` then proves nothing.
    forgot_callers: bool,
}

impl Activation {
    /// Creates the object at `uri` from encoded `params`; what creating it
    /// made is returned with it.
    pub fn create(
        types: &ObjectTypes,
        uri: ObjectUri,
        object_type: &str,
        params: &[u8],
    ) -> Result<(Activation, Served), CallError> {
        let kind = types.get(object_type)?;
        let mut next_seq = 0;
        let mut ctx = ObjectContext::new(&uri, &mut next_seq);
        let instance = kind.create(&mut ctx, params)?;
        let mut outgoing = ctx.take_outgoing();
        let mut activation = Activation {
            uri,
            object_type: object_type.to_string(),
            instance,
            next_seq,
            served: 0,
            results: BTreeMap::new(),
            awaiting: BTreeMap::new(),
            forgot_callers: false,
        };
        let bounced = activation.await_replies(&mut outgoing);
        Ok((
            activation,
            Served {
                outgoing,
                bounced,
                ..Served::default()
            },
        ))
    }

    /// The object at `uri` as `checkpoint` left it.
    pub fn restore(
        types: &ObjectTypes,
        uri: ObjectUri,
        checkpoint: ObjectCheckpoint,
    ) -> Result<Activation, CallError> {
        let kind = types.get(&checkpoint.object_type)?;
        let instance = kind.restore(&checkpoint.state)?;
        Ok(Activation {
            uri,
            object_type: checkpoint.object_type,
            instance,
            next_seq: checkpoint.next_seq,
            served: checkpoint.served,
            results: checkpoint.results,
            awaiting: checkpoint.awaiting,
            forgot_callers: checkpoint.forgot_callers,
        })
    }

    /// The object's state and call bookkeeping now.
    pub fn checkpoint(&self) -> ObjectCheckpoint {
        ObjectCheckpoint {
            object_type: self.object_type.clone(),
            state: self.instance.checkpoint(),
            next_seq: self.next_seq,
            served: self.served,
            results: self.results.clone(),
            awaiting: self.awaiting.clone(),
            forgot_callers: self.forgot_callers,
        }
    }

    /// Where the object is.
    pub fn uri(&self) -> &ObjectUri {
        &self.uri
    }

    /// Its type.
    pub fn object_type(&self) -> &str {
        &self.object_type
    }

    /// Deliveries served, repeats excepted.
    pub fn served(&self) -> u64 {
        self.served
    }

    /// Calls and creations it made that have had no answer yet.
    pub fn awaiting(&self) -> usize {
        self.awaiting.len()
    }

    /// The calls and creations it made that have had no answer yet, as
    /// they were sent.
    pub fn awaited(&self) -> impl Iterator<Item = &Outgoing> {
        self.awaiting.values()
    }

    /// Serves one delivery.
    pub fn deliver(&mut self, delivery: Delivery) -> Served {
        match delivery {
            Delivery::Call {
                id,
                acked_below,
                known,
                request,
            } => self.serve_call(id, acked_below, known, &request),
            Delivery::Reply { call, reply } => self.serve_reply(call, reply),
        }
    }

    fn serve_call(&mut self, id: CallId, acked_below: u64, known: u64, request: &[u8]) -> Served {
        // A repeat changes nothing (it is not logged, so a replay would
        // not repeat the change).
        if let Some(caller) = self.results.get(&id.caller) {
            let repeat = if id.seq < caller.floor {
                Some((Err(CallError::Forgotten(id)), 0))
            } else {
                caller.kept.get(&id.seq).cloned()
            };
            if let Some((reply, ordinal)) = repeat {
                return Served {
                    reply: Some(reply),
                    repeat: true,
                    ordinal,
                    ..Served::default()
                };
            }
        }
        let served_before = self.served;
        let unknown = !self.results.contains_key(&id.caller);
        let caller = self.results.entry(id.caller).or_default();
        caller.last_seen = served_before;
        // The call itself is unanswered, so never below its own floor.
        caller.floor = caller.floor.max(acked_below.min(id.seq));
        let floor = caller.floor;
        caller.kept.retain(|seq, _| *seq >= floor);
        if known > caller.executed {
            // The caller had replies to calls this state never ran: it was
            // rolled back. Reported once: the caller's count is taken.
            let lost = known - caller.executed;
            caller.executed = known;
            let reply = if unknown && self.forgot_callers {
                None
            } else {
                Some(Err(CallError::RolledBack {
                    uri: self.uri.clone(),
                    lost,
                }))
            };
            if let Some(reply) = reply {
                self.served += 1;
                self.keep(id, reply.clone(), known);
                self.forget_old_callers();
                return Served {
                    reply: Some(reply),
                    ordinal: known,
                    ..Served::default()
                };
            }
        }
        let mut ctx = ObjectContext::new(&self.uri, &mut self.next_seq);
        let reply = self.instance.handle(&mut ctx, request);
        let mut outgoing = ctx.take_outgoing();
        self.served += 1;
        let ordinal = match self.results.get_mut(&id.caller) {
            Some(caller) => {
                caller.executed += 1;
                caller.executed
            }
            None => 0,
        };
        self.keep(id, reply.clone(), ordinal);
        self.forget_old_callers();
        let bounced = self.await_replies(&mut outgoing);
        Served {
            reply: Some(reply),
            outgoing,
            bounced,
            repeat: false,
            ordinal,
        }
    }

    /// Keeps the result of call `id` for its repeats.
    fn keep(&mut self, id: CallId, reply: Result<Vec<u8>, CallError>, ordinal: u64) {
        if let Some(caller) = self.results.get_mut(&id.caller) {
            caller.kept.insert(id.seq, (reply, ordinal));
            while caller.kept.len() > MAX_RESULTS_PER_CALLER {
                if let Some((evicted, _)) = caller.kept.pop_first() {
                    caller.floor = caller.floor.max(evicted + 1);
                }
            }
        }
    }

    fn serve_reply(&mut self, call: CallId, reply: Result<Vec<u8>, CallError>) -> Served {
        match self.awaiting.remove(&call) {
            // Answered before (a retransmission), or never made here.
            None => {
                return Served {
                    repeat: true,
                    ..Served::default()
                }
            }
            // The object holds the reference already; the answer only
            // ends the creation's resends, and runs none of its code.
            Some(Outgoing::Create { .. }) => return Served::default(),
            Some(Outgoing::Call { .. }) => {}
        }
        let mut ctx = ObjectContext::new(&self.uri, &mut self.next_seq);
        // A panic in `on_reply` leaves the state as the handler left it;
        // there is nobody to tell but the logs, and the object goes on.
        let _ = self.instance.on_reply(&mut ctx, call, reply);
        let mut outgoing = ctx.take_outgoing();
        self.served += 1;
        let bounced = self.await_replies(&mut outgoing);
        Served {
            outgoing,
            bounced,
            ..Served::default()
        }
    }

    /// Records the calls and creations in `outgoing` as awaiting answers.
    /// Those made past [`MAX_AWAITING`] are taken out of `outgoing` and
    /// bounced (still awaited, so their error answer is served like any:
    /// the limit is passed by at most one delivery's). A bounced creation
    /// makes no object: calls to it fail as calls to no object.
    fn await_replies(&mut self, outgoing: &mut Vec<Outgoing>) -> Vec<(CallId, CallError)> {
        let mut bounced = Vec::new();
        let limit = MAX_AWAITING;
        outgoing.retain(|out| {
            let id = out.id();
            let over = self.awaiting.len() >= limit;
            self.awaiting.insert(id, out.clone());
            if over {
                let why = format!(
                    "the object has {limit} calls and creations awaiting answers, its limit"
                );
                bounced.push((id, CallError::Handler(why)));
            }
            !over
        });
        bounced
    }

    fn forget_old_callers(&mut self) {
        while self.results.len() > MAX_CALLERS {
            let oldest = self
                .results
                .iter()
                .min_by_key(|(_, c)| c.last_seen)
                .map(|(guid, _)| *guid);
            match oldest {
                Some(guid) => self.results.remove(&guid),
                None => break,
            };
            self.forgot_callers = true;
        }
    }
}
