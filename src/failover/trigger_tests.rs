//! The trigger's decisions over tables of cases.
use super::*;
use crate::desired::{FenceProof, Step};
use crate::failover::candidate::Evidence;

fn id(s: &str) -> TargetId {
    let name = s.rsplit('/').next().unwrap();
    TargetId::new(crate::config::TargetKind::Postgres, "main", name)
}

fn regions() -> Vec<(String, u32)> {
    vec![("r1".into(), 100), ("r2".into(), 100), ("r3".into(), 50)]
}

fn group(primary_down: bool, home_says_down: bool, choice: Choice) -> Group {
    Group {
        group: "postgres/main".into(),
        primary: id("postgres/main/a"),
        primary_region: "r1".into(),
        primary_down,
        home_says_down,
        local_choice: choice.clone(),
        choice,
        followers: vec![id("postgres/main/b"), id("postgres/main/c")],
        local_followers: vec![
            id("postgres/main/a2"),
            id("postgres/main/b"),
            id("postgres/main/c"),
        ],
        self_fencing: SelfFencing::default(),
        if_partitioned: SelfFencing::default(),
        home: None,
        standbys: Vec::new(),
    }
}

fn promote_b() -> Choice {
    Choice::Promote {
        target: id("postgres/main/b"),
        estimated_loss_bytes: 0,
        evidence: Evidence::ReplicaReceived {
            target: id("postgres/main/b"),
            lsn: "0/3000000".into(),
        },
        measured_from: String::new(),
    }
}

fn blocked() -> Choice {
    Choice::Blocked {
        reason: "postgres/main/b would lose 90000 bytes (more than \
                 max_lag_on_failover 65536)"
            .into(),
        guard: Guard::MaxLagOnFailover,
    }
}

#[derive(Clone)]
struct Case {
    desired: Desired,
    states: BTreeMap<String, State>,
    up_for: BTreeMap<String, Duration>,
    cut_off: BTreeSet<String>,
    groups: Vec<Group>,
    redis: Vec<RedisGroup>,
    auto_failback: bool,
    route53: bool,
    automatic: bool,
    now_ms: u64,
    cut_since: BTreeMap<String, u64>,
}

impl Case {
    fn new() -> Case {
        Case {
            desired: Desired::default(),
            states: [("r1", State::Up), ("r2", State::Up), ("r3", State::Up)]
                .map(|(r, s)| (r.to_string(), s))
                .into(),
            up_for: BTreeMap::new(),
            cut_off: BTreeSet::new(),
            groups: vec![group(false, false, promote_b())],
            redis: vec![],
            auto_failback: false,
            route53: true,
            automatic: true,
            now_ms: 1_000_000,
            cut_since: BTreeMap::new(),
        }
    }
    fn region(mut self, r: &str, s: State) -> Case {
        self.states.insert(r.into(), s);
        self
    }
    fn cut(mut self, r: &str) -> Case {
        self.cut_off.insert(r.into());
        self
    }
    fn groups(mut self, g: Vec<Group>) -> Case {
        self.groups = g;
        self
    }
    fn assess(&self) -> Assessment {
        let regions = regions();
        // Cut off a minute ago, unless said otherwise.
        let cut_off_since: BTreeMap<String, u64> = self
            .cut_off
            .iter()
            .map(|r| {
                let since = self.cut_since.get(r).copied();
                (r.clone(), since.unwrap_or(self.now_ms - 60_000))
            })
            .collect();
        assess(&World {
            cut_off_since: &cut_off_since,
            now_ms: self.now_ms,
            desired: &self.desired,
            regions: &regions,
            region_state: &self.states,
            region_up_for: &self.up_for,
            cut_off: &self.cut_off,
            groups: &self.groups,
            redis: &self.redis,
            auto_failback: self.auto_failback,
            hold_down: Duration::from_secs(300),
            route53: self.route53,
            automatic: self.automatic,
        })
    }
}

#[test]
fn all_up_does_nothing() {
    assert_eq!(Case::new().assess(), Assessment::default());
}

#[test]
fn a_cut_off_region_is_drained_and_its_primary_promoted_elsewhere() {
    let a = Case::new()
        .region("r1", State::Down)
        .cut("r1")
        .groups(vec![group(true, false, promote_b())])
        .assess();
    let p = a.proposal.expect("a decision");
    assert_eq!(
        p.trigger,
        Trigger::RegionDown {
            region: "r1".into()
        }
    );
    assert_eq!(p.drain, ["r1"]);
    assert_eq!(p.promotion.unwrap().to, id("postgres/main/b"));
    assert_eq!(p.followers, [id("postgres/main/c")]);
}

