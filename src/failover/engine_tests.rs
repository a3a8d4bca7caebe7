//! The engine's decisions over a three-region cluster held in plain data: region loss,
//! primary loss, drain and restore, pause, the hook's veto, cooldown, the guards, the step
//! schedule — and a property test over random verdicts and positions.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use proptest::prelude::*;

use super::*;
use crate::config::TargetKind;
use crate::consensus::reports::Position;
use crate::datastore::Lsn;
use crate::desired::{Action, FailoverCommand};
use crate::verdict::{TargetVerdict, Verdict};

const REGIONS: [&str; 3] = ["r1", "r2", "r3"];

fn pg(region: &str) -> TargetId {
    TargetId::new(TargetKind::Postgres, "main", &format!("pg-{region}"))
}

fn api(region: &str) -> TargetId {
    TargetId::new(TargetKind::Http, region, "api")
}

fn agent(region: &str) -> String {
    format!("{region}-a")
}

/// Three regions, one agent and one Postgres member each; the primary in r1.
fn settings(pre_hook: bool) -> Settings {
    let roster = Roster {
        pg_home: None,
        redis_homes: Vec::new(),
        agents: REGIONS
            .iter()
            .map(|r| (agent(r), (*r).to_owned()))
            .collect(),
        targets: REGIONS
            .iter()
            .flat_map(|r| {
                [
                    (api(r), (*r).to_owned(), true),
                    (pg(r), (*r).to_owned(), false),
                ]
            })
            .collect(),
        pg_members: REGIONS
            .iter()
            .map(|r| (pg(r), (*r).to_owned(), 100, false))
            .collect(),
        groups: REGIONS
            .iter()
            .map(|r| (pg(r), "postgres/main".to_owned()))
            .collect(),
        clusters: BTreeMap::new(),
        max_lag_on_failover: 1_000,
        synchronous: None,
        redis_self_fencing: None,
    };
    Settings {
        agent_id: agent("r2"),
        regions: REGIONS.iter().map(|r| ((*r).to_owned(), 100)).collect(),
        roster,
        writer_values: HashMap::new(),
        writer_records: BTreeMap::new(),
        route53: true,
        automatic: true,
        auto_failback: false,
        hold_down: Duration::from_secs(30),
        cooldown: Duration::from_secs(300),
        pre_hook,
        rejoin_grace: Duration::from_secs(3),
    }
}

/// What the leader sees: each region's API and member Up or Down by all three agents (a
/// member only by its own region's agent), r1's member primary at `primary_lsn`, the others
/// replicas that received `received[i]`.
struct Scene {
    down: BTreeSet<TargetId>,
    cut_off: BTreeSet<String>,
    primary_lsn: u64,
    received: [u64; 2],
}

impl Scene {
    fn healthy() -> Scene {
        Scene {
            down: BTreeSet::new(),
            cut_off: BTreeSet::new(),
            primary_lsn: 500,
            received: [500, 400],
        }
    }

    fn region_lost(region: &str) -> Scene {
        Scene {
            down: [api(region), pg(region)].into(),
            cut_off: [region.to_owned()].into(),
            ..Scene::healthy()
        }
    }

