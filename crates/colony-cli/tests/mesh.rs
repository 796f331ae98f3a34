//! The streaming mesh of seed 001 across real `colony peer --mesh …`
//! processes on loopback: the seed's tree (span 2, 2 super-peers per cell,
//! 3 levels) forms through the cell records, sensors' streams reach the
//! client, and a super-peer SIGKILLed at each level loses no frame under
//! FT_ALL, while NO_FT loses some.

mod common;

use common::mesh::{Mesh, SUPER_PEERS};
use common::{test_dir, SERIAL};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_three_level_mesh_forms_from_processes_and_streams_reach_the_client() {
    let _serial = SERIAL.lock().await;
    let mesh = Mesh::start("mesh-forms", "ft_all").await;
    for sensor in &mesh.sensors {
        let info = sensor.status().await.expect("sensor answers").mesh;
        assert_eq!(info.role.as_deref(), Some("sensor"));
        let bound = info.rebinds.first().expect("the sensor bound");
        assert_eq!(bound.kind, "initial");
        assert!(mesh
            .cell_of
            .get(&bound.parent)
            .is_some_and(|c| c == &bound.cell));
    }
}

/// FT_ALL: a super-peer SIGKILLed at level 2, then 1, then 0, each a parent
/// of live children: every stream goes on with no frame missing, and each
/// orphan rebinds fast to the other member of the cell.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ft_all_loses_no_frame_when_a_super_peer_dies_at_each_level() {
    let _serial = SERIAL.lock().await;
    let mut mesh = Mesh::start("mesh-ft-all", "ft_all").await;
    for cell in ["011", "01", "0"] {
        let victim = mesh.a_parent_in(cell).await;
        mesh.supers[victim].kill();
        let info = mesh
            .wait_for_streams(
                &format!("streams whole after a kill in cell {cell}"),
                20,
                true,
            )
            .await;
        eprintln!("mesh: after a kill in {cell}: {:?}", info.streams);
    }
    let rebinds = mesh.rebinds().await;
    eprintln!("mesh: rebinds {rebinds:?}");
    assert!(!rebinds.is_empty(), "no child rebound");
    assert!(
        rebinds.iter().all(|r| r.kind == "fast"),
        "a rebind was not fast: {rebinds:?}"
    );
}

/// NO_FT, the same kill at level 2: the frames the dead parent held or was
/// sent before it was declared dead are gone (the test shows what FT_ALL
/// buys).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_ft_loses_frames_when_a_sensors_parent_dies() {
    let _serial = SERIAL.lock().await;
    let mut mesh = Mesh::start("mesh-no-ft", "no_ft").await;
    let victim = mesh.a_parent_in("011").await;
    mesh.supers[victim].kill();
    let info = mesh
        .wait_for_streams("streams going on after the kill", 20, false)
        .await;
    let missing: u64 = info.streams.values().map(|s| s.missing()).sum();
    eprintln!("mesh: NO_FT missing {missing}: {:?}", info.streams);
    assert!(missing > 0, "NO_FT lost nothing: {:?}", info.streams);
}

