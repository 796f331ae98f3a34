//! One partition of the object space as a [`Replicated`] state: its
//! objects, locks, namespace records and client sessions, and how the
//! primary applies an operation to them. Backups apply the resulting
//! changes as data.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::{
    Condition, Listed, LockMode, Object, ObjectKey, PartitionId, Predicate, Query, RequestId,
    SpaceError, SpaceOp, SpaceReply, TagValue, Test, GLOBAL, MAX_LIST_ENTRIES, PARTITIONS,
};
use crate::home::Replicated;

/// Replies kept per client session for retried writes.
const REPLIES_PER_SESSION: usize = 64;
/// Sessions kept per partition; the least recently used goes first.
const MAX_SESSIONS: usize = 4096;
/// Readers of one object at once.
const MAX_READERS: usize = 64;

/// An object with the namespace generation it was written under.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stored {
    /// The object.
    pub object: Object,
    /// Generation of its namespace when written: it is visible only to
    /// operations under the same generation.
    pub generation: u64,
}

/// A lock grant.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Grant {
    /// The holder's peer, by its position in the overlay's key space (the
    /// space core's `key_of`; fixed in size, whatever the peer type).
    /// Replicated with the grant, so that whichever member is primary when
    /// that peer is declared dead, or when the role changes hands, knows
    /// whose lock it is.
    pub holder: [u8; 32],
    /// The holder's client session.
    pub session: u64,
    /// The fencing token.
    pub token: u64,
    /// The lease.
    pub lease_ms: u64,
    /// When the lease runs out, by this member's clock (set on grant and
    /// renewal by the primary, and on receipt by a backup: a member's view
    /// of the expiry is never earlier than the holder's own).
    #[serde(skip)]
    expires: Option<Instant>,
}

impl PartialEq for Grant {
    fn eq(&self, other: &Self) -> bool {
        let fields = |g: &Grant| (g.holder, g.session, g.token, g.lease_ms);
        fields(self) == fields(other)
    }
}

impl Grant {
    fn lease(&self) -> Duration {
        Duration::from_millis(self.lease_ms)
    }

    fn expired(&self, now: Instant) -> bool {
        self.expires.is_some_and(|at| at <= now)
    }

    /// Starts the lease where no expiry is known (received from the
    /// network or read from disk): in full, from now.
    fn start_lease(&mut self, now: Instant) {
        if self.expires.is_none() {
            self.expires = Some(now + self.lease());
        }
    }
}

/// The locks of one object: one writer or many readers.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Lock {
    /// The write lock's grant.
    pub writer: Option<Grant>,
    /// The read locks' grants.
    pub readers: Vec<Grant>,
}

impl Lock {
    fn is_free(&self) -> bool {
        self.writer.is_none() && self.readers.is_empty()
    }

    fn grant_count(&self) -> usize {
        usize::from(self.writer.is_some()) + self.readers.len()
    }

    fn grants_mut(&mut self) -> impl Iterator<Item = &mut Grant> {
        self.writer.iter_mut().chain(self.readers.iter_mut())
    }
}

/// A namespace's record at its home.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NamespaceRecord {
    /// The current (or, if destroyed, last) generation.
    pub generation: u64,
    /// Whether it exists now.
    pub live: bool,
}

/// The replies of one client session, for its retried writes.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Session {
    /// Reply by request number.
    pub replies: BTreeMap<u64, Result<SpaceReply, SpaceError>>,
    /// When the session was last used (the partition's use counter).
    pub used: u64,
}

/// One change of a partition: what a delta carries and what is written to
/// disk.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Change {
    /// An object written (`Some`) or deleted.
    Object(ObjectKey, Option<Stored>),
    /// An object's locks (`None`: none held).
    Lock(ObjectKey, Option<Lock>),
    /// A namespace's record.
    Namespace(String, NamespaceRecord),
    /// Up to which generation a namespace's objects were purged.
    Purged(String, u64),
    /// A session's replies (`None`: evicted).
    Session(u64, Option<Session>),
    /// The next fencing token.
    NextToken(u64),
}

