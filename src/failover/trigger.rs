//! When to fail over: a pure function of the verdict, the leases and the desired state.
//!
//! - Nothing automatic while automation is paused. A region change waits for the failovers
//!   in progress; a promotion waits only for another promotion of its group, so it is not
//!   held up behind a DNS change waiting for INSYNC.
//! - A region Down by verdict is drained from DNS (unless that would leave no region
//!   serving), after the cooldown of the previous failover.
//! - The Postgres primary moves when it is Down by verdict, or when its region is Down and
//!   cut off. It moves only once it cannot take writes any more: its region's agents have
//!   been silent for `lease_ttl` (so they fenced it themselves), or one of them — alive and
//!   holding its lease — reports it Down. Until then the leader waits, and says so.
//! - The candidate and its data-loss guard come from [`super::candidate::choose`]; a refusal
//!   is reported, and a region drain goes ahead without the promotion.
//! - A drained region comes back only with `auto_failback`, never one an operator drained,
//!   once Up by verdict for the hold-down.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use super::candidate::Choice;
use crate::desired::{Desired, Promotion, RedisPromotion, Trigger};
use crate::health::State;
use crate::topology::TargetId;

/// A Postgres group as the trigger sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Group {
    /// `postgres/<cluster>`.
    pub group: String,
    /// The primary the log names.
    pub primary: TargetId,
    /// Its region.
    pub primary_region: String,
    /// It is Down by verdict.
    pub primary_down: bool,
    /// An agent of its own region, reporting and within its lease, says it is Down.
    pub home_says_down: bool,
    /// The candidate if the primary's region is lost, or why there is none.
    pub choice: Choice,
    /// Replicas outside the primary's region that are Up: to repoint after a promotion.
    pub followers: Vec<TargetId>,
    /// The candidate when only the primary is lost and its region serves on: replicas of
    /// every region are eligible.
    pub local_choice: Choice,
    /// Replicas of every region that are Up, for a promotion by `local_choice`.
    pub local_followers: Vec<TargetId>,
}

/// A Redis replication shard with a named master, or one master of a Redis Cluster (with
/// its slots), as the trigger sees it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RedisGroup {
    /// `redis/<shard>`, or `redis/<cluster>[<slots>]` for a cluster master.
    pub group: String,
    /// The master the log names.
    pub master: TargetId,
    /// Its region.
    pub master_region: String,
    /// It is Down by verdict.
    pub master_down: bool,
    /// An agent of its own region, reporting and within its lease, says it is Down.
    pub home_says_down: bool,
    /// The healthy replica outside the master's region with the highest offset.
    pub candidate: Option<(TargetId, u64)>,
    /// Healthy members outside the master's region: to point at the new master.
    pub followers: Vec<TargetId>,
    /// The healthy replica of any region with the highest offset.
    pub local_candidate: Option<(TargetId, u64)>,
    /// Healthy members of any region.
    pub local_followers: Vec<TargetId>,
    /// Redis Cluster: the slot ranges the master serves (empty for a replication shard).
    pub slots: Vec<String>,
    /// Redis Cluster: the cluster flagged the master `fail` while a majority of its masters
    /// can vote, so its own election for these slots is under way.
    pub cluster_electing: bool,
    /// Redis Cluster: how long an election under way is left to the cluster (twice
    /// `cluster-node-timeout`), in milliseconds.
    pub cluster_grace_ms: u64,
    /// When the leader first saw the master lost, Unix milliseconds.
    pub lost_since_ms: Option<u64>,
}

/// Everything the trigger looks at.
#[derive(Debug, Clone)]
pub struct World<'a> {
    /// Unix milliseconds now.
    pub now_ms: u64,
    /// The replicated desired state.
    pub desired: &'a Desired,
    /// Configured regions and their in-service weights, in config order.
    pub regions: &'a [(String, u32)],
    /// Regions by verdict.
    pub region_state: &'a BTreeMap<String, State>,
    /// How long each region has been Up by verdict without a break (leader's observation).
    pub region_up_for: &'a BTreeMap<String, Duration>,
    /// Regions whose agents have all been silent for `lease_ttl`: they fenced themselves.
    pub cut_off: &'a BTreeSet<String>,
    /// Postgres groups with a named primary.
    pub groups: &'a [Group],
    /// Redis replication shards with a named master.
    pub redis: &'a [RedisGroup],
    /// `failover.auto_failback`.
    pub auto_failback: bool,
    /// `failover.failback_hold_down`.
    pub hold_down: Duration,
    /// Route53 is configured: weights the log wants but the last DNS change did not write
    /// are written again.
    pub route53: bool,
    /// `failover.automatic`: off, nothing is decided here.
    pub automatic: bool,
}

