//! The step schedule: which steps of a failover may start, and how a failover ended.

use std::collections::BTreeSet;

use super::command::{FailoverRecord, Outcome, StepState};
use super::decision::Step;

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
    // Writes are served once every step but the repointing of replicas succeeded: a replica
    // that did not follow leaves the group short of redundancy, which the healer keeps
    // working on, not a failed failover.
    if record
        .steps
        .iter()
        .all(|s| s.state == StepState::Succeeded || s.step.action.repoints_a_replica())
    {
        Some(Outcome::Completed)
    } else {
        Some(Outcome::Failed)
    }
}

/// The replicas of `record` whose repointing failed: left to the healer.
pub fn unfollowed(record: &FailoverRecord) -> Vec<&str> {
    record
        .steps
        .iter()
        .filter(|s| s.state == StepState::Failed && s.step.action.repoints_a_replica())
        .map(|s| s.step.id.as_str())
        .collect()
}