impl Change {
    /// This change as a row of its partition on disk: the row's key, and
    /// its bytes (`None`: the row is deleted). Rows read back with
    /// [`Change::from_row`] and replayed in any order rebuild the
    /// partition ([`Partition::from_changes`]).
    pub fn row(&self) -> Result<(Vec<u8>, Option<Vec<u8>>), postcard::Error> {
        let (kind, name, present) = match self {
            Change::Object(key, stored) => (0u8, postcard::to_stdvec(key)?, stored.is_some()),
            Change::Lock(key, lock) => (1, postcard::to_stdvec(key)?, lock.is_some()),
            Change::Namespace(name, _) => (2, name.as_bytes().to_vec(), true),
            Change::Purged(name, _) => (3, name.as_bytes().to_vec(), true),
            Change::Session(session, replies) => {
                (4, session.to_be_bytes().to_vec(), replies.is_some())
            }
            Change::NextToken(_) => (5, Vec::new(), true),
        };
        let mut key = Vec::with_capacity(1 + name.len());
        key.push(kind);
        key.extend_from_slice(&name);
        let value = if present {
            Some(postcard::to_stdvec(self)?)
        } else {
            None
        };
        Ok((key, value))
    }

    /// A change read back from a row's bytes; `None` if they do not decode.
    pub fn from_row(bytes: &[u8]) -> Option<Change> {
        postcard::from_bytes(bytes).ok()
    }
}

/// What names a change, so a key changed twice is sent once.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Dirty {
    Object(ObjectKey),
    Lock(ObjectKey),
    Namespace(String),
    Purged(String),
    Session(u64),
    NextToken,
}

/// The whole partition, as sent to a new backup.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PartitionSnapshot {
    /// Which partition.
    pub id: PartitionId,
    /// Everything in it, as changes from empty.
    pub changes: Vec<Change>,
}

/// What a primary's update carries.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PartitionDelta {
    /// The changes (none for a read barrier).
    pub changes: Vec<Change>,
}

/// What to write to disk for a partition since the last time.
#[derive(Clone, Debug, PartialEq)]
pub enum Unpersisted {
    /// Replace everything stored for the partition by these changes from
    /// empty.
    Whole(Vec<Change>),
    /// Apply these changes.
    Changes(Vec<Change>),
}

/// What a revocation of grants did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Revoked {
    /// The objects whose locks changed (their waiters may now be granted).
    pub objects: Vec<ObjectKey>,
    /// The grants revoked (each reader of an object counts).
    pub grants: u64,
}

/// The outcome of applying an operation on the primary.
#[derive(Clone, Debug, PartialEq)]
pub enum Applied {
    /// Answer this (once the update holding it is committed).
    Reply(Result<SpaceReply, SpaceError>),
    /// A lock that cannot be granted now: keep the request waiting.
    Wait,
}

/// One partition of the object space.
#[derive(Clone, Debug)]
pub struct Partition {
    id: PartitionId,
    objects: BTreeMap<ObjectKey, Stored>,
    locks: BTreeMap<ObjectKey, Lock>,
    namespaces: BTreeMap<String, NamespaceRecord>,
    purged: BTreeMap<String, u64>,
    sessions: BTreeMap<u64, Session>,
    next_token: u64,
    uses: u64,
    stored_bytes: u64,
    /// Names of the objects by (namespace, tag, value): derived from the
    /// objects (never replicated), so a search is a range scan.
    index: BTreeMap<(String, String, TagValue), BTreeSet<String>>,
    /// Changed since the last delta.
    dirty: BTreeSet<Dirty>,
    /// A read waits for the next update to be committed.
    barrier: bool,
    /// Changed since last written to disk.
    unpersisted: BTreeSet<Dirty>,
    /// Replaced as a whole since last written to disk.
    replaced: bool,
}

impl Partition {
    /// An empty partition.
    pub fn new(id: PartitionId) -> Self {
        Partition {
            id,
            objects: BTreeMap::new(),
            locks: BTreeMap::new(),
            namespaces: BTreeMap::new(),
            purged: BTreeMap::new(),
            sessions: BTreeMap::new(),
            next_token: 1,
            uses: 0,
            stored_bytes: 0,
            index: BTreeMap::new(),
            dirty: BTreeSet::new(),
            barrier: false,
            unpersisted: BTreeSet::new(),
            replaced: true,
        }
    }

