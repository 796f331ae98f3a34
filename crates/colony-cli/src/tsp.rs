//! `colony run tsp FILE.tsp --islands N`: the island genetic algorithm of
//! seed 004 §5 on distributed objects. Each island is a `tsp-island`
//! object living at the home of its GUID; this peer drives them all in
//! parallel with short evolve calls, and the islands send their best tours
//! round a ring by calling each other. Under `pml` an island whose peer
//! dies is replayed by its home's next member and the run carries on.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Parser;
use colony::{CallError, ColonyError, FaultTolerance, ObjectProtocol, Peer, Ref};
use colony_apps::tsp::{
    tour_length, Instance, IslandObject, IslandParams, IslandReply, IslandRequest, SplitMix64,
    MAX_GENERATIONS_PER_CALL,
};
use tokio::task::JoinSet;

/// The application name `colony run` takes for this path.
pub(crate) const TSP: &str = "tsp";

/// The most islands a run creates.
const MAX_ISLANDS: usize = 256;

/// Evolve calls kept in flight per island, so that an island never waits
/// for this peer between two calls.
const CALLS_IN_FLIGHT_PER_ISLAND: usize = 2;

/// How long after `--seconds` a run may still take to collect its islands'
/// tours (calls stalled by a dead peer are given up then).
const GRACE: Duration = Duration::from_secs(20);

/// The longest one call is waited for: a peer's death is detected and its
/// objects recovered well within it.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// Pause before a call that failed is tried again.
const RETRY_PAUSE: Duration = Duration::from_millis(200);

/// The arguments after `colony run tsp`.
#[derive(Parser, Debug)]
#[command(
    name = "colony run tsp",
    about = "Solve a TSPLIB instance by an island genetic algorithm, one \
             distributed object per island"
)]
pub(crate) struct TspArgs {
    /// The TSPLIB file (TYPE: TSP, EDGE_WEIGHT_TYPE: EUC_2D).
    file: PathBuf,
    /// Islands (objects) to create, placed over the network's peers.
    #[arg(long, default_value_t = 4, value_parser = islands)]
    islands: usize,
    /// Stop after this many seconds, unless the known optimum is reached
    /// first (best tour so far is printed either way).
    #[arg(long, default_value_t = 60.0, value_parser = crate::positive_seconds)]
    seconds: f64,
    /// Seed of the run: each island's seed is drawn from it.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Generations an island breeds per call: an island takes immigrants
    /// only between calls, so short calls let migrants in sooner.
    #[arg(long, default_value_t = 100, value_parser = generations)]
    generations_per_call: u32,
    /// Evolve calls between two migrations of an island's best tours to
    /// the next island of the ring (0: never).
    #[arg(long, default_value_t = 5)]
    migrate_every: u32,
    /// Keep evolving for all of --seconds even once the known optimum is
    /// reached (to measure calls per second, or to watch recovery).
    #[arg(long)]
    keep_going: bool,
    /// Print one JSON object {best, optimum, gap_percent, tour, islands,
    /// elapsed_s, calls, ...} instead of text.
    #[arg(long)]
    json: bool,
}

fn islands(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(n) if (1..=MAX_ISLANDS).contains(&n) => Ok(n),
        _ => Err(format!(
            "must be a number of islands from 1 to {MAX_ISLANDS}"
        )),
    }
}

fn generations(text: &str) -> Result<u32, String> {
    match text.parse::<u32>() {
        Ok(n) if (1..=MAX_GENERATIONS_PER_CALL).contains(&n) => Ok(n),
        _ => Err(format!(
            "must be a number of generations from 1 to {MAX_GENERATIONS_PER_CALL}"
        )),
    }
}

/// A run checked before this peer joins anything: its arguments and the
/// instance, read.
pub(crate) struct TspRun {
    args: TspArgs,
    instance: Instance,
}

impl TspRun {
    /// Parses `tsp`'s arguments and reads the instance; an error says what
    /// is wrong with either. `--help` is an error carrying the help text.
    pub(crate) fn prepare(app_args: &[String]) -> Result<TspRun> {
        let args = TspArgs::try_parse_from(
            std::iter::once("tsp".to_string()).chain(app_args.iter().cloned()),
        )
        .map_err(|e| anyhow::anyhow!("{}", e.render().to_string().trim_end()))?;
        let instance = Instance::load(&args.file)
            .with_context(|| format!("cannot use {} as a TSP instance", args.file.display()))?;
        if instance.dimension() > colony_apps::tsp::MAX_OBJECT_CITIES {
            bail!(
                "{} has {} cities; an island object takes at most {}",
                args.file.display(),
                instance.dimension(),
                colony_apps::tsp::MAX_OBJECT_CITIES
            );
        }
        Ok(TspRun { args, instance })
    }
}

