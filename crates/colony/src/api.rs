//! The local HTTP API (axum over hyper), bound to loopback by default:
//!
//! - `GET /v1/status` — the peer, its incarnation and counters ([`StatusInfo`]).
//! - `GET /v1/peers` — the membership view, this peer first ([`MemberInfo`]).
//! - `POST /v1/jobs` with `{"app": "nqueens", "args": ["12"]}` — submits a
//!   job; answers `{"job_id": ...}` or 400 with the reason.
//! - `GET /v1/jobs` — jobs homed at this peer ([`JobInfo`]).
//! - `GET /v1/jobs/{id}` — any job, asked of its home; 404 if none knows it.
//! - `POST /v1/jobs/{id}/cancel` — cancels a job this peer submitted or is
//!   the primary of; 403 with the primary's reason otherwise.
//! - `/v1/objects…`, `/v1/calls` — distributed objects: list those whose
//!   primary is this peer, create, look up, call, delete (see
//!   `api/objects.rs`).
//! - `/v1/space/…` — the object space: objects, namespaces and locks (see
//!   `api/space.rs`); object bodies may be as large as the peer's
//!   `max_value_bytes` (413 beyond), and get more time for their body and
//!   answer in proportion to their size ([`SPACE_MIN_BYTES_PER_SEC`]).
//!
//! Who may call: every request carries `Authorization: Bearer TOKEN`, the
//! token in `DATA_DIR/api.token` (32 random bytes in hex, created at first
//! start with mode 0600), else 401. Its `Host` must name a loopback address,
//! `localhost` or the bound address (421 otherwise), which defeats DNS
//! rebinding. Headers, bodies, requests and connections have deadlines and
//! the number of connections is bounded ([`ApiLimits`]); error messages cut
//! long inputs short.
//!
//! [`StatusInfo`]: crate::StatusInfo
//! [`MemberInfo`]: crate::MemberInfo
//! [`JobInfo`]: crate::JobInfo
//! [`ApiLimits`]: crate::ApiLimits

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::rejection::JsonRejection;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use colony_core::ft::{FaultTolerance, FtError, FtProtocol};
use colony_core::job::SubmitOptions;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::sync::Semaphore;
use tracing::warn;

use crate::config::ApiLimits;
use crate::error::ColonyError;
use crate::info::{JobInfo, MemberInfo, StatusInfo};
use crate::peer::Peer;

/// Name of the API token file in a peer's data directory.
pub const API_TOKEN_FILE: &str = "api.token";

/// Random bytes in a token (written as twice as many hex digits).
const TOKEN_BYTES: usize = 32;

/// Longest piece of a client's input quoted back in an error message.
const MAX_QUOTED_CHARS: usize = 100;

/// Longest error message returned.
const MAX_ERROR_CHARS: usize = 1000;

/// The slowest transfer an object value is given time for: a space
/// request's body deadline, answer deadline and connection lifetime grow
/// by the time its value takes at this rate (1 GiB: 128 s).
pub const SPACE_MIN_BYTES_PER_SEC: u64 = 8 << 20;

/// How long `bytes` take at [`SPACE_MIN_BYTES_PER_SEC`].
fn transfer_time(bytes: u64) -> Duration {
    Duration::from_millis(bytes.saturating_mul(1000) / SPACE_MIN_BYTES_PER_SEC)
}

/// How often, at most, a refused connection or a failed accept is logged.
const LOG_INTERVAL: Duration = Duration::from_secs(60);

/// The secret that authorises calls to a peer's local API. Its `Debug`
/// does not show it.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct ApiToken(Arc<str>);

impl ApiToken {
    /// The token as sent in `Authorization: Bearer …`.
    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether `offered` is this token, in time independent of where they
    /// differ.
    fn matches(&self, offered: &[u8]) -> bool {
        let expected = self.0.as_bytes();
        if offered.len() != expected.len() {
            return false;
        }
        offered
            .iter()
            .zip(expected)
            .fold(0u8, |diff, (a, b)| diff | (a ^ b))
            == 0
    }
}

