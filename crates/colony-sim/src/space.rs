//! The object space workload: simulated applications ("clients") on some
//! peers read, write, compare-and-set, delete and lock a few objects of
//! the P³ object space through their peer's node, each call with its own
//! deadline, while the world's faults go on. What every call asked, when,
//! and what it heard back (or that it heard nothing: a deadline passed, or
//! the client's peer crashed) is recorded in virtual nanoseconds, and
//! checked at the end of the seed:
//!
//! - for linearizability, object by object, against
//!   [`ObjectModel`];
//! - for fencing tokens that only rise in real time
//!   ([`fencing_monotonic_per_key`]);
//! - for durability: once faults are over and the network healed, every
//!   object is read once more. Being part of the history, these reads must
//!   show the last acknowledged write (or a later one whose answer was not
//!   seen): an acknowledged write that a crash lost fails the check.
//!
//! Each client runs one call at a time. A sequence starts every so often:
//! a read, a write (`Condition::Always`), a compare-and-set against the
//! version the client last saw, a delete, a write lock → a write with its
//! token → unlock, or a read lock → a read → unlock. A token is presented
//! only if a grant's answer carried it.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use colony_core::space::{
    Condition, LockMode, ObjectKey, RequestId, SpaceError, SpaceOp, SpaceReply, Tags, GLOBAL,
};

use crate::check::Violation;
use crate::linearizability::{
    self as lin, check_partitioned, fencing_monotonic_per_key, CheckError, Keyed, ObjectModel,
    Operation, SpaceCall, SpaceModel, SpaceRet,
};
use crate::rng::SimRng;

/// A recorded history of the workload: calls on objects of the space.
pub type SpaceHistory = Vec<Operation<Keyed<lin::ObjectKey, SpaceCall>, SpaceRet>>;

/// How many objects the clients share: few, so their calls collide.
pub const KEYS: usize = 3;

/// How long a client waits for an answer before it gives up on a call.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(3);

/// The lease a client asks for its locks (its peer renews it while held).
pub const LEASE_MS: u64 = 1_000;

/// How long a final read may take, per attempt.
pub const FINAL_TIMEOUT: Duration = Duration::from_secs(8);

/// Attempts at the final read of each object, each from another peer.
pub const FINAL_ATTEMPTS: u32 = 3;

/// How long a client waits after a call that got no answer, before its
/// next call.
const UNANSWERED_BACKOFF: Duration = Duration::from_secs(1);

/// The longest pause between two calls of one sequence.
const STEP_PAUSE_MAX: Duration = Duration::from_millis(10);

/// The request a call makes of the space, for the object `key`. Values
/// are `u64`s, stored as their 8 little-endian bytes.
pub fn request(key: &ObjectKey, call: &SpaceCall) -> SpaceOp {
    let key = key.clone();
    let put = |value: u64, condition, token| SpaceOp::Put {
        key: key.clone(),
        value: value.to_le_bytes().to_vec(),
        tags: Tags::new(),
        condition,
        token,
    };
    match *call {
        SpaceCall::Get => SpaceOp::Get { key },
        SpaceCall::Set { value, token } => put(value, Condition::Always, token),
        SpaceCall::CompareAndSet {
            expected_version,
            value,
        } => put(value, Condition::Version(expected_version), None),
        SpaceCall::Delete => SpaceOp::Delete {
            key,
            condition: Condition::Always,
            token: None,
        },
        SpaceCall::WriteLock => SpaceOp::Lock {
            key,
            mode: LockMode::Write,
            lease_ms: LEASE_MS,
        },
        SpaceCall::ReadLock => SpaceOp::Lock {
            key,
            mode: LockMode::Read,
            lease_ms: LEASE_MS,
        },
        SpaceCall::WriteUnlock { token } | SpaceCall::ReadUnlock { token } => {
            SpaceOp::Unlock { key, token }
        }
    }
}

