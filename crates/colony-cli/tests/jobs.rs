//! Divisible jobs on real `colony peer` processes: known answers nobody here
//! wrote (Taillard optima, OEIS N-Queens counts, a sequential product),
//! late joiners, best-effort acquisition and bad jobs.

mod common;

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use colony::{JobInfo, MemberState};
use common::*;

/// Runs `colony run --json …` as a submitting peer; returns its exit status
/// and parsed JSON line (if any).
fn colony_run(
    bootstrap: &str,
    extra: &[&str],
    app_args: &[&str],
) -> (Output, Option<serde_json::Value>) {
    colony_run_logging(bootstrap, extra, app_args, "warn")
}

/// [`colony_run`], its log on stderr at `log_level`.
fn colony_run_logging(
    bootstrap: &str,
    extra: &[&str],
    app_args: &[&str],
    log_level: &str,
) -> (Output, Option<serde_json::Value>) {
    let mut args = vec!["run", "--cores", "1", "--json", "--bootstrap", bootstrap];
    args.extend_from_slice(extra);
    args.extend_from_slice(app_args);
    let out = Command::new(env!("CARGO_BIN_EXE_colony"))
        .args(&args)
        .env("RUST_LOG", log_level)
        .output()
        .expect("run colony");
    let json = String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|line| serde_json::from_str(line).ok());
    (out, json)
}

fn three_workers(root: &std::path::Path) -> Vec<PeerProc> {
    start_network(root, 3, &["--cores".into(), "1".into()])
}

