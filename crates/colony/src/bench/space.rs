//! `colony bench space`: the object space on an embedded network, against
//! a raw TCP round trip on loopback measured in the same run.
//!
//! 1. Raw TCP: a ping-pong of the value's size, the floor for any
//!    replicated write on this machine.
//! 2. One operation at a time from one peer: set (distinct keys, spread over
//!    the partitions), linearizable get, cached get, write-lock acquire and
//!    release of a free lock. Every partition's home is created first (one
//!    write to each, timed apart), so these are steady-state figures.
//! 3. Pipelined sets, `window` in flight: on one key, and spread over many.
//! 4. Re-grant: a holder (a peer holding no partitions) takes a write lock
//!    and crashes; another peer waits for the lock. Time from the crash to
//!    the grant: at most the lease plus the detection.
//! 5. Skewed reads: every peer of a network of `hot_peers` (home 3, no local
//!    copies) reads one object the cached way, with hot-object replication
//!    off and then on: where the reads were served.

use std::time::{Duration, Instant};

use colony_core::space::{Condition, LockMode, ObjectKey, Tags, PARTITIONS};
use futures::stream::FuturesUnordered;
use futures::StreamExt;
use serde::{Deserialize, Serialize};

use super::{raw_tcp_round_trips, LatencyUs};
use crate::{ColonyError, LocalNetwork, Peer, PeerConfig, Storage};

/// What to measure.
#[derive(Clone, Debug)]
pub struct SpaceBenchOptions {
    /// Peers of the main network (each a member of every partition's home
    /// when there are 3).
    pub peers: usize,
    /// Operations per sequential phase.
    pub ops: usize,
    /// Operations per pipelined phase.
    pub pipelined: usize,
    /// Pipelined operations in flight at once.
    pub window: usize,
    /// Size of each value written.
    pub value_bytes: usize,
    /// Lease of the locks in the re-grant phase.
    pub lease: Duration,
    /// Holders crashed, one after the other.
    pub regrants: usize,
    /// Peers of the skewed-read networks.
    pub hot_peers: usize,
    /// How long every peer reads the hot object, per setting.
    pub hot_for: Duration,
    /// Size of the large values written replicated and erasure-coded.
    pub large_value_bytes: usize,
    /// Large values written and read per storage.
    pub large_values: usize,
}

impl Default for SpaceBenchOptions {
    fn default() -> Self {
        SpaceBenchOptions {
            peers: 3,
            ops: 1000,
            pipelined: 10_000,
            window: 512,
            value_bytes: 64,
            lease: Duration::from_secs(10),
            regrants: 3,
            hot_peers: 6,
            hot_for: Duration::from_secs(3),
            large_value_bytes: 4 << 20,
            large_values: 5,
        }
    }
}

/// Skewed reads of one object by every peer, with one hot-replication
/// setting.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct SkewedReads {
    /// Whether hot-object replication was on.
    pub hot_replication: bool,
    /// Reads answered, over every peer.
    pub reads: u64,
    /// Reads per second, over every peer.
    pub reads_per_s: f64,
    /// Latency of one read.
    pub read_us: LatencyUs,
    /// Reads answered by the members of the object's home.
    pub served_by_home: u64,
    /// Reads answered by hot copies beyond the home.
    pub served_by_hot_copies: u64,
    /// Hot copies the home's primary sent.
    pub hot_copies_sent: u64,
}

