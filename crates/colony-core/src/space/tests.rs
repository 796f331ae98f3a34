//! The space core in virtual time: a few cores on a small network with a
//! controllable clock, crashes (memory lost, disk kept) and restarts.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::partition::{Change, Unpersisted};
use super::*;

fn key_of(p: &u32) -> [u8; 32] {
    *blake3::hash(&p.to_le_bytes()).as_bytes()
}

/// What a peer wrote to disk for one partition.
#[derive(Clone, Default)]
struct DiskPartition {
    term: u64,
    seq: u64,
    size: u8,
    members: Vec<u32>,
    config: Vec<u32>,
    changes: Vec<Change>,
}

struct Peer {
    space: Option<Space<u32>>,
    disk: BTreeMap<PartitionId, DiskPartition>,
    shards_on_disk: BTreeMap<ShardId, (ObjectKey, Shard)>,
    restarts: u64,
}

struct Net {
    now: Instant,
    began: Instant,
    peers: Vec<Peer>,
    /// (delivery time, order) → (from, to, message).
    queue: BTreeMap<(Instant, u64), (u32, u32, SpaceMsg<u32>)>,
    order: u64,
    answers: BTreeMap<(u32, RequestId), Result<SpaceReply, SpaceError>>,
    lost: Vec<(u32, LockLost)>,
    latency: Duration,
    /// While set, writes reach the peers' disks but are never confirmed
    /// durable: the confirmations wait here.
    stalled_disks: Option<Vec<(u32, PartitionId, u64, u64)>>,
}

fn config() -> SpaceConfig {
    SpaceConfig {
        max_object_bytes: 1024,
        ..SpaceConfig::default()
    }
}

impl Net {
    fn new(n: u32) -> Net {
        Net::with_config(n, config())
    }

    fn with_config(n: u32, config: SpaceConfig) -> Net {
        let now = Instant::now();
        let mut net = Net {
            now,
            began: now,
            peers: (0..n)
                .map(|id| Peer {
                    space: Some(Space::new(
                        id,
                        config.clone(),
                        key_of,
                        1000 + u64::from(id),
                        7,
                    )),
                    disk: BTreeMap::new(),
                    shards_on_disk: BTreeMap::new(),
                    restarts: 0,
                })
                .collect(),
            queue: BTreeMap::new(),
            order: 0,
            answers: BTreeMap::new(),
            lost: Vec::new(),
            latency: Duration::from_millis(1),
            stalled_disks: None,
        };
        net.views();
        // Homes are created only once a peer's view has formed.
        net.run_for(config.create_after_start);
        net
    }

    fn start_time(&self) -> Instant {
        self.began
    }

    fn up(&self) -> Vec<u32> {
        (0..self.peers.len() as u32)
            .filter(|p| self.peers[*p as usize].space.is_some())
            .collect()
    }

    /// Every running peer sees every other running peer.
    fn views(&mut self) {
        let up = self.up();
        let now = self.now;
        for p in &up {
            if let Some(space) = self.peers[*p as usize].space.as_mut() {
                space.set_members(now, up.iter().map(|p| (*p, true, false)));
            }
        }
        for p in up {
            self.drain(p);
        }
    }

    fn drain(&mut self, p: u32) {
        let now = self.now;
        while let Some(out) = self.peers[p as usize].space.as_mut().and_then(Space::poll) {
            match out {
                SpaceOutput::Send { to, msg, .. } => {
                    // The network does not carry a peer's messages to
                    // itself: the core must handle them in place.
                    assert_ne!(to, p, "peer {p} sent itself {}", describe(&msg));
                    if std::env::var("SPACE_TRACE").is_ok() {
                        eprintln!("{:?} {p}->{to} {}", now - self.start_time(), describe(&msg));
                    }
                    self.order += 1;
                    self.queue
                        .insert((now + self.latency, self.order), (p, to, msg));
                }
                SpaceOutput::Persist {
                    partition,
                    term,
                    seq,
                    size,
                    members,
                    config,
                    data,
                } => {
                    let disk = self.peers[p as usize].disk.entry(partition).or_default();
                    match data {
                        Unpersisted::Whole(changes) => disk.changes = changes,
                        Unpersisted::Changes(changes) => disk.changes.extend(changes),
                    }
                    (disk.term, disk.seq, disk.size) = (term, seq, size);
                    (disk.members, disk.config) = (members, config);
                    if let Some(stalled) = self.stalled_disks.as_mut() {
                        stalled.push((p, partition, term, seq));
                    } else if let Some(space) = self.peers[p as usize].space.as_mut() {
                        space.handle(
                            now,
                            SpaceInput::Durable {
                                partition,
                                term,
                                seq,
                            },
                        );
                    }
                }
                SpaceOutput::Unpersist { partition } => {
                    self.peers[p as usize].disk.remove(&partition);
                }
                SpaceOutput::PersistShard { key, id, shard } => {
                    let peer = &mut self.peers[p as usize];
                    peer.shards_on_disk.insert(id, (key, shard));
                    if let Some(space) = peer.space.as_mut() {
                        space.handle(now, SpaceInput::ShardDurable { id });
                    }
                }
                SpaceOutput::UnpersistShards { ids } => {
                    for id in ids {
                        self.peers[p as usize].shards_on_disk.remove(&id);
                    }
                }
                SpaceOutput::Answer { id, result } => {
                    self.answers.insert((p, id), result);
                }
                SpaceOutput::LockLost(lost) => self.lost.push((p, lost)),
            }
        }
    }

    /// Runs one event (a delivery or a timer); `false` if nothing is left.
    fn step(&mut self, until: Instant) -> bool {
        let next_msg = self.queue.keys().next().map(|(at, _)| *at);
        let next_timer = self
            .peers
            .iter()
            .filter_map(|p| p.space.as_ref().and_then(Space::poll_timeout))
            .min();
        let Some(at) = [next_msg, next_timer].into_iter().flatten().min() else {
            return false;
        };
        if at > until {
            return false;
        }
        self.now = self.now.max(at);
        if next_msg == Some(at) {
            let Some((_, (from, to, msg))) = self.queue.pop_first() else {
                return false;
            };
            let now = self.now;
            if let Some(space) = self.peers[to as usize].space.as_mut() {
                space.handle(now, SpaceInput::Message { from, msg });
                self.drain(to);
            } else if let SpaceMsg::Request { id, .. } = msg {
                // The transport tells the sender the peer is gone.
                if let Some(space) = self.peers[from as usize].space.as_mut() {
                    space.handle(now, SpaceInput::SendFailed { to, id: Some(id) });
                    self.drain(from);
                }
            }
        } else {
            for p in self.up() {
                let now = self.now;
                let due = self.peers[p as usize]
                    .space
                    .as_ref()
                    .and_then(Space::poll_timeout)
                    .is_some_and(|t| t <= now);
                if due {
                    if let Some(space) = self.peers[p as usize].space.as_mut() {
                        space.handle_timeout(now);
                    }
                    self.drain(p);
                }
            }
        }
        true
    }

