//! Planned moves of distributed objects across real `colony peer`
//! processes (seed 004 §3.4 and §4.1): a peer leaving gracefully hands its
//! objects over, and a closer peer joining takes them, while callers on
//! other peers keep calling — under every protocol, no call is lost and
//! none runs twice.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use colony_core::object::ObjectUri;
use common::{
    objects_at, settled, start_network, test_dir, wait_until, ObjectApi, PeerProc, SERIAL,
};

/// The protocols a planned move must lose no call under, as the API names
/// them (long TTCs: only the move itself may checkpoint).
const PROTOCOLS: [&str; 3] = ["pml", "checkpoint", "none"];

/// Calls per `POST /v1/calls` of one caller.
const BATCH: usize = 10;

/// Which of `peers` (by index, skipping `None`) lists `uri` as its primary.
async fn primary_of(peers: &[Option<&PeerProc>], uri: &str) -> Option<usize> {
    for (i, peer) in peers.iter().enumerate() {
        if let Some(peer) = peer {
            if objects_at(peer).await.iter().any(|o| o.uri == uri) {
                return Some(i);
            }
        }
    }
    None
}

/// One caller's loop: the replies it had, or why a call failed.
type CallerTask = tokio::task::JoinHandle<Result<Vec<i64>, String>>;

/// Callers adding 1 to each object, from each of some peers, until told
/// to stop; each keeps the replies it had.
struct Callers {
    stop: Arc<AtomicBool>,
    acknowledged: Arc<AtomicUsize>,
    tasks: Vec<(String, CallerTask)>,
}

impl Callers {
    fn start(from: &[&PeerProc], uris: &[String]) -> Callers {
        let stop = Arc::new(AtomicBool::new(false));
        let acknowledged = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for peer in from {
            for uri in uris {
                let api = ObjectApi::of(peer);
                let (stop, acknowledged) = (stop.clone(), acknowledged.clone());
                let uri = uri.clone();
                let key = uri.clone();
                let task = tokio::spawn(async move {
                    let mut values = Vec::new();
                    while !stop.load(Ordering::Relaxed) {
                        let batch = api.call(&uri, serde_json::json!({ "add": 1 }), BATCH).await;
                        let batch = batch
                            .map_err(|e| format!("{uri}: after {} replies: {e}", values.len()))?;
                        acknowledged.fetch_add(batch.len(), Ordering::Relaxed);
                        values.extend(batch);
                    }
                    Ok(values)
                });
                tasks.push((key, task));
            }
        }
        Callers {
            stop,
            acknowledged,
            tasks,
        }
    }

    fn acknowledged(&self) -> usize {
        self.acknowledged.load(Ordering::Relaxed)
    }

    /// Waits until `more` further calls were answered.
    async fn wait_for_more(&self, more: usize, what: &str) {
        let target = self.acknowledged() + more;
        wait_until(Duration::from_secs(20), what, || async {
            // A caller that failed stops counting: its error is the news.
            let failed = self.tasks.iter().any(|(_, t)| t.is_finished());
            (failed || self.acknowledged() >= target).then_some(())
        })
        .await;
    }

    /// Stops them: every object's replies, from every caller.
    async fn stop(self) -> BTreeMap<String, Vec<i64>> {
        self.stop.store(true, Ordering::Relaxed);
        let mut replies: BTreeMap<String, Vec<i64>> = BTreeMap::new();
        for (uri, task) in self.tasks {
            let values = task
                .await
                .expect("caller task")
                .unwrap_or_else(|e| panic!("every call is answered: {e}"));
            replies.entry(uri).or_default().extend(values);
        }
        replies
    }
}

/// Every answered addition ran exactly once: the replies to `uri` are
/// exactly 1..=N, and the counter (asked through `api`) holds N.
async fn assert_exactly_once(api: &ObjectApi, uri: &str, protocol: &str, mut replies: Vec<i64>) {
    replies.sort_unstable();
    let n = replies.len();
    let expected: Vec<i64> = (1..=i64::try_from(n).unwrap_or(i64::MAX)).collect();
    let missing = expected
        .iter()
        .filter(|v| replies.binary_search(v).is_err())
        .count();
    let mut distinct = replies.clone();
    distinct.dedup();
    let repeated = n - distinct.len();
    assert_eq!(
        (missing, repeated),
        (0, 0),
        "{protocol}: the {n} replies must be exactly 1..={n} (missing, repeated); \
         highest {:?}",
        replies.last()
    );
    let value = api
        .call(uri, serde_json::json!("get"), 1)
        .await
        .unwrap_or_else(|e| panic!("{protocol}: get: {e}"));
    assert_eq!(
        value[0] as usize, n,
        "{protocol}: the counter holds every answered addition, once"
    );
}

