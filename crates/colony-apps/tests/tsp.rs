//! The TSP islands' sequential core: the TSPLIB parser on the shipped
//! instances and on malformed or arbitrary text, the local search on random
//! instances, an island's determinism across serialisation, migration's
//! refusal of invalid tours, and the island model reaching known optima.
//!
//! Properties run a fixed number of cases (`PROPTEST_CASES` raises them);
//! the whole file takes a few seconds in a debug build (this crate is
//! optimised even there). The `#[ignore]`d test prints release figures:
//! `cargo test --release -p colony-apps --test tsp -- --ignored --nocapture`.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use colony_apps::tsp::{
    local_search, or_opt, solve_islands_sequential, tour_length, two_opt, validate_tour, Budget,
    Instance, Island, IslandConfig, IslandError, SequentialSettings, SplitMix64, TourError,
    TspError,
};
use proptest::prelude::*;

/// The TSPLIB instances shipped with the tests.
const SHIPPED: &[&str] = &[
    "eil51", "berlin52", "st70", "eil76", "kroA100", "ch130", "a280",
];

fn data_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(format!("{name}.tsp"))
}

fn load(name: &str) -> Instance {
    Instance::load(data_path(name)).unwrap_or_else(|error| panic!("{name}: {error}"))
}

fn identity_tour(instance: &Instance) -> Vec<u32> {
    (0..instance.dimension() as u32).collect()
}

// ---------------------------------------------------------------------------
// Parser.

#[test]
fn every_shipped_instance_parses_and_round_trips() {
    for &name in SHIPPED {
        let instance = load(name);
        assert_eq!(instance.name(), name);
        let expected_dimension: usize = name
            .trim_start_matches(|character: char| character.is_ascii_alphabetic())
            .parse()
            .unwrap();
        assert_eq!(instance.dimension(), expected_dimension, "{name}");
        assert!(instance.known_optimum().is_some(), "{name}");
        let reparsed = Instance::parse(&instance.to_tsplib()).unwrap();
        assert_eq!(reparsed, instance, "{name} changed through to_tsplib");
    }
}

#[test]
fn distances_are_tsplib_nearest_integers() {
    let berlin = load("berlin52");
    // Nodes 1 (565, 575) and 2 (25, 185): √443700 = 666.11.
    assert_eq!(berlin.distance(0, 1), 666);
    assert_eq!(berlin.distance(1, 0), 666);
    assert_eq!(berlin.distance(7, 7), 0);
    // (0,0)-(1,1) is 1.414 → 1; (0,0)-(1,2) is 2.236 → 2; (0,0)-(3,3) is
    // 4.243 → 4; (0,0)-(2,3) is 3.606 → 4.
    let small = Instance::from_coordinates(
        "small",
        vec![[0.0, 0.0], [1.0, 1.0], [1.0, 2.0], [3.0, 3.0], [2.0, 3.0]],
    )
    .unwrap();
    assert_eq!(small.distance(0, 1), 1);
    assert_eq!(small.distance(0, 2), 2);
    assert_eq!(small.distance(0, 3), 4);
    assert_eq!(small.distance(0, 4), 4);
}

#[test]
fn known_optima_are_listed_by_name_and_size() {
    let expected = [
        ("eil51", 426),
        ("berlin52", 7542),
        ("st70", 675),
        ("eil76", 538),
        ("kroA100", 21282),
        ("ch130", 6110),
        ("a280", 2579),
    ];
    for (name, optimum) in expected {
        assert_eq!(load(name).known_optimum(), Some(optimum), "{name}");
    }
    let renamed =
        Instance::from_coordinates("eil51", vec![[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]]).unwrap();
    assert_eq!(renamed.known_optimum(), None, "a 3-city eil51 is not eil51");
}