    fn view(&self) -> LeaderView {
        let all: Vec<String> = REGIONS.iter().map(|r| agent(r)).collect();
        let mut targets = BTreeMap::new();
        let mut regions = BTreeMap::new();
        for r in REGIONS {
            let voters = |id: &TargetId| -> Vec<String> {
                if id.as_str().starts_with("postgres/") {
                    vec![agent(r)]
                } else {
                    all.clone()
                }
            };
            for id in [api(r), pg(r)] {
                let down = self.down.contains(&id);
                let votes = voters(&id);
                let state = match (down, votes.len() >= 2) {
                    (true, true) => State::Down,
                    (false, true) => State::Up,
                    _ => State::Unknown,
                };
                targets.insert(
                    id.clone(),
                    TargetVerdict {
                        state,
                        up: if down { vec![] } else { votes.clone() },
                        down: if down { votes } else { vec![] },
                        unknown: vec![],
                    },
                );
            }
            let api_down = self.down.contains(&api(r));
            regions.insert(r.to_owned(), if api_down { State::Down } else { State::Up });
        }
        // The primary is lost by its own agent's vote and the cluster's data path.
        if self.down.contains(&pg("r1")) {
            if let Some(v) = targets.get_mut(&pg("r1")) {
                v.state = State::Down;
            }
        }
        let mut positions = BTreeMap::new();
        positions.insert(
            pg("r1"),
            Position {
                replica: false,
                replay_lsn: None,
                receive_lsn: None,
                primary_lsn: Some(Lsn(self.primary_lsn)),
                replay_paused: false,
                acks: None,
                streaming: None,
                ..Default::default()
            },
        );
        for (r, received) in ["r2", "r3"].into_iter().zip(self.received) {
            positions.insert(
                pg(r),
                Position {
                    replica: true,
                    replay_lsn: Some(Lsn(received)),
                    receive_lsn: Some(Lsn(received)),
                    primary_lsn: None,
                    replay_paused: false,
                    acks: None,
                    streaming: None,
                    ..Default::default()
                },
            );
        }
        LeaderView {
            verdict: Verdict {
                quorum: 2,
                targets,
                regions,
            },
            positions,
            acks: BTreeMap::new(),
            offsets: BTreeMap::new(),
            clusters: BTreeMap::new(),
            cluster_ids: BTreeMap::new(),
            primaries: [("postgres/main".to_owned(), pg("r1"))].into(),
            cut_off: self.cut_off.clone(),
        }
    }
}

fn at(base: Instant, ms: u64) -> Now {
    Now {
        wall_ms: 1_000_000 + ms,
        mono: base + Duration::from_millis(ms),
    }
}

fn decided(effects: &[Effect]) -> Option<&Decision> {
    effects.iter().find_map(|e| match e {
        Effect::Decide(d) => Some(&**d),
        _ => None,
    })
}

fn refused(effects: &[Effect]) -> Vec<&Refusal> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Refuse(r) => Some(r),
            _ => None,
        })
        .collect()
}

fn waiting(effects: &[Effect]) -> Vec<String> {
    effects
        .iter()
        .find_map(|e| match e {
            Effect::Status { waiting, .. } => Some(waiting.clone()),
            _ => None,
        })
        .unwrap_or_default()
}

fn actions(decision: &Decision) -> Vec<String> {
    decision
        .steps
        .iter()
        .map(|s| match &s.action {
            Action::FencePostgres { target } => format!("fence {target}"),
            Action::PromotePostgres { target } => format!("promote {target}"),
            Action::FollowPostgres { target, .. } => format!("follow {target}"),
            Action::Route53 { weights, .. } => format!("route53 r1={}", weights["r1"]),
            other => format!("{other:?}"),
        })
        .collect()
}

#[test]
fn a_lost_region_is_drained_and_its_primary_replaced_by_the_furthest_replica() {
    let base = Instant::now();
    let mut engine = Engine::new(settings(false));
    let desired = Desired::default();
    let scene = Scene::region_lost("r1");
    // First seen at the first tick; decided at once (no hook): its duration counts from there.
    let effects = engine.tick(&desired, Some(&scene.view()), at(base, 0));
    let decision = decided(&effects).expect("a decision");
    assert_eq!(
        decision.trigger,
        Trigger::RegionDown {
            region: "r1".into()
        }
    );
    assert_eq!(decision.drain, ["r1"]);
    let promotion = decision.promotion.as_ref().expect("a promotion");
    assert_eq!((&promotion.from, &promotion.to), (&pg("r1"), &pg("r2")));
    assert!(promotion.old_primary_cut_off);
    assert_eq!(
        actions(decision),
        [
            format!("fence {}", pg("r1")),
            format!("promote {}", pg("r2")),
            format!("follow {}", pg("r3")),
            "route53 r1=0".to_owned(),
        ]
    );
    assert_eq!(decision.first_seen_ms, 1_000_000);
    assert_eq!(decision.decided_by, agent("r2"));
}