/// The outcome of `colony bench space`.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct SpaceBenchReport {
    /// Peers of the main network.
    pub peers: usize,
    /// Size of each value written.
    pub value_bytes: usize,
    /// Operations per sequential phase.
    pub ops: usize,
    /// Operations per pipelined phase, and how many were in flight.
    pub pipelined: usize,
    /// Pipelined operations in flight at once.
    pub window: usize,
    /// From the network formed to the first write answered (partition
    /// homes are created once a peer's view has formed).
    pub first_write_s: f64,
    /// From the first write answered to every partition's home created
    /// (one write to each partition, one after the other).
    pub all_homes_created_s: f64,
    /// Raw TCP ping-pong of `value_bytes` on loopback, same run.
    pub tcp_rtt_us: LatencyUs,
    /// Set of a fresh key, one at a time (on disk at a majority).
    pub set_us: LatencyUs,
    /// Linearizable get, one at a time.
    pub get_us: LatencyUs,
    /// Cached get of an object read before, one at a time.
    pub cached_get_us: LatencyUs,
    /// Set p50 over raw TCP p50.
    pub set_over_tcp_p50: f64,
    /// Pipelined sets of one key, per second.
    pub sets_per_s_one_key: f64,
    /// Pipelined sets spread over many keys, per second.
    pub sets_per_s_spread: f64,
    /// Pipelined linearizable gets spread over many keys, per second.
    pub gets_per_s_spread: f64,
    /// Write lock acquired on a free object.
    pub lock_us: LatencyUs,
    /// Lock released.
    pub unlock_us: LatencyUs,
    /// Lease of the crashed holders' locks, ms.
    pub lease_ms: u64,
    /// From a holder's crash to the lock granted to a waiter.
    pub regrant_us: LatencyUs,
    /// The same when the holder was its lock's partition primary (one
    /// round: a member of the network crashes), µs.
    pub regrant_of_primary_us: f64,
    /// Large values, replicated and erasure-coded 2+1.
    pub large: LargeValues,
    /// Skewed reads with hot replication off, then on.
    pub skewed: Vec<SkewedReads>,
}

/// Large values written and read replicated (a copy per home member) and
/// erasure-coded 2+1 (three shards of half the value), same network.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct LargeValues {
    /// Size of each value.
    pub value_bytes: usize,
    /// Values per storage.
    pub values: usize,
    /// Replicated write (chunked), one at a time.
    pub replicated_put_us: LatencyUs,
    /// Replicated linearizable read.
    pub replicated_get_us: LatencyUs,
    /// Erasure-coded 2+1 write.
    pub coded_put_us: LatencyUs,
    /// Erasure-coded 2+1 read.
    pub coded_get_us: LatencyUs,
    /// Bytes the peers hold per byte of value, replicated.
    pub replicated_stored_per_byte: f64,
    /// Bytes the peers hold per byte of value, erasure-coded.
    pub coded_stored_per_byte: f64,
}

/// Runs the object-space benchmark.
pub async fn space(options: &SpaceBenchOptions) -> Result<SpaceBenchReport, ColonyError> {
    let value_bytes = options.value_bytes.max(1);
    let tcp = raw_tcp_round_trips(options.ops.max(1), value_bytes.max(16)).await?;
    let peers = options.peers.max(1);
    let network = LocalNetwork::start(peers, |_, _| {}).await?;
    let report = main_phases(&network, options, tcp).await;
    network.shutdown().await;
    let mut report = report?;
    for hot in [false, true] {
        report.skewed.push(skewed_reads(options, hot).await?);
    }
    Ok(report)
}

