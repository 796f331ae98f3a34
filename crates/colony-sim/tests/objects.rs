//! Distributed objects under every fault kind (`--workload objects`): under
//! `pml` every acknowledged addition is in the final state exactly once, at
//! the position its caller was told, the answers fit one history, and each
//! object reads back once the faults are over. Breaking the protocol on
//! purpose — no message log, or two primaries — is caught. Under `cic` an
//! application of feeders and counters reaches its fault-free answer.
//!
//! A pml seed takes about 50 ms here, a cic seed about 150 ms (debug); the
//! batches stay under 15 s and 40 s in all.

use colony_sim::objects::ObjectStats;
use colony_sim::{run, Broken, FaultCounts, FaultKinds, ProtocolChoice, SimConfig, Workload};

/// Seeds per fault kind in CI (the CLI runs hundreds: see lib.rs).
const SEEDS: u64 = 40;

fn config(seed: u64, faults: &str) -> SimConfig {
    let mut config = SimConfig::new(seed);
    config.workload = Workload::Objects;
    config.peers = 8;
    config.faults = faults.parse::<FaultKinds>().expect("fault kinds");
    config.object_clients = 3;
    config.object_calls = 40;
    config.object_protocol = ProtocolChoice::Pml;
    config
}

/// Runs `seeds` of `faults`; returns the failing replay lines, what the
/// workloads did and the faults injected.
fn batch(
    faults: &str,
    seeds: impl Iterator<Item = u64>,
    tweak: impl Fn(&mut SimConfig),
) -> (Vec<String>, ObjectStats, FaultCounts) {
    let mut failures = Vec::new();
    let mut stats = ObjectStats::default();
    let mut counts = FaultCounts::default();
    for seed in seeds {
        let mut config = config(seed, faults);
        tweak(&mut config);
        let report = run(&config);
        counts.add(&report.faults);
        if let Some(s) = &report.objects {
            stats.add(s);
        }
        if !report.passed() {
            let found: Vec<String> = report
                .violations
                .iter()
                .take(3)
                .map(|v| format!("{}: {v}", v.kind()))
                .collect();
            let mut kinds: Vec<&str> = report.violations.iter().map(|v| v.kind()).collect();
            kinds.sort_unstable();
            kinds.dedup();
            failures.push(format!(
                "{} ({})\n    {}",
                config.replay_line(),
                kinds.join(", "),
                found.join("\n    ")
            ));
        }
    }
    (failures, stats, counts)
}

fn pml_under(faults: &str) -> (ObjectStats, FaultCounts) {
    // Pause seeds 3 and 8 failed while a late creation could make a second
    // home of an object (see lib.rs, "Fixed in the distributed objects").
    let (failures, stats, counts) = batch(faults, 0..SEEDS, |_| {});
    assert!(
        failures.is_empty(),
        "{} failing seeds:\n{}",
        failures.len(),
        failures.join("\n")
    );
    // Every object was read back, and most additions were acknowledged.
    assert_eq!(stats.final_reads, 2 * SEEDS, "{stats:?}");
    assert!(stats.acked * 10 > stats.calls * 9, "{stats:?}");
    (stats, counts)
}

#[test]
fn pml_objects_survive_crashes_exactly_once() {
    let (stats, faults) = pml_under("crash");
    assert!(faults.crashes > SEEDS, "{faults:?}");
    assert!(
        stats.activations > 2 * SEEDS,
        "failovers happened: {stats:?}"
    );
}

#[test]
fn pml_objects_survive_pauses_exactly_once() {
    let (_, faults) = pml_under("pause");
    assert!(faults.pauses > SEEDS, "{faults:?}");
}

#[test]
fn pml_objects_survive_partitions_exactly_once() {
    let (stats, faults) = pml_under("partition");
    assert!(faults.partitions > SEEDS, "{faults:?}");
    assert!(stats.failed > 0, "some calls hit a deadline: {stats:?}");
}

