//! A worker that is only suspected keeps its units: the simulated peers run
//! the same node as the runtime, which tells the job core who is suspected
//! (not only who is alive). A job without checkpoints cannot restart a unit
//! from anything but its start, so its primary must not reissue the units
//! of a worker that stops answering for a moment (a loaded machine, a
//! SIGSTOP) unless membership declares it dead.
//!
//! Before the simulator ran the node, its glue never fed suspects to the
//! job core: a suspected worker looked gone, and this test saw its unit
//! reissued.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use colony_core::ft::{FaultTolerance, FtProtocol};
use colony_core::job::{JobEvent, JobId};
use colony_core::membership::MemberState;
use colony_core::node::NodeOutput;
use colony_sim::app::RangeSum;
use colony_sim::exec::ExecSpeed;
use colony_sim::peer::{Action, PeerSettings, PeerStart, SimPeer};

const PEERS: u32 = 4;
const LATENCY: Duration = Duration::from_millis(1);

/// A few simulated peers on a lossless network, one of which can be
/// paused (its timers stop; frames to it wait until it resumes).
struct World {
    now: Instant,
    peers: Vec<SimPeer>,
    in_flight: BTreeMap<(Instant, u64), (u32, u32, Vec<u8>)>,
    next_frame_no: u64,
    paused: Option<u32>,
    held: Vec<(u32, u32, Vec<u8>)>,
    /// What each peer reported, in order.
    log: Vec<(u32, Action)>,
}

impl World {
    fn new() -> World {
        let now = Instant::now();
        let settings = PeerSettings {
            traffic_interval: None,
            ..PeerSettings::default()
        };
        let peers = (0..PEERS)
            .map(|id| {
                let start = PeerStart {
                    id,
                    life: 0,
                    incarnation: 1,
                    session: 1,
                    bootstrap_len: 0,
                    seed: 42,
                    speed: ExecSpeed {
                        budget: 100,
                        step_cost: Duration::from_millis(4),
                    },
                };
                SimPeer::start(start, settings.clone(), Vec::new(), now)
            })
            .collect();
        let mut world = World {
            now,
            peers,
            in_flight: BTreeMap::new(),
            next_frame_no: 0,
            paused: None,
            held: Vec::new(),
            log: Vec::new(),
        };
        for id in 1..PEERS {
            world.peers[id as usize].handle_contact(now, 0);
            world.drain(id);
        }
        world
    }

    /// Executes what peer `id` asked of the world.
    fn drain(&mut self, id: u32) {
        loop {
            let actions = std::mem::take(&mut self.peers[id as usize].actions);
            if actions.is_empty() {
                return;
            }
            for action in actions {
                match action {
                    Action::Node(NodeOutput::Transmit { to, bytes, .. }) => {
                        self.next_frame_no += 1;
                        self.in_flight
                            .insert((self.now + LATENCY, self.next_frame_no), (id, to, bytes));
                    }
                    // Disks here are instant.
                    Action::Node(NodeOutput::Persist { key, piece }) => self.peers[id as usize]
                        .handle_persisted(self.now, key, piece.epoch, piece.version),
                    other => self.log.push((id, other)),
                }
            }
        }
    }

    /// Runs virtual time forward to `end`.
    fn run_until(&mut self, end: Instant) {
        loop {
            let next_frame = self.in_flight.keys().next().map(|k| k.0);
            let next_timer = (0..PEERS)
                .filter(|id| Some(*id) != self.paused)
                .map(|id| self.peers[id as usize].next_wakeup())
                .min();
            let next = [next_frame, next_timer].into_iter().flatten().min();
            let Some(next) = next.filter(|t| *t <= end) else {
                self.now = end;
                return;
            };
            self.now = self.now.max(next);
            if next_frame == Some(next) {
                let Some((_, (from, to, bytes))) = self.in_flight.pop_first() else {
                    continue;
                };
                if Some(to) == self.paused {
                    self.held.push((from, to, bytes));
                    continue;
                }
                self.peers[to as usize].handle_frame(self.now, from, &bytes);
                self.drain(to);
                continue;
            }
            for id in 0..PEERS {
                if Some(id) != self.paused && self.peers[id as usize].next_wakeup() <= self.now {
                    self.peers[id as usize].handle_timers(self.now);
                    self.drain(id);
                }
            }
        }
    }

