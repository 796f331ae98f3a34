//! Every decoder of colony-core that bytes from the network reach, and every
//! core those decoded messages are fed into, under hostile input: arbitrary
//! bytes, mutated valid encodings, and well-typed messages with extreme
//! numbers from random senders. The property is always the same: an error
//! or a refusal, never a panic, never an enormous allocation.
//!
//! Each property runs a fixed number of cases, so the whole file stays
//! within a few seconds of `cargo test`; `PROPTEST_CASES` raises them for a
//! longer search.

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use colony_core::divisible::{AppRegistry, SharedVars, Step, StepContext};
use colony_core::erasure::{self, Shard};
use colony_core::ft::{CheckpointStorage, FaultTolerance, FtProtocol};
use colony_core::home::{HomeMsg, Update};
use colony_core::job::{
    Declined, JobConfig, JobId, JobInput, JobMsg, JobOutput, JobState, JobStats, JobView, Jobs,
    Piece, PieceData, Report, SubmitOptions, UnitEvent,
};
use colony_core::membership::{
    self, ComputeWhen, MemberRecord, MemberState, Membership, MembershipConfig, MembershipMsg,
    PauseReason, PeerStats,
};
use colony_core::pipe::{PipeConfig, PipeFrame, Pipes, TrafficClass};
use colony_core::wire::{self, Frame};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;

mod common;
use common::{key_of, Sum};

// ---------------------------------------------------------------------------
// Allocation guard: the largest single allocation the test binary made.

struct Tracking;

static LARGEST_ALLOC: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Tracking {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LARGEST_ALLOC.fetch_max(layout.size(), Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LARGEST_ALLOC.fetch_max(new_size, Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Tracking = Tracking;

/// No input here is larger than a few hundred KiB: anything above this is
/// an allocation sized by a number in the input, not by the input.
const ALLOC_LIMIT: usize = 64 << 20;

fn check_allocations() -> Result<(), TestCaseError> {
    let largest = LARGEST_ALLOC.load(Ordering::Relaxed);
    prop_assert!(
        largest <= ALLOC_LIMIT,
        "an allocation of {largest} bytes was made"
    );
    Ok(())
}

/// The start of virtual time: one hour above the earliest `Instant` this
/// platform can represent. On Linux an `Instant` reaches far below the boot
/// time, on others (macOS, Windows) not at all; starting here, `now - d`
/// for a `d` a peer sent panics on every platform, as it would on those.
fn origin() -> Instant {
    let mut t = Instant::now();
    let mut step = Duration::from_secs(u64::MAX);
    while step >= Duration::from_secs(1) {
        match t.checked_sub(step) {
            Some(earlier) => t = earlier,
            None => step /= 2,
        }
    }
    t + Duration::from_secs(3600)
}

/// Cases per property: a few hundred to a few thousand, each test a few
/// seconds at most in a debug build.
fn cases(n: u32) -> ProptestConfig {
    let n = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(n);
    ProptestConfig {
        cases: n,
        // The regression inputs found so far are explicit tests below.
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

// ---------------------------------------------------------------------------
// Byte mutations of valid encodings.

/// One edit of an encoding: positions are taken modulo its length.
#[derive(Clone, Debug)]
enum Edit {
    Flip(usize, u8),
    Set(usize, u8),
    Insert(usize, u8),
    Remove(usize),
    Truncate(usize),
    /// Replace a byte by a varint continuation run (a huge length or number).
    Huge(usize),
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        (any::<usize>(), 0u8..8).prop_map(|(i, b)| Edit::Flip(i, b)),
        (
            any::<usize>(),
            prop_oneof![Just(0u8), Just(0xff), Just(0x7f), Just(0x80), any::<u8>()]
        )
            .prop_map(|(i, b)| Edit::Set(i, b)),
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Edit::Insert(i, b)),
        any::<usize>().prop_map(Edit::Remove),
        any::<usize>().prop_map(Edit::Truncate),
        any::<usize>().prop_map(Edit::Huge),
    ]
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
            Edit::Huge(i) if len > 0 => {
                let at = i % len;
                bytes.splice(
                    at..at + 1,
                    [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f],
                );
            }
            _ => {}
        }
    }
    bytes
}

fn edits() -> impl Strategy<Value = Vec<Edit>> {
    proptest::collection::vec(edit(), 1..6)
}

fn garbage() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..64),
        proptest::collection::vec(any::<u8>(), 0..2048),
        // Mostly continuation bytes: the longest varints and lengths.
        proptest::collection::vec(prop_oneof![Just(0xffu8), Just(0x80), any::<u8>()], 0..64),
    ]
}

// ---------------------------------------------------------------------------
// Well-typed values with extreme numbers.

fn num() -> impl Strategy<Value = u64> {
    prop_oneof![
        Just(0u64),
        Just(1),
        Just(u64::MAX),
        Just(u64::MAX - 1),
        Just(1 << 63),
        Just(u64::from(u32::MAX)),
        0u64..16,
        any::<u64>(),
    ]
}

fn small_u8() -> impl Strategy<Value = u8> {
    prop_oneof![
        Just(0u8),
        Just(1),
        Just(2),
        Just(3),
        Just(u8::MAX),
        any::<u8>()
    ]
}

fn duration() -> impl Strategy<Value = Duration> {
    prop_oneof![
        Just(Duration::ZERO),
        Just(Duration::from_nanos(1)),
        Just(Duration::from_secs(1)),
        Just(Duration::MAX),
        Just(Duration::from_secs(u64::MAX / 2)),
        (any::<u64>(), 0u32..1_000_000_000).prop_map(|(s, n)| Duration::new(s, n)),
    ]
}

fn string() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        Just("sum".to_string()),
        Just("nope".to_string()),
        "\\PC{0,40}",
    ]
}

fn shared_vars() -> BoxedStrategy<SharedVars> {
    proptest::collection::vec((string(), any::<bool>(), any::<i64>()), 0..4)
        .prop_map(|vars| {
            let mut shared = SharedVars::default();
            for (name, min, value) in vars {
                let kind = if min {
                    colony_core::divisible::Monotone::Min
                } else {
                    colony_core::divisible::Monotone::Max
                };
                shared.offer(&name, kind, value);
            }
            shared
        })
        .boxed()
}

fn storage() -> BoxedStrategy<CheckpointStorage> {
    prop_oneof![
        Just(CheckpointStorage::Local),
        small_u8().prop_map(|r| CheckpointStorage::Copies { r }),
        (small_u8(), small_u8()).prop_map(|(k, m)| CheckpointStorage::Shards { k, m }),
    ]
    .boxed()
}

