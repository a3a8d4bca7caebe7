//! The admin HTTP API: status, history, health, readiness, metrics, the status page, and the
//! operator's calls ([`ops`]: pause, resume, drain, restore, forced failover).
//!
//! Served on the admin listener, separate from peer traffic. Reads are open unless
//! `admin.open_reads = false` (then they need a token too; health, readiness and the gate
//! stay open for load balancers and Route53). Errors are JSON `{code, message}` with a
//! stable `code`, so scripts can branch on them.
//!
//! The response types are the CLI's too: it reads each answer back into them. A field the CLI
//! does not show is `#[serde(default)]`, so that it still reads an answer without that field
//! (from an agent of another version), and `#[schemars(!default)]`, so that the OpenAPI
//! document keeps saying the server always writes it.

pub mod openapi;
pub mod ops;
pub mod page;
pub mod roles;
#[cfg(test)]
mod tests;

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use crate::health::{self, HealthBoard, TargetView};

/// What the admin API reads.
#[derive(Clone)]
pub struct AdminState {
    /// This agent's id.
    pub agent_id: String,
    /// This agent's region.
    pub region: String,
    /// Health of every probed target.
    pub board: Arc<HealthBoard>,
    /// The agent's metrics.
    pub registry: prometheus::Registry,
    /// The per-target probe series, exposed next to the registry's.
    pub probe_series: crate::metrics::ProbeSeries,
    /// The cluster.
    pub consensus: Arc<crate::consensus::Consensus>,
    /// The failover reconciler.
    pub reconciler: Arc<crate::failover::executor::Reconciler>,
    /// Local primaries this agent has fenced.
    pub fenced: prometheus::IntGauge,
    /// The configured regions.
    pub regions: Vec<String>,
    /// Every configured target with its region, in config order.
    pub targets: Arc<Vec<(crate::topology::TargetId, String)>>,
    /// Tokens for the calls that change something.
    pub tokens: ops::Tokens,
    /// Whether reads answer without a token.
    pub open_reads: bool,
    /// Per-actor limit on the calls that change something.
    pub limiter: Arc<ops::RateLimiter>,
}

pub use crate::api::{ApiError, ErrorBody};

/// Builds the router.
pub fn router(state: AdminState) -> Router {
    let reads = Router::new()
        .route("/", get(page::page))
        .route("/metrics", get(metrics))
        .route("/v1/status", get(status))
        .route("/v1/history", get(history))
        .route("/v1/failovers/{id}", get(failover_by_id))
        .route_layer(middleware::from_fn_with_state(state.clone(), read_access));
    let writes = Router::new()
        .route("/v1/pause", post(ops::pause))
        .route("/v1/resume", post(ops::resume))
        .route("/v1/regions/{name}/drain", post(ops::drain))
        .route("/v1/regions/{name}/restore", post(ops::restore))
        .route("/v1/switchover", post(ops::switchover))
        .route("/v1/failover", post(ops::failover))
        .route("/v1/drills", post(ops::drill));
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/v1/gate/{region}", get(gate))
        .route("/v1/members/{name}/{role}", get(member_role))
        .route("/v1/openapi.json", get(openapi))
        .merge(reads)
        .merge(writes)
        .layer(DefaultBodyLimit::max(ops::MAX_BODY))
        .fallback(|uri: axum::http::Uri| async move {
            ApiError {
                status: StatusCode::NOT_FOUND,
                code: "not_found",
                message: format!("no such endpoint: {}", uri.path()),
            }
        })
        .method_not_allowed_fallback(|method: axum::http::Method| async move {
            ApiError {
                status: StatusCode::METHOD_NOT_ALLOWED,
                code: "method_not_allowed",
                message: format!("method {method} is not allowed here"),
            }
        })
        .with_state(state)
}

/// `GET /v1/openapi.json`: the API's OpenAPI document, as this agent enforces it.
async fn openapi(State(state): State<AdminState>) -> Json<serde_json::Value> {
    Json(openapi::document(state.open_reads))
}

/// Reads need a token when `admin.open_reads = false`.
async fn read_access(State(state): State<AdminState>, request: Request, next: Next) -> Response {
    if !state.open_reads {
        if let Err(e) = state.tokens.actor(request.headers()) {
            return e.into_response();
        }
    }
    next.run(request).await
}

