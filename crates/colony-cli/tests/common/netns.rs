//! Hosts in network namespaces joined by a bridge, for tests with real
//! network partitions.
//!
//! [`NetNs::create`] builds, for one test run, a namespace holding a bridge
//! and `n` host namespaces, each attached to the bridge by a veth pair and
//! given the address `10.77.0.<i + 1>/24`. [`NetNs::cut`] takes the bridge's
//! end of a host's link down — the host keeps its address and sockets but
//! every packet to or from it is lost, like a pulled cable — and
//! [`NetNs::restore`] brings it back. Everything is deleted on drop, even when
//! the test panics; namespaces left behind by killed test runs are deleted by
//! the next run.
//!
//! Peers run inside the namespaces ([`NetNs::spawn_peer`]); since their HTTP
//! API listens on the namespace's loopback, they are queried by running the
//! `colony` CLI inside the namespace ([`NetNs::colony`], [`NsPeer::members`]).
//!
//! Needs root and iproute2: [`NetNs::create`] returns `None`, after printing
//! why, when either is missing, and the test should return at once.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use colony::{MemberInfo, MemberState, PeerInfo};

/// Prefix of every namespace these harnesses create.
const PREFIX: &str = "colonyt";
/// Most time one `colony` CLI command inside a namespace may take.
const CLI_TIMEOUT: Duration = Duration::from_secs(10);

/// Distinguishes harnesses created by the same test process.
static NEXT_RUN: AtomicU32 = AtomicU32::new(0);

/// A bridge and `n` hosts in network namespaces; deleted on drop.
pub struct NetNs {
    bridge_ns: String,
    hosts: Vec<Host>,
}

struct Host {
    ns: String,
    addr: Ipv4Addr,
    /// The bridge's end of the host's veth pair, in `bridge_ns`.
    port: String,
}

/// Runs `ip` with `args`; its stderr on failure.
fn ip(args: &[&str]) -> Result<(), String> {
    let output = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run `ip {}`: {e}", args.join(" ")))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`ip {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

/// Why namespaces cannot be used here, if they cannot.
fn unavailable() -> Option<String> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let euid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|u| u.parse::<u32>().ok());
    if euid != Some(0) {
        return Some("not running as root".into());
    }
    match Command::new("ip").arg("-V").output() {
        Ok(o) if o.status.success() => None,
        _ => Some("the `ip` command (iproute2) is missing".into()),
    }
}

/// Deletes namespaces of earlier runs whose test process is gone.
fn delete_leftovers() {
    let Ok(output) = Command::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        let Some(name) = line.split_whitespace().next() else {
            continue;
        };
        let Some(pid) = name
            .strip_prefix(PREFIX)
            .and_then(|rest| rest.strip_prefix('-'))
            .and_then(|rest| rest.split('-').next())
        else {
            continue;
        };
        if !Path::new("/proc").join(pid).exists() {
            let _ = ip(&["netns", "delete", name]);
        }
    }
}

impl NetNs {
    /// Creates the bridge and `n` hosts (at most 250), or returns `None`
    /// after printing why namespaces are unavailable (not root, no `ip`).
    /// Panics if they should be available but cannot be created.
    pub fn create(n: usize) -> Option<NetNs> {
        assert!(n <= 250, "at most 250 hosts on one /24");
        if let Some(why) = unavailable() {
            eprintln!("SKIPPED: network namespace test needs root and iproute2: {why}");
            return None;
        }
        delete_leftovers();
        let run = format!(
            "{PREFIX}-{}-{}",
            std::process::id(),
            NEXT_RUN.fetch_add(1, Ordering::Relaxed)
        );
        let mut net = NetNs {
            bridge_ns: format!("{run}-br"),
            hosts: Vec::new(),
        };
        // On failure `net` is dropped, which deletes what was created so far.
        if let Err(e) = net.build(&run, n) {
            panic!("cannot set up network namespaces (as root): {e}");
        }
        Some(net)
    }

    fn build(&mut self, run: &str, n: usize) -> Result<(), String> {
        let br = self.bridge_ns.clone();
        ip(&["netns", "add", &br])?;
        ip(&["-n", &br, "link", "set", "lo", "up"])?;
        ip(&["-n", &br, "link", "add", "br0", "type", "bridge"])?;
        ip(&["-n", &br, "link", "set", "br0", "up"])?;
        for i in 0..n {
            let ns = format!("{run}-{i}");
            ip(&["netns", "add", &ns])?;
            let host = Host {
                ns: ns.clone(),
                addr: Ipv4Addr::new(10, 77, 0, i as u8 + 1),
                port: format!("p{i}"),
            };
            self.hosts.push(host);
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
            let port = format!("p{i}");
            ip(&[
                "link", "add", "eth0", "netns", &ns, "type", "veth", "peer", "name", &port,
                "netns", &br,
            ])?;
            ip(&["-n", &br, "link", "set", &port, "master", "br0"])?;
            ip(&["-n", &br, "link", "set", &port, "up"])?;
            let cidr = format!("{}/24", self.hosts[i].addr);
            ip(&["-n", &ns, "addr", "add", &cidr, "dev", "eth0"])?;
            ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
        }
        Ok(())
    }