/// What the model makes of the answer `result` to `call`: `Ok(Some(..))`
/// an output, `Ok(None)` no answer (the deadline passed, or the home could
/// not answer: the call may or may not have taken effect), `Err` an answer
/// this call cannot get.
///
/// A refusal because of the version (`VersionMismatch`), someone else's
/// lock (`Locked`) or a token that no longer holds the lock (`StaleToken`)
/// is the model's `Refused`; an unlock or renewal of a lock not held is
/// `NotHeld`.
pub fn outcome(
    call: &SpaceCall,
    result: &Result<SpaceReply, SpaceError>,
) -> Result<Option<SpaceRet>, String> {
    use SpaceCall as C;
    let ret = match (call, result) {
        (_, Err(SpaceError::Timeout { .. } | SpaceError::Unavailable(_))) => return Ok(None),
        (C::Get, Ok(SpaceReply::Value(None))) => SpaceRet::Value {
            value: None,
            version: 0,
        },
        (C::Get, Ok(SpaceReply::Value(Some(object)))) => {
            let bytes: [u8; 8] = object.value.as_slice().try_into().map_err(|_| {
                format!(
                    "{call:?} read {} bytes, but every value written has 8",
                    object.value.len()
                )
            })?;
            SpaceRet::Value {
                value: Some(u64::from_le_bytes(bytes)),
                version: object.version,
            }
        }
        (
            C::Set { .. } | C::CompareAndSet { .. } | C::Delete,
            Ok(SpaceReply::Written { version, .. }),
        ) => SpaceRet::Written { version: *version },
        (
            C::Set { token: None, .. } | C::CompareAndSet { .. } | C::Delete,
            Err(SpaceError::Locked),
        )
        | (C::CompareAndSet { .. }, Err(SpaceError::VersionMismatch { .. }))
        | (C::Set { token: Some(_), .. }, Err(SpaceError::StaleToken { .. })) => SpaceRet::Refused,
        (C::WriteLock | C::ReadLock, Ok(SpaceReply::Granted { token, .. })) => {
            SpaceRet::Granted { token: *token }
        }
        (C::WriteUnlock { .. } | C::ReadUnlock { .. }, Ok(SpaceReply::Released)) => {
            SpaceRet::Released
        }
        (C::WriteUnlock { .. } | C::ReadUnlock { .. }, Err(SpaceError::NotHeld { .. })) => {
            SpaceRet::NotHeld
        }
        (call, result) => return Err(format!("{call:?} answered {result:?}")),
    };
    Ok(Some(ret))
}

/// One step of a client's sequence, made into a call when it is issued
/// (with the token and the version known then).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Step {
    Get,
    Set,
    CompareAndSet,
    Delete,
    WriteLock,
    ReadLock,
    /// A write with the token of the sequence's write lock.
    FencedSet,
    /// Release the sequence's lock (write or read).
    Unlock {
        write: bool,
    },
}

/// A call waiting for its answer.
#[derive(Clone, Copy, Debug)]
struct InFlight {
    /// Its entry in the history.
    index: usize,
    /// Which object (index into the keys).
    key: usize,
}

/// One simulated application.
#[derive(Debug)]
struct Client {
    peer: u32,
    /// The call waiting for its answer.
    in_flight: Option<InFlight>,
    /// The object of the current sequence, and its remaining steps.
    key: usize,
    plan: VecDeque<Step>,
    /// The token of the lock the current sequence holds.
    token: Option<u64>,
    /// Calls made so far.
    calls: u32,
    /// The version the client last saw of each object.
    seen: [u64; KEYS],
}

/// Who waits for the answer to a request.
#[derive(Clone, Copy, Debug)]
enum Waiter {
    Client(usize),
    /// The final read of an object (index into the keys), at this entry
    /// of the history.
    Final {
        key: usize,
        index: usize,
    },
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
    RetryFinal {
        /// The object.
        key: usize,
    },
    /// Nothing.
    Nothing,
}

/// The final read of one object.
#[derive(Clone, Debug, Default)]
struct FinalRead {
    attempts: u32,
    done: bool,
    last: String,
}

/// What the workload did, for reports.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SpaceStats {
    /// Calls recorded (the final reads included).
    pub calls: u64,
    /// Calls that never got an answer (timed out, or their peer crashed).
    pub unanswered: u64,
    /// Writes, compare-and-sets and deletes applied.
    pub written: u64,
    /// Calls refused (version, lock, stale token).
    pub refused: u64,
    /// Locks granted.
    pub granted: u64,
    /// Final reads answered.
    pub final_reads: u64,
}