#[test]
fn a_region_whose_agent_still_holds_its_lease_is_drained_and_its_promotion_waits() {
    // The region's APIs and primary are Down by the others' votes, but its agent is
    // silent for less than lease_ttl: it may still be serving writes unfenced, so the
    // promotion waits; the drain does not.
    let a = Case::new()
        .region("r1", State::Down)
        .groups(vec![group(true, false, promote_b())])
        .assess();
    let p = a.proposal.unwrap();
    assert_eq!(p.drain, ["r1"]);
    assert_eq!(p.promotion, None);
    assert!(p.followers.is_empty() && p.redis.is_empty());
    assert!(a.waiting[0].contains("lease_ttl"), "{:?}", a.waiting);
}

#[test]
fn an_agent_that_reports_its_own_primary_down_allows_the_promotion() {
    let a = Case::new()
        .region("r1", State::Down)
        .groups(vec![group(true, true, promote_b())])
        .assess();
    assert!(a.proposal.unwrap().promotion.is_some());
}

#[test]
fn a_region_down_with_a_healthy_primary_is_only_drained() {
    let a = Case::new().region("r1", State::Down).assess();
    let p = a.proposal.unwrap();
    assert_eq!(p.drain, ["r1"]);
    assert_eq!(p.promotion, None);
}

#[test]
fn a_lagging_candidate_is_refused_but_the_region_still_drains() {
    let a = Case::new()
        .region("r1", State::Down)
        .cut("r1")
        .groups(vec![group(true, false, blocked())])
        .assess();
    let p = a.proposal.unwrap();
    assert_eq!(p.promotion, None);
    assert_eq!(p.drain, ["r1"]);
    let refused = p.refusal.unwrap();
    assert_eq!(refused.guard, Guard::MaxLagOnFailover);
    assert!(refused
        .reason
        .starts_with("blocked because postgres/main/b would lose"));
    assert_eq!(a.refusals, [refused]);
}

#[test]
fn a_primary_down_alone_is_promoted_without_touching_dns_and_regardless_of_cooldown() {
    let mut case = Case::new().groups(vec![group(true, true, promote_b())]);
    case.desired.cooldown_until_ms = case.now_ms + 60_000;
    let p = case.assess().proposal.unwrap();
    assert!(matches!(p.trigger, Trigger::PrimaryDown { .. }));
    assert!(p.drain.is_empty());
    assert!(p.promotion.is_some());
}

#[test]
fn a_refused_promotion_is_decided_once_the_candidate_catches_up() {
    // r1 was drained by an earlier decision that refused the promotion.
    let mut case = Case::new()
        .region("r1", State::Down)
        .cut("r1")
        .groups(vec![group(true, false, blocked())]);
    case.desired.drained.insert("r1".into());
    let a = case.assess();
    assert_eq!(a.proposal, None);
    assert_eq!(a.refusals.len(), 1);
    case.groups = vec![group(true, false, promote_b())];
    let p = case.assess().proposal.unwrap();
    assert!(matches!(p.trigger, Trigger::PrimaryDown { .. }));
}

#[test]
fn paused_in_progress_and_cooldown_hold_automation_back() {
    let mut case = Case::new().region("r1", State::Down).cut("r1");
    case.automatic = false;
    assert_eq!(case.assess().proposal, None, "automatic failover off");
    case.automatic = true;
    case.desired.paused = true;
    assert_eq!(case.assess().proposal, None);
    case.desired.paused = false;
    case.desired.running.insert(4);
    assert_eq!(case.assess().proposal, None);
    case.desired.running.clear();
    // The cooldown holds the drain back, not the promotion of a lost primary.
    case.desired.cooldown_until_ms = case.now_ms + 1;
    let a = case.assess();
    assert!(a.waiting[0].contains("cooldown"));
    let p = a.proposal.expect("the promotion");
    assert!(p.drain.is_empty());
    assert!(p.promotion.is_some());
    case.desired.cooldown_until_ms = case.now_ms;
    assert_eq!(case.assess().proposal.unwrap().drain, ["r1"]);
}

fn decide(case: &mut Case, promotion: Option<Promotion>) -> u64 {
    decide_with_steps(case, promotion, vec![])
}