    fn pause(&mut self, id: u32) {
        self.paused = Some(id);
    }

    fn resume(&mut self) {
        let Some(id) = self.paused.take() else {
            return;
        };
        for (from, to, bytes) in std::mem::take(&mut self.held) {
            self.peers[to as usize].handle_frame(self.now, from, &bytes);
        }
        self.drain(id);
    }

    /// How `observer` sees `peer` now.
    fn state(&self, observer: u32, peer: u32) -> Option<MemberState> {
        self.peers[observer as usize]
            .node
            .membership()
            .state_of(&peer)
    }
}

#[test]
fn a_suspected_worker_keeps_its_units_without_checkpoints() {
    let mut world = World::new();
    let start = world.now;
    world.run_until(start + Duration::from_secs(3));
    for a in 0..PEERS {
        for b in (0..PEERS).filter(|b| *b != a) {
            assert_eq!(world.state(a, b), Some(MemberState::Alive), "{a} sees {b}");
        }
    }

    let job = JobId([9; 16]);
    let ft = FaultTolerance {
        protocol: FtProtocol::None,
        ..FaultTolerance::default()
    };
    let now = world.now;
    let primary = world.peers[0].submit(now, job, "rangesum", RangeSum::params(0, 400_000), ft);
    world.drain(0);
    world.run_until(now + Duration::from_secs(2));

    // A worker, not the primary, computing a unit of the job.
    let worker = world
        .log
        .iter()
        .find_map(|(id, a)| match a {
            Action::Started { job: j, .. } if *j == job && *id != primary => Some(*id),
            _ => None,
        })
        .expect("a worker other than the primary runs a unit");

    // Pause it until the primary suspects it, then a little longer — but
    // not long enough to be declared dead.
    world.pause(worker);
    let paused_at = world.now;
    while world.state(primary, worker) != Some(MemberState::Suspect) {
        assert!(
            world.now < paused_at + Duration::from_secs(5),
            "the primary never suspected the paused worker"
        );
        let step = world.now + Duration::from_millis(10);
        world.run_until(step);
    }
    let suspected_at = world.now;
    world.run_until(suspected_at + Duration::from_millis(300));
    assert_eq!(
        world.state(primary, worker),
        Some(MemberState::Suspect),
        "still only suspected when it resumes"
    );
    world.resume();

    // The job finishes; the suspected worker's units were never reissued.
    let mut finished = None;
    let deadline = world.now + Duration::from_secs(120);
    while finished.is_none() && world.now < deadline {
        let step = world.now + Duration::from_millis(200);
        world.run_until(step);
        finished = world.log.iter().find_map(|(id, a)| match a {
            Action::Node(NodeOutput::Job(JobEvent::Finished { job: j, ok }))
                if *j == job && *id == primary =>
            {
                Some(*ok)
            }
            _ => None,
        });
    }
    let reissued: Vec<String> = world
        .log
        .iter()
        .filter_map(|(id, a)| match a {
            Action::Node(NodeOutput::Job(JobEvent::Reissued { unit, lost, .. })) => {
                Some(format!("peer {id} reissued unit {unit} lost by {lost}"))
            }
            _ => None,
        })
        .collect();
    assert!(
        reissued.is_empty(),
        "a suspected worker's units were reissued: {reissued:?}"
    );
    let died: Vec<&(u32, Action)> = world
        .log
        .iter()
        .filter(|(_, a)| matches!(a, Action::Node(NodeOutput::Member(e)) if e.peer == worker && e.to == MemberState::Dead))
        .collect();
    assert!(died.is_empty(), "the worker was declared dead: {died:?}");
    assert_eq!(finished, Some(true), "the job finished correctly");
}