/// The workload of one seed: its clients, and the history they record.
pub struct SpaceWorkload {
    keys: Vec<ObjectKey>,
    clients: Vec<Client>,
    calls_per_client: u32,
    /// Mean pause between two sequences of a client.
    think: Duration,
    history: SpaceHistory,
    waiting: BTreeMap<(u32, RequestId), Waiter>,
    finals: Vec<FinalRead>,
    next_value: u64,
    rng: SimRng,
    violations: Vec<Violation>,
}

impl SpaceWorkload {
    /// `clients` clients on distinct peers (while there are enough) of
    /// `peers`, making about `calls_per_client` calls each, a sequence
    /// every `think` on average.
    pub fn new(
        seed: u64,
        peers: u32,
        clients: u32,
        calls_per_client: u32,
        think: Duration,
    ) -> SpaceWorkload {
        let mut rng = SimRng::new(seed);
        let mut hosts: Vec<u32> = (0..peers).collect();
        rng.shuffle(&mut hosts);
        let clients = (0..clients as usize)
            .map(|i| Client {
                peer: hosts[i % hosts.len().max(1)],
                in_flight: None,
                key: 0,
                plan: VecDeque::new(),
                token: None,
                calls: 0,
                seen: [0; KEYS],
            })
            .collect();
        SpaceWorkload {
            keys: (0..KEYS)
                .map(|i| ObjectKey::new(GLOBAL, format!("k{i}")))
                .collect(),
            clients,
            calls_per_client,
            think,
            history: Vec::new(),
            waiting: BTreeMap::new(),
            finals: vec![FinalRead::default(); KEYS],
            next_value: 0,
            rng,
            violations: Vec::new(),
        }
    }

    /// The objects the clients use.
    pub fn keys(&self) -> &[ObjectKey] {
        &self.keys
    }