#[test]
fn parser_reads_spacing_comments_and_mixed_numbers() {
    let text = "NAME : tiny\nCOMMENT : first\nCOMMENT: second\nTYPE:TSP\n\
                DIMENSION :  4\nEDGE_WEIGHT_TYPE  :  EUC_2D\nDISPLAY_DATA_TYPE: COORD_DISPLAY\n\
                NODE_COORD_SECTION\n  3 1.5e1 0\n1 0 0\n\n4 -3 4.0\n2\t10\t0\nEOF\nignored after EOF";
    let instance = Instance::parse(text).unwrap();
    assert_eq!(instance.name(), "tiny");
    assert_eq!(instance.comment(), Some("first second"));
    assert_eq!(
        instance.coordinates(),
        &[[0.0, 0.0], [10.0, 0.0], [15.0, 0.0], [-3.0, 4.0]]
    );
    assert_eq!(instance.distance(0, 3), 5);
    // No EOF line and CRLF line ends are fine too.
    let crlf = text.replace('\n', "\r\n");
    let without_eof = crlf.split("EOF").next().unwrap();
    assert_eq!(Instance::parse(without_eof).unwrap(), instance);
}

/// A well-formed header followed by `body` (the node section and after).
fn with_header(dimension: &str, body: &str) -> String {
    format!("NAME: t\nTYPE: TSP\nDIMENSION: {dimension}\nEDGE_WEIGHT_TYPE: EUC_2D\n{body}")
}