impl fmt::Debug for ApiToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiToken(…)")
    }
}

/// Reads an API token file as clients do: the token on its first line,
/// `2 × 32` hex digits. The error says what is wrong with the file.
pub fn read_api_token(path: &Path) -> std::io::Result<String> {
    let text = std::fs::read_to_string(path)?;
    let token = text.trim();
    if token.len() != 2 * TOKEN_BYTES || !token.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!(
                "not an API token ({} hex digits expected, found {} bytes)",
                2 * TOKEN_BYTES,
                text.len()
            ),
        ));
    }
    Ok(token.to_string())
}

/// The token in `dir/api.token`, created (random, mode 0600, atomically)
/// if the file does not exist. A file others may read is refused, not
/// silently fixed: the token in it may have leaked.
pub(crate) fn load_or_create_token(dir: &Path) -> Result<ApiToken, ColonyError> {
    let path = dir.join(API_TOKEN_FILE);
    let bad = |reason: String| ColonyError::ApiToken {
        path: path.clone(),
        reason,
    };
    match std::fs::symlink_metadata(&path) {
        Ok(meta) => {
            if !meta.is_file() {
                return Err(bad(
                    "not a regular file; remove it to have a new token made".into(),
                ));
            }
            check_private(&meta).map_err(bad)?;
            read_api_token(&path)
                .map(|t| ApiToken(t.into()))
                .map_err(|e| bad(format!("{e}; remove it to have a new token made")))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => create_token(dir, &path),
        Err(e) => Err(bad(e.to_string())),
    }
}

#[cfg(unix)]
fn check_private(meta: &std::fs::Metadata) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(format!(
            "readable by other users (mode {mode:o}); remove it to have a new token made \
             (or chmod 600 it if no one else could have read it)"
        ));
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_private(_meta: &std::fs::Metadata) -> Result<(), String> {
    Ok(())
}

/// Writes a fresh token to a temporary file created with mode 0600, then
/// links it into place: the token file never exists with other
/// permissions or half written, and a concurrent creator's token wins.
fn create_token(dir: &Path, path: &Path) -> Result<ApiToken, ColonyError> {
    use rand::TryRngCore;
    use std::io::Write;
    let io_error = |path: &Path, e: std::io::Error| ColonyError::ApiToken {
        path: path.to_path_buf(),
        reason: format!("cannot create it: {e}"),
    };
    let mut bytes = [0u8; TOKEN_BYTES];
    rand::rngs::OsRng
        .try_fill_bytes(&mut bytes)
        .map_err(|e| io_error(path, std::io::Error::other(e.to_string())))?;
    let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let tmp: PathBuf = dir.join(format!(
        ".{API_TOKEN_FILE}.{}.{}.tmp",
        std::process::id(),
        crate::host::unix_now_ms()
    ));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let written = options.open(&tmp).and_then(|mut file| {
        file.write_all(format!("{token}\n").as_bytes())?;
        file.sync_all()
    });
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(io_error(path, e));
    }
    let linked = std::fs::hard_link(&tmp, path);
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => {
            if let Ok(d) = std::fs::File::open(dir) {
                let _ = d.sync_all();
            }
            Ok(ApiToken(token.into()))
        }
        // Another process made one first: use it.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => load_or_create_token(dir),
        Err(e) => Err(io_error(path, e)),
    }
}

/// Refuses an API address other machines can reach unless allowed; warns
/// when allowed.
pub(crate) fn check_bind_addr(addr: SocketAddr, allow_remote: bool) -> Result<(), ColonyError> {
    if addr.ip().is_loopback() {
        return Ok(());
    }
    if !allow_remote {
        return Err(ColonyError::ApiNotLoopback { addr });
    }
    warn!(
        %addr,
        "the local API listens on an address other machines can reach: anyone who can \
         reach it and holds the token may submit jobs, and HTTP is not encrypted"
    );
    Ok(())
}

