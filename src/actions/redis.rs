//! Redis actions: fence a master and lift the fence, promote a replica, point members at a
//! new master.
//!
//! The fence sets `min-replicas-to-write` far above any replica count, so every write is
//! answered at once with `NOREPLICAS` (clients fail fast instead of hanging, as they would
//! under `CLIENT PAUSE`). Unfencing restores the value the master had before.

use crate::datastore::redis::RedisRole;
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
    /// A Redis Cluster node (else a member of a replication shard).
    pub cluster: bool,
}

impl Member {
    /// The member behind a Redis target.
    pub fn of(target: &crate::topology::Target) -> Option<Member> {
        match &target.spec {
            crate::topology::TargetSpec::Redis {
                mode,
                member,
                password,
                ca_file,
                ..
            } => Some(Member {
                name: member.name.clone(),
                url: member.url.clone(),
                password: password.clone(),
                ca_file: ca_file.clone(),
                cluster: *mode == crate::config::RedisMode::Cluster,
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
    let mut connection = crate::datastore::redis::connect(
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
    // The check is off while min-replicas-max-lag is 0; make sure it is on (an operator's
    // value, or the one failoverd keeps, stays).
    let lag = command(member, timeout, &["CONFIG", "GET", "min-replicas-max-lag"]).await?;
    if config_value(&lag).is_none_or(|l| l == 0) {
        command(
            member,
            timeout,
            &["CONFIG", "SET", "min-replicas-max-lag", "10"],
        )
        .await?;
    }
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

/// Sets the master's `min-replicas-max-lag` and `min-replicas-to-write`, unless it is fenced
/// (its `min-replicas-to-write` out of reach): a fence is lifted only by a failover's own
/// steps.
pub async fn set_min_replicas(
    member: &Member,
    to_write: u32,
    max_lag_s: u32,
    timeout: Duration,
) -> Result<(), ActionError> {
    super::bounded(timeout, async {
        let now = command(member, timeout, &["CONFIG", "GET", "min-replicas-to-write"]).await?;
        if config_value(&now).is_some_and(|v| v >= FENCE_MIN_REPLICAS) {
            return Err(ActionError::Step {
                step: "set min-replicas-to-write",
                message: format!("{} is fenced: left as it is", member.name),
            });
        }
        command(
            member,
            timeout,
            &[
                "CONFIG",
                "SET",
                "min-replicas-max-lag",
                &max_lag_s.to_string(),
                "min-replicas-to-write",
                &to_write.to_string(),
            ],
        )
        .await
        .map(|_| ())
    })
    .await
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

/// What [`promote`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Promoted {
    /// Its replication offset.
    pub offset: u64,
    /// The write check got `NOREPLICAS`: its `min-replicas-to-write` needs a replica to
    /// follow it before it takes writes.
    pub waits_for_replicas: bool,
}

/// Makes a replica the master (`REPLICAOF NO ONE`), checks its role and that a write is
/// taken (or refused only for want of replicas). Idempotent: a member already master is only
/// checked.
pub async fn promote(member: &Member, timeout: Duration) -> Result<Promoted, ActionError> {
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
        clear_fence(member, timeout).await?;
        let check = command(
            member,
            timeout,
            &["SET", "failoverd:write-check", "1", "PX", "60000"],
        )
        .await;
        let waits_for_replicas = match check {
            Ok(_) => false,
            // min-replicas-to-write as configured, and no replica follows it yet (they are
            // repointed after this step): it takes writes once one does.
            Err(e) if e.to_string().contains("NOREPLICAS") => true,
            Err(e) => {
                return Err(ActionError::Step {
                    step: "accept writes",
                    message: e.to_string(),
                })
            }
        };
        Ok(Promoted {
            offset: field(&info, "master_repl_offset")
                .and_then(|o| o.parse().ok())
                .unwrap_or(0),
            waits_for_replicas,
        })
    })
    .await
}

/// For a planned switchover: reads the fenced `old_master`'s replication offset and waits
/// until `candidate` has processed that far, so promoting it loses nothing. A candidate that
/// is master already (a resumed step) is not waited for. Returns the offset.
pub async fn catch_up(
    candidate: &Member,
    old_master: &Member,
    timeout: Duration,
) -> Result<Option<u64>, ActionError> {
    super::bounded(timeout, async {
        let offset = |info: &str, name: &str| field(info, name).and_then(|o| o.parse::<u64>().ok());
        let info = info_replication(candidate, timeout).await?;
        if field(&info, "role") == Some("master") {
            return Ok(None);
        }
        let master = info_replication(old_master, timeout).await?;
        let wrote = offset(&master, "master_repl_offset").ok_or(ActionError::Step {
            step: "read the old master's offset",
            message: "no master_repl_offset".into(),
        })?;
        // Bounded by the timeout.
        loop {
            let info = info_replication(candidate, timeout).await?;
            if offset(&info, "slave_repl_offset").is_some_and(|o| o >= wrote) {
                return Ok(Some(wrote));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
}

/// The member's replication role, as `INFO replication` gives it (`master`, or `slave` for a
/// replica).
pub async fn role(member: &Member, timeout: Duration) -> Result<RedisRole, ActionError> {
    super::bounded(timeout, async {
        let info = info_replication(member, timeout).await?;
        match field(&info, "role") {
            Some("master") => Ok(RedisRole::Master),
            Some("slave" | "replica") => Ok(RedisRole::Replica),
            other => Err(ActionError::Step {
                step: "read the replication role",
                message: format!("INFO replication has role {other:?}"),
            }),
        }
    })
    .await
}

/// Lifts a fence left behind (the member was a fenced master once): it would refuse every
/// write.
async fn clear_fence(member: &Member, timeout: Duration) -> Result<(), ActionError> {
    let setting = command(member, timeout, &["CONFIG", "GET", "min-replicas-to-write"]).await?;
    if config_value(&setting).is_some_and(|v| v >= FENCE_MIN_REPLICAS) {
        command(
            member,
            timeout,
            &["CONFIG", "SET", "min-replicas-to-write", "0"],
        )
        .await?;
    }
    Ok(())
}

async fn text(member: &Member, timeout: Duration, args: &[&str]) -> Result<String, ActionError> {
    match command(member, timeout, args).await? {
        redis::Value::BulkString(b) => Ok(String::from_utf8_lossy(&b).into_owned()),
        redis::Value::VerbatimString { text, .. } => Ok(text),
        redis::Value::SimpleString(s) => Ok(s),
        other => Ok(format!("{other:?}")),
    }
}

/// The member's view of its cluster.
async fn cluster_view(
    member: &Member,
    timeout: Duration,
) -> Result<crate::datastore::redis::ClusterFacts, ActionError> {
    let info = text(member, timeout, &["CLUSTER", "INFO"]).await?;
    let nodes = text(member, timeout, &["CLUSTER", "NODES"]).await?;
    crate::datastore::redis::parse_cluster(&info, &nodes).map_err(|e| ActionError::Step {
        step: "read the cluster view",
        message: e.to_string(),
    })
}

/// Makes a Redis Cluster replica the master of its master's `slots` with `CLUSTER FAILOVER
/// TAKEOVER` (no vote of the other masters needed) or, `planned`, with `CLUSTER FAILOVER`
/// (the master stops writes and the replica catches up first: nothing is lost), then waits until its own view shows it
/// master of those slots with `cluster_state:ok`, and writes a key that hashes into them.
/// Idempotent: a member already serving the slots is only checked. Returns the cluster's
/// current epoch.
pub async fn takeover(
    member: &Member,
    slots: &[String],
    planned: bool,
    timeout: Duration,
) -> Result<u64, ActionError> {
    let serves = |view: &crate::datastore::redis::ClusterFacts| {
        view.nodes.iter().any(|n| {
            n.flags.iter().any(|f| f == "myself")
                && n.flags.iter().any(|f| f == "master")
                && slots.iter().all(|s| n.slots.contains(s))
        })
    };
    let key = key_in_slots(slots).ok_or_else(|| ActionError::Step {
        step: "pick a key",
        message: format!("no slot in {slots:?}"),
    })?;
    super::bounded(timeout, async {
        if !serves(&cluster_view(member, timeout).await?) {
            if planned {
                command(member, timeout, &["CLUSTER", "FAILOVER"]).await?;
            } else {
                command(member, timeout, &["CLUSTER", "FAILOVER", "TAKEOVER"]).await?;
            }
        }
        // Bounded by the timeout: a takeover that never shows is a timeout.
        let view = loop {
            let view = cluster_view(member, timeout).await?;
            if serves(&view) && view.state == "ok" {
                break view;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        clear_fence(member, timeout).await?;
        command(member, timeout, &["SET", &key, "1", "PX", "60000"])
            .await
            .map_err(|e| ActionError::Step {
                step: "accept writes",
                message: e.to_string(),
            })?;
        Ok(view.current_epoch)
    })
    .await
}

/// The Redis Cluster hash slot of a key (CRC16-CCITT/XMODEM of the key, or of its `{tag}`,
/// modulo 16384).
pub fn key_slot(key: &str) -> u16 {
    let bytes = key.as_bytes();
    let hashed = match key.find('{') {
        Some(open) => match key[open + 1..].find('}') {
            Some(len) if len > 0 => &bytes[open + 1..open + 1 + len],
            _ => bytes,
        },
        None => bytes,
    };
    let mut crc: u16 = 0;
    for byte in hashed {
        crc ^= u16::from(*byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc % 16384
}

/// A write-check key that hashes into the first slot of `slots` (`0-5460` or `42` entries).
pub fn key_in_slots(slots: &[String]) -> Option<String> {
    let first = slots.iter().find_map(|range| {
        let (low, high) = range.split_once('-').unwrap_or((range, range));
        let low: u16 = low.parse().ok()?;
        let high: u16 = high.parse().ok()?;
        (low <= high).then_some((low, high))
    })?;
    (0u32..1_000_000).find_map(|n| {
        let key = format!("failoverd:write-check:{{{n}}}");
        let slot = key_slot(&key);
        (first.0..=first.1).contains(&slot).then_some(key)
    })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_slots_match_redis() {
        // Values from `CLUSTER KEYSLOT`.
        assert_eq!(key_slot("foo"), 12182);
        assert_eq!(key_slot("123456789"), 12739);
        assert_eq!(key_slot("{user1000}.following"), key_slot("user1000"));
        // An empty tag hashes the whole key.
        assert_ne!(key_slot("{}foo"), key_slot("foo"));
    }

    #[test]
    fn a_write_check_key_lands_in_the_slots() {
        for slots in [
            &["0-5460"][..],
            &["10923-16383"],
            &["42"],
            &["5461-5461", "7000-7001"],
        ] {
            let slots: Vec<String> = slots.iter().map(|s| (*s).to_owned()).collect();
            let key = key_in_slots(&slots).expect("a key");
            let slot = key_slot(&key);
            let (low, high) = slots[0].split_once('-').unwrap_or((&slots[0], &slots[0]));
            assert!(
                (low.parse().unwrap()..=high.parse().unwrap()).contains(&slot),
                "{key} hashes to {slot}, outside {slots:?}"
            );
        }
        assert_eq!(key_in_slots(&["[5461->-abc]".to_owned()]), None);
    }
}
