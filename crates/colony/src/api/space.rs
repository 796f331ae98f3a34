//! The object space over the local HTTP API:
//!
//! - `GET /v1/space/{namespace}[?search=QUERY]` — its objects, from every
//!   partition: `{"namespace", "entries": [{"name", "version", "size",
//!   "tags"}], "truncated"}`. With `search`, only those whose tags satisfy
//!   every term of the (percent-encoded) query, e.g. `type=row index>=3
//!   index<6 owner^=al done?`; the answer then also carries `"search"`, and
//!   a malformed query is refused (400, `invalid_query`) naming the term.
//! - `POST /v1/space/{namespace}` — creates it: `{"namespace", "generation"}`.
//! - `DELETE /v1/space/{namespace}` — destroys it (its objects go with it).
//! - `GET /v1/space/{namespace}/{name}[?read=cached|linearizable]` — the
//!   value as the body (a value stored in chunks put back together and
//!   checked; 500 `damaged_value` if it cannot be), its version in `ETag`
//!   and `colony-version`, its tags in `colony-tags` (a JSON object of
//!   texts and integers, non-ASCII escaped); 404 if absent. Reads are
//!   linearizable unless `read=cached`: then the peer answers from its copy
//!   or any replica, which may miss the latest writes but never shows one
//!   not made (`colony-read` says which was done).
//! - `PUT /v1/space/{namespace}/{name}[?token=T][&erasure=K+M]` — writes
//!   the body (up to the peer's `max_value_bytes`, 413 `too_large` beyond;
//!   stored in chunks if longer than one, or erasure-coded into `K` data and
//!   `M` parity shards on `K + M` peers with `erasure`; `+` may be sent as
//!   `%2B`), with
//!   the tags of a `colony-tags` header; `If-Match: V` writes only over
//!   version V (compare-and-set), `If-None-Match: *` only if absent;
//!   `token` is the fencing token of a write lock held. Answers
//!   `{"namespace", "name", "version"}`.
//! - `DELETE /v1/space/{namespace}/{name}[?token=T]` — deletes, with the
//!   same conditions.
//! - `POST /v1/space/{namespace}/{name}/lock?mode=write|read&lease_ms=N
//!   [&wait_ms=M][&renew=false]` — waits up to `wait_ms` (default 10000,
//!   at most 60000) for the lock and answers `{"token", "lease_ms"}`. This
//!   peer renews the lease until the lock is unlocked, unless
//!   `renew=false`: then it runs out after `lease_ms`.
//! - `POST /v1/space/{namespace}/{name}/unlock?token=T` — releases it.
//!
//! Names in paths are percent-encoded (`/` as `%2F`). A refusal is a
//! plain-text sentence with a status that fits it and a `colony-error`
//! header naming it for scripts (`unknown_namespace`, `version_mismatch`,
//! `stale_token`, `not_held`, `locked`, `too_large`, …).

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use colony_core::space::{Condition, LockMode, ObjectKey, Query, SpaceError, TagValue, Tags};

use super::{error, quote};
use crate::error::ColonyError;
use crate::peer::Peer;
use crate::space::Storage;

/// Header carrying an object's tags (JSON), both ways.
pub(crate) const TAGS_HEADER: &str = "colony-tags";

/// Header carrying an object's version in a read.
pub(crate) const VERSION_HEADER: &str = "colony-version";

/// Header naming the kind of a refusal.
pub(crate) const ERROR_HEADER: &str = "colony-error";

/// Header saying how a read was made: `linearizable` or `cached`.
pub(crate) const READ_HEADER: &str = "colony-read";

/// Longest a lock request may wait for the lock.
const MAX_WAIT_MS: u64 = 60_000;

/// How long a lock request waits for the lock unless told.
const DEFAULT_WAIT_MS: u64 = 10_000;

/// A refused request: its status, its kind (sent in [`ERROR_HEADER`]) and
/// why, in a sentence.
#[derive(Debug)]
pub(crate) struct Refusal {
    status: StatusCode,
    kind: &'static str,
    message: String,
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let mut response = error(self.status, self.message);
        response
            .headers_mut()
            .insert(ERROR_HEADER, HeaderValue::from_static(self.kind));
        response
    }
}

