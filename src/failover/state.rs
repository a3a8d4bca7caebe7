//! Desired state and history, as the replicated log builds them.
//!
//! Every decision is a log entry: [`Decision`]s (drain, promote, restore), step records,
//! refusals, pauses. [`Desired::apply`] folds them into the state every agent holds, so a new
//! leader knows what was decided, which steps finished and which did not, and carries on
//! from there. The epoch of a decision is the log index of its entry.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

pub use crate::actions::route53::WriterRecord;
use crate::topology::TargetId;

/// How many failovers and refusals the history keeps.
pub const HISTORY_LIMIT: usize = 200;

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
    /// An operator asked for it through the admin API.
    Manual {
        /// `drain`, `restore` or `failover`.
        action: String,
        /// The region it concerns.
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

/// One precondition a readiness drill checked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct DrillCheck {
    /// What: `postgres/main`, `redis/sessions`, `route53`, `dns`.
    pub check: String,
    /// Whether it would let a real failover through.
    pub ok: bool,
    /// The candidate, the figure, or what blocks.
    pub detail: String,
}

/// A readiness drill's findings for one region: what failing it over would meet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct DrillRegion {
    /// The region.
    pub region: String,
    /// Every check passed.
    pub ready: bool,
    /// The checks.
    pub checks: Vec<DrillCheck>,
}

/// A readiness drill: every precondition of failing over each region, checked without
/// changing anything.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct DrillReport {
    /// Who asked.
    pub actor: String,
    /// Why.
    pub reason: String,
    /// Unix milliseconds.
    pub at_ms: u64,
    /// The leader that ran it.
    pub run_by: String,
    /// Every region ready.
    pub ready: bool,
    /// Per region.
    pub regions: Vec<DrillRegion>,
}

/// A live drill in progress: a region failed over for real (a drain: its primaries move out
/// with no data loss and it leaves DNS), held out, then restored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct LiveDrill {
    /// The region drilled.
    pub region: String,
    /// Who asked.
    pub actor: String,
    /// Why.
    pub reason: String,
    /// How long the region stays out once drained, in milliseconds.
    pub hold_ms: u64,
    /// When it was asked for, Unix milliseconds.
    pub started_ms: u64,
    /// The drain's failover.
    pub drain_epoch: u64,
    /// The restore's failover, once decided.
    #[serde(default)]
    pub restore_epoch: Option<u64>,
}

/// One milestone of a live drill, with the time since the drill started.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Milestone {
    /// What was reached: `drain decided`, a step (`promote:postgres/main/pg-b`), `drained`,
    /// `restore decided`, `restored`.
    pub name: String,
    /// When, Unix milliseconds.
    pub at_ms: u64,
    /// Milliseconds since the drill started.
    pub after_ms: u64,
}

/// A live drill that ended, as the history keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct LiveDrillRecord {
    /// The drill.
    #[serde(flatten)]
    pub drill: LiveDrill,
    /// `completed` when the region was failed over and back; `failed` otherwise.
    pub outcome: Outcome,
    /// Unix milliseconds.
    pub finished_ms: u64,
    /// Every milestone, in order.
    pub milestones: Vec<Milestone>,
    /// What happened, for people.
    pub detail: String,
}

/// The milestones of a live drill: the drain's decision, each of its steps that succeeded,
/// its end, then the same for the restore.
pub fn milestones(
    drill: &LiveDrill,
    drain: Option<&FailoverRecord>,
    restore: Option<&FailoverRecord>,
) -> Vec<Milestone> {
    let mut list = Vec::new();
    let mut at = |name: String, at_ms: u64| {
        list.push(Milestone {
            name,
            at_ms,
            after_ms: at_ms.saturating_sub(drill.started_ms),
        });
    };
    for (phase, done, record) in [
        ("drain", "drained", drain),
        ("restore", "restored", restore),
    ] {
        let Some(record) = record else { continue };
        at(format!("{phase} decided"), record.decision.decided_at_ms);
        let mut steps: Vec<&StepRecord> = record
            .steps
            .iter()
            .filter(|s| s.state == StepState::Succeeded && s.finished_ms.is_some())
            .collect();
        steps.sort_by_key(|s| s.finished_ms);
        for step in steps {
            at(step.step.id.clone(), step.finished_ms.unwrap_or_default());
        }
        if let (Some(Outcome::Completed), Some(end)) = (record.outcome, record.finished_ms) {
            at(done.to_owned(), end);
        }
    }
    list
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

/// Where a step is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum StepState {
    /// Not started.
    Pending,
    /// Started, not finished (or its leader died while it ran).
    Running,
    /// Finished successfully.
    Succeeded,
    /// Finished without success after its attempts.
    Failed,
    /// Not run because a step it waits for failed.
    Skipped,
}