#[test]
fn a_promotion_does_not_wait_behind_a_dns_change_but_behind_another_promotion() {
    let mut case =
        Case::new()
            .region("r1", State::Down)
            .groups(vec![group(true, true, promote_b())]);
    // A drain of r1 is in progress (waiting for INSYNC): the promotion goes ahead.
    decide(&mut case, None);
    let a = case.assess();
    let p = a.proposal.expect("the promotion");
    assert!(matches!(p.trigger, Trigger::PrimaryDown { .. }));
    // With a promotion of the group in progress, nothing more.
    let promotion = match promote(&case.groups[0], false, false) {
        Ok((p, _)) => p,
        Err(r) => panic!("{r:?}"),
    };
    decide(&mut case, Some(promotion));
    let a = case.assess();
    assert_eq!(a.proposal, None);
    assert!(a
        .waiting
        .iter()
        .any(|w| w.contains("promotion is in progress")));
}

/// Records a decision of r1's drain with these steps, its epoch running.
fn decide_with_steps(case: &mut Case, promotion: Option<Promotion>, steps: Vec<Step>) -> u64 {
    let epoch = case.desired.epoch + 10;
    case.desired.apply(
        crate::desired::FailoverCommand::Decide(Box::new(crate::desired::Decision {
            trigger: Trigger::RegionDown {
                region: "r1".into(),
            },
            decided_by: "a".into(),
            decided_at_ms: 0,
            first_seen_ms: 0,
            drain: vec!["r1".into()],
            restore: vec![],
            promotion,
            redis: vec![],
            refusal: None,
            drill: None,
            homeward: Default::default(),
            steps,
        })),
        epoch,
    );
    epoch
}

fn route53_step() -> Step {
    Step {
        id: "route53:weights".into(),
        action: Action::Route53 {
            weights: [("r1".to_owned(), 0), ("r2".to_owned(), 100)].into(),
            writers: vec![],
        },
        after: vec![],
    }
}

#[test]
fn a_region_change_waits_for_a_dns_change_in_progress() {
    let mut case = Case::new().region("r2", State::Down);
    decide_with_steps(&mut case, None, vec![route53_step()]);
    let a = case.assess();
    assert_eq!(a.proposal, None);
    assert!(
        a.waiting[0].contains("DNS change in progress"),
        "{:?}",
        a.waiting
    );
}

#[test]
fn a_down_region_is_drained_while_a_datastore_step_of_another_failover_runs() {
    // A failover whose DNS change is done but whose follow step still runs (or keeps
    // failing): a region lost meanwhile is drained at once, its group's promotion waits.
    let mut case =
        Case::new()
            .region("r1", State::Down)
            .groups(vec![group(true, true, promote_b())]);
    let promotion = Promotion {
        group: "postgres/main".into(),
        from: id("postgres/main/x"),
        to: id("postgres/main/a"),
        estimated_loss_bytes: 0,
        evidence: String::new(),
        old_primary_cut_off: false,
        self_fencing: None,
        exposed: None,
        forced: false,
        planned: false,
    };
    let follow = Step {
        id: "follow:postgres/main/c".into(),
        action: Action::FollowPostgres {
            target: id("postgres/main/c"),
            primary: id("postgres/main/a"),
        },
        after: vec![],
    };
    let epoch = decide_with_steps(&mut case, Some(promotion), vec![route53_step(), follow]);
    case.desired.apply(
        crate::desired::FailoverCommand::StepFinished {
            epoch,
            step: "route53:weights".into(),
            ok: true,
            detail: String::new(),
            at_ms: 0,
            give_up: false,
            replaced_min_replicas: None,
            fence: None,
        },
        epoch + 1,
    );
    // As if r1 had been put back in DNS since: Down again, it is to be drained again while
    // that failover's follow step still runs.
    case.desired.drained.clear();
    let a = case.assess();
    let p = a.proposal.expect("the drain");
    assert_eq!(p.drain, ["r1"]);
    assert_eq!(p.promotion, None, "the group's promotion is in progress");
    assert!(
        a.waiting
            .iter()
            .any(|w| w.contains("a promotion is in progress")),
        "{:?}",
        a.waiting
    );
}

#[test]
fn a_lost_primary_in_a_serving_region_may_be_replaced_by_a_replica_of_its_region() {
    let local = Choice::Promote {
        target: id("postgres/main/a2"),
        estimated_loss_bytes: 0,
        evidence: Evidence::ReplicaReceived {
            target: id("postgres/main/a2"),
            lsn: "0/3000000".into(),
        },
        measured_from: String::new(),
    };
    let mut g = group(true, true, promote_b());
    g.local_choice = local;
    let p = Case::new()
        .groups(vec![g.clone()])
        .assess()
        .proposal
        .unwrap();
    let promotion = p.promotion.unwrap();
    assert_eq!(
        promotion.to,
        id("postgres/main/a2"),
        "same region, caught up"
    );
    assert!(!promotion.old_primary_cut_off);
    assert_eq!(p.followers, [id("postgres/main/b"), id("postgres/main/c")]);
    // With its region cut off, only other regions qualify.
    let p = Case::new()
        .cut("r1")
        .groups(vec![g])
        .assess()
        .proposal
        .unwrap();
    let promotion = p.promotion.unwrap();
    assert_eq!(promotion.to, id("postgres/main/b"));
    assert!(promotion.old_primary_cut_off);
}

