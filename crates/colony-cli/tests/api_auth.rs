//! The local API asks who is calling, on real `colony peer` processes: the
//! token in the data directory, loopback only without consent, the Host
//! header, deadlines for stalled clients, short errors, and the same
//! fault-tolerance validation as the descriptor.

mod common;

use std::net::SocketAddr;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn colony(args: &[&str]) -> Output {
    colony_env(args, &[])
}

fn colony_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_colony"));
    command.args(args).env("RUST_LOG", "warn");
    for (k, v) in env {
        command.env(k, v);
    }
    command.output().expect("run colony")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Sends raw bytes to the API; returns what it answered until it closed
/// the connection (or `within` passed), and how long that took.
async fn raw(api: SocketAddr, bytes: &[u8], within: Duration) -> (String, Duration) {
    let started = Instant::now();
    let mut socket = TcpStream::connect(api).await.expect("connect");
    socket.write_all(bytes).await.expect("send");
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(within, socket.read_to_end(&mut answer)).await;
    (
        String::from_utf8_lossy(&answer).into_owned(),
        started.elapsed(),
    )
}

fn status_line(answer: &str) -> &str {
    answer.lines().next().unwrap_or("")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_asks_for_the_token_in_the_data_dir() {
    let _serial = SERIAL.lock().await;
    let root = test_dir("api-token");
    let mut peer = PeerProc::spawn(&root.join("p0"), &[]);
    let token_file = peer.dir.join(colony::API_TOKEN_FILE);
    let token = peer.token();
    assert_eq!(token.len(), 64, "32 random bytes in hex");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&token_file)
            .expect("token file")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "the token file is private");
    }

    // Without the token, or with a wrong one: 401, on every endpoint.
    let client = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client");
    for path in ["/v1/status", "/v1/peers", "/v1/jobs", "/v1/jobs/00"] {
        let url = format!("http://{}{path}", peer.api());
        let bare = client.get(&url).send().await.expect("get");
        assert_eq!(bare.status(), 401, "{path} without a token");
        let wrong = client
            .get(&url)
            .bearer_auth("ab".repeat(32))
            .send()
            .await
            .expect("get");
        assert_eq!(wrong.status(), 401, "{path} with a wrong token");
    }
    let post = client
        .post(format!("http://{}/v1/jobs", peer.api()))
        .json(&serde_json::json!({"app": "nqueens", "args": ["8"]}))
        .send()
        .await
        .expect("post");
    assert_eq!(post.status(), 401, "submitting without a token");
    // With it: works.
    let status = peer.status().await.expect("status with the token");
    assert_eq!(status.peer.peer_id, peer.info.peer_id);

    // The CLI finds it from --data-dir, --token-file or the environment.
    let dir = peer.dir.display().to_string();
    let api = peer.api().to_string();
    let file = token_file.display().to_string();
    for out in [
        colony(&["peers", "--data-dir", &dir, "--json"]),
        colony(&["jobs", "--api", &api, "--token-file", &file, "--json"]),
        colony_env(
            &["peers", "--api", &api, "--json"],
            &[("COLONY_API_TOKEN_FILE", &file)],
        ),
        colony_env(&["jobs", "--json"], &[("COLONY_DATA_DIR", &dir)]),
    ] {
        assert!(out.status.success(), "{}", stderr(&out));
        let _: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON on stdout");
    }
    // Clear errors when it cannot: no token there, or another peer's.
    let empty = root.join("empty");
    std::fs::create_dir_all(&empty).expect("mkdir");
    let out = colony(&[
        "peers",
        "--api",
        &api,
        "--data-dir",
        &empty.display().to_string(),
    ]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("cannot read the API token"),
        "{}",
        stderr(&out)
    );
    assert!(stderr(&out).contains("--token-file"), "{}", stderr(&out));
    let other = root.join("other.token");
    std::fs::write(&other, "cd".repeat(32)).expect("write");
    let out = colony(&[
        "result",
        &"00".repeat(16),
        "--api",
        &api,
        "--token-file",
        &other.display().to_string(),
    ]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("refused the API token"),
        "{}",
        stderr(&out)
    );

    // Kept across restarts.
    peer.restart_with(&[]);
    assert_eq!(peer.token(), token, "same token after a restart");
    assert!(peer.status().await.is_some());
    let _ = std::fs::remove_dir_all(&root);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_api_address_needs_consent() {
    let _serial = SERIAL.lock().await;
    let root = test_dir("api-remote");
    let dir = root.join("p0");
    let dir_s = dir.display().to_string();
    let started = Instant::now();
    let out = colony(&[
        "peer",
        "--data-dir",
        &dir_s,
        "--listen",
        "/ip4/127.0.0.1/tcp/0",
        "--api",
        "0.0.0.0:0",
    ]);
    assert!(!out.status.success(), "refused");
    let text = stderr(&out);
    assert!(
        text.contains("refusing to serve the local API on 0.0.0.0:0"),
        "{text}"
    );
    assert!(
        text.contains("--api-allow-remote"),
        "names the flag: {text}"
    );
    assert!(!dir.join("peer.json").exists(), "nothing started");
    assert!(started.elapsed() < Duration::from_secs(10));

    // With consent: it starts, warns, and still asks for the token.
    let log = std::fs::File::create(root.join("remote.log")).expect("log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_colony"))
        .args([
            "peer",
            "--data-dir",
            &dir_s,
            "--listen",
            "/ip4/127.0.0.1/tcp/0",
            "--api",
            "0.0.0.0:0",
            "--api-allow-remote",
        ])
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("spawn");
    let info: colony::PeerInfo = wait_until(Duration::from_secs(20), "peer.json", || async {
        let text = std::fs::read_to_string(dir.join("peer.json")).ok()?;
        serde_json::from_str(&text).ok()
    })
    .await;
    let port = info.api_addr.expect("api").port();
    let api: SocketAddr = ([127, 0, 0, 1], port).into();
    let log = std::fs::read_to_string(root.join("remote.log")).unwrap_or_default();
    assert!(log.contains("other machines can reach"), "warned: {log}");
    let token = colony::read_api_token(&dir.join(colony::API_TOKEN_FILE)).expect("token");
    for (auth, expected) in [
        (String::new(), "401"),
        (format!("Authorization: Bearer {token}\r\n"), "200"),
    ] {
        let (answer, _) = raw(
            api,
            format!("GET /v1/status HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{auth}Connection: close\r\n\r\n")
                .as_bytes(),
            Duration::from_secs(5),
        )
        .await;
        assert!(status_line(&answer).contains(expected), "{answer}");
    }
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&root);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hosts_stalls_and_long_inputs_are_refused_quickly_and_briefly() {
    let _serial = SERIAL.lock().await;
    let root = test_dir("api-guard");
    let peer = PeerProc::spawn(&root.join("p0"), &[]);
    let token = peer.token();
    let port = peer.api().port();

    // A DNS-rebound name is refused even with the token; loopback passes.
    for (host, expected) in [
        (format!("rebound.example:{port}"), "421"),
        (format!("localhost:{port}"), "200"),
        (format!("127.0.0.1:{port}"), "200"),
    ] {
        let (answer, _) = raw(
            peer.api(),
            format!(
                "GET /v1/status HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\n\
                 Connection: close\r\n\r\n"
            )
            .as_bytes(),
            Duration::from_secs(5),
        )
        .await;
        assert!(status_line(&answer).contains(expected), "{host}: {answer}");
    }

    // A body that never comes is cut at the body deadline (5 s).
    let (answer, took) = raw(
        peer.api(),
        format!(
            "POST /v1/jobs HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {token}\r\n\
             Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"app\""
        )
        .as_bytes(),
        Duration::from_secs(20),
    )
    .await;
    eprintln!(
        "figure: a stalled POST body was cut after {} ms",
        took.as_millis()
    );
    assert!(status_line(&answer).contains("408"), "{answer}");
    assert!(took < Duration::from_secs(8), "{took:?}");

    // Headers that never end or never start: the connection is closed at
    // the header deadline, and 100 such connections (more than the 64 served at once)
    // neither pile up nor keep the API from answering afterwards.
    let started = Instant::now();
    let mut stalled = Vec::new();
    for i in 0..100 {
        let mut socket = TcpStream::connect(peer.api()).await.expect("connect");
        // Half send a piece of a request, half nothing at all.
        if i % 2 == 0 {
            socket
                .write_all(
                    format!("POST /v1/jobs HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n").as_bytes(),
                )
                .await
                .expect("send");
        }
        stalled.push(socket);
    }
    let mut closed_after = Duration::ZERO;
    for mut socket in stalled {
        let mut sink = Vec::new();
        let read =
            tokio::time::timeout(Duration::from_secs(15), socket.read_to_end(&mut sink)).await;
        assert!(read.is_ok(), "a stalled connection stayed open");
        closed_after = closed_after.max(started.elapsed());
    }
    eprintln!(
        "figure: 100 stalled header connections all closed after {} ms",
        closed_after.as_millis()
    );
    assert!(closed_after < Duration::from_secs(9), "{closed_after:?}");
    assert!(peer.status().await.is_some(), "the API answers afterwards");

    // A long bad argument: the error quotes it cut short.
    let long = "7".repeat(200_000);
    let response = peer
        .request(reqwest::Method::POST, "/v1/jobs")
        .json(&serde_json::json!({"app": "nqueens", "args": [long]}))
        .send()
        .await
        .expect("post");
    assert_eq!(response.status(), 400);
    let text = response.text().await.expect("body");
    assert!(text.len() < 400, "{} bytes: {text}", text.len());
    assert!(text.contains("bytes)"), "{text}");
    assert!(text.contains("N is not a whole number"), "{text}");
    // Beyond the body limit: 413, briefly.
    let huge = "7".repeat(2_000_000);
    let response = peer
        .request(reqwest::Method::POST, "/v1/jobs")
        .json(&serde_json::json!({"app": "nqueens", "args": [huge]}))
        .send()
        .await;
    if let Ok(response) = response {
        assert_eq!(response.status(), 413);
        assert!(response.text().await.unwrap_or_default().len() < 400);
    }
    // A long bad job id, too.
    let response = peer
        .request(
            reqwest::Method::GET,
            &format!("/v1/jobs/{}", "z".repeat(50_000)),
        )
        .send()
        .await
        .expect("get");
    assert_eq!(response.status(), 400);
    assert!(response.text().await.expect("body").len() < 400);
    let _ = std::fs::remove_dir_all(&root);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_and_the_descriptor_refuse_the_same_fault_tolerance() {
    let _serial = SERIAL.lock().await;
    let root = test_dir("api-ft");
    let peer = PeerProc::spawn(&root.join("p0"), &[]);
    let cases = [
        (
            1e-9,
            3,
            "copies:2",
            "ttc must be at least 10ms, got 0.000000001 s",
        ),
        (
            1.0,
            3,
            "copies:4",
            "copies r = 4 must be between 1 and home_size = 3",
        ),
        (1.0, 5, "shards:4+2", "k + m <= home_size"),
        (1.0, 0, "local", "home_size must be between 1 and 16, got 0"),
        (
            1.0,
            300,
            "local",
            "home_size must be between 1 and 16, got 300",
        ),
        (
            1.0,
            3,
            "copies",
            "storage must be \"local\", \"copies:R\" or \"shards:K+M\", got \"copies\"",
        ),
    ];
    for (ttc, home_size, storage, needle) in cases {
        let response = peer
            .request(reqwest::Method::POST, "/v1/jobs")
            .json(&serde_json::json!({
                "app": "nqueens",
                "args": ["8"],
                "fault_tolerance": {"ttc_s": ttc, "home_size": home_size, "storage": storage},
            }))
            .send()
            .await
            .expect("post");
        assert_eq!(response.status(), 400, "{needle}");
        let api_text = response.text().await.expect("body");
        assert!(api_text.contains(needle), "API: {api_text}");

        let descriptor = root.join("d.toml");
        std::fs::write(
            &descriptor,
            format!(
                "[virtual_nodes.vn]\nacquire = \"local\"\nservice = \"ft\"\n\n[services.ft]\n\
                 kind = \"fault-tolerance\"\nttc = {ttc:?}\nhome_size = {home_size}\n\
                 storage = \"{storage}\"\n"
            ),
        )
        .expect("write descriptor");
        let out = colony(&[
            "run",
            "--descriptor",
            &descriptor.display().to_string(),
            "nqueens",
            "8",
        ]);
        assert!(!out.status.success(), "{needle}");
        assert!(
            stderr(&out).contains(needle),
            "descriptor: {}",
            stderr(&out)
        );
    }
    let _ = std::fs::remove_dir_all(&root);
}