    /// The clients, by the peer each runs on.
    pub fn client_peers(&self) -> impl Iterator<Item = (usize, u32)> + '_ {
        self.clients.iter().enumerate().map(|(i, c)| (i, c.peer))
    }

    /// A first pause before a client starts, spreading the clients out.
    pub fn first_pause(&mut self) -> Duration {
        self.pause()
    }

    fn pause(&mut self) -> Duration {
        self.think.mul_f64(2.0 * self.rng.unit())
    }

    /// The next call of `client` and its object, if it makes one now: the
    /// next step of its sequence, or the first of a new one while
    /// `start_new` (faults go on) and it has calls left.
    pub fn next_call(&mut self, client: usize, start_new: bool) -> Option<(usize, SpaceCall)> {
        loop {
            let c = self.clients.get(client)?;
            if c.in_flight.is_some() {
                return None;
            }
            if c.plan.is_empty() {
                if !start_new || c.calls >= self.calls_per_client {
                    return None;
                }
                let key = self.rng.below(KEYS as u64) as usize;
                let plan: &[Step] = match self.rng.below(100) {
                    0..30 => &[Step::Get],
                    30..50 => &[Step::Set],
                    50..65 => &[Step::CompareAndSet],
                    65..75 => &[Step::Delete],
                    75..90 => &[
                        Step::WriteLock,
                        Step::FencedSet,
                        Step::Unlock { write: true },
                    ],
                    _ => &[Step::ReadLock, Step::Get, Step::Unlock { write: false }],
                };
                let c = &mut self.clients[client];
                c.key = key;
                c.plan = plan.iter().copied().collect();
                c.token = None;
            }
            let value = self.fresh_value(client);
            // Now and then a compare-and-set against a version the client
            // knows is old.
            let stale = u64::from(self.rng.chance(0.2));
            let c = &mut self.clients[client];
            let Some(step) = c.plan.pop_front() else {
                continue;
            };
            let call = match (step, c.token) {
                (Step::Get, _) => SpaceCall::Get,
                (Step::Set, _) => SpaceCall::Set { value, token: None },
                (Step::CompareAndSet, _) => SpaceCall::CompareAndSet {
                    expected_version: c.seen[c.key] + stale,
                    value,
                },
                (Step::Delete, _) => SpaceCall::Delete,
                (Step::WriteLock, _) => SpaceCall::WriteLock,
                (Step::ReadLock, _) => SpaceCall::ReadLock,
                (Step::FencedSet, Some(token)) => SpaceCall::Set {
                    value,
                    token: Some(token),
                },
                (Step::Unlock { write: true }, Some(token)) => {
                    c.token = None;
                    SpaceCall::WriteUnlock { token }
                }
                (Step::Unlock { write: false }, Some(token)) => {
                    c.token = None;
                    SpaceCall::ReadUnlock { token }
                }
                // No grant was seen: the rest of the sequence is dropped.
                (Step::FencedSet | Step::Unlock { .. }, None) => {
                    c.plan.clear();
                    continue;
                }
            };
            c.calls += 1;
            return Some((c.key, call));
        }
    }

    /// A value no write used before: the client's number and a counter.
    fn fresh_value(&mut self, client: usize) -> u64 {
        self.next_value += 1;
        ((client as u64 + 1) << 40) | self.next_value
    }

    /// `client` asked `call` of object `key` at `at` (virtual time), as
    /// request `id` of its peer.
    pub fn called(
        &mut self,
        client: usize,
        key: usize,
        call: SpaceCall,
        id: RequestId,
        at: Duration,
    ) {
        let Some(peer) = self.clients.get(client).map(|c| c.peer) else {
            return;
        };
        let index = self.record(client as u64, key, call, at);
        self.clients[client].in_flight = Some(InFlight { index, key });
        self.waiting.insert((peer, id), Waiter::Client(client));
    }

    /// The node refused to take a call at all (it never does for these
    /// calls): a violation, and the client goes on.
    pub fn not_taken(&mut self, client: usize, call: SpaceCall, error: SpaceError) -> Next {
        self.violations.push(Violation::SpaceUnexpectedAnswer {
            client: client as u64,
            answer: format!("{call:?} not taken: {error}"),
        });
        if let Some(c) = self.clients.get_mut(client) {
            c.plan.clear();
            c.token = None;
        }
        let after = self.pause();
        Next::Client { client, after }
    }

    fn record(&mut self, client: u64, key: usize, call: SpaceCall, at: Duration) -> usize {
        let key = &self.keys[key];
        self.history.push(Operation {
            client,
            input: Keyed {
                key: lin::ObjectKey::new(key.namespace.clone(), key.name.clone()),
                input: call,
            },
            call: at.as_nanos() as u64,
            ret: None,
        });
        self.history.len() - 1
    }

    /// Peer `peer` answered its request `id` at `at`.
    pub fn answered(
        &mut self,
        peer: u32,
        id: RequestId,
        result: Result<SpaceReply, SpaceError>,
        at: Duration,
    ) -> Next {
        let Some(waiter) = self.waiting.remove(&(peer, id)) else {
            return Next::Nothing;
        };
        match waiter {
            Waiter::Client(client) => self.client_answered(client, result, at),
            Waiter::Final { key, index } => self.final_answered(key, index, result, at),
        }
    }

    fn client_answered(
        &mut self,
        client: usize,
        result: Result<SpaceReply, SpaceError>,
        at: Duration,
    ) -> Next {
        let Some(flight) = self
            .clients
            .get_mut(client)
            .and_then(|c| c.in_flight.take())
        else {
            return Next::Nothing;
        };
        let call = self.history[flight.index].input.input.clone();
        let ret = self.settle(client as u64, flight.index, &call, &result, at);
        let c = &mut self.clients[client];
        match (&call, &ret) {
            (_, Some(SpaceRet::Value { version, .. })) => c.seen[flight.key] = *version,
            (SpaceCall::Delete, Some(SpaceRet::Written { .. })) => c.seen[flight.key] = 0,
            (_, Some(SpaceRet::Written { version })) => c.seen[flight.key] = *version,
            (SpaceCall::WriteLock | SpaceCall::ReadLock, Some(SpaceRet::Granted { token })) => {
                c.token = Some(*token)
            }
            // A lock not had (or not known to be had): the sequence ends.
            (SpaceCall::WriteLock | SpaceCall::ReadLock, _) => {
                c.plan.clear();
            }
            _ => {}
        }
        let after = if ret.is_none() {
            // No answer: the space is unavailable to this client for now.
            // It backs off, as an application would, so the calls whose
            // outcome nobody knows stay few (each multiplies the
            // linearizability search).
            UNANSWERED_BACKOFF + self.pause()
        } else if c.plan.is_empty() {
            self.pause()
        } else {
            STEP_PAUSE_MAX.mul_f64(self.rng.unit())
        };
        Next::Client { client, after }
    }

    /// Records the answer to the call at `index` in the history.
    fn settle(
        &mut self,
        client: u64,
        index: usize,
        call: &SpaceCall,
        result: &Result<SpaceReply, SpaceError>,
        at: Duration,
    ) -> Option<SpaceRet> {
        match outcome(call, result) {
            Ok(ret) => {
                self.history[index].ret = ret.clone().map(|r| (at.as_nanos() as u64, r));
                ret
            }
            Err(answer) => {
                self.violations
                    .push(Violation::SpaceUnexpectedAnswer { client, answer });
                None
            }
        }
    }

    /// `peer` crashed: its clients' calls stay without answer, their
    /// sequences end (a lock they held is left to its lease), and final
    /// reads it was making are tried elsewhere (the objects returned).
    pub fn crashed(&mut self, peer: u32) -> Vec<usize> {
        let lost: Vec<((u32, RequestId), Waiter)> = self
            .waiting
            .range((peer, RequestId { session: 0, seq: 0 })..)
            .take_while(|((p, _), _)| *p == peer)
            .map(|(k, w)| (*k, *w))
            .collect();
        let mut retry = Vec::new();
        for (k, waiter) in lost {
            self.waiting.remove(&k);
            if let Waiter::Final { key, .. } = waiter {
                retry.push(key);
            }
        }
        for c in self.clients.iter_mut().filter(|c| c.peer == peer) {
            c.in_flight = None;
            c.plan.clear();
            c.token = None;
        }
        retry
    }

    /// Whether no client has a call in flight or a sequence to finish.
    pub fn clients_idle(&self) -> bool {
        self.clients
            .iter()
            .all(|c| c.in_flight.is_none() && c.plan.is_empty())
    }

    /// The objects whose final read is still to be made (not answered, not
    /// in flight, attempts left).
    pub fn finals_due(&self) -> Vec<usize> {
        let in_flight: Vec<usize> = self
            .waiting
            .values()
            .filter_map(|w| match w {
                Waiter::Final { key, .. } => Some(*key),
                Waiter::Client(_) => None,
            })
            .collect();
        (0..KEYS)
            .filter(|k| {
                let f = &self.finals[*k];
                !f.done && f.attempts < FINAL_ATTEMPTS && !in_flight.contains(k)
            })
            .collect()
    }

    /// Whether every final read is answered or out of attempts.
    pub fn finals_over(&self) -> bool {
        self.finals_due().is_empty()
            && !self
                .waiting
                .values()
                .any(|w| matches!(w, Waiter::Final { .. }))
    }

    /// How many final reads of `key` were tried.
    pub fn final_attempts(&self, key: usize) -> u32 {
        self.finals.get(key).map_or(0, |f| f.attempts)
    }

    /// The final read of `key` was asked at `at` of `peer`, as its request
    /// `id` (or could not be: `id` is the node's refusal).
    pub fn final_called(
        &mut self,
        key: usize,
        peer: u32,
        id: Result<RequestId, SpaceError>,
        at: Duration,
    ) {
        let client = self.clients.len() as u64;
        let Some(f) = self.finals.get_mut(key) else {
            return;
        };
        f.attempts += 1;
        match id {
            Ok(id) => {
                let index = self.record(client, key, SpaceCall::Get, at);
                self.waiting
                    .insert((peer, id), Waiter::Final { key, index });
            }
            Err(error) => f.last = format!("not taken by peer {peer}: {error}"),
        }
    }

    fn final_answered(
        &mut self,
        key: usize,
        index: usize,
        result: Result<SpaceReply, SpaceError>,
        at: Duration,
    ) -> Next {
        let client = self.clients.len() as u64;
        let ret = self.settle(client, index, &SpaceCall::Get, &result, at);
        let f = &mut self.finals[key];
        if ret.is_some() {
            f.done = true;
            Next::Nothing
        } else {
            f.last = format!("{result:?}");
            Next::RetryFinal { key }
        }
    }

    /// What the workload did so far.
    pub fn stats(&self) -> SpaceStats {
        let mut stats = SpaceStats {
            calls: self.history.len() as u64,
            final_reads: self.finals.iter().filter(|f| f.done).count() as u64,
            ..SpaceStats::default()
        };
        for op in &self.history {
            match &op.ret {
                None => stats.unanswered += 1,
                Some((_, SpaceRet::Written { .. })) => stats.written += 1,
                Some((_, SpaceRet::Refused)) => stats.refused += 1,
                Some((_, SpaceRet::Granted { .. })) => stats.granted += 1,
                Some(_) => {}
            }
        }
        stats
    }

    /// The recorded history.
    pub fn history(&self) -> &SpaceHistory {
        &self.history
    }

    /// The checks of the end of the seed: every final read answered, the
    /// history linearizable, fencing tokens monotonic; with the violations
    /// found along the way.
    pub fn finish(&mut self) -> Vec<Violation> {
        let mut violations = std::mem::take(&mut self.violations);
        for (key, f) in self.finals.iter().enumerate() {
            if !f.done {
                violations.push(Violation::SpaceFinalReadUnanswered {
                    key: self.keys[key].to_string(),
                    answer: if f.last.is_empty() {
                        "never asked (the clients were still busy)".into()
                    } else {
                        f.last.clone()
                    },
                });
            }
        }
        let model = SpaceModel::new(ObjectModel);
        match check_partitioned(&model, &self.history, |call| call.key.clone()) {
            Ok(()) => {}
            Err(CheckError::BudgetExceeded(report)) => {
                violations.push(Violation::SpaceCheckUndecided {
                    report: report.to_string(),
                })
            }
            Err(other) => violations.push(Violation::SpaceNotLinearizable {
                report: other.to_string(),
            }),
        }
        if let Err(error) = fencing_monotonic_per_key(&self.history) {
            violations.push(Violation::SpaceFencing { error });
        }
        violations
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use colony_core::space::Object;

    fn object(value: &[u8], version: u64) -> Result<SpaceReply, SpaceError> {
        Ok(SpaceReply::Value(Some(Object {
            value: value.to_vec(),
            version,
            tags: Tags::new(),
        })))
    }

    #[test]
    fn answers_map_onto_the_model_faithfully() {
        let set = SpaceCall::Set {
            value: 7,
            token: None,
        };
        let fenced = SpaceCall::Set {
            value: 7,
            token: Some(3),
        };
        let cas = SpaceCall::CompareAndSet {
            expected_version: 2,
            value: 7,
        };
        let unlock = SpaceCall::WriteUnlock { token: 3 };
        let timeout = Err(SpaceError::Timeout {
            waited_ms: 3000,
            why: "test".into(),
        });
        let cases: Vec<(SpaceCall, Result<SpaceReply, SpaceError>, Option<SpaceRet>)> = vec![
            (
                SpaceCall::Get,
                object(&9u64.to_le_bytes(), 4),
                Some(SpaceRet::Value {
                    value: Some(9),
                    version: 4,
                }),
            ),
            (
                SpaceCall::Get,
                Ok(SpaceReply::Value(None)),
                Some(SpaceRet::Value {
                    value: None,
                    version: 0,
                }),
            ),
            (
                set.clone(),
                Ok(SpaceReply::Written {
                    version: 1,
                    replaced: Default::default(),
                }),
                Some(SpaceRet::Written { version: 1 }),
            ),
            (
                set.clone(),
                Err(SpaceError::Locked),
                Some(SpaceRet::Refused),
            ),
            (
                cas.clone(),
                Err(SpaceError::VersionMismatch { current: 5 }),
                Some(SpaceRet::Refused),
            ),
            (
                fenced.clone(),
                Err(SpaceError::StaleToken { token: 3 }),
                Some(SpaceRet::Refused),
            ),
            (
                SpaceCall::WriteLock,
                Ok(SpaceReply::Granted {
                    token: 12,
                    lease_ms: LEASE_MS,
                }),
                Some(SpaceRet::Granted { token: 12 }),
            ),
            (
                unlock.clone(),
                Ok(SpaceReply::Released),
                Some(SpaceRet::Released),
            ),
            (
                unlock.clone(),
                Err(SpaceError::NotHeld { token: 3 }),
                Some(SpaceRet::NotHeld),
            ),
            (set.clone(), timeout.clone(), None),
            (
                SpaceCall::ReadLock,
                Err(SpaceError::Unavailable("forming".into())),
                None,
            ),
        ];
        for (call, result, expected) in cases {
            assert_eq!(outcome(&call, &result), Ok(expected), "{call:?} {result:?}");
        }
        // Answers a call cannot get are reported, not guessed at.
        for (call, result) in [
            (
                SpaceCall::Get,
                Ok(SpaceReply::Written {
                    version: 1,
                    replaced: Default::default(),
                }),
            ),
            (SpaceCall::Get, object(b"short", 1)),
            (set, Err(SpaceError::StaleToken { token: 1 })),
            (fenced, Err(SpaceError::Locked)),
            (SpaceCall::WriteLock, Err(SpaceError::Busy { max: 1 })),
            (cas, Err(SpaceError::Full("full".into()))),
        ] {
            assert!(outcome(&call, &result).is_err(), "{call:?} {result:?}");
        }
    }

    #[test]
    fn calls_become_the_requests_the_core_takes() {
        let key = ObjectKey::new(GLOBAL, "k0");
        let cas = SpaceCall::CompareAndSet {
            expected_version: 0,
            value: 1,
        };
        match request(&key, &cas) {
            SpaceOp::Put {
                value,
                condition: Condition::Version(0),
                token: None,
                ..
            } => assert_eq!(value, 1u64.to_le_bytes()),
            other => panic!("{other:?}"),
        }
        for call in [
            SpaceCall::Get,
            SpaceCall::Delete,
            SpaceCall::WriteLock,
            SpaceCall::ReadUnlock { token: 4 },
        ] {
            assert_eq!(request(&key, &call).check(1024), Ok(()));
        }
    }

    /// Clients make one call at a time, present only tokens they were
    /// granted, and stop after their calls.
    #[test]
    fn clients_follow_their_sequences() {
        let mut w = SpaceWorkload::new(1, 5, 2, 30, Duration::from_millis(100));
        let mut seq = 0;
        let mut granted = Vec::new();
        for round in 0..200 {
            for client in 0..2 {
                let Some((key, call)) = w.next_call(client, true) else {
                    continue;
                };
                match &call {
                    SpaceCall::Set {
                        token: Some(token), ..
                    }
                    | SpaceCall::WriteUnlock { token }
                    | SpaceCall::ReadUnlock { token } => assert!(granted.contains(token)),
                    _ => {}
                }
                seq += 1;
                let id = RequestId { session: 1, seq };
                let at = Duration::from_millis(round * 10);
                w.called(client, key, call.clone(), id, at);
                assert!(w.next_call(client, true).is_none(), "one call at a time");
                let peer = w.clients[client].peer;
                let result = match call {
                    SpaceCall::WriteLock | SpaceCall::ReadLock => {
                        granted.push(seq);
                        Ok(SpaceReply::Granted {
                            token: seq,
                            lease_ms: LEASE_MS,
                        })
                    }
                    SpaceCall::Get => Ok(SpaceReply::Value(None)),
                    SpaceCall::WriteUnlock { .. } | SpaceCall::ReadUnlock { .. } => {
                        Ok(SpaceReply::Released)
                    }
                    _ => Err(SpaceError::Timeout {
                        waited_ms: 1,
                        why: "test".into(),
                    }),
                };
                let next = w.answered(peer, id, result, at + Duration::from_millis(1));
                assert!(matches!(next, Next::Client { .. }));
            }
        }
        // A sequence begun before a client's last call is finished.
        assert!((60..=64).contains(&w.stats().calls), "{:?}", w.stats());
        assert!(w.clients_idle());
        assert!(!granted.is_empty());
    }
}
