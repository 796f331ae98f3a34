//! One island of the genetic algorithm: a population of locally optimal
//! tours evolving by order crossover, double-bridge mutation and 2-opt +
//! Or-opt, deterministically from its own serialisable state.

use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::instance::Instance;
use super::rng::SplitMix64;
use super::tour::{double_bridge, length_of_valid_tour, validate_permutation, LocalSearch, Moves};

/// The largest population an island may have.
pub const MAX_POPULATION: usize = 1_000;

/// The most children an island may breed per generation.
pub const MAX_OFFSPRING_PER_GENERATION: usize = 1_000;

/// The largest tournament when choosing parents.
pub const MAX_TOURNAMENT_SIZE: usize = 64;

/// How an island breeds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IslandConfig {
    /// Tours in the population (1 to [`MAX_POPULATION`]).
    pub population_size: usize,
    /// Children bred per generation (1 to
    /// [`MAX_OFFSPRING_PER_GENERATION`]).
    pub offspring_per_generation: usize,
    /// Tours drawn for each parent; the shortest wins (1 to
    /// [`MAX_TOURNAMENT_SIZE`]).
    pub tournament_size: usize,
    /// Chance, in thousandths, that a child gets a double-bridge kick
    /// before its local search (at most 1000).
    pub mutation_per_mille: u32,
}

impl Default for IslandConfig {
    fn default() -> Self {
        Self {
            population_size: 30,
            offspring_per_generation: 10,
            tournament_size: 3,
            mutation_per_mille: 300,
        }
    }
}

impl IslandConfig {
    /// Checks every field is within its bounds.
    pub fn validate(&self) -> Result<(), IslandError> {
        if !(1..=MAX_POPULATION).contains(&self.population_size) {
            return Err(IslandError::InvalidConfig(
                "population_size must be 1..=1000",
            ));
        }
        if !(1..=MAX_OFFSPRING_PER_GENERATION).contains(&self.offspring_per_generation) {
            return Err(IslandError::InvalidConfig(
                "offspring_per_generation must be 1..=1000",
            ));
        }
        if !(1..=MAX_TOURNAMENT_SIZE).contains(&self.tournament_size) {
            return Err(IslandError::InvalidConfig("tournament_size must be 1..=64"));
        }
        if self.mutation_per_mille > 1000 {
            return Err(IslandError::InvalidConfig(
                "mutation_per_mille must be at most 1000",
            ));
        }
        Ok(())
    }
}

/// Why an island cannot be made, restored or run.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum IslandError {
    /// The island's tours are of another instance.
    #[error("the island's tours have {island} cities, the instance {instance}")]
    CityCountMismatch {
        /// Cities in the island's tours.
        island: usize,
        /// Cities in the instance.
        instance: usize,
    },
    /// A configuration field is out of bounds.
    #[error("invalid island configuration: {0}")]
    InvalidConfig(&'static str),
    /// A serialised island does not hold together.
    #[error("invalid island state: {0}")]
    InvalidState(String),
}

/// A tour of the population with its length.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Member {
    tour: Vec<u32>,
    length: u64,
}

/// What [`Island::accept`] did with the tours it was given.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MigrationReport {
    /// Tours that replaced a worse member.
    pub accepted: usize,
    /// Tours refused as not a permutation of the instance's cities.
    pub invalid: usize,
    /// Valid tours refused because a member already has their length.
    pub duplicates: usize,
    /// Valid tours refused because they are no shorter than the worst
    /// member.
    pub not_better: usize,
}

/// An island: a population of tours of one instance, a random generator
/// and a generation counter — all its state, serialisable, so that the
/// same state given the same calls gives the same results anywhere.
///
/// The instance is not part of the state: each call is given it, and
/// refuses one of another size. A deserialised island is checked (every
/// tour a permutation of the same cities, a valid configuration) and
/// recomputes its tours' lengths before it uses them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "IslandState", into = "IslandState")]
pub struct Island {
    config: IslandConfig,
    city_count: usize,
    rng: SplitMix64,
    generation: u64,
    population: Vec<Member>,
}

/// The serialised form of an [`Island`], checked before it becomes one.
#[derive(Clone, Serialize, Deserialize)]
struct IslandState {
    config: IslandConfig,
    city_count: u64,
    rng: SplitMix64,
    generation: u64,
    population: Vec<Member>,
}

impl From<Island> for IslandState {
    fn from(island: Island) -> Self {
        Self {
            config: island.config,
            city_count: island.city_count as u64,
            rng: island.rng,
            generation: island.generation,
            population: island.population,
        }
    }
}

impl TryFrom<IslandState> for Island {
    type Error = IslandError;

