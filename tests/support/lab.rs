//! The lab: three agents (one per test region) with a healthy API per region, and the
//! datastores a test asks for in [`LabOptions`] — Postgres, Redis (a master and replica, or a
//! Redis Cluster), the Route53 emulator, a webhook receiver — wired into the agents'
//! configuration. It also gives the on-call view of them: the CLI and the admin API through a
//! follower, the history, the webhook's events. The lab owns everything it starts and stops
//! it when dropped; what a test waits for before it begins is the test's to say.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use failoverd::config::{ProbeConfig, ProbeOverrides, SecretRef};
use serde_json::Value;

use super::agent::{region_apis, AgentCluster, ClusterOptions};
use super::config::{
    ConfigFile, FailoverSection, PostgresMember, PostgresSection, RedisMember, RedisShard,
    WriterRecord,
};
use super::http::{get_json, FaultProxy, HttpServer, WebhookReceiver};
use super::ministack::Ministack;
use super::postgres::PgPair;
use super::redis::{RedisCluster, RedisPair};
use super::wait::wait_for_async;

/// What a [`Lab`] starts besides the agents and their region APIs. Nothing by default.
#[derive(Default)]
pub struct LabOptions<'a> {
    /// A Postgres primary in eu-west-3 with streaming replicas in eu-central-1 and us-east-1:
    /// the cluster `main`.
    pub postgres: Option<PostgresLab<'a>>,
    /// Redis: a master and replica, or a Redis Cluster.
    pub redis: Option<RedisLab>,
    /// The Route53 emulator, its weighted records seeded at weight 100.
    pub route53: Option<Route53Lab>,
    /// Every datastore member names itself in its writer value (`pg-eu-west-3.db.internal.`,
    /// `r-eu-west-3.cache.internal.`).
    pub writer_values: bool,
    /// An admin token held by `alice`: the agents accept it and [`Lab::cli`] and [`Lab::post`]
    /// may send it.
    pub admin_token: Option<&'a str>,
    /// A webhook receiver the agents notify ([`Lab::events`]).
    pub webhook: bool,
    /// The agents' `[probe]` section.
    pub probe: ProbeConfig,
    /// The agents' `[failover]` section.
    pub failover: FailoverSection,
    /// failoverd keeps the datastores self-fencing: `[postgres.synchronous]` quorum of one
    /// (strict), `[redis.self_fencing]` one replica with a 2 s lag (relaxed: the pair's last
    /// member takes writes alone).
    pub self_fencing: bool,
}

/// The lab's Postgres cluster.
pub struct PostgresLab<'a> {
    /// SQL run on the primary before the agents start.
    pub setup: &'a str,
    /// `max_lag_on_failover`, in bytes.
    pub max_lag: u64,
    /// The agents reach the us-east-1 replica through a proxy that delays every byte by this
    /// much each way; that replica is never promoted and its probe timeout is 900 ms.
    pub slow_replica: Option<Duration>,
    /// `[postgres.rejoin]` runs `deploy/postgres/pg-rejoin` on the member's data directory:
    /// an old primary is rewound and rejoins as a replica.
    pub rejoin: bool,
    /// The eu-central-1 replica is `no_failover` (a reporting replica): never promoted, it
    /// may hold WAL the member promoted instead never received.
    pub reporting_replica: bool,
}

/// The lab's Redis.
pub enum RedisLab {
    /// A master in eu-west-3 and its replica in eu-central-1: the shard `sessions`.
    Pair,
    /// A 6-node Redis Cluster, the shard `cache`: masters 0 and 1 in eu-west-3 with their
    /// replicas in eu-central-1 and us-east-1; master 2 in eu-central-1 with its replica in
    /// eu-west-3. The nodes run with this `cluster-node-timeout`.
    Cluster(Duration),
}

/// The lab's Route53 records.
#[derive(Default)]
pub struct Route53Lab {
    /// Writer records for `postgres/main` (`db.example.test.`) and `redis/sessions`
    /// (`sessions.example.test.`).
    pub writers: bool,
}

/// Three agents and what [`LabOptions`] asked for. Dropping it stops everything.
pub struct Lab {
    pg: Option<PgPair>,
    redis: Option<RedisPair>,
    redis_cluster: Option<(RedisCluster, [usize; 3])>,
    ministack: Option<Ministack>,
    /// The API of each region, in [`super::REGIONS`] order; drop one to fail it.
    pub apis: Vec<HttpServer>,
    /// The agents, one per region in [`super::REGIONS`] order.
    pub cluster: AgentCluster,
    webhook: Option<WebhookReceiver>,
    token_file: Option<std::path::PathBuf>,
    /// The agent every agent named leader once the lab had started.
    pub first_leader: usize,
    _proxy: Option<FaultProxy>,
    _secrets: tempfile::TempDir,
}

