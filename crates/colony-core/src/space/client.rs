//! This peer's own space requests: resolving a namespace's generation,
//! finding the partition's primary (redirects, retries with backoff),
//! resending unanswered requests under the same id (a retried write is
//! answered from the home's reply table, not applied twice), deadlines,
//! and renewing the leases of the locks this peer holds.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use super::{
    namespace_partition, Object, ObjectKey, PartitionId, RequestId, SpaceError, SpaceOp,
    SpaceReply, GLOBAL,
};

/// Hot objects whose extra holders a client remembers.
const MAX_HOT_HOLDERS: usize = 256;

/// Hot copies a peer keeps for other peers' reads.
pub const MAX_HOT_COPIES: usize = 256;

/// Bytes of hot copies a peer keeps for other peers' reads (apart from
/// its own cache: a peer that caches nothing for itself still serves the
/// copies a primary asked it to hold).
pub const HOT_COPY_BYTES: u64 = 64 << 20;

/// Settings of this peer's requests.
#[derive(Clone, Debug)]
pub struct SpaceClientConfig {
    /// Requests waiting for an answer at once; more are refused with
    /// [`SpaceError::Busy`].
    pub max_pending: usize,
    /// A request unanswered this long is sent again (same id).
    pub resend_after: Duration,
    /// First wait before retrying a home that cannot answer now; doubles up
    /// to `backoff_max`.
    pub backoff_initial: Duration,
    /// Longest wait between retries.
    pub backoff_max: Duration,
    /// Redirects followed in a row before backing off.
    pub max_redirects: u32,
    /// Namespace generations remembered.
    pub max_cached_namespaces: usize,
    /// Locks held here whose leases are renewed.
    pub max_held_locks: usize,
    /// Bytes of object copies kept for cached reads; the least recently
    /// used go first.
    pub cache_bytes: u64,
    /// Object copies kept at most.
    pub max_cached_objects: usize,
    /// A copy older than this is checked against its home (in the
    /// background) when it is read.
    pub revalidate_after: Duration,
}

impl Default for SpaceClientConfig {
    fn default() -> Self {
        SpaceClientConfig {
            max_pending: 4096,
            resend_after: Duration::from_secs(2),
            backoff_initial: Duration::from_millis(10),
            backoff_max: Duration::from_millis(400),
            max_redirects: 8,
            max_cached_namespaces: 1024,
            max_held_locks: 4096,
            cache_bytes: 64 << 20,
            max_cached_objects: 16_384,
            revalidate_after: Duration::from_millis(100),
        }
    }
}

/// A lock this peer held and lost.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LockLost {
    /// The object.
    pub key: ObjectKey,
    /// The grant's token.
    pub token: u64,
    /// Why it was lost.
    pub why: SpaceError,
}

/// What the client side wants done.
#[derive(Debug)]
pub(super) enum ClientOutput<P> {
    /// Send a request to `to`, or to the closest peer of `partition` when
    /// `None`.
    Send {
        partition: PartitionId,
        to: Option<P>,
        id: RequestId,
        generation: u64,
        op: SpaceOp,
    },
    /// A request of the caller is answered.
    Answer {
        id: RequestId,
        result: Result<SpaceReply, SpaceError>,
    },
    /// A held lock's renewal was refused.
    LockLost(LockLost),
}

/// Where a request is.
#[derive(Clone, Debug)]
enum Stage {
    /// Asking the namespace's home for its generation.
    Resolve,
    /// The operation itself, under this generation.
    Op(u64),
}

/// Who wants the answer.
#[derive(Clone, Debug)]
enum Caller {
    /// The caller of [`Client::request`].
    User,
    /// This client, renewing the lock with this token.
    Renewal(u64),
    /// This client, purging one partition for the destruction of a
    /// namespace the caller asked with this id.
    Purge(RequestId),
    /// This client, checking its copy of an object against the home.
    Revalidate,
}