    /// Which partition this is.
    pub fn id(&self) -> PartitionId {
        self.id
    }

    /// Objects held.
    pub fn object_count(&self) -> usize {
        self.objects.len()
    }

    /// Bytes of object values held.
    pub fn stored_bytes(&self) -> u64 {
        self.stored_bytes
    }

    /// Locks held.
    pub fn lock_count(&self) -> usize {
        self.locks.len()
    }

    /// The partition rebuilt from changes from empty (a snapshot, or what
    /// was read back from disk); `None` if they are inconsistent.
    pub fn from_changes(now: Instant, id: PartitionId, changes: Vec<Change>) -> Option<Self> {
        if id >= PARTITIONS {
            return None;
        }
        let mut partition = Partition::new(id);
        for change in changes {
            partition.apply_change(now, change)?;
        }
        partition.dirty.clear();
        partition.unpersisted.clear();
        partition.replaced = true;
        Some(partition)
    }

    /// Everything in the partition as changes from empty.
    pub fn all_changes(&self) -> Vec<Change> {
        let mut changes = vec![Change::NextToken(self.next_token)];
        changes.extend(
            self.namespaces
                .iter()
                .map(|(n, r)| Change::Namespace(n.clone(), r.clone())),
        );
        changes.extend(
            self.purged
                .iter()
                .map(|(n, g)| Change::Purged(n.clone(), *g)),
        );
        changes.extend(
            self.sessions
                .iter()
                .map(|(s, r)| Change::Session(*s, Some(r.clone()))),
        );
        changes.extend(
            self.objects
                .iter()
                .map(|(k, o)| Change::Object(k.clone(), Some(o.clone()))),
        );
        changes.extend(
            self.locks
                .iter()
                .map(|(k, l)| Change::Lock(k.clone(), Some(l.clone()))),
        );
        changes
    }

    /// What changed since last written to disk (clears it).
    pub fn take_unpersisted(&mut self) -> Option<Unpersisted> {
        if std::mem::take(&mut self.replaced) {
            self.unpersisted.clear();
            return Some(Unpersisted::Whole(self.all_changes()));
        }
        if self.unpersisted.is_empty() {
            return None;
        }
        let dirty = std::mem::take(&mut self.unpersisted);
        Some(Unpersisted::Changes(
            dirty.into_iter().map(|d| self.change_of(d)).collect(),
        ))
    }

    /// Whether anything is waiting to be written to disk.
    pub fn has_unpersisted(&self) -> bool {
        self.replaced || !self.unpersisted.is_empty()
    }

    fn change_of(&self, dirty: Dirty) -> Change {
        match dirty {
            Dirty::Object(key) => {
                let stored = self.objects.get(&key).cloned();
                Change::Object(key, stored)
            }
            Dirty::Lock(key) => {
                let lock = self.locks.get(&key).cloned();
                Change::Lock(key, lock)
            }
            Dirty::Namespace(name) => {
                let record = self
                    .namespaces
                    .get(&name)
                    .cloned()
                    .unwrap_or(NamespaceRecord {
                        generation: 0,
                        live: false,
                    });
                Change::Namespace(name, record)
            }
            Dirty::Purged(name) => {
                let generation = self.purged.get(&name).copied().unwrap_or(0);
                Change::Purged(name, generation)
            }
            Dirty::Session(session) => {
                let replies = self.sessions.get(&session).cloned();
                Change::Session(session, replies)
            }
            Dirty::NextToken => Change::NextToken(self.next_token),
        }
    }

    fn mark(&mut self, dirty: Dirty) {
        self.unpersisted.insert(dirty.clone());
        self.dirty.insert(dirty);
    }

