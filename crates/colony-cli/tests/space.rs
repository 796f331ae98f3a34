//! The object space on real `colony peer` processes: the CLI from one peer
//! to another, clear refusals that change nothing, locks that outlive
//! neither a SIGKILLed nor a SIGSTOPped holder, exactly-once increments
//! under a lock through a peer's crash and restart, and acknowledged
//! objects that survive restarts of every peer and the loss of a minority.

mod common;

use std::process::{Command, Output};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;

/// Three peers, each offering the space room, objects up to 1 MiB (so
/// values past 1 MiB are stored in chunks), values up to 24 MiB.
fn three_peers(name: &str) -> (std::path::PathBuf, Vec<PeerProc>) {
    let root = test_dir(name);
    let peers = start_network(
        &root,
        3,
        &[
            "--max-object-mib".into(),
            "1".into(),
            "--max-value-mib".into(),
            "24".into(),
        ],
    );
    (root, peers)
}

async fn formed(peers: &[&PeerProc]) {
    wait_until(Duration::from_secs(20), "the network to form", || async {
        all_see_all_alive(peers).await.then_some(())
    })
    .await;
}

/// `colony space ARGS --data-dir DIR-of-peer`.
fn cli(peer: &PeerProc, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_colony"))
        .arg("space")
        .args(args)
        .arg("--data-dir")
        .arg(&peer.dir)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run colony space")
}

/// Runs the CLI and expects success; returns its standard output.
fn cli_ok(peer: &PeerProc, args: &[&str]) -> String {
    let out = cli(peer, args);
    assert!(
        out.status.success(),
        "colony space {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs the CLI and expects a refusal: a non-zero exit and one line on
/// stderr that contains `says`. Returns that line.
fn cli_refused(peer: &PeerProc, args: &[&str], says: &str) -> String {
    let out = cli(peer, args);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "colony space {args:?} succeeded");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one line for {args:?}: {stderr}");
    assert!(
        lines[0].starts_with("error: ") && lines[0].contains(says),
        "{args:?}: expected {says:?} in {stderr}"
    );
    eprintln!("refused as it should be: {}", lines[0]);
    lines[0].to_string()
}

/// Why an API call failed.
#[derive(Debug)]
enum Failure {
    /// No answer (the peer is down, the connection broke).
    Transport(String),
    /// The peer answered with a refusal of this kind.
    Refused {
        status: u16,
        kind: String,
        message: String,
    },
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Transport(why) => write!(f, "no answer: {why}"),
            Failure::Refused {
                status,
                kind,
                message,
            } => write!(f, "{status} {kind}: {message}"),
        }
    }
}

impl Failure {
    fn kind(&self) -> &str {
        match self {
            Failure::Refused { kind, .. } => kind,
            Failure::Transport(_) => "transport",
        }
    }
}

/// A tiny client of a peer's space API.
#[derive(Clone)]
struct Api {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Api {
    fn of(peer: &PeerProc) -> Api {
        Api {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .no_proxy()
                .build()
                .expect("http client"),
            base: format!("http://{}/v1/space/global", peer.api()),
            token: peer.token(),
        }
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        headers: &[(&str, String)],
        body: Option<Vec<u8>>,
    ) -> Result<reqwest::Response, Failure> {
        let mut request = self
            .http
            .request(method, format!("{}/{path}", self.base))
            .bearer_auth(&self.token);
        for (name, value) in headers {
            request = request.header(*name, value);
        }
        if let Some(body) = body {
            request = request.body(body);
        }
        let response = request
            .send()
            .await
            .map_err(|e| Failure::Transport(e.to_string()))?;
        if response.status().is_success() {
            return Ok(response);
        }
        let status = response.status().as_u16();
        let kind = response
            .headers()
            .get("colony-error")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let message = response.text().await.unwrap_or_default();
        Err(Failure::Refused {
            status,
            kind,
            message,
        })
    }

    async fn json(
        &self,
        method: reqwest::Method,
        path: &str,
        headers: &[(&str, String)],
        body: Option<Vec<u8>>,
    ) -> Result<serde_json::Value, Failure> {
        self.call(method, path, headers, body)
            .await?
            .json()
            .await
            .map_err(|e| Failure::Transport(e.to_string()))
    }

