//! Redis on loopback: one `redis-server` ([`RedisServer`]), a master with a replica
//! ([`RedisPair`]) and a 6-node Redis Cluster ([`RedisCluster`]) with who replicates whom.
//! Each process is killed when its handle drops; nothing here configures an agent.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::Context;

use super::process::{free_port, free_port_with_bus, kill_child, run, stop_child};
use super::wait::wait_for_async;

/// One redis-server process.
pub struct RedisServer {
    /// Its port on 127.0.0.1.
    pub port: u16,
    /// Password the harness itself uses (`--requirepass`), if any.
    pub password: Option<String>,
    /// Whether the port speaks TLS (`--tls-port`).
    pub tls: bool,
    args: Vec<String>,
    dir: PathBuf,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts `redis-server` with `extra` arguments in `dir` and waits for PING.
    pub async fn start(port: u16, dir: &Path, extra: &[String]) -> anyhow::Result<RedisServer> {
        let mut args = vec![
            "--port".to_owned(),
            port.to_string(),
            "--bind".into(),
            "127.0.0.1".into(),
            "--save".into(),
            String::new(),
            "--appendonly".into(),
            "no".into(),
            "--daemonize".into(),
            "no".into(),
            "--protected-mode".into(),
            "no".into(),
            "--dir".into(),
            dir.display().to_string(),
            "--logfile".into(),
            dir.join(format!("redis-{port}.log")).display().to_string(),
        ];
        // `--tls-port` is re-added below with the server's port; copy everything else.
        let mut rest = extra.iter();
        while let Some(arg) = rest.next() {
            if arg == "--tls-port" {
                rest.next();
            } else {
                args.push(arg.clone());
            }
        }
        let flag = |name: &str| {
            extra
                .iter()
                .position(|a| a == name)
                .and_then(|i| extra.get(i + 1).cloned())
        };
        let tls = flag("--tls-port").is_some();
        if tls {
            // The TLS port replaces the plain one.
            args[1] = "0".into();
            args.extend(["--tls-port".into(), port.to_string()]);
        }
        let mut server = RedisServer {
            port,
            password: flag("--requirepass"),
            tls,
            args,
            dir: dir.to_owned(),
            child: None,
        };
        server.restart().await?;
        Ok(server)
    }

    /// `redis://127.0.0.1:port` (`rediss://` for TLS): the URL for failoverd's config, without
    /// credentials.
    pub fn url(&self) -> String {
        let scheme = if self.tls { "rediss" } else { "redis" };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// The URL the harness connects with: password included, certificate not verified.
    fn harness_url(&self) -> String {
        let auth = self
            .password
            .as_ref()
            .map(|p| format!(":{p}@"))
            .unwrap_or_default();
        let scheme = if self.tls { "rediss" } else { "redis" };
        let insecure = if self.tls { "/#insecure" } else { "" };
        format!("{scheme}://{auth}127.0.0.1:{}{insecure}", self.port)
    }

    /// (Re)starts the process with the same arguments and waits for PING.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        let child = Command::new("redis-server")
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("cannot start redis-server (apt-get install redis-server)")?;
        self.child = Some(child);
        let url = self.harness_url();
        wait_for_async("redis to answer PING", Duration::from_secs(10), || async {
            let client = redis::Client::open(url.as_str()).ok()?;
            let mut c = client.get_multiplexed_async_connection().await.ok()?;
            redis::cmd("PING").query_async::<String>(&mut c).await.ok()
        })
        .await
        .with_context(|| {
            // Why it did not come up (a port taken, a bad argument): the end of its log.
            let log = std::fs::read_to_string(self.dir.join(format!("redis-{}.log", self.port)))
                .unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(5).collect();
            format!(
                "redis-server on port {}: {}",
                self.port,
                tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
            )
        })?;
        Ok(())
    }

    /// SIGKILLs the process and reaps it.
    pub fn kill(&mut self) -> anyhow::Result<()> {
        kill_child(&mut self.child)
    }

    /// Runs one command and returns its reply as text.
    pub async fn cmd(&self, args: &[&str]) -> anyhow::Result<String> {
        let client = redis::Client::open(self.harness_url())?;
        let mut c = client.get_multiplexed_async_connection().await?;
        let mut cmd = redis::cmd(args[0]);
        for a in &args[1..] {
            cmd.arg(*a);
        }
        let value: redis::Value = cmd.query_async(&mut c).await?;
        Ok(match value {
            redis::Value::BulkString(b) => String::from_utf8_lossy(&b).into_owned(),
            redis::Value::SimpleString(s) => s,
            redis::Value::Okay => "OK".into(),
            redis::Value::Int(i) => i.to_string(),
            other => format!("{other:?}"),
        })
    }

    /// A setting, as `CONFIG GET` answers it (empty when unknown).
    pub async fn config(&self, name: &str) -> anyhow::Result<String> {
        let client = redis::Client::open(self.harness_url())?;
        let mut c = client.get_multiplexed_async_connection().await?;
        let mut answer: std::collections::HashMap<String, String> = redis::cmd("CONFIG")
            .arg("GET")
            .arg(name)
            .query_async(&mut c)
            .await?;
        Ok(answer.remove(name).unwrap_or_default())
    }

    /// Directory for its files.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        stop_child(&mut self.child);
    }
}

/// A Redis master with one replica.
pub struct RedisPair {
    /// The master.
    pub master: RedisServer,
    /// The replica.
    pub replica: RedisServer,
    _dir: tempfile::TempDir,
}

