//! Distributed objects over the local HTTP API. Objects are named by their
//! GUID in paths (the peer's network is implied) and by their whole URI in
//! bodies; parameters, requests and replies are JSON, read and written
//! through the object's registered type.
//!
//! - `GET /v1/objects` — the objects whose primary is this peer
//!   ([`ObjectSummary`](crate::ObjectSummary) each).
//! - `POST /v1/objects` — creates one: `{"type", "params", "fault_tolerance":
//!   {"protocol": "none"|"checkpoint"|"pml", "ttc_s"}}` (fault tolerance
//!   optional: `pml` every 60 s) answers `{"uri"}`.
//! - `GET /v1/objects/{guid}` — looks it up: `{"uri", "type", "protocol"}`.
//! - `DELETE /v1/objects/{guid}` — deletes it.
//! - `POST /v1/calls` — calls objects, all at once: `{"calls": [{"uri",
//!   "request"}], "timeout_s"}` (up to 10,000 calls) answers `{"replies":
//!   [{"ok": REPLY} | {"error": "…", "kind": "…"}]}` in the order of the
//!   calls, once every one is answered.
//!
//! A refusal is a plain-text sentence with a status that fits it: 400 for a
//! malformed URI, body or request, 404 for no such object, 409 when the
//! object rolled back past calls this peer had answers to (call again),
//! 410 when it is lost, 413 over a size limit, 422 when the object's
//! handler failed, 504 past the deadline.

use std::time::Duration;

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::Json;
use colony_core::object::{CallError, ObjectProtocol, ObjectUri};
use serde::Deserialize;

use super::{error, quote, FtRequest};
use crate::{ColonyError, ObjectSummary, Peer};

/// Longest `timeout_s` a batch of calls may ask for.
const MAX_CALL_TIMEOUT: Duration = Duration::from_secs(600);

/// `GET /v1/objects`.
pub(super) async fn list(State(peer): State<Peer>) -> Result<Json<Vec<ObjectSummary>>, Response> {
    let objects = peer.objects().await.map_err(unavailable)?;
    Ok(Json(objects.iter().map(ObjectSummary::from).collect()))
}

/// The body of `POST /v1/objects`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct CreateRequest {
    #[serde(rename = "type")]
    object_type: String,
    #[serde(default)]
    params: serde_json::Value,
    fault_tolerance: Option<FtRequest>,
}

/// `POST /v1/objects`.
pub(super) async fn create(
    State(peer): State<Peer>,
    body: Result<Json<CreateRequest>, JsonRejection>,
) -> Result<(StatusCode, Json<serde_json::Value>), Response> {
    let Json(body) = body.map_err(|r| error(r.status(), r.body_text()))?;
    let protocol = match body.fault_tolerance {
        None => ObjectProtocol::Pml { ttc_ms: 60_000 },
        Some(ft) => ObjectProtocol::from(
            &ft.settings()
                .map_err(|e| error(StatusCode::BAD_REQUEST, format!("fault_tolerance: {e}")))?,
        ),
    };
    let uri = peer
        .create_object_json(&body.object_type, body.params, protocol)
        .await
        .map_err(refused)?;
    Ok((
        StatusCode::CREATED,
        Json(serde_json::json!({ "uri": uri.to_string() })),
    ))
}

/// `GET /v1/objects/{guid}`.
pub(super) async fn lookup(
    State(peer): State<Peer>,
    Path(guid): Path<String>,
) -> Result<Json<serde_json::Value>, Response> {
    let uri = uri_of(&peer, &guid).map_err(|e| error(StatusCode::BAD_REQUEST, e))?;
    let found = peer.lookup_object(&uri).await.map_err(refused)?;
    let (protocol, ttc_ms) = (found.protocol.name(), found.protocol.ttc_ms());
    Ok(Json(serde_json::json!({
        "uri": uri.to_string(),
        "type": found.object_type,
        "protocol": protocol,
        "ttc_ms": ttc_ms,
    })))
}