    fn run_for(&mut self, d: Duration) {
        let until = self.now + d;
        while self.step(until) {}
        self.now = until;
    }

    /// Asks `op` at peer `p` and runs until it is answered (virtual 60 s at
    /// most).
    fn call(&mut self, p: u32, op: SpaceOp) -> Result<SpaceReply, SpaceError> {
        let id = self.start(p, op, Duration::from_secs(30));
        self.wait(p, id)
    }

    fn start(&mut self, p: u32, op: SpaceOp, timeout: Duration) -> RequestId {
        let now = self.now;
        let id = self.peers[p as usize]
            .space
            .as_mut()
            .expect("peer up")
            .request(now, op, timeout)
            .expect("request accepted");
        self.drain(p);
        id
    }

    /// Asks `op` of peer `to` itself, from peer `p`, and runs until it is
    /// answered.
    fn call_at(&mut self, p: u32, to: u32, op: SpaceOp) -> Result<SpaceReply, SpaceError> {
        let now = self.now;
        let id = self.peers[p as usize]
            .space
            .as_mut()
            .expect("peer up")
            .request_at(now, to, op, Duration::from_secs(5))
            .expect("request accepted");
        self.drain(p);
        self.wait(p, id)
    }

    fn wait(&mut self, p: u32, id: RequestId) -> Result<SpaceReply, SpaceError> {
        let until = self.now + Duration::from_secs(60);
        while !self.answers.contains_key(&(p, id)) {
            assert!(self.step(until), "request {id} at peer {p} never answered");
        }
        self.answers.remove(&(p, id)).expect("answered")
    }

    /// Confirms the writes held while the disks were stalled, and stops
    /// holding them.
    fn unstall_disks(&mut self) {
        let now = self.now;
        for (p, partition, term, seq) in self.stalled_disks.take().unwrap_or_default() {
            if let Some(space) = self.peers[p as usize].space.as_mut() {
                let durable = SpaceInput::Durable {
                    partition,
                    term,
                    seq,
                };
                space.handle(now, durable);
            }
            self.drain(p);
        }
    }

    fn crash(&mut self, p: u32) {
        self.peers[p as usize].space = None;
        self.queue.retain(|_, (from, to, _)| *from != p && *to != p);
        self.views();
    }

    /// Restarts `p` from its disk.
    fn restart(&mut self, p: u32) {
        let peer = &mut self.peers[p as usize];
        peer.restarts += 1;
        let mut space = Space::new(p, config(), key_of, 5000 + peer.restarts, 9);
        for (partition, disk) in &peer.disk {
            let state = Partition::from_changes(self.now, *partition, disk.changes.clone())
                .expect("disk state is consistent");
            assert!(space.restore(
                self.now,
                state,
                disk.size,
                disk.members.clone(),
                disk.config.clone(),
                (disk.term, disk.seq),
            ));
        }
        for (id, (key, shard)) in &peer.shards_on_disk {
            space.restore_shard(key.clone(), *id, shard.clone());
        }
        peer.space = Some(space);
        self.views();
    }

    fn primary_of(&self, partition: PartitionId) -> Option<u32> {
        self.up().into_iter().find(|p| {
            self.peers[*p as usize]
                .space
                .as_ref()
                .and_then(|s| s.homes().get(&partition))
                .is_some_and(|h| h.is_primary())
        })
    }
}

fn put(key: &ObjectKey, value: &[u8]) -> SpaceOp {
    SpaceOp::Put {
        key: key.clone(),
        value: value.to_vec(),
        tags: Tags::new(),
        condition: Condition::Always,
        token: None,
    }
}

fn get(key: &ObjectKey) -> SpaceOp {
    SpaceOp::Get { key: key.clone() }
}

fn value_of(reply: Result<SpaceReply, SpaceError>) -> Option<Vec<u8>> {
    match reply {
        Ok(SpaceReply::Value(object)) => object.map(|o| o.value),
        other => panic!("expected a value, got {other:?}"),
    }
}

fn lock(key: &ObjectKey, mode: LockMode, lease_ms: u64) -> SpaceOp {
    SpaceOp::Lock {
        key: key.clone(),
        mode,
        lease_ms,
    }
}

fn token_of(reply: Result<SpaceReply, SpaceError>) -> u64 {
    match reply {
        Ok(SpaceReply::Granted { token, .. }) => token,
        other => panic!("expected a grant, got {other:?}"),
    }
}

#[test]
fn objects_are_written_read_compared_and_deleted_from_any_peer() {
    let mut net = Net::new(4);
    let a = ObjectKey::new(GLOBAL, "a");
    assert_eq!(
        net.call(0, put(&a, b"one")),
        Ok(SpaceReply::Written {
            version: 1,
            replaced: Default::default()
        })
    );
    assert_eq!(value_of(net.call(3, get(&a))), Some(b"one".to_vec()));
    let cas = |expected, value: &[u8]| SpaceOp::Put {
        key: a.clone(),
        value: value.to_vec(),
        tags: Tags::new(),
        condition: Condition::Version(expected),
        token: None,
    };
    assert_eq!(
        net.call(2, cas(1, b"two")),
        Ok(SpaceReply::Written {
            version: 2,
            replaced: Default::default()
        })
    );
    assert_eq!(
        net.call(1, cas(1, b"three")),
        Err(SpaceError::VersionMismatch { current: 2 })
    );
    assert_eq!(value_of(net.call(1, get(&a))), Some(b"two".to_vec()));
    let delete = SpaceOp::Delete {
        key: a.clone(),
        condition: Condition::Always,
        token: None,
    };
    assert_eq!(
        net.call(3, delete),
        Ok(SpaceReply::Written {
            version: 3,
            replaced: Default::default()
        })
    );
    assert_eq!(value_of(net.call(0, get(&a))), None);
    // Every partition home has three members and one primary.
    let partition = a.partition();
    let holders = net
        .up()
        .into_iter()
        .filter(|p| {
            net.peers[*p as usize]
                .space
                .as_ref()
                .is_some_and(|s| s.homes().contains_key(&partition))
        })
        .count();
    assert_eq!(holders, 3);
}