#[test]
fn a_cut_off_region_loses_its_primary_even_while_its_apis_serve() {
    // Its agent fenced the primary when its lease ran out: writes fail everywhere.
    let p = Case::new()
        .cut("r1")
        .assess()
        .proposal
        .expect("a promotion");
    assert!(matches!(p.trigger, Trigger::PrimaryDown { .. }));
    assert!(p.drain.is_empty(), "its APIs still serve");
    assert_eq!(p.promotion.unwrap().to, id("postgres/main/b"));
}

#[test]
fn after_a_failed_failover_retries_wait() {
    let mut case = Case::new().groups(vec![group(true, true, promote_b())]);
    case.desired.last_failed_ms = case.now_ms - 1_000;
    let a = case.assess();
    assert_eq!(a.proposal, None);
    assert!(a.waiting[0].contains("retrying"), "{:?}", a.waiting);
    case.desired.last_failed_ms = case.now_ms - RETRY_AFTER_MS;
    assert!(case.assess().proposal.is_some());
}

#[test]
fn weights_a_failed_dns_change_did_not_write_are_written_again() {
    let mut case = Case::new();
    case.desired.drained.insert("r1".into());
    case.desired.weights = [("r1", 0), ("r2", 100), ("r3", 50)]
        .map(|(r, w)| (r.to_string(), w))
        .into();
    // Nothing written yet: the configured weights stand in Route53.
    let p = case.assess().proposal.expect("a repair");
    assert_eq!(p.trigger, Trigger::DnsRepair);
    case.desired.dns_weights = case.desired.weights.clone();
    assert_eq!(case.assess().proposal, None, "written: nothing to repair");
    case.desired.dns_weights.clear();
    case.desired.dns_refused = Some("batch rejected (InvalidChangeBatch)".into());
    let a = case.assess();
    assert_eq!(a.proposal, None, "refused for good: not retried");
    assert_eq!(a.refusals[0].guard, Guard::DnsEpoch);
    case.desired.dns_refused = None;
    case.route53 = false;
    assert_eq!(case.assess().proposal, None, "no Route53: nothing to write");
}

fn shard(master_down: bool, home_says_down: bool) -> RedisGroup {
    let r = |n: &str| TargetId::new(crate::config::TargetKind::Redis, "sessions", n);
    RedisGroup {
        group: "redis/sessions".into(),
        master: r("m1"),
        master_region: "r1".into(),
        master_down,
        home_says_down,
        candidate: Some((r("m2"), 500)),
        followers: vec![r("m2"), r("m3")],
        local_candidate: Some((r("m1b"), 900)),
        local_followers: vec![r("m1b"), r("m2"), r("m3")],
        ..RedisGroup::default()
    }
}

/// A Redis Cluster master of region r1 serving slots 0-5460, with a replica in r2.
fn cluster_master(electing: bool) -> RedisGroup {
    let n = |n: &str| TargetId::new(crate::config::TargetKind::Redis, "cache", n);
    RedisGroup {
        group: "redis/cache[0-5460]".into(),
        master: n("c1"),
        master_region: "r1".into(),
        master_down: true,
        candidate: Some((n("c4"), 300)),
        local_candidate: Some((n("c4"), 300)),
        slots: vec!["0-5460".into()],
        cluster_electing: electing,
        cluster_grace_ms: 30_000,
        ..RedisGroup::default()
    }
}

#[test]
fn a_cluster_master_of_a_lost_region_is_taken_over_by_its_replica_elsewhere() {
    let mut case = Case::new()
        .region("r1", State::Down)
        .cut("r1")
        .groups(vec![]);
    case.redis = vec![cluster_master(false)];
    let p = case.assess().proposal.expect("a takeover");
    assert_eq!(p.redis.len(), 1);
    assert_eq!(p.redis[0].slots, ["0-5460"]);
    assert!(p.redis[0].to.as_str().ends_with("c4"));
    assert!(p.redis[0].followers.is_empty());
}

