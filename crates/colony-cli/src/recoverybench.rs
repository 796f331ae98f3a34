//! `colony bench recovery`: real `colony peer` processes on loopback; the
//! peer serving a counter object is SIGKILLed, again and again, and the
//! time from the kill to the first call that succeeds is measured, beside
//! the latency of a call with every peer up, measured in the same run.
//! Every increment acknowledged must be in the counter once.
//!
//! With `--protocol cic` the object is one of a ring of TSP islands that
//! send each other migrants: a crash rolls back every island whose state
//! depends on what the dead one lost, and the bench also times the whole
//! application's rollback (from the kill to the last island restored, as
//! the surviving peers count them).

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;
use colony::{MemberState, ObjectSummary};
use serde::Serialize;

use crate::client::ApiClient;
use crate::objects::create_through;
use crate::watch::{spawn_peer, wait_for, DemoPeer};
use crate::{at_least_one, median};

/// Longest a recovery may take before the bench fails.
const RECOVERY_DEADLINE: Duration = Duration::from_secs(30);

#[derive(Args, Debug)]
pub(crate) struct RecoveryBenchArgs {
    /// Peer processes (the object's home is 3 of them).
    #[arg(long, default_value_t = 4, value_parser = at_least_one)]
    peers: usize,
    /// Kills, each of the peer serving the object at the time.
    #[arg(long, default_value_t = 5, value_parser = at_least_one)]
    kills: usize,
    /// The object's fault tolerance: `pml` or `checkpoint` (a counter), or
    /// `cic` (a ring of `--islands` TSP islands).
    #[arg(long, default_value = "pml")]
    protocol: String,
    /// With `--protocol cic`: islands in the application.
    #[arg(long, default_value_t = 4, value_parser = at_least_one)]
    islands: usize,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

/// What the bench measured, in milliseconds.
#[derive(Serialize)]
struct RecoveryReport {
    protocol: String,
    peers: usize,
    /// A call with every peer up (the baseline): median and highest.
    call_p50_ms: f64,
    call_max_ms: f64,
    /// SIGKILL of the serving peer → first successful call, per kill.
    recoveries_ms: Vec<f64>,
    recovery_p50_ms: f64,
    recovery_min_ms: f64,
    recovery_max_ms: f64,
    /// Increments acknowledged, calls that failed while the object
    /// recovered (each may or may not have run), and the counter's final
    /// value: under `pml` from `acknowledged` to `acknowledged + failed`.
    acknowledged: u64,
    failed: u64,
    final_value: i64,
}

pub(crate) async fn run(args: RecoveryBenchArgs) -> Result<()> {
    if !matches!(args.protocol.as_str(), "pml" | "checkpoint" | "cic") {
        bail!(
            "--protocol must be pml, checkpoint or cic (a none object dies with its peer), got {}",
            args.protocol
        );
    }
    if args.peers < 4 {
        bail!(
            "--peers must be at least 4: a home of 3 and a peer to call from, got {}",
            args.peers
        );
    }
    let root = std::env::temp_dir().join(format!("colony-recovery-{}", std::process::id()));
    if args.protocol == "cic" {
        let result = run_cic_in(&root, &args).await;
        let _ = std::fs::remove_dir_all(&root);
        return print_cic(&result?, args.json);
    }
    let result = run_in(&root, &args).await;
    let _ = std::fs::remove_dir_all(&root);
    let report = result?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "{} peers, a {} counter: call p50 {:.1} ms (max {:.1}) with every peer up",
            report.peers, report.protocol, report.call_p50_ms, report.call_max_ms
        );
        println!(
            "SIGKILL of the serving peer → first successful call: p50 {:.0} ms, min {:.0}, max {:.0} over {} kills ({})",
            report.recovery_p50_ms,
            report.recovery_min_ms,
            report.recovery_max_ms,
            report.recoveries_ms.len(),
            report
                .recoveries_ms
                .iter()
                .map(|ms| format!("{ms:.0}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        println!(
            "{} increments acknowledged ({} failed during recoveries), counter at {}",
            report.acknowledged, report.failed, report.final_value
        );
    }
    let (low, high) = (report.acknowledged, report.acknowledged + report.failed);
    let exact = u64::try_from(report.final_value).is_ok_and(|v| (low..=high).contains(&v));
    if args.protocol == "pml" && !exact {
        bail!(
            "the counter holds {} after {low} acknowledged increments and {} failed calls: not exactly once",
            report.final_value,
            report.failed
        );
    }
    Ok(())
}

async fn run_in(root: &Path, args: &RecoveryBenchArgs) -> Result<RecoveryReport> {
    let mut peers = start_peers(root, args.peers).await?;
    let body = serde_json::json!({
        "type": "counter",
        "params": 0,
        "fault_tolerance": { "protocol": args.protocol, "ttc_s": 600 },
    });
    let uri = create_through(&api(&peers[0])?, &body).await?;
    let (mut acknowledged, mut failed) = (0u64, 0u64);
    let mut calls = Vec::new();
    let caller = caller_of(&peers, &uri).await?;
    for _ in 0..50 {
        let started = Instant::now();
        add_one(caller, &uri, Duration::from_secs(10)).await?;
        calls.push(ms(started.elapsed()));
        acknowledged += 1;
    }
    let mut recoveries = Vec::new();
    for kill in 0..args.kills {
        let holder = holder_of(&peers, &uri).await?;
        let mut victim = peers.remove(holder);
        // Any other peer calls: none of them serves the object.
        let caller = &peers[0];
        if let Some(mut child) = victim.child.take() {
            // SIGKILL: no goodbye, as in a crash.
            child.kill()?;
            let _ = child.wait();
        }
        let killed = Instant::now();
        loop {
            match add_one(caller, &uri, Duration::from_secs(2)).await {
                Ok(_) => break,
                Err(error) if killed.elapsed() > RECOVERY_DEADLINE => {
                    bail!(
                        "kill {}: no call succeeded within {RECOVERY_DEADLINE:?} of the kill: {error:#}",
                        kill + 1
                    );
                }
                Err(_) => {
                    failed += 1;
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
        }
        recoveries.push(ms(killed.elapsed()));
        acknowledged += 1;
        eprintln!(
            "kill {}: first call succeeded {:.0} ms after it",
            kill + 1,
            ms(killed.elapsed())
        );
        // A new peer takes the place of the killed one, so that the home
        // can have three members again before the next kill.
        add_peer(root, &mut peers, args.peers + kill).await?;
        // Calls keep going while the home takes the newcomer in.
        for _ in 0..20 {
            let caller = caller_of(&peers, &uri).await?;
            add_one(caller, &uri, Duration::from_secs(10)).await?;
            acknowledged += 1;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let final_value = get(&peers[0], &uri).await?;
    calls.sort_by(f64::total_cmp);
    let mut sorted = recoveries.clone();
    sorted.sort_by(f64::total_cmp);
    Ok(RecoveryReport {
        protocol: args.protocol.clone(),
        peers: args.peers,
        call_p50_ms: median(&calls),
        call_max_ms: calls.last().copied().unwrap_or(0.0),
        recovery_p50_ms: median(&sorted),
        recovery_min_ms: sorted.first().copied().unwrap_or(0.0),
        recovery_max_ms: sorted.last().copied().unwrap_or(0.0),
        recoveries_ms: recoveries,
        acknowledged,
        failed,
        final_value,
    })
}

/// `count` peer processes on loopback, all alive in each other's view.
async fn start_peers(root: &Path, count: usize) -> Result<Vec<DemoPeer>> {
    eprintln!(
        "starting {count} peer processes on loopback (data in {})…",
        root.display()
    );
    let mut peers = vec![spawn_peer(&root.join("peer0"), None)?];
    let seed = peers[0].info.listen_addrs[0].to_string();
    for i in 1..count {
        peers.push(spawn_peer(&root.join(format!("peer{i}")), Some(&seed))?);
    }
    wait_for(&peers, None, MemberState::Alive, Duration::from_secs(30)).await?;
    Ok(peers)
}

/// A new peer process (number `number`, for its directory) that the
/// others see alive, added to `peers`: it takes a killed one's place.
async fn add_peer(root: &Path, peers: &mut Vec<DemoPeer>, number: usize) -> Result<()> {
    let seed = peers[0].info.listen_addrs[0].to_string();
    let fresh = spawn_peer(&root.join(format!("peer{number}")), Some(&seed))?;
    let id = fresh.info.peer_id.clone();
    wait_for(
        peers,
        Some(&id),
        MemberState::Alive,
        Duration::from_secs(30),
    )
    .await?;
    peers.push(fresh);
    Ok(())
}

fn api(peer: &DemoPeer) -> Result<ApiClient> {
    ApiClient::for_peer(&peer.dir, &peer.info)
}

/// Index of the peer that lists `uri` among the objects it serves.
async fn holder_of(peers: &[DemoPeer], uri: &str) -> Result<usize> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut last_error = None;
        for (i, peer) in peers.iter().enumerate() {
            match api(peer)?
                .get_json::<Vec<ObjectSummary>>("/v1/objects")
                .await
            {
                Ok(listed) if listed.iter().any(|o| o.uri == uri) => return Ok(i),
                Ok(_) => {}
                Err(error) => last_error = Some(error),
            }
        }
        if Instant::now() > deadline {
            match last_error {
                Some(error) => bail!("no peer lists {uri} as served there: {error:#}"),
                None => bail!("no peer lists {uri} as served there"),
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A peer that does not serve `uri`: every call it makes crosses the
/// network.
async fn caller_of<'a>(peers: &'a [DemoPeer], uri: &str) -> Result<&'a DemoPeer> {
    let holder = holder_of(peers, uri).await?;
    peers
        .iter()
        .enumerate()
        .find(|(i, _)| *i != holder)
        .map(|(_, p)| p)
        .context("no peer to call from")
}

/// One increment of the counter at `uri`, called from `peer`.
async fn add_one(peer: &DemoPeer, uri: &str, timeout: Duration) -> Result<i64> {
    call(peer, uri, serde_json::json!({ "add": 1 }), timeout).await
}

async fn get(peer: &DemoPeer, uri: &str) -> Result<i64> {
    call(peer, uri, serde_json::json!("get"), Duration::from_secs(10)).await
}

async fn call(
    peer: &DemoPeer,
    uri: &str,
    request: serde_json::Value,
    timeout: Duration,
) -> Result<i64> {
    let reply = call_value(peer, uri, request, timeout).await?;
    reply
        .as_i64()
        .with_context(|| format!("the answer is not a number: {reply}"))
}

/// The reply of one call of `request` to `uri` from `peer`, as JSON.
async fn call_value(
    peer: &DemoPeer,
    uri: &str,
    request: serde_json::Value,
    timeout: Duration,
) -> Result<serde_json::Value> {
    let body = serde_json::json!({
        "calls": [{ "uri": uri, "request": request }],
        "timeout_s": timeout.as_secs().max(1),
    });
    let answer = api(peer)?
        .json(
            reqwest::Method::POST,
            "/v1/calls",
            Some(&body),
            Some(timeout + Duration::from_secs(5)),
        )
        .await?;
    let reply = &answer["replies"][0];
    match reply.get("ok") {
        Some(ok) => Ok(ok.clone()),
        None => bail!("the call failed: {reply}"),
    }
}

fn ms(elapsed: Duration) -> f64 {
    elapsed.as_secs_f64() * 1000.0
}

/// What the bench measured under `cic`, in milliseconds.
#[derive(Serialize)]
struct CicRecoveryReport {
    protocol: String,
    peers: usize,
    islands: usize,
    /// An evolve call with every peer up (the baseline): median and highest.
    call_p50_ms: f64,
    call_max_ms: f64,
    /// SIGKILL of the peer serving an island → first successful call to it.
    recoveries_ms: Vec<f64>,
    recovery_p50_ms: f64,
    /// SIGKILL → the last island restored by the rollback it started, as
    /// the surviving peers count them (0 islands: the dead one had served
    /// nothing since its last checkpoint, so nothing rolled back).
    rollbacks_ms: Vec<f64>,
    rollback_p50_ms: f64,
    rollback_max_ms: f64,
    /// Islands restored by each kill's rollback.
    islands_rolled_back: Vec<u64>,
}

/// Generations an island breeds per evolve call: a few milliseconds.
const GENERATIONS_PER_CALL: u32 = 5;

/// How long after the first successful call the surviving peers are
/// watched for islands still rolling back.
const ROLLBACK_WATCH: Duration = Duration::from_secs(2);

fn evolve() -> serde_json::Value {
    serde_json::json!({ "Evolve": { "generations": GENERATIONS_PER_CALL } })
}

/// Creates a ring of islands on a random instance of 40 cities.
async fn create_ring(peer: &DemoPeer, islands: usize) -> Result<Vec<String>> {
    use colony_apps::tsp::{Instance, IslandParams, SplitMix64};
    let mut rng = SplitMix64::new(0x5eed);
    let cities: Vec<[f64; 2]> = (0..40)
        .map(|_| {
            [
                (rng.next_u64() % 1000) as f64,
                (rng.next_u64() % 1000) as f64,
            ]
        })
        .collect();
    let instance = Instance::from_coordinates("bench40", cities)?;
    let mut uris = Vec::new();
    for index in 0..islands {
        let params = IslandParams {
            migrate_every: 2,
            ..IslandParams::new(&instance, index as u32, rng.next_u64())
        };
        let body = serde_json::json!({
            "type": "tsp-island",
            "params": params,
            "fault_tolerance": { "protocol": "cic", "ttc_s": 1 },
        });
        uris.push(create_through(&api(peer)?, &body).await?);
    }
    for (index, uri) in uris.iter().enumerate() {
        let next = &uris[(index + 1) % uris.len()];
        if next != uri {
            let next: colony_core::object::ObjectUri = next.parse()?;
            let request = serde_json::json!({ "SetNeighbours": [next] });
            call_value(peer, uri, request, Duration::from_secs(10)).await?;
        }
    }
    Ok(uris)
}

/// Evolve calls to the island at `uri`, served by `peers[holder]`, until
/// one is served after the island's last checkpoint (a checkpoint falls
/// due every second, and may land between a call and the next step).
async fn call_after_checkpoint(peers: &[DemoPeer], holder: usize, uri: &str) -> Result<()> {
    let holder = api(&peers[holder])?;
    for _ in 0..10 {
        let called = Instant::now();
        call_value(&peers[0], uri, evolve(), Duration::from_secs(10)).await?;
        let listed = holder.get_json::<Vec<ObjectSummary>>("/v1/objects").await?;
        let island = listed
            .iter()
            .find(|o| o.uri == uri)
            .with_context(|| format!("the island {uri} moved away from its peer"))?;
        if Duration::from_millis(island.checkpoint_age_ms) > called.elapsed() {
            return Ok(());
        }
    }
    bail!("every call to the island {uri} was checkpointed before the next step")
}

/// One evolve call to the island at `uri`, called again if the island
/// answers that it rolled back (the caller, not an object, is told once
/// that its earlier calls were lost).
async fn evolve_on_restored(peer: &DemoPeer, uri: &str) -> Result<serde_json::Value> {
    let mut tries = 0;
    loop {
        tries += 1;
        match call_value(peer, uri, evolve(), Duration::from_secs(10)).await {
            Err(error) if tries < 3 && format!("{error:#}").contains("\"rolled_back\"") => {}
            answer => return answer,
        }
    }
}

/// The islands restored by rollbacks, summed over `peers`' counters.
async fn rolled_back(peers: &[ApiClient]) -> u64 {
    let mut total = 0;
    for peer in peers {
        if let Ok(status) = peer.get_json::<colony::StatusInfo>("/v1/status").await {
            total += status.objects.rolled_back;
        }
    }
    total
}

async fn run_cic_in(root: &Path, args: &RecoveryBenchArgs) -> Result<CicRecoveryReport> {
    let mut peers = start_peers(root, args.peers).await?;
    let islands = create_ring(&peers[0], args.islands).await?;
    let mut calls = Vec::new();
    for _ in 0..10 {
        for uri in &islands {
            let started = Instant::now();
            call_value(&peers[0], uri, evolve(), Duration::from_secs(10)).await?;
            calls.push(ms(started.elapsed()));
        }
    }
    let (mut recoveries, mut rollbacks, mut restored) = (Vec::new(), Vec::new(), Vec::new());
    for kill in 0..args.kills {
        let victim = &islands[kill % islands.len()];
        let holder = holder_of(&peers, victim).await?;
        let survivors: Vec<ApiClient> = peers
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != holder)
            .map(|(_, peer)| api(peer))
            .collect::<Result<_>>()?;
        let before = rolled_back(&survivors).await;
        // Its last call is served after its last checkpoint: lost with it.
        call_after_checkpoint(&peers, holder, victim).await?;
        let mut dead = peers.remove(holder);
        if let Some(mut child) = dead.child.take() {
            child.kill()?;
            let _ = child.wait();
        }
        let killed = Instant::now();
        // Every change of the survivors' count, with when it was seen,
        // until a while after the island answers again.
        let (answered, mut answered_rx) = tokio::sync::watch::channel(false);
        let watcher = tokio::spawn(async move {
            let mut last = (before, Duration::ZERO);
            let mut until = killed + RECOVERY_DEADLINE;
            while Instant::now() < until {
                let now = rolled_back(&survivors).await;
                if now != last.0 {
                    last = (now, killed.elapsed());
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
                if answered_rx.has_changed().unwrap_or(false) {
                    answered_rx.mark_unchanged();
                    until = Instant::now() + ROLLBACK_WATCH;
                }
            }
            (last.0.saturating_sub(before), last.1)
        });
        loop {
            match call_value(&peers[0], victim, evolve(), Duration::from_secs(2)).await {
                Ok(_) => break,
                Err(error) if killed.elapsed() > RECOVERY_DEADLINE => {
                    watcher.abort();
                    bail!(
                        "kill {}: no call to the island succeeded within {RECOVERY_DEADLINE:?} of the kill: {error:#}",
                        kill + 1
                    );
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
            }
        }
        recoveries.push(ms(killed.elapsed()));
        let _ = answered.send(true);
        let (count, at) = watcher.await.context("the rollback watcher stopped")?;
        rollbacks.push(if count == 0 { 0.0 } else { ms(at) });
        restored.push(count);
        eprintln!(
            "kill {}: first call {:.0} ms after it; {count} islands rolled back, the last {:.0} ms after it",
            kill + 1,
            recoveries[kill],
            rollbacks[kill]
        );
        add_peer(root, &mut peers, args.peers + kill).await?;
        // The islands breed and migrate again before the next kill.
        for _ in 0..4 {
            for uri in &islands {
                evolve_on_restored(&peers[0], uri).await?;
            }
        }
    }
    for uri in &islands {
        let best = serde_json::json!("Best");
        let best = call_value(&peers[0], uri, best, Duration::from_secs(10)).await?;
        if best["Best"]["tour"]
            .as_array()
            .is_none_or(|t| t.len() != 40)
        {
            bail!("island {uri} answers no whole tour after the kills: {best}");
        }
    }
    calls.sort_by(f64::total_cmp);
    let mut sorted_recoveries = recoveries.clone();
    sorted_recoveries.sort_by(f64::total_cmp);
    let mut sorted_rollbacks = rollbacks.clone();
    sorted_rollbacks.sort_by(f64::total_cmp);
    Ok(CicRecoveryReport {
        protocol: args.protocol.clone(),
        peers: args.peers,
        islands: islands.len(),
        call_p50_ms: median(&calls),
        call_max_ms: calls.last().copied().unwrap_or(0.0),
        recovery_p50_ms: median(&sorted_recoveries),
        recoveries_ms: recoveries,
        rollback_p50_ms: median(&sorted_rollbacks),
        rollback_max_ms: sorted_rollbacks.last().copied().unwrap_or(0.0),
        rollbacks_ms: rollbacks,
        islands_rolled_back: restored,
    })
}

fn print_cic(report: &CicRecoveryReport, json: bool) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(report)?);
        return Ok(());
    }
    let list = |values: &[f64]| {
        values
            .iter()
            .map(|ms| format!("{ms:.0}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    println!(
        "{} peers, a cic ring of {} TSP islands: evolve call p50 {:.1} ms (max {:.1}) with every peer up",
        report.peers, report.islands, report.call_p50_ms, report.call_max_ms
    );
    println!(
        "SIGKILL of an island's peer → first successful call to it: p50 {:.0} ms over {} kills ({})",
        report.recovery_p50_ms,
        report.recoveries_ms.len(),
        list(&report.recoveries_ms)
    );
    println!(
        "SIGKILL → the whole application rolled back: p50 {:.0} ms, max {:.0} ({}); islands restored per kill: {:?}",
        report.rollback_p50_ms,
        report.rollback_max_ms,
        list(&report.rollbacks_ms),
        report.islands_rolled_back
    );
    Ok(())
}
