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

use colony_core::object::{
    decode_reply, encode, ActiveObject, CallError, ObjectAnswer, ObjectInfo, ObjectProtocol,
    ObjectRequest, ObjectUri, Ref,
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

/// An answer of the wrong kind: a bug in the core, reported, not panicked.
fn unexpected(answer: ObjectAnswer) -> ColonyError {
    ColonyError::Object(CallError::BadMessage(format!(
        "unexpected answer {answer:?}"
    )))
}