#[test]
fn malformed_files_get_specific_errors_with_lines() {
    let nodes = "NODE_COORD_SECTION\n1 0 0\n2 3 0\n3 0 4\nEOF\n";

    let error = Instance::parse(&nodes.replace("EOF", "").replace(
        "NODE_COORD_SECTION",
        "NAME: t\nTYPE: TSP\nDIMENSION: 3\nEDGE_WEIGHT_TYPE: GEO\nNODE_COORD_SECTION",
    ))
    .unwrap_err();
    assert!(
        matches!(&error, TspError::UnsupportedEdgeWeightType { line: 4, found } if found == "GEO"),
        "{error}"
    );

    let error = Instance::parse("NAME: t\nTYPE: ATSP\n").unwrap_err();
    assert!(
        matches!(error, TspError::UnsupportedType { line: 2, .. }),
        "{error}"
    );

    let error =
        Instance::parse(&format!("NAME: t\nEDGE_WEIGHT_TYPE: EUC_2D\n{nodes}")).unwrap_err();
    assert!(
        matches!(error, TspError::MissingDimension { line: 3 }),
        "{error}"
    );

    let error = Instance::parse(&with_header("three", nodes)).unwrap_err();
    assert!(
        matches!(error, TspError::InvalidDimension { line: 3, .. }),
        "{error}"
    );

    let error = Instance::parse(&with_header("-3", nodes)).unwrap_err();
    assert!(
        matches!(error, TspError::InvalidDimension { line: 3, .. }),
        "{error}"
    );

    let error = Instance::parse(&with_header("20001", nodes)).unwrap_err();
    assert!(
        matches!(
            error,
            TspError::DimensionOutOfRange {
                line: 3,
                dimension: 20001,
                ..
            }
        ),
        "{error}"
    );

    let error = Instance::parse(&with_header("99999999999999999999999", nodes)).unwrap_err();
    assert!(
        matches!(error, TspError::InvalidDimension { line: 3, .. }),
        "{error}"
    );

    let error = Instance::parse(&with_header("4", nodes)).unwrap_err();
    assert!(
        matches!(
            error,
            TspError::CoordinateCountMismatch {
                line: 8,
                expected: 4,
                found: 3
            }
        ),
        "{error}"
    );

    let error = Instance::parse(&with_header("2", nodes)).unwrap_err();
    assert!(
        matches!(error, TspError::DimensionOutOfRange { dimension: 2, .. }),
        "{error}"
    );

    let four_nodes = "NODE_COORD_SECTION\n1 0 0\n2 3 0\n3 0 4\n4 1 1\n";
    let error = Instance::parse(&with_header("3", four_nodes)).unwrap_err();
    assert!(
        matches!(
            error,
            TspError::CoordinateCountMismatch {
                line: 9,
                expected: 3,
                found: 4
            }
        ),
        "{error}"
    );

    let error = Instance::parse(&with_header("3", &nodes.replace("3 0 4", "1 0 4"))).unwrap_err();
    assert!(
        matches!(
            error,
            TspError::DuplicateNodeId {
                line: 8,
                id: 1,
                first_line: 6
            }
        ),
        "{error}"
    );

    let error = Instance::parse(&with_header("3", &nodes.replace("3 0 4", "7 0 4"))).unwrap_err();
    assert!(
        matches!(
            error,
            TspError::NodeIdOutOfRange {
                line: 8,
                id: 7,
                dimension: 3
            }
        ),
        "{error}"
    );

    for (bad, what) in [
        ("3 0 4x", "y coordinate"),
        ("3 inf 4", "x coordinate"),
        ("3 NaN 4", "x coordinate"),
        ("3.5 0 4", "node id"),
        ("3 0 --4", "y coordinate"),
    ] {
        let error = Instance::parse(&with_header("3", &nodes.replace("3 0 4", bad))).unwrap_err();
        assert!(
            matches!(&error, TspError::MalformedNumber { line: 8, what: found, .. } if *found == what),
            "{bad}: {error}"
        );
    }

    let error = Instance::parse(&with_header("3", &nodes.replace("3 0 4", "3 0"))).unwrap_err();
    assert!(
        matches!(error, TspError::MalformedNodeLine { line: 8, fields: 2 }),
        "{error}"
    );

    let error =
        Instance::parse(&with_header("3", &nodes.replace("3 0 4", "3 0 4e10"))).unwrap_err();
    assert!(
        matches!(error, TspError::CoordinateOutOfRange { line: 8, .. }),
        "{error}"
    );

    let error = Instance::parse(&with_header("3", "EOF\n")).unwrap_err();
    assert!(
        matches!(error, TspError::MissingNodeCoordSection),
        "{error}"
    );

    let error = Instance::parse(&format!("NAME: t\nDIMENSION: 3\n{nodes}")).unwrap_err();
    assert!(matches!(error, TspError::MissingEdgeWeightType), "{error}");

    let error = Instance::parse(&with_header("3", &format!("DIMENSION: 3\n{nodes}"))).unwrap_err();
    assert!(
        matches!(&error, TspError::DuplicateKeyword { line: 5, key } if key == "DIMENSION"),
        "{error}"
    );

    let error = Instance::parse(&with_header("3", &format!("garbage here\n{nodes}"))).unwrap_err();
    assert!(
        matches!(error, TspError::UnexpectedLine { line: 5, .. }),
        "{error}"
    );

    let error = Instance::load(data_path("no-such-instance")).unwrap_err();
    assert!(matches!(error, TspError::Io { .. }), "{error}");
}

/// TSPLIB-like lines, to build texts that get past the first lines.
fn tsplib_line() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("NAME: x".to_string()),
        Just("TYPE: TSP".to_string()),
        Just("EDGE_WEIGHT_TYPE : EUC_2D".to_string()),
        Just("NODE_COORD_SECTION".to_string()),
        Just("EOF".to_string()),
        (0u64..12).prop_map(|dimension| format!("DIMENSION: {dimension}")),
        (0u64..12, -5.0f64..5.0, -5i64..5).prop_map(|(id, x, y)| format!("{id} {x} {y}")),
        "[ -~]{0,20}",
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn arbitrary_text_never_panics(text in "\\PC{0,200}") {
        let _ = Instance::parse(&text);
    }

    #[test]
    fn tsplib_like_text_never_panics(lines in proptest::collection::vec(tsplib_line(), 0..20)) {
        let _ = Instance::parse(&lines.join("\n"));
    }

    #[test]
    fn mutated_files_never_panic(
        which in 0..2usize,
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0..3u8), 1..8),
    ) {
        let original = std::fs::read(data_path(["eil51", "berlin52"][which])).unwrap();
        let mut bytes = original.clone();
        for (index, byte, kind) in edits {
            if bytes.is_empty() {
                break;
            }
            let at = index.index(bytes.len());
            match kind {
                0 => bytes[at] = byte,
                1 => {
                    bytes.remove(at);
                }
                _ => bytes.insert(at, byte),
            }
        }
        if let Ok(instance) = Instance::parse(&String::from_utf8_lossy(&bytes)) {
            // Whatever parses is a consistent instance.
            let tour = identity_tour(&instance);
            prop_assert!(tour_length(&instance, &tour).is_ok());
        }
    }
}

