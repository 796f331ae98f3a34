//! `colony`: run a Colony peer, inspect a network, benchmark.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};
use colony::{MemberInfo, Multiaddr, Peer, PeerConfig};
use tracing::info;

/// `println!` that returns the error instead of panicking when stdout is
/// closed (`colony result ID | head`); `main` then exits quietly.
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout().lock(), $($arg)*)
    }};
}

mod callsbench;
mod client;
mod demo;
mod flowshop_objects;
mod ftbench;
mod jobs;
mod mesh;
mod meshbench;
mod objects;
mod recoverybench;
mod space;
mod spacebench;
mod stealing;
mod tsp;
mod watch;

/// Colony: a peer-to-peer runtime for fault-tolerant parallel computing on
/// machines that come and go. Run `colony peer` on every machine; peers find
/// each other, agree on who is alive and carry messages reliably.
#[derive(Parser, Debug)]
#[command(name = "colony", version, about, long_about = None)]
struct Cli {
    /// Log format on stderr. Verbosity follows RUST_LOG (default: info).
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true)]
    log_format: LogFormat,

    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// The main job on an embedded local network: peers in this process
    /// solve a flow-shop instance to proven optimality, splitting the search
    /// among themselves; shows live progress per peer and the optimal schedule.
    Demo(DemoArgs),
    /// Watch membership at work: start peers as real processes on loopback,
    /// see them find each other, SIGKILL one and see it declared dead,
    /// restart it and see it rejoin.
    Watch(WatchArgs),
    /// Run a peer until interrupted (Ctrl-C or SIGTERM leave the network
    /// gracefully). Writes DIR/peer.json with its id and addresses.
    Peer(PeerArgs),
    /// Print the membership view of a running peer: who is alive, suspect,
    /// dead, with their statistics, when each computes (WHEN: always or
    /// idle) and what it does now (NOW: computing, ready, or paused and why).
    Peers(PeersArgs),
    /// Print what a running peer can run: its native applications and the
    /// WebAssembly modules it holds (fetched, or kept as a submitter).
    Apps(jobs::ApiArgs),
    /// Publish WebAssembly applications to the network.
    #[command(subcommand)]
    App(AppCommand),
    /// Join a network as a peer, submit a job, show its progress and print
    /// the result. Apps: flowshop taNNN [--objects] | nqueens N | matmul N
    /// [--seed S] | tsp FILE.
    /// With --descriptor FILE, where it runs and its fault tolerance come
    /// from a deployment descriptor (see examples/deploy/).
    Run(jobs::RunArgs),
    /// List the jobs whose home is a running peer.
    Jobs(jobs::ApiArgs),
    /// Print the result of a job by id, from any peer of its network.
    Result(jobs::ResultArgs),
    /// Cancel a job by id: its home stops handing out work and its workers
    /// stop within a step. Allowed to the peer that submitted the job and to
    /// the operator of the job's primary; refused to anyone else.
    Cancel(jobs::ResultArgs),
    /// Use the object space through a running peer: named objects in
    /// namespaces, shared by every peer of the network, with versions,
    /// compare-and-set and read/write locks with fencing tokens.
    #[command(subcommand)]
    Space(space::SpaceCommand),
    /// List the distributed objects whose primary is a running peer: type,
    /// fault tolerance, calls served and last checkpoint.
    Objects(jobs::ApiArgs),
    /// Create, call, look up and delete distributed objects through a
    /// running peer (e.g. `colony object create counter 0 --protocol pml`,
    /// then `colony object call URI '{"add": 1}'`).
    #[command(subcommand)]
    Object(objects::ObjectCommand),
    /// Measure Colony against a baseline run alongside it.
    #[command(subcommand)]
    Bench(BenchCommand),
}

#[derive(Subcommand, Debug)]
enum AppCommand {
    /// Publish a guest module through a running peer: it checks the
    /// module, signs its id with its key and pushes it to the module's home
    /// (the peers closest to its hash that run guests). Prints the module's
    /// id, for `colony run --wasm ID`.
    Publish(jobs::PublishArgs),
}

/// The network joined when neither `--network` nor a descriptor names one.
const DEFAULT_NETWORK: &str = "colony";

