//! Following the view change by change (`Membership::take_changed`, then
//! `JobInput::Member` for each and `JobInput::MembersChanged`) does exactly
//! what `JobInput::Members` with the whole list does: the same outputs, in
//! the same order, the same view of the job. The simulator relies on it to
//! avoid an O(n) list on each of the O(n) membership events of every peer.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use colony_core::divisible::AppRegistry;
use colony_core::ft::{CheckpointStorage, FaultTolerance, FtProtocol};
use colony_core::job::{JobConfig, JobId, JobInput, JobOutput, Jobs, SubmitOptions};

mod common;
use common::{key_of, Sum};

/// A small deterministic generator (splitmix64).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

fn drain(core: &mut Jobs<u64>) -> Vec<String> {
    let mut out = Vec::new();
    while let Some(o) = core.poll() {
        out.push(format!("{o:?}"));
    }
    out
}

/// Two identical cores, each the primary of one job; one is told the
/// members as whole lists, the other change by change. After every step
/// their outputs and views must be the same.
fn run(seed: u64) {
    let now0 = Instant::now();
    let mut registry = AppRegistry::new();
    registry.register::<Sum>();
    let me = 0u64;
    let make = || {
        Jobs::new(
            me,
            JobConfig {
                cores: 1,
                ..JobConfig::default()
            },
            registry.clone(),
            now0,
            seed,
            key_of,
        )
    };
    let (mut whole, mut changes) = (make(), make());
    let mut rng = Rng(seed);
    // The view: peer -> load, alive ones only.
    let mut alive: BTreeMap<u64, f32> = (1..=8).map(|p| (p, 0.0)).collect();
    let list = |alive: &BTreeMap<u64, f32>| -> Vec<(u64, f32)> {
        alive.iter().map(|(p, l)| (*p, *l)).collect()
    };
    whole.handle(now0, JobInput::Members(list(&alive)));
    for (p, l) in &alive {
        changes.handle(
            now0,
            JobInput::Member {
                peer: *p,
                load: Some(*l),
            },
        );
    }
    changes.handle(now0, JobInput::MembersChanged);
    assert_eq!(drain(&mut whole), drain(&mut changes));
    let job = JobId([7; 16]);
    let ft = FaultTolerance {
        protocol: FtProtocol::Checkpoint,
        ttc: Duration::from_millis(500),
        storage: CheckpointStorage::Copies { r: 2 },
        home_size: 3,
        durable: false,
    };
    let params = postcard::to_stdvec(&1_000_000u64).unwrap_or_default();
    let mut outputs = Vec::new();
    for core in [&mut whole, &mut changes] {
        core.handle(
            now0,
            JobInput::Submit {
                job,
                app: "sum".into(),
                params: params.clone(),
                ft,
                options: SubmitOptions::default(),
            },
        );
        // The submission comes back to this peer (its own primary).
        let submitted: Vec<JobOutput<u64>> = std::iter::from_fn(|| core.poll()).collect();
        for o in submitted {
            if let JobOutput::Send { to, msg, .. } = o {
                if to == me {
                    core.handle(now0, JobInput::Message { from: me, msg });
                }
            }
        }
        outputs.push(drain(core));
    }
    assert_eq!(outputs[0], outputs[1], "after the submission");
    let mut now = now0;
    for step in 0..200 {
        now += Duration::from_millis(rng.below(50));
        // A few changes at once, as one membership message brings them.
        let mut changed = Vec::new();
        for _ in 0..=rng.below(3) {
            let peer = 1 + rng.below(12);
            match rng.below(3) {
                0 => {
                    alive.remove(&peer);
                }
                1 => {
                    alive.insert(peer, rng.below(4) as f32);
                }
                _ => {
                    if let Some(load) = alive.get_mut(&peer) {
                        *load = rng.below(4) as f32;
                    }
                }
            }
            changed.push(peer);
        }
        changed.sort_unstable();
        changed.dedup();
        whole.handle(now, JobInput::Members(list(&alive)));
        for peer in changed {
            changes.handle(
                now,
                JobInput::Member {
                    peer,
                    load: alive.get(&peer).copied(),
                },
            );
        }
        changes.handle(now, JobInput::MembersChanged);
        // A repeated event with nothing new, as drivers call it per event.
        whole.handle(now, JobInput::Members(list(&alive)));
        changes.handle(now, JobInput::MembersChanged);
        assert_eq!(drain(&mut whole), drain(&mut changes), "step {step}");
        if step % 10 == 0 {
            whole.handle_timeout(now);
            changes.handle_timeout(now);
            assert_eq!(drain(&mut whole), drain(&mut changes), "timers at {step}");
        }
        let (a, b) = (whole.view(now, job), changes.view(now, job));
        assert_eq!(format!("{a:?}"), format!("{b:?}"), "view at step {step}");
    }
}

#[test]
fn change_by_change_is_the_same_as_whole_lists() {
    for seed in 0..20 {
        run(seed);
    }
}