/// The fault tolerance of the islands: the descriptor's virtual node's
/// (`none`, `checkpoint`, `pml` or `cic`, with its TTC), else pessimistic message
/// logging, so that an island survives its peer's crash with nothing lost.
pub(crate) fn object_protocol(ft: Option<&FaultTolerance>) -> ObjectProtocol {
    ft.map_or(ObjectProtocol::Pml { ttc_ms: 2_000 }, ObjectProtocol::from)
}

/// What a finished run found.
struct Outcome {
    tour: Vec<u32>,
    length: u64,
    elapsed: Duration,
    /// When the best length was first reported.
    best_at: Duration,
    /// Generations each island bred (`None`: it did not answer at the end).
    generations: Vec<Option<u64>>,
    calls: u64,
    failed_calls: u64,
    lost_islands: usize,
    reached_optimum: bool,
}

/// Runs the islands on the network `peer` has joined, prints the best
/// tour, and deletes the islands.
pub(crate) async fn run(peer: &Peer, run: TspRun, protocol: ObjectProtocol) -> Result<()> {
    let TspRun { args, instance } = run;
    let started = Instant::now();
    let islands = create_islands(peer, &instance, &args, protocol).await?;
    eprintln!(
        "tsp: {} islands of {} ({} cities) running under {protocol:?}",
        islands.len(),
        display_name(&instance, &args),
        instance.dimension(),
    );
    for (index, island) in islands.iter().enumerate() {
        eprintln!("tsp: island {index} is {}", island.uri());
    }
    let outcome = drive(peer, &instance, &args, &islands, protocol, started).await;
    // Delete the islands whatever happened: they would evolve no more, but
    // would take room at their homes.
    let mut deletions = JoinSet::new();
    for island in &islands {
        let (peer, uri) = (peer.clone(), island.uri().clone());
        deletions.spawn(async move { (peer.delete_object(&uri).await, uri) });
    }
    while let Some(joined) = deletions.join_next().await {
        if let Ok((Err(error), uri)) = joined {
            eprintln!("tsp: island {uri} not deleted: {error}");
        }
    }
    print(&instance, &args, &outcome?)
}

fn display_name(instance: &Instance, args: &TspArgs) -> String {
    if instance.name().is_empty() {
        args.file.display().to_string()
    } else {
        instance.name().to_string()
    }
}

/// Creates the islands (in parallel) and tells each its successor in the
/// ring.
async fn create_islands(
    peer: &Peer,
    instance: &Instance,
    args: &TspArgs,
    protocol: ObjectProtocol,
) -> Result<Vec<Ref<IslandObject>>> {
    let mut seeds = SplitMix64::new(args.seed);
    let mut creations = JoinSet::new();
    for index in 0..args.islands {
        let params = IslandParams {
            migrate_every: args.migrate_every,
            ..IslandParams::new(instance, index as u32, seeds.next_u64())
        };
        let peer = peer.clone();
        creations.spawn(async move {
            let created = peer.create_object::<IslandObject>(&params, protocol).await;
            (index, created)
        });
    }
    let mut islands = BTreeMap::new();
    while let Some(joined) = creations.join_next().await {
        let (index, created) = joined.context("an island's creation stopped")?;
        let island = created.with_context(|| format!("island {index} was not created"))?;
        islands.insert(index, island);
    }
    let islands: Vec<Ref<IslandObject>> = islands.into_values().collect();
    if islands.len() > 1 {
        for (index, island) in islands.iter().enumerate() {
            let next = islands[(index + 1) % islands.len()].clone();
            let request = IslandRequest::SetNeighbours(vec![next]);
            match peer
                .call_object_within(island, &request, CALL_TIMEOUT)
                .await
            {
                Ok(IslandReply::NeighboursSet) => {}
                Ok(other) => bail!("island {index} answered {other:?} to its neighbours"),
                Err(error) => bail!("island {index} was not told its neighbour: {error}"),
            }
        }
    }
    Ok(islands)
}