/// The position of a peer in the objects' key space (the tail of its
/// multihash, as the peer computes it), first 16 bytes.
fn peer_position(peer_id: &str) -> u128 {
    let id: colony::PeerId = peer_id.parse().expect("a peer id");
    let bytes = id.to_bytes();
    let mut key = [0u8; 32];
    let tail = &bytes[bytes.len().saturating_sub(32)..];
    key[32 - tail.len()..].copy_from_slice(tail);
    let mut first = [0u8; 16];
    first.copy_from_slice(&key[..16]);
    u128::from_be_bytes(first)
}

/// The position of an object's GUID in the key space, first 16 bytes.
fn object_position(uri: &str) -> u128 {
    let uri: ObjectUri = uri.parse().expect("an object URI");
    let mut first = [0u8; 16];
    first.copy_from_slice(&uri.guid.key()[..16]);
    u128::from_be_bytes(first)
}

/// A pml, a checkpoint and a none counter whose primary is one peer, made
/// by creating counters until some peer is primary of one of each: their
/// URIs (in [`PROTOCOLS`] order) and that peer.
async fn objects_on_one_peer(peers: &[&PeerProc]) -> (Vec<String>, usize) {
    let creator = ObjectApi::of(peers[0]);
    let all: Vec<Option<&PeerProc>> = peers.iter().copied().map(Some).collect();
    let mut held: BTreeMap<usize, BTreeMap<&str, String>> = BTreeMap::new();
    for round in 0..40 {
        let protocol = PROTOCOLS[round % PROTOCOLS.len()];
        let uri = creator.create_counter(protocol).await;
        let at = wait_until(Duration::from_secs(10), "the new counter's primary", || {
            primary_of(&all, &uri)
        })
        .await;
        let mine = held.entry(at).or_default();
        mine.entry(protocol).or_insert(uri);
        if mine.len() == PROTOCOLS.len() {
            let uris = PROTOCOLS.iter().map(|p| mine[p].clone()).collect();
            return (uris, at);
        }
    }
    panic!("no peer became primary of one counter of each protocol in 40 creations");
}

/// Seed 004 §4.1: a peer leaving gracefully migrates its objects first.
/// SIGTERM to the primary of a pml, a checkpoint and a none counter while
/// two other peers keep adding to each: the peer exits within its
/// hand-over deadline having handed everything over, another peer serves
/// the counters, and every addition answered ran exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_leaving_gracefully_hands_its_objects_over_losing_no_call() {
    let _serial = SERIAL.lock().await;
    let started = Instant::now();
    let root = test_dir("object-leave");
    let mut peers = start_network(&root, 4, &[]);
    settled(&peers.iter().collect::<Vec<_>>()).await;
    let (uris, victim) = objects_on_one_peer(&peers.iter().collect::<Vec<_>>()).await;
    let others: Vec<usize> = (0..peers.len()).filter(|i| *i != victim).collect();
    let callers = Callers::start(&[&peers[others[0]], &peers[others[1]]], &uris);
    callers
        .wait_for_more(uris.len() * 4 * BATCH, "calls before the leave")
        .await;

    peers[victim].signal("TERM");
    let term_at = Instant::now();
    assert!(
        peers[victim].wait_exit(Duration::from_secs(15)),
        "the leaving peer exits"
    );
    let log = peers[victim].log();
    assert!(log.contains("peer stopped"), "{log}");
    assert!(
        !log.contains("leaving before every unit was handed back"),
        "the leaving peer handed everything over before its deadline:\n{log}"
    );
    eprintln!(
        "the leaving peer exited {:?} after SIGTERM",
        term_at.elapsed()
    );

    let remaining: Vec<Option<&PeerProc>> = peers
        .iter()
        .enumerate()
        .map(|(i, p)| (i != victim).then_some(p))
        .collect();
    for uri in &uris {
        wait_until(
            Duration::from_secs(10),
            "the counter at another peer",
            || primary_of(&remaining, uri),
        )
        .await;
    }
    callers
        .wait_for_more(uris.len() * 4 * BATCH, "calls after the leave")
        .await;
    let replies = callers.stop().await;
    let probe = ObjectApi::of(&peers[others[2]]);
    for (uri, protocol) in uris.iter().zip(PROTOCOLS) {
        let replies = replies.get(uri).cloned().unwrap_or_default();
        eprintln!("{protocol}: {} calls answered", replies.len());
        assert_exactly_once(&probe, uri, protocol, replies).await;
    }
    eprintln!("graceful leave test took {:?}", started.elapsed());
    let _ = std::fs::remove_dir_all(&root);
}