fn fault_tolerance() -> BoxedStrategy<FaultTolerance> {
    (
        any::<bool>(),
        duration(),
        storage(),
        small_u8(),
        any::<bool>(),
    )
        .prop_map(
            |(checkpoint, ttc, storage, home_size, durable)| FaultTolerance {
                protocol: if checkpoint {
                    FtProtocol::Checkpoint
                } else {
                    FtProtocol::None
                },
                ttc,
                storage,
                home_size,
                durable,
            },
        )
        .boxed()
}

fn state_bytes() -> BoxedStrategy<Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..32),
        // A valid state of the test app, with extreme numbers.
        (num(), num(), num()).prop_map(|(next, end, acc)| {
            postcard::to_stdvec(&Sum { next, end, acc }).unwrap_or_default()
        }),
        num().prop_map(|n| postcard::to_stdvec(&n).unwrap_or_default()),
    ]
    .boxed()
}

fn shard() -> BoxedStrategy<Shard> {
    (
        small_u8(),
        small_u8(),
        small_u8(),
        prop_oneof![Just(0u32), Just(1), Just(u32::MAX), any::<u32>()],
        proptest::collection::vec(any::<u8>(), 0..16),
    )
        .prop_map(|(index, k, m, len, bytes)| Shard {
            index,
            k,
            m,
            len,
            bytes,
        })
        .boxed()
}

fn piece() -> BoxedStrategy<Piece> {
    (
        num(),
        num(),
        small_u8(),
        prop_oneof![
            state_bytes().prop_map(PieceData::Copy),
            shard().prop_map(PieceData::Shard),
            state_bytes().prop_map(PieceData::Local),
        ],
    )
        .prop_map(|(epoch, version, index, data)| Piece {
            epoch,
            version,
            index,
            data,
        })
        .boxed()
}

fn report() -> BoxedStrategy<Report> {
    prop_oneof![
        Just(Report::Started),
        (state_bytes(), shared_vars())
            .prop_map(|(state, shared)| Report::Checkpoint { state, shared }),
        (shared_vars(), num())
            .prop_map(|(shared, version)| Report::LocalCheckpoint { shared, version }),
        (num(), state_bytes(), state_bytes(), shared_vars()).prop_map(
            |(steal, part, remaining, shared)| Report::Divided {
                steal,
                part,
                remaining,
                shared
            }
        ),
        state_bytes().prop_map(|output| Report::Done { output }),
        state_bytes().prop_map(|state| Report::HandBack { state }),
        (state_bytes(), shared_vars(), num()).prop_map(|(state, shared, version)| {
            Report::Resume {
                state,
                shared,
                version,
            }
        }),
    ]
    .boxed()
}

/// The peers of the job tests: 0, 1, 2 run the job; 3 is a member that
/// never takes part; 4 and 99 are strangers (never in the view).
fn peer() -> impl Strategy<Value = u64> {
    prop_oneof![0u64..5, Just(99), Just(u64::MAX)]
}

const JOB: JobId = JobId([7; 16]);

fn job_id() -> impl Strategy<Value = JobId> {
    prop_oneof![
        4 => Just(JOB),
        1 => any::<[u8; 16]>().prop_map(JobId),
    ]
}

fn unit_id() -> impl Strategy<Value = u64> {
    prop_oneof![0u64..4, num()]
}

fn job_view() -> BoxedStrategy<JobView<u64>> {
    (
        job_id(),
        string(),
        peer(),
        proptest::collection::vec(peer(), 0..4),
        fault_tolerance(),
        prop_oneof![
            Just(JobState::Running),
            state_bytes().prop_map(|result| JobState::Done { result }),
            string().prop_map(|reason| JobState::Failed { reason }),
        ],
        prop_oneof![
            Just(0.0f64),
            Just(f64::NAN),
            Just(f64::INFINITY),
            Just(-1.0),
            any::<f64>()
        ],
        proptest::option::of((proptest::collection::vec((peer(), string()), 0..4), num())),
        any::<(bool, bool)>(),
    )
        .prop_map(
            |(job, app, home, home_members, ft, state, elapsed_s, declined, flags)| {
                let (keep_namespace, replicated) = flags;
                JobView {
                    job,
                    app,
                    params: Vec::new(),
                    home,
                    home_members,
                    submitter: home,
                    ft,
                    keep_namespace,
                    state,
                    stats: JobStats::default(),
                    contributions: Vec::new(),
                    shared: SharedVars::default(),
                    elapsed_s,
                    home_majority_lost: None,
                    declined: declined
                        .map(|(peers, unlisted)| Box::new(Declined { peers, unlisted })),
                    replicated,
                }
            },
        )
        .boxed()
}