/// What every request is checked against before it reaches a handler.
struct Guard {
    token: ApiToken,
    bound: SocketAddr,
    limits: ApiLimits,
    /// Largest body of a `/v1/space/` request: an object value.
    max_value_bytes: usize,
}

/// Serves the API on `listener` until the process ends.
pub(crate) fn serve(
    listener: tokio::net::TcpListener,
    bound: SocketAddr,
    peer: Peer,
    token: ApiToken,
    limits: ApiLimits,
    max_value_bytes: usize,
) {
    let max_value_bytes = max_value_bytes.max(limits.max_body_bytes);
    let guard = Arc::new(Guard {
        token,
        bound,
        limits: limits.clone(),
        max_value_bytes,
    });
    let app = Router::new()
        .route("/v1/status", get(status))
        .route("/v1/peers", get(peers))
        .route("/v1/apps", get(apps))
        .route("/v1/objects", get(objects::list).post(objects::create))
        .route(
            "/v1/objects/{guid}",
            get(objects::lookup).delete(objects::delete),
        )
        .route("/v1/calls", axum::routing::post(objects::call))
        .route("/v1/modules", axum::routing::post(publish_module))
        .route("/v1/jobs", get(list_jobs).post(submit_job))
        .route("/v1/jobs/{id}", get(job))
        .route("/v1/jobs/{id}/cancel", axum::routing::post(cancel_job))
        .route(
            "/v1/space/{namespace}",
            get(space::list)
                .post(space::create_namespace)
                .delete(space::destroy_namespace),
        )
        .route(
            "/v1/space/{namespace}/{name}",
            get(space::get_object)
                .put(space::put_object)
                .delete(space::delete_object),
        )
        .route(
            "/v1/space/{namespace}/{name}/lock",
            axum::routing::post(space::lock),
        )
        .route(
            "/v1/space/{namespace}/{name}/unlock",
            axum::routing::post(space::unlock),
        )
        .with_state(peer)
        // `check_request` has bounded the body already; without this, axum
        // would cut bodies at its default of 2 MB.
        .layer(axum::extract::DefaultBodyLimit::max(
            max_value_bytes.max(limits.max_module_bytes),
        ))
        .layer(axum::middleware::from_fn_with_state(guard, check_request));
    // A connection may carry the largest value both ways.
    let lifetime = limits.connection_lifetime + 2 * transfer_time(max_value_bytes as u64);
    tokio::spawn(accept_loop(listener, app, limits, lifetime));
}

/// Accepts connections, at most `max_connections` served at once, each
/// with a header deadline and a lifetime.
async fn accept_loop(
    listener: tokio::net::TcpListener,
    app: Router,
    limits: ApiLimits,
    lifetime: Duration,
) {
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let mut last_refusal_log: Option<Instant> = None;
    let mut refused = 0u64;
    let mut last_accept_log: Option<Instant> = None;
    loop {
        let (stream, from) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of file descriptors, typically: back off, log rarely.
                if last_accept_log.is_none_or(|t| t.elapsed() >= LOG_INTERVAL) {
                    last_accept_log = Some(Instant::now());
                    warn!(%error, "local API cannot accept connections");
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            refused += 1;
            if last_refusal_log.is_none_or(|t| t.elapsed() >= LOG_INTERVAL) {
                last_refusal_log = Some(Instant::now());
                warn!(
                    %from,
                    refused,
                    max = limits.max_connections,
                    "local API has too many open connections; refusing more"
                );
            }
            // Best effort: a fresh socket's send buffer takes this at once.
            let _ = stream.try_write(
                b"HTTP/1.1 503 Service Unavailable\r\nconnection: close\r\n\
                  content-length: 30\r\n\r\ntoo many open API connections\n",
            );
            continue;
        };
        let service = TowerToHyperService::new(app.clone());
        let limits = limits.clone();
        tokio::spawn(async move {
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_timeout);
            let connection = builder.serve_connection(TokioIo::new(stream), service);
            let _ = tokio::time::timeout(lifetime, connection).await;
            drop(permit);
        });
    }
}

