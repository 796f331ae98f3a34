//! Event latency under a video flood across real mesh processes. A
//! latency measurement: `scripts/test` runs this binary alone, after the
//! others, so the other lane's computing peers do not take its CPU.

mod common;

use std::time::Duration;

use common::mesh::{args, with_bootstrap, Mesh};
use common::{wait_until, PeerProc, SERIAL};

/// The client's per-second report lines (`colony peer --mesh client`
/// prints one JSON object a second) from line `from` on: the mean event
/// latency of each second.
fn event_latencies(client: &PeerProc, from: usize) -> Vec<f64> {
    let out = std::fs::read_to_string(client.dir.join("peer.out")).unwrap_or_default();
    out.lines()
        .filter(|l| l.starts_with('{'))
        .skip(from)
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v["event"]["latency_ms_mean"].as_f64())
        .collect()
}

fn report_lines(client: &PeerProc) -> usize {
    let out = std::fs::read_to_string(client.dir.join("peer.out")).unwrap_or_default();
    out.lines().filter(|l| l.starts_with('{')).count()
}

fn median(mut samples: Vec<f64>) -> f64 {
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}

/// With a sensor flooding video at 1,000 frames a second (4 MB/s through
/// every level), the client's event latency stays within a few
/// milliseconds of what it was before the flood. This rate does not
/// saturate loopback, so the test guards latency under load, not the
/// priorities themselves (it passes with every class at one priority);
/// that a higher class overtakes a saturating lower one is checked on the
/// pipes the mesh uses, by `mesh_messages_are_not_delayed_by_a_bulk_flood`
/// in `crates/colony/tests/embedded/pipes.rs`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_keep_their_latency_under_a_video_flood() {
    const SECONDS: usize = 6;
    let _serial = SERIAL.lock().await;
    let mut mesh = Mesh::start("mesh-flood", "ft_all").await;
    let idle_from = report_lines(&mesh.client) + 1;
    let idle = wait_until(Duration::from_secs(30), "idle reports", || async {
        let l = event_latencies(&mesh.client, idle_from);
        (l.len() >= SECONDS).then_some(l)
    })
    .await;
    let root = mesh.client.dir.parent().expect("test dir").to_path_buf();
    let extra = [
        "--cell",
        "022",
        "--video-fps",
        "1000",
        "--rate-divisor",
        "4",
    ];
    let flood = PeerProc::spawn(
        &root.join("flooder"),
        &with_bootstrap(args("sensor", &extra), &mesh.supers[0]),
    );
    let flood_video = format!("{}/video", flood.info.peer_id);
    wait_until(
        Duration::from_secs(60),
        "the flood at the client",
        || async {
            let mesh = mesh.client_mesh().await?;
            (mesh.streams.get(&flood_video)?.received >= 2000).then_some(())
        },
    )
    .await;
    let flood_from = report_lines(&mesh.client) + 1;
    let flooded = wait_until(Duration::from_secs(30), "flooded reports", || async {
        let l = event_latencies(&mesh.client, flood_from);
        (l.len() >= SECONDS).then_some(l)
    })
    .await;
    let video = mesh.client_mesh().await.expect("client answers").streams[&flood_video].received;
    let (idle_ms, flooded_ms) = (median(idle.clone()), median(flooded.clone()));
    eprintln!(
        "mesh: event latency idle {idle_ms:.2} ms {idle:?}, under a video flood \
         ({video} flood frames) {flooded_ms:.2} ms {flooded:?}"
    );
    assert!(
        flooded_ms <= idle_ms + 5.0,
        "event latency {flooded_ms:.2} ms under a video flood, {idle_ms:.2} ms idle"
    );
    mesh.sensors.push(flood);
}
