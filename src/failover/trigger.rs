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
//! - A group's primary goes back home — to the member a live drill moved it from, to the
//!   configured `postgres.home` after a restore of its region, or always with
//!   `auto_failback` — as a planned switchover, once nothing else runs, the home region is
//!   in service and the home member streams from the primary and has caught up.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use super::candidate::Choice;
use super::fence_rule::SelfFencing;
use crate::desired::{
    Action, Desired, FenceProof, Guard, Promotion, RedisPromotion, StepState, Trigger,
};
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
    /// Whether the primary refuses writes by itself once cut off (see
    /// [`super::fence_rule`]).
    pub self_fencing: SelfFencing,
    /// The same, were its region partitioned from the others now (the readiness drill's
    /// question).
    pub if_partitioned: SelfFencing,
    /// `postgres.home`: the member its primary returns to.
    pub home: Option<TargetId>,
    /// Every other member, and whether a planned switchover to it may go ahead now.
    pub standbys: Vec<Standby>,
}

/// A member a planned switchover could move its group's primary to.
#[derive(Debug, Clone, PartialEq)]
pub struct Standby {
    /// The member.
    pub target: TargetId,
    /// Its region.
    pub region: String,
    /// Promote it (it streams from the primary and is within `max_lag_on_failover`), or why
    /// not now.
    pub choice: Choice,
}

/// A planned switchover of `group`'s primary to `to` (a promotion the choice allows): the
/// old primary is fenced, `to` replays everything it wrote and is promoted, every other
/// replica is repointed; DNS weights are not touched.
pub fn switchover(group: &Group, to: &Standby, trigger: Trigger) -> Proposal {
    let (estimated_loss_bytes, evidence) = match &to.choice {
        Choice::Promote {
            estimated_loss_bytes,
            evidence,
            measured_from,
            ..
        } => (
            *estimated_loss_bytes,
            super::candidate::evidence_text(evidence, measured_from),
        ),
        Choice::Blocked { .. } => (0, String::new()),
    };
    Proposal {
        trigger,
        drain: Vec::new(),
        restore: Vec::new(),
        promotion: Some(Promotion {
            group: group.group.clone(),
            from: group.primary.clone(),
            to: to.target.clone(),
            estimated_loss_bytes,
            evidence,
            old_primary_cut_off: false,
            self_fencing: group.self_fencing.holds().map(str::to_owned),
            exposed: group.self_fencing.missing().map(str::to_owned),
            forced: false,
            planned: true,
        }),
        followers: group
            .local_followers
            .iter()
            .filter(|f| **f != to.target)
            .cloned()
            .collect(),
        redis: Vec::new(),
        refusal: None,
    }
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
    /// Whether the master refuses writes by itself once cut off (see
    /// [`super::fence_rule`]).
    pub self_fencing: SelfFencing,
    /// The same, were its region partitioned from the others now.
    pub if_partitioned: SelfFencing,
    /// Replication shard: its healthy replicas with their regions and offsets, furthest
    /// first.
    pub replicas: Vec<(TargetId, String, u64)>,
    /// Replication shard: `redis.shards[].home`, the member its master returns to.
    pub home: Option<TargetId>,
}

/// A planned switchover of a replication shard's master to `to` (of `region`, at `offset`):
/// the old master stops writes, `to` catches up and takes over, the others follow it.
pub fn redis_switchover(
    shard: &RedisGroup,
    to: &TargetId,
    offset: u64,
    trigger: Trigger,
) -> Proposal {
    Proposal {
        trigger,
        drain: Vec::new(),
        restore: Vec::new(),
        promotion: None,
        followers: Vec::new(),
        redis: vec![RedisPromotion {
            group: shard.group.clone(),
            from: shard.master.clone(),
            to: to.clone(),
            offset,
            followers: shard
                .local_followers
                .iter()
                .filter(|f| *f != to)
                .cloned()
                .collect(),
            old_master_cut_off: false,
            self_fencing: shard.self_fencing.holds().map(str::to_owned),
            exposed: shard.self_fencing.missing().map(str::to_owned),
            forced: false,
            slots: Vec::new(),
            planned: true,
        }],
        refusal: None,
    }
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
    /// Since when this leader has seen each of them cut off (Unix ms).
    pub cut_off_since: &'a BTreeMap<String, u64>,
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
    pub guard: Guard,
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
            measured_from,
        } => Ok((
            Promotion {
                group: group.group.clone(),
                from: group.primary.clone(),
                to: target.clone(),
                estimated_loss_bytes: *estimated_loss_bytes,
                evidence: super::candidate::evidence_text(evidence, measured_from),
                old_primary_cut_off: cut_off,
                self_fencing: group.self_fencing.holds().map(str::to_owned),
                exposed: group.self_fencing.missing().map(str::to_owned),
                forced: false,
                planned: false,
            },
            followers.iter().filter(|f| *f != target).cloned().collect(),
        )),
        Choice::Blocked { guard, .. } => Err(Refused {
            subject: group.group.clone(),
            guard: *guard,
            reason: format!("{choice}"),
        }),
    }
}

