//! The sans-IO node: two nodes in virtual time find each other and talk
//! through it; a frame of another wire version is refused and counted; a
//! finished job's namespace is destroyed unless its submitter kept it; and
//! no bytes a remote peer can send — any frame, any pipe payload, any job
//! message — make the node panic.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use colony_core::acquaintance::{AcquaintanceConfig, Acquaintances};
use colony_core::divisible::{App, AppError, AppRegistry, AppSource, Divisible, Step, StepContext};
use colony_core::ft::FaultTolerance;
use colony_core::job::{JobConfig, JobId, JobState, Jobs, SubmitOptions};
use colony_core::membership::{MemberState, Membership, MembershipConfig, PeerStats};
use colony_core::mesh::{MeshPeer, MeshPeerConfig};
use colony_core::modules::module_id;
use colony_core::node::{NamespaceKept, Node, NodeConfig, NodeInput, NodeOutput, Notice};
use colony_core::object::{ObjectTypes, Objects, ObjectsConfig};
use colony_core::pipe::{PipeConfig, PipeFrame, Pipes, TrafficClass};
use colony_core::space::{
    job_namespace, ObjectKey, RequestId, Space, SpaceConfig, SpaceError, SpaceOp, SpaceReply, Tags,
    GLOBAL,
};
use colony_core::wire::{self, Frame, PayloadKind, FRAME_MAGIC, PROTOCOL_VERSION};
use proptest::prelude::*;

mod common;
use common::{key_of, Sum};

/// A peer's module store as the registry sees it: `wasm:<id>` is the `sum`
/// app once `id` is held, missing before.
#[derive(Clone, Default)]
struct HeldModules(Arc<Mutex<BTreeMap<String, Vec<u8>>>>);

impl HeldModules {
    fn hold(&self, id: &str, bytes: Vec<u8>) {
        self.0.lock().unwrap().insert(id.to_string(), bytes);
    }

    fn get(&self, id: &str) -> Option<Vec<u8>> {
        self.0.lock().unwrap().get(id).cloned()
    }
}

impl AppSource for HeldModules {
    fn lookup(&self, name: &str) -> Option<Result<Arc<dyn App>, AppError>> {
        let id = name.strip_prefix("wasm:")?;
        Some(match self.get(id) {
            Some(_) => {
                let mut sum = AppRegistry::new();
                sum.register::<Sum>();
                sum.get("sum")
            }
            None => Err(AppError::ModuleMissing(id.to_string())),
        })
    }
}

const MAX_FRAME: usize = 1 << 20;

fn node(me: u64, now: Instant) -> Node<u64> {
    node_with(me, now, AppRegistry::new())
}

fn node_with(me: u64, now: Instant, apps: AppRegistry) -> Node<u64> {
    node_with_stats(me, now, apps, PeerStats::default())
}

fn node_with_stats(me: u64, now: Instant, apps: AppRegistry, stats: PeerStats) -> Node<u64> {
    let membership = Membership::new(
        me,
        1,
        vec![format!("/test/{me}")],
        stats,
        MembershipConfig::default(),
        me,
        now,
    );
    let pipes = Pipes::new(PipeConfig::default(), 1000 + me);
    let acquaintances = Acquaintances::new(AcquaintanceConfig::default(), 0, now);
    let jobs = Jobs::new(me, JobConfig::default(), apps, now, me, key_of);
    let space = Space::new(me, SpaceConfig::default(), key_of, 1000 + me, me);
    let objects = Objects::new(
        me,
        "test",
        ObjectsConfig::default(),
        ObjectTypes::new(),
        key_of,
        2000 + me,
    );
    let mesh = MeshPeer::new(me, MeshPeerConfig::default(), key_of, 3000 + me);
    Node::new(
        NodeConfig::default(),
        membership,
        pipes,
        acquaintances,
        jobs,
        space,
        objects,
        mesh,
        now,
    )
}

/// Two nodes on a perfect network in virtual time.
struct Pair {
    now: Instant,
    nodes: [Node<u64>; 2],
    /// Application messages each node received.
    received: [Vec<Vec<u8>>; 2],
    notices: Vec<Notice<u64>>,
    /// Query answers each node produced: (job, whether a status came).
    answers: [Vec<(JobId, bool)>; 2],
    /// Each node's guest modules.
    modules: [HeldModules; 2],
    /// Modules each node received from the other.
    fetched: [Vec<String>; 2],
    /// Object space answers each node produced.
    space_answers: [Vec<(RequestId, Result<SpaceReply, SpaceError>)>; 2],
    /// Nodes that have stopped (left): they get nothing and do nothing.
    stopped: [bool; 2],
}

impl Pair {
    fn new() -> Pair {
        let now = Instant::now();
        Pair {
            now,
            nodes: [node(0, now), node(1, now)],
            received: [Vec::new(), Vec::new()],
            notices: Vec::new(),
            answers: [Vec::new(), Vec::new()],
            modules: Default::default(),
            fetched: Default::default(),
            space_answers: Default::default(),
            stopped: [false; 2],
        }
    }