#[test]
fn a_cluster_electing_a_new_master_itself_is_left_alone_for_the_grace() {
    let mut case = Case::new().cut("r1").groups(vec![]);
    let mut master = cluster_master(true);
    master.lost_since_ms = Some(case.now_ms - 10_000);
    case.redis = vec![master.clone()];
    let a = case.assess();
    assert_eq!(a.proposal, None, "the cluster's election is under way");
    assert!(
        a.waiting.iter().any(|w| w.contains("cluster's election")),
        "{:?}",
        a.waiting
    );
    // The election did not happen within twice the node timeout: failoverd acts.
    master.lost_since_ms = Some(case.now_ms - 30_000);
    case.redis = vec![master];
    let p = case.assess().proposal.expect("a takeover after the grace");
    assert_eq!(p.redis[0].slots, ["0-5460"]);
    // Without an election under way (too few masters to vote), at once.
    case.redis = vec![cluster_master(false)];
    assert!(case.assess().proposal.is_some());
}

#[test]
fn slots_just_taken_over_are_not_taken_over_again_before_the_view_shows_it() {
    use crate::desired::{Decision, FailoverCommand, Outcome};
    let mut case = Case::new().cut("r1").groups(vec![]);
    case.redis = vec![cluster_master(false)];
    let p = case.assess().proposal.expect("a takeover");
    let decision = Decision {
        trigger: p.trigger,
        decided_by: "a".into(),
        decided_at_ms: case.now_ms,
        first_seen_ms: case.now_ms,
        drain: vec![],
        restore: vec![],
        promotion: None,
        redis: p.redis,
        refusal: None,
        drill: None,
        homeward: Default::default(),
        steps: vec![],
    };
    case.desired
        .apply(FailoverCommand::Decide(Box::new(decision)), 7);
    case.desired.apply(
        FailoverCommand::Finish {
            epoch: 7,
            outcome: Outcome::Completed,
            at_ms: case.now_ms,
            cooldown_until_ms: 0,
        },
        8,
    );
    // The view still shows the old master: no second takeover.
    let a = case.assess();
    assert_eq!(a.proposal, None);
    assert!(
        a.waiting.iter().any(|w| w.contains("just taken over")),
        "{a:?}"
    );
    case.now_ms += TAKEOVER_SETTLE_MS;
    assert!(
        case.assess().proposal.is_some(),
        "a view that never changes: again"
    );
}

#[test]
fn a_lost_region_moves_its_redis_masters_with_its_primary() {
    let mut case = Case::new()
        .region("r1", State::Down)
        .cut("r1")
        .groups(vec![group(true, false, promote_b())]);
    case.redis = vec![shard(true, false)];
    let p = case.assess().proposal.unwrap();
    assert!(p.promotion.is_some());
    assert_eq!(p.redis.len(), 1);
    assert!(
        p.redis[0].to.as_str().ends_with("m2"),
        "outside the lost region"
    );
    assert!(p.redis[0].old_master_cut_off);
    assert_eq!(p.redis[0].followers.len(), 1);
}

#[test]
fn a_lost_redis_master_alone_is_replaced_by_the_furthest_replica() {
    let mut case = Case::new();
    case.redis = vec![shard(true, false)];
    let a = case.assess();
    assert_eq!(
        a.proposal, None,
        "its agent holds its lease and says nothing"
    );
    case.redis = vec![shard(true, true)];
    let p = case.assess().proposal.unwrap();
    assert!(matches!(p.trigger, Trigger::PrimaryDown { .. }));
    assert!(
        p.redis[0].to.as_str().ends_with("m1b"),
        "its own region, furthest"
    );
    assert!(p.drain.is_empty());
    // Without a healthy replica: refused.
    let mut lonely = shard(true, true);
    lonely.local_candidate = None;
    case.redis = vec![lonely];
    let a = case.assess();
    assert_eq!(a.proposal, None);
    assert_eq!(a.refusals[0].guard, Guard::NoCandidate);
}

#[test]
fn the_last_region_in_service_is_never_drained() {
    let mut case = Case::new().region("r3", State::Down);
    case.desired.drained = ["r1".to_string(), "r2".to_string()].into();
    let a = case.assess();
    assert_eq!(a.proposal, None);
    assert_eq!(a.refusals[0].guard, Guard::LastRegion);
}

#[test]
fn failback_needs_the_switch_and_the_hold_down() {
    let mut case = Case::new();
    case.desired.drained.insert("r1".into());
    case.up_for.insert("r1".into(), Duration::from_secs(301));
    assert_eq!(case.assess().proposal, None, "off by default");
    case.auto_failback = true;
    let p = case.assess().proposal.unwrap();
    assert_eq!(p.restore, ["r1"]);
    case.up_for.insert("r1".into(), Duration::from_secs(299));
    assert_eq!(case.assess().proposal, None, "not before the hold-down");
    case.up_for.insert("r1".into(), Duration::from_secs(301));
    case.desired.held.insert("r1".into());
    assert_eq!(
        case.assess().proposal,
        None,
        "an operator's drain waits for an operator's restore"
    );
}