/// How a peer joins a network; shared by `peer` and `run`.
#[derive(Args, Debug)]
struct NetworkArgs {
    /// Address to listen on (repeatable). Default: /ip4/0.0.0.0/tcp/0, all
    /// interfaces on a free port; use a fixed port for peers others bootstrap from.
    #[arg(long = "listen", value_name = "MULTIADDR")]
    listen: Vec<Multiaddr>,
    /// Peer to join through (repeatable), e.g. /ip4/10.0.0.5/tcp/7070/p2p/12D3….
    /// Tried in order; a dead entry fails over to the next. Replaces a
    /// descriptor's `bootstrap` list.
    #[arg(long = "bootstrap", value_name = "MULTIADDR")]
    bootstrap: Vec<Multiaddr>,
    /// Network name: peers only see peers of the same network [default:
    /// colony, or the descriptor's `network` for `colony run --descriptor`].
    #[arg(long)]
    network: Option<String>,
    /// Pre-shared key file (go-ipfs swarm.key format, or 64 hex digits):
    /// only peers holding the same key can connect.
    #[arg(long, value_name = "FILE")]
    psk: Option<PathBuf>,
    /// Discover peers on the local network with mDNS.
    #[arg(long)]
    mdns: bool,
    /// Cores offered to Colony work, run at the priority of --nice (default: all).
    #[arg(long)]
    cores: Option<u32>,
    /// Who may submit jobs to this peer: `network` (any member of the
    /// network; with --psk, holders of the key), `any` (any peer that can
    /// connect), or a comma-separated list of peer ids. Refused submitters
    /// get a clear error.
    #[arg(long, value_name = "WHO", default_value = "network")]
    accept_jobs_from: String,
    /// Largest job result, in bytes, this peer merges, sends or accepts: a
    /// job whose result grows past it fails with an error naming the limit
    /// [default: 50331648, 48 MiB].
    #[arg(long, value_name = "BYTES")]
    max_result_bytes: Option<usize>,
    /// Largest unit state (assignment, checkpoint), in bytes, this peer
    /// sends or accepts: a job whose state grows past it fails [default:
    /// 50331648, 48 MiB].
    #[arg(long, value_name = "BYTES")]
    max_state_bytes: Option<usize>,
    /// How long, in seconds, a job whose home lost its majority (most of
    /// its home members gone at once) waits for them to come back before
    /// this peer, as one of its home members, fails it with a clear error;
    /// meanwhile `colony jobs` and the submitter say the job waits
    /// [default: 30].
    #[arg(long, value_name = "SECONDS", value_parser = positive_seconds)]
    majority_patience_s: Option<f64>,
}

/// Parses a positive, finite number of seconds.
fn positive_seconds(text: &str) -> Result<f64, String> {
    let value: f64 = text
        .trim()
        .parse()
        .map_err(|_| format!("`{text}` is not a number of seconds"))?;
    if !value.is_finite() || value <= 0.0 || value > 1e9 {
        return Err(format!("`{text}`: seconds must be above 0 and at most 1e9"));
    }
    Ok(value)
}

/// Parses `--accept-jobs-from`.
fn submit_policy(text: &str) -> Result<colony::SubmitPolicy<libp2p::PeerId>> {
    match text.trim() {
        "network" => Ok(colony::SubmitPolicy::Network),
        "any" => Ok(colony::SubmitPolicy::Any),
        list => {
            let mut peers = std::collections::BTreeSet::new();
            for id in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                let peer = id.parse().map_err(|_| {
                    anyhow::anyhow!(
                        "--accept-jobs-from takes `network`, `any` or peer ids; {:?} is none of them",
                        id.chars().take(80).collect::<String>()
                    )
                })?;
                peers.insert(peer);
            }
            if peers.is_empty() {
                bail!("--accept-jobs-from names no peer");
            }
            Ok(colony::SubmitPolicy::Peers(peers))
        }
    }
}

impl NetworkArgs {
    /// A peer configuration with these network settings.
    fn config(&self, data_dir: &std::path::Path) -> Result<PeerConfig> {
        let mut config = PeerConfig::new(data_dir);
        if !self.listen.is_empty() {
            config.listen = self.listen.clone();
        }
        config.bootstrap = self.bootstrap.clone();
        let network = self.network.as_deref().unwrap_or(DEFAULT_NETWORK);
        colony_net::validate_network_name(network)?;
        config.net.network = network.to_string();
        config.net.mdns = self.mdns;
        if let Some(path) = &self.psk {
            let text = std::fs::read_to_string(path).with_context(|| {
                format!("cannot read the pre-shared key file {}", path.display())
            })?;
            config.net.psk = Some(
                colony_net::parse_psk(&text)
                    .with_context(|| format!("bad pre-shared key in {}", path.display()))?,
            );
        }
        if self.cores == Some(0) {
            bail!("--cores must be at least 1");
        }
        config.cores_offered = self.cores;
        config.accept_jobs_from = submit_policy(&self.accept_jobs_from)?;
        let limits = &mut config.jobs.limits;
        for (flag, value, field) in [
            (
                "--max-result-bytes",
                self.max_result_bytes,
                &mut limits.result_bytes,
            ),
            (
                "--max-state-bytes",
                self.max_state_bytes,
                &mut limits.state_bytes,
            ),
        ] {
            match value {
                Some(0) => bail!("{flag} must be at least 1"),
                Some(bytes) => *field = bytes,
                None => {}
            }
        }
        if let Some(seconds) = self.majority_patience_s {
            config.jobs.majority_patience = Duration::from_secs_f64(seconds);
        }
        config.apps = colony_apps::examples();
        config.object_types = colony_apps::example_objects();
        Ok(config)
    }
}

