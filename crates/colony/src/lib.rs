//! The Colony runtime: a peer that runs Colony's protocol cores over libp2p,
//! its public API, and its local HTTP API.
//!
//! ```no_run
//! # async fn demo() -> Result<(), colony::ColonyError> {
//! use colony::{Peer, PeerConfig, TrafficClass};
//!
//! let mut config = PeerConfig::new("/tmp/colony-a");
//! config.listen = vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()];
//! let a = Peer::start(config).await?;
//!
//! let mut config = PeerConfig::new("/tmp/colony-b");
//! config.listen = vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()];
//! config.bootstrap = a.info().listen_addrs.clone();
//! let b = Peer::start(config).await?;
//!
//! let mut inbox = a.take_inbox().expect("inbox taken once");
//! b.wait_for_member(a.peer_id(), std::time::Duration::from_secs(10)).await?;
//! let receipt = b.send(a.peer_id(), TrafficClass::EVENTS, b"hello".to_vec()).await?;
//! let message = inbox.recv().await.expect("peer running");
//! assert_eq!(message.payload, b"hello");
//! # let _ = receipt; Ok(()) }
//! ```
//!
//! A peer keeps its identity and incarnation in `DATA_DIR/peer.redb` and
//! writes `DATA_DIR/peer.json` (its id, addresses and API address) once it
//! listens; a peer serving the local API keeps the token the API asks for
//! in `DATA_DIR/api.token` ([`API_TOKEN_FILE`], mode 0600). Membership, pipes and acquaintance maintenance are the sans-IO
//! cores of `colony-core`; this crate feeds them events, timers and frames.

#![warn(missing_docs)]

mod api;
pub mod bench;
mod command;
mod compute;
mod config;
mod daemon;
pub mod deploy;
mod driver;
mod error;
mod host;
mod info;
mod local;
mod mesh;
mod objects;
mod peer;
mod space;
mod trust;
mod unit_space;
mod volunteer;

pub use api::{read_api_token, API_TOKEN_FILE, SPACE_MIN_BYTES_PER_SEC};
pub use colony_core::acquaintance::AcquaintanceConfig;
pub use colony_core::divisible::{AppError, AppRegistry, Divisible};
pub use colony_core::ft::{CheckpointStorage, FaultTolerance, FtProtocol};
pub use colony_core::job::{JobConfig, JobId, JobState, JobView, SubmitOptions, SubmitPolicy};
pub use colony_core::membership::{
    ComputeWhen, MemberState, MembershipConfig, PauseReason, PeerStats,
};
pub use colony_core::object::{
    ActiveObject, CallError, Guid, ObjectContext, ObjectInfo, ObjectProtocol, ObjectTypes,
    ObjectUri, ObjectsConfig, Ref,
};
pub use colony_core::pipe::{PipeConfig, PipeError, Receipt, TrafficClass};
pub use colony_core::space::{
    Condition, Listed, LockLost, LockMode, Object, ObjectKey, Query, Shard, ShardId, SpaceConfig,
    SpaceError, SpaceOp, SpaceReply, TagValue, Tags, GLOBAL, PARTITIONS,
};
pub use colony_net::{FaultConfig, NetConfig};
pub use config::{ApiLimits, GuestConfig, PeerConfig, VolunteerConfig, LOWEST_NICE};
pub use error::ColonyError;
pub use info::{
    AppsInfo, ComputeInfo, ContributionInfo, DeclineInfo, JobCounters, JobInfo, MemberInfo,
    ModuleInfo, ObjectSummary, PeerInfo, SpaceInfo, StatusInfo,
};
pub use libp2p::{Multiaddr, PeerId};
pub use local::LocalNetwork;
pub use mesh::{
    MeshFrame, MeshInfo, RebindInfo, StreamInfo, CLIENT_FRAME_CAPACITY, MAX_STREAMS_COUNTED,
};
pub use peer::{
    job_deadline_from_secs, InboundMessage, JobHandle, Peer, PendingReceipt, PublishedModule,
    MAX_JOB_DEADLINE,
};
pub use space::{
    Listing, LockGuard, ShardKeeping, Storage, CHUNKS_IN_FLIGHT, CHUNK_BYTES, CHUNK_OF_TAG,
    CHUNK_PREFIX, DEFAULT_MAX_VALUE_BYTES, RESERVED_PREFIX, SHARDS_TAG, SHARD_TIMEOUT, SIZE_TAG,
    SPACE_TIMEOUT,
};
pub use trust::{GuestTrust, PUBLIC_KEY_FILE};
