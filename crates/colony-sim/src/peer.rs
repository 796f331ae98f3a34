//! One simulated peer: the real sans-IO cores glued together the way the
//! runtime's driver (`crates/colony/src/driver.rs`, `driver/jobs.rs`) glues
//! them — membership and pipe frames as [`wire::Frame`], job messages as
//! pipe payloads behind a tag byte, membership events into the pipes, the
//! acquaintances and the job core, pipe failures back into the job core,
//! timers via `poll_timeout`. What the driver would do with sockets, disks
//! and threads comes out as [`Action`]s for the simulated world.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use colony_core::acquaintance::{AcquaintanceConfig, AcquaintanceOutput, Acquaintances};
use colony_core::membership::{self, Event, MemberState, Membership, MembershipConfig, PeerStats};
use colony_core::pipe::{PipeConfig, PipeOutput, Pipes, TrafficClass};
use colony_core::wire::{self, Frame};

use crate::rng::{derive, SimRng};

/// First byte of every pipe payload: application traffic (as the driver's
/// `TAG_APP`).
pub const TAG_APP: u8 = 0;
/// First byte of job protocol payloads (as the driver's `TAG_JOBS`).
pub const TAG_JOBS: u8 = 1;

/// Settings shared by every simulated peer.
#[derive(Clone, Debug)]
pub struct PeerSettings {
    /// Membership tuning (the runtime's defaults unless a test changes them).
    pub membership: MembershipConfig,
    /// Pipe tuning.
    pub pipes: PipeConfig,
    /// Bootstrap failover and NOA/TTU.
    pub acquaintances: AcquaintanceConfig,
    /// How long a pipe keeps retrying before `DeadlineExceeded` (the
    /// driver's `send_timeout`).
    pub send_timeout: Duration,
    /// Largest encoded frame (the network's `max_frame_bytes`).
    pub max_frame_bytes: usize,
    /// How often statistics are republished (the driver's `stats_interval`).
    pub stats_interval: Duration,
    /// Mean pause between two application messages a peer sends to a random
    /// live member, to exercise the pipes; `None` sends none.
    pub traffic_interval: Option<Duration>,
}

impl Default for PeerSettings {
    fn default() -> Self {
        PeerSettings {
            membership: MembershipConfig::default(),
            pipes: PipeConfig::default(),
            acquaintances: AcquaintanceConfig::default(),
            send_timeout: Duration::from_secs(30),
            max_frame_bytes: 1024 * 1024 + 4 * 1024,
            stats_interval: Duration::from_secs(1),
            traffic_interval: Some(Duration::from_millis(250)),
        }
    }
}

/// An application message of the pipe checker: who sent it, in which pipe
/// session, and its number among the messages from that session to that
/// destination.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct AppMsgId {
    /// Sender.
    pub from: u32,
    /// The sender's pipe session.
    pub session: u64,
    /// Destination.
    pub to: u32,
    /// Number, from 0 per (session, destination).
    pub no: u64,
}

impl AppMsgId {
    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(29);
        out.push(TAG_APP);
        out.extend_from_slice(&self.from.to_le_bytes());
        out.extend_from_slice(&self.session.to_le_bytes());
        out.extend_from_slice(&self.to.to_le_bytes());
        out.extend_from_slice(&self.no.to_le_bytes());
        out.extend_from_slice(&APP_MARKER);
        out
    }

    fn decode(bytes: &[u8]) -> Option<AppMsgId> {
        if bytes.len() != 28 {
            return None;
        }
        Some(AppMsgId {
            from: u32::from_le_bytes(bytes[0..4].try_into().ok()?),
            session: u64::from_le_bytes(bytes[4..12].try_into().ok()?),
            to: u32::from_le_bytes(bytes[12..16].try_into().ok()?),
            no: u64::from_le_bytes(bytes[16..24].try_into().ok()?),
        })
        .filter(|_| bytes[24..28] == APP_MARKER)
    }
}

