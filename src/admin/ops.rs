//! The calls that change something: pause, resume, drain, restore and forced failover.
//!
//! Each needs a bearer token from `admin.tokens` (its name is the actor recorded with the
//! request), a `reason`, and passes a per-actor rate limit. The agent that takes the call
//! forwards it to the leader over the authenticated peer link, or answers 503 with what it
//! knows of the leader. Every call is logged with its actor, reason and outcome (target
//! `failoverd::audit`); what it changes is in the replicated history.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::de::DeserializeOwned;
use serde::Deserialize;

use super::{AdminState, ApiError};
use crate::config::Secret;
use crate::consensus::peer_api::Forwarded;
use crate::failover::executor::Reconciler;
use crate::failover::manual::{ErrorKind, Operation, Request};
use crate::util::constant_time_eq;

/// Largest request body accepted by the admin API.
pub const MAX_BODY: usize = 64 * 1024;

/// How long a mutating call may take before it is answered with 503 `timeout`.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(20);

/// The admin tokens, by holder.
#[derive(Clone, Default)]
pub struct Tokens(Arc<Vec<(String, Secret)>>);

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.0.iter().map(|(n, _)| n.as_str()).collect();
        f.debug_tuple("Tokens").field(&names).finish()
    }
}

impl Tokens {
    /// Tokens with their holders' names.
    pub fn new(tokens: Vec<(String, Secret)>) -> Tokens {
        Tokens(Arc::new(tokens))
    }

    /// Whether no token is configured (mutating calls are then refused).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The holder of the bearer token in `headers`: 401 without one, 403 for an unknown one.
    /// Every configured token is compared, in constant time each.
    pub fn actor(&self, headers: &HeaderMap) -> Result<String, ApiError> {
        let presented = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or_else(|| ApiError {
                status: StatusCode::UNAUTHORIZED,
                code: "unauthorized",
                message: "this call needs an admin token: Authorization: Bearer <token>".into(),
            })?;
        let mut holder = None;
        for (name, secret) in self.0.iter() {
            if constant_time_eq(presented.as_bytes(), secret.expose().as_bytes()) {
                holder = Some(name.clone());
            }
        }
        holder.ok_or_else(|| ApiError {
            status: StatusCode::FORBIDDEN,
            code: "forbidden",
            message: "the token is not one of admin.tokens".into(),
        })
    }
}

/// A token bucket per actor for mutating calls: a burst of [`RateLimiter::BURST`], then one
/// call per [`RateLimiter::REFILL`].
#[derive(Debug, Default)]
pub struct RateLimiter {
    buckets: Mutex<HashMap<String, (f64, Instant)>>,
}

impl RateLimiter {
    /// Calls an actor may make at once.
    pub const BURST: f64 = 10.0;
    /// One more call is allowed after this.
    pub const REFILL: Duration = Duration::from_secs(6);

    /// Takes one call for `actor` at `now`; `Err` holds how long to wait.
    pub fn take(&self, actor: &str, now: Instant) -> Result<(), Duration> {
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let (tokens, last) = buckets
            .entry(actor.to_owned())
            .or_insert((Self::BURST, now));
        let refilled =
            now.saturating_duration_since(*last).as_secs_f64() / Self::REFILL.as_secs_f64();
        *tokens = (*tokens + refilled).min(Self::BURST);
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            Err(Self::REFILL.mul_f64(1.0 - *tokens))
        }
    }
}

/// `POST /v1/pause` and `/v1/resume` body.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReasonBody {
    /// Why (recorded in the history; not blank).
    #[schemars(length(min = 1), regex(pattern = r"\S"))]
    pub reason: String,
}

/// `POST /v1/regions/{name}/drain` and `/restore` body.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RegionBody {
    /// Why (recorded in the history; not blank).
    #[schemars(length(min = 1), regex(pattern = r"\S"))]
    pub reason: String,
    /// Only plan it.
    #[serde(default)]
    pub dry_run: bool,
}

