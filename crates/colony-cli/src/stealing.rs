//! `colony bench stealing`: the same flow-shop instance solved by the plain
//! sequential solver, by Colony on one peer, and by Colony on two peers —
//! all in this process, in the same run — plus how fast a newcomer gets
//! work and what a unit costs to ship.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use colony::{JobState, LocalNetwork, TrafficClass};
use colony_core::divisible::{AppError, Step, StepContext};
use serde::Serialize;

/// One instance's figures.
#[derive(Debug, Serialize)]
struct InstanceRow {
    instance: String,
    makespan: u32,
    sequential_s: f64,
    sequential_nodes: u64,
    one_peer_s: f64,
    one_peer_nodes: u64,
    two_peers_s: f64,
    two_peers_nodes: u64,
    two_peers_steals: u64,
}

/// Measured figures.
#[derive(Debug, Serialize)]
pub struct StealingReport {
    instances: Vec<InstanceRow>,
    /// Plain solver's nodes per second over all instances.
    sequential_nodes_per_s: f64,
    /// Colony on one peer, nodes per second over all instances.
    one_peer_nodes_per_s: f64,
    /// How much slower per node the runtime is than the plain solver, in %.
    overhead_pct: f64,
    /// Total time on one peer over total time on two peers.
    speedup: f64,
    /// Extra nodes the two-peer searches explored (speculative work of
    /// parallel branch-and-bound), in %.
    search_overhead_pct: f64,
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

/// Solves `instance` on `network`: (seconds, nodes, steals, makespan).
async fn solve_on(network: &LocalNetwork, instance: &str) -> Result<(f64, u64, u64, u32)> {
    let started = Instant::now();
    let handle = network.peers()[0]
        .submit_job("flowshop", &[instance.to_string()])
        .await?;
    let view = handle.finished().await?;
    let elapsed = started.elapsed().as_secs_f64();
    let JobState::Done { result } = &view.state else {
        bail!("the job did not finish: {:?}", view.state);
    };
    let best: colony_apps::flowshop::Best =
        colony_apps::native_guest::decode(result, "result").context("decoding the result")?;
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
    let app = colony_apps::examples().get("flowshop")?;
    let params = app.parse_args(&[instance.to_string()])?;
    let mut unit = app.init(&params)?;
    let mut shared = app.initial_shared(&params)?;
    let mut sizes = Vec::new();
    for _ in 0..21 {
        let mut ctx = StepContext::new(&mut shared, 2000);
        if let Step::Done(_) = unit.step(&mut ctx)? {
            break;
        }
        if let Some(part) = unit.divide()? {
            sizes.push(part.len());
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

/// Runs the benchmark over `instances`.
pub async fn run(instances: &[String], json: bool) -> Result<()> {
    let Some(first) = instances.first() else {
        bail!("name at least one instance");
    };
    for name in instances {
        colony_apps::flowshop::instance(name).map_err(AppError::BadParams)?;
    }
    let one = LocalNetwork::start(1, network_config(1)).await?;
    let two = LocalNetwork::start(2, network_config(1)).await?;
    let mut rows = Vec::new();
    for name in instances {
        eprintln!("{name}: sequential solver, colony on 1 peer, colony on 2 peers…");
        let problem = colony_apps::flowshop::instance(name).map_err(AppError::BadParams)?;
        let started = Instant::now();
        let (makespan, _, sequential_nodes) = colony_apps::flowshop::solve_sequential(&problem);
        let sequential_s = started.elapsed().as_secs_f64();
        let (one_peer_s, one_peer_nodes, _, one_makespan) = solve_on(&one, name).await?;
        let (two_peers_s, two_peers_nodes, two_peers_steals, two_makespan) =
            solve_on(&two, name).await?;
        if one_makespan != makespan || two_makespan != makespan {
            bail!("{name}: makespans disagree: sequential {makespan}, 1 peer {one_makespan}, 2 peers {two_makespan}");
        }
        rows.push(InstanceRow {
            instance: name.clone(),
            makespan,
            sequential_s,
            sequential_nodes,
            one_peer_s,
            one_peer_nodes,
            two_peers_s,
            two_peers_nodes,
            two_peers_steals,
        });
    }
    one.shutdown().await;
    two.shutdown().await;
    eprintln!("newcomer and unit transfer…");
    let newcomer = newcomer_first_unit(first).await?;
    let (bytes, latency_ms) = unit_transfer(first).await?;
    let sum = |f: fn(&InstanceRow) -> f64| rows.iter().map(f).sum::<f64>();
    let sequential_nodes_per_s = sum(|r| r.sequential_nodes as f64) / sum(|r| r.sequential_s);
    let one_peer_nodes_per_s = sum(|r| r.one_peer_nodes as f64) / sum(|r| r.one_peer_s);
    let report = StealingReport {
        sequential_nodes_per_s,
        one_peer_nodes_per_s,
        overhead_pct: (1.0 - one_peer_nodes_per_s / sequential_nodes_per_s) * 100.0,
        speedup: sum(|r| r.one_peer_s) / sum(|r| r.two_peers_s),
        search_overhead_pct: (sum(|r| r.two_peers_nodes as f64) / sum(|r| r.one_peer_nodes as f64)
            - 1.0)
            * 100.0,
        newcomer_first_unit_ms: newcomer.as_secs_f64() * 1e3,
        unit_transfer_bytes_median: bytes,
        unit_transfer_latency_ms_median: latency_ms,
        instances: rows,
    };
    if json {
        outln!("{}", serde_json::to_string_pretty(&report)?)?;
        return Ok(());
    }
    outln!(
        "{:<7} {:>8} {:>8} {:>10} {:>8} {:>10} {:>8} {:>10} {:>6} {:>7}",
        "inst",
        "optimum",
        "seq_s",
        "seq_nodes",
        "1peer_s",
        "1p_nodes",
        "2peer_s",
        "2p_nodes",
        "steals",
        "speedup"
    )?;
    for r in &report.instances {
        outln!(
            "{:<7} {:>8} {:>8.3} {:>10} {:>8.3} {:>10} {:>8.3} {:>10} {:>6} {:>6.2}x",
            r.instance,
            r.makespan,
            r.sequential_s,
            r.sequential_nodes,
            r.one_peer_s,
            r.one_peer_nodes,
            r.two_peers_s,
            r.two_peers_nodes,
            r.two_peers_steals,
            r.one_peer_s / r.two_peers_s
        )?;
    }
    let r = &report;
    outln!("speedup of 2 peers over 1 (total time): {:.2}x; the 2-peer searches explored {:+.1}% nodes", r.speedup, r.search_overhead_pct)?;
    outln!(
        "runtime overhead: {:.0} nodes/s on 1 peer vs {:.0} for the plain solver: {:.1}% fewer",
        r.one_peer_nodes_per_s,
        r.sequential_nodes_per_s,
        r.overhead_pct
    )?;
    outln!(
        "newcomer's first unit {:.0} ms after it started",
        r.newcomer_first_unit_ms
    )?;
    outln!(
        "unit transfer: median {} bytes, {:.2} ms",
        r.unit_transfer_bytes_median,
        r.unit_transfer_latency_ms_median
    )?;
    Ok(())
}
