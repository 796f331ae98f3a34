//! An attacker written here — a libp2p peer that speaks the frames and pipe
//! protocols but never joins the membership — sends distributed-object
//! messages to the primary of a pml counter while honest peers call it:
//! lookups, creations of unknown types, malformed and oversized calls,
//! replies and redirects for calls never made, forged replica updates of
//! the counter's home (which, accepted, would make its primary step down
//! for the attacker), and garbage of the objects payload kind. The victim
//! neither panics nor stalls, refuses and counts each message, logs the
//! attacker a few times rather than once per message, and the honest
//! callers' additions each run exactly once.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use colony_core::home::{HomeMsg, Update};
use colony_core::object::{
    CallError, CallId, CicStamp, Guid, ObjectMsg, ObjectProtocol, ObjectUri,
};
use colony_core::wire::{encode_frame, encode_payload, Frame, PayloadKind};
use colony_net::libp2p::{Multiaddr, PeerId};
use colony_net::Priority;
use common::*;

/// Rounds of every hostile message.
const ROUNDS: u64 = 20;

/// A libp2p peer of the victim's network that sends pipe frames carrying
/// object messages, and nothing else.
struct Attacker {
    frames: colony_net::FrameSender,
    next_seq: u64,
}

impl Attacker {
    async fn connect(victim: &Multiaddr) -> Attacker {
        Attacker {
            frames: attacker_frames(victim),
            next_seq: 0,
        }
    }

    /// Sends `body` as the next message of a pipe channel, with the
    /// objects payload kind.
    fn send_object_payload(&mut self, to: PeerId, body: &[u8]) {
        let frame: Frame<PeerId> = Frame::Pipe(colony_core::pipe::PipeFrame::Data {
            class: colony_core::pipe::TrafficClass::EVENTS,
            session: 1,
            seq: self.next_seq,
            base: self.next_seq,
            payload: encode_payload(PayloadKind::Object, body),
        });
        self.next_seq += 1;
        let bytes = encode_frame(&frame, usize::MAX).expect("encode pipe frame");
        self.frames.send(to, Priority(1), Bytes::from(bytes));
    }
}

