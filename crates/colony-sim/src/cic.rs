//! The application the objects workload runs under `cic`
//! (`--object-protocol cic`): a rollback to a recovery line is what `cic`
//! promises, so the check is on an answer the objects compute among
//! themselves, not on what clients were told (a client may hear
//! `RolledBack`; its steps are outside the line).
//!
//! Each client creates a [`Feeder`], which creates [`FEEDER_COUNTERS`]
//! [`Counter`]s; the client then steps it (`Step`) until it has drawn its
//! `total` numbers from the generator in its state, each added to one of
//! its counters by an object-to-object call, and every call has its reply.
//! Once faults are over and the network healed, each feeder is stepped to
//! the end and its counters read, and [`CicApp::finish`] checks:
//!
//! - **Finished** (`object-app-unfinished`): the feeder drew every number
//!   and had every reply, within the run.
//! - **The fault-free answer** (`object-wrong-answer`): what it sent to
//!   each counter (sum and count) is what the same seed gives without
//!   faults ([`fault_free`]), no call failed, and each counter holds
//!   exactly what its feeder sent it — no addition lost, none applied
//!   twice, no counter in a state its feeder's does not match.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use colony_core::object::{
    decode_reply, encode, ActiveObject, CallError, CallId, Guid, ObjectAnswer, ObjectContext,
    ObjectProtocol, ObjectRequest, ObjectUri, Ref,
};
use serde::{Deserialize, Serialize};

use crate::check::Violation;
use crate::objects::{Next, ObjectStats, FAILED_BACKOFF, FINAL_ATTEMPTS};

/// Counters each feeder creates.
pub const FEEDER_COUNTERS: u32 = 2;

/// Numbers a client's step draws.
pub const STEP: u64 = 2;

/// Numbers a final step draws (the run hurries to its end).
pub const FINAL_STEP: u64 = 16;

/// A counter: the sum of what was added, and how many additions.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Counter {
    value: u64,
    adds: u64,
}

/// What a [`Counter`] is asked.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum CounterRequest {
    /// Add this number.
    Add(u64),
    /// The sum and the count.
    Get,
}

impl ActiveObject for Counter {
    type Params = ();
    type Request = CounterRequest;
    /// (sum, additions).
    type Reply = (u64, u64);
    const TYPE: &'static str = "sim-cic-counter";

    fn create(_ctx: &mut ObjectContext<'_>, _params: ()) -> Result<Self, String> {
        Ok(Counter::default())
    }

    fn handle(
        &mut self,
        _ctx: &mut ObjectContext<'_>,
        request: CounterRequest,
    ) -> Result<(u64, u64), String> {
        if let CounterRequest::Add(n) = request {
            self.value = self.value.wrapping_add(n);
            self.adds += 1;
        }
        Ok((self.value, self.adds))
    }
}

/// One draw of a feeder's generator: the counter it goes to and the
/// number. The same function gives the run and its fault-free answer.
fn draw(rng: &mut u64, counters: usize) -> (usize, u64) {
    *rng ^= *rng << 13;
    *rng ^= *rng >> 7;
    *rng ^= *rng << 17;
    let to = (*rng % counters.max(1) as u64) as usize;
    (to, (*rng >> 8) % 1000 + 1)
}

/// What a feeder seeded `seed` sends each of its `counters` counters over
/// `total` draws, without faults: (sum, count) per counter.
pub fn fault_free(seed: u64, total: u64, counters: u32) -> Vec<(u64, u64)> {
    let mut rng = seed | 1;
    let mut sent = vec![(0u64, 0u64); counters as usize];
    for _ in 0..total {
        let (to, x) = draw(&mut rng, sent.len());
        sent[to].0 = sent[to].0.wrapping_add(x);
        sent[to].1 += 1;
    }
    sent
}

/// Creates its counters, then draws `total` numbers from a generator in
/// its state, a few per step, adding each to one counter, and counts the
/// replies.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Feeder {
    counters: Vec<Ref<Counter>>,
    rng: u64,
    total: u64,
    made: u64,
    /// (sum, count) sent to each counter.
    sent: Vec<(u64, u64)>,
    answered: u64,
    failures: u64,
    /// The first failed reply.
    failure: Option<String>,
}