/// `GET /v1/failovers/{id}`: one failover (its id is its epoch) with its steps.
async fn failover_by_id(
    State(state): State<AdminState>,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> Result<Json<crate::desired::FailoverRecord>, ApiError> {
    let epoch: u64 = id.parse().map_err(|_| ApiError {
        status: StatusCode::BAD_REQUEST,
        code: "bad_id",
        message: format!("{id:?} is not a failover id (a positive integer)"),
    })?;
    state
        .consensus
        .read_desired(|d| d.failover(epoch).cloned())
        .map(Json)
        .ok_or_else(|| ApiError {
            status: StatusCode::NOT_FOUND,
            code: "unknown_failover",
            message: format!("no failover {epoch} in the history"),
        })
}

/// `GET /healthz`.
#[derive(Serialize, Deserialize, schemars::JsonSchema)]
pub struct Liveness {
    /// Always `ok`.
    pub status: String,
}

async fn healthz() -> Json<Liveness> {
    Json(Liveness {
        status: "ok".to_owned(),
    })
}

/// `GET /readyz`.
#[derive(Serialize, Deserialize, schemars::JsonSchema)]
pub struct Readiness {
    /// Every target probed at least once.
    pub ready: bool,
    /// Targets probed so far.
    pub probed: usize,
    /// Targets configured.
    pub targets: usize,
}

async fn readyz(State(state): State<AdminState>) -> (StatusCode, Json<Readiness>) {
    let (probed, targets) = state.board.progress();
    let ready = state.board.ready();
    let code = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        code,
        Json(Readiness {
            ready,
            probed,
            targets,
        }),
    )
}

async fn metrics(State(state): State<AdminState>) -> impl IntoResponse {
    // The readiness gauges (failoverd_failover_blocked, failoverd_split_brain_exposed) are
    // what the leader sees now, not at the last status request.
    state.reconciler.readiness();
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        crate::metrics::body(&state.registry, &state.probe_series),
    )
}

/// `GET /v1/status`.
#[derive(Debug, Serialize, Deserialize, schemars::JsonSchema)]
pub struct StatusResponse {
    /// This agent.
    pub agent: AgentInfo,
    /// Whether every target was probed at least once.
    #[serde(default)]
    #[schemars(!default)]
    pub ready: bool,
    /// Targets per state.
    #[serde(default)]
    #[schemars(!default)]
    pub summary: Summary,
    /// Every probed target.
    pub targets: Vec<TargetView>,
    /// Leader, term, members and, on the leader, the verdict with its votes and each group's
    /// failover readiness.
    pub cluster: ClusterSection,
    /// Desired state, the failover in progress, and what waits or is refused.
    pub failover: FailoverStatus,
}

/// The cluster part of the status: consensus's view and, on the leader, what losing each
/// Postgres primary's region now would lead to.
#[derive(Debug, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ClusterSection {
    /// Leader, term, members, leases and the verdict.
    #[serde(flatten)]
    pub consensus: crate::consensus::ClusterStatus,
    /// On the leader: per Postgres group, the candidate a loss of its primary's region would
    /// promote, or why it would be blocked.
    #[serde(default)]
    #[schemars(!default)]
    pub failover_readiness: std::collections::BTreeMap<String, crate::failover::inputs::Readiness>,
    /// On the leader: per Postgres group, each member against the primary (role, state,
    /// timeline, lag, slot) and how many replicas stream from it.
    #[serde(default)]
    #[schemars(!default)]
    pub redundancy: std::collections::BTreeMap<String, crate::failover::heal::Group>,
}

