//! The TSP island as a distributed object, in isolation: driven through the
//! type-erased registry entry the runtime uses (create, handle, checkpoint,
//! restore), so replaying calls from a checkpoint is checked exactly as a
//! recovering home does it.

use std::path::PathBuf;
use std::time::Instant;

use colony_apps::tsp::{
    Instance, IslandObject, IslandParams, IslandReply, IslandRequest, MAX_MIGRANTS,
};
use colony_core::object::{
    encode, ActiveObject, CallError, Guid, Instance as Live, ObjectContext, ObjectUri, Outgoing,
    Ref,
};

fn instance(name: &str) -> Instance {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(format!("{name}.tsp"));
    Instance::load(path).expect("shipped instance")
}

fn uri(n: u8) -> ObjectUri {
    ObjectUri::new("tsp-test", Guid::from_random([n; 16])).expect("uri")
}

/// One island object as its activation holds it: the live object and the
/// counter its calls are numbered from.
struct Held {
    me: ObjectUri,
    seq: u64,
    live: Box<dyn Live>,
}

impl Held {
    fn create(me: ObjectUri, params: &IslandParams) -> Result<Held, CallError> {
        let types = colony_apps::example_objects();
        let kind = types.get(IslandObject::TYPE)?;
        let mut seq = 0;
        let live = kind.create(&mut ObjectContext::new(&me, &mut seq), &encode(params))?;
        Ok(Held { me, seq, live })
    }

    fn restore(&self) -> Held {
        let types = colony_apps::example_objects();
        let kind = types.get(IslandObject::TYPE).expect("registered");
        Held {
            me: self.me.clone(),
            seq: self.seq,
            live: kind.restore(&self.live.checkpoint()).expect("restore"),
        }
    }

    /// Serves `request`: the reply and the calls it made.
    fn call(&mut self, request: &IslandRequest) -> (Result<IslandReply, CallError>, Vec<Outgoing>) {
        let mut ctx = ObjectContext::new(&self.me, &mut self.seq);
        let reply = self.live.handle(&mut ctx, &encode(request));
        let outgoing = ctx.take_outgoing();
        let reply = reply.map(|bytes| {
            colony_core::object::decode_reply::<IslandObject>(&bytes).expect("reply decodes")
        });
        (reply, outgoing)
    }
}

fn params(instance: &Instance, migrate_every: u32) -> IslandParams {
    IslandParams {
        migrate_every,
        ..IslandParams::new(instance, 0, 42)
    }
}

fn script() -> Vec<IslandRequest> {
    let berlin = instance("berlin52");
    let neighbour = Ref::<IslandObject>::new(uri(2));
    let foreign = Held::create(uri(3), &IslandParams::new(&berlin, 3, 7)).expect("island");
    let tours = match foreign.restore().call(&IslandRequest::Best).0 {
        Ok(IslandReply::Best { tour, .. }) => vec![tour],
        other => panic!("unexpected {other:?}"),
    };
    vec![
        IslandRequest::SetNeighbours(vec![neighbour]),
        IslandRequest::Evolve { generations: 3 },
        IslandRequest::Evolve { generations: 2 },
        IslandRequest::Immigrate { from: 3, tours },
        IslandRequest::Evolve { generations: 4 },
        IslandRequest::Best,
        IslandRequest::Evolve { generations: 1 },
        IslandRequest::Evolve { generations: 5 },
    ]
}

#[test]
fn replay_from_a_checkpoint_gives_the_same_state_replies_and_calls() {
    let berlin = instance("berlin52");
    let script = script();
    let mut original = Held::create(uri(1), &params(&berlin, 2)).expect("island");
    let mut copies = Vec::new();
    let mut served = Vec::new();
    for request in &script {
        copies.push(original.restore());
        served.push(original.call(request));
    }
    let end = original.live.checkpoint();
    // From every checkpoint, replaying the rest gives the same answers,
    // the same outgoing calls (same ids) and the same final state.
    for (start, mut copy) in copies.into_iter().enumerate() {
        for (request, expected) in script[start..].iter().zip(&served[start..]) {
            assert_eq!(&copy.call(request), expected, "replay from {start}");
        }
        assert_eq!(
            copy.live.checkpoint(),
            end,
            "state after replay from {start}"
        );
    }
    // A second island of the same parameters given the same calls is the
    // same island.
    let mut twin = Held::create(uri(1), &params(&berlin, 2)).expect("island");
    for request in &script {
        assert!(twin.call(request).0.is_ok());
    }
    assert_eq!(twin.live.checkpoint(), end);
    // It did migrate: every 2nd evolve call sent its best 2 tours.
    let migrations: Vec<&Outgoing> = served.iter().flat_map(|(_, out)| out).collect();
    assert_eq!(migrations.len(), 2, "{migrations:?}");
    for outgoing in migrations {
        let Outgoing::Call {
            to,
            object_type,
            request,
            ..
        } = outgoing
        else {
            panic!("not a call: {outgoing:?}");
        };
        assert_eq!(to, &uri(2));
        assert_eq!(object_type, IslandObject::TYPE);
        let request: IslandRequest = postcard::from_bytes(request).expect("request decodes");
        assert!(
            matches!(&request, IslandRequest::Immigrate { from: 0, tours } if tours.len() == 2),
            "{request:?}"
        );
    }
}

