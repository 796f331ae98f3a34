//! `colony demo`: the main job on an embedded local network — a flow-shop
//! instance solved to proven optimality by several in-process peers that
//! split the search among themselves, with a live line per peer.

use std::time::Instant;

use anyhow::{bail, Result};
use colony::{JobInfo, JobState, LocalNetwork};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

/// Runs the demo.
pub async fn run(peers: usize, instance: &str, cores_per_peer: u32) -> Result<()> {
    if !(1..=16).contains(&peers) {
        bail!("--peers must be between 1 and 16, got {peers}");
    }
    if cores_per_peer == 0 {
        bail!("--cores-per-peer must be at least 1");
    }
    // Check the instance before starting anything.
    colony_apps::flowshop::instance(instance)
        .map_err(colony_core::divisible::AppError::BadParams)?;
    outln!(
        "Starting an embedded network of {peers} peers ({cores_per_peer} core each) on loopback…"
    )?;
    let network = LocalNetwork::start(peers, move |_, config| {
        config.apps = colony_apps::examples();
        config.cores_offered = Some(cores_per_peer);
    })
    .await?;
    let outcome = solve(&network, instance).await;
    network.shutdown().await;
    outcome
}

async fn solve(network: &LocalNetwork, instance: &str) -> Result<()> {
    let submitter = &network.peers()[0];
    let started = Instant::now();
    let mut handle = submitter
        .submit_job("flowshop", &[instance.to_string()])
        .await?;
    outln!("Submitted flow-shop {instance} as job {}", handle.id())?;

    let bars = MultiProgress::new();
    let style = ProgressStyle::with_template("{prefix:>12} {msg}")
        .unwrap_or_else(|_| ProgressStyle::default_bar());
    let header = bars.add(ProgressBar::new_spinner().with_style(style.clone()));
    header.set_prefix("job");
    let lines: Vec<(String, ProgressBar)> = network
        .peers()
        .iter()
        .map(|peer| {
            let id = peer.peer_id().to_string();
            let bar = bars.add(ProgressBar::new_spinner().with_style(style.clone()));
            bar.set_prefix(format!("peer …{}", &id[id.len() - 6..]));
            (id, bar)
        })
        .collect();
    let view = loop {
        let Some(view) = handle.changed().await? else {
            continue;
        };
        let info = JobInfo::from_view(&view, submitter.apps());
        let best = info
            .shared
            .get("makespan")
            .map(|m| m.to_string())
            .unwrap_or_else(|| "-".into());
        header.set_message(format!(
            "best makespan {best} · units {}/{} · steals {} · nodes {} · {:.1} s",
            info.units_done,
            info.units,
            info.steals,
            info.work,
            started.elapsed().as_secs_f64()
        ));
        for (id, bar) in &lines {
            let c = info.contributions.iter().find(|c| &c.peer_id == id);
            bar.set_message(match c {
                Some(c) => format!(
                    "units done {:>4} · running {} · nodes {:>12} · gave away {}",
                    c.units_done, c.units_running, c.work, c.donated
                ),
                None => "waiting for work".to_string(),
            });
        }
        if !matches!(view.state, JobState::Running) {
            break view;
        }
    };
    let info = JobInfo::from_view(&view, submitter.apps());
    bars.clear().ok();
    match (&view.state, info.summary) {
        (JobState::Done { .. }, Some(summary)) => {
            outln!("{summary}")?;
            let nodes_per_s = info.work as f64 / info.elapsed_s.max(1e-9);
            outln!(
                "Solved in {:.2} s by {} peers: {} units, {} steals, {} nodes ({:.0} nodes/s)",
                info.elapsed_s,
                info.peers_used,
                info.units,
                info.steals,
                info.work,
                nodes_per_s
            )?;
            match info.verified {
                Some(true) => Ok(()),
                Some(false) => bail!("the makespan does not match the published optimum"),
                None => Ok(()),
            }
        }
        (JobState::Failed { reason }, _) => bail!("the job failed: {reason}"),
        _ => bail!("the job ended without a result"),
    }
}