fn job_msg() -> BoxedStrategy<JobMsg<u64>> {
    prop_oneof![
        (
            job_id(),
            string(),
            state_bytes(),
            fault_tolerance(),
            proptest::option::of(num()),
            any::<bool>()
        )
            .prop_map(|(job, app, params, ft, deadline_ms, keep_namespace)| {
                JobMsg::Submit {
                    job,
                    app,
                    params,
                    ft,
                    deadline_ms,
                    keep_namespace,
                }
            }),
        (job_id(), string(), peer(), num(), peer()).prop_map(
            |(job, app, home, lifetime_ms, submitter)| JobMsg::Advert {
                job,
                app,
                home,
                lifetime_ms,
                submitter,
            }
        ),
        job_id().prop_map(|job| JobMsg::Cancel { job }),
        (job_id(), num()).prop_map(|(job, unit)| JobMsg::PiecesLost { job, unit }),
        (job_id(), num(), num()).prop_map(|(job, unit, epoch)| JobMsg::CheckpointNow {
            job,
            unit,
            epoch
        }),
        (job_id(), num()).prop_map(|(job, token)| JobMsg::Holds { job, token }),
        (job_id(), string()).prop_map(|(job, reason)| JobMsg::Declined { job, reason }),
        (
            job_id(),
            num(),
            proptest::collection::vec((num(), num()), 0..8)
        )
            .prop_map(|(job, token, units)| JobMsg::Held { job, token, units }),
        (job_id(), num(), num(), string()).prop_map(|(job, unit, epoch, reason)| {
            JobMsg::TooLarge {
                job,
                unit,
                epoch,
                reason,
            }
        }),
        (job_id(), proptest::option::of(string()))
            .prop_map(|(job, refused)| JobMsg::CancelReply { job, refused }),
        (
            job_id(),
            prop_oneof![Just(0u32), Just(u32::MAX), any::<u32>()]
        )
            .prop_map(|(job, free)| JobMsg::WorkRequest { job, free }),
        (job_id(), any::<bool>()).prop_map(|(job, finished)| JobMsg::NoWork { job, finished }),
        (job_id(), num()).prop_map(|(job, steal)| JobMsg::StealRequest { job, steal }),
        (job_id(), num()).prop_map(|(job, steal)| JobMsg::StealDeclined { job, steal }),
        (
            job_id(),
            unit_id(),
            num(),
            string(),
            state_bytes(),
            shared_vars(),
            fault_tolerance()
        )
            .prop_map(
                |(job, unit, epoch, app, state, shared, ft)| JobMsg::Assign {
                    job,
                    unit,
                    epoch,
                    app,
                    state,
                    shared,
                    ft
                }
            ),
        (job_id(), unit_id(), num(), num(), num(), report()).prop_map(
            |(job, unit, epoch, seq, after, report)| JobMsg::Report {
                job,
                unit,
                epoch,
                seq,
                after,
                report
            }
        ),
        (job_id(), unit_id(), num(), num()).prop_map(|(job, unit, epoch, seq)| JobMsg::Ack {
            job,
            unit,
            epoch,
            seq
        }),
        (job_id(), unit_id(), num()).prop_map(|(job, unit, epoch)| JobMsg::Stale {
            job,
            unit,
            epoch
        }),
        (job_id(), num()).prop_map(|(job, work)| JobMsg::Progress { job, work }),
        (job_id(), shared_vars()).prop_map(|(job, vars)| JobMsg::Shared { job, vars }),
        (job_id(), shared_vars()).prop_map(|(job, vars)| JobMsg::Improved { job, vars }),
        job_view().prop_map(|view| JobMsg::Status { view }),
        job_id().prop_map(|job| JobMsg::Query { job }),
        job_id().prop_map(|job| JobMsg::Unknown { job }),
        (job_id(), num(), num(), num()).prop_map(|(key, term, seq, round)| {
            JobMsg::Home(HomeMsg::Ack {
                key,
                term,
                seq,
                round,
            })
        }),
        (job_id(), num()).prop_map(|(key, term)| JobMsg::Home(HomeMsg::Nack { key, term })),
        (job_id(), num(), num(), num(), proptest::option::of(peer())).prop_map(
            |(key, term, last_term, last_seq, handed_over_by)| {
                JobMsg::Home(HomeMsg::Vote {
                    key,
                    term,
                    last_term,
                    last_seq,
                    handed_over_by,
                })
            }
        ),
        (
            job_id(),
            num(),
            any::<bool>(),
            num(),
            num(),
            num(),
            proptest::option::of(peer())
        )
            .prop_map(
                |(key, term, granted, promised, log_term, log_seq, primary)| {
                    JobMsg::Home(HomeMsg::VoteReply {
                        key,
                        term,
                        granted,
                        promised,
                        log_term,
                        log_seq,
                        primary,
                    })
                }
            ),
        (
            job_id(),
            num(),
            num(),
            prop_oneof![
                Just(Update::Promote),
                Just(Update::Release),
                Just(Update::Heartbeat),
                (
                    proptest::collection::vec(peer(), 0..5),
                    proptest::collection::vec(peer(), 0..5)
                )
                    .prop_map(|(members, config)| Update::Delta {
                        members,
                        config,
                        delta: None,
                    }),
            ]
        )
            .prop_map(|(key, term, seq, update)| JobMsg::Home(HomeMsg::Replica {
                round: 0,
                committed: 0,
                key,
                term,
                seq,
                update
            })),
        (
            job_id(),
            unit_id(),
            piece(),
            any::<bool>(),
            proptest::option::of((num(), num()))
        )
            .prop_map(|(job, unit, piece, durable, keep)| JobMsg::StorePiece {
                job,
                unit,
                piece,
                durable,
                keep
            }),
        (job_id(), unit_id(), num(), num(), small_u8()).prop_map(
            |(job, unit, epoch, version, index)| JobMsg::PieceStored {
                job,
                unit,
                epoch,
                version,
                index
            }
        ),
        (job_id(), unit_id()).prop_map(|(job, unit)| JobMsg::FetchPieces { job, unit }),
        (
            job_id(),
            unit_id(),
            proptest::collection::vec(piece(), 0..4)
        )
            .prop_map(|(job, unit, pieces)| JobMsg::Pieces { job, unit, pieces }),
    ]
    .boxed()
}

fn member_state() -> impl Strategy<Value = MemberState> {
    prop_oneof![
        Just(MemberState::Alive),
        Just(MemberState::Suspect),
        Just(MemberState::Dead),
        Just(MemberState::Left),
    ]
}

fn stats() -> BoxedStrategy<PeerStats> {
    prop_oneof![
        Just(PeerStats::default()),
        (any::<u32>(), any::<u32>(), any::<f32>(), num(), num()).prop_map(
            |(cores, cores_offered, load_avg_1m, free_memory_bytes, uptime_s)| PeerStats {
                cores,
                cores_offered,
                load_avg_1m,
                free_memory_bytes,
                uptime_s,
                session_start_unix_s: u64::MAX,
                jobs_done_session: u64::MAX,
                jobs_done_total: 0,
                units_done_session: u64::MAX,
                units_done_total: u64::MAX,
                runs_guests: cores % 2 == 0,
                guest_signers: if cores % 3 == 0 {
                    vec!["12D3KooWsigner".into(); 2]
                } else {
                    Vec::new()
                },
                when: if cores % 3 == 0 {
                    ComputeWhen::Idle
                } else {
                    ComputeWhen::Always
                },
                paused: match cores_offered % 3 {
                    0 => None,
                    1 => Some(PauseReason::OwnerBusy),
                    _ => Some(PauseReason::DailyLimit),
                },
                computing: cores_offered % 2 == 0,
                space_free_bytes: free_memory_bytes,
            }
        ),
    ]
    .boxed()
}

/// Membership peers: 0 is the core under test.
fn member() -> impl Strategy<Value = u64> {
    prop_oneof![0u64..8, num()]
}

fn record_of(peer: impl Strategy<Value = u64> + 'static) -> BoxedStrategy<MemberRecord<u64>> {
    (
        peer,
        member_state(),
        num(),
        num(),
        proptest::collection::vec(string(), 0..3),
        stats(),
        any::<bool>(),
    )
        .prop_map(
            |(peer, state, incarnation, version, addrs, stats, draining)| MemberRecord {
                peer,
                state,
                incarnation,
                version,
                addrs,
                stats,
                draining,
            },
        )
        .boxed()
}

fn records() -> BoxedStrategy<Vec<MemberRecord<u64>>> {
    prop_oneof![
        4 => proptest::collection::vec(record_of(member()), 0..8),
        // A huge list of distinct strangers.
        1 => (any::<u64>(), 100usize..1500).prop_map(|(base, n)| {
            (0..n as u64)
                .map(|i| MemberRecord {
                    peer: base.wrapping_add(i),
                    state: MemberState::Alive,
                    incarnation: i,
                    version: 0,
                    addrs: Vec::new(),
                    stats: PeerStats::default(),
                    draining: false,
                })
                .collect()
        }),
    ]
    .boxed()
}