    /// Applies one change as data and names it; `None` if it cannot be (a
    /// token going backwards).
    fn apply_change(&mut self, now: Instant, change: Change) -> Option<Dirty> {
        let dirty = match change {
            Change::Object(key, stored) => {
                if let Some(old) = self.objects.remove(&key) {
                    self.stored_bytes -= old.object.value.len() as u64;
                    self.unindex(&key, &old.object.tags);
                }
                if let Some(stored) = stored {
                    self.stored_bytes += stored.object.value.len() as u64;
                    self.reindex(&key, &stored.object.tags);
                    self.objects.insert(key.clone(), stored);
                }
                Dirty::Object(key)
            }
            Change::Lock(key, lock) => {
                match lock {
                    Some(mut lock) if !lock.is_free() && lock.readers.len() <= MAX_READERS => {
                        for grant in lock.grants_mut() {
                            grant.start_lease(now);
                        }
                        self.locks.insert(key.clone(), lock);
                    }
                    _ => {
                        self.locks.remove(&key);
                    }
                }
                Dirty::Lock(key)
            }
            Change::Namespace(name, record) => {
                self.namespaces.insert(name.clone(), record);
                Dirty::Namespace(name)
            }
            Change::Purged(name, generation) => {
                self.purged.insert(name.clone(), generation);
                Dirty::Purged(name)
            }
            Change::Session(session, replies) => {
                match replies {
                    Some(replies) if replies.replies.len() <= REPLIES_PER_SESSION => {
                        self.uses = self.uses.max(replies.used);
                        self.sessions.insert(session, replies);
                    }
                    _ => {
                        self.sessions.remove(&session);
                    }
                }
                Dirty::Session(session)
            }
            Change::NextToken(next) => {
                if next < self.next_token {
                    return None;
                }
                self.next_token = next;
                Dirty::NextToken
            }
        };
        Some(dirty)
    }

    /// Asks for an update round before the next reply is released (a read
    /// is answered only once a majority confirmed this primary still leads).
    pub fn barrier(&mut self) {
        self.barrier = true;
    }

    /// The reply kept for a retried write, if any.
    pub fn kept_reply(&self, id: RequestId) -> Option<Result<SpaceReply, SpaceError>> {
        self.sessions
            .get(&id.session)?
            .replies
            .get(&id.seq)
            .cloned()
    }

    /// The stored object at `key` with its generation, visible or not.
    pub fn stored(&self, key: &ObjectKey) -> Option<&Stored> {
        self.objects.get(key)
    }

    /// Answers a read from this replica as it is, without a barrier (a
    /// cached read, on any member).
    pub fn read_replica(&self, key: &ObjectKey, generation: u64) -> Result<SpaceReply, SpaceError> {
        if self.destroyed(&key.namespace, generation) {
            return Err(SpaceError::UnknownNamespace(key.namespace.clone()));
        }
        Ok(SpaceReply::Value(self.visible(key, generation).cloned()))
    }

    /// Applies `op` (already checked), asked by the peer at overlay key
    /// `asker`, under namespace `generation` on the primary: a lock granted
    /// is held by `asker`. A write's reply is kept for its session.
    pub fn apply(
        &mut self,
        now: Instant,
        id: RequestId,
        asker: [u8; 32],
        generation: u64,
        op: &SpaceOp,
    ) -> Applied {
        if op.writes() {
            if let Some(kept) = self.kept_reply(id) {
                self.barrier();
                return Applied::Reply(kept);
            }
        } else {
            self.barrier();
        }
        let result = match op {
            SpaceOp::Get { key } | SpaceOp::ReadReplica { key } | SpaceOp::Validate { key, .. }
                if self.destroyed(&key.namespace, generation) =>
            {
                Err(SpaceError::UnknownNamespace(key.namespace.clone()))
            }
            SpaceOp::Get { key } | SpaceOp::ReadReplica { key } => {
                Ok(SpaceReply::Value(self.visible(key, generation).cloned()))
            }
            SpaceOp::PutShard { .. } | SpaceOp::GetShard { .. } | SpaceOp::DropShards { .. } => {
                Err(SpaceError::InvalidShard(
                    "shards are kept by their holders, not by a partition".into(),
                ))
            }
            SpaceOp::Validate { key, version } => {
                let current = self.visible(key, generation);
                if current.map_or(0, |o| o.version) == *version {
                    Ok(SpaceReply::Unchanged)
                } else {
                    Ok(SpaceReply::Value(current.cloned()))
                }
            }
            SpaceOp::List { namespace, .. } | SpaceOp::Search { namespace, .. }
                if self.destroyed(namespace, generation) =>
            {
                Err(SpaceError::UnknownNamespace(namespace.clone()))
            }
            SpaceOp::Put {
                key,
                value,
                tags,
                condition,
                token,
            } => self.write(now, key, generation, *condition, *token, |version| {
                Some(Object {
                    value: value.clone(),
                    version,
                    tags: tags.clone(),
                })
            }),
            SpaceOp::Delete {
                key,
                condition,
                token,
            } => self.write(now, key, generation, *condition, *token, |_| None),
            SpaceOp::List { namespace, .. } => Ok(self.list(namespace, generation)),
            SpaceOp::Search {
                namespace, query, ..
            } => Ok(self.search(namespace, generation, query)),
            SpaceOp::Lock {
                key,
                mode,
                lease_ms,
            } => match self.lock(now, key, *mode, (asker, id.session), *lease_ms) {
                Some(reply) => Ok(reply),
                None => return Applied::Wait,
            },
            SpaceOp::Renew { key, token } => self.renew(now, key, *token),
            SpaceOp::Unlock { key, token } => self.unlock(now, key, *token),
            SpaceOp::CreateNamespace { name } => self.create_namespace(now, name),
            SpaceOp::DestroyNamespace { name } => self.destroy_namespace(now, name),
            SpaceOp::Namespace { name } => self.namespace(name),
            SpaceOp::Purge {
                namespace,
                generation,
                ..
            } => Ok(self.purge(now, namespace, *generation)),
        };
        if op.writes() {
            self.keep_reply(now, id, result.clone());
        }
        Applied::Reply(result)
    }

