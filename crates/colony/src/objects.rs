//! Distributed objects through a peer's handle (seeds 000 §3, 004 §2):
//! create an object of a registered type anywhere in the network, call it
//! from any peer through its typed reference, delete it.
//!
//! ```no_run
//! # use colony_core::object::{ActiveObject, ObjectContext};
//! # #[derive(serde::Serialize, serde::Deserialize)] struct Counter(u64);
//! # impl ActiveObject for Counter {
//! #     type Params = u64; type Request = u64; type Reply = u64;
//! #     const TYPE: &'static str = "counter";
//! #     fn create(_: &mut ObjectContext<'_>, start: u64) -> Result<Self, String> { Ok(Counter(start)) }
//! #     fn handle(&mut self, _: &mut ObjectContext<'_>, add: u64) -> Result<u64, String> { self.0 += add; Ok(self.0) }
//! # }
//! # async fn demo(peer: colony::Peer) -> Result<(), colony::ColonyError> {
//! use colony::ObjectProtocol;
//!
//! let counter = peer
//!     .create_object::<Counter>(&0, ObjectProtocol::Pml { ttc_ms: 60_000 })
//!     .await?;
//! // From this peer or any other that holds the reference (or its URI):
//! let value = peer.call_object(&counter, &5).await?;
//! assert_eq!(value, 5);
//! peer.delete_object(counter.uri()).await?;
//! # Ok(()) }
//! ```
//!
//! Every call is answered: with the reply, or with a
//! [`ColonyError::Object`] naming what went wrong (the object's handler
//! failed, it does not exist, it was lost under `none`, the deadline
//! passed). Under `pml` a call answered has run exactly once, whatever
//! peers crashed meanwhile.

use std::time::Duration;

use std::collections::BTreeMap;

use colony_core::object::{
    decode_reply, encode, ActiveObject, CallError, ObjectAnswer, ObjectFound, ObjectInfo,
    ObjectProtocol, ObjectRequest, ObjectUri, Ref,
};
use tokio::sync::oneshot;

use crate::command::Command;
use crate::{ColonyError, Peer};

impl Peer {
    /// Sends `request` to the objects core and waits for its answer, at most
    /// `timeout` (the peer's call timeout, 30 s by default, if `None`).
    pub async fn object_request(
        &self,
        request: ObjectRequest,
        timeout: Option<Duration>,
    ) -> Result<ObjectAnswer, ColonyError> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(Command::Object {
                request,
                timeout,
                reply,
            })
            .await
            .map_err(|_| ColonyError::Stopped)?;
        answer
            .await
            .map_err(|_| ColonyError::Stopped)?
            .map_err(ColonyError::Object)
    }

    /// The objects whose primary is this peer, with their protocol and the
    /// deliveries each served (`colony objects`).
    pub async fn objects(&self) -> Result<Vec<ObjectInfo>, ColonyError> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(Command::Objects { reply })
            .await
            .map_err(|_| ColonyError::Stopped)?;
        answer.await.map_err(|_| ColonyError::Stopped)
    }

    /// Creates an object of type `T` from `params`, kept as `protocol`
    /// says, at the peer closest to its new GUID.
    pub async fn create_object<T: ActiveObject>(
        &self,
        params: &T::Params,
        protocol: ObjectProtocol,
    ) -> Result<Ref<T>, ColonyError> {
        let request = ObjectRequest::Create {
            object_type: T::TYPE.to_string(),
            params: encode(params),
            protocol,
        };
        match self.object_request(request, None).await? {
            ObjectAnswer::Created(uri) => Ok(Ref::new(uri)),
            other => Err(unexpected(other)),
        }
    }

    /// Calls the object `to` and waits for its reply, at most the peer's
    /// call timeout.
    pub async fn call_object<T: ActiveObject>(
        &self,
        to: &Ref<T>,
        request: &T::Request,
    ) -> Result<T::Reply, ColonyError> {
        self.call_object_timed(to, request, None).await
    }

    /// Calls the object `to` and waits for its reply at most `timeout`
    /// (then [`CallError::DeadlinePassed`]): for callers with a deadline of
    /// their own.
    pub async fn call_object_within<T: ActiveObject>(
        &self,
        to: &Ref<T>,
        request: &T::Request,
        timeout: Duration,
    ) -> Result<T::Reply, ColonyError> {
        self.call_object_timed(to, request, Some(timeout)).await
    }

    async fn call_object_timed<T: ActiveObject>(
        &self,
        to: &Ref<T>,
        request: &T::Request,
        timeout: Option<Duration>,
    ) -> Result<T::Reply, ColonyError> {
        let request = ObjectRequest::Call {
            to: to.uri().clone(),
            object_type: T::TYPE.to_string(),
            request: encode(request),
        };
        match self.object_request(request, timeout).await? {
            ObjectAnswer::Replied(bytes) => decode_reply::<T>(&bytes).map_err(ColonyError::Object),
            other => Err(unexpected(other)),
        }
    }

    /// Deletes the object at `uri`: calls to it then fail with
    /// [`CallError::NoSuchObject`].
    pub async fn delete_object(&self, uri: &ObjectUri) -> Result<(), ColonyError> {
        let request = ObjectRequest::Delete { uri: uri.clone() };
        match self.object_request(request, None).await? {
            ObjectAnswer::Deleted => Ok(()),
            other => Err(unexpected(other)),
        }
    }
}

