//! Redis: roles, connections (AUTH from the secret, TLS from a `rediss://` URL) and the
//! cluster view a node gives of its Redis Cluster.

use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::AsyncConnectionConfig;
use serde::Serialize;

use super::DatastoreError;
use crate::config::SecretRef;
use crate::util::error_chain;

/// Role of a Redis server.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum RedisRole {
    /// Accepts writes.
    Master,
    /// Replicates from a master.
    Replica,
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

/// Opens a connection with the password from its secret and, for TLS, the CA bundle (both
/// read now, so rotated files are used). Shared by the probe and the actions.
pub async fn connect(
    mut info: redis::ConnectionInfo,
    password: Option<&SecretRef>,
    ca_file: Option<&std::path::Path>,
    timeout: Duration,
) -> Result<MultiplexedConnection, DatastoreError> {
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
                DatastoreError::Connect(format!("cannot read ca_file {}: {e}", path.display()))
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
    .map_err(|e| DatastoreError::Connect(error_chain(&e)))?;
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(timeout))
        .set_response_timeout(Some(timeout));
    client
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .map_err(|e| DatastoreError::Connect(error_chain(&e)))
}

/// `key:value` lines of an INFO section.
pub fn info_fields(info: &str) -> impl Iterator<Item = (&str, &str)> {
    info.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.trim_end_matches('\r').split_once(':'))
}

/// A node's view of its cluster from its `CLUSTER INFO` and `CLUSTER NODES` answers.
pub fn parse_cluster(info: &str, nodes: &str) -> Result<ClusterFacts, DatastoreError> {
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
        return Err(DatastoreError::Protocol(
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
fn parse_cluster_node(line: &str) -> Result<ClusterNode, DatastoreError> {
    let fields: Vec<&str> = line.split_whitespace().collect();
    if fields.len() < 8 {
        return Err(DatastoreError::Protocol(format!(
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