/// One attempt of a step, as recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Attempt {
    /// The agent that ran it.
    pub agent: String,
    /// Attempt number within that agent's run (1-based).
    pub number: u32,
    /// Start, Unix milliseconds.
    pub started_ms: u64,
    /// Why the attempt before it failed, when it is a retry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_error: Option<String>,
}

/// A step and what happened to it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct StepRecord {
    /// The step.
    #[serde(flatten)]
    pub step: Step,
    /// Where it is.
    pub state: StepState,
    /// Every attempt, in order.
    pub attempts: Vec<Attempt>,
    /// End, Unix milliseconds.
    pub finished_ms: Option<u64>,
    /// What it did, or why it failed.
    pub detail: Option<String>,
}

/// How a failover ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Every step succeeded.
    Completed,
    /// A step failed; what could run ran, the rest was skipped.
    Failed,
}

/// A failover in the history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct FailoverRecord {
    /// Its epoch: the log index of its decision.
    pub epoch: u64,
    /// The decision.
    pub decision: Decision,
    /// Its steps, in plan order.
    pub steps: Vec<StepRecord>,
    /// How it ended, once it has.
    pub outcome: Option<Outcome>,
    /// End, Unix milliseconds.
    pub finished_ms: Option<u64>,
    /// From the first observation of the trigger to the end, in milliseconds.
    #[serde(default)]
    pub duration_ms: Option<u64>,
}

impl FailoverRecord {
    /// The record of step `id`.
    pub fn step(&self, id: &str) -> Option<&StepRecord> {
        self.steps.iter().find(|s| s.step.id == id)
    }
}

/// A trigger that fired but was not acted on, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Refusal {
    /// What it concerns: a group or a region.
    pub subject: String,
    /// The guard that refused: `max_lag_on_failover`, `no_candidate`, `last_region`.
    pub guard: String,
    /// For people: "blocked because …".
    pub reason: String,
    /// Unix milliseconds.
    pub at_ms: u64,
    /// The leader that refused.
    pub by: String,
}

/// One entry of the history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum HistoryEntry {
    /// A failover.
    Failover(Box<FailoverRecord>),
    /// A refusal.
    Refusal(Refusal),
    /// A Redis Cluster slot range changed master.
    SlotsMoved(SlotMove),
    /// A readiness drill.
    Drill(Box<DrillReport>),
    /// A live drill that ended.
    LiveDrill(Box<LiveDrillRecord>),
    /// Automation paused or resumed.
    Mode {
        /// Paused after this entry.
        paused: bool,
        /// Who.
        by: String,
        /// Unix milliseconds.
        at_ms: u64,
        /// Why, in their words.
        #[serde(default)]
        reason: String,
    },
}