/// Every kind of object message, hostile: about the honest counter
/// `honest`, about objects nobody made, for calls never made.
fn hostile_messages(honest: &ObjectUri, attacker: PeerId, round: u64) -> Vec<ObjectMsg<PeerId>> {
    let id = |seq| CallId {
        caller: Guid(0xbad0_0000 + u128::from(round)),
        seq,
    };
    let stranger = ObjectUri {
        network: honest.network.clone(),
        guid: Guid(0xfeed_0000 + u128::from(round)),
    };
    let call = |seq, object_type: &str, request: Vec<u8>| ObjectMsg::Call {
        id: id(seq),
        acked_below: u64::MAX,
        known: u64::MAX,
        to: honest.clone(),
        object_type: object_type.into(),
        request,
        // A cic stamp claiming every rollback and the highest index.
        cic: Some(CicStamp {
            sender: stranger.guid,
            index: u64::MAX,
            rollbacks: (0..64).map(|e| (u64::MAX - e, 0)).collect(),
        }),
    };
    vec![
        ObjectMsg::Lookup {
            id: id(1),
            uri: honest.clone(),
        },
        ObjectMsg::Create {
            id: id(2),
            uri: stranger.clone(),
            object_type: "no-such-type".into(),
            params: Vec::new(),
            protocol: ObjectProtocol::Pml { ttc_ms: 1 },
            cic: None,
        },
        ObjectMsg::Rollback {
            id: id(9),
            to: honest.clone(),
            from: stranger.guid,
            epoch: u64::MAX,
            line: 0,
        },
        call(3, "counter", vec![0xff, 0x00, 0x13]),
        call(4, "counter", vec![0x5a; 900 * 1024]),
        call(5, "something-else", b"{}".to_vec()),
        ObjectMsg::Delete {
            id: id(6),
            uri: honest.clone(),
        },
        ObjectMsg::Reply {
            id: id(7),
            reply: Err(CallError::Handler("forged".into())),
            ordinal: u64::MAX,
            cic: None,
        },
        ObjectMsg::NotHere {
            id: id(8),
            primary: Some(attacker),
        },
        // A primary of a later term, as far as the victim could tell.
        ObjectMsg::Home(HomeMsg::Replica {
            round: 0,
            committed: 0,
            key: honest.guid,
            term: 1_000 + round,
            seq: 1,
            update: Update::Delta {
                members: vec![attacker],
                config: vec![attacker],
                delta: None,
            },
        }),
        ObjectMsg::Home(HomeMsg::Vote {
            key: honest.guid,
            term: 2_000 + round,
            last_term: u64::MAX,
            last_seq: u64::MAX,
            handed_over_by: None,
        }),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn object_messages_from_outside_the_membership_are_refused_and_calls_go_on() {
    let _serial = SERIAL.lock().await;
    let started = Instant::now();
    let root = test_dir("rogue-objects");
    let peers = start_network(&root, 3, &[]);
    let all: Vec<&PeerProc> = peers.iter().collect();
    wait_until(Duration::from_secs(20), "three peers to join", || async {
        all_see_all_alive(&all).await.then_some(())
    })
    .await;
    let created: serde_json::Value = peers[0]
        .request(reqwest::Method::POST, "/v1/objects")
        .json(&serde_json::json!({ "type": "counter", "params": 0 }))
        .send()
        .await
        .expect("create")
        .json()
        .await
        .expect("a JSON answer");
    let uri = created["uri"].as_str().expect("a URI").to_string();
    let victim = wait_until(Duration::from_secs(10), "the counter's primary", || {
        let (peers, uri) = (&peers, &uri);
        async move {
            for (i, peer) in peers.iter().enumerate() {
                if objects_at(peer).await.iter().any(|o| o.uri == *uri) {
                    return Some(i);
                }
            }
            None
        }
    })
    .await;
    let victim_peer = &peers[victim];
    let victim_id: PeerId = victim_peer.info.peer_id.parse().expect("a peer id");
    let caller = &peers[(victim + 1) % peers.len()];
    let log_before = victim_peer.log().lines().count();

    // An honest caller adds, batch after batch, during the whole attack.
    let stop = Arc::new(AtomicBool::new(false));
    let honest = {
        let (api, uri, stop) = (ObjectApi::of(caller), uri.clone(), stop.clone());
        tokio::spawn(async move {
            let mut values = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                values.extend(api.call(&uri, serde_json::json!({ "add": 1 }), 10).await?);
            }
            Ok::<Vec<i64>, String>(values)
        })
    };

    let mut attacker = Attacker::connect(&victim_peer.info.listen_addrs[0]).await;
    let attacker_id = PeerId::random();
    let honest_uri: ObjectUri = uri.parse().expect("an object URI");
    let mut sent = 0u64;
    let mut garbage = 0u64;
    for round in 0..ROUNDS {
        for msg in hostile_messages(&honest_uri, attacker_id, round) {
            let body = postcard::to_stdvec(&msg).expect("encode");
            attacker.send_object_payload(victim_id, &body);
            sent += 1;
        }
        attacker.send_object_payload(victim_id, &[0xff, 0xfe, 0x00, 0x01, 0x02]);
        garbage += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eprintln!("attacker sent {sent} object messages and {garbage} garbage payloads");

    let status = wait_until(
        Duration::from_secs(20),
        "every object message to be refused",
        || async {
            let s = victim_peer.status().await?;
            (s.driver.refused_object_messages >= sent && s.driver.malformed_frames >= garbage)
                .then_some(s)
        },
    )
    .await;
    assert_eq!(status.driver.refused_object_messages, sent);
    assert!(
        objects_at(victim_peer).await.iter().any(|o| o.uri == uri),
        "the victim is still the counter's primary"
    );
    // Calls keep working after the attack too.
    let before = Instant::now();
    stop.store(true, Ordering::Relaxed);
    let mut replies = honest
        .await
        .expect("caller task")
        .unwrap_or_else(|e| panic!("every honest call is answered: {e}"));
    replies.extend(
        ObjectApi::of(caller)
            .call(&uri, serde_json::json!({ "add": 1 }), 10)
            .await
            .expect("calls after the attack"),
    );
    eprintln!(
        "honest caller finished {:?} after the stop",
        before.elapsed()
    );
    replies.sort_unstable();
    let n = i64::try_from(replies.len()).expect("a count");
    assert_eq!(
        replies,
        (1..=n).collect::<Vec<i64>>(),
        "every honest addition ran once"
    );
    assert!(n > 10, "the honest caller made progress during the attack");

    let lines: Vec<String> = victim_peer
        .log()
        .lines()
        .skip(log_before)
        .filter(|l| l.contains("object message from a peer outside the membership refused"))
        .map(str::to_string)
        .collect();
    assert!(
        !lines.is_empty() && lines.len() <= 20,
        "refusals are logged, rate limited: {} lines",
        lines.len()
    );
    assert!(victim_peer.is_running() && victim_peer.status().await.is_some());
    eprintln!(
        "rogue objects test: {n} honest additions, {} log lines, {:?}",
        lines.len(),
        started.elapsed()
    );
    let _ = std::fs::remove_dir_all(&root);
}