    /// Whether `generation` of `namespace` was destroyed here.
    fn destroyed(&self, namespace: &str, generation: u64) -> bool {
        self.purged.get(namespace).is_some_and(|g| generation <= *g)
    }

    fn visible(&self, key: &ObjectKey, generation: u64) -> Option<&Object> {
        self.objects
            .get(key)
            .filter(|s| s.generation == generation && !self.destroyed(&key.namespace, generation))
            .map(|s| &s.object)
    }

    fn write(
        &mut self,
        now: Instant,
        key: &ObjectKey,
        generation: u64,
        condition: Condition,
        token: Option<u64>,
        new: impl FnOnce(u64) -> Option<Object>,
    ) -> Result<SpaceReply, SpaceError> {
        if self.destroyed(&key.namespace, generation) {
            return Err(SpaceError::UnknownNamespace(key.namespace.clone()));
        }
        if let Some(lock) = self.locks.get(key) {
            match token {
                Some(token) if lock.writer.as_ref().is_some_and(|w| w.token == token) => {}
                Some(token) => return Err(SpaceError::StaleToken { token }),
                None => return Err(SpaceError::Locked),
            }
        } else if let Some(token) = token {
            return Err(SpaceError::StaleToken { token });
        }
        let (current, replaced) = self
            .visible(key, generation)
            .map_or((0, super::Tags::new()), |o| (o.version, o.tags.clone()));
        if let Condition::Version(expected) = condition {
            if expected != current {
                return Err(SpaceError::VersionMismatch { current });
            }
        }
        let version = current + 1;
        let stored = new(version).map(|object| Stored { object, generation });
        self.change(now, Change::Object(key.clone(), stored));
        Ok(SpaceReply::Written { version, replaced })
    }

    /// Applies a change made on the primary, marking it for the delta and
    /// the disk.
    fn change(&mut self, now: Instant, change: Change) {
        if let Some(dirty) = self.apply_change(now, change) {
            self.mark(dirty);
        }
    }

    fn reindex(&mut self, key: &ObjectKey, tags: &super::Tags) {
        for (tag, value) in tags {
            self.index
                .entry((key.namespace.clone(), tag.clone(), value.clone()))
                .or_default()
                .insert(key.name.clone());
        }
    }

    fn unindex(&mut self, key: &ObjectKey, tags: &super::Tags) {
        for (tag, value) in tags {
            let entry = (key.namespace.clone(), tag.clone(), value.clone());
            if let Some(names) = self.index.get_mut(&entry) {
                names.remove(&key.name);
                if names.is_empty() {
                    self.index.remove(&entry);
                }
            }
        }
    }

