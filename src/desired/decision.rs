//! What a decision is: its trigger, the promotions and the planned steps, as committed to the
//! log.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::drill::LiveDrill;
use crate::actions::route53::WriterRecord;
use crate::topology::TargetId;

/// What set a failover off.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Trigger {
    /// The region's APIs were Down by verdict.
    RegionDown {
        /// The region.
        region: String,
    },
    /// The group's primary was Down by verdict.
    PrimaryDown {
        /// The group (`postgres/<cluster>`).
        group: String,
        /// The primary.
        target: TargetId,
    },
    /// A drained region was Up again for the hold-down (`auto_failback`).
    Failback {
        /// The region.
        region: String,
    },
    /// The weights the log wants were not written by the last DNS change (it failed).
    DnsRepair,
    /// A group's primary moves back to its home member: after a live drill or a restore, or
    /// with `auto_failback`, once that member streams and has caught up.
    ReturnHome {
        /// The group (`postgres/<cluster>`).
        group: String,
        /// The home member.
        member: TargetId,
    },
    /// An operator asked for it through the admin API.
    Manual {
        /// `drain`, `restore`, `failover` or `switchover`.
        action: String,
        /// The region it concerns (a switchover: the region its primary leaves).
        region: String,
        /// Who asked (the admin token's name).
        actor: String,
        /// Why, in their words.
        reason: String,
    },
}

impl Trigger {
    /// A short label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Trigger::RegionDown { .. } => "region_down",
            Trigger::PrimaryDown { .. } => "primary_down",
            Trigger::Failback { .. } => "failback",
            Trigger::DnsRepair => "dns_repair",
            Trigger::ReturnHome { .. } => "return_home",
            Trigger::Manual { .. } => "manual",
        }
    }
}

/// One thing to do; carried out by the executor with [`crate::actions`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Action {
    /// Make the old primary refuse writes, if it can be reached.
    FencePostgres {
        /// The old primary.
        target: TargetId,
    },
    /// Promote the candidate and check that it takes writes.
    PromotePostgres {
        /// The candidate.
        target: TargetId,
    },
    /// Point a replica at the new primary and check that it streams on the new timeline.
    FollowPostgres {
        /// The replica.
        target: TargetId,
        /// The new primary.
        primary: TargetId,
    },
    /// Make the old Redis master refuse writes, if it can be reached.
    FenceRedis {
        /// The old master.
        target: TargetId,
    },
    /// `REPLICAOF NO ONE` on the chosen replica, then check its role and a write.
    PromoteRedis {
        /// The replica.
        target: TargetId,
    },
    /// `REPLICAOF` the new master, then wait until the link is up.
    FollowRedis {
        /// The member.
        target: TargetId,
        /// The new master.
        master: TargetId,
    },
    /// `CLUSTER FAILOVER TAKEOVER` on a replica of a lost Redis Cluster master, then check
    /// that it serves the slots, `cluster_state:ok` and a write to a key in those slots.
    TakeoverRedisCluster {
        /// The replica.
        target: TargetId,
        /// The lost master.
        master: TargetId,
        /// The slot ranges that move.
        slots: Vec<String>,
        /// A planned switchover: `CLUSTER FAILOVER` (the master stops writes and the
        /// replica catches up first, no data lost) instead of `TAKEOVER`.
        #[serde(default)]
        planned: bool,
    },
    /// Set the Route53 weights (and writer records) in one batch fenced by the epoch record,
    /// then wait INSYNC.
    Route53 {
        /// Weight per region after the change.
        weights: BTreeMap<String, u32>,
        /// Writer records to point at the promoted members.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        writers: Vec<WriterRecord>,
    },
}

impl Action {
    /// It points a replica at a new primary or master: nothing waits on it, and the
    /// failover has served writes whether or not it succeeds.
    pub fn repoints_a_replica(&self) -> bool {
        matches!(
            self,
            Action::FollowPostgres { .. } | Action::FollowRedis { .. }
        )
    }
}

/// A step of a plan: an action and the steps it waits for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Step {
    /// Unique within the plan, e.g. `promote:postgres/main/pg-b`.
    pub id: String,
    /// What it does.
    pub action: Action,
    /// Steps that must have succeeded first.
    pub after: Vec<String>,
}