async fn wait_formed(peers: &[PeerProc]) {
    let refs: Vec<&PeerProc> = peers.iter().collect();
    wait_until(Duration::from_secs(10), "the network to form", || async {
        all_see_all_alive(&refs).await.then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn taillard_ta001_to_ta010_reach_the_published_optima_on_three_peers() {
    let _serial = SERIAL.lock().await;
    let root = test_dir("taillard");
    let peers = three_workers(&root);
    wait_formed(&peers).await;
    for n in 1..=10 {
        let name = format!("ta{n:03}");
        let started = Instant::now();
        let (out, json) = colony_run(&peers[0].addr(), &[], &["flowshop", &name]);
        let json = json.unwrap_or_else(|| {
            panic!(
                "{name}: no JSON; stderr:\n{}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
        assert!(out.status.success(), "{name}: {json}");
        assert_eq!(json["state"], "done", "{name}: {json}");
        assert_eq!(
            json["verified"], true,
            "{name}: makespan must equal the published optimum: {json}"
        );
        eprintln!(
            "figure: {name} makespan {} in {:.2} s ({} units, {} steals, {} peers)",
            json["result"]["makespan"],
            started.elapsed().as_secs_f64(),
            json["units"],
            json["steals"],
            json["peers_used"]
        );
    }
    let _ = std::fs::remove_dir_all(&root);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nqueens_counts_and_matmul_product_are_right_on_three_peers() {
    let _serial = SERIAL.lock().await;
    let root = test_dir("nqueens");
    let peers = three_workers(&root);
    wait_formed(&peers).await;
    let known = [(10, 724u64), (11, 2680), (12, 14200), (13, 73712)];
    let mut last_job = String::new();
    for (n, count) in known {
        let (out, json) = colony_run(&peers[1].addr(), &[], &["nqueens", &n.to_string()]);
        let json =
            json.unwrap_or_else(|| panic!("no JSON: {}", String::from_utf8_lossy(&out.stderr)));
        assert_eq!(json["result"], count, "N = {n}: {json}");
        assert_eq!(json["verified"], true);
        last_job = json["job_id"].as_str().expect("job id").to_string();
    }
    // The submitter has left; any peer finds the result by id through the home.
    for peer in &peers {
        let dir = peer.dir.display().to_string();
        let out = Command::new(env!("CARGO_BIN_EXE_colony"))
            .args(["result", &last_job, "--data-dir", &dir, "--json"])
            .output()
            .expect("colony result");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let json: serde_json::Value = serde_json::from_str(stdout.trim()).expect("JSON");
        assert_eq!(json["result"], 73712, "{json}");
    }
    let (out, json) = colony_run(&peers[2].addr(), &[], &["matmul", "256"]);
    let json = json.unwrap_or_else(|| panic!("no JSON: {}", String::from_utf8_lossy(&out.stderr)));
    assert!(out.status.success(), "{json}");
    assert_eq!(
        json["verified"], true,
        "the product must equal the sequential one: {json}"
    );
    let _ = std::fs::remove_dir_all(&root);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_started_after_the_job_began_receives_work() {
    let _serial = SERIAL.lock().await;
    let root = test_dir("latejoin");
    let peers = start_network(&root, 2, &["--cores".into(), "1".into()]);
    wait_formed(&peers).await;
    // Submit through the API of peer 0, so the test can watch the record.
    let submitted: serde_json::Value = peers[0]
        .request(reqwest::Method::POST, "/v1/jobs")
        .json(&serde_json::json!({ "app": "nqueens", "args": ["16"] }))
        .send()
        .await
        .expect("submit")
        .json()
        .await
        .expect("job id");
    let job_id = submitted["job_id"].as_str().expect("job id").to_string();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let started = Instant::now();
    let args = vec![
        "--cores".to_string(),
        "1".to_string(),
        "--bootstrap".into(),
        peers[0].addr(),
    ];
    let late = PeerProc::spawn(&root.join("late"), &args);
    let deadline = Instant::now() + Duration::from_secs(20);
    let info: JobInfo = loop {
        // The newcomer may be closest to the job's key and become its
        // primary: the others' replicas learn its work only later, so ask
        // every peer.
        let mut views = Vec::new();
        for peer in [&peers[0], &peers[1], &late] {
            views.push(peer.job_info(&job_id).await);
        }
        let working = views.iter().flatten().find(|info| {
            info.contributions
                .iter()
                .any(|c| c.peer_id == late.info.peer_id && c.units_running + c.units_done > 0)
        });
        if let Some(info) = working {
            break info.clone();
        }
        if Instant::now() > deadline {
            // Everything needed to tell why, since a CI run keeps no files.
            panic!(
                "timed out after 20s waiting for the late peer to get work\n\
                 job as each peer sees it: {views:?}\nmembers seen by peer 0: {:?}\nmembers seen by the late peer: {:?}\n\
                 late peer's log:\n{}\npeer 0's log:\n{}",
                peers[0].members().await,
                late.members().await,
                late.log_tail(),
                peers[0].log_tail()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    eprintln!(
        "figure: late joiner got work {} ms after it started",
        started.elapsed().as_millis()
    );
    assert_eq!(
        info.state, "running",
        "the job was still running when the newcomer joined"
    );
    let done: JobInfo = wait_until(Duration::from_secs(60), "the job to finish", || async {
        let info = peers[0].job_info(&job_id).await?;
        (info.state == "done").then_some(info)
    })
    .await;
    assert_eq!(done.verified, Some(true), "{done:?}");
    let late_units = done
        .contributions
        .iter()
        .find(|c| c.peer_id == late.info.peer_id)
        .map(|c| c.units_done)
        .unwrap_or(0);
    assert!(
        late_units >= 1,
        "the late peer contributed units: {:?}",
        done.contributions
    );
    let _ = std::fs::remove_dir_all(&root);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_asking_for_more_peers_than_present_still_completes() {
    let _serial = SERIAL.lock().await;
    let root = test_dir("besteffort");
    let peers = start_network(&root, 2, &["--cores".into(), "1".into()]);
    wait_formed(&peers).await;
    // The submitter counts whom it sees when the acquisition times out:
    // 5 s for a join that takes ~0.1 s on a quiet machine, so a loaded one
    // still sees both peers (with 1 s, a CI run once saw only one).
    let (out, json) = colony_run(
        &peers[0].addr(),
        &["--peers", "8", "--acquire-timeout-s", "5"],
        &["nqueens", "12"],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("asked for 8 peers, 3 present"), "{stderr}");
    let json = json.expect("result");
    assert_eq!(json["result"], 14200);
    let _ = std::fs::remove_dir_all(&root);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_jobs_get_clear_errors_and_peers_keep_running() {
    let _serial = SERIAL.lock().await;
    let root = test_dir("badjobs");
    let peers = start_network(&root, 2, &["--cores".into(), "1".into()]);
    wait_formed(&peers).await;
    for (app_args, needle) in [
        (vec!["flowshop", "ta999"], "ta001"),
        (vec!["nqueens", "0"], "N must be"),
        (vec!["knapsack", "7"], "no application named \"knapsack\""),
    ] {
        let (out, _) = colony_run(&peers[0].addr(), &[], &app_args);
        assert!(!out.status.success(), "{app_args:?} must fail");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains(needle),
            "{app_args:?}: expected {needle:?} in {stderr}"
        );
    }
    // Through the API as well: 400 with the reason.
    let response = peers[1]
        .request(reqwest::Method::POST, "/v1/jobs")
        .json(&serde_json::json!({ "app": "tsp", "args": [] }))
        .send()
        .await
        .expect("post");
    assert_eq!(response.status(), 400);
    assert!(response
        .text()
        .await
        .unwrap_or_default()
        .contains("no application"));
    let unknown = peers[1]
        .request(
            reqwest::Method::GET,
            &format!("/v1/jobs/{}", "00".repeat(16)),
        )
        .send()
        .await
        .expect("get");
    assert_eq!(unknown.status(), 404);
    // Still serving and alive.
    assert!(all_see_all_alive(&[&peers[0], &peers[1]]).await);
    let row = peers[1].state_of(&peers[0]).await.expect("row");
    assert_eq!(row.state, MemberState::Alive);
    let _ = std::fs::remove_dir_all(&root);
}

/// `colony space <args> --data-dir <dir>`, quietly.
fn colony_space(dir: &std::path::Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_colony"))
        .arg("space")
        .args(args)
        .arg("--data-dir")
        .arg(dir)
        .env("RUST_LOG", "warn")
        .output()
        .expect("colony space")
}

/// P³'s listing across processes: the first unit stores A and B in the
/// job's namespace, every unit binds the rows it needs, and the product
/// equals the sequential one; the namespace goes with the job, unless its
/// submitter asked to keep it (`--keep-namespace`): then its rows stay
/// until `colony space ns-rm`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn matmul_through_the_object_space_is_right_on_three_peers_and_cleans_up() {
    let _serial = SERIAL.lock().await;
    let root = test_dir("matmul-space");
    let peers = three_workers(&root);
    wait_formed(&peers).await;
    let started = Instant::now();
    let (out, json) = colony_run(
        &peers[0].addr(),
        &[],
        &["matmul-space", "96", "--seed", "3"],
    );
    let json = json.unwrap_or_else(|| panic!("no JSON: {}", String::from_utf8_lossy(&out.stderr)));
    assert!(out.status.success(), "{json}");
    assert_eq!(
        json["verified"], true,
        "the product must equal the sequential one: {json}"
    );
    eprintln!(
        "figure: matmul-space 96 in {:.2} s ({} units, {} peers)",
        started.elapsed().as_secs_f64(),
        json["units"],
        json["peers_used"]
    );
    let job = json["job_id"].as_str().expect("job id").to_string();
    let namespace = format!("job-{job}");
    wait_until(
        Duration::from_secs(20),
        "the job's namespace to be destroyed",
        || {
            let out = colony_space(&peers[1].dir, &["ls", "--namespace", &namespace]);
            let stderr = String::from_utf8_lossy(&out.stderr);
            let gone = !out.status.success() && stderr.contains("does not exist");
            async move { gone.then_some(()) }
        },
    )
    .await;

    // Kept: a small product, its namespace left in place as asked.
    let n = 12;
    let (out, json) = colony_run_logging(
        &peers[0].addr(),
        &["--keep-namespace"],
        &["matmul-space", &n.to_string(), "--seed", "5"],
        "info",
    );
    let run_log = String::from_utf8_lossy(&out.stderr).into_owned();
    let json = json.unwrap_or_else(|| panic!("no JSON: {run_log}"));
    assert!(out.status.success(), "{json}");
    assert_eq!(json["verified"], true, "{json}");
    assert_eq!(json["keep_namespace"], true, "{json}");
    let job = json["job_id"].as_str().expect("job id").to_string();
    let namespace = format!("job-{job}");
    // The job's primary (one of the peers, or the submitter that has just
    // exited) says it kept the namespace instead of destroying it.
    let kept_line = |log: &str| {
        log.lines()
            .any(|l| l.contains("namespace is kept") && l.contains(&namespace))
    };
    wait_until(
        Duration::from_secs(20),
        "the job's primary to say it kept the namespace",
        || {
            let said = kept_line(&run_log) || peers.iter().any(|p| kept_line(&p.log()));
            async move { said.then_some(()) }
        },
    )
    .await;
    let out = colony_space(&peers[1].dir, &["ls", "--namespace", &namespace, "--json"]);
    assert!(
        out.status.success(),
        "the kept namespace lists: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listing: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("the listing is JSON");
    let mut names: Vec<&str> = listing["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .filter_map(|e| e["name"].as_str())
        .collect();
    names.sort_unstable();
    let mut rows: Vec<String> = (0..n)
        .flat_map(|i| [format!("A/{i}"), format!("B/{i}")])
        .collect();
    rows.sort_unstable();
    assert_eq!(names, rows, "every row of A and B stays: {listing}");
    let out = colony_space(&peers[1].dir, &["ns-rm", &namespace]);
    assert!(
        out.status.success(),
        "ns-rm: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = colony_space(&peers[1].dir, &["ls", "--namespace", &namespace]);
    assert!(
        !out.status.success() && String::from_utf8_lossy(&out.stderr).contains("does not exist"),
        "the namespace is gone after ns-rm"
    );
    let _ = std::fs::remove_dir_all(&root);
}