#[test]
fn a_failover_counts_from_when_the_leader_first_saw_the_fault() {
    let base = Instant::now();
    let mut engine = Engine::new(settings(false));
    let paused = Desired {
        paused: true,
        ..Desired::default()
    };
    let scene = Scene::region_lost("r1");
    // Paused: nothing is decided, and the wait is said.
    let effects = engine.tick(&paused, Some(&scene.view()), at(base, 0));
    assert_eq!(decided(&effects), None);
    // Resumed 2 s later: the decision carries the first sighting.
    let effects = engine.tick(&Desired::default(), Some(&scene.view()), at(base, 2_000));
    assert_eq!(
        decided(&effects).expect("a decision").first_seen_ms,
        1_000_000
    );
    // A new term forgets what the last one saw.
    engine.forget();
    let effects = engine.tick(&Desired::default(), Some(&scene.view()), at(base, 3_000));
    assert_eq!(
        decided(&effects).expect("a decision").first_seen_ms,
        1_003_000
    );
}

#[test]
fn a_lost_primary_alone_is_replaced_without_touching_dns() {
    let base = Instant::now();
    let mut engine = Engine::new(settings(false));
    let scene = Scene {
        down: [pg("r1")].into(),
        ..Scene::healthy()
    };
    let effects = engine.tick(&Desired::default(), Some(&scene.view()), at(base, 0));
    let decision = decided(&effects).expect("a decision");
    assert!(matches!(decision.trigger, Trigger::PrimaryDown { .. }));
    assert!(decision.drain.is_empty());
    assert_eq!(decision.promotion.as_ref().map(|p| &p.to), Some(&pg("r2")));
    assert!(!actions(decision).iter().any(|a| a.starts_with("route53")));
}

#[test]
fn a_healthy_cluster_decides_nothing_and_waits_for_nothing() {
    let base = Instant::now();
    let mut engine = Engine::new(settings(false));
    let effects = engine.tick(
        &Desired::default(),
        Some(&Scene::healthy().view()),
        at(base, 0),
    );
    assert_eq!(decided(&effects), None);
    assert!(refused(&effects).is_empty());
    assert!(waiting(&effects).is_empty(), "{:?}", waiting(&effects));
    // Without a verdict (not leading) nothing at all is decided.
    let effects = engine.tick(&Desired::default(), None, at(base, 0));
    assert_eq!(decided(&effects), None);
}

#[test]
fn the_data_loss_guard_refuses_and_the_refusal_is_recorded_once_a_minute() {
    let base = Instant::now();
    let mut engine = Engine::new(settings(false));
    let scene = Scene {
        primary_lsn: 10_000,
        received: [500, 400],
        ..Scene::region_lost("r1")
    };
    let effects = engine.tick(&Desired::default(), Some(&scene.view()), at(base, 0));
    let refusals = refused(&effects);
    assert_eq!(refusals.len(), 1, "{effects:?}");
    assert_eq!(refusals[0].guard, Guard::MaxLagOnFailover);
    // The region is drained all the same: DNS never waits on a datastore.
    let decision = decided(&effects).expect("the drain");
    assert_eq!(decision.drain, ["r1"]);
    assert_eq!(decision.promotion, None);
    // Recorded in the log, it is not recorded again within the minute.
    let mut desired = Desired::default();
    desired.apply(FailoverCommand::Refuse(refusals[0].clone()), 1);
    let effects = engine.tick(&desired, Some(&scene.view()), at(base, 1_000));
    assert!(refused(&effects).is_empty());
    let effects = engine.tick(
        &desired,
        Some(&scene.view()),
        at(base, REFUSAL_REPEAT_MS + 1),
    );
    assert_eq!(refused(&effects).len(), 1);
}