    /// Two nodes whose registries find `wasm:<id>` apps in their module
    /// stores.
    fn with_modules() -> Pair {
        let mut pair = Pair::new();
        for i in 0..2 {
            let mut apps = AppRegistry::new();
            apps.add_source(Arc::new(pair.modules[i].clone()));
            pair.nodes[i] = node_with(i as u64, pair.now, apps);
        }
        pair
    }

    /// Two nodes that run guests, or (`runs_guests` false for node 0) one
    /// that does not.
    fn with_guest_runners(runs_guests: [bool; 2]) -> Pair {
        let mut pair = Pair::new();
        for (i, runs_guests) in runs_guests.into_iter().enumerate() {
            let mut apps = AppRegistry::new();
            apps.add_source(Arc::new(pair.modules[i].clone()));
            let stats = PeerStats {
                runs_guests,
                ..PeerStats::default()
            };
            pair.nodes[i] = node_with_stats(i as u64, pair.now, apps, stats);
        }
        pair.nodes[0].handle(pair.now, NodeInput::Contact { peer: 1 });
        pair.run_for(Duration::from_secs(3));
        pair
    }

    /// Drains both nodes, carrying frames across, until both are quiet.
    fn settle(&mut self) {
        loop {
            let mut moved = false;
            for i in (0..2).filter(|i| !self.stopped[*i]) {
                while let Some(out) = self.nodes[i].poll() {
                    moved = true;
                    match out {
                        NodeOutput::Transmit { to, bytes, .. } => {
                            let to = to as usize;
                            if !self.stopped[to] {
                                self.nodes[to].handle_frame(self.now, i as u64, &bytes);
                            }
                        }
                        NodeOutput::SampleStats => {
                            let stats = self.nodes[i].membership().local().stats.clone();
                            self.nodes[i].handle(self.now, NodeInput::SetStats(stats));
                        }
                        NodeOutput::Notice(notice) => self.notices.push(notice),
                        NodeOutput::PersistSpace {
                            partition,
                            term,
                            seq,
                            ..
                        } => {
                            let input = NodeInput::SpaceDurable {
                                partition,
                                term,
                                seq,
                            };
                            self.nodes[i].handle(self.now, input);
                        }
                        NodeOutput::SpaceAnswer { id, result } => {
                            self.space_answers[i].push((id, result))
                        }
                        NodeOutput::QueryAnswer { job, view } => {
                            self.answers[i].push((job, view.is_some()))
                        }
                        NodeOutput::ServeModule { to, id } => {
                            let module = self.modules[i].get(&id).map(|b| (b, Vec::new()));
                            let input = NodeInput::SendModule { to, id, module };
                            self.nodes[i].handle(self.now, input);
                        }
                        NodeOutput::ModuleReceived {
                            from,
                            id,
                            bytes,
                            pushed,
                            ..
                        } => {
                            self.modules[i].hold(&id, bytes);
                            self.fetched[i].push(id.clone());
                            let input = NodeInput::ModuleStored {
                                id,
                                from,
                                pushed,
                                result: Ok(()),
                            };
                            self.nodes[i].handle(self.now, input);
                        }
                        _ => {}
                    }
                }
                while let Some(d) = self.nodes[i].pop_app_message() {
                    moved = true;
                    self.received[i].push(d.payload);
                }
            }
            if !moved {
                break;
            }
        }
    }

    /// Runs virtual time forward by `span`, timer by timer.
    fn run_for(&mut self, span: Duration) {
        let end = self.now + span;
        loop {
            self.settle();
            let stopped = self.stopped;
            let next = self
                .nodes
                .iter()
                .zip(stopped)
                .filter(|(_, stopped)| !stopped)
                .filter_map(|(n, _)| n.poll_timeout())
                .min()
                .unwrap_or(end);
            if next > end {
                self.now = end;
                return;
            }
            self.now = next.max(self.now);
            for (n, stopped) in self.nodes.iter_mut().zip(stopped) {
                if !stopped {
                    n.handle_timeout(self.now);
                }
            }
        }
    }
}

#[test]
fn two_nodes_meet_and_carry_an_application_message() {
    let mut pair = Pair::new();
    pair.nodes[0].handle(pair.now, NodeInput::Contact { peer: 1 });
    pair.run_for(Duration::from_secs(2));
    assert_eq!(
        pair.nodes[0].membership().state_of(&1),
        Some(MemberState::Alive)
    );
    assert_eq!(
        pair.nodes[1].membership().state_of(&0),
        Some(MemberState::Alive)
    );
    let now = pair.now;
    let token = pair.nodes[0]
        .send_app(now, 1, TrafficClass::EVENTS, b"hello")
        .expect("accepted");
    pair.run_for(Duration::from_millis(500));
    assert_eq!(pair.received[1], vec![b"hello".to_vec()]);
    assert!(
        !pair.nodes[0].sent_before_in_flight(&1, TrafficClass::EVENTS, token + 1),
        "the message is settled"
    );
    assert!(pair.notices.is_empty(), "{:?}", pair.notices);
}