    /// The names the index gives for one predicate, if it narrows the
    /// search (a presence test does not).
    fn indexed(&self, namespace: &str, predicate: &Predicate) -> Option<BTreeSet<String>> {
        use std::ops::Bound;
        let at = |v: &TagValue| (namespace.to_string(), predicate.tag.clone(), v.clone());
        let (low, high) = match &predicate.test {
            Test::Exists => return None,
            Test::Eq(v) => (Bound::Included(at(v)), Bound::Included(at(v))),
            Test::Prefix(p) => (
                Bound::Included(at(&TagValue::Text(p.clone()))),
                Bound::Unbounded,
            ),
            Test::Range { min, max } => {
                let map = |b: &Bound<TagValue>| match b {
                    Bound::Included(v) => Bound::Included(at(v)),
                    Bound::Excluded(v) => Bound::Excluded(at(v)),
                    Bound::Unbounded => Bound::Unbounded,
                };
                (map(min), map(max))
            }
        };
        let mut names = BTreeSet::new();
        for ((ns, tag, value), found) in self.index.range((low, high)) {
            if ns != namespace || *tag != predicate.tag || !predicate.test.passes(Some(value)) {
                // Past the tag (or, for a prefix, past the texts that
                // start with it): the index is sorted, nothing follows.
                if ns != namespace
                    || *tag != predicate.tag
                    || matches!(predicate.test, Test::Prefix(_))
                {
                    break;
                }
                continue;
            }
            names.extend(found.iter().cloned());
        }
        Some(names)
    }

    fn search(&self, namespace: &str, generation: u64, query: &Query) -> SpaceReply {
        let candidates = query
            .predicates
            .iter()
            .find_map(|p| self.indexed(namespace, p));
        let Some(names) = candidates else {
            // Nothing to narrow by: scan the namespace.
            let SpaceReply::Listed { entries, truncated } = self.list(namespace, generation) else {
                return SpaceReply::Listed {
                    entries: Vec::new(),
                    truncated: false,
                };
            };
            let entries: Vec<Listed> = entries
                .into_iter()
                .filter(|e| query.matches(&e.tags))
                .collect();
            return SpaceReply::Listed { entries, truncated };
        };
        let mut entries = Vec::new();
        let mut truncated = false;
        for name in names {
            let key = ObjectKey::new(namespace, name);
            let Some(object) = self.visible(&key, generation) else {
                continue;
            };
            if !query.matches(&object.tags) {
                continue;
            }
            if entries.len() == MAX_LIST_ENTRIES {
                truncated = true;
                break;
            }
            entries.push(Listed {
                name: key.name,
                version: object.version,
                size: object.value.len() as u64,
                tags: object.tags.clone(),
            });
        }
        SpaceReply::Listed { entries, truncated }
    }

    fn list(&self, namespace: &str, generation: u64) -> SpaceReply {
        let start = ObjectKey::new(namespace, "");
        let mut entries = Vec::new();
        let mut truncated = false;
        if !self.destroyed(namespace, generation) {
            for (key, stored) in self.objects.range(start..) {
                if key.namespace != namespace {
                    break;
                }
                if stored.generation != generation {
                    continue;
                }
                if entries.len() == MAX_LIST_ENTRIES {
                    truncated = true;
                    break;
                }
                entries.push(Listed {
                    name: key.name.clone(),
                    version: stored.object.version,
                    size: stored.object.value.len() as u64,
                    tags: stored.object.tags.clone(),
                });
            }
        }
        SpaceReply::Listed { entries, truncated }
    }

    /// Grants a lock to (`holder`, `session`) if it is free in that mode
    /// (`None`: wait).
    fn lock(
        &mut self,
        now: Instant,
        key: &ObjectKey,
        mode: LockMode,
        (holder, session): ([u8; 32], u64),
        lease_ms: u64,
    ) -> Option<SpaceReply> {
        let mut lock = self.locks.get(key).cloned().unwrap_or_default();
        let free = match mode {
            LockMode::Write => lock.is_free(),
            LockMode::Read => lock.writer.is_none() && lock.readers.len() < MAX_READERS,
        };
        if !free {
            return None;
        }
        let token = self.next_token;
        self.change(now, Change::NextToken(token + 1));
        let grant = Grant {
            holder,
            session,
            token,
            lease_ms,
            expires: Some(now + Duration::from_millis(lease_ms)),
        };
        match mode {
            LockMode::Write => lock.writer = Some(grant),
            LockMode::Read => lock.readers.push(grant),
        }
        self.change(now, Change::Lock(key.clone(), Some(lock)));
        Some(SpaceReply::Granted { token, lease_ms })
    }