/// A log command of the failover machinery.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum FailoverCommand {
    /// A new decision; its log index becomes the epoch.
    Decide(Box<Decision>),
    /// A step attempt begins.
    StepStarted {
        /// The failover.
        epoch: u64,
        /// The step.
        step: String,
        /// The attempt.
        attempt: Attempt,
    },
    /// A step ended.
    StepFinished {
        /// The failover.
        epoch: u64,
        /// The step.
        step: String,
        /// Success.
        ok: bool,
        /// What it did, or why it failed.
        detail: String,
        /// Unix milliseconds.
        at_ms: u64,
        /// The failure is not transient (e.g. Route53 refused the batch): not worth retrying.
        #[serde(default)]
        give_up: bool,
    },
    /// The failover is over; cooldown starts.
    Finish {
        /// The failover.
        epoch: u64,
        /// How it ended.
        outcome: Outcome,
        /// Unix milliseconds.
        at_ms: u64,
        /// No automatic region change before this, Unix milliseconds.
        cooldown_until_ms: u64,
    },
    /// A refusal, recorded once per subject and guard until it changes.
    Refuse(Refusal),
    /// The masters of a Redis Cluster's slot ranges as the leader sees them now, and the
    /// moves since the last record.
    SlotOwners {
        /// The group (`redis/<cluster>`).
        cluster: String,
        /// Master per slot-range list (ranges joined by `,`).
        owners: BTreeMap<String, TargetId>,
        /// The moves, recorded in the history.
        moved: Vec<SlotMove>,
    },
    /// A readiness drill ran; recorded in the history.
    Drill(Box<DrillReport>),
    /// The live drill ended; recorded in the history.
    LiveDrillFinished(Box<LiveDrillRecord>),
    /// Pause or resume automation.
    SetPaused {
        /// Paused after this.
        paused: bool,
        /// Who.
        by: String,
        /// Unix milliseconds.
        at_ms: u64,
        /// Why, in their words.
        #[serde(default)]
        reason: String,
    },
}

/// The desired state and the history, replicated.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Desired {
    /// The epoch of the latest decision (0 before any).
    pub epoch: u64,
    /// Regions out of DNS.
    pub drained: BTreeSet<String>,
    /// Regions an operator drained: only an operator's restore brings them back, never
    /// `auto_failback`.
    #[serde(default)]
    pub held: BTreeSet<String>,
    /// Weight per region as last decided (empty: the configured weights).
    pub weights: BTreeMap<String, u32>,
    /// The epoch the Route53 TXT record holds, as far as the log knows.
    pub dns_epoch: Option<u64>,
    /// Weights the last successful Route53 step wrote.
    pub dns_weights: BTreeMap<String, u32>,
    /// Why the last Route53 step was refused for good (the epoch record was changed outside
    /// this cluster), until a later one succeeds: automatic DNS repairs stop.
    #[serde(default)]
    pub dns_refused: Option<String>,
    /// Automation paused.
    pub paused: bool,
    /// No automatic region change before this, Unix milliseconds.
    pub cooldown_until_ms: u64,
    /// When a failover last ended `failed`, Unix milliseconds (automatic retries wait).
    #[serde(default)]
    pub last_failed_ms: u64,
    /// Failovers in progress, by epoch. A promotion may run next to a region's DNS change
    /// (whose INSYNC wait can take a minute on Route53); two DNS changes never overlap.
    pub running: BTreeSet<u64>,
    /// When each `subject/guard` refusal was last recorded (Unix ms), to record a standing
    /// refusal once a minute rather than at every tick.
    pub refusals: BTreeMap<String, u64>,
    /// The master of each slot-range list of each Redis Cluster, as last recorded.
    #[serde(default)]
    pub slot_owners: BTreeMap<String, BTreeMap<String, TargetId>>,
    /// The live drill in progress, if any.
    #[serde(default)]
    pub live_drill: Option<LiveDrill>,
    /// Failovers, refusals and mode changes, oldest first, at most [`HISTORY_LIMIT`].
    pub history: Vec<HistoryEntry>,
}

impl Desired {
    /// The failover with this epoch.
    pub fn failover(&self, epoch: u64) -> Option<&FailoverRecord> {
        self.history.iter().rev().find_map(|e| match e {
            HistoryEntry::Failover(f) if f.epoch == epoch => Some(&**f),
            _ => None,
        })
    }

    fn failover_mut(&mut self, epoch: u64) -> Option<&mut FailoverRecord> {
        self.history.iter_mut().rev().find_map(|e| match e {
            HistoryEntry::Failover(f) if f.epoch == epoch => Some(&mut **f),
            _ => None,
        })
    }