#[test]
fn a_namespace_lists_its_objects_and_its_destruction_hides_them() {
    let mut net = Net::new(3);
    let x = ObjectKey::new("results", "x");
    assert_eq!(
        net.call(0, put(&x, b"1")),
        Err(SpaceError::UnknownNamespace("results".into()))
    );
    let create = SpaceOp::CreateNamespace {
        name: "results".into(),
    };
    assert_eq!(
        net.call(1, create.clone()),
        Ok(SpaceReply::Namespace { generation: 1 })
    );
    assert_eq!(
        net.call(2, create.clone()),
        Err(SpaceError::NamespaceExists("results".into()))
    );
    for name in ["x", "y", "z"] {
        let key = ObjectKey::new("results", name);
        assert!(net.call(0, put(&key, name.as_bytes())).is_ok());
    }
    // The same name in another namespace is another object.
    assert!(net.call(0, put(&ObjectKey::new(GLOBAL, "x"), b"g")).is_ok());
    let mut names = Vec::new();
    for partition in 0..PARTITIONS {
        let list = SpaceOp::List {
            namespace: "results".into(),
            partition,
        };
        match net.call(2, list) {
            Ok(SpaceReply::Listed { entries, .. }) => {
                names.extend(entries.into_iter().map(|e| e.name))
            }
            other => panic!("listing failed: {other:?}"),
        }
    }
    names.sort();
    assert_eq!(names, ["x", "y", "z"]);
    let destroy = SpaceOp::DestroyNamespace {
        name: "results".into(),
    };
    assert!(net.call(1, destroy).is_ok());
    // A peer that knew the old generation is told the namespace is gone.
    assert_eq!(
        net.call(0, get(&x)),
        Err(SpaceError::UnknownNamespace("results".into()))
    );
    assert_eq!(
        net.call(0, create),
        Ok(SpaceReply::Namespace { generation: 2 })
    );
    assert_eq!(
        value_of(net.call(0, get(&x))),
        None,
        "old objects stay hidden"
    );
    assert_eq!(
        value_of(net.call(0, get(&ObjectKey::new(GLOBAL, "x")))),
        Some(b"g".to_vec())
    );
}

#[test]
fn a_write_lock_excludes_writers_and_its_token_fences_writes() {
    let mut net = Net::new(3);
    let c = ObjectKey::new(GLOBAL, "counter");
    let t1 = token_of(net.call(0, lock(&c, LockMode::Write, 5_000)));
    // A second writer waits.
    let waiting = net.start(1, lock(&c, LockMode::Write, 5_000), Duration::from_secs(30));
    net.run_for(Duration::from_millis(500));
    assert!(!net.answers.contains_key(&(1, waiting)));
    // Writes without the token are refused while it is held.
    assert_eq!(net.call(2, put(&c, b"x")), Err(SpaceError::Locked));
    let with = |token| SpaceOp::Put {
        key: c.clone(),
        value: b"v".to_vec(),
        tags: Tags::new(),
        condition: Condition::Always,
        token: Some(token),
    };
    assert!(net.call(0, with(t1)).is_ok());
    let unlock = |token| SpaceOp::Unlock {
        key: c.clone(),
        token,
    };
    assert_eq!(net.call(0, unlock(t1)), Ok(SpaceReply::Released));
    let t2 = token_of(net.wait(1, waiting));
    assert!(t2 > t1, "fencing tokens rise");
    assert_eq!(
        net.call(0, with(t1)),
        Err(SpaceError::StaleToken { token: t1 })
    );
    assert_eq!(
        net.call(0, unlock(t1)),
        Err(SpaceError::NotHeld { token: t1 })
    );
    assert!(net.call(1, with(t2)).is_ok());
    // Readers share; a writer waits for them.
    assert_eq!(net.call(1, unlock(t2)), Ok(SpaceReply::Released));
    let r1 = token_of(net.call(0, lock(&c, LockMode::Read, 5_000)));
    let r2 = token_of(net.call(2, lock(&c, LockMode::Read, 5_000)));
    assert_ne!(r1, r2);
    let writer = net.start(1, lock(&c, LockMode::Write, 5_000), Duration::from_secs(30));
    net.run_for(Duration::from_millis(200));
    assert!(!net.answers.contains_key(&(1, writer)));
    assert!(net.call(0, unlock(r1)).is_ok());
    assert!(net.call(2, unlock(r2)).is_ok());
    assert!(token_of(net.wait(1, writer)) > r2);
}

#[test]
fn a_crashed_holders_lock_is_granted_again_once_it_is_declared_dead() {
    let mut net = Net::new(5);
    let c = ObjectKey::new(GLOBAL, "job-lock");
    let partition = c.partition();
    // The peers that crash are outside the partition's home, so their
    // crash does not also cost the home its primary.
    net.call(0, get(&c)).ok();
    let home: Vec<u32> = net
        .up()
        .into_iter()
        .filter(|p| {
            net.peers[*p as usize]
                .space
                .as_ref()
                .is_some_and(|s| s.homes().contains_key(&partition))
        })
        .collect();
    let outside: Vec<u32> = (0..5).filter(|p| !home.contains(p)).collect();
    let (holder, waiter_to_die) = (outside[0], outside[1]);
    let (other, last) = (home[0], home[1]);
    // Leases far longer than the test: only the death declarations free
    // the lock.
    let lease = 60_000;
    let t1 = token_of(net.call(holder, lock(&c, LockMode::Write, lease)));
    let waiting = net.start(
        other,
        lock(&c, LockMode::Write, lease),
        Duration::from_secs(30),
    );
    net.run_for(Duration::from_secs(2));
    assert!(!net.answers.contains_key(&(other, waiting)), "lease held");
    let crashed_at = net.now;
    net.crash(holder);
    let t2 = token_of(net.wait(other, waiting));
    assert!(t2 > t1);
    let waited = net.now - crashed_at;
    assert!(
        waited <= Duration::from_millis(100),
        "re-granted after {waited:?}"
    );
    // A waiter whose peer dies is dropped from the queue: the lock goes to
    // the next one when released.
    let doomed = net.start(
        waiter_to_die,
        lock(&c, LockMode::Write, lease),
        Duration::from_secs(30),
    );
    net.run_for(Duration::from_millis(100));
    net.crash(waiter_to_die);
    let _ = doomed;
    let next = net.start(
        last,
        lock(&c, LockMode::Write, lease),
        Duration::from_secs(30),
    );
    net.run_for(Duration::from_millis(100));
    let released = net.now;
    let unlock = SpaceOp::Unlock {
        key: c.clone(),
        token: t2,
    };
    assert_eq!(net.call(other, unlock), Ok(SpaceReply::Released));
    let t3 = token_of(net.wait(last, next));
    assert!(t3 > t2);
    let waited = net.now - released;
    assert!(
        waited <= Duration::from_millis(100),
        "granted after {waited:?}"
    );
    assert!(net.lost.is_empty());
}

