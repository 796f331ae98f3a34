//! Job cores of several peers driven in virtual time, with units stepped
//! by the harness the way worker threads would.

use super::*;
use crate::divisible::{Step, StepContext, Unit};
use crate::test_apps::Sum;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

struct Peer {
    core: Jobs<u32>,
    units: Vec<(JobId, UnitId, Box<dyn Unit>)>,
    shared: SharedVars,
    alive: bool,
}

struct Cluster {
    now: Instant,
    peers: Vec<Peer>,
    wire: Vec<(Instant, u32, u32, JobMsg<u32>)>,
    statuses: Vec<(u32, JobView<u32>)>,
    merged_units: Vec<UnitId>,
    rng: SmallRng,
    /// Latest delivery time per (from, to, bulk) channel, for FIFO order.
    last_delivery: BTreeMap<(u32, u32, bool), Instant>,
}

impl Cluster {
    fn new(n: u32, cores: u32) -> Cluster {
        let now = Instant::now();
        let mut registry = AppRegistry::new();
        registry.register::<Sum>();
        let mut peers: Vec<Peer> = (0..n)
            .map(|id| Peer {
                core: Jobs::new(
                    id,
                    JobConfig {
                        cores,
                        ..JobConfig::default()
                    },
                    registry.clone(),
                    now,
                ),
                units: Vec::new(),
                shared: SharedVars::default(),
                alive: true,
            })
            .collect();
        for (id, peer) in peers.iter_mut().enumerate() {
            let others = (0..n)
                .filter(|o| *o != id as u32)
                .map(|o| (o, 0.0))
                .collect();
            peer.core.set_members(others);
        }
        Cluster {
            now,
            peers,
            wire: Vec::new(),
            statuses: Vec::new(),
            merged_units: Vec::new(),
            rng: SmallRng::seed_from_u64(1),
            last_delivery: BTreeMap::new(),
        }
    }

    fn drain(&mut self, id: u32) {
        let registry = self.peers[id as usize].core.registry().clone();
        while let Some(out) = self.peers[id as usize].core.poll() {
            match out {
                JobOutput::Send { to, msg, bulk } => {
                    if let JobMsg::UnitDone { unit, .. } = &msg {
                        self.merged_units.push(*unit);
                    }
                    // Pipes deliver in order per sender, receiver and class.
                    let latency = Duration::from_micros(self.rng.random_range(100..3000));
                    let channel = (id, to, bulk);
                    let last = self.last_delivery.get(&channel).copied();
                    let at = last.map_or(self.now + latency, |l| l.max(self.now + latency));
                    self.last_delivery.insert(channel, at);
                    self.wire.push((at, id, to, msg));
                }
                JobOutput::Run {
                    job,
                    unit,
                    app,
                    state,
                    shared,
                } => {
                    let restored = registry.get(&app).unwrap().restore(&state).unwrap();
                    let peer = &mut self.peers[id as usize];
                    peer.shared.merge(&shared);
                    peer.units.push((job, unit, restored));
                }
                JobOutput::Divide {
                    job,
                    unit,
                    new_unit,
                    requester,
                } => {
                    let peer = &mut self.peers[id as usize];
                    let part = peer
                        .units
                        .iter_mut()
                        .find(|(j, u, _)| *j == job && *u == unit)
                        .and_then(|(_, _, unit)| unit.divide());
                    let shared = peer.shared.clone();
                    peer.core.divided(job, new_unit, requester, part, shared);
                }
                JobOutput::SharedChanged { vars, .. } => {
                    self.peers[id as usize].shared.merge(&vars);
                }
                JobOutput::Status(view) => self.statuses.push((id, view)),
                JobOutput::Unknown(_) => {}
            }
        }
    }

    /// Runs until `done` or the limit; each peer steps each unit once per ms.
    fn run(&mut self, limit: Duration, done: impl Fn(&Cluster) -> bool) {
        let end = self.now + limit;
        while self.now < end && !done(self) {
            self.now += Duration::from_millis(1);
            let now = self.now;
            let (due, rest): (Vec<_>, Vec<_>) = self.wire.drain(..).partition(|w| w.0 <= now);
            self.wire = rest;
            for (_, from, to, msg) in due {
                if !self.peers[to as usize].alive || !self.peers[from as usize].alive {
                    continue;
                }
                self.peers[to as usize].core.handle_message(now, from, msg);
                self.drain(to);
            }
            for id in 0..self.peers.len() as u32 {
                if !self.peers[id as usize].alive {
                    continue;
                }
                let peer = &mut self.peers[id as usize];
                let mut finished = Vec::new();
                for (i, (job, unit, state)) in peer.units.iter_mut().enumerate() {
                    let mut ctx = StepContext::new(&mut peer.shared, 50);
                    if let Step::Done(out) = state.step(&mut ctx) {
                        finished.push((i, *job, *unit, out));
                    }
                    let work = ctx.work();
                    peer.core.report_progress(*job, work);
                }
                for (i, job, unit, out) in finished.into_iter().rev() {
                    peer.units.remove(i);
                    peer.core.unit_finished(now, job, unit, out);
                }
                if peer.core.poll_timeout() <= now {
                    peer.core.handle_timeout(now);
                }
                self.drain(id);
            }
        }
    }

    fn submit(&mut self, from: u32, home: u32, n: u64) -> JobId {
        let job = JobId([from as u8; 16]);
        let params = self.peers[from as usize]
            .core
            .prepare("sum", &[n.to_string()])
            .unwrap();
        self.peers[from as usize]
            .core
            .submit(job, "sum".into(), params, home);
        self.drain(from);
        job
    }