/// Host, then token, then the body (read within its deadline and size),
/// then the handler within the request deadline.
async fn check_request(State(guard): State<Arc<Guard>>, request: Request, next: Next) -> Response {
    if let Err(host) = check_host(request.headers(), guard.bound) {
        return error(
            StatusCode::MISDIRECTED_REQUEST,
            format!(
                "this is a local API; Host {} is not a loopback address, localhost or {}",
                quote(&host),
                guard.bound
            ),
        );
    }
    let offered = request
        .headers()
        .get(header::AUTHORIZATION)
        .map(|v| v.as_bytes())
        .filter(|v| v.len() > 7 && v[..7].eq_ignore_ascii_case(b"bearer "))
        .map(|v| &v[7..]);
    if !offered.is_some_and(|t| guard.token.matches(t)) {
        let mut response = error(
            StatusCode::UNAUTHORIZED,
            format!(
                "{} API token: send `Authorization: Bearer TOKEN` with the token in the \
                 peer's DATA_DIR/{API_TOKEN_FILE}",
                if offered.is_some() {
                    "wrong"
                } else {
                    "missing"
                }
            ),
        );
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer"),
        );
        return response;
    }
    let path = request.uri().path();
    let space = path.starts_with("/v1/space/");
    let max = if path == "/v1/modules" {
        guard.limits.max_module_bytes
    } else if space {
        guard.max_value_bytes
    } else {
        guard.limits.max_body_bytes
    };
    let announced = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if announced.is_some_and(|n| n > max as u64) {
        let mut response = error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body larger than {max} bytes"),
        );
        response.headers_mut().insert(
            space::ERROR_HEADER,
            header::HeaderValue::from_static("too_large"),
        );
        return response;
    }
    // A value gets time in proportion to its size: to arrive, and (a read
    // of one as large as allowed, or a write) to be stored or fetched.
    let (body_timeout, request_timeout) = if space {
        let sent = announced.unwrap_or(0).min(max as u64);
        let answered = if request.method() == axum::http::Method::GET {
            max as u64
        } else {
            sent
        };
        (
            guard.limits.body_timeout + transfer_time(sent),
            guard.limits.request_timeout + transfer_time(answered),
        )
    } else {
        (guard.limits.body_timeout, guard.limits.request_timeout)
    };
    let (parts, body) = request.into_parts();
    let body = match tokio::time::timeout(body_timeout, axum::body::to_bytes(body, max)).await {
        Ok(Ok(bytes)) => bytes,
        Ok(Err(e)) => {
            return error(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("cannot read the request body (at most {max} bytes): {e}"),
            )
        }
        Err(_) => {
            return error(
                StatusCode::REQUEST_TIMEOUT,
                format!("request body not received within {body_timeout:?}"),
            )
        }
    };
    let request = Request::from_parts(parts, axum::body::Body::from(body));
    match tokio::time::timeout(request_timeout, next.run(request)).await {
        Ok(response) => response,
        Err(_) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the peer did not answer within {request_timeout:?}"),
        ),
    }
}

/// `Ok` if the request's `Host` names this API: a loopback address,
/// `localhost`, or the bound address (any address when bound to all
/// interfaces). A DNS-rebound name is refused. `Err` holds what was sent.
fn check_host(headers: &HeaderMap, bound: SocketAddr) -> Result<(), String> {
    let Some(value) = headers.get(header::HOST) else {
        return Err("(none)".into());
    };
    let text = String::from_utf8_lossy(value.as_bytes()).into_owned();
    let host = if let Some(rest) = text.strip_prefix('[') {
        match rest.split_once(']') {
            Some((inside, _)) => inside,
            None => return Err(text),
        }
    } else {
        match text.rsplit_once(':') {
            Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host,
            _ => text.as_str(),
        }
    };
    if host.eq_ignore_ascii_case("localhost") {
        return Ok(());
    }
    match host.parse::<IpAddr>() {
        Ok(ip) if ip.is_loopback() || ip == bound.ip() || bound.ip().is_unspecified() => Ok(()),
        _ => Err(text),
    }
}