/// Trailer of application messages, so a corrupted one is noticed.
const APP_MARKER: [u8; 4] = [0xA5; 4];

/// What a peer asks of the simulated world.
#[derive(Clone, Debug)]
pub enum Action {
    /// Put these bytes on the wire to `to`.
    Frame {
        /// Destination.
        to: u32,
        /// Encoded [`wire::Frame`].
        bytes: Vec<u8>,
    },
    /// Dial bootstrap entry `index` (the acquaintance core's request).
    Dial {
        /// Position in the bootstrap list.
        index: usize,
    },
    /// Too few acquaintances: look for more (a DHT random walk).
    Explore,
    /// Persist the membership incarnation on disk.
    PersistIncarnation(u64),
    /// A membership view change, for the trace.
    Member(Event<u32>),
    /// An application message was handed to the pipes.
    AppSent(AppMsgId),
    /// The pipes settled an application message: delivered or failed.
    AppOutcome {
        /// The message.
        id: AppMsgId,
        /// Whether a receipt came back.
        delivered: bool,
    },
    /// An application message reached this peer's application.
    AppDelivered(AppMsgId),
    /// Bytes from the wire did not decode (never expected in the sim).
    Malformed {
        /// Who sent them.
        from: u32,
        /// The error.
        error: String,
    },
}

/// What a pipe message in flight was, for what to do with its outcome.
#[derive(Clone, Copy, Debug)]
enum SendKind {
    App(AppMsgId),
}

/// Who a peer is when it (re)starts: what its disk and configuration say.
#[derive(Clone, Copy, Debug)]
pub struct PeerStart {
    /// Peer id.
    pub id: u32,
    /// How many times it started before.
    pub life: u32,
    /// Membership incarnation, above any persisted before.
    pub incarnation: u64,
    /// Pipe session, above any used before.
    pub session: u64,
    /// Entries in its bootstrap list.
    pub bootstrap_len: usize,
    /// The run's seed (each core's randomness is derived from it).
    pub seed: u64,
}

/// A running simulated peer: its cores and the driver's bookkeeping.
pub struct SimPeer {
    /// Peer id.
    pub id: u32,
    /// How many times this peer has started (0 for the first life).
    pub life: u32,
    /// Membership and failure detection.
    pub membership: Membership<u32>,
    /// Reliable pipes.
    pub pipes: Pipes<u32>,
    /// Bootstrap failover and NOA/TTU.
    pub acquaintances: Acquaintances,
    /// The pipe session of this life.
    pub session: u64,
    settings: PeerSettings,
    next_token: u64,
    sends: BTreeMap<u64, SendKind>,
    next_stats_at: Instant,
    next_traffic_at: Option<Instant>,
    traffic_no: BTreeMap<u32, u64>,
    rng: SimRng,
    /// What the world must do; drained by the world after every input.
    pub actions: Vec<Action>,
}

impl SimPeer {
    /// Starts a peer at `now` as `start` describes.
    pub fn start(start: PeerStart, settings: PeerSettings, now: Instant) -> SimPeer {
        let PeerStart {
            id,
            life,
            incarnation,
            session,
            bootstrap_len,
            seed,
        } = start;
        let stats = PeerStats {
            cores: 2,
            cores_offered: 1,
            ..PeerStats::default()
        };
        let membership = Membership::new(
            id,
            incarnation,
            vec![format!("/sim/{id}")],
            stats,
            settings.membership.clone(),
            derive(&[seed, 1, u64::from(id), u64::from(life)]),
            now,
        );
        let pipes = Pipes::new(settings.pipes.clone(), session);
        let acquaintances = Acquaintances::new(settings.acquaintances.clone(), bootstrap_len, now);
        let mut rng = SimRng::new(derive(&[seed, 2, u64::from(id), u64::from(life)]));
        let next_traffic_at = settings
            .traffic_interval
            .map(|i| now + jittered(i, &mut rng));
        SimPeer {
            id,
            life,
            membership,
            pipes,
            acquaintances,
            session,
            next_token: 0,
            sends: BTreeMap::new(),
            next_stats_at: now + settings.stats_interval,
            next_traffic_at,
            traffic_no: BTreeMap::new(),
            rng,
            settings,
            actions: Vec::new(),
        }
    }