/// A membership message whose sender record names `from` (others are
/// dropped at once, which tests nothing).
fn membership_msg_from(from: u64) -> BoxedStrategy<MembershipMsg<u64>> {
    let sender = || record_of(Just(from));
    prop_oneof![
        (num(), sender(), records()).prop_map(|(probe, sender, updates)| {
            MembershipMsg::Ping {
                probe,
                sender,
                updates,
            }
        }),
        (num(), sender(), records()).prop_map(|(probe, sender, updates)| {
            MembershipMsg::Ack {
                probe,
                sender,
                updates,
            }
        }),
        (sender(), records())
            .prop_map(|(sender, updates)| MembershipMsg::Gossip { sender, updates }),
        (sender(), records(), any::<bool>()).prop_map(|(sender, view, reply)| {
            MembershipMsg::Sync {
                sender,
                view,
                reply,
            }
        }),
        // Digests of the right length and of absurd ones.
        (sender(), proptest::collection::vec(any::<u64>(), 0..130))
            .prop_map(|(sender, buckets)| MembershipMsg::Digest { sender, buckets }),
        // Bucket lists out of range, repeated, or far too long.
        (
            sender(),
            proptest::collection::vec(any::<u16>(), 0..300),
            records(),
            any::<bool>()
        )
            .prop_map(|(sender, buckets, records, reply)| MembershipMsg::Delta {
                sender,
                buckets,
                records,
                reply,
            }),
    ]
    .boxed()
}

fn membership_msg() -> BoxedStrategy<(u64, MembershipMsg<u64>)> {
    member()
        .prop_flat_map(|from| (Just(from), membership_msg_from(from)))
        .boxed()
}

fn class() -> impl Strategy<Value = TrafficClass> {
    prop_oneof![
        Just(TrafficClass::BULK),
        Just(TrafficClass::EVENTS),
        any::<u8>().prop_map(TrafficClass)
    ]
}

fn sack() -> BoxedStrategy<Vec<(u64, u64)>> {
    prop_oneof![
        4 => proptest::collection::vec((num(), num()), 0..8),
        // A huge list, far beyond `max_sack_ranges`.
        1 => (num(), 1000usize..20_000).prop_map(|(start, n)| {
            (0..n as u64)
                .map(|i| (start.wrapping_add(2 * i), start.wrapping_add(2 * i + 1)))
                .collect()
        }),
    ]
    .boxed()
}

fn pipe_frame() -> BoxedStrategy<PipeFrame> {
    // Sessions near the core's own (5) and the senders' (7), or extreme.
    let session = prop_oneof![Just(5u64), Just(7), num()];
    prop_oneof![
        (
            class(),
            session.clone(),
            num(),
            num(),
            proptest::collection::vec(any::<u8>(), 0..32)
        )
            .prop_map(|(class, session, seq, base, payload)| PipeFrame::Data {
                class,
                session,
                seq,
                base,
                payload
            }),
        (class(), session.clone(), num(), sack()).prop_map(|(class, session, cumulative, sack)| {
            PipeFrame::Ack {
                class,
                session,
                cumulative,
                sack,
            }
        }),
        (class(), session, num()).prop_map(|(class, session, base)| PipeFrame::Base {
            class,
            session,
            base
        }),
    ]
    .boxed()
}

fn frame() -> BoxedStrategy<Frame<u64>> {
    prop_oneof![
        membership_msg().prop_map(|(_, msg)| Frame::Membership(msg)),
        pipe_frame().prop_map(Frame::Pipe),
    ]
    .boxed()
}

// ---------------------------------------------------------------------------
// The wire codec.

const MAX_FRAME: usize = 1 << 20;

proptest! {
    #![proptest_config(cases(2000))]

    #[test]
    fn frames_from_garbage_are_errors(bytes in garbage()) {
        let _ = wire::decode::<Frame<u64>>(&bytes, MAX_FRAME);
        check_allocations()?;
    }

    #[test]
    fn job_messages_from_garbage_are_errors(bytes in garbage()) {
        let _ = wire::decode::<JobMsg<u64>>(&bytes, MAX_FRAME);
        check_allocations()?;
    }

    #[test]
    fn valid_frames_round_trip_and_mutations_are_errors_or_frames(
        frame in frame(),
        edits in edits(),
    ) {
        let bytes = wire::encode(&frame, usize::MAX).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let back: Frame<u64> = wire::decode(&bytes, usize::MAX)
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(wire::encode(&back, usize::MAX).ok(), Some(bytes.clone()));
        let mutated = apply_edits(bytes, &edits);
        let _ = wire::decode::<Frame<u64>>(&mutated, MAX_FRAME);
        check_allocations()?;
    }

    #[test]
    fn valid_job_messages_round_trip_and_mutations_are_errors_or_messages(
        msg in job_msg(),
        edits in edits(),
    ) {
        let bytes = wire::encode(&msg, usize::MAX).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let back: JobMsg<u64> = wire::decode(&bytes, usize::MAX)
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(wire::encode(&back, usize::MAX).ok(), Some(bytes.clone()));
        let mutated = apply_edits(bytes, &edits);
        let _ = wire::decode::<JobMsg<u64>>(&mutated, MAX_FRAME);
        check_allocations()?;
    }

    #[test]
    fn shards_from_the_network_decode_or_fail(
        shards in proptest::collection::vec(shard(), 0..6),
        blob in proptest::collection::vec(any::<u8>(), 0..200),
        k in 1u8..5,
        m in 0u8..4,
        edits in edits(),
    ) {
        let _ = erasure::decode(&shards);
        // Valid shards with one of them damaged.
        if let Ok(mut good) = erasure::encode(&blob, k, m) {
            let victim = edits.len() % good.len();
            let bytes = postcard::to_stdvec(&good[victim]).unwrap_or_default();
            match postcard::from_bytes::<Shard>(&apply_edits(bytes, &edits)) {
                Ok(damaged) => good[victim] = damaged,
                Err(_) => { good.remove(victim); }
            }
            let _ = erasure::decode(&good);
        }
        check_allocations()?;
    }
}

// ---------------------------------------------------------------------------
// The membership core.

#[derive(Clone, Debug)]
enum MemberAction {
    Message(u64, Box<MembershipMsg<u64>>),
    Contact(u64),
    Unreachable(u64),
    Advance(u64),
}

fn member_action() -> impl Strategy<Value = MemberAction> {
    prop_oneof![
        6 => membership_msg().prop_map(|(from, msg)| MemberAction::Message(from, Box::new(msg))),
        1 => member().prop_map(MemberAction::Contact),
        1 => member().prop_map(MemberAction::Unreachable),
        2 => prop_oneof![0u64..50, 0u64..5000].prop_map(MemberAction::Advance),
    ]
}