    /// Number of hosts.
    pub fn len(&self) -> usize {
        self.hosts.len()
    }

    /// The namespace of host `i`.
    pub fn ns(&self, i: usize) -> &str {
        &self.hosts[i].ns
    }

    /// The address of host `i` on the bridge.
    pub fn addr(&self, i: usize) -> Ipv4Addr {
        self.hosts[i].addr
    }

    /// Cuts host `i` off: every packet to or from it is lost until
    /// [`restore`](Self::restore).
    pub fn cut(&self, i: usize) {
        let port = &self.hosts[i].port;
        ip(&["-n", &self.bridge_ns, "link", "set", port, "down"]).expect("cut a link");
    }

    /// Reconnects host `i`.
    pub fn restore(&self, i: usize) {
        let port = &self.hosts[i].port;
        ip(&["-n", &self.bridge_ns, "link", "set", port, "up"]).expect("restore a link");
    }

    /// A command that runs `program` inside host `i`'s namespace.
    pub fn command(&self, i: usize, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", self.ns(i)]).arg(program);
        command
    }

    /// Runs `colony <args>` inside host `i`'s namespace and captures its
    /// output; `None` if it could not run or took longer than 10 s.
    pub async fn colony(&self, i: usize, args: &[&str]) -> Option<Output> {
        colony_in(self.ns(i), args, CLI_TIMEOUT).await
    }

    /// [`colony`](Self::colony) for commands that take a while (`colony
    /// run`): `None` if it could not run or took longer than `within`.
    pub async fn colony_within(&self, i: usize, args: &[&str], within: Duration) -> Option<Output> {
        colony_in(self.ns(i), args, within).await
    }

    /// Starts one peer per host, data in `root/p<i>`, all bootstrapped from
    /// the first, each with `extra_args`.
    pub fn start_network(&self, root: &Path, extra_args: &[String]) -> Vec<NsPeer> {
        let seed = self.spawn_peer(0, &root.join("p0"), extra_args);
        let mut args = extra_args.to_vec();
        args.extend(["--bootstrap".to_string(), seed.addr()]);
        let mut peers = vec![seed];
        for i in 1..self.len() {
            peers.push(self.spawn_peer(i, &root.join(format!("p{i}")), &args));
        }
        peers
    }