impl Lab {
    /// Starts the datastores, the region APIs and the three agents, and waits until every
    /// agent names the same leader.
    pub async fn start(options: LabOptions<'_>) -> anyhow::Result<Lab> {
        let secrets = tempfile::tempdir()?;
        let mut config = ConfigFile {
            probe: options.probe,
            failover: options.failover,
            ..ConfigFile::default()
        };
        let writer_value = |name: &str, domain: &str| {
            options
                .writer_values
                .then(|| format!("{name}.{domain}.internal."))
        };
        let mut proxy = None;
        let pg = match &options.postgres {
            None => None,
            Some(setup) => {
                let pg = PgPair::start_named("pg-eu-west-3", "pg-eu-central-1", &["pg-us-east-1"])
                    .await?;
                pg.primary
                    .connect()
                    .await?
                    .batch_execute(setup.setup)
                    .await?;
                let mut members = vec![
                    PostgresMember::new("pg-eu-west-3", "eu-west-3", pg.primary.dsn()),
                    PostgresMember::new("pg-eu-central-1", "eu-central-1", pg.replica.dsn()),
                    PostgresMember::new("pg-us-east-1", "us-east-1", pg.others[0].dsn()),
                ];
                if let Some(delay) = setup.slow_replica {
                    let p = FaultProxy::start_with_delay(
                        SocketAddr::from(([127, 0, 0, 1], pg.others[0].port)),
                        delay,
                    )
                    .await?;
                    // Its probe round trips take the delay twice. It is never the one
                    // promoted, so the slow step is always repointing it: which of two
                    // caught-up replicas wins otherwise turns on which probe last saw the
                    // primary's final WAL record (an idle primary still logs a standby
                    // snapshot every 15 s).
                    members[2] = PostgresMember {
                        dsn: pg.others[0].dsn().replace(
                            &format!("port={}", pg.others[0].port),
                            &format!("port={}", p.addr.port()),
                        ),
                        no_failover: true,
                        probe: ProbeOverrides {
                            timeout: Some(Duration::from_millis(900)),
                            ..ProbeOverrides::default()
                        },
                        ..members[2].clone()
                    };
                    proxy = Some(p);
                }
                members[1].no_failover = setup.reporting_replica;
                for member in &mut members {
                    member.writer_value = writer_value(&member.name, "db");
                }
                config.postgres = Some(PostgresSection {
                    cluster: Some("main".into()),
                    max_lag_on_failover: Some(setup.max_lag),
                    replication_user: Some("postgres".into()),
                    synchronous: options.self_fencing.then_some((1, false)),
                    rejoin: setup.rejoin.then(|| pg.rejoin_command()),
                    members,
                    ..PostgresSection::default()
                });
                Some(pg)
            }
        };
        let mut redis = None;
        let mut redis_cluster = None;
        match options.redis {
            None => {}
            Some(RedisLab::Pair) => {
                let pair = RedisPair::start().await?;
                let mut members = vec![
                    RedisMember::new("r-eu-west-3", "eu-west-3", pair.master.url()),
                    RedisMember::new("r-eu-central-1", "eu-central-1", pair.replica.url()),
                ];
                for member in &mut members {
                    member.writer_value = writer_value(&member.name, "cache");
                }
                config.redis_shards = vec![RedisShard::replication("sessions", members)];
                config.redis_self_fencing =
                    options
                        .self_fencing
                        .then_some((1, Duration::from_secs(2), true));
                redis = Some(pair);
            }
            Some(RedisLab::Cluster(node_timeout)) => {
                let cluster = RedisCluster::start_with(node_timeout).await?;
                let replicas = cluster.replicas().await?;
                let mut region = [""; 6];
                region[0] = "eu-west-3";
                region[1] = "eu-west-3";
                region[2] = "eu-central-1";
                region[replicas[0]] = "eu-central-1";
                region[replicas[1]] = "us-east-1";
                region[replicas[2]] = "eu-west-3";
                let members = cluster
                    .nodes
                    .iter()
                    .enumerate()
                    .map(|(i, node)| RedisMember::new(&format!("c{i}"), region[i], node.url()))
                    .collect();
                config.redis_shards = vec![RedisShard {
                    cluster_node_timeout: Some(node_timeout),
                    ..RedisShard::cluster("cache", members)
                }];
                redis_cluster = Some((cluster, replicas));
            }
        }
        let ministack = match &options.route53 {
            None => None,
            Some(route53) => {
                let ministack = Ministack::start().await?;
                ministack.seed_weights().await?;
                let mut section = ministack.route53();
                if route53.writers {
                    for (group, name) in [
                        ("postgres/main", "db.example.test."),
                        ("redis/sessions", "sessions.example.test."),
                    ] {
                        section.writers.push(WriterRecord {
                            group: group.into(),
                            name: name.into(),
                        });
                    }
                }
                config.route53 = Some(section);
                Some(ministack)
            }
        };
        let webhook = match options.webhook {
            false => None,
            true => {
                let receiver = WebhookReceiver::start().await?;
                let hook_file = secrets.path().join("webhook-url");
                std::fs::write(&hook_file, receiver.url())?;
                config.notify_webhook_url = Some(SecretRef::File(hook_file));
                Some(receiver)
            }
        };
        let token_file = match options.admin_token {
            None => None,
            Some(token) => {
                let token_file = secrets.path().join("token");
                std::fs::write(&token_file, format!("{token}\n"))?;
                config.admin_tokens = vec![("alice".into(), SecretRef::File(token_file.clone()))];
                Some(token_file)
            }
        };
        let (apis, urls) = region_apis().await?;
        let cluster = AgentCluster::start_with(
            &urls,
            ClusterOptions {
                config,
                ..Default::default()
            },
        )
        .await?;
        let mut lab = Lab {
            pg,
            redis,
            redis_cluster,
            ministack,
            apis,
            cluster,
            webhook,
            token_file,
            first_leader: 0,
            _proxy: proxy,
            _secrets: secrets,
        };
        let (leader, _) = lab
            .cluster
            .agreed_leader(None, None, Duration::from_secs(20))
            .await?;
        lab.first_leader = lab.cluster.index(&leader);
        Ok(lab)
    }