#[test]
fn weights_follow_drains_and_restores() {
    let drained: BTreeSet<String> = ["r3".to_string()].into();
    let p = Proposal {
        trigger: Trigger::RegionDown {
            region: "r1".into(),
        },
        drain: vec!["r1".into()],
        restore: vec![],
        promotion: None,
        followers: vec![],
        redis: vec![],
        refusal: None,
    };
    let w = weights_after(&regions(), &drained, &p);
    assert_eq!(w["r1"], 0);
    assert_eq!(w["r2"], 100);
    assert_eq!(w["r3"], 0);
}

#[test]
fn a_decision_carries_whether_the_old_primary_fences_itself() {
    // The fence step promotes around an unreachable old primary only on these grounds.
    let mut fencing = group(true, false, promote_b());
    fencing.self_fencing = SelfFencing::Holds("needs 1 of none".into());
    for (g, expected) in [
        (group(true, false, promote_b()), None),
        (fencing, Some("needs 1 of none")),
    ] {
        let p = Case::new()
            .region("r1", State::Down)
            .cut("r1")
            .groups(vec![g])
            .assess()
            .proposal
            .expect("a decision");
        let promotion = p.promotion.expect("a promotion");
        assert!(promotion.old_primary_cut_off);
        assert_eq!(promotion.self_fencing.as_deref(), expected);
        assert!(!promotion.forced, "the trigger never forces");
    }
}

/// Records a failover of `postgres/main` away from `a` whose fence step found it unreachable
/// and unconfirmed at `at_ms`, ended `failed` then.
fn unconfirmed_failover(case: &mut Case, at_ms: u64) {
    let promotion = match promote(&case.groups[0], true, true) {
        Ok((p, _)) => p,
        Err(r) => panic!("{r:?}"),
    };
    let fence = Step {
        id: "fence:postgres/main/a".into(),
        action: Action::FencePostgres {
            target: id("postgres/main/a"),
        },
        after: vec![],
    };
    let epoch = decide_with_steps(case, Some(promotion), vec![fence]);
    case.desired.apply(
        crate::desired::FailoverCommand::StepFinished {
            epoch,
            step: "fence:postgres/main/a".into(),
            ok: false,
            detail: "a unreachable".into(),
            at_ms,
            give_up: true,
            replaced_min_replicas: None,
            fence: Some(FenceProof::Unconfirmed),
        },
        epoch + 1,
    );
    case.desired.apply(
        crate::desired::FailoverCommand::Finish {
            epoch,
            outcome: crate::desired::Outcome::Failed,
            at_ms,
            cooldown_until_ms: 0,
        },
        epoch + 2,
    );
}

#[test]
fn an_unconfirmed_old_primary_is_not_tried_again_until_its_group_fences_itself() {
    let mut case = Case::new()
        .cut("r1")
        .groups(vec![group(true, false, promote_b())]);
    let at = case.now_ms - 1_000;
    unconfirmed_failover(&mut case, at);
    assert_eq!(case.desired.last_failed_ms, at);
    let a = case.assess();
    assert_eq!(a.proposal, None, "not tried again at once");
    assert!(
        a.waiting
            .iter()
            .any(|w| w.contains("could not be reached and nothing confirmed it fenced")),
        "{:?}",
        a.waiting
    );

    // Its replicas' links go down: it fences itself, and the promotion goes ahead at once,
    // without the retry wait after a failed failover.
    case.groups[0].self_fencing = SelfFencing::Holds("needs 1 of none".into());
    let p = case.assess().proposal.expect("the promotion");
    let promotion = p.promotion.expect("a promotion");
    assert_eq!(promotion.self_fencing.as_deref(), Some("needs 1 of none"));
}

#[test]
fn an_unconfirmed_old_primary_is_tried_again_later_or_after_a_new_cut() {
    let mut case = Case::new()
        .cut("r1")
        .groups(vec![group(true, false, promote_b())]);
    let at = case.now_ms - 1_000;
    unconfirmed_failover(&mut case, at);
    // It may be reachable again: tried again after UNCONFIRMED_RETRY_MS.
    case.now_ms = at + UNCONFIRMED_RETRY_MS;
    assert!(case.assess().proposal.is_some(), "tried again later");
    // A region cut off again since that attempt: tried at once (after the retry wait).
    case.now_ms = at + RETRY_AFTER_MS;
    case.cut_since.insert("r1".into(), at + 500);
    assert!(case.assess().proposal.is_some(), "a new cut, a new try");
}

