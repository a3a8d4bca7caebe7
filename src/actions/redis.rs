//! Redis actions: fence a master and lift the fence, promote a replica, point members at a
//! new master.
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

impl Member {
    /// The member behind a Redis target of a replication shard (cluster nodes are not
    /// fenced or promoted this way).
    pub fn of(target: &crate::topology::Target) -> Option<Member> {
        match &target.spec {
            crate::topology::TargetSpec::Redis {
                mode: crate::config::RedisMode::Replication,
                member,
                password,
                ca_file,
                ..
            } => Some(Member {
                name: member.name.clone(),
                url: member.url.clone(),
                password: password.clone(),
                ca_file: ca_file.clone(),
            }),
            _ => None,
        }
    }
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

/// Host and port of a member, as its URL says.
pub fn address(member: &Member) -> Result<(String, u16), ActionError> {
    let url = url::Url::parse(&member.url).map_err(|e| ActionError::Connect(e.to_string()))?;
    let host = url
        .host_str()
        .ok_or_else(|| ActionError::Connect(format!("no host in {}", member.name)))?
        .to_owned();
    Ok((host, url.port().unwrap_or(6379)))
}

async fn info_replication(member: &Member, timeout: Duration) -> Result<String, ActionError> {
    match command(member, timeout, &["INFO", "replication"]).await? {
        redis::Value::BulkString(b) => Ok(String::from_utf8_lossy(&b).into_owned()),
        redis::Value::VerbatimString { text, .. } => Ok(text),
        other => Ok(format!("{other:?}")),
    }
}

fn field<'a>(info: &'a str, name: &str) -> Option<&'a str> {
    info.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
        .map(str::trim)
}

/// Makes a replica the master (`REPLICAOF NO ONE`), checks its role and that a write is
/// taken. Idempotent: a member already master is only checked. Returns its offset.
pub async fn promote(member: &Member, timeout: Duration) -> Result<u64, ActionError> {
    super::bounded(timeout, async {
        let info = info_replication(member, timeout).await?;
        if field(&info, "role") != Some("master") {
            command(member, timeout, &["REPLICAOF", "NO", "ONE"]).await?;
        }
        let info = info_replication(member, timeout).await?;
        if field(&info, "role") != Some("master") {
            return Err(ActionError::Step {
                step: "check role",
                message: format!("{} is still not master after REPLICAOF NO ONE", member.name),
            });
        }
        // A fence left behind (it was a fenced master once) would refuse every write.
        let setting = command(member, timeout, &["CONFIG", "GET", "min-replicas-to-write"]).await?;
        if config_value(&setting).is_some_and(|v| v >= FENCE_MIN_REPLICAS) {
            command(
                member,
                timeout,
                &["CONFIG", "SET", "min-replicas-to-write", "0"],
            )
            .await?;
        }
        command(
            member,
            timeout,
            &["SET", "failoverd:write-check", "1", "PX", "60000"],
        )
        .await
        .map_err(|e| ActionError::Step {
            step: "accept writes",
            message: e.to_string(),
        })?;
        Ok(field(&info, "master_repl_offset")
            .and_then(|o| o.parse().ok())
            .unwrap_or(0))
    })
    .await
}

/// Points a member at `master` (`REPLICAOF host port`) and waits until its link is up.
/// Idempotent: `REPLICAOF` with the same master does nothing.
pub async fn follow(
    member: &Member,
    master: &Member,
    timeout: Duration,
) -> Result<(), ActionError> {
    let (host, port) = address(master)?;
    let port_text = port.to_string();
    super::bounded(timeout, async {
        command(member, timeout, &["REPLICAOF", &host, &port_text]).await?;
        // Bounded by the timeout: a link that never comes up is a timeout.
        loop {
            let info = info_replication(member, timeout).await?;
            if field(&info, "role") == Some("slave")
                && field(&info, "master_port") == Some(port_text.as_str())
                && field(&info, "master_link_status") == Some("up")
            {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
}