    /// The failovers in progress, oldest first.
    pub fn in_progress(&self) -> Vec<&FailoverRecord> {
        self.running
            .iter()
            .filter_map(|e| self.failover(*e))
            .collect()
    }

    fn push(&mut self, entry: HistoryEntry) {
        self.history.push(entry);
        // Drop the oldest entries, but never a failover still in progress (it must finish) nor
        // one of the live drill in progress (its milestones are read from them).
        let mut excess = self.history.len().saturating_sub(HISTORY_LIMIT);
        let running = &self.running;
        let drill: Vec<u64> = self
            .live_drill
            .iter()
            .flat_map(|d| std::iter::once(d.drain_epoch).chain(d.restore_epoch))
            .collect();
        self.history.retain(|e| {
            let keep = excess == 0
                || matches!(e, HistoryEntry::Failover(f)
                    if running.contains(&f.epoch) || drill.contains(&f.epoch));
            if !keep {
                excess -= 1;
            }
            keep
        });
    }

    /// Applies one committed command at log `index`. Returns the primary the command names
    /// anew (group → member), for the caller's record of primaries: the promoted member at a
    /// decision, the old primary again when a failover ends without its promotion.
    pub fn apply(&mut self, command: FailoverCommand, index: u64) -> Vec<(String, TargetId)> {
        match command {
            FailoverCommand::Decide(decision) => {
                let decision = *decision;
                self.epoch = index;
                match &decision.drill {
                    Some(DrillPart::Drain(drill)) => {
                        self.live_drill = Some(LiveDrill {
                            drain_epoch: index,
                            restore_epoch: None,
                            ..(**drill).clone()
                        });
                    }
                    Some(DrillPart::Restore) => {
                        if let Some(drill) = &mut self.live_drill {
                            drill.restore_epoch = Some(index);
                        }
                    }
                    None => {}
                }
                let by_operator = matches!(decision.trigger, Trigger::Manual { .. });
                for region in &decision.drain {
                    self.drained.insert(region.clone());
                    if by_operator {
                        self.held.insert(region.clone());
                    }
                }
                for region in &decision.restore {
                    self.drained.remove(region);
                    self.held.remove(region);
                }
                if let Some(weights) = decision.steps.iter().find_map(|s| match &s.action {
                    Action::Route53 { weights, .. } => Some(weights.clone()),
                    _ => None,
                }) {
                    self.weights = weights;
                }
                let named: Vec<(String, TargetId)> = decision
                    .promotion
                    .iter()
                    .map(|p| (p.group.clone(), p.to.clone()))
                    .chain(
                        decision
                            .redis
                            .iter()
                            // A Redis Cluster names its masters itself.
                            .filter(|r| r.slots.is_empty())
                            .map(|r| (r.group.clone(), r.to.clone())),
                    )
                    .collect();
                let steps = decision
                    .steps
                    .iter()
                    .map(|step| StepRecord {
                        step: step.clone(),
                        state: StepState::Pending,
                        attempts: Vec::new(),
                        finished_ms: None,
                        detail: None,
                    })
                    .collect();
                self.running.insert(index);
                self.push(HistoryEntry::Failover(Box::new(FailoverRecord {
                    epoch: index,
                    decision,
                    steps,
                    outcome: None,
                    finished_ms: None,
                    duration_ms: None,
                })));
                named
            }
            FailoverCommand::StepStarted {
                epoch,
                step,
                attempt,
            } => {
                if let Some(record) = self
                    .failover_mut(epoch)
                    .and_then(|f| f.steps.iter_mut().find(|s| s.step.id == step))
                {
                    if record.finished_ms.is_none() {
                        record.state = StepState::Running;
                        record.attempts.push(attempt);
                    }
                }
                Vec::new()
            }
            FailoverCommand::StepFinished {
                epoch,
                step,
                ok,
                detail,
                at_ms,
                give_up,
            } => {
                let mut wrote_dns = None;
                let mut refused_dns = None;
                if let Some(record) = self
                    .failover_mut(epoch)
                    .and_then(|f| f.steps.iter_mut().find(|s| s.step.id == step))
                {
                    // A step finishes once: a late report from a deposed leader is ignored.
                    if record.finished_ms.is_none() {
                        record.state = if ok {
                            StepState::Succeeded
                        } else {
                            StepState::Failed
                        };
                        record.finished_ms = Some(at_ms);
                        record.detail = Some(detail);
                        if let Action::Route53 { weights, .. } = &record.step.action {
                            if ok {
                                wrote_dns = Some(weights.clone());
                            } else if give_up {
                                refused_dns = record.detail.clone();
                            }
                        }
                    }
                }
                if let Some(weights) = wrote_dns {
                    self.dns_epoch = Some(epoch);
                    self.dns_weights = weights;
                    self.dns_refused = None;
                }
                if refused_dns.is_some() {
                    self.dns_refused = refused_dns;
                }
                Vec::new()
            }
            FailoverCommand::Finish {
                epoch,
                outcome,
                at_ms,
                cooldown_until_ms,
            } => {
                let mut renamed = Vec::new();
                if let Some(record) = self.failover_mut(epoch) {
                    // A promotion that did not happen: the old primary is named again, so
                    // that it is not fenced as stale and a later failover can replace it.
                    let promoted = |to: &TargetId| {
                        record.steps.iter().any(|s| {
                            matches!(&s.step.action,
                                Action::PromotePostgres { target } | Action::PromoteRedis { target }
                                if target == to)
                                && s.state == StepState::Succeeded
                        })
                    };
                    if record.outcome.is_none() {
                        if let Some(p) = &record.decision.promotion {
                            if !promoted(&p.to) {
                                renamed.push((p.group.clone(), p.from.clone()));
                            }
                        }
                        for r in record.decision.redis.iter().filter(|r| r.slots.is_empty()) {
                            if !promoted(&r.to) {
                                renamed.push((r.group.clone(), r.from.clone()));
                            }
                        }
                    }
                    if record.outcome.is_none() {
                        record.outcome = Some(outcome);
                        record.finished_ms = Some(at_ms);
                        record.duration_ms =
                            Some(at_ms.saturating_sub(record.decision.first_seen_ms));
                        for step in &mut record.steps {
                            if matches!(step.state, StepState::Pending | StepState::Running) {
                                step.state = StepState::Skipped;
                            }
                        }
                    }
                }
                if self.running.remove(&epoch) {
                    self.cooldown_until_ms = self.cooldown_until_ms.max(cooldown_until_ms);
                    if outcome == Outcome::Failed {
                        self.last_failed_ms = at_ms;
                    }
                }
                renamed
            }
            FailoverCommand::Refuse(refusal) => {
                self.refusals.insert(
                    format!("{}/{}", refusal.subject, refusal.guard),
                    refusal.at_ms,
                );
                self.push(HistoryEntry::Refusal(refusal));
                Vec::new()
            }
            FailoverCommand::SlotOwners {
                cluster,
                owners,
                moved,
            } => {
                self.slot_owners.insert(cluster, owners);
                for m in moved {
                    self.push(HistoryEntry::SlotsMoved(m));
                }
                Vec::new()
            }
            FailoverCommand::Drill(report) => {
                self.push(HistoryEntry::Drill(report));
                Vec::new()
            }
            FailoverCommand::LiveDrillFinished(record) => {
                // Only the drill in progress ends: a late or repeated entry changes nothing.
                if self
                    .live_drill
                    .as_ref()
                    .is_some_and(|d| d.drain_epoch == record.drill.drain_epoch)
                {
                    self.live_drill = None;
                    self.push(HistoryEntry::LiveDrill(record));
                }
                Vec::new()
            }
            FailoverCommand::SetPaused {
                paused,
                by,
                at_ms,
                reason,
            } => {
                self.paused = paused;
                self.push(HistoryEntry::Mode {
                    paused,
                    by,
                    at_ms,
                    reason,
                });
                Vec::new()
            }
        }
    }
}