#[test]
fn pml_objects_survive_a_lossy_network_exactly_once() {
    let (_, faults) = pml_under("loss,dup,reorder");
    assert!(faults.lost > 0 && faults.duplicated > 0 && faults.reordered > 0);
}

#[test]
fn pml_objects_survive_every_fault_kind_at_once() {
    pml_under("all");
}

/// Objects made under `checkpoint` but held to `pml`: a crash loses
/// acknowledged additions, and the restarted object answers new ones at
/// positions it had given already.
#[test]
fn without_the_log_the_checker_sees_calls_lost_and_answered_twice() {
    let (failures, _, _) = batch("crash", 0..6, |c| c.broken = Some(Broken::ObjectsNoLog));
    assert!(failures.len() >= 2, "{failures:?}");
    assert!(failures.iter().any(|f| f.contains("object-exactly-once")));
    assert!(failures.iter().any(|f| f.contains("object-history")));
}

/// A restarted peer that makes itself its objects' only home member: two
/// primaries commit apart (one after the other, as clients move between
/// them), which the history check sees.
#[test]
fn two_primaries_are_caught() {
    let (failures, _, _) = batch("crash", 0..6, |c| c.broken = Some(Broken::ObjectsSoloHomes));
    assert!(failures.len() >= 3, "{failures:?}");
    assert!(failures.iter().any(|f| f.contains("object-history")));
}

/// A primary cut off by a partition, or paused, stops executing when its
/// lease ends, before its successor can be elected: no two activations of
/// an object ever execute at once (checked strictly, under `pml` and
/// `cic`).
#[test]
fn a_cut_off_or_paused_primary_never_executes_beside_its_successor() {
    for faults in ["partition", "pause"] {
        for protocol in [ProtocolChoice::Pml, ProtocolChoice::Cic] {
            let (failures, stats, _) = batch(faults, 80..100, |c| {
                c.strict_activations = true;
                c.object_protocol = protocol;
            });
            assert_eq!(stats.overlapping, 0, "{faults} {protocol:?}: {stats:?}");
            for f in &failures {
                let kinds = f.split(['(', ')']).nth(1).unwrap_or_default();
                assert!(!kinds.contains("object-double-activation"), "{f}");
            }
        }
    }
}

/// Without leases the same seeds show it: a primary cut off by a
/// partition goes on executing the calls of the clients on its side until
/// it hears of its successor, and the sampler sees two activations
/// executing at once.
#[test]
fn without_leases_a_cut_off_primary_executes_beside_its_successor() {
    let (failures, stats, _) = batch("partition", 80..100, |c| {
        c.strict_activations = true;
        c.broken = Some(Broken::ObjectsNoLease);
    });
    assert!(stats.overlapping > 0, "{stats:?}");
    assert!(failures
        .iter()
        .any(|f| f.contains("object-double-activation")));
}

/// Seeds per fault kind under `cic`.
const CIC_SEEDS: u64 = 12;

/// `cic` seeds of `faults` that all pass: each feeder drew every number,
/// had every reply, sent what the fault-free run sends, and its counters
/// hold exactly that. Returns what the workloads did.
fn cic_under(faults: &str) -> ObjectStats {
    let (failures, stats, _) = batch(faults, 0..CIC_SEEDS, |c| {
        c.object_protocol = ProtocolChoice::Cic;
    });
    assert!(
        failures.is_empty(),
        "{} failing seeds:\n{}",
        failures.len(),
        failures.join("\n")
    );
    // Every application finished and was read back.
    assert_eq!(stats.final_reads, 3 * CIC_SEEDS, "{stats:?}");
    stats
}

#[test]
fn a_cic_application_reaches_the_fault_free_answer_across_crashes() {
    let stats = cic_under("crash");
    assert!(stats.rollbacks_seen > 0, "clients saw rollbacks: {stats:?}");
}

#[test]
fn a_cic_application_reaches_the_fault_free_answer_across_pauses_and_partitions() {
    cic_under("pause");
    cic_under("partition");
}

#[test]
fn a_cic_application_reaches_the_fault_free_answer_under_every_fault_kind_at_once() {
    cic_under("all");
}