    /// Waits up to 20 s until the status of the agent that led once the lab had started
    /// satisfies `ready`, and returns what it picked.
    pub async fn leader_status_until<T>(
        &self,
        what: &str,
        ready: impl Fn(&Value) -> Option<T>,
    ) -> anyhow::Result<T> {
        let leader = &self.cluster.agents[self.first_leader];
        wait_for_async(what, Duration::from_secs(20), || async {
            ready(&leader.status().await?)
        })
        .await
    }

    /// The Postgres cluster.
    pub fn pg(&self) -> &PgPair {
        self.pg.as_ref().expect("a lab with LabOptions::postgres")
    }

    /// The Redis master and replica.
    pub fn redis(&self) -> &RedisPair {
        self.redis.as_ref().expect("a lab with RedisLab::Pair")
    }

    /// The Redis master and replica, to kill or restart one.
    pub fn redis_mut(&mut self) -> &mut RedisPair {
        self.redis.as_mut().expect("a lab with RedisLab::Pair")
    }

    /// The Redis Cluster.
    pub fn redis_cluster(&self) -> &RedisCluster {
        &self
            .redis_cluster
            .as_ref()
            .expect("a lab with RedisLab::Cluster")
            .0
    }

    /// The Redis Cluster, to kill or restart a node.
    pub fn redis_cluster_mut(&mut self) -> &mut RedisCluster {
        &mut self
            .redis_cluster
            .as_mut()
            .expect("a lab with RedisLab::Cluster")
            .0
    }

    /// The Redis Cluster's node indices of the replicas of masters 0, 1 and 2.
    pub fn cluster_replicas(&self) -> [usize; 3] {
        self.redis_cluster
            .as_ref()
            .expect("a lab with RedisLab::Cluster")
            .1
    }

    /// The Route53 emulator.
    pub fn ministack(&self) -> &Ministack {
        self.ministack
            .as_ref()
            .expect("a lab with LabOptions::route53")
    }

    /// What the agents' webhook received, in arrival order.
    pub fn events(&self) -> Vec<Value> {
        self.webhook
            .as_ref()
            .expect("a lab with LabOptions::webhook")
            .events()
    }

    /// The admin URL of an agent that followed once the lab had started: the CLI and the
    /// admin calls go there, and it forwards them to the leader.
    pub fn follower(&self) -> String {
        format!(
            "http://{}",
            self.cluster.agents[(self.first_leader + 1) % 3].admin
        )
    }

    /// The file holding the admin token.
    pub fn token_file(&self) -> &Path {
        self.token_file
            .as_deref()
            .expect("a lab with LabOptions::admin_token")
    }