/// Steps of `record` that may start now: pending (or left running by a leader that is
/// gone), every step they wait for succeeded.
pub fn ready_steps(record: &FailoverRecord) -> Vec<&Step> {
    ready_steps_after(record, &BTreeSet::new())
}

/// [`ready_steps`], also counting as succeeded the steps in `succeeding`: they succeeded and
/// their end is in the log behind them, not yet committed. A step started now is recorded
/// after that end, so its own record commits only once the end has.
pub fn ready_steps_after<'a>(
    record: &'a FailoverRecord,
    succeeding: &BTreeSet<String>,
) -> Vec<&'a Step> {
    record
        .steps
        .iter()
        .filter(|s| matches!(s.state, StepState::Pending | StepState::Running))
        .filter(|s| !succeeding.contains(&s.step.id))
        .filter(|s| {
            s.step.after.iter().all(|dep| {
                succeeding.contains(dep)
                    || record
                        .step(dep)
                        .is_some_and(|d| d.state == StepState::Succeeded)
            })
        })
        .map(|s| &s.step)
        .collect()
}

/// How `record` ends when nothing more can run: `None` while some step can still run or is
/// running.
pub fn settled(record: &FailoverRecord) -> Option<Outcome> {
    // A step that waits (transitively) on a failure can never run.
    let mut dead: BTreeSet<&str> = record
        .steps
        .iter()
        .filter(|s| s.state == StepState::Failed)
        .map(|s| s.step.id.as_str())
        .collect();
    loop {
        let before = dead.len();
        for s in &record.steps {
            if s.step.after.iter().any(|d| dead.contains(d.as_str())) {
                dead.insert(s.step.id.as_str());
            }
        }
        if dead.len() == before {
            break;
        }
    }
    let open = record.steps.iter().any(|s| {
        matches!(s.state, StepState::Pending | StepState::Running)
            && !dead.contains(s.step.id.as_str())
    });
    if open {
        return None;
    }
    if record.steps.iter().all(|s| s.state == StepState::Succeeded) {
        Some(Outcome::Completed)
    } else {
        Some(Outcome::Failed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(name: &str) -> TargetId {
        TargetId::new(crate::config::TargetKind::Postgres, "main", name)
    }

    #[test]
    fn only_a_failover_that_moved_dns_holds_region_changes_back() {
        let cooldown = std::time::Duration::from_secs(300);
        let mut d = decision();
        assert_eq!(d.cooldown_until(10_000, cooldown), 310_000);
        d.drain.clear();
        assert_eq!(d.cooldown_until(10_000, cooldown), 0, "a promotion alone");
        d.restore = vec!["r1".into()];
        assert_eq!(d.cooldown_until(10_000, cooldown), 310_000);
    }

    fn decision() -> Decision {
        let weights: BTreeMap<String, u32> =
            [("r1".to_string(), 0), ("r2".to_string(), 100)].into();
        Decision {
            trigger: Trigger::RegionDown {
                region: "r1".into(),
            },
            decided_by: "a".into(),
            decided_at_ms: 1_000,
            first_seen_ms: 900,
            drain: vec!["r1".into()],
            restore: vec![],
            redis: vec![],
            promotion: Some(Promotion {
                group: "postgres/main".into(),
                from: target("a"),
                to: target("b"),
                estimated_loss_bytes: 0,
                evidence: String::new(),
                old_primary_cut_off: true,
                planned: false,
            }),
            refusal: None,
            drill: None,
            steps: crate::failover::plan::plan(
                Some(&Promotion {
                    group: "postgres/main".into(),
                    from: target("a"),
                    to: target("b"),
                    estimated_loss_bytes: 0,
                    evidence: String::new(),
                    old_primary_cut_off: true,
                    planned: false,
                }),
                &[],
                &[],
                &crate::failover::plan::Dns {
                    route53: true,
                    before: BTreeMap::new(),
                    after: weights,
                    writers: &[],
                },
            ),
        }
    }

    fn attempt(agent: &str) -> Attempt {
        Attempt {
            agent: agent.into(),
            number: 1,
            started_ms: 1_100,
            previous_error: None,
        }
    }

    fn finished(step: &str, ok: bool) -> FailoverCommand {
        FailoverCommand::StepFinished {
            epoch: 7,
            step: step.into(),
            ok,
            detail: "done".into(),
            at_ms: 1_200,
            give_up: false,
        }
    }

    #[test]
    fn a_decision_sets_the_desired_state_and_names_the_new_primary() {
        let mut d = Desired::default();
        let named = d.apply(FailoverCommand::Decide(Box::new(decision())), 7);
        assert_eq!(named, [("postgres/main".to_string(), target("b"))]);
        assert_eq!(d.epoch, 7);
        assert!(d.drained.contains("r1"));
        assert_eq!(d.weights["r1"], 0);
        assert_eq!(d.running, [7].into());
        assert_eq!(d.failover(7).unwrap().steps.len(), 3);
    }

    #[test]
    fn a_live_drill_is_held_in_the_state_and_its_milestones_follow_the_steps() {
        let mut d = Desired::default();
        let drill = LiveDrill {
            region: "r1".into(),
            actor: "alice".into(),
            reason: "drill".into(),
            hold_ms: 30_000,
            started_ms: 1_000,
            drain_epoch: 0,
            restore_epoch: None,
        };
        let mut drain = decision();
        drain.drill = Some(DrillPart::Drain(Box::new(drill.clone())));
        d.apply(FailoverCommand::Decide(Box::new(drain)), 7);
        // The drill and its drain are one log entry: the drain's epoch is the drill's.
        let drill = LiveDrill {
            drain_epoch: 7,
            ..drill
        };
        assert_eq!(d.live_drill.as_ref(), Some(&drill));
        let steps: Vec<String> = d
            .failover(7)
            .unwrap()
            .steps
            .iter()
            .map(|s| s.step.id.clone())
            .collect();
        // Finished in reverse plan order: milestones follow the clock, not the plan.
        for (i, step) in steps.iter().rev().enumerate() {
            d.apply(
                FailoverCommand::StepFinished {
                    epoch: 7,
                    step: step.clone(),
                    ok: true,
                    detail: "done".into(),
                    at_ms: 1_100 + 100 * i as u64,
                    give_up: false,
                },
                9 + i as u64,
            );
        }
        d.apply(
            FailoverCommand::Finish {
                epoch: 7,
                outcome: Outcome::Completed,
                at_ms: 1_600,
                cooldown_until_ms: 0,
            },
            20,
        );
        let mut restore = decision();
        restore.drill = Some(DrillPart::Restore);
        d.apply(FailoverCommand::Decide(Box::new(restore)), 21);
        assert_eq!(d.live_drill.as_ref().unwrap().restore_epoch, Some(21));
        let list = milestones(&drill, d.failover(7), None);
        let names: Vec<&str> = list.iter().map(|m| m.name.as_str()).collect();
        let mut expected = vec!["drain decided"];
        expected.extend(steps.iter().rev().map(String::as_str));
        expected.push("drained");
        assert_eq!(names, expected);
        assert_eq!(list.last().unwrap().after_ms, 600);
        d.apply(
            FailoverCommand::LiveDrillFinished(Box::new(LiveDrillRecord {
                drill: drill.clone(),
                outcome: Outcome::Completed,
                finished_ms: 2_000,
                milestones: list,
                detail: "failed over and back".into(),
            })),
            22,
        );
        assert!(d.live_drill.is_none());
        assert!(matches!(d.history.last(), Some(HistoryEntry::LiveDrill(r)) if r.drill == drill));
        // A repeated end changes nothing.
        let entries = d.history.len();
        d.apply(
            FailoverCommand::LiveDrillFinished(Box::new(LiveDrillRecord {
                drill: drill.clone(),
                outcome: Outcome::Failed,
                finished_ms: 3_000,
                milestones: Vec::new(),
                detail: "again".into(),
            })),
            23,
        );
        assert_eq!(d.history.len(), entries);
    }

    #[test]
    fn a_step_finishes_once_and_a_late_report_from_a_deposed_leader_is_ignored() {
        let mut d = Desired::default();
        d.apply(FailoverCommand::Decide(Box::new(decision())), 7);
        let fence = "fence:postgres/main/a";
        d.apply(
            FailoverCommand::StepStarted {
                epoch: 7,
                step: fence.into(),
                attempt: attempt("a"),
            },
            8,
        );
        d.apply(finished(fence, true), 9);
        // The old leader, unaware, reports the same step again, failed.
        d.apply(
            FailoverCommand::StepStarted {
                epoch: 7,
                step: fence.into(),
                attempt: attempt("old"),
            },
            10,
        );
        d.apply(finished(fence, false), 11);
        let step = d.failover(7).unwrap().step(fence).unwrap();
        assert_eq!(step.state, StepState::Succeeded);
        assert_eq!(step.attempts.len(), 1);
    }

    #[test]
    fn a_dns_step_records_the_epoch_and_the_end_starts_the_cooldown() {
        let mut d = Desired::default();
        d.apply(FailoverCommand::Decide(Box::new(decision())), 7);
        d.apply(finished("route53:weights", true), 8);
        assert_eq!(d.dns_epoch, Some(7));
        assert_eq!(d.dns_weights["r1"], 0);
        d.apply(
            FailoverCommand::Finish {
                epoch: 7,
                outcome: Outcome::Failed,
                at_ms: 2_000,
                cooldown_until_ms: 302_000,
            },
            9,
        );
        assert!(d.running.is_empty());
        assert_eq!(d.cooldown_until_ms, 302_000);
        let record = d.failover(7).unwrap();
        assert_eq!(record.outcome, Some(Outcome::Failed));
        assert_eq!(record.duration_ms, Some(1_100));
        // Steps that never ran are shown as skipped.
        assert!(record
            .steps
            .iter()
            .filter(|s| s.step.id != "route53:weights")
            .all(|s| s.state == StepState::Skipped));
    }

    #[test]
    fn a_failover_ending_without_its_promotion_names_the_old_primary_again() {
        let mut d = Desired::default();
        d.apply(FailoverCommand::Decide(Box::new(decision())), 7);
        d.apply(finished("fence:postgres/main/a", true), 8);
        d.apply(finished("promote:postgres/main/b", false), 9);
        let renamed = d.apply(
            FailoverCommand::Finish {
                epoch: 7,
                outcome: Outcome::Failed,
                at_ms: 2_000,
                cooldown_until_ms: 2_000,
            },
            10,
        );
        assert_eq!(renamed, [("postgres/main".to_string(), target("a"))]);
        assert_eq!(d.last_failed_ms, 2_000);
    }

    #[test]
    fn a_failover_in_progress_is_never_trimmed_from_the_history() {
        let mut d = Desired::default();
        d.apply(FailoverCommand::Decide(Box::new(decision())), 7);
        for i in 0..(HISTORY_LIMIT as u64 + 10) {
            d.apply(
                FailoverCommand::SetPaused {
                    paused: false,
                    by: "sre".into(),
                    at_ms: i,
                    reason: String::new(),
                },
                100 + i,
            );
        }
        assert_eq!(d.history.len(), HISTORY_LIMIT);
        assert!(d.failover(7).is_some(), "still running, still there");
        assert_eq!(d.in_progress().len(), 1);
    }

    #[test]
    fn the_history_keeps_the_latest_entries() {
        let mut d = Desired::default();
        for i in 0..(HISTORY_LIMIT as u64 + 10) {
            d.apply(
                FailoverCommand::SetPaused {
                    paused: i % 2 == 0,
                    by: "sre".into(),
                    at_ms: i,
                    reason: String::new(),
                },
                i,
            );
        }
        assert_eq!(d.history.len(), HISTORY_LIMIT);
        assert!(matches!(d.history[0], HistoryEntry::Mode { at_ms: 10, .. }));
    }
}