#[derive(Args, Debug)]
struct PeerArgs {
    /// Data directory: identity (same PeerId across restarts), incarnation,
    /// peer.json, and api.token, the secret the local API asks for (mode
    /// 0600). Created if missing; one peer per directory [default:
    /// $COLONY_DATA_DIR, else $XDG_DATA_HOME/colony or ~/.local/share/colony].
    #[arg(long, value_name = "DIR", env = "COLONY_DATA_DIR")]
    data_dir: Option<PathBuf>,
    #[command(flatten)]
    network: NetworkArgs,
    /// Local HTTP API address (GET /v1/peers, /v1/status, /v1/jobs), asking
    /// for the token in DATA_DIR/api.token. Use port 0 for any free port;
    /// the chosen one is in peer.json. Loopback only, unless --api-allow-remote.
    #[arg(long, value_name = "ADDR", default_value = client::DEFAULT_API)]
    api: SocketAddr,
    /// Allow an --api address other machines can reach (e.g. 0.0.0.0:7171):
    /// anyone who reaches it with the token may submit jobs, over plain HTTP.
    #[arg(long)]
    api_allow_remote: bool,
    /// NOA: below this many live acquaintances the peer looks for more.
    #[arg(long, default_value_t = 6)]
    noa: usize,
    /// TTU: how often, in seconds, the acquaintance count is checked.
    #[arg(long, default_value_t = 5.0)]
    ttu_s: f64,
    #[command(flatten)]
    mesh: mesh::MeshArgs,
    /// Before starting, repair damaged store files in the data directory:
    /// roll back a damaged last commit, or move the file aside and keep what
    /// can still be read. Without it a damaged file stops the start.
    #[arg(long)]
    repair: bool,
    /// Run WebAssembly guests submitted by any member of this network
    /// (fine with --psk: members hold the key): fetched on first use,
    /// checked against their hash, cached in DATA_DIR/modules and run
    /// sandboxed. Without it (or --trust) the peer runs native applications
    /// only.
    #[arg(long, conflicts_with = "trust")]
    trust_network: bool,
    /// Run WebAssembly guests signed by this peer (repeatable): a peer id,
    /// or a file holding one or a peer's public key (its DATA_DIR/peer.pub).
    /// Jobs of other submitters' modules are refused, and they are told why.
    #[arg(long, value_name = "PEER_ID|KEY_FILE")]
    trust: Vec<String>,
    /// Most memory, in MiB, one WebAssembly guest unit may use (with
    /// --trust-network or --trust); a guest growing past it fails its job
    /// with a clear error [default: 256].
    #[arg(long, value_name = "MIB")]
    max_guest_memory_mib: Option<u64>,
    /// Room, in MiB of object values, this peer gives the object space: it
    /// holds replicas of the partitions closest to it, on disk in
    /// DATA_DIR/checkpoints.redb. 0: it holds none (it can still use the
    /// space through its API).
    #[arg(long, value_name = "MIB", default_value_t = 1024)]
    space_mib: u64,
    /// Largest object value, in MiB, this peer accepts into the space (give
    /// every peer of a network the same) [default: 16].
    #[arg(long, value_name = "MIB")]
    max_object_mib: Option<u64>,
    /// Largest value, in MiB, this peer's API and `colony space put` take
    /// into the space (at most 4096): values longer than 1 MiB are stored as several objects, and the
    /// peer holds a value whole in memory while it writes or reads it.
    #[arg(long, value_name = "MIB", default_value_t = 1024)]
    max_value_mib: u64,
    #[command(flatten)]
    volunteer: VolunteerArgs,
}