/// Node 1 submits a job of module `id` to node 0, its primary.
fn submit_module_job(pair: &mut Pair, id: &str) -> JobId {
    pair.nodes[0].handle(pair.now, NodeInput::Contact { peer: 1 });
    pair.run_for(Duration::from_secs(3));
    let params = pair.nodes[1]
        .jobs()
        .prepare("sum", &["100".to_string()])
        .or_else(|_| {
            let mut sum = AppRegistry::new();
            sum.register::<Sum>();
            sum.get("sum")?.parse_args(&["100".to_string()])
        })
        .expect("params");
    let job = (0u8..=255)
        .map(|b| JobId([b; 16]))
        .find(|job| {
            pair.nodes[1]
                .jobs()
                .submit_home(*job, &FaultTolerance::default())
                == 0
        })
        .expect("some job id is homed at node 0");
    let now = pair.now;
    pair.nodes[1].submit(
        now,
        job,
        format!("wasm:{id}"),
        params,
        FaultTolerance::default(),
        SubmitOptions::default(),
    );
    pair.run_for(Duration::from_secs(2));
    job
}

#[test]
fn a_job_of_a_module_the_primary_lacks_waits_for_it_from_the_submitter() {
    let mut pair = Pair::with_modules();
    let id = module_id(b"module m");
    pair.modules[1].hold(&id, b"module m".to_vec());
    let job = submit_module_job(&mut pair, &id);
    assert_eq!(pair.fetched[0], vec![id.clone()]);
    assert_eq!(pair.modules[0].get(&id), Some(b"module m".to_vec()));
    assert_eq!(pair.nodes[0].counters().modules_fetched, 1);
    assert_eq!(pair.nodes[1].counters().modules_served, 1);
    assert!(
        pair.nodes[0].jobs().home_for(job).is_some(),
        "the primary took the job once the module was here"
    );
}

#[test]
fn a_module_nobody_holds_fails_the_job_with_the_reason() {
    let mut pair = Pair::with_modules();
    let id = module_id(b"module m");
    let job = submit_module_job(&mut pair, &id);
    assert!(pair.fetched[0].is_empty());
    assert!(pair.nodes[0].jobs().home_for(job).is_none());
    let why = unavailable(&pair, &id);
    assert!(why.contains("1 does not hold it"), "{why}");
}

/// Why node 0 could not get module `id`.
fn unavailable(pair: &Pair, wanted: &str) -> String {
    pair.notices
        .iter()
        .find_map(|n| match n {
            Notice::ModuleUnavailable { id, why } if id == wanted => Some(why.clone()),
            _ => None,
        })
        .expect("a notice says why")
}

#[test]
fn a_source_sending_other_bytes_than_the_module_is_not_believed() {
    let mut pair = Pair::with_modules();
    let id = module_id(b"module m");
    // Node 1 answers for `id` with bytes of another module.
    pair.modules[1].hold(&id, b"a trojan".to_vec());
    let job = submit_module_job(&mut pair, &id);
    assert!(pair.fetched[0].is_empty(), "nothing was stored");
    assert!(pair.modules[0].get(&id).is_none());
    assert!(pair.nodes[0].jobs().home_for(job).is_none());
    let why = unavailable(&pair, &id);
    assert!(why.contains("do not hash to the module's id"), "{why}");
}

#[test]
fn a_module_nobody_asked_for_is_dropped_and_counted() {
    let mut pair = Pair::with_modules();
    pair.nodes[0].handle(pair.now, NodeInput::Contact { peer: 1 });
    pair.run_for(Duration::from_secs(3));
    let now = pair.now;
    pair.nodes[1].handle(
        now,
        NodeInput::SendModule {
            to: 0,
            id: module_id(b"pushed"),
            module: Some((b"pushed".to_vec(), Vec::new())),
        },
    );
    pair.run_for(Duration::from_secs(1));
    assert!(pair.fetched[0].is_empty());
    assert_eq!(pair.nodes[0].counters().unsolicited_modules, 1);
    assert!(pair.modules[0].get(&module_id(b"pushed")).is_none());
}

#[test]
fn a_query_nobody_can_answer_is_answered_none() {
    let mut pair = Pair::new();
    pair.nodes[0].handle(pair.now, NodeInput::Contact { peer: 1 });
    pair.run_for(Duration::from_secs(2));
    let now = pair.now;
    let job = JobId([7; 16]);
    pair.nodes[0].handle(now, NodeInput::Query { job });
    pair.run_for(Duration::from_secs(2));
    assert_eq!(
        pair.answers[0],
        vec![(job, false)],
        "asked the home, then everyone: nobody knows the job"
    );
}

#[test]
fn a_frame_of_another_version_is_refused_and_counted() {
    let now = Instant::now();
    let mut n = node(0, now);
    let ack: Frame<u64> = Frame::Pipe(PipeFrame::Ack {
        class: TrafficClass::EVENTS,
        session: 1,
        cumulative: 0,
        sack: Vec::new(),
    });
    let mut bytes = wire::encode_frame(&ack, MAX_FRAME).expect("encodes");
    bytes[1] = PROTOCOL_VERSION + 1;
    n.handle_frame(now, 9, &bytes);
    let outputs: Vec<_> = std::iter::from_fn(|| n.poll()).collect();
    assert!(
        outputs.iter().any(|o| matches!(
            o,
            NodeOutput::Notice(Notice::WrongVersion { from: 9, theirs, ours })
                if *theirs == PROTOCOL_VERSION + 1 && *ours == PROTOCOL_VERSION
        )),
        "{outputs:?}"
    );
    assert_eq!(n.counters().wrong_version_frames, 1);
    assert_eq!(n.counters().malformed_frames, 0);
    assert_eq!(n.membership().state_of(&9), None, "nothing of it was used");
}