    fn final_status(&self, job: JobId) -> Option<&JobView<u32>> {
        self.statuses
            .iter()
            .map(|(_, v)| v)
            .find(|v| v.job == job && !matches!(v.state, JobState::Running))
    }
}

fn result_of(view: &JobView<u32>) -> u64 {
    match &view.state {
        JobState::Done { result } => postcard::from_bytes(result).unwrap(),
        other => panic!("job not done: {other:?}"),
    }
}

#[test]
fn three_peers_steal_and_merge_every_unit_once() {
    let mut cluster = Cluster::new(3, 2);
    let n = 200_000;
    let job = cluster.submit(0, 1, n);
    cluster.run(Duration::from_secs(60), |c| c.final_status(job).is_some());
    let view = cluster.final_status(job).expect("job finished").clone();
    assert_eq!(result_of(&view), n * (n + 1) / 2);
    assert!(
        view.stats.steals >= 3,
        "idle peers stole work: {:?}",
        view.stats
    );
    assert_eq!(view.stats.units, view.stats.units_done);
    let mut merged = cluster.merged_units.clone();
    let before = merged.len();
    merged.sort_unstable();
    merged.dedup();
    assert_eq!(before, merged.len(), "no unit reported twice");
    assert_eq!(merged.len() as u64, view.stats.units);
    assert_eq!(view.stats.work, n, "every number counted once");
    assert!(view.stats.peers_used >= 3, "{:?}", view.contributions);
}

#[test]
fn a_peer_joining_mid_job_gets_work() {
    let mut cluster = Cluster::new(3, 1);
    // Peer 2 is not a member yet.
    cluster.peers[2].alive = false;
    cluster.peers[0].core.set_members(vec![(1, 0.0)]);
    cluster.peers[1].core.set_members(vec![(0, 0.0)]);
    let job = cluster.submit(0, 0, 400_000);
    cluster.run(Duration::from_millis(300), |_| false);
    assert!(cluster.final_status(job).is_none());
    cluster.peers[2].alive = true;
    cluster.peers[0].core.set_members(vec![(1, 0.0), (2, 0.0)]);
    cluster.peers[1].core.set_members(vec![(0, 0.0), (2, 0.0)]);
    cluster.peers[2].core.set_members(vec![(0, 0.0), (1, 0.0)]);
    let joined_at = cluster.now;
    cluster.run(Duration::from_secs(5), |c| !c.peers[2].units.is_empty());
    let waited = cluster.now - joined_at;
    assert!(
        waited < Duration::from_millis(200),
        "newcomer got work after {waited:?}"
    );
    cluster.run(Duration::from_secs(60), |c| c.final_status(job).is_some());
    let view = cluster.final_status(job).unwrap();
    assert_eq!(result_of(view), 400_000 * 400_001 / 2);
    let newcomer = view
        .contributions
        .iter()
        .find(|(p, _)| *p == 2)
        .map(|(_, c)| c.units_done);
    assert!(newcomer.unwrap_or(0) >= 1, "{:?}", view.contributions);
}

#[test]
fn a_lone_peer_finishes_its_own_job() {
    let mut cluster = Cluster::new(1, 1);
    let job = cluster.submit(0, 0, 10_000);
    cluster.run(Duration::from_secs(10), |c| c.final_status(job).is_some());
    assert_eq!(
        result_of(cluster.final_status(job).unwrap()),
        10_000 * 10_001 / 2
    );
}

#[test]
fn bad_jobs_fail_with_a_clear_reason_at_the_submitter() {
    let mut cluster = Cluster::new(2, 1);
    assert!(matches!(
        cluster.peers[0].core.prepare("sum", &["0".into()]),
        Err(AppError::BadParams(_))
    ));
    assert!(matches!(
        cluster.peers[0].core.prepare("nope", &[]),
        Err(AppError::UnknownApp(_))
    ));
    // A home that lacks the app (or gets bad parameters) answers with Failed.
    let job = JobId([9; 16]);
    cluster.peers[0].core.submit(job, "nope".into(), vec![], 1);
    cluster.drain(0);
    cluster.run(Duration::from_secs(1), |c| c.final_status(job).is_some());
    match &cluster.final_status(job).unwrap().state {
        JobState::Failed { reason } => assert!(reason.contains("no application"), "{reason}"),
        other => panic!("{other:?}"),
    }
    let job = JobId([8; 16]);
    cluster.peers[0]
        .core
        .submit(job, "sum".into(), postcard::to_stdvec(&0u64).unwrap(), 1);
    cluster.drain(0);
    cluster.run(Duration::from_secs(1), |c| c.final_status(job).is_some());
    assert!(matches!(
        cluster.final_status(job).unwrap().state,
        JobState::Failed { .. }
    ));
}

#[test]
fn results_can_be_queried_from_the_home_by_id() {
    let mut cluster = Cluster::new(3, 1);
    let job = cluster.submit(0, 1, 5_000);
    cluster.run(Duration::from_secs(10), |c| c.final_status(job).is_some());
    cluster.statuses.clear();
    cluster.peers[2].core.query(job, 1);
    cluster.drain(2);
    cluster.run(Duration::from_secs(1), |c| !c.statuses.is_empty());
    let (asker, view) = &cluster.statuses[0];
    assert_eq!(*asker, 2);
    assert_eq!(result_of(view), 5_000 * 5_001 / 2);
    cluster.peers[2].core.query(JobId([7; 16]), 1);
    cluster.drain(2);
    cluster.run(Duration::from_millis(50), |_| false);
}
