//! Serialisable views of a peer for `peer.json`, the HTTP API and the CLI.

use serde::{Deserialize, Serialize};

use colony_core::membership::{MemberState, PeerStats};
use colony_core::pipe::PipeStats;
use colony_net::NetCountersSnapshot;

/// What `DATA_DIR/peer.json` holds: how to reach this peer.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct PeerInfo {
    /// The peer's id (stable across restarts).
    pub peer_id: String,
    /// The network it belongs to.
    pub network: String,
    /// Listen addresses, each ending in `/p2p/<peer_id>`: give one to
    /// `--bootstrap` of another peer.
    pub listen_addrs: Vec<libp2p::Multiaddr>,
    /// Local HTTP API address, if served.
    pub api_addr: Option<std::net::SocketAddr>,
    /// Process id of the peer.
    pub pid: u32,
}

/// One row of `colony peers`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct MemberInfo {
    /// The member's id.
    pub peer_id: String,
    /// Whether this row is the answering peer itself.
    pub local: bool,
    /// Liveness.
    pub state: MemberState,
    /// Incarnation (raised by the member to refute suspicion or rejoin).
    pub incarnation: u64,
    /// Its addresses.
    pub addrs: Vec<String>,
    /// Its published statistics.
    pub stats: PeerStats,
    /// When its state last changed here, ms since the Unix epoch.
    pub state_since_unix_ms: u64,
    /// Milliseconds since a message from it arrived, if ever.
    pub last_heard_ms_ago: Option<u64>,
    /// How many times this peer declared it dead.
    pub times_declared_dead: u32,
    /// Failure-detector suspicion level, if this peer monitors it.
    pub phi: Option<f64>,
}

/// Counters of the driver itself.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct DriverCounters {
    /// Frames that did not decode (garbage, wrong version).
    pub malformed_frames: u64,
    /// Of those, frames of another wire protocol version (refused unread).
    #[serde(default)]
    pub wrong_version_frames: u64,
    /// Membership messages whose sender record named another peer.
    pub forged_senders: u64,
    /// Records about this peer that it never published (gossiped by a
    /// hostile or broken member), refuted with a higher incarnation.
    #[serde(default)]
    pub forged_records_refuted: u64,
    /// Incoming connections that failed (bad handshake, garbage bytes).
    pub rejected_connections: u64,
    /// Peers of another network that connected and were dropped.
    pub foreign_peers: u64,
    /// Identify protocol of the last of them, e.g. `/colony/other/1.0.0`
    /// (cut to 100 characters): why a bootstrap peer did not let us join.
    #[serde(default)]
    pub last_foreign_protocol: Option<String>,
    /// Checkpoint pieces that could not be written to disk.
    #[serde(default)]
    pub checkpoint_write_errors: u64,
    /// Checkpoint pieces on disk that failed their checksum (dropped).
    #[serde(default)]
    pub checkpoint_pieces_corrupt: u64,
    /// Warning lines about remote peers held back by rate limiting.
    #[serde(default)]
    pub warnings_suppressed: u64,
    /// Peers disconnected because they did not identify as peers of this
    /// network within the identify timeout (or identified as another's).
    #[serde(default)]
    pub unidentified_peers: u64,
    /// Job messages over their size limit: not sent (their job failed), or
    /// dropped on receipt.
    #[serde(default)]
    pub oversized_job_messages: u64,
    /// Object messages from peers outside the membership view, dropped
    /// unread.
    #[serde(default)]
    pub refused_object_messages: u64,
}

/// `GET /v1/apps`: what this peer can run.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct AppsInfo {
    /// Native applications, compiled into the peer.
    pub native: Vec<String>,
    /// Whether the peer runs WebAssembly guests (`--trust-network`).
    pub guests_enabled: bool,
    /// Guest modules it holds, most recently used first.
    pub modules: Vec<ModuleInfo>,
}

/// A guest module a peer holds.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ModuleInfo {
    /// The application name jobs use: `wasm:<BLAKE3 of its bytes>`.
    pub app: String,
    /// Its size.
    pub size_bytes: u64,
}

