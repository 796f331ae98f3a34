//! Distributed objects across real `colony peer` processes: the CLI's
//! commands, and exactly-once calls under `pml` across a SIGKILL of the
//! object's peer.

mod common;

use std::collections::BTreeSet;
use std::process::Command;
use std::time::{Duration, Instant};

use colony::ObjectSummary;
use common::{
    objects_at, settled, start_network, test_dir, wait_until, ObjectApi, PeerProc, SERIAL,
};

/// Runs `colony ARGS` against the peer in `peer`'s data directory.
fn colony(peer: &PeerProc, args: &[&str]) -> std::process::Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_colony"));
    command.args(args).arg("--data-dir").arg(&peer.dir);
    command.output().expect("run colony")
}

fn stdout(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

fn stderr(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stderr).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_object_commands_create_call_list_look_up_and_delete() {
    let _serial = SERIAL.lock().await;
    let root = test_dir("object-cli");
    let peers = start_network(&root, 3, &[]);
    settled(&peers.iter().collect::<Vec<_>>()).await;
    let [a, b, c] = [&peers[0], &peers[1], &peers[2]];

    let created = colony(
        a,
        &[
            "object",
            "create",
            "counter",
            "5",
            "--protocol",
            "pml",
            "--ttc-s",
            "2",
        ],
    );
    assert!(created.status.success(), "{}", stderr(&created));
    let uri = stdout(&created);
    assert!(uri.starts_with("colony://"), "{uri}");

    let added = colony(b, &["object", "call", &uri, r#"{"add": 2}"#]);
    assert!(added.status.success(), "{}", stderr(&added));
    assert_eq!(stdout(&added), "7");
    let many = colony(
        c,
        &["object", "call", &uri, r#"{"add": 1}"#, "--repeat", "10"],
    );
    assert!(many.status.success(), "{}", stderr(&many));
    let values: BTreeSet<i64> = stdout(&many).lines().map(|l| l.parse().unwrap()).collect();
    assert_eq!(values, (8..=17).collect(), "ten additions, each once");

    let descriptor = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/deploy/objects.toml"
    );
    let deployed = colony(
        b,
        &[
            "object",
            "create",
            "counter",
            "0",
            "--descriptor",
            descriptor,
            "--virtual-node",
            "master",
        ],
    );
    assert!(deployed.status.success(), "{}", stderr(&deployed));
    let deployed = colony(a, &["object", "get", &stdout(&deployed)]);
    assert!(
        stdout(&deployed).ends_with("counter pml ttc=30s"),
        "{}",
        stdout(&deployed)
    );

    let got = colony(c, &["object", "get", &uri]);
    assert!(got.status.success(), "{}", stderr(&got));
    assert_eq!(stdout(&got), format!("{uri} counter pml ttc=2s"));

    // Exactly one peer lists it, with the calls it served.
    let mut listed = Vec::new();
    for peer in &peers {
        let out = colony(peer, &["objects", "--json"]);
        assert!(out.status.success(), "{}", stderr(&out));
        let objects: Vec<ObjectSummary> = serde_json::from_str(&stdout(&out)).unwrap();
        listed.extend(objects.into_iter().filter(|o| o.uri == uri));
    }
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!((listed[0].protocol.as_str(), listed[0].served), ("pml", 11));
    let table = colony(a, &["objects"]);
    assert!(stdout(&table).starts_with("OBJECT"), "{}", stdout(&table));

    // Bad input: clear errors, nothing sent for what cannot be right.
    let bad_uri = colony(a, &["object", "call", "colony:/nope", "\"get\""]);
    assert!(!bad_uri.status.success());
    assert!(
        stderr(&bad_uri).contains("is not an object URI"),
        "{}",
        stderr(&bad_uri)
    );
    let bad_json = colony(a, &["object", "call", &uri, "get"]);
    assert!(
        stderr(&bad_json).contains("must be JSON"),
        "{}",
        stderr(&bad_json)
    );
    let wrong_request = colony(a, &["object", "call", &uri, r#"{"multiply": 2}"#]);
    assert!(!wrong_request.status.success());
    assert!(
        stderr(&wrong_request).contains("request of a \"counter\""),
        "{}",
        stderr(&wrong_request)
    );
    let unknown = colony(a, &["object", "create", "no-such-type", "0"]);
    assert!(!unknown.status.success());
    assert!(
        stderr(&unknown).contains("no object type"),
        "{}",
        stderr(&unknown)
    );
    let jobs_only = colony(
        a,
        &["object", "create", "counter", "0", "--protocol", "paxos"],
    );
    assert!(
        stderr(&jobs_only).contains("protocol must be"),
        "{}",
        stderr(&jobs_only)
    );

    let removed = colony(b, &["object", "rm", &uri]);
    assert!(removed.status.success(), "{}", stderr(&removed));
    let after = colony(a, &["object", "call", &uri, "\"get\""]);
    assert!(!after.status.success());
    assert!(stderr(&after).contains("no object"), "{}", stderr(&after));
    let _ = std::fs::remove_dir_all(&root);
}

/// The issue's figure: 3 callers × 10,000 additions under `pml`, the
/// object's peer SIGKILLed a third of the way: every addition acknowledged
/// exactly once (the replies are exactly 1..=30,000), the counter ends at
/// 30,000, and the first call after the kill succeeds from the new primary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_thousand_calls_run_exactly_once_across_a_sigkill_of_the_objects_peer() {
    const CALLERS: usize = 3;
    const CALLS_EACH: usize = 10_000;
    const BATCH: usize = 250;
    let _serial = SERIAL.lock().await;
    let root = test_dir("object-kill");
    let mut peers = start_network(&root, 4, &[]);
    settled(&peers.iter().collect::<Vec<_>>()).await;

    let created = colony(
        &peers[0],
        &["object", "create", "counter", "0", "--protocol", "pml"],
    );
    assert!(created.status.success(), "{}", stderr(&created));
    let uri = stdout(&created);
    let victim = wait_until(Duration::from_secs(10), "the counter's primary", || {
        let peers = &peers;
        let uri = uri.clone();
        async move {
            for (i, peer) in peers.iter().enumerate() {
                if objects_at(peer).await.iter().any(|o| o.uri == uri) {
                    return Some(i);
                }
            }
            None
        }
    })
    .await;
    let callers: Vec<usize> = (0..peers.len()).filter(|i| *i != victim).collect();

    let acknowledged = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for &caller in &callers {
        let peer = ObjectApi::of(&peers[caller]);
        let uri = uri.clone();
        let acknowledged = acknowledged.clone();
        tasks.push(tokio::spawn(async move {
            let mut values = Vec::with_capacity(CALLS_EACH);
            while values.len() < CALLS_EACH {
                let n = BATCH.min(CALLS_EACH - values.len());
                let batch = peer.call(&uri, serde_json::json!({ "add": 1 }), n).await?;
                acknowledged.fetch_add(batch.len(), std::sync::atomic::Ordering::Relaxed);
                values.extend(batch);
            }
            Ok::<Vec<i64>, String>(values)
        }));
    }

    wait_until(Duration::from_secs(60), "a third of the calls", || {
        let done = acknowledged.load(std::sync::atomic::Ordering::Relaxed);
        async move { (done >= CALLERS * CALLS_EACH / 3).then_some(()) }
    })
    .await;
    peers[victim].kill();
    let killed_at = Instant::now();
    let probe = &ObjectApi::of(&peers[callers[0]]);
    let first = loop {
        if probe.call(&uri, serde_json::json!("get"), 1).await.is_ok() {
            break killed_at.elapsed();
        }
        assert!(
            killed_at.elapsed() < Duration::from_secs(30),
            "no call succeeded after the kill"
        );
    };
    eprintln!(
        "first successful call {} ms after the SIGKILL",
        first.as_millis()
    );

    let mut replies = BTreeSet::new();
    let mut total = 0;
    for task in tasks {
        let values = task
            .await
            .expect("caller task")
            .expect("every call answered");
        assert_eq!(values.len(), CALLS_EACH);
        total += values.len();
        replies.extend(values);
    }
    let expected = i64::try_from(CALLERS * CALLS_EACH).unwrap();
    assert_eq!(total, CALLERS * CALLS_EACH);
    let missing = (1..=expected).filter(|v| !replies.contains(v)).count();
    let repeated = total - replies.len();
    assert_eq!(
        (missing, repeated, replies.last().copied()),
        (0, 0, Some(expected)),
        "each acknowledged addition ran once: the replies must be 1..={expected} \
         (missing values, repeated values, highest value)"
    );
    let value = probe.call(&uri, serde_json::json!("get"), 1).await.unwrap();
    let additions = probe
        .call(&uri, serde_json::json!("additions"), 1)
        .await
        .unwrap();
    assert_eq!((value[0], additions[0]), (expected, expected));
    let now_at = wait_until(Duration::from_secs(10), "the counter's new primary", || {
        let peers = &peers;
        let uri = uri.clone();
        async move {
            for (i, peer) in peers.iter().enumerate().filter(|(i, _)| *i != victim) {
                if objects_at(peer).await.iter().any(|o| o.uri == uri) {
                    return Some(i);
                }
            }
            None
        }
    })
    .await;
    assert_ne!(now_at, victim);
    let _ = std::fs::remove_dir_all(&root);
}

/// An object's handler runs away from its peer's event loop: while an
/// island evolves for seconds, the same peer lists it as running and
/// serves calls to another object through its API, and the island's call
/// still completes. (With handlers on the event loop, the peer answered
/// nothing until the island was done.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_handler_leaves_its_peer_serving_other_calls() {
    use colony_apps::tsp::{Instance, IslandParams};

    let _serial = SERIAL.lock().await;
    let root = test_dir("object-long-handler");
    let peers = start_network(&root, 2, &[]);
    settled(&peers.iter().collect::<Vec<_>>()).await;
    // 1,000 cities: each generation's local search takes milliseconds; a
    // population of 2 keeps the creation (which runs on the event loop)
    // short.
    let mut state = 7u64;
    let cities = (0..1_000)
        .map(|_| {
            let mut next = || {
                state = state.wrapping_mul(6364136223846793005).wrapping_add(1);
                (state >> 33) as f64 % 10_000.0
            };
            [next(), next()]
        })
        .collect();
    let instance = Instance::from_coordinates("random1000", cities).expect("an instance");
    let mut params = IslandParams::new(&instance, 0, 7);
    params.config.population_size = 2;
    params.config.offspring_per_generation = 40;
    let params = serde_json::to_value(params).unwrap();
    let island = ObjectApi::of(&peers[0])
        .create("tsp-island", params, "none")
        .await;
    let host = wait_until(Duration::from_secs(20), "the island to be listed", || {
        let peers = &peers;
        let island = &island;
        async move {
            for peer in peers {
                if objects_at(peer).await.iter().any(|o| &o.uri == island) {
                    return Some(peer);
                }
            }
            None
        }
    })
    .await;
    let api = ObjectApi::of(host);
    let counter = api.create_counter("none").await;

    let evolving = {
        let api = api.clone();
        let island = island.clone();
        tokio::spawn(async move {
            let evolve = serde_json::json!({ "Evolve": { "generations": 1000 } });
            api.call_any(&island, evolve, 1).await
        })
    };
    let running_at = |listed: Vec<ObjectSummary>| {
        listed
            .into_iter()
            .find(|o| o.uri == island)
            .and_then(|o| o.running_ms)
    };
    wait_until(
        Duration::from_secs(20),
        "the island to be listed as running",
        || async { running_at(objects_at(host).await) },
    )
    .await;
    let added = api
        .call(&counter, serde_json::json!({ "add": 1 }), 20)
        .await
        .expect("calls to the counter while the island runs");
    assert_eq!(
        added.iter().copied().collect::<BTreeSet<i64>>(),
        (1..=20).collect(),
        "every addition ran once"
    );
    assert!(
        running_at(objects_at(host).await).is_some() && !evolving.is_finished(),
        "the counter's calls were served while the island ran"
    );
    let evolved = evolving.await.expect("the evolve task");
    assert!(evolved.is_ok(), "the island's call failed: {evolved:?}");
    let _ = std::fs::remove_dir_all(&root);
}

/// `colony bench recovery` SIGKILLs the peer serving a `pml` counter,
/// twice, and reports the time from each kill to the next successful
/// call beside a call's latency with every peer up; every acknowledged
/// increment is in the counter once (and a call that failed during a
/// recovery at most once).
#[test]
fn the_recovery_bench_kills_the_serving_peer_and_times_the_next_call() {
    let report = bench_recovery(&["--kills", "2"]);
    let recoveries = report["recoveries_ms"].as_array().expect("recoveries");
    assert_eq!(recoveries.len(), 2, "{report}");
    // A failover outlasts any call made with every peer up (the killed
    // primary's lease must run out first): the kill happened.
    let call_max = report["call_max_ms"].as_f64().expect("call max");
    for ms in recoveries {
        let ms = ms.as_f64().expect("a number");
        assert!(ms > call_max && ms < 30_000.0, "{report}");
    }
    assert!(
        report["call_p50_ms"].as_f64().is_some_and(|ms| ms > 0.0),
        "{report}"
    );
    let acknowledged = report["acknowledged"].as_i64().expect("acknowledged");
    let failed = report["failed"].as_i64().expect("failed");
    let value = report["final_value"].as_i64().expect("final value");
    assert!(acknowledged > 50, "{report}");
    assert!(
        (acknowledged..=acknowledged + failed).contains(&value),
        "{report}"
    );
}

/// The JSON report of `colony bench recovery` with `args`, which must
/// succeed.
fn bench_recovery(args: &[&str]) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_colony"))
        .args(["bench", "recovery", "--json"])
        .args(args)
        .env("RUST_LOG", "error")
        .output()
        .expect("colony bench recovery");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
}

/// `colony bench recovery --protocol cic` kills the peer of one island of
/// a ring that exchanges migrants: the dead island's lost state rolls its
/// neighbours back with it, and the bench times the first call to it and
/// the last island restored.
#[test]
fn the_cic_recovery_bench_times_the_whole_applications_rollback() {
    let report = bench_recovery(&["--protocol", "cic", "--kills", "1"]);
    let call_max = report["call_max_ms"].as_f64().expect("call max");
    let first = report["recoveries_ms"][0].as_f64().expect("a recovery");
    assert!(first > call_max && first < 30_000.0, "{report}");
    // The island served a call after its last checkpoint and had sent
    // migrants: it and at least the neighbour that took them roll back.
    let restored = report["islands_rolled_back"][0].as_u64().expect("a count");
    assert!(restored >= 2, "{report}");
    let rollback = report["rollbacks_ms"][0].as_f64().expect("a rollback");
    assert!(rollback > call_max && rollback < 30_000.0, "{report}");
}
