//! The log command and the state it builds: [`FailoverCommand`]s folded by
//! [`Desired::apply`] into the desired state and history every agent holds.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::decision::{Action, Decision, DrillPart, FenceProof, Guard, SlotMove, Step, Trigger};
use super::drill::{DrillReport, LiveDrill, LiveDrillRecord};
use crate::topology::TargetId;

/// How many failovers and refusals the history keeps.
pub const HISTORY_LIMIT: usize = 200;

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
    /// A Redis fence: the `min-replicas-to-write` it replaced, restored if a planned
    /// switchover does not happen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replaced_min_replicas: Option<u32>,
    /// A fence: on what grounds it let the promotion go ahead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fence: Option<FenceProof>,
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
    pub guard: Guard,
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
        /// A Redis fence: the `min-replicas-to-write` it replaced.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        replaced_min_replicas: Option<u32>,
        /// A fence: on what grounds it let the promotion go ahead.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        fence: Option<FenceProof>,
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
    /// Groups whose primary is to go back to a member (group → member) once that member
    /// streams and has caught up: set by a live drill's drain (the primary it moved) and by a
    /// restore (the region of a configured home); cleared by the group's next promotion.
    #[serde(default)]
    pub returning: BTreeMap<String, TargetId>,
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

    /// The member the latest promotion of Postgres `group` moved the primary away from, as
    /// far as the history still holds it.
    pub fn deposed(&self, group: &str) -> Option<&TargetId> {
        self.history.iter().rev().find_map(|e| match e {
            HistoryEntry::Failover(f) => f
                .decision
                .promotion
                .as_ref()
                .filter(|p| p.group == group)
                .map(|p| &p.from),
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
                if let Some(p) = &decision.promotion {
                    self.returning.remove(&p.group);
                    // A live drill leaves the cluster as it found it: the primary it moves
                    // goes back once the drill is over and its old member has caught up.
                    if matches!(decision.drill, Some(DrillPart::Drain(_))) {
                        self.returning.insert(p.group.clone(), p.from.clone());
                    }
                }
                for r in decision.redis.iter().filter(|r| r.slots.is_empty()) {
                    self.returning.remove(&r.group);
                    if matches!(decision.drill, Some(DrillPart::Drain(_))) {
                        self.returning.insert(r.group.clone(), r.from.clone());
                    }
                }
                for (group, member) in &decision.homeward {
                    self.returning.insert(group.clone(), member.clone());
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
                        replaced_min_replicas: None,
                        fence: None,
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
                replaced_min_replicas,
                fence,
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
                        record.replaced_min_replicas = replaced_min_replicas;
                        record.fence = fence;
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