/// Whether a failed call is worth trying again: the island may come back
/// (its peer died and its home is recovering it, or the call timed out),
/// or it restarted from a checkpoint (`checkpoint`, `cic`) and did not run
/// the call. Outside `none` an island outlives its peer, so "no such
/// object" only says that nobody answered for it in time: its primary
/// died and the home had not taken over yet.
fn transient(error: &ColonyError, protocol: ObjectProtocol) -> bool {
    match error {
        ColonyError::Object(CallError::DeadlinePassed { .. } | CallError::RolledBack { .. }) => {
            true
        }
        ColonyError::Object(CallError::NoSuchObject(_)) => protocol != ObjectProtocol::None,
        _ => false,
    }
}

/// Drives every island with evolve calls, several in flight each, until
/// `--seconds` pass or the known optimum is reached; then asks each for its
/// best tour.
async fn drive(
    peer: &Peer,
    instance: &Instance,
    args: &TspArgs,
    islands: &[Ref<IslandObject>],
    protocol: ObjectProtocol,
    started: Instant,
) -> Result<Outcome> {
    let optimum = instance.known_optimum();
    let stop_at = started + Duration::from_secs_f64(args.seconds);
    let give_up_at = stop_at + GRACE;
    let evolve = IslandRequest::Evolve {
        generations: args.generations_per_call,
    };
    let mut calls: JoinSet<(usize, Result<IslandReply, ColonyError>)> = JoinSet::new();
    let spawn = |calls: &mut JoinSet<_>, index: usize, pause: Duration| {
        let (peer, island, request) = (peer.clone(), islands[index].clone(), evolve.clone());
        let timeout = CALL_TIMEOUT.min(give_up_at.saturating_duration_since(Instant::now()));
        calls.spawn(async move {
            tokio::time::sleep(pause).await;
            let reply = peer.call_object_within(&island, &request, timeout).await;
            (index, reply)
        });
    };
    for index in 0..islands.len() {
        for _ in 0..CALLS_IN_FLIGHT_PER_ISLAND {
            spawn(&mut calls, index, Duration::ZERO);
        }
    }
    let mut best = u64::MAX;
    let mut answered = 0u64;
    let mut failed = 0u64;
    let mut lost = vec![false; islands.len()];
    let mut done = false;
    let mut best_at = Duration::ZERO;
    while let Some(joined) = calls.join_next().await {
        let (index, reply) = joined.context("an island call stopped")?;
        match reply {
            Ok(IslandReply::Progress(progress)) => {
                answered += 1;
                if progress.best_length < best {
                    best = progress.best_length;
                    best_at = started.elapsed();
                    eprintln!(
                        "tsp: {:.2} s: best {best} (island {index}, generation {})",
                        started.elapsed().as_secs_f64(),
                        progress.generation
                    );
                }
                done = optimum.is_some_and(|optimum| best <= optimum) && !args.keep_going;
                if !done && Instant::now() < stop_at {
                    spawn(&mut calls, index, Duration::ZERO);
                }
            }
            Ok(other) => bail!("island {index} answered {other:?} to an evolve call"),
            Err(error) => {
                failed += 1;
                eprintln!("tsp: a call to island {index} failed: {error}");
                if matches!(error, ColonyError::Stopped) {
                    bail!("this peer stopped");
                }
                if transient(&error, protocol) && Instant::now() < give_up_at {
                    if !done && Instant::now() < stop_at {
                        spawn(&mut calls, index, RETRY_PAUSE);
                    }
                } else if !transient(&error, protocol) {
                    lost[index] = true;
                    if lost.iter().all(|&lost| lost) {
                        bail!("every island is lost; the last failure: {error}");
                    }
                }
            }
        }
        if done || Instant::now() >= give_up_at {
            // Calls still out are answered to nobody.
            calls.abort_all();
            break;
        }
    }
    let elapsed = started.elapsed();
    let (tour, length, generations) =
        collect_best(peer, instance, islands, protocol, &lost, give_up_at).await?;
    Ok(Outcome {
        best_at,
        generations,
        reached_optimum: optimum.is_some_and(|optimum| length <= optimum),
        tour,
        length,
        elapsed,
        calls: answered,
        failed_calls: failed,
        lost_islands: lost.iter().filter(|&&lost| lost).count(),
    })
}