fn refusal(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Refusal {
    Refusal {
        status,
        kind,
        message: message.into(),
    }
}

fn bad_request(message: impl Into<String>) -> Refusal {
    refusal(StatusCode::BAD_REQUEST, "bad_request", message)
}

/// The status and kind a space error is answered with.
fn status_of(e: &SpaceError) -> (StatusCode, &'static str) {
    match e {
        SpaceError::UnknownNamespace(_) => (StatusCode::NOT_FOUND, "unknown_namespace"),
        SpaceError::NamespaceExists(_) => (StatusCode::CONFLICT, "namespace_exists"),
        SpaceError::GlobalNamespace => (StatusCode::BAD_REQUEST, "global_namespace"),
        SpaceError::InvalidName(_) => (StatusCode::BAD_REQUEST, "invalid_name"),
        SpaceError::InvalidTags(_) => (StatusCode::BAD_REQUEST, "invalid_tags"),
        SpaceError::InvalidQuery(_) => (StatusCode::BAD_REQUEST, "invalid_query"),
        SpaceError::InvalidLease { .. } => (StatusCode::BAD_REQUEST, "invalid_lease"),
        SpaceError::InvalidShard(_) => (StatusCode::BAD_REQUEST, "invalid_shard"),
        SpaceError::TooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "too_large"),
        SpaceError::VersionMismatch { .. } => (StatusCode::PRECONDITION_FAILED, "version_mismatch"),
        SpaceError::Locked => (StatusCode::LOCKED, "locked"),
        SpaceError::StaleToken { .. } => (StatusCode::CONFLICT, "stale_token"),
        SpaceError::NotHeld { .. } => (StatusCode::CONFLICT, "not_held"),
        SpaceError::Full(_) => (StatusCode::INSUFFICIENT_STORAGE, "full"),
        SpaceError::Timeout { .. } => (StatusCode::GATEWAY_TIMEOUT, "timeout"),
        SpaceError::Busy { .. } => (StatusCode::SERVICE_UNAVAILABLE, "busy"),
        SpaceError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
    }
}

/// A failed space call as a response.
fn failed(e: ColonyError) -> Refusal {
    match &e {
        ColonyError::Space(space) => {
            let (status, kind) = status_of(space);
            refusal(status, kind, e.to_string())
        }
        ColonyError::DamagedValue { .. } => refusal(
            StatusCode::INTERNAL_SERVER_ERROR,
            "damaged_value",
            e.to_string(),
        ),
        _ => refusal(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            e.to_string(),
        ),
    }
}

/// The key named by a path, checked.
fn key(namespace: String, name: String) -> Result<ObjectKey, Refusal> {
    let key = ObjectKey::new(namespace, name);
    crate::space::check_user_key(&key).map_err(failed)?;
    Ok(key)
}

/// The query's parameters, each at most once and each one of `allowed`.
fn query<'a>(uri: &'a Uri, allowed: &[&str]) -> Result<Vec<(&'a str, &'a str)>, Refusal> {
    let mut seen: Vec<(&str, &str)> = Vec::new();
    for pair in uri
        .query()
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
    {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        if !allowed.contains(&name) {
            return Err(bad_request(format!(
                "unknown query parameter {}; this call takes {}",
                quote(name),
                allowed.join(", ")
            )));
        }
        if seen.iter().any(|(n, _)| *n == name) {
            return Err(bad_request(format!("query parameter {name} given twice")));
        }
        seen.push((name, value));
    }
    Ok(seen)
}

fn param<'a>(params: &[(&str, &'a str)], name: &str) -> Option<&'a str> {
    params.iter().find(|(n, _)| *n == name).map(|(_, v)| *v)
}

/// A whole number parameter.
fn number(params: &[(&str, &str)], name: &str) -> Result<Option<u64>, Refusal> {
    param(params, name)
        .map(|v| {
            v.parse::<u64>().map_err(|_| {
                bad_request(format!("{name} must be a whole number, not {}", quote(v)))
            })
        })
        .transpose()
}

/// A query parameter's value with its percent-encoding undone (`+` is a
/// space, as in forms); refused if it does not decode to UTF-8.
fn decoded(name: &str, value: &str) -> Result<String, Refusal> {
    let bad = || bad_request(format!("{name} is not percent-encoded UTF-8"));
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .filter(|h| h.iter().all(u8::is_ascii_hexdigit))
                    .ok_or_else(bad)?;
                let hex = std::str::from_utf8(hex).map_err(|_| bad())?;
                out.push(u8::from_str_radix(hex, 16).map_err(|_| bad())?);
                i += 2;
            }
            byte => out.push(byte),
        }
        i += 1;
    }
    String::from_utf8(out).map_err(|_| bad())
}

/// The fencing token of a write, if given.
fn token(uri: &Uri) -> Result<Option<u64>, Refusal> {
    number(&query(uri, &["token"])?, "token")
}