/// A copy of an object kept for cached reads.
struct Cached {
    /// The object as last seen (`None`: absent).
    object: Option<Object>,
    /// The namespace generation it was read under.
    generation: u64,
    /// When the home last confirmed it (or sent it).
    checked: Instant,
    /// Its key in the use order.
    used: u64,
    validating: bool,
}

/// A copy of a hot object its primary pushed here, answering other peers'
/// cached reads until it lapses.
struct HotCopy {
    object: Option<Object>,
    generation: u64,
    until: Instant,
}

/// Bytes a kept copy of `object` is counted for (the value and a fixed
/// overhead).
fn copy_bytes(object: &Option<Object>) -> u64 {
    object.as_ref().map_or(0, |o| o.value.len() as u64) + 64
}

impl HotCopy {
    fn bytes(&self) -> u64 {
        copy_bytes(&self.object)
    }
}

impl Cached {
    fn bytes(&self) -> u64 {
        copy_bytes(&self.object)
    }
}

struct Pending<P> {
    caller: Caller,
    op: SpaceOp,
    stage: Stage,
    /// Id of the current stage on the wire (kept across resends).
    wire: RequestId,
    deadline: Instant,
    started: Instant,
    /// When to send again.
    retry_at: Instant,
    target: Option<P>,
    /// The peer every send goes to, whatever the partition (a shard
    /// holder).
    pinned: Option<P>,
    redirects: u32,
    backoff: Duration,
    /// Why the home last said it could not answer, for the error at the
    /// deadline.
    refused: Option<String>,
}

/// Longest reason of a refusal kept for the timeout's message (the text
/// comes from another peer).
const MAX_REFUSAL_CHARS: usize = 200;

/// A lock held here.
struct Held {
    key: ObjectKey,
    lease: Duration,
    renew_at: Instant,
    renewing: bool,
}

/// This peer's requests.
pub(super) struct Client<P> {
    config: SpaceClientConfig,
    session: u64,
    next_seq: u64,
    pending: BTreeMap<RequestId, Pending<P>>,
    /// Wire id → the request's id.
    by_wire: BTreeMap<RequestId, RequestId>,
    generations: BTreeMap<String, u64>,
    held: BTreeMap<u64, Held>,
    /// Destructions waiting for their purges: partitions left, and the
    /// answer so far.
    purges: BTreeMap<RequestId, (u16, Result<SpaceReply, SpaceError>)>,
    /// Copies of objects for cached reads, and their use order.
    cache: BTreeMap<ObjectKey, Cached>,
    cache_order: BTreeMap<u64, ObjectKey>,
    cache_used: u64,
    cached_bytes: u64,
    /// Where hot objects have copies besides their homes, until when.
    hot_holders: BTreeMap<ObjectKey, (Vec<P>, Instant)>,
    /// Hot copies held here for other peers, and their bytes.
    hot_copies: BTreeMap<ObjectKey, HotCopy>,
    hot_copy_bytes: u64,
    outputs: VecDeque<ClientOutput<P>>,
}

impl<P: Clone + PartialEq> Client<P> {
    pub(super) fn new(config: SpaceClientConfig, session: u64) -> Self {
        Client {
            config,
            session,
            next_seq: 1,
            pending: BTreeMap::new(),
            by_wire: BTreeMap::new(),
            generations: BTreeMap::new(),
            held: BTreeMap::new(),
            purges: BTreeMap::new(),
            cache: BTreeMap::new(),
            cache_order: BTreeMap::new(),
            cache_used: 0,
            cached_bytes: 0,
            hot_holders: BTreeMap::new(),
            hot_copies: BTreeMap::new(),
            hot_copy_bytes: 0,
            outputs: VecDeque::new(),
        }
    }

    pub(super) fn pending(&self) -> usize {
        self.pending.len()
    }

    fn next_id(&mut self) -> RequestId {
        let id = RequestId {
            session: self.session,
            seq: self.next_seq,
        };
        self.next_seq += 1;
        id
    }