/// The shortest tour of the islands still there, checked against the
/// instance: asked of each, again and again while one fails transiently,
/// until `give_up_at`.
async fn collect_best(
    peer: &Peer,
    instance: &Instance,
    islands: &[Ref<IslandObject>],
    protocol: ObjectProtocol,
    lost: &[bool],
    give_up_at: Instant,
) -> Result<(Vec<u32>, u64, Vec<Option<u64>>)> {
    let mut generations = vec![None; islands.len()];
    let mut asks = JoinSet::new();
    for (index, island) in islands.iter().enumerate() {
        if lost[index] {
            continue;
        }
        let (peer, island) = (peer.clone(), island.clone());
        asks.spawn(async move {
            loop {
                let timeout =
                    CALL_TIMEOUT.min(give_up_at.saturating_duration_since(Instant::now()));
                let reply = peer
                    .call_object_within(&island, &IslandRequest::Best, timeout)
                    .await;
                match reply {
                    Err(error) if transient(&error, protocol) && Instant::now() < give_up_at => {
                        tokio::time::sleep(RETRY_PAUSE).await;
                    }
                    other => return (index, other),
                }
            }
        });
    }
    let mut best: Option<(Vec<u32>, u64)> = None;
    let mut last_error = None;
    while let Some(joined) = asks.join_next().await {
        let (index, reply) = joined.context("an island call stopped")?;
        match reply {
            Ok(IslandReply::Best { tour, progress }) => {
                generations[index] = Some(progress.generation);
                let length = tour_length(instance, &tour)
                    .with_context(|| format!("island {index} answered a tour that is not one"))?;
                if best.as_ref().is_none_or(|(_, shortest)| length < *shortest) {
                    best = Some((tour, length));
                }
            }
            Ok(other) => bail!("island {index} answered {other:?} when asked its best tour"),
            Err(error) => {
                eprintln!("tsp: island {index} did not give its best tour: {error}");
                last_error = Some(error);
            }
        }
    }
    match (best, last_error) {
        (Some((tour, length)), _) => Ok((tour, length, generations)),
        (None, Some(error)) => bail!("no island gave its best tour: {error}"),
        (None, None) => bail!("no island left to ask for its best tour"),
    }
}

fn print(instance: &Instance, args: &TspArgs, outcome: &Outcome) -> Result<()> {
    let optimum = instance.known_optimum();
    let gap =
        optimum.map(|optimum| (outcome.length as f64 - optimum as f64) / optimum as f64 * 100.0);
    // TSPLIB numbers cities from 1.
    let tour: Vec<u32> = outcome.tour.iter().map(|&city| city + 1).collect();
    if args.json {
        let object = serde_json::json!({
            "instance": instance.name(),
            "best": outcome.length,
            "optimum": optimum,
            "gap_percent": gap,
            "reached_optimum": outcome.reached_optimum,
            "tour": tour,
            "islands": args.islands,
            "lost_islands": outcome.lost_islands,
            "elapsed_s": outcome.elapsed.as_secs_f64(),
            "best_found_s": outcome.best_at.as_secs_f64(),
            "generations": outcome.generations,
            "calls": outcome.calls,
            "failed_calls": outcome.failed_calls,
        });
        outln!("{object}")?;
        return Ok(());
    }
    let against = match (optimum, gap) {
        (Some(optimum), Some(gap)) => format!(" (optimum {optimum}, gap {gap:.2} %)"),
        _ => String::new(),
    };
    outln!(
        "{}: best tour {}{against}, found after {:.2} s",
        display_name(instance, args),
        outcome.length,
        outcome.best_at.as_secs_f64()
    )?;
    outln!(
        "{} islands ({} lost) · {:.2} s · {} evolve calls ({} failed)",
        args.islands,
        outcome.lost_islands,
        outcome.elapsed.as_secs_f64(),
        outcome.calls,
        outcome.failed_calls
    )?;
    let cities: Vec<String> = tour.iter().map(u32::to_string).collect();
    outln!("tour: {}", cities.join(" "))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use colony::{Guid, ObjectUri};

    /// A replicated island not found in time is tried again; under `none`
    /// it died with its peer.
    #[test]
    fn an_island_not_found_in_time_is_lost_only_under_none() {
        let uri = ObjectUri::new("net", Guid(7)).expect("a valid uri");
        let not_found = ColonyError::Object(CallError::NoSuchObject(uri));
        let late = ColonyError::Object(CallError::DeadlinePassed { after_ms: 10 });
        let pml = ObjectProtocol::Pml { ttc_ms: 1000 };
        let cic = ObjectProtocol::Cic { ttc_ms: 1000 };
        assert!(transient(&not_found, pml));
        assert!(transient(&not_found, cic));
        assert!(!transient(&not_found, ObjectProtocol::None));
        assert!(transient(&late, ObjectProtocol::None));
        let handler = ColonyError::Object(CallError::Handler("boom".into()));
        assert!(!transient(&handler, cic));
    }
}