/// What a [`Feeder`] is asked.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum FeederRequest {
    /// Draw (and send) up to this many more numbers.
    Step(u64),
}

/// What a [`Feeder`] answers: how far it is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeederStatus {
    /// Numbers drawn and sent.
    pub made: u64,
    /// Replies had.
    pub answered: u64,
    /// Replies that were errors.
    pub failures: u64,
    /// The first of them.
    pub failure: Option<String>,
    /// Numbers it draws in all.
    pub total: u64,
    /// (sum, count) sent to each counter.
    pub sent: Vec<(u64, u64)>,
    /// Its counters.
    pub counters: Vec<ObjectUri>,
}

impl FeederStatus {
    /// Whether every number was sent and every call answered.
    pub fn done(&self) -> bool {
        self.made == self.total && self.answered == self.total
    }
}

impl ActiveObject for Feeder {
    /// (numbers to draw, generator seed, counters).
    type Params = (u64, u64, u32);
    type Request = FeederRequest;
    type Reply = FeederStatus;
    const TYPE: &'static str = "sim-cic-feeder";

    fn create(
        ctx: &mut ObjectContext<'_>,
        (total, seed, counters): (u64, u64, u32),
    ) -> Result<Self, String> {
        let counters: Vec<Ref<Counter>> = (0..counters.max(1))
            .map(|_| ctx.create::<Counter>(&()))
            .collect();
        Ok(Feeder {
            sent: vec![(0, 0); counters.len()],
            counters,
            rng: seed | 1,
            total,
            made: 0,
            answered: 0,
            failures: 0,
            failure: None,
        })
    }

    fn handle(
        &mut self,
        ctx: &mut ObjectContext<'_>,
        request: FeederRequest,
    ) -> Result<FeederStatus, String> {
        let FeederRequest::Step(n) = request;
        for _ in 0..n.min(self.total - self.made) {
            let (to, x) = draw(&mut self.rng, self.counters.len());
            self.made += 1;
            self.sent[to].0 = self.sent[to].0.wrapping_add(x);
            self.sent[to].1 += 1;
            ctx.call(&self.counters[to], &CounterRequest::Add(x));
        }
        Ok(FeederStatus {
            made: self.made,
            answered: self.answered,
            failures: self.failures,
            failure: self.failure.clone(),
            total: self.total,
            sent: self.sent.clone(),
            counters: self.counters.iter().map(|c| c.uri().clone()).collect(),
        })
    }

    fn on_reply(
        &mut self,
        _ctx: &mut ObjectContext<'_>,
        _call: CallId,
        reply: Result<Vec<u8>, CallError>,
    ) {
        self.answered += 1;
        if let Err(e) = reply.and_then(|b| decode_reply::<Counter>(&b)) {
            self.failures += 1;
            self.failure.get_or_insert_with(|| e.to_string());
        }
    }
}

/// Who waits for the answer to a request (by the peer and its token).
#[derive(Clone, Copy, Debug)]
enum Waiter {
    /// A client's creation of its feeder.
    Create { client: usize },
    /// A client's step.
    Step { client: usize },
    /// A final step of this client's feeder.
    FinalStep { run: usize },
    /// The final read of counter `counter` of this client's feeder.
    FinalCounter { run: usize, counter: usize },
}

/// One client and its feeder.
#[derive(Clone, Debug)]
struct Run {
    peer: u32,
    busy: bool,
    seed: u64,
    feeder: Option<ObjectUri>,
    /// The last status a step had.
    status: Option<FeederStatus>,
    /// The status of the final steps, once done.
    done: Option<FeederStatus>,
    /// The counters' final reads: (sum, count).
    counters: BTreeMap<usize, (u64, u64)>,
    /// Final requests that failed.
    attempts: u32,
    last: String,
}

/// The `cic` application of the objects workload: see the module docs.
#[derive(Debug)]
pub struct CicApp {
    runs: Vec<Run>,
    total: u64,
    waiting: BTreeMap<(u32, u64), Waiter>,
    next_request: u64,
    stats: ObjectStats,
    violations: Vec<Violation>,
}

