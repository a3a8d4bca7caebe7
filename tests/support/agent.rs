//! Agents under test: one agent in this process ([`TestAgent`]) and three `failoverd`
//! processes forming one cluster across the test regions ([`AgentCluster`], set up by
//! [`ClusterOptions`]), each probing one healthy API per region. Starts no datastores: tests
//! and the lab pass the datastores' configuration in.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use failoverd::agent::Agent;
use failoverd::config::{Config, ProbeConfig, SecretRef};
use failoverd::health::{HealthBoard, LastResult, State, TargetView};
use failoverd::probe::Facts;
use failoverd::topology::TargetId;
use tokio_util::sync::CancellationToken;

use super::config::{ConfigFile, HttpTarget, Peer, Region, TlsSection};
use super::http::{FaultProxy, HttpServer, TestCerts};
use super::process::{free_ports, AgentProcess};
use super::wait::{wait_for, wait_for_async};

/// The regions of the test cluster.
pub const REGIONS: [&str; 3] = ["eu-west-3", "eu-central-1", "us-east-1"];

/// A healthy API: `GET /health` → 200.
pub fn api_router() -> axum::Router {
    axum::Router::new().route("/health", axum::routing::get(|| async { "ok" }))
}

/// One healthy API ([`api_router`]) per region; the servers stop when dropped.
pub async fn region_apis() -> anyhow::Result<(Vec<HttpServer>, [String; 3])> {
    let mut servers = Vec::new();
    for _ in REGIONS {
        servers.push(HttpServer::start(api_router()).await?);
    }
    let urls = [0, 1, 2].map(|i| servers[i].url("/health"));
    Ok((servers, urls))
}

/// An agent running in this process.
pub struct TestAgent {
    /// Its health board.
    pub board: Arc<HealthBoard>,
    /// Its admin address.
    pub admin: SocketAddr,
    shutdown: CancellationToken,
    task: Option<tokio::task::JoinHandle<Result<(), failoverd::agent::AgentError>>>,
    _data_dir: tempfile::TempDir,
}

impl TestAgent {
    /// Starts an agent on `config`, with its admin API on a free port and its data in a
    /// temporary directory. The configuration goes through the agent's own parser.
    pub async fn start(config: ConfigFile) -> anyhow::Result<TestAgent> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let admin = listener.local_addr()?;
        let data_dir = tempfile::Builder::new()
            .prefix("failoverd-agent-")
            .tempdir()?;
        let text = ConfigFile {
            admin_listen: Some(admin),
            data_dir: Some(data_dir.path().to_owned()),
            ..config
        }
        .render();
        let config = Config::from_str_with_env(&text, config::FileFormat::Toml, Vec::new())
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let agent = Agent::build(config)?;
        let board = agent.board();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(agent.run(listener, None, shutdown.clone()));
        Ok(TestAgent {
            board,
            admin,
            shutdown,
            task: Some(task),
            _data_dir: data_dir,
        })
    }

    /// The view of one target.
    pub fn view(&self, id: &str) -> TargetView {
        self.board
            .views()
            .into_iter()
            .find(|v| v.id.as_str() == id)
            .unwrap_or_else(|| panic!("no target {id}"))
    }

    /// Waits until the target is in `state`; returns how long that took.
    pub async fn wait_state(
        &self,
        id: &str,
        state: State,
        deadline: Duration,
    ) -> anyhow::Result<Duration> {
        let start = Instant::now();
        wait_for(&format!("{id} to be {state:?}"), deadline, || {
            (self.view(id).state == state).then_some(())
        })
        .await
        .with_context(|| format!("last view: {:?}", self.view(id)))?;
        Ok(start.elapsed())
    }

    /// Waits until a successful observation of `id` satisfies `pick`.
    pub async fn wait_facts<T>(
        &self,
        id: &str,
        what: &str,
        deadline: Duration,
        mut pick: impl FnMut(&Facts) -> Option<T>,
    ) -> anyhow::Result<T> {
        wait_for(what, deadline, || match self.view(id).last {
            Some(LastResult::Ok { observation }) => pick(&observation.facts),
            _ => None,
        })
        .await
        .with_context(|| format!("last view of {id}: {:?}", self.view(id)))
    }

    /// GETs a path on the admin API.
    pub async fn get(&self, path: &str) -> anyhow::Result<reqwest::Response> {
        Ok(reqwest::get(format!("http://{}{path}", self.admin)).await?)
    }

    /// Stops the agent and waits for it.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            task.await??;
        }
        Ok(())
    }

    /// The id of a target.
    pub fn id(kind: &str, group: &str, name: &str) -> TargetId {
        let kind = match kind {
            "http" => failoverd::config::TargetKind::Http,
            "postgres" => failoverd::config::TargetKind::Postgres,
            _ => failoverd::config::TargetKind::Redis,
        };
        TargetId::new(kind, group, name)
    }
}