fn run_membership(actions: Vec<MemberAction>) {
    let mut now = origin();
    let mut core = Membership::new(
        0u64,
        3,
        vec!["/ip4/127.0.0.1/tcp/1".into()],
        PeerStats::default(),
        MembershipConfig::default(),
        1,
        now,
    );
    for action in actions {
        match action {
            MemberAction::Message(from, msg) => {
                core.handle(now, membership::Input::Message { from, msg: *msg })
            }
            MemberAction::Contact(peer) => core.handle(now, membership::Input::Contact { peer }),
            MemberAction::Unreachable(peer) => {
                core.handle(now, membership::Input::Unreachable { peer })
            }
            MemberAction::Advance(ms) => {
                now += Duration::from_millis(ms);
                core.handle_timeout(now);
            }
        }
        while core.poll().is_some() {}
        let _ = core.poll_timeout();
        let _ = core.view(now);
        let _ = core.monitored();
    }
}

proptest! {
    #![proptest_config(cases(600))]

    #[test]
    fn membership_survives_hostile_messages(
        actions in proptest::collection::vec(member_action(), 1..30),
    ) {
        run_membership(actions);
        check_allocations()?;
    }
}

/// Found by `membership_survives_hostile_messages`: a record about this very
/// peer at the highest incarnation made it refute at `u64::MAX + 1`.
#[test]
fn membership_refutes_a_record_at_the_highest_incarnation() {
    let me_dead = MemberRecord {
        peer: 0u64,
        state: MemberState::Dead,
        incarnation: u64::MAX,
        version: 0,
        addrs: Vec::new(),
        stats: PeerStats::default(),
        draining: false,
    };
    let sender = MemberRecord {
        peer: 1u64,
        state: MemberState::Alive,
        incarnation: 0,
        version: 0,
        addrs: Vec::new(),
        stats: PeerStats::default(),
        draining: false,
    };
    run_membership(vec![
        MemberAction::Message(
            1,
            Box::new(MembershipMsg::Gossip {
                sender: sender.clone(),
                updates: vec![me_dead.clone()],
            }),
        ),
        MemberAction::Message(
            1,
            Box::new(MembershipMsg::Gossip {
                sender,
                updates: vec![me_dead],
            }),
        ),
        MemberAction::Advance(1000),
    ]);
}

// ---------------------------------------------------------------------------
// The pipe core.

#[derive(Clone, Debug)]
enum PipeAction {
    /// A frame from peer 1 or 2 (or a stranger).
    Frame(u64, PipeFrame),
    /// This peer sends a message of `len` bytes.
    Send(u64, TrafficClass, usize),
    Advance(u64),
    Deliver,
    Dead(u64),
}

fn pipe_action() -> impl Strategy<Value = PipeAction> {
    let from = prop_oneof![Just(1u64), Just(2), num()];
    prop_oneof![
        6 => (from.clone(), pipe_frame()).prop_map(|(f, frame)| PipeAction::Frame(f, frame)),
        2 => (from.clone(), class(), 0usize..64).prop_map(|(to, c, len)| PipeAction::Send(to, c, len)),
        2 => prop_oneof![0u64..20, 0u64..3000].prop_map(PipeAction::Advance),
        2 => Just(PipeAction::Deliver),
        1 => from.prop_map(PipeAction::Dead),
    ]
}

fn run_pipes(actions: Vec<PipeAction>) {
    let mut now = origin();
    let config = PipeConfig {
        receive_window: 64,
        max_ready_messages: 32,
        max_buffered_bytes: 256,
        max_channels: 8,
        ..PipeConfig::default()
    };
    let mut core = Pipes::<u64>::new(config, 5);
    let mut token = 0;
    for action in actions {
        match action {
            PipeAction::Frame(from, frame) => core.handle_frame(now, from, frame),
            PipeAction::Send(to, class, len) => {
                token += 1;
                let _ = core.send(
                    now,
                    to,
                    class,
                    vec![0; len],
                    token,
                    now + Duration::from_secs(5),
                );
            }
            PipeAction::Advance(ms) => {
                now += Duration::from_millis(ms);
                core.handle_timeout(now);
            }
            PipeAction::Deliver => {
                let _ = core.pop_delivery();
            }
            PipeAction::Dead(peer) => core.peer_dead(&peer),
        }
        let mut outputs = 0;
        while core.poll().is_some() {
            outputs += 1;
            assert!(outputs < 100_000, "the pipe core produces outputs forever");
        }
        let _ = core.poll_timeout();
        let _ = core.pending_messages();
    }
}

proptest! {
    #![proptest_config(cases(1000))]

    #[test]
    fn pipes_survive_hostile_frames(
        actions in proptest::collection::vec(pipe_action(), 1..40),
    ) {
        run_pipes(actions);
        check_allocations()?;
    }
}

/// Found by `pipes_survive_hostile_frames`: a data frame whose base is the
/// highest number made the receive window's end overflow.
#[test]
fn pipes_take_data_at_the_highest_numbers() {
    let data = |seq, base| PipeFrame::Data {
        class: TrafficClass::BULK,
        session: 7,
        seq,
        base,
        payload: vec![1],
    };
    run_pipes(vec![
        PipeAction::Frame(1, data(u64::MAX, u64::MAX)),
        PipeAction::Frame(1, data(u64::MAX - 1, u64::MAX - 1)),
        PipeAction::Deliver,
        PipeAction::Frame(
            1,
            PipeFrame::Base {
                class: TrafficClass::BULK,
                session: 7,
                base: u64::MAX,
            },
        ),
        PipeAction::Frame(2, data(u64::MAX - 1, u64::MAX - 3)),
        PipeAction::Frame(2, data(u64::MAX - 2, u64::MAX - 3)),
        PipeAction::Frame(2, data(u64::MAX - 3, u64::MAX - 3)),
        PipeAction::Deliver,
        PipeAction::Deliver,
        PipeAction::Deliver,
        PipeAction::Advance(10),
    ]);
}

// ---------------------------------------------------------------------------
// The job core.

/// Three job cores (peers 0, 1, 2) and peer 3 in their view, exchanging
/// messages in virtual time; the harness plays the worker threads.
struct Cluster {
    now: Instant,
    cores: Vec<Jobs<u64>>,
    registry: AppRegistry,
    /// Messages in flight: (from, to, message).
    wire: VecDeque<(u64, u64, JobMsg<u64>)>,
    /// Messages delivered so far (a bounded sample), to replay mutated.
    seen: Vec<(u64, u64, JobMsg<u64>)>,
    /// Units handed to a worker: (peer, job, unit, state).
    units: Vec<(u64, JobId, u64, Vec<u8>)>,
}

const PEERS: u64 = 3;

