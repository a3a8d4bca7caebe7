//! Consensus among the agents: one openraft group of every configured agent.
//!
//! Split the openraft way: [`types`] (what the log carries, node ids), [`store`] (the persisted
//! log, vote and state machine), [`network`] (peer RPC client), [`peer_api`] (peer RPC server,
//! on its own listener, behind the cluster secret), [`reports`] (health vectors the leader
//! keeps). This module wires them: it starts the Raft node, bootstraps the cluster, sends this
//! agent's report to the leader every interval, and answers what the cluster looks like.
//!
//! Bootstrap: every agent calls `initialize` with the same membership — every configured
//! agent, named by [`types::node_id`] of its id — at every start. openraft accepts it only on
//! an empty log and vote, so start-up order does not matter, a restart keeps its log, and no
//! second cluster can appear.

pub mod contact;
pub mod election;
mod exports;
mod lease;
pub mod network;
pub mod peer_api;
pub mod reports;
mod status;
pub mod store;
pub mod types;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use openraft::error::{InitializeError, RaftError};
use openraft::{BasicNode, ServerState};
use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts, Registry};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, Secret, TargetKind};
use crate::health::HealthBoard;
use crate::topology::{TargetId, Topology};
use crate::verdict::{self, AgentId, Verdict};
use network::{PeerClient, PeerNetwork};
use reports::{Report, ReportBook};
use types::{NodeId, Raft};

pub use lease::LeaderView;
use reports::{cluster_of, offset_of, position_of};
pub use status::{ClusterStatus, LeaseStatus, MemberStatus, SilentSince};

