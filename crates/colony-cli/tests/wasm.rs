//! WebAssembly guests on real `colony peer` processes that never had them:
//! `colony run --wasm FILE` signs the module and publishes it to its home
//! (the peers closest to its hash that run guests), every peer that trusts
//! the submitter fetches it once on first use (from its home, and from its
//! cache after), runs it sandboxed, and gets the native answers; a peer
//! that runs native applications only, or only code signed by others,
//! takes no part, and the submitter hears from it that it refused and why;
//! hostile guests fail their job with a clear error and the peers keep
//! serving.

mod common;

use std::process::{Command, Output, Stdio};
use std::time::Duration;

use colony_guest_modules::{FLOWSHOP_PATH, HOSTILE_PATH, NQUEENS_PATH};
use common::*;

/// Runs `colony run --json --wasm MODULE ARGS…` as a submitting peer.
fn run_wasm(
    bootstrap: &str,
    peers: usize,
    module: &str,
    args: &[&str],
) -> (Output, serde_json::Value) {
    run_wasm_as(None, bootstrap, peers, module, args)
}

/// `colony run --json --wasm MODULE ARGS…` as the submitter whose data
/// directory is `dir` (its identity and module cache last across runs), or
/// a fresh one, ready to run.
fn wasm_command(
    dir: Option<&std::path::Path>,
    bootstrap: &str,
    peers: usize,
    module: &str,
    args: &[&str],
) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_colony"));
    command
        .args(["run", "--cores", "1", "--json", "--peers"])
        .arg(peers.to_string())
        .args(["--acquire-timeout-s", "10", "--bootstrap", bootstrap])
        .args(["--wasm", module]);
    if let Some(dir) = dir {
        command.arg("--data-dir").arg(dir);
    }
    command.args(args).env("RUST_LOG", "warn");
    command
}