/// Guest modules fetched and served by this peer.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ModuleCounters {
    /// Whether this peer runs WebAssembly guests (`--trust-network` or
    /// `--trust`).
    pub guests_enabled: bool,
    /// Modules fetched from other peers (verified and stored).
    pub fetched: u64,
    /// Of those, modules fetched from a member of the module's home.
    pub fetched_from_home: u64,
    /// Modules stored here as a member of their home (pushed by their
    /// publisher).
    pub homed: u64,
    /// Modules sent to peers that asked.
    pub served: u64,
    /// Module messages nobody asked for (dropped).
    pub unsolicited: u64,
    /// Modules held in this peer's module store.
    pub held: usize,
}

/// `GET /v1/status`: the peer and its counters.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct StatusInfo {
    /// Reachability.
    pub peer: PeerInfo,
    /// Current incarnation.
    pub incarnation: u64,
    /// Whether it has joined a network (or started its own).
    pub joined: bool,
    /// Other members alive or suspect.
    pub live_members: usize,
    /// Frame plumbing counters.
    pub net: NetCountersSnapshot,
    /// Reliable pipe counters.
    pub pipes: PipeStats,
    /// Driver counters.
    pub driver: DriverCounters,
    /// Divisible-job counters.
    pub jobs: JobCounters,
    /// Guest-module counters.
    #[serde(default)]
    pub modules: ModuleCounters,
    /// When this peer computes, and whether it does now.
    #[serde(default)]
    pub compute: ComputeInfo,
    /// The object space: what this peer holds of it, and what it did.
    #[serde(default)]
    pub space: SpaceInfo,
    /// What this peer's distributed objects did: calls served, resent,
    /// recovered, and under `cic` checkpoints forced and rollbacks.
    #[serde(default)]
    pub objects: colony_core::object::ObjectStats,
    /// This peer's part in the streaming mesh.
    #[serde(default)]
    pub mesh: crate::mesh::MeshInfo,
}

/// This peer's part in the object space.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct SpaceInfo {
    /// Bytes of object values this peer gives the space (`--space-mib`);
    /// 0: it holds no partitions.
    pub capacity_bytes: u64,
    /// Largest object value accepted (`--max-object-mib`).
    pub max_object_bytes: u64,
    /// Partitions held here (primary or backup).
    pub partitions: usize,
    /// Of those, the partitions this peer is the primary of.
    pub primary_of: Vec<u16>,
    /// Every partition held here (primary or backup).
    #[serde(default)]
    pub held: Vec<u16>,
    /// Objects held here, over every partition.
    pub objects: u64,
    /// Bytes of object values held here.
    pub bytes: u64,
    /// Objects locked in the partitions held here.
    pub locks: u64,
    /// Operations applied by the primaries here.
    pub requests_applied: u64,
    /// Requests sent on to another member.
    pub requests_redirected: u64,
    /// Requests refused as malformed or out of bounds.
    pub requests_refused: u64,
    /// Partition homes created here.
    pub partitions_created: u64,
    /// Lock leases that ran out at the primaries here.
    pub expired_leases: u64,
    /// Grants revoked at the primaries here because their holder's peer was
    /// declared dead, or was not alive when this peer took the partition
    /// over (before their leases ran out).
    pub revoked_locks: u64,
    /// This peer's requests waiting for an answer.
    pub pending_requests: usize,
    /// Partition writes waiting for the disk.
    pub writes_in_flight: usize,
    /// Partitions whose writes wait for room behind them now.
    pub writes_backlogged: usize,
    /// Times a partition's write had to wait for room (merged with the
    /// writes after it), since the peer started.
    pub writes_delayed: u64,
    /// Changes not written because an earlier write of their partition
    /// failed (the disk keeps the last state written in full).
    pub writes_skipped: u64,
    /// Partition writes that could not be made (encoding or disk errors).
    pub write_errors: u64,
    /// Partitions this peer no longer confirms updates of, after a failed
    /// write.
    pub partitions_not_persisted: usize,
    /// Partitions on disk dropped whole for failing their checksum.
    pub partitions_corrupt: u64,
    /// Locks this peer held and lost (a renewal refused).
    pub locks_lost: u64,
    /// Locks granted after their asker had stopped waiting, released at
    /// once.
    pub unclaimed_grants_released: u64,
    /// Cached reads of this peer answered from its own copies (P³'s
    /// level-1 cache), without asking any other peer.
    #[serde(default)]
    pub cache_hits: u64,
    /// Cached reads of any peer answered from the replicas held here.
    #[serde(default)]
    pub replica_reads: u64,
    /// Cached reads of any peer answered from hot copies held here for
    /// other partitions' homes.
    #[serde(default)]
    pub hot_reads: u64,
    /// Copies of objects this peer keeps for its cached reads.
    #[serde(default)]
    pub cached_objects: usize,
    /// Bytes of those copies.
    #[serde(default)]
    pub cached_bytes: u64,
    /// Largest value this peer's calls and API take (`--max-value-mib`);
    /// longer than a chunk, values are stored in chunks.
    #[serde(default)]
    pub max_value_bytes: u64,
    /// Values written in chunks through this peer.
    #[serde(default)]
    pub chunked_writes: u64,
    /// Chunks of replaced, deleted or refused values this peer could not
    /// delete (or may have left: it could not tell what a write
    /// replaced); they remain, tagged `.colony-chunk-of`.
    #[serde(default)]
    pub chunk_cleanup_failures: u64,
    /// Hot copies this peer's primaries sent beyond their homes.
    #[serde(default)]
    pub hot_copies_sent: u64,
    /// Erasure-coded shards held here for writers.
    #[serde(default)]
    pub shards: usize,
    /// Bytes of those shards (counted against `capacity_bytes`).
    #[serde(default)]
    pub shard_bytes: u64,
    /// Shards asked of this peer that it did not hold.
    #[serde(default)]
    pub shards_missing: u64,
    /// Shard writes or deletions on this peer's disk that failed.
    #[serde(default)]
    pub shard_write_errors: u64,
    /// Shards on disk dropped for failing their checksum.
    #[serde(default)]
    pub shards_corrupt: u64,
    /// Values written erasure-coded through this peer.
    #[serde(default)]
    pub coded_writes: u64,
    /// Erasure-coded values this peer repaired: shards of dead holders
    /// rebuilt and placed on new ones.
    #[serde(default)]
    pub shard_repairs: u64,
    /// Writes whose shards this peer dropped because no committed value
    /// named them here.
    #[serde(default)]
    pub shard_orphans_dropped: u64,
}