/// A plain-text error response, its message shortened.
fn error(status: StatusCode, message: impl AsRef<str>) -> Response {
    (status, shorten(message.as_ref())).into_response()
}

/// `text` in quotes, cut to [`MAX_QUOTED_CHARS`] characters with its
/// length in bytes if longer.
fn quote(text: &str) -> String {
    format!("{:?}", clip(text, MAX_QUOTED_CHARS))
}

/// The first `max` characters of `text`, then `… (N bytes)` if it was
/// longer.
fn clip(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        None => text.to_string(),
        Some((end, _)) => format!("{}… ({} bytes)", &text[..end], text.len()),
    }
}

/// An error message fit to send back: every word longer than
/// [`MAX_QUOTED_CHARS`] (a quoted input, typically) is clipped, and so is
/// the whole beyond [`MAX_ERROR_CHARS`].
fn shorten(message: &str) -> String {
    let words: Vec<String> = message
        .split(' ')
        .map(|w| clip(w, MAX_QUOTED_CHARS))
        .collect();
    clip(&words.join(" "), MAX_ERROR_CHARS)
}

async fn status(State(peer): State<Peer>) -> Result<Json<StatusInfo>, StatusCode> {
    peer.status()
        .await
        .map(Json)
        .map_err(|_| StatusCode::SERVICE_UNAVAILABLE)
}

async fn peers(State(peer): State<Peer>) -> Result<Json<Vec<MemberInfo>>, StatusCode> {
    peer.members()
        .await
        .map(Json)
        .map_err(|_| StatusCode::SERVICE_UNAVAILABLE)
}

async fn apps(State(peer): State<Peer>) -> Json<crate::info::AppsInfo> {
    Json(peer.apps_info())
}

/// `POST /v1/modules` (body: the module's bytes): publishes a guest module
/// under this peer's signature and pushes it to its home.
async fn publish_module(
    State(peer): State<Peer>,
    body: axum::body::Bytes,
) -> Result<Json<crate::PublishedModule>, Response> {
    match peer.publish_module(body.to_vec(), PUBLISH_WAIT).await {
        Ok(published) => Ok(Json(published)),
        Err(e @ ColonyError::App(_)) => Err(error(StatusCode::BAD_REQUEST, e.to_string())),
        Err(e) => Err(error(StatusCode::SERVICE_UNAVAILABLE, e.to_string())),
    }
}

/// How long `POST /v1/modules` waits for the module's home to store it.
const PUBLISH_WAIT: Duration = Duration::from_secs(10);

/// Body of `POST /v1/jobs`.
#[derive(serde::Deserialize)]
struct SubmitRequest {
    app: String,
    #[serde(default)]
    args: Vec<String>,
    /// Fault tolerance; the default when absent.
    #[serde(default)]
    fault_tolerance: Option<FtRequest>,
    /// Cancel the job if it runs longer than this many seconds.
    #[serde(default)]
    deadline_s: Option<f64>,
    /// Keep the job's namespace in the object space (`job-<id>`) when it
    /// ends, instead of destroying it; false when absent.
    #[serde(default)]
    keep_namespace: bool,
}

/// Fault tolerance in a submission: `{"protocol": "checkpoint", "ttc_s": 1,
/// "storage": "copies:2", "home_size": 3, "durable": false}`, every field
/// optional.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FtRequest {
    protocol: Option<String>,
    ttc_s: Option<f64>,
    storage: Option<String>,
    home_size: Option<i64>,
    durable: Option<bool>,
}

impl FtRequest {
    /// A job's settings: [`FtRequest::settings`], and a protocol jobs use.
    fn resolve(self) -> Result<FaultTolerance, FtError> {
        let ft = self.settings()?;
        ft.validate_for_job()?;
        Ok(ft)
    }

