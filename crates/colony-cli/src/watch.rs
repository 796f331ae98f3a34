//! `colony watch`: a local network of real `colony peer` processes on
//! loopback that the user can watch form, lose a peer to SIGKILL, detect it,
//! and take it back after a restart.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use colony::{MemberInfo, MemberState, PeerInfo};

use crate::client::ApiClient;

/// A `colony peer` process this command started; killed when dropped.
pub(crate) struct DemoPeer {
    pub(crate) child: Option<Child>,
    pub(crate) dir: PathBuf,
    pub(crate) info: PeerInfo,
}

impl Drop for DemoPeer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Starts `colony peer` in `dir` on loopback, bootstrapping from
/// `bootstrap`; returns once it wrote its `peer.json`.
pub(crate) fn spawn_peer(dir: &Path, bootstrap: Option<&str>) -> Result<DemoPeer> {
    spawn_peer_with(dir, bootstrap, &[])
}

/// [`spawn_peer`] with more options for `colony peer`.
pub(crate) fn spawn_peer_with(
    dir: &Path,
    bootstrap: Option<&str>,
    extra: &[String],
) -> Result<DemoPeer> {
    std::fs::create_dir_all(dir)?;
    let json = dir.join("peer.json");
    let _ = std::fs::remove_file(&json);
    let log = std::fs::File::create(dir.join("peer.log"))?;
    let mut command = Command::new(std::env::current_exe()?);
    command
        .arg("peer")
        .arg("--data-dir")
        .arg(dir)
        .args(["--listen", "/ip4/127.0.0.1/tcp/0", "--api", "127.0.0.1:0"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log);
    if let Some(addr) = bootstrap {
        command.args(["--bootstrap", addr]);
    }
    command.args(extra);
    let mut child = command
        .spawn()
        .context("cannot start a colony peer process")?;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(info) = std::fs::read_to_string(&json)
            .ok()
            .and_then(|text| serde_json::from_str::<PeerInfo>(&text).ok())
            .filter(|info| info.pid == child.id())
        {
            return Ok(DemoPeer {
                child: Some(child),
                dir: dir.to_path_buf(),
                info,
            });
        }
        if let Ok(Some(status)) = child.try_wait() {
            bail!(
                "a peer exited with {status}; see {}",
                dir.join("peer.log").display()
            );
        }
        if Instant::now() > deadline {
            bail!(
                "a peer did not start in time; see {}",
                dir.join("peer.log").display()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

async fn view(peer: &DemoPeer) -> Option<Vec<MemberInfo>> {
    let api = ApiClient::for_peer(&peer.dir, &peer.info).ok()?;
    api.get_json("/v1/peers").await.ok()
}

fn short(id: &str) -> &str {
    &id[id.len().saturating_sub(6)..]
}

/// Prints one line per peer: what it sees.
async fn print_views(peers: &[DemoPeer]) -> Result<()> {
    for peer in peers.iter().filter(|p| p.child.is_some()) {
        let Some(members) = view(peer).await else {
            continue;
        };
        let line: Vec<String> = members
            .iter()
            .filter(|m| !m.local)
            .map(|m| {
                format!(
                    "…{}:{}",
                    short(&m.peer_id),
                    format!("{:?}", m.state).to_lowercase()
                )
            })
            .collect();
        outln!(
            "  peer …{} sees {}",
            short(&peer.info.peer_id),
            line.join(" ")
        )?;
    }
    Ok(())
}

/// Waits until every running peer sees `want` for `target` (or for all).
pub(crate) async fn wait_for(
    peers: &[DemoPeer],
    target: Option<&str>,
    want: MemberState,
    within: Duration,
) -> Result<Duration> {
    let start = Instant::now();
    loop {
        let mut ok = true;
        for peer in peers.iter().filter(|p| p.child.is_some()) {
            let Some(members) = view(peer).await else {
                ok = false;
                break;
            };
            let others: Vec<&MemberInfo> = members.iter().filter(|m| !m.local).collect();
            ok &= match target {
                Some(id) => others.iter().any(|m| m.peer_id == id && m.state == want),
                None => others.len() + 1 == peers.len() && others.iter().all(|m| m.state == want),
            };
        }
        if ok {
            return Ok(start.elapsed());
        }
        if start.elapsed() > within {
            bail!("the network did not reach the expected state within {within:?}");
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Runs the demo with `n` peers.
pub async fn run(n: usize) -> Result<()> {
    if !(2..=32).contains(&n) {
        bail!("--peers must be between 2 and 32, got {n}");
    }
    let root = std::env::temp_dir().join(format!("colony-demo-{}", std::process::id()));
    let result = run_in(&root, n).await;
    let _ = std::fs::remove_dir_all(&root);
    result
}

async fn run_in(root: &Path, n: usize) -> Result<()> {
    outln!(
        "Starting {n} colony peers on loopback (real processes, data in {})…",
        root.display()
    )?;
    let started = Instant::now();
    let mut peers = vec![spawn_peer(&root.join("peer0"), None)?];
    let seed_addr = peers[0].info.listen_addrs[0].to_string();
    for i in 1..n {
        peers.push(spawn_peer(
            &root.join(format!("peer{i}")),
            Some(&seed_addr),
        )?);
    }
    wait_for(&peers, None, MemberState::Alive, Duration::from_secs(20)).await?;
    outln!(
        "All {n} peers see each other alive after {} ms:",
        started.elapsed().as_millis()
    )?;
    print_views(&peers).await?;

    let victim = n - 1;
    let victim_id = peers[victim].info.peer_id.clone();
    outln!(
        "\nSIGKILL peer …{} (no goodbye, as in a crash)…",
        short(&victim_id)
    )?;
    if let Some(mut child) = peers[victim].child.take() {
        child.kill()?;
        child.wait()?;
    }
    let took = wait_for(
        &peers,
        Some(&victim_id),
        MemberState::Dead,
        Duration::from_secs(10),
    )
    .await?;
    outln!(
        "Every survivor declared it dead after {} ms:",
        took.as_millis()
    )?;
    print_views(&peers).await?;

    outln!("\nRestarting it on the same data directory (same PeerId, higher incarnation)…")?;
    let dir = peers[victim].dir.clone();
    peers[victim] = spawn_peer(&dir, Some(&seed_addr))?;
    let took = wait_for(&peers, None, MemberState::Alive, Duration::from_secs(20)).await?;
    outln!("Alive everywhere again after {} ms:", took.as_millis())?;
    print_views(&peers).await?;
    outln!("\nDone. `colony peer --help` shows how to run peers on several machines.")?;
    Ok(())
}