/// The failover part of the status.
#[derive(Debug, Serialize, Deserialize, schemars::JsonSchema)]
pub struct FailoverStatus {
    /// `active` or `paused`.
    pub mode: String,
    /// The epoch of the latest decision.
    pub epoch: u64,
    /// Regions out of DNS.
    pub drained: Vec<String>,
    /// Weight per region as last decided (empty: as configured).
    pub weights: std::collections::BTreeMap<String, u32>,
    /// The epoch the Route53 TXT record holds, as the log knows it.
    pub dns_epoch: Option<u64>,
    /// No automatic region change before this, Unix milliseconds.
    #[serde(default)]
    #[schemars(!default)]
    pub cooldown_until_ms: u64,
    /// Per Redis Cluster (`redis/<name>`): the master of each slot-range list, as last
    /// recorded.
    #[serde(default)]
    #[schemars(!default)]
    pub slot_owners: std::collections::BTreeMap<
        String,
        std::collections::BTreeMap<String, crate::topology::TargetId>,
    >,
    /// The failovers in progress, with their steps.
    #[serde(default)]
    #[schemars(!default)]
    pub in_progress: Vec<crate::desired::FailoverRecord>,
    /// The live drill in progress, if any.
    pub live_drill: Option<crate::desired::LiveDrill>,
    /// On the leader: what is Down but waits, and why.
    pub waiting: Vec<String>,
    /// On the leader: refusals that stand ("blocked because …").
    pub refusals: Vec<String>,
}

/// `GET /v1/gate/{region}`: whether the region should receive traffic, for a Route53 health
/// check that keeps working when Route53's control plane does not.
#[derive(Debug, Serialize, Deserialize, schemars::JsonSchema)]
pub struct GateResponse {
    /// The region.
    pub region: String,
    /// 200 when true, 503 when false.
    pub in_service: bool,
    /// Why not, when not.
    pub reasons: Vec<String>,
}

