//! `colony peer --mesh super|sensor|client`: a peer that takes a role in
//! the streaming mesh of seed 001. A sensor streams the seed's traffic
//! (events 25/s × 1,024 B, audio 38/s × 418 B, video 24/s × 4,180 B,
//! divided by `--rate-divisor`); each payload starts with its send time,
//! so a client prints per class the frames received and their latency.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Result};
use clap::{Args, ValueEnum};
use colony::Peer;
use colony_core::mesh::{CellId, FtPolicy, StreamClass};
use tracing::warn;

/// The role a peer takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum MeshRoleArg {
    /// Maintain the mesh: join a cell, relay frames, replicate them.
    Super,
    /// Produce the seed's streams under a cell.
    Sensor,
    /// Receive every stream at the root.
    Client,
}

/// The mesh options of `colony peer`.
#[derive(Args, Debug)]
pub struct MeshArgs {
    /// Take a role in the streaming mesh.
    #[arg(long, value_enum, value_name = "ROLE")]
    pub mesh: Option<MeshRoleArg>,
    /// Which classes the mesh replicates among a cell's super-peers:
    /// no_ft, ft_event, ft_event_video or ft_all (every peer of a mesh
    /// uses the same).
    #[arg(long, default_value = "ft_all", value_parser = parse_policy)]
    pub ft_policy: FtPolicy,
    /// Children of each cell (the tree's span k).
    #[arg(long, default_value_t = 2)]
    pub mesh_span: u8,
    /// Super-peers of each cell.
    #[arg(long, default_value_t = 2)]
    pub mesh_cell_size: u8,
    /// A sensor's cell (a CellId of the tree: 0, 01, 011, ...).
    #[arg(long, default_value = "0")]
    pub cell: String,
    /// Which of the cell's super-peers a sensor tries first.
    #[arg(long, default_value_t = 0)]
    pub preferred: usize,
    /// Divide the seed's frame rates by this (1: the seed's traffic).
    #[arg(long, default_value_t = 1)]
    pub rate_divisor: u32,
    /// A sensor's video frames per second instead of the seed's 24 (a
    /// video flood, to see that events and mesh traffic keep their
    /// latency); not divided by --rate-divisor.
    #[arg(long, value_name = "FPS")]
    pub video_fps: Option<u32>,
    /// Classes a client asks for (comma-separated).
    #[arg(long, default_value = "events,audio,video", value_delimiter = ',', value_parser = parse_class)]
    pub classes: Vec<StreamClass>,
}

impl MeshArgs {
    /// The sensor's cell, checked against the tree's span.
    fn sensor_cell(&self) -> Result<CellId> {
        CellId::parse_with_span(&self.cell, self.mesh_span)
            .map_err(|e| anyhow::anyhow!("--cell {}: {e}", self.cell))
    }
}

fn parse_policy(s: &str) -> Result<FtPolicy, String> {
    s.parse().map_err(|e| format!("{e}"))
}

fn parse_class(s: &str) -> Result<StreamClass, String> {
    s.parse().map_err(|e| format!("{e}"))
}

impl MeshArgs {
    /// Checks the options against each other and sets the tree's shape.
    pub fn configure(&self, config: &mut colony::PeerConfig) -> Result<()> {
        if self.mesh.is_none() {
            return Ok(());
        }
        if !(1..=9).contains(&self.mesh_span) {
            bail!("--mesh-span must be from 1 to 9, got {}", self.mesh_span);
        }
        if !(1..=64).contains(&self.mesh_cell_size) {
            bail!(
                "--mesh-cell-size must be from 1 to 64, got {}",
                self.mesh_cell_size
            );
        }
        if self.rate_divisor == 0 {
            bail!("--rate-divisor must be at least 1");
        }
        if self.video_fps.is_some_and(|fps| fps == 0 || fps > 10_000) {
            bail!("--video-fps must be from 1 to 10000");
        }
        if self.mesh == Some(MeshRoleArg::Client) {
            if self.classes.is_empty() {
                bail!("--classes names no class");
            }
            if let Some(class) = self.classes.iter().find(|c| !StreamClass::DATA.contains(c)) {
                bail!("--classes: {class} carries no stream (ask for events, audio or video)");
            }
        }
        self.sensor_cell()?;
        config.mesh.span = self.mesh_span;
        config.mesh.peers_per_cell = self.mesh_cell_size;
        Ok(())
    }