    /// When this peer next needs [`SimPeer::handle_timers`].
    pub fn next_wakeup(&self) -> Instant {
        let mut at = self.membership.poll_timeout().min(self.next_stats_at);
        if let Some(t) = self.pipes.poll_timeout() {
            at = at.min(t);
        }
        if let Some(t) = self.acquaintances.poll_timeout() {
            at = at.min(t);
        }
        if let Some(t) = self.next_traffic_at {
            at = at.min(t);
        }
        at
    }

    /// Bytes arrived from `from` (the transport authenticates `from`).
    pub fn handle_frame(&mut self, now: Instant, from: u32, bytes: &[u8]) {
        match wire::decode::<Frame<u32>>(bytes, self.settings.max_frame_bytes) {
            Ok(Frame::Membership(msg)) => {
                if msg.sender().peer != from {
                    self.actions.push(Action::Malformed {
                        from,
                        error: "forged membership sender".into(),
                    });
                    return;
                }
                self.membership
                    .handle(now, membership::Input::Message { from, msg });
            }
            Ok(Frame::Pipe(frame)) => self.pipes.handle_frame(now, from, frame),
            Err(error) => self.actions.push(Action::Malformed {
                from,
                error: error.to_string(),
            }),
        }
        self.flush(now);
    }

    /// The transport connected to `peer` (a dial or an exploration
    /// succeeded, identify ran).
    pub fn handle_contact(&mut self, now: Instant, peer: u32) {
        self.membership
            .handle(now, membership::Input::Contact { peer });
        self.flush(now);
    }

    /// The transport could not reach `peer`.
    pub fn handle_unreachable(&mut self, now: Instant, peer: u32) {
        self.membership
            .handle(now, membership::Input::Unreachable { peer });
        self.flush(now);
    }

    /// Bootstrap entry `index` could not be dialed.
    pub fn handle_dial_failed(&mut self, now: Instant, index: usize) {
        self.acquaintances.dial_failed(now, index);
        self.flush(now);
    }

    /// Runs the cores' timers due at `now`, and the driver's own.
    pub fn handle_timers(&mut self, now: Instant) {
        self.membership.handle_timeout(now);
        self.pipes.handle_timeout(now);
        self.acquaintances.handle_timeout(now);
        if now >= self.next_stats_at {
            self.next_stats_at = now + self.settings.stats_interval;
            let stats = self.membership.local().stats.clone();
            self.membership
                .handle(now, membership::Input::SetStats(stats));
        }
        if let Some(at) = self.next_traffic_at {
            if now >= at {
                self.send_app_traffic(now);
                let interval = self.settings.traffic_interval.unwrap_or(Duration::MAX);
                self.next_traffic_at = Some(now + jittered(interval, &mut self.rng));
            }
        }
        self.flush(now);
    }

    /// Sends one application message to a random live member, the way
    /// `Peer::send` does through the driver's `Command::Send`.
    fn send_app_traffic(&mut self, now: Instant) {
        let alive: Vec<u32> = self
            .membership
            .view(now)
            .into_iter()
            .filter(|m| m.record.state == MemberState::Alive)
            .map(|m| m.record.peer)
            .collect();
        let Some(&to) = self.rng.pick(&alive) else {
            return;
        };
        let no = self.traffic_no.entry(to).or_insert(0);
        let id = AppMsgId {
            from: self.id,
            session: self.session,
            to,
            no: *no,
        };
        *no += 1;
        let payload = id.encode();
        let token = self.next_token;
        self.next_token += 1;
        let deadline = now + self.settings.send_timeout;
        self.actions.push(Action::AppSent(id));
        match self
            .pipes
            .send(now, to, TrafficClass::EVENTS, payload, token, deadline)
        {
            Ok(()) => {
                self.sends.insert(token, SendKind::App(id));
            }
            Err(_) => self.actions.push(Action::AppOutcome {
                id,
                delivered: false,
            }),
        }
    }