#[test]
fn the_last_region_in_service_is_never_drained() {
    let base = Instant::now();
    let mut engine = Engine::new(settings(false));
    let desired = Desired {
        drained: ["r2".to_owned(), "r3".to_owned()].into(),
        ..Desired::default()
    };
    let effects = engine.tick(
        &desired,
        Some(&Scene::region_lost("r1").view()),
        at(base, 0),
    );
    assert!(decided(&effects).is_none_or(|d| d.drain.is_empty()));
    assert!(
        refused(&effects)
            .iter()
            .any(|r| r.guard == Guard::LastRegion),
        "{effects:?}"
    );
}

#[test]
fn the_hook_is_asked_and_a_veto_holds_for_ten_seconds() {
    let base = Instant::now();
    let mut engine = Engine::new(settings(true));
    let desired = Desired::default();
    let view = Scene::region_lost("r1").view();
    let effects = engine.tick(&desired, Some(&view), at(base, 0));
    assert_eq!(decided(&effects), None, "the hook decides");
    let key = effects
        .iter()
        .find_map(|e| match e {
            Effect::AskHook { key, .. } => Some(key.clone()),
            _ => None,
        })
        .expect("the hook is asked");
    assert_eq!(key, "region/r1");
    let refusals = engine.vetoed(&desired, key, "change freeze", at(base, 0));
    assert_eq!(refusals.len(), 1);
    assert_eq!(refusals[0].guard, Guard::PreHook);
    assert_eq!(refusals[0].reason, "blocked because change freeze");
    let asks = |effects: &[Effect]| {
        effects
            .iter()
            .filter(|e| matches!(e, Effect::AskHook { .. }))
            .count()
    };
    assert_eq!(
        asks(&engine.tick(&desired, Some(&view), at(base, 9_000))),
        0
    );
    assert_eq!(
        asks(&engine.tick(&desired, Some(&view), at(base, 10_000))),
        1
    );
}

#[test]
fn a_drain_is_a_planned_switchover_and_a_restore_puts_the_region_back() {
    let base = Instant::now();
    let engine = Engine::new(settings(false));
    let view = Scene::healthy().view();
    let drain = manual::Operation::Drain {
        region: "r1".into(),
    };
    let decision = engine
        .plan_operation(
            &Desired::default(),
            Some(&view),
            &drain,
            "alice",
            "patching",
            5,
        )
        .expect("a drain");
    assert_eq!(decision.drain, ["r1"]);
    let promotion = decision.promotion.as_ref().expect("its primary moves out");
    assert!(promotion.planned && !promotion.old_primary_cut_off);
    assert_eq!(decision.decided_at_ms, 5);
    let mut desired = Desired::default();
    desired.apply(FailoverCommand::Decide(Box::new(decision)), 3);
    desired.apply(
        finish_command(
            desired.failover(3).expect("recorded"),
            Outcome::Completed,
            10,
            Duration::ZERO,
        ),
        4,
    );
    let restore = manual::Operation::Restore {
        region: "r1".into(),
    };
    let decision = engine
        .plan_operation(&desired, Some(&view), &restore, "alice", "done", 20)
        .expect("a restore");
    assert_eq!(decision.restore, ["r1"]);
    assert_eq!(decision.promotion, None);
    // Not leading: no plan.
    let err = engine
        .plan_operation(&desired, None, &restore, "alice", "done", 20)
        .expect_err("no leader");
    assert_eq!(err.code, "no_leader");
    let _ = base;
}

#[test]
fn after_a_dns_failover_region_changes_wait_for_the_cooldown() {
    let base = Instant::now();
    let mut engine = Engine::new(settings(false));
    let desired = Desired {
        cooldown_until_ms: 1_000_000 + 60_000,
        ..Desired::default()
    };
    let effects = engine.tick(
        &desired,
        Some(&Scene::region_lost("r1").view()),
        at(base, 0),
    );
    // The promotion does not wait; the drain does.
    assert!(decided(&effects).is_none_or(|d| d.drain.is_empty()));
    assert!(
        waiting(&effects).iter().any(|w| w.contains("cooldown")),
        "{:?}",
        waiting(&effects)
    );
}