    /// A request of the caller: sent to the partition's primary, or with
    /// `to`, to that peer itself and resent there until its deadline (a
    /// shard operation).
    pub(super) fn request(
        &mut self,
        now: Instant,
        op: SpaceOp,
        timeout: Duration,
        to: Option<P>,
    ) -> Result<RequestId, SpaceError> {
        self.admit()?;
        let id = self.next_id();
        self.start(now, id, Caller::User, op, timeout, to);
        Ok(id)
    }

    /// Refuses a new request while [`SpaceClientConfig::max_pending`] wait.
    fn admit(&self) -> Result<(), SpaceError> {
        if self.pending.len() >= self.config.max_pending {
            return Err(SpaceError::Busy {
                max: self.config.max_pending,
            });
        }
        Ok(())
    }

    /// A cached read of `key`: answered at once from the copy kept here
    /// (`true`), else asked of any replica (`false`).
    pub(super) fn read_cached(
        &mut self,
        now: Instant,
        key: ObjectKey,
        timeout: Duration,
    ) -> Result<(RequestId, bool), SpaceError> {
        self.admit()?;
        let id = self.next_id();
        let generation = match key.namespace.as_str() {
            GLOBAL => Some(0),
            ns => self.generations.get(ns).copied(),
        };
        let copy = self
            .cache
            .get(&key)
            .filter(|c| Some(c.generation) == generation);
        let Some(copy) = copy else {
            self.start(
                now,
                id,
                Caller::User,
                SpaceOp::ReadReplica { key },
                timeout,
                None,
            );
            return Ok((id, false));
        };
        let result = Ok(SpaceReply::Value(copy.object.clone()));
        let stale = now.saturating_duration_since(copy.checked) >= self.config.revalidate_after;
        let version = copy.object.as_ref().map_or(0, |o| o.version);
        let validating = copy.validating;
        self.touch(&key);
        self.outputs.push_back(ClientOutput::Answer { id, result });
        if stale && !validating {
            if let Some(c) = self.cache.get_mut(&key) {
                c.validating = true;
            }
            let check = self.next_id();
            let op = SpaceOp::Validate { key, version };
            self.start(
                now,
                check,
                Caller::Revalidate,
                op,
                self.config.resend_after * 2,
                None,
            );
        }
        Ok((id, true))
    }

    /// Marks a copy as just used.
    fn touch(&mut self, key: &ObjectKey) {
        self.cache_used += 1;
        if let Some(c) = self.cache.get_mut(key) {
            self.cache_order.remove(&c.used);
            c.used = self.cache_used;
            self.cache_order.insert(c.used, key.clone());
        }
    }

    /// Keeps a copy of `key` as the home confirmed it at `checked`.
    fn keep_copy(
        &mut self,
        key: ObjectKey,
        object: Option<Object>,
        generation: u64,
        checked: Instant,
    ) {
        self.drop_copy(&key);
        let copy = Cached {
            object,
            generation,
            checked,
            used: 0,
            validating: false,
        };
        if copy.bytes() > self.config.cache_bytes / 4 {
            return;
        }
        self.cached_bytes += copy.bytes();
        self.cache.insert(key.clone(), copy);
        self.touch(&key);
        while self.cached_bytes > self.config.cache_bytes
            || self.cache.len() > self.config.max_cached_objects
        {
            let Some((_, oldest)) = self.cache_order.pop_first() else {
                break;
            };
            if let Some(c) = self.cache.remove(&oldest) {
                self.cached_bytes -= c.bytes();
            }
        }
    }

    pub(super) fn drop_copy(&mut self, key: &ObjectKey) {
        if let Some(c) = self.cache.remove(key) {
            self.cached_bytes -= c.bytes();
            self.cache_order.remove(&c.used);
        }
    }

