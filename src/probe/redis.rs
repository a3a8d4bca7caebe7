//! Redis probe: PING, replication role and offsets, and in cluster mode the cluster's state.
//!
//! One persistent multiplexed connection per member, re-established after any error. All
//! commands go in one pipeline. AUTH comes from the configured secret and TLS from a
//! `rediss://` URL. Each cluster node is probed on its own, not through a cluster client, so
//! the answer is that node's view, which is what its health means.

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;
use redis::IntoConnectionInfo;
use serde::Serialize;

use super::{Facts, Observation, Probe, ProbeError};
use crate::config::{RedisMode, SecretRef};
use crate::datastore::acks::Acks;
use crate::datastore::redis::{connect, info_fields, parse_cluster};
pub use crate::datastore::redis::{ClusterFacts, ClusterNode, RedisRole};
use crate::util::error_chain;

/// Facts of a successful Redis check.
#[derive(Debug, Clone, Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct RedisFacts {
    /// Master or replica.
    pub role: RedisRole,
    /// The master's host (replica).
    pub master_host: Option<String>,
    /// The master's port (replica).
    pub master_port: Option<u16>,
    /// Whether the link to the master is up (replica).
    pub master_link_up: Option<bool>,
    /// Seconds since the link went down (replica, while down).
    pub master_link_down_seconds: Option<i64>,
    /// `master_repl_offset`: the replication stream position this server has.
    pub repl_offset: u64,
    /// Replicas connected to this server.
    pub connected_replicas: u32,
    /// The replicas as this server sees them (master).
    pub replicas: Vec<RedisReplica>,
    /// Cluster state (cluster mode).
    pub cluster: Option<ClusterFacts>,
    /// How many replicas must acknowledge a write (master): `min-replicas-to-write` and
    /// `min-replicas-max-lag`; absent when `CONFIG GET` is not allowed.
    #[serde(default)]
    pub acks: Option<Acks>,
}

/// A replica as its master sees it.
#[derive(Debug, Clone, Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct RedisReplica {
    /// `ip:port`.
    pub addr: String,
    /// `online`, `wait_bgsave`, ...
    pub state: String,
    /// Offset the replica acknowledged.
    pub offset: u64,
    /// Bytes behind the master's offset.
    pub lag_bytes: u64,
}

/// Probe of one Redis server.
pub struct RedisProbe {
    client: redis::Client,
    mode: RedisMode,
    password: Option<SecretRef>,
    ca_file: Option<PathBuf>,
    timeout: Duration,
    connection: Mutex<Option<MultiplexedConnection>>,
}

impl std::fmt::Debug for RedisProbe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisProbe")
            .field(
                "addr",
                &self.client.get_connection_info().addr().to_string(),
            )
            .field("mode", &self.mode)
            .finish_non_exhaustive()
    }
}

impl RedisProbe {
    /// Builds the probe; nothing connects until the first check.
    pub fn new(
        url: &str,
        mode: RedisMode,
        password: Option<SecretRef>,
        ca_file: Option<PathBuf>,
        timeout: Duration,
    ) -> Result<Self, String> {
        let info = url
            .into_connection_info()
            .map_err(|e| format!("bad redis url: {e}"))?;
        let client = redis::Client::open(info).map_err(|e| format!("bad redis url: {e}"))?;
        Ok(RedisProbe {
            client,
            mode,
            password,
            ca_file,
            timeout,
            connection: Mutex::new(None),
        })
    }

    async fn connect(&self) -> Result<MultiplexedConnection, ProbeError> {
        connect(
            self.client.get_connection_info().clone(),
            self.password.as_ref(),
            self.ca_file.as_deref(),
            self.timeout,
        )
        .await
        .map_err(ProbeError::from)
    }
}

impl Probe for RedisProbe {
    async fn check(&self) -> Result<Observation, ProbeError> {
        let start = Instant::now();
        // Taken out so that a probe dropped on timeout drops its connection too.
        let cached = self
            .connection
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        let mut connection = match cached {
            Some(c) => c,
            None => self.connect().await?,
        };
        let request = |e: redis::RedisError| ProbeError::Request(error_chain(&e));
        let mut pipe = redis::pipe();
        pipe.cmd("PING").cmd("INFO").arg("replication");
        let (mut facts, pong) = match self.mode {
            RedisMode::Replication => {
                let (pong, info): (String, String) =
                    pipe.query_async(&mut connection).await.map_err(request)?;
                (parse_replication(&info, None)?, pong)
            }
            RedisMode::Cluster => {
                pipe.cmd("CLUSTER").arg("INFO").cmd("CLUSTER").arg("NODES");
                let (pong, info, cluster_info, nodes): (String, String, String, String) =
                    pipe.query_async(&mut connection).await.map_err(request)?;
                let cluster = parse_cluster(&cluster_info, &nodes)?;
                (parse_replication(&info, Some(cluster))?, pong)
            }
        };
        if pong != "PONG" {
            return Err(ProbeError::Protocol(format!("PING answered {pong:?}")));
        }
        if facts.role == RedisRole::Master {
            // Apart from the pipeline: a server that forbids CONFIG is still healthy.
            let settings: Result<Vec<String>, _> = redis::cmd("CONFIG")
                .arg("GET")
                .arg("min-replicas-*")
                .query_async(&mut connection)
                .await;
            facts.acks = settings
                .ok()
                .and_then(|s| acks_of(&s, facts.connected_replicas));
        }
        *self.connection.lock().unwrap_or_else(|p| p.into_inner()) = Some(connection);
        Ok(Observation {
            latency: start.elapsed(),
            facts: Facts::Redis(facts),
        })
    }
}