impl Cluster {
    fn new() -> Cluster {
        let now = origin();
        let mut registry = AppRegistry::new();
        registry.register::<Sum>();
        let cores = (0..PEERS)
            .map(|id| {
                Jobs::new(
                    id,
                    JobConfig {
                        cores: 2,
                        ..JobConfig::default()
                    },
                    registry.clone(),
                    now,
                    id,
                    key_of,
                )
            })
            .collect();
        let mut cluster = Cluster {
            now,
            cores,
            registry,
            wire: VecDeque::new(),
            seen: Vec::new(),
            units: Vec::new(),
        };
        cluster.set_members(&[0, 1, 2]);
        cluster
    }

    fn set_members(&mut self, live: &[u64]) {
        for id in 0..PEERS {
            let others = live
                .iter()
                .filter(|p| **p != id)
                .map(|p| (*p, 0.0))
                .collect();
            self.cores[id as usize].handle(self.now, JobInput::Members(others));
            self.drain(id);
        }
    }

    /// A job of the test app, submitted by peer 0 and run until its home
    /// has replicated it and its units are out.
    fn with_job(ft: FaultTolerance) -> Cluster {
        let mut cluster = Cluster::new();
        let params = postcard::to_stdvec(&1_000_000u64).unwrap_or_default();
        cluster.cores[0].handle(
            cluster.now,
            JobInput::Submit {
                job: JOB,
                app: "sum".into(),
                params,
                ft,
                options: SubmitOptions::default(),
            },
        );
        cluster.drain(0);
        // Until the units are out and have reported once.
        for _ in 0..30 {
            while cluster.deliver_next() {}
            cluster.advance(100);
        }
        cluster
    }

    fn drain(&mut self, id: u64) {
        let now = self.now;
        while let Some(out) = self.cores[id as usize].poll() {
            match out {
                JobOutput::Send { to, msg, .. } => {
                    if to == id {
                        if self.seen.len() < 256 {
                            self.seen.push((id, id, msg.clone()));
                        }
                        self.cores[id as usize].handle(now, JobInput::Message { from: id, msg });
                    } else if to < PEERS && self.wire.len() < 10_000 {
                        self.wire.push_back((id, to, msg));
                    }
                }
                JobOutput::Run {
                    job, unit, state, ..
                } => {
                    if self.units.len() < 64 {
                        self.units.push((id, job, unit, state));
                    }
                }
                JobOutput::Checkpoint { job, unit } => {
                    let state = self
                        .units
                        .iter()
                        .find(|u| u.0 == id && u.1 == job && u.2 == unit)
                        .map(|u| u.3.clone());
                    if let Some(state) = state {
                        self.cores[id as usize].handle(
                            now,
                            JobInput::Unit(UnitEvent::Checkpointed {
                                job,
                                unit,
                                state,
                                shared: SharedVars::default(),
                            }),
                        );
                    }
                }
                JobOutput::Divide { job, unit } => {
                    let Some(held) = self
                        .units
                        .iter_mut()
                        .find(|u| u.0 == id && u.1 == job && u.2 == unit)
                    else {
                        continue;
                    };
                    let (part, remaining) = match self
                        .registry
                        .get("sum")
                        .and_then(|app| app.restore(&held.3))
                    {
                        Ok(mut running) => match (running.divide(), running.checkpoint()) {
                            (Ok(part), Ok(remaining)) => (part, remaining),
                            _ => (None, held.3.clone()),
                        },
                        Err(_) => (None, held.3.clone()),
                    };
                    held.3 = remaining.clone();
                    self.cores[id as usize].handle(
                        now,
                        JobInput::Unit(UnitEvent::Divided {
                            job,
                            unit,
                            part,
                            remaining,
                            shared: SharedVars::default(),
                        }),
                    );
                }
                JobOutput::Stop { job, unit } => {
                    self.units
                        .retain(|u| !(u.0 == id && u.1 == job && u.2 == unit));
                    self.cores[id as usize].handle(
                        now,
                        JobInput::Unit(UnitEvent::Stopped {
                            job,
                            unit,
                            state: None,
                        }),
                    );
                }
                JobOutput::Persist { key, piece } => {
                    self.cores[id as usize].handle(
                        now,
                        JobInput::Persisted {
                            key,
                            epoch: piece.epoch,
                            version: piece.version,
                        },
                    );
                }
                JobOutput::SharedChanged { .. }
                | JobOutput::Status(_)
                | JobOutput::CancelAnswer { .. }
                | JobOutput::Unknown(_)
                | JobOutput::Forget { .. }
                | JobOutput::Unpersist { .. }
                | JobOutput::Event(_) => {}
            }
        }
    }

    fn deliver(&mut self, from: u64, to: u64, msg: JobMsg<u64>) {
        if to >= PEERS {
            return;
        }
        if self.seen.len() < 256 {
            self.seen.push((from, to, msg.clone()));
        }
        self.cores[to as usize].handle(self.now, JobInput::Message { from, msg });
        self.drain(to);
    }

    fn deliver_next(&mut self) -> bool {
        match self.wire.pop_front() {
            Some((from, to, msg)) => {
                self.deliver(from, to, msg);
                true
            }
            None => false,
        }
    }

    fn advance(&mut self, ms: u64) {
        self.now += Duration::from_millis(ms);
        for id in 0..PEERS {
            let due = self.cores[id as usize].poll_timeout();
            if due.is_some_and(|due| due <= self.now) {
                self.cores[id as usize].handle_timeout(self.now);
            }
            self.drain(id);
        }
    }

    /// The worker thread of unit `i` finishes it.
    fn finish(&mut self, i: usize) {
        if self.units.is_empty() {
            return;
        }
        let (id, job, unit, state) = self.units.remove(i % self.units.len());
        let Ok(app) = self.registry.get("sum") else {
            return;
        };
        let output = match app.restore(&state) {
            Ok(mut running) => {
                let mut shared = SharedVars::default();
                let mut ctx = StepContext::new(&mut shared, u64::MAX);
                match running.step(&mut ctx) {
                    Ok(Step::Done(output)) => output,
                    Ok(Step::Continue) | Err(_) => return,
                }
            }
            Err(error) => {
                self.cores[id as usize].handle(
                    self.now,
                    JobInput::Unit(UnitEvent::Failed {
                        job,
                        unit,
                        error: error.to_string(),
                    }),
                );
                self.drain(id);
                return;
            }
        };
        self.cores[id as usize].handle(
            self.now,
            JobInput::Unit(UnitEvent::Finished { job, unit, output }),
        );
        self.drain(id);
    }
}

/// Replaces numbers inside a message, through its serde data model: the
/// message stays well-typed (or fails to decode, and is skipped), but any
/// count, term, sequence number, length or time in it may become extreme.
fn mutate_numbers(msg: &JobMsg<u64>, picks: &[(usize, u64)]) -> Option<JobMsg<u64>> {
    let mut value = serde_json::to_value(msg).ok()?;
    let mut numbers = Vec::new();
    collect_numbers(&mut value, &mut numbers);
    if numbers.is_empty() {
        return None;
    }
    for &(index, replacement) in picks {
        let count = numbers.len();
        *numbers[index % count] = serde_json::Value::from(replacement);
    }
    serde_json::from_value(value).ok()
}