/// FT_ALL, both super-peers of a leaf cell SIGKILLed: its sensors rebind
/// slowly to the nearest live cell above, and their streams go on whole
/// (each sensor sends again what its dead parent had not acknowledged).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_whole_cell_killed_makes_its_sensors_rebind_slowly_and_lose_nothing() {
    let _serial = SERIAL.lock().await;
    let mut mesh = Mesh::start("mesh-cell-killed", "ft_all").await;
    let victims: Vec<usize> = mesh
        .supers
        .iter()
        .enumerate()
        .filter(|(_, s)| mesh.cell_of[&s.info.peer_id.to_string()] == "011")
        .map(|(i, _)| i)
        .collect();
    assert_eq!(victims.len(), 2);
    for victim in &victims {
        mesh.supers[*victim].kill();
    }
    mesh.wait_for_streams("streams whole after cell 011 died", 20, true)
        .await;
    for sensor in &mesh.sensors[..2] {
        let info = sensor.status().await.expect("sensor answers").mesh;
        let last = info.rebinds.last().expect("bound");
        assert_eq!(last.kind, "slow", "sensor rebinds: {:?}", info.rebinds);
        assert_eq!(last.cell, "01", "sensor rebinds: {:?}", info.rebinds);
        eprintln!("mesh: slow rebind after {:.1} ms", last.after_ms);
    }
}
/// FT_ALL: the client, then a root super-peer that children are bound
/// to, paused until every peer declared it dead, take their places again:
/// the roots deliver to the client again with no frame missing, the
/// other root super-peer lists the paused one in its cell again, and when
/// that other one is then SIGKILLed the streams go on whole through the
/// one once declared dead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_wrongly_declared_dead_take_their_places_again() {
    let _serial = SERIAL.lock().await;
    let mut mesh = Mesh::start("mesh-renewal", "ft_all").await;
    mesh.pause_until_declared_dead(&mesh.client).await;
    mesh.wait_for_streams("streams whole after the client's pause", 20, true)
        .await;
    let paused = mesh.a_parent_in("0").await;
    mesh.pause_until_declared_dead(&mesh.supers[paused]).await;
    mesh.wait_for_streams("streams whole after the root's pause", 20, true)
        .await;
    let other = (0..SUPER_PEERS)
        .find(|&i| i != paused && mesh.cell_of[&mesh.supers[i].info.peer_id.to_string()] == "0")
        .expect("the root's other super-peer");
    mesh.wait_listed(
        other,
        paused,
        "the other root super-peer to list the paused one again",
    )
    .await;
    mesh.supers[other].kill();
    let info = mesh
        .wait_for_streams("streams whole through the once paused root", 20, true)
        .await;
    eprintln!("mesh: after the renewal and the kill: {:?}", info.streams);
    let back = mesh.supers[paused].status().await.expect("answers").mesh;
    assert_eq!(back.cell.as_deref(), Some("0"), "{back:?}");
    assert_eq!(
        back.joins.renewals_refused, 0,
        "it kept its place: {back:?}"
    );
    // The killed one, restarted with its identity, takes the free place.
    mesh.supers[other].restart_with(&[]);
    mesh.wait_listed(
        paused,
        other,
        "the restarted super-peer back in the root cell",
    )
    .await;
    mesh.wait_for_streams("streams whole after the restart", 20, true)
        .await;
}

/// Bad mesh options are refused before the peer starts, with a message
/// naming the option.
#[test]
fn bad_mesh_options_are_clear_errors() {
    let root = test_dir("mesh-bad-options");
    let cases: [(&[&str], &str); 5] = [
        (&["--mesh", "sensor", "--cell", "03"], "--cell 03"),
        (&["--mesh", "sensor", "--cell", "1x"], "--cell 1x"),
        (
            &["--mesh", "client", "--classes", "mesh"],
            "carries no stream",
        ),
        (&["--mesh", "client", "--classes", "smell"], "smell"),
        (&["--mesh", "super", "--ft-policy", "most"], "most"),
    ];
    for (i, (bad, expected)) in cases.iter().enumerate() {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_colony"))
            .arg("peer")
            .arg("--data-dir")
            .arg(root.join(format!("p{i}")))
            .args(["--listen", "/ip4/127.0.0.1/tcp/0", "--api", "127.0.0.1:0"])
            .args(*bad)
            .output()
            .expect("run colony");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{bad:?} was accepted");
        assert!(stderr.contains(expected), "{bad:?}: {stderr}");
    }
    let bench: [(&[&str], &str); 3] = [
        (&["--sensors-per-cell", "0"], "--sensors-per-cell"),
        (&["--policies", "ft_most"], "ft_most"),
        (&["--window-secs", "1"], "--window-secs"),
    ];
    for (bad, expected) in bench {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_colony"))
            .args(["bench", "mesh"])
            .args(bad)
            .output()
            .expect("run colony");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{bad:?} was accepted");
        assert!(stderr.contains(expected), "{bad:?}: {stderr}");
    }
}

/// `colony bench mesh ARGS --json` on a small load (one sensor per cell,
/// the seed's rates / 4, 2 s before the first fault): its report.
async fn mesh_bench_json(args: &[&str]) -> serde_json::Value {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_colony"))
        .args(["bench", "mesh"])
        .args(args)
        .args(["--sensors-per-cell", "1", "--rate-divisor", "4"])
        .args(["--baseline-secs", "2", "--json"])
        .output()
        .await
        .expect("run colony bench mesh");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "bench failed: {stderr}");
    serde_json::from_slice(&output.stdout).expect("the bench prints JSON")
}