/// `DELETE /v1/objects/{guid}`.
pub(super) async fn delete(
    State(peer): State<Peer>,
    Path(guid): Path<String>,
) -> Result<StatusCode, Response> {
    let uri = uri_of(&peer, &guid).map_err(|e| error(StatusCode::BAD_REQUEST, e))?;
    peer.delete_object(&uri).await.map_err(refused)?;
    Ok(StatusCode::NO_CONTENT)
}

/// The body of `POST /v1/calls`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct CallsRequest {
    calls: Vec<Call>,
    timeout_s: Option<f64>,
}

/// One call of a batch.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Call {
    uri: String,
    request: serde_json::Value,
}

/// `POST /v1/calls`.
pub(super) async fn call(
    State(peer): State<Peer>,
    body: Result<Json<CallsRequest>, JsonRejection>,
) -> Result<Json<serde_json::Value>, Response> {
    let Json(body) = body.map_err(|r| error(r.status(), r.body_text()))?;
    let timeout = match body.timeout_s {
        None => None,
        Some(secs) if secs.is_finite() && secs > 0.0 => {
            Some(Duration::from_secs_f64(secs).min(MAX_CALL_TIMEOUT))
        }
        Some(secs) => {
            return Err(error(
                StatusCode::BAD_REQUEST,
                format!("timeout_s must be a positive number of seconds, got {secs}"),
            ))
        }
    };
    let mut calls = Vec::with_capacity(body.calls.len());
    for (i, call) in body.calls.into_iter().enumerate() {
        let uri: ObjectUri = call.uri.parse().map_err(|e| {
            error(
                StatusCode::BAD_REQUEST,
                format!("calls[{i}].uri {}: {e}", quote(&call.uri)),
            )
        })?;
        calls.push((uri, call.request));
    }
    let replies = peer
        .call_objects_json(calls, timeout)
        .await
        .map_err(refused)?;
    let replies: Vec<serde_json::Value> = replies
        .into_iter()
        .map(|reply| match reply {
            Ok(value) => serde_json::json!({ "ok": value }),
            Err(e) => serde_json::json!({ "error": e.to_string(), "kind": kind(&e) }),
        })
        .collect();
    Ok(Json(serde_json::json!({ "replies": replies })))
}

/// The URI of the object `guid` in this peer's network.
fn uri_of(peer: &Peer, guid: &str) -> Result<ObjectUri, String> {
    let guid = guid.parse().map_err(|e| format!("{}: {e}", quote(guid)))?;
    ObjectUri::new(&peer.info().network, guid).map_err(|e| e.to_string())
}

/// A short name for scripts of why a call failed.
fn kind(error: &ColonyError) -> &'static str {
    match error {
        ColonyError::Object(e) => match e {
            CallError::Handler(_) => "handler",
            CallError::UnknownType(_) => "unknown_type",
            CallError::BadMessage(_) => "bad_message",
            CallError::NoSuchObject(_) => "no_such_object",
            CallError::ObjectLost { .. } => "object_lost",
            CallError::RolledBack { .. } => "rolled_back",
            CallError::DeadlinePassed { .. } => "deadline",
            CallError::Forgotten(_) => "forgotten",
            CallError::TooLarge { .. } => "too_large",
        },
        _ => "unavailable",
    }
}

/// A failed request as a response whose status fits it.
fn refused(e: ColonyError) -> Response {
    let status = match &e {
        ColonyError::Object(call) => match call {
            CallError::Handler(_) => StatusCode::UNPROCESSABLE_ENTITY,
            CallError::UnknownType(_) | CallError::BadMessage(_) => StatusCode::BAD_REQUEST,
            CallError::NoSuchObject(_) => StatusCode::NOT_FOUND,
            CallError::ObjectLost { .. } | CallError::Forgotten(_) => StatusCode::GONE,
            CallError::RolledBack { .. } => StatusCode::CONFLICT,
            CallError::DeadlinePassed { .. } => StatusCode::GATEWAY_TIMEOUT,
            CallError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
        },
        _ => StatusCode::SERVICE_UNAVAILABLE,
    };
    error(status, e.to_string())
}

fn unavailable(e: ColonyError) -> Response {
    error(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
}