/// Object messages from a peer the membership view has never heard of
/// are dropped unread, counted and reported: before, a stranger's call was
/// served (answered "not here") and its forged replica could found or take
/// over an object's home.
#[test]
fn object_messages_from_a_stranger_are_refused_and_counted() {
    use colony_core::object::{CallId, Guid, ObjectMsg, ObjectUri};
    let now = Instant::now();
    let mut n = node(0, now);
    let lookup: ObjectMsg<u64> = ObjectMsg::Lookup {
        id: CallId {
            caller: Guid(7),
            seq: 1,
        },
        uri: ObjectUri::new("test", Guid(42)).expect("a URI"),
    };
    let body = wire::encode(&lookup, MAX_FRAME).expect("encodes");
    n.handle_frame(
        now,
        9,
        &pipe_data(wire::encode_payload(PayloadKind::Object, &body)),
    );
    let outputs: Vec<_> = std::iter::from_fn(|| n.poll()).collect();
    let answered = outputs.iter().any(|o| match o {
        NodeOutput::Transmit { to: 9, bytes, .. } => matches!(
            wire::decode_frame::<u64>(bytes, MAX_FRAME),
            Ok(Frame::Pipe(PipeFrame::Data { .. }))
        ),
        _ => false,
    });
    assert!(!answered, "a stranger's lookup was answered: {outputs:?}");
    assert!(
        outputs.iter().any(|o| matches!(
            o,
            NodeOutput::Notice(Notice::ObjectRefused {
                from: 9,
                message: "lookup"
            })
        )),
        "{outputs:?}"
    );
    assert_eq!(n.counters().refused_object_messages, 1);
    assert_eq!(n.counters().malformed_frames, 0);
}

/// Mesh messages from a stranger are dropped unread like object messages:
/// one could otherwise found cell records here or take a place in a cell.
/// A malformed one (a CellId digit out of any span) is counted malformed.
#[test]
fn mesh_messages_from_a_stranger_are_refused_and_malformed_ones_counted() {
    use colony_core::mesh::{CellId, MeshPeerMsg};
    let now = Instant::now();
    let mut n = node(0, now);
    let join: MeshPeerMsg<u64> = MeshPeerMsg::JoinCell {
        cell: CellId::root(),
    };
    let body = wire::encode(&join, MAX_FRAME).expect("encodes");
    n.handle_frame(
        now,
        9,
        &pipe_data(wire::encode_payload(PayloadKind::Mesh, &body)),
    );
    let outputs: Vec<_> = std::iter::from_fn(|| n.poll()).collect();
    assert!(
        outputs.iter().any(|o| matches!(
            o,
            NodeOutput::Notice(Notice::MeshRefused {
                from: 9,
                message: "JoinCell"
            })
        )),
        "{outputs:?}"
    );
    assert_eq!(n.counters().refused_mesh_messages, 1);
    assert!(
        n.mesh().record(&CellId::root()).is_none(),
        "a cell was founded"
    );
    assert_eq!(n.counters().malformed_frames, 0);

    // A CellId travels as its text; one that does not parse is malformed,
    // counted before anything asks who sent it.
    let mut bad = body.clone();
    assert_eq!(&bad[bad.len() - 2..], &[1, b'0'], "the root as text");
    bad.truncate(bad.len() - 2);
    bad.extend_from_slice(&[2, b'0', b'x']);
    n.handle_frame(
        now,
        9,
        &pipe_data_at(wire::encode_payload(PayloadKind::Mesh, &bad), 1),
    );
    let _: Vec<_> = std::iter::from_fn(|| n.poll()).collect();
    assert_eq!(n.counters().malformed_frames, 1);
    assert_eq!(n.counters().refused_mesh_messages, 1);
}