/// When a peer computes: its owner's preferences (volunteer hosts).
#[derive(Args, Debug)]
struct VolunteerArgs {
    /// When this peer computes. Either way units run at the OS priority
    /// of --nice and on at most --cores cores; `colony peers` shows each
    /// peer's choice and whether it computes now.
    #[arg(long, value_enum, default_value_t = When::Always)]
    when: When,
    /// With --when idle: pause as soon as other processes (anything but
    /// Colony) use more than this share of the host's CPU, in percent of
    /// all its cores together [default: 25].
    #[arg(long, value_name = "PERCENT", value_parser = percent)]
    idle_cpu: Option<f64>,
    /// With --when idle: how long, in seconds, other processes' CPU use
    /// must stay at or below --idle-cpu before this peer computes (again)
    /// [default: 5].
    #[arg(long, value_name = "SECONDS", value_parser = non_negative_seconds)]
    idle_secs: Option<f64>,
    /// Most hours per day (UTC) units may run on this peer, counted across
    /// restarts; once they are used it pauses until midnight UTC [default:
    /// no limit].
    #[arg(long, value_name = "HOURS", value_parser = hours_per_day)]
    max_hours_per_day: Option<f64>,
    /// OS priority (Unix nice value, 0–19) units run at: 19 lets every
    /// other process of the host come first (a volunteer's desktop); 0
    /// competes with them as an equal (a node that is there to compute).
    #[arg(long, value_name = "NICE", env = "COLONY_NICE", default_value_t = colony::LOWEST_NICE,
          value_parser = clap::value_parser!(u8).range(0..=i64::from(colony::LOWEST_NICE)))]
    nice: u8,
}

/// `--when`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum When {
    /// Compute whenever there is work.
    Always,
    /// Compute only while the host is idle (see --idle-cpu, --idle-secs):
    /// when other processes' load returns, running units stop within a
    /// second and go back to their jobs, which carry on at other peers;
    /// computing resumes once the host is idle again.
    Idle,
}

impl VolunteerArgs {
    /// The owner's preferences, checked.
    fn config(&self) -> Result<colony::VolunteerConfig> {
        let mut config = colony::VolunteerConfig::default();
        match self.when {
            When::Always => {
                for (flag, given) in [
                    ("--idle-cpu", self.idle_cpu.is_some()),
                    ("--idle-secs", self.idle_secs.is_some()),
                ] {
                    if given {
                        bail!("{flag} applies with --when idle only");
                    }
                }
            }
            When::Idle => config.when = colony::ComputeWhen::Idle,
        }
        if let Some(percent) = self.idle_cpu {
            config.idle_cpu = percent / 100.0;
        }
        if let Some(seconds) = self.idle_secs {
            config.idle_after = Duration::from_secs_f64(seconds);
        }
        config.max_per_day = self
            .max_hours_per_day
            .map(|hours| Duration::from_secs_f64(hours * 3600.0));
        config.nice = self.nice;
        Ok(config)
    }
}

/// Parses a percentage above 0 and at most 100.
fn percent(text: &str) -> Result<f64, String> {
    let value: f64 = text
        .trim()
        .trim_end_matches('%')
        .parse()
        .map_err(|_| format!("`{text}` is not a percentage"))?;
    if !(value > 0.0 && value <= 100.0) {
        return Err(format!("`{text}`: a percentage above 0 and at most 100"));
    }
    Ok(value)
}

/// Parses a number of seconds, 0 or more (at most a day).
fn non_negative_seconds(text: &str) -> Result<f64, String> {
    let value: f64 = text
        .trim()
        .parse()
        .map_err(|_| format!("`{text}` is not a number of seconds"))?;
    if !(0.0..=86_400.0).contains(&value) {
        return Err(format!("`{text}`: seconds from 0 to 86400"));
    }
    Ok(value)
}

/// Parses hours per day: above 0, at most 24.
fn hours_per_day(text: &str) -> Result<f64, String> {
    let value: f64 = text
        .trim()
        .parse()
        .map_err(|_| format!("`{text}` is not a number of hours"))?;
    if !(value > 0.0 && value <= 24.0) {
        return Err(format!("`{text}`: hours above 0 and at most 24"));
    }
    Ok(value)
}

/// Largest --max-guest-memory-mib: all a 32-bit WebAssembly guest can address.
const MAX_GUEST_MEMORY_MIB: u64 = 4096;

/// Largest --space-mib: 1 PiB.
const MAX_SPACE_MIB: u64 = 1 << 30;

/// Largest --max-object-mib: an object travels in one message, well within
/// the largest a pipe carries (128 MiB).
const MAX_OBJECT_MIB: u64 = 64;

/// Largest --max-value-mib: a value is held whole in memory while it is
/// written or read.
const MAX_VALUE_MIB: u64 = 4096;

