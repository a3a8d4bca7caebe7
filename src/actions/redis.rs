//! Fencing a Redis master: make it refuse writes while its agent is cut off, and undo it.
//!
//! The fence sets `min-replicas-to-write` far above any replica count, so every write is
//! answered at once with `NOREPLICAS` (clients fail fast instead of hanging, as they would
//! under `CLIENT PAUSE`). Unfencing restores the value the master had before.

use std::path::PathBuf;
use std::time::Duration;

use redis::IntoConnectionInfo;

use super::ActionError;
use crate::config::SecretRef;

/// A `min-replicas-to-write` no master can satisfy.
pub const FENCE_MIN_REPLICAS: u32 = 1_000_000;

/// Where to reach one member, with its credentials.
#[derive(Debug, Clone)]
pub struct Member {
    /// Member name.
    pub name: String,
    /// `redis://` or `rediss://` URL without password.
    pub url: String,
    /// Password source.
    pub password: Option<SecretRef>,
    /// CA bundle for TLS.
    pub ca_file: Option<PathBuf>,
}

async fn command(
    member: &Member,
    timeout: Duration,
    args: &[&str],
) -> Result<redis::Value, ActionError> {
    let info = member
        .url
        .as_str()
        .into_connection_info()
        .map_err(|e| ActionError::Connect(e.to_string()))?;
    let mut connection = crate::probe::redis::connect(
        info,
        member.password.as_ref(),
        member.ca_file.as_deref(),
        timeout,
    )
    .await
    .map_err(|e| ActionError::Connect(e.to_string()))?;
    let mut cmd = redis::cmd(args[0]);
    for arg in &args[1..] {
        cmd.arg(*arg);
    }
    cmd.query_async(&mut connection)
        .await
        .map_err(|e| ActionError::Step {
            step: "redis command",
            message: format!("{}: {e}", args.join(" ")),
        })
}

/// Makes the master refuse writes; returns the `min-replicas-to-write` it had, to restore.
pub async fn fence(member: &Member, timeout: Duration) -> Result<u32, ActionError> {
    let before = command(member, timeout, &["CONFIG", "GET", "min-replicas-to-write"]).await?;
    let previous = config_value(&before).unwrap_or(0);
    // A previous fence left the huge value behind (e.g. the agent restarted while fenced):
    // that is not the value to restore.
    let previous = if previous >= FENCE_MIN_REPLICAS {
        0
    } else {
        previous
    };
    // The check is off while min-replicas-max-lag is 0; make sure it is on.
    command(
        member,
        timeout,
        &["CONFIG", "SET", "min-replicas-max-lag", "10"],
    )
    .await?;
    command(
        member,
        timeout,
        &[
            "CONFIG",
            "SET",
            "min-replicas-to-write",
            &FENCE_MIN_REPLICAS.to_string(),
        ],
    )
    .await?;
    Ok(previous)
}

/// Undoes [`fence`], restoring `min-replicas-to-write` to `previous`.
pub async fn unfence(member: &Member, previous: u32, timeout: Duration) -> Result<(), ActionError> {
    command(
        member,
        timeout,
        &[
            "CONFIG",
            "SET",
            "min-replicas-to-write",
            &previous.to_string(),
        ],
    )
    .await
    .map(|_| ())
}

/// The value of a `CONFIG GET` answer (`[name, value]` or a map).
fn config_value(value: &redis::Value) -> Option<u32> {
    let text = |v: &redis::Value| match v {
        redis::Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
        redis::Value::SimpleString(s) => Some(s.clone()),
        _ => None,
    };
    match value {
        redis::Value::Array(items) => items.get(1).and_then(text)?.parse().ok(),
        redis::Value::Map(pairs) => pairs.first().and_then(|(_, v)| text(v))?.parse().ok(),
        _ => None,
    }
}