async fn main_phases(
    network: &LocalNetwork,
    options: &SpaceBenchOptions,
    tcp: LatencyUs,
) -> Result<SpaceBenchReport, ColonyError> {
    let peer = network.peers()[0].clone();
    let value = vec![0x5a; options.value_bytes.max(1)];
    let key = |name: String| ObjectKey::new("bench", name);
    peer.space_create_namespace("bench").await.ok();
    let formed = Instant::now();
    first_write(&peer, &key("first".into()), &value).await?;
    let first_write_s = formed.elapsed().as_secs_f64();
    let all_homes_created_s = create_every_home(&peer, &value).await?;

    let (mut sets, mut gets, mut cached) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..options.ops {
        let k = key(format!("seq-{i}"));
        let t = Instant::now();
        peer.space_put(&k, value.clone(), Tags::new()).await?;
        sets.push(t.elapsed());
    }
    for i in 0..options.ops {
        let k = key(format!("seq-{i}"));
        let t = Instant::now();
        peer.space_get(&k).await?;
        gets.push(t.elapsed());
    }
    // The first cached read of each object fills this peer's copy.
    for i in 0..options.ops {
        peer.space_get_cached(&key(format!("seq-{i}"))).await?;
    }
    for i in 0..options.ops {
        let k = key(format!("seq-{i}"));
        let t = Instant::now();
        peer.space_get_cached(&k).await?;
        cached.push(t.elapsed());
    }

    let one_key = pipelined(options, |_| {
        let peer = peer.clone();
        let (k, v) = (key("hot".into()), value.clone());
        async move { peer.space_put(&k, v, Tags::new()).await.map(|_| ()) }
    })
    .await?;
    let spread = pipelined(options, |i| {
        let peer = peer.clone();
        let (k, v) = (key(format!("spread-{i}")), value.clone());
        async move { peer.space_put(&k, v, Tags::new()).await.map(|_| ()) }
    })
    .await?;
    let spread_gets = pipelined(options, |i| {
        let peer = peer.clone();
        let k = key(format!("spread-{i}"));
        async move { peer.space_get(&k).await.map(|_| ()) }
    })
    .await?;

    let (mut locks, mut unlocks) = (Vec::new(), Vec::new());
    for i in 0..options.ops {
        let k = key(format!("lock-{}", i % 64));
        let t = Instant::now();
        let guard = peer.space_lock(&k, LockMode::Write, options.lease).await?;
        locks.push(t.elapsed());
        let t = Instant::now();
        guard.unlock().await?;
        unlocks.push(t.elapsed());
    }

    let large = large_values(network, options).await?;
    let mut regrants = Vec::new();
    for round in 0..options.regrants {
        regrants.push(regrant(network, &peer, options.lease, round).await?);
    }
    // Last: it crashes a member of the network.
    let regrant_of_primary = regrant_of_primary(network, options.lease).await?;

    let set_us = LatencyUs::of(&mut sets);
    Ok(SpaceBenchReport {
        peers: options.peers,
        value_bytes: value.len(),
        ops: options.ops,
        pipelined: options.pipelined,
        window: options.window,
        first_write_s,
        all_homes_created_s,
        set_over_tcp_p50: set_us.p50 / tcp.p50.max(1e-3),
        tcp_rtt_us: tcp,
        set_us,
        get_us: LatencyUs::of(&mut gets),
        cached_get_us: LatencyUs::of(&mut cached),
        sets_per_s_one_key: one_key,
        sets_per_s_spread: spread,
        gets_per_s_spread: spread_gets,
        lock_us: LatencyUs::of(&mut locks),
        unlock_us: LatencyUs::of(&mut unlocks),
        lease_ms: u64::try_from(options.lease.as_millis()).unwrap_or(u64::MAX),
        regrant_us: LatencyUs::of(&mut regrants),
        regrant_of_primary_us: regrant_of_primary.as_secs_f64() * 1e6,
        large,
        skewed: Vec::new(),
    })
}