/// After a failover ended `failed`, automatic retries (a promotion, a DNS change) wait this
/// long, so a step that cannot succeed is not retried in a tight loop.
pub const RETRY_AFTER_MS: u64 = 10_000;

/// A change to decide, before it is planned.
#[derive(Debug, Clone, PartialEq)]
pub struct Proposal {
    /// Why.
    pub trigger: Trigger,
    /// Regions to drain.
    pub drain: Vec<String>,
    /// Regions to restore.
    pub restore: Vec<String>,
    /// The promotion.
    pub promotion: Option<Promotion>,
    /// Replicas to repoint after it.
    pub followers: Vec<TargetId>,
    /// Redis shards whose master moves.
    pub redis: Vec<RedisPromotion>,
    /// A promotion that was needed and refused.
    pub refusal: Option<Refused>,
}

/// A refusal: a guard stopped an automatic action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    /// A group or a region.
    pub subject: String,
    /// `max_lag_on_failover`, `no_candidate` or `last_region`.
    pub guard: String,
    /// "blocked because …".
    pub reason: String,
}

/// What the trigger found.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Assessment {
    /// The change to decide now, if any.
    pub proposal: Option<Proposal>,
    /// Refusals that stand (also those carried in the proposal).
    pub refusals: Vec<Refused>,
    /// Why something that is Down is not acted on yet.
    pub waiting: Vec<String>,
}

fn guard_of(reason: &str) -> &'static str {
    if reason.contains("max_lag_on_failover") {
        "max_lag_on_failover"
    } else {
        "no_candidate"
    }
}

/// The promotion for `group` when its region is lost (`region_lost`: the candidate must be
/// elsewhere) or only its primary (any region), or the refusal.
fn promote(
    group: &Group,
    region_lost: bool,
    cut_off: bool,
) -> Result<(Promotion, Vec<TargetId>), Refused> {
    let (choice, followers) = if region_lost {
        (&group.choice, &group.followers)
    } else {
        (&group.local_choice, &group.local_followers)
    };
    match choice {
        Choice::Promote {
            target,
            estimated_loss_bytes,
            evidence,
        } => Ok((
            Promotion {
                group: group.group.clone(),
                from: group.primary.clone(),
                to: target.clone(),
                estimated_loss_bytes: *estimated_loss_bytes,
                evidence: serde_json::to_string(evidence).unwrap_or_default(),
                old_primary_cut_off: cut_off,
                planned: false,
            },
            followers.iter().filter(|f| *f != target).cloned().collect(),
        )),
        Choice::Blocked { reason } => Err(Refused {
            subject: group.group.clone(),
            guard: guard_of(reason).to_owned(),
            reason: format!("{choice}"),
        }),
    }
}

/// Whether the group's primary may be replaced now; `Err` says what is awaited.
fn may_replace(world: &World<'_>, group: &Group) -> Result<(), String> {
    if world.cut_off.contains(&group.primary_region) || group.home_says_down {
        Ok(())
    } else {
        Err(format!(
            "{}: primary {} is lost, waiting until region {}'s agents have been silent for \
             lease_ttl (they fence it) before promoting elsewhere",
            group.group, group.primary, group.primary_region
        ))
    }
}

/// The Redis promotion for `shard`, or the refusal.
fn promote_redis(
    shard: &RedisGroup,
    region_lost: bool,
    cut_off: bool,
) -> Result<RedisPromotion, Refused> {
    let (candidate, followers) = if region_lost {
        (&shard.candidate, &shard.followers)
    } else {
        (&shard.local_candidate, &shard.local_followers)
    };
    match candidate {
        Some((to, offset)) => Ok(RedisPromotion {
            group: shard.group.clone(),
            from: shard.master.clone(),
            to: to.clone(),
            offset: *offset,
            followers: followers.iter().filter(|f| *f != to).cloned().collect(),
            old_master_cut_off: cut_off,
            slots: shard.slots.clone(),
            planned: false,
        }),
        None => Err(Refused {
            subject: shard.group.clone(),
            guard: "no_candidate".into(),
            reason: format!(
                "blocked because {} has no healthy replica{} to promote",
                shard.group,
                if region_lost {
                    format!(" outside region {}", shard.master_region)
                } else {
                    String::new()
                }
            ),
        }),
    }
}