/// After a fence step found an old primary unreachable and unconfirmed, a new attempt to
/// replace it waits this long, unless its group starts fencing itself first.
pub const UNCONFIRMED_RETRY_MS: u64 = 30_000;

/// When a fence step of a failed failover last found `from` (of `group`) unreachable and
/// unconfirmed (Unix ms).
fn unconfirmed_at(desired: &Desired, group: &str, from: &TargetId) -> Option<u64> {
    desired
        .history
        .iter()
        .filter_map(|e| match e {
            crate::desired::HistoryEntry::Failover(f) => Some(f),
            _ => None,
        })
        .filter(|f| {
            f.decision
                .promotion
                .iter()
                .any(|p| p.group == group && &p.from == from)
                || f.decision
                    .redis
                    .iter()
                    .any(|r| r.group == group && &r.from == from)
        })
        .flat_map(|f| &f.steps)
        .filter(|s| s.fence == Some(FenceProof::Unconfirmed))
        .filter_map(|s| s.finished_ms)
        .max()
}

/// An old primary of a cut-off region that a fence step already found unreachable and
/// unconfirmed since the region was cut off is not tried again until its group fences itself
/// (then at once) or [`UNCONFIRMED_RETRY_MS`] has passed (it may be reachable again);
/// `Err` says so.
fn unconfirmed_wait(
    world: &World<'_>,
    group: &str,
    from: &TargetId,
    region: &str,
    fencing: &SelfFencing,
) -> Result<(), String> {
    let Some(since) = world.cut_off_since.get(region) else {
        return Ok(());
    };
    match (fencing, unconfirmed_at(world.desired, group, from)) {
        (SelfFencing::Missing(why), Some(at))
            if at >= *since && world.now_ms < at.saturating_add(UNCONFIRMED_RETRY_MS) =>
        {
            Err(format!(
                "{group}: {from} in cut-off region {region} could not be reached and nothing \
                 confirmed it fenced; a partition could leave two writable primaries ({why}). \
                 Waiting until it fences itself or can be reached (next try at {} Unix ms); \
                 `failoverd failover --from {region}` forces it",
                at.saturating_add(UNCONFIRMED_RETRY_MS)
            ))
        }
        _ => Ok(()),
    }
}

/// [`retry_wait`], except that a failover that failed only because it could not confirm
/// `from` fenced does not hold back its group's promotion once the group fences itself.
fn retry_wait_for(
    world: &World<'_>,
    group: &str,
    from: &TargetId,
    fencing: &SelfFencing,
) -> Result<(), String> {
    let last_failed = world.desired.last_failed_ms;
    let unconfirmed = unconfirmed_at(world.desired, group, from);
    if fencing.holds().is_some() && unconfirmed.is_some_and(|at| at <= last_failed) {
        // That failure was this group's unconfirmed fence (it ended the failover).
        let cleared = world
            .desired
            .history
            .iter()
            .filter_map(|e| match e {
                crate::desired::HistoryEntry::Failover(f) => Some(f),
                _ => None,
            })
            .filter(|f| f.finished_ms == Some(last_failed))
            .all(|f| {
                f.steps.iter().all(|s| {
                    s.state != StepState::Failed || s.fence == Some(FenceProof::Unconfirmed)
                })
            });
        if cleared {
            return Ok(());
        }
    }
    retry_wait(world)
}

