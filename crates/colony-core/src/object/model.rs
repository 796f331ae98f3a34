//! The object programming model: an active object is a serialisable state
//! with a handler that serves one request at a time (ProActive, seed 000
//! §3). Calls it makes are asynchronous: they leave as effects of the
//! request being served, and each reply comes back later as a message of
//! its own ([`ActiveObject::on_reply`]). Everything an object sees is thus
//! a delivered message, so replaying the logged deliveries from a
//! checkpoint rebuilds the same state and makes the same calls (objects
//! are piecewise deterministic; randomness comes from a generator seeded
//! in the state).

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::id::{CallId, Guid, ObjectUri, Ref};

/// Why a call did not return a reply. Every failure a caller can meet is
/// one of these, delivered as a value: a call never hangs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum CallError {
    /// The object's handler returned an error (or panicked); the object
    /// goes on serving other calls.
    #[error("the object's handler failed: {0}")]
    Handler(String),
    /// No object type of this name is registered where the object lives.
    #[error("no object type {0:?} is registered here")]
    UnknownType(String),
    /// The request or reply did not decode as the object type's.
    #[error("the call does not fit the object: {0}")]
    BadMessage(String),
    /// The object was deleted, or never existed.
    #[error("no object {0} (deleted, or never created)")]
    NoSuchObject(ObjectUri),
    /// The object died with its peer and its fault tolerance cannot bring
    /// it back (`none`), or brought it back from a checkpoint older than
    /// this call (`checkpoint`).
    #[error("object {uri} lost: {why}")]
    ObjectLost {
        /// The object.
        uri: ObjectUri,
        /// What happened.
        why: String,
    },
    /// The object restarted from a checkpoint older than some of this
    /// caller's calls it had answered (`checkpoint`, or a `none` object
    /// moved without its latest state): their effects are gone. This call
    /// did not run; calling again runs it on the restored state. Reported
    /// once per loss, to the caller's first call that reaches the object
    /// after it.
    #[error("object {uri} restarted from an older checkpoint: {lost} of this caller's answered calls to it were lost, and this call did not run (call again to run it on the restored state)")]
    RolledBack {
        /// The object.
        uri: ObjectUri,
        /// How many of this caller's answered calls the object lost.
        lost: u64,
    },
    /// No reply within the caller's deadline.
    #[error("no reply within {after_ms} ms")]
    DeadlinePassed {
        /// The deadline, in milliseconds.
        after_ms: u64,
    },
    /// The call was executed before, and its result is no longer kept (the
    /// caller had acknowledged it, or made more calls than the cache keeps
    /// since).
    #[error("call {0} was executed already and its result is no longer kept")]
    Forgotten(CallId),
    /// A request or reply over the size limit.
    #[error("{what} of {size} bytes is over the limit of {max}")]
    TooLarge {
        /// The request or the reply.
        what: String,
        /// Its size.
        size: usize,
        /// The limit.
        max: usize,
    },
}

/// A call an object makes, or an object it creates, while it serves a
/// message: released by the runtime only once the delivery that made it is
/// as safe as the object's fault tolerance asks (logged at a majority of
/// its home under `pml`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outgoing {
    /// Call `to` with `request`; its reply comes back as a delivery.
    Call {
        /// Stable across a replay: the callee answers a repeat from its
        /// cache.
        id: CallId,
        /// The callee.
        to: ObjectUri,
        /// The callee's type, checked where it lives.
        object_type: String,
        /// The encoded request.
        request: Vec<u8>,
    },
    /// Create an object of `object_type` at `uri` from `params`.
    Create {
        /// Derived from the creator's GUID and counter: a replay creates
        /// the same object, not a second one.
        uri: ObjectUri,
        /// Its type.
        object_type: String,
        /// Its encoded parameters.
        params: Vec<u8>,
    },
}

impl Outgoing {
    /// The identifier its answer comes back with: a call's own; for a
    /// creation, the new object's GUID with number 0, the same on every
    /// replay and every resend by whichever primary sends it.
    pub fn id(&self) -> CallId {
        match self {
            Outgoing::Call { id, .. } => *id,
            Outgoing::Create { uri, .. } => CallId {
                caller: uri.guid,
                seq: 0,
            },
        }
    }
}

/// What an object's code may do besides changing its own state: who it is,
/// and calls and creations that leave once the message being served is
/// safe.
pub struct ObjectContext<'a> {
    me: &'a ObjectUri,
    next_seq: &'a mut u64,
    outgoing: Vec<Outgoing>,
}