/// The condition of a write: `If-Match: V` (quoted or not), or
/// `If-None-Match: *` for "only if absent".
fn condition(headers: &HeaderMap) -> Result<Condition, Refusal> {
    let text = |name| {
        headers
            .get(name)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).trim().to_string())
    };
    match (text(header::IF_MATCH), text(header::IF_NONE_MATCH)) {
        (Some(_), Some(_)) => Err(bad_request(
            "give If-Match or If-None-Match, not both".to_string(),
        )),
        (None, Some(star)) if star == "*" => Ok(Condition::Version(0)),
        (None, Some(other)) => Err(bad_request(format!(
            "If-None-Match takes only *, not {}",
            quote(&other)
        ))),
        (Some(version), None) => {
            let bare = version.trim_start_matches("W/").trim_matches('"');
            bare.parse::<u64>().map(Condition::Version).map_err(|_| {
                bad_request(format!(
                    "If-Match must be an object version (a whole number), not {}",
                    quote(&version)
                ))
            })
        }
        (None, None) => Ok(Condition::Always),
    }
}

/// Tags from the [`TAGS_HEADER`] header: a JSON object of texts and
/// integers.
fn tags(headers: &HeaderMap) -> Result<Tags, Refusal> {
    let Some(value) = headers.get(TAGS_HEADER) else {
        return Ok(Tags::new());
    };
    let parsed: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(value.as_bytes()).map_err(|e| {
            refusal(
                StatusCode::BAD_REQUEST,
                "invalid_tags",
                format!("{TAGS_HEADER} must be a JSON object of texts and integers: {e}"),
            )
        })?;
    let mut tags = Tags::new();
    for (name, value) in parsed {
        let value = match value {
            serde_json::Value::String(text) => TagValue::Text(text),
            serde_json::Value::Number(n) if n.as_i64().is_some() => {
                TagValue::Int(n.as_i64().unwrap_or_default())
            }
            other => {
                return Err(refusal(
                    StatusCode::BAD_REQUEST,
                    "invalid_tags",
                    format!(
                        "tag {}: a text or a 64-bit integer, not {}",
                        quote(&name),
                        quote(&other.to_string())
                    ),
                ))
            }
        };
        tags.insert(name, value);
    }
    Ok(tags)
}

/// Tags as a JSON object of texts and integers.
pub(crate) fn tags_json(tags: &Tags) -> serde_json::Value {
    serde_json::Value::Object(
        tags.iter()
            .map(|(name, value)| {
                let value = match value {
                    TagValue::Int(n) => serde_json::Value::from(*n),
                    TagValue::Text(t) => serde_json::Value::from(t.as_str()),
                };
                (name.clone(), value)
            })
            .collect(),
    )
}

/// JSON with every non-ASCII character escaped, fit for a header.
fn ascii_json(value: &serde_json::Value) -> String {
    let mut out = String::new();
    for c in value.to_string().chars() {
        if c.is_ascii() {
            out.push(c);
        } else {
            // Non-ASCII only occurs inside strings, where \u escapes hold.
            for unit in c.encode_utf16(&mut [0; 2]) {
                out.push_str(&format!("\\u{unit:04x}"));
            }
        }
    }
    out
}

/// `GET /v1/space/{namespace}[?search=QUERY]`.
pub(super) async fn list(
    State(peer): State<Peer>,
    Path(namespace): Path<String>,
    uri: Uri,
) -> Result<Json<serde_json::Value>, Refusal> {
    colony_core::space::check_name("namespace", &namespace).map_err(|e| failed(e.into()))?;
    let params = query(&uri, &["search"])?;
    let search = param(&params, "search")
        .map(|text| decoded("search", text))
        .transpose()?;
    let listing = match &search {
        Some(text) => {
            let parsed = Query::parse(text).map_err(|e| failed(e.into()))?;
            peer.space_search(&namespace, &parsed).await
        }
        None => peer.space_list(&namespace).await,
    }
    .map_err(failed)?;
    let entries: Vec<serde_json::Value> = listing
        .entries
        .iter()
        .map(|e| {
            serde_json::json!({
                "name": e.name,
                "version": e.version,
                "size": e.size,
                "tags": tags_json(&e.tags),
            })
        })
        .collect();
    let mut answer = serde_json::json!({
        "namespace": namespace,
        "entries": entries,
        "truncated": listing.truncated,
    });
    if let Some(text) = search {
        answer["search"] = serde_json::Value::from(text);
    }
    Ok(Json(answer))
}

