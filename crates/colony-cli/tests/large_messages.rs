//! Job messages larger than a network frame on real `colony peer`
//! processes: matmul results of 2 and 8 MiB come back verified against a
//! sequential product, and a result over a configured limit fails its job
//! with an error naming the limit, within seconds, instead of hanging.

mod common;

use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// What a `colony run` process left behind.
struct Run {
    status: ExitStatus,
    json: serde_json::Value,
    stderr: String,
    took: Duration,
}

/// Runs `colony run --cores 1 --json --bootstrap ADDR EXTRA… APP…` as a
/// submitting peer; kills it and panics if it has not exited `within`.
fn colony_run(dir: &Path, bootstrap: &str, extra: &[&str], app: &[&str], within: Duration) -> Run {
    std::fs::create_dir_all(dir).expect("run dir");
    let stdout_path = dir.join("stdout");
    let stderr_path = dir.join("stderr");
    let mut args = vec!["run", "--cores", "1", "--json", "--bootstrap", bootstrap];
    args.extend_from_slice(extra);
    args.extend_from_slice(app);
    let started = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_colony"))
        .args(&args)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&stdout_path).expect("stdout file"))
        .stderr(std::fs::File::create(&stderr_path).expect("stderr file"))
        .spawn()
        .expect("spawn colony run");
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for colony run") {
            break status;
        }
        if started.elapsed() > within {
            let _ = child.kill();
            let _ = child.wait();
            let stderr = std::fs::read_to_string(&stderr_path).unwrap_or_default();
            let tail: Vec<&str> = stderr.lines().rev().take(20).collect();
            panic!(
                "`colony {}` still running after {within:?}; last lines of its stderr:\n{}",
                args.join(" "),
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let took = started.elapsed();
    let stdout = std::fs::read_to_string(&stdout_path).unwrap_or_default();
    let stderr = std::fs::read_to_string(&stderr_path).unwrap_or_default();
    let json = stdout
        .lines()
        .find_map(|line| serde_json::from_str(line).ok())
        .unwrap_or_else(|| panic!("no JSON on stdout ({status}); stderr:\n{stderr}"));
    Run {
        status,
        json,
        stderr,
        took,
    }
}

async fn wait_formed(peers: &[PeerProc]) {
    let refs: Vec<&PeerProc> = peers.iter().collect();
    wait_until(Duration::from_secs(15), "the network to form", || async {
        all_see_all_alive(&refs).await.then_some(())
    })
    .await;
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

/// Was a bug (crates/colony/src/driver/jobs.rs, the `JobOutput::Send` arm):
/// every job message over the 1 MiB frame limit — here the 2 and 8 MiB
/// results, and the unit states on their way — was dropped with a warning
/// and sent again forever, so the README's `matmul 512` never returned.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn matmul_512_and_1024_return_the_verified_product_on_three_peers() {
    let _serial = SERIAL.lock().await;
    let root = test_dir("large-matmul");
    let peers = start_network(&root, 3, &args(&["--cores", "1"]));
    wait_formed(&peers).await;
    for (i, n) in ["512", "1024"].into_iter().enumerate() {
        let bootstrap = peers[i].addr();
        let run = colony_run(
            &root.join(format!("run-{n}")),
            &bootstrap,
            &[],
            &["matmul", n, "--seed", "7"],
            Duration::from_secs(40),
        );
        let json = &run.json;
        assert!(
            run.status.success(),
            "matmul {n}: {json}\nstderr:\n{}",
            run.stderr
        );
        assert_eq!(json["state"], "done", "matmul {n}: {json}");
        assert_eq!(
            json["verified"], true,
            "matmul {n}: the product must equal the sequential one: {json}"
        );
        let side: u64 = n.parse().expect("n");
        let bytes = json["result"]["bytes"].as_u64().unwrap_or(0);
        assert!(
            bytes >= side * side * 8,
            "matmul {n}: a result of {bytes} bytes cannot hold the {n}×{n} product: {json}"
        );
        eprintln!(
            "figure: matmul {n} ({bytes} result bytes) on 3 peers + submitter: run took {:.2} s, job {:.2} s, {} units, {} peers",
            run.took.as_secs_f64(),
            json["elapsed_s"].as_f64().unwrap_or(0.0),
            json["units"],
            json["peers_used"]
        );
    }
    // The pipes carried fragments, and nothing was left half-received.
    let mut reassembled = 0;
    for peer in &peers {
        let status = peer.status().await.expect("status");
        reassembled += status.pipes.messages_reassembled;
        assert_eq!(status.pipes.integrity_failures, 0, "{:?}", status.pipes);
    }
    assert!(
        reassembled > 0,
        "no message crossed the network in fragments"
    );
    let _ = std::fs::remove_dir_all(&root);
}

/// A result over the configured maximum fails the job, with the limit in
/// the error, within seconds; the peers stay usable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_result_over_the_limit_fails_the_job_with_an_error_naming_it() {
    let _serial = SERIAL.lock().await;
    let root = test_dir("large-limit");
    let limit = "1000000";
    let peers = start_network(
        &root,
        3,
        &args(&["--cores", "1", "--max-result-bytes", limit]),
    );
    wait_formed(&peers).await;
    // matmul 512 has a 2 MiB result.
    let run = colony_run(
        &root.join("run-over"),
        &peers[0].addr(),
        &["--max-result-bytes", limit],
        &["matmul", "512", "--seed", "7"],
        Duration::from_secs(30),
    );
    let json = &run.json;
    assert!(!run.status.success(), "must exit non-zero: {json}");
    assert_eq!(json["state"], "failed", "{json}");
    let error = json["error"].as_str().unwrap_or_default();
    assert!(
        error.contains(&format!("limit of {limit} bytes")),
        "the error names the limit: {error}"
    );
    assert!(
        run.stderr.contains(&format!("limit of {limit} bytes")),
        "the user is told too: {}",
        run.stderr
    );
    assert!(
        run.took < Duration::from_secs(15),
        "failed only after {:?}",
        run.took
    );
    eprintln!(
        "figure: over-limit result failed in {:.2} s: {error}",
        run.took.as_secs_f64()
    );
    // A job within the limit still runs on the same peers.
    let run = colony_run(
        &root.join("run-within"),
        &peers[1].addr(),
        &["--max-result-bytes", limit],
        &["matmul", "256", "--seed", "7"],
        Duration::from_secs(30),
    );
    assert!(run.status.success(), "{}\n{}", run.json, run.stderr);
    assert_eq!(run.json["verified"], true, "{}", run.json);
    let _ = std::fs::remove_dir_all(&root);
}
