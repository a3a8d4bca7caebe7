//! What an operator may ask of the cluster, and the decision it becomes: a pure function of
//! the request, the replicated state and what the leader sees.
//!
//! - **Drain** a region: take it out of DNS; its Postgres primary and Redis masters move out
//!   of it as a *planned* switchover — the old primary is fenced, the candidate replays
//!   everything it wrote, then it is promoted (Redis Cluster: `CLUSTER FAILOVER`), so nothing
//!   is lost. Refused when the region is the last one serving or a group has no candidate.
//! - **Restore** a drained region to DNS.
//! - **Failover** from a region: the same, forced — the candidate is promoted as after a
//!   loss, within the data-loss guard unless `allow_data_loss`; optionally the Postgres
//!   candidate is taken from region `to`.
//!
//! - **Switchover** a Postgres group's primary to a named member: planned as a drain's, with
//!   no change of weights. Refused unless that member streams from the primary and is within
//!   `max_lag_on_failover` of it.
//!
//! Nothing is asked while automation is paused or while a failover runs.

use super::candidate::Choice;
use super::trigger::{Group, Proposal, RedisGroup};
pub use crate::api::{ErrorKind, OpError, Operation, Reply, Request};
use crate::desired::{Desired, Promotion, RedisPromotion, Trigger};
use crate::topology::TargetId;

/// What the leader sees, for [`propose`].
#[derive(Debug, Clone)]
pub struct Inputs<'a> {
    /// The replicated state.
    pub desired: &'a Desired,
    /// Configured regions and their in-service weights.
    pub regions: &'a [(String, u32)],
    /// Postgres groups with a named primary.
    pub groups: &'a [Group],
    /// Redis replication shards and Redis Cluster masters.
    pub redis: &'a [RedisGroup],
    /// Regions whose agents have all been silent for `lease_ttl` (they fenced themselves).
    pub cut_off: &'a std::collections::BTreeSet<String>,
}