/// The holder's own peer is the partition's primary, so no surviving
/// primary saw the lock asked for: the grant is replicated with its holder,
/// and the member that takes the primary role over revokes it as it is
/// elected instead of waiting for the lease.
#[test]
fn a_crashed_primarys_own_lock_is_granted_again_once_a_new_primary_is_elected() {
    let mut net = Net::new(5);
    let c = ObjectKey::new(GLOBAL, "job-lock");
    let partition = c.partition();
    net.call(0, get(&c)).ok();
    let holder = net.primary_of(partition).expect("a primary");
    let home: Vec<u32> = net
        .up()
        .into_iter()
        .filter(|p| {
            net.peers[*p as usize]
                .space
                .as_ref()
                .is_some_and(|s| s.homes().contains_key(&partition))
        })
        .collect();
    // The waiter is outside the home: whichever backup is elected, the
    // waiter's grant comes from that new primary.
    let waiter = (0..5).find(|p| !home.contains(p)).expect("a peer outside");
    // Leases far longer than the test: only revocation frees the lock.
    let lease = 60_000;
    let t1 = token_of(net.call(holder, lock(&c, LockMode::Write, lease)));
    let waiting = net.start(
        waiter,
        lock(&c, LockMode::Write, lease),
        Duration::from_secs(30),
    );
    net.run_for(Duration::from_secs(2));
    assert!(!net.answers.contains_key(&(waiter, waiting)), "lease held");
    let crashed_at = net.now;
    net.crash(holder);
    // The harness declares the crashed peer dead at once: what remains is
    // the election, and the new primary revokes the grant as it wins it.
    let successor = loop {
        if let Some(primary) = net.primary_of(partition) {
            break primary;
        }
        assert!(
            net.step(crashed_at + Duration::from_secs(10)),
            "no new primary elected"
        );
    };
    let elected = net.now - crashed_at;
    let space = net.peers[successor as usize].space.as_ref().expect("up");
    let locks = space
        .homes()
        .get(&partition)
        .map(|h| h.state().lock_count());
    assert_eq!(locks, Some(0), "grant kept by the new primary");
    assert_eq!(space.counters().revoked_locks, 1);
    // The waiter's request, waiting at the crashed primary, is sent again
    // as soon as the crash is declared (not after the client's 2 s resend
    // interval) and granted once the new primary is elected.
    let t2 = token_of(net.wait(waiter, waiting));
    assert!(t2 > t1);
    let waited = net.now - crashed_at;
    eprintln!("re-granted after {waited:?}, new primary elected after {elected:?}");
    assert!(
        waited <= elected + Duration::from_millis(500),
        "re-granted after {waited:?} (new primary elected after {elected:?})"
    );
    // The crashed holder's token is fenced off.
    let late = SpaceOp::Put {
        key: c.clone(),
        value: b"late".to_vec(),
        tags: Tags::new(),
        condition: Condition::Always,
        token: Some(t1),
    };
    assert_eq!(
        net.call(waiter, late),
        Err(SpaceError::StaleToken { token: t1 })
    );
}

/// A linearizable read takes an update round (the primary must still
/// lead), but one that changes nothing: members hold it without writing it
/// to disk, so reads do not wait for the disk. Writes still do.
#[test]
fn a_linearizable_read_does_not_wait_for_the_disk() {
    let mut net = Net::new(3);
    let a = ObjectKey::new(GLOBAL, "a");
    assert!(net.call(0, put(&a, b"v1")).is_ok());
    net.stalled_disks = Some(Vec::new());
    for at in 0..3 {
        assert_eq!(value_of(net.call(at, get(&a))), Some(b"v1".to_vec()));
    }
    let write = net.start(1, put(&a, b"v2"), Duration::from_secs(30));
    net.run_for(Duration::from_secs(1));
    assert!(
        !net.answers.contains_key(&(1, write)),
        "a write answered before it was on any disk"
    );
    net.unstall_disks();
    assert!(net.wait(1, write).is_ok());
    assert_eq!(value_of(net.call(2, get(&a))), Some(b"v2".to_vec()));
}

#[test]
fn a_paused_holder_loses_its_lock_and_its_late_write_is_refused() {
    let mut net = Net::new(3);
    let c = ObjectKey::new(GLOBAL, "paused");
    let t1 = token_of(net.call(0, lock(&c, LockMode::Write, 500)));
    // The holder stops renewing (as if paused): forget the lock locally.
    net.peers[0].space.as_mut().expect("up").forget_lock(t1);
    let t2 = token_of(net.call(1, lock(&c, LockMode::Write, 500)));
    assert!(t2 > t1);
    let late = SpaceOp::Put {
        key: c.clone(),
        value: b"late".to_vec(),
        tags: Tags::new(),
        condition: Condition::Always,
        token: Some(t1),
    };
    assert_eq!(net.call(0, late), Err(SpaceError::StaleToken { token: t1 }));
    assert_eq!(value_of(net.call(2, get(&c))), None);
}

#[test]
fn acknowledged_writes_survive_the_crash_of_a_minority_and_restarts() {
    let mut net = Net::new(5);
    let keys: Vec<ObjectKey> = (0..40)
        .map(|i| ObjectKey::new(GLOBAL, format!("k{i}")))
        .collect();
    for (i, key) in keys.iter().enumerate() {
        let at = (i % 5) as u32;
        assert!(net.call(at, put(key, format!("v{i}").as_bytes())).is_ok());
    }
    // Crash the primary of the first key's partition: a minority of its home.
    let primary = net.primary_of(keys[0].partition()).expect("a primary");
    net.crash(primary);
    let reader = (primary + 1) % 5;
    for (i, key) in keys.iter().enumerate() {
        assert_eq!(
            value_of(net.call(reader, get(key))),
            Some(format!("v{i}").into_bytes()),
            "{key} lost after the crash of {primary}"
        );
    }
    // Every peer restarted, one after the other, from its own disk.
    net.restart(primary);
    for p in 0..5 {
        net.crash(p);
        net.restart(p);
        net.run_for(Duration::from_secs(3));
    }
    // And all of them at once.
    for p in 0..5 {
        net.peers[p].space = None;
    }
    net.queue.clear();
    for p in 0..5 {
        net.restart(p);
    }
    for (i, key) in keys.iter().enumerate() {
        assert_eq!(
            value_of(net.call(3, get(key))),
            Some(format!("v{i}").into_bytes()),
            "{key} lost after restarts"
        );
    }
}