#[test]
fn a_lost_primary_that_fences_itself_need_not_wait_for_its_agents_lease() {
    // Its region Down, its agent silent but not yet for lease_ttl: it waits...
    let case = Case::new()
        .region("r1", State::Down)
        .groups(vec![group(true, false, promote_b())]);
    let p = case.assess().proposal.expect("the drain");
    assert_eq!(p.promotion, None, "waits for the lease");
    // ...unless it cannot acknowledge a write by itself.
    let mut fencing = group(true, false, promote_b());
    fencing.self_fencing = SelfFencing::Holds("needs 1 of none".into());
    let p = Case::new()
        .region("r1", State::Down)
        .groups(vec![fencing])
        .assess()
        .proposal
        .expect("a decision");
    let promotion = p.promotion.expect("promoted at once");
    assert_eq!(promotion.self_fencing.as_deref(), Some("needs 1 of none"));
    assert!(!promotion.old_primary_cut_off);
}

#[test]
fn a_lost_region_whose_primaries_fence_themselves_is_failed_over_without_the_lease() {
    // The region's APIs are Down by the others' votes and its agent is silent for less than
    // lease_ttl; only its own agent probes its primary (no verdict on it). Its group fences
    // itself (no replica elsewhere is attached), so it serves nobody: it moves now. A Redis
    // master that does not fence itself yet stays, and holds nothing back.
    let mut g = group(false, false, promote_b());
    g.self_fencing = SelfFencing::Holds("needs 1 of none".into());
    let mut case = Case::new().region("r1", State::Down).groups(vec![g]);
    case.redis = vec![shard(false, false)];
    let a = case.assess();
    let p = a.proposal.unwrap();
    assert_eq!(p.drain, ["r1"]);
    let promotion = p
        .promotion
        .expect("promoted around the self-fenced primary");
    assert_eq!(promotion.self_fencing.as_deref(), Some("needs 1 of none"));
    assert!(p.redis.is_empty(), "{:?}", p.redis);

    // The same region with a primary that does not fence itself: drained only.
    let a = Case::new()
        .region("r1", State::Down)
        .groups(vec![group(false, false, promote_b())])
        .assess();
    assert_eq!(a.proposal.unwrap().promotion, None);
}

fn standby(name: &str, region: &str, choice: Choice) -> super::Standby {
    super::Standby {
        target: id(&format!("postgres/main/{name}")),
        region: region.into(),
        choice,
    }
}

/// The group after a switchover moved its primary from `a` (r1) to `b` (r2).
fn moved_away(home_choice: Choice) -> Group {
    Group {
        primary: id("postgres/main/b"),
        primary_region: "r2".into(),
        local_followers: vec![id("postgres/main/a"), id("postgres/main/c")],
        standbys: vec![
            standby("a", "r1", home_choice),
            standby("c", "r3", blocked()),
        ],
        ..group(false, false, promote_b())
    }
}

fn promote_a() -> Choice {
    Choice::Promote {
        target: id("postgres/main/a"),
        estimated_loss_bytes: 0,
        evidence: Evidence::ReplicaReceived {
            target: id("postgres/main/a"),
            lsn: "0/5000000".into(),
        },
        measured_from: String::new(),
    }
}

#[test]
fn a_primary_returns_home_as_a_planned_switchover_once_home_has_caught_up() {
    let mut case = Case::new().groups(vec![moved_away(promote_a())]);
    // Nothing asks for it: no return.
    assert_eq!(case.assess().proposal, None);
    case.desired
        .returning
        .insert("postgres/main".into(), id("postgres/main/a"));
    let p = case.assess().proposal.expect("a return home");
    assert_eq!(
        p.trigger,
        Trigger::ReturnHome {
            group: "postgres/main".into(),
            member: id("postgres/main/a"),
        }
    );
    let promotion = p.promotion.unwrap();
    assert!(promotion.planned && !promotion.forced);
    assert_eq!(
        (promotion.from, promotion.to),
        (id("postgres/main/b"), id("postgres/main/a"))
    );
    assert!(
        p.drain.is_empty() && p.restore.is_empty(),
        "DNS is not touched"
    );
    assert_eq!(p.followers, [id("postgres/main/c")]);

    // Home not caught up, its region drained, or cut off: it waits, and says why.
    for (case, why) in [
        (
            Case {
                groups: vec![moved_away(Choice::Blocked {
                    reason: "a does not stream from the primary (no WAL receiver streaming)".into(),
                    guard: Guard::NoCandidate,
                })],
                ..case.clone()
            },
            "once it has caught up: a does not stream",
        ),
        (
            Case {
                desired: Desired {
                    drained: ["r1".to_string()].into(),
                    ..case.desired.clone()
                },
                ..case.clone()
            },
            "once region r1 is restored",
        ),
        (case.clone().cut("r1"), "once region r1 is reachable"),
    ] {
        let a = case.assess();
        assert_eq!(a.proposal, None);
        assert!(
            a.waiting.iter().any(|w| w.contains(why)),
            "{why:?} not in {:?}",
            a.waiting
        );
    }
    // Paused, or another failover running: nothing.
    let mut paused = case.clone();
    paused.desired.paused = true;
    assert_eq!(paused.assess().proposal, None);
    let mut running = case.clone();
    running.desired.running.insert(7);
    assert_eq!(running.assess().proposal, None);
}