/// A sensor's frames reach its root super-peer together: the
/// acknowledgements owed for them travel back as one frame, outside the
/// pipes (so not acknowledged themselves), and
/// the sensor takes every one (it holds no frame after). A damaged batch
/// is counted as malformed, never a panic.
#[test]
fn mesh_acknowledgements_owed_together_travel_as_one_message() {
    use colony_core::mesh::{CellId, FtPolicy, MeshConfig, MeshRole, StreamClass};
    let mut pair = Pair::new();
    let now = pair.now;
    pair.nodes[0].handle(now, NodeInput::Contact { peer: 1 });
    pair.run_for(Duration::from_secs(3));
    let now = pair.now;
    pair.nodes[0]
        .mesh_mut()
        .start_super_peer(now, FtPolicy::FtAll)
        .expect("a super-peer");
    pair.run_for(Duration::from_secs(2));
    assert_eq!(pair.nodes[0].mesh().cell(), Some(&CellId::root()));
    // A root without clients holds the frames it owns for a while, and
    // acknowledges them only then: past it, at once.
    pair.run_for(MeshConfig::default().client_hold);
    let now = pair.now;
    pair.nodes[1]
        .mesh_mut()
        .start_sensor(now, FtPolicy::FtAll, CellId::root(), 0)
        .expect("a sensor");
    pair.run_for(Duration::from_secs(2));
    // The pipe acknowledgements the sensor sends for the other traffic
    // (the nodes' periodic messages) in a second.
    let acks_sent = |pair: &Pair| pair.nodes[1].pipes().stats().acks_sent;
    let before = acks_sent(&pair);
    pair.run_for(Duration::from_secs(1));
    let idle_acks = acks_sent(&pair) - before;
    let before = acks_sent(&pair);
    let now = pair.now;
    for i in 0..20u8 {
        pair.nodes[1]
            .mesh_mut()
            .send_frame(now, StreamClass::Event, vec![i; 100])
            .expect("a frame");
    }
    pair.run_for(Duration::from_secs(1));
    let Some(MeshRole::Sensor(sensor)) = pair.nodes[1].mesh().role() else {
        panic!("node 1 is a sensor");
    };
    assert_eq!(sensor.unacked_frames(), 0, "every frame acknowledged");
    let counters = pair.nodes[0].counters();
    assert_eq!(counters.mesh_batches_sent, 1, "{counters:?}");
    assert_eq!(counters.mesh_messages_batched, 20, "{counters:?}");
    // Outside the pipes: the sensor acknowledged no more pipe messages
    // than in a second of the other traffic.
    assert_eq!(
        acks_sent(&pair) - before,
        idle_acks,
        "pipe acks the sensor sent"
    );

    // A batch whose length runs past its end.
    let mut bad = vec![200, 0, 0, 0];
    bad.extend_from_slice(&[1, 2, 3]);
    let malformed = pair.nodes[1].counters().malformed_frames;
    let frame: Frame<u64> = Frame::MeshBatch(bad);
    pair.nodes[1].handle_frame(
        pair.now,
        0,
        &wire::encode_frame(&frame, MAX_FRAME).expect("encodes"),
    );
    while pair.nodes[1].poll().is_some() {}
    assert_eq!(pair.nodes[1].counters().malformed_frames, malformed + 1);
}

/// A pipe data frame from a fresh session: delivered at once, so its
/// payload reaches the node's routing.
fn pipe_data(payload: Vec<u8>) -> Vec<u8> {
    pipe_data_at(payload, 0)
}

/// Message `seq` of the same session as [`pipe_data`].
fn pipe_data_at(payload: Vec<u8>, seq: u64) -> Vec<u8> {
    let frame: Frame<u64> = Frame::Pipe(PipeFrame::Data {
        class: TrafficClass::EVENTS,
        session: 77,
        seq,
        base: 0,
        payload,
    });
    wire::encode_frame(&frame, MAX_FRAME).expect("encodes")
}

/// Feeds `bytes` to a fresh node from peer 5, then drains and runs its
/// timers for a while.
fn feed(bytes: &[u8]) {
    let now = Instant::now();
    let mut n = node(0, now);
    n.handle(now, NodeInput::Contact { peer: 5 });
    n.handle_frame(now, 5, bytes);
    while n.poll().is_some() {}
    while n.pop_app_message().is_some() {}
    let later = now + Duration::from_secs(3);
    n.handle_timeout(later);
    while n.poll().is_some() {}
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Any bytes as a frame, with or without a valid header.
    #[test]
    fn any_frame_bytes_never_panic(
        body in proptest::collection::vec(any::<u8>(), 0..512),
        header in any::<bool>(),
        kind in 0u8..3,
    ) {
        let mut bytes = Vec::new();
        if header {
            bytes.extend_from_slice(&[FRAME_MAGIC, PROTOCOL_VERSION, kind]);
        }
        bytes.extend_from_slice(&body);
        feed(&bytes);
    }

    /// Any pipe payload, of any kind byte.
    #[test]
    fn any_pipe_payload_never_panics(
        kind in any::<u8>(),
        body in proptest::collection::vec(any::<u8>(), 0..512),
    ) {
        let mut payload = vec![kind];
        payload.extend_from_slice(&body);
        feed(&pipe_data(payload));
    }

    /// Any job message: every variant tag of `JobMsg`, followed by
    /// arbitrary bytes, decoded and handled by the job core.
    #[test]
    fn any_job_message_never_panics(
        variant in 0u8..40,
        body in proptest::collection::vec(any::<u8>(), 0..512),
    ) {
        let mut message = vec![variant];
        message.extend_from_slice(&body);
        feed(&pipe_data(wire::encode_payload(PayloadKind::Job, &message)));
    }

    /// Any object space message: every variant tag of `SpaceMsg`, then
    /// arbitrary bytes, decoded and handled by the space core.
    #[test]
    fn any_space_message_never_panics(
        variant in 0u8..8,
        body in proptest::collection::vec(any::<u8>(), 0..512),
    ) {
        let mut message = vec![variant];
        message.extend_from_slice(&body);
        feed(&pipe_data(wire::encode_payload(PayloadKind::Space, &message)));
    }

    /// Any distributed-object message: every variant tag of `ObjectMsg`,
    /// then arbitrary bytes, decoded and refused or handled.
    #[test]
    fn any_object_message_never_panics(
        variant in 0u8..8,
        body in proptest::collection::vec(any::<u8>(), 0..512),
    ) {
        let mut message = vec![variant];
        message.extend_from_slice(&body);
        feed(&pipe_data(wire::encode_payload(PayloadKind::Object, &message)));
    }

    /// Any membership message: every variant tag, then arbitrary bytes.
    #[test]
    fn any_membership_message_never_panics(
        variant in 0u8..16,
        body in proptest::collection::vec(any::<u8>(), 0..512),
    ) {
        let mut bytes = vec![FRAME_MAGIC, PROTOCOL_VERSION, 0, variant];
        bytes.extend_from_slice(&body);
        feed(&bytes);
    }
}