impl Drop for TestAgent {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Three agents in three regions on loopback, each probing one API per region.
pub struct AgentCluster {
    /// The agents.
    pub agents: Vec<AgentProcess>,
    /// The cluster secret.
    pub secret: String,
    /// Fault proxies per directed peer link `(from, to)`, when asked for.
    pub links: Vec<((usize, usize), FaultProxy)>,
    _dir: tempfile::TempDir,
}

/// How to set up an [`AgentCluster`].
#[derive(Default)]
pub struct ClusterOptions<'a> {
    /// What every agent's configuration shares: probe and cluster settings, datastores,
    /// Route53, admin tokens, failover and notify settings. Each agent's id, region,
    /// listeners, data directory, peers, cluster secret, regions and TLS are the cluster's to
    /// set, over whatever this holds.
    pub config: ConfigFile,
    /// Route every peer link through a [`FaultProxy`].
    pub proxies: bool,
    /// Serve peer traffic over mutual TLS with these certificates.
    pub tls: Option<&'a TestCerts>,
    /// Latency the proxies add in each direction (with `proxies`).
    pub link_delay: Duration,
}

impl AgentCluster {
    /// For failure messages: the last lines each agent logged itself (without the Raft
    /// library's), with anything it printed before its logging started.
    pub fn logs(&self) -> String {
        self.agents
            .iter()
            .map(|a| {
                let log = a.log();
                // Its own JSON lines, and any plain line (an error before logging started).
                let own: Vec<&str> = log
                    .lines()
                    .filter(|l| l.contains(r#""target":"failoverd"#) || !l.starts_with('{'))
                    .collect();
                format!(
                    "--- {}:\n{}",
                    a.id,
                    own[own.len().saturating_sub(25)..].join("\n")
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Writes the configs and starts the three agents. `apis` are the API URLs per region.
    pub async fn start(apis: &[String; 3], probe: ProbeConfig) -> anyhow::Result<AgentCluster> {
        Self::start_with(
            apis,
            ClusterOptions {
                config: ConfigFile {
                    probe,
                    ..ConfigFile::default()
                },
                ..Default::default()
            },
        )
        .await
    }

    /// Like [`AgentCluster::start`], with datastores, cluster settings and fault proxies.
    pub async fn start_with(
        apis: &[String; 3],
        options: ClusterOptions<'_>,
    ) -> anyhow::Result<AgentCluster> {
        let dir = tempfile::Builder::new()
            .prefix("failoverd-cluster-")
            .tempdir()?;
        let secret = format!("cluster-secret-{}", rand::random::<u32>());
        let secret_file = dir.path().join("cluster-secret");
        std::fs::write(&secret_file, format!("{secret}\n"))?;
        // Admin and peer port of each agent, six distinct ones.
        let ports: Vec<(u16, u16)> = free_ports(6).chunks(2).map(|p| (p[0], p[1])).collect();
        let ids: Vec<String> = REGIONS.iter().map(|r| format!("{r}-a")).collect();
        let mut links = Vec::new();
        if options.proxies {
            for i in 0..3 {
                for j in (0..3).filter(|j| *j != i) {
                    let proxy = FaultProxy::start_with_delay(
                        SocketAddr::from(([127, 0, 0, 1], ports[j].1)),
                        options.link_delay,
                    )
                    .await?;
                    links.push(((i, j), proxy));
                }
            }
        }
        let mut agents = Vec::new();
        for i in 0..3 {
            let scheme = if options.tls.is_some() {
                "https"
            } else {
                "http"
            };
            let peers = (0..3)
                .filter(|j| *j != i)
                .map(|j| {
                    let port = links
                        .iter()
                        .find(|(link, _)| *link == (i, j))
                        .map(|(_, proxy)| proxy.addr.port())
                        .unwrap_or(ports[j].1);
                    Peer {
                        id: ids[j].clone(),
                        region: REGIONS[j].into(),
                        peer_url: format!("{scheme}://127.0.0.1:{port}"),
                    }
                })
                .collect();
            let regions = REGIONS
                .iter()
                .zip(apis)
                .map(|(region, url)| Region {
                    api: vec![HttpTarget::new("api", url)],
                    ..Region::new(region)
                })
                .collect();
            let tls = options.tls.map(|certs| TlsSection {
                cert_file: certs.cert.clone(),
                key_file: certs.key.clone(),
                ca_file: Some(certs.ca.clone()),
                require_client_cert: true,
            });
            let mut cfg = ConfigFile {
                id: ids[i].clone(),
                region: REGIONS[i].into(),
                admin_listen: Some(SocketAddr::from(([127, 0, 0, 1], ports[i].0))),
                peer_listen: Some(SocketAddr::from(([127, 0, 0, 1], ports[i].1))),
                data_dir: Some(dir.path().join(&ids[i])),
                peers,
                regions,
                tls,
                ..options.config.clone()
            };
            cfg.cluster.secret = Some(SecretRef::File(secret_file.clone()));
            let config = dir.path().join(format!("{}.toml", ids[i]));
            std::fs::write(&config, cfg.render())?;
            let mut agent = AgentProcess::new(
                ids[i].clone(),
                SocketAddr::from(([127, 0, 0, 1], ports[i].0)),
                SocketAddr::from(([127, 0, 0, 1], ports[i].1)),
                config,
                dir.path().join(format!("{}.log", ids[i])),
            );
            agent.spawn()?;
            agents.push(agent);
        }
        Ok(AgentCluster {
            agents,
            secret,
            links,
            _dir: dir,
        })
    }

    /// Waits until every running agent (all but `except`) names the same leader, other than
    /// `not`, and that leader itself says it leads (a restarted agent names the leader of its
    /// stored vote before any election); returns its id and the term.
    pub async fn agreed_leader(
        &self,
        except: Option<usize>,
        not: Option<&str>,
        deadline: Duration,
    ) -> anyhow::Result<(String, u64)> {
        wait_for_async("every agent to name the same leader", deadline, || async {
            let mut seen = None;
            for (i, agent) in self.agents.iter().enumerate() {
                if Some(i) == except {
                    continue;
                }
                let status = agent.status().await?;
                let leader = status["cluster"]["leader"].as_str()?.to_owned();
                if Some(leader.as_str()) == not {
                    return None;
                }
                let term = status["cluster"]["term"].as_u64()?;
                if status["cluster"]["agent"] == leader.as_str()
                    && status["cluster"]["state"] != "leader"
                {
                    return None;
                }
                match &seen {
                    None => seen = Some((leader, term)),
                    Some(s) if *s == (leader.clone(), term) => {}
                    Some(_) => return None,
                }
            }
            // The named leader must be one of the agents asked, and say so itself.
            let (leader, _) = seen.as_ref()?;
            let asked = self
                .agents
                .iter()
                .enumerate()
                .any(|(i, a)| Some(i) != except && &a.id == leader);
            if !asked {
                return None;
            }
            seen
        })
        .await
        .with_context(|| {
            self.agents
                .iter()
                .map(|a| format!("--- {}:\n{}", a.id, a.log_tail()))
                .collect::<Vec<_>>()
                .join("\n")
        })
    }

    /// Cuts (or heals) every peer link to and from agent `k`.
    pub fn isolate(&self, k: usize, cut: bool) {
        for ((from, to), proxy) in &self.links {
            if *from == k || *to == k {
                if cut {
                    proxy.cut()
                } else {
                    proxy.heal()
                }
            }
        }
    }

    /// The index of an agent by id.
    pub fn index(&self, id: &str) -> usize {
        self.agents
            .iter()
            .position(|a| a.id == id)
            .expect("known agent")
    }
}