/// The Postgres part of a decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Promotion {
    /// The group.
    pub group: String,
    /// The primary being replaced.
    pub from: TargetId,
    /// The member promoted.
    pub to: TargetId,
    /// Its lag behind the best surviving evidence when chosen: the data-loss estimate.
    pub estimated_loss_bytes: u64,
    /// What that estimate was measured against.
    pub evidence: String,
    /// The old primary's region was cut off (its agents fenced it when their leases ran
    /// out): an old primary that cannot be reached counts as fenced. Otherwise it must be
    /// fenced for real, or found not listening, before the promotion.
    #[serde(default)]
    pub old_primary_cut_off: bool,
    /// Why the old primary refuses writes by itself once cut off (its acknowledgement rule
    /// needs replicas it cannot reach), when it does: only then may an unreachable old
    /// primary of a cut-off region be promoted around automatically (see
    /// [`FenceProof::ByLease`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub self_fencing: Option<String>,
    /// Otherwise, why the old primary may keep taking writes once cut off: what the fence
    /// step says when it cannot reach it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exposed: Option<String>,
    /// An operator forced the failover: an unreachable old primary of a cut-off region is
    /// promoted around even when nothing says it fences itself (see [`FenceProof::Forced`]).
    #[serde(default)]
    pub forced: bool,
    /// A planned switchover: the candidate replays everything the fenced old primary wrote
    /// before it is promoted (zero data loss), or the promotion fails.
    #[serde(default)]
    pub planned: bool,
}

/// The Redis part of a decision: one replication shard, or one master of a Redis Cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct RedisPromotion {
    /// The group (`redis/<shard>`).
    pub group: String,
    /// The master being replaced.
    pub from: TargetId,
    /// The replica promoted (highest replication offset).
    pub to: TargetId,
    /// Its offset when chosen, and the best offset seen among the others.
    pub offset: u64,
    /// The other members to point at it.
    pub followers: Vec<TargetId>,
    /// The old master's region was cut off (see [`Promotion::old_primary_cut_off`]).
    #[serde(default)]
    pub old_master_cut_off: bool,
    /// See [`Promotion::self_fencing`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub self_fencing: Option<String>,
    /// See [`Promotion::exposed`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exposed: Option<String>,
    /// See [`Promotion::forced`].
    #[serde(default)]
    pub forced: bool,
    /// Redis Cluster: the slot ranges that move (empty for a replication shard).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub slots: Vec<String>,
    /// A planned switchover (see [`Promotion::planned`]).
    #[serde(default)]
    pub planned: bool,
}

/// Who moved a Redis Cluster's slot range to a new master.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum MovedBy {
    /// A failoverd decision (`CLUSTER FAILOVER TAKEOVER`).
    Failoverd,
    /// The cluster's own election (or an operator outside failoverd).
    RedisCluster,
}

/// A slot range of a Redis Cluster that changed master.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct SlotMove {
    /// The group (`redis/<cluster>`).
    pub cluster: String,
    /// The slot ranges, as `CLUSTER NODES` lists them.
    pub slots: Vec<String>,
    /// The master that served them.
    pub from: TargetId,
    /// The master that serves them now.
    pub to: TargetId,
    /// Who moved them.
    pub by: MovedBy,
    /// The failover that moved them, when failoverd did.
    pub epoch: Option<u64>,
    /// When the leader saw the move, Unix milliseconds.
    pub at_ms: u64,
}

/// A decision, as committed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Decision {
    /// Why.
    pub trigger: Trigger,
    /// The leader that decided.
    pub decided_by: String,
    /// Wall clock of the decision, Unix milliseconds.
    pub decided_at_ms: u64,
    /// When the leader first saw what triggered it, Unix milliseconds.
    pub first_seen_ms: u64,
    /// Regions taken out of DNS.
    pub drain: Vec<String>,
    /// Regions put back into DNS.
    pub restore: Vec<String>,
    /// The promotion, if any.
    pub promotion: Option<Promotion>,
    /// Redis shards whose master moves.
    #[serde(default)]
    pub redis: Vec<RedisPromotion>,
    /// Why a promotion that was needed was refused ("blocked because …").
    pub refusal: Option<String>,
    /// The steps.
    pub steps: Vec<Step>,
    /// The part this decision plays in a live drill, if any: recorded with the decision, in
    /// one log entry, so that a drill is never half started or half restored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drill: Option<DrillPart>,
    /// Groups whose primary goes back to this member once it streams and has caught up (a
    /// restore brings back the region of a group's configured home).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub homeward: BTreeMap<String, TargetId>,
}