    /// For failure messages: what each agent logged last.
    pub fn logs(&self) -> String {
        self.cluster.logs()
    }

    /// Runs the CLI against the follower; returns its exit code and standard output.
    pub async fn cli(&self, args: &[&str]) -> anyhow::Result<(i32, String)> {
        let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_failoverd"))
            .args(args)
            .env("FAILOVERD_ADMIN", self.follower())
            .env("FAILOVERD_TOKEN_FILE", self.token_file())
            .stdin(std::process::Stdio::null())
            .output()
            .await?;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr);
        Ok((out.status.code().unwrap_or(-1), format!("{stdout}{stderr}")))
    }

    /// A raw call to the follower: status and JSON body.
    pub async fn post(
        &self,
        path: &str,
        token: Option<&str>,
        body: &str,
    ) -> anyhow::Result<(u16, Value)> {
        let mut request = reqwest::Client::new()
            .post(format!("{}{path}", self.follower()))
            .header("content-type", "application/json")
            .body(body.to_owned());
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await?;
        let status = response.status().as_u16();
        let body = serde_json::from_str(&response.text().await?).unwrap_or(Value::Null);
        Ok((status, body))
    }

    /// A GET from the follower: status and body.
    pub async fn get(&self, path: &str) -> anyhow::Result<(u16, String)> {
        let response = reqwest::get(format!("{}{path}", self.follower())).await?;
        Ok((response.status().as_u16(), response.text().await?))
    }

    /// The replicated epoch and mode, as the follower sees them.
    pub async fn state(&self) -> anyhow::Result<(u64, String)> {
        let (_, text) = self.get("/v1/status").await?;
        let s: Value = serde_json::from_str(&text)?;
        Ok((
            s["failover"]["epoch"].as_u64().context("epoch")?,
            s["failover"]["mode"].as_str().context("mode")?.to_owned(),
        ))
    }

    /// The failover `epoch` once it has ended, within `deadline`.
    pub async fn finished(&self, epoch: u64, deadline: Duration) -> anyhow::Result<Value> {
        wait_for_async("the failover to end", deadline, || async {
            let (status, text) = self.get(&format!("/v1/failovers/{epoch}")).await.ok()?;
            let f: Value = serde_json::from_str(&text).ok()?;
            (status == 200 && !f["outcome"].is_null()).then_some(f)
        })
        .await
        .with_context(|| self.logs())
    }

    /// The admin address of the agent all agree leads.
    pub async fn leader_admin(&self) -> anyhow::Result<std::net::SocketAddr> {
        let (leader, _) = self
            .cluster
            .agreed_leader(None, None, Duration::from_secs(10))
            .await?;
        Ok(self.cluster.agents[self.cluster.index(&leader)].admin)
    }

    /// The history from the first agent (other than `except`) that answers.
    pub async fn history(&self, except: Option<usize>) -> Option<Value> {
        for (i, agent) in self.cluster.agents.iter().enumerate() {
            if except == Some(i) {
                continue;
            }
            if let Some(h) = get_json(&format!("http://{}/v1/history", agent.admin)).await {
                return Some(h);
            }
        }
        None
    }

    /// The failovers in the history (newest first), from an agent other than `except`.
    pub async fn failovers(&self, except: Option<usize>) -> Option<Vec<Value>> {
        let history = self.history(except).await?;
        Some(
            history["entries"]
                .as_array()?
                .iter()
                .filter(|e| e["type"] == "failover")
                .cloned()
                .collect(),
        )
    }

    /// The history's slot moves and the whole history, from the first agent but `except`
    /// that shows `count` moves.
    pub async fn slot_moves(
        &self,
        except: usize,
        count: usize,
    ) -> anyhow::Result<(Vec<Value>, Value)> {
        wait_for_async(
            "the slot moves recorded",
            Duration::from_secs(10),
            || async {
                for (i, agent) in self.cluster.agents.iter().enumerate() {
                    if i == except {
                        continue;
                    }
                    let text = reqwest::get(format!("http://{}/v1/history", agent.admin))
                        .await
                        .ok()?
                        .text()
                        .await
                        .ok()?;
                    let history: Value = serde_json::from_str(&text).ok()?;
                    let moves: Vec<Value> = history["entries"]
                        .as_array()?
                        .iter()
                        .filter(|e| e["type"] == "slots_moved")
                        .cloned()
                        .collect();
                    if moves.len() == count {
                        return Some((moves, history));
                    }
                }
                None
            },
        )
        .await
        .with_context(|| self.logs())
    }
}