/// Whether a Redis master may be replaced now (the rule of [`may_replace`]). A Redis Cluster
/// master whose slots the cluster is electing a new master for is left to the cluster, for
/// twice `cluster-node-timeout` from when it was first seen lost.
fn may_replace_redis(world: &World<'_>, shard: &RedisGroup) -> Result<(), String> {
    if shard.cluster_electing {
        let since = shard.lost_since_ms.unwrap_or(world.now_ms);
        let until = since.saturating_add(shard.cluster_grace_ms);
        if world.now_ms < until {
            return Err(format!(
                "{}: master {} is failed in the cluster's own view and a majority of its \
                 masters can vote: leaving slots {} to the cluster's election until {until} \
                 (Unix ms)",
                shard.group,
                shard.master,
                shard.slots.join(",")
            ));
        }
    }
    if world.cut_off.contains(&shard.master_region) || shard.home_says_down {
        Ok(())
    } else {
        Err(format!(
            "{}: master {} is lost, waiting until region {}'s agents have been silent for \
             lease_ttl (they fence it) before promoting elsewhere",
            shard.group, shard.master, shard.master_region
        ))
    }
}

/// After a Redis Cluster takeover, the cluster's view shows the new master only at the next
/// probes: its slots are not taken over again for this long.
pub const TAKEOVER_SETTLE_MS: u64 = 5_000;

/// Redis Cluster groups whose takeover completed less than [`TAKEOVER_SETTLE_MS`] ago.
fn recently_taken_over(world: &World<'_>) -> BTreeSet<String> {
    world
        .desired
        .history
        .iter()
        .filter_map(|e| match e {
            crate::desired::HistoryEntry::Failover(f)
                if f.outcome == Some(crate::desired::Outcome::Completed)
                    && f.finished_ms
                        .is_some_and(|t| world.now_ms < t.saturating_add(TAKEOVER_SETTLE_MS)) =>
            {
                Some(f)
            }
            _ => None,
        })
        .flat_map(|f| {
            f.decision
                .redis
                .iter()
                .filter(|r| !r.slots.is_empty())
                .map(|r| r.group.clone())
        })
        .collect()
}

/// After a failed failover, automatic retries wait [`RETRY_AFTER_MS`].
fn retry_wait(world: &World<'_>) -> Result<(), String> {
    let last = world.desired.last_failed_ms;
    if last > 0 && world.now_ms < last.saturating_add(RETRY_AFTER_MS) {
        Err(format!(
            "a failover failed at {last} (Unix ms): retrying automatically {} s after it",
            RETRY_AFTER_MS / 1000
        ))
    } else {
        Ok(())
    }
}