/// The decision `operation` becomes. `choose(group, to, allow_data_loss)` picks a Postgres
/// group's candidate outside its primary's region (in `to` when given).
pub fn propose(
    operation: &Operation,
    actor: &str,
    reason: &str,
    inputs: &Inputs<'_>,
    choose: impl Fn(&Group, Option<&str>, bool) -> Choice,
) -> Result<Proposal, OpError> {
    let desired = inputs.desired;
    if let Operation::Switchover { to } = operation {
        return switchover(to, actor, reason, inputs);
    }
    let known = |r: &str| inputs.regions.iter().any(|(name, _)| name == r);
    let region = operation.subject();
    if !known(region) {
        return Err(OpError::new(
            ErrorKind::NotFound,
            "unknown_region",
            format!("no region {region:?} in the configuration"),
        ));
    }
    may_change(desired, reason)?;
    let trigger = Trigger::Manual {
        action: operation.action().to_owned(),
        region: region.to_owned(),
        actor: actor.to_owned(),
        reason: reason.to_owned(),
    };
    let mut proposal = Proposal {
        trigger,
        drain: Vec::new(),
        restore: Vec::new(),
        promotion: None,
        followers: Vec::new(),
        redis: Vec::new(),
        refusal: None,
    };
    let drained = desired.drained.contains(region);
    // A forced failover of a cut-off region may count an unreachable old primary as fenced,
    // as an automatic one does; a planned one needs it reachable.
    let cut_off = inputs.cut_off.contains(region);
    let (planned, to, allow_data_loss) = match operation {
        Operation::Restore { .. } => {
            if !drained {
                return Err(OpError::new(
                    ErrorKind::Conflict,
                    "not_drained",
                    format!("region {region} is in service already"),
                ));
            }
            proposal.restore.push(region.to_owned());
            return Ok(proposal);
        }
        Operation::Drain { .. } => {
            if drained {
                return Err(OpError::new(
                    ErrorKind::Conflict,
                    "already_drained",
                    format!("region {region} is drained already"),
                ));
            }
            (true, None, false)
        }
        Operation::Failover {
            to,
            allow_data_loss,
            ..
        } => {
            if let Some(to) = to {
                if !known(to) {
                    return Err(OpError::new(
                        ErrorKind::NotFound,
                        "unknown_region",
                        format!("no region {to:?} in the configuration"),
                    ));
                }
                if to == region {
                    return Err(OpError::new(
                        ErrorKind::BadInput,
                        "same_region",
                        "`to` must be another region than `from`",
                    ));
                }
            }
            (false, to.as_deref(), *allow_data_loss)
        }
        Operation::Switchover { .. } => unreachable!("handled above"),
    };
    if !drained {
        let serving_elsewhere = inputs
            .regions
            .iter()
            .any(|(name, weight)| name != region && *weight > 0 && !desired.drained.contains(name));
        if !serving_elsewhere {
            return Err(OpError::new(
                ErrorKind::Refused,
                "last_region",
                format!("draining region {region} would leave no region in DNS"),
            ));
        }
        proposal.drain.push(region.to_owned());
    }
    for group in inputs.groups.iter().filter(|g| g.primary_region == region) {
        match choose(group, to, allow_data_loss) {
            Choice::Promote {
                target,
                estimated_loss_bytes,
                evidence,
                measured_from,
            } => {
                proposal.followers = group
                    .followers
                    .iter()
                    .filter(|f| **f != target)
                    .cloned()
                    .collect();
                proposal.promotion = Some(Promotion {
                    group: group.group.clone(),
                    from: group.primary.clone(),
                    to: target,
                    estimated_loss_bytes,
                    evidence: super::candidate::evidence_text(&evidence, &measured_from),
                    old_primary_cut_off: cut_off && !planned,
                    self_fencing: group.self_fencing.holds().map(str::to_owned),
                    exposed: group.self_fencing.missing().map(str::to_owned),
                    forced: !planned,
                    planned,
                });
            }
            Choice::Blocked { reason, guard } => {
                return Err(OpError::new(ErrorKind::Refused, guard.as_str(), reason));
            }
        }
    }
    for shard in inputs.redis.iter().filter(|s| s.master_region == region) {
        let Some((target, offset)) = shard.candidate.clone() else {
            return Err(OpError::new(
                ErrorKind::Refused,
                "no_candidate",
                format!(
                    "{} has no healthy replica outside region {region} to promote",
                    shard.group
                ),
            ));
        };
        proposal.redis.push(RedisPromotion {
            group: shard.group.clone(),
            from: shard.master.clone(),
            followers: shard
                .followers
                .iter()
                .filter(|f| **f != target)
                .cloned()
                .collect::<Vec<TargetId>>(),
            to: target,
            offset,
            old_master_cut_off: cut_off && !planned,
            self_fencing: shard.self_fencing.holds().map(str::to_owned),
            exposed: shard.self_fencing.missing().map(str::to_owned),
            forced: !planned,
            slots: shard.slots.clone(),
            planned,
        });
    }
    if proposal.drain.is_empty() && proposal.promotion.is_none() && proposal.redis.is_empty() {
        return Err(OpError::new(
            ErrorKind::Conflict,
            "nothing_to_do",
            format!("region {region} is drained and holds no primary"),
        ));
    }
    Ok(proposal)
}

/// An operator's change needs a reason, automation running and no failover in progress.
fn may_change(desired: &Desired, reason: &str) -> Result<(), OpError> {
    if reason.trim().is_empty() {
        return Err(OpError::new(
            ErrorKind::BadInput,
            "reason_required",
            "say why in `reason`: it goes into the history",
        ));
    }
    if desired.paused {
        return Err(OpError::new(
            ErrorKind::Conflict,
            "paused",
            "automation is paused: resume it first (POST /v1/resume)",
        ));
    }
    if let Some(epoch) = desired.running.iter().next() {
        return Err(OpError::new(
            ErrorKind::Conflict,
            "failover_running",
            format!("failover {epoch} is in progress: wait for it (GET /v1/failovers/{epoch})"),
        ));
    }
    Ok(())
}

