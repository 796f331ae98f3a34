//! `colony bench stealing`: the same flow-shop instance solved by the plain
//! sequential solver, by Colony on one peer, and by Colony on two peers —
//! all in this process, in the same run — plus how fast a newcomer gets
//! work and what a unit costs to ship.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use colony::{JobState, LocalNetwork, TrafficClass};
use colony_core::divisible::{Divisible, SharedVars, Step, StepContext};
use serde::Serialize;

/// Measured figures.
#[derive(Debug, Serialize)]
pub struct StealingReport {
    instance: String,
    makespan: u32,
    sequential_s: f64,
    sequential_nodes: u64,
    sequential_nodes_per_s: f64,
    one_peer_s: f64,
    one_peer_nodes: u64,
    one_peer_nodes_per_s: f64,
    /// How much slower per node the runtime is than the plain solver, in %.
    overhead_pct: f64,
    two_peers_s: f64,
    two_peers_steals: u64,
    /// One peer's time over two peers' time.
    speedup: f64,
    newcomer_first_unit_ms: f64,
    unit_transfer_bytes_median: usize,
    unit_transfer_latency_ms_median: f64,
}

fn network_config(cores: u32) -> impl Fn(usize, &mut colony::PeerConfig) + Send + Sync + 'static {
    move |_, config| {
        config.apps = colony_apps::examples();
        config.cores_offered = Some(cores);
    }
}

/// Solves `instance` on a fresh network of `peers` one-core peers.
async fn solve_on(peers: usize, instance: &str) -> Result<(f64, u64, u64, u32)> {
    let network = LocalNetwork::start(peers, network_config(1)).await?;
    let started = Instant::now();
    let handle = network.peers()[0]
        .submit_job("flowshop", &[instance.to_string()])
        .await?;
    let view = handle.finished().await?;
    let elapsed = started.elapsed().as_secs_f64();
    network.shutdown().await;
    let JobState::Done { result } = &view.state else {
        bail!("the job did not finish: {:?}", view.state);
    };
    let best: colony_apps::flowshop::Best =
        postcard::from_bytes(result).context("decoding the result")?;
    Ok((
        elapsed,
        view.stats.work,
        view.stats.steals,
        best.makespan.unwrap_or(0),
    ))
}