    /// The settings, checked by the conversions and the validation the
    /// descriptor uses, so both refuse the same values with the same words.
    pub(crate) fn settings(self) -> Result<FaultTolerance, FtError> {
        let mut ft = FaultTolerance::default();
        if let Some(name) = self.protocol.as_deref() {
            ft.protocol = FtProtocol::from_name(name)
                .ok_or_else(|| FtError::BadProtocol(clip(name, MAX_QUOTED_CHARS)))?;
        }
        if let Some(ttc) = self.ttc_s {
            ft.ttc = FaultTolerance::ttc_from_secs(ttc)?;
        }
        if let Some(storage) = self.storage {
            ft.storage = storage
                .parse()
                .map_err(|_| FtError::BadStorage(clip(&storage, MAX_QUOTED_CHARS)))?;
        }
        if let Some(home_size) = self.home_size {
            ft.home_size = FaultTolerance::home_size_from(home_size)?;
        }
        if let Some(durable) = self.durable {
            ft.durable = durable;
        }
        ft.validate()?;
        Ok(ft)
    }
}

async fn submit_job(
    State(peer): State<Peer>,
    request: Result<Json<SubmitRequest>, JsonRejection>,
) -> Result<Json<serde_json::Value>, Response> {
    let Json(request) =
        request.map_err(|rejection| error(rejection.status(), rejection.body_text()))?;
    let ft = match request.fault_tolerance.map(FtRequest::resolve).transpose() {
        Ok(ft) => ft.unwrap_or_default(),
        Err(e) => {
            return Err(error(
                StatusCode::BAD_REQUEST,
                format!("fault_tolerance: {e}"),
            ))
        }
    };
    let deadline = match request
        .deadline_s
        .map(crate::job_deadline_from_secs)
        .transpose()
    {
        Ok(deadline) => deadline,
        Err(e) => return Err(error(StatusCode::BAD_REQUEST, format!("deadline_s {e}"))),
    };
    let options = SubmitOptions {
        deadline,
        keep_namespace: request.keep_namespace,
    };
    match peer
        .submit_job_with(&request.app, &request.args, ft, options)
        .await
    {
        Ok(handle) => Ok(Json(
            serde_json::json!({ "job_id": handle.id().to_string(), "replicated": handle.replicated() }),
        )),
        Err(e @ (ColonyError::App(_) | ColonyError::FaultTolerance(_))) => {
            Err(error(StatusCode::BAD_REQUEST, e.to_string()))
        }
        Err(e) => Err(error(StatusCode::SERVICE_UNAVAILABLE, e.to_string())),
    }
}

async fn list_jobs(State(peer): State<Peer>) -> Result<Json<Vec<JobInfo>>, StatusCode> {
    let views = peer
        .homed_jobs()
        .await
        .map_err(|_| StatusCode::SERVICE_UNAVAILABLE)?;
    Ok(Json(
        views
            .iter()
            .map(|v| JobInfo::from_view(v, peer.apps()))
            .collect(),
    ))
}

