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
use redis::{AsyncConnectionConfig, IntoConnectionInfo};
use serde::Serialize;

use super::http::error_chain;
use super::{Facts, Observation, Probe, ProbeError};
use crate::config::{RedisMode, SecretRef};

/// Role of a Redis server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum RedisRole {
    /// Accepts writes.
    Master,
    /// Replicates from a master.
    Replica,
}

/// Facts of a successful Redis check.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
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
}

/// A replica as its master sees it.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
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

/// A cluster node's view of the cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct ClusterFacts {
    /// `ok` or `fail`.
    pub state: String,
    /// Slots served without errors.
    pub slots_ok: u32,
    /// Slots in `fail` state.
    pub slots_fail: u32,
    /// Slots in `pfail` state.
    pub slots_pfail: u32,
    /// Nodes known.
    pub known_nodes: u32,
    /// Masters serving slots.
    pub size: u32,
    /// Cluster epoch.
    pub current_epoch: u64,
    /// Every node as listed by `CLUSTER NODES`.
    pub nodes: Vec<ClusterNode>,
}

/// One line of `CLUSTER NODES`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct ClusterNode {
    /// Node id.
    pub id: String,
    /// `ip:port` (without the bus port).
    pub addr: String,
    /// Flags: `myself`, `master`, `slave`, `fail`, `fail?`, ...
    pub flags: Vec<String>,
    /// Id of its master (replicas).
    pub master_id: Option<String>,
    /// `connected` or `disconnected`.
    pub link_state: String,
    /// Slot ranges served, e.g. `0-5460`.
    pub slots: Vec<String>,
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
    }
}

/// Opens a connection with the password from its secret and, for TLS, the CA bundle (both
/// read now, so rotated files are used). Shared by the probe and the actions.
pub async fn connect(
    mut info: redis::ConnectionInfo,
    password: Option<&SecretRef>,
    ca_file: Option<&std::path::Path>,
    timeout: Duration,
) -> Result<MultiplexedConnection, ProbeError> {
    if let Some(secret) = password {
        let settings = info
            .redis_settings()
            .clone()
            .set_password(secret.load()?.expose());
        info = info.set_redis_settings(settings);
    }
    let client = match ca_file {
        None => redis::Client::open(info),
        Some(path) => {
            let pem = std::fs::read(path).map_err(|e| {
                ProbeError::Connect(format!("cannot read ca_file {}: {e}", path.display()))
            })?;
            redis::Client::build_with_tls(
                info,
                redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(pem),
                },
            )
        }
    }
    .map_err(|e| ProbeError::Connect(error_chain(&e)))?;
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(timeout))
        .set_response_timeout(Some(timeout));
    client
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .map_err(|e| ProbeError::Connect(error_chain(&e)))
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
        let (facts, pong) = match self.mode {
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
        *self.connection.lock().unwrap_or_else(|p| p.into_inner()) = Some(connection);
        Ok(Observation {
            latency: start.elapsed(),
            facts: Facts::Redis(facts),
        })
    }
}

/// `key:value` lines of an INFO section.
fn info_fields(info: &str) -> impl Iterator<Item = (&str, &str)> {
    info.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.trim_end_matches('\r').split_once(':'))
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

/// A node's view of its cluster from its `CLUSTER INFO` and `CLUSTER NODES` answers.
pub fn parse_cluster(info: &str, nodes: &str) -> Result<ClusterFacts, ProbeError> {
    let mut facts = ClusterFacts {
        state: String::new(),
        slots_ok: 0,
        slots_fail: 0,
        slots_pfail: 0,
        known_nodes: 0,
        size: 0,
        current_epoch: 0,
        nodes: Vec::new(),
    };
    for (key, value) in info_fields(info) {
        match key {
            "cluster_state" => facts.state = value.to_owned(),
            "cluster_slots_ok" => facts.slots_ok = value.parse().unwrap_or(0),
            "cluster_slots_fail" => facts.slots_fail = value.parse().unwrap_or(0),
            "cluster_slots_pfail" => facts.slots_pfail = value.parse().unwrap_or(0),
            "cluster_known_nodes" => facts.known_nodes = value.parse().unwrap_or(0),
            "cluster_size" => facts.size = value.parse().unwrap_or(0),
            "cluster_current_epoch" => facts.current_epoch = value.parse().unwrap_or(0),
            _ => {}
        }
    }
    if facts.state.is_empty() {
        return Err(ProbeError::Protocol(
            "CLUSTER INFO has no cluster_state (is cluster mode enabled?)".into(),
        ));
    }
    facts.nodes = nodes
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(parse_cluster_node)
        .collect::<Result<_, _>>()?;
    Ok(facts)
}

/// `<id> <ip:port@cport[,hostname]> <flags> <master> <ping-sent> <pong-recv> <epoch> <link> <slot>...`
fn parse_cluster_node(line: &str) -> Result<ClusterNode, ProbeError> {
    let fields: Vec<&str> = line.split_whitespace().collect();
    if fields.len() < 8 {
        return Err(ProbeError::Protocol(format!(
            "CLUSTER NODES line has {} fields: {line:?}",
            fields.len()
        )));
    }
    let addr = fields[1]
        .split(['@', ','])
        .next()
        .unwrap_or_default()
        .to_owned();
    Ok(ClusterNode {
        id: fields[0].to_owned(),
        addr,
        flags: fields[2].split(',').map(str::to_owned).collect(),
        master_id: (fields[3] != "-").then(|| fields[3].to_owned()),
        link_state: fields[7].to_owned(),
        slots: fields[8..].iter().map(|s| (*s).to_owned()).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn parses_cluster_nodes_lines() {
        let nodes = "\
07c37dfeb235213a872192d90877d0cd55635b91 127.0.0.1:30004@31004,host-a slave e7d1eecce10fd6bb5eb35b9f99a514335d9ba9ca 0 1426238317239 4 connected
67ed2db8d677e59ec4a4cefb06858cf2a1a89fa1 127.0.0.1:30002@31002 master,fail - 0 1426238316232 2 disconnected 5461-10922
e7d1eecce10fd6bb5eb35b9f99a514335d9ba9ca 127.0.0.1:30001@31001 myself,master - 0 0 1 connected 0-5460 10923
";
        let info =
            "cluster_state:fail\r\ncluster_slots_assigned:16384\r\ncluster_slots_ok:10923\r\n\
            cluster_slots_pfail:0\r\ncluster_slots_fail:5461\r\ncluster_known_nodes:3\r\n\
            cluster_size:2\r\ncluster_current_epoch:4\r\n";
        let c = parse_cluster(info, nodes).unwrap();
        assert_eq!(c.state, "fail");
        assert_eq!(c.slots_fail, 5461);
        assert_eq!(c.current_epoch, 4);
        assert_eq!(c.nodes.len(), 3);
        assert_eq!(c.nodes[0].addr, "127.0.0.1:30004");
        assert_eq!(
            c.nodes[0].master_id.as_deref(),
            Some("e7d1eecce10fd6bb5eb35b9f99a514335d9ba9ca")
        );
        assert_eq!(c.nodes[1].flags, vec!["master", "fail"]);
        assert_eq!(c.nodes[1].link_state, "disconnected");
        assert_eq!(c.nodes[2].slots, vec!["0-5460", "10923"]);
        assert!(parse_cluster("cluster_enabled:0\r\n", "").is_err());
    }
}
