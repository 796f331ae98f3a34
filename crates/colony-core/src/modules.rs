//! Guest modules on demand, sans IO. A job message naming a WebAssembly
//! module this peer does not hold (`Submit`, `Advert`, `Assign` of an app
//! `wasm:<id>`) is held back, with every later message of the same job so
//! the job core still sees them in order, while the module is fetched: first
//! from the peer that sent the message (it had the module to send it), then
//! from the other peers that sent messages of held jobs. Once the driver has
//! verified and stored it ([`ModuleFetcher::stored`]), the held messages are
//! released in order; if no source has it, they are released anyway and
//! the job core refuses them as it refuses any app it cannot run.
//!
//! A module also has a home: the [`MODULE_HOME_SIZE`] live peers that run
//! guests closest to its hash. Publishing pushes it there
//! ([`ModuleMsg::Store`]), and a fetch asks the home before anyone else, so
//! a module outlives the peer that published it. Modules travel with the
//! signatures of the submitters that vouch for them
//! ([`ModuleSignature`]): each host checks them against whom it trusts
//! (the driver's part: this core carries them, bounded, and never
//! interprets them).
//!
//! Everything is bounded: jobs held, messages held per job, sources per
//! module, signatures per module, and the time each source gets to answer.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::job::{JobId, JobMsg};

/// The content address of module bytes: their BLAKE3 hash.
pub fn content_hash(bytes: &[u8]) -> [u8; 32] {
    *blake3::hash(bytes).as_bytes()
}