/// This peer as a volunteer host: its owner's policy and what it does now.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct ComputeInfo {
    /// When it computes (`--when`).
    pub when: colony_core::membership::ComputeWhen,
    /// Why it takes no work now, if it is paused.
    pub paused: Option<colony_core::membership::PauseReason>,
    /// Whether a unit runs here now.
    pub computing: bool,
    /// Other processes' share of the host's CPU at the last sample, in
    /// percent of all cores (`--when idle` only).
    pub other_cpu_percent: Option<f64>,
    /// The share above which it pauses (`--idle-cpu`), with `--when idle`.
    pub idle_cpu_percent: Option<f64>,
    /// How long other processes' share must stay below it before computing
    /// again (`--idle-secs`), with `--when idle`.
    pub idle_secs: Option<f64>,
    /// Seconds units ran here today (UTC), when a daily limit is set.
    pub computed_today_s: Option<u64>,
    /// The daily limit (`--max-hours-per-day`), in hours.
    pub max_hours_per_day: Option<f64>,
    /// Times it paused since it started (a unit running or not).
    pub pauses: u64,
}

/// What the job core of a peer is doing, and what it refused.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct JobCounters {
    /// Units computing on this peer now.
    pub running_units: usize,
    /// Job messages refused because their sender may not send them
    /// (not a member, not the job's primary, not its home, over the cores
    /// offered, a submitter not accepted, a cancel by someone else).
    pub refused_messages: u64,
}

/// One peer's part in a job, for display.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ContributionInfo {
    /// The peer.
    pub peer_id: String,
    /// Units it finished.
    pub units_done: u64,
    /// Units it is running.
    pub units_running: u64,
    /// Work it reported (nodes explored, rows computed).
    pub work: u64,
    /// Units it gave to others.
    pub donated: u64,
}

/// A peer that refused to work on a job, and why.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct DeclineInfo {
    /// The peer.
    pub peer_id: String,
    /// Why, as it said (it cannot run the application, does not run the
    /// guest's code, or does not accept jobs from the submitter).
    pub reason: String,
}

/// Results larger than this (serialised) are not shown in full.
const MAX_JSON_RESULT_BYTES: usize = 16 * 1024;