/// Why consensus could not start.
#[derive(Debug, thiserror::Error)]
pub enum ConsensusError {
    /// The cluster secret could not be read.
    #[error("cluster.secret: {0}")]
    Secret(#[from] crate::config::SecretError),
    /// The Raft store could not be opened.
    #[error(transparent)]
    Store(#[from] store::OpenError),
    /// The stored state could not be read.
    #[error("cannot read the Raft store: {0}")]
    Storage(Box<openraft::StorageError<NodeId>>),
    /// openraft refused its configuration (a rule between timeouts).
    #[error("raft config: {0}")]
    RaftConfig(#[from] openraft::ConfigError),
    /// openraft stopped.
    #[error("raft: {0}")]
    Fatal(String),
    /// Metrics could not be registered.
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    /// The peer client's TLS settings are unusable.
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
}

/// Reports go to the leader at least this often (more often with a shorter probe interval):
/// a report is the leader's evidence of contact with its agent, so its period is part of the
/// margin before the leader may count an agent as fenced.
pub const REPORT_INTERVAL: Duration = Duration::from_millis(250);

/// How often an agent's fencer checks its lease: part of the margin before the leader may
/// count a silent agent as fenced.
pub const LEASE_CHECK_INTERVAL: Duration = Duration::from_millis(100);

/// Time allowed to an agent to fence its primaries once its lease has run out.
pub const FENCE_ALLOWANCE: Duration = Duration::from_millis(500);

/// One configured agent as a cluster member.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct Member {
    /// Agent id.
    pub agent: AgentId,
    /// Raft node id.
    pub node_id: NodeId,
    /// Region.
    pub region: String,
    /// Base URL of its peer listener (`None` for this agent when it has no peers).
    pub peer_url: Option<String>,
}

/// The consensus metrics.
struct ConsensusMetrics {
    is_leader: IntGauge,
    term: IntGauge,
    leader_changes: IntCounter,
    /// 1 while this agent holds its elections back (see [`election`]).
    elections_held: IntGauge,
    report_age: prometheus::GaugeVec,
    reports_sent_failed: IntCounter,
    /// Leader: 1 for each target's current verdict.
    verdict: prometheus::IntGaugeVec,
    /// Leader: how many agents vote each way per target.
    votes: prometheus::IntGaugeVec,
    /// Leader: 1 for each region's current verdict.
    region_verdict: prometheus::IntGaugeVec,
}

/// A running Raft node with its reports.
pub struct Consensus {
    raft: Raft,
    me: Member,
    members: Vec<Member>,
    reports: Arc<ReportBook>,
    client: PeerClient,
    secret: Option<Arc<Secret>>,
    metrics: ConsensusMetrics,
    unauthorized: IntCounter,
    reports_received: IntCounterVec,
    targets: Vec<(TargetId, String, bool)>,
    quorum: usize,
    stale_after: Duration,
    report_interval: Duration,
    /// `cluster.heartbeat_interval`.
    heartbeat: Duration,
    boot: u64,
    state_machine: store::StateMachine,
    lease_ttl: Duration,
    /// Who this agent accepted as leader, and who acknowledged it as leader, and when (a
    /// follower's lease counts from the latest acceptance).
    contacts: Arc<contact::ContactBook>,
    /// Votes from local replicas about their primaries elsewhere.
    data_path: std::sync::Mutex<crate::evidence::DataPath>,
    /// Datastore targets and the group each belongs to (`postgres/<cluster>`,
    /// `redis/<shard>` for replication shards).
    groups: Vec<(TargetId, String)>,
    /// Since when this agent leads, if it does.
    leader_since: std::sync::Mutex<Option<Instant>>,
    /// Carries out operators' requests when this agent leads.
    admin: Arc<std::sync::OnceLock<peer_api::AdminHandler>>,
}

/// Why an operator's request got no answer from a leader.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OperateError {
    /// No leader could be asked: nothing was done.
    #[error("{0}")]
    NoLeader(String),
    /// The leader was asked and did not answer: the change may or may not have been made.
    #[error("{0}")]
    Unanswered(String),
}

/// How long an operator's request forwarded to the leader may take (it commits a decision,
/// it does not wait for the failover).
const OPERATE_TIMEOUT: Duration = Duration::from_secs(15);

impl Consensus {
    /// Opens the store under `agent.data_dir`, starts the Raft node and bootstraps the
    /// cluster (a no-op when it already exists).
    pub async fn start(
        config: &Config,
        registry: &Registry,
    ) -> Result<Arc<Consensus>, ConsensusError> {
        let secret = match &config.cluster.secret {
            Some(s) => Some(Arc::new(s.load()?)),
            None => None,
        };
        let me = Member {
            agent: config.agent.id.clone(),
            node_id: types::node_id(&config.agent.id),
            region: config.agent.region.clone(),
            peer_url: config.agent.peer_listen.map(|a| {
                let scheme = if config.tls.as_ref().is_some_and(|t| t.peer) {
                    "https"
                } else {
                    "http"
                };
                format!("{scheme}://{a}")
            }),
        };
        let mut members = vec![me.clone()];
        members.extend(config.other_peers().map(|p| Member {
            agent: p.id.clone(),
            node_id: types::node_id(&p.id),
            region: p.region.clone(),
            peer_url: Some(p.peer_url.clone()),
        }));
        members.sort_by(|a, b| a.agent.cmp(&b.agent));

        let rank = members
            .iter()
            .position(|m| m.node_id == me.node_id)
            .unwrap_or(0);
        let (election_min, election_max) = config.cluster.election_range(rank);
        let raft_config = openraft::Config {
            cluster_name: "failoverd".into(),
            heartbeat_interval: millis(config.cluster.heartbeat_interval()),
            election_timeout_min: millis(election_min),
            election_timeout_max: millis(election_max),
            ..Default::default()
        }
        .validate()?;

        let db = store::open(&config.agent.data_dir.join("raft.redb"))?;
        let mut log_store = store::LogStore::new(db.clone());
        // A restarted agent that led before would resume as leader of its stored term
        // (openraft does so when its committed vote is its own), while the others have
        // usually elected someone else meanwhile: it would be voted down and set the survivors
        // back. Keep the vote — it still voted for itself in that term, so nothing can vote
        // twice — but not the claim to lead: it rejoins as a follower.
        {
            use openraft::storage::RaftLogStorage;
            let stored = log_store
                .read_vote()
                .await
                .map_err(|e| ConsensusError::Storage(Box::new(e)))?;
            if let Some(vote) =
                stored.filter(|v| v.is_committed() && v.leader_id().node_id == me.node_id)
            {
                log_store
                    .save_vote(&openraft::Vote::new(vote.leader_id().term, me.node_id))
                    .await
                    .map_err(|e| ConsensusError::Storage(Box::new(e)))?;
                tracing::info!(
                    term = vote.leader_id().term,
                    "led before the restart: rejoining as a follower"
                );
            }
        }
        let state_machine =
            store::StateMachine::new(db).map_err(|e| ConsensusError::Storage(Box::new(e)))?;
        let state_handle = state_machine.clone();
        let client = PeerClient::new(secret.as_deref().cloned(), config.tls.as_ref())?;
        let urls: HashMap<NodeId, String> = members
            .iter()
            .filter(|m| m.node_id != me.node_id)
            .filter_map(|m| Some((m.node_id, m.peer_url.clone()?)))
            .collect();
        let contacts = Arc::new(contact::ContactBook::new());
        let network = PeerNetwork::new(
            client.clone(),
            urls,
            contacts.clone(),
            config.cluster.lease_ttl(),
        );
        let raft = Raft::new(
            me.node_id,
            Arc::new(raft_config),
            network,
            log_store,
            state_machine,
        )
        .await
        .map_err(|e| ConsensusError::Fatal(e.to_string()))?;

        // Every agent names every member the same way: the agent id, never an address.
        let membership: BTreeMap<NodeId, BasicNode> = members
            .iter()
            .map(|m| (m.node_id, BasicNode::new(&m.agent)))
            .collect();
        let stored = raft
            .is_initialized()
            .await
            .map_err(|e| ConsensusError::Fatal(e.to_string()))?;
        if stored {
            tracing::info!("rejoining the cluster with the stored log");
        } else if let Some(peer) = initialized_peer(&client, &members, me.node_id).await {
            // This agent's store is empty but the cluster exists (its data was lost or
            // wiped): forming it again would start a second history. Wait for the leader.
            tracing::warn!(
                peer,
                "no stored log, but the cluster exists: joining as a fresh member"
            );
        } else {
            match raft.initialize(membership).await {
                Ok(()) => tracing::info!(members = members.len(), "formed a new cluster"),
                Err(RaftError::APIError(InitializeError::NotAllowed(_))) => {
                    tracing::info!("rejoining the existing cluster")
                }
                Err(e) => return Err(ConsensusError::Fatal(e.to_string())),
            }
        }

        let gauge = |name: &str, help: &str| -> Result<IntGauge, prometheus::Error> {
            let g = IntGauge::new(name, help)?;
            registry.register(Box::new(g.clone()))?;
            Ok(g)
        };
        let counter = |name: &str, help: &str| -> Result<IntCounter, prometheus::Error> {
            let c = IntCounter::new(name, help)?;
            registry.register(Box::new(c.clone()))?;
            Ok(c)
        };
        let report_age = prometheus::GaugeVec::new(
            Opts::new(
                "failoverd_peer_report_age_seconds",
                "Leader: time since each agent's latest report arrived.",
            ),
            &["agent"],
        )?;
        registry.register(Box::new(report_age.clone()))?;
        let reports_received = IntCounterVec::new(
            Opts::new(
                "failoverd_reports_received_total",
                "Reports this agent received as leader, by sending agent.",
            ),
            &["agent"],
        )?;
        registry.register(Box::new(reports_received.clone()))?;
        let gauge_vec = |name: &str, help: &str, labels: &[&str]| {
            let g = prometheus::IntGaugeVec::new(Opts::new(name, help), labels)?;
            registry.register(Box::new(g.clone()))?;
            Ok::<_, prometheus::Error>(g)
        };
        let metrics = ConsensusMetrics {
            verdict: gauge_vec(
                "failoverd_verdict",
                "Leader: 1 for each target's current verdict (up, down, unknown), 0 for the others.",
                &["target", "region", "state"],
            )?,
            votes: gauge_vec(
                "failoverd_verdict_votes",
                "Leader: agents voting each way (up, down, unknown: missing or stale) per target.",
                &["target", "vote"],
            )?,
            region_verdict: gauge_vec(
                "failoverd_region_verdict",
                "Leader: 1 for each region's current verdict (up, down, unknown), 0 for the others.",
                &["region", "state"],
            )?,
            is_leader: gauge(
                "failoverd_raft_is_leader",
                "Whether this agent leads the cluster.",
            )?,
            term: gauge("failoverd_raft_term", "The current Raft term.")?,
            leader_changes: counter(
                "failoverd_raft_leader_changes_total",
                "Times this agent saw a new leader.",
            )?,
            elections_held: gauge(
                "failoverd_raft_elections_held",
                "Whether this agent holds its elections back: it hears no leader, but no quorum of agents has lost it (failoverd's pre-vote).",
            )?,
            report_age,
            reports_sent_failed: counter(
                "failoverd_report_send_failures_total",
                "Reports that could not be delivered to the leader.",
            )?,
        };
        let unauthorized = counter(
            "failoverd_peer_unauthorized_requests_total",
            "Peer requests refused for a missing or wrong cluster secret.",
        )?;

        let topology = Topology::from_config(config);
        let targets = topology
            .targets
            .iter()
            .map(|t| (t.id.clone(), t.region.clone(), t.kind() == TargetKind::Http))
            .collect();
        let agent_ids: Vec<AgentId> = members.iter().map(|m| m.agent.clone()).collect();
        Ok(Arc::new(Consensus {
            raft,
            quorum: config
                .cluster
                .quorum
                .unwrap_or_else(|| verdict::majority(members.len())),
            me,
            reports: Arc::new(ReportBook::new(agent_ids)),
            members,
            client,
            secret,
            metrics,
            unauthorized,
            reports_received,
            targets,
            stale_after: config.cluster.stale_after(),
            report_interval: config
                .probe
                .interval
                .unwrap_or(crate::config::DEFAULT_INTERVAL)
                .min(REPORT_INTERVAL),
            boot: rand::random(),
            state_machine: state_handle,
            data_path: std::sync::Mutex::new(crate::evidence::DataPath::new(config)),
            lease_ttl: config.cluster.lease_ttl(),
            heartbeat: config.cluster.heartbeat_interval(),
            contacts,
            groups: topology.groups(),
            leader_since: std::sync::Mutex::new(None),
            admin: Arc::new(std::sync::OnceLock::new()),
        }))
    }