#[test]
fn steps_start_when_ready_and_a_failover_ends_when_nothing_more_can_run() {
    let engine = Engine::new(settings(false));
    let view = Scene::healthy().view();
    let drain = manual::Operation::Drain {
        region: "r1".into(),
    };
    let decision = engine
        .plan_operation(&Desired::default(), Some(&view), &drain, "alice", "x", 5)
        .expect("a drain");
    let mut desired = Desired::default();
    desired.apply(FailoverCommand::Decide(Box::new(decision)), 3);
    let started = |effects: &[Effect]| -> Vec<String> {
        effects
            .iter()
            .filter_map(|e| match e {
                Effect::RunStep { step, .. } => Some(step.id.clone()),
                _ => None,
            })
            .collect()
    };
    let none = BTreeSet::new();
    let first = started(&schedule(&desired, &none, &none));
    assert!(first.contains(&format!("fence:{}", pg("r1"))), "{first:?}");
    assert!(!first.iter().any(|s| s.starts_with("promote:")));
    // Running here: not started again.
    let running: BTreeSet<(u64, String)> = first.iter().map(|s| (3, s.clone())).collect();
    assert!(started(&schedule(&desired, &running, &none)).is_empty());
    // The fence's success submitted: the promotion may start behind it.
    let fence: BTreeSet<(u64, String)> = [(3, format!("fence:{}", pg("r1")))].into();
    let next = started(&schedule(&desired, &none, &fence));
    assert!(next.contains(&format!("promote:{}", pg("r2"))), "{next:?}");
    // Every step finished: the failover ends, once.
    for id in desired
        .failover(3)
        .expect("recorded")
        .steps
        .iter()
        .map(|s| s.step.id.clone())
        .collect::<Vec<_>>()
    {
        desired.apply(
            FailoverCommand::StepFinished {
                epoch: 3,
                step: id,
                ok: true,
                detail: String::new(),
                at_ms: 9,
                give_up: false,
                replaced_min_replicas: None,
                fence: None,
            },
            4,
        );
    }
    let effects = schedule(&desired, &none, &none);
    assert!(matches!(
        effects.as_slice(),
        [Effect::Finish {
            outcome: Outcome::Completed,
            ..
        }]
    ));
}

fn any_scene() -> impl Strategy<Value = (Vec<bool>, Vec<bool>, u64, [u64; 2])> {
    (
        prop::collection::vec(any::<bool>(), 6),
        prop::collection::vec(any::<bool>(), 3),
        0..2_000u64,
        [0..2_000u64, 0..2_000u64],
    )
}

proptest! {
    /// Whatever the cluster looks like, a decision never drains every region, never
    /// promotes the old primary or a member of a drained region, promotes only past the
    /// data-loss guard, and plans the fence of the old primary before its replacement.
    #[test]
    fn decisions_keep_the_safety_rules((down, cut, primary_lsn, received) in any_scene()) {
        let base = Instant::now();
        let mut engine = Engine::new(settings(false));
        let mut scene = Scene { primary_lsn, received, ..Scene::healthy() };
        for (i, r) in REGIONS.iter().enumerate() {
            if down[2 * i] { scene.down.insert(api(r)); }
            if down[2 * i + 1] { scene.down.insert(pg(r)); }
            if cut[i] { scene.cut_off.insert((*r).to_owned()); }
        }
        let effects = engine.tick(&Desired::default(), Some(&scene.view()), at(base, 0));
        if let Some(d) = decided(&effects) {
            prop_assert!(d.drain.len() < REGIONS.len(), "drains every region: {d:?}");
            if let Some(p) = &d.promotion {
                prop_assert_eq!(&p.from, &pg("r1"));
                prop_assert!(p.to != p.from);
                prop_assert!(!d.drain.iter().any(|r| pg(r) == p.to), "promotes into a drained region");
                let i = if p.to == pg("r2") { 0 } else { 1 };
                prop_assert!(primary_lsn.saturating_sub(received[i]) <= 1_000 || received[i] >= primary_lsn);
                let fence = d.steps.iter().position(|s| matches!(&s.action, Action::FencePostgres { target } if *target == p.from));
                let promote = d.steps.iter().find(|s| matches!(&s.action, Action::PromotePostgres { .. }));
                prop_assert!(fence.is_some());
                let fence_id = format!("fence:{}", p.from);
                prop_assert!(promote.is_some_and(|s| s.after.contains(&fence_id)));
            }
        }
    }
}