impl Decision {
    /// Until when region changes wait once this failover ends at `now_ms`: `cooldown` after
    /// one that moved DNS (a drain or a restore), so that traffic does not flap between
    /// regions; not at all after one that only promoted datastores — a region lost right
    /// after must still be drained at once.
    pub fn cooldown_until(&self, now_ms: u64, cooldown: std::time::Duration) -> u64 {
        if self.drain.is_empty() && self.restore.is_empty() {
            return 0;
        }
        now_ms.saturating_add(u64::try_from(cooldown.as_millis()).unwrap_or(u64::MAX))
    }
}

/// The part a decision plays in a live drill.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "phase", rename_all = "snake_case")]
pub enum DrillPart {
    /// The drain that starts the drill (its epoch becomes the drill's `drain_epoch`).
    Drain(Box<LiveDrill>),
    /// The restore that ends it.
    Restore,
}

/// One line saying what a decision does, for people (notifications, the status page).
pub fn describe(decision: &Decision) -> String {
    let mut parts = vec![match &decision.trigger {
        Trigger::RegionDown { region } => format!("region {region} down"),
        Trigger::PrimaryDown { target, .. } => format!("primary {target} lost"),
        Trigger::Failback { region } => format!("region {region} back"),
        Trigger::DnsRepair => "DNS weights not written".to_owned(),
        Trigger::ReturnHome { group, member } => format!("{group} returns home to {member}"),
        Trigger::Manual {
            action,
            region,
            actor,
            reason,
        } => format!("{action} {region} by {actor}: {reason}"),
    }];
    if !decision.drain.is_empty() {
        parts.push(format!("drain {}", decision.drain.join(", ")));
    }
    if !decision.restore.is_empty() {
        parts.push(format!("restore {}", decision.restore.join(", ")));
    }
    if let Some(p) = &decision.promotion {
        parts.push(format!(
            "promote {} -> {} (estimated loss {} bytes)",
            p.from, p.to, p.estimated_loss_bytes
        ));
    }
    for r in &decision.redis {
        if r.slots.is_empty() {
            parts.push(format!("redis {} -> {}", r.from, r.to));
        } else {
            parts.push(format!(
                "redis cluster slots {}: {} -> {}",
                r.slots.join(","),
                r.from,
                r.to
            ));
        }
    }
    if let Some(r) = &decision.refusal {
        parts.push(r.clone());
    }
    parts.join("; ")
}

/// On what grounds a fence step let the promotion go ahead.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum FenceProof {
    /// Seen: the member answered fenced, or nothing listens on its port.
    Confirmed,
    /// Assumed: unreachable, its region's agents have been silent past their lease, and its
    /// acknowledgement rule needs replicas it can no longer reach, so it refuses writes.
    ByLease,
    /// Assumed because an operator forced the failover of its cut-off region.
    Forced,
    /// Not fenced and not promoted around (a failed fence step): unreachable in a cut-off
    /// region, and nothing says it refuses writes by itself.
    Unconfirmed,
}

impl FenceProof {
    /// As serialized.
    pub fn as_str(self) -> &'static str {
        match self {
            FenceProof::Confirmed => "confirmed",
            FenceProof::ByLease => "by_lease",
            FenceProof::Forced => "forced",
            FenceProof::Unconfirmed => "unconfirmed",
        }
    }
}

/// The guard that stopped an automatic action: a metric label, a refusal's key and an
/// operator request's error code.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Guard {
    /// Draining the region would leave no region in DNS.
    LastRegion,
    /// No healthy replica may be promoted.
    NoCandidate,
    /// The best candidate would lose more than `postgres.max_lag_on_failover`.
    MaxLagOnFailover,
    /// The pre-failover hook vetoed it.
    PreHook,
    /// The Route53 epoch record does not hold what the log last wrote.
    DnsEpoch,
}

impl Guard {
    /// Every guard: their refusal counters start at 0.
    pub const ALL: [Guard; 5] = [
        Guard::LastRegion,
        Guard::NoCandidate,
        Guard::MaxLagOnFailover,
        Guard::PreHook,
        Guard::DnsEpoch,
    ];

    /// The guard's name, as it is serialized.
    pub fn as_str(self) -> &'static str {
        match self {
            Guard::LastRegion => "last_region",
            Guard::NoCandidate => "no_candidate",
            Guard::MaxLagOnFailover => "max_lag_on_failover",
            Guard::PreHook => "pre_hook",
            Guard::DnsEpoch => "dns_epoch",
        }
    }
}

impl std::fmt::Display for Guard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