#[test]
fn a_published_module_is_stored_by_its_home_which_says_so() {
    let mut pair = Pair::with_guest_runners([true, true]);
    let bytes = b"module p".to_vec();
    let id = module_id(&bytes);
    assert_eq!(
        pair.nodes[1].module_home(&id).len(),
        2,
        "both peers run guests: both are in the home"
    );
    pair.modules[1].hold(&id, bytes.clone());
    let now = pair.now;
    pair.nodes[1].handle(
        now,
        NodeInput::PublishModule {
            id: id.clone(),
            bytes: bytes.clone(),
            signatures: Vec::new(),
        },
    );
    pair.run_for(Duration::from_secs(1));
    assert_eq!(pair.modules[0].get(&id), Some(bytes));
    assert_eq!(pair.nodes[0].counters().modules_homed, 1);
    assert!(pair
        .notices
        .iter()
        .any(|n| matches!(n, Notice::ModuleHeld { id: held, by: 0 } if *held == id)));
    assert!(pair
        .notices
        .iter()
        .any(|n| matches!(n, Notice::ModuleReady { id: ready } if *ready == id)));
}

#[test]
fn a_module_pushed_to_a_peer_that_runs_no_guests_is_dropped() {
    let mut pair = Pair::with_guest_runners([false, true]);
    let bytes = b"module q".to_vec();
    let id = module_id(&bytes);
    assert_eq!(pair.nodes[1].module_home(&id), vec![1]);
    // Node 1 pushes anyway, as a hostile or confused peer would.
    let store = colony_core::modules::ModuleMsg::Store {
        id: id.clone(),
        bytes,
        signatures: Vec::new(),
    };
    let body = wire::encode(&store, MAX_FRAME).expect("encodes");
    let frame: Frame<u64> = Frame::Pipe(PipeFrame::Data {
        class: TrafficClass::BULK,
        session: u64::MAX / 2,
        seq: 0,
        base: 0,
        payload: wire::encode_payload(PayloadKind::Module, &body),
    });
    let now = pair.now;
    let bytes = wire::encode_frame(&frame, MAX_FRAME).expect("encodes");
    pair.nodes[0].handle_frame(now, 1, &bytes);
    pair.run_for(Duration::from_secs(1));
    assert!(pair.modules[0].get(&id).is_none());
    assert_eq!(pair.nodes[0].counters().unsolicited_modules, 1);
    assert_eq!(pair.nodes[0].counters().modules_homed, 0);
}

/// Asks `op` of node `at`'s space and runs until it is answered.
fn space_call(pair: &mut Pair, at: usize, op: SpaceOp) -> Result<SpaceReply, SpaceError> {
    let now = pair.now;
    let id = pair.nodes[at]
        .space_request(now, op, Duration::from_secs(10))
        .expect("accepted");
    for _ in 0..200 {
        if let Some(i) = pair.space_answers[at].iter().position(|(a, _)| *a == id) {
            return pair.space_answers[at].remove(i).1;
        }
        pair.run_for(Duration::from_millis(100));
    }
    panic!("space request {id} never answered");
}

#[test]
fn two_nodes_share_an_object_through_the_space() {
    let mut pair = Pair::new();
    pair.nodes[0].handle(pair.now, NodeInput::Contact { peer: 1 });
    // Long enough for both to publish the room they give the space.
    pair.run_for(Duration::from_secs(3));
    let key = ObjectKey::new(GLOBAL, "shared");
    let put = SpaceOp::Put {
        key: key.clone(),
        value: b"from node 0".to_vec(),
        tags: Tags::new(),
        condition: colony_core::space::Condition::Always,
        token: None,
    };
    assert_eq!(
        space_call(&mut pair, 0, put),
        Ok(SpaceReply::Written {
            version: 1,
            replaced: Default::default()
        })
    );
    match space_call(&mut pair, 1, SpaceOp::Get { key }) {
        Ok(SpaceReply::Value(Some(object))) => assert_eq!(object.value, b"from node 0"),
        other => panic!("node 1 read {other:?}"),
    }
    // Both hold the partition (a home of up to three on two peers).
    let partition = ObjectKey::new(GLOBAL, "shared").partition();
    for node in &pair.nodes {
        assert!(node.space().homes().contains_key(&partition));
    }
    // A space message that does not decode is counted, not acted on.
    let before = pair.nodes[0].counters().malformed_frames;
    let frame: Frame<u64> = Frame::Pipe(PipeFrame::Data {
        class: TrafficClass::EVENTS,
        session: u64::MAX / 2,
        seq: 0,
        base: 0,
        payload: wire::encode_payload(PayloadKind::Space, &[0xff; 9]),
    });
    let now = pair.now;
    let bytes = wire::encode_frame(&frame, MAX_FRAME).expect("encodes");
    pair.nodes[0].handle_frame(now, 1, &bytes);
    pair.run_for(Duration::from_millis(500));
    assert_eq!(pair.nodes[0].counters().malformed_frames, before + 1);
}

