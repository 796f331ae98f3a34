//! `colony bench mesh`: seed 001's fault-injection bench (§IV) on real
//! `colony peer --mesh …` processes on loopback, its tables printed beside
//! the seed's Tables III–VII.
//!
//! The seed's tree: span 2, 2 super-peers per cell, 3 levels (cells 0, 01,
//! 02, 011 … 022: 14 super-peers), `--sensors-per-cell` sensors under each
//! cell below the root streaming the seed's traffic (events 25/s × 1,024 B,
//! audio 38/s × 418 B, video 24/s × 4,180 B), and one client: this bench's
//! own process, which receives every frame and times it from the send time
//! the sensor wrote into it (one clock: the same machine).
//!
//! - **Test I**, for each `--policies` scenario: a fault-free window, then
//!   one super-peer SIGKILLed at level 2, at level 1 and at level 0, each a
//!   parent of some child at the time, with a window of streaming after
//!   each.
//! - **Test II**, under `ft_all`: for each level, a fresh mesh whose
//!   super-peers of that level are SIGKILLed one after another (parents
//!   first) until none is left, with a window after each.
//!
//! For each run and class: frames lost (holes in the numbers the client
//! received), duplicates, latency mean ± sd, p99 and jitter (the mean
//! difference between consecutive frames' latencies in a stream), every
//! rebind the children reported (fast: to another member of the lost
//! parent's cell; slow: the full join), and each super-peer's CPU (share
//! of one core while streaming) and resident memory.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use colony::{MeshFrame, Peer, PeerConfig, StatusInfo};
use colony_core::mesh::{FtPolicy, StreamClass};
use serde::Serialize;

use crate::client::ApiClient;
use crate::median;
use crate::watch::{spawn_peer_with, DemoPeer};

/// The seed's tree.
const SPAN: usize = 2;
const CELL_SIZE: usize = 2;
const LEVELS: usize = 3;
/// Longest the mesh may take to form, and a stream to reach the client.
const FORM_DEADLINE: Duration = Duration::from_secs(90);
/// A stream whose newest frame is older than this at the end of a window
/// has stalled: its sensor is not bound to a live parent.
const STALLED_AFTER: Duration = Duration::from_secs(2);

/// Which of the seed's tests to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum MeshTest {
    /// One fault per level, for each policy.
    I,
    /// Incremental faults up to every super-peer of a level, under ft_all.
    Ii,
    /// Test I, then Test II.
    Both,
}

#[derive(Args, Debug)]
pub(crate) struct MeshBenchArgs {
    /// Test I (one fault per level), II (every peer of a level, one after
    /// another) or both.
    #[arg(long, value_enum, default_value = "i")]
    test: MeshTest,
    /// Test I's scenarios: which classes the cells replicate.
    #[arg(long, value_delimiter = ',', default_value = "no_ft,ft_event,ft_event_video,ft_all", value_parser = parse_policy)]
    policies: Vec<FtPolicy>,
    /// Test I is run this many times, the policies in turn each time, so
    /// that the overhead of a policy is measured against a no_ft run made
    /// next to it.
    #[arg(long, default_value_t = 1, value_parser = crate::at_least_one)]
    rounds: usize,
    /// Test II at this level only (0: the root, 1 or 2); every level by
    /// default.
    #[arg(long, value_parser = clap::value_parser!(u8).range(0..3))]
    level: Option<u8>,
    /// Sensors under each cell below the root.
    #[arg(long, default_value_t = 2)]
    sensors_per_cell: usize,
    /// Divide the seed's frame rates by this (1: the seed's traffic).
    #[arg(long, default_value_t = 1)]
    rate_divisor: u32,
    /// One sensor sends video at this many frames per second instead of
    /// the seed's 24 (a flood): events and audio must keep their latency.
    #[arg(long, value_name = "FPS")]
    flood_fps: Option<u32>,
    /// Seconds of streaming measured before the first fault.
    #[arg(long, default_value_t = 5)]
    baseline_secs: u64,
    /// Seconds of streaming measured after each fault (failure detection
    /// takes 1–2 s of it).
    #[arg(long, default_value_t = 5)]
    window_secs: u64,
    /// Print one JSON object instead of tables.
    #[arg(long)]
    json: bool,
    /// Keep every peer's data directory and `peer.log` under this
    /// directory instead of a temporary one removed at the end.
    #[arg(long, value_name = "DIR")]
    keep_logs: Option<PathBuf>,
}

fn parse_policy(s: &str) -> Result<FtPolicy, String> {
    s.parse().map_err(|e| format!("{e}"))
}

/// One class over some windows of a run.
#[derive(Clone, Debug, Default, Serialize)]
struct ClassFigures {
    frames: u64,
    lost: u64,
    duplicates: u64,
    latency_mean_ms: f64,
    latency_sd_ms: f64,
    latency_p99_ms: f64,
    jitter_ms: f64,
}

