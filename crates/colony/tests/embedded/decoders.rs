//! The two decoders the driver runs on bytes from the network, with the
//! runtime's real peer ids (`libp2p::PeerId`, whose own decoder parses a
//! multihash): `wire::decode::<Frame<PeerId>>` for every inbound frame and
//! `wire::decode::<JobMsg<PeerId>>` for every job message a pipe delivers.
//! Arbitrary bytes and edited valid encodings end in a value or an error,
//! never a panic. (What the cores do with decoded messages is fuzzed in
//! colony-core's `tests/decoders.rs`.)

use std::time::Duration;

use colony_core::divisible::SharedVars;
use colony_core::ft::FaultTolerance;
use colony_core::home::HomeMsg;
use colony_core::job::{JobId, JobMsg, JobState, JobStats, JobView};
use colony_core::membership::{MemberRecord, MemberState, MembershipMsg, PeerStats};
use colony_core::pipe::{PipeFrame, TrafficClass};
use colony_core::wire::{self, Frame};
use colony_net::libp2p::identity::Keypair;
use colony_net::libp2p::PeerId;
use proptest::prelude::*;

const MAX_FRAME: usize = 1 << 20;

fn cases(n: u32) -> ProptestConfig {
    let n = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(n);
    ProptestConfig {
        cases: n,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

fn peer(seed: u8) -> PeerId {
    match Keypair::ed25519_from_bytes([seed; 32]) {
        Ok(key) => key.public().to_peer_id(),
        Err(_) => PeerId::random(),
    }
}

fn record(p: PeerId) -> MemberRecord<PeerId> {
    MemberRecord {
        peer: p,
        state: MemberState::Alive,
        incarnation: u64::MAX,
        version: 3,
        addrs: vec!["/ip4/127.0.0.1/tcp/4001".into()],
        stats: PeerStats::default(),
        draining: false,
    }
}

/// Valid frames with real peer ids.
fn frames() -> Vec<Vec<u8>> {
    let (a, b) = (peer(1), peer(2));
    let frames: Vec<Frame<PeerId>> = vec![
        Frame::Membership(MembershipMsg::Ping {
            probe: 7,
            sender: record(a),
            updates: vec![record(b)],
        }),
        Frame::Membership(MembershipMsg::Sync {
            sender: record(a),
            view: vec![record(a), record(b)],
            reply: true,
        }),
        Frame::Pipe(PipeFrame::Data {
            class: TrafficClass::BULK,
            session: 1,
            seq: u64::MAX,
            base: 0,
            payload: vec![1, 2, 3],
        }),
        Frame::Pipe(PipeFrame::Ack {
            class: TrafficClass::EVENTS,
            session: 1,
            cumulative: 9,
            sack: vec![(11, 12), (u64::MAX, 0)],
        }),
    ];
    frames
        .iter()
        .map(|f| wire::encode(f, MAX_FRAME).expect("encodes"))
        .collect()
}

/// Valid job messages with real peer ids.
fn job_messages() -> Vec<Vec<u8>> {
    let (a, b) = (peer(1), peer(2));
    let job = JobId([3; 16]);
    let msgs: Vec<JobMsg<PeerId>> = vec![
        JobMsg::Advert {
            job,
            app: "nqueens".into(),
            home: a,
            lifetime_ms: 3000,
            submitter: b,
        },
        JobMsg::Cancel { job },
        JobMsg::Assign {
            job,
            unit: 1,
            epoch: 2,
            app: "nqueens".into(),
            state: vec![8, 1, 0, 0, 0, 255, 1, 0],
            shared: SharedVars::default(),
            ft: FaultTolerance {
                ttc: Duration::MAX,
                ..FaultTolerance::default()
            },
        },
        JobMsg::Status {
            view: JobView {
                job,
                app: "matmul".into(),
                params: vec![4, 7],
                home: a,
                home_members: vec![a, b],
                submitter: b,
                ft: FaultTolerance::default(),
                keep_namespace: true,
                state: JobState::Done { result: vec![0; 8] },
                stats: JobStats::default(),
                contributions: Vec::new(),
                shared: SharedVars::default(),
                elapsed_s: 1.5,
                home_majority_lost: None,
                declined: None,
                replicated: true,
            },
        },
        JobMsg::Home(HomeMsg::VoteReply {
            key: job,
            term: 4,
            granted: true,
            promised: u64::MAX,
            log_term: 3,
            log_seq: 9,
            primary: Some(b),
        }),
    ];
    msgs.iter()
        .map(|m| wire::encode(m, MAX_FRAME).expect("encodes"))
        .collect()
}

#[derive(Clone, Debug)]
enum Edit {
    Flip(usize, u8),
    Set(usize, u8),
    Insert(usize, u8),
    Remove(usize),
    Truncate(usize),
}

fn edits() -> impl Strategy<Value = Vec<Edit>> {
    let edit = prop_oneof![
        (any::<usize>(), 0u8..8).prop_map(|(i, b)| Edit::Flip(i, b)),
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Edit::Set(i, b)),
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Edit::Insert(i, b)),
        any::<usize>().prop_map(Edit::Remove),
        any::<usize>().prop_map(Edit::Truncate),
    ];
    proptest::collection::vec(edit, 1..5)
}

fn apply_edits(mut bytes: Vec<u8>, edits: &[Edit]) -> Vec<u8> {
    for e in edits {
        let len = bytes.len();
        match *e {
            Edit::Flip(i, b) if len > 0 => bytes[i % len] ^= 1 << b,
            Edit::Set(i, b) if len > 0 => bytes[i % len] = b,
            Edit::Insert(i, b) => bytes.insert(i % (len + 1), b),
            Edit::Remove(i) if len > 0 => {
                bytes.remove(i % len);
            }
            Edit::Truncate(i) => bytes.truncate(i % (len + 1)),
            _ => {}
        }
    }
    bytes
}

#[test]
fn valid_encodings_decode() {
    for bytes in frames() {
        assert!(wire::decode::<Frame<PeerId>>(&bytes, MAX_FRAME).is_ok());
    }
    for bytes in job_messages() {
        assert!(wire::decode::<JobMsg<PeerId>>(&bytes, MAX_FRAME).is_ok());
    }
}

proptest! {
    #![proptest_config(cases(2000))]

    #[test]
    fn garbage_is_an_error(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = wire::decode::<Frame<PeerId>>(&bytes, MAX_FRAME);
        let _ = wire::decode::<JobMsg<PeerId>>(&bytes, MAX_FRAME);
    }

    #[test]
    fn edited_frames_are_errors_or_frames(pick in any::<usize>(), edits in edits()) {
        let all = frames();
        let bytes = apply_edits(all[pick % all.len()].clone(), &edits);
        let _ = wire::decode::<Frame<PeerId>>(&bytes, MAX_FRAME);
    }

    #[test]
    fn edited_job_messages_are_errors_or_messages(pick in any::<usize>(), edits in edits()) {
        let all = job_messages();
        let bytes = apply_edits(all[pick % all.len()].clone(), &edits);
        let _ = wire::decode::<JobMsg<PeerId>>(&bytes, MAX_FRAME);
    }
}