/// `POST /v1/failover` body.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FailoverBody {
    /// The region to fail over from.
    pub from: String,
    /// The region the Postgres candidate must be in, if any.
    pub to: Option<String>,
    /// Why (recorded in the history; not blank).
    #[schemars(length(min = 1), regex(pattern = r"\S"))]
    pub reason: String,
    /// Promote beyond `postgres.max_lag_on_failover`.
    #[serde(default)]
    pub allow_data_loss: bool,
    /// Only plan it.
    #[serde(default)]
    pub dry_run: bool,
}

/// `POST /v1/switchover` body.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SwitchoverBody {
    /// The member to promote: its name, or `postgres/<cluster>/<name>`.
    #[schemars(length(min = 1))]
    pub to: String,
    /// Why (recorded in the history; not blank).
    #[schemars(length(min = 1), regex(pattern = r"\S"))]
    pub reason: String,
    /// Only plan it.
    #[serde(default)]
    pub dry_run: bool,
}

fn parse<T: DeserializeOwned>(body: Result<Bytes, BytesRejection>) -> Result<T, ApiError> {
    let body = body.map_err(|e| ApiError {
        status: if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            StatusCode::PAYLOAD_TOO_LARGE
        } else {
            StatusCode::BAD_REQUEST
        },
        code: if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            "body_too_large"
        } else {
            "bad_body"
        },
        message: format!("{e} (at most {MAX_BODY} bytes)"),
    })?;
    serde_json::from_slice(&body).map_err(|e| ApiError {
        status: StatusCode::BAD_REQUEST,
        code: if e.is_syntax() || e.is_eof() {
            "bad_json"
        } else {
            "bad_request"
        },
        message: e.to_string(),
    })
}

/// Carries out `request` on the leader: the answer the taking agent gives.
pub async fn execute(reconciler: &Reconciler, request: Request) -> Forwarded {
    match reconciler.operate(request).await {
        Ok(reply) => Forwarded {
            status: StatusCode::OK.as_u16(),
            body: serde_json::to_value(&reply).unwrap_or_default(),
        },
        Err(e) => {
            let status = match e.kind {
                ErrorKind::BadInput => StatusCode::BAD_REQUEST,
                ErrorKind::NotFound => StatusCode::NOT_FOUND,
                ErrorKind::Conflict => StatusCode::CONFLICT,
                ErrorKind::Refused => StatusCode::UNPROCESSABLE_ENTITY,
                ErrorKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            };
            Forwarded {
                status: status.as_u16(),
                body: serde_json::json!({ "code": e.code, "message": e.message }),
            }
        }
    }
}

/// Authenticates, rate-limits, forwards and audits one mutating call.
async fn call(
    state: &AdminState,
    headers: &HeaderMap,
    what: &str,
    request: impl FnOnce(String) -> Result<Request, ApiError>,
) -> Response {
    let actor = match state.tokens.actor(headers) {
        Ok(actor) => actor,
        Err(e) => {
            tracing::warn!(target: "failoverd::audit", call = what, code = e.code, "refused an admin call");
            return e.into_response();
        }
    };
    // A malformed call costs the leader nothing: only well-formed ones are counted.
    let request = match request(actor.clone()) {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(target: "failoverd::audit", call = what, actor = %actor, code = e.code, "refused an admin call");
            return e.into_response();
        }
    };
    if let Err(wait) = state.limiter.take(&actor, Instant::now()) {
        tracing::warn!(target: "failoverd::audit", call = what, actor = %actor, "rate limited");
        let mut response = ApiError {
            status: StatusCode::TOO_MANY_REQUESTS,
            code: "rate_limited",
            message: format!(
                "too many calls from {actor}: try again in {} s",
                wait.as_secs() + 1
            ),
        }
        .into_response();
        if let Ok(value) = (wait.as_secs() + 1).to_string().parse() {
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
        return response;
    }
    let reason = request.reason().to_owned();
    let answer = tokio::time::timeout(CALL_TIMEOUT, state.consensus.operate(request)).await;
    let (status, body) = match answer {
        Ok(Ok(f)) => (
            StatusCode::from_u16(f.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            f.body,
        ),
        Ok(Err(crate::consensus::OperateError::NoLeader(why))) => (
            StatusCode::SERVICE_UNAVAILABLE,
            serde_json::json!({ "code": "no_leader", "message": why }),
        ),
        Ok(Err(crate::consensus::OperateError::Unanswered(why))) => (
            StatusCode::SERVICE_UNAVAILABLE,
            serde_json::json!({ "code": "timeout", "message": why }),
        ),
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            serde_json::json!({
                "code": "timeout",
                "message": format!(
                    "no answer within {} s; the change may have been committed: check \
                     GET /v1/history before trying again",
                    CALL_TIMEOUT.as_secs()
                ),
            }),
        ),
    };
    tracing::info!(
        target: "failoverd::audit",
        call = what,
        actor = %actor,
        reason = %reason,
        status = status.as_u16(),
        code = body["code"].as_str().unwrap_or("ok"),
        epoch = body["epoch"].as_u64(),
        "admin call"
    );
    (status, Json(body)).into_response()
}

