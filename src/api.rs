//! The admin API's typed messages: what an operator asks ([`Request`], [`Operation`]), what
//! the leader answers ([`Reply`]) and how a refusal reads ([`OpError`], [`ApiError`]).
//!
//! Shared by the admin HTTP server, the peer plane that forwards requests to the leader, and
//! the CLI; it holds types only, no handlers.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};

/// An API error: HTTP status, a stable machine-readable code and a human message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable code, e.g. `not_found`.
    pub code: &'static str,
    /// What went wrong, for people.
    pub message: String,
}

/// The body of every error answer.
#[derive(Serialize, Deserialize, schemars::JsonSchema)]
pub struct ErrorBody {
    /// Stable, machine-readable: scripts branch on it.
    pub code: String,
    /// What went wrong, for people.
    pub message: String,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            code: self.code.to_owned(),
            message: self.message,
        };
        (self.status, Json(body)).into_response()
    }
}

/// An operator's request as it travels to the leader.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    /// Maintenance mode: probes go on, nothing is done automatically.
    Pause {
        /// Who asks.
        actor: String,
        /// Why.
        reason: String,
    },
    /// Back to automatic failover.
    Resume {
        /// Who asks.
        actor: String,
        /// Why.
        reason: String,
    },
    /// A readiness drill: checks every precondition of failing over each region (or one).
    Drill {
        /// Who asks.
        actor: String,
        /// Why.
        reason: String,
        /// Only this region.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        region: Option<String>,
    },
    /// A live drill: drain `region` for real, hold it out, restore it, timing each milestone.
    LiveDrill {
        /// Who asks.
        actor: String,
        /// Why.
        reason: String,
        /// The region.
        region: String,
        /// How long the region stays out once drained, in milliseconds.
        hold_ms: u64,
    },
    /// A drain, restore or forced failover.
    Change {
        /// What.
        operation: Operation,
        /// Who asks.
        actor: String,
        /// Why.
        reason: String,
        /// Only plan it: nothing is committed.
        dry_run: bool,
    },
}

impl Request {
    /// Why, in the asker's words.
    pub fn reason(&self) -> &str {
        match self {
            Request::Pause { reason, .. }
            | Request::Resume { reason, .. }
            | Request::Drill { reason, .. }
            | Request::LiveDrill { reason, .. }
            | Request::Change { reason, .. } => reason,
        }
    }
}

/// What the leader did with a [`Request`].
// The CLI shows neither `dry_run` nor `mode`: they default when absent (see `crate::admin`).
#[derive(
    Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, schemars::JsonSchema,
)]
pub struct Reply {
    /// The failover committed (its epoch is its id), if one was.
    pub epoch: Option<u64>,
    /// Whether this was a dry run.
    #[serde(default)]
    #[schemars(!default)]
    pub dry_run: bool,
    /// `active` or `paused` after the request.
    #[serde(default)]
    #[schemars(!default)]
    pub mode: String,
    /// The decision, with its planned steps (also for a dry run).
    pub decision: Option<crate::desired::Decision>,
    /// A readiness drill's findings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drill: Option<crate::desired::DrillReport>,
    /// What happened, for people.
    pub message: String,
}

/// An operator's change of traffic or primaries.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "action", rename_all = "snake_case", deny_unknown_fields)]
pub enum Operation {
    /// Take `region` out of DNS, moving its primaries out with no data loss.
    Drain {
        /// The region.
        region: String,
    },
    /// Put a drained region back into DNS.
    Restore {
        /// The region.
        region: String,
    },
    /// Fail `from` over, forced.
    Failover {
        /// The region to leave.
        from: String,
        /// Where the Postgres candidate must be, if anywhere in particular.
        to: Option<String>,
        /// Promote a candidate further behind than `postgres.max_lag_on_failover`.
        allow_data_loss: bool,
    },
    /// Move a Postgres group's primary to the member `to`, planned (no data lost), without
    /// touching the regions' weights.
    Switchover {
        /// The member: its name, or its id (`postgres/<cluster>/<name>`).
        to: String,
    },
}

impl Operation {
    /// `drain`, `restore`, `failover` or `switchover`.
    pub fn action(&self) -> &'static str {
        match self {
            Operation::Drain { .. } => "drain",
            Operation::Restore { .. } => "restore",
            Operation::Failover { .. } => "failover",
            Operation::Switchover { .. } => "switchover",
        }
    }

    /// What it concerns: the region, or the member a switchover moves the primary to.
    pub fn subject(&self) -> &str {
        match self {
            Operation::Drain { region } | Operation::Restore { region } => region,
            Operation::Failover { from, .. } => from,
            Operation::Switchover { to } => to,
        }
    }
}

/// What kind of "no" an operation got; the admin API maps it to an HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The request itself is wrong (400).
    BadInput,
    /// It names a region that does not exist (404).
    NotFound,
    /// The state forbids it now: a failover runs, automation is paused, nothing to do (409).
    Conflict,
    /// A guard refused it (422).
    Refused,
    /// No leader or quorum to carry it out (503).
    Unavailable,
}

/// Why an operation was not carried out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct OpError {
    /// The kind.
    pub kind: ErrorKind,
    /// A stable machine-readable code.
    pub code: &'static str,
    /// What to do about it, for people.
    pub message: String,
}

impl OpError {
    /// An error of `kind` with `code`.
    pub fn new(kind: ErrorKind, code: &'static str, message: impl Into<String>) -> OpError {
        OpError {
            kind,
            code,
            message: message.into(),
        }
    }
}
