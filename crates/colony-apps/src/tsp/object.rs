//! An island as a distributed object (G2:P2P's `TSP.Island`, seed 004 §5):
//! each island lives at the home of its GUID, evolves a bounded number of
//! generations per call, and every few calls sends its best tours to its
//! neighbour islands by calling their [`IslandRequest::Immigrate`] itself.
//!
//! The object holds the instance's coordinates (a few bytes per city), not
//! its distance matrix: the matrix is rebuilt from them where the object
//! runs, and is not part of its checkpoints. Like every object it is
//! piecewise deterministic: its randomness is the island's seeded
//! generator, so replaying the same calls from a checkpoint gives the same
//! state and the same outgoing calls.

use colony_core::object::{decode_reply, ActiveObject, CallError, CallId, ObjectContext, Ref};
use serde::{Deserialize, Serialize};

use super::instance::Instance;
use super::island::{Island, IslandConfig};
use super::tour::validate_tour;

/// The most cities an island object takes: its peer holds a distance matrix
/// of `n² × 4` bytes (4 MB here) and its creation runs `population_size`
/// local searches inline, on the peer's driver.
pub const MAX_OBJECT_CITIES: usize = 1_000;

/// The most generations one [`IslandRequest::Evolve`] breeds: the island
/// serves nothing else while it breeds, and a call must end well within
/// its deadline.
pub const MAX_GENERATIONS_PER_CALL: u32 = 1_000;

/// The most tours one [`IslandRequest::Immigrate`] carries, and the most
/// an island sends per migration.
pub const MAX_MIGRANTS: usize = 16;

/// The most neighbours an island has.
pub const MAX_NEIGHBOURS: usize = 16;

/// What an island object is created from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct IslandParams {
    /// The instance's name (it picks the known optimum, if any).
    pub name: String,
    /// The cities, city `i` at index `i` (3 to [`MAX_OBJECT_CITIES`]).
    pub coordinates: Vec<[f64; 2]>,
    /// How the island breeds.
    pub config: IslandConfig,
    /// The seed of its generator.
    pub seed: u64,
    /// Its number among the run's islands (for reports).
    pub index: u32,
    /// Evolve calls between two migrations to the neighbours (0: never).
    pub migrate_every: u32,
    /// Tours sent to each neighbour per migration (1 to [`MAX_MIGRANTS`]).
    pub migrants: u32,
}

impl IslandParams {
    /// Parameters for island `index` of `instance`: default breeding, a
    /// migration of 2 tours every 5 evolve calls.
    pub fn new(instance: &Instance, index: u32, seed: u64) -> IslandParams {
        IslandParams {
            name: instance.name().to_string(),
            coordinates: instance.coordinates().to_vec(),
            config: IslandConfig::default(),
            seed,
            index,
            migrate_every: 5,
            migrants: 2,
        }
    }
}

/// What an island object is asked.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum IslandRequest {
    /// Breed this many generations (1 to [`MAX_GENERATIONS_PER_CALL`]),
    /// then migrate if it is time.
    Evolve {
        /// Generations to breed.
        generations: u32,
    },
    /// Take these tours in (each must be a tour of the instance, or the
    /// call fails and the island is left as it was).
    Immigrate {
        /// The sending island's index.
        from: u32,
        /// The tours, at most [`MAX_MIGRANTS`].
        tours: Vec<Vec<u32>>,
    },
    /// The best tour and the island's progress.
    Best,
    /// The islands this one sends its migrants to (replacing any before;
    /// at most [`MAX_NEIGHBOURS`], not itself).
    SetNeighbours(Vec<Ref<IslandObject>>),
}

/// Where an island stands.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IslandProgress {
    /// The island's index.
    pub index: u32,
    /// The length of its best tour.
    pub best_length: u64,
    /// Generations bred.
    pub generation: u64,
    /// Evolve calls served.
    pub evolve_calls: u64,
    /// Migrations sent to neighbours (one per neighbour and migration).
    pub migrations_sent: u64,
    /// Migrations a neighbour did not take (its call failed).
    pub migrations_failed: u64,
    /// Tours from other islands that entered the population.
    pub immigrants_accepted: u64,
}

/// What an island object answers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum IslandReply {
    /// To [`IslandRequest::Evolve`].
    Progress(IslandProgress),
    /// To [`IslandRequest::Immigrate`]: how many tours entered the
    /// population, and how many were refused as no better or of a length
    /// it holds already.
    Immigrated {
        /// Tours that replaced a worse member.
        accepted: u32,
        /// Tours refused.
        refused: u32,
    },
    /// To [`IslandRequest::Best`].
    Best {
        /// The shortest tour of the population.
        tour: Vec<u32>,
        /// The island's progress (its `best_length` is the tour's length).
        progress: IslandProgress,
    },
    /// To [`IslandRequest::SetNeighbours`].
    NeighboursSet,
}

/// One island of the genetic algorithm as an object. See the module docs.
#[derive(Serialize, Deserialize)]
pub struct IslandObject {
    name: String,
    coordinates: Vec<[f64; 2]>,
    island: Island,
    neighbours: Vec<Ref<IslandObject>>,
    migrate_every: u32,
    migrants: u32,
    progress: IslandProgress,
    /// Built from `coordinates` where the object runs; never serialised.
    #[serde(skip)]
    instance: Option<Instance>,
}

impl IslandObject {
    /// The instance, built from the coordinates on first use after a
    /// creation or a restore.
    fn instance(&mut self) -> Result<&Instance, String> {
        if self.instance.is_none() {
            let instance = Instance::from_coordinates(self.name.clone(), self.coordinates.clone())
                .map_err(|e| format!("the island's cities are not an instance: {e}"))?;
            self.instance = Some(instance);
        }
        self.instance
            .as_ref()
            .ok_or_else(|| "no instance".to_string())
    }