    /// The router for the peer listener.
    pub fn peer_router(self: &Arc<Self>) -> axum::Router {
        let me = Arc::downgrade(self);
        let leaderless = Arc::downgrade(self);
        peer_api::router(peer_api::PeerState {
            raft: self.raft.clone(),
            secret: self.secret.clone(),
            reports: self.reports.clone(),
            unauthorized: self.unauthorized.clone(),
            reports_received: self.reports_received.clone(),
            contacts: self.contacts.clone(),
            admin: self.admin.clone(),
            verdict: Arc::new(move || {
                let me = me.upgrade()?;
                if me.is_leader() {
                    me.verdict()
                } else {
                    None
                }
            }),
            leaderless: Arc::new(move || {
                leaderless
                    .upgrade()
                    .is_some_and(|me| me.leaderless(Instant::now()))
            }),
        })
    }

    /// The verdict with every agent's votes: this agent's when it leads, else the leader's,
    /// asked over the peer link (`None` when no leader answers within 2 s).
    pub async fn leader_verdict(&self) -> Option<Verdict> {
        if self.is_leader() {
            return self.verdict();
        }
        let leader = self.raft.metrics().borrow().current_leader?;
        let url = self
            .members
            .iter()
            .find(|m| m.node_id == leader)?
            .peer_url
            .clone()?;
        self.client
            .post::<_, Option<Verdict>>(
                &url,
                network::paths::VERDICT,
                &serde_json::Value::Null,
                Duration::from_secs(2),
            )
            .await
            .ok()
            .flatten()
    }