    fn renew(
        &mut self,
        now: Instant,
        key: &ObjectKey,
        token: u64,
    ) -> Result<SpaceReply, SpaceError> {
        let Some(mut lock) = self.locks.get(key).cloned() else {
            return Err(SpaceError::NotHeld { token });
        };
        let Some(grant) = lock
            .grants_mut()
            .find(|g| g.token == token && !g.expired(now))
        else {
            return Err(SpaceError::NotHeld { token });
        };
        grant.expires = Some(now + grant.lease());
        self.change(now, Change::Lock(key.clone(), Some(lock)));
        Ok(SpaceReply::Renewed)
    }

    fn unlock(
        &mut self,
        now: Instant,
        key: &ObjectKey,
        token: u64,
    ) -> Result<SpaceReply, SpaceError> {
        let Some(mut lock) = self.locks.get(key).cloned() else {
            return Err(SpaceError::NotHeld { token });
        };
        if lock.writer.as_ref().is_some_and(|w| w.token == token) {
            lock.writer = None;
        } else if let Some(i) = lock.readers.iter().position(|g| g.token == token) {
            lock.readers.remove(i);
        } else {
            return Err(SpaceError::NotHeld { token });
        }
        self.change(now, Change::Lock(key.clone(), Some(lock)));
        Ok(SpaceReply::Released)
    }

    /// Revokes every lease that ran out by `now`.
    pub fn expire_leases(&mut self, now: Instant) -> Revoked {
        self.revoke(now, |g| g.expired(now))
    }

    /// Revokes every grant whose holder (its peer's overlay key) `dead`
    /// names: a peer declared dead, or one a new primary does not know
    /// alive.
    pub fn revoke_held_by(&mut self, now: Instant, dead: impl Fn(&[u8; 32]) -> bool) -> Revoked {
        self.revoke(now, |g| dead(&g.holder))
    }

    fn revoke(&mut self, now: Instant, doomed: impl Fn(&Grant) -> bool) -> Revoked {
        let objects: Vec<ObjectKey> = self
            .locks
            .iter()
            .filter(|(_, l)| l.writer.iter().chain(&l.readers).any(&doomed))
            .map(|(k, _)| k.clone())
            .collect();
        let mut grants = 0;
        for key in &objects {
            if let Some(mut lock) = self.locks.get(key).cloned() {
                let held = lock.grant_count();
                lock.writer = lock.writer.filter(|g| !doomed(g));
                lock.readers.retain(|g| !doomed(g));
                grants += held.saturating_sub(lock.grant_count()) as u64;
                self.change(now, Change::Lock(key.clone(), Some(lock)));
            }
        }
        Revoked { objects, grants }
    }

    /// When the next lease runs out, if any lock is held.
    pub fn next_expiry(&self) -> Option<Instant> {
        self.locks
            .values()
            .flat_map(|l| l.writer.iter().chain(&l.readers))
            .filter_map(|g| g.expires)
            .min()
    }

    fn create_namespace(&mut self, now: Instant, name: &str) -> Result<SpaceReply, SpaceError> {
        let record = self.namespaces.get(name);
        if record.is_some_and(|r| r.live) {
            return Err(SpaceError::NamespaceExists(name.to_string()));
        }
        let generation = record.map_or(1, |r| r.generation + 1);
        self.change(
            now,
            Change::Namespace(
                name.to_string(),
                NamespaceRecord {
                    generation,
                    live: true,
                },
            ),
        );
        Ok(SpaceReply::Namespace { generation })
    }

    fn destroy_namespace(&mut self, now: Instant, name: &str) -> Result<SpaceReply, SpaceError> {
        match self.namespaces.get(name) {
            Some(record) if record.live => {
                let generation = record.generation;
                self.change(
                    now,
                    Change::Namespace(
                        name.to_string(),
                        NamespaceRecord {
                            generation,
                            live: false,
                        },
                    ),
                );
                Ok(SpaceReply::Namespace { generation })
            }
            _ => Err(SpaceError::UnknownNamespace(name.to_string())),
        }
    }