    /// Keeps a hot copy its primary pushed here, answering other peers'
    /// cached reads with it until `until`.
    pub(super) fn keep_hot_copy(
        &mut self,
        key: ObjectKey,
        object: Option<Object>,
        generation: u64,
        now: Instant,
        until: Instant,
    ) {
        self.keep_copy(key.clone(), object.clone(), generation, now);
        if let Some(old) = self.hot_copies.remove(&key) {
            self.hot_copy_bytes -= old.bytes();
        }
        let copy = HotCopy {
            object,
            generation,
            until,
        };
        let no_room = |client: &Self| {
            client.hot_copies.len() >= MAX_HOT_COPIES
                || client.hot_copy_bytes + copy.bytes() > HOT_COPY_BYTES
        };
        if no_room(self) {
            // Make room from lapsed copies only: live ones were promised.
            let lapsed: Vec<ObjectKey> = self
                .hot_copies
                .iter()
                .filter(|(_, c)| c.until <= now)
                .map(|(k, _)| k.clone())
                .collect();
            for k in lapsed {
                if let Some(c) = self.hot_copies.remove(&k) {
                    self.hot_copy_bytes -= c.bytes();
                }
            }
            if no_room(self) {
                return;
            }
        }
        self.hot_copy_bytes += copy.bytes();
        self.hot_copies.insert(key, copy);
    }

    /// The hot copy of `key` this peer may answer others with, if any.
    pub(super) fn hot_copy(
        &self,
        key: &ObjectKey,
        generation: u64,
        now: Instant,
    ) -> Option<Option<Object>> {
        self.hot_copies
            .get(key)
            .filter(|c| c.generation == generation && c.until > now)
            .map(|c| c.object.clone())
    }

    /// Copies of hot object `key` are also at `holders` until `until`.
    pub(super) fn hot_holders(&mut self, key: ObjectKey, holders: Vec<P>, until: Instant) {
        if self.hot_holders.len() >= MAX_HOT_HOLDERS && !self.hot_holders.contains_key(&key) {
            self.hot_holders.pop_first();
        }
        self.hot_holders.insert(key, (holders, until));
    }

    /// The peers holding hot copies of `key` besides its home, if known.
    pub(super) fn holders_of(&self, key: &ObjectKey, now: Instant) -> Vec<P> {
        self.hot_holders
            .get(key)
            .filter(|(_, until)| *until > now)
            .map(|(h, _)| h.clone())
            .unwrap_or_default()
    }

    /// Copies of objects kept here, and their bytes.
    pub(super) fn cached(&self) -> (usize, u64) {
        (self.cache.len(), self.cached_bytes)
    }

    /// What an answer to a caller's request says about the object, kept as
    /// the copy for cached reads.
    fn learn(
        &mut self,
        op: &SpaceOp,
        generation: u64,
        checked: Instant,
        result: &Result<SpaceReply, SpaceError>,
    ) {
        match (op, result) {
            (
                SpaceOp::Get { key } | SpaceOp::ReadReplica { key },
                Ok(SpaceReply::Value(object)),
            ) => self.keep_copy(key.clone(), object.clone(), generation, checked),
            (
                SpaceOp::Put {
                    key, value, tags, ..
                },
                Ok(SpaceReply::Written { version, .. }),
            ) => {
                let object = Object {
                    value: value.clone(),
                    version: *version,
                    tags: tags.clone(),
                };
                self.keep_copy(key.clone(), Some(object), generation, checked)
            }
            (SpaceOp::Delete { key, .. }, Ok(SpaceReply::Written { .. })) => {
                self.keep_copy(key.clone(), None, generation, checked)
            }
            (SpaceOp::Put { key, .. } | SpaceOp::Delete { key, .. }, Err(_)) => {
                // It may or may not have been applied.
                self.drop_copy(key)
            }
            _ => {}
        }
    }