    /// Executes everything the cores asked for, until they are quiet (the
    /// driver's `flush`).
    pub fn flush(&mut self, now: Instant) {
        loop {
            let mut progressed = false;
            while let Some(out) = self.membership.poll() {
                progressed = true;
                self.on_membership_output(now, out);
            }
            while let Some(out) = self.pipes.poll() {
                progressed = true;
                self.on_pipe_output(out);
            }
            while let Some(out) = self.acquaintances.poll() {
                progressed = true;
                match out {
                    AcquaintanceOutput::DialBootstrap { index } => {
                        self.actions.push(Action::Dial { index })
                    }
                    AcquaintanceOutput::Explore => self.actions.push(Action::Explore),
                }
            }
            if self.pipes.has_delivery() {
                progressed = true;
                self.deliver(now);
            }
            if !progressed {
                break;
            }
        }
    }

    /// Hands delivered pipe messages to their owner by tag.
    fn deliver(&mut self, _now: Instant) {
        while let Some(d) = self.pipes.pop_delivery() {
            match d.payload.first().copied() {
                Some(TAG_APP) => match AppMsgId::decode(&d.payload[1..]) {
                    Some(id) if id.from == d.from && id.to == self.id => {
                        self.actions.push(Action::AppDelivered(id))
                    }
                    _ => self.actions.push(Action::Malformed {
                        from: d.from,
                        error: "bad application message".into(),
                    }),
                },
                _ => self.actions.push(Action::Malformed {
                    from: d.from,
                    error: "unknown pipe payload tag".into(),
                }),
            }
        }
    }

    fn send_frame(&mut self, to: u32, frame: &Frame<u32>) {
        match wire::encode(frame, self.settings.max_frame_bytes) {
            Ok(bytes) => self.actions.push(Action::Frame { to, bytes }),
            Err(error) => self.actions.push(Action::Malformed {
                from: self.id,
                error: format!("cannot encode a frame: {error}"),
            }),
        }
    }

    fn on_membership_output(&mut self, now: Instant, out: membership::Output<u32>) {
        match out {
            membership::Output::Send { to, msg } => {
                self.send_frame(to, &Frame::Membership(msg));
            }
            membership::Output::Event(event) => {
                if matches!(event.to, MemberState::Dead | MemberState::Left) {
                    self.pipes.peer_dead(&event.peer);
                }
                self.acquaintances
                    .set_live_members(now, self.membership.live_count());
                self.actions.push(Action::Member(event));
            }
            membership::Output::PersistIncarnation(incarnation) => {
                self.actions.push(Action::PersistIncarnation(incarnation));
            }
        }
    }

    fn on_pipe_output(&mut self, out: PipeOutput<u32>) {
        match out {
            PipeOutput::Transmit { to, frame, .. } => {
                self.send_frame(to, &Frame::Pipe(frame));
            }
            PipeOutput::Delivered { token, .. } => {
                if let Some(SendKind::App(id)) = self.sends.remove(&token) {
                    self.actions.push(Action::AppOutcome {
                        id,
                        delivered: true,
                    });
                }
            }
            PipeOutput::Failed { token, error } => {
                if let Some(SendKind::App(id)) = self.sends.remove(&token) {
                    let _ = error;
                    self.actions.push(Action::AppOutcome {
                        id,
                        delivered: false,
                    });
                }
            }
        }
    }
}

/// `interval` scaled by a random factor in [0.5, 1.5).
fn jittered(interval: Duration, rng: &mut SimRng) -> Duration {
    interval.mul_f64(0.5 + rng.unit())
}