impl<'a> ObjectContext<'a> {
    /// A context for serving one message as `me`, whose calls are numbered
    /// from `next_seq` on.
    pub fn new(me: &'a ObjectUri, next_seq: &'a mut u64) -> ObjectContext<'a> {
        ObjectContext {
            me,
            next_seq,
            outgoing: Vec::new(),
        }
    }

    /// This object's address.
    pub fn me(&self) -> &ObjectUri {
        self.me
    }

    fn next_id(&mut self) -> CallId {
        *self.next_seq = self.next_seq.saturating_add(1);
        CallId {
            caller: self.me.guid,
            seq: *self.next_seq,
        }
    }

    /// Calls `to` asynchronously; the reply arrives as
    /// [`ActiveObject::on_reply`] with the returned identifier.
    pub fn call<T: ActiveObject>(&mut self, to: &Ref<T>, request: &T::Request) -> CallId {
        let id = self.next_id();
        self.outgoing.push(Outgoing::Call {
            id,
            to: to.uri().clone(),
            object_type: T::TYPE.to_string(),
            request: encode(request),
        });
        id
    }

    /// Creates an object of type `T` in this object's network: the
    /// reference is usable at once (calls to it wait for its creation).
    pub fn create<T: ActiveObject>(&mut self, params: &T::Params) -> Ref<T> {
        let id = self.next_id();
        let uri = ObjectUri {
            network: self.me.network.clone(),
            guid: derived_guid(id),
        };
        self.outgoing.push(Outgoing::Create {
            uri: uri.clone(),
            object_type: T::TYPE.to_string(),
            params: encode(params),
        });
        Ref::new(uri)
    }

    /// What the message served asked to send, in order.
    pub fn take_outgoing(&mut self) -> Vec<Outgoing> {
        std::mem::take(&mut self.outgoing)
    }
}

/// The GUID of the object created by call `id`: the same on every replay.
fn derived_guid(id: CallId) -> Guid {
    let mut hasher = blake3::Hasher::new();
    hasher.update(b"colony-created-object-v1");
    hasher.update(&id.caller.0.to_be_bytes());
    hasher.update(&id.seq.to_be_bytes());
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&hasher.finalize().as_bytes()[..16]);
    Guid::from_random(bytes)
}

/// An object type. See the module docs.
pub trait ActiveObject: Sized + Serialize + DeserializeOwned + Send + 'static {
    /// What it is created from.
    type Params: Serialize + DeserializeOwned;
    /// What it is asked.
    type Request: Serialize + DeserializeOwned;
    /// What it answers.
    type Reply: Serialize + DeserializeOwned;

    /// The type's name, the same on every peer.
    const TYPE: &'static str;

    /// A new object; it may already call and create others.
    fn create(ctx: &mut ObjectContext<'_>, params: Self::Params) -> Result<Self, String>;

    /// Serves one request. An error is the caller's reply; the state keeps
    /// what the handler changed before it.
    fn handle(
        &mut self,
        ctx: &mut ObjectContext<'_>,
        request: Self::Request,
    ) -> Result<Self::Reply, String>;

    /// The reply to a call this object made. The default ignores it.
    fn on_reply(
        &mut self,
        _ctx: &mut ObjectContext<'_>,
        _call: CallId,
        _reply: Result<Vec<u8>, CallError>,
    ) {
    }
}

/// Decodes the bytes of a reply to a call made to a `T`.
pub fn decode_reply<T: ActiveObject>(bytes: &[u8]) -> Result<T::Reply, CallError> {
    decode(bytes, "reply")
}

/// Encodes parameters, a request or a reply as objects exchange them.
pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    // Serialising plain data into a Vec cannot fail for these types.
    postcard::to_stdvec(value).unwrap_or_default()
}

fn decode<T: DeserializeOwned>(bytes: &[u8], what: &str) -> Result<T, CallError> {
    postcard::from_bytes(bytes).map_err(|e| CallError::BadMessage(format!("{what}: {e}")))
}

/// A live object with its type erased: what the runtime holds.
pub trait Instance: Send {
    /// Serves an encoded request; the encoded reply.
    fn handle(&mut self, ctx: &mut ObjectContext<'_>, request: &[u8])
        -> Result<Vec<u8>, CallError>;
    /// Takes the reply to a call it made.
    fn on_reply(
        &mut self,
        ctx: &mut ObjectContext<'_>,
        call: CallId,
        reply: Result<Vec<u8>, CallError>,
    ) -> Result<(), CallError>;
    /// The state, encoded (a checkpoint).
    fn checkpoint(&self) -> Vec<u8>;
}

struct Typed<T: ActiveObject>(T);

/// Runs object code, turning a panic into [`CallError::Handler`]: a bug in
/// one object fails that call, never the peer.
fn guarded<T>(what: &str, f: impl FnOnce() -> Result<T, CallError>) -> Result<T, CallError> {
    crate::runner::catch_panic(what, f).unwrap_or_else(|message| Err(CallError::Handler(message)))
}

impl<T: ActiveObject> Instance for Typed<T> {
    fn handle(
        &mut self,
        ctx: &mut ObjectContext<'_>,
        request: &[u8],
    ) -> Result<Vec<u8>, CallError> {
        let request: T::Request = decode(request, "request")?;
        guarded("handle", || {
            let reply = self.0.handle(ctx, request).map_err(CallError::Handler)?;
            Ok(encode(&reply))
        })
    }