impl RedisPair {
    /// Starts both and waits until the replica's link is up.
    pub async fn start() -> anyhow::Result<RedisPair> {
        let dir = tempfile::Builder::new()
            .prefix("failoverd-redis-")
            .tempdir()?;
        let master = RedisServer::start(free_port(), dir.path(), &[]).await?;
        let replica = RedisServer::start(
            free_port(),
            dir.path(),
            &[
                "--replicaof".into(),
                "127.0.0.1".into(),
                master.port.to_string(),
            ],
        )
        .await?;
        let pair = RedisPair {
            master,
            replica,
            _dir: dir,
        };
        wait_for_async("the replica link", Duration::from_secs(15), || async {
            let info = pair.replica.cmd(&["INFO", "replication"]).await.ok()?;
            info.contains("master_link_status:up").then_some(())
        })
        .await?;
        Ok(pair)
    }
}

/// A 6-node Redis Cluster: 3 masters, 3 replicas.
pub struct RedisCluster {
    /// The nodes, masters first as created by `redis-cli --cluster create`.
    pub nodes: Vec<RedisServer>,
    _dir: tempfile::TempDir,
}

impl RedisCluster {
    /// Starts 6 cluster-enabled nodes (`cluster-node-timeout` 5 s), creates the cluster and
    /// waits for `cluster_state:ok` on every node and for every replica to be in sync.
    pub async fn start() -> anyhow::Result<RedisCluster> {
        Self::start_with(Duration::from_secs(5)).await
    }

    /// Like [`RedisCluster::start`], with this `cluster-node-timeout`.
    pub async fn start_with(node_timeout: Duration) -> anyhow::Result<RedisCluster> {
        let dir = tempfile::Builder::new()
            .prefix("failoverd-cluster-")
            .tempdir()?;
        let mut nodes = Vec::new();
        for i in 0..6 {
            let port = free_port_with_bus();
            let extra = [
                "--cluster-enabled".to_owned(),
                "yes".into(),
                "--cluster-config-file".into(),
                format!("nodes-{i}.conf"),
                "--cluster-node-timeout".into(),
                node_timeout.as_millis().to_string(),
                // Replicas sync at once rather than after Redis's 5 s batching delay.
                "--repl-diskless-sync-delay".into(),
                "0".into(),
            ];
            nodes.push(RedisServer::start(port, dir.path(), &extra).await?);
        }
        let addrs: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        run(
            Command::new("redis-cli")
                .arg("--cluster")
                .arg("create")
                .args(&addrs)
                .args(["--cluster-replicas", "1", "--cluster-yes"]),
            "redis-cli --cluster create",
        )?;
        let cluster = RedisCluster { nodes, _dir: dir };
        for node in &cluster.nodes {
            wait_for_async("cluster_state:ok", Duration::from_secs(30), || async {
                let info = node.cmd(&["CLUSTER", "INFO"]).await.ok()?;
                info.contains("cluster_state:ok").then_some(())
            })
            .await?;
        }
        // A replica that never finished its first sync refuses to be elected by the cluster.
        wait_for_async(
            "three replicas in sync",
            Duration::from_secs(30),
            || async {
                let mut synced = 0;
                for node in &cluster.nodes {
                    let info = node.cmd(&["INFO", "replication"]).await.ok()?;
                    if info.contains("role:slave") && info.contains("master_link_status:up") {
                        synced += 1;
                    }
                }
                (synced == 3).then_some(())
            },
        )
        .await?;
        Ok(cluster)
    }
    /// The index in `nodes` of the replica of each master (nodes 0, 1 and 2), from one node's
    /// `CLUSTER NODES` once it knows all three replicas (the roles spread by gossip after the
    /// cluster is created).
    pub async fn replicas(&self) -> anyhow::Result<[usize; 3]> {
        let layout = wait_for_async("every replica known", Duration::from_secs(20), || async {
            let layout =
                parse_layout(&self.nodes[0].cmd(&["CLUSTER", "NODES"]).await.ok()?).ok()?;
            (layout.iter().filter(|(_, _, m)| m.is_some()).count() == 3).then_some(layout)
        })
        .await?;
        Ok([
            self.replica_of(&layout, 0)?,
            self.replica_of(&layout, 1)?,
            self.replica_of(&layout, 2)?,
        ])
    }

    /// The index in `nodes` of the replica of master `m`.
    fn replica_of(&self, layout: &[NodeLine], m: usize) -> anyhow::Result<usize> {
        let id = &layout
            .iter()
            .find(|(_, port, _)| *port == self.nodes[m].port)
            .context("the master in the layout")?
            .0;
        let port = layout
            .iter()
            .find(|(_, _, master)| master.as_ref() == Some(id))
            .context("a replica")?
            .1;
        self.nodes
            .iter()
            .position(|n| n.port == port)
            .context("the replica among the nodes")
    }
}

/// One line of `CLUSTER NODES`: the node's id, its port, and its master's id if it replicates.
type NodeLine = (String, u16, Option<String>);

/// The lines of `CLUSTER NODES`.
fn parse_layout(text: &str) -> anyhow::Result<Vec<NodeLine>> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let port = fields[1]
                .split(['@', ','])
                .next()
                .and_then(|a| a.rsplit_once(':'))
                .context("an address")?
                .1
                .parse()?;
            let master = (fields[3] != "-").then(|| fields[3].to_owned());
            Ok((fields[0].to_owned(), port, master))
        })
        .collect()
}