/// Seed 004 §2 and §3.4: a peer joining closer to an object's GUID than
/// its primary takes the object over, while callers keep calling: a pml,
/// a checkpoint and a none counter each end at the newcomer, and every
/// addition answered ran exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closer_newcomer_takes_the_objects_over_losing_no_call() {
    let _serial = SERIAL.lock().await;
    let started = Instant::now();
    let root = test_dir("object-join");
    // The newcomer's identity first, so that objects closer to it than to
    // any peer already there can be picked.
    let mut newcomer = PeerProc::spawn(&root.join("new"), &[]);
    let newcomer_at = peer_position(&newcomer.info.peer_id);
    newcomer.kill();

    let peers = start_network(&root, 3, &[]);
    settled(&peers.iter().collect::<Vec<_>>()).await;
    let positions: Vec<u128> = peers
        .iter()
        .map(|p| peer_position(&p.info.peer_id))
        .collect();
    let creator = ObjectApi::of(&peers[0]);
    let mut uris = Vec::new();
    for protocol in PROTOCOLS {
        let mut found = None;
        for _ in 0..40 {
            let uri = creator.create_counter(protocol).await;
            let at = object_position(&uri);
            let newcomer_closest = positions.iter().all(|p| (at ^ newcomer_at) < (at ^ p));
            if newcomer_closest {
                found = Some(uri);
                break;
            }
        }
        uris.push(found.expect("a counter closest to the newcomer in 40 creations"));
    }
    let all: Vec<Option<&PeerProc>> = peers.iter().map(Some).collect();
    for uri in &uris {
        wait_until(Duration::from_secs(10), "the counter's primary", || {
            primary_of(&all, uri)
        })
        .await;
    }
    let callers = Callers::start(&[&peers[1], &peers[2]], &uris);
    callers
        .wait_for_more(uris.len() * 4 * BATCH, "calls before the join")
        .await;

    newcomer.restart_with(&["--bootstrap".to_string(), peers[0].addr()]);
    let joined_at = Instant::now();
    for uri in &uris {
        wait_until(
            Duration::from_secs(20),
            "the counter at the newcomer",
            || {
                let newcomer = &newcomer;
                async move {
                    objects_at(newcomer)
                        .await
                        .iter()
                        .any(|o| o.uri == *uri)
                        .then_some(())
                }
            },
        )
        .await;
    }
    eprintln!(
        "every counter at the newcomer {:?} after it started",
        joined_at.elapsed()
    );
    callers
        .wait_for_more(uris.len() * 4 * BATCH, "calls after the join")
        .await;
    let replies = callers.stop().await;
    let probe = ObjectApi::of(&peers[0]);
    for (uri, protocol) in uris.iter().zip(PROTOCOLS) {
        assert!(
            !objects_at(&peers[0]).await.iter().any(|o| o.uri == *uri)
                && !objects_at(&peers[1]).await.iter().any(|o| o.uri == *uri)
                && !objects_at(&peers[2]).await.iter().any(|o| o.uri == *uri),
            "{protocol}: only the newcomer serves {uri}"
        );
        let replies = replies.get(uri).cloned().unwrap_or_default();
        eprintln!("{protocol}: {} calls answered", replies.len());
        assert_exactly_once(&probe, uri, protocol, replies).await;
    }
    eprintln!("closer newcomer test took {:?}", started.elapsed());
    let _ = std::fs::remove_dir_all(&root);
}