/// `POST /v1/pause`.
pub async fn pause(
    State(state): State<AdminState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    call(&state, &headers, "pause", |actor| {
        let body: ReasonBody = parse(body)?;
        Ok(Request::Pause {
            actor,
            reason: body.reason,
        })
    })
    .await
}

/// `POST /v1/resume`.
pub async fn resume(
    State(state): State<AdminState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    call(&state, &headers, "resume", |actor| {
        let body: ReasonBody = parse(body)?;
        Ok(Request::Resume {
            actor,
            reason: body.reason,
        })
    })
    .await
}

/// The longest hold of a live drill.
pub const MAX_HOLD_SECONDS: u32 = 3600;

/// `POST /v1/drills` body: a readiness drill or a live drill.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(untagged)]
pub enum DrillBody {
    /// Fails a region over for real (a drain), holds it out, restores it.
    Live(LiveDrillBody),
    /// Checks every precondition of failing over each region; changes nothing.
    Readiness(ReadinessDrillBody),
}

/// `kind` of a readiness drill.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ReadinessKind {
    /// The default.
    Readiness,
}

/// `kind` of a live drill.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum LiveKind {
    /// Fails the region over for real.
    Live,
}

/// A readiness drill.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReadinessDrillBody {
    /// Why (recorded in the history; not blank).
    #[schemars(length(min = 1), regex(pattern = r"\S"))]
    pub reason: String,
    /// `readiness` (the default).
    #[serde(default)]
    pub kind: Option<ReadinessKind>,
    /// Only this region (default: every region).
    #[serde(default)]
    pub region: Option<String>,
}

/// A live drill.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LiveDrillBody {
    /// Why (recorded in the history; not blank).
    #[schemars(length(min = 1), regex(pattern = r"\S"))]
    pub reason: String,
    /// `live`.
    pub kind: LiveKind,
    /// The region to fail over and back.
    pub region: String,
    /// How long the region stays out once drained (default 30, at most 3600).
    #[serde(default, deserialize_with = "whole_number")]
    #[schemars(range(max = 3600))]
    pub hold_seconds: Option<u32>,
}

/// A non-negative whole number, also when written `30.0` (JSON does not tell the two apart).
fn whole_number<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    use serde::de::Error;
    let Some(n) = Option::<serde_json::Number>::deserialize(d)? else {
        return Ok(None);
    };
    let whole = match (n.as_u64(), n.as_f64()) {
        (Some(u), _) => Some(u),
        (None, Some(f)) if f >= 0.0 && f.fract() == 0.0 && f <= f64::from(u32::MAX) => {
            Some(f as u64)
        }
        _ => None,
    };
    whole
        .and_then(|u| u32::try_from(u).ok())
        .map(Some)
        .ok_or_else(|| D::Error::custom(format!("{n} is not a whole number of seconds")))
}