/// `POST /v1/space/{namespace}`.
pub(super) async fn create_namespace(
    State(peer): State<Peer>,
    Path(namespace): Path<String>,
) -> Result<Json<serde_json::Value>, Refusal> {
    let generation = peer
        .space_create_namespace(&namespace)
        .await
        .map_err(failed)?;
    Ok(Json(serde_json::json!({
        "namespace": namespace,
        "generation": generation,
    })))
}

/// `DELETE /v1/space/{namespace}`.
pub(super) async fn destroy_namespace(
    State(peer): State<Peer>,
    Path(namespace): Path<String>,
) -> Result<Json<serde_json::Value>, Refusal> {
    peer.space_destroy_namespace(&namespace)
        .await
        .map_err(failed)?;
    Ok(Json(serde_json::json!({
        "namespace": namespace,
        "destroyed": true,
    })))
}

/// `GET /v1/space/{namespace}/{name}[?read=cached|linearizable]`.
pub(super) async fn get_object(
    State(peer): State<Peer>,
    Path((namespace, name)): Path<(String, String)>,
    uri: Uri,
) -> Result<Response, Refusal> {
    let key = key(namespace, name)?;
    let params = query(&uri, &["read"])?;
    let cached = match param(&params, "read") {
        None | Some("linearizable") => false,
        Some("cached") => true,
        Some(other) => {
            return Err(bad_request(format!(
                "read must be cached or linearizable, not {}",
                quote(other)
            )))
        }
    };
    let read = if cached {
        peer.space_get_cached(&key).await
    } else {
        peer.space_get(&key).await
    };
    let Some(object) = read.map_err(failed)? else {
        return Err(refusal(
            StatusCode::NOT_FOUND,
            "no_object",
            format!("no object {} in the space", quote(&key.to_string())),
        ));
    };
    let mut response = object.value.into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    for (name, value) in [
        (header::ETAG.as_str(), format!("\"{}\"", object.version)),
        (VERSION_HEADER, object.version.to_string()),
        (TAGS_HEADER, ascii_json(&tags_json(&object.tags))),
        (
            READ_HEADER,
            if cached { "cached" } else { "linearizable" }.to_string(),
        ),
    ] {
        if let Ok(value) = HeaderValue::from_str(&value) {
            if let Ok(name) = header::HeaderName::from_bytes(name.as_bytes()) {
                headers.insert(name, value);
            }
        }
    }
    Ok(response)
}