// ---------------------------------------------------------------------------
// Tours and local search.

/// A random instance of 5 to 40 cities on a 1000 × 1000 grid, and a random
/// tour of it.
fn instance_and_tour() -> impl Strategy<Value = (Instance, Vec<u32>)> {
    (5usize..40, any::<u64>()).prop_map(|(cities, seed)| {
        let mut rng = SplitMix64::new(seed);
        let coordinates = (0..cities)
            .map(|_| [rng.below(1000) as f64, rng.below(1000) as f64])
            .collect();
        let instance = Instance::from_coordinates("random", coordinates).unwrap();
        let mut tour = identity_tour(&instance);
        rng.shuffle(&mut tour);
        (instance, tour)
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn local_search_keeps_a_valid_tour_no_longer((instance, tour) in instance_and_tour()) {
        let before = tour_length(&instance, &tour).unwrap();
        let mut after_two_opt = tour.clone();
        let two_opt_length = two_opt(&instance, &mut after_two_opt).unwrap();
        prop_assert!(validate_tour(&instance, &after_two_opt).is_ok());
        prop_assert_eq!(two_opt_length, tour_length(&instance, &after_two_opt).unwrap());
        prop_assert!(two_opt_length <= before);

        let mut after_or_opt = tour.clone();
        let or_opt_length = or_opt(&instance, &mut after_or_opt).unwrap();
        prop_assert!(validate_tour(&instance, &after_or_opt).is_ok());
        prop_assert_eq!(or_opt_length, tour_length(&instance, &after_or_opt).unwrap());
        prop_assert!(or_opt_length <= before);

        let mut after_both = tour.clone();
        let both_length = local_search(&instance, &mut after_both).unwrap();
        prop_assert!(validate_tour(&instance, &after_both).is_ok());
        prop_assert_eq!(both_length, tour_length(&instance, &after_both).unwrap());
        prop_assert!(both_length <= before);
        // A local optimum stays put.
        let mut again = after_both.clone();
        prop_assert_eq!(local_search(&instance, &mut again).unwrap(), both_length);
        prop_assert_eq!(again, after_both);
    }
}

#[test]
fn local_search_refuses_invalid_tours() {
    let instance = load("eil51");
    let mut short = vec![0, 1, 2];
    assert!(matches!(
        two_opt(&instance, &mut short),
        Err(TourError::WrongLength {
            expected: 51,
            found: 3
        })
    ));
    let mut repeated = identity_tour(&instance);
    repeated[5] = 4;
    assert_eq!(
        local_search(&instance, &mut repeated),
        Err(TourError::RepeatedCity { city: 4 })
    );
}

#[test]
fn local_search_brings_kroa100_near_its_optimum() {
    // From random tours, 2-opt + Or-opt ends on average about 4% above the
    // optimum and rarely beyond 13%.
    let instance = load("kroA100");
    let optimum = instance.known_optimum().unwrap();
    let mut rng = SplitMix64::new(1);
    let mut total = 0;
    let descents = 20;
    for _ in 0..descents {
        let mut tour = identity_tour(&instance);
        rng.shuffle(&mut tour);
        let length = local_search(&instance, &mut tour).unwrap();
        assert!(
            length * 100 < optimum * 115,
            "2-opt + Or-opt left kroA100 at {length}"
        );
        total += length;
    }
    assert!(
        total * 100 < optimum * descents * 107,
        "2-opt + Or-opt left kroA100 at {} on average",
        total / descents
    );
}

// ---------------------------------------------------------------------------
// Islands.

fn small_config() -> IslandConfig {
    IslandConfig {
        population_size: 12,
        offspring_per_generation: 6,
        ..IslandConfig::default()
    }
}

#[test]
fn an_island_restored_mid_run_evolves_identically() {
    let instance = load("berlin52");
    let mut island = Island::new(&instance, 11, small_config()).unwrap();
    island.evolve(&instance, 5).unwrap();
    let saved = postcard::to_stdvec(&island).unwrap();
    let mut restored: Island = postcard::from_bytes(&saved).unwrap();
    assert_eq!(restored, island);

    let migrants = vec![identity_tour(&instance)];
    for copy in [&mut island, &mut restored] {
        copy.evolve(&instance, 7).unwrap();
        copy.accept(&instance, migrants.clone()).unwrap();
        copy.evolve(&instance, 3).unwrap();
    }
    assert_eq!(restored.generation(), 15);
    assert_eq!(
        postcard::to_stdvec(&island).unwrap(),
        postcard::to_stdvec(&restored).unwrap()
    );
    assert_eq!(island.best(), restored.best());

    // And a fresh island of the same seed retraces the same run.
    let mut twin = Island::new(&instance, 11, small_config()).unwrap();
    twin.evolve(&instance, 12).unwrap();
    twin.accept(&instance, migrants).unwrap();
    twin.evolve(&instance, 3).unwrap();
    assert_eq!(twin, island);
}

#[test]
fn evolution_keeps_tours_valid_and_the_best_never_worsens() {
    let instance = load("st70");
    let mut island = Island::new(&instance, 3, small_config()).unwrap();
    let mut best = island.best().1;
    for _ in 0..10 {
        island.evolve(&instance, 2).unwrap();
        let (tour, length) = island.best();
        assert!(length <= best);
        assert_eq!(tour_length(&instance, tour), Ok(length));
        best = length;
        let lengths = island.lengths();
        for (index, migrant) in island.migrants(lengths.len()).iter().enumerate() {
            validate_tour(&instance, migrant).unwrap();
            if index == 0 {
                assert_eq!(tour_length(&instance, migrant), Ok(length));
            }
        }
    }
}

#[test]
fn accept_refuses_invalid_tours_and_takes_better_ones() {
    let instance = load("eil51");
    let mut island = Island::new(&instance, 5, small_config()).unwrap();
    let worst_before = *island.lengths().iter().max().unwrap();
    let best_tour = island.best().0.to_vec();

    let mut repeated = identity_tour(&instance);
    repeated[10] = 11;
    let mut out_of_range = identity_tour(&instance);
    out_of_range[0] = 51;
    let report = island
        .accept(
            &instance,
            vec![
                vec![],
                vec![0, 1, 2],
                repeated,
                out_of_range,
                identity_tour(&instance).into_iter().chain([0]).collect(),
                best_tour,
            ],
        )
        .unwrap();
    assert_eq!(report.invalid, 5);
    assert_eq!(report.duplicates, 1, "the island's own best is a duplicate");
    assert_eq!(report.accepted, 0);

    // A tour better than the worst member comes in.
    let mut better = identity_tour(&instance);
    let better_length = local_search(&instance, &mut better).unwrap();
    let was_new = !island.lengths().contains(&better_length);
    let report = island.accept(&instance, vec![better]).unwrap();
    assert_eq!(report.invalid, 0);
    assert_eq!(
        report.accepted == 1,
        was_new && better_length < worst_before
    );
    assert_eq!(
        report.accepted == 1,
        island.lengths().contains(&better_length) && was_new
    );

    // Another instance's island is refused whole.
    let other = load("berlin52");
    assert_eq!(
        island.accept(&other, vec![identity_tour(&other)]),
        Err(IslandError::CityCountMismatch {
            island: 51,
            instance: 52
        })
    );
    assert!(island.evolve(&other, 1).is_err());
}

#[test]
fn a_forged_island_state_is_refused() {
    let instance = load("eil51");
    let island = Island::new(&instance, 5, small_config()).unwrap();
    let honest = serde_json::to_value(&island).unwrap();
    assert_eq!(
        serde_json::from_value::<Island>(honest.clone()).unwrap(),
        island
    );

    let forge = |edit: &dyn Fn(&mut serde_json::Value)| {
        let mut forged = honest.clone();
        edit(&mut forged);
        serde_json::from_value::<Island>(forged)
    };
    // A tour visiting a city twice.
    let error = forge(&|state| state["population"][3]["tour"][0] = 7.into()).unwrap_err();
    assert!(
        error.to_string().contains("member 3 is not a tour"),
        "{error}"
    );
    // A tour of another length.
    let error = forge(&|state| state["city_count"] = 52.into()).unwrap_err();
    assert!(error.to_string().contains("not a tour"), "{error}");
    // An empty population, a bad configuration.
    assert!(forge(&|state| state["population"] = serde_json::json!([])).is_err());
    assert!(forge(&|state| state["config"]["population_size"] = 0.into()).is_err());
    // A lie about a length is corrected before it is used.
    let mut lying = forge(&|state| state["population"][0]["length"] = 1.into()).unwrap();
    lying.evolve(&instance, 1).unwrap();
    let (tour, length) = lying.best();
    assert_eq!(tour_length(&instance, tour), Ok(length));

    // Arbitrary edits of the binary form never panic.
    let bytes = postcard::to_stdvec(&island).unwrap();
    let mut rng = SplitMix64::new(2);
    for _ in 0..500 {
        let mut garbage = bytes.clone();
        for _ in 0..4 {
            let at = rng.below(garbage.len());
            garbage[at] = rng.next_u64() as u8;
        }
        if let Ok(mut restored) = postcard::from_bytes::<Island>(&garbage) {
            if restored.evolve(&instance, 1).is_ok() {
                validate_tour(&instance, restored.best().0).unwrap();
            }
        }
    }
}

// ---------------------------------------------------------------------------
// The island model.

#[test]
fn four_islands_bring_eil51_within_one_percent() {
    let instance = load("eil51");
    let optimum = instance.known_optimum().unwrap();
    let mut settings = SequentialSettings::new(4, Budget::Generations(300), 7);
    settings.target_length = Some(optimum * 101 / 100);
    let outcome = solve_islands_sequential(&instance, &settings).unwrap();
    assert!(
        outcome.reached_target,
        "eil51 stopped at {}",
        outcome.best_length
    );
    assert_eq!(
        tour_length(&instance, &outcome.best_tour),
        Ok(outcome.best_length)
    );
}

#[test]
fn four_islands_solve_berlin52() {
    let instance = load("berlin52");
    let mut settings = SequentialSettings::new(4, Budget::Generations(1_000), 1);
    settings.target_length = instance.known_optimum();
    let outcome = solve_islands_sequential(&instance, &settings).unwrap();
    assert_eq!(
        outcome.best_length, 7542,
        "after {} generations",
        outcome.generations
    );
    assert_eq!(tour_length(&instance, &outcome.best_tour), Ok(7542));
}

#[test]
fn four_islands_solve_ch130_with_generations_to_spare() {
    // Unlike berlin52 and kroA100, whose optima often turn up among the
    // islands' first local optima, ch130 needs the genetic algorithm.
    let instance = load("ch130");
    let mut settings = SequentialSettings::new(4, Budget::Generations(2_000), 3);
    settings.target_length = instance.known_optimum();
    let outcome = solve_islands_sequential(&instance, &settings).unwrap();
    assert_eq!(
        outcome.best_length, 6110,
        "after {} generations",
        outcome.generations
    );
    assert!(outcome.generations > 0);
}

#[test]
fn the_sequential_model_is_deterministic() {
    let instance = load("st70");
    let settings = SequentialSettings::new(3, Budget::Generations(15), 99);
    let first = solve_islands_sequential(&instance, &settings).unwrap();
    let second = solve_islands_sequential(&instance, &settings).unwrap();
    assert_eq!(first.best_tour, second.best_tour);
    assert_eq!(first.generations, 15);
    let lengths = |outcome: &colony_apps::tsp::SolveOutcome| {
        outcome
            .improvements
            .iter()
            .map(|improvement| (improvement.generation, improvement.length))
            .collect::<Vec<_>>()
    };
    assert_eq!(lengths(&first), lengths(&second));
    let mut no_islands = settings.clone();
    no_islands.islands = 0;
    assert!(solve_islands_sequential(&instance, &no_islands).is_err());
}

// ---------------------------------------------------------------------------
// Release figures.

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

#[test]
#[ignore = "prints release figures: run with --release -- --ignored --nocapture"]
fn release_figures() {
    let runs: u64 = std::env::var("TSP_RUNS")
        .ok()
        .and_then(|runs| runs.parse().ok())
        .unwrap_or(3);
    let seconds: u64 = std::env::var("TSP_SECONDS")
        .ok()
        .and_then(|seconds| seconds.parse().ok())
        .unwrap_or(60);

    // One full 2-opt + Or-opt descent from a random tour of kroA100.
    let kroa = load("kroA100");
    let mut rng = SplitMix64::new(4);
    let descents: u32 = 200;
    let mut total = Duration::ZERO;
    let mut lengths = 0u64;
    for _ in 0..descents {
        let mut tour = identity_tour(&kroa);
        rng.shuffle(&mut tour);
        let started = Instant::now();
        lengths += local_search(&kroa, &mut tour).unwrap();
        total += started.elapsed();
    }
    println!(
        "kroA100 descent from a random tour: {:.3} ms mean, mean length {} ({:.1}% over optimum)",
        total.as_secs_f64() * 1e3 / f64::from(descents),
        lengths / u64::from(descents),
        (lengths as f64 / f64::from(descents) / 21282.0 - 1.0) * 100.0
    );

    // Four islands in one thread until the optimum or the time budget.
    for name in ["berlin52", "kroA100", "ch130", "a280"] {
        let instance = load(name);
        let optimum = instance.known_optimum().unwrap();
        let mut times = Vec::new();
        let mut gaps = Vec::new();
        for seed in 0..runs {
            let mut settings =
                SequentialSettings::new(4, Budget::Time(Duration::from_secs(seconds)), seed);
            settings.target_length = Some(optimum);
            let outcome = solve_islands_sequential(&instance, &settings).unwrap();
            assert_eq!(
                tour_length(&instance, &outcome.best_tour),
                Ok(outcome.best_length)
            );
            let gap = (outcome.best_length as f64 / optimum as f64 - 1.0) * 100.0;
            let last = outcome.improvements.last().unwrap();
            println!(
                "{name} seed {seed}: {} ({gap:.2}% gap) after {:.3} s and {} generations; \
                 best found at {:.3} s, generation {}",
                outcome.best_length,
                outcome.elapsed.as_secs_f64(),
                outcome.generations,
                last.elapsed.as_secs_f64(),
                last.generation,
            );
            times.push(outcome.elapsed.as_secs_f64());
            gaps.push(gap);
        }
        println!(
            "{name}: median of {runs} runs: {:.3} s, gap {:.2}% (budget {seconds} s)",
            median(times),
            median(gaps)
        );
    }
}