/// The acknowledgement rule in a `CONFIG GET min-replicas-*` answer (name, value, ...).
fn acks_of(settings: &[String], connected: u32) -> Option<Acks> {
    let value = |name: &str| -> Option<u32> {
        settings
            .chunks(2)
            .find(|pair| pair[0] == name)
            .and_then(|pair| pair.get(1)?.parse().ok())
    };
    Some(Acks::redis(
        value("min-replicas-to-write")?,
        value("min-replicas-max-lag")?,
        connected,
    ))
}

fn parse_replication(info: &str, cluster: Option<ClusterFacts>) -> Result<RedisFacts, ProbeError> {
    let mut role = None;
    let mut facts = RedisFacts {
        role: RedisRole::Master,
        master_host: None,
        master_port: None,
        master_link_up: None,
        master_link_down_seconds: None,
        repl_offset: 0,
        connected_replicas: 0,
        replicas: Vec::new(),
        cluster,
        acks: None,
    };
    for (key, value) in info_fields(info) {
        match key {
            "role" => {
                role = Some(match value {
                    "master" => RedisRole::Master,
                    "slave" | "replica" => RedisRole::Replica,
                    other => return Err(ProbeError::Protocol(format!("unknown role {other:?}"))),
                })
            }
            "master_host" => facts.master_host = Some(value.to_owned()),
            "master_port" => facts.master_port = value.parse().ok(),
            "master_link_status" => facts.master_link_up = Some(value == "up"),
            "master_link_down_since_seconds" => facts.master_link_down_seconds = value.parse().ok(),
            "master_repl_offset" => facts.repl_offset = value.parse().unwrap_or(0),
            "connected_slaves" => facts.connected_replicas = value.parse().unwrap_or(0),
            k if k.starts_with("slave") && k[5..].chars().all(|c| c.is_ascii_digit()) => {
                // slave0:ip=127.0.0.1,port=6380,state=online,offset=1234,lag=0
                let mut ip = "";
                let mut port = "";
                let mut state = "";
                let mut offset = 0;
                for part in value.split(',') {
                    match part.split_once('=') {
                        Some(("ip", v)) => ip = v,
                        Some(("port", v)) => port = v,
                        Some(("state", v)) => state = v,
                        Some(("offset", v)) => offset = v.parse().unwrap_or(0),
                        _ => {}
                    }
                }
                facts.replicas.push(RedisReplica {
                    addr: format!("{ip}:{port}"),
                    state: state.to_owned(),
                    offset,
                    lag_bytes: 0,
                });
            }
            _ => {}
        }
    }
    facts.role = role.ok_or_else(|| ProbeError::Protocol("INFO has no role".into()))?;
    for replica in &mut facts.replicas {
        replica.lag_bytes = facts.repl_offset.saturating_sub(replica.offset);
    }
    Ok(facts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_acknowledgement_rule_from_config_get() {
        let answer = |pairs: &[&str]| pairs.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let acks = acks_of(
            &answer(&["min-replicas-max-lag", "10", "min-replicas-to-write", "1"]),
            2,
        );
        assert_eq!(acks.map(|a| (a.required, a.connected)), Some((1, 2)));
        assert_eq!(
            acks_of(&answer(&["min-replicas-to-write", "1"]), 2),
            None,
            "a missing setting is no rule"
        );
        assert_eq!(
            acks_of(
                &answer(&["min-replicas-to-write", "x", "min-replicas-max-lag", "1"]),
                0
            ),
            None
        );
    }

    #[test]
    fn parses_a_master_with_two_replicas() {
        let info = "# Replication\r\nrole:master\r\nconnected_slaves:2\r\n\
            slave0:ip=127.0.0.1,port=7001,state=online,offset=1000,lag=0\r\n\
            slave1:ip=127.0.0.1,port=7002,state=wait_bgsave,offset=400,lag=1\r\n\
            master_replid:abc\r\nmaster_repl_offset:1200\r\n";
        let f = parse_replication(info, None).unwrap();
        assert_eq!(f.role, RedisRole::Master);
        assert_eq!(f.connected_replicas, 2);
        assert_eq!(f.repl_offset, 1200);
        assert_eq!(f.replicas.len(), 2);
        assert_eq!(f.replicas[0].addr, "127.0.0.1:7001");
        assert_eq!(f.replicas[0].lag_bytes, 200);
        assert_eq!(f.replicas[1].state, "wait_bgsave");
        assert_eq!(f.replicas[1].lag_bytes, 800);
    }

    #[test]
    fn parses_a_replica_with_its_link_down() {
        let info = "role:slave\r\nmaster_host:10.0.0.1\r\nmaster_port:6379\r\n\
            master_link_status:down\r\nmaster_link_down_since_seconds:17\r\n\
            master_repl_offset:555\r\nconnected_slaves:0\r\n";
        let f = parse_replication(info, None).unwrap();
        assert_eq!(f.role, RedisRole::Replica);
        assert_eq!(f.master_host.as_deref(), Some("10.0.0.1"));
        assert_eq!(f.master_port, Some(6379));
        assert_eq!(f.master_link_up, Some(false));
        assert_eq!(f.master_link_down_seconds, Some(17));
        assert_eq!(f.repl_offset, 555);
    }

    #[test]
    fn rejects_info_without_a_role() {
        assert!(matches!(
            parse_replication("connected_slaves:0\r\n", None),
            Err(ProbeError::Protocol(_))
        ));
    }
}
