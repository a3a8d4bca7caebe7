//! Actions: the only code that changes the world: fences, promotions, DNS weights.
//!
//! Every action is idempotent — running it twice leaves the same state — and bounded by a
//! timeout, so a caller can retry a failed one at the next tick without harm.

pub mod postgres;
pub mod redis;
pub mod route53;

/// Why an action failed. Always worth retrying: the next tick runs it again.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ActionError {
    /// The server could not be reached.
    #[error("cannot connect: {0}")]
    Connect(String),
    /// A statement or command failed.
    #[error("{step} failed: {message}")]
    Step {
        /// What was being done.
        step: &'static str,
        /// The server's or the program's message.
        message: String,
    },
    /// The action did not finish in time.
    #[error("no answer within {}", humantime::format_duration(*.0))]
    Timeout(std::time::Duration),
    /// What it needs has not happened yet: try again soon; no failure.
    #[error("{0}")]
    NotYet(NotYet),
}

/// What an action waits for.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotYet {
    /// The named primary is still in recovery.
    #[error("{0} is not promoted yet")]
    Promotion(String),
    /// Replicas still stream from the member.
    #[error("{count} replica(s) still stream from {member}: they are repointed first")]
    Replicas {
        /// The member.
        member: String,
        /// How many.
        count: u64,
    },
    /// A replica that does not stream is not on an older timeline than its primary: there is
    /// nothing to rewind, and repointing it is the healer's work.
    #[error("{member} is not left on an older timeline: {why}")]
    NotStranded {
        /// The replica.
        member: String,
        /// What was seen.
        why: String,
    },
}

/// Runs an action under its timeout: an action that does not finish in time is a
/// [`ActionError::Timeout`], and whatever it held (a connection) is dropped with it.
pub(crate) async fn bounded<T>(
    timeout: std::time::Duration,
    action: impl std::future::Future<Output = Result<T, ActionError>>,
) -> Result<T, ActionError> {
    tokio::time::timeout(timeout, action)
        .await
        .unwrap_or(Err(ActionError::Timeout(timeout)))
}