/// Reads `key` the cached way at node `at` and runs until it is answered.
fn cached_read(pair: &mut Pair, at: usize, key: &ObjectKey) -> Result<SpaceReply, SpaceError> {
    let now = pair.now;
    let id = pair.nodes[at]
        .space_read_cached(now, key.clone(), Duration::from_secs(10))
        .expect("accepted");
    for _ in 0..200 {
        if let Some(i) = pair.space_answers[at].iter().position(|(a, _)| *a == id) {
            return pair.space_answers[at].remove(i).1;
        }
        pair.run_for(Duration::from_millis(100));
    }
    panic!("cached read {id} never answered");
}

/// The value a read answered, `None` if the object is absent.
fn value_of(reply: Result<SpaceReply, SpaceError>) -> Option<Vec<u8>> {
    match reply {
        Ok(SpaceReply::Value(object)) => object.map(|o| o.value),
        other => panic!("a read answered {other:?}"),
    }
}

#[test]
fn a_cached_read_through_the_node_is_served_from_its_copy_and_catches_up() {
    let mut pair = Pair::new();
    pair.nodes[0].handle(pair.now, NodeInput::Contact { peer: 1 });
    pair.run_for(Duration::from_secs(3));
    let key = ObjectKey::new(GLOBAL, "cached");
    let put = |value: &[u8]| SpaceOp::Put {
        key: key.clone(),
        value: value.to_vec(),
        tags: Tags::new(),
        condition: colony_core::space::Condition::Always,
        token: None,
    };
    assert_eq!(
        space_call(&mut pair, 0, put(b"old")),
        Ok(SpaceReply::Written {
            version: 1,
            replaced: Default::default()
        })
    );
    // The first cached read at node 1 asks a replica; the second is
    // answered from the copy it kept.
    assert_eq!(pair.nodes[1].space().counters().cache_hits, 0);
    assert_eq!(
        value_of(cached_read(&mut pair, 1, &key)),
        Some(b"old".to_vec())
    );
    assert_eq!(pair.nodes[1].space().counters().cache_hits, 0);
    assert_eq!(
        value_of(cached_read(&mut pair, 1, &key)),
        Some(b"old".to_vec())
    );
    assert_eq!(pair.nodes[1].space().counters().cache_hits, 1);
    // Overwritten at node 0: node 1's cached reads show the old value or
    // the new one, nothing else, and the new one once its copy is checked.
    assert_eq!(
        space_call(&mut pair, 0, put(b"new")),
        Ok(SpaceReply::Written {
            version: 2,
            replaced: Default::default()
        })
    );
    let mut reads = 0;
    loop {
        let read = value_of(cached_read(&mut pair, 1, &key));
        reads += 1;
        match read.as_deref() {
            Some(b"new") => break,
            Some(b"old") => {}
            other => panic!("a cached read invented {other:?}"),
        }
        assert!(reads < 50, "still the old value after {reads} cached reads");
        pair.run_for(Duration::from_millis(50));
    }
    // A malformed key is refused at once.
    let now = pair.now;
    assert!(matches!(
        pair.nodes[1].space_read_cached(now, ObjectKey::new(GLOBAL, ""), Duration::from_secs(1)),
        Err(SpaceError::InvalidName(_))
    ));
}

/// [`Sum`] as an application that uses the object space: its job's
/// namespace is destroyed when the job ends, unless kept.
#[derive(serde::Serialize, serde::Deserialize)]
struct SpaceSum(Sum);

impl Divisible for SpaceSum {
    type Params = u64;
    type Output = u64;
    const NAME: &'static str = "space-sum";
    const USES_SPACE: bool = true;

    fn parse_args(args: &[String]) -> Result<u64, AppError> {
        Sum::parse_args(args)
    }

    fn init(n: &u64) -> Result<Self, AppError> {
        Sum::init(n).map(SpaceSum)
    }

    fn step(&mut self, ctx: &mut StepContext<'_>) -> Step<u64> {
        self.0.step(ctx)
    }

    fn divide(&mut self) -> Option<Self> {
        self.0.divide().map(SpaceSum)
    }

    fn merge(a: u64, b: u64) -> u64 {
        Sum::merge(a, b)
    }
}

