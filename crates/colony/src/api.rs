//! The local HTTP API (axum), bound to loopback by default:
//!
//! - `GET /v1/status` — the peer, its incarnation and counters ([`StatusInfo`]).
//! - `GET /v1/peers` — the membership view, this peer first ([`MemberInfo`]).
//! - `POST /v1/jobs` with `{"app": "nqueens", "args": ["12"]}` — submits a
//!   job; answers `{"job_id": ...}` or 400 with the reason.
//! - `GET /v1/jobs` — jobs homed at this peer ([`JobInfo`]).
//! - `GET /v1/jobs/{id}` — any job, asked of its home; 404 if none knows it.
//!
//! [`StatusInfo`]: crate::StatusInfo
//! [`MemberInfo`]: crate::MemberInfo
//! [`JobInfo`]: crate::JobInfo

use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use colony_core::ft::{FaultTolerance, FtError, FtProtocol};
use tracing::warn;

use crate::info::{JobInfo, MemberInfo, StatusInfo};
use crate::peer::Peer;

/// Serves the API on `listener` until the peer stops.
pub(crate) fn serve(listener: tokio::net::TcpListener, peer: Peer) {
    let app = Router::new()
        .route("/v1/status", get(status))
        .route("/v1/peers", get(peers))
        .route("/v1/jobs", get(list_jobs).post(submit_job))
        .route("/v1/jobs/{id}", get(job))
        .with_state(peer);
    tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, app).await {
            warn!(%error, "local API stopped");
        }
    });
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

/// Body of `POST /v1/jobs`.
#[derive(serde::Deserialize)]
struct SubmitRequest {
    app: String,
    #[serde(default)]
    args: Vec<String>,
    /// Fault tolerance; the default when absent.
    #[serde(default)]
    fault_tolerance: Option<FtRequest>,
}

/// Fault tolerance in a submission: `{"protocol": "checkpoint", "ttc_s": 1,
/// "storage": "copies:2", "home_size": 3, "durable": false}`, every field
/// optional.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct FtRequest {
    protocol: Option<String>,
    ttc_s: Option<f64>,
    storage: Option<String>,
    home_size: Option<u8>,
    durable: Option<bool>,
}

impl FtRequest {
    fn resolve(self) -> Result<FaultTolerance, String> {
        let mut ft = FaultTolerance::default();
        match self.protocol.as_deref() {
            None | Some("checkpoint") => {}
            Some("none") => ft.protocol = FtProtocol::None,
            Some(other) => {
                return Err(format!(
                    "protocol must be \"none\" or \"checkpoint\", got {other:?}"
                ))
            }
        }
        if let Some(ttc) = self.ttc_s {
            ft.ttc = Duration::try_from_secs_f64(ttc)
                .map_err(|_| format!("ttc_s must be a positive number, got {ttc}"))?;
        }
        if let Some(storage) = self.storage {
            ft.storage = storage.parse().map_err(|e: FtError| e.to_string())?;
        }
        if let Some(home_size) = self.home_size {
            ft.home_size = home_size;
        }
        if let Some(durable) = self.durable {
            ft.durable = durable;
        }
        ft.validate().map_err(|e| e.to_string())?;
        Ok(ft)
    }
}

async fn submit_job(
    State(peer): State<Peer>,
    Json(request): Json<SubmitRequest>,
) -> Result<Json<serde_json::Value>, (StatusCode, String)> {
    let ft = match request.fault_tolerance.map(FtRequest::resolve).transpose() {
        Ok(ft) => ft.unwrap_or_default(),
        Err(error) => return Err((StatusCode::BAD_REQUEST, error)),
    };
    match peer.submit_job_with(&request.app, &request.args, ft).await {
        Ok(handle) => Ok(Json(
            serde_json::json!({ "job_id": handle.id().to_string() }),
        )),
        Err(crate::ColonyError::App(error)) => Err((StatusCode::BAD_REQUEST, error.to_string())),
        Err(error) => Err((StatusCode::SERVICE_UNAVAILABLE, error.to_string())),
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
) -> Result<Json<JobInfo>, (StatusCode, String)> {
    let id: colony_core::job::JobId = id
        .parse()
        .map_err(|e: String| (StatusCode::BAD_REQUEST, e))?;
    match peer.job(id).await {
        Ok(Some(view)) => Ok(Json(JobInfo::from_view(&view, peer.apps()))),
        Ok(None) => Err((StatusCode::NOT_FOUND, format!("no peer knows job {id}"))),
        Err(error) => Err((StatusCode::SERVICE_UNAVAILABLE, error.to_string())),
    }
}

#[cfg(test)]
mod decode_tests;
