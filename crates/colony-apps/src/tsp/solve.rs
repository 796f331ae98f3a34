//! The sequential island model: every island in one thread, round-robin,
//! with ring migration — the baseline for the distributed islands.

use std::time::{Duration, Instant};

use super::instance::Instance;
use super::island::{Island, IslandConfig, IslandError};
use super::rng::SplitMix64;

/// The most islands [`solve_islands_sequential`] runs.
pub const MAX_ISLANDS: usize = 1_024;

/// When [`solve_islands_sequential`] stops (besides reaching its target).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Budget {
    /// After each island has bred this many generations.
    Generations(u64),
    /// After this much wall-clock time (checked after each round).
    Time(Duration),
}

/// The settings of a sequential island run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SequentialSettings {
    /// Number of islands (1 to [`MAX_ISLANDS`]).
    pub islands: usize,
    /// When to stop.
    pub budget: Budget,
    /// Seed of the whole run; each island's seed is drawn from it.
    pub seed: u64,
    /// Generations between two migrations (0: never migrate).
    pub migration_interval: u32,
    /// Tours each island sends its successor in the ring per migration.
    pub migrants: usize,
    /// Stop as soon as a tour this short is found (e.g. the known optimum).
    pub target_length: Option<u64>,
    /// How each island breeds.
    pub island: IslandConfig,
}

impl SequentialSettings {
    /// Settings with `islands` islands, the given budget and seed, a
    /// migration of 2 tours every 10 generations, no target and default
    /// islands.
    pub fn new(islands: usize, budget: Budget, seed: u64) -> Self {
        Self {
            islands,
            budget,
            seed,
            migration_interval: 10,
            migrants: 2,
            target_length: None,
            island: IslandConfig::default(),
        }
    }
}

/// A new best tour found during a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Improvement {
    /// Time since the run started (islands' creation included).
    pub elapsed: Duration,
    /// Generations each island had bred.
    pub generation: u64,
    /// The new best length.
    pub length: u64,
}

/// The result of [`solve_islands_sequential`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SolveOutcome {
    /// The shortest tour found.
    pub best_tour: Vec<u32>,
    /// Its length.
    pub best_length: u64,
    /// Generations each island bred.
    pub generations: u64,
    /// Wall-clock time of the run.
    pub elapsed: Duration,
    /// Whether the target length was reached.
    pub reached_target: bool,
    /// Every new best, in order (the first is the best initial tour).
    pub improvements: Vec<Improvement>,
}

/// Runs `settings.islands` islands of `instance` in this thread, one
/// generation each in turn, with ring migration (island `i` sends its best
/// tours to island `i + 1`) every `migration_interval` generations, until
/// the budget is spent or the target reached.
pub fn solve_islands_sequential(
    instance: &Instance,
    settings: &SequentialSettings,
) -> Result<SolveOutcome, IslandError> {
    if !(1..=MAX_ISLANDS).contains(&settings.islands) {
        return Err(IslandError::InvalidConfig("islands must be 1..=1024"));
    }
    let started = Instant::now();
    let mut seeds = SplitMix64::new(settings.seed);
    let mut islands = (0..settings.islands)
        .map(|_| Island::new(instance, seeds.next_u64(), settings.island.clone()))
        .collect::<Result<Vec<_>, _>>()?;

    let mut improvements = Vec::new();
    let (mut best_tour, mut best_length) = best_of(&islands);
    improvements.push(Improvement {
        elapsed: started.elapsed(),
        generation: 0,
        length: best_length,
    });
    let reached = |length: u64| {
        settings
            .target_length
            .is_some_and(|target| length <= target)
    };
    let mut generations = 0u64;

    while !reached(best_length) {
        let spent = match settings.budget {
            Budget::Generations(limit) => generations >= limit,
            Budget::Time(limit) => started.elapsed() >= limit,
        };
        if spent {
            break;
        }
        for island in &mut islands {
            island.evolve(instance, 1)?;
        }
        generations += 1;
        if settings.migration_interval > 0
            && generations.is_multiple_of(u64::from(settings.migration_interval))
            && islands.len() > 1
        {
            let outgoing: Vec<Vec<Vec<u32>>> = islands
                .iter()
                .map(|island| island.migrants(settings.migrants))
                .collect();
            let count = islands.len();
            for (from, tours) in outgoing.into_iter().enumerate() {
                islands[(from + 1) % count].accept(instance, tours)?;
            }
        }
        let (tour, length) = best_of(&islands);
        if length < best_length {
            best_tour = tour;
            best_length = length;
            improvements.push(Improvement {
                elapsed: started.elapsed(),
                generation: generations,
                length,
            });
        }
    }

    Ok(SolveOutcome {
        best_tour,
        best_length,
        generations,
        elapsed: started.elapsed(),
        reached_target: reached(best_length),
        improvements,
    })
}

/// The shortest tour over all islands (the first island's among equals).
fn best_of(islands: &[Island]) -> (Vec<u32>, u64) {
    let mut best: Option<(&[u32], u64)> = None;
    for island in islands {
        let (tour, length) = island.best();
        if best.is_none_or(|(_, best_length)| length < best_length) {
            best = Some((tour, length));
        }
    }
    best.map(|(tour, length)| (tour.to_vec(), length))
        .unwrap_or_default()
}
