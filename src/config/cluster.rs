//! The `[[peers]]` and `[cluster]` sections: the agents of the cluster, the secret that
//! authenticates their traffic, the quorum, and the timing of Raft and of the lease that
//! fences a cut-off region; with their rules (`validate_peers`, `validate_cluster`,
//! `validate_stale_after`).

use std::collections::HashSet;
use std::time::Duration;

use serde::Deserialize;

use super::validate::Validator;
use super::{AgentConfig, SecretRef};

/// Another agent of the cluster.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerConfig {
    /// The peer's agent id.
    pub id: String,
    /// The region the peer runs in.
    pub region: String,
    /// Base URL of the peer listener, e.g. `https://failoverd.eu-central-1.internal:7071`.
    pub peer_url: String,
    /// Base URL of the peer's admin API.
    pub admin_url: Option<String>,
}

/// Settings shared by every agent.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// Shared secret that authenticates peer traffic; required when peers are configured.
    pub secret: Option<SecretRef>,
    /// Agents that must agree before a target is Down (default: a majority of all agents;
    /// never less than a majority).
    pub quorum: Option<usize>,
    /// A report older than this counts as Unknown (default 3 s).
    #[serde(default, with = "humantime_serde")]
    pub stale_after: Option<Duration>,
    /// Leader heartbeat period (default 100 ms).
    #[serde(default, with = "humantime_serde")]
    pub heartbeat_interval: Option<Duration>,
    /// Base election timeout (default 300 ms). Each agent draws its timeout from its own
    /// range (see [`ClusterConfig::election_range`]), so survivors stand one after the other
    /// and never split the vote. A follower that hears nothing waits the top of its range
    /// (openraft's leader lease) plus its timeout: 0.75 to 1.5 s with three agents and the
    /// defaults, while an 80 ms round trip between regions stays far below it.
    #[serde(default, with = "humantime_serde")]
    pub election_timeout: Option<Duration>,
    /// Without contact with a quorum for this long, an agent fences the primaries of its
    /// region (default 3 s). The leader promotes elsewhere only after it has passed.
    #[serde(default, with = "humantime_serde")]
    pub lease_ttl: Option<Duration>,
    /// A local replica whose link to its primary (or master) in another region has been down
    /// this long votes that primary Down (default 500 ms: as soon as the primary's own agent
    /// can say Down with the default probes; such a vote alone never moves a primary).
    #[serde(default, with = "humantime_serde")]
    pub data_path_down_after: Option<Duration>,
}

/// Default time a replica's link must be down before it counts as a Down vote: the soonest
/// the primary's own agent says Down with the default probes ((fall - 1) x fast interval
/// after its first failed probe), so the second vote does not arrive after the first.
pub const DEFAULT_DATA_PATH_DOWN_AFTER: Duration = Duration::from_millis(500);

/// Default age after which a report counts as Unknown: three probe intervals.
pub const DEFAULT_STALE_AFTER: Duration = Duration::from_secs(3);
/// Default Raft heartbeat period.
pub const DEFAULT_HEARTBEAT: Duration = Duration::from_millis(100);
/// Default shortest election timeout.
pub const DEFAULT_ELECTION_TIMEOUT: Duration = Duration::from_millis(300);

impl ClusterConfig {
    /// `stale_after` with its default.
    pub fn stale_after(&self) -> Duration {
        self.stale_after.unwrap_or(DEFAULT_STALE_AFTER)
    }
    /// `heartbeat_interval` with its default.
    pub fn heartbeat_interval(&self) -> Duration {
        self.heartbeat_interval.unwrap_or(DEFAULT_HEARTBEAT)
    }
    /// `election_timeout` with its default.
    pub fn election_timeout(&self) -> Duration {
        self.election_timeout.unwrap_or(DEFAULT_ELECTION_TIMEOUT)
    }
    /// `data_path_down_after` with its default.
    pub fn data_path_down_after(&self) -> Duration {
        self.data_path_down_after
            .unwrap_or(DEFAULT_DATA_PATH_DOWN_AFTER)
    }
    /// The election timeout range of the agent at `rank` (its place among all agents sorted by
    /// id). Ranks get disjoint, increasing ranges, so after a leader dies the survivors stand
    /// one after the other and never split the vote: rank r draws from
    /// `[base + r·base/2, base + (r+1)·base/2)`.
    pub fn election_range(&self, rank: usize) -> (Duration, Duration) {
        let base = self.election_timeout();
        let step = base / 2;
        let rank = u32::try_from(rank).unwrap_or(u32::MAX);
        let min = base + step * rank;
        (min, min + step)
    }