#[derive(Args, Debug)]
struct DemoArgs {
    /// How many peers to start.
    #[arg(long, default_value_t = 4, value_parser = at_least_one)]
    peers: usize,
    /// Taillard instance to solve, ta001 to ta120 (20×5 ones take well under
    /// a second, 20×10 ones a few seconds; larger ones can take hours).
    #[arg(long, default_value = "ta012")]
    instance: String,
    /// Worker threads per peer.
    #[arg(long, default_value_t = 1)]
    cores_per_peer: u32,
}

#[derive(Args, Debug)]
struct WatchArgs {
    /// How many peer processes to start.
    #[arg(long, default_value_t = 4, value_parser = at_least_one)]
    peers: usize,
}

#[derive(Args, Debug)]
struct PeersArgs {
    #[command(flatten)]
    api: client::ApiClientArgs,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

/// A count of peers: 1 or more.
pub(crate) fn at_least_one(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(0) => Err("must be at least 1 (this peer counts as one)".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(format!("not a whole number: {e}")),
    }
}

/// The median of `values` (the mean of the middle two for an even
/// count); 0 for none.
pub(crate) fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    match sorted.len() {
        0 => 0.0,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

#[derive(Subcommand, Debug)]
enum BenchCommand {
    /// Reliable pipes between two in-process peers through the fault-injecting
    /// wrapper, against raw TCP on loopback measured in the same run.
    Pipe(PipeBenchArgs),
    /// Work stealing: one flow-shop instance by the plain sequential solver,
    /// by Colony on 1 peer and on 2 peers (1 core each), in the same run:
    /// speedup, runtime overhead, a newcomer's time to first unit, unit size.
    Stealing(StealingBenchArgs),
    /// The failure-free cost of fault tolerance: flow-shop instances with
    /// protocol `none` and with `checkpoint` (TTC 1 s), alternating, in the
    /// same run.
    Ft(FtBenchArgs),
    /// Fetching a guest module from its home on an embedded network of 5
    /// peers, against sending the same bytes over raw TCP on loopback in the
    /// same run. The module is grown to --size bytes with a custom section
    /// (a fresh one each run, so every fetch is a first one).
    Modules(ModuleBenchArgs),
    /// The object space on an embedded network of 3 peers (homes of 3):
    /// set, get (linearizable and cached) and lock latency against a raw TCP
    /// round trip measured in the same run, pipelined sets and gets, lock
    /// re-grant after a holder crashes, and skewed reads with hot-object
    /// replication off and on.
    Space(spacebench::SpaceBenchArgs),
    /// Distributed-object calls on an embedded network of 3 peers: a call's
    /// latency against a raw TCP round trip measured in the same run, and
    /// calls per second one at a time and pipelined, for each protocol
    /// (none, checkpoint, pml).
    Calls(callsbench::CallsBenchArgs),
    /// Recovery of a distributed object: real peer processes on loopback,
    /// the peer serving a counter SIGKILLed again and again; the time from
    /// each kill to the first call that succeeds, beside a call's latency
    /// with every peer up (with --protocol cic, a ring of TSP islands, and
    /// the time until the whole application has rolled back).
    Recovery(recoverybench::RecoveryBenchArgs),
    /// Seed 001's fault-injection bench on real processes: the streaming
    /// mesh's losses, latency, jitter, rebinds, CPU and memory per
    /// super-peer under each fault-tolerance policy (Tests I and II),
    /// beside the seed's Tables III–VII.
    Mesh(meshbench::MeshBenchArgs),
}

#[derive(Args, Debug)]
struct ModuleBenchArgs {
    /// A guest module (built with the colony-guest SDK).
    #[arg(long, value_name = "FILE")]
    module: PathBuf,
    /// Size of each module fetched, in bytes.
    #[arg(long, default_value_t = 1 << 20)]
    size: usize,
    /// Modules fetched.
    #[arg(long, default_value_t = 10, value_parser = at_least_one)]
    runs: usize,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
struct FtBenchArgs {
    /// Taillard instances to solve (repeatable). The default, ta017, runs
    /// for about a minute: long against the TTC of 1 s, as real jobs are.
    #[arg(long = "instance", default_values_t = ["ta017"].map(String::from))]
    instances: Vec<String>,
    /// Peers of the embedded network (1 core each) [default: this machine's
    /// cores, at least 2]. More peers than cores measures how the extra
    /// messages wait for a CPU, not what fault tolerance costs.
    #[arg(long, value_parser = at_least_one)]
    peers: Option<usize>,
    /// Pairs of runs per instance.
    #[arg(long, default_value_t = 2)]
    runs: usize,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
struct StealingBenchArgs {
    /// Taillard instances to solve (repeatable). Default: the 20×10 class
    /// but ta017 (which alone takes about a minute), each about a second.
    #[arg(long = "instance", default_values_t = ["ta011", "ta012", "ta013", "ta014", "ta015", "ta016", "ta018", "ta019", "ta020"].map(String::from))]
    instances: Vec<String>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
struct PipeBenchArgs {
    /// Probability of dropping each frame (0.0–1.0).
    #[arg(long, default_value_t = 0.0)]
    loss: f64,
    /// Probability of duplicating each frame (0.0–1.0).
    #[arg(long, default_value_t = 0.0)]
    dup: f64,
    /// Delay added to every frame, in milliseconds.
    #[arg(long, default_value_t = 0.0)]
    delay_ms: f64,
    /// Random extra delay per frame, 0..JITTER ms (reorders frames).
    #[arg(long, default_value_t = 0.0)]
    jitter_ms: f64,
    /// Messages in the pipelined phase.
    #[arg(long, default_value_t = 100_000)]
    messages: usize,
    /// Round trips in the latency phases.
    #[arg(long, default_value_t = 2000)]
    round_trips: usize,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

fn main() -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        // The reader went away (`colony result ID | head`): nothing to say.
        Err(error) if is_broken_pipe(&error) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Whether `error` comes from writing to a closed pipe.
fn is_broken_pipe(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

fn run() -> Result<()> {
    let cli = Cli::parse();
    // The demo's own output is the show; its peers log to files.
    let quiet = matches!(
        cli.command,
        Command::Demo(_) | Command::Watch(_) | Command::Bench(_)
    ) && std::env::var_os("RUST_LOG").is_none();
    init_logging(cli.log_format, if quiet { "warn" } else { "info" });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        match cli.command {
            Command::Demo(args) => demo::run(args.peers, &args.instance, args.cores_per_peer).await,
            Command::Watch(args) => watch::run(args.peers).await,
            Command::Peer(args) => run_peer(args).await,
            Command::Run(args) => jobs::run(args).await,
            Command::Jobs(args) => jobs::list(args).await,
            Command::Result(args) => jobs::result(args).await,
            Command::Cancel(args) => jobs::cancel(args).await,
            Command::Peers(args) => show_peers(args).await,
            Command::Apps(args) => jobs::show_apps(args).await,
            Command::App(AppCommand::Publish(args)) => jobs::publish(args).await,
            Command::Space(command) => space::run(command).await,
            Command::Objects(args) => objects::list(args).await,
            Command::Object(command) => objects::run(command).await,
            Command::Bench(BenchCommand::Pipe(args)) => bench_pipe(args).await,
            Command::Bench(BenchCommand::Stealing(args)) => {
                stealing::run(&args.instances, args.json).await
            }
            Command::Bench(BenchCommand::Modules(args)) => bench_modules(args).await,
            Command::Bench(BenchCommand::Space(args)) => spacebench::run(args).await,
            Command::Bench(BenchCommand::Calls(args)) => callsbench::run(args).await,
            Command::Bench(BenchCommand::Recovery(args)) => recoverybench::run(args).await,
            Command::Bench(BenchCommand::Mesh(args)) => meshbench::run(args).await,
            Command::Bench(BenchCommand::Ft(args)) => {
                let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
                let peers = args.peers.unwrap_or(cores.max(2));
                ftbench::run(&args.instances, peers, args.runs.max(1), args.json).await
            }
        }
    })
}

fn init_logging(format: LogFormat, default_level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

async fn run_peer(args: PeerArgs) -> Result<()> {
    // Listening from the start: a SIGTERM sent while the peer starts (as
    // soon as peer.json is there) is then handled, not lost.
    let mut termination = Termination::listen();
    let data_dir = client::data_dir_or_default(args.data_dir.as_deref())?;
    let mut config = args.network.config(&data_dir)?;
    config.api = Some(args.api);
    config.api_allow_remote = args.api_allow_remote;
    if !(args.ttu_s.is_finite() && args.ttu_s > 0.0) {
        bail!(
            "--ttu-s must be a positive number of seconds, got {}",
            args.ttu_s
        );
    }
    config.acquaintances.noa = args.noa;
    config.acquaintances.ttu = Duration::from_secs_f64(args.ttu_s);
    if args.trust_network {
        config.guests = Some(colony::GuestConfig::default());
    } else if !args.trust.is_empty() {
        config.guests = Some(colony::GuestConfig {
            trust: colony::GuestTrust::signers(&args.trust).map_err(|e| anyhow::anyhow!(e))?,
            ..colony::GuestConfig::default()
        });
    }
    if let Some(mib) = args.max_guest_memory_mib {
        let Some(guests) = config.guests.as_mut() else {
            bail!(
                "--max-guest-memory-mib applies to WebAssembly guests: add --trust-network or --trust"
            );
        };
        if mib == 0 || mib > MAX_GUEST_MEMORY_MIB {
            bail!("--max-guest-memory-mib must be from 1 to {MAX_GUEST_MEMORY_MIB}, got {mib}");
        }
        guests.limits.memory_bytes = usize::try_from(mib << 20)
            .context("--max-guest-memory-mib is more than this machine can address")?;
    }
    config.space.capacity_bytes = args
        .space_mib
        .checked_mul(1 << 20)
        .filter(|_| args.space_mib <= MAX_SPACE_MIB)
        .with_context(|| {
            format!(
                "--space-mib must be at most {MAX_SPACE_MIB}, got {}",
                args.space_mib
            )
        })?;
    if let Some(mib) = args.max_object_mib {
        if mib == 0 || mib > MAX_OBJECT_MIB {
            bail!("--max-object-mib must be from 1 to {MAX_OBJECT_MIB}, got {mib}");
        }
        config.space.max_object_bytes = usize::try_from(mib << 20)
            .context("--max-object-mib is more than this machine can address")?;
    }
    if args.max_value_mib == 0 || args.max_value_mib > MAX_VALUE_MIB {
        bail!(
            "--max-value-mib must be from 1 to {MAX_VALUE_MIB}, got {}",
            args.max_value_mib
        );
    }
    config.max_value_bytes = args.max_value_mib << 20;
    config.volunteer = args.volunteer.config()?;
    args.mesh.configure(&mut config)?;
    if args.repair {
        for report in Peer::repair(&data_dir)? {
            eprintln!("repair: {report}");
        }
    }

    let peer = Peer::start(config).await?;
    let info = peer.info();
    outln!("peer id: {}", info.peer_id)?;
    for addr in &info.listen_addrs {
        outln!("listening: {addr}")?;
    }
    if let Some(api) = info.api_addr {
        outln!("api: http://{api}")?;
        outln!(
            "api token: {}",
            data_dir.join(colony::API_TOKEN_FILE).display()
        )?;
    }
    let terminated = tokio::select! {
        started = args.mesh.start(&peer) => {
            started?;
            false
        }
        () = termination.wait() => true,
    };
    if !terminated {
        termination.wait().await;
    }
    info!("shutting down");
    peer.shutdown().await;
    Ok(())
}

/// SIGTERM and Ctrl-C, the two ways to ask a peer to leave gracefully.
struct Termination {
    #[cfg(unix)]
    term: Option<tokio::signal::unix::Signal>,
}

impl Termination {
    /// Starts listening for SIGTERM (a signal sent before this would end
    /// the process at once, one sent after is kept until [`Termination::wait`]).
    fn listen() -> Termination {
        Termination {
            #[cfg(unix)]
            term: tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok(),
        }
    }

    /// Returns once SIGTERM or Ctrl-C came.
    async fn wait(&mut self) {
        #[cfg(unix)]
        if let Some(term) = self.term.as_mut() {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
        let _ = tokio::signal::ctrl_c().await;
    }
}

async fn show_peers(args: PeersArgs) -> Result<()> {
    let api = args.api.connect()?;
    let members: Vec<MemberInfo> = api.get_json("/v1/peers").await?;
    if args.json {
        outln!("{}", serde_json::to_string_pretty(&members)?)?;
        return Ok(());
    }
    outln!(
        "{:<54} {:<8} {:>4} {:>6} {:>6} {:>9} {:>8} {:>9} {:>7} {:<6} {}",
        "PEER",
        "STATE",
        "INC",
        "CORES",
        "LOAD",
        "FREE_MIB",
        "UNITS",
        "HEARD_MS",
        "GUESTS",
        "WHEN",
        "NOW"
    )?;
    for m in &members {
        let id = if m.local {
            format!("{} (this)", m.peer_id)
        } else {
            m.peer_id.clone()
        };
        let now = match (m.stats.paused, m.stats.computing) {
            (Some(reason), _) => format!("paused ({reason})"),
            (None, true) => "computing".to_string(),
            (None, false) => "ready".to_string(),
        };
        // Whose guests it runs: anyone's, some signers', or none.
        let guests = match (m.stats.runs_guests, m.stats.guest_signers.len()) {
            (false, _) => "no".to_string(),
            (true, 0) => "any".to_string(),
            (true, n) => format!("{n} keys"),
        };
        outln!(
            "{:<54} {:<8} {:>4} {:>6} {:>6.2} {:>9} {:>8} {:>9} {:>7} {:<6} {}",
            id,
            format!("{:?}", m.state).to_lowercase(),
            m.incarnation,
            format!("{}/{}", m.stats.cores_offered, m.stats.cores),
            m.stats.load_avg_1m,
            m.stats.free_memory_bytes / (1024 * 1024),
            m.stats.units_done_total,
            m.last_heard_ms_ago
                .map(|ms| ms.to_string())
                .unwrap_or_else(|| "-".into()),
            guests,
            m.stats.when,
            now,
        )?;
    }
    Ok(())
}

async fn bench_modules(args: ModuleBenchArgs) -> Result<()> {
    let module = std::fs::read(&args.module)
        .with_context(|| format!("cannot read --module {}", args.module.display()))?;
    if args.size > colony::GuestConfig::default().limits.module_bytes {
        bail!(
            "--size {} is past the largest module peers accept",
            args.size
        );
    }
    eprintln!(
        "running: {} fetches of a {}-byte module from its home, raw TCP alongside…",
        args.runs, args.size
    );
    let r = colony::bench::modules(&module, args.size, args.runs).await?;
    if args.json {
        outln!("{}", serde_json::to_string_pretty(&r)?)?;
        return Ok(());
    }
    let ms = |us: f64| us / 1e3;
    outln!(
        "module of {} bytes, {} fetches from its home",
        r.module_bytes,
        r.runs
    )?;
    outln!(
        "  fetch:   p50 {:8.2} ms  p99 {:8.2} ms  max {:8.2} ms",
        ms(r.fetch_us.p50),
        ms(r.fetch_us.p99),
        ms(r.fetch_us.max)
    )?;
    outln!(
        "  compile: p50 {:8.2} ms  p99 {:8.2} ms  (part of every fetch)",
        ms(r.compile_us.p50),
        ms(r.compile_us.p99)
    )?;
    outln!(
        "  raw TCP: p50 {:8.2} ms  p99 {:8.2} ms  (same bytes, loopback)",
        ms(r.tcp_us.p50),
        ms(r.tcp_us.p99)
    )?;
    outln!("  fetch / raw TCP (p50): {:.1}x", r.fetch_over_tcp_p50)?;
    Ok(())
}

async fn bench_pipe(args: PipeBenchArgs) -> Result<()> {
    for (name, p) in [("--loss", args.loss), ("--dup", args.dup)] {
        if !(0.0..1.0).contains(&p) {
            bail!("{name} must be a probability in [0, 1), got {p}");
        }
    }
    for (name, ms) in [
        ("--delay-ms", args.delay_ms),
        ("--jitter-ms", args.jitter_ms),
    ] {
        if !(ms.is_finite() && ms >= 0.0) {
            bail!("{name} must be a non-negative number of milliseconds, got {ms}");
        }
    }
    let options = colony::bench::PipeBenchOptions {
        loss: args.loss,
        duplicate: args.dup,
        delay: Duration::from_secs_f64(args.delay_ms / 1e3),
        jitter: Duration::from_secs_f64(args.jitter_ms / 1e3),
        messages: args.messages,
        round_trips: args.round_trips,
        ..Default::default()
    };
    eprintln!(
        "running: raw TCP round trips, pipe round trips, {} pipelined messages…",
        options.messages
    );
    let r = colony::bench::pipe(&options).await?;
    if args.json {
        outln!("{}", serde_json::to_string_pretty(&r)?)?;
        return Ok(());
    }
    outln!(
        "faults: loss {:.1}%, duplication {:.1}%, delay {} ms, jitter {} ms",
        r.loss * 100.0,
        r.duplicate * 100.0,
        r.delay_ms,
        r.jitter_ms
    )?;
    outln!("pipelined: {} messages, {} delivered, {} lost, {} duplicated at handler, {} out of order, {} failed", r.messages, r.delivered, r.lost, r.duplicated_at_handler, r.out_of_order, r.failed)?;
    outln!("throughput: {:.0} messages/s", r.messages_per_s)?;
    outln!(
        "one-way latency (pipelined): p50 {:.0} µs, p99 {:.0} µs",
        r.latency_us.p50,
        r.latency_us.p99
    )?;
    outln!(
        "round trip, pipe:    p50 {:>8.1} µs, p99 {:>8.1} µs",
        r.pipe_rtt_us.p50,
        r.pipe_rtt_us.p99
    )?;
    outln!(
        "round trip, raw TCP: p50 {:>8.1} µs, p99 {:>8.1} µs (same run)",
        r.tcp_rtt_us.p50,
        r.tcp_rtt_us.p99
    )?;
    outln!(
        "ratio pipe/TCP: p50 {:.2}x, p99 {:.2}x",
        r.rtt_ratio_p50,
        r.rtt_ratio_p99
    )?;
    Ok(())
}