/// A planned switchover of the Postgres group that has member `to` (its name or its id).
fn switchover(
    to: &str,
    actor: &str,
    reason: &str,
    inputs: &Inputs<'_>,
) -> Result<Proposal, OpError> {
    let is = |t: &TargetId| t.as_str() == to || t.as_str().rsplit('/').next() == Some(to);
    if let Some(group) = inputs.groups.iter().find(|g| is(&g.primary)) {
        return Err(OpError::new(
            ErrorKind::Conflict,
            "already_primary",
            format!(
                "{} is the primary of {} already",
                group.primary, group.group
            ),
        ));
    }
    let Some((group, standby)) = inputs
        .groups
        .iter()
        .find_map(|g| Some((g, g.standbys.iter().find(|s| is(&s.target))?)))
    else {
        return Err(OpError::new(
            ErrorKind::NotFound,
            "unknown_member",
            format!("no Postgres member {to:?} in a group with a known primary"),
        ));
    };
    may_change(inputs.desired, reason)?;
    if group.primary_down || inputs.cut_off.contains(&group.primary_region) {
        return Err(OpError::new(
            ErrorKind::Refused,
            "primary_unreachable",
            format!(
                "a switchover needs the primary {} to stop writes first, and it cannot be \
                 reached: use a failover (POST /v1/failover)",
                group.primary
            ),
        ));
    }
    if let Choice::Blocked { reason, guard } = &standby.choice {
        return Err(OpError::new(
            ErrorKind::Refused,
            guard.as_str(),
            reason.clone(),
        ));
    }
    let trigger = Trigger::Manual {
        action: "switchover".to_owned(),
        region: group.primary_region.clone(),
        actor: actor.to_owned(),
        reason: reason.to_owned(),
    };
    Ok(super::trigger::switchover(group, standby, trigger))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::TargetKind;
    use crate::desired::Guard;

    use crate::failover::fence_rule::SelfFencing;
    use crate::failover::trigger::Standby;

    fn pg(n: &str) -> TargetId {
        TargetId::new(TargetKind::Postgres, "main", n)
    }

    fn regions() -> Vec<(String, u32)> {
        vec![("r1".into(), 100), ("r2".into(), 100), ("r3".into(), 50)]
    }

    fn group() -> Group {
        Group {
            group: "postgres/main".into(),
            primary: pg("a"),
            primary_region: "r1".into(),
            primary_down: false,
            home_says_down: false,
            choice: Choice::Blocked {
                reason: "unused".into(),
                guard: Guard::NoCandidate,
            },
            followers: vec![pg("b"), pg("c")],
            local_choice: Choice::Blocked {
                reason: "unused".into(),
                guard: Guard::NoCandidate,
            },
            local_followers: vec![pg("b"), pg("c")],
            self_fencing: SelfFencing::default(),
            if_partitioned: SelfFencing::default(),
            home: None,
            standbys: vec![
                Standby {
                    target: pg("b"),
                    region: "r2".into(),
                    choice: promote("b"),
                },
                Standby {
                    target: pg("c"),
                    region: "r1".into(),
                    choice: Choice::Blocked {
                        reason: "c does not stream from the primary (no WAL receiver streaming)"
                            .into(),
                        guard: Guard::NoCandidate,
                    },
                },
            ],
        }
    }

    fn promote(to: &str) -> Choice {
        Choice::Promote {
            target: pg(to),
            estimated_loss_bytes: 0,
            evidence: super::super::candidate::Evidence::ReplicaReceived {
                target: pg(to),
                lsn: "0/0".into(),
            },
            measured_from: String::new(),
        }
    }

    fn run(op: Operation, desired: &Desired, choice: Choice) -> Result<Proposal, OpError> {
        let regions = regions();
        let groups = [group()];
        propose(
            &op,
            "alice",
            "maintenance",
            &Inputs {
                desired,
                regions: &regions,
                groups: &groups,
                redis: &[],
                cut_off: &Default::default(),
            },
            |_, _, _| choice.clone(),
        )
    }

    #[test]
    fn draining_the_primary_region_is_a_planned_switchover() {
        let p = run(
            Operation::Drain {
                region: "r1".into(),
            },
            &Desired::default(),
            promote("b"),
        )
        .unwrap();
        assert_eq!(p.drain, ["r1"]);
        let promotion = p.promotion.unwrap();
        assert!(promotion.planned);
        assert_eq!(promotion.to, pg("b"));
        assert_eq!(p.followers, [pg("c")]);
        assert!(matches!(
            p.trigger,
            Trigger::Manual { ref actor, ref action, .. } if actor == "alice" && action == "drain"
        ));
        // Another region holds no primary: a drain and nothing else.
        let p = run(
            Operation::Drain {
                region: "r2".into(),
            },
            &Desired::default(),
            promote("b"),
        )
        .unwrap();
        assert_eq!((p.drain.len(), p.promotion), (1, None));
    }

    #[test]
    fn a_forced_failover_is_not_planned_and_reports_the_guard() {
        let op = Operation::Failover {
            from: "r1".into(),
            to: Some("r3".into()),
            allow_data_loss: false,
        };
        let p = run(op.clone(), &Desired::default(), promote("c")).unwrap();
        let promotion = p.promotion.unwrap();
        assert!(!promotion.planned);
        assert!(promotion.forced, "an operator's failover is forced");
        let e = run(
            op,
            &Desired::default(),
            Choice::Blocked {
                reason: "blocked because every candidate is beyond max_lag_on_failover".into(),
                guard: Guard::MaxLagOnFailover,
            },
        )
        .unwrap_err();
        assert_eq!(
            (e.kind, e.code),
            (ErrorKind::Refused, "max_lag_on_failover")
        );
    }

    #[test]
    fn requests_the_state_forbids_get_the_documented_errors() {
        let d = Desired::default();
        let code = |op: Operation, d: &Desired| run(op, d, promote("b")).unwrap_err().code;
        let drain = |r: &str| Operation::Drain { region: r.into() };
        assert_eq!(code(drain("mars"), &d), "unknown_region");
        assert_eq!(
            code(
                Operation::Failover {
                    from: "r1".into(),
                    to: Some("r1".into()),
                    allow_data_loss: false
                },
                &d
            ),
            "same_region"
        );
        assert_eq!(
            code(
                Operation::Restore {
                    region: "r1".into()
                },
                &d
            ),
            "not_drained"
        );
        let paused = Desired {
            paused: true,
            ..Desired::default()
        };
        assert_eq!(code(drain("r1"), &paused), "paused");
        let mut running = Desired::default();
        running.running.insert(4);
        assert_eq!(code(drain("r1"), &running), "failover_running");
        let drained = Desired {
            drained: ["r1".to_string(), "r2".to_string()].into(),
            ..Desired::default()
        };
        assert_eq!(code(drain("r1"), &drained), "already_drained");
        assert_eq!(code(drain("r3"), &drained), "last_region");
        let e = propose(
            &drain("r2"),
            "alice",
            " ",
            &Inputs {
                desired: &d,
                regions: &regions(),
                groups: &[],
                redis: &[],
                cut_off: &Default::default(),
            },
            |_, _, _| promote("b"),
        )
        .unwrap_err();
        assert_eq!(e.code, "reason_required");
    }

    #[test]
    fn a_switchover_is_planned_leaves_dns_alone_and_names_its_refusals() {
        let to = |m: &str| Operation::Switchover { to: m.into() };
        let p = run(to("b"), &Desired::default(), promote("b")).unwrap();
        assert!(p.drain.is_empty() && p.restore.is_empty());
        let promotion = p.promotion.unwrap();
        assert!(promotion.planned && !promotion.forced);
        assert_eq!((promotion.from, promotion.to), (pg("a"), pg("b")));
        assert_eq!(p.followers, [pg("c")], "every other replica follows");
        assert!(matches!(
            p.trigger,
            Trigger::Manual { ref action, ref region, .. } if action == "switchover" && region == "r1"
        ));
        // By id as well as by name.
        assert!(run(to("postgres/main/b"), &Desired::default(), promote("b")).is_ok());

        let code = |op: Operation| run(op, &Desired::default(), promote("b")).unwrap_err();
        let e = code(to("a"));
        assert_eq!((e.kind, e.code), (ErrorKind::Conflict, "already_primary"));
        let e = code(to("zz"));
        assert_eq!((e.kind, e.code), (ErrorKind::NotFound, "unknown_member"));
        let e = code(to("c"));
        assert_eq!((e.kind, e.code), (ErrorKind::Refused, "no_candidate"));
        assert!(e.message.contains("does not stream"), "{}", e.message);
        let paused = Desired {
            paused: true,
            ..Desired::default()
        };
        assert_eq!(
            run(to("b"), &paused, promote("b")).unwrap_err().code,
            "paused"
        );

        // An old primary that cannot be reached cannot stop writes first.
        let mut down = group();
        down.primary_down = true;
        let e = propose(
            &to("b"),
            "alice",
            "maintenance",
            &Inputs {
                desired: &Desired::default(),
                regions: &regions(),
                groups: &[down],
                redis: &[],
                cut_off: &Default::default(),
            },
            |_, _, _| promote("b"),
        )
        .unwrap_err();
        assert_eq!(
            (e.kind, e.code),
            (ErrorKind::Refused, "primary_unreachable")
        );
    }
}