    fn start(
        &mut self,
        now: Instant,
        id: RequestId,
        caller: Caller,
        op: SpaceOp,
        timeout: Duration,
        pinned: Option<P>,
    ) {
        let stage = match op.object_namespace() {
            Some(GLOBAL) => Stage::Op(0),
            Some(ns) => match self.generations.get(ns) {
                Some(generation) => Stage::Op(*generation),
                None => Stage::Resolve,
            },
            None => Stage::Op(0),
        };
        let wire = self.next_id();
        self.by_wire.insert(wire, id);
        self.pending.insert(
            id,
            Pending {
                caller,
                op,
                stage,
                wire,
                deadline: now + timeout,
                started: now,
                retry_at: now,
                target: None,
                pinned,
                redirects: 0,
                backoff: self.config.backoff_initial,
                refused: None,
            },
        );
        self.send(now, id);
    }

    /// Sends (again) the current stage of request `id`.
    fn send(&mut self, now: Instant, id: RequestId) {
        let resend = self.config.resend_after;
        let Some(p) = self.pending.get_mut(&id) else {
            return;
        };
        p.retry_at = now + resend;
        let (partition, generation, op) = match &p.stage {
            Stage::Resolve => {
                let name = p.op.object_namespace().unwrap_or(GLOBAL).to_string();
                (namespace_partition(&name), 0, SpaceOp::Namespace { name })
            }
            Stage::Op(generation) => (p.op.partition(), *generation, p.op.clone()),
        };
        self.outputs.push_back(ClientOutput::Send {
            partition,
            to: p.pinned.clone().or_else(|| p.target.clone()),
            id: p.wire,
            generation,
            op,
        });
    }

    /// The request with wire id `wire` went to `to`.
    pub(super) fn sent(&mut self, wire: RequestId, to: P) {
        if let Some(p) = self
            .by_wire
            .get(&wire)
            .and_then(|id| self.pending.get_mut(id))
        {
            p.target = Some(to);
        }
    }

    /// Retries request `id` after its backoff, at the closest peer.
    fn back_off(&mut self, now: Instant, id: RequestId) {
        let max = self.config.backoff_max;
        if let Some(p) = self.pending.get_mut(&id) {
            p.retry_at = now + p.backoff;
            p.backoff = (p.backoff * 2).min(max);
            p.target = None;
            p.redirects = 0;
        }
    }

    pub(super) fn redirect(&mut self, now: Instant, from: &P, wire: RequestId, primary: Option<P>) {
        let Some(&id) = self.by_wire.get(&wire) else {
            return;
        };
        let max_redirects = self.config.max_redirects;
        let Some(p) = self.pending.get_mut(&id) else {
            return;
        };
        match primary {
            Some(primary) if primary != *from && p.redirects < max_redirects => {
                p.redirects += 1;
                p.target = Some(primary);
                self.send(now, id);
            }
            _ => self.back_off(now, id),
        }
    }

    /// `peer` was declared dead: requests waiting at it are asked again at
    /// once (of the partition's closest live peer, which knows or learns
    /// its new primary), and those pinned to it fail.
    pub(super) fn peer_gone(&mut self, now: Instant, peer: &P) {
        let waiting: Vec<RequestId> = self
            .pending
            .iter()
            .filter(|(_, p)| p.target.as_ref() == Some(peer) || p.pinned.as_ref() == Some(peer))
            .map(|(_, p)| p.wire)
            .collect();
        for wire in waiting {
            self.send_failed(now, wire, peer);
        }
    }

    pub(super) fn send_failed(&mut self, now: Instant, wire: RequestId, to: &P) {
        let Some(&id) = self.by_wire.get(&wire) else {
            return;
        };
        let Some(p) = self.pending.get(&id) else {
            return;
        };
        if p.pinned.as_ref() == Some(to) {
            // Only that peer can answer, and it is gone.
            let why = "the peer asked is unreachable (dead, or left)".to_string();
            return self.finish(id, Err(SpaceError::Unavailable(why)));
        }
        if p.target.as_ref() == Some(to) {
            self.back_off(now, id);
        }
    }