    /// Starts `colony peer` inside host `i`'s namespace with its data in
    /// `dir`, its API on the namespace's loopback (a free port), listening
    /// on the host's address (a free port) unless `extra_args` has a
    /// `--listen` of its own, plus `extra_args`; waits for its `peer.json`.
    pub fn spawn_peer(&self, i: usize, dir: &Path, extra_args: &[String]) -> NsPeer {
        std::fs::create_dir_all(dir).expect("create peer dir");
        let json = dir.join("peer.json");
        let _ = std::fs::remove_file(&json);
        let log = std::fs::File::create(dir.join("peer.log")).expect("create log");
        let mut args = vec![
            "peer".to_string(),
            "--data-dir".into(),
            dir.display().to_string(),
            "--api".into(),
            "127.0.0.1:0".into(),
        ];
        if !extra_args.iter().any(|a| a == "--listen") {
            args.extend(["--listen".into(), format!("/ip4/{}/tcp/0", self.addr(i))]);
        }
        args.extend(extra_args.iter().cloned());
        // `ip netns exec` execs the program, so the child is the peer itself.
        let mut child = self
            .command(i, env!("CARGO_BIN_EXE_colony"))
            .args(&args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn colony peer in a namespace");
        let deadline = Instant::now() + Duration::from_secs(20);
        let info = loop {
            if let Ok(text) = std::fs::read_to_string(&json) {
                if let Ok(info) = serde_json::from_str::<PeerInfo>(&text) {
                    if info.pid == child.id() {
                        break info;
                    }
                }
            }
            if let Ok(Some(status)) = child.try_wait() {
                let log = std::fs::read_to_string(dir.join("peer.log")).unwrap_or_default();
                panic!("colony peer in {} exited with {status}:\n{log}", self.ns(i));
            }
            assert!(
                Instant::now() < deadline,
                "colony peer in {} did not write peer.json in time",
                self.ns(i)
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        NsPeer {
            child: Some(child),
            ns: self.ns(i).to_string(),
            host: self.addr(i),
            dir: dir.to_path_buf(),
            info,
        }
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        // Deleting a namespace destroys the interfaces in it; the veth pair
        // and the bridge go with them.
        for host in &self.hosts {
            if let Err(e) = ip(&["netns", "delete", &host.ns]) {
                eprintln!("netns cleanup: {e}");
            }
        }
        if let Err(e) = ip(&["netns", "delete", &self.bridge_ns]) {
            eprintln!("netns cleanup: {e}");
        }
    }
}

/// Runs `colony <args>` inside namespace `ns`, capturing its output;
/// killed after `within`.
async fn colony_in(ns: &str, args: &[&str], within: Duration) -> Option<Output> {
    let run = tokio::process::Command::new("ip")
        .args(["netns", "exec", ns, env!("CARGO_BIN_EXE_colony")])
        .args(args)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    tokio::time::timeout(within, run).await.ok()?.ok()
}

/// One `colony peer` process inside a namespace; killed on drop.
///
/// Drop it before the [`NetNs`] it runs in.
pub struct NsPeer {
    child: Option<Child>,
    /// The namespace it runs in.
    pub ns: String,
    /// Its host's address on the bridge.
    pub host: Ipv4Addr,
    /// Its data directory.
    pub dir: PathBuf,
    /// Its `peer.json`.
    pub info: PeerInfo,
}

impl NsPeer {
    /// The multiaddr others bootstrap from: its listen address on the
    /// bridge. A peer listening on every interface may list only its
    /// loopback address in `peer.json`; the port is the same on the bridge.
    pub fn addr(&self) -> String {
        let addrs = &self.info.listen_addrs;
        let on_bridge = format!("/ip4/{}/", self.host);
        if let Some(addr) = addrs.iter().find(|a| a.to_string().starts_with(&on_bridge)) {
            return addr.to_string();
        }
        let first = addrs.first().map(|a| a.to_string()).unwrap_or_default();
        let rest: Vec<&str> = first.splitn(4, '/').collect();
        match rest.as_slice() {
            ["", "ip4", _, tail] => format!("{on_bridge}{tail}"),
            _ => first,
        }
    }

    /// Whether the harness still runs it (not killed).
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Its log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("peer.log")).unwrap_or_default()
    }

    /// SIGKILL, and reap.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Runs `colony <args>` in its namespace, capturing the output; `None`
    /// if it could not run or took longer than 10 s.
    pub async fn colony(&self, args: &[&str]) -> Option<Output> {
        colony_in(&self.ns, args, CLI_TIMEOUT).await
    }

    /// Its membership view (its own row first), asked through
    /// `colony peers --json` in its namespace.
    pub async fn members(&self) -> Option<Vec<MemberInfo>> {
        let dir = self.dir.display().to_string();
        let output = self
            .colony(&["peers", "--data-dir", &dir, "--json"])
            .await?;
        if !output.status.success() {
            return None;
        }
        serde_json::from_slice(&output.stdout).ok()
    }
}

impl Drop for NsPeer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// How `observer`'s view shows each of `others`: `None` for a peer it does
/// not know, or when it cannot be asked.
pub async fn states_seen(observer: &NsPeer, others: &[&NsPeer]) -> Vec<Option<MemberState>> {
    let members = observer.members().await.unwrap_or_default();
    others
        .iter()
        .map(|other| {
            members
                .iter()
                .find(|m| m.peer_id == other.info.peer_id)
                .map(|m| m.state)
        })
        .collect()
}

/// Whether every peer in `peers` sees every other one alive.
pub async fn all_alive_in_ns(peers: &[&NsPeer]) -> bool {
    for observer in peers {
        let others: Vec<&NsPeer> = peers
            .iter()
            .copied()
            .filter(|p| p.info.peer_id != observer.info.peer_id)
            .collect();
        let seen = states_seen(observer, &others).await;
        if seen.iter().any(|s| *s != Some(MemberState::Alive)) {
            return false;
        }
    }
    true
}

/// Whether every peer of `observers` sees every peer of `subjects` in `state`.
pub async fn all_see(observers: &[&NsPeer], subjects: &[&NsPeer], state: MemberState) -> bool {
    for observer in observers {
        let seen = states_seen(observer, subjects).await;
        if seen.iter().any(|s| *s != Some(state)) {
            return false;
        }
    }
    true
}

/// Polls `check` every 100 ms until it holds; after `within`, prints how
/// each of `peers` sees the others and the end of its log, then panics.
pub async fn wait_for<F, Fut>(peers: &[&NsPeer], within: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    loop {
        if check().await {
            return;
        }
        if Instant::now() >= deadline {
            for (i, peer) in peers.iter().enumerate() {
                let seen = states_seen(peer, peers).await;
                let log = peer.log();
                let tail: Vec<&str> = log.lines().rev().take(30).collect();
                eprintln!("p{i} sees {seen:?}; its log ends with:");
                for line in tail.iter().rev() {
                    eprintln!("    {line}");
                }
            }
            panic!("timed out after {within:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