/// A job as `colony run`, `colony jobs` and `colony result` show it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct JobInfo {
    /// The job's id (32 hex digits).
    pub job_id: String,
    /// Its application.
    pub app: String,
    /// Its home peer.
    pub home: String,
    /// Who submitted it.
    pub submitter: String,
    /// `running`, `done` or `failed`.
    pub state: String,
    /// Why it failed.
    pub error: Option<String>,
    /// The result, as the application's JSON.
    pub result: Option<serde_json::Value>,
    /// The result in words.
    pub summary: Option<String>,
    /// Whether the result matches a known answer, where one is known.
    pub verified: Option<bool>,
    /// Units named so far.
    pub units: u64,
    /// Units merged.
    pub units_done: u64,
    /// Successful steals.
    pub steals: u64,
    /// Work counted by the application.
    pub work: u64,
    /// Peers that ran at least one unit.
    pub peers_used: u64,
    /// The home's members, primary first.
    pub home_members: Vec<String>,
    /// The job's fault tolerance, e.g. `checkpoint ttc=1s copies:2 home=3`.
    pub fault_tolerance: String,
    /// Checkpoints stored.
    pub checkpoints: u64,
    /// Bytes of checkpoint state received by the primary.
    pub checkpoint_bytes: u64,
    /// Units reissued after their worker was lost or left.
    pub reissued: u64,
    /// Times a backup took the primary role over.
    pub takeovers: u64,
    /// Seconds since submission (or until completion).
    pub elapsed_s: f64,
    /// Each peer's part.
    pub contributions: Vec<ContributionInfo>,
    /// Shared variables (e.g. the best makespan so far).
    pub shared: std::collections::BTreeMap<String, i64>,
    /// Set while the job's home has lost its majority (the job is still
    /// `running`): it waits for the lost members and fails once
    /// `fails_in_s` has passed. See [`JobInfo::waiting`].
    #[serde(default)]
    pub home_majority_lost: Option<colony_core::job::MajorityLost>,
    /// Peers that refused to work on the job, and why, as its primary
    /// heard them (at most 64; a primary that took over lists only those
    /// it heard itself).
    #[serde(default)]
    pub declined: Vec<DeclineInfo>,
    /// Refusals heard beyond those listed in `declined`.
    #[serde(default)]
    pub declined_unlisted: u64,
    /// Whether the peer answering, as the job's primary, knows a majority
    /// of the job's full home to hold it (it then survives the loss of
    /// any minority of the home, its primary included).
    #[serde(default)]
    pub replicated: bool,
    /// Whether its submitter asked to keep its namespace in the object
    /// space (`job-<id>`) when it ends; remove a kept one with
    /// `colony space ns-rm job-<id>`.
    #[serde(default)]
    pub keep_namespace: bool,
}

impl JobInfo {
    /// What a running job waits for, in words, if it waits for anything
    /// other than its units: a home that lost its majority.
    pub fn waiting(&self) -> Option<String> {
        if self.state != "running" {
            return None;
        }
        let lost = self.home_majority_lost.as_ref()?;
        Some(format!(
            "waiting: the job's home lost its majority ({} of its {} members gone); it fails in {:.0} s unless they return",
            lost.members_gone, lost.members, lost.fails_in_s
        ))
    }

    /// The refusals in one line ("refused by peer X: why; peer Y: why"),
    /// if any peer refused the job.
    pub fn refusals(&self) -> Option<String> {
        if self.declined.is_empty() && self.declined_unlisted == 0 {
            return None;
        }
        let mut line = self
            .declined
            .iter()
            .map(|d| format!("peer {}: {}", d.peer_id, d.reason))
            .collect::<Vec<_>>()
            .join("; ");
        if self.declined_unlisted > 0 {
            if !line.is_empty() {
                line.push_str("; ");
            }
            line.push_str(&format!("{} more peers", self.declined_unlisted));
        }
        Some(format!("refused by {line}"))
    }