    pub(super) fn reply(
        &mut self,
        now: Instant,
        _from: &P,
        wire: RequestId,
        result: Result<SpaceReply, SpaceError>,
    ) {
        let Some(&id) = self.by_wire.get(&wire) else {
            return;
        };
        let Some(p) = self.pending.get_mut(&id) else {
            return;
        };
        if let Err(refusal @ (SpaceError::Unavailable(_) | SpaceError::Busy { .. })) = &result {
            // The home cannot take it now: asked again until the deadline.
            p.refused = Some(
                refusal
                    .to_string()
                    .chars()
                    .take(MAX_REFUSAL_CHARS)
                    .collect(),
            );
            return self.back_off(now, id);
        }
        match (&p.stage, result) {
            (Stage::Resolve, Ok(SpaceReply::Namespace { generation })) => {
                let name = p.op.object_namespace().unwrap_or(GLOBAL).to_string();
                self.remember_generation(name, generation);
                let new_wire = self.next_id();
                self.by_wire.remove(&wire);
                self.by_wire.insert(new_wire, id);
                if let Some(p) = self.pending.get_mut(&id) {
                    p.stage = Stage::Op(generation);
                    p.wire = new_wire;
                    p.target = None;
                    p.redirects = 0;
                }
                self.send(now, id);
            }
            (Stage::Resolve, Ok(other)) => self.finish(
                id,
                Err(SpaceError::Unavailable(format!(
                    "the namespace's home answered {other:?}"
                ))),
            ),
            (_, result) => self.finish(id, result),
        }
    }

    fn remember_generation(&mut self, name: String, generation: u64) {
        if self.generations.len() >= self.config.max_cached_namespaces {
            self.generations.pop_first();
        }
        self.generations.insert(name, generation);
    }

    /// Request `id` has its answer.
    fn finish(&mut self, id: RequestId, result: Result<SpaceReply, SpaceError>) {
        let Some(p) = self.pending.remove(&id) else {
            return;
        };
        self.by_wire.remove(&p.wire);
        if let (Some(ns), Err(SpaceError::UnknownNamespace(_))) = (p.op.object_namespace(), &result)
        {
            self.generations.remove(ns);
        }
        if let (SpaceOp::CreateNamespace { name } | SpaceOp::DestroyNamespace { name }, _) =
            (&p.op, &result)
        {
            self.generations.remove(name);
            if let (SpaceOp::CreateNamespace { .. }, Ok(SpaceReply::Namespace { generation })) =
                (&p.op, &result)
            {
                self.remember_generation(name.clone(), *generation);
            }
        }
        let generation = match p.stage {
            Stage::Op(generation) => generation,
            Stage::Resolve => 0,
        };
        if matches!(p.caller, Caller::User) && matches!(p.stage, Stage::Op(_)) {
            self.learn(&p.op, generation, p.started, &result);
        }
        match p.caller {
            Caller::Revalidate => {
                let SpaceOp::Validate { key, .. } = &p.op else {
                    return;
                };
                match result {
                    Ok(SpaceReply::Unchanged) => {
                        if let Some(c) = self.cache.get_mut(key) {
                            c.checked = c.checked.max(p.started);
                            c.validating = false;
                        }
                    }
                    Ok(SpaceReply::Value(object)) => {
                        self.keep_copy(key.clone(), object, generation, p.started)
                    }
                    _ => self.drop_copy(key),
                }
            }
            Caller::User => {
                match (&p.op, &result) {
                    (SpaceOp::Lock { key, .. }, Ok(SpaceReply::Granted { token, lease_ms }))
                        if self.held.len() < self.config.max_held_locks =>
                    {
                        let lease = Duration::from_millis(*lease_ms);
                        // Renewed at a third of the lease, measured from
                        // when the request was first sent.
                        self.held.insert(
                            *token,
                            Held {
                                key: key.clone(),
                                lease,
                                renew_at: p.started + lease / 3,
                                renewing: false,
                            },
                        );
                    }
                    (SpaceOp::Unlock { token, .. }, _) => {
                        self.held.remove(token);
                    }
                    (
                        SpaceOp::DestroyNamespace { name },
                        Ok(SpaceReply::Namespace { generation }),
                    ) => {
                        // Answered once every partition dropped the
                        // objects: a client still holding the old
                        // generation is then refused everywhere.
                        let timeout = p.deadline.saturating_duration_since(p.started);
                        self.purges
                            .insert(id, (super::PARTITIONS, Ok(SpaceReply::Done)));
                        for partition in 0..super::PARTITIONS {
                            let op = SpaceOp::Purge {
                                namespace: name.clone(),
                                partition,
                                generation: *generation,
                            };
                            let purge = self.next_id();
                            self.start(p.started, purge, Caller::Purge(id), op, timeout, None);
                        }
                        return;
                    }
                    _ => {}
                }
                self.outputs.push_back(ClientOutput::Answer { id, result });
            }
            Caller::Purge(parent) => {
                let Some((left, answer)) = self.purges.get_mut(&parent) else {
                    return;
                };
                *left -= 1;
                if let (Ok(_), Err(error)) = (&answer, result) {
                    *answer = Err(error);
                }
                if *left == 0 {
                    if let Some((_, result)) = self.purges.remove(&parent) {
                        self.outputs
                            .push_back(ClientOutput::Answer { id: parent, result });
                    }
                }
            }
            Caller::Renewal(token) => match result {
                Ok(_) => {
                    if let Some(h) = self.held.get_mut(&token) {
                        h.renewing = false;
                        h.renew_at = p.started + h.lease / 3;
                    }
                }
                Err(why) => {
                    if let Some(h) = self.held.remove(&token) {
                        self.outputs.push_back(ClientOutput::LockLost(LockLost {
                            key: h.key,
                            token,
                            why,
                        }));
                    }
                }
            },
        }
    }