    /// Sets what carries out operators' requests on this agent (once).
    pub fn set_admin_handler(&self, handler: peer_api::AdminHandler) {
        let _already = self.admin.set(handler);
    }

    /// Carries out an operator's request: here when this agent leads, else on the leader
    /// through the peer link.
    pub async fn operate(
        &self,
        request: crate::api::Request,
    ) -> Result<peer_api::Forwarded, OperateError> {
        if self.is_leader() {
            let handler = self
                .admin
                .get()
                .ok_or_else(|| OperateError::NoLeader("this agent is still starting".into()))?;
            return Ok(handler(request).await);
        }
        let leader = self.raft.metrics().borrow().current_leader;
        let Some(leader) = leader else {
            return Err(OperateError::NoLeader(
                "no leader is elected (no quorum?)".into(),
            ));
        };
        let member = self
            .members
            .iter()
            .find(|m| m.node_id == leader)
            .ok_or_else(|| {
                OperateError::NoLeader("the leader is not a configured member".into())
            })?;
        let url = member.peer_url.as_ref().ok_or_else(|| {
            OperateError::NoLeader(format!("no peer URL for the leader {}", member.agent))
        })?;
        self.client
            .post(url, network::paths::ADMIN, &request, OPERATE_TIMEOUT)
            .await
            .map_err(|e| match e {
                network::PeerError::Unreachable { .. } => OperateError::NoLeader(format!(
                    "the leader {} ({url}) cannot be reached: {e}",
                    member.agent
                )),
                e => OperateError::Unanswered(format!(
                    "the leader {} ({url}) did not answer: {e}; the change may have been \
                     committed: check GET /v1/history before trying again",
                    member.agent
                )),
            })
    }