/// Writes `key` until the space answers: the partition homes of a fresh
/// network are created once its peers' views have formed.
async fn first_write(peer: &Peer, key: &ObjectKey, value: &[u8]) -> Result<(), ColonyError> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match peer.space_put(key, value.to_vec(), Tags::new()).await {
            Ok(_) => return Ok(()),
            Err(e) if Instant::now() >= deadline => return Err(e),
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// Runs `options.pipelined` operations made by `op(i)`, at most
/// `options.window` at once; returns operations per second. The first
/// error ends the phase.
async fn pipelined<F, Fut>(options: &SpaceBenchOptions, op: F) -> Result<f64, ColonyError>
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = Result<(), ColonyError>>,
{
    let total = options.pipelined.max(1);
    let window = options.window.max(1);
    let start = Instant::now();
    let mut in_flight = FuturesUnordered::new();
    let mut next = 0;
    while next < total || !in_flight.is_empty() {
        while next < total && in_flight.len() < window {
            in_flight.push(op(next));
            next += 1;
        }
        if let Some(result) = in_flight.next().await {
            result?;
        }
    }
    Ok(total as f64 / start.elapsed().as_secs_f64())
}

/// Writes one object in each partition of namespace `bench`, so that
/// every partition's home exists; returns how long that took.
async fn create_every_home(peer: &Peer, value: &[u8]) -> Result<f64, ColonyError> {
    let started = Instant::now();
    let mut created = std::collections::BTreeSet::new();
    let mut i = 0u64;
    while created.len() < usize::from(PARTITIONS) {
        let key = ObjectKey::new("bench", format!("home-{i}"));
        i += 1;
        if created.insert(key.partition()) {
            peer.space_put(&key, value.to_vec(), Tags::new()).await?;
        }
    }
    Ok(started.elapsed().as_secs_f64())
}

/// One re-grant: a new peer holding no partitions (so its crash costs no
/// home a member) takes a write lock, `waiter` asks for it, and the holder
/// crashes. Returns the time from the crash to the grant.
async fn regrant(
    network: &LocalNetwork,
    waiter: &Peer,
    lease: Duration,
    round: usize,
) -> Result<Duration, ColonyError> {
    let first = &network.peers()[0];
    let dir = std::env::temp_dir().join(format!(
        "colony-bench-holder-{}-{round}-{}",
        std::process::id(),
        first.peer_id()
    ));
    let holder = start_holder(first, dir.clone()).await?;
    let key = ObjectKey::new("bench", format!("regrant-{round}"));
    let took = granted_after_crash(&holder, waiter, &key, lease).await;
    let _ = std::fs::remove_dir_all(&dir);
    took
}

/// `holder` takes a write lock on `key`, `waiter` asks for it, and the
/// holder crashes; returns the time from the crash to the grant.
async fn granted_after_crash(
    holder: &Peer,
    waiter: &Peer,
    key: &ObjectKey,
    lease: Duration,
) -> Result<Duration, ColonyError> {
    let guard = holder.space_lock(key, LockMode::Write, lease).await?;
    let patience = lease * 10 + Duration::from_secs(20);
    let wait = tokio::spawn({
        let (waiter, key) = (waiter.clone(), key.clone());
        async move {
            waiter
                .space_lock_within(&key, LockMode::Write, lease, patience)
                .await
        }
    });
    // The waiter's request is queued at the primary first.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let crashed = Instant::now();
    holder.crash().await;
    // Its release has nowhere to go now.
    drop(guard);
    let granted = wait.await.map_err(|_| ColonyError::Stopped)??;
    let took = crashed.elapsed();
    granted.unlock().await?;
    Ok(took)
}

/// One re-grant where the holder is the primary of its lock's partition:
/// the primary that granted dies with it. Crashes a member of `network`
/// (peer 1 of 3: the others still form a majority of every home).
async fn regrant_of_primary(
    network: &LocalNetwork,
    lease: Duration,
) -> Result<Duration, ColonyError> {
    let (waiter, holder) = (&network.peers()[0], &network.peers()[1]);
    let primary_of = holder.status().await?.space.primary_of;
    let key = (0..100_000)
        .map(|i| ObjectKey::new("bench", format!("primary-lock-{i}")))
        .find(|k| primary_of.contains(&k.partition()))
        .ok_or_else(|| ColonyError::Timeout {
            what: "a partition peer 1 is primary of".into(),
            after: Duration::ZERO,
        })?;
    granted_after_crash(holder, waiter, &key, lease).await
}

/// Writes and reads `options.large_values` values of
/// `options.large_value_bytes`, replicated then erasure-coded 2+1, and
/// what the peers hold for them.
async fn large_values(
    network: &LocalNetwork,
    options: &SpaceBenchOptions,
) -> Result<LargeValues, ColonyError> {
    let peer = &network.peers()[0];
    let value = vec![0xa5; options.large_value_bytes.max(1)];
    let count = options.large_values.max(1);
    let mut figures = LargeValues {
        value_bytes: value.len(),
        values: count,
        ..LargeValues::default()
    };
    for storage in [Storage::Replicated, Storage::Coded { k: 2, m: 1 }] {
        let before = held_bytes(network).await?;
        let (mut puts, mut gets) = (Vec::new(), Vec::new());
        for i in 0..count {
            let key = ObjectKey::new("bench", format!("large-{storage:?}-{i}"));
            let t = Instant::now();
            peer.space_write_stored(
                &key,
                value.clone(),
                Tags::new(),
                Condition::Always,
                None,
                storage,
            )
            .await?;
            puts.push(t.elapsed());
            let t = Instant::now();
            let read = peer.space_get(&key).await?;
            gets.push(t.elapsed());
            if read.is_none_or(|o| o.value.len() != value.len()) {
                return Err(ColonyError::Timeout {
                    what: format!("the large value {key} read back whole"),
                    after: Duration::ZERO,
                });
            }
        }
        let stored = held_bytes(network).await?.saturating_sub(before) as f64;
        let per_byte = stored / (count * value.len()) as f64;
        match storage {
            Storage::Replicated => {
                figures.replicated_put_us = LatencyUs::of(&mut puts);
                figures.replicated_get_us = LatencyUs::of(&mut gets);
                figures.replicated_stored_per_byte = per_byte;
            }
            Storage::Coded { .. } => {
                figures.coded_put_us = LatencyUs::of(&mut puts);
                figures.coded_get_us = LatencyUs::of(&mut gets);
                figures.coded_stored_per_byte = per_byte;
            }
        }
    }
    Ok(figures)
}

/// Bytes of object values and shards over every peer of `network`.
async fn held_bytes(network: &LocalNetwork) -> Result<u64, ColonyError> {
    let mut sum = 0;
    for peer in network.peers() {
        let space = peer.status().await?.space;
        sum += space.bytes + space.shard_bytes;
    }
    Ok(sum)
}

/// Starts a peer that offers the space no room, joined through `first`.
async fn start_holder(first: &Peer, dir: std::path::PathBuf) -> Result<Peer, ColonyError> {
    let mut config = PeerConfig::new(dir);
    config.listen = vec!["/ip4/127.0.0.1/tcp/0".parse().expect("static multiaddr")];
    config.bootstrap = first.info().listen_addrs.clone();
    config.space.capacity_bytes = 0;
    let holder = Peer::start(config).await?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while first
        .members()
        .await?
        .iter()
        .all(|m| m.peer_id != holder.peer_id().to_string() || m.state != crate::MemberState::Alive)
    {
        if Instant::now() >= deadline {
            return Err(ColonyError::Timeout {
                what: "a lock holder to join".into(),
                after: Duration::from_secs(30),
            });
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(holder)
}

/// Every peer of a fresh network of `options.hot_peers` reads one object
/// the cached way (no local copies, so each read asks a peer) for
/// `options.hot_for`.
async fn skewed_reads(options: &SpaceBenchOptions, hot: bool) -> Result<SkewedReads, ColonyError> {
    let network = LocalNetwork::start(options.hot_peers.max(1), move |_, config| {
        config.space.client.cache_bytes = 0;
        if !hot {
            config.space.hot.reads_per_s = u32::MAX;
        }
    })
    .await?;
    let result = skewed_reads_on(&network, options, hot).await;
    network.shutdown().await;
    result
}

async fn skewed_reads_on(
    network: &LocalNetwork,
    options: &SpaceBenchOptions,
    hot: bool,
) -> Result<SkewedReads, ColonyError> {
    let key = ObjectKey::new("global", "skewed");
    first_write(&network.peers()[0], &key, &[7u8; 64]).await?;
    let before = space_counters(network).await?;
    let until = Instant::now() + options.hot_for;
    let readers = network.peers().iter().cloned().map(|peer| {
        let key = key.clone();
        tokio::spawn(async move {
            let mut samples = Vec::new();
            while Instant::now() < until {
                let t = Instant::now();
                peer.space_get_cached(&key).await?;
                samples.push(t.elapsed());
            }
            Ok::<_, ColonyError>(samples)
        })
    });
    let start = Instant::now();
    let mut samples = Vec::new();
    for reader in readers.collect::<Vec<_>>() {
        samples.extend(reader.await.map_err(|_| ColonyError::Stopped)??);
    }
    let elapsed = start.elapsed().as_secs_f64();
    let after = space_counters(network).await?;
    Ok(SkewedReads {
        hot_replication: hot,
        reads: samples.len() as u64,
        reads_per_s: samples.len() as f64 / elapsed,
        read_us: LatencyUs::of(&mut samples),
        served_by_home: after.0 - before.0,
        served_by_hot_copies: after.1 - before.1,
        hot_copies_sent: after.2 - before.2,
    })
}

/// (replica reads, hot-copy reads, hot copies sent) over every peer.
async fn space_counters(network: &LocalNetwork) -> Result<(u64, u64, u64), ColonyError> {
    let mut sums = (0, 0, 0);
    for peer in network.peers() {
        let space = peer.status().await?.space;
        sums.0 += space.replica_reads;
        sums.1 += space.hot_reads;
        sums.2 += space.hot_copies_sent;
    }
    Ok(sums)
}