    /// The value and version of `name`, `None` if absent.
    async fn get(&self, name: &str) -> Result<Option<(Vec<u8>, u64)>, Failure> {
        match self.call(reqwest::Method::GET, name, &[], None).await {
            Ok(response) => {
                let version = response
                    .headers()
                    .get("colony-version")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                let value = response
                    .bytes()
                    .await
                    .map_err(|e| Failure::Transport(e.to_string()))?;
                Ok(Some((value.to_vec(), version)))
            }
            Err(Failure::Refused { kind, .. }) if kind == "no_object" => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn put(&self, name: &str, value: &[u8], token: Option<u64>) -> Result<u64, Failure> {
        let path = match token {
            Some(t) => format!("{name}?token={t}"),
            None => name.to_string(),
        };
        let written = self
            .json(reqwest::Method::PUT, &path, &[], Some(value.to_vec()))
            .await?;
        Ok(written["version"].as_u64().unwrap_or(0))
    }

    async fn lock(&self, name: &str, lease_ms: u64, wait_ms: u64) -> Result<u64, Failure> {
        let path = format!("{name}/lock?mode=write&lease_ms={lease_ms}&wait_ms={wait_ms}");
        let granted = self.json(reqwest::Method::POST, &path, &[], None).await?;
        granted["token"]
            .as_u64()
            .ok_or_else(|| Failure::Transport(format!("no token in {granted}")))
    }

    async fn unlock(&self, name: &str, token: u64) -> Result<(), Failure> {
        let path = format!("{name}/unlock?token={token}");
        self.json(reqwest::Method::POST, &path, &[], None)
            .await
            .map(|_| ())
    }
}

/// Retries `op` while the space cannot answer yet (homes forming or
/// changing, a peer down), for at most `within`.
async fn retried<T, F, Fut>(within: Duration, what: &str, mut op: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, Failure>>,
{
    let deadline = Instant::now() + within;
    loop {
        match op().await {
            Ok(value) => return value,
            Err(e) if matches!(e.kind(), "unavailable" | "timeout" | "transport" | "busy") => {
                assert!(
                    Instant::now() < deadline,
                    "{what}: still failing after {within:?}: {e}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("{what}: {e}"),
        }
    }
}

/// Whether `peer` is the primary of `name`'s partition (global
/// namespace), as its status says.
async fn is_primary_of(peer: &PeerProc, name: &str) -> bool {
    let partition = colony::ObjectKey::new("global", name).partition();
    peer.status()
        .await
        .is_some_and(|s| s.space.primary_of.contains(&partition))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_reads_at_one_peer_what_another_wrote_and_refuses_bad_input_cleanly() {
    let _serial = SERIAL.lock().await;
    let started = Instant::now();
    let (root, peers) = three_peers("space-cli");
    let [a, b, c] = [&peers[0], &peers[1], &peers[2]];
    formed(&[a, b, c]).await;
    let file = root.join("value.txt");
    std::fs::write(&file, "the best bound is 1049\n").unwrap();
    let file = file.display().to_string();
    // The first write waits for the partition's home to form.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = cli(a, &["put", "bound", &file, "--tag", "instance=ta017"]);
        if out.status.success() {
            assert!(String::from_utf8_lossy(&out.stdout).contains("version 1"));
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(cli_ok(b, &["get", "bound"]), "the best bound is 1049\n");
    let copy = root.join("copy.txt");
    cli_ok(c, &["get", "bound", "-o", &copy.display().to_string()]);
    assert_eq!(
        std::fs::read_to_string(&copy).unwrap(),
        "the best bound is 1049\n"
    );
    let listed: serde_json::Value = serde_json::from_str(&cli_ok(c, &["ls", "--json"])).unwrap();
    assert_eq!(listed["entries"].as_array().map(Vec::len), Some(1));
    assert_eq!(listed["entries"][0]["name"], "bound");
    assert_eq!(listed["entries"][0]["tags"]["instance"], "ta017");
    assert!(cli_ok(b, &["ls"]).contains("bound"));

    // Bad input: a clear sentence, a non-zero exit, and nothing changed.
    cli_refused(
        b,
        &["put", "--namespace", "no-such-ns", "bound", &file],
        "namespace \"no-such-ns\" does not exist",
    );
    let too_big = root.join("too-big");
    std::fs::write(&too_big, vec![7u8; (24 << 20) + 1]).unwrap();
    cli_refused(
        c,
        &["put", "bound", &too_big.display().to_string()],
        "larger than 25165824 bytes",
    );
    let _ = std::fs::remove_file(&too_big);
    cli_refused(
        a,
        &["unlock", "bound", "--token", "424242"],
        "no lock with token 424242 is held",
    );
    let stale = cli_ok(b, &["lock", "bound", "--write", "--lease-ms", "5000"]);
    let stale = stale.trim();
    cli_ok(b, &["unlock", "bound", "--token", stale]);
    let token = cli_ok(c, &["lock", "bound", "--write", "--lease-ms", "5000"]);
    let token = token.trim();
    assert!(token.parse::<u64>().unwrap() > stale.parse::<u64>().unwrap());
    cli_refused(
        a,
        &["put", "bound", &file, "--token", stale],
        &format!("fencing token {stale} does not hold the write lock"),
    );
    cli_refused(a, &["put", "bound", &file], "locked by another holder");
    cli_refused(
        a,
        &["put", "bound", &file, "--if-version", "7"],
        "locked by another holder",
    );
    let meta: serde_json::Value =
        serde_json::from_str(&cli_ok(a, &["get", "bound", "--json"])).unwrap();
    assert_eq!(meta["version"], 1, "nothing was written: {meta}");
    assert_eq!(meta["value_utf8"], "the best bound is 1049\n");

    // The holder of the token writes, compare-and-set included.
    std::fs::write(root.join("new.txt"), "1047").unwrap();
    let new = root.join("new.txt").display().to_string();
    cli_refused(
        a,
        &["put", "bound", &new, "--token", token, "--if-version", "5"],
        "is at version 1, not the one expected",
    );
    assert!(cli_ok(
        a,
        &["put", "bound", &new, "--token", token, "--if-version", "1"]
    )
    .contains("version 2"));
    cli_ok(b, &["unlock", "bound", "--token", token]);
    cli_refused(
        b,
        &["unlock", "bound", "--token", token],
        &format!("no lock with token {token}"),
    );

    cli_ok(b, &["rm", "bound"]);
    cli_refused(a, &["get", "bound"], "no object \"global/bound\"");
    assert!(!cli_ok(c, &["ls"]).contains("bound"));

    // Namespaces.
    cli_ok(a, &["ns-create", "job-1"]);
    cli_refused(b, &["ns-create", "job-1"], "exists already");
    cli_ok(b, &["put", "-n", "job-1", "row/1", &new]);
    assert_eq!(cli_ok(c, &["get", "-n", "job-1", "row/1"]), "1047");
    cli_ok(c, &["ns-rm", "job-1"]);
    cli_refused(
        a,
        &["get", "-n", "job-1", "row/1"],
        "namespace \"job-1\" does not exist",
    );

    // Search by tags: written at one peer, searched at another; exactly
    // the objects whose tags pass every term, in text and in JSON.
    let rows: [(&str, &[&str]); 6] = [
        ("row-1", &["type=row", "index=1", "owner=alice"]),
        (
            "row-3",
            &["type=row", "index=3", "owner=albert", "done=yes"],
        ),
        ("row-4", &["type=row", "index=4", "owner=alma"]),
        ("row-5", &["type=row", "index=5", "owner=bob", "done=yes"]),
        ("row-7", &["type=row", "index=7", "owner=alba"]),
        ("col-4", &["type=col", "index=4", "owner=alice", "done=yes"]),
    ];
    for (name, tags) in rows {
        let mut args = vec!["put", name, new.as_str()];
        for tag in tags {
            args.extend(["--tag", tag]);
        }
        cli_ok(a, &args);
    }
    let found = |peer: &PeerProc, args: &[&str]| -> Vec<String> {
        let text = cli_ok(peer, &[&["search"], args].concat());
        let mut lines = text.lines();
        assert!(
            lines.next().is_some_and(|h| h.starts_with("NAME")),
            "{text}"
        );
        let names: Vec<String> = lines
            .filter_map(|l| l.split_whitespace().next())
            .map(str::to_string)
            .collect();
        let json: serde_json::Value =
            serde_json::from_str(&cli_ok(peer, &[&["search", "--json"], args].concat())).unwrap();
        let json_names: Vec<String> = json["entries"]
            .as_array()
            .unwrap_or_else(|| panic!("no entries in {json}"))
            .iter()
            .map(|e| e["name"].as_str().unwrap_or("?").to_string())
            .collect();
        assert_eq!(names, json_names, "text and JSON agree for {args:?}");
        assert_eq!(json["truncated"], false);
        names
    };
    assert_eq!(
        found(b, &["type=row index>=3 index<6 owner^=al"]),
        ["row-3", "row-4"]
    );
    assert_eq!(
        found(b, &["type=row index>=3 index<6 owner^=al done?"]),
        ["row-3"]
    );
    assert_eq!(found(c, &["done?"]), ["col-4", "row-3", "row-5"]);
    assert_eq!(found(c, &["index>6"]), ["row-7"]);
    assert_eq!(found(b, &["owner=carol"]), Vec::<String>::new());
    // --namespace searches that namespace only.
    cli_ok(a, &["ns-create", "tables"]);
    cli_ok(
        a,
        &["put", "-n", "tables", "t-3", &new, "--tag", "type=row"],
    );
    assert_eq!(found(c, &["-n", "tables", "type=row"]), ["t-3"]);
    // A malformed query is refused, naming its bad term, by the CLI and by
    // the HTTP API (400, invalid_query).
    cli_refused(
        b,
        &["search", "type=row index"],
        "malformed search predicate \"index\"",
    );
    cli_refused(
        b,
        &["search", "owner^="],
        "malformed search predicate \"owner^=\"",
    );
    cli_refused(
        b,
        &["search", "-n", "no-such-ns", "type=row"],
        "namespace \"no-such-ns\" does not exist",
    );
    let refused = b
        .request(
            reqwest::Method::GET,
            "/v1/space/global?search=type%3Drow%20index%3C%3D",
        )
        .send()
        .await
        .expect("the API answers");
    assert_eq!(refused.status().as_u16(), 400);
    assert_eq!(
        refused
            .headers()
            .get("colony-error")
            .and_then(|v| v.to_str().ok()),
        Some("invalid_query")
    );
    let body = refused.text().await.unwrap_or_default();
    assert!(body.contains("\"index<=\""), "{body}");

    // Cached reads at a third peer: the value; after an overwrite, the old
    // value or the new one (never anything else), and the new one soon.
    assert_eq!(cli_ok(c, &["get", "row-3", "--cached"]), "1047");
    assert_eq!(cli_ok(c, &["get", "row-3", "--cached"]), "1047");
    let hits = c.status().await.expect("status").space.cache_hits;
    assert!(
        hits >= 1,
        "the second cached read was not served from the copy"
    );
    std::fs::write(root.join("newer.txt"), "1046").unwrap();
    let newer = root.join("newer.txt").display().to_string();
    cli_ok(a, &["put", "row-3", &newer]);
    let overwritten = Instant::now();
    let mut old_reads = 0;
    loop {
        match cli_ok(c, &["get", "row-3", "--cached"]).as_str() {
            "1046" => break,
            "1047" => old_reads += 1,
            other => panic!("a cached read invented {other:?}"),
        }
        assert!(
            overwritten.elapsed() < Duration::from_secs(10),
            "cached reads still show the old value {:?} after the overwrite",
            overwritten.elapsed()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    eprintln!(
        "figure: cached reads showed the overwritten value {old_reads} time(s), the new one {:.2} s after the write",
        overwritten.elapsed().as_secs_f64()
    );
    // A linearizable read right after is the new value, and an unknown
    // read mode is refused.
    assert_eq!(cli_ok(b, &["get", "row-3"]), "1046");
    let refused = c
        .request(
            reqwest::Method::GET,
            "/v1/space/global/row-3?read=sometimes",
        )
        .send()
        .await
        .expect("the API answers");
    assert_eq!(refused.status().as_u16(), 400);

    // Objects the replicas hold before the large value (the rows above).
    let mut held_before = 0;
    for peer in [a, b, c] {
        held_before += peer.status().await.expect("status").space.objects;
    }
    // A value of 20 MiB, stored as 1 MiB chunks: put at one peer, read
    // back byte for byte at another, listed whole, deleted with its chunks.
    let large: Vec<u8> = (0..20u64 << 20)
        .map(|i| (i.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 56) as u8)
        .collect();
    let large_file = root.join("large.bin");
    std::fs::write(&large_file, &large).unwrap();
    let put_started = Instant::now();
    cli_ok(
        a,
        &[
            "put",
            "large",
            &large_file.display().to_string(),
            "--tag",
            "kind=blob",
        ],
    );
    let put_took = put_started.elapsed();
    let large_copy = root.join("large.copy");
    let get_started = Instant::now();
    cli_ok(
        b,
        &["get", "large", "-o", &large_copy.display().to_string()],
    );
    let get_took = get_started.elapsed();
    assert!(
        std::fs::read(&large_copy).unwrap() == large,
        "the copy differs"
    );
    eprintln!(
        "figure: 20 MiB value through the CLI: put {:.2} s, get at another peer {:.2} s",
        put_took.as_secs_f64(),
        get_took.as_secs_f64()
    );
    let listed: serde_json::Value = serde_json::from_str(&cli_ok(c, &["ls", "--json"])).unwrap();
    let entries = listed["entries"].as_array().cloned().unwrap_or_default();
    // The search steps above left their rows in `global` too; of the
    // large value only its name is listed, never a chunk.
    assert!(
        entries
            .iter()
            .all(|e| !e["name"].as_str().unwrap_or("").starts_with(".colony")),
        "a chunk is listed: {listed}"
    );
    let large_entries: Vec<_> = entries.iter().filter(|e| e["name"] == "large").collect();
    assert_eq!(large_entries.len(), 1, "{listed}");
    assert_eq!(large_entries[0]["size"], 20u64 << 20);
    assert_eq!(
        large_entries[0]["tags"],
        serde_json::json!({"kind": "blob"})
    );
    cli_refused(
        a,
        &["get", ".colony-chunk/x/0"],
        "reserved for the chunks of large values",
    );
    cli_ok(c, &["rm", "large"]);
    cli_refused(b, &["get", "large"], "no object \"global/large\"");
    let status = a.status().await.expect("status");
    assert_eq!(status.space.chunked_writes, 1);
    assert_eq!(status.space.chunk_cleanup_failures, 0);
    // Every replica lets go of the chunks (backups apply deletions a
    // moment after the primaries answer).
    wait_until(
        Duration::from_secs(10),
        "every replica to let go of the large value's chunks",
        || async {
            let mut held = 0;
            for peer in [a, b, c] {
                held += peer.status().await?.space.objects;
            }
            (held == held_before).then_some(())
        },
    )
    .await;

    eprintln!(
        "figure: space CLI test took {:.1} s",
        started.elapsed().as_secs_f64()
    );
    drop(peers);
    let _ = std::fs::remove_dir_all(&root);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigkilled_lock_holders_lock_goes_to_a_waiter_once_it_is_declared_dead() {
    let _serial = SERIAL.lock().await;
    let (root, mut peers) = three_peers("space-kill-holder");
    formed(&[&peers[0], &peers[1], &peers[2]]).await;
    // The hard case: the holder is the primary of its lock's partition,
    // so the primary that granted dies with it and its successor must
    // revoke the grant.
    let first = Api::of(&peers[0]);
    retried(
        Duration::from_secs(30),
        "create the partition's home",
        || first.get("job-queue"),
    )
    .await;
    let primary = wait_until(
        Duration::from_secs(20),
        "the partition's primary",
        || async {
            for (i, peer) in peers.iter().enumerate() {
                if is_primary_of(peer, "job-queue").await {
                    return Some(i);
                }
            }
            None
        },
    )
    .await;
    let other = (primary + 1) % 3;
    let (holder, waiter) = (Api::of(&peers[primary]), Api::of(&peers[other]));
    // Far longer than detecting a death and electing a new primary take
    // (about 1.2 s and 0.5 s): the lock must be granted well before the
    // lease runs out.
    let lease = Duration::from_millis(6000);
    let lease_ms = lease.as_millis() as u64;
    let token = retried(Duration::from_secs(30), "first lock", || {
        holder.lock("job-queue", lease_ms, 1000)
    })
    .await;
    // The holder's peer renews the lease: past it, its token still holds
    // the lock (a token is a capability: any peer may present it).
    tokio::time::sleep(lease + Duration::from_millis(500)).await;
    waiter
        .put("job-queue", b"held", Some(token))
        .await
        .expect("the renewed lock is still held past its first lease");
    let waiting = tokio::spawn({
        let waiter = waiter.clone();
        async move {
            let result = waiter.lock("job-queue", lease_ms, 20_000).await;
            (result, Instant::now())
        }
    });
    // The waiter's request is queued at the primary before the kill.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let killed_at = Instant::now();
    peers[primary].kill();
    let (granted, at) = tokio::time::timeout(Duration::from_secs(30), waiting)
        .await
        .expect("the waiter hears back")
        .expect("waiter task");
    let second = granted.expect("the waiter gets the lock");
    let took = at.duration_since(killed_at);
    eprintln!(
        "figure: lock of a SIGKILLed holder that was its partition's primary granted to the \
         waiter {:.2} s after the kill (lease {:.1} s)",
        took.as_secs_f64(),
        lease.as_secs_f64(),
    );
    assert!(second > token);
    assert!(
        took < Duration::from_secs(4),
        "granted {took:?} after the kill"
    );
    // The new holder writes; the dead holder's token is stale.
    waiter
        .put("job-queue", b"taken", Some(second))
        .await
        .expect("the new holder writes");
    let third = 3 - primary - other;
    match Api::of(&peers[third])
        .put("job-queue", b"x", Some(token))
        .await
    {
        Err(Failure::Refused { kind, .. }) if kind == "stale_token" => {}
        other => panic!("expected a stale token, got {other:?}"),
    }
    drop(peers);
    let _ = std::fs::remove_dir_all(&root);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_holder_paused_past_its_lease_cannot_write_with_its_old_token() {
    let _serial = SERIAL.lock().await;
    let (root, peers) = three_peers("space-pause-holder");
    formed(&[&peers[0], &peers[1], &peers[2]]).await;
    let (paused, other) = (Api::of(&peers[0]), Api::of(&peers[1]));
    let lease_ms = 1000;
    retried(Duration::from_secs(30), "first write", || {
        paused.put("ledger", b"v1", None)
    })
    .await;
    let old = retried(Duration::from_secs(10), "lock", || {
        paused.lock("ledger", lease_ms, 1000)
    })
    .await;
    let was_primary = is_primary_of(&peers[0], "ledger").await;
    peers[0].signal("STOP");
    let paused_at = Instant::now();
    let new = retried(Duration::from_secs(30), "the other's lock", || {
        other.lock("ledger", lease_ms, 20_000)
    })
    .await;
    eprintln!(
        "figure: lock of a SIGSTOPped holder granted to another {:.2} s after the pause \
         (lease {} ms; the holder was {}the partition's primary)",
        paused_at.elapsed().as_secs_f64(),
        lease_ms,
        if was_primary { "" } else { "not " }
    );
    assert!(new > old, "new token {new}, old {old}");
    other
        .put("ledger", b"written by the new holder", Some(new))
        .await
        .expect("the new holder writes");
    peers[0].signal("CONT");
    // Its late write with the old token is refused, whichever peer's
    // primary answers (a resumed primary must first learn it is stale).
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match paused
            .put("ledger", b"late write of the paused holder", Some(old))
            .await
        {
            Err(Failure::Refused { kind, .. }) if kind == "stale_token" => break,
            Err(e) if matches!(e.kind(), "unavailable" | "timeout" | "transport") => {
                assert!(Instant::now() < deadline, "no answer after resuming: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            other => panic!("the old token must be refused: {other:?}"),
        }
    }
    for api in [&paused, &other] {
        let (value, _) = retried(Duration::from_secs(10), "read", || api.get("ledger"))
            .await
            .expect("present");
        assert_eq!(value, b"written by the new holder");
    }
    drop(peers);
    let _ = std::fs::remove_dir_all(&root);
}

/// The counter as "c0,c1,c2": how many increments each client made. Its
/// sum is the counter; per-client counts let a client whose write's
/// outcome it never heard (its peer was killed) find out whether the write
/// took, so retried increments are counted once.
fn parse_counts(value: &[u8]) -> [u64; 3] {
    let text = String::from_utf8_lossy(value);
    let mut counts = [0u64; 3];
    for (i, part) in text.split(',').enumerate().take(3) {
        counts[i] = part
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("bad counter {text:?}"));
    }
    counts
}

/// One increment by client `me` to reach its `n`-th, under the lock; the
/// peer it goes through is `api`. `Ok(true)` if it took now, `Ok(false)`
/// if it had already (an earlier attempt whose answer was lost).
async fn increment(api: &Api, me: usize, n: u64) -> Result<bool, Failure> {
    let token = api.lock("counter", 2000, 10_000).await?;
    let outcome = async {
        let (value, _) = api.get("counter").await?.unwrap_or((b"0,0,0".to_vec(), 0));
        let mut counts = parse_counts(&value);
        if counts[me] >= n {
            return Ok(false);
        }
        assert_eq!(counts[me], n - 1, "client {me} skipped an increment");
        counts[me] += 1;
        let text = format!("{},{},{}", counts[0], counts[1], counts[2]);
        api.put("counter", text.as_bytes(), Some(token)).await?;
        Ok(true)
    }
    .await;
    // Released whatever happened (a lock lost meanwhile is no longer held).
    let _ = api.unlock("counter", token).await;
    outcome
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_clients_count_to_3000_under_a_lock_through_a_peer_crash_and_restart() {
    const EACH: u64 = 1000;
    let _serial = SERIAL.lock().await;
    let started = Instant::now();
    let (root, mut peers) = three_peers("space-counter");
    formed(&[&peers[0], &peers[1], &peers[2]]).await;
    let first = Api::of(&peers[0]);
    retried(Duration::from_secs(30), "counter creation", || {
        first.put("counter", b"0,0,0", None)
    })
    .await;
    // Every client's view of where each peer's API is (it moves when a
    // peer restarts).
    let apis: Arc<std::sync::Mutex<Vec<Api>>> =
        Arc::new(std::sync::Mutex::new(peers.iter().map(Api::of).collect()));
    let done = Arc::new(AtomicU64::new(0));
    let retries = Arc::new(AtomicU64::new(0));
    let mut clients = Vec::new();
    for me in 0..3usize {
        let (apis, done, retries) = (apis.clone(), done.clone(), retries.clone());
        clients.push(tokio::spawn(async move {
            let mut via = me;
            for n in 1..=EACH {
                let deadline = Instant::now() + Duration::from_secs(60);
                loop {
                    let api = apis.lock().unwrap()[via].clone();
                    match increment(&api, me, n).await {
                        Ok(_) => break,
                        Err(e) => {
                            retries.fetch_add(1, Ordering::Relaxed);
                            assert!(Instant::now() < deadline, "client {me}, increment {n}: {e}");
                            // Another peer if this one is unreachable.
                            if matches!(e, Failure::Transport(_)) {
                                via = (via + 1) % 3;
                            }
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                    }
                }
                done.fetch_add(1, Ordering::Relaxed);
                via = me;
            }
        }));
    }
    // Midway, one peer is SIGKILLed and restarted on its data directory.
    wait_until(
        Duration::from_secs(90),
        "half of the increments",
        || async { (done.load(Ordering::Relaxed) >= 3 * EACH / 2).then_some(()) },
    )
    .await;
    let killed_at = done.load(Ordering::Relaxed);
    peers[2].kill();
    tokio::time::sleep(Duration::from_millis(500)).await;
    peers[2].restart_with(&[]);
    apis.lock().unwrap()[2] = Api::of(&peers[2]);
    eprintln!(
        "peer 2 SIGKILLed after {killed_at} increments and restarted ({:.1} s in)",
        started.elapsed().as_secs_f64()
    );
    for client in clients {
        tokio::time::timeout(Duration::from_secs(150), client)
            .await
            .expect("the clients finish")
            .expect("client task");
    }
    let last = Api::of(&peers[2]);
    let (value, version) = retried(Duration::from_secs(10), "final read", || {
        last.get("counter")
    })
    .await
    .expect("the counter exists");
    let counts = parse_counts(&value);
    eprintln!(
        "figure: 3 clients x {EACH} increments under a write lock: counter {:?} = {}, version {version}, {} retried attempts, {:.1} s",
        counts,
        counts.iter().sum::<u64>(),
        retries.load(Ordering::Relaxed),
        started.elapsed().as_secs_f64()
    );
    assert_eq!(counts, [EACH; 3]);
    assert_eq!(counts.iter().sum::<u64>(), 3000);
    assert_eq!(version, 1 + 3 * EACH, "one write per increment, no more");
    drop(peers);
    let _ = std::fs::remove_dir_all(&root);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_objects_survive_restarts_of_every_peer_and_a_minority_loss() {
    const OBJECTS: usize = 30;
    let _serial = SERIAL.lock().await;
    let (root, mut peers) = three_peers("space-durable");
    formed(&[&peers[0], &peers[1], &peers[2]]).await;
    let value = |i: usize| format!("value of object {i}").into_bytes();
    for i in 0..OBJECTS {
        let api = Api::of(&peers[i % 3]);
        let (name, bytes) = (format!("object-{i}"), value(i));
        retried(Duration::from_secs(30), "put", || {
            api.put(&name, &bytes, None)
        })
        .await;
    }
    // Every peer SIGKILLed, then restarted on its data directory: what
    // they hold comes back from disk only.
    for peer in peers.iter_mut() {
        peer.kill();
    }
    peers[0].restart_with(&[]);
    let seed = peers[0].addr();
    for peer in &mut peers[1..] {
        peer.restart_with(&["--bootstrap".into(), seed.clone()]);
    }
    formed(&[&peers[0], &peers[1], &peers[2]]).await;
    for peer in &peers {
        assert!(
            peer.log().contains("space partitions found on disk"),
            "{}",
            peer.log()
        );
    }
    let check_all = |apis: Vec<Api>| async move {
        for (n, api) in apis.iter().enumerate() {
            for i in 0..OBJECTS {
                let name = format!("object-{i}");
                let got = retried(Duration::from_secs(30), "read after restart", || {
                    api.get(&name)
                })
                .await;
                assert_eq!(got, Some((value(i), 1)), "object {i} read through peer {n}");
            }
        }
    };
    check_all(peers.iter().map(Api::of).collect()).await;
    // One of three is a minority of every home: nothing is lost.
    peers[1].kill();
    check_all(vec![Api::of(&peers[0]), Api::of(&peers[2])]).await;
    let survivor = Api::of(&peers[2]);
    retried(Duration::from_secs(30), "a write without peer 1", || {
        survivor.put("object-0", b"rewritten", None)
    })
    .await;
    drop(peers);
    let _ = std::fs::remove_dir_all(&root);
}

/// `colony bench space` runs end to end at a small size and reports every
/// figure: raw TCP and the space measured in the same run, a crashed
/// holder's lock re-granted within its lease plus detection, and the
/// skewed reads served by the peers.
#[test]
fn the_space_bench_reports_every_figure_against_raw_tcp() {
    let started = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_colony"))
        .args([
            "bench",
            "space",
            "--json",
            "--ops",
            "20",
            "--pipelined",
            "200",
            "--window",
            "32",
            "--regrants",
            "1",
            "--hot-peers",
            "5",
            "--hot-secs",
            "2",
            "--large-mib",
            "2",
            "--large-values",
            "2",
        ])
        .env("RUST_LOG", "error")
        .output()
        .expect("colony bench space");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: colony::bench::SpaceBenchReport = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)));
    assert_eq!((r.peers, r.ops, r.pipelined), (3, 20, 200), "{r:?}");
    for (name, l) in [
        ("tcp", &r.tcp_rtt_us),
        ("set", &r.set_us),
        ("get", &r.get_us),
        ("cached get", &r.cached_get_us),
        ("lock", &r.lock_us),
        ("unlock", &r.unlock_us),
    ] {
        assert!(l.p50 > 0.0 && l.p50 <= l.p99, "{name}: {l:?}");
    }
    assert!(
        r.sets_per_s_spread > 0.0 && r.sets_per_s_one_key > 0.0,
        "{r:?}"
    );
    // Re-granted once the crashed holder was declared dead, well before
    // its lease (10 s) ran out.
    let regrant_ms = r.regrant_us.p50 / 1e3;
    assert!(r.lease_ms >= 10_000, "{r:?}");
    assert!(regrant_ms > 0.0 && regrant_ms < 5_000.0, "{r:?}");
    // Also when the holder was its partition's primary.
    let regrant_of_primary_ms = r.regrant_of_primary_us / 1e3;
    assert!(
        regrant_of_primary_ms > 0.0 && regrant_of_primary_ms < 5_000.0,
        "{r:?}"
    );
    // Erasure-coded 2+1 holds 1.5 bytes per byte, replicated 3 (a home of
    // three), both read back whole (checked by the bench).
    let l = &r.large;
    assert_eq!((l.value_bytes, l.values), (2 << 20, 2), "{l:?}");
    assert!((1.45..1.6).contains(&l.coded_stored_per_byte), "{l:?}");
    assert!((2.9..3.1).contains(&l.replicated_stored_per_byte), "{l:?}");
    for lat in [
        &l.replicated_put_us,
        &l.replicated_get_us,
        &l.coded_put_us,
        &l.coded_get_us,
    ] {
        assert!(lat.p50 > 0.0, "{l:?}");
    }
    assert!(r.all_homes_created_s > 0.0, "{r:?}");
    assert_eq!(r.skewed.len(), 2, "{r:?}");
    for s in &r.skewed {
        assert!(s.reads > 0, "{s:?}");
        assert!(
            s.served_by_home + s.served_by_hot_copies > 0,
            "cached reads were served by no replica: {s:?}"
        );
    }
    assert_eq!(r.skewed[0].served_by_hot_copies, 0, "hot copies while off");
    assert!(
        r.skewed[1].hot_copies_sent > 0 && r.skewed[1].served_by_hot_copies > 0,
        "hot replication on, yet no read was served by a hot copy: {:?}",
        r.skewed[1]
    );
    eprintln!(
        "figure: colony bench space (small) took {:.1} s",
        started.elapsed().as_secs_f64()
    );
    // Bad flags are refused before anything starts.
    let out = Command::new(env!("CARGO_BIN_EXE_colony"))
        .args(["bench", "space", "--hot-secs", "0"])
        .output()
        .expect("colony bench space");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--hot-secs"));
}

/// The shards every running peer holds, and their bytes.
async fn shards_held(peers: &[&PeerProc]) -> Vec<(usize, u64)> {
    let mut held = Vec::new();
    for peer in peers {
        let status = peer.status().await.expect("status");
        held.push((status.space.shards, status.space.shard_bytes));
    }
    held
}

/// A value written erasure-coded 2+2 through the CLI costs twice its size
/// over four distinct peers (not a copy per home member), reads back whole
/// at another peer, drops its shards when replaced or deleted, and stays
/// readable with two of its four holders SIGKILLed; a holder restarted on
/// its data directory holds its shards again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_erasure_coded_value_survives_the_loss_of_m_holders() {
    let _serial = SERIAL.lock().await;
    let root = test_dir("space-erasure");
    let mut peers = start_network(
        &root,
        5,
        &[
            "--max-object-mib".into(),
            "1".into(),
            "--max-value-mib".into(),
            "24".into(),
        ],
    );
    let all: Vec<&PeerProc> = peers.iter().collect();
    formed(&all).await;
    // 3 MiB: two stripes of 2 MiB (k = 2 shards of 1 MiB each).
    let value: Vec<u8> = (0..3u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    let file = root.join("value.bin");
    std::fs::write(&file, &value).expect("write the value's file");
    let file = file.to_string_lossy().into_owned();
    let put = |peer: &PeerProc| {
        cli_ok(peer, &["put", "coded", &file, "--erasure", "2+2", "--json"]);
    };
    put(&peers[0]);
    let held = shards_held(&all).await;
    let holders: Vec<usize> = (0..5).filter(|i| held[*i].0 > 0).collect();
    assert_eq!(holders.len(), 4, "four distinct holders: {held:?}");
    for i in &holders {
        assert_eq!(
            held[*i].0, 2,
            "one shard of each stripe per holder: {held:?}"
        );
    }
    let stored: u64 = held.iter().map(|(_, bytes)| bytes).sum();
    let size = value.len() as u64;
    assert!(
        stored >= 2 * size && stored <= 2 * size + 4096,
        "2+2 stores twice the value, {stored} bytes for {size}"
    );
    let out = root.join("read.bin");
    let out_path = out.to_string_lossy().into_owned();
    cli_ok(&peers[4], &["get", "coded", "--output", &out_path]);
    assert!(
        std::fs::read(&out).expect("read back") == value,
        "the value read back differs"
    );
    let listed = cli_ok(&peers[3], &["ls", "--json"]);
    assert!(
        listed.contains("\"coded\"") && listed.contains(&size.to_string()),
        "{listed}"
    );
    assert!(
        !listed.contains(".colony-shards"),
        "reserved tags are hidden: {listed}"
    );
    // Replaced: the old write's shards go; deleted: all go.
    put(&peers[1]);
    wait_until(
        Duration::from_secs(10),
        "the replaced write's shards to go",
        || async {
            let total: usize = shards_held(&all).await.iter().map(|(n, _)| n).sum();
            (total == 8).then_some(())
        },
    )
    .await;
    cli_ok(&peers[2], &["rm", "coded"]);
    wait_until(
        Duration::from_secs(10),
        "a deleted value's shards to go",
        || async {
            let total: usize = shards_held(&all).await.iter().map(|(n, _)| n).sum();
            (total == 0).then_some(())
        },
    )
    .await;
    put(&peers[0]);
    let held = shards_held(&all).await;
    let holders: Vec<usize> = (0..5).filter(|i| held[*i].0 > 0).collect();
    assert_eq!(holders.len(), 4, "{held:?}");
    // Two holders die, at most one of them a member of the manifest's
    // home (so the manifest stays readable: its home keeps a majority).
    let partition = colony::ObjectKey::new("global", "coded").partition();
    let mut in_home = Vec::new();
    for i in &holders {
        let status = peers[*i].status().await.expect("status");
        in_home.push(status.space.held.contains(&partition));
    }
    let outside = holders
        .iter()
        .zip(&in_home)
        .find(|(_, home)| !**home)
        .map(|(i, _)| *i)
        .expect("four holders of five peers: one is outside a home of three");
    let other = *holders
        .iter()
        .find(|i| **i != outside)
        .expect("another holder");
    let reader = (0..5)
        .find(|i| *i != outside && *i != other)
        .expect("a reader");
    peers[outside].kill();
    peers[other].kill();
    let api = Api::of(&peers[reader]);
    let got = retried(
        Duration::from_secs(60),
        "read with two holders dead",
        || api.get("coded"),
    )
    .await;
    assert!(
        got.is_some_and(|(v, _)| v == value),
        "the value read with two holders dead differs"
    );
    // Through the CLI too, once the deaths are declared.
    let _ = std::fs::remove_file(&out);
    cli_ok(&peers[reader], &["get", "coded", "--output", &out_path]);
    assert!(std::fs::read(&out).expect("read back") == value);
    // A holder restarted on its data directory holds its shards again.
    let seed = peers[reader].addr();
    peers[outside].restart_with(&["--bootstrap".into(), seed]);
    wait_until(
        Duration::from_secs(20),
        "the restarted holder's shards",
        || async {
            let status = peers[outside].status().await?;
            (status.space.shards == 2).then_some(())
        },
    )
    .await;
    assert!(
        peers[outside].log().contains("shards found on disk"),
        "{}",
        peers[outside].log()
    );
    // A coding the space cannot place is a clear error.
    let refused = cli_refused(
        &peers[reader],
        &["put", "wide", &file, "--erasure", "4+2"],
        "full",
    );
    assert!(refused.contains("6 shards need 6 peers"), "{refused}");
    let bad = cli(&peers[reader], &["put", "bad", &file, "--erasure", "0+2"]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("k must be at least 1"));
    drop(peers);
    let _ = std::fs::remove_dir_all(&root);
}

/// Rewrites every shard `peer` (stopped) holds with its last byte flipped
/// and a checksum that matches: a holder that answers altered shards, as a
/// hostile or broken peer would.
fn alter_shards_on_disk(peer: &PeerProc) -> usize {
    let store = colony_store::CheckpointStore::open(&peer.dir.join("checkpoints.redb"))
        .expect("open the holder's store");
    let shards = store.shards().expect("read its shards");
    for (id, mut bytes) in shards.clone() {
        if let Some(last) = bytes.last_mut() {
            *last ^= 0xff;
        }
        let (tx, rx) = std::sync::mpsc::channel();
        store
            .put_shard(id, bytes, Box::new(move |r| drop(tx.send(r))))
            .expect("queued");
        rx.recv_timeout(Duration::from_secs(30))
            .expect("written")
            .expect("written without error");
    }
    shards.len()
}

/// A holder answering altered shards never makes a read return a wrong
/// value: each shard's BLAKE3 is checked against the manifest, the altered
/// ones are set aside for parity, and with too few intact shards left the
/// read fails naming the damaged shard instead of decoding garbage.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_holder_answering_altered_shards_is_caught_by_their_hashes() {
    let _serial = SERIAL.lock().await;
    let root = test_dir("space-altered-shards");
    let mut peers = start_network(&root, 4, &["--max-object-mib".into(), "1".into()]);
    let all: Vec<&PeerProc> = peers.iter().collect();
    formed(&all).await;
    let value: Vec<u8> = (0..(1u32 << 20) + 999)
        .map(|i| (i.wrapping_mul(40_503) >> 11) as u8)
        .collect();
    let file = root.join("value.bin");
    std::fs::write(&file, &value).expect("write the value's file");
    let file = file.to_string_lossy().into_owned();
    cli_ok(&peers[0], &["put", "guarded", &file, "--erasure", "2+1"]);
    let held = shards_held(&all).await;
    let holders: Vec<usize> = (0..4).filter(|i| held[*i].0 > 0).collect();
    assert_eq!(holders.len(), 3, "{held:?}");
    // The holder that is not the manifest's partition primary turns bad
    // (the manifest stays readable while it restarts).
    let partition = colony::ObjectKey::new("global", "guarded").partition();
    let mut bad = None;
    for i in &holders {
        let status = peers[*i].status().await.expect("status");
        if !status.space.primary_of.contains(&partition) {
            bad = Some(*i);
            break;
        }
    }
    let bad = bad.expect("a holder that is not the primary");
    let seed = peers[(bad + 1) % 4].addr();
    peers[bad].kill();
    assert_eq!(alter_shards_on_disk(&peers[bad]), held[bad].0);
    peers[bad].restart_with(&["--bootstrap".into(), seed]);
    let reader = (0..4)
        .find(|i| !holders.contains(i))
        .expect("a peer holding nothing");
    wait_until(
        Duration::from_secs(30),
        "the bad holder back with its shards",
        || async {
            let status = peers[bad].status().await?;
            let back = status.space.shards == held[bad].0;
            let seen = all_see_all_alive(&peers.iter().collect::<Vec<_>>()).await;
            (back && seen).then_some(())
        },
    )
    .await;
    // Two intact shards of three: the value reads whole, whichever two.
    let api = Api::of(&peers[reader]);
    let got = retried(
        Duration::from_secs(30),
        "read past the altered shards",
        || api.get("guarded"),
    )
    .await;
    assert!(
        got.is_some_and(|(v, _)| v == value),
        "a wrong value was read"
    );
    // A good holder dies: one intact shard is left, and the altered one
    // must not be decoded with it.
    let mut good = None;
    for i in holders.iter().copied().filter(|i| *i != bad) {
        let status = peers[i].status().await.expect("status");
        if !status.space.primary_of.contains(&partition) {
            good = Some(i);
        }
    }
    // (Or the primary: the home re-elects, the read waits for it.)
    let good = good.unwrap_or_else(|| holders.iter().copied().find(|i| *i != bad).unwrap_or(bad));
    peers[good].kill();
    let deadline = Instant::now() + Duration::from_secs(60);
    let refused = loop {
        match api.get("guarded").await {
            Err(Failure::Refused { kind, message, .. }) if kind == "damaged_value" => {
                break message
            }
            Err(e) if matches!(e.kind(), "unavailable" | "timeout" | "transport" | "busy") => {}
            Ok(got) => panic!(
                "read {} bytes with one intact shard of the two needed",
                got.map_or(0, |(v, _)| v.len())
            ),
            Err(e) => panic!("{e}"),
        }
        assert!(Instant::now() < deadline, "no damaged_value answer");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(refused.contains("is damaged"), "{refused}");
    drop(peers);
    let _ = std::fs::remove_dir_all(&root);
}