    /// Whether this agent has applied every entry its log holds, so that what it reads from
    /// the state machine (the named primaries) is as fresh as its log.
    pub fn caught_up(&self) -> bool {
        let m = self.raft.metrics().borrow().clone();
        m.last_applied.map(|l| l.index) == m.last_log_index
    }

    /// The member the log names as the writable one of `group`.
    pub fn named_primary(&self, group: &str) -> Option<TargetId> {
        self.state_machine.read(|s| s.primaries.get(group).cloned())
    }

    /// The group of a datastore target.
    pub fn group_of(&self, target: &TargetId) -> Option<&str> {
        self.groups
            .iter()
            .find(|(t, _)| t == target)
            .map(|(_, g)| g.as_str())
    }

    /// As leader: names the primary of every group that has none yet, when fresh reports show
    /// exactly one member of the group in the writable role.
    async fn name_primaries(&self) {
        let named = self.state_machine.read(|s| s.primaries.clone());
        let roles = self.reports.roles(Instant::now(), self.stale_after);
        let mut groups: BTreeMap<&str, Vec<&TargetId>> = BTreeMap::new();
        for (target, group) in &self.groups {
            if named.contains_key(group) {
                continue;
            }
            let writable = roles
                .get(target)
                .is_some_and(|r| r.iter().any(|r| r == "primary" || r == "master"));
            let entry = groups.entry(group.as_str()).or_default();
            if writable {
                entry.push(target);
            }
        }
        for (group, writable) in groups {
            if let [target] = writable.as_slice() {
                let command = types::Command::NamePrimary {
                    group: group.to_owned(),
                    target: (*target).clone(),
                };
                match self.raft.client_write(command).await {
                    Ok(_) => tracing::info!(group, target = %target, "named the primary"),
                    Err(e) => tracing::warn!(group, error = %e, "cannot name the primary"),
                }
            }
        }
    }

    /// As leader: records in the log each primary's acknowledgement rule that differs from
    /// the one the log holds, and forgets the rule of a member now seen as a replica — once
    /// every agent applies such entries.
    async fn record_rules(&self) {
        if !self.reports.all_apply(types::LOG_VERSION) {
            return;
        }
        let held = self.state_machine.read(|s| s.rules.clone());
        let seen = self.reports.acks();
        let replicas = self.reports.replicas(Instant::now(), self.stale_after);
        let changes = seen
            .into_iter()
            .filter(|(target, acks)| held.get(target) != Some(acks))
            .map(|(target, acks)| (target, Some(acks)))
            .chain(
                held.keys()
                    .filter(|t| replicas.contains(*t))
                    .map(|t| (t.clone(), None)),
            );
        for (target, acks) in changes {
            let command = types::Command::PrimaryRule {
                target: target.clone(),
                acks,
            };
            if let Err(e) = self.raft.client_write(command).await {
                tracing::warn!(target = %target, error = %e, "cannot record the primary's rule");
            }
        }
    }

    /// Sends this agent's report to the leader every interval and keeps the metrics current,
    /// until `shutdown`; then stops the Raft node.
    pub async fn run(self: Arc<Self>, board: Arc<HealthBoard>, shutdown: CancellationToken) {
        let gate = tokio::spawn(self.clone().gate_elections(shutdown.clone()));
        let mut ticker = tokio::time::interval(self.report_interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut raft_metrics = self.raft.metrics();
        let mut leader = None;
        let mut seq = 0u64;
        let mut verdict_exported = false;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                changed = raft_metrics.changed() => {
                    if changed.is_err() {
                        tracing::error!("raft stopped");
                        break;
                    }
                    let m = raft_metrics.borrow_and_update().clone();
                    self.metrics.term.set(i64::try_from(m.current_term).unwrap_or(i64::MAX));
                    self.metrics.is_leader.set(i64::from(m.state == ServerState::Leader));
                    if m.current_leader != leader {
                        if m.current_leader.is_some() {
                            self.metrics.leader_changes.inc();
                        }
                        if leader == Some(self.me.node_id) {
                            // Reports held as leader go stale from here on; never decide on them.
                            self.reports.clear();
                        }
                        *self.leader_since.lock().unwrap_or_else(|p| p.into_inner()) =
                            (m.current_leader == Some(self.me.node_id)).then(Instant::now);
                        tracing::info!(
                            term = m.current_term,
                            leader = self.agent_of(m.current_leader).unwrap_or("none"),
                            "leader changed"
                        );
                        leader = m.current_leader;
                    }
                }
                _ = ticker.tick() => {
                    seq += 1;
                    self.send_report(&board, seq, leader).await;
                    if leader == Some(self.me.node_id) {
                        self.name_primaries().await;
                        self.record_rules().await;
                    }
                    verdict_exported = self.export_verdict(verdict_exported);
                    let now = Instant::now();
                    for age in self.reports.ages(now) {
                        if let Some(ms) = age.age_ms {
                            self.metrics.report_age.with_label_values(&[&age.agent])
                                .set(ms as f64 / 1000.0);
                        }
                    }
                }
            }
        }
        if let Err(e) = gate.await {
            tracing::warn!(error = %e, "the election gate stopped with an error");
        }
        if let Err(e) = self.raft.shutdown().await {
            tracing::warn!(error = %e, "raft did not shut down cleanly");
        }
    }

