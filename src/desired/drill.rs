//! Drills as the log records them: readiness reports, a live drill in progress, and the
//! record of one that ended with its milestones.

use serde::{Deserialize, Serialize};

use super::command::{FailoverRecord, Outcome, StepRecord, StepState};

/// One precondition a readiness drill checked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct DrillCheck {
    /// What: `postgres/main`, `redis/sessions`, `route53`, `dns`.
    pub check: String,
    /// Whether it would let a real failover through.
    pub ok: bool,
    /// The candidate, the figure, or what blocks.
    pub detail: String,
    /// Which failovers it matters to.
    #[serde(default)]
    pub scope: CheckScope,
}

/// Which failovers a readiness check matters to.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum CheckScope {
    /// Every failover of the region, a live drill's switchover included.
    #[default]
    Any,
    /// Only a failover that cannot reach the old primary (a partition): a planned
    /// switchover, which fences it for real, does not need it.
    Unreachable,
    /// Not the failover but the healing after it (the old primary's rejoin): shown, and it
    /// leaves the region ready.
    Afterwards,
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