impl CicApp {
    /// One feeder for each client on `peers` (client `i` on `peers[i]`),
    /// seeded from `seeds`, each drawing `total` numbers.
    pub fn new(peers: &[u32], seeds: &[u64], total: u64) -> CicApp {
        let runs = peers
            .iter()
            .zip(seeds)
            .map(|(&peer, &seed)| Run {
                peer,
                busy: false,
                seed,
                feeder: None,
                status: None,
                done: None,
                counters: BTreeMap::new(),
                attempts: 0,
                last: String::new(),
            })
            .collect();
        CicApp {
            runs,
            total: total.max(1),
            waiting: BTreeMap::new(),
            next_request: 0,
            stats: ObjectStats::default(),
            violations: Vec::new(),
        }
    }

    fn request_token(&mut self) -> u64 {
        self.next_request += 1;
        self.next_request
    }

    /// The GUIDs of the feeders and counters known so far.
    pub fn guids(&self) -> Vec<Guid> {
        let mut guids = Vec::new();
        for run in &self.runs {
            guids.extend(run.feeder.iter().map(|u| u.guid));
            if let Some(status) = run.done.as_ref().or(run.status.as_ref()) {
                guids.extend(status.counters.iter().map(|u| u.guid));
            }
        }
        guids
    }

    fn step(uri: &ObjectUri, n: u64) -> ObjectRequest {
        ObjectRequest::Call {
            to: uri.clone(),
            object_type: Feeder::TYPE.into(),
            request: encode(&FeederRequest::Step(n)),
        }
    }

    /// What `client` asks now, if anything: its feeder's creation, else a
    /// step while `start_new` and its feeder is not done.
    pub fn next_call(
        &mut self,
        client: usize,
        start_new: bool,
        protocol: ObjectProtocol,
    ) -> Option<(u64, ObjectRequest)> {
        let run = self.runs.get(client)?;
        if run.busy {
            return None;
        }
        let peer = run.peer;
        let request = match &run.feeder {
            None => ObjectRequest::Create {
                object_type: Feeder::TYPE.into(),
                params: encode(&(self.total, run.seed, FEEDER_COUNTERS)),
                protocol,
            },
            Some(_) if !start_new || run.status.as_ref().is_some_and(FeederStatus::done) => {
                return None
            }
            Some(uri) => {
                self.stats.calls += 1;
                Self::step(uri, STEP)
            }
        };
        let waiter = match request {
            ObjectRequest::Create { .. } => Waiter::Create { client },
            _ => Waiter::Step { client },
        };
        let token = self.request_token();
        self.runs[client].busy = true;
        self.waiting.insert((peer, token), waiter);
        Some((token, request))
    }

    /// Whether a client waits for its feeder's creation.
    pub fn creating(&self) -> bool {
        self.runs.iter().any(|r| r.feeder.is_none())
    }

    /// Whether no client waits for an answer.
    pub fn clients_idle(&self) -> bool {
        self.runs.iter().all(|r| !r.busy)
    }

    fn status_of(
        &mut self,
        result: Result<ObjectAnswer, CallError>,
    ) -> Result<FeederStatus, String> {
        match result {
            Ok(ObjectAnswer::Replied(bytes)) => match decode_reply::<Feeder>(&bytes) {
                Ok(status) => Ok(status),
                Err(e) => {
                    let answer = format!("a feeder's step answered {e}");
                    self.violations.push(Violation::ObjectUnexpectedAnswer {
                        answer: answer.clone(),
                    });
                    Err(answer)
                }
            },
            Ok(other) => {
                let answer = format!("a feeder's step answered {other:?}");
                self.violations.push(Violation::ObjectUnexpectedAnswer {
                    answer: answer.clone(),
                });
                Err(answer)
            }
            Err(e) => {
                if matches!(e, CallError::RolledBack { .. }) {
                    self.stats.rollbacks_seen += 1;
                }
                Err(e.to_string())
            }
        }
    }