    /// Builds the display form of `view`, describing and verifying a result
    /// with the application from `apps` when this peer has it.
    pub fn from_view(
        view: &colony_core::job::JobView<libp2p::PeerId>,
        apps: &colony_core::divisible::AppRegistry,
    ) -> JobInfo {
        use colony_core::job::JobState;
        let app = apps.get(&view.app).ok();
        let (state, error, result, summary, verified) = match &view.state {
            JobState::Running => ("running", None, None, None, None),
            JobState::Failed { reason } => ("failed", Some(reason.clone()), None, None, None),
            JobState::Cancelled { reason } => {
                ("cancelled", Some(reason.clone()), None, None, None)
            }
            JobState::Done { result } => match &app {
                Some(app) => (
                    "done",
                    None,
                    app.output_json(result).ok().map(|json| {
                        // Large results (a whole matrix) are summarised, not dumped.
                        if result.len() > MAX_JSON_RESULT_BYTES {
                            serde_json::json!({ "omitted": "result too large to show", "bytes": result.len() })
                        } else {
                            json
                        }
                    }),
                    app.describe(&view.params, result).ok(),
                    app.verify(&view.params, result).ok().flatten(),
                ),
                None => ("done", None, None, None, None),
            },
        };
        JobInfo {
            job_id: view.job.to_string(),
            app: view.app.clone(),
            home: view.home.to_string(),
            submitter: view.submitter.to_string(),
            state: state.to_string(),
            error,
            result,
            summary,
            verified,
            units: view.stats.units,
            units_done: view.stats.units_done,
            steals: view.stats.steals,
            work: view.stats.work,
            peers_used: view.stats.peers_used,
            home_members: view.home_members.iter().map(|p| p.to_string()).collect(),
            fault_tolerance: format!(
                "{} ttc={:?} {} home={}{}",
                view.ft.protocol,
                view.ft.ttc,
                view.ft.storage,
                view.ft.home_size,
                if view.ft.durable { " durable" } else { "" }
            ),
            checkpoints: view.stats.checkpoints,
            checkpoint_bytes: view.stats.checkpoint_bytes,
            reissued: view.stats.reissued,
            takeovers: view.stats.takeovers,
            elapsed_s: view.elapsed_s,
            contributions: view
                .contributions
                .iter()
                .map(|(peer, c)| ContributionInfo {
                    peer_id: peer.to_string(),
                    units_done: c.units_done,
                    units_running: c.units_running,
                    work: c.work,
                    donated: c.donated,
                })
                .collect(),
            shared: view
                .shared
                .iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
            home_majority_lost: view.home_majority_lost.as_deref().cloned(),
            declined: view
                .declined
                .iter()
                .flat_map(|d| &d.peers)
                .map(|(peer, reason)| DeclineInfo {
                    peer_id: peer.to_string(),
                    reason: reason.clone(),
                })
                .collect(),
            declined_unlisted: view.declined.as_ref().map_or(0, |d| d.unlisted),
            replicated: view.replicated,
            keep_namespace: view.keep_namespace,
        }
    }
}

/// One distributed object, as `GET /v1/objects` and `colony objects` show
/// it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ObjectSummary {
    /// Its URI, `colony://<network>/<guid>`.
    pub uri: String,
    /// Its type.
    pub object_type: String,
    /// Its fault tolerance: `none`, `checkpoint` or `pml`.
    pub protocol: String,
    /// Its time to checkpoint in milliseconds (none under `none`).
    pub ttc_ms: Option<u64>,
    /// Calls and replies it served.
    pub served: u64,
    /// Deliveries logged since its last checkpoint (`pml`).
    pub logged: usize,
    /// Deliveries its last checkpoint includes.
    pub checkpoint_covers: u64,
    /// Milliseconds since that checkpoint (or since it was created or
    /// rebuilt here).
    pub checkpoint_age_ms: u64,
    /// Milliseconds its handler has been running the current call or
    /// reply, if one runs now.
    #[serde(default)]
    pub running_ms: Option<u64>,
}

impl From<&colony_core::object::ObjectInfo> for ObjectSummary {
    fn from(info: &colony_core::object::ObjectInfo) -> ObjectSummary {
        let (protocol, ttc_ms) = (info.protocol.name(), info.protocol.ttc_ms());
        ObjectSummary {
            uri: info.uri.to_string(),
            object_type: info.object_type.clone(),
            protocol: protocol.to_string(),
            ttc_ms,
            served: info.served,
            logged: info.logged,
            checkpoint_covers: info.checkpoint_covers,
            checkpoint_age_ms: info.checkpoint_age_ms,
            running_ms: info.running_ms,
        }
    }
}
