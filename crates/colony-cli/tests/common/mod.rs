//! Real `colony peer` processes on loopback for integration tests.

#![allow(dead_code)]

pub mod mesh;
pub mod netns;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use colony::{MemberInfo, MemberState, PeerInfo, StatusInfo};

/// Process tests measure timing; run them one at a time.
pub static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Milliseconds since the Unix epoch.
pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A fresh directory for one test.
pub fn test_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "colony-test-{name}-{}-{}",
        std::process::id(),
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
    ));
    std::fs::create_dir_all(&dir).expect("create test dir");
    dir
}

/// Waits until a running peer among `peers` reports job `job_id` ended
/// (done or failed) and returns that view. Past `within` it panics with
/// every running peer's view of the job (its home, units done, work), so
/// a job that stalls says where.
pub async fn wait_job_end(peers: &[PeerProc], job_id: &str, within: Duration) -> colony::JobInfo {
    let deadline = Instant::now() + within;
    loop {
        for peer in peers.iter().filter(|p| p.is_running()) {
            if let Some(info) = peer.job_info(job_id).await {
                if info.state != "running" {
                    return info;
                }
            }
        }
        if Instant::now() >= deadline {
            let mut views = Vec::new();
            for peer in peers.iter().filter(|p| p.is_running()) {
                let view = peer.job_info(job_id).await;
                views.push(format!("{}: {view:?}", peer.info.peer_id));
            }
            panic!(
                "timed out after {within:?} waiting for job {job_id} to end; each running peer's view:\n{}",
                views.join("\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Polls `check` every 50 ms until it returns `Some`, or panics after `within`.
pub async fn wait_until<T, F, Fut>(within: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {within:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One `colony peer` process.
pub struct PeerProc {
    child: Option<Child>,
    pub dir: PathBuf,
    pub info: PeerInfo,
    args: Vec<String>,
}

impl PeerProc {
    /// Starts a peer with its data in `dir` and waits for its `peer.json`.
    pub fn spawn(dir: &Path, extra_args: &[String]) -> PeerProc {
        let mut args = vec![
            "peer".to_string(),
            "--data-dir".into(),
            dir.display().to_string(),
            "--listen".into(),
            "/ip4/127.0.0.1/tcp/0".into(),
            "--api".into(),
            "127.0.0.1:0".into(),
        ];
        args.extend(extra_args.iter().cloned());
        let (child, info) = start(dir, &args);
        PeerProc {
            child: Some(child),
            dir: dir.to_path_buf(),
            info,
            args,
        }
    }

    /// The multiaddr others bootstrap from.
    pub fn addr(&self) -> String {
        self.info.listen_addrs[0].to_string()
    }

    /// Whether this harness still runs the process (not killed).
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    pub fn pid(&self) -> u32 {
        self.info.pid
    }

    /// The log file of the current process.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("peer.log")).unwrap_or_default()
    }

    /// The last 8 KiB of the log, for a failure message.
    pub fn log_tail(&self) -> String {
        let log = self.log();
        let mut start = log.len().saturating_sub(8 * 1024);
        while !log.is_char_boundary(start) {
            start += 1;
        }
        log[start..].to_string()
    }

    /// SIGKILL, and reap.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends a signal by name (STOP, CONT, TERM).
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([format!("-{name}"), self.pid().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{name} failed");
    }

    /// Waits for the process to exit by itself.
    pub fn wait_exit(&mut self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(_)) = child.try_wait() {
                    self.child = None;
                    return true;
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// Starts the peer again with the same data directory and arguments,
    /// plus `extra_args`.
    pub fn restart_with(&mut self, extra_args: &[String]) {
        self.kill();
        self.args.extend(extra_args.iter().cloned());
        let (child, info) = start(&self.dir, &self.args);
        self.child = Some(child);
        self.info = info;
    }

    /// The peer's membership view (its own row first).
    pub async fn members(&self) -> Option<Vec<MemberInfo>> {
        self.get_json("/v1/peers").await
    }

    /// The peer's status and counters.
    pub async fn status(&self) -> Option<StatusInfo> {
        self.get_json("/v1/status").await
    }

    /// The peer's HTTP API address.
    pub fn api(&self) -> std::net::SocketAddr {
        self.info.api_addr.expect("the API is on")
    }

    /// The token its API asks for, from its data directory.
    pub fn token(&self) -> String {
        colony::read_api_token(&self.dir.join(colony::API_TOKEN_FILE)).expect("read api.token")
    }

    /// A request to its API carrying its token.
    pub fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        reqwest::Client::builder()
            .timeout(Duration::from_secs(15))
            .no_proxy()
            .build()
            .expect("http client")
            .request(method, format!("http://{}{path}", self.api()))
            .bearer_auth(self.token())
    }

    /// GET `path` from its API, parsed as JSON; `None` on any failure.
    pub async fn get_json<T: serde::de::DeserializeOwned>(&self, path: &str) -> Option<T> {
        self.info.api_addr?;
        let response = self
            .request(reqwest::Method::GET, path)
            .timeout(Duration::from_secs(2))
            .send()
            .await
            .ok()?;
        response.json().await.ok()
    }

    /// Submits a job through its API (`body` as `POST /v1/jobs` takes it);
    /// returns the job id.
    pub async fn submit(&self, body: serde_json::Value) -> String {
        self.submit_answer(body).await.0
    }

    /// Submits a job through the API: its id, and whether the answer says
    /// a majority of the job's home holds it.
    pub async fn submit_answer(&self, body: serde_json::Value) -> (String, bool) {
        let reply: serde_json::Value = self
            .request(reqwest::Method::POST, "/v1/jobs")
            .json(&body)
            .send()
            .await
            .expect("submit")
            .json()
            .await
            .expect("a JSON answer");
        let id = reply["job_id"].as_str().expect("a job id").to_string();
        (id, reply["replicated"] == true)
    }

    /// A job as its API reports it, if it answers.
    pub async fn job_info(&self, job_id: &str) -> Option<colony::JobInfo> {
        self.get_json(&format!("/v1/jobs/{job_id}")).await
    }

    /// Worker threads (`colony-unit-N`) the process runs now, as the
    /// kernel lists them.
    pub fn unit_threads(&self) -> usize {
        self.unit_thread_nices().len()
    }

    /// The nice value of each thread of this peer running a unit, from the
    /// kernel (`/proc/PID/task/TID/stat`).
    pub fn unit_thread_nices(&self) -> Vec<i64> {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{}/task", self.pid())) else {
            return Vec::new();
        };
        tasks
            .filter_map(Result::ok)
            .filter_map(|t| std::fs::read_to_string(t.path().join("stat")).ok())
            .filter_map(|stat| {
                // "TID (NAME) STATE PPID …": the name may hold spaces, the
                // fields after it do not; nice is the 19th field.
                let (head, fields) = stat.rsplit_once(')')?;
                if !head.contains("(colony-unit") {
                    return None;
                }
                fields.split_whitespace().nth(16)?.parse().ok()
            })
            .collect()
    }

    /// The state of `other` in this peer's view.
    pub async fn state_of(&self, other: &PeerProc) -> Option<MemberInfo> {
        self.members()
            .await?
            .into_iter()
            .find(|m| m.peer_id == other.info.peer_id)
    }
}

impl Drop for PeerProc {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            // A stopped process cannot die until it is continued.
            let _ = Command::new("kill")
                .args(["-CONT".to_string(), child.id().to_string()])
                .status();
        }
        self.kill();
    }
}

fn start(dir: &Path, args: &[String]) -> (Child, PeerInfo) {
    std::fs::create_dir_all(dir).expect("create peer dir");
    let json = dir.join("peer.json");
    let _ = std::fs::remove_file(&json);
    let log = std::fs::File::create(dir.join("peer.log")).expect("create log");
    let out = std::fs::File::create(dir.join("peer.out")).expect("create stdout file");
    let mut child = Command::new(env!("CARGO_BIN_EXE_colony"))
        .args(args)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(log)
        .spawn()
        .expect("spawn colony peer");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(text) = std::fs::read_to_string(&json) {
            if let Ok(info) = serde_json::from_str::<PeerInfo>(&text) {
                if info.pid == child.id() {
                    return (child, info);
                }
            }
        }
        if let Ok(Some(status)) = child.try_wait() {
            let log = std::fs::read_to_string(dir.join("peer.log")).unwrap_or_default();
            panic!("colony peer exited with {status} before listening:\n{log}");
        }
        assert!(
            Instant::now() < deadline,
            "colony peer did not write peer.json in time"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A seed peer plus `n - 1` peers bootstrapped from it.
pub fn start_network(root: &Path, n: usize, extra_args: &[String]) -> Vec<PeerProc> {
    let seed = PeerProc::spawn(&root.join("p0"), extra_args);
    let mut args = extra_args.to_vec();
    args.extend(["--bootstrap".to_string(), seed.addr()]);
    let mut peers = vec![seed];
    for i in 1..n {
        peers.push(PeerProc::spawn(&root.join(format!("p{i}")), &args));
    }
    peers
}

/// Whether every peer in `peers` sees every other one alive.
pub async fn all_see_all_alive(peers: &[&PeerProc]) -> bool {
    for observer in peers {
        let Some(members) = observer.members().await else {
            return false;
        };
        for other in peers {
            let alive = members
                .iter()
                .any(|m| m.peer_id == other.info.peer_id && m.state == MemberState::Alive);
            if !alive {
                return false;
            }
        }
    }
    true
}

/// p50 and max of millisecond samples.
pub fn p50_max(samples: &mut [u64]) -> (u64, u64) {
    samples.sort_unstable();
    (samples[samples.len() / 2], samples[samples.len() - 1])
}

/// The frame payload that carries `job_message` (a postcard-encoded job
/// protocol message) as message `seq` of session `session` on the events
/// channel of the reliable pipe, exactly as a Colony peer would send it:
/// encoded by colony-core's own wire functions (versioned frame header,
/// job payload kind).
pub fn pipe_frame_with_job_message(session: u64, seq: u64, job_message: &[u8]) -> Vec<u8> {
    use colony_core::wire::{encode_frame, encode_payload, Frame, PayloadKind};
    let frame: Frame<colony::PeerId> = Frame::Pipe(colony_core::pipe::PipeFrame::Data {
        class: colony_core::pipe::TrafficClass::EVENTS,
        session,
        seq,
        base: seq,
        payload: encode_payload(PayloadKind::Job, job_message),
    });
    encode_frame(&frame, usize::MAX).expect("encode pipe frame")
}

/// Resident set size of a process, from `/proc/PID/status` (0 if gone).
pub fn rss_bytes(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .unwrap_or(0)
}

/// Samples the largest resident set of processes `pids` every 10 ms
/// until the returned flag is set; the thread's result is that peak.
pub fn watch_peak_rss(
    pids: Vec<u32>,
) -> (
    std::sync::Arc<std::sync::atomic::AtomicBool>,
    std::thread::JoinHandle<u64>,
) {
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = stop.clone();
    let sampler = std::thread::spawn(move || {
        let mut peak = 0;
        while !flag.load(std::sync::atomic::Ordering::Relaxed) {
            for pid in &pids {
                peak = peak.max(rss_bytes(*pid));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        peak
    });
    (stop, sampler)
}

/// The objects whose primary is `peer` (`GET /v1/objects`).
pub async fn objects_at(peer: &PeerProc) -> Vec<colony::ObjectSummary> {
    peer.get_json::<Vec<colony::ObjectSummary>>("/v1/objects")
        .await
        .unwrap_or_default()
}

/// A peer's object API, for tasks that outlive a borrow of its process.
#[derive(Clone)]
pub struct ObjectApi {
    addr: std::net::SocketAddr,
    token: String,
    http: reqwest::Client,
}

impl ObjectApi {
    /// The API of `peer`.
    pub fn of(peer: &PeerProc) -> ObjectApi {
        ObjectApi {
            addr: peer.api(),
            token: peer.token(),
            http: reqwest::Client::builder()
                .no_proxy()
                .build()
                .expect("http client"),
        }
    }

    /// `POST /v1/objects`: a counter from 0 under `protocol`; its URI.
    pub async fn create_counter(&self, protocol: &str) -> String {
        self.create("counter", serde_json::json!(0), protocol).await
    }

    /// `POST /v1/objects`: an `object_type` made from `params` under
    /// `protocol`; its URI.
    pub async fn create(
        &self,
        object_type: &str,
        params: serde_json::Value,
        protocol: &str,
    ) -> String {
        let body = serde_json::json!({
            "type": object_type,
            "params": params,
            "fault_tolerance": { "protocol": protocol, "ttc_s": 600 },
        });
        let answer: serde_json::Value = self
            .http
            .post(format!("http://{}/v1/objects", self.addr))
            .bearer_auth(&self.token)
            .timeout(Duration::from_secs(30))
            .json(&body)
            .send()
            .await
            .expect("create an object")
            .json()
            .await
            .expect("a JSON answer");
        answer["uri"]
            .as_str()
            .unwrap_or_else(|| panic!("no URI in {answer}"))
            .to_string()
    }

    /// `POST /v1/calls` of `calls` counter requests to `uri`: the replies,
    /// or the first failure's text.
    pub async fn call(
        &self,
        uri: &str,
        request: serde_json::Value,
        calls: usize,
    ) -> Result<Vec<i64>, String> {
        self.call_any(uri, request, calls)
            .await?
            .iter()
            .map(|reply| reply.as_i64().ok_or_else(|| reply.to_string()))
            .collect()
    }

    /// `POST /v1/calls` of `calls` requests to `uri`, whatever its type:
    /// the replies as JSON, or the first failure's text.
    pub async fn call_any(
        &self,
        uri: &str,
        request: serde_json::Value,
        calls: usize,
    ) -> Result<Vec<serde_json::Value>, String> {
        let body = serde_json::json!({
            "calls": vec![serde_json::json!({ "uri": uri, "request": request }); calls],
            "timeout_s": 30,
        });
        let response = self
            .http
            .post(format!("http://{}/v1/calls", self.addr))
            .bearer_auth(&self.token)
            .timeout(Duration::from_secs(45))
            .json(&body)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let status = response.status();
        let answer: serde_json::Value = response.json().await.map_err(|e| e.to_string())?;
        if !status.is_success() {
            return Err(format!("{status}: {answer}"));
        }
        let replies = answer["replies"].as_array().ok_or("no replies")?;
        replies
            .iter()
            .map(|reply| match reply.get("ok") {
                Some(ok) => Ok(ok.clone()),
                None => Err(reply.to_string()),
            })
            .collect()
    }
}

/// Waits for `child` (a `colony run`) to exit, at most `within`; kills it
/// and fails the test past that.
pub fn wait_exit(child: &mut Child, within: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("colony run did not exit within {within:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A fresh libp2p identity dialling `victim`, for attacker tests: the
/// sender of its pipe frames. What the victim sends back is read and
/// dropped.
pub fn attacker_frames(victim: &colony_net::libp2p::Multiaddr) -> colony_net::FrameSender {
    use colony_net::libp2p::futures::StreamExt;
    let config = colony_net::NetConfig::default();
    let keypair = colony_net::libp2p::identity::Keypair::generate_ed25519();
    let mut swarm = colony_net::build_swarm(keypair, &config).expect("attacker swarm");
    let (events, mut inbound) = tokio::sync::mpsc::channel(1024);
    let frames = colony_net::start_frames(swarm.behaviour().stream.new_control(), &config, events)
        .expect("attacker frames");
    swarm.dial(victim.clone()).expect("dial the victim");
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = swarm.select_next_some() => {}
                // Acknowledgements and anything else the victim says.
                _ = inbound.recv() => {}
            }
        }
    });
    frames
}

/// Waits (20 s at most) until each of `peers` sees every other alive.
pub async fn settled(peers: &[&PeerProc]) {
    wait_until(
        Duration::from_secs(20),
        "every peer to see every other",
        || async { all_see_all_alive(peers).await.then_some(()) },
    )
    .await;
}