fn collect_numbers<'a>(value: &'a mut serde_json::Value, out: &mut Vec<&'a mut serde_json::Value>) {
    match value {
        serde_json::Value::Number(_) => out.push(value),
        serde_json::Value::Array(items) => {
            for item in items {
                collect_numbers(item, out);
            }
        }
        serde_json::Value::Object(map) => {
            for (_, item) in map.iter_mut() {
                collect_numbers(item, out);
            }
        }
        _ => {}
    }
}

#[derive(Clone, Debug)]
enum JobAction {
    /// Deliver the next message in flight.
    Deliver,
    /// Drop the next message in flight.
    Lose,
    /// Replay a message seen before, to its receiver, from `from`.
    Replay(usize, u64),
    /// Replay a message seen before with numbers replaced.
    Mutate(usize, Vec<(usize, u64)>, u64),
    /// Replay a message seen before as edited bytes, decoded as the driver does.
    Edit(usize, Vec<Edit>),
    /// A well-typed message from anyone to peer `to`.
    Inject(u64, u64, Box<JobMsg<u64>>),
    Advance(u64),
    Finish(usize),
    /// Everyone is in the view; or silent peer 3 joins it; or peer 2
    /// or 1 drops out of it.
    Members(u8),
}

fn job_action() -> impl Strategy<Value = JobAction> {
    prop_oneof![
        6 => Just(JobAction::Deliver),
        1 => Just(JobAction::Lose),
        2 => (any::<usize>(), peer()).prop_map(|(i, from)| JobAction::Replay(i, from)),
        4 => (
            any::<usize>(),
            proptest::collection::vec((any::<usize>(), num()), 1..4),
            prop_oneof![3 => Just(u64::MAX), 1 => peer()],
        )
            .prop_map(|(i, picks, from)| JobAction::Mutate(i, picks, from)),
        2 => (any::<usize>(), edits()).prop_map(|(i, e)| JobAction::Edit(i, e)),
        4 => (peer(), 0u64..PEERS, job_msg()).prop_map(|(from, to, msg)| JobAction::Inject(from, to, Box::new(msg))),
        2 => prop_oneof![0u64..50, 0u64..4000].prop_map(JobAction::Advance),
        1 => any::<usize>().prop_map(JobAction::Finish),
        1 => (0u8..4).prop_map(JobAction::Members),
    ]
}

fn run_jobs(ft: FaultTolerance, actions: Vec<JobAction>) {
    let mut cluster = Cluster::with_job(ft);
    for action in actions {
        match action {
            JobAction::Deliver => {
                cluster.deliver_next();
            }
            JobAction::Lose => {
                cluster.wire.pop_front();
            }
            JobAction::Replay(i, from) => {
                if !cluster.seen.is_empty() {
                    let (_, to, msg) = cluster.seen[i % cluster.seen.len()].clone();
                    cluster.deliver(from, to, msg);
                }
            }
            JobAction::Mutate(i, picks, from) => {
                if !cluster.seen.is_empty() {
                    let (original, to, msg) = cluster.seen[i % cluster.seen.len()].clone();
                    // u64::MAX stands for "the original sender".
                    let from = if from == u64::MAX { original } else { from };
                    if let Some(msg) = mutate_numbers(&msg, &picks) {
                        cluster.deliver(from, to, msg);
                    }
                }
            }
            JobAction::Edit(i, edits) => {
                if !cluster.seen.is_empty() {
                    let (from, to, msg) = cluster.seen[i % cluster.seen.len()].clone();
                    let bytes = wire::encode(&msg, usize::MAX).unwrap_or_default();
                    let bytes = apply_edits(bytes, &edits);
                    if let Ok(msg) = wire::decode::<JobMsg<u64>>(&bytes, MAX_FRAME) {
                        cluster.deliver(from, to, msg);
                    }
                }
            }
            JobAction::Inject(from, to, msg) => cluster.deliver(from, to, *msg),
            JobAction::Advance(ms) => cluster.advance(ms),
            JobAction::Finish(i) => cluster.finish(i),
            JobAction::Members(0) => cluster.set_members(&[0, 1, 2]),
            JobAction::Members(1) => cluster.set_members(&[0, 1, 2, 3]),
            JobAction::Members(2) => cluster.set_members(&[0, 1, 3]),
            JobAction::Members(_) => cluster.set_members(&[0, 2]),
        }
    }
    // Whatever happened, the cores keep answering.
    for _ in 0..50 {
        if !cluster.deliver_next() {
            break;
        }
    }
    cluster.advance(5000);
    for core in &cluster.cores {
        let _ = core.view(cluster.now, JOB);
        let _ = core.homed_views(cluster.now);
    }
}

fn fault_tolerances() -> impl Strategy<Value = FaultTolerance> {
    prop_oneof![
        Just(FaultTolerance::default()),
        Just(FaultTolerance::none()),
        Just(FaultTolerance {
            storage: CheckpointStorage::Shards { k: 2, m: 1 },
            ..FaultTolerance::default()
        }),
        Just(FaultTolerance {
            storage: CheckpointStorage::Local,
            ..FaultTolerance::default()
        }),
    ]
}

proptest! {
    #![proptest_config(cases(1000))]

    #[test]
    fn job_cores_survive_hostile_messages(
        ft in fault_tolerances(),
        actions in proptest::collection::vec(job_action(), 1..60),
    ) {
        run_jobs(ft, actions);
        check_allocations()?;
    }
}

/// The replica snapshot a primary sent a backup, with its `elapsed_ms`
/// replaced: `now - elapsed` underflowed `Instant` and panicked.
fn snapshot_with_elapsed(cluster: &Cluster, elapsed_ms: u64) -> (u64, u64, JobMsg<u64>) {
    let (from, to, msg) = cluster
        .seen
        .iter()
        .find(|(_, _, msg)| {
            matches!(msg, JobMsg::Home(HomeMsg::Replica { .. }))
                && serde_json::to_value(msg).ok().is_some_and(|v| {
                    v.pointer("/Home/Replica/update/Snapshot/state/elapsed_ms")
                        .is_some()
                })
        })
        .cloned()
        .expect("the primary sent its backups a snapshot");
    let mut value = serde_json::to_value(&msg).expect("a message converts to JSON");
    *value
        .pointer_mut("/Home/Replica/update/Snapshot/state/elapsed_ms")
        .expect("a snapshot has elapsed_ms") = serde_json::Value::from(elapsed_ms);
    let msg = serde_json::from_value(value).expect("the edited snapshot is well-typed");
    (from, to, msg)
}

