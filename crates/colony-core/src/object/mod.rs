//! Distributed objects (G2:P2P's remotely activated objects, ProActive's
//! active objects; seeds 000 §3 and 004 §2–4): objects addressed by
//! `colony://<network>/<guid>`, living at the home of their GUID, served
//! one message at a time, calling each other asynchronously.
//!
//! - [`id`]: GUIDs, URIs, typed references ([`Ref`]) and call identifiers.
//! - [`model`]: what an application writes ([`ActiveObject`]) and the
//!   registry of object types.
//! - [`activation`]: one live object serving deliveries deterministically,
//!   with the callee-side result cache that makes a repeated call answer
//!   from the cache instead of running again.
//! - [`core`]: the objects of one peer — homes, live activations, and
//!   calls resent under one identifier until answered or past deadline.
//! - [`record`]: an object as its home keeps it — checkpoint and message
//!   log — replicated by the generic home, and its recovery by replay.

pub mod activation;
pub mod core;
pub mod id;
pub mod model;
pub mod record;
#[cfg(test)]
mod tests;

pub use self::core::{
    ObjectAnswer, ObjectFound, ObjectInfo, ObjectMsg, ObjectOutput, ObjectRequest, ObjectRun,
    ObjectStats, Objects, ObjectsConfig, StoredObject,
};
pub use activation::{Activation, Delivery, ObjectCheckpoint, Served};
pub use id::{CallId, Guid, ObjectUri, Ref, UriError};
pub use model::{
    decode_reply, encode, ActiveObject, CallError, Instance, ObjectContext, ObjectKind,
    ObjectTypes, Outgoing,
};
pub use record::{
    CicStamp, ObjectChange, ObjectEffect, ObjectProtocol, ObjectRecord, ObjectSnapshot,
};