/// `PUT /v1/space/{namespace}/{name}`.
pub(super) async fn put_object(
    State(peer): State<Peer>,
    Path((namespace, name)): Path<(String, String)>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<serde_json::Value>, Refusal> {
    let key = key(namespace, name)?;
    let params = query(&uri, &["token", "erasure"])?;
    let token = number(&params, "token")?;
    let storage = match param(&params, "erasure") {
        None => Storage::Replicated,
        Some(coding) => coding
            .replace("%2B", "+")
            .replace("%2b", "+")
            .parse::<Storage>()
            .map_err(|e| bad_request(format!("erasure: {e}")))?,
    };
    let condition = condition(&headers)?;
    let tags = tags(&headers)?;
    let version = peer
        .space_write_stored(&key, Vec::from(body), tags, condition, token, storage)
        .await
        .map_err(failed)?;
    Ok(Json(serde_json::json!({
        "namespace": key.namespace,
        "name": key.name,
        "version": version,
    })))
}

/// `DELETE /v1/space/{namespace}/{name}`.
pub(super) async fn delete_object(
    State(peer): State<Peer>,
    Path((namespace, name)): Path<(String, String)>,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Json<serde_json::Value>, Refusal> {
    let key = key(namespace, name)?;
    let token = token(&uri)?;
    let condition = condition(&headers)?;
    let version = peer
        .space_delete_fenced(&key, condition, token)
        .await
        .map_err(failed)?;
    Ok(Json(serde_json::json!({
        "namespace": key.namespace,
        "name": key.name,
        "version": version,
        "deleted": true,
    })))
}

/// `POST /v1/space/{namespace}/{name}/lock`.
pub(super) async fn lock(
    State(peer): State<Peer>,
    Path((namespace, name)): Path<(String, String)>,
    uri: Uri,
) -> Result<Json<serde_json::Value>, Refusal> {
    let key = key(namespace, name)?;
    let params = query(&uri, &["mode", "lease_ms", "wait_ms", "renew"])?;
    let mode = match param(&params, "mode") {
        Some("write") => LockMode::Write,
        Some("read") => LockMode::Read,
        Some(other) => {
            return Err(bad_request(format!(
                "mode must be write or read, not {}",
                quote(other)
            )))
        }
        None => return Err(bad_request("mode=write or mode=read is required")),
    };
    let Some(lease_ms) = number(&params, "lease_ms")? else {
        return Err(bad_request(
            "lease_ms is required: how long, in milliseconds, the lock lasts unless renewed",
        ));
    };
    let wait_ms = number(&params, "wait_ms")?.unwrap_or(DEFAULT_WAIT_MS);
    if wait_ms > MAX_WAIT_MS {
        return Err(bad_request(format!(
            "wait_ms is at most {MAX_WAIT_MS}, not {wait_ms}"
        )));
    }
    let renew = match param(&params, "renew") {
        None | Some("true") => true,
        Some("false") => false,
        Some(other) => {
            return Err(bad_request(format!(
                "renew must be true or false, not {}",
                quote(other)
            )))
        }
    };
    let (token, lease) = peer
        .space_lock_token(
            &key,
            mode,
            Duration::from_millis(lease_ms),
            Duration::from_millis(wait_ms),
            renew,
        )
        .await
        .map_err(failed)?;
    Ok(Json(serde_json::json!({
        "namespace": key.namespace,
        "name": key.name,
        "mode": mode.to_string(),
        "token": token,
        "lease_ms": lease.as_millis() as u64,
        "renewed": renew,
    })))
}

/// `POST /v1/space/{namespace}/{name}/unlock`.
pub(super) async fn unlock(
    State(peer): State<Peer>,
    Path((namespace, name)): Path<(String, String)>,
    uri: Uri,
) -> Result<Json<serde_json::Value>, Refusal> {
    let key = key(namespace, name)?;
    let Some(token) = token(&uri)? else {
        return Err(bad_request("token=T is required: the lock's fencing token"));
    };
    peer.space_unlock(&key, token).await.map_err(failed)?;
    Ok(Json(serde_json::json!({
        "namespace": key.namespace,
        "name": key.name,
        "token": token,
        "released": true,
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_header_round_trips_and_stays_ascii() {
        let mut sent = Tags::new();
        sent.insert("city".into(), TagValue::Text("Besançon 🐝".into()));
        sent.insert("n".into(), TagValue::Int(-7));
        let text = ascii_json(&tags_json(&sent));
        assert!(text.is_ascii(), "{text}");
        let mut headers = HeaderMap::new();
        headers.insert(TAGS_HEADER, HeaderValue::from_str(&text).unwrap());
        assert_eq!(tags(&headers).unwrap(), sent);
        headers.insert(TAGS_HEADER, HeaderValue::from_static("{\"x\": 1.5}"));
        assert!(tags(&headers).is_err());
        headers.insert(TAGS_HEADER, HeaderValue::from_static("[1]"));
        assert!(tags(&headers).is_err());
    }

    #[test]
    fn conditions_come_from_if_match_and_if_none_match() {
        let with = |name, value: &'static str| {
            let mut headers = HeaderMap::new();
            headers.insert(name, HeaderValue::from_static(value));
            condition(&headers)
        };
        assert_eq!(condition(&HeaderMap::new()).unwrap(), Condition::Always);
        assert_eq!(with(header::IF_MATCH, "7").unwrap(), Condition::Version(7));
        assert_eq!(
            with(header::IF_MATCH, "\"12\"").unwrap(),
            Condition::Version(12)
        );
        assert_eq!(
            with(header::IF_NONE_MATCH, "*").unwrap(),
            Condition::Version(0)
        );
        assert!(with(header::IF_MATCH, "*").is_err());
        assert!(with(header::IF_MATCH, "seven").is_err());
        assert!(with(header::IF_NONE_MATCH, "\"3\"").is_err());
    }

    #[test]
    fn query_values_are_percent_decoded() {
        assert_eq!(
            decoded(
                "search",
                "type%3Drow+index%3E%3D3%20owner%5E%3Dal%20done%3F"
            )
            .unwrap(),
            "type=row index>=3 owner^=al done?"
        );
        assert_eq!(decoded("search", "a%2Bb").unwrap(), "a+b");
        assert_eq!(decoded("search", "caf%C3%A9").unwrap(), "café");
        for bad in ["%", "%4", "%zz", "%+1", "%FF", "a%C3"] {
            assert!(decoded("search", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn queries_are_strict() {
        let uri: Uri = "/x?token=5".parse().unwrap();
        assert_eq!(token(&uri).unwrap(), Some(5));
        for bad in ["/x?token=five", "/x?tokn=5", "/x?token=1&token=2"] {
            let uri: Uri = bad.parse().unwrap();
            assert!(token(&uri).is_err(), "{bad}");
        }
        let uri: Uri = "/x".parse().unwrap();
        assert_eq!(token(&uri).unwrap(), None);
    }
}