/// The id of module bytes as messages and application names carry it:
/// [`content_hash`] in lowercase hex.
pub fn module_id(bytes: &[u8]) -> String {
    content_hash(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// How many peers hold a published module: its home.
pub const MODULE_HOME_SIZE: usize = 3;
/// Most signatures kept and carried per module.
pub const MAX_SIGNATURES: usize = 8;
/// Largest encoded public key a signature may carry.
pub const MAX_SIGNER_KEY_BYTES: usize = 128;
/// Largest signature accepted.
pub const MAX_SIGNATURE_BYTES: usize = 128;

/// A submitter's signature over a module id: it vouches for the code.
/// `key` is the signer's public key and `signature` its signature over
/// [`signed_bytes`], both in the transport's identity encoding.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModuleSignature {
    /// The signer's public key.
    #[serde(with = "serde_bytes")]
    pub key: Vec<u8>,
    /// The signature.
    #[serde(with = "serde_bytes")]
    pub signature: Vec<u8>,
}

/// What a signer signs for module `id`: a domain tag, then the id.
pub fn signed_bytes(id: &str) -> Vec<u8> {
    [b"colony module v1 ".as_slice(), id.as_bytes()].concat()
}

/// Whether `signatures` keeps within the bounds ([`MAX_SIGNATURES`], key
/// and signature sizes).
pub fn signatures_in_bounds(signatures: &[ModuleSignature]) -> bool {
    signatures.len() <= MAX_SIGNATURES
        && signatures.iter().all(|s| {
            s.key.len() <= MAX_SIGNER_KEY_BYTES && s.signature.len() <= MAX_SIGNATURE_BYTES
        })
}

/// `old` with the signatures of `new` it lacks, keeping at most
/// [`MAX_SIGNATURES`] (one per key; the newest signature of a key wins).
pub fn merge_signatures(
    old: Vec<ModuleSignature>,
    new: &[ModuleSignature],
) -> Vec<ModuleSignature> {
    let mut merged: Vec<ModuleSignature> = new.to_vec();
    for s in old {
        if !merged.iter().any(|m| m.key == s.key) {
            merged.push(s);
        }
    }
    merged.truncate(MAX_SIGNATURES);
    merged
}

/// The position of module `id` in the overlay's key space (its hash), if
/// `id` is a module id.
pub fn module_key(id: &str) -> Option<[u8; 32]> {
    if id.len() != 64 {
        return None;
    }
    let mut key = [0u8; 32];
    for (i, byte) in key.iter_mut().enumerate() {
        *byte = u8::from_str_radix(id.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(key)
}

/// Messages between peers about modules (pipe payload kind `Module`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ModuleMsg {
    /// Send me module `id` (the hex id of `wasm:<id>`).
    Want {
        /// The module.
        id: String,
    },
    /// Module `id`: its bytes (the receiver checks they hash to `id`) and
    /// the signatures the sender holds for it.
    Module {
        /// The module.
        id: String,
        /// Its bytes.
        #[serde(with = "serde_bytes")]
        bytes: Vec<u8>,
        /// Who vouches for it.
        signatures: Vec<ModuleSignature>,
    },
    /// I do not hold module `id`.
    Missing {
        /// The module.
        id: String,
    },
    /// Publisher → a member of the module's home: keep module `id` (and
    /// these signatures) for the peers that will fetch it.
    Store {
        /// The module.
        id: String,
        /// Its bytes.
        #[serde(with = "serde_bytes")]
        bytes: Vec<u8>,
        /// Who vouches for it.
        signatures: Vec<ModuleSignature>,
    },
    /// Home member → publisher: module `id` is stored here.
    Stored {
        /// The module.
        id: String,
    },
}

/// Bounds of the fetcher.
#[derive(Clone, Debug)]
pub struct FetchConfig {
    /// How long one source has to answer.
    pub source_timeout: Duration,
    /// Jobs whose messages may be held at once.
    pub max_jobs_held: usize,
    /// Messages held per job.
    pub max_messages_per_job: usize,
    /// Sources tried per module.
    pub max_sources: usize,
}

impl Default for FetchConfig {
    fn default() -> Self {
        FetchConfig {
            source_timeout: Duration::from_secs(20),
            max_jobs_held: 64,
            max_messages_per_job: 256,
            max_sources: 8,
        }
    }
}

/// What the fetcher asks of the node.
#[derive(Debug)]
pub enum FetchOutput<P> {
    /// Send [`ModuleMsg::Want`] for `id` to `to`.
    Want {
        /// The source asked.
        to: P,
        /// The module.
        id: String,
    },
    /// Hand these held messages to the job core, in order.
    Release(Vec<(P, JobMsg<P>)>),
    /// No source had module `id` (or could send it): why, per source.
    GaveUp {
        /// The module.
        id: String,
        /// What each source answered.
        why: String,
    },
}

struct HeldJob<P> {
    module: String,
    messages: VecDeque<(P, JobMsg<P>)>,
}

struct Fetch<P> {
    /// Sources not asked yet, in order.
    sources: VecDeque<P>,
    /// The source asked now and when it must have answered.
    asking: Option<(P, Instant)>,
    /// What the sources asked so far answered.
    answers: Vec<String>,
    /// Every source ever added (no source is added twice).
    known: Vec<P>,
}

/// Holds job messages whose module is missing and drives its fetch.
pub struct ModuleFetcher<P> {
    config: FetchConfig,
    held: BTreeMap<JobId, HeldJob<P>>,
    fetches: BTreeMap<String, Fetch<P>>,
    outputs: VecDeque<FetchOutput<P>>,
}

impl<P: Clone + PartialEq> ModuleFetcher<P> {
    /// A fetcher with `config`.
    pub fn new(config: FetchConfig) -> Self {
        ModuleFetcher {
            config,
            held: BTreeMap::new(),
            fetches: BTreeMap::new(),
            outputs: VecDeque::new(),
        }
    }

    /// Whether messages of `job` are being held.
    pub fn holds(&self, job: JobId) -> bool {
        self.held.contains_key(&job)
    }

    /// Whether module `id` is being fetched from `from` right now (a
    /// module from anyone else was not asked for).
    pub fn is_asking(&self, id: &str, from: &P) -> bool {
        self.fetches
            .get(id)
            .and_then(|f| f.asking.as_ref())
            .is_some_and(|(asked, _)| asked == from)
    }

    /// Holds `msg` of `job` from `from`, which names module `id` this peer
    /// lacks, and starts fetching it: from the peers `first` (its home),
    /// then from `from`. Gives the message back if the fetcher is full:
    /// the caller hands it on and it fails as an unknown app.
    pub fn hold(
        &mut self,
        now: Instant,
        job: JobId,
        id: String,
        first: &[P],
        from: P,
        msg: JobMsg<P>,
    ) -> Option<JobMsg<P>> {
        if self.held.contains_key(&job) {
            return self.hold_more(job, from, msg);
        }
        if self.held.len() >= self.config.max_jobs_held {
            return Some(msg);
        }
        self.held.insert(
            job,
            HeldJob {
                module: id.clone(),
                messages: VecDeque::from([(from.clone(), msg)]),
            },
        );
        self.add_sources(&id, first.iter().cloned().chain([from]));
        self.ask_next(now, &id);
        None
    }

    /// Fetches module `id` with no message waiting for it (a backup of a
    /// guest's job readying a takeover, or a submission naming a module
    /// by id): asks `sources` in turn. False if too many fetches run.
    pub fn prefetch(&mut self, now: Instant, id: String, sources: Vec<P>) -> bool {
        if !self.fetches.contains_key(&id) && self.fetches.len() >= self.config.max_jobs_held {
            return false;
        }
        self.add_sources(&id, sources);
        self.ask_next(now, &id);
        true
    }

    /// Whether module `id` is being fetched.
    pub fn is_fetching(&self, id: &str) -> bool {
        self.fetches.contains_key(id)
    }

    fn add_sources(&mut self, id: &str, sources: impl IntoIterator<Item = P>) {
        let max_sources = self.config.max_sources;
        let fetch = self.fetches.entry(id.to_string()).or_insert_with(|| Fetch {
            sources: VecDeque::new(),
            asking: None,
            answers: Vec::new(),
            known: Vec::new(),
        });
        for source in sources {
            if !fetch.known.contains(&source) && fetch.known.len() < max_sources {
                fetch.known.push(source.clone());
                fetch.sources.push_back(source);
            }
        }
    }

    /// Holds a later message of a job already held (to keep its order).
    /// Gives it back if the job's queue is full.
    pub fn hold_more(&mut self, job: JobId, from: P, msg: JobMsg<P>) -> Option<JobMsg<P>> {
        match self.held.get_mut(&job) {
            Some(held) if held.messages.len() < self.config.max_messages_per_job => {
                held.messages.push_back((from, msg));
                None
            }
            _ => Some(msg),
        }
    }

    /// Stops holding `job` (its queue is full): its messages, in order,
    /// for the caller to hand on.
    pub fn release_job(&mut self, job: JobId) -> Vec<(P, JobMsg<P>)> {
        self.held
            .remove(&job)
            .map(|held| held.messages.into())
            .unwrap_or_default()
    }

    /// Module `id` is stored: releases every job waiting for it.
    pub fn stored(&mut self, id: &str) {
        self.fetches.remove(id);
        self.release(id);
    }

    /// Source `from` could not give module `id` (it said so, sent bytes
    /// that were not the module, or could not be reached): asks the next.
    pub fn failed(&mut self, now: Instant, id: &str, from: &P, why: String) {
        let Some(fetch) = self.fetches.get_mut(id) else {
            return;
        };
        if fetch
            .asking
            .as_ref()
            .is_some_and(|(asked, _)| asked == from)
        {
            fetch.asking = None;
            fetch.answers.push(why);
            self.ask_next(now, id);
        }
    }

    /// Source `to` could not be reached: every module asked of it goes
    /// to its next source.
    pub fn unreachable(&mut self, now: Instant, to: &P, why: String) {
        let asked: Vec<String> = self
            .fetches
            .iter()
            .filter(|(_, f)| f.asking.as_ref().is_some_and(|(asked, _)| asked == to))
            .map(|(id, _)| id.clone())
            .collect();
        for id in asked {
            self.failed(now, &id, to, why.clone());
        }
    }

    /// Times out sources that did not answer.
    pub fn handle_timeout(&mut self, now: Instant) {
        let late: Vec<String> = self
            .fetches
            .iter()
            .filter(|(_, f)| f.asking.as_ref().is_some_and(|(_, by)| *by <= now))
            .map(|(id, _)| id.clone())
            .collect();
        for id in late {
            if let Some(fetch) = self.fetches.get_mut(&id) {
                fetch.asking = None;
                fetch
                    .answers
                    .push(format!("no answer within {:?}", self.config.source_timeout));
            }
            self.ask_next(now, &id);
        }
    }

    /// When [`ModuleFetcher::handle_timeout`] must run next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.fetches
            .values()
            .filter_map(|f| f.asking.as_ref().map(|(_, by)| *by))
            .min()
    }

    /// The next thing to do.
    pub fn poll(&mut self) -> Option<FetchOutput<P>> {
        self.outputs.pop_front()
    }

    fn ask_next(&mut self, now: Instant, id: &str) {
        let Some(fetch) = self.fetches.get_mut(id) else {
            return;
        };
        if fetch.asking.is_some() {
            return;
        }
        match fetch.sources.pop_front() {
            Some(next) => {
                fetch.asking = Some((next.clone(), now + self.config.source_timeout));
                self.outputs.push_back(FetchOutput::Want {
                    to: next,
                    id: id.to_string(),
                });
            }
            None => {
                let why = if fetch.answers.is_empty() {
                    "no peer to ask".to_string()
                } else {
                    fetch.answers.join("; ")
                };
                self.fetches.remove(id);
                self.outputs.push_back(FetchOutput::GaveUp {
                    id: id.to_string(),
                    why,
                });
                self.release(id);
            }
        }
    }

    fn release(&mut self, id: &str) {
        let jobs: Vec<JobId> = self
            .held
            .iter()
            .filter(|(_, h)| h.module == id)
            .map(|(job, _)| *job)
            .collect();
        for job in jobs {
            if let Some(held) = self.held.remove(&job) {
                self.outputs
                    .push_back(FetchOutput::Release(held.messages.into()));
            }
        }
    }
}

/// The job a message is about, for the messages that name one.
pub fn job_of<P>(msg: &JobMsg<P>) -> Option<JobId> {
    match msg {
        JobMsg::Submit { job, .. }
        | JobMsg::Advert { job, .. }
        | JobMsg::WorkRequest { job, .. }
        | JobMsg::NoWork { job, .. }
        | JobMsg::StealRequest { job, .. }
        | JobMsg::StealDeclined { job, .. }
        | JobMsg::Assign { job, .. }
        | JobMsg::Report { job, .. }
        | JobMsg::Ack { job, .. }
        | JobMsg::Stale { job, .. }
        | JobMsg::Progress { job, .. }
        | JobMsg::Shared { job, .. }
        | JobMsg::Improved { job, .. }
        | JobMsg::Query { job }
        | JobMsg::Unknown { job }
        | JobMsg::StorePiece { job, .. }
        | JobMsg::PieceStored { job, .. }
        | JobMsg::FetchPieces { job, .. }
        | JobMsg::Pieces { job, .. }
        | JobMsg::Cancel { job }
        | JobMsg::CancelReply { job, .. }
        | JobMsg::PiecesLost { job, .. }
        | JobMsg::CheckpointNow { job, .. } => Some(*job),
        _ => None,
    }
}

/// Whether a message of a held job must wait for its module: the messages
/// that make this peer run the job's code (a submission, an advert, an
/// assignment) and those about units they start (steals, checkpoints,
/// acknowledgements, shared variables), which must not overtake them. The
/// rest (checkpoint pieces, reports, queries, cancellations) never run the
/// job's code and go on at once: holding them would delay the storage of
/// other peers' checkpoints and lose them if their worker then dies.
pub fn waits_for_module<P>(msg: &JobMsg<P>) -> bool {
    matches!(
        msg,
        JobMsg::Submit { .. }
            | JobMsg::Advert { .. }
            | JobMsg::Assign { .. }
            | JobMsg::NoWork { .. }
            | JobMsg::StealRequest { .. }
            | JobMsg::CheckpointNow { .. }
            | JobMsg::Ack { .. }
            | JobMsg::Stale { .. }
            | JobMsg::Shared { .. }
            | JobMsg::Improved { .. }
    )
}

/// The application a message asks this peer to run or serve, for the
/// messages that carry one.
pub fn app_of<P>(msg: &JobMsg<P>) -> Option<&str> {
    match msg {
        JobMsg::Submit { app, .. } | JobMsg::Advert { app, .. } | JobMsg::Assign { app, .. } => {
            Some(app)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(n: u8) -> JobId {
        JobId([n; 16])
    }

    fn query(n: u8) -> JobMsg<u32> {
        JobMsg::Query { job: job(n) }
    }

    fn drain(f: &mut ModuleFetcher<u32>) -> Vec<FetchOutput<u32>> {
        std::iter::from_fn(|| f.poll()).collect()
    }

    #[test]
    fn held_messages_wait_for_the_module_and_come_out_in_order() {
        let now = Instant::now();
        let mut f = ModuleFetcher::new(FetchConfig::default());
        f.hold(now, job(1), "m".into(), &[], 7, query(1))
            .map_or(Ok(()), |_| Err("not held"))
            .expect("held");
        assert!(f.holds(job(1)));
        f.hold_more(job(1), 8, JobMsg::Unknown { job: job(1) })
            .map_or(Ok(()), |_| Err("not held"))
            .expect("held");
        // A second job on the same module adds its sender as a source but
        // asks nobody new while 7 is asked.
        f.hold(now, job(2), "m".into(), &[], 9, query(2))
            .map_or(Ok(()), |_| Err("not held"))
            .expect("held");
        let out = drain(&mut f);
        assert!(matches!(&out[..], [FetchOutput::Want { to: 7, id }] if id == "m"));
        assert!(f.is_asking("m", &7) && !f.is_asking("m", &9));
        f.stored("m");
        let out = drain(&mut f);
        let released: Vec<Vec<u32>> = out
            .iter()
            .map(|o| match o {
                FetchOutput::Release(msgs) => msgs.iter().map(|(from, _)| *from).collect(),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(released, vec![vec![7, 8], vec![9]]);
        assert!(!f.holds(job(1)) && !f.holds(job(2)));
    }

    #[test]
    fn sources_are_tried_in_turn_then_the_messages_go_on_with_the_reasons() {
        let now = Instant::now();
        let config = FetchConfig::default();
        let timeout = config.source_timeout;
        let mut f = ModuleFetcher::new(config);
        f.hold(now, job(1), "m".into(), &[], 7, query(1))
            .map_or(Ok(()), |_| Err("not held"))
            .expect("held");
        f.hold(now, job(2), "m".into(), &[], 9, query(2))
            .map_or(Ok(()), |_| Err("not held"))
            .expect("held");
        drain(&mut f);
        // A wrong peer's failure changes nothing.
        f.failed(now, "m", &9, "not asked".into());
        assert!(f.is_asking("m", &7));
        f.failed(now, "m", &7, "missing".into());
        assert!(matches!(
            &drain(&mut f)[..],
            [FetchOutput::Want { to: 9, .. }]
        ));
        assert_eq!(f.poll_timeout(), Some(now + timeout));
        f.handle_timeout(now + timeout);
        let out = drain(&mut f);
        match &out[..] {
            [FetchOutput::GaveUp { id, why }, FetchOutput::Release(a), FetchOutput::Release(b)] => {
                assert_eq!(id, "m");
                assert!(
                    why.contains("missing") && why.contains("no answer"),
                    "{why}"
                );
                assert_eq!((a.len(), b.len()), (1, 1));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(f.poll_timeout(), None);
    }

    #[test]
    fn module_keys_are_the_hash_and_anything_else_is_none() {
        let id = module_id(b"m");
        assert_eq!(module_key(&id), Some(content_hash(b"m")));
        assert_eq!(module_key("xyz"), None);
        assert_eq!(module_key(&"g".repeat(64)), None);
        assert_eq!(module_key(&"é".repeat(32)), None);
    }

    #[test]
    fn signatures_merge_one_per_key_and_bounded() {
        let sig = |key: u8, s: u8| ModuleSignature {
            key: vec![key],
            signature: vec![s],
        };
        let merged = merge_signatures(vec![sig(1, 1), sig(2, 2)], &[sig(2, 9), sig(3, 3)]);
        assert_eq!(merged, vec![sig(2, 9), sig(3, 3), sig(1, 1)]);
        let many: Vec<ModuleSignature> = (0..20).map(|k| sig(k, k)).collect();
        assert_eq!(merge_signatures(many.clone(), &[]).len(), MAX_SIGNATURES);
        assert!(!signatures_in_bounds(&many));
        let fat = ModuleSignature {
            key: vec![0; MAX_SIGNER_KEY_BYTES + 1],
            signature: Vec::new(),
        };
        assert!(!signatures_in_bounds(&[fat]));
    }

    #[test]
    fn the_fetcher_is_bounded() {
        let now = Instant::now();
        let mut f = ModuleFetcher::new(FetchConfig {
            max_jobs_held: 1,
            max_messages_per_job: 2,
            ..FetchConfig::default()
        });
        f.hold(now, job(1), "m".into(), &[], 7, query(1))
            .map_or(Ok(()), |_| Err("not held"))
            .expect("held");
        assert!(f.hold(now, job(2), "m".into(), &[], 7, query(2)).is_some());
        f.hold_more(job(1), 7, query(1))
            .map_or(Ok(()), |_| Err("not held"))
            .expect("second");
        assert!(f.hold_more(job(1), 7, query(1)).is_some());
        assert!(f.hold_more(job(3), 7, query(3)).is_some());
    }
}