/// Rebinds of one kind: how many, and their times in ms.
#[derive(Clone, Debug, Default, Serialize)]
struct RebindFigures {
    count: usize,
    mean_ms: f64,
    sd_ms: f64,
    max_ms: f64,
}

/// One window of streaming: before any fault, or after one.
#[derive(Clone, Debug, Serialize)]
struct Window {
    /// `baseline`, or the fault: `level 2, fault 1`.
    name: String,
    /// The killed super-peer's cell.
    killed_cell: Option<String>,
    classes: BTreeMap<String, ClassFigures>,
    fast_rebinds: RebindFigures,
    slow_rebinds: RebindFigures,
    /// Streams with no frame in the last [`STALLED_AFTER`] of the window.
    stalled_streams: usize,
}

/// One mesh, from start to end.
#[derive(Clone, Debug, Serialize)]
struct Run {
    test: &'static str,
    policy: String,
    windows: Vec<Window>,
    /// Every window together.
    classes: BTreeMap<String, ClassFigures>,
    fast_rebinds: RebindFigures,
    slow_rebinds: RebindFigures,
    /// Each super-peer's CPU while streaming, in % of one core: mean, max.
    super_cpu_mean_pct: f64,
    super_cpu_max_pct: f64,
    /// Each super-peer's resident memory at the end, MiB: mean, max.
    super_rss_mean_mib: f64,
    super_rss_max_mib: f64,
    /// The client's process (this bench) is not counted.
    processes: usize,
}

#[derive(Serialize)]
struct Report {
    sensors_per_cell: usize,
    rate_divisor: u32,
    /// One sensor's video frames per second, if it floods.
    flood_fps: Option<u32>,
    runs: Vec<Run>,
    /// Each replicating policy's cost against the no_ft runs next to it.
    overheads: Vec<Overhead>,
}

/// What a policy costs while nothing fails, over Test I's rounds: each of
/// its runs against the no_ft run made just before it. Between runs of
/// the same build the figures move by tens of percent on a loaded
/// machine, so it is the median over rounds that says something.
#[derive(Clone, Debug, Serialize)]
struct Overhead {
    policy: String,
    /// Per round: the fault-free latency, averaged over the classes,
    /// against no_ft's, in %.
    latency_pct: Vec<f64>,
    latency_median_pct: f64,
    /// Per round: the super-peers' mean CPU against no_ft's, in %.
    cpu_pct: Vec<f64>,
    cpu_median_pct: f64,
}

pub(crate) async fn run(args: MeshBenchArgs) -> Result<()> {
    if args.sensors_per_cell == 0 || args.sensors_per_cell > 8 {
        bail!(
            "--sensors-per-cell must be from 1 to 8, got {}",
            args.sensors_per_cell
        );
    }
    if args.rate_divisor == 0 {
        bail!("--rate-divisor must be at least 1");
    }
    if args.flood_fps.is_some_and(|fps| fps == 0 || fps > 10_000) {
        bail!("--flood-fps must be from 1 to 10000");
    }
    if args.policies.is_empty() {
        bail!("--policies names no policy");
    }
    if args.baseline_secs == 0 || args.window_secs < 3 {
        bail!("--baseline-secs must be at least 1 and --window-secs at least 3 (failure detection takes 1–2 s)");
    }
    let root = match &args.keep_logs {
        Some(dir) => dir.clone(),
        None => std::env::temp_dir().join(format!("colony-meshbench-{}", std::process::id())),
    };
    let result = run_in(&root, &args).await;
    remove_unless_kept(&root, &args);
    let report = result?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_tables(&report);
    }
    Ok(())
}

async fn run_in(root: &Path, args: &MeshBenchArgs) -> Result<Report> {
    let mut runs = Vec::new();
    let mut number = 0;
    if matches!(args.test, MeshTest::I | MeshTest::Both) {
        for round in 0..args.rounds {
            for &policy in &args.policies {
                number += 1;
                eprintln!("test I, round {}, {policy}", round + 1);
                let dir = root.join(format!("run{number}"));
                let result = test_one(&dir, args, policy).await;
                remove_unless_kept(&dir, args);
                runs.push(result.with_context(|| format!("test I under {policy}"))?);
            }
        }
    }
    if matches!(args.test, MeshTest::Ii | MeshTest::Both) {
        let levels = match args.level {
            Some(level) => vec![usize::from(level)],
            None => (0..LEVELS).collect(),
        };
        for level in levels {
            number += 1;
            eprintln!("test II, level {level}");
            let dir = root.join(format!("run{number}"));
            let result = test_two(&dir, args, level).await;
            remove_unless_kept(&dir, args);
            runs.push(result.with_context(|| format!("test II at level {level}"))?);
        }
    }
    let overheads = overheads(&runs);
    Ok(Report {
        sensors_per_cell: args.sensors_per_cell,
        rate_divisor: args.rate_divisor,
        flood_fps: args.flood_fps,
        runs,
        overheads,
    })
}