    pub(super) fn forget_lock(&mut self, token: u64) {
        self.held.remove(&token);
    }

    pub(super) fn handle_timeout(&mut self, now: Instant) {
        let expired: Vec<(RequestId, Duration)> = self
            .pending
            .iter()
            .filter(|(_, p)| p.deadline <= now)
            .map(|(id, p)| (*id, now.saturating_duration_since(p.started)))
            .collect();
        for (id, waited) in expired {
            let why = match self.pending.get(&id).map(|p| (&p.stage, &p.refused)) {
                Some((_, Some(refused))) => format!("last answer: {refused}"),
                Some((Stage::Resolve, None)) => "resolving the namespace".to_string(),
                _ => "the partition's primary did not answer".to_string(),
            };
            self.finish(
                id,
                Err(SpaceError::Timeout {
                    waited_ms: waited.as_millis() as u64,
                    why,
                }),
            );
        }
        let due: Vec<RequestId> = self
            .pending
            .iter()
            .filter(|(_, p)| p.retry_at <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            self.send(now, id);
        }
        let renew: Vec<u64> = self
            .held
            .iter()
            .filter(|(_, h)| !h.renewing && h.renew_at <= now)
            .map(|(t, _)| *t)
            .collect();
        for token in renew {
            let Some(h) = self.held.get_mut(&token) else {
                continue;
            };
            h.renewing = true;
            let op = SpaceOp::Renew {
                key: h.key.clone(),
                token,
            };
            // A renewal that cannot be answered within half the lease is
            // too late to be of use.
            let timeout = h.lease / 2;
            let id = self.next_id();
            self.start(now, id, Caller::Renewal(token), op, timeout, None);
        }
    }

    pub(super) fn poll_timeout(&self) -> Option<Instant> {
        let requests = self.pending.values().map(|p| p.retry_at.min(p.deadline));
        let renewals = self
            .held
            .values()
            .filter(|h| !h.renewing)
            .map(|h| h.renew_at);
        requests.chain(renewals).min()
    }

    pub(super) fn poll(&mut self) -> Option<ClientOutput<P>> {
        self.outputs.pop_front()
    }
}
