//! The sans-IO node: two nodes in virtual time find each other and talk
//! through it; a frame of another wire version is refused and counted; and
//! no bytes a remote peer can send — any frame, any pipe payload, any job
//! message — make the node panic.

use std::time::{Duration, Instant};

use colony_core::acquaintance::{AcquaintanceConfig, Acquaintances};
use colony_core::divisible::AppRegistry;
use colony_core::job::{JobConfig, JobId, Jobs};
use colony_core::membership::{MemberState, Membership, MembershipConfig, PeerStats};
use colony_core::node::{Node, NodeConfig, NodeInput, NodeOutput, Notice};
use colony_core::pipe::{PipeConfig, PipeFrame, Pipes, TrafficClass};
use colony_core::wire::{self, Frame, PayloadKind, FRAME_MAGIC, PROTOCOL_VERSION};
use proptest::prelude::*;

mod common;
use common::key_of;

const MAX_FRAME: usize = 1 << 20;

fn node(me: u64, now: Instant) -> Node<u64> {
    let membership = Membership::new(
        me,
        1,
        vec![format!("/test/{me}")],
        PeerStats::default(),
        MembershipConfig::default(),
        me,
        now,
    );
    let pipes = Pipes::new(PipeConfig::default(), 1000 + me);
    let acquaintances = Acquaintances::new(AcquaintanceConfig::default(), 0, now);
    let jobs = Jobs::new(
        me,
        JobConfig::default(),
        AppRegistry::new(),
        now,
        me,
        key_of,
    );
    Node::new(
        NodeConfig::default(),
        membership,
        pipes,
        acquaintances,
        jobs,
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
        }
    }

    /// Drains both nodes, carrying frames across, until both are quiet.
    fn settle(&mut self) {
        loop {
            let mut moved = false;
            for i in 0..2 {
                while let Some(out) = self.nodes[i].poll() {
                    moved = true;
                    match out {
                        NodeOutput::Transmit { to, bytes, .. } => {
                            let to = to as usize;
                            self.nodes[to].handle_frame(self.now, i as u64, &bytes);
                        }
                        NodeOutput::SampleStats => {
                            let stats = self.nodes[i].membership().local().stats.clone();
                            self.nodes[i].handle(self.now, NodeInput::SetStats(stats));
                        }
                        NodeOutput::Notice(notice) => self.notices.push(notice),
                        NodeOutput::QueryAnswer { job, view } => {
                            self.answers[i].push((job, view.is_some()))
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
            let next = self
                .nodes
                .iter()
                .filter_map(|n| n.poll_timeout())
                .min()
                .unwrap_or(end);
            if next > end {
                self.now = end;
                return;
            }
            self.now = next.max(self.now);
            for n in &mut self.nodes {
                n.handle_timeout(self.now);
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

/// A pipe data frame from a fresh session: delivered at once, so its
/// payload reaches the node's routing.
fn pipe_data(payload: Vec<u8>) -> Vec<u8> {
    let frame: Frame<u64> = Frame::Pipe(PipeFrame::Data {
        class: TrafficClass::EVENTS,
        session: 77,
        seq: 0,
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