/// `colony bench mesh` (seed 001's Test I) on a small load: under ft_all
/// no frame of any class is lost or duplicated when a parent dies at each
/// level, under no_ft some are, every kill is followed by rebinds, and the
/// figures the tables are made of are all there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mesh_bench_shows_what_ft_all_buys_at_every_level() {
    let _serial = SERIAL.lock().await;
    let report = mesh_bench_json(&["--policies", "no_ft,ft_all", "--window-secs", "4"]).await;
    let runs = report["runs"].as_array().expect("runs");
    assert_eq!(runs.len(), 2, "{report}");
    let lost = |run: &serde_json::Value| -> u64 {
        run["windows"]
            .as_array()
            .expect("windows")
            .iter()
            .flat_map(|w| w["classes"].as_object().expect("classes").values())
            .map(|c| c["lost"].as_u64().expect("lost"))
            .sum()
    };
    for run in runs {
        let windows: Vec<&str> = run["windows"]
            .as_array()
            .expect("windows")
            .iter()
            .map(|w| w["name"].as_str().expect("name"))
            .collect();
        assert_eq!(windows, ["baseline", "level 2", "level 1", "level 0"]);
        for class in ["event", "audio", "video"] {
            let figures = &run["classes"][class];
            assert!(figures["frames"].as_u64().expect("frames") > 0, "{run}");
            assert_eq!(figures["duplicates"].as_u64(), Some(0), "{run}");
            assert!(figures["latency_mean_ms"].as_f64().expect("latency") > 0.0);
        }
        assert!(
            run["fast_rebinds"]["count"].as_u64().expect("rebinds") >= 3,
            "a child rebinds after each of the 3 kills: {run}"
        );
        assert!(run["super_cpu_mean_pct"].as_f64().expect("cpu") > 0.0);
        assert!(run["super_rss_mean_mib"].as_f64().expect("rss") > 1.0);
        let last = run["windows"][3]["stalled_streams"].as_u64();
        assert_eq!(last, Some(0), "every stream flows at the end: {run}");
    }
    assert_eq!(runs[0]["policy"], "no_ft");
    assert!(lost(&runs[0]) > 0, "no_ft loses frames: {}", runs[0]);
    assert_eq!(runs[1]["policy"], "ft_all");
    assert_eq!(lost(&runs[1]), 0, "ft_all loses none: {}", runs[1]);
}

/// `colony bench mesh --test ii --level 0`: both super-peers of the root
/// are SIGKILLed one after the other; the root is re-formed from below
/// and, under ft_all, no frame is lost and every stream flows again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mesh_bench_kills_the_whole_root_and_the_mesh_heals() {
    let _serial = SERIAL.lock().await;
    let report = mesh_bench_json(&["--test", "ii", "--level", "0", "--window-secs", "5"]).await;
    let runs = report["runs"].as_array().expect("runs");
    assert_eq!(runs.len(), 1, "{report}");
    let run = &runs[0];
    assert_eq!(run["policy"], "ft_all");
    let windows = run["windows"].as_array().expect("windows");
    let names: Vec<&str> = windows
        .iter()
        .map(|w| w["name"].as_str().expect("name"))
        .collect();
    assert_eq!(names, ["baseline", "level 0, fault 1", "level 0, fault 2"]);
    for window in windows {
        assert_eq!(window["killed_cell"].as_str().unwrap_or("0"), "0");
        for class in ["event", "audio", "video"] {
            assert_eq!(window["classes"][class]["lost"].as_u64(), Some(0), "{run}");
            assert_eq!(window["classes"][class]["duplicates"].as_u64(), Some(0));
        }
    }
    assert_eq!(
        windows[2]["stalled_streams"].as_u64(),
        Some(0),
        "every stream flows again once the root is re-formed: {run}"
    );
    assert!(
        windows[2]["classes"]["event"]["frames"]
            .as_u64()
            .expect("frames")
            > 0,
        "frames arrive after the root died: {run}"
    );
}