    fn agent_of(&self, node: Option<NodeId>) -> Option<&str> {
        let node = node?;
        self.members
            .iter()
            .find(|m| m.node_id == node)
            .map(|m| m.agent.as_str())
    }

    /// The current verdict, if this agent leads (only the leader holds reports).
    pub fn verdict(&self) -> Option<Verdict> {
        let m = self.raft.metrics().borrow().clone();
        if m.state != ServerState::Leader {
            return None;
        }
        let agents: Vec<AgentId> = self.members.iter().map(|m| m.agent.clone()).collect();
        Some(verdict::decide(
            &agents,
            &self.targets,
            &self.reports.views(Instant::now()),
            self.quorum,
            self.stale_after,
        ))
    }

    /// Whether this agent leads.
    pub fn is_leader(&self) -> bool {
        self.raft.metrics().borrow().state == ServerState::Leader
    }

    /// This agent's id.
    pub fn agent_id(&self) -> &str {
        &self.me.agent
    }

    /// The replicated desired state and history (a copy).
    pub fn desired(&self) -> crate::desired::Desired {
        self.read_desired(Clone::clone)
    }

    /// Reads the replicated desired state without copying it.
    pub fn read_desired<R>(&self, f: impl FnOnce(&crate::desired::Desired) -> R) -> R {
        self.state_machine.read(|s| f(&s.failover))
    }

    /// Commits a command; returns its log index once applied here.
    pub async fn write(&self, command: types::Command) -> Result<u64, String> {
        self.raft
            .client_write(command)
            .await
            .map(|r| r.log_id.index)
            .map_err(|e| e.to_string())
    }

    /// Appends `command` to the log now, behind every command submitted before it, and
    /// returns what waits for it to be committed and applied (its log index). A command
    /// submitted after it commits only if this one does.
    pub async fn submit(
        &self,
        command: types::Command,
    ) -> Result<impl std::future::Future<Output = Result<u64, String>>, String> {
        let answer = self
            .raft
            .client_write_ff(command)
            .await
            .map_err(|e| e.to_string())?;
        Ok(async move {
            match answer.await {
                Ok(Ok(response)) => Ok(response.log_id.index),
                Ok(Err(e)) => Err(e.to_string()),
                Err(_) => Err("the Raft node stopped before the entry was committed".to_owned()),
            }
        })
    }

    /// Confirms with a quorum that this agent still leads (a deposed leader finds out here).
    pub async fn confirm_leader(&self) -> Result<(), String> {
        self.raft
            .ensure_linearizable()
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    /// The Raft handle (for tests and the status of the log).
    pub fn raft(&self) -> &Raft {
        &self.raft
    }
}

/// The first peer that answers that it holds a log, if any. Peers that do not answer (down,
/// or starting just like this agent) count as not initialized: at the first start of a
/// cluster every agent forms it with the same membership, which is safe.
async fn initialized_peer(client: &PeerClient, members: &[Member], me: NodeId) -> Option<String> {
    for member in members.iter().filter(|m| m.node_id != me) {
        let Some(url) = &member.peer_url else {
            continue;
        };
        let answer: Result<serde_json::Value, _> = client
            .post(
                url,
                network::paths::INITIALIZED,
                &(),
                Duration::from_secs(1),
            )
            .await;
        if answer.is_ok_and(|a| a["initialized"] == true) {
            return Some(member.agent.clone());
        }
    }
    None
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