    /// The island's progress, its best length up to date.
    fn progress(&self) -> IslandProgress {
        IslandProgress {
            best_length: self.island.best().1,
            generation: self.island.generation(),
            ..self.progress
        }
    }

    fn evolve(
        &mut self,
        ctx: &mut ObjectContext<'_>,
        generations: u32,
    ) -> Result<IslandReply, String> {
        if !(1..=MAX_GENERATIONS_PER_CALL).contains(&generations) {
            return Err(format!(
                "generations must be 1..={MAX_GENERATIONS_PER_CALL}, not {generations}"
            ));
        }
        self.instance()?;
        let (Some(instance), island) = (&self.instance, &mut self.island) else {
            return Err("no instance".to_string());
        };
        island
            .evolve(instance, generations)
            .map_err(|e| e.to_string())?;
        self.progress.evolve_calls += 1;
        let due = self.migrate_every > 0
            && self
                .progress
                .evolve_calls
                .is_multiple_of(u64::from(self.migrate_every));
        if due && !self.neighbours.is_empty() {
            let tours = self.island.migrants(self.migrants as usize);
            for neighbour in &self.neighbours {
                let request = IslandRequest::Immigrate {
                    from: self.progress.index,
                    tours: tours.clone(),
                };
                ctx.call(neighbour, &request);
                self.progress.migrations_sent += 1;
            }
        }
        Ok(IslandReply::Progress(self.progress()))
    }

    fn immigrate(&mut self, from: u32, tours: Vec<Vec<u32>>) -> Result<IslandReply, String> {
        if tours.len() > MAX_MIGRANTS {
            return Err(format!(
                "{} tours from island {from}: at most {MAX_MIGRANTS} migrate at once",
                tours.len()
            ));
        }
        let instance = self.instance()?;
        // Every tour is checked before any enters: a bad call changes
        // nothing.
        for (number, tour) in tours.iter().enumerate() {
            validate_tour(instance, tour)
                .map_err(|e| format!("tour {number} from island {from} is not a tour: {e}"))?;
        }
        let count = tours.len() as u32;
        let (Some(instance), island) = (&self.instance, &mut self.island) else {
            return Err("no instance".to_string());
        };
        let report = island.accept(instance, tours).map_err(|e| e.to_string())?;
        let accepted = report.accepted as u32;
        self.progress.immigrants_accepted += u64::from(accepted);
        Ok(IslandReply::Immigrated {
            accepted,
            refused: count - accepted,
        })
    }

    fn set_neighbours(
        &mut self,
        ctx: &ObjectContext<'_>,
        neighbours: Vec<Ref<IslandObject>>,
    ) -> Result<IslandReply, String> {
        if neighbours.len() > MAX_NEIGHBOURS {
            return Err(format!(
                "{} neighbours: an island has at most {MAX_NEIGHBOURS}",
                neighbours.len()
            ));
        }
        if neighbours.iter().any(|n| n.uri() == ctx.me()) {
            return Err("an island cannot be its own neighbour".to_string());
        }
        self.neighbours = neighbours;
        Ok(IslandReply::NeighboursSet)
    }
}

impl ActiveObject for IslandObject {
    type Params = IslandParams;
    type Request = IslandRequest;
    type Reply = IslandReply;

    const TYPE: &'static str = "tsp-island";

    fn create(_ctx: &mut ObjectContext<'_>, params: IslandParams) -> Result<Self, String> {
        if params.coordinates.len() > MAX_OBJECT_CITIES {
            return Err(format!(
                "{} cities: an island object takes at most {MAX_OBJECT_CITIES}",
                params.coordinates.len()
            ));
        }
        if !(1..=MAX_MIGRANTS).contains(&(params.migrants as usize)) {
            return Err(format!(
                "migrants must be 1..={MAX_MIGRANTS}, not {}",
                params.migrants
            ));
        }
        let instance = Instance::from_coordinates(params.name.clone(), params.coordinates)
            .map_err(|e| e.to_string())?;
        let island =
            Island::new(&instance, params.seed, params.config).map_err(|e| e.to_string())?;
        Ok(IslandObject {
            name: params.name,
            coordinates: instance.coordinates().to_vec(),
            island,
            neighbours: Vec::new(),
            migrate_every: params.migrate_every,
            migrants: params.migrants,
            progress: IslandProgress {
                index: params.index,
                ..IslandProgress::default()
            },
            instance: Some(instance),
        })
    }

    fn handle(
        &mut self,
        ctx: &mut ObjectContext<'_>,
        request: IslandRequest,
    ) -> Result<IslandReply, String> {
        match request {
            IslandRequest::Evolve { generations } => self.evolve(ctx, generations),
            IslandRequest::Immigrate { from, tours } => self.immigrate(from, tours),
            IslandRequest::Best => Ok(IslandReply::Best {
                tour: self.island.best().0.to_vec(),
                progress: self.progress(),
            }),
            IslandRequest::SetNeighbours(neighbours) => self.set_neighbours(ctx, neighbours),
        }
    }

    /// A migration's answer: counted if it failed (the neighbour refused
    /// the tours, was deleted or lost); the island carries on either way.
    fn on_reply(
        &mut self,
        _ctx: &mut ObjectContext<'_>,
        _call: CallId,
        reply: Result<Vec<u8>, CallError>,
    ) {
        let failed = match reply {
            Ok(bytes) => !matches!(
                decode_reply::<IslandObject>(&bytes),
                Ok(IslandReply::Immigrated { .. })
            ),
            Err(_) => true,
        };
        if failed {
            self.progress.migrations_failed += 1;
        }
    }
}