async fn job(
    State(peer): State<Peer>,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> Result<Json<JobInfo>, Response> {
    let id: colony_core::job::JobId = id.parse().map_err(|e: String| {
        error(
            StatusCode::BAD_REQUEST,
            format!("bad job id {}: {e}", quote(&id)),
        )
    })?;
    match peer.job(id).await {
        Ok(Some(view)) => Ok(Json(JobInfo::from_view(&view, peer.apps()))),
        Ok(None) => Err(error(
            StatusCode::NOT_FOUND,
            format!("no peer knows job {id}"),
        )),
        Err(e) => Err(error(StatusCode::SERVICE_UNAVAILABLE, e.to_string())),
    }
}

async fn cancel_job(
    State(peer): State<Peer>,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> Result<Json<serde_json::Value>, Response> {
    let id: colony_core::job::JobId = id.parse().map_err(|e: String| {
        error(
            StatusCode::BAD_REQUEST,
            format!("bad job id {}: {e}", quote(&id)),
        )
    })?;
    match peer.cancel_job(id).await {
        Ok(()) => Ok(Json(
            serde_json::json!({ "job_id": id.to_string(), "state": "cancelled" }),
        )),
        Err(e @ ColonyError::CancelRefused { .. }) => {
            Err(error(StatusCode::FORBIDDEN, e.to_string()))
        }
        Err(e) => Err(error(StatusCode::SERVICE_UNAVAILABLE, e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, value.parse().unwrap());
        headers
    }

    #[test]
    fn only_local_hosts_pass() {
        let loopback: SocketAddr = "127.0.0.1:7171".parse().unwrap();
        for ok in [
            "127.0.0.1:7171",
            "localhost:7171",
            "LOCALHOST",
            "[::1]:7171",
            "127.0.0.2",
        ] {
            assert_eq!(check_host(&host(ok), loopback), Ok(()), "{ok}");
        }
        for bad in [
            "evil.example:7171",
            "10.0.0.5:7171",
            "[fe80::1]:1",
            "localhost.evil",
        ] {
            assert!(check_host(&host(bad), loopback).is_err(), "{bad}");
        }
        assert!(check_host(&HeaderMap::new(), loopback).is_err());
        let lan: SocketAddr = "10.0.0.5:7171".parse().unwrap();
        assert_eq!(check_host(&host("10.0.0.5:7171"), lan), Ok(()));
        assert!(check_host(&host("10.0.0.6:7171"), lan).is_err());
        let any: SocketAddr = "0.0.0.0:7171".parse().unwrap();
        assert_eq!(check_host(&host("10.0.0.6:7171"), any), Ok(()));
        assert!(check_host(&host("rebound.example:7171"), any).is_err());
    }

    #[test]
    fn a_submission_keeps_its_namespace_only_when_it_asks() {
        let parse = |body: &str| serde_json::from_str::<SubmitRequest>(body);
        let asked = parse(r#"{"app": "matmul-space", "keep_namespace": true}"#).unwrap();
        assert!(asked.keep_namespace);
        let silent = parse(r#"{"app": "matmul-space"}"#).unwrap();
        assert!(!silent.keep_namespace);
        assert!(parse(r#"{"app": "matmul-space", "keep_namespace": "yes"}"#).is_err());
    }

    #[test]
    fn long_inputs_are_cut() {
        let long = "7".repeat(2_000_000);
        let message = shorten(&format!("N is not a whole number: {long:?}; usage: N"));
        assert!(message.len() < 200, "{}", message.len());
        assert!(message.contains("… (2000003 bytes)"), "{message}");
        assert!(message.ends_with(" usage: N"), "{message}");
        assert_eq!(shorten("short words stay"), "short words stay");
        assert!(shorten(&"a ".repeat(10_000)).len() < 1100);
        assert_eq!(clip("é".repeat(3).as_str(), 2), "éé… (6 bytes)");
    }

    #[test]
    fn tokens_compare_whole() {
        let token = ApiToken("ab".repeat(32).into());
        assert!(token.matches("ab".repeat(32).as_bytes()));
        assert!(!token.matches("ab".repeat(31).as_bytes()));
        assert!(!token.matches(format!("{}ac", "ab".repeat(31)).as_bytes()));
        assert!(!token.matches(b""));
        assert_eq!(format!("{token:?}"), "ApiToken(…)");
    }

    #[test]
    fn the_token_file_is_private_and_kept() {
        let dir = std::env::temp_dir().join(format!(
            "colony-token-test-{}-{}",
            std::process::id(),
            crate::host::unix_now_ms()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let first = load_or_create_token(&dir).unwrap();
        assert_eq!(first.as_str().len(), 64);
        let again = load_or_create_token(&dir).unwrap();
        assert_eq!(first, again);
        let path = dir.join(API_TOKEN_FILE);
        assert_eq!(read_api_token(&path).unwrap(), first.as_str());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
            let e = load_or_create_token(&dir).unwrap_err().to_string();
            assert!(e.contains("readable by other users"), "{e}");
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        std::fs::write(&path, "garbage").unwrap();
        let e = load_or_create_token(&dir).unwrap_err().to_string();
        assert!(e.contains("remove it"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}

#[cfg(test)]
mod decode_tests;
mod objects;
mod space;