    fn on_reply(
        &mut self,
        ctx: &mut ObjectContext<'_>,
        call: CallId,
        reply: Result<Vec<u8>, CallError>,
    ) -> Result<(), CallError> {
        guarded("on_reply", || {
            self.0.on_reply(ctx, call, reply);
            Ok(())
        })
    }

    fn checkpoint(&self) -> Vec<u8> {
        encode(&self.0)
    }
}

/// An object type with its type erased.
pub trait ObjectKind: Send + Sync {
    /// Its name.
    fn name(&self) -> &str;
    /// A new object from encoded parameters.
    fn create(
        &self,
        ctx: &mut ObjectContext<'_>,
        params: &[u8],
    ) -> Result<Box<dyn Instance>, CallError>;
    /// An object restored from a checkpoint.
    fn restore(&self, state: &[u8]) -> Result<Box<dyn Instance>, CallError>;
    /// Parameters given as JSON (by the CLI or the HTTP API), encoded.
    fn params_from_json(&self, json: serde_json::Value) -> Result<Vec<u8>, CallError>;
    /// A request given as JSON, encoded.
    fn request_from_json(&self, json: serde_json::Value) -> Result<Vec<u8>, CallError>;
    /// An encoded reply, as JSON.
    fn reply_to_json(&self, reply: &[u8]) -> Result<serde_json::Value, CallError>;
}

/// `json` read as a `T`, encoded; a mismatch names `what` and the type.
fn from_json<T: Serialize + DeserializeOwned>(
    json: serde_json::Value,
    what: &str,
    type_name: &str,
) -> Result<Vec<u8>, CallError> {
    let value: T = serde_json::from_value(json)
        .map_err(|e| CallError::BadMessage(format!("{what} of a {type_name:?}: {e}")))?;
    Ok(encode(&value))
}

struct TypedKind<T: ActiveObject>(std::marker::PhantomData<fn() -> T>);

impl<T: ActiveObject> ObjectKind for TypedKind<T> {
    fn name(&self) -> &str {
        T::TYPE
    }

    fn create(
        &self,
        ctx: &mut ObjectContext<'_>,
        params: &[u8],
    ) -> Result<Box<dyn Instance>, CallError> {
        let params: T::Params = decode(params, "parameters")?;
        guarded("create", || {
            let object = T::create(ctx, params).map_err(CallError::Handler)?;
            Ok(Box::new(Typed(object)) as Box<dyn Instance>)
        })
    }

    fn restore(&self, state: &[u8]) -> Result<Box<dyn Instance>, CallError> {
        let object: T = decode(state, "object state")?;
        Ok(Box::new(Typed(object)))
    }

    fn params_from_json(&self, json: serde_json::Value) -> Result<Vec<u8>, CallError> {
        from_json::<T::Params>(json, "parameters", T::TYPE)
    }

    fn request_from_json(&self, json: serde_json::Value) -> Result<Vec<u8>, CallError> {
        from_json::<T::Request>(json, "request", T::TYPE)
    }

    fn reply_to_json(&self, reply: &[u8]) -> Result<serde_json::Value, CallError> {
        let reply: T::Reply = decode(reply, "reply")?;
        serde_json::to_value(reply)
            .map_err(|e| CallError::BadMessage(format!("reply of a {:?}: {e}", T::TYPE)))
    }
}

/// The object types a peer can host, by name.
#[derive(Clone, Default)]
pub struct ObjectTypes {
    kinds: BTreeMap<String, Arc<dyn ObjectKind>>,
}

impl ObjectTypes {
    /// No types.
    pub fn new() -> ObjectTypes {
        ObjectTypes::default()
    }

    /// Adds `T` (replacing a type of the same name).
    pub fn register<T: ActiveObject>(&mut self) -> &mut Self {
        self.kinds.insert(
            T::TYPE.to_string(),
            Arc::new(TypedKind::<T>(std::marker::PhantomData)),
        );
        self
    }

    /// The type called `name`.
    pub fn get(&self, name: &str) -> Result<&Arc<dyn ObjectKind>, CallError> {
        self.kinds
            .get(name)
            .ok_or_else(|| CallError::UnknownType(name.chars().take(80).collect()))
    }

    /// The names of every type, in order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.kinds.keys().map(String::as_str)
    }
}