/// Decides what to do now.
pub fn assess(world: &World<'_>) -> Assessment {
    let mut out = Assessment::default();
    let desired = world.desired;
    if !world.automatic {
        out.waiting
            .push("automatic failover is off (failover.automatic = false)".into());
        return out;
    }
    if desired.paused {
        out.waiting
            .push("automation is paused: nothing is done automatically".into());
        return out;
    }
    let cooling = world.now_ms < desired.cooldown_until_ms;
    let serving: Vec<&str> = world
        .regions
        .iter()
        .filter(|(name, weight)| *weight > 0 && !desired.drained.contains(name))
        .map(|(name, _)| name.as_str())
        .collect();

    // Region changes wait for every failover in progress (two DNS changes never overlap).
    let busy = !desired.running.is_empty();
    // A group whose promotion is in progress is left alone.
    let promoting: BTreeSet<String> = desired
        .running
        .iter()
        .flat_map(|epoch| match desired.failover(*epoch) {
            Some(f) => f
                .decision
                .promotion
                .iter()
                .map(|p| p.group.clone())
                .chain(f.decision.redis.iter().map(|r| r.group.clone()))
                .collect::<Vec<_>>(),
            // A running epoch without its record: assume the worst.
            None => vec![String::new()],
        })
        .collect();
    let promoting_any = promoting.contains("");
    let taken_over = recently_taken_over(world);
    let settling = |shard: &RedisGroup| {
        taken_over.contains(&shard.group).then(|| {
            format!(
                "{}: its slots were just taken over; waiting for the cluster's view to show it",
                shard.group
            )
        })
    };

    // A region Down by verdict.
    for (region, _) in world.regions {
        if desired.drained.contains(region) || world.region_state.get(region) != Some(&State::Down)
        {
            continue;
        }
        if busy {
            out.waiting.push(format!(
                "region {region} is Down: waiting for the failover in progress to finish"
            ));
            continue;
        }
        if cooling {
            out.waiting.push(format!(
                "region {region} is Down, but a failover finished recently: cooldown until {} \
                 (Unix ms)",
                desired.cooldown_until_ms
            ));
            continue;
        }
        if serving.iter().all(|r| r == region) {
            out.refusals.push(Refused {
                subject: format!("region/{region}"),
                guard: "last_region".into(),
                reason: format!(
                    "blocked because draining region {region} would leave no region in DNS"
                ),
            });
            continue;
        }
        let mut proposal = Proposal {
            trigger: Trigger::RegionDown {
                region: region.clone(),
            },
            drain: vec![region.clone()],
            restore: Vec::new(),
            promotion: None,
            followers: Vec::new(),
            redis: Vec::new(),
            refusal: None,
        };
        let mut wait = None;
        // Waiting for the lost primary's agents to fence it holds back its promotion, never
        // the drain: the region is Down either way.
        let mut lease_wait = None;
        for group in world.groups.iter().filter(|g| &g.primary_region == region) {
            // A healthy primary in a region whose APIs are down keeps serving the others;
            // it moves when it is lost itself or its region is cut off.
            if !(group.primary_down || world.cut_off.contains(region)) {
                continue;
            }
            if let Err(why) = may_replace(world, group) {
                lease_wait = Some(why);
                break;
            }
            if let Err(why) = retry_wait(world) {
                wait = Some(why);
                break;
            }
            match promote(group, true, world.cut_off.contains(region)) {
                Ok((promotion, followers)) => {
                    proposal.promotion = Some(promotion);
                    proposal.followers = followers;
                }
                Err(refused) => {
                    out.refusals.push(refused.clone());
                    proposal.refusal = Some(refused);
                }
            }
        }
        for shard in world.redis.iter().filter(|s| &s.master_region == region) {
            if wait.is_some()
                || lease_wait.is_some()
                || !(shard.master_down || world.cut_off.contains(region))
            {
                continue;
            }
            if let Some(why) = settling(shard) {
                out.waiting.push(why);
                continue;
            }
            if let Err(why) = may_replace_redis(world, shard) {
                lease_wait = Some(why);
                break;
            }
            if let Err(why) = retry_wait(world) {
                wait = Some(why);
                break;
            }
            match promote_redis(shard, true, world.cut_off.contains(region)) {
                Ok(p) => proposal.redis.push(p),
                Err(refused) => out.refusals.push(refused),
            }
        }
        if let Some(why) = wait {
            out.waiting.push(why);
            continue;
        }
        if let Some(why) = lease_wait {
            // The drain alone; the promotion follows as its own decision once it may.
            out.waiting.push(why);
            proposal.promotion = None;
            proposal.followers.clear();
            proposal.redis.clear();
            proposal.refusal = None;
        }
        out.proposal = Some(proposal);
        return out;
    }

    // A primary Down by verdict (its region may be drained already, or not Down at all), and
    // Redis masters lost at the same time: one decision.
    let mut pending: Option<Proposal> = None;
    for group in world.groups {
        // Cut off, the region's agents fenced the primary themselves: writes fail even while
        // the region's APIs serve, so the primary moves.
        let cut_off = world.cut_off.contains(&group.primary_region);
        let region_lost = cut_off
            || desired.drained.contains(&group.primary_region)
            || world.region_state.get(&group.primary_region) == Some(&State::Down);
        if !(group.primary_down || cut_off) {
            continue;
        }
        if promoting_any || promoting.contains(&group.group) {
            out.waiting
                .push(format!("{}: a promotion is in progress", group.group));
            continue;
        }
        if let Err(why) = may_replace(world, group) {
            out.waiting.push(why);
            continue;
        }
        if let Err(why) = retry_wait(world) {
            out.waiting.push(why);
            continue;
        }
        match promote(group, region_lost, cut_off) {
            Ok((promotion, followers)) => {
                pending = Some(Proposal {
                    trigger: Trigger::PrimaryDown {
                        group: group.group.clone(),
                        target: group.primary.clone(),
                    },
                    drain: Vec::new(),
                    restore: Vec::new(),
                    promotion: Some(promotion),
                    followers,
                    redis: Vec::new(),
                    refusal: None,
                });
                break;
            }
            Err(refused) => out.refusals.push(refused),
        }
    }

    // A Redis master Down by verdict, or in a cut-off region.
    for shard in world.redis {
        let cut_off = world.cut_off.contains(&shard.master_region);
        let region_lost = cut_off
            || desired.drained.contains(&shard.master_region)
            || world.region_state.get(&shard.master_region) == Some(&State::Down);
        if !(shard.master_down || cut_off) {
            continue;
        }
        if promoting_any || promoting.contains(&shard.group) {
            out.waiting
                .push(format!("{}: a promotion is in progress", shard.group));
            continue;
        }
        if let Some(why) = settling(shard) {
            out.waiting.push(why);
            continue;
        }
        if let Err(why) = may_replace_redis(world, shard).and_then(|()| retry_wait(world)) {
            out.waiting.push(why);
            continue;
        }
        match promote_redis(shard, region_lost, cut_off) {
            Ok(p) => match &mut pending {
                Some(proposal) => proposal.redis.push(p),
                None => {
                    pending = Some(Proposal {
                        trigger: Trigger::PrimaryDown {
                            group: shard.group.clone(),
                            target: shard.master.clone(),
                        },
                        drain: Vec::new(),
                        restore: Vec::new(),
                        promotion: None,
                        followers: Vec::new(),
                        redis: vec![p],
                        refusal: None,
                    })
                }
            },
            Err(refused) => out.refusals.push(refused),
        }
    }
    if pending.is_some() {
        out.proposal = pending;
        return out;
    }

    // Weights the log wants that the last DNS change did not write (it failed): write them.
    if world.route53 && !busy && !desired.weights.is_empty() {
        let written: BTreeMap<String, u32> = if desired.dns_weights.is_empty() {
            world.regions.iter().cloned().collect()
        } else {
            desired.dns_weights.clone()
        };
        if desired.weights != written {
            if let Some(why) = &desired.dns_refused {
                out.refusals.push(Refused {
                    subject: "route53".into(),
                    guard: "dns_epoch".into(),
                    reason: format!(
                        "blocked because Route53 refused the last batch for good ({why}); the \
                         weights the log wants are not written until someone checks who else \
                         writes the epoch record"
                    ),
                });
                return out;
            }
            match retry_wait(world) {
                Err(why) => out.waiting.push(why),
                Ok(()) => {
                    out.proposal = Some(Proposal {
                        trigger: Trigger::DnsRepair,
                        drain: Vec::new(),
                        restore: Vec::new(),
                        promotion: None,
                        followers: Vec::new(),
                        redis: Vec::new(),
                        refusal: None,
                    });
                    return out;
                }
            }
        }
    }

    // Failback.
    if world.auto_failback && !cooling && !busy {
        for (region, _) in world.regions {
            let up_for = world.region_up_for.get(region).copied().unwrap_or_default();
            // A region an operator drained comes back only when an operator restores it.
            if desired.drained.contains(region)
                && !desired.held.contains(region)
                && world.region_state.get(region) == Some(&State::Up)
                && up_for >= world.hold_down
            {
                out.proposal = Some(Proposal {
                    trigger: Trigger::Failback {
                        region: region.clone(),
                    },
                    drain: Vec::new(),
                    restore: vec![region.clone()],
                    promotion: None,
                    followers: Vec::new(),
                    redis: Vec::new(),
                    refusal: None,
                });
                return out;
            }
        }
    }
    out
}