    /// The longest a follower waits for a silent leader before it stands: openraft's leader
    /// lease (the range's upper end) plus its timeout, for the last-ranked of `agents`.
    pub fn longest_stand(&self, agents: usize) -> Duration {
        let (_, max) = self.election_range(agents.saturating_sub(1));
        max * 2
    }

    /// `lease_ttl` with its default.
    pub fn lease_ttl(&self) -> Duration {
        self.lease_ttl.unwrap_or(DEFAULT_LEASE_TTL)
    }
}

/// How long an agent may go without hearing from a quorum before it fences its local
/// primaries (default 3 s: twice the longest wait before an election with three agents, so a
/// leader change alone never fences; acknowledgements count however late they come within it,
/// so seconds of heavy loss and jitter between regions do not break it; the leader waits this
/// long, plus a margin, before promoting away from a silent region).
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(3);

/// Checks `[[peers]]`: simple, unique ids, configured regions, http(s) URLs, and that the
/// entry of this agent, if listed, names this agent's region.
pub(super) fn validate_peers(
    v: &mut Validator,
    peers: &[PeerConfig],
    agent: &AgentConfig,
    regions: &HashSet<&str>,
) {
    let mut agent_ids = HashSet::new();
    for (i, peer) in peers.iter().enumerate() {
        let key = format!("peers[{i}]");
        v.name(&format!("{key}.id"), &peer.id);
        if peer.id == agent.id && peer.region != agent.region {
            v.push(
                format!("{key}.region"),
                format!(
                    "this is the entry of this agent (agent.id {:?}), so its region must be agent.region {:?}, not {:?}",
                    peer.id, agent.region, peer.region
                ),
            );
        }
        if !agent_ids.insert(peer.id.as_str()) {
            v.push(
                format!("{key}.id"),
                format!(
                    "agent id {:?} is used twice (agent ids must be unique)",
                    peer.id
                ),
            );
        }
        v.region(&format!("{key}.region"), &peer.region, regions);
        v.url(
            &format!("{key}.peer_url"),
            &peer.peer_url,
            &["http", "https"],
        );
        if let Some(url) = &peer.admin_url {
            v.url(&format!("{key}.admin_url"), url, &["http", "https"]);
        }
    }
}

/// Checks `[cluster]` for a cluster of `agents` agents: a secret and a peer listener once
/// there are peers, a quorum of at least a majority, heartbeats well inside the election
/// timeout, and a lease that outlasts an election. `stale_after` is checked apart, by
/// [`validate_stale_after`].
pub(super) fn validate_cluster(
    v: &mut Validator,
    cluster: &ClusterConfig,
    agent: &AgentConfig,
    agents: usize,
) {
    if let Some(secret) = &cluster.secret {
        v.secret("cluster.secret", secret);
    }
    if agents > 1 {
        if cluster.secret.is_none() {
            v.push(
                "cluster.secret",
                "is required when peers are configured: peer traffic must be authenticated",
            );
        }
        if agent.peer_listen.is_none() {
            v.push("agent.peer_listen", "is required when peers are configured");
        }
    }
    if let Some(q) = cluster.quorum {
        let majority = agents / 2 + 1;
        if q < majority || q > agents {
            v.push(
                "cluster.quorum",
                format!(
                    "quorum {q} must be between a majority ({majority}) and the number of agents ({agents}): \
                     below a majority, agents cut off from each other could both decide"
                ),
            );
        }
    }
    let (heartbeat, election) = (cluster.heartbeat_interval(), cluster.election_timeout());
    if heartbeat.is_zero() || heartbeat * 2 >= election {
        v.push(
            "cluster.heartbeat_interval",
            format!(
                "heartbeat_interval ({}) must be > 0 and less than half of election_timeout ({})",
                humantime::format_duration(heartbeat),
                humantime::format_duration(election)
            ),
        );
    }
    let longest_stand = cluster.longest_stand(agents);
    if cluster.lease_ttl() <= longest_stand {
        v.push(
            "cluster.lease_ttl",
            format!(
                "lease_ttl ({}) must be longer than the longest wait before an election ({} with {agents} {}): \
                 an ordinary leader change must not fence primaries",
                humantime::format_duration(cluster.lease_ttl()),
                humantime::format_duration(longest_stand),
                if agents == 1 { "agent" } else { "agents" }
            ),
        );
    }
}

/// Checks `cluster.stale_after`: a report must be able to be fresh.
pub(super) fn validate_stale_after(v: &mut Validator, cluster: &ClusterConfig) {
    if cluster.stale_after.is_some_and(|s| s.is_zero()) {
        v.push("cluster.stale_after", "must be greater than 0");
    }
}
