//! The object space through the library API of embedded peers: writes from
//! one peer read from another, compare-and-set, locks with fencing tokens
//! and guards, listings across partitions, namespaces, and partitions
//! written to disk and confirmed.

use std::time::{Duration, Instant};

use colony::{
    ColonyError, Condition, LocalNetwork, LockMode, ObjectKey, Query, ShardKeeping, SpaceError,
    SpaceOp, SpaceReply, Storage, TagValue, Tags,
};

async fn three_peers() -> LocalNetwork {
    crate::common::init_tracing();
    LocalNetwork::start(3, |_, _| {}).await.expect("start")
}

/// Retries `op` while the space answers that it cannot yet (homes forming
/// right after the network did), for at most 30 s.
async fn settled<T, F, Fut>(what: &str, mut op: F) -> Result<T, ColonyError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, ColonyError>>,
{
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match op().await {
            Err(ColonyError::Space(SpaceError::Timeout { .. } | SpaceError::Unavailable(_)))
                if Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            other => {
                if let Err(e) = &other {
                    eprintln!("{what}: {e}");
                }
                return other;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_written_at_one_peer_are_read_at_another() {
    let network = three_peers().await;
    let [a, b, c] = [0, 1, 2].map(|i| network.peers()[i].clone());
    let key = ObjectKey::new("global", "bound");
    let mut tags = Tags::new();
    tags.insert("instance".into(), TagValue::Text("ta017".into()));
    let v1 = settled("first put", || {
        a.space_put(&key, b"1049".to_vec(), tags.clone())
    })
    .await
    .expect("put");
    assert_eq!(v1, 1);
    let object = b.space_get(&key).await.expect("get").expect("present");
    assert_eq!(object.value, b"1049");
    assert_eq!(object.version, 1);
    assert_eq!(object.tags, tags);

    // Compare-and-set: the stale version is refused and names the current.
    let v2 = c
        .space_cas(&key, 1, b"1047".to_vec(), Tags::new())
        .await
        .expect("cas");
    assert_eq!(v2, 2);
    match a.space_cas(&key, 1, b"1000".to_vec(), Tags::new()).await {
        Err(ColonyError::Space(SpaceError::VersionMismatch { current: 2 })) => {}
        other => panic!("expected a version mismatch, got {other:?}"),
    }
    assert_eq!(
        b.space_get(&key)
            .await
            .expect("get")
            .expect("present")
            .value,
        b"1047"
    );

    // The listing gathers every partition, sorted.
    for name in ["c", "a", "b"] {
        let key = ObjectKey::new("global", name);
        settled("put", || b.space_put(&key, name.into(), Tags::new()))
            .await
            .expect("put");
    }
    let listing = settled("list", || c.space_list("global"))
        .await
        .expect("list");
    let names: Vec<&str> = listing.entries.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names, ["a", "b", "bound", "c"]);
    assert!(!listing.truncated);

    // A search gathers, from every partition, the objects whose tags
    // pass every predicate.
    for (name, index) in [("row-2", 2), ("row-3", 3), ("row-9", 9)] {
        let mut tags = Tags::new();
        tags.insert("type".into(), TagValue::Text("row".into()));
        tags.insert("index".into(), TagValue::Int(index));
        a.space_put(&ObjectKey::new("global", name), b"r".to_vec(), tags)
            .await
            .expect("put a row");
    }
    let query = Query::parse("type=row index>=3").expect("parses");
    let found = c.space_search("global", &query).await.expect("search");
    let names: Vec<&str> = found.entries.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names, ["row-3", "row-9"]);
    let query = Query::parse("index<3 type^=ro").expect("parses");
    let found = b.space_search("global", &query).await.expect("search");
    let names: Vec<&str> = found.entries.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names, ["row-2"]);
    match Query::parse("type=row index") {
        Err(SpaceError::InvalidQuery(why)) => assert!(why.contains("\"index\""), "{why}"),
        other => panic!("expected InvalidQuery, got {other:?}"),
    }
    match b.space_search("no-such-ns", &Query::default()).await {
        Err(ColonyError::Space(SpaceError::UnknownNamespace(ns))) if ns == "no-such-ns" => {}
        other => panic!("expected UnknownNamespace, got {other:?}"),
    }

    // A cached read at a peer that holds no copy yet is the value; a
    // second is answered from the copy it kept.
    let cached = c.space_get_cached(&key).await.expect("cached get");
    assert_eq!(cached.map(|o| o.value), Some(b"1047".to_vec()));
    let before = c.status().await.expect("status").space.cache_hits;
    let cached = c.space_get_cached(&key).await.expect("cached get");
    assert_eq!(cached.map(|o| o.value), Some(b"1047".to_vec()));
    let after = c.status().await.expect("status").space.cache_hits;
    assert_eq!(
        after,
        before + 1,
        "the second cached read came from the copy"
    );
    assert_eq!(
        c.space_get_cached(&ObjectKey::new("global", "never-written"))
            .await
            .expect("cached get of an absent object"),
        None
    );

    a.space_delete(&key, Condition::Version(2))
        .await
        .expect("delete");
    assert_eq!(c.space_get(&key).await.expect("get"), None);

    // What the primaries applied was confirmed on disk.
    let mut persisted = 0;
    for peer in network.peers() {
        let status = peer.status().await.expect("status");
        assert_eq!(status.space.write_errors, 0);
        persisted += status.space.partitions;
    }
    assert!(persisted >= 3, "partitions held: {persisted}");
    network.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_lock_fences_writers_and_its_guard_releases_it() {
    let network = three_peers().await;
    let [a, b] = [0, 1].map(|i| network.peers()[i].clone());
    let key = ObjectKey::new("global", "counter");
    settled("put", || a.space_put(&key, b"0".to_vec(), Tags::new()))
        .await
        .expect("put");
    let lease = Duration::from_secs(2);
    let guard = a
        .space_lock(&key, LockMode::Write, lease)
        .await
        .expect("lock");
    // Another writer without the token is refused while it is held.
    match b.space_put(&key, b"x".to_vec(), Tags::new()).await {
        Err(ColonyError::Space(SpaceError::Locked)) => {}
        other => panic!("expected Locked, got {other:?}"),
    }
    a.space_put_fenced(&key, b"1".to_vec(), Tags::new(), guard.token())
        .await
        .expect("fenced write");
    // Held past its lease: this peer renews it.
    tokio::time::sleep(lease + Duration::from_millis(500)).await;
    assert_eq!(guard.lost(), None);
    let token = guard.token();
    a.space_put_fenced(&key, b"2".to_vec(), Tags::new(), token)
        .await
        .expect("still held after the lease, renewed");
    // Dropping the guard releases the lock: another peer gets it at once
    // (well within a lease), and the old token is stale.
    drop(guard);
    let started = Instant::now();
    let second = b
        .space_lock_within(&key, LockMode::Write, lease, Duration::from_secs(1))
        .await
        .expect("granted once the guard is dropped");
    assert!(started.elapsed() < lease, "{:?}", started.elapsed());
    assert!(second.token() > token);
    match a
        .space_put_fenced(&key, b"3".to_vec(), Tags::new(), token)
        .await
    {
        Err(ColonyError::Space(SpaceError::StaleToken { token: t })) if t == token => {}
        other => panic!("expected StaleToken, got {other:?}"),
    }
    second.unlock().await.expect("unlock");
    assert_eq!(
        b.space_get(&key)
            .await
            .expect("get")
            .expect("present")
            .value,
        b"2"
    );
    // Unlocking a lock not held says so.
    match a.space_unlock(&key, token).await {
        Err(ColonyError::Space(SpaceError::NotHeld { .. })) => {}
        other => panic!("expected NotHeld, got {other:?}"),
    }
    network.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespaces_are_created_used_and_destroyed() {
    let network = three_peers().await;
    let [a, b] = [0, 1].map(|i| network.peers()[i].clone());
    let key = ObjectKey::new("job-7", "row-1");
    match settled("put", || a.space_put(&key, b"x".to_vec(), Tags::new())).await {
        Err(ColonyError::Space(SpaceError::UnknownNamespace(ns))) if ns == "job-7" => {}
        other => panic!("expected UnknownNamespace, got {other:?}"),
    }
    settled("create", || a.space_create_namespace("job-7"))
        .await
        .expect("create");
    b.space_put(&key, b"x".to_vec(), Tags::new())
        .await
        .expect("put in the new namespace");
    assert_eq!(b.space_list("job-7").await.expect("list").entries.len(), 1);
    a.space_destroy_namespace("job-7").await.expect("destroy");
    match b.space_get(&key).await {
        Err(ColonyError::Space(SpaceError::UnknownNamespace(_))) => {}
        other => panic!("expected UnknownNamespace after destruction, got {other:?}"),
    }
    network.shutdown().await;
}

/// The names of the chunk objects in `namespace`, through the low-level
/// listing of every partition (which hides nothing).
async fn chunk_objects(peer: &colony::Peer, namespace: &str) -> Vec<String> {
    let mut names = Vec::new();
    for partition in 0..colony::PARTITIONS {
        let op = SpaceOp::List {
            namespace: namespace.to_string(),
            partition,
        };
        match peer.space_request(op, colony::SPACE_TIMEOUT).await {
            Ok(SpaceReply::Listed { entries, .. }) => names.extend(
                entries
                    .into_iter()
                    .map(|e| e.name)
                    .filter(|n| n.starts_with(colony::CHUNK_PREFIX)),
            ),
            other => panic!("list partition {partition}: {other:?}"),
        }
    }
    names.sort();
    names
}

/// `len` pseudo-random bytes (a fixed seed per value).
fn random_value(seed: u64, len: usize) -> Vec<u8> {
    use rand::{RngCore, SeedableRng};
    let mut value = vec![0u8; len];
    rand::rngs::SmallRng::seed_from_u64(seed).fill_bytes(&mut value);
    value
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_larger_than_an_object_are_chunked_read_whole_and_cleaned_up() {
    const MIB: usize = 1 << 20;
    crate::common::init_tracing();
    let network = LocalNetwork::start(3, |_, config| {
        config.space.max_object_bytes = 16 * MIB;
        config.max_value_bytes = 64 << 20;
    })
    .await
    .expect("start");
    let [a, b, c] = [0, 1, 2].map(|i| network.peers()[i].clone());
    let key = ObjectKey::new("global", "matrix");
    let mut tags = Tags::new();
    tags.insert("kind".into(), TagValue::Text("matrix".into()));

    // 40 MiB, written at one peer, read whole at another.
    let first = random_value(1, 40 * MIB);
    let started = Instant::now();
    let v1 = settled("large put", || {
        a.space_put(&key, first.clone(), tags.clone())
    })
    .await
    .expect("large put");
    let put_took = started.elapsed();
    assert_eq!(v1, 1);
    let started = Instant::now();
    let read = b.space_get(&key).await.expect("get").expect("present");
    let get_took = started.elapsed();
    eprintln!(
        "figure: 40 MiB value put in {:.2} s, read back at another peer in {:.2} s",
        put_took.as_secs_f64(),
        get_took.as_secs_f64()
    );
    assert!(read.value == first, "the value read differs");
    assert_eq!(read.version, 1);
    assert_eq!(read.tags, tags, "the user's tags, and only them");
    // Forty chunks of 1 MiB, hidden from listings, which show the whole
    // size.
    assert_eq!(chunk_objects(&c, "global").await.len(), 40);
    let listing = c.space_list("global").await.expect("list");
    assert_eq!(listing.entries.len(), 1, "{:?}", listing.entries);
    assert_eq!(listing.entries[0].name, "matrix");
    assert_eq!(listing.entries[0].size, 40 * MIB as u64);
    assert_eq!(listing.entries[0].tags, tags);

    // Compare-and-set on the version read: the old chunks go; a stale one
    // is refused and leaves no chunk behind.
    let second = random_value(2, 9 * MIB + 7);
    let v2 = c
        .space_cas(&key, read.version, second.clone(), Tags::new())
        .await
        .expect("cas");
    assert_eq!(v2, 2);
    match a
        .space_cas(&key, 1, random_value(3, 5 * MIB), Tags::new())
        .await
    {
        Err(ColonyError::Space(SpaceError::VersionMismatch { current: 2 })) => {}
        other => panic!("expected a version mismatch, got {other:?}"),
    }
    assert_eq!(chunk_objects(&b, "global").await.len(), 10);
    let read = a.space_get(&key).await.expect("get").expect("present");
    assert!(read.value == second);
    assert_eq!(read.tags, Tags::new());

    // Fencing tokens apply to the commit too.
    let guard = b
        .space_lock(&key, LockMode::Write, Duration::from_secs(5))
        .await
        .expect("lock");
    match a
        .space_put(&key, random_value(4, 5 * MIB), Tags::new())
        .await
    {
        Err(ColonyError::Space(SpaceError::Locked)) => {}
        other => panic!("expected Locked, got {other:?}"),
    }
    let third = random_value(5, 6 * MIB);
    let v3 = b
        .space_put_fenced(&key, third.clone(), Tags::new(), guard.token())
        .await
        .expect("fenced large write");
    assert_eq!(v3, 3);
    guard.unlock().await.expect("unlock");
    let chunks = chunk_objects(&a, "global").await;
    assert_eq!(chunks.len(), 6, "{chunks:?}");
    assert!(
        c.space_get(&key)
            .await
            .expect("get")
            .expect("present")
            .value
            == third
    );

    // A chunk deleted or altered underneath: a clear error naming the
    // object and the chunk, never a wrong value.
    let chunk = |name: &str| ObjectKey::new("global", name);
    let op = SpaceOp::Put {
        key: chunk(&chunks[1]),
        value: vec![0u8; MIB],
        tags: Tags::new(),
        condition: Condition::Always,
        token: None,
    };
    a.space_request(op, colony::SPACE_TIMEOUT)
        .await
        .expect("alter a chunk");
    match b.space_get(&key).await {
        Err(e @ ColonyError::DamagedValue { .. }) => {
            let text = e.to_string();
            assert!(
                text.contains("global/matrix") && text.contains("does not match its BLAKE3"),
                "{text}"
            );
        }
        other => panic!("expected a damaged value, got {other:?}"),
    }
    let op = SpaceOp::Delete {
        key: chunk(&chunks[0]),
        condition: Condition::Always,
        token: None,
    };
    a.space_request(op, colony::SPACE_TIMEOUT)
        .await
        .expect("delete a chunk");
    match c.space_get(&key).await {
        Err(e @ ColonyError::DamagedValue { .. }) => {
            let text = e.to_string();
            assert!(
                text.contains("global/matrix") && text.contains("is missing"),
                "{text}"
            );
            eprintln!("refused as it should be: {text}");
        }
        other => panic!("expected a missing chunk, got {other:?}"),
    }

    // Deleting the object deletes its chunks.
    a.space_delete(&key, Condition::Always)
        .await
        .expect("delete");
    assert_eq!(b.space_get(&key).await.expect("get"), None);
    assert_eq!(chunk_objects(&c, "global").await, Vec::<String>::new());
    assert!(c
        .space_list("global")
        .await
        .expect("list")
        .entries
        .is_empty());

    // Reserved names and tags, and the bound on values, are refused.
    match a
        .space_put(&chunk(&chunks[0]), b"x".to_vec(), Tags::new())
        .await
    {
        Err(ColonyError::Space(SpaceError::InvalidName(why))) => {
            assert!(why.contains("reserved"), "{why}")
        }
        other => panic!("expected a reserved name, got {other:?}"),
    }
    let mut reserved = Tags::new();
    reserved.insert(colony::SIZE_TAG.into(), TagValue::Int(5));
    match a.space_put(&key, b"x".to_vec(), reserved).await {
        Err(ColonyError::Space(SpaceError::InvalidTags(why))) => {
            assert!(why.contains("reserved"), "{why}")
        }
        other => panic!("expected a reserved tag, got {other:?}"),
    }
    match a
        .space_put(&key, vec![1u8; 64 * MIB + 1], Tags::new())
        .await
    {
        Err(ColonyError::Space(SpaceError::TooLarge { size, max })) => {
            assert_eq!((size, max), (64 * MIB as u64 + 1, 64 * MIB as u64))
        }
        other => panic!("expected TooLarge, got {other:?}"),
    }
    let mut written = 0;
    for peer in network.peers() {
        let status = peer.status().await.expect("status");
        assert_eq!(status.space.chunk_cleanup_failures, 0);
        written += status.space.chunked_writes;
    }
    assert_eq!(written, 3);
    network.shutdown().await;
}

/// The holders named by the erasure-coded value at `key`'s manifest, and
/// its version.
async fn shard_holders_of(peer: &colony::Peer, key: &ObjectKey) -> (Vec<String>, u64) {
    let reply = settled("raw manifest", || {
        peer.space_request(SpaceOp::Get { key: key.clone() }, Duration::from_secs(10))
    })
    .await
    .expect("the manifest is read");
    let SpaceReply::Value(Some(object)) = reply else {
        panic!("no manifest: {reply:?}");
    };
    assert!(
        object.tags.contains_key(colony::SHARDS_TAG),
        "{:?}",
        object.tags
    );
    let manifest: serde_json::Value =
        serde_json::from_slice(&object.value).expect("the manifest is JSON");
    let holders = manifest["holders"]
        .as_array()
        .expect("holders")
        .iter()
        .map(|h| h.as_str().expect("a peer id").to_string())
        .collect();
    (holders, object.version)
}

/// Shards held over `peers`.
async fn shards_over(peers: &[&colony::Peer]) -> usize {
    let mut total = 0;
    for peer in peers {
        total += peer.status().await.expect("status").space.shards;
    }
    total
}

/// Two of three peers stop gracefully one right after the other: each is
/// dropped from the homes it was in before it goes (there is no peer to
/// replace it), so the last one holds every object alone and reads them;
/// and, the peers that left holding nothing, it creates the home of a new
/// key although they were of its creation zone. Before, the second leave
/// took the majority of every home with it, and a new key could not be
/// written until the departed were forgotten ten minutes later.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_peers_leaving_one_after_the_other_take_nothing_with_them() {
    let network = three_peers().await;
    let peers: Vec<colony::Peer> = network.peers().to_vec();
    let keys: Vec<ObjectKey> = (0..8)
        .map(|i| ObjectKey::new("global", format!("kept-{i}")))
        .collect();
    for (i, key) in keys.iter().enumerate() {
        settled("put", || {
            peers[i % 3].space_put(key, vec![i as u8; 100], Tags::new())
        })
        .await
        .expect("put");
    }
    peers[1].shutdown().await;
    peers[2].shutdown().await;
    let survivor = &peers[0];
    for (i, key) in keys.iter().enumerate() {
        let object = settled("get after the leaves", || survivor.space_get(key))
            .await
            .expect("get")
            .unwrap_or_else(|| panic!("{key} lost"));
        assert_eq!(object.value, vec![i as u8; 100], "{key}");
    }
    let new = ObjectKey::new("global", "written-after");
    let version = settled("put of a new key", || {
        survivor.space_put(&new, b"after".to_vec(), Tags::new())
    })
    .await
    .expect("a new key's home is created");
    assert_eq!(version, 1);
    network.shutdown().await;
}

/// An erasure-coded value (2+1) is read back from its parity when the
/// holder of a data shard is gone; its first live holder then rebuilds the
/// lost shards on a new peer and commits the manifest naming it, so the
/// value survives a second holder leaving (2+1 alone tolerates one); and a
/// shard no committed value names is dropped after the grace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_erasure_coded_value_is_read_from_parity_and_repaired_when_a_holder_goes() {
    crate::common::init_tracing();
    let network = LocalNetwork::start(5, |_, config| {
        config.shard_keeping = ShardKeeping {
            interval: Duration::from_millis(300),
            orphan_grace: Duration::from_secs(2),
        };
    })
    .await
    .expect("start");
    let peers: Vec<colony::Peer> = network.peers().to_vec();
    let by_id = |id: &str| {
        peers
            .iter()
            .find(|p| p.peer_id().to_string() == id)
            .expect("a holder is one of the peers")
    };
    let key = ObjectKey::new("global", "coded");
    // Two stripes of 2 MiB (the chunk is 1 MiB, k = 2).
    let value = random_value(11, (2 << 20) + 12_345);
    let coded = Storage::Coded { k: 2, m: 1 };
    settled("coded put", || {
        peers[0].space_write_stored(
            &key,
            value.clone(),
            Tags::new(),
            Condition::Always,
            None,
            coded,
        )
    })
    .await
    .expect("put");
    let (holders, version) = shard_holders_of(&peers[0], &key).await;
    assert_eq!(holders.len(), 3);
    assert!(holders[0] != holders[1] && holders[1] != holders[2] && holders[0] != holders[2]);
    let all: Vec<&colony::Peer> = peers.iter().collect();
    assert_eq!(
        shards_over(&all).await,
        6,
        "three holders of two stripes' shards"
    );
    // The holder of data shard 0 leaves: reads decode from shard 1 and
    // the parity.
    by_id(&holders[0]).shutdown().await;
    let reader = peers
        .iter()
        .find(|p| !holders.contains(&p.peer_id().to_string()))
        .expect("a peer holding nothing");
    let got = settled("read without data shard 0", || reader.space_get(&key))
        .await
        .expect("read")
        .expect("present");
    assert!(got.value == value, "the value read from parity differs");
    // Repaired: a live peer holds column 0 now.
    let deadline = Instant::now() + Duration::from_secs(30);
    let repaired = loop {
        let (now, v) = shard_holders_of(reader, &key).await;
        if now[0] != holders[0] {
            assert!(v > version, "the repair committed a new version");
            break now;
        }
        assert!(Instant::now() < deadline, "not repaired: {now:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(repaired[1..], holders[1..], "only the lost column moved");
    assert!(!holders.contains(&repaired[0]));
    let repairs: u64 = {
        let mut n = 0;
        for p in peers
            .iter()
            .filter(|p| p.peer_id().to_string() != holders[0])
        {
            n += p.status().await.expect("status").space.shard_repairs;
        }
        n
    };
    assert_eq!(repairs, 1, "one peer repaired it, once");
    // A second original holder leaves: without the repair, one shard of
    // three would be left; with it, two.
    by_id(&holders[1]).shutdown().await;
    let reader = peers
        .iter()
        .find(|p| !holders.contains(&p.peer_id().to_string()))
        .expect("a reader");
    let got = settled("read with two original holders gone", || {
        reader.space_get(&key)
    })
    .await
    .expect("read")
    .expect("present");
    assert!(got.value == value, "the repaired value differs");
    // A shard no manifest names (a writer that crashed before its
    // manifest) is dropped once it has been an orphan for the grace.
    let up: Vec<&colony::Peer> = peers
        .iter()
        .filter(|p| p.peer_id().to_string() != holders[0] && p.peer_id().to_string() != holders[1])
        .collect();
    // Column 1 is rebuilt in turn: three live columns of two stripes.
    let deadline = Instant::now() + Duration::from_secs(30);
    while shards_over(&up).await != 6 {
        assert!(Instant::now() < deadline, "column 1 not rebuilt");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let before = 6;
    let shard = colony::Shard {
        index: 0,
        k: 1,
        m: 0,
        len: 4,
        bytes: b"lost".to_vec(),
    };
    let orphan = SpaceOp::PutShard {
        key: ObjectKey::new("global", "never-committed"),
        id: colony::ShardId {
            write: 99,
            stripe: 0,
            index: 0,
        },
        shard,
    };
    let kept = settled("an orphan shard", || {
        reader.space_request(orphan.clone(), Duration::from_secs(10))
    })
    .await;
    assert!(matches!(kept, Ok(SpaceReply::ShardKept)), "{kept:?}");
    assert_eq!(shards_over(&up).await, before + 1);
    let deadline = Instant::now() + Duration::from_secs(20);
    while shards_over(&up).await != before {
        assert!(Instant::now() < deadline, "the orphan shard stayed");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    network.shutdown().await;
}
