//! An attacker written here — a libp2p peer that speaks the frames and pipe
//! protocols but never joins the membership — pushes `Assign` messages at
//! a real `colony peer` process. On the old code each one became a worker
//! thread; now none runs, each is counted as refused, and the victim logs
//! one line for the attacker, not one per message.

mod common;

use std::time::Duration;

use bytes::Bytes;
use colony::{JobId, StatusInfo};
use colony_core::divisible::SharedVars;
use colony_core::ft::FaultTolerance;
use colony_core::job::JobMsg;
use colony_net::libp2p::{Multiaddr, PeerId};
use colony_net::Priority;
use common::*;

/// Assignments the attacker pushes.
const ASSIGNS: u64 = 200;

/// A libp2p peer of the victim's network that sends pipe frames carrying
/// job messages, and nothing else.
struct Attacker {
    frames: colony_net::FrameSender,
    session: u64,
}

impl Attacker {
    async fn connect(victim: &Multiaddr) -> Attacker {
        Attacker {
            frames: attacker_frames(victim),
            session: 1,
        }
    }

    /// Sends `msg` as message `seq` of a pipe channel.
    fn send_job_msg(&self, to: PeerId, seq: u64, msg: &JobMsg<PeerId>) {
        let encoded = postcard::to_stdvec(msg).expect("encode");
        let frame = pipe_frame_with_job_message(self.session, seq, &encoded);
        self.frames.send(to, Priority(1), Bytes::from(frame));
    }
}

async fn status(peer: &PeerProc) -> Option<StatusInfo> {
    peer.status().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn assignments_from_a_peer_outside_the_membership_run_nothing() {
    let _serial = SERIAL.lock().await;
    let root = test_dir("rogue-assign");
    let victim = PeerProc::spawn(&root.join("victim"), &["--cores".into(), "1".into()]);
    let victim_id: PeerId = victim.info.peer_id.parse().expect("a peer id");
    let attacker = Attacker::connect(&victim.info.listen_addrs[0]).await;

    // Long N-Queens units, as the attack on the old code used.
    let app = colony_apps::examples().get("nqueens").expect("nqueens");
    let params = app.parse_args(&["32".into()]).expect("params");
    let state = app
        .init(&params)
        .expect("a unit")
        .checkpoint()
        .expect("a state");
    let job = JobId([0x5a; 16]);
    for unit in 0..ASSIGNS {
        let assign = JobMsg::Assign {
            job,
            unit,
            epoch: 1,
            app: "nqueens".into(),
            state: state.clone(),
            shared: SharedVars::default(),
            ft: FaultTolerance::default(),
        };
        attacker.send_job_msg(victim_id, unit, &assign);
    }

    // Every assignment reaches the job core and is refused: held a moment
    // for the view to catch up, then counted.
    let refused = wait_until(
        Duration::from_secs(20),
        "the assignments to be refused",
        || async {
            let s = status(&victim).await?;
            (s.jobs.refused_messages >= ASSIGNS).then_some(s)
        },
    )
    .await;
    assert_eq!(refused.jobs.refused_messages, ASSIGNS);
    assert_eq!(refused.jobs.running_units, 0, "a forged unit runs");
    assert_eq!(
        victim.unit_threads(),
        0,
        "worker threads run for the attacker"
    );
    let lines = victim
        .log()
        .lines()
        .filter(|l| l.contains("job message refused"))
        .count();
    assert_eq!(lines, 1, "refusals are logged once per peer per minute");
}
