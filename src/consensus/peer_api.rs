//! The server side of peer traffic, on the peer listener (never the admin one): Raft RPCs
//! and reports. Every request must carry the cluster secret as a bearer token; one that does
//! not gets 401 and is counted, and never reaches Raft.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde::de::DeserializeOwned;

use super::network::paths;
use super::reports::{Report, ReportBook, ReportError};
use super::types::Raft;
use crate::api::ApiError;
use crate::config::Secret;
use crate::util::constant_time_eq;

/// Largest peer request accepted: a batch of log entries or a snapshot chunk.
pub const MAX_PEER_BODY: usize = 16 * 1024 * 1024;

/// What the peer API needs.
#[derive(Clone)]
pub struct PeerState {
    /// The Raft node.
    pub raft: Raft,
    /// The shared secret; `None` only in a one-agent cluster without peers.
    pub secret: Option<Arc<Secret>>,
    /// Reports, kept when this agent leads.
    pub reports: Arc<ReportBook>,
    /// Requests refused for a missing or wrong secret.
    pub unauthorized: prometheus::IntCounter,
    /// Reports received, by agent.
    pub reports_received: prometheus::IntCounterVec,
    /// Marks which leader this agent accepted, and when; an accepted AppendEntries renews
    /// this agent's lease once its leader shows it heard the acceptance.
    pub contacts: Arc<super::contact::ContactBook>,
    /// Carries out operators' requests forwarded by the other agents (set once the
    /// reconciler runs).
    pub admin: Arc<std::sync::OnceLock<AdminHandler>>,
    /// This agent's verdict when it leads.
    pub verdict: Arc<dyn Fn() -> Option<crate::verdict::Verdict> + Send + Sync>,
    /// Whether this agent has lost its leader.
    pub leaderless: Arc<dyn Fn() -> bool + Send + Sync>,
}

/// An operator's request carried out on the leader: the HTTP status and JSON body the agent
/// that took the request answers with.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Forwarded {
    /// HTTP status.
    pub status: u16,
    /// JSON body.
    pub body: serde_json::Value,
}

/// Carries out an operator's request on this agent.
pub type AdminHandler = Arc<
    dyn Fn(
            crate::api::Request,
        ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Forwarded> + Send>>
        + Send
        + Sync,
>;

/// Builds the peer router.
pub fn router(state: PeerState) -> Router {
    Router::new()
        .route(paths::APPEND, post(append))
        .route(paths::VOTE, post(vote))
        .route(paths::SNAPSHOT, post(snapshot))
        .route(paths::REPORT, post(report))
        .route(paths::INITIALIZED, post(initialized))
        .route(paths::ADMIN, post(admin))
        .route(paths::VERDICT, post(verdict))
        .route(paths::LEADERLESS, post(leaderless))
        .fallback(|| async {
            ApiError {
                status: StatusCode::NOT_FOUND,
                code: "not_found",
                message: "no such peer endpoint".into(),
            }
        })
        .layer(middleware::from_fn_with_state(state.clone(), authenticate))
        .layer(DefaultBodyLimit::max(MAX_PEER_BODY))
        .with_state(state)
}

async fn authenticate(State(state): State<PeerState>, request: Request, next: Next) -> Response {
    let Some(secret) = &state.secret else {
        return next.run(request).await;
    };
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match presented {
        Some(token) if constant_time_eq(token.as_bytes(), secret.expose().as_bytes()) => {
            next.run(request).await
        }
        _ => {
            state.unauthorized.inc();
            tracing::warn!(path = %request.uri().path(), "refused a peer request without the cluster secret");
            ApiError {
                status: StatusCode::UNAUTHORIZED,
                code: "unauthorized",
                message: "peer requests need the cluster secret as a bearer token".into(),
            }
            .into_response()
        }
    }
}

fn parse<T: DeserializeOwned>(body: &Bytes) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError {
        status: StatusCode::BAD_REQUEST,
        code: "bad_request",
        message: format!("cannot decode the request: {e}"),
    })
}

async fn append(State(state): State<PeerState>, headers: HeaderMap, body: Bytes) -> Response {
    match parse::<openraft::raft::AppendEntriesRequest<super::types::TypeConfig>>(&body) {
        Ok(rpc) => {
            let tag = headers
                .get(super::contact::AppendTag::HEADER)
                .and_then(|v| v.to_str().ok())
                .and_then(super::contact::AppendTag::parse);
            let leader = rpc.vote.leader_id().voted_for();
            let result = state.raft.append_entries(rpc).await;
            // Any answer but "your vote is stale" means a current leader reached us.
            if matches!(&result, Ok(r) if !matches!(r, openraft::raft::AppendEntriesResponse::HigherVote(_)))
            {
                if let Some(leader) = leader {
                    state.contacts.accepted_from(leader, tag, Instant::now());
                }
            }
            Json(result).into_response()
        }
        Err(e) => e.into_response(),
    }
}

async fn vote(State(state): State<PeerState>, body: Bytes) -> Response {
    match parse(&body) {
        Ok(rpc) => Json(state.raft.vote(rpc).await).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn snapshot(State(state): State<PeerState>, body: Bytes) -> Response {
    match parse(&body) {
        Ok(rpc) => Json(state.raft.install_snapshot(rpc).await).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn initialized(State(state): State<PeerState>) -> Response {
    match state.raft.is_initialized().await {
        Ok(initialized) => Json(serde_json::json!({ "initialized": initialized })).into_response(),
        Err(e) => ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            code: "raft_stopped",
            message: e.to_string(),
        }
        .into_response(),
    }
}

async fn verdict(State(state): State<PeerState>) -> Response {
    Json((state.verdict)()).into_response()
}

async fn leaderless(State(state): State<PeerState>) -> Response {
    Json(super::election::Leaderless {
        leaderless: (state.leaderless)(),
    })
    .into_response()
}

async fn admin(State(state): State<PeerState>, body: Bytes) -> Response {
    let request: crate::api::Request = match parse(&body) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    match state.admin.get() {
        Some(handler) => Json(handler(request).await).into_response(),
        None => ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            code: "starting",
            message: "this agent is still starting".into(),
        }
        .into_response(),
    }
}

async fn report(State(state): State<PeerState>, body: Bytes) -> Response {
    let report: Report = match parse(&body) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    let agent = report.agent.clone();
    match state.reports.record(report, Instant::now()) {
        Ok(()) => {
            state.reports_received.with_label_values(&[&agent]).inc();
            Json(serde_json::json!({ "accepted": true })).into_response()
        }
        // A late report is harmless: the newer one is already held.
        Err(ReportError::OutOfOrder { .. }) => {
            Json(serde_json::json!({ "accepted": false })).into_response()
        }
        Err(e @ ReportError::UnknownAgent(_)) => ApiError {
            status: StatusCode::FORBIDDEN,
            code: "unknown_agent",
            message: e.to_string(),
        }
        .into_response(),
    }
}
