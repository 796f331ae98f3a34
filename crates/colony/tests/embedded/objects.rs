//! Distributed objects across embedded peers on real libp2p connections:
//! calls from several peers to one object, its primary crashed mid-run.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use colony::{
    ActiveObject, CallError, ColonyError, LocalNetwork, ObjectContext, ObjectProtocol, Peer, Ref,
};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct Counter {
    value: u64,
}

#[derive(Serialize, Deserialize)]
enum Count {
    Add(u64),
    Get,
}

impl ActiveObject for Counter {
    type Params = u64;
    type Request = Count;
    type Reply = u64;
    const TYPE: &'static str = "counter";

    fn create(_ctx: &mut ObjectContext<'_>, start: u64) -> Result<Self, String> {
        Ok(Counter { value: start })
    }

    fn handle(&mut self, _ctx: &mut ObjectContext<'_>, request: Count) -> Result<u64, String> {
        if let Count::Add(n) = request {
            self.value += n;
        }
        Ok(self.value)
    }
}

async fn network(n: usize) -> LocalNetwork {
    LocalNetwork::start(n, |_, config| {
        config.object_types.register::<Counter>();
    })
    .await
    .expect("start")
}

/// The peer whose objects core serves `counter` now.
async fn primary_of(peers: &[Peer], counter: &Ref<Counter>) -> Option<usize> {
    for (i, peer) in peers.iter().enumerate() {
        // A crashed peer answers nothing.
        let Ok(objects) = peer.objects().await else {
            continue;
        };
        if objects.iter().any(|o| o.uri == *counter.uri()) {
            return Some(i);
        }
    }
    None
}

/// Calls `Add(1)` `calls` times from `peer`, ten in flight at once; the
/// value each call was answered with.
async fn add_many(peer: Peer, counter: Ref<Counter>, calls: u64, done: Arc<AtomicU64>) -> Vec<u64> {
    let mut values = Vec::new();
    let mut left = calls;
    while left > 0 {
        let batch = left.min(10);
        left -= batch;
        let futures = (0..batch).map(|_| peer.call_object(&counter, &Count::Add(1)));
        for answer in futures::future::join_all(futures).await {
            values.push(answer.expect("every call is answered with its value"));
            done.fetch_add(1, Ordering::Relaxed);
        }
    }
    values
}

/// pml: three peers call one counter while the peer serving it is crashed.
/// Every call is answered, each with the value its own increment made:
/// no call lost, none run twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pml_counter_counts_every_call_once_across_a_crash_of_its_peer() {
    crate::common::init_tracing();
    let network = network(5).await;
    let peers = network.peers().to_vec();
    let counter = peers[0]
        .create_object::<Counter>(&0, ObjectProtocol::Pml { ttc_ms: 2_000 })
        .await
        .expect("created");
    let primary = primary_of(&peers, &counter)
        .await
        .expect("one peer serves it");
    let callers: Vec<Peer> = (0..peers.len())
        .filter(|i| *i != primary)
        .take(3)
        .map(|i| peers[i].clone())
        .collect();
    const CALLS: u64 = 200;
    let done = Arc::new(AtomicU64::new(0));
    let tasks: Vec<_> = callers
        .iter()
        .map(|peer| tokio::spawn(add_many(peer.clone(), counter.clone(), CALLS, done.clone())))
        .collect();
    // A third of the way in, the primary goes without a word.
    let deadline = Instant::now() + Duration::from_secs(60);
    while done.load(Ordering::Relaxed) < CALLS {
        assert!(Instant::now() < deadline, "calls stalled before the crash");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let crashed_at = Instant::now();
    peers[primary].crash().await;
    let mut values = Vec::new();
    for task in tasks {
        values.extend(task.await.expect("caller task"));
    }
    eprintln!(
        "figure: {} calls answered, the last {:.2} s after the crash",
        values.len(),
        crashed_at.elapsed().as_secs_f64()
    );
    let distinct: BTreeSet<u64> = values.iter().copied().collect();
    assert_eq!(
        distinct.len(),
        values.len(),
        "a value answered twice: an increment ran twice"
    );
    assert_eq!(distinct, (1..=3 * CALLS).collect::<BTreeSet<u64>>());
    let total = callers[0]
        .call_object(&counter, &Count::Get)
        .await
        .expect("get");
    assert_eq!(total, 3 * CALLS);
    let new_primary = primary_of(&peers, &counter).await.expect("served again");
    assert_ne!(new_primary, primary);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_that_cannot_succeed_fail_with_a_reason() {
    crate::common::init_tracing();
    let network = network(3).await;
    let peers = network.peers();
    // A type no peer hosts.
    #[derive(Serialize, Deserialize)]
    struct Unknown;
    impl ActiveObject for Unknown {
        type Params = ();
        type Request = ();
        type Reply = ();
        const TYPE: &'static str = "unknown";
        fn create(_: &mut ObjectContext<'_>, _: ()) -> Result<Self, String> {
            Ok(Unknown)
        }
        fn handle(&mut self, _: &mut ObjectContext<'_>, _: ()) -> Result<(), String> {
            Ok(())
        }
    }
    let refused = peers[0]
        .create_object::<Unknown>(&(), ObjectProtocol::Pml { ttc_ms: 60_000 })
        .await;
    assert!(
        matches!(refused, Err(ColonyError::Object(CallError::UnknownType(_)))),
        "{refused:?}"
    );
    let counter = peers[1]
        .create_object::<Counter>(&7, ObjectProtocol::Checkpoint { ttc_ms: 1_000 })
        .await
        .expect("created");
    assert_eq!(
        peers[2]
            .call_object(&counter, &Count::Get)
            .await
            .expect("get"),
        7
    );
    peers[2]
        .delete_object(counter.uri())
        .await
        .expect("deleted");
    let gone = peers[0].call_object(&counter, &Count::Get).await;
    assert!(
        matches!(gone, Err(ColonyError::Object(CallError::NoSuchObject(_)))),
        "{gone:?}"
    );
    let uri: colony::ObjectUri = "colony://colony/0123456789abcdef0123456789abcdef"
        .parse()
        .expect("uri");
    let nowhere: Ref<Counter> = Ref::new(uri);
    let started = Instant::now();
    let missing = peers[0]
        .object_request(
            colony_core::object::ObjectRequest::Call {
                to: nowhere.uri().clone(),
                object_type: "counter".into(),
                request: colony_core::object::encode(&Count::Get),
            },
            Some(Duration::from_secs(2)),
        )
        .await;
    assert!(
        matches!(
            missing,
            Err(ColonyError::Object(CallError::NoSuchObject(_)))
        ),
        "{missing:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
}