#[test]
fn auto_failback_returns_a_primary_to_its_configured_home_after_the_cooldown() {
    let mut case = Case::new().groups(vec![Group {
        home: Some(id("postgres/main/a")),
        ..moved_away(promote_a())
    }]);
    assert_eq!(case.assess().proposal, None, "home alone does not move it");
    case.auto_failback = true;
    case.desired.cooldown_until_ms = case.now_ms + 1;
    assert_eq!(case.assess().proposal, None, "cooling down");
    case.desired.cooldown_until_ms = 0;
    let p = case.assess().proposal.expect("a return home");
    assert!(matches!(p.trigger, Trigger::ReturnHome { .. }));
    // At home already: nothing.
    case.groups = vec![Group {
        home: Some(id("postgres/main/a")),
        ..group(false, false, promote_b())
    }];
    assert_eq!(case.assess().proposal, None);
}

/// The shard of [`shard`] with its master moved from m1 (r1) to m2 (r2), m1 and m3 healthy
/// replicas.
fn moved_to_m2() -> RedisGroup {
    let r = |n: &str| TargetId::new(crate::config::TargetKind::Redis, "sessions", n);
    RedisGroup {
        master: r("m2"),
        master_region: "r2".into(),
        local_followers: vec![r("m1"), r("m3")],
        replicas: vec![(r("m1"), "r1".into(), 700), (r("m3"), "r3".into(), 650)],
        ..shard(false, false)
    }
}

#[test]
fn a_redis_master_a_live_drill_moved_returns_home_once_it_is_a_healthy_replica() {
    let r = |n: &str| TargetId::new(crate::config::TargetKind::Redis, "sessions", n);
    // The drill moved the master from m1 (r1) to m2 (r2).
    let moved = RedisGroup {
        replicas: vec![],
        ..moved_to_m2()
    };
    let mut case = Case::new().groups(vec![]);
    case.redis = vec![moved.clone()];
    case.desired
        .returning
        .insert("redis/sessions".into(), r("m1"));
    let a = case.assess();
    assert_eq!(a.proposal, None);
    assert!(
        a.waiting
            .iter()
            .any(|w| w.contains("healthy replica again")),
        "{a:?}"
    );
    case.redis = vec![RedisGroup {
        replicas: vec![(r("m1"), "r1".into(), 700), (r("m3"), "r3".into(), 650)],
        ..moved
    }];
    let p = case.assess().proposal.expect("a return home");
    assert_eq!(p.promotion, None);
    let back = &p.redis[0];
    assert!(back.planned && !back.forced);
    assert_eq!((&back.from, &back.to), (&r("m2"), &r("m1")));
    assert_eq!(back.followers, [r("m3")]);
    assert!(p.drain.is_empty() && p.restore.is_empty());
}

#[test]
fn auto_failback_returns_a_redis_master_to_its_configured_home() {
    let r = |n: &str| TargetId::new(crate::config::TargetKind::Redis, "sessions", n);
    // A failover moved the master from m1 (r1, its home) to m2 (r2); m1 is a healthy replica.
    let moved = RedisGroup {
        home: Some(r("m1")),
        ..moved_to_m2()
    };
    let mut case = Case::new().groups(vec![]);
    case.redis = vec![moved.clone()];
    assert_eq!(case.assess().proposal, None, "home alone does not move it");
    case.auto_failback = true;
    case.desired.cooldown_until_ms = case.now_ms + 1;
    assert_eq!(case.assess().proposal, None, "cooling down");
    case.desired.cooldown_until_ms = 0;
    let p = case.assess().proposal.expect("a return home");
    assert!(matches!(p.trigger, Trigger::ReturnHome { .. }));
    let back = &p.redis[0];
    assert!(back.planned && !back.forced);
    assert_eq!((&back.from, &back.to), (&r("m2"), &r("m1")));
    // At home already: nothing.
    case.redis = vec![RedisGroup {
        master: r("m1"),
        master_region: "r1".into(),
        ..moved
    }];
    assert_eq!(case.assess().proposal, None);
}