#[test]
fn a_write_delivered_twice_is_applied_once() {
    let mut net = Net::new(3);
    let c = ObjectKey::new(GLOBAL, "once");
    assert!(net.call(0, put(&c, b"0")).is_ok());
    let cas = SpaceOp::Put {
        key: c.clone(),
        value: b"1".to_vec(),
        tags: Tags::new(),
        condition: Condition::Version(1),
        token: None,
    };
    let id = net.start(1, cas, Duration::from_secs(30));
    // Copy the request in flight, as a duplicating network would.
    let copies: Vec<(u32, u32, SpaceMsg<u32>)> = net
        .queue
        .values()
        .filter(|(_, _, m)| matches!(m, SpaceMsg::Request { .. }))
        .cloned()
        .collect();
    assert!(!copies.is_empty());
    for (from, to, msg) in copies {
        net.order += 1;
        let at = net.now + Duration::from_millis(5);
        net.queue.insert((at, net.order), (from, to, msg));
    }
    assert_eq!(
        net.wait(1, id),
        Ok(SpaceReply::Written {
            version: 2,
            replaced: Default::default()
        })
    );
    net.run_for(Duration::from_millis(100));
    match net.call(2, get(&c)) {
        Ok(SpaceReply::Value(Some(o))) => assert_eq!(o.version, 2),
        other => panic!("{other:?}"),
    }
}

#[test]
fn bad_requests_are_refused_with_clear_errors() {
    let mut net = Net::new(2);
    let space = net.peers[0].space.as_mut().expect("up");
    let now = net.now;
    let big = put(&ObjectKey::new(GLOBAL, "big"), &[0u8; 2048]);
    assert_eq!(
        space.request(now, big, Duration::from_secs(1)),
        Err(SpaceError::TooLarge {
            size: 2048,
            max: 1024
        })
    );
    let empty = get(&ObjectKey::new(GLOBAL, ""));
    assert!(matches!(
        space.request(now, empty, Duration::from_secs(1)),
        Err(SpaceError::InvalidName(_))
    ));
    let forever = lock(&ObjectKey::new(GLOBAL, "l"), LockMode::Write, 10_000_000);
    assert!(matches!(
        space.request(now, forever, Duration::from_secs(1)),
        Err(SpaceError::InvalidLease { .. })
    ));
    let global = SpaceOp::DestroyNamespace {
        name: GLOBAL.into(),
    };
    assert_eq!(
        space.request(now, global, Duration::from_secs(1)),
        Err(SpaceError::GlobalNamespace)
    );
    // A peer that skips the client's checks is refused by the home.
    let attacker_id = RequestId { session: 1, seq: 1 };
    let big = put(&ObjectKey::new(GLOBAL, "big"), &[0u8; 4096]);
    let msg = SpaceMsg::Request {
        id: attacker_id,
        generation: 0,
        op: big,
    };
    space.handle(now, SpaceInput::Message { from: 1, msg });
    let reply = std::iter::from_fn(|| space.poll()).find_map(|o| match o {
        SpaceOutput::Send {
            msg: SpaceMsg::Reply { result, .. },
            ..
        } => Some(result),
        _ => None,
    });
    assert!(matches!(reply, Some(Err(SpaceError::TooLarge { .. }))));
    // Nothing was stored.
    assert_eq!(
        value_of(net.call(1, get(&ObjectKey::new(GLOBAL, "big")))),
        None
    );
}

fn describe(msg: &SpaceMsg<u32>) -> String {
    match msg {
        SpaceMsg::Home(h) => h.describe(),
        other => format!("{other:?}").chars().take(160).collect(),
    }
}

#[test]
fn changes_written_as_rows_rebuild_the_partition() {
    let now = Instant::now();
    let mut net = Net::new(1);
    let key = ObjectKey::new(GLOBAL, "row");
    assert!(net.call(0, put(&key, b"v1")).is_ok());
    assert!(net.call(0, put(&key, b"v2")).is_ok());
    let t = token_of(net.call(0, lock(&key, LockMode::Read, 1_000)));
    let partition = key.partition();
    // Rows keyed as on disk: a later change of a row replaces it.
    let mut rows: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
    for change in &net.peers[0].disk[&partition].changes {
        let (row, value) = change.row().expect("encodes");
        match value {
            Some(bytes) => rows.insert(row, bytes),
            None => rows.remove(&row),
        };
    }
    let changes: Vec<Change> = rows
        .values()
        .map(|b| Change::from_row(b).expect("decodes"))
        .collect();
    let rebuilt = Partition::from_changes(now, partition, changes).expect("consistent");
    assert_eq!(rebuilt.object_count(), 1);
    assert_eq!(rebuilt.lock_count(), 1);
    assert_eq!(rebuilt.stored_bytes(), 2);
    assert!(rebuilt
        .kept_reply(RequestId {
            session: 1000,
            seq: 1
        })
        .is_none());
    assert!(Change::from_row(&[0xff, 0xff, 0xff]).is_none());
    let _ = t;
}

#[test]
fn two_peers_creating_one_partition_at_once_create_it_once() {
    let mut net = Net::new(2);
    // Neither has heard yet that the other offers room.
    let now = net.now;
    for p in 0..2u32 {
        let other = 1 - p;
        let space = net.peers[p as usize].space.as_mut().expect("up");
        space.set_members(now, [(other, false, false)]);
    }
    let key = ObjectKey::new(GLOBAL, "race");
    let a = net.start(0, put(&key, b"from 0"), Duration::from_secs(30));
    let b = net.start(1, put(&key, b"from 1"), Duration::from_secs(30));
    let (ra, rb) = (net.wait(0, a), net.wait(1, b));
    assert!(ra.is_ok() && rb.is_ok(), "{ra:?} {rb:?}");
    let created: u64 = net
        .peers
        .iter()
        .filter_map(|p| p.space.as_ref())
        .map(|s| s.counters().created)
        .sum();
    assert_eq!(created, 1, "one home for the partition");
    // Both writes went to the one home: versions 1 and 2, in some order.
    let mut versions = [ra, rb].map(|r| match r {
        Ok(SpaceReply::Written { version, .. }) => version,
        other => panic!("{other:?}"),
    });
    versions.sort_unstable();
    assert_eq!(versions, [1, 2]);
}