#[test]
fn a_remote_snapshot_with_a_huge_elapsed_time_does_not_panic() {
    let mut cluster = Cluster::with_job(FaultTolerance::default());
    let (from, to, msg) = snapshot_with_elapsed(&cluster, u64::MAX);
    // To a member that holds the record already (it replaces its copy)...
    cluster.deliver(from, to, msg.clone());
    // ...and to one that does not (it starts a backup from it).
    let stranger = (0..PEERS).find(|p| *p != from && *p != to).unwrap_or(0);
    let JobMsg::Home(HomeMsg::Replica {
        term, seq, update, ..
    }) = msg
    else {
        unreachable!()
    };
    let other = JobMsg::Home(HomeMsg::Replica {
        round: 0,
        committed: 0,
        key: JobId([9; 16]),
        term,
        seq,
        update,
    });
    cluster.deliver(from, stranger, other);
    cluster.advance(1000);
    for core in &cluster.cores {
        for view in core.homed_views(cluster.now) {
            assert!(view.elapsed_s.is_finite());
        }
    }
}

/// Found by `job_cores_survive_hostile_messages`: an assignment whose
/// fault tolerance carries the longest TTC made the worker's next checkpoint
/// time overflow `Instant`.
#[test]
fn an_assignment_with_the_longest_ttc_does_not_panic() {
    let mut cluster = Cluster::with_job(FaultTolerance::default());
    let state = postcard::to_stdvec(&Sum {
        next: 1,
        end: 10,
        acc: 0,
    })
    .unwrap_or_default();
    for ttc in [Duration::MAX, Duration::from_secs(u64::MAX / 2)] {
        cluster.deliver(
            0,
            1,
            JobMsg::Assign {
                job: JOB,
                unit: 77,
                epoch: 5,
                app: "sum".into(),
                state: state.clone(),
                shared: SharedVars::default(),
                ft: FaultTolerance {
                    ttc,
                    ..FaultTolerance::default()
                },
            },
        );
        cluster.advance(100);
        cluster.deliver(
            0,
            1,
            JobMsg::Ack {
                job: JOB,
                unit: 77,
                epoch: 5,
                seq: 1,
            },
        );
        cluster.advance(100);
    }
}

/// Found by `job_cores_survive_hostile_messages`: work reported by a worker
/// was added to the job's counters without bound.
#[test]
fn progress_of_the_highest_amount_does_not_panic() {
    let progress = JobMsg::Progress {
        job: JOB,
        work: u64::MAX,
    };
    let mut actions = Vec::new();
    for to in 0..PEERS {
        actions.push(JobAction::Inject(2, to, Box::new(progress.clone())));
        actions.push(JobAction::Inject(2, to, Box::new(progress.clone())));
    }
    actions.push(JobAction::Advance(1000));
    run_jobs(FaultTolerance::default(), actions);
}

/// Found by `job_cores_survive_hostile_messages`: a vote reply promising
/// the highest term made the next candidacy ask for a term above it.
#[test]
fn a_promise_of_the_highest_term_does_not_panic() {
    let reply = JobMsg::Home(HomeMsg::VoteReply {
        key: JOB,
        term: 0,
        granted: false,
        promised: u64::MAX,
        log_term: 0,
        log_seq: 0,
        primary: None,
    });
    let mut actions = Vec::new();
    for to in 0..PEERS {
        actions.push(JobAction::Inject(0, to, Box::new(reply.clone())));
    }
    // Peer 2, then peer 1, leave the view: the others campaign.
    actions.extend([
        JobAction::Members(3),
        JobAction::Advance(3000),
        JobAction::Members(2),
        JobAction::Advance(3000),
        JobAction::Members(0),
        JobAction::Advance(3000),
    ]);
    run_jobs(FaultTolerance::default(), actions);
}

/// Every job a `Status` message said was over was remembered, without
/// bound: a peer could grow that set by sending statuses of made-up jobs.
/// Now at most `max_retained_results` are kept (the lowest ids go first),
/// so an advert for the first made-up job is taken again.
#[test]
fn statuses_of_made_up_jobs_are_remembered_within_bounds() {
    let mut cluster = Cluster::new();
    let max = JobConfig::default().max_retained_results;
    for i in 0..=max as u32 {
        let mut id = [0u8; 16];
        id[12..].copy_from_slice(&i.to_be_bytes());
        let view = JobView {
            job: JobId(id),
            app: "sum".into(),
            params: Vec::new(),
            home: 99,
            home_members: vec![99],
            submitter: 99,
            ft: FaultTolerance::default(),
            keep_namespace: false,
            state: JobState::Failed {
                reason: "made up".into(),
            },
            stats: JobStats::default(),
            contributions: Vec::new(),
            shared: SharedVars::default(),
            elapsed_s: 0.0,
            home_majority_lost: None,
            declined: None,
            replicated: false,
        };
        cluster.deliver(99, 0, JobMsg::Status { view });
    }
    cluster.deliver(
        1,
        0,
        JobMsg::Advert {
            job: JobId([0; 16]),
            app: "sum".into(),
            home: 1,
            lifetime_ms: 3000,
            submitter: 1,
        },
    );
    assert!(cluster.cores[0]
        .known_jobs()
        .iter()
        .any(|(job, _, _)| *job == JobId([0; 16])));
}

/// A peer sending only numbers ahead of the next expected one made the
/// receiver hold up to `receive_window` whole messages per channel (8192 of
/// up to a frame each, for every peer and class): out-of-order data is now
/// held only up to `max_buffered_bytes` in all, the rest dropped and
/// counted, and delivery goes on once the gap is filled and the sender
/// retransmits.
#[test]
fn out_of_order_data_is_held_within_a_byte_bound() {
    let now = origin();
    let config = PipeConfig {
        max_buffered_bytes: 1000,
        ..PipeConfig::default()
    };
    let mut core = Pipes::<u64>::new(config, 5);
    let data = |seq: u64| PipeFrame::Data {
        class: TrafficClass::BULK,
        session: 7,
        seq,
        base: 0,
        payload: vec![seq as u8; 100],
    };
    // Numbers 1..=50 ahead of the gap at 0: ten fit, forty are dropped.
    for seq in 1..=50 {
        core.handle_frame(now, 1, data(seq));
    }
    assert_eq!(core.stats().out_of_window_dropped, 40);
    // The gap is filled: what was held is delivered, in order.
    core.handle_frame(now, 1, data(0));
    let delivered: Vec<u64> = std::iter::from_fn(|| core.pop_delivery())
        .map(|d| d.seq)
        .collect();
    assert_eq!(delivered, (0..=10).collect::<Vec<_>>());
    // The sender retransmits the rest; they go through now.
    for seq in 11..=50 {
        core.handle_frame(now, 1, data(seq));
    }
    let delivered: Vec<u64> = std::iter::from_fn(|| core.pop_delivery())
        .map(|d| d.seq)
        .collect();
    assert_eq!(delivered, (11..=50).collect::<Vec<_>>());
}