/// `POST /v1/drills`: a readiness drill, or a live drill of one region.
pub async fn drill(
    State(state): State<AdminState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    call(&state, &headers, "drill", |actor| {
        let body: serde_json::Value = parse(body)?;
        // The kind picks the shape, so that a mistake is named precisely.
        let live = body.get("kind").and_then(|k| k.as_str()) == Some("live");
        let shaped = |e: serde_json::Error| ApiError {
            status: StatusCode::BAD_REQUEST,
            code: "bad_request",
            message: e.to_string(),
        };
        if live {
            let body: LiveDrillBody = serde_json::from_value(body).map_err(shaped)?;
            let hold = body.hold_seconds.unwrap_or(30);
            if hold > MAX_HOLD_SECONDS {
                return Err(ApiError {
                    status: StatusCode::BAD_REQUEST,
                    code: "bad_request",
                    message: format!("hold_seconds is at most {MAX_HOLD_SECONDS}"),
                });
            }
            Ok(Request::LiveDrill {
                actor,
                reason: body.reason,
                region: body.region,
                hold_ms: u64::from(hold) * 1000,
            })
        } else {
            let body: ReadinessDrillBody = serde_json::from_value(body).map_err(shaped)?;
            Ok(Request::Drill {
                actor,
                reason: body.reason,
                region: body.region,
            })
        }
    })
    .await
}

/// `POST /v1/regions/{name}/drain`.
pub async fn drain(
    State(state): State<AdminState>,
    Path(region): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    call(&state, &headers, "drain", |actor| {
        let body: RegionBody = parse(body)?;
        Ok(Request::Change {
            operation: Operation::Drain { region },
            actor,
            reason: body.reason,
            dry_run: body.dry_run,
        })
    })
    .await
}

/// `POST /v1/regions/{name}/restore`.
pub async fn restore(
    State(state): State<AdminState>,
    Path(region): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    call(&state, &headers, "restore", |actor| {
        let body: RegionBody = parse(body)?;
        Ok(Request::Change {
            operation: Operation::Restore { region },
            actor,
            reason: body.reason,
            dry_run: body.dry_run,
        })
    })
    .await
}

/// `POST /v1/failover`.
pub async fn failover(
    State(state): State<AdminState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    call(&state, &headers, "failover", |actor| {
        let body: FailoverBody = parse(body)?;
        Ok(Request::Change {
            operation: Operation::Failover {
                from: body.from,
                to: body.to,
                allow_data_loss: body.allow_data_loss,
            },
            actor,
            reason: body.reason,
            dry_run: body.dry_run,
        })
    })
    .await
}

/// `POST /v1/switchover`.
pub async fn switchover(
    State(state): State<AdminState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    call(&state, &headers, "switchover", |actor| {
        let body: SwitchoverBody = parse(body)?;
        Ok(Request::Change {
            operation: Operation::Switchover { to: body.to },
            actor,
            reason: body.reason,
            dry_run: body.dry_run,
        })
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rate_limit_allows_a_burst_then_one_call_per_refill() {
        let limiter = RateLimiter::default();
        let start = Instant::now();
        for _ in 0..10 {
            assert!(limiter.take("alice", start).is_ok());
        }
        let wait = limiter.take("alice", start).unwrap_err();
        assert!(wait <= RateLimiter::REFILL && wait > Duration::ZERO);
        assert!(limiter.take("bob", start).is_ok(), "per actor");
        assert!(limiter.take("alice", start + RateLimiter::REFILL).is_ok());
        assert!(limiter.take("alice", start + RateLimiter::REFILL).is_err());
    }

    #[test]
    fn tokens_name_their_holder() {
        let tokens = Tokens::new(vec![
            ("alice".into(), Secret::new("a-token".into())),
            ("bob".into(), Secret::new("b-token".into())),
        ]);
        let headers = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::AUTHORIZATION, v.parse().unwrap());
            h
        };
        assert_eq!(tokens.actor(&headers("Bearer b-token")).unwrap(), "bob");
        assert_eq!(
            tokens.actor(&headers("Bearer nope")).unwrap_err().status,
            StatusCode::FORBIDDEN
        );
        assert_eq!(
            tokens.actor(&HeaderMap::new()).unwrap_err().status,
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            tokens.actor(&headers("Basic b-token")).unwrap_err().code,
            "unauthorized"
        );
    }
}
