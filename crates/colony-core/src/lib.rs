//! Sans-IO protocol cores of Colony.
//!
//! Every core here is a plain state machine: it takes inputs together with the
//! current time (`handle(now, ..)`, `handle_timeout(now)`), and the caller
//! drains what it wants done with `poll()` and asks when to wake it next with
//! `poll_timeout()`. No core reads the clock, spawns a task or touches a
//! socket, so the same code runs under the tokio/libp2p driver in the `colony`
//! crate and in a deterministic simulator in virtual time.
//!
//! - [`membership`]: who is alive — ring monitoring with phi-accrual failure
//!   detection, SWIM-style suspicion and refutation by incarnation, infection
//!   style dissemination and periodic full-view synchronisation (JXTA's cache
//!   synchronisation), with per-peer statistics carried in presence records.
//! - [`pipe`]: reliable, ordered, exactly-once messaging over an unreliable
//!   datagram service, with traffic classes and progressive retransmission.
//! - [`acquaintance`]: bootstrap-list failover and ProActive's NOA/TTU
//!   acquaintance maintenance.
//! - [`divisible`]: the divisible programming model (step / divide / merge)
//!   and the registry of applications.
//! - [`home`]: the generic replicated home — a state kept on the k
//!   closest live peers of a key, changed with a majority of them, with
//!   elections, joint membership changes and hand-over.
//! - [`job`]: divisible jobs across peers — homes, advertisements,
//!   brokered work stealing, merging, results.
//! - [`ft`]: a job's fault-tolerance settings (protocol, TTC, checkpoint
//!   storage, home size), chosen at deployment.
//! - [`erasure`]: Reed–Solomon coding of checkpoints into k + m shards.
//! - [`phi`]: the phi-accrual failure detector used by membership.
//! - [`pieces`]: checkpoint pieces held for the primaries of replicated
//!   states (the job core is the first user).
//! - [`wire`]: bounded encoding of core messages, the versioned frame
//!   header and the kinds of pipe payloads.
//! - [`space`]: P³'s object space — named objects in namespaces, kept in
//!   partitions on the generic home, with linearizable get/set/CAS and
//!   leased read/write locks with fencing tokens.
//! - [`object`]: distributed objects — GUIDs and `colony://` URIs, typed
//!   references, the active-object model and its deterministic activation.
//! - [`mesh`]: seed 001's streaming mesh — CellIds, traffic classes and
//!   FT policies, cell records on the generic home, the super-peer data
//!   plane with in-cell replication and takeover, sensors and clients with
//!   fast and slow rebind.
//! - [`node`]: the cores above composed into one sans-IO node, with the
//!   routing between them: what the runtime's driver and the simulator run.
//! - [`runner`]: the step boundary of a running unit, for every executor.

pub mod acquaintance;
pub mod divisible;
pub mod erasure;
pub mod ft;
pub mod home;
pub mod job;
pub mod membership;
pub mod mesh;
pub mod modules;
pub mod node;
pub mod object;
pub mod phi;
pub mod pieces;
pub mod pipe;
pub mod runner;
pub mod space;
#[cfg(test)]
mod test_apps;
pub mod wire;

use std::fmt::{Debug, Display};
use std::hash::Hash;

use serde::de::DeserializeOwned;
use serde::Serialize;

/// What a core needs from a peer identifier: cheap to clone, ordered (the
/// membership ring is sorted by it), hashable, printable and serialisable.
/// The runtime uses libp2p's `PeerId`; tests and the simulator use small
/// integers.
pub trait PeerKey:
    Clone + Ord + Hash + Debug + Display + Serialize + DeserializeOwned + Send + 'static
{
}

impl<T> PeerKey for T where
    T: Clone + Ord + Hash + Debug + Display + Serialize + DeserializeOwned + Send + 'static
{
}
