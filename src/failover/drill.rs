//! Readiness drills: for each region, whether failing it over would go through now — a
//! candidate for each Postgres group and Redis shard whose primary is there (streaming,
//! within the data-loss guard), another region left in DNS, and Route53 answering with the
//! epoch record the log last wrote. Pure: the runtime reads Route53 and hands in what it saw.

use super::candidate::Choice;
use super::fence_rule::SelfFencing;
use super::inputs::TriggerInputs;
use crate::desired::{CheckScope, Desired, DrillCheck, DrillRegion, DrillReport};
use crate::topology::TargetId;

/// The Route53 check of a drill: `seen` is the epoch the TXT record holds (or why it could not
/// be read), `logged` the one the log last wrote.
pub fn route53_check(seen: Result<Option<u64>, String>, logged: Option<u64>) -> DrillCheck {
    let shown = |e: Option<u64>| e.map_or("nothing".to_owned(), |e| e.to_string());
    match seen {
        Ok(epoch) if epoch == logged => DrillCheck {
            check: "route53".into(),
            ok: true,
            detail: format!(
                "answers; the epoch record holds {}, as the log last wrote",
                shown(epoch)
            ),
            scope: CheckScope::Any,
        },
        Ok(epoch) => DrillCheck {
            check: "route53".into(),
            ok: false,
            detail: format!(
                "the epoch record holds {} but the log last wrote {}: a DNS change \
                         would be refused",
                shown(epoch),
                shown(logged)
            ),
            scope: CheckScope::Any,
        },
        Err(e) => DrillCheck {
            check: "route53".into(),
            ok: false,
            detail: format!("cannot read the records: {e}"),
            scope: CheckScope::Any,
        },
    }
}

/// Who asked for a drill, why, and of which region (all when `None`).
#[derive(Debug, Clone)]
pub struct Asked<'a> {
    /// Who.
    pub actor: String,
    /// Why.
    pub reason: String,
    /// Only this region.
    pub only: Option<&'a str>,
}

/// What the drill of `only` (or of every region) finds, against `desired` and what the
/// trigger reads; `choose(group, region)` is the candidate a loss of `region` would promote
/// in `group`; `route53` the Route53 check, when Route53 is configured.
pub fn report(
    configured: &[(String, u32)],
    desired: &Desired,
    inputs: &TriggerInputs,
    choose: impl Fn(&str, &str) -> Choice,
    route53: Option<&DrillCheck>,
    asked: Asked<'_>,
    (now_ms, run_by): (u64, &str),
) -> DrillReport {
    let Asked {
        actor,
        reason,
        only,
    } = asked;
    let mut regions = Vec::new();
    for (region, _) in configured
        .iter()
        .filter(|(r, _)| only.is_none_or(|o| o == r))
    {
        let mut checks = Vec::new();
        let drained = desired.drained.contains(region);
        let elsewhere = configured
            .iter()
            .any(|(name, weight)| name != region && *weight > 0 && !desired.drained.contains(name));
        checks.push(DrillCheck {
            check: "dns".into(),
            ok: drained || elsewhere,
            detail: if drained {
                "drained already".into()
            } else if elsewhere {
                "other regions serve".into()
            } else {
                "draining it would leave no region in DNS".into()
            },
            scope: CheckScope::Any,
        });
        for group in inputs.groups.iter().filter(|g| &g.primary_region == region) {
            let choice = choose(&group.group, region);
            checks.push(match choice {
                Choice::Promote {
                    target,
                    estimated_loss_bytes,
                    ..
                } => DrillCheck {
                    check: group.group.clone(),
                    ok: true,
                    detail: format!(
                        "would promote {target} (estimated loss {estimated_loss_bytes} bytes)"
                    ),
                    scope: CheckScope::Any,
                },
                Choice::Blocked { reason, .. } => DrillCheck {
                    check: group.group.clone(),
                    ok: false,
                    detail: reason,
                    scope: CheckScope::Any,
                },
            });
        }
        let partition = |group: &str, member: &TargetId, fencing: &SelfFencing| match fencing {
            SelfFencing::Holds(why) => DrillCheck {
                check: format!("{group} partition"),
                ok: true,
                detail: format!(
                    "a partition of {region} leaves {member} unable to take writes: {why}"
                ),
                scope: CheckScope::Unreachable,
            },
            SelfFencing::Missing(why) => DrillCheck {
                check: format!("{group} partition"),
                ok: false,
                detail: format!(
                    "a partition of {region} could leave two writable primaries: {why}; an \
                     unreachable {member} is not promoted around automatically (configure \
                     synchronous_standby_names or min-replicas-to-write over replicas outside \
                     {region}, see docs/safety.md)"
                ),
                scope: CheckScope::Unreachable,
            },
        };
        for group in inputs.groups.iter().filter(|g| &g.primary_region == region) {
            checks.push(partition(
                &group.group,
                &group.primary,
                &group.if_partitioned,
            ));
        }
        for shard in inputs.redis.iter().filter(|s| &s.master_region == region) {
            checks.push(partition(
                &shard.group,
                &shard.master,
                &shard.if_partitioned,
            ));
        }
        for shard in inputs.redis.iter().filter(|s| &s.master_region == region) {
            checks.push(match &shard.candidate {
                Some((target, offset)) => DrillCheck {
                    check: shard.group.clone(),
                    ok: true,
                    detail: format!("would promote {target} (offset {offset})"),
                    scope: CheckScope::Any,
                },
                None => DrillCheck {
                    check: shard.group.clone(),
                    ok: false,
                    detail: format!("no healthy, linked replica outside region {region}"),
                    scope: CheckScope::Any,
                },
            });
        }
        checks.extend(route53.cloned());
        regions.push(DrillRegion {
            region: region.clone(),
            ready: checks.iter().all(|c| c.ok),
            checks,
        });
    }
    DrillReport {
        ready: regions.iter().all(|r| r.ready),
        actor,
        reason,
        at_ms: now_ms,
        run_by: run_by.to_owned(),
        regions,
    }
}