    /// Takes the role on a started peer; a sensor's or client's work runs
    /// in the background until the process ends.
    pub async fn start(&self, peer: &Peer) -> Result<()> {
        if self.mesh.is_none() {
            return Ok(());
        }
        settle(peer).await;
        match self.mesh {
            None => {}
            Some(MeshRoleArg::Super) => peer.mesh_super_peer(self.ft_policy).await?,
            Some(MeshRoleArg::Sensor) => {
                let cell = self.sensor_cell()?;
                peer.mesh_sensor(self.ft_policy, cell, self.preferred)
                    .await?;
                for class in StreamClass::DATA {
                    let (seed_rate, bytes) = seed_traffic(class);
                    let rate = match (class, self.video_fps) {
                        (StreamClass::Video, Some(fps)) => f64::from(fps),
                        _ => f64::from(seed_rate) / f64::from(self.rate_divisor),
                    };
                    tokio::spawn(stream(peer.clone(), class, rate, bytes));
                }
            }
            Some(MeshRoleArg::Client) => {
                let frames = peer.mesh_client(self.classes.clone()).await?;
                tokio::spawn(receive(frames));
            }
        }
        Ok(())
    }
}

/// How long the membership view must stay the same before a role is
/// taken, and the longest wait for it.
const SETTLE_FOR: Duration = Duration::from_millis(1500);
const SETTLE_WITHIN: Duration = Duration::from_secs(20);

/// Waits until this peer's view of the network stops changing (or
/// [`SETTLE_WITHIN`]): a cell record is founded by the peer closest to its
/// key, and a peer that does not see the others yet would found it alone.
async fn settle(peer: &Peer) {
    let start = tokio::time::Instant::now();
    let mut last = None;
    let mut since = start;
    while start.elapsed() < SETTLE_WITHIN {
        let live = peer.status().await.ok().map(|s| (s.joined, s.live_members));
        if live != last {
            last = live;
            since = tokio::time::Instant::now();
        } else if since.elapsed() >= SETTLE_FOR && live.is_some_and(|(joined, _)| joined) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    warn!("the membership view kept changing; taking the mesh role anyway");
}

/// The seed's traffic of `class`: frames per second and bytes per frame.
pub fn seed_traffic(class: StreamClass) -> (u32, usize) {
    match class {
        StreamClass::Event => (25, 1024),
        StreamClass::Audio => (38, 418),
        StreamClass::Video => (24, 4180),
        StreamClass::Mesh => (0, 0),
    }
}

/// Microseconds since the Unix epoch (a payload's first 8 bytes).
fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// Streams `class`: `rate` frames of `bytes` per second.
async fn stream(peer: Peer, class: StreamClass, rate: f64, bytes: usize) {
    let period = Duration::from_secs_f64(1.0 / rate.max(0.01));
    let mut ticks = tokio::time::interval(period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let mut payload = vec![0u8; bytes.max(8)];
        payload[..8].copy_from_slice(&now_micros().to_be_bytes());
        if let Err(error) = peer.mesh_send(class, payload).await {
            if matches!(error, colony::ColonyError::Stopped) {
                return;
            }
            warn!(%class, %error, "frame not sent");
        }
    }
}

/// Per class: frames received and their latencies, printed every second
/// as one JSON line.
async fn receive(mut frames: tokio::sync::mpsc::Receiver<colony::MeshFrame>) {
    let mut latencies: BTreeMap<&'static str, Vec<f64>> = BTreeMap::new();
    let mut totals: BTreeMap<&'static str, u64> = BTreeMap::new();
    let mut report = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            frame = frames.recv() => {
                let Some(frame) = frame else { return };
                let name = frame.class.name();
                *totals.entry(name).or_default() += 1;
                if let Some(sent) = frame.payload.get(..8).and_then(|b| b.try_into().ok()) {
                    let sent = u64::from_be_bytes(sent);
                    let latency_ms = now_micros().saturating_sub(sent) as f64 / 1e3;
                    latencies.entry(name).or_default().push(latency_ms);
                }
            }
            _ = report.tick() => {
                let line: BTreeMap<&str, serde_json::Value> = totals
                    .iter()
                    .map(|(name, total)| {
                        let l = latencies.remove(name).unwrap_or_default();
                        let mean = if l.is_empty() { 0.0 } else { l.iter().sum::<f64>() / l.len() as f64 };
                        (*name, serde_json::json!({"frames": total, "latency_ms_mean": mean}))
                    })
                    .collect();
                if !line.is_empty() {
                    println!("{}", serde_json::to_string(&line).unwrap_or_default());
                }
            }
        }
    }
}