    fn try_from(state: IslandState) -> Result<Self, Self::Error> {
        state.config.validate()?;
        let city_count = usize::try_from(state.city_count)
            .ok()
            .filter(|count| (super::MIN_CITIES..=super::MAX_CITIES).contains(count))
            .ok_or_else(|| {
                IslandError::InvalidState(format!("{} cities is out of range", state.city_count))
            })?;
        if state.population.is_empty() || state.population.len() > MAX_POPULATION {
            return Err(IslandError::InvalidState(format!(
                "a population of {} tours",
                state.population.len()
            )));
        }
        for (index, member) in state.population.iter().enumerate() {
            validate_permutation(&member.tour, city_count).map_err(|fault| {
                IslandError::InvalidState(format!("member {index} is not a tour: {fault}"))
            })?;
        }
        Ok(Island {
            config: state.config,
            city_count,
            rng: state.rng,
            generation: state.generation,
            population: state.population,
        })
    }
}

impl Island {
    /// A new island of `config.population_size` random tours of
    /// `instance`, each improved by 2-opt + Or-opt, with its generator
    /// seeded by `seed`.
    pub fn new(
        instance: &Instance,
        seed: u64,
        config: IslandConfig,
    ) -> Result<Island, IslandError> {
        config.validate()?;
        let mut rng = SplitMix64::new(seed);
        let mut search = LocalSearch::default();
        let city_count = instance.dimension();
        let mut population: Vec<Member> = Vec::with_capacity(config.population_size);
        while population.len() < config.population_size {
            // A few tries for a length not yet in the population; tiny
            // instances have fewer distinct lengths than members.
            let mut member = None;
            for _ in 0..3 {
                let mut tour: Vec<u32> = (0..city_count as u32).collect();
                rng.shuffle(&mut tour);
                search.run(instance, &mut tour, Moves::BOTH, None);
                let length = length_of_valid_tour(instance, &tour);
                let fresh = !population.iter().any(|other| other.length == length);
                member = Some(Member { tour, length });
                if fresh {
                    break;
                }
            }
            population.extend(member);
        }
        Ok(Island {
            config,
            city_count,
            rng,
            generation: 0,
            population,
        })
    }

    /// Breeds `generations` generations: each child comes from two parents
    /// chosen by tournament, by order crossover (OX), sometimes kicked by a
    /// double bridge, then improved by 2-opt + Or-opt; it replaces the
    /// worst member if it is shorter and no member has its length.
    pub fn evolve(&mut self, instance: &Instance, generations: u32) -> Result<(), IslandError> {
        self.check_instance(instance)?;
        self.refresh_lengths(instance);
        let mut search = LocalSearch::default();
        let mut child = Vec::with_capacity(self.city_count);
        let mut taken = vec![false; self.city_count];
        for _ in 0..generations {
            for _ in 0..self.config.offspring_per_generation {
                self.breed(instance, &mut search, &mut child, &mut taken);
                let length = length_of_valid_tour(instance, &child);
                self.offer(&child, length);
            }
            self.generation += 1;
        }
        Ok(())
    }

    /// Writes one improved child into `child`.
    fn breed(
        &mut self,
        instance: &Instance,
        search: &mut LocalSearch,
        child: &mut Vec<u32>,
        taken: &mut [bool],
    ) {
        let mother = self.tournament();
        let father = self.tournament();
        let mutate = self.rng.chance_per_mille(self.config.mutation_per_mille);
        let mutate_only =
            mother == father || self.population[mother].length == self.population[father].length;
        if mutate_only {
            // Crossing a tour with itself gives it back: kick it instead.
            child.clear();
            child.extend_from_slice(&self.population[mother].tour);
        } else {
            order_crossover(
                &self.population[mother].tour,
                &self.population[father].tour,
                &mut self.rng,
                child,
                taken,
            );
        }
        let crossed = !mutate_only;
        let kicked_cities = if mutate || mutate_only {
            double_bridge(child, &mut self.rng)
        } else {
            None
        };
        match kicked_cities {
            // A kicked locally optimal tour only needs looking at around the
            // kick.
            Some(cities) if !crossed => search.run(instance, child, Moves::BOTH, Some(&cities)),
            _ => search.run(instance, child, Moves::BOTH, None),
        }
    }

    /// The index of the shortest of `tournament_size` members drawn at
    /// random (the first drawn wins ties).
    fn tournament(&mut self) -> usize {
        let mut winner = self.rng.below(self.population.len());
        for _ in 1..self.config.tournament_size {
            let contender = self.rng.below(self.population.len());
            if self.population[contender].length < self.population[winner].length {
                winner = contender;
            }
        }
        winner
    }

    /// Puts a valid tour in place of the worst member if it is shorter and
    /// its length is new to the population; says which it was.
    fn offer(&mut self, tour: &[u32], length: u64) -> Offer {
        if self.population.iter().any(|member| member.length == length) {
            return Offer::Duplicate;
        }
        let worst = self.worst_index();
        let worst_member = &mut self.population[worst];
        if length >= worst_member.length {
            return Offer::NotBetter;
        }
        worst_member.tour.clear();
        worst_member.tour.extend_from_slice(tour);
        worst_member.length = length;
        Offer::Accepted
    }

