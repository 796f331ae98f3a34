//! `colony bench calls`: object calls between embedded peers on loopback,
//! for each fault-tolerance protocol, against raw TCP round trips measured
//! in the same run.

use std::time::Instant;

use colony_core::object::{ActiveObject, ObjectContext, ObjectProtocol, Ref};
use futures::stream::FuturesUnordered;
use futures::StreamExt;
use serde::{Deserialize, Serialize};

use super::{raw_tcp_round_trips, LatencyUs};
use crate::{ColonyError, LocalNetwork, Peer};

/// What to measure.
#[derive(Clone, Debug)]
pub struct CallsBenchOptions {
    /// Calls made one after the other, per protocol.
    pub calls: usize,
    /// Calls made pipelined, per protocol.
    pub pipelined: usize,
    /// Pipelined calls in flight at once.
    pub window: usize,
}

/// Figures of one protocol.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ProtocolCalls {
    /// `none`, `checkpoint`, `pml` or `cic`.
    pub protocol: String,
    /// Latency of a call made alone, from a peer other than the object's.
    pub sync: LatencyUs,
    /// Calls per second one after the other.
    pub sync_per_sec: f64,
    /// Calls per second pipelined.
    pub pipelined_per_sec: f64,
}

/// What `colony bench calls` measured.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CallsBenchReport {
    /// Round trips of 64 bytes over a loopback TCP socket (the baseline).
    pub raw_tcp: LatencyUs,
    /// One entry per protocol.
    pub protocols: Vec<ProtocolCalls>,
}

/// The object every call goes to: adds, and answers the total.
#[derive(Serialize, Deserialize)]
struct Tally(u64);

impl ActiveObject for Tally {
    type Params = ();
    type Request = u64;
    type Reply = u64;
    const TYPE: &'static str = "colony-bench-tally";

    fn create(_ctx: &mut ObjectContext<'_>, _params: ()) -> Result<Self, String> {
        Ok(Tally(0))
    }

    fn handle(&mut self, _ctx: &mut ObjectContext<'_>, add: u64) -> Result<u64, String> {
        self.0 = self.0.wrapping_add(add);
        Ok(self.0)
    }
}

/// Runs the benchmark on three embedded peers.
pub async fn calls(options: &CallsBenchOptions) -> Result<CallsBenchReport, ColonyError> {
    let raw_tcp = raw_tcp_round_trips(options.calls, 64).await?;
    let network = LocalNetwork::start(3, |_, config| {
        config.object_types.register::<Tally>();
    })
    .await?;
    let mut protocols = Vec::new();
    let mut outcome = Ok(());
    for (name, protocol) in [
        ("none", ObjectProtocol::None),
        ("checkpoint", ObjectProtocol::Checkpoint { ttc_ms: 60_000 }),
        ("pml", ObjectProtocol::Pml { ttc_ms: 60_000 }),
        ("cic", ObjectProtocol::Cic { ttc_ms: 60_000 }),
    ] {
        match measure(network.peers(), name, protocol, options).await {
            Ok(figures) => protocols.push(figures),
            Err(error) => {
                outcome = Err(error);
                break;
            }
        }
    }
    network.shutdown().await;
    outcome?;
    Ok(CallsBenchReport { raw_tcp, protocols })
}

async fn measure(
    peers: &[Peer],
    name: &str,
    protocol: ObjectProtocol,
    options: &CallsBenchOptions,
) -> Result<ProtocolCalls, ColonyError> {
    let tally: Ref<Tally> = peers[0].create_object(&(), protocol).await?;
    // Called from a peer that does not serve it: every call crosses the
    // network.
    let mut caller = peers[1].clone();
    for peer in peers {
        if peer.objects().await?.iter().all(|o| o.uri != *tally.uri()) {
            caller = peer.clone();
            break;
        }
    }
    let mut samples = Vec::with_capacity(options.calls);
    let started = Instant::now();
    for _ in 0..options.calls {
        let t = Instant::now();
        caller.call_object(&tally, &1).await?;
        samples.push(t.elapsed());
    }
    let sync_secs = started.elapsed().as_secs_f64();
    let started = Instant::now();
    let mut in_flight = FuturesUnordered::new();
    let mut sent = 0;
    while sent < options.pipelined || !in_flight.is_empty() {
        while sent < options.pipelined && in_flight.len() < options.window.max(1) {
            in_flight.push(caller.call_object(&tally, &1));
            sent += 1;
        }
        if let Some(answer) = in_flight.next().await {
            answer?;
        }
    }
    let pipelined_secs = started.elapsed().as_secs_f64().max(1e-9);
    caller.delete_object(tally.uri()).await?;
    Ok(ProtocolCalls {
        protocol: name.to_string(),
        sync: LatencyUs::of(&mut samples),
        sync_per_sec: options.calls as f64 / sync_secs.max(1e-9),
        pipelined_per_sec: options.pipelined as f64 / pipelined_secs,
    })
}