/// Removes peers' directories (a run's, or the bench's) unless
/// `--keep-logs` asked for them.
fn remove_unless_kept(dir: &Path, args: &MeshBenchArgs) {
    if args.keep_logs.is_none() {
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// The no_ft run of Test I nearest before `runs[i]` (else the first one):
/// the baseline `runs[i]` is measured against.
fn no_ft_baseline(runs: &[Run], i: usize) -> Option<&Run> {
    let is_no_ft = |r: &&Run| r.test == "I" && r.policy == "no_ft";
    runs[..=i]
        .iter()
        .rev()
        .find(is_no_ft)
        .or_else(|| runs.iter().find(is_no_ft))
}

/// Fault-free latency averaged over the data classes, in ms.
fn fault_free_latency(run: &Run) -> Option<f64> {
    let window = run.windows.first()?;
    let latencies: Vec<f64> = StreamClass::DATA
        .iter()
        .filter_map(|c| window.classes.get(c.name()))
        .map(|f| f.latency_mean_ms)
        .collect();
    (!latencies.is_empty() && latencies.iter().all(|l| *l > 0.0)).then(|| mean(&latencies))
}

fn overheads(runs: &[Run]) -> Vec<Overhead> {
    let mut by_policy: BTreeMap<&str, Overhead> = BTreeMap::new();
    for (i, run) in runs.iter().enumerate() {
        if run.test != "I" || run.policy == "no_ft" {
            continue;
        }
        let Some(baseline) = no_ft_baseline(runs, i) else {
            continue;
        };
        let (Some(latency), Some(base_latency)) =
            (fault_free_latency(run), fault_free_latency(baseline))
        else {
            continue;
        };
        let entry = by_policy
            .entry(run.policy.as_str())
            .or_insert_with(|| Overhead {
                policy: run.policy.clone(),
                latency_pct: Vec::new(),
                latency_median_pct: 0.0,
                cpu_pct: Vec::new(),
                cpu_median_pct: 0.0,
            });
        entry
            .latency_pct
            .push(100.0 * (latency / base_latency - 1.0));
        if baseline.super_cpu_mean_pct > 0.0 {
            entry
                .cpu_pct
                .push(100.0 * (run.super_cpu_mean_pct / baseline.super_cpu_mean_pct - 1.0));
        }
    }
    by_policy
        .into_values()
        .map(|mut o| {
            o.latency_median_pct = median(&o.latency_pct);
            o.cpu_median_pct = median(&o.cpu_pct);
            o
        })
        .collect()
}

/// Test I: one fault at level 2, 1, then 0.
async fn test_one(dir: &Path, args: &MeshBenchArgs, policy: FtPolicy) -> Result<Run> {
    let mut mesh = BenchMesh::start(dir, args, policy).await?;
    mesh.measure("baseline", None, args.baseline_secs).await?;
    for level in (0..LEVELS).rev() {
        let cell = mesh.kill_at(level).await?;
        mesh.measure(&format!("level {level}"), Some(cell), args.window_secs)
            .await?;
    }
    Ok(mesh.finish("I", policy).await)
}

/// Test II: every super-peer of `level`, one after another.
async fn test_two(dir: &Path, args: &MeshBenchArgs, level: usize) -> Result<Run> {
    let policy = FtPolicy::FtAll;
    let mut mesh = BenchMesh::start(dir, args, policy).await?;
    mesh.measure("baseline", None, args.baseline_secs).await?;
    let at_level = CELL_SIZE * SPAN.pow(level as u32);
    for fault in 1..=at_level {
        let cell = mesh.kill_at(level).await?;
        mesh.measure(
            &format!("level {level}, fault {fault}"),
            Some(cell),
            args.window_secs,
        )
        .await?;
    }
    Ok(mesh.finish("II", policy).await)
}

/// Microseconds since the Unix epoch (as the sensors stamp frames).
fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// One stream as the client saw it.
#[derive(Default)]
struct StreamSeen {
    numbers: BTreeSet<u64>,
    duplicates: u64,
    last_latency_ms: Option<f64>,
    newest: Option<Instant>,
}

impl StreamSeen {
    /// Numbers missing between the lowest and the highest received.
    fn holes(&self) -> u64 {
        match (self.numbers.first(), self.numbers.last()) {
            (Some(low), Some(high)) => high - low + 1 - self.numbers.len() as u64,
            _ => 0,
        }
    }
}

/// What the client gathered during the current window.
#[derive(Default)]
struct Gathered {
    streams: BTreeMap<(String, &'static str), StreamSeen>,
    /// Per class: latencies and latency differences in this window.
    latencies: BTreeMap<&'static str, Vec<f64>>,
    differences: BTreeMap<&'static str, Vec<f64>>,
    duplicates: BTreeMap<&'static str, u64>,
}

impl Gathered {
    fn take(&mut self, frame: MeshFrame) {
        let class = frame.class.name();
        let Some(sent) = frame.payload.get(..8).and_then(|b| b.try_into().ok()) else {
            return;
        };
        let latency_ms = now_micros().saturating_sub(u64::from_be_bytes(sent)) as f64 / 1e3;
        let stream = self
            .streams
            .entry((frame.origin.to_string(), class))
            .or_default();
        if !stream.numbers.insert(frame.seq) {
            stream.duplicates += 1;
            *self.duplicates.entry(class).or_default() += 1;
            return;
        }
        if let Some(last) = stream.last_latency_ms {
            self.differences
                .entry(class)
                .or_default()
                .push((latency_ms - last).abs());
        }
        stream.last_latency_ms = Some(latency_ms);
        stream.newest = Some(frame.received);
        self.latencies.entry(class).or_default().push(latency_ms);
    }

    /// Holes per class over every stream.
    fn holes(&self) -> BTreeMap<&'static str, u64> {
        let mut holes = BTreeMap::new();
        for ((_, class), stream) in &self.streams {
            *holes.entry(*class).or_default() += stream.holes();
        }
        holes
    }
}

/// The processes of one mesh and the bench's own client peer.
struct BenchMesh {
    supers: Vec<DemoPeer>,
    sensors: Vec<DemoPeer>,
    client: Peer,
    gathered: Arc<Mutex<Gathered>>,
    /// Each super-peer's cell, by index.
    cell_of: Vec<String>,
    windows: Vec<Window>,
    /// Every latency and difference of the run, by class.
    all_latencies: BTreeMap<&'static str, Vec<f64>>,
    all_differences: BTreeMap<&'static str, Vec<f64>>,
    all_fast: Vec<f64>,
    all_slow: Vec<f64>,
    /// Rebinds already counted, per child process (supers, then sensors).
    rebinds_seen: Vec<usize>,
    /// Holes per class at the end of the previous window.
    holes_before: BTreeMap<&'static str, u64>,
    /// CPU ticks of each super-peer when streaming began, and when.
    cpu_start: (Vec<Option<u64>>, Instant),
}

impl BenchMesh {
    async fn start(dir: &Path, args: &MeshBenchArgs, policy: FtPolicy) -> Result<BenchMesh> {
        let policy_args = ["--ft-policy".to_string(), policy.to_string()];
        let super_args: Vec<String> = ["--mesh", "super"]
            .iter()
            .map(|s| s.to_string())
            .chain(policy_args.iter().cloned())
            .collect();
        let first = spawn_peer_with(&dir.join("s0"), None, &super_args)?;
        let seed = first.info.listen_addrs[0].to_string();
        let mut supers = vec![first];
        let count = CELL_SIZE * (SPAN.pow(LEVELS as u32) - 1) / (SPAN - 1);
        for i in 1..count {
            supers.push(spawn_peer_with(
                &dir.join(format!("s{i}")),
                Some(&seed),
                &super_args,
            )?);
        }
        let cell_of = wait_for_cells(&supers).await?;
        let mut cells: Vec<&String> = cell_of.iter().collect();
        cells.sort();
        cells.dedup();
        let mut sensors = Vec::new();
        for cell in cells.iter().filter(|c| c.len() > 1) {
            for i in 0..args.sensors_per_cell {
                let mut extra = vec![
                    "--mesh".to_string(),
                    "sensor".into(),
                    "--cell".into(),
                    cell.to_string(),
                    "--preferred".into(),
                    (i % CELL_SIZE).to_string(),
                    "--rate-divisor".into(),
                    args.rate_divisor.to_string(),
                ];
                extra.extend(policy_args.iter().cloned());
                if let (Some(fps), true) = (args.flood_fps, sensors.is_empty()) {
                    extra.extend(["--video-fps".to_string(), fps.to_string()]);
                }
                let name = format!("sensor-{cell}-{i}");
                sensors.push(spawn_peer_with(&dir.join(name), Some(&seed), &extra)?);
            }
        }
        let mut config = PeerConfig::new(dir.join("client"));
        config.listen = vec!["/ip4/127.0.0.1/tcp/0".parse()?];
        config.bootstrap = vec![supers[0].info.listen_addrs[0].clone()];
        let client = Peer::start(config).await?;
        let expected = supers.len() + sensors.len();
        let deadline = Instant::now() + FORM_DEADLINE;
        while client.status().await?.live_members < expected {
            if Instant::now() > deadline {
                bail!("the client did not see all {expected} peers alive within {FORM_DEADLINE:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let mut frames = client.mesh_client(StreamClass::DATA.to_vec()).await?;
        let gathered = Arc::new(Mutex::new(Gathered::default()));
        let sink = gathered.clone();
        tokio::spawn(async move {
            while let Some(frame) = frames.recv().await {
                if let Ok(mut gathered) = sink.lock() {
                    gathered.take(frame);
                }
            }
        });
        let streams = sensors.len() * StreamClass::DATA.len();
        let deadline = Instant::now() + FORM_DEADLINE;
        loop {
            let reached = gathered.lock().map(|g| g.streams.len()).unwrap_or(0);
            if reached == streams {
                break;
            }
            if Instant::now() > deadline {
                bail!("{reached} of {streams} streams reached the client within {FORM_DEADLINE:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let rebinds_seen = vec![1; supers.len() + sensors.len()];
        let mut mesh = BenchMesh {
            supers,
            sensors,
            client,
            gathered,
            cell_of,
            windows: Vec::new(),
            all_latencies: BTreeMap::new(),
            all_differences: BTreeMap::new(),
            all_fast: Vec::new(),
            all_slow: Vec::new(),
            rebinds_seen,
            holes_before: BTreeMap::new(),
            cpu_start: (Vec::new(), Instant::now()),
        };
        // Streaming has begun: what was gathered so far is warm-up.
        tokio::time::sleep(Duration::from_secs(1)).await;
        mesh.reset_window();
        let holes = lock(&mesh.gathered).holes();
        mesh.holes_before = holes;
        mesh.cpu_start = (mesh.supers.iter().map(cpu_ticks).collect(), Instant::now());
        Ok(mesh)
    }

    fn reset_window(&self) {
        let mut gathered = lock(&self.gathered);
        gathered.latencies.clear();
        gathered.differences.clear();
        gathered.duplicates.clear();
    }

    /// SIGKILLs a live super-peer of `level`, one some child is bound to
    /// if there is one; its cell.
    async fn kill_at(&mut self, level: usize) -> Result<String> {
        let mut parents = BTreeSet::new();
        for peer in self.supers.iter().chain(&self.sensors) {
            if let Some(parent) = status(peer).await.and_then(|s| s.mesh.parent) {
                parents.insert(parent);
            }
        }
        let candidates: Vec<usize> = (0..self.supers.len())
            .filter(|&i| self.supers[i].child.is_some() && self.cell_of[i].len() == level + 1)
            .collect();
        let victim = candidates
            .iter()
            .copied()
            .find(|&i| parents.contains(&self.supers[i].info.peer_id))
            .or_else(|| candidates.first().copied())
            .with_context(|| format!("no live super-peer left at level {level}"))?;
        if let Some(mut child) = self.supers[victim].child.take() {
            child.kill()?;
            let _ = child.wait();
        }
        eprintln!(
            "  SIGKILL super-peer {victim} of cell {}",
            self.cell_of[victim]
        );
        Ok(self.cell_of[victim].clone())
    }

    /// Streams for `secs`, then records the window.
    async fn measure(&mut self, name: &str, killed_cell: Option<String>, secs: u64) -> Result<()> {
        tokio::time::sleep(Duration::from_secs(secs)).await;
        let (fast, slow) = self.new_rebinds().await;
        let shared = self.gathered.clone();
        let mut gathered = lock(&shared);
        let holes = gathered.holes();
        let stalled = gathered
            .streams
            .values()
            .filter(|s| s.newest.is_none_or(|t| t.elapsed() > STALLED_AFTER))
            .count();
        let mut classes = BTreeMap::new();
        for class in StreamClass::DATA {
            let name = class.name();
            let latencies = gathered.latencies.remove(name).unwrap_or_default();
            let differences = gathered.differences.remove(name).unwrap_or_default();
            let lost = holes
                .get(name)
                .copied()
                .unwrap_or(0)
                .saturating_sub(self.holes_before.get(name).copied().unwrap_or(0));
            let duplicates = gathered.duplicates.remove(name).unwrap_or(0);
            classes.insert(
                name.to_string(),
                figures(&latencies, &differences, lost, duplicates),
            );
            self.all_latencies
                .entry(name)
                .or_default()
                .extend(latencies);
            self.all_differences
                .entry(name)
                .or_default()
                .extend(differences);
        }
        drop(gathered);
        self.holes_before = holes;
        eprintln!(
            "  {name}: {} lost, {} fast and {} slow rebinds, {stalled} streams stalled",
            classes.values().map(|c| c.lost).sum::<u64>(),
            fast.len(),
            slow.len()
        );
        self.windows.push(Window {
            name: name.to_string(),
            killed_cell,
            classes,
            fast_rebinds: rebind_figures(&fast),
            slow_rebinds: rebind_figures(&slow),
            stalled_streams: stalled,
        });
        self.all_fast.extend(fast);
        self.all_slow.extend(slow);
        Ok(())
    }

    /// Rebinds the live children reported since the last call: fast, slow.
    async fn new_rebinds(&mut self) -> (Vec<f64>, Vec<f64>) {
        let (mut fast, mut slow) = (Vec::new(), Vec::new());
        let children: Vec<&DemoPeer> = self.supers.iter().chain(&self.sensors).collect();
        for (i, peer) in children.into_iter().enumerate() {
            if peer.child.is_none() {
                continue;
            }
            let Some(status) = status(peer).await else {
                continue;
            };
            let rebinds = &status.mesh.rebinds;
            for rebind in rebinds.iter().skip(self.rebinds_seen[i]) {
                match rebind.kind.as_str() {
                    "fast" => fast.push(rebind.after_ms),
                    "slow" => slow.push(rebind.after_ms),
                    _ => {}
                }
            }
            self.rebinds_seen[i] = self.rebinds_seen[i].max(rebinds.len());
        }
        (fast, slow)
    }

    /// The run's figures; the processes end when the mesh is dropped.
    async fn finish(mut self, test: &'static str, policy: FtPolicy) -> Run {
        let elapsed = self.cpu_start.1.elapsed().as_secs_f64();
        // USER_HZ: fixed at 100 by Linux's ABI, whatever the kernel's HZ.
        let ticks_per_second = 100.0;
        let cpu: Vec<f64> = self
            .supers
            .iter()
            .zip(&self.cpu_start.0)
            .filter_map(|(peer, start)| {
                let used = cpu_ticks(peer)?.checked_sub((*start)?)?;
                Some(100.0 * used as f64 / ticks_per_second / elapsed.max(1e-3))
            })
            .collect();
        let rss: Vec<f64> = self
            .supers
            .iter()
            .filter_map(|p| rss_kib(p).map(|kib| kib as f64 / 1024.0))
            .collect();
        let mut classes = BTreeMap::new();
        for class in StreamClass::DATA {
            let name = class.name();
            let lost = self
                .windows
                .iter()
                .filter_map(|w| w.classes.get(name))
                .map(|c| c.lost)
                .sum();
            let duplicates = self
                .windows
                .iter()
                .filter_map(|w| w.classes.get(name))
                .map(|c| c.duplicates)
                .sum();
            let latencies = self.all_latencies.remove(name).unwrap_or_default();
            let differences = self.all_differences.remove(name).unwrap_or_default();
            classes.insert(
                name.to_string(),
                figures(&latencies, &differences, lost, duplicates),
            );
        }
        let processes = self.supers.len() + self.sensors.len();
        self.client.shutdown().await;
        Run {
            test,
            policy: policy.to_string(),
            windows: std::mem::take(&mut self.windows),
            classes,
            fast_rebinds: rebind_figures(&self.all_fast),
            slow_rebinds: rebind_figures(&self.all_slow),
            super_cpu_mean_pct: mean(&cpu),
            super_cpu_max_pct: cpu.iter().copied().fold(0.0, f64::max),
            super_rss_mean_mib: mean(&rss),
            super_rss_max_mib: rss.iter().copied().fold(0.0, f64::max),
            processes,
        }
    }
}

/// The client's gatherings (a panic while holding them would have ended
/// the bench already).
fn lock(gathered: &Mutex<Gathered>) -> std::sync::MutexGuard<'_, Gathered> {
    gathered
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Waits until every super-peer is in a cell and every one below the root
/// is bound to a parent; each one's cell.
async fn wait_for_cells(supers: &[DemoPeer]) -> Result<Vec<String>> {
    let deadline = Instant::now() + FORM_DEADLINE;
    loop {
        let mut cells = Vec::new();
        let mut bound = true;
        for peer in supers {
            match status(peer).await.map(|s| s.mesh) {
                Some(mesh) => {
                    bound &= mesh.cell.as_deref() == Some("0") || mesh.parent.is_some();
                    cells.push(mesh.cell);
                }
                None => cells.push(None),
            }
        }
        if bound && cells.iter().all(Option::is_some) {
            return Ok(cells.into_iter().flatten().collect());
        }
        if Instant::now() > deadline {
            let placed = cells.iter().filter(|c| c.is_some()).count();
            bail!(
                "{placed} of {} super-peers in a cell (every one bound: {bound}) within {FORM_DEADLINE:?}",
                supers.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn status(peer: &DemoPeer) -> Option<StatusInfo> {
    let api = ApiClient::for_peer(&peer.dir, &peer.info).ok()?;
    api.get_json("/v1/status").await.ok()
}

/// User and system CPU ticks of a live peer process.
fn cpu_ticks(peer: &DemoPeer) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", peer.child.as_ref()?.id())).ok()?;
    // Fields after the command name, which ends with the last ')'.
    let fields: Vec<&str> = stat.get(stat.rfind(')')? + 2..)?.split(' ').collect();
    let user: u64 = fields.get(11)?.parse().ok()?;
    let system: u64 = fields.get(12)?.parse().ok()?;
    Some(user + system)
}

/// Resident memory of a live peer process, in KiB.
fn rss_kib(peer: &DemoPeer) -> Option<u64> {
    let status =
        std::fs::read_to_string(format!("/proc/{}/status", peer.child.as_ref()?.id())).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn mean(values: &[f64]) -> f64 {
    if values.is_empty() {
        0.0
    } else {
        values.iter().sum::<f64>() / values.len() as f64
    }
}

fn sd(values: &[f64]) -> f64 {
    if values.len() < 2 {
        return 0.0;
    }
    let m = mean(values);
    (values.iter().map(|v| (v - m).powi(2)).sum::<f64>() / (values.len() - 1) as f64).sqrt()
}

fn figures(latencies: &[f64], differences: &[f64], lost: u64, duplicates: u64) -> ClassFigures {
    let mut sorted = latencies.to_vec();
    sorted.sort_by(f64::total_cmp);
    let p99 = if sorted.is_empty() {
        0.0
    } else {
        sorted[((sorted.len() - 1) as f64 * 0.99).round() as usize]
    };
    ClassFigures {
        frames: latencies.len() as u64,
        lost,
        duplicates,
        latency_mean_ms: mean(latencies),
        latency_sd_ms: sd(latencies),
        latency_p99_ms: p99,
        jitter_ms: mean(differences),
    }
}

fn rebind_figures(times: &[f64]) -> RebindFigures {
    RebindFigures {
        count: times.len(),
        mean_ms: mean(times),
        sd_ms: sd(times),
        max_ms: times.iter().copied().fold(0.0, f64::max),
    }
}

/// The seed's Tables III–VI (Test I): per policy, video, audio and event
/// latency, slow and fast rebind, each mean ± sd in ms.
fn seed_table(policy: &str) -> Option<(&'static str, [(f64, f64); 5])> {
    Some(match policy {
        "no_ft" => (
            "III",
            [(21., 2.), (39., 3.), (21., 3.), (1109., 896.), (47., 4.)],
        ),
        "ft_event" => (
            "IV",
            [(24., 3.), (40., 2.), (24., 2.), (1090., 888.), (52., 9.)],
        ),
        "ft_event_video" => (
            "V",
            [(39., 8.), (49., 2.), (39., 2.), (1094., 893.), (77., 8.)],
        ),
        "ft_all" => (
            "VI",
            [(49., 4.), (64., 3.), (49., 3.), (1088., 885.), (57., 16.)],
        ),
        _ => return None,
    })
}

/// The seed's Table VII (Test II, ft_all): per level, the video latency
/// (mean, sd) after each number of faults; audio and events as printed
/// there are close to it.
const SEED_TABLE_VII: [&[(f64, f64)]; 3] = [
    &[(55., 1.), (443., 18.)],
    &[(53., 3.), (89., 29.), (103., 1.), (116., 4.)],
    &[
        (47., 1.),
        (49., 2.),
        (46., 2.),
        (44., 2.),
        (45., 3.),
        (43., 3.),
        (48., 6.),
        (46., 4.),
    ],
];

fn print_tables(report: &Report) {
    for (i, run) in report.runs.iter().enumerate() {
        println!();
        match run.test {
            "I" => println!(
                "Test I under {}: one super-peer SIGKILLed at level 2, 1, then 0 ({} processes, {} sensors per cell, rates / {}{})",
                run.policy,
                run.processes,
                report.sensors_per_cell,
                report.rate_divisor,
                report
                    .flood_fps
                    .map_or(String::new(), |fps| format!(", one sensor flooding video at {fps} frames/s"))
            ),
            _ => println!(
                "Test II under {}: {} ({} processes)",
                run.policy,
                run.windows
                    .last()
                    .map_or("", |w| w.name.as_str()),
                run.processes
            ),
        }
        let baseline = no_ft_baseline(&report.runs, i);
        println!(
            "  {:<6} {:>24} {:>24} {:>7} {:>7} {:>5} {:>4} {:>9}",
            "class",
            "fault-free ms (p99)",
            "whole run ms (p99)",
            "jitter",
            "frames",
            "lost",
            "dup",
            "overhead"
        );
        for class in StreamClass::DATA {
            let (Some(all), Some(quiet)) = (
                run.classes.get(class.name()),
                run.windows
                    .first()
                    .and_then(|w| w.classes.get(class.name())),
            ) else {
                continue;
            };
            // Fault-free latency against the no_ft run's: what replication
            // costs while nothing fails.
            let overhead = baseline
                .filter(|b| b.policy != run.policy)
                .and_then(|b| b.windows.first()?.classes.get(class.name()))
                .filter(|b| b.latency_mean_ms > 0.0)
                .map_or(String::from("-"), |b| {
                    format!(
                        "{:+.0}%",
                        100.0 * (quiet.latency_mean_ms / b.latency_mean_ms - 1.0)
                    )
                });
            println!(
                "  {:<6} {:>24} {:>24} {:>7.2} {:>7} {:>5} {:>4} {:>9}",
                class.name(),
                format!(
                    "{:.2} ± {:.2} ({:.1})",
                    quiet.latency_mean_ms, quiet.latency_sd_ms, quiet.latency_p99_ms
                ),
                format!(
                    "{:.2} ± {:.2} ({:.1})",
                    all.latency_mean_ms, all.latency_sd_ms, all.latency_p99_ms
                ),
                all.jitter_ms,
                all.frames,
                all.lost,
                all.duplicates,
                overhead
            );
        }
        println!(
            "  lost per window (event/audio/video): {}",
            run.windows
                .iter()
                .map(|w| format!(
                    "{}: {}{}",
                    w.name,
                    StreamClass::DATA
                        .iter()
                        .map(|c| w.classes.get(c.name()).map_or(0, |f| f.lost).to_string())
                        .collect::<Vec<_>>()
                        .join("/"),
                    if w.stalled_streams > 0 {
                        format!(" ({} streams stalled)", w.stalled_streams)
                    } else {
                        String::new()
                    }
                ))
                .collect::<Vec<_>>()
                .join(", ")
        );
        println!(
            "  rebinds: fast {} × {:.1} ± {:.1} ms (max {:.1}), slow {} × {:.1} ± {:.1} ms (max {:.1}), from the parent declared dead",
            run.fast_rebinds.count,
            run.fast_rebinds.mean_ms,
            run.fast_rebinds.sd_ms,
            run.fast_rebinds.max_ms,
            run.slow_rebinds.count,
            run.slow_rebinds.mean_ms,
            run.slow_rebinds.sd_ms,
            run.slow_rebinds.max_ms
        );
        println!(
            "  each super-peer: CPU {:.1}% of a core (max {:.1}%), memory {:.0} MiB (max {:.0})",
            run.super_cpu_mean_pct,
            run.super_cpu_max_pct,
            run.super_rss_mean_mib,
            run.super_rss_max_mib
        );
        if run.test == "I" {
            if let Some((table, seed)) = seed_table(&run.policy) {
                println!(
                    "  seed 001 Table {table}: video {:.0} ± {:.0}, audio {:.0} ± {:.0}, event {:.0} ± {:.0} ms; slow rebind {:.0} ± {:.0}, fast {:.0} ± {:.0} ms",
                    seed[0].0, seed[0].1, seed[1].0, seed[1].1, seed[2].0, seed[2].1,
                    seed[3].0, seed[3].1, seed[4].0, seed[4].1
                );
            }
        } else {
            print_test_two(run);
        }
    }
    let percents = |values: &[f64]| {
        values
            .iter()
            .map(|v| format!("{v:+.0}%"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    for o in &report.overheads {
        println!();
        println!(
            "{} against no_ft over {} paired rounds, nothing failing: latency median {:+.0}% ({}); super-peer CPU median {:+.0}% ({})",
            o.policy,
            o.latency_pct.len(),
            o.latency_median_pct,
            percents(&o.latency_pct),
            o.cpu_median_pct,
            percents(&o.cpu_pct)
        );
    }
}

/// Test II's video latency after each fault, beside the seed's Table VII.
fn print_test_two(run: &Run) {
    let level = run
        .windows
        .last()
        .and_then(|w| w.killed_cell.as_ref())
        .map_or(0, |cell| cell.len() - 1);
    let seed = SEED_TABLE_VII.get(level).copied().unwrap_or(&[]);
    println!("  faults  video latency ms (here)  (seed 001 Table VII)  lost e/a/v");
    for (n, window) in run.windows.iter().skip(1).enumerate() {
        let video = window.classes.get("video").cloned().unwrap_or_default();
        let lost = StreamClass::DATA
            .iter()
            .map(|c| {
                window
                    .classes
                    .get(c.name())
                    .map_or(0, |f| f.lost)
                    .to_string()
            })
            .collect::<Vec<_>>()
            .join("/");
        let seed_cell = seed
            .get(n)
            .map_or(String::from("-"), |(m, s)| format!("{m:.0} ± {s:.0}"));
        println!(
            "  {:>6}  {:>14.2} ± {:<8.2} {:>20}  {lost}{}",
            n + 1,
            video.latency_mean_ms,
            video.latency_sd_ms,
            seed_cell,
            if window.stalled_streams > 0 {
                format!(" ({} streams stalled)", window.stalled_streams)
            } else {
                String::new()
            }
        );
    }
}