/// A peer cut off from the rest sees every other peer dead. It must not
/// create a second home for a partition whose home is on the other side:
/// it would grant tokens and acknowledge writes alone, and its home would
/// clash with the real one when the network heals (found by the
/// simulator's linearizability check, `--workload space --seed 93`).
#[test]
fn a_peer_cut_off_from_the_rest_does_not_create_a_second_home() {
    let mut net = Net::new(5);
    let key = ObjectKey::new(GLOBAL, "split");
    assert_eq!(
        net.call(0, put(&key, b"before")),
        Ok(SpaceReply::Written {
            version: 1,
            replaced: Default::default()
        })
    );
    let partition = key.partition();
    let outside = (0..5u32)
        .find(|p| {
            !net.peers[*p as usize]
                .space
                .as_ref()
                .is_some_and(|s| s.homes().contains_key(&partition))
        })
        .expect("a peer outside the home");
    // Its view: every other peer dead (they offered room when last seen).
    let now = net.now;
    let space = net.peers[outside as usize].space.as_mut().expect("up");
    for p in (0..5u32).filter(|p| *p != outside) {
        space.update_member(p, false, true, false);
    }
    space.refresh_members(now);
    net.drain(outside);
    let id = net.start(outside, put(&key, b"alone"), Duration::from_secs(2));
    let answer = net.wait(outside, id);
    assert!(
        matches!(answer, Err(SpaceError::Timeout { .. })),
        "the cut-off peer answered {answer:?}"
    );
    let created = net.peers[outside as usize]
        .space
        .as_ref()
        .map_or(0, |s| s.counters().created);
    assert_eq!(created, 0, "a second home was created");
}

/// A peer restarted with nothing of a partition on its disk knows nobody
/// at first. It must not take itself for alone and create the partition
/// afresh (found by the simulator, `--workload space --seed 248 --peers
/// 8`: a delete answered as if the object had never been written).
#[test]
fn a_restarted_peer_does_not_create_a_home_before_its_view_forms() {
    let mut net = Net::new(5);
    let key = ObjectKey::new(GLOBAL, "restart");
    assert_eq!(
        net.call(0, put(&key, b"before")),
        Ok(SpaceReply::Written {
            version: 1,
            replaced: Default::default()
        })
    );
    let partition = key.partition();
    let outside = (0..5u32)
        .find(|p| {
            !net.peers[*p as usize]
                .space
                .as_ref()
                .is_some_and(|s| s.homes().contains_key(&partition))
        })
        .expect("a peer outside the home");
    net.crash(outside);
    // Started again, and asked at once, before membership told it of
    // anyone.
    net.peers[outside as usize].space = Some(Space::new(outside, config(), key_of, 77, 9));
    let id = net.start(outside, put(&key, b"fresh"), Duration::from_secs(2));
    let answer = net.wait(outside, id);
    assert!(
        matches!(answer, Err(SpaceError::Timeout { .. })),
        "the restarted peer answered {answer:?}"
    );
    // Once it knows the others, its requests reach the real home.
    net.views();
    net.run_for(config().create_after_start);
    assert_eq!(
        net.call(outside, get(&key)).map(|r| match r {
            SpaceReply::Value(Some(o)) => o.version,
            _ => 0,
        }),
        Ok(1)
    );
}

/// Two peers create the same partition when each gathers its majority of
/// denials at a different time: the first is paused (SIGSTOP) with its
/// last answer in flight, the second, taking it for gone, asks the same
/// peers and creates the home; the first then resumes, counts its old
/// answers and creates a second one (simulator, `--workload space --seed
/// 342 --peers 8 --faults crash,pause --space-clients 8 --space-faults
/// any`). A denial is now a promise: the peer that gave it denies no other
/// creator, and does not create the partition itself, for a while.
#[test]
fn a_paused_creator_and_a_second_one_do_not_both_create_a_home() {
    let mut net = Net::new(3);
    let key = ObjectKey::new(GLOBAL, "race-after-pause");
    let partition = key.partition();
    let mut order: Vec<u32> = (0..3).collect();
    order.sort_by_key(|p| super::server::distance(partition, &key_of(p)));
    let (first, second) = (order[0], order[1]);
    // The closest asks first; the others' denials reach its socket, but
    // it is paused before it reads them.
    let a = net.start(first, put(&key, b"first"), Duration::from_secs(30));
    let mut held = Vec::new();
    let until = net.now + Duration::from_millis(50);
    while net.now < until {
        let to_first: Vec<(Instant, u64)> = net
            .queue
            .iter()
            .filter(|(_, (_, to, _))| *to == first)
            .map(|(k, _)| *k)
            .collect();
        for k in to_first {
            held.extend(net.queue.remove(&k));
        }
        if !net.step(until) {
            break;
        }
    }
    assert!(!held.is_empty(), "the denials were held");
    // The second no longer sees the first alive, and creates on its own
    // majority of denials.
    let now = net.now;
    let space = net.peers[second as usize].space.as_mut().expect("up");
    space.update_member(first, false, true, false);
    space.refresh_members(now);
    net.drain(second);
    let b = net.start(second, put(&key, b"second"), Duration::from_secs(3));
    let until = net.now + Duration::from_secs(1);
    while net.now < until {
        net.queue.retain(|_, (_, to, _)| *to != first);
        if !net.step(until) {
            break;
        }
    }
    // The first resumes and reads what waited in its socket.
    for (from, to, msg) in held {
        net.order += 1;
        let at = net.now + net.latency;
        net.queue.insert((at, net.order), (from, to, msg));
    }
    net.views();
    net.run_for(Duration::from_secs(5));
    let created: u64 = net
        .peers
        .iter()
        .filter_map(|p| p.space.as_ref())
        .map(|s| s.counters().created)
        .sum();
    assert_eq!(created, 1, "homes created for one partition");
    let _ = (a, b);
}

/// Every partition's answer to `query` in `namespace`, names sorted.
fn search_all(net: &mut Net, at: u32, namespace: &str, query: &Query) -> Vec<String> {
    let mut names = Vec::new();
    for partition in 0..PARTITIONS {
        let op = SpaceOp::Search {
            namespace: namespace.into(),
            partition,
            query: query.clone(),
        };
        match net.call(at, op) {
            Ok(SpaceReply::Listed { entries, .. }) => {
                names.extend(entries.into_iter().map(|e| e.name))
            }
            other => panic!("search failed: {other:?}"),
        }
    }
    names.sort();
    names
}