    /// `peer` answered its request `token` with `result`.
    pub fn answered(
        &mut self,
        peer: u32,
        token: u64,
        result: Result<ObjectAnswer, CallError>,
        pause: Duration,
    ) -> Next {
        let Some(waiter) = self.waiting.remove(&(peer, token)) else {
            return Next::Nothing;
        };
        match waiter {
            Waiter::Create { client } => {
                self.runs[client].busy = false;
                match result {
                    Ok(ObjectAnswer::Created(uri)) => self.runs[client].feeder = Some(uri),
                    // Failed, or happened unseen: another feeder instead.
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
            Waiter::Step { client } => {
                self.runs[client].busy = false;
                let status = self.status_of(result);
                let run = &mut self.runs[client];
                let after = match status {
                    Ok(status) => {
                        self.stats.acked += 1;
                        if run.status.as_ref().is_some_and(|s| s.made > status.made) {
                            self.stats.rollbacks_seen += 1;
                        }
                        run.status = Some(status);
                        pause
                    }
                    Err(_) => {
                        self.stats.failed += 1;
                        FAILED_BACKOFF + pause
                    }
                };
                Next::Client { client, after }
            }
            Waiter::FinalStep { run } => {
                let status = self.status_of(result);
                let r = &mut self.runs[run];
                match status {
                    Ok(status) if status.done() => r.done = Some(status),
                    // Not there yet: stepped again.
                    Ok(status) => r.status = Some(status),
                    Err(e) => {
                        r.attempts += 1;
                        r.last = e;
                    }
                }
                Next::RetryFinal
            }
            Waiter::FinalCounter { run, counter } => {
                let r = &mut self.runs[run];
                match result {
                    Ok(ObjectAnswer::Replied(bytes)) => match decode_reply::<Counter>(&bytes) {
                        Ok(read) => {
                            r.counters.insert(counter, read);
                        }
                        Err(e) => {
                            r.attempts += 1;
                            r.last = format!("counter {counter}: {e}");
                        }
                    },
                    Ok(other) => self.violations.push(Violation::ObjectUnexpectedAnswer {
                        answer: format!("a counter read answered {other:?}"),
                    }),
                    Err(e) => {
                        r.attempts += 1;
                        r.last = format!("counter {counter}: {e}");
                    }
                }
                Next::RetryFinal
            }
        }
    }

    /// `peer` crashed: what its clients waited for stays without answer,
    /// and its final requests are made again elsewhere.
    pub fn crashed(&mut self, peer: u32) -> bool {
        let lost: Vec<(u32, u64)> = self
            .waiting
            .range((peer, 0)..=(peer, u64::MAX))
            .map(|(k, _)| *k)
            .collect();
        let mut retry = false;
        for k in lost {
            match self.waiting.remove(&k) {
                Some(Waiter::Create { client }) => self.runs[client].busy = false,
                Some(Waiter::Step { client }) => {
                    self.runs[client].busy = false;
                    self.stats.unanswered += 1;
                }
                Some(Waiter::FinalStep { .. } | Waiter::FinalCounter { .. }) => retry = true,
                None => {}
            }
        }
        retry
    }

    /// Whether run `r` needs a final request now.
    fn final_due(&self, r: usize, reading: &BTreeSet<usize>) -> bool {
        let run = &self.runs[r];
        let read_all = run
            .done
            .as_ref()
            .is_some_and(|s| run.counters.len() == s.counters.len());
        run.feeder.is_some() && !read_all && run.attempts < FINAL_ATTEMPTS && !reading.contains(&r)
    }

    /// The runs whose final request is due.
    pub fn finals_due(&self) -> Vec<usize> {
        let reading: BTreeSet<usize> = self
            .waiting
            .values()
            .filter_map(|w| match w {
                Waiter::FinalStep { run } | Waiter::FinalCounter { run, .. } => Some(*run),
                _ => None,
            })
            .collect();
        (0..self.runs.len())
            .filter(|r| self.final_due(*r, &reading))
            .collect()
    }

    /// Whether every run is read back or out of attempts.
    pub fn finals_over(&self) -> bool {
        self.finals_due().is_empty()
            && !self
                .waiting
                .values()
                .any(|w| matches!(w, Waiter::FinalStep { .. } | Waiter::FinalCounter { .. }))
    }

    /// The next final request of run `r`, to ask of `peer`: a step until
    /// its feeder is done, then the read of each counter.
    pub fn final_call(&mut self, r: usize, peer: u32) -> Option<(u64, ObjectRequest)> {
        let run = self.runs.get(r)?;
        let (waiter, request) = match &run.done {
            None => (
                Waiter::FinalStep { run: r },
                Self::step(run.feeder.as_ref()?, FINAL_STEP),
            ),
            Some(status) => {
                let counter = (0..status.counters.len()).find(|c| !run.counters.contains_key(c))?;
                let request = ObjectRequest::Call {
                    to: status.counters[counter].clone(),
                    object_type: Counter::TYPE.into(),
                    request: encode(&CounterRequest::Get),
                };
                (Waiter::FinalCounter { run: r, counter }, request)
            }
        };
        let token = self.request_token();
        self.waiting.insert((peer, token), waiter);
        Some((token, request))
    }

    /// What the workload did.
    pub fn stats(&self) -> ObjectStats {
        let mut stats = self.stats.clone();
        stats.final_reads = self
            .runs
            .iter()
            .filter(|r| {
                r.done
                    .as_ref()
                    .is_some_and(|s| s.counters.len() == r.counters.len())
            })
            .count() as u64;
        stats
    }

    /// The checks of the end of the seed (see the module docs).
    pub fn finish(&mut self) -> Vec<Violation> {
        let mut violations = std::mem::take(&mut self.violations);
        for (i, run) in self.runs.iter().enumerate() {
            let Some(feeder) = &run.feeder else {
                violations.push(Violation::ObjectFinalReadUnanswered {
                    object: format!("feeder of client {i}"),
                    answer: "never created".into(),
                });
                continue;
            };
            let name = feeder.to_string();
            let Some(status) = &run.done else {
                violations.push(Violation::ObjectAppUnfinished {
                    object: name,
                    state: match &run.status {
                        Some(s) => format!(
                            "drew {} of {}, had {} replies; last final request: {}",
                            s.made,
                            s.total,
                            s.answered,
                            if run.last.is_empty() {
                                "none"
                            } else {
                                &run.last
                            }
                        ),
                        None => format!("never stepped; last final request: {}", run.last),
                    },
                });
                continue;
            };
            let expected = fault_free(run.seed, self.total, FEEDER_COUNTERS);
            if status.failures > 0 {
                violations.push(Violation::ObjectWrongAnswer {
                    object: name.clone(),
                    what: format!(
                        "{} of its calls failed, the first with: {}",
                        status.failures,
                        status.failure.as_deref().unwrap_or("?")
                    ),
                });
            }
            if status.sent != expected {
                violations.push(Violation::ObjectWrongAnswer {
                    object: name.clone(),
                    what: format!(
                        "sent (sum, count) {:?} to its counters; the fault-free run sends {expected:?}",
                        status.sent
                    ),
                });
            }
            if status.counters.len() != run.counters.len() {
                violations.push(Violation::ObjectFinalReadUnanswered {
                    object: name.clone(),
                    answer: format!(
                        "{} of its {} counters read; last: {}",
                        run.counters.len(),
                        status.counters.len(),
                        run.last
                    ),
                });
            }
            for (c, read) in &run.counters {
                let sent = status.sent.get(*c).copied().unwrap_or_default();
                if *read != sent {
                    let counter = status.counters.get(*c).map(ToString::to_string);
                    violations.push(Violation::ObjectWrongAnswer {
                        object: counter.unwrap_or_else(|| format!("#{c} of {name}")),
                        what: format!(
                            "holds (sum, count) {read:?}, but its feeder {name} sent it {sent:?}"
                        ),
                    });
                }
            }
        }
        violations.truncate(20);
        violations
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fault_free_answer_is_a_function_of_the_seed() {
        let a = fault_free(7, 80, 2);
        assert_eq!(a, fault_free(7, 80, 2));
        assert_ne!(a, fault_free(8, 80, 2));
        assert_eq!(a.iter().map(|(_, n)| n).sum::<u64>(), 80);
        assert!(a.iter().all(|(_, n)| *n > 0), "{a:?}");
    }
}
