//! `colony run`, `colony jobs`, `colony result`.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;
use colony::deploy::{Descriptor, FaultTolerance, FtProtocol, ServiceRegistry};
use colony::{JobInfo, JobState, Peer, SubmitOptions};
use indicatif::{ProgressBar, ProgressStyle};

use crate::client::ApiClientArgs;
use crate::flowshop_objects::FlowShopObjectsRun;
use crate::tsp::{object_protocol, TspRun, TSP};
use crate::NetworkArgs;

#[derive(Args, Debug)]
pub(crate) struct RunArgs {
    #[command(flatten)]
    network: NetworkArgs,
    /// Deployment descriptor (TOML): network, bootstrap peers, virtual nodes
    /// and the technical services that configure them, such as fault
    /// tolerance (see examples/deploy/). --network, --bootstrap and --peers
    /// given here win over it.
    #[arg(long, value_name = "FILE")]
    descriptor: Option<PathBuf>,
    /// The descriptor's virtual node to run on: its acquisition sets the
    /// peers to wait for, its service the job's fault tolerance (default:
    /// the descriptor's only virtual node).
    #[arg(long, value_name = "NAME", requires = "descriptor")]
    virtual_node: Option<String>,
    /// Keep this peer's identity here (default: a fresh temporary one).
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Wait up to this many seconds to join the network before submitting.
    #[arg(long, default_value_t = 30.0)]
    join_timeout_s: f64,
    /// Peers to acquire, this one included. Best effort (ProActive's
    /// acquisition): waits up to --acquire-timeout-s for them, then runs with
    /// whoever is there [default: 1, or what the descriptor's virtual node
    /// asks: nodes_asked, or its hosts and this peer].
    #[arg(long, value_parser = crate::at_least_one)]
    peers: Option<usize>,
    /// How long to wait for --peers before starting with fewer.
    #[arg(long, default_value_t = 5.0)]
    acquire_timeout_s: f64,
    /// Print one JSON object (result, elapsed_s, units, steals, peers_used,
    /// verified) instead of text.
    #[arg(long)]
    json: bool,
    /// Cancel the job if it runs longer than this many seconds; its
    /// primary keeps watch, so this holds after this submitter is gone.
    #[arg(long, value_name = "SECONDS")]
    deadline: Option<f64>,
    /// Keep the job's namespace in the object space (job-<id>) when it
    /// ends, instead of destroying it with the job: its objects stay
    /// readable (`colony space ls --namespace job-<id>`) until someone
    /// runs `colony space ns-rm job-<id>`.
    #[arg(long)]
    keep_namespace: bool,
    /// Run a WebAssembly module (built with the colony-guest SDK) instead
    /// of a native application: a file, or the id `colony app publish`
    /// printed. This peer signs it, publishes it to its home (where peers
    /// fetch it on first use), and the peers that trust this network or
    /// this peer (`colony peer --trust-network | --trust ID`) run it
    /// sandboxed. Every positional argument is the module's.
    #[arg(long, value_name = "FILE|ID")]
    wasm: Option<String>,
    /// The application: flowshop, nqueens, matmul, or tsp (islands as
    /// distributed objects: `colony run tsp FILE.tsp --islands N`, see
    /// `colony run tsp --help`); `flowshop taNNN --objects` runs the
    /// flow-shop as a master object and slave objects (see `colony run
    /// flowshop --objects --help`); with --wasm, the module's first
    /// argument.
    #[arg(required_unless_present = "wasm")]
    app: Option<String>,
    /// The application's arguments, e.g. `ta001`, `12`, `256 --seed 7`.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    args: Vec<String>,
}

#[derive(Args, Debug)]
pub(crate) struct ApiArgs {
    #[command(flatten)]
    pub(crate) api: ApiClientArgs,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Args, Debug)]
pub(crate) struct ResultArgs {
    /// The job's id, as printed by `colony run`.
    job_id: String,
    #[command(flatten)]
    api: ApiArgs,
}

/// Removes a temporary data directory when the run ends.
struct TempDir(Option<PathBuf>);