/// With `[postgres.synchronous] mode = "quorum"`, the leader asks the named primary to wait
/// for one replica of another region — and nothing more once it runs that rule; relaxed, it
/// goes asynchronous when no replica elsewhere streams; never for a member that is a replica.
#[test]
fn the_leader_keeps_the_quorum_rule_on_the_primary() {
    use crate::datastore::acks::Acks;
    use crate::failover::quorum::{Policy, Tune};
    let mut roster = settings(false).roster;
    let mut view = Scene::healthy().view();
    assert!(roster.tunes(&view).is_empty(), "off: nothing kept");

    roster.synchronous = Some(Policy {
        count: 1,
        relax: false,
    });
    for r in ["r2", "r3"] {
        view.positions.get_mut(&pg(r)).unwrap().streaming = Some(true);
    }
    let want = Tune::Standbys {
        target: pg("r1"),
        value: r#"ANY 1 ("pg-r2", "pg-r3")"#.to_owned(),
    };
    assert_eq!(roster.tunes(&view), vec![want.clone()]);
    // A primary already running it is left alone, whatever the order and case of the names.
    view.acks
        .insert(pg("r1"), Acks::postgres("ANY 1 (PG-R3, pg-r2)", "on", 2));
    assert!(roster.tunes(&view).is_empty());
    // Nobody elsewhere streams: strict keeps the rule (commits wait), relaxed drops it.
    for r in ["r2", "r3"] {
        view.positions.get_mut(&pg(r)).unwrap().streaming = Some(false);
    }
    assert!(roster.tunes(&view).is_empty());
    roster.synchronous = Some(Policy {
        count: 1,
        relax: true,
    });
    assert_eq!(
        roster.tunes(&view),
        vec![Tune::Standbys {
            target: pg("r1"),
            value: String::new(),
        }]
    );
    // The named primary reports as a replica (a failover is under way): not touched.
    view.positions.get_mut(&pg("r1")).unwrap().replica = true;
    assert!(roster.tunes(&view).is_empty());
}

/// Right after a partition of r1 heals, r1's agent still says what it saw while cut off:
/// its primary Down. The leader does not act on that for `rejoin_grace` (its probes need that
/// long to see the member again); a primary still Down after it is replaced.
#[test]
fn a_region_back_from_a_partition_is_not_believed_about_its_primary_at_once() {
    let base = Instant::now();
    let mut engine = Engine::new(settings(false));
    let desired = Desired::default();
    let cut = Scene {
        cut_off: ["r1".to_owned()].into(),
        ..Scene::healthy()
    };
    engine.tick(&desired, Some(&cut.view()), at(base, 0));

    let back = Scene {
        down: [pg("r1")].into(),
        ..Scene::healthy()
    };
    let mut view = back.view();
    view.verdict.targets.get_mut(&pg("r1")).unwrap().state = State::Down;
    let effects = engine.tick(&desired, Some(&view), at(base, 100));
    assert!(
        decided(&effects).is_none_or(|d| d.promotion.is_none()),
        "{effects:?}"
    );
    let effects = engine.tick(&desired, Some(&view), at(base, 2_900));
    assert!(decided(&effects).is_none_or(|d| d.promotion.is_none()));
    let effects = engine.tick(&desired, Some(&view), at(base, 3_200));
    let decision = decided(&effects).expect("a decision once the grace is over");
    assert!(decision.promotion.is_some(), "{decision:?}");
}
