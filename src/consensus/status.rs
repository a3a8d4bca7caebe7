//! What the status API shows of the cluster: this agent's Raft state, its lease, each member
//! with its silence and lease as the leader counts them, the verdict and the named primaries.

use std::collections::BTreeMap;
use std::time::Instant;

use openraft::ServerState;
use serde::{Deserialize, Serialize};

use super::reports::ReportAge;
use super::{millis, Consensus, Member, NodeId};
use crate::topology::TargetId;
use crate::verdict::{AgentId, Verdict};

impl Consensus {
    /// What the status API shows of the cluster.
    pub fn status(&self) -> ClusterStatus {
        let m = self.raft.metrics().borrow().clone();
        let leading = m.state == ServerState::Leader;
        let ages = if leading {
            self.reports.ages(Instant::now())
        } else {
            Vec::new()
        };
        ClusterStatus {
            agent: self.me.agent.clone(),
            node_id: self.me.node_id,
            state: format!("{:?}", m.state).to_lowercase(),
            leader: self.agent_of(m.current_leader).map(str::to_owned),
            term: m.current_term,
            last_log_index: m.last_log_index,
            last_applied_index: m.last_applied.map(|l| l.index),
            millis_since_quorum_ack: m.millis_since_quorum_ack,
            quorum: self.quorum,
            members: self
                .members
                .iter()
                .map(|member| {
                    let report = ages.iter().find(|a| a.agent == member.agent).cloned();
                    let now = Instant::now();
                    let silence = if leading {
                        self.silence(member, now)
                    } else {
                        None
                    };
                    MemberStatus {
                        member: member.clone(),
                        lease_expired: leading.then(|| self.lease_expired(member, now)),
                        silent_ms: silence.map(|(silent, _)| millis(silent)),
                        silent_since: silence.map(|(_, since)| since),
                        report,
                    }
                })
                .collect(),
            verdict: if leading { self.verdict() } else { None },
            lease: LeaseStatus {
                valid: self.lease_valid(),
                since_leader_contact_ms: self.lease_age(Instant::now()).map(millis),
                ttl_ms: millis(self.lease_ttl),
            },
            primaries: self.state_machine.read(|s| s.primaries.clone()),
            primary_rules: self.state_machine.read(|s| s.rules.clone()),
        }
    }
}

/// The cluster as one agent sees it.
// Fields the CLI does not show default when absent (see `crate::admin`).
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ClusterStatus {
    /// This agent.
    #[serde(default)]
    #[schemars(!default)]
    pub agent: AgentId,
    /// Its node id.
    #[serde(default)]
    #[schemars(!default)]
    pub node_id: NodeId,
    /// `leader`, `follower`, `candidate`, `learner` or `shutdown`.
    pub state: String,
    /// The leader's agent id, if known.
    pub leader: Option<AgentId>,
    /// Current term.
    pub term: u64,
    /// Last log index.
    pub last_log_index: Option<u64>,
    /// Last applied (committed) index.
    pub last_applied_index: Option<u64>,
    /// Leader: milliseconds since a quorum last acknowledged it.
    pub millis_since_quorum_ack: Option<u64>,
    /// Agents needed for a verdict.
    #[serde(default)]
    #[schemars(!default)]
    pub quorum: usize,
    /// Every member, with its latest report's age when this agent leads.
    #[serde(default)]
    #[schemars(!default)]
    pub members: Vec<MemberStatus>,
    /// The verdict per target and region, when this agent leads.
    pub verdict: Option<Verdict>,
    /// This agent's lease.
    pub lease: LeaseStatus,
    /// The writable member of each group, as the log names it.
    #[serde(default)]
    #[schemars(!default)]
    pub primaries: BTreeMap<String, TargetId>,
    /// The acknowledgement rule each primary or master was last seen running, as the log
    /// holds it (what a new leader judges self-fencing by).
    #[serde(default)]
    #[schemars(!default)]
    pub primary_rules: BTreeMap<TargetId, crate::datastore::acks::Acks>,
}

/// An agent's lease.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct LeaseStatus {
    /// Whether it holds it (else its local primaries are fenced).
    pub valid: bool,
    /// Milliseconds since a quorum acknowledged it (leader) or since the leader's last
    /// message (follower).
    pub since_leader_contact_ms: Option<u64>,
    /// The lease period.
    #[serde(default)]
    #[schemars(!default)]
    pub ttl_ms: u64,
}

/// One member in the status.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct MemberStatus {
    /// Who it is.
    #[serde(flatten, deserialize_with = "MemberFields::deserialize")]
    pub member: Member,
    /// Its latest report, as the leader holds it.
    pub report: Option<ReportAge>,
    /// On the leader: whether the member has been silent for `lease_ttl`, so that it has
    /// fenced its own primaries and its region may be failed over.
    pub lease_expired: Option<bool>,
    /// On the leader: milliseconds since the member last renewed its lease, as far as the
    /// leader can tell (see `silent_since`).
    pub silent_ms: Option<u64>,
    /// On the leader: what `silent_ms` is counted from.
    pub silent_since: Option<SilentSince>,
}

/// Reads a [`Member`] back: it derives only `Serialize` where it is defined, so this mirrors its
/// fields for serde (a field added there and not here does not compile).
#[derive(Deserialize)]
#[serde(remote = "Member")]
struct MemberFields {
    agent: AgentId,
    node_id: NodeId,
    region: String,
    peer_url: Option<String>,
}

/// What a leader counts a member's silence from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SilentSince {
    /// The latest contact mark the other members hold of it (it led, or followed one of
    /// them): every member has sent its marks since this leader took office.
    Contacts,
    /// Its latest report, since this leader took office (some member has not sent its
    /// marks).
    Report,
    /// This leader's election (some member has not sent its marks, and it has sent no
    /// report since).
    Election,
}