impl Drop for TempDir {
    fn drop(&mut self) {
        if let Some(dir) = &self.0 {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

pub(crate) async fn run(args: RunArgs) -> Result<()> {
    // `colony run tsp FILE --json` and `colony run flowshop taNNN --objects
    // --json` take --json among their own arguments.
    let own_json = args.app.as_deref() == Some(TSP)
        || crate::flowshop_objects::wanted(args.app.as_deref(), &args.args);
    let json = args.json || (own_json && args.args.iter().any(|arg| arg == "--json"));
    let mut reported = false;
    let outcome = run_job(args, &mut reported).await;
    if let Err(error) = &outcome {
        // Scripts read stdout: say why there, too, unless the job's own
        // object already did.
        if json && !reported && !crate::is_broken_pipe(error) {
            let object = serde_json::json!({
                "job_id": null,
                "state": "failed",
                "error": format!("{error:#}"),
            });
            outln!("{object}")?;
        }
    }
    outcome
}

async fn run_job(args: RunArgs, reported: &mut bool) -> Result<()> {
    for (name, value) in [
        ("--join-timeout-s", args.join_timeout_s),
        ("--acquire-timeout-s", args.acquire_timeout_s),
    ] {
        if !(value.is_finite() && value >= 0.0) {
            bail!("{name} must be a non-negative number of seconds");
        }
    }
    if let Some(secs) = args.deadline {
        colony::job_deadline_from_secs(secs).map_err(|e| anyhow::anyhow!("--deadline {e}"))?;
    }
    // The flow-shop master and slaves are objects on two virtual nodes:
    // their own path.
    let mut flowshop_objects =
        match crate::flowshop_objects::wanted(args.app.as_deref(), &args.args) {
            true if args.wasm.is_none() => Some(FlowShopObjectsRun::prepare(&args.args)?),
            _ => None,
        };
    // Read the descriptor before anything else: a bad one starts nothing.
    let deployment = match &args.descriptor {
        Some(path) => {
            let descriptor = Descriptor::load(path, &ServiceRegistry::with_builtins())?;
            // The flow-shop objects wait for the peers of their slaves'
            // virtual node unless told otherwise.
            let wanted = args
                .virtual_node
                .as_deref()
                .or(flowshop_objects.as_ref().map(|run| run.slaves_node()));
            let node = descriptor.pick_virtual_node(wanted)?.clone();
            if let Some(run) = &mut flowshop_objects {
                run.deploy(&descriptor)?;
            }
            Some((descriptor, node))
        }
        None => None,
    };
    let (data_dir, _cleanup) = match &args.data_dir {
        Some(dir) => (dir.clone(), TempDir(None)),
        None => {
            let dir = std::env::temp_dir().join(format!(
                "colony-run-{}-{}",
                std::process::id(),
                Instant::now().elapsed().as_nanos()
            ));
            (dir.clone(), TempDir(Some(dir)))
        }
    };
    let mut config = args.network.config(&data_dir)?;
    // A submitting peer lives as long as its job: it holds no partitions of
    // the object space (it can still use it).
    config.space.capacity_bytes = 0;
    let mut peers = args.peers.unwrap_or(1);
    if let Some((descriptor, node)) = &deployment {
        if args.network.network.is_none() {
            if let Some(network) = &descriptor.network {
                config.net.network = network.clone();
            }
        }
        if args.network.bootstrap.is_empty() {
            config.bootstrap = descriptor.bootstrap.clone();
        }
        for host in node.acquisition.extra_bootstrap() {
            if !config.bootstrap.contains(host) {
                config.bootstrap.push(host.clone());
            }
        }
        peers = args
            .peers
            .unwrap_or_else(|| node.acquisition.peers_wanted());
        eprintln!(
            "deployment: network {}, virtual node {} ({}), fault tolerance: {}{}",
            config.net.network,
            node.name,
            node.acquisition,
            describe(&node.settings.fault_tolerance),
            node.settings
                .extensions
                .iter()
                .map(|(k, v)| format!(", {k} = {v}"))
                .collect::<String>()
        );
    }
    // Fail fast on a bad job, before joining anything.
    let module = match &args.wasm {
        Some(wasm) => {
            config.guests.get_or_insert_with(Default::default);
            Some(ModuleSource::read(wasm)?)
        }
        None => None,
    };
    let (mut app, app_args) = match &module {
        Some(_) => (
            String::new(),
            args.app.iter().chain(&args.args).cloned().collect(),
        ),
        None => (args.app.clone().unwrap_or_default(), args.args.clone()),
    };
    // The TSP islands are objects, not a divisible job: their own path.
    let tsp = match module {
        None if app == TSP => Some(TspRun::prepare(&app_args)?),
        _ => None,
    };
    if module.is_none() && tsp.is_none() && flowshop_objects.is_none() {
        config
            .apps
            .get(&app)
            .and_then(|app| app.parse_args(&app_args))
            .map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    let joining = !config.bootstrap.is_empty() || config.net.mdns;
    let peer = Peer::start(config).await?;
    // A module file is checked (and kept, signed) before joining; its home
    // is only known once joined, so it is published after.
    if let Some(ModuleSource::File(bytes)) = &module {
        let checked = async {
            let published = peer.publish_module(bytes.clone(), Duration::ZERO).await?;
            app = published.app;
            peer.apps()
                .get(&app)
                .and_then(|module| module.parse_args(&app_args))
                .map_err(colony::ColonyError::from)
        };
        if let Err(error) = checked.await {
            peer.shutdown().await;
            bail!("{error}");
        }
    }
    if joining {
        let deadline = Instant::now() + Duration::from_secs_f64(args.join_timeout_s);
        loop {
            let members = peer.members().await?;
            if members
                .iter()
                .any(|m| !m.local && m.state == colony::MemberState::Alive)
            {
                break;
            }
            if Instant::now() > deadline {
                let foreign = peer
                    .status()
                    .await
                    .ok()
                    .and_then(|s| s.driver.last_foreign_protocol);
                match foreign {
                    Some(theirs) => bail!(
                        "could not join the network within {} s: the bootstrap peer is {}, and \
                         this peer is in network {:?}; pass --network (or fix the descriptor's \
                         network)",
                        args.join_timeout_s,
                        describe_foreign(&theirs),
                        peer.info().network
                    ),
                    None => bail!(
                        "could not join the network within {} s",
                        args.join_timeout_s
                    ),
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // Let the view settle so the job's home is chosen among everyone.
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    acquire(
        &peer,
        peers,
        Duration::from_secs_f64(args.acquire_timeout_s),
    )
    .await?;
    if let Some(module) = module {
        let published = match module {
            ModuleSource::File(bytes) => peer.publish_module(bytes, PUBLISH_WAIT).await,
            ModuleSource::Id(id) => peer.publish_module_by_id(&id, PUBLISH_WAIT).await,
        };
        let published = match published {
            Ok(published) => published,
            Err(error) => {
                peer.shutdown().await;
                bail!("{error}");
            }
        };
        app = published.app.clone();
        if let Err(error) = peer
            .apps()
            .get(&app)
            .and_then(|module| module.parse_args(&app_args))
        {
            peer.shutdown().await;
            bail!("{error}");
        }
        eprintln!("{}", describe_publication(&published));
    }
    // The descriptor's fault tolerance, or the default one.
    let ft = deployment.map(|(_, node)| node.settings.fault_tolerance);
    let outcome = match (tsp, flowshop_objects) {
        (Some(tsp), _) => crate::tsp::run(&peer, tsp, object_protocol(ft.as_ref())).await,
        (None, Some(run)) => crate::flowshop_objects::run(&peer, run, reported).await,
        (None, None) => {
            let ft = ft.unwrap_or_default();
            submit_and_follow(&peer, (&app, &app_args), &args, ft, reported).await
        }
    };
    peer.shutdown().await;
    outcome
}

/// Waits until `wanted` peers (this one included) are alive, or `within`
/// passes; then carries on with whoever is there.
async fn acquire(peer: &Peer, wanted: usize, within: Duration) -> Result<()> {
    let deadline = Instant::now() + within;
    loop {
        let alive = peer
            .members()
            .await?
            .iter()
            .filter(|m| m.state == colony::MemberState::Alive)
            .count();
        if alive >= wanted {
            return Ok(());
        }
        if Instant::now() >= deadline {
            eprintln!("asked for {wanted} peers, {alive} present; running best-effort with those");
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A peer of another network, from its identify protocol: `a peer of
/// network "x"`, or what it announced if not a Colony peer.
fn describe_foreign(protocol: &str) -> String {
    match protocol
        .strip_prefix("/colony/")
        .and_then(|rest| rest.rsplit_once('/'))
    {
        Some((network, _)) => format!("a peer of network {network:?}"),
        None => format!("not a Colony peer (it speaks {protocol:?})"),
    }
}

/// One line for people: what protects the job.
fn describe(ft: &FaultTolerance) -> String {
    let durable = if ft.durable { ", durable" } else { "" };
    match ft.protocol {
        FtProtocol::None => format!("no checkpoints, home of {}{durable}", ft.home_size),
        FtProtocol::Checkpoint => format!(
            "checkpoint every {:?}, storage {} on a home of {}{durable}",
            ft.ttc, ft.storage, ft.home_size
        ),
        FtProtocol::Pml => format!(
            "message logging (objects), checkpoint every {:?}, home of {}",
            ft.ttc, ft.home_size
        ),
        FtProtocol::Cic => format!(
            "communication-induced checkpoints (objects), at least every {:?}, home of {}",
            ft.ttc, ft.home_size
        ),
    }
}

/// Submits the job protected by `ft` and follows it to the end.
async fn submit_and_follow(
    peer: &Peer,
    (app, app_args): (&str, &[String]),
    args: &RunArgs,
    ft: FaultTolerance,
    reported: &mut bool,
) -> Result<()> {
    let options = SubmitOptions {
        deadline: args.deadline.map(Duration::from_secs_f64),
        keep_namespace: args.keep_namespace,
    };
    let mut handle = peer.submit_job_with(app, app_args, ft, options).await?;
    let id = handle.id();
    let bar = ProgressBar::new_spinner();
    bar.set_style(
        ProgressStyle::with_template("{spinner} {elapsed_precise} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    if args.json {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    bar.enable_steady_tick(Duration::from_millis(120));
    eprintln!("job {id} submitted ({app} {})", app_args.join(" "));
    let mut interrupted = std::pin::pin!(tokio::signal::ctrl_c());
    let mut announced_waiting = false;
    let mut refusals = Refusals::default();
    let view = loop {
        let changed = tokio::select! {
            changed = handle.changed() => changed?,
            _ = &mut interrupted => {
                // The submitter gives up: nobody is left to want the result.
                bar.finish_and_clear();
                eprintln!("interrupted: cancelling job {id}");
                peer.cancel_job(id).await?;
                bail!("job {id} cancelled (interrupted)");
            }
        };
        let Some(view) = changed else {
            continue;
        };
        let info = JobInfo::from_view(&view, peer.apps());
        let shared: Vec<String> = info
            .shared
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        bar.set_message(format!(
            "units {}/{} · steals {} · peers {} · work {} {}{}",
            info.units_done,
            info.units,
            info.steals,
            info.peers_used,
            info.work,
            shared.join(" "),
            info.waiting()
                .map(|w| format!(" · {w}"))
                .unwrap_or_default()
        ));
        for line in refusals.new_lines(&info) {
            if bar.is_hidden() {
                eprintln!("{line}");
            } else {
                bar.println(line);
            }
        }
        if bar.is_hidden() {
            // No bar to show it in: say it on stderr, once per change.
            let waiting = info.waiting().is_some();
            if waiting != announced_waiting {
                announced_waiting = waiting;
                if let Some(w) = info.waiting() {
                    eprintln!("job {id}: {w}");
                }
            }
        }
        if !matches!(view.state, JobState::Running) {
            break view;
        }
    };
    bar.finish_and_clear();
    let info = JobInfo::from_view(&view, peer.apps());
    *reported = true;
    print_result(&info, args.json)?;
    match (info.state.as_str(), info.verified) {
        ("failed", _) => bail!(
            "job {} failed: {}{}",
            info.job_id,
            info.error.as_deref().unwrap_or_default(),
            info.refusals()
                .map(|r| format!(" ({r})"))
                .unwrap_or_default()
        ),
        ("cancelled", _) => bail!("job {} was {}", info.job_id, info.error.unwrap_or_default()),
        (_, Some(false)) => bail!(
            "job {} finished but its result does not match the known answer",
            info.job_id
        ),
        _ => Ok(()),
    }
}

/// The refusals of a job `colony run` has printed so far: each peer's
/// once, as it appears.
#[derive(Default)]
struct Refusals {
    /// Peers whose refusal was printed (at most what a view lists).
    told: std::collections::BTreeSet<String>,
    /// The unlisted count last printed.
    unlisted: u64,
}

impl Refusals {
    /// Lines for the refusals in `info` not printed before.
    fn new_lines(&mut self, info: &JobInfo) -> Vec<String> {
        let mut lines = Vec::new();
        for d in &info.declined {
            if self.told.insert(d.peer_id.clone()) {
                lines.push(format!("peer {} refused the job: {}", d.peer_id, d.reason));
            }
        }
        if info.declined_unlisted > self.unlisted {
            self.unlisted = info.declined_unlisted;
            lines.push(format!(
                "{} more peers refused the job (not listed)",
                info.declined_unlisted
            ));
        }
        lines
    }
}

fn print_result(info: &JobInfo, json: bool) -> Result<()> {
    if json {
        let object = serde_json::json!({
            "job_id": info.job_id,
            "app": info.app,
            "state": info.state,
            "error": info.error,
            "result": info.result,
            "summary": info.summary,
            "elapsed_s": info.elapsed_s,
            "units": info.units,
            "steals": info.steals,
            "peers_used": info.peers_used,
            "work": info.work,
            "verified": info.verified,
            "home_majority_lost": info.home_majority_lost,
            "declined": info.declined,
            "declined_unlisted": info.declined_unlisted,
            "keep_namespace": info.keep_namespace,
        });
        outln!("{object}")?;
        return Ok(());
    }
    match info.state.as_str() {
        "done" => {
            outln!(
                "{}",
                info.summary
                    .as_deref()
                    .unwrap_or("(no summary: this peer lacks the app)")
            )?;
            if let Some(verified) = info.verified {
                outln!(
                    "matches the known answer: {}",
                    if verified { "yes" } else { "NO" }
                )?;
            }
        }
        "failed" => outln!("failed: {}", info.error.as_deref().unwrap_or(""))?,
        "cancelled" => outln!("{}", info.error.as_deref().unwrap_or("cancelled"))?,
        _ => match info.waiting() {
            Some(waiting) => outln!("still running; {waiting}")?,
            None => outln!("still running")?,
        },
    }
    outln!(
        "job {} · {:.2} s · {} units · {} steals · {} peers · work {}",
        info.job_id,
        info.elapsed_s,
        info.units,
        info.steals,
        info.peers_used,
        info.work
    )?;
    for c in &info.contributions {
        outln!(
            "  peer …{} units {} work {} donated {}",
            &c.peer_id[c.peer_id.len().saturating_sub(6)..],
            c.units_done,
            c.work,
            c.donated
        )?;
    }
    for d in &info.declined {
        outln!("  peer {} refused the job: {}", d.peer_id, d.reason)?;
    }
    if info.declined_unlisted > 0 {
        outln!(
            "  {} more peers refused the job (not listed)",
            info.declined_unlisted
        )?;
    }
    if info.keep_namespace && info.state != "running" {
        let namespace = format!("job-{}", info.job_id);
        outln!(
            "  namespace {namespace} kept: see it with `colony space ls --namespace {namespace}`, remove it with `colony space ns-rm {namespace}`"
        )?;
    }
    Ok(())
}

/// Refusals `colony jobs` shows per job; `colony result` shows them all.
const LISTED_REFUSALS: usize = 3;

pub(crate) async fn list(args: ApiArgs) -> Result<()> {
    let jobs: Vec<JobInfo> = args.api.connect()?.get_json("/v1/jobs").await?;
    if args.json {
        outln!("{}", serde_json::to_string_pretty(&jobs)?)?;
        return Ok(());
    }
    outln!(
        "{:<32} {:<9} {:<8} {:>7} {:>7} {:>9}",
        "JOB",
        "APP",
        "STATE",
        "UNITS",
        "STEALS",
        "ELAPSED_S"
    )?;
    for j in &jobs {
        outln!(
            "{:<32} {:<9} {:<8} {:>7} {:>7} {:>9.2}",
            j.job_id,
            j.app,
            j.state,
            j.units,
            j.steals,
            j.elapsed_s
        )?;
        if let Some(waiting) = j.waiting() {
            outln!("  {waiting}")?;
        }
        for d in j.declined.iter().take(LISTED_REFUSALS) {
            outln!("  peer {} refused the job: {}", d.peer_id, d.reason)?;
        }
        let more = (j.declined.len().saturating_sub(LISTED_REFUSALS) as u64)
            .saturating_add(j.declined_unlisted);
        if more > 0 {
            outln!(
                "  {more} more peers refused the job (see colony result {})",
                j.job_id
            )?;
        }
    }
    Ok(())
}

pub(crate) async fn result(args: ResultArgs) -> Result<()> {
    let id: colony::JobId = args
        .job_id
        .parse()
        .map_err(|e: String| anyhow::anyhow!(e))?;
    let api = args.api.api.connect()?;
    let info: JobInfo = api
        .get_json(&format!("/v1/jobs/{id}"))
        .await
        .with_context(|| format!("no result for job {id} from the peer at {}", api.addr))?;
    print_result(&info, args.api.json)
}

/// Asks a peer's API to cancel a job.
pub(crate) async fn cancel(args: ResultArgs) -> Result<()> {
    let id: colony::JobId = args
        .job_id
        .parse()
        .map_err(|e: String| anyhow::anyhow!(e))?;
    let api = args.api.api.connect()?;
    let answer: serde_json::Value = api
        .post_json(&format!("/v1/jobs/{id}/cancel"))
        .await
        .with_context(|| format!("job {id} was not cancelled by the peer at {}", api.addr))?;
    if args.api.json {
        outln!("{answer}")?;
    } else {
        outln!("job {id} cancelled")?;
    }
    Ok(())
}

/// How long `colony run --wasm` waits for the module's home to store it.
const PUBLISH_WAIT: Duration = Duration::from_secs(10);

/// What `colony run --wasm` names: a module file, or a published module's
/// id.
enum ModuleSource {
    File(Vec<u8>),
    Id(String),
}

impl ModuleSource {
    /// A file if `wasm` names one; else a module id (`wasm:<id>` or the
    /// bare 64-digit hash); else an error.
    fn read(wasm: &str) -> Result<ModuleSource> {
        match std::fs::read(wasm) {
            Ok(bytes) => Ok(ModuleSource::File(bytes)),
            Err(e) => {
                let id = wasm.strip_prefix("wasm:").unwrap_or(wasm);
                if id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit()) {
                    Ok(ModuleSource::Id(id.to_ascii_lowercase()))
                } else {
                    bail!("--wasm {wasm}: neither a readable module file ({e}) nor a module id")
                }
            }
        }
    }
}

/// One line on where a published module went.
fn describe_publication(published: &colony::PublishedModule) -> String {
    if published.home.is_empty() {
        return format!(
            "module {} kept by this peer only (no other peer runs guests to hold it)",
            published.id
        );
    }
    format!(
        "module {} published: stored by {} of its {} home peers",
        published.id,
        published.stored_by.len(),
        published.home.len()
    )
}

/// Arguments of `colony app publish`.
#[derive(Args, Debug)]
pub(crate) struct PublishArgs {
    #[command(flatten)]
    api: ApiArgs,
    /// The module (built with the colony-guest SDK).
    file: PathBuf,
}

/// `colony app publish FILE`: publishes a module through a running peer
/// and prints its id.
pub(crate) async fn publish(args: PublishArgs) -> Result<()> {
    let bytes = std::fs::read(&args.file)
        .with_context(|| format!("cannot read {}", args.file.display()))?;
    let api = args.api.api.connect()?;
    let published: colony::PublishedModule = api.post_bytes("/v1/modules", bytes).await?;
    if args.api.json {
        outln!("{}", serde_json::to_string(&published)?)?;
    } else {
        eprintln!("{}", describe_publication(&published));
        outln!("{}", published.id)?;
    }
    Ok(())
}

/// `colony apps`: the native applications and guest modules of a peer.
pub(crate) async fn show_apps(args: ApiArgs) -> Result<()> {
    let api = args.api.connect()?;
    let apps: colony::AppsInfo = api.get_json("/v1/apps").await?;
    if args.json {
        outln!("{}", serde_json::to_string_pretty(&apps)?)?;
        return Ok(());
    }
    for name in &apps.native {
        outln!("{name:<72} native")?;
    }
    if !apps.guests_enabled {
        outln!("(this peer runs native applications only)")?;
    }
    for module in &apps.modules {
        outln!("{:<72} {} bytes", module.app, module.size_bytes)?;
    }
    Ok(())
}