    fn namespace(&self, name: &str) -> Result<SpaceReply, SpaceError> {
        if name == GLOBAL {
            return Ok(SpaceReply::Namespace { generation: 0 });
        }
        match self.namespaces.get(name) {
            Some(record) if record.live => Ok(SpaceReply::Namespace {
                generation: record.generation,
            }),
            _ => Err(SpaceError::UnknownNamespace(name.to_string())),
        }
    }

    fn purge(&mut self, now: Instant, namespace: &str, generation: u64) -> SpaceReply {
        if self.destroyed(namespace, generation) {
            return SpaceReply::Done;
        }
        self.change(now, Change::Purged(namespace.to_string(), generation));
        let start = ObjectKey::new(namespace, "");
        let gone: Vec<ObjectKey> = self
            .objects
            .range(start..)
            .take_while(|(k, _)| k.namespace == namespace)
            .filter(|(_, s)| s.generation <= generation)
            .map(|(k, _)| k.clone())
            .collect();
        for key in gone {
            self.change(now, Change::Object(key, None));
        }
        SpaceReply::Done
    }

    fn keep_reply(&mut self, now: Instant, id: RequestId, reply: Result<SpaceReply, SpaceError>) {
        self.uses += 1;
        let mut session = self.sessions.get(&id.session).cloned().unwrap_or_default();
        session.used = self.uses;
        session.replies.insert(id.seq, reply);
        while session.replies.len() > REPLIES_PER_SESSION {
            session.replies.pop_first();
        }
        self.change(now, Change::Session(id.session, Some(session)));
        if self.sessions.len() > MAX_SESSIONS {
            let oldest = self
                .sessions
                .iter()
                .min_by_key(|(_, s)| s.used)
                .map(|(id, _)| *id);
            if let Some(oldest) = oldest {
                self.change(now, Change::Session(oldest, None));
            }
        }
    }
}

impl Replicated for Partition {
    type Snapshot = PartitionSnapshot;
    type Delta = PartitionDelta;
    type Effect = super::server::Answer;

    fn snapshot(&self, _now: Instant) -> PartitionSnapshot {
        PartitionSnapshot {
            id: self.id,
            changes: self.all_changes(),
        }
    }

    fn restore(now: Instant, snapshot: PartitionSnapshot) -> Option<Self> {
        Partition::from_changes(now, snapshot.id, snapshot.changes)
    }

    fn apply_snapshot(&mut self, now: Instant, snapshot: PartitionSnapshot) -> bool {
        if snapshot.id != self.id {
            return false;
        }
        match Partition::restore(now, snapshot) {
            Some(state) => {
                *self = state;
                true
            }
            None => false,
        }
    }

    fn take_delta(&mut self, force: bool) -> Option<PartitionDelta> {
        if self.dirty.is_empty() && !self.barrier && !force {
            return None;
        }
        self.barrier = false;
        let dirty = std::mem::take(&mut self.dirty);
        Some(PartitionDelta {
            changes: dirty.into_iter().map(|d| self.change_of(d)).collect(),
        })
    }

    fn changes_nothing(delta: &PartitionDelta) -> bool {
        delta.changes.is_empty()
    }

    fn apply_delta(&mut self, now: Instant, delta: PartitionDelta) -> bool {
        // Checked first: a delta is applied whole or not at all.
        let backwards = delta
            .changes
            .iter()
            .any(|c| matches!(c, Change::NextToken(next) if *next < self.next_token));
        if backwards {
            return false;
        }
        for change in delta.changes {
            match self.apply_change(now, change) {
                Some(dirty) => {
                    self.unpersisted.insert(dirty);
                }
                None => return false,
            }
        }
        true
    }

    fn clear_primary_state(&mut self) {
        self.barrier = false;
        self.dirty.clear();
    }

    fn durable(&self) -> bool {
        true
    }
}

/// Requests waiting for a lock, per object, in arrival order (kept by the
/// primary only; a client whose primary changed asks again).
pub(super) type Waiters<W> = BTreeMap<ObjectKey, VecDeque<W>>;