    /// The index of the longest member (the last one among equals).
    fn worst_index(&self) -> usize {
        let mut worst = 0;
        for (index, member) in self.population.iter().enumerate() {
            if member.length >= self.population[worst].length {
                worst = index;
            }
        }
        worst
    }

    /// Members' indices from shortest to longest (by index among equals).
    fn ranking(&self) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.population.len()).collect();
        order.sort_by_key(|&index| (self.population[index].length, index));
        order
    }

    /// The shortest tour of the population and its length.
    pub fn best(&self) -> (&[u32], u64) {
        let mut best = &self.population[0];
        for member in &self.population[1..] {
            if member.length < best.length {
                best = member;
            }
        }
        (&best.tour, best.length)
    }

    /// Copies of the `count` shortest tours, shortest first (all of them if
    /// the population is smaller).
    pub fn migrants(&self, count: usize) -> Vec<Vec<u32>> {
        self.ranking()
            .into_iter()
            .take(count)
            .map(|index| self.population[index].tour.clone())
            .collect()
    }

    /// Takes in tours from elsewhere: each that is a permutation of the
    /// instance's cities, shorter than the worst member and of a length no
    /// member has, replaces the worst member. Invalid tours are counted and
    /// dropped.
    pub fn accept(
        &mut self,
        instance: &Instance,
        tours: Vec<Vec<u32>>,
    ) -> Result<MigrationReport, IslandError> {
        self.check_instance(instance)?;
        self.refresh_lengths(instance);
        let mut report = MigrationReport::default();
        for tour in tours {
            if validate_permutation(&tour, self.city_count).is_err() {
                report.invalid += 1;
                continue;
            }
            let length = length_of_valid_tour(instance, &tour);
            match self.offer(&tour, length) {
                Offer::Accepted => report.accepted += 1,
                Offer::Duplicate => report.duplicates += 1,
                Offer::NotBetter => report.not_better += 1,
            }
        }
        Ok(report)
    }

    /// Generations bred so far.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The island's configuration.
    pub fn config(&self) -> &IslandConfig {
        &self.config
    }

    /// The number of cities of the island's tours.
    pub fn city_count(&self) -> usize {
        self.city_count
    }

    /// The lengths of the population's tours, in population order.
    pub fn lengths(&self) -> Vec<u64> {
        self.population.iter().map(|member| member.length).collect()
    }

    fn check_instance(&self, instance: &Instance) -> Result<(), IslandError> {
        if instance.dimension() != self.city_count {
            return Err(IslandError::CityCountMismatch {
                island: self.city_count,
                instance: instance.dimension(),
            });
        }
        Ok(())
    }

    /// Recomputes the members' lengths: a restored state's are not trusted.
    fn refresh_lengths(&mut self, instance: &Instance) {
        for member in &mut self.population {
            member.length = length_of_valid_tour(instance, &member.tour);
        }
    }
}

/// What became of a tour offered to the population.
enum Offer {
    Accepted,
    Duplicate,
    NotBetter,
}

/// Order crossover (OX): the child keeps a random stretch of `mother` in
/// place and fills the other places with the remaining cities in the order
/// they follow that stretch in `father`.
fn order_crossover(
    mother: &[u32],
    father: &[u32],
    rng: &mut SplitMix64,
    child: &mut Vec<u32>,
    taken: &mut [bool],
) {
    let dimension = mother.len();
    let mut first = rng.below(dimension);
    let mut last = rng.below(dimension);
    if first > last {
        std::mem::swap(&mut first, &mut last);
    }
    child.clear();
    child.resize(dimension, 0);
    taken.fill(false);
    for position in first..=last {
        child[position] = mother[position];
        taken[mother[position] as usize] = true;
    }
    let mut write = (last + 1) % dimension;
    for step in 0..dimension {
        let city = father[(last + 1 + step) % dimension];
        if !taken[city as usize] {
            child[write] = city;
            write = (write + 1) % dimension;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_crossover_gives_a_permutation_keeping_a_stretch() {
        let mother: Vec<u32> = (0..20).collect();
        let father: Vec<u32> = (0..20).rev().collect();
        let mut rng = SplitMix64::new(9);
        let mut child = Vec::new();
        let mut taken = vec![false; 20];
        for _ in 0..200 {
            order_crossover(&mother, &father, &mut rng, &mut child, &mut taken);
            validate_permutation(&child, 20).unwrap();
        }
    }

    #[test]
    fn invalid_config_is_refused() {
        let config = IslandConfig {
            population_size: 0,
            ..IslandConfig::default()
        };
        assert!(matches!(
            config.validate(),
            Err(IslandError::InvalidConfig(_))
        ));
    }
}