async fn gate(
    State(state): State<AdminState>,
    axum::extract::Path(region): axum::extract::Path<String>,
) -> Result<(StatusCode, Json<GateResponse>), ApiError> {
    if !state.regions.contains(&region) {
        return Err(ApiError {
            status: StatusCode::NOT_FOUND,
            code: "unknown_region",
            message: format!("no region {region:?} in the configuration"),
        });
    }
    let mut reasons = Vec::new();
    if state
        .consensus
        .read_desired(|d| d.drained.contains(&region))
    {
        reasons.push(format!("region {region} is drained"));
    }
    if !state.consensus.lease_valid() {
        reasons.push(format!(
            "agent {} has lost its lease (no contact with a quorum)",
            state.agent_id
        ));
    }
    let fenced = state.fenced.get();
    if fenced > 0 {
        reasons.push(format!(
            "agent {} has fenced {fenced} local primary(ies)",
            state.agent_id
        ));
    }
    let in_service = reasons.is_empty();
    let status = if in_service {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    Ok((
        status,
        Json(GateResponse {
            region,
            in_service,
            reasons,
        }),
    ))
}

/// `GET /v1/members/{name}/primary` and `/replica`: whether the member has that role, from
/// this agent's view ([`roles`]), 200 or 503. Unauthenticated like the gate: load balancers
/// and poolers poll it.
async fn member_role(
    State(state): State<AdminState>,
    axum::extract::Path((name, role)): axum::extract::Path<(String, String)>,
) -> Result<(StatusCode, Json<roles::RoleResponse>), ApiError> {
    let role = match role.as_str() {
        "primary" => roles::Role::Primary,
        "replica" => roles::Role::Replica,
        _ => {
            return Err(ApiError {
                status: StatusCode::NOT_FOUND,
                code: "unknown_role",
                message: format!("no role {role:?}: ask for primary or replica"),
            })
        }
    };
    let found: Vec<(&crate::topology::TargetId, &str)> = state
        .targets
        .iter()
        .map(|(t, _)| t)
        .filter(|t| t.as_str().rsplit('/').next() == Some(name.as_str()))
        .filter_map(|t| Some((t, state.consensus.group_of(t)?)))
        .collect();
    let (target, group) = match found.as_slice() {
        [one] => *one,
        [] => {
            return Err(ApiError {
                status: StatusCode::NOT_FOUND,
                code: "unknown_member",
                message: format!(
                    "no Postgres member or Redis replication member {name:?} in the \
                     configuration"
                ),
            })
        }
        _ => {
            return Err(ApiError {
                status: StatusCode::CONFLICT,
                code: "ambiguous_member",
                message: format!("{name:?} names a member of several groups"),
            })
        }
    };
    let observed = state
        .board
        .views()
        .into_iter()
        .find(|v| &v.id == target)
        .map(|v| roles::Observed {
            up: v.state == crate::health::State::Up,
            role: v.role(),
            streaming: crate::consensus::reports::position_of(&v)
                .and_then(|p| p.streaming)
                .or_else(|| crate::consensus::reports::offset_of(&v).and_then(|o| o.link_up)),
        });
    let named = state.consensus.named_primary(group).as_ref() == Some(target);
    let reasons = roles::judge(&name, role, state.consensus.lease_valid(), named, observed);
    let ok = reasons.is_empty();
    Ok((
        if ok {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        },
        Json(roles::RoleResponse {
            member: name,
            group: group.to_owned(),
            role,
            ok,
            observed: observed.is_some(),
            reasons,
        }),
    ))
}

/// `GET /v1/history` query.
#[derive(Debug, serde::Deserialize)]
pub struct HistoryQuery {
    /// At most this many entries, newest first (default 50).
    pub limit: Option<u32>,
}

/// `GET /v1/history`: failovers with their steps, refusals and mode changes, newest first.
#[derive(Debug, Serialize, Deserialize, schemars::JsonSchema)]
pub struct HistoryResponse {
    /// The epoch of the latest decision.
    #[serde(default)]
    #[schemars(!default)]
    pub epoch: u64,
    /// Entries, newest first.
    pub entries: Vec<crate::desired::HistoryEntry>,
}

async fn history(
    State(state): State<AdminState>,
    query: Result<axum::extract::Query<HistoryQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<HistoryResponse>, ApiError> {
    let query = query.map_err(|e| ApiError {
        status: StatusCode::BAD_REQUEST,
        code: "bad_query",
        message: format!("limit must be a non-negative integer: {e}"),
    })?;
    let desired = state.consensus.desired();
    let limit = query.0.limit.map_or(50, |l| l as usize);
    Ok(Json(HistoryResponse {
        epoch: desired.epoch,
        entries: desired.history.into_iter().rev().take(limit).collect(),
    }))
}

/// Identity of the answering agent.
#[derive(Debug, Serialize, Deserialize, schemars::JsonSchema)]
pub struct AgentInfo {
    /// Agent id.
    pub id: String,
    /// Agent region.
    pub region: String,
    /// failoverd version.
    #[serde(default)]
    #[schemars(!default)]
    pub version: String,
}

/// Count of targets per state.
#[derive(Debug, Default, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Summary {
    /// Up targets.
    pub up: usize,
    /// Down targets.
    pub down: usize,
    /// Unknown targets.
    pub unknown: usize,
}

async fn status(State(state): State<AdminState>) -> Json<StatusResponse> {
    let targets = state.board.views();
    let mut summary = Summary::default();
    for t in &targets {
        match t.state {
            health::State::Up => summary.up += 1,
            health::State::Down => summary.down += 1,
            health::State::Unknown => summary.unknown += 1,
        }
    }
    let mut cluster = state.consensus.status();
    if cluster.verdict.is_none() {
        // A follower shows the leader's verdict, with every agent's votes.
        cluster.verdict = state.consensus.leader_verdict().await;
    }
    Json(StatusResponse {
        agent: AgentInfo {
            id: state.agent_id.clone(),
            region: state.region.clone(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
        },
        ready: state.board.ready(),
        summary,
        targets,
        cluster: ClusterSection {
            consensus: cluster,
            failover_readiness: state.reconciler.readiness(),
            redundancy: state.reconciler.redundancy(),
        },
        failover: {
            let desired = state.consensus.desired();
            let reconciler = state.reconciler.status();
            FailoverStatus {
                mode: if desired.paused { "paused" } else { "active" }.to_owned(),
                epoch: desired.epoch,
                drained: desired.drained.iter().cloned().collect(),
                in_progress: desired.in_progress().into_iter().cloned().collect(),
                live_drill: desired.live_drill.clone(),
                weights: desired.weights,
                dns_epoch: desired.dns_epoch,
                cooldown_until_ms: desired.cooldown_until_ms,
                slot_owners: desired.slot_owners,
                waiting: reconciler.waiting,
                refusals: reconciler.refusals,
            }
        },
    })
}