/// Largest batch of calls [`Peer::call_objects_json`] takes at once.
pub const MAX_CALL_BATCH: usize = 10_000;

impl Peer {
    /// Looks the object at `uri` up: its type and protocol, asked of its
    /// primary.
    pub async fn lookup_object(&self, uri: &ObjectUri) -> Result<ObjectFound, ColonyError> {
        let request = ObjectRequest::Lookup { uri: uri.clone() };
        match self.object_request(request, None).await? {
            ObjectAnswer::Found(found) => Ok(found),
            other => Err(unexpected(other)),
        }
    }

    /// Creates an object of the registered type `object_type` from
    /// parameters given as JSON (the CLI's and the HTTP API's way).
    pub async fn create_object_json(
        &self,
        object_type: &str,
        params: serde_json::Value,
        protocol: ObjectProtocol,
    ) -> Result<ObjectUri, ColonyError> {
        let kind = self.object_types.get(object_type)?;
        let request = ObjectRequest::Create {
            object_type: object_type.to_string(),
            params: kind.params_from_json(params)?,
            protocol,
        };
        match self.object_request(request, None).await? {
            ObjectAnswer::Created(uri) => Ok(uri),
            other => Err(unexpected(other)),
        }
    }

    /// Calls objects with requests given as JSON, all at once, and waits
    /// for every reply (as JSON), each within `timeout` (the peer's call
    /// timeout if `None`); replies come in the order of `calls`. Each
    /// object's type is looked up once. At most [`MAX_CALL_BATCH`] calls.
    pub async fn call_objects_json(
        &self,
        calls: Vec<(ObjectUri, serde_json::Value)>,
        timeout: Option<Duration>,
    ) -> Result<Vec<Result<serde_json::Value, ColonyError>>, ColonyError> {
        if calls.len() > MAX_CALL_BATCH {
            return Err(ColonyError::Object(CallError::TooLarge {
                what: "batch of calls".into(),
                size: calls.len(),
                max: MAX_CALL_BATCH,
            }));
        }
        let mut types: BTreeMap<ObjectUri, Result<String, CallError>> = BTreeMap::new();
        for (uri, _) in &calls {
            if !types.contains_key(uri) {
                let found = match self.lookup_object(uri).await {
                    Ok(found) => Ok(found.object_type),
                    Err(ColonyError::Object(error)) => Err(error),
                    Err(other) => return Err(other),
                };
                types.insert(uri.clone(), found);
            }
        }
        let calls = calls.into_iter().map(|(to, request)| {
            let object_type = types.get(&to).cloned();
            async move {
                let object_type =
                    object_type.unwrap_or_else(|| Err(CallError::NoSuchObject(to.clone())))?;
                let kind = self.object_types.get(&object_type)?;
                let request = ObjectRequest::Call {
                    to,
                    object_type,
                    request: kind.request_from_json(request)?,
                };
                match self.object_request(request, timeout).await? {
                    ObjectAnswer::Replied(bytes) => Ok(kind.reply_to_json(&bytes)?),
                    other => Err(unexpected(other)),
                }
            }
        });
        Ok(futures::future::join_all(calls).await)
    }
}

/// An answer of the wrong kind: a bug in the core, reported, not panicked.
fn unexpected(answer: ObjectAnswer) -> ColonyError {
    ColonyError::Object(CallError::BadMessage(format!(
        "unexpected answer {answer:?}"
    )))
}