/// [`run_wasm`] as the submitter whose data directory is `dir`, or a fresh
/// one.
fn run_wasm_as(
    dir: Option<&std::path::Path>,
    bootstrap: &str,
    peers: usize,
    module: &str,
    args: &[&str],
) -> (Output, serde_json::Value) {
    let out = wasm_command(dir, bootstrap, peers, module, args)
        .output()
        .expect("run colony");
    let json = String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|line| serde_json::from_str(line).ok())
        .unwrap_or_else(|| {
            panic!(
                "no JSON from colony run; stderr:\n{}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
    (out, json)
}

/// A peer that runs any member's guests, on one core.
fn trusting_peer(dir: &std::path::Path) -> PeerProc {
    PeerProc::spawn(
        dir,
        &["--cores".into(), "1".into(), "--trust-network".into()],
    )
}

/// The job's final view, asked of `peer` until it is not running.
async fn job_end(peer: &PeerProc, job: &str) -> colony::JobInfo {
    wait_until(Duration::from_secs(120), "the job to end", || async {
        let info = peer.job_info(job).await?;
        (info.state != "running").then_some(info)
    })
    .await
}

fn trusting_workers(root: &std::path::Path, n: usize) -> Vec<PeerProc> {
    start_network(
        root,
        n,
        &["--cores".into(), "1".into(), "--trust-network".into()],
    )
}

async fn wait_formed(peers: &[PeerProc]) {
    let refs: Vec<&PeerProc> = peers.iter().collect();
    wait_until(Duration::from_secs(10), "the network to form", || async {
        all_see_all_alive(&refs).await.then_some(())
    })
    .await;
}

/// Each peer's (modules fetched, modules held).
async fn module_counts(peers: &[PeerProc]) -> Vec<(u64, usize)> {
    let mut counts = Vec::new();
    for peer in peers {
        let status = peer.status().await.expect("status");
        assert!(status.modules.guests_enabled);
        counts.push((status.modules.fetched, status.modules.held));
    }
    counts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guest_no_peer_had_runs_on_three_peers_fetched_once_then_cached() {
    let _serial = SERIAL.lock().await;
    let root = test_dir("wasm-nqueens");
    let peers = trusting_workers(&root, 3);
    wait_formed(&peers).await;
    assert_eq!(
        module_counts(&peers).await,
        vec![(0, 0); 3],
        "nobody had it"
    );

    let (out, json) = run_wasm(&peers[0].addr(), 4, NQUEENS_PATH, &["15"]);
    assert!(out.status.success(), "{json}");
    assert_eq!(json["result"], 2_279_184, "{json}");
    assert_eq!(json["verified"], true, "{json}");
    assert!(json["peers_used"].as_u64() >= Some(2), "{json}");
    let first = module_counts(&peers).await;
    let held: usize = first.iter().map(|c| c.1).sum();
    assert!(
        held >= 2,
        "the workers hold it (pushed to its home or fetched): {first:?}"
    );
    assert!(first.iter().all(|c| c.0 <= 1 && c.1 <= 1), "{first:?}");

    // `colony apps` lists it beside the native applications.
    let dir = peers[0].dir.display().to_string();
    let out = Command::new(env!("CARGO_BIN_EXE_colony"))
        .args(["apps", "--json", "--data-dir", &dir])
        .output()
        .expect("colony apps");
    let apps: colony::AppsInfo = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    assert!(apps.guests_enabled && apps.native.contains(&"nqueens".to_string()));
    let module = json["app"].as_str().expect("the job's app");
    assert_eq!(
        apps.modules
            .iter()
            .map(|m| m.app.as_str())
            .collect::<Vec<_>>(),
        if first[0].1 == 1 {
            vec![module]
        } else {
            vec![]
        },
        "{apps:?}"
    );

    // The second run finds it in the caches: nobody fetches again.
    let (out, json) = run_wasm(&peers[1].addr(), 4, NQUEENS_PATH, &["15"]);
    assert!(out.status.success(), "{json}");
    assert_eq!(json["result"], 2_279_184, "{json}");
    assert!(json["peers_used"].as_u64() >= Some(2), "{json}");
    assert_eq!(module_counts(&peers).await, first, "served from the caches");

    // The flow-shop guest reaches Taillard's published optimum.
    let (out, json) = run_wasm(&peers[2].addr(), 4, FLOWSHOP_PATH, &["ta005"]);
    assert!(out.status.success(), "{json}");
    assert_eq!(json["verified"], true, "{json}");
    let _ = std::fs::remove_dir_all(&root);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_running_native_apps_only_neither_fetches_nor_runs_guests() {
    let _serial = SERIAL.lock().await;
    let root = test_dir("wasm-native-only");
    let trusting = trusting_peer(&root.join("trusting"));
    let native = PeerProc::spawn(
        &root.join("native"),
        &[
            "--cores".into(),
            "1".into(),
            "--bootstrap".into(),
            trusting.addr(),
        ],
    );
    let peers = vec![trusting, native];
    wait_formed(&peers).await;
    // Several jobs: a random id is homed at the native peer one time in
    // three, and there the job would fail ("runs native applications
    // only") had the submitter not drawn ids homed at a peer that runs
    // guests.
    let native_id = peers[1].info.peer_id.clone();
    let refused =
        format!("peer {native_id} refused the job: this peer runs native applications only");
    for _ in 0..8 {
        let (out, json) = run_wasm(&peers[0].addr(), 3, NQUEENS_PATH, &["15"]);
        assert!(out.status.success(), "{json}");
        assert_eq!(json["result"], 2_279_184, "{json}");
        assert!(
            json["peers_used"].as_u64() <= Some(2),
            "only the submitter and the trusting peer compute: {json}"
        );
        // The native peer said why it stayed out: `colony run` printed it
        // once as it came, and the job's final view lists it.
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(stderr.matches(&refused).count(), 1, "{stderr}");
        let declined = json["declined"].as_array().cloned().unwrap_or_default();
        assert!(
            declined.iter().any(|d| d["peer_id"] == native_id.as_str()
                && d["reason"]
                    .as_str()
                    .is_some_and(|r| r.contains("not the WebAssembly module"))),
            "{json}"
        );
    }
    let native = peers[1].status().await.expect("status");
    assert!(!native.modules.guests_enabled);
    assert_eq!((native.modules.fetched, native.modules.held), (0, 0));
    let _ = std::fs::remove_dir_all(&root);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_guests_fail_their_jobs_clearly_and_the_peers_keep_serving() {
    let _serial = SERIAL.lock().await;
    let root = test_dir("wasm-hostile");
    let peers = trusting_workers(&root, 2);
    wait_formed(&peers).await;
    let cases: [(&[&str], &str); 3] = [
        (&["spin"], "ran past its deadline"),
        (&["hog", "64"], "past its cap"),
        (&["panic"], "panics on purpose"),
    ];
    // Every peer's memory stays bounded while guests misbehave: a guest
    // past its cap (256 MiB) traps, and its memory is given back.
    let idle_rss: Vec<u64> = peers.iter().map(|p| rss_bytes(p.pid())).collect();
    let (stop, sampler) = watch_peak_rss(peers.iter().map(|p| p.pid()).collect());
    for (args, expected) in cases {
        let (out, json) = run_wasm(&peers[0].addr(), 3, HOSTILE_PATH, args);
        assert!(!out.status.success(), "{args:?}: {json}");
        assert_eq!(json["state"], "failed", "{args:?}: {json}");
        let error = json["error"].as_str().unwrap_or_default();
        assert!(error.contains(expected), "{args:?}: {error}");
    }
    // The hog again, submitted at a worker so that the workers (whose
    // memory is watched) run it, not a submitting process.
    let published = publish(&peers[0], HOSTILE_PATH);
    let job = peers[0]
        .submit(serde_json::json!({ "app": published.app, "args": ["hog", "64"] }))
        .await;
    let info = job_end(&peers[0], &job).await;
    assert_eq!(info.state, "failed", "{info:?}");
    assert!(
        info.error
            .as_deref()
            .is_some_and(|e| e.contains("past its cap")),
        "{info:?}"
    );
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let peak = sampler.join().expect("sampler");
    // The failed unit's instance is dropped once its worker has reported.
    let after = wait_until(
        Duration::from_secs(20),
        "the hog's memory to be given back",
        || async {
            let after: Vec<u64> = peers.iter().map(|p| rss_bytes(p.pid())).collect();
            idle_rss
                .iter()
                .zip(&after)
                .all(|(idle, after)| *after < idle + (64 << 20))
                .then_some(after)
        },
    )
    .await;
    eprintln!(
        "peer RSS: idle {:?} MiB, peak {} MiB, after {:?} MiB",
        idle_rss.iter().map(|b| b >> 20).collect::<Vec<_>>(),
        peak >> 20,
        after.iter().map(|b| b >> 20).collect::<Vec<_>>()
    );
    assert!(
        peak > idle_rss.iter().max().copied().unwrap_or(0) + (128 << 20),
        "the hog ran on a watched peer and grew it past 128 MiB: peak {} MiB",
        peak >> 20
    );
    assert!(peak < 512 << 20, "a peer grew to {} MiB", peak >> 20);

    // A module that is not WebAssembly is refused before anything starts.
    let garbage = root.join("garbage.wasm");
    std::fs::write(&garbage, b"\0asm but not really").expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_colony"))
        .args(["run", "--bootstrap", &peers[0].addr(), "--wasm"])
        .arg(&garbage)
        .output()
        .expect("run colony");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("not a valid WebAssembly module"),
        "{stderr}"
    );

    // Every peer is still there and still computes.
    for peer in &peers {
        assert!(peer.is_running(), "{}", peer.log());
    }
    let (out, json) = run_wasm(&peers[1].addr(), 3, HOSTILE_PATH, &["sum", "100000"]);
    assert!(out.status.success(), "{json}");
    assert_eq!(json["result"], 5_000_050_000u64, "{json}");
    let _ = std::fs::remove_dir_all(&root);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guest_job_survives_a_worker_killed_mid_run() {
    let _serial = SERIAL.lock().await;
    let root = test_dir("wasm-kill");
    let mut peers = trusting_workers(&root, 3);
    wait_formed(&peers).await;
    let mut run = wasm_command(None, &peers[0].addr(), 4, NQUEENS_PATH, &["16"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run colony");
    // SIGKILL a worker computing a unit of the guest that is not a member
    // of the job's home (it homes no job).
    let victim = wait_until(
        Duration::from_secs(60),
        "a worker to run a unit",
        || async {
            for (i, peer) in peers.iter().enumerate() {
                let running = peer
                    .status()
                    .await
                    .is_some_and(|s| s.jobs.running_units > 0);
                let homed: Option<Vec<colony::JobInfo>> = peer.get_json("/v1/jobs").await;
                if running && homed.is_some_and(|jobs| jobs.is_empty()) {
                    return Some(i);
                }
            }
            None
        },
    )
    .await;
    peers[victim].kill();
    let finished = wait_until(Duration::from_secs(120), "the job to end", || {
        let done = run.try_wait().ok().flatten();
        async move { done }
    })
    .await;
    let out = run.wait_with_output().expect("its output");
    let json: serde_json::Value = String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|line| serde_json::from_str(line).ok())
        .unwrap_or_else(|| {
            panic!(
                "no JSON ({finished}): {}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
    assert!(finished.success(), "{json}");
    assert_eq!(json["result"], 14_772_512, "{json}");
    assert_eq!(json["verified"], true, "{json}");
    let _ = std::fs::remove_dir_all(&root);
}

/// `colony app publish FILE --json` through `peer`'s API.
fn publish(peer: &PeerProc, module: &str) -> colony::PublishedModule {
    let out = Command::new(env!("CARGO_BIN_EXE_colony"))
        .args(["app", "publish", "--json", "--data-dir"])
        .arg(&peer.dir)
        .arg(module)
        .output()
        .expect("colony app publish");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
}

/// Modules the peers served to others, in all.
async fn served(peers: &[&PeerProc]) -> u64 {
    let mut served = 0;
    for peer in peers {
        served += peer.status().await.expect("status").modules.served;
    }
    served
}

/// Units `peer` finished in this session, from its own membership record.
async fn units_done(peer: &PeerProc) -> u64 {
    let members = peer.members().await.expect("members");
    members
        .iter()
        .find(|m| m.local)
        .map(|m| m.stats.units_done_session)
        .expect("its own record")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_published_module_is_fetched_from_its_home_then_from_the_cache() {
    let _serial = SERIAL.lock().await;
    let root = test_dir("wasm-home");
    let mut peers = trusting_workers(&root, 4);
    wait_formed(&peers).await;
    let published = publish(&peers[0], NQUEENS_PATH);
    assert!(published.home.len() >= 2, "{published:?}");
    assert_eq!(
        published.stored_by.len(),
        published.home.len(),
        "{published:?}"
    );
    assert_eq!(published.app, format!("wasm:{}", published.id));

    // The publisher goes: the module lives on in its home.
    peers[0].kill();
    let rest: Vec<&PeerProc> = peers[1..].iter().collect();
    let before = served(&rest).await;
    let submitter = root.join("submitter");
    let (out, json) = run_wasm_as(
        Some(&submitter),
        &peers[1].addr(),
        4,
        &published.id,
        &["14"],
    );
    assert!(out.status.success(), "{json}");
    assert_eq!(json["result"], 365_596, "{json}");
    let first = served(&rest).await;
    assert!(
        first > before,
        "the submitter, which never had the module, got it from its home"
    );
    assert!(submitter
        .join("modules")
        .join(format!("{}.wasm", published.id))
        .exists());

    // The same submitter again: from its cache, and the workers from theirs.
    let (out, json) = run_wasm_as(
        Some(&submitter),
        &peers[1].addr(),
        4,
        &published.id,
        &["14"],
    );
    assert!(out.status.success(), "{json}");
    assert_eq!(json["result"], 365_596, "{json}");
    assert_eq!(served(&rest).await, first, "nobody served the module again");

    // One holder's copy is damaged on disk while it is down: restarted, it
    // reads its copy as missing and never runs it.
    let held_at = |p: &PeerProc| p.dir.join("modules").join(format!("{}.wasm", published.id));
    let damaged = (1..peers.len())
        .find(|i| held_at(&peers[*i]).exists())
        .expect("a live home member holds the module");
    let damaged_file = held_at(&peers[damaged]);
    peers[damaged].kill();
    std::fs::write(&damaged_file, b"\0asm tampered with").expect("damage");
    // (Its bootstrap, the publisher, is gone: it joins through another.)
    let other = if damaged == 1 { 2 } else { 1 };
    let via = peers[other].addr();
    peers[damaged].restart_with(&["--bootstrap".into(), via]);
    let live: Vec<&PeerProc> = peers[1..].iter().collect();
    wait_until(Duration::from_secs(20), "the holder to rejoin", || async {
        all_see_all_alive(&live).await.then_some(())
    })
    .await;
    // A job of the module submitted at the damaged holder: it drops its copy
    // (its hash is wrong), fetches a good one from the home, and runs.
    let job = peers[damaged]
        .submit(serde_json::json!({ "app": published.app, "args": ["12"] }))
        .await;
    let info = job_end(&peers[damaged], &job).await;
    assert_eq!(info.result, Some(serde_json::json!(14_200)), "{info:?}");
    let good = std::fs::read(NQUEENS_PATH).expect("module");
    let held = std::fs::read(&damaged_file).expect("fetched again");
    assert_eq!(
        colony_core::modules::module_id(&held),
        published.id,
        "the damaged copy was replaced by the module"
    );
    assert_eq!(held, good);
    let _ = std::fs::remove_dir_all(&root);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_runs_only_modules_signed_by_peers_it_trusts() {
    let _serial = SERIAL.lock().await;
    let root = test_dir("wasm-trust");
    let alice = trusting_peer(&root.join("alice"));
    // Bob runs only what Alice vouches for; he names her by her key file.
    let alice_key = root.join("alice").join(colony::PUBLIC_KEY_FILE);
    let bob = PeerProc::spawn(
        &root.join("bob"),
        &[
            "--cores".into(),
            "1".into(),
            "--trust".into(),
            alice_key.display().to_string(),
            "--bootstrap".into(),
            alice.addr(),
        ],
    );
    let mut peers = vec![alice, bob];
    wait_formed(&peers).await;

    // A stranger's module: Alice runs it, Bob does not.
    let (out, json) = run_wasm(&peers[0].addr(), 3, NQUEENS_PATH, &["15"]);
    assert!(out.status.success(), "{json}");
    assert_eq!(json["result"], 2_279_184, "{json}");
    assert_eq!(units_done(&peers[1]).await, 0, "Bob ran a stranger's code");
    // The stranger hears why: Bob trusts only Alice's signature.
    let bob_id = peers[1].info.peer_id.clone();
    let alice_id = peers[0].info.peer_id.clone();
    let declined = json["declined"].as_array().cloned().unwrap_or_default();
    assert!(
        declined.iter().any(|d| d["peer_id"] == bob_id.as_str()
            && d["reason"].as_str().is_some_and(|r| {
                r.contains("this peer runs only code signed by") && r.contains(&alice_id)
            })),
        "{json}"
    );

    // Alice vouches for the same module: a stranger's job of it runs on Bob.
    let published = publish(&peers[0], NQUEENS_PATH);
    let (out, json) = run_wasm(&peers[0].addr(), 3, &published.id, &["15"]);
    assert!(out.status.success(), "{json}");
    assert_eq!(json["result"], 2_279_184, "{json}");
    assert!(units_done(&peers[1]).await > 0, "Bob ran code Alice signed");

    // Without Alice, a stranger's new module runs only on the stranger's
    // own peer: Bob still refuses it.
    peers[0].kill();
    wait_until(Duration::from_secs(20), "Bob to see Alice gone", || async {
        let members = peers[1].members().await?;
        let alice = members.iter().find(|m| m.peer_id == alice_id)?;
        (alice.state != colony::MemberState::Alive).then_some(())
    })
    .await;
    let before = units_done(&peers[1]).await;
    let (out, json) = run_wasm(&peers[1].addr(), 2, HOSTILE_PATH, &["sum", "2000000000"]);
    assert!(out.status.success(), "{json}");
    assert_eq!(json["peers_used"], 1, "{json}");
    assert_eq!(
        units_done(&peers[1]).await,
        before,
        "Bob ran a stranger's code"
    );
    assert!(peers[1].is_running());
    let _ = std::fs::remove_dir_all(&root);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guest_job_survives_its_primary_killed_in_its_first_second() {
    let _serial = SERIAL.lock().await;
    let root = test_dir("wasm-primary");
    let mut peers = trusting_workers(&root, 4);
    wait_formed(&peers).await;
    let published = publish(&peers[1], NQUEENS_PATH);
    let (job, replicated) = peers[1]
        .submit_answer(serde_json::json!({ "app": published.app, "args": ["16"] }))
        .await;
    // The submission is acknowledged once a majority of the job's home
    // holds it: from then on the primary's death loses nothing.
    assert!(replicated, "job {job} acknowledged before its home held it");
    // Kill the job's primary as soon as it is found: its backups hold the
    // record, and must get the module (from its home) to restart the root.
    let primary = wait_until(Duration::from_secs(5), "the job's primary", || async {
        for (i, peer) in peers.iter().enumerate() {
            let homed: Option<Vec<colony::JobInfo>> = peer.get_json("/v1/jobs").await;
            if homed.is_some_and(|jobs| jobs.iter().any(|j| j.job_id == job)) {
                return Some(i);
            }
        }
        None
    })
    .await;
    peers[primary].kill();
    let asked = (primary + 1) % peers.len();
    let info = job_end(&peers[asked], &job).await;
    assert_eq!(info.state, "done", "{info:?}");
    assert_eq!(info.result, Some(serde_json::json!(14_772_512)), "{info:?}");
    let _ = std::fs::remove_dir_all(&root);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_module_fetch_bench_reports_fetches_against_raw_tcp() {
    let _serial = SERIAL.lock().await;
    let out = Command::new(env!("CARGO_BIN_EXE_colony"))
        .args([
            "bench", "modules", "--json", "--runs", "2", "--size", "200000",
        ])
        .args(["--module", NQUEENS_PATH])
        .env("RUST_LOG", "error")
        .output()
        .expect("colony bench modules");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: colony::bench::ModuleBenchReport = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)));
    assert_eq!(
        (report.runs, report.module_bytes),
        (2, 200_000),
        "{report:?}"
    );
    assert!(
        report.fetch_us.p50 > 0.0 && report.tcp_us.p50 > 0.0,
        "{report:?}"
    );
    // A module that is not a guest is refused before anything is measured.
    let out = Command::new(env!("CARGO_BIN_EXE_colony"))
        .args(["bench", "modules", "--runs", "1", "--module", "Cargo.toml"])
        .output()
        .expect("colony bench modules");
    assert!(!out.status.success());
}