/// Time from a newcomer's start to its first unit, with a job running.
async fn newcomer_first_unit(instance: &str) -> Result<Duration> {
    let mut network = LocalNetwork::start(1, network_config(1)).await?;
    let handle = network.peers()[0]
        .submit_job("flowshop", &[instance.to_string()])
        .await?;
    let job = handle.id();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let joined = Instant::now();
    let newcomer = network.add_peer().await?.peer_id();
    let deadline = Instant::now() + Duration::from_secs(30);
    let took = loop {
        let view = network.peers()[0].job(job).await?;
        let working = view.as_ref().is_some_and(|v| {
            v.contributions
                .iter()
                .any(|(p, c)| *p == newcomer && c.units_running + c.units_done > 0)
        });
        if working {
            break joined.elapsed();
        }
        if view.is_some_and(|v| !matches!(v.state, JobState::Running)) {
            bail!("the job ended before the newcomer got work; use a larger instance");
        }
        if Instant::now() > deadline {
            bail!("the newcomer got no work within 30 s");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    network.shutdown().await;
    Ok(took)
}

/// Sizes of units divided off a running search, and the pipe latency of
/// shipping that many bytes between two peers.
async fn unit_transfer(instance: &str) -> Result<(usize, f64)> {
    let params = colony_apps::flowshop::FlowShop::parse_args(&[instance.to_string()])?;
    let mut unit = colony_apps::flowshop::FlowShop::init(&params)?;
    let mut shared: SharedVars = colony_apps::flowshop::FlowShop::initial_shared(&params);
    let mut sizes = Vec::new();
    for _ in 0..21 {
        let mut ctx = StepContext::new(&mut shared, 2000);
        if let Step::Done(_) = unit.step(&mut ctx) {
            break;
        }
        if let Some(part) = unit.divide() {
            sizes.push(postcard::to_stdvec(&part)?.len());
        }
    }
    if sizes.is_empty() {
        bail!("the instance is too small to divide");
    }
    sizes.sort_unstable();
    let size = sizes[sizes.len() / 2];
    let network = LocalNetwork::start(2, network_config(1)).await?;
    let (a, b) = (&network.peers()[0], network.peers()[1].peer_id());
    let mut latencies = Vec::new();
    for _ in 0..21 {
        let t = Instant::now();
        a.send(b, TrafficClass::BULK, vec![7u8; size]).await?;
        latencies.push(t.elapsed().as_secs_f64() * 1e3);
    }
    network.shutdown().await;
    latencies.sort_by(f64::total_cmp);
    Ok((size, latencies[latencies.len() / 2]))
}

/// Runs the benchmark.
pub async fn run(instance: &str, json: bool) -> Result<()> {
    let problem = colony_apps::flowshop::instance(instance).map_err(|e| anyhow::anyhow!("{e}"))?;
    eprintln!("sequential solver…");
    let started = Instant::now();
    let (makespan, _, sequential_nodes) = colony_apps::flowshop::solve_sequential(&problem);
    let sequential_s = started.elapsed().as_secs_f64();
    eprintln!("colony, 1 peer…");
    let (one_peer_s, one_peer_nodes, _, one_makespan) = solve_on(1, instance).await?;
    eprintln!("colony, 2 peers…");
    let (two_peers_s, _, two_peers_steals, two_makespan) = solve_on(2, instance).await?;
    if one_makespan != makespan || two_makespan != makespan {
        bail!("makespans disagree: sequential {makespan}, 1 peer {one_makespan}, 2 peers {two_makespan}");
    }
    eprintln!("newcomer and unit transfer…");
    let newcomer = newcomer_first_unit(instance).await?;
    let (bytes, latency_ms) = unit_transfer(instance).await?;
    let sequential_nodes_per_s = sequential_nodes as f64 / sequential_s;
    let one_peer_nodes_per_s = one_peer_nodes as f64 / one_peer_s;
    let report = StealingReport {
        instance: instance.to_string(),
        makespan,
        sequential_s,
        sequential_nodes,
        sequential_nodes_per_s,
        one_peer_s,
        one_peer_nodes,
        one_peer_nodes_per_s,
        overhead_pct: (1.0 - one_peer_nodes_per_s / sequential_nodes_per_s) * 100.0,
        two_peers_s,
        two_peers_steals,
        speedup: one_peer_s / two_peers_s,
        newcomer_first_unit_ms: newcomer.as_secs_f64() * 1e3,
        unit_transfer_bytes_median: bytes,
        unit_transfer_latency_ms_median: latency_ms,
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    let r = &report;
    println!("flow-shop {} (optimal makespan {})", r.instance, r.makespan);
    println!(
        "sequential solver: {:.2} s, {} nodes, {:.0} nodes/s",
        r.sequential_s, r.sequential_nodes, r.sequential_nodes_per_s
    );
    println!(
        "colony, 1 peer:    {:.2} s, {} nodes, {:.0} nodes/s — overhead {:.1}% fewer nodes/s",
        r.one_peer_s, r.one_peer_nodes, r.one_peer_nodes_per_s, r.overhead_pct
    );
    println!(
        "colony, 2 peers:   {:.2} s, {} steals — speedup {:.2}x over 1 peer",
        r.two_peers_s, r.two_peers_steals, r.speedup
    );
    println!(
        "newcomer's first unit {:.0} ms after it started",
        r.newcomer_first_unit_ms
    );
    println!(
        "unit transfer: median {} bytes, {:.2} ms",
        r.unit_transfer_bytes_median, r.unit_transfer_latency_ms_median
    );
    Ok(())
}
