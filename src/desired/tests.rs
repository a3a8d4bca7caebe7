//! The desired state's tests: applying commands, the history, the schedule.
use super::*;
use std::collections::BTreeMap;

use crate::topology::TargetId;

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
    let weights: BTreeMap<String, u32> = [("r1".to_string(), 0), ("r2".to_string(), 100)].into();
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
            self_fencing: None,
            exposed: None,
            forced: false,
            planned: false,
        }),
        refusal: None,
        drill: None,
        homeward: Default::default(),
        // As the planner lays them out: fence, then promote; DNS on its own.
        steps: vec![
            Step {
                id: format!("fence:{}", target("a")),
                action: Action::FencePostgres {
                    target: target("a"),
                },
                after: vec![],
            },
            Step {
                id: format!("promote:{}", target("b")),
                action: Action::PromotePostgres {
                    target: target("b"),
                },
                after: vec![format!("fence:{}", target("a"))],
            },
            Step {
                id: "route53:weights".into(),
                action: Action::Route53 {
                    weights,
                    writers: vec![],
                },
                after: vec![],
            },
        ],
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
        replaced_min_replicas: None,
        fence: None,
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
                replaced_min_replicas: None,
                fence: None,
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

#[test]
fn a_live_drill_remembers_where_the_primary_was_and_the_next_promotion_forgets_it() {
    let mut d = Desired::default();
    let mut drain = decision();
    drain.drill = Some(DrillPart::Drain(Box::new(LiveDrill {
        region: "r1".into(),
        actor: "alice".into(),
        reason: "drill".into(),
        hold_ms: 30_000,
        started_ms: 1_000,
        drain_epoch: 0,
        restore_epoch: None,
    })));
    d.apply(FailoverCommand::Decide(Box::new(drain)), 7);
    assert_eq!(
        d.returning.get("postgres/main"),
        Some(&target("a")),
        "the drill moved the primary from a: it goes back there"
    );
    // The return home (or any later promotion of the group) clears it.
    let mut back = decision();
    back.drain.clear();
    back.promotion.as_mut().unwrap().from = target("b");
    back.promotion.as_mut().unwrap().to = target("a");
    d.apply(FailoverCommand::Decide(Box::new(back)), 8);
    assert!(d.returning.is_empty());
    // A restore of a configured home's region asks for it again.
    let mut restore = decision();
    restore.promotion = None;
    restore.drain.clear();
    restore.restore = vec!["r1".into()];
    restore.homeward = [("postgres/main".to_string(), target("a"))].into();
    d.apply(FailoverCommand::Decide(Box::new(restore)), 9);
    assert_eq!(d.returning.get("postgres/main"), Some(&target("a")));
}