#[test]
fn search_finds_objects_by_tags_and_follows_their_changes() {
    let mut net = Net::new(3);
    for row in 0..12i64 {
        let mut tags = Tags::new();
        tags.insert("type".into(), TagValue::Text("row".into()));
        tags.insert("index".into(), TagValue::Int(row));
        let op = SpaceOp::Put {
            key: ObjectKey::new(GLOBAL, format!("A-{row:02}")),
            value: vec![0; 4],
            tags,
            condition: Condition::Always,
            token: None,
        };
        assert!(net.call((row % 3) as u32, op).is_ok());
    }
    let mut other = Tags::new();
    other.insert("type".into(), TagValue::Text("column".into()));
    let op = SpaceOp::Put {
        key: ObjectKey::new(GLOBAL, "B-00"),
        value: Vec::new(),
        tags: other,
        condition: Condition::Always,
        token: None,
    };
    assert!(net.call(0, op).is_ok());
    let query = Query::parse("type=row index>=3 index<6").expect("parses");
    assert_eq!(
        search_all(&mut net, 1, GLOBAL, &query),
        ["A-03", "A-04", "A-05"]
    );
    let by_prefix = Query::parse("type^=col").expect("parses");
    assert_eq!(search_all(&mut net, 2, GLOBAL, &by_prefix), ["B-00"]);
    let present = Query::parse("index?").expect("parses");
    assert_eq!(search_all(&mut net, 2, GLOBAL, &present).len(), 12);
    // A changed tag moves the object in the index; a deleted one leaves it.
    let mut moved = Tags::new();
    moved.insert("type".into(), TagValue::Text("row".into()));
    moved.insert("index".into(), TagValue::Int(100));
    let op = SpaceOp::Put {
        key: ObjectKey::new(GLOBAL, "A-04"),
        value: Vec::new(),
        tags: moved,
        condition: Condition::Always,
        token: None,
    };
    assert!(net.call(0, op).is_ok());
    let delete = SpaceOp::Delete {
        key: ObjectKey::new(GLOBAL, "A-05"),
        condition: Condition::Always,
        token: None,
    };
    assert!(net.call(0, delete).is_ok());
    assert_eq!(search_all(&mut net, 1, GLOBAL, &query), ["A-03"]);
    // A backup that takes over answers from its own index, built from the
    // replicated objects.
    let primary = net
        .primary_of(ObjectKey::new(GLOBAL, "A-03").partition())
        .expect("primary");
    net.crash(primary);
    let reader = (primary + 1) % 3;
    assert_eq!(search_all(&mut net, reader, GLOBAL, &query), ["A-03"]);
    // A malformed query never leaves the client.
    let space = net.peers[reader as usize].space.as_mut().expect("up");
    let bad = SpaceOp::Search {
        namespace: GLOBAL.into(),
        partition: 0,
        query: Query {
            predicates: vec![Predicate {
                tag: String::new(),
                test: Test::Exists,
            }],
        },
    };
    assert!(matches!(
        space.request(net.now, bad, Duration::from_secs(1)),
        Err(SpaceError::InvalidQuery(_))
    ));
}

impl Net {
    fn call_cached(&mut self, p: u32, key: &ObjectKey) -> Result<SpaceReply, SpaceError> {
        let now = self.now;
        let id = self.peers[p as usize]
            .space
            .as_mut()
            .expect("peer up")
            .read_cached(now, key.clone(), Duration::from_secs(30))
            .expect("accepted");
        self.drain(p);
        self.wait(p, id)
    }

    fn counters(&self, p: u32) -> SpaceCounters {
        self.peers[p as usize]
            .space
            .as_ref()
            .map(Space::counters)
            .unwrap_or_default()
    }
}

#[test]
fn cached_reads_answer_from_a_copy_and_catch_up_with_the_home() {
    let mut net = Net::new(4);
    let key = ObjectKey::new(GLOBAL, "hot");
    assert!(net.call(0, put(&key, b"v1")).is_ok());
    // Peer 3 has no copy: a replica answers, and the copy is kept.
    assert_eq!(value_of(net.call_cached(3, &key)), Some(b"v1".to_vec()));
    assert_eq!(net.counters(3).cache_hits, 0);
    let asked_at = net.now;
    assert_eq!(value_of(net.call_cached(3, &key)), Some(b"v1".to_vec()));
    assert_eq!(net.now, asked_at, "a hit is answered at once");
    assert_eq!(net.counters(3).cache_hits, 1);
    // Another peer writes; peer 3's copy may lag, but only until its
    // background check against the home.
    assert!(net.call(1, put(&key, b"v2")).is_ok());
    net.run_for(Duration::from_millis(150));
    let maybe_old = value_of(net.call_cached(3, &key));
    assert!(maybe_old == Some(b"v1".to_vec()) || maybe_old == Some(b"v2".to_vec()));
    net.run_for(Duration::from_millis(50));
    assert_eq!(value_of(net.call_cached(3, &key)), Some(b"v2".to_vec()));
    // Its own writes are seen by its cached reads at once.
    assert!(net.call(3, put(&key, b"v3")).is_ok());
    assert_eq!(value_of(net.call_cached(3, &key)), Some(b"v3".to_vec()));
    let (copies, bytes) = net.peers[3].space.as_ref().expect("up").cached_copies();
    assert_eq!((copies, bytes), (1, 2 + 64));
}

#[test]
fn cached_reads_of_many_peers_spread_over_the_replicas() {
    let mut net = Net::new(5);
    let key = ObjectKey::new(GLOBAL, "spread");
    assert!(net.call(0, put(&key, b"x")).is_ok());
    for reader in 0..5 {
        for _ in 0..3 {
            // Each peer forgets its copy: every read goes to a replica.
            let space = net.peers[reader as usize].space.as_mut().expect("up");
            space.drop_cached(&key);
            assert_eq!(value_of(net.call_cached(reader, &key)), Some(b"x".to_vec()));
        }
    }
    let serving = (0..5)
        .filter(|p| net.counters(*p).replica_reads > 0)
        .count();
    assert!(serving >= 2, "replica reads served by {serving} peers");
}