/// The weights after draining and restoring: the configured weight of every region in
/// service, 0 for the drained ones.
pub fn weights_after(
    regions: &[(String, u32)],
    drained: &BTreeSet<String>,
    proposal: &Proposal,
) -> BTreeMap<String, u32> {
    regions
        .iter()
        .map(|(name, weight)| {
            let out = (drained.contains(name) || proposal.drain.contains(name))
                && !proposal.restore.contains(name);
            (name.clone(), if out { 0 } else { *weight })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
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
        }
    }

    fn blocked() -> Choice {
        Choice::Blocked {
            reason: "postgres/main/b would lose 90000 bytes (more than \
                     max_lag_on_failover 65536)"
                .into(),
        }
    }

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
            assess(&World {
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
        assert_eq!(refused.guard, "max_lag_on_failover");
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
                steps: vec![],
            })),
            epoch,
        );
        epoch
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

    #[test]
    fn a_region_change_waits_for_the_failovers_in_progress() {
        let mut case = Case::new().region("r2", State::Down);
        decide(&mut case, None);
        let a = case.assess();
        assert_eq!(a.proposal, None);
        assert!(a.waiting[0].contains("in progress"), "{:?}", a.waiting);
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
        assert_eq!(a.refusals[0].guard, "dns_epoch");
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
        assert_eq!(a.refusals[0].guard, "no_candidate");
    }

    #[test]
    fn the_last_region_in_service_is_never_drained() {
        let mut case = Case::new().region("r3", State::Down);
        case.desired.drained = ["r1".to_string(), "r2".to_string()].into();
        let a = case.assess();
        assert_eq!(a.proposal, None);
        assert_eq!(a.refusals[0].guard, "last_region");
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
}
