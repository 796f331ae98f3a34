//! The symmetric travelling salesman problem by an island genetic
//! algorithm — its sequential core, and its islands as distributed objects.
//!
//! - [`Instance`]: a TSPLIB `EUC_2D` instance, parsed with clear errors,
//!   with its distance matrix and nearest-neighbour lists.
//! - [`tour_length`], [`validate_tour`], [`two_opt`], [`or_opt`],
//!   [`local_search`]: tours and their improvement by 2-opt and Or-opt with
//!   neighbour lists and don't-look bits.
//! - [`Island`]: a population evolving by order crossover, double-bridge
//!   kicks and local search. Its whole state, random generator included,
//!   serialises: the same state given the same calls gives the same tours.
//! - [`IslandObject`]: an island as a distributed object (`tsp-island`),
//!   evolving by bounded calls and sending its best tours to its
//!   neighbour islands by calling them.
//! - [`solve_islands_sequential`]: several islands round-robin in one
//!   thread with ring migration, the baseline for the distributed version.
//!
//! Cities are numbered from 0 (TSPLIB node `k` is city `k - 1`) and a tour
//! is a permutation of them as `u32`.

mod instance;
mod island;
mod object;
mod rng;
mod solve;
mod tour;

pub use instance::{
    Instance, TspError, MAX_CITIES, MAX_COORDINATE, MAX_FILE_BYTES, MIN_CITIES, NEIGHBOUR_COUNT,
};
pub use island::{
    Island, IslandConfig, IslandError, MigrationReport, MAX_OFFSPRING_PER_GENERATION,
    MAX_POPULATION, MAX_TOURNAMENT_SIZE,
};
pub use object::{
    IslandObject, IslandParams, IslandProgress, IslandReply, IslandRequest,
    MAX_GENERATIONS_PER_CALL, MAX_MIGRANTS, MAX_NEIGHBOURS, MAX_OBJECT_CITIES,
};
pub use rng::SplitMix64;
pub use solve::{
    solve_islands_sequential, Budget, Improvement, SequentialSettings, SolveOutcome, MAX_ISLANDS,
};
pub use tour::{local_search, or_opt, tour_length, two_opt, validate_tour, TourError};