#[test]
fn evolving_shortens_the_best_tour_and_counts_generations() {
    let berlin = instance("berlin52");
    let mut island = Held::create(uri(1), &params(&berlin, 0)).expect("island");
    let first = match island.call(&IslandRequest::Best).0 {
        Ok(IslandReply::Best { progress, .. }) => progress,
        other => panic!("unexpected {other:?}"),
    };
    let mut last = first;
    for _ in 0..20 {
        match island.call(&IslandRequest::Evolve { generations: 10 }) {
            (Ok(IslandReply::Progress(progress)), outgoing) => {
                assert!(outgoing.is_empty(), "no neighbours, no migration");
                assert!(progress.best_length <= last.best_length);
                last = progress;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(last.generation, 200);
    assert_eq!(last.evolve_calls, 20);
    assert!(last.best_length < first.best_length || first.best_length == 7542);
    match island.call(&IslandRequest::Best).0 {
        Ok(IslandReply::Best { tour, progress }) => {
            assert_eq!(
                colony_apps::tsp::tour_length(&berlin, &tour),
                Ok(progress.best_length)
            );
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn malformed_calls_are_error_replies_that_change_nothing() {
    let berlin = instance("berlin52");
    let mut island = Held::create(uri(1), &params(&berlin, 1)).expect("island");
    let before = island.live.checkpoint();
    let good: Vec<u32> = (0..52).collect();
    let bad_requests = [
        // Too short, a city out of range, a city twice, after a good tour.
        vec![good.clone(), (0..51).collect()],
        vec![good.clone(), (1..53).collect()],
        vec![good.clone(), [0].into_iter().chain(0..51).collect()],
        vec![good.clone(); MAX_MIGRANTS + 1],
    ];
    for tours in bad_requests {
        let (reply, outgoing) = island.call(&IslandRequest::Immigrate { from: 9, tours });
        assert!(matches!(reply, Err(CallError::Handler(_))), "{reply:?}");
        assert!(outgoing.is_empty());
        assert_eq!(
            island.live.checkpoint(),
            before,
            "a refused call changed the island"
        );
    }
    for generations in [0, colony_apps::tsp::MAX_GENERATIONS_PER_CALL + 1] {
        let (reply, _) = island.call(&IslandRequest::Evolve { generations });
        assert!(matches!(reply, Err(CallError::Handler(_))), "{reply:?}");
    }
    let (reply, _) = island.call(&IslandRequest::SetNeighbours(vec![Ref::new(uri(1))]));
    assert!(matches!(reply, Err(CallError::Handler(_))), "{reply:?}");
    assert_eq!(island.live.checkpoint(), before);
    // Bytes that are no request at all.
    let mut ctx = ObjectContext::new(&island.me, &mut island.seq);
    let reply = island.live.handle(&mut ctx, &[0xff, 0xff, 0xff]);
    assert!(matches!(reply, Err(CallError::BadMessage(_))), "{reply:?}");
    // Parameters out of bounds are refused at creation.
    for wrong in [
        IslandParams {
            migrants: 0,
            ..params(&berlin, 1)
        },
        IslandParams {
            coordinates: vec![[0.0, 0.0]; 2],
            ..params(&berlin, 1)
        },
        IslandParams {
            coordinates: vec![[f64::NAN, 0.0]; 10],
            ..params(&berlin, 1)
        },
    ] {
        assert!(Held::create(uri(1), &wrong).is_err());
    }
}

#[test]
fn an_island_is_small_and_one_call_is_short() {
    for (name, generations) in [("berlin52", 20), ("kroA100", 10)] {
        let problem = instance(name);
        let mut island = Held::create(uri(1), &params(&problem, 0)).expect("island");
        let bytes = island.live.checkpoint().len();
        // The whole record (checkpoint, log) replicates as one message.
        assert!(bytes < 16 * 1024, "{name}: {bytes} bytes");
        let started = Instant::now();
        let calls = 10;
        for _ in 0..calls {
            assert!(island
                .call(&IslandRequest::Evolve { generations })
                .0
                .is_ok());
        }
        let per_call = started.elapsed() / calls;
        eprintln!("{name}: checkpoint {bytes} bytes, {generations} generations per call take {per_call:?}");
    }
}
