//! The local HTTP API (axum), bound to loopback by default:
//!
//! - `GET /v1/status` — the peer, its incarnation and counters ([`StatusInfo`]).
//! - `GET /v1/peers` — the membership view, this peer first ([`MemberInfo`]).
//!
//! [`StatusInfo`]: crate::StatusInfo
//! [`MemberInfo`]: crate::MemberInfo

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use tracing::warn;

use crate::info::{MemberInfo, StatusInfo};
use crate::peer::Peer;

/// Serves the API on `listener` until the peer stops.
pub(crate) fn serve(listener: tokio::net::TcpListener, peer: Peer) {
    let app = Router::new()
        .route("/v1/status", get(status))
        .route("/v1/peers", get(peers))
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