#[test]
fn a_hot_object_is_copied_beyond_its_home_and_recopied_when_a_holder_leaves() {
    // No peer caches anything for itself: holding hot copies for others
    // does not depend on it.
    let mut no_cache = config();
    no_cache.client.cache_bytes = 0;
    let mut net = Net::with_config(7, no_cache);
    let key = ObjectKey::new(GLOBAL, "popular");
    assert!(net.call(0, put(&key, b"hot!")).is_ok());
    let primary = net.primary_of(key.partition()).expect("primary");
    let home: Vec<u32> = (0..7)
        .filter(|p| {
            net.peers[*p as usize]
                .space
                .as_ref()
                .is_some_and(|s| s.homes().contains_key(&key.partition()))
        })
        .collect();
    let reader = (0..7)
        .find(|p| !home.contains(p))
        .expect("a peer outside the home");
    // Hundreds of reads in a second make it hot.
    for _ in 0..260 {
        assert_eq!(
            value_of(net.call(reader, get(&key))),
            Some(b"hot!".to_vec())
        );
    }
    net.run_for(Duration::from_millis(1100));
    let hot = net.peers[primary as usize]
        .space
        .as_ref()
        .expect("up")
        .hot_objects();
    assert_eq!(hot.len(), 1);
    let holders = hot[0].1.clone();
    assert_eq!(holders.len(), 3);
    assert!(
        holders.iter().all(|h| !home.contains(h)),
        "{holders:?} vs home {home:?}"
    );
    // The reader was told: its cached reads now reach the holders too.
    for _ in 0..40 {
        let space = net.peers[reader as usize].space.as_mut().expect("up");
        space.drop_cached(&key);
        assert_eq!(
            value_of(net.call_cached(reader, &key)),
            Some(b"hot!".to_vec())
        );
    }
    let served: u64 = holders.iter().map(|h| net.counters(*h).hot_reads).sum();
    assert!(served > 0, "no cached read reached a holder");
    // A holder leaves: the next refresh copies to another peer instead.
    let gone = holders[0];
    net.crash(gone);
    let reader = (0..7)
        .find(|p| *p != gone && net.peers[*p as usize].space.is_some())
        .expect("a live reader");
    for _ in 0..260 {
        assert!(net.call(reader, get(&key)).is_ok());
    }
    net.run_for(Duration::from_millis(1100));
    let hot = net.peers[primary as usize]
        .space
        .as_ref()
        .expect("up")
        .hot_objects();
    let now_holders = &hot[0].1;
    assert_eq!(now_holders.len(), 3, "{now_holders:?}");
    assert!(!now_holders.contains(&gone));
    // Once reads stop, it cools and the copies lapse.
    net.run_for(Duration::from_secs(8));
    let space = net.peers[primary as usize].space.as_ref().expect("up");
    assert!(space.hot_objects().is_empty());
}

/// Shards are kept by the peer a writer sends them to, on its disk (a
/// restart keeps them), refused when another shard holds their id or the
/// peer is full, dropped on request; a request to a dead holder ends in an
/// error by its deadline.
#[test]
fn a_holder_keeps_the_shards_sent_to_it_until_they_are_dropped() {
    let mut net = Net::with_config(
        4,
        SpaceConfig {
            capacity_bytes: 64 << 10,
            ..config()
        },
    );
    let a = ObjectKey::new(GLOBAL, "a");
    let shards = crate::erasure::encode(&[7u8; 600], 2, 2).expect("codes");
    let id = |index: u8| ShardId {
        write: 42,
        stripe: 0,
        index,
    };
    let put = |index: u8, shard: &Shard| SpaceOp::PutShard {
        key: a.clone(),
        id: id(index),
        shard: shard.clone(),
    };
    let get = |index: u8| SpaceOp::GetShard {
        key: a.clone(),
        id: id(index),
    };
    assert_eq!(
        net.call_at(0, 2, put(0, &shards[0])),
        Ok(SpaceReply::ShardKept)
    );
    assert_eq!(
        net.call_at(0, 2, put(1, &shards[1])),
        Ok(SpaceReply::ShardKept)
    );
    // Sent again (a retry): the same answer, kept once.
    assert_eq!(
        net.call_at(0, 2, put(0, &shards[0])),
        Ok(SpaceReply::ShardKept)
    );
    // A peer keeps shards for itself too, without the network.
    assert_eq!(
        net.call_at(3, 3, put(3, &shards[3])),
        Ok(SpaceReply::ShardKept)
    );
    assert_eq!(net.peers[2].shards_on_disk.len(), 2);
    // Another shard under a held id is refused, and so is a shard whose
    // index is not its id's.
    let mut altered = shards[0].clone();
    altered.bytes[0] ^= 1;
    assert!(matches!(
        net.call_at(1, 2, put(0, &altered)),
        Err(SpaceError::InvalidShard(_))
    ));
    let now = net.now;
    let misnumbered = net.peers[1]
        .space
        .as_mut()
        .map(|s| s.request_at(now, 2, put(1, &shards[0]), Duration::from_secs(5)));
    assert!(matches!(
        misnumbered,
        Some(Err(SpaceError::InvalidShard(_)))
    ));
    assert_eq!(
        net.call_at(1, 2, get(1)),
        Ok(SpaceReply::Shard(Some(shards[1].clone())))
    );
    assert_eq!(net.call_at(1, 2, get(3)), Ok(SpaceReply::Shard(None)));
    // Under another object's name, nothing.
    let b = ObjectKey::new(GLOBAL, "b");
    let other = SpaceOp::GetShard { key: b, id: id(1) };
    assert_eq!(net.call_at(1, 2, other), Ok(SpaceReply::Shard(None)));
    assert_eq!(net.counters(2).shards_missing, 2);
    // A restart keeps them.
    net.crash(2);
    net.restart(2);
    assert_eq!(
        net.peers[2]
            .space
            .as_ref()
            .map(Space::held_shards)
            .map(|h| h.0),
        Some(2)
    );
    assert_eq!(
        net.call_at(1, 2, get(0)),
        Ok(SpaceReply::Shard(Some(shards[0].clone())))
    );
    // Full: the peer gives the space 64 KiB.
    let big = crate::erasure::encode(&[1u8; 1000], 1, 0).expect("codes");
    let mut full = None;
    for stripe in 1..100 {
        let op = SpaceOp::PutShard {
            key: a.clone(),
            id: ShardId {
                write: 43,
                stripe,
                index: 0,
            },
            shard: big[0].clone(),
        };
        if let Err(e) = net.call_at(0, 1, op) {
            full = Some((stripe, e));
            break;
        }
    }
    let (stripe, error) = full.expect("the peer fills up");
    assert!(matches!(error, SpaceError::Full(_)), "{error}");
    assert!(stripe > 40, "full after {stripe} shards");
    let held = net.peers[1].space.as_ref().map(Space::free_bytes);
    assert!(held.is_some_and(|free| free < 1100), "{held:?} bytes free");
    // Dropped: from memory and disk.
    let drop = SpaceOp::DropShards {
        key: a.clone(),
        write: 42,
    };
    assert_eq!(
        net.call_at(0, 2, drop),
        Ok(SpaceReply::ShardsDropped { count: 2 })
    );
    assert!(net.peers[2].shards_on_disk.is_empty());
    assert_eq!(net.call_at(1, 2, get(0)), Ok(SpaceReply::Shard(None)));
    // A dead holder: an error by the deadline.
    net.crash(2);
    assert!(net.call_at(0, 2, get(0)).is_err());
    // Holders are the live peers offering room, closest to the write
    // first; the same for every asker.
    let holders = net.peers[0].space.as_ref().map(|s| s.shard_holders(42, 8));
    let from_3 = net.peers[3].space.as_ref().map(|s| s.shard_holders(42, 8));
    assert_eq!(holders.as_ref().map(Vec::len), Some(3));
    assert!(holders.as_ref().is_some_and(|h| !h.contains(&2)));
    assert_eq!(holders, from_3);
}