/// Whether the group's primary may be replaced now; `Err` says what is awaited.
///
/// A primary Down by verdict, or in a region Down by verdict, whose group fences itself need
/// not wait for its agents' leases: it cannot acknowledge a write however alive it is (see
/// [`super::fence_rule`]).
fn may_replace(world: &World<'_>, group: &Group) -> Result<(), String> {
    let lost = group.primary_down || region_down(world, &group.primary_region);
    if world.cut_off.contains(&group.primary_region)
        || group.home_says_down
        || (lost && group.self_fencing.holds().is_some())
    {
        Ok(())
    } else {
        Err(format!(
            "{}: primary {} is lost, waiting until region {}'s agents have been silent for \
             lease_ttl (they fence it) before promoting elsewhere",
            group.group, group.primary, group.primary_region
        ))
    }
}

/// Whether `region` is Down by verdict (its APIs lost by a quorum of votes).
fn region_down(world: &World<'_>, region: &str) -> bool {
    world.region_state.get(region) == Some(&State::Down)
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
            self_fencing: shard.self_fencing.holds().map(str::to_owned),
            exposed: shard.self_fencing.missing().map(str::to_owned),
            forced: false,
            slots: shard.slots.clone(),
            planned: false,
        }),
        None => Err(Refused {
            subject: shard.group.clone(),
            guard: Guard::NoCandidate,
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
    let lost = shard.master_down || region_down(world, &shard.master_region);
    if world.cut_off.contains(&shard.master_region)
        || shard.home_says_down
        || (lost && shard.self_fencing.holds().is_some())
    {
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

    // A failback or a DNS repair waits for every failover in progress; draining a Down
    // region waits only for a DNS change in progress (two never overlap), never for a
    // datastore step: DNS moves the moment a region's verdict allows.
    let busy = !desired.running.is_empty();
    let dns_busy = desired
        .running
        .iter()
        .any(|epoch| match desired.failover(*epoch) {
            Some(f) => f.steps.iter().any(|s| {
                matches!(s.step.action, Action::Route53 { .. })
                    && matches!(s.state, StepState::Pending | StepState::Running)
            }),
            // A running epoch without its record: assume the worst.
            None => true,
        });
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
        if dns_busy {
            out.waiting.push(format!(
                "region {region} is Down: waiting for the DNS change in progress to finish"
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
                guard: Guard::LastRegion,
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
            // it moves when it is lost itself, its region is cut off, or it fences itself
            // (then it serves nobody).
            if !(group.primary_down
                || world.cut_off.contains(region)
                || group.self_fencing.holds().is_some())
            {
                continue;
            }
            if promoting_any || promoting.contains(&group.group) {
                // Its own failover is under way: the drain goes ahead without it.
                out.waiting
                    .push(format!("{}: a promotion is in progress", group.group));
                continue;
            }
            if let Err(why) = may_replace(world, group).and_then(|()| {
                unconfirmed_wait(
                    world,
                    &group.group,
                    &group.primary,
                    region,
                    &group.self_fencing,
                )
            }) {
                lease_wait = Some(why);
                break;
            }
            if let Err(why) =
                retry_wait_for(world, &group.group, &group.primary, &group.self_fencing)
            {
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
                || !(shard.master_down
                    || world.cut_off.contains(region)
                    || shard.self_fencing.holds().is_some())
            {
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
            if let Err(why) = may_replace_redis(world, shard).and_then(|()| {
                unconfirmed_wait(
                    world,
                    &shard.group,
                    &shard.master,
                    region,
                    &shard.self_fencing,
                )
            }) {
                // The primary's promotion does not wait for it: the master moves in a
                // decision of its own once it may.
                out.waiting.push(why);
                continue;
            }
            if let Err(why) =
                retry_wait_for(world, &shard.group, &shard.master, &shard.self_fencing)
            {
                wait = Some(why);
                break;
            }
            match promote_redis(shard, true, world.cut_off.contains(region)) {
                Ok(p) => proposal.redis.push(p),
                Err(refused) => out.refusals.push(refused),
            }
        }
        if let Some(why) = wait.or(lease_wait) {
            // The drain alone (DNS never waits on a datastore); the promotion follows as its
            // own decision once it may.
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
        if !(group.primary_down || cut_off || (region_lost && group.self_fencing.holds().is_some()))
        {
            continue;
        }
        if promoting_any || promoting.contains(&group.group) {
            out.waiting
                .push(format!("{}: a promotion is in progress", group.group));
            continue;
        }
        if let Err(why) = may_replace(world, group).and_then(|()| {
            unconfirmed_wait(
                world,
                &group.group,
                &group.primary,
                &group.primary_region,
                &group.self_fencing,
            )
        }) {
            out.waiting.push(why);
            continue;
        }
        if let Err(why) = retry_wait_for(world, &group.group, &group.primary, &group.self_fencing) {
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
        if !(shard.master_down || cut_off || (region_lost && shard.self_fencing.holds().is_some()))
        {
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
        if let Err(why) = may_replace_redis(world, shard)
            .and_then(|()| {
                unconfirmed_wait(
                    world,
                    &shard.group,
                    &shard.master,
                    &shard.master_region,
                    &shard.self_fencing,
                )
            })
            .and_then(|()| retry_wait_for(world, &shard.group, &shard.master, &shard.self_fencing))
        {
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
                    guard: Guard::DnsEpoch,
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

    // Return home.
    if !busy {
        for group in world.groups {
            let home = match desired.returning.get(&group.group) {
                Some(member) => Some(member),
                None if world.auto_failback && !cooling => group.home.as_ref(),
                None => None,
            };
            let Some(home) = home.filter(|h| **h != group.primary) else {
                continue;
            };
            let Some(standby) = group.standbys.iter().find(|s| s.target == *home) else {
                continue;
            };
            let waits = |why: String| format!("{} returns home to {home} once {why}", group.group);
            if desired.drained.contains(&standby.region) {
                out.waiting
                    .push(waits(format!("region {} is restored", standby.region)));
            } else if world.cut_off.contains(&standby.region) {
                out.waiting
                    .push(waits(format!("region {} is reachable", standby.region)));
            } else if group.primary_down || world.cut_off.contains(&group.primary_region) {
                out.waiting
                    .push(waits(format!("its primary {} is up", group.primary)));
            } else if let Choice::Blocked { reason, .. } = &standby.choice {
                out.waiting.push(format!(
                    "{} returns home to {home} once it has caught up: {reason}",
                    group.group
                ));
            } else {
                let trigger = Trigger::ReturnHome {
                    group: group.group.clone(),
                    member: home.clone(),
                };
                out.proposal = Some(switchover(group, standby, trigger));
                return out;
            }
        }
        for shard in world.redis.iter().filter(|s| s.slots.is_empty()) {
            let home = match desired.returning.get(&shard.group) {
                Some(member) => Some(member),
                None if world.auto_failback && !cooling => shard.home.as_ref(),
                None => None,
            };
            let Some(home) = home.filter(|h| **h != shard.master) else {
                continue;
            };
            let waits = |why: String| format!("{} returns home to {home} once {why}", shard.group);
            let replica = shard.replicas.iter().find(|(t, ..)| t == home);
            match replica {
                _ if shard.master_down || world.cut_off.contains(&shard.master_region) => out
                    .waiting
                    .push(waits(format!("its master {} is up", shard.master))),
                None => out
                    .waiting
                    .push(waits("it is a healthy replica again".to_owned())),
                Some((_, region, _)) if desired.drained.contains(region) => out
                    .waiting
                    .push(waits(format!("region {region} is restored"))),
                Some((_, region, _)) if world.cut_off.contains(region) => out
                    .waiting
                    .push(waits(format!("region {region} is reachable"))),
                Some((target, _, offset)) => {
                    let trigger = Trigger::ReturnHome {
                        group: shard.group.clone(),
                        member: target.clone(),
                    };
                    out.proposal = Some(redis_switchover(shard, target, *offset, trigger));
                    return out;
                }
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
#[path = "trigger_tests.rs"]
mod tests;
