//! `colony bench ft`: the failure-free cost of fault tolerance. The same
//! flow-shop instances run on an embedded network with protocol `none` and
//! with `checkpoint` (TTC 1 s, two copies on a home of three), alternating
//! in the same run, so machine noise hits both alike.

use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use colony::{FaultTolerance, JobState, LocalNetwork, SubmitOptions};
use serde::Serialize;

/// One pair of runs.
#[derive(Debug, Serialize)]
struct Pair {
    instance: String,
    none_s: f64,
    checkpoint_s: f64,
    checkpoints: u64,
    checkpoint_bytes: u64,
}

/// Measured figures.
#[derive(Debug, Serialize)]
struct FtReport {
    peers: usize,
    pairs: Vec<Pair>,
    /// Per pair, checkpoint time over none time, minus one, in %.
    overhead_pct_median: f64,
    overhead_pct_min: f64,
    overhead_pct_max: f64,
    /// Mean checkpoint size in bytes.
    checkpoint_bytes_mean: f64,
}

async fn solve(
    network: &LocalNetwork,
    instance: &str,
    ft: FaultTolerance,
) -> Result<(f64, u64, u64)> {
    let started = Instant::now();
    let handle = network.peers()[0]
        .submit_job_with(
            "flowshop",
            &[instance.to_string()],
            ft,
            SubmitOptions::default(),
        )
        .await?;
    let view = handle.finished().await?;
    let elapsed = started.elapsed().as_secs_f64();
    if !matches!(view.state, JobState::Done { .. }) {
        bail!("{instance}: the job did not finish: {:?}", view.state);
    }
    Ok((elapsed, view.stats.checkpoints, view.stats.checkpoint_bytes))
}

/// Runs the comparison and prints it.
pub async fn run(instances: &[String], peers: usize, runs: usize, json: bool) -> Result<()> {
    for name in instances {
        colony_apps::flowshop::instance(name)
            .map_err(colony_core::divisible::AppError::BadParams)?;
    }
    let network = LocalNetwork::start(peers, |_, config| {
        config.apps = colony_apps::examples();
        config.cores_offered = Some(1);
    })
    .await?;
    let checkpoint = FaultTolerance {
        ttc: Duration::from_secs(1),
        ..FaultTolerance::default()
    };
    let mut pairs = Vec::new();
    for run in 0..runs {
        for name in instances {
            // Alternate which goes first.
            let (none_s, checkpoint_s, checkpoints, bytes) = if run % 2 == 0 {
                let (n, _, _) = solve(&network, name, FaultTolerance::none()).await?;
                let (c, k, b) = solve(&network, name, checkpoint).await?;
                (n, c, k, b)
            } else {
                let (c, k, b) = solve(&network, name, checkpoint).await?;
                let (n, _, _) = solve(&network, name, FaultTolerance::none()).await?;
                (n, c, k, b)
            };
            eprintln!("{name}: none {none_s:.2} s, checkpoint {checkpoint_s:.2} s ({checkpoints} checkpoints, {bytes} bytes)");
            pairs.push(Pair {
                instance: name.clone(),
                none_s,
                checkpoint_s,
                checkpoints,
                checkpoint_bytes: bytes,
            });
        }
    }
    network.shutdown().await;
    let mut overheads: Vec<f64> = pairs
        .iter()
        .map(|p| (p.checkpoint_s / p.none_s - 1.0) * 100.0)
        .collect();
    overheads.sort_by(|a, b| a.total_cmp(b));
    let (count, bytes) = pairs.iter().fold((0u64, 0u64), |(c, b), p| {
        (c + p.checkpoints, b + p.checkpoint_bytes)
    });
    let report = FtReport {
        peers,
        overhead_pct_median: overheads[overheads.len() / 2],
        overhead_pct_min: overheads[0],
        overhead_pct_max: overheads[overheads.len() - 1],
        checkpoint_bytes_mean: bytes as f64 / count.max(1) as f64,
        pairs,
    };
    if json {
        outln!("{}", serde_json::to_string_pretty(&report)?)?;
    } else {
        outln!(
            "checkpoint (TTC 1 s, copies:2, home of up to 3) against none on {} peers, {} pairs: overhead median {:+.1}% (min {:+.1}%, max {:+.1}%); mean checkpoint {:.0} bytes",
            report.peers,
            report.pairs.len(),
            report.overhead_pct_median,
            report.overhead_pct_min,
            report.overhead_pct_max,
            report.checkpoint_bytes_mean
        )?;
    }
    Ok(())
}