/// Node 1 submits a `space-sum` job with `options` to node 0, its
/// primary; an object is written to the job's namespace; node 1 cancels
/// the job (the pair runs no units, so it would never end by itself).
/// Returns the pair, the job, and what reading the object gives then.
fn end_a_job_with_an_object_in_its_namespace(
    options: SubmitOptions,
    primary_leaves: bool,
) -> (Pair, JobId, Result<SpaceReply, SpaceError>) {
    let mut pair = Pair::new();
    for i in 0..2 {
        let mut apps = AppRegistry::new();
        apps.register::<SpaceSum>();
        pair.nodes[i] = node_with(i as u64, pair.now, apps);
    }
    pair.nodes[0].handle(pair.now, NodeInput::Contact { peer: 1 });
    pair.run_for(Duration::from_secs(3));
    let params = pair.nodes[1]
        .jobs()
        .prepare("space-sum", &["1000000000".to_string()])
        .expect("params");
    let ft = FaultTolerance::default();
    let job = (0u8..=255)
        .map(|b| JobId([b; 16]))
        .find(|job| pair.nodes[1].jobs().submit_home(*job, &ft) == 0)
        .expect("some job id is homed at node 0");
    let now = pair.now;
    pair.nodes[1].submit(now, job, "space-sum".into(), params, ft, options);
    pair.run_for(Duration::from_secs(1));
    let namespace = job_namespace(job);
    let create = SpaceOp::CreateNamespace {
        name: namespace.clone(),
    };
    assert!(
        matches!(
            space_call(&mut pair, 1, create),
            Ok(SpaceReply::Namespace { .. })
        ),
        "namespace created"
    );
    let key = ObjectKey::new(namespace, "row-0");
    let put = SpaceOp::Put {
        key: key.clone(),
        value: b"a row".to_vec(),
        tags: Tags::new(),
        condition: colony_core::space::Condition::Always,
        token: None,
    };
    assert_eq!(
        space_call(&mut pair, 1, put),
        Ok(SpaceReply::Written {
            version: 1,
            replaced: Default::default()
        })
    );
    pair.nodes[1].handle(pair.now, NodeInput::Cancel { job });
    let ended = |pair: &Pair| {
        pair.nodes[0]
            .jobs()
            .view(pair.now, job)
            .is_some_and(|v| matches!(v.state, JobState::Cancelled { .. }))
    };
    for _ in 0..5000 {
        if ended(&pair) {
            break;
        }
        pair.run_for(Duration::from_millis(1));
    }
    assert!(ended(&pair), "the job was not cancelled within 5 s");
    if primary_leaves {
        // The primary leaves the moment its job ends, as a submitting peer
        // does once it has the result: nobody else would destroy the
        // namespace.
        let now = pair.now;
        pair.nodes[0].handle(now, NodeInput::HandOver);
        for _ in 0..5000 {
            if pair.nodes[0].has_handed_over() {
                break;
            }
            pair.run_for(Duration::from_millis(1));
        }
        assert!(
            pair.nodes[0].has_handed_over(),
            "not handed over within 5 s"
        );
        let now = pair.now;
        pair.nodes[0].handle(now, NodeInput::Leave);
        pair.settle();
        pair.stopped[0] = true;
    }
    // Time for the primary's destroy request to be answered.
    pair.run_for(Duration::from_secs(1));
    let read = space_call(&mut pair, 1, SpaceOp::Get { key });
    (pair, job, read)
}

fn kept_notices(pair: &Pair, job: JobId) -> Vec<&NamespaceKept> {
    pair.notices
        .iter()
        .filter_map(|n| match n {
            Notice::JobNamespaceKept { job: j, because } if *j == job => Some(because),
            _ => None,
        })
        .collect()
}

#[test]
fn a_finished_job_s_namespace_is_destroyed_by_default() {
    let (pair, job, read) =
        end_a_job_with_an_object_in_its_namespace(SubmitOptions::default(), false);
    assert_eq!(read, Err(SpaceError::UnknownNamespace(job_namespace(job))));
    assert!(kept_notices(&pair, job).is_empty(), "{:?}", pair.notices);
}

/// CI once timed out waiting for a finished job's namespace to go: the
/// job's primary was the submitting peer, which left as soon as it had the
/// result, its destroy request still in flight.
#[test]
fn a_primary_leaving_as_its_job_ends_destroys_the_namespace_first() {
    let (pair, job, read) =
        end_a_job_with_an_object_in_its_namespace(SubmitOptions::default(), true);
    assert_eq!(read, Err(SpaceError::UnknownNamespace(job_namespace(job))));
    assert!(kept_notices(&pair, job).is_empty(), "{:?}", pair.notices);
}

#[test]
fn a_finished_job_s_namespace_is_kept_when_its_submitter_asked() {
    let keep = SubmitOptions {
        keep_namespace: true,
        ..SubmitOptions::default()
    };
    let (pair, job, read) = end_a_job_with_an_object_in_its_namespace(keep, false);
    match read {
        Ok(SpaceReply::Value(Some(object))) => assert_eq!(object.value, b"a row"),
        other => panic!("the kept namespace's object reads {other:?}"),
    }
    assert_eq!(
        kept_notices(&pair, job),
        vec![&NamespaceKept::SubmitterAsked],
        "the primary says it kept it"
    );
}
