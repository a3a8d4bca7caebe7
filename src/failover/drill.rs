//! Readiness drills: for each region, whether failing it over would go through now — a
//! candidate for each Postgres group and Redis shard whose primary is there (streaming,
//! within the data-loss guard), another region left in DNS, Route53 answering with the
//! epoch record the log last wrote, and (with `[postgres.rejoin]`) an old primary that
//! `pg_rewind` can rewind. Pure: the runtime reads Route53 and hands in what it saw.

use super::candidate::Choice;
use super::fence_rule::SelfFencing;
use super::inputs::TriggerInputs;
use crate::desired::{CheckScope, Desired, DrillCheck, DrillRegion, DrillReport};
use crate::probe::postgres::RewindSettings;
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

/// The settings `pg_rewind` needs, as last seen on a member.
pub type RewindOf<'a> = &'a dyn Fn(&TargetId) -> Option<RewindSettings>;

/// What the runtime read for a drill besides the trigger's inputs.
#[derive(Clone, Copy, Default)]
pub struct Seen<'a> {
    /// The Route53 check, when Route53 is configured.
    pub route53: Option<&'a DrillCheck>,
    /// With `[postgres.rejoin]` configured: each member's settings for `pg_rewind`.
    pub rewind: Option<RewindOf<'a>>,
}

/// What the drill of `only` (or of every region) finds, against `desired` and what the
/// trigger reads; `choose(group, region)` is the candidate a loss of `region` would promote
/// in `group`.
pub fn report(
    configured: &[(String, u32)],
    desired: &Desired,
    inputs: &TriggerInputs,
    choose: impl Fn(&str, &str) -> Choice,
    seen: Seen<'_>,
    asked: Asked<'_>,
    (now_ms, run_by): (u64, &str),
) -> DrillReport {
    let Asked {
        actor,
        reason,
        only,
    } = asked;
    let Seen { route53, rewind } = seen;
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
        // The old primary must be rewound to rejoin after a failover.
        for group in inputs.groups.iter().filter(|g| &g.primary_region == region) {
            let Some(settings) = rewind.and_then(|r| r(&group.primary)) else {
                continue;
            };
            let primary = &group.primary;
            let (ok, detail) = match settings.blocker() {
                None => (
                    true,
                    format!(
                        "after a failover {primary} can be rewound and rejoined as a replica \
                         ({})",
                        settings.enabler()
                    ),
                ),
                Some(blocker) => (
                    false,
                    format!(
                        "after a failover {primary} cannot be rewound ({blocker}): it stays \
                         fenced unless the rejoin command takes a new base backup \
                         (pg-rejoin --basebackup-fallback); see docs/failover.md"
                    ),
                ),
            };
            checks.push(DrillCheck {
                check: format!("{} rejoin", group.group),
                ok,
                detail,
                scope: CheckScope::Afterwards,
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
            ready: checks
                .iter()
                .all(|c| c.ok || c.scope == CheckScope::Afterwards),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::TargetKind;
    use crate::desired::Guard;

    fn inputs() -> TriggerInputs {
        let primary = TargetId::new(TargetKind::Postgres, "main", "pg-a");
        let none = Choice::Blocked {
            reason: "no replica".into(),
            guard: Guard::NoCandidate,
        };
        TriggerInputs {
            verdict: crate::verdict::Verdict {
                quorum: 2,
                targets: Default::default(),
                regions: Default::default(),
            },
            groups: vec![super::super::trigger::Group {
                group: "postgres/main".into(),
                primary,
                primary_region: "r1".into(),
                primary_down: false,
                home_says_down: false,
                choice: none.clone(),
                followers: Vec::new(),
                local_choice: none,
                local_followers: Vec::new(),
                self_fencing: SelfFencing::default(),
                if_partitioned: SelfFencing::default(),
                home: None,
                standbys: Vec::new(),
            }],
            redis: Vec::new(),
            cut_off: Default::default(),
            slot_owners: Default::default(),
        }
    }

    /// The rejoin check of region r1, with the primary's settings as seen (or no check).
    fn rejoin_check(rejoin: bool, settings: Option<RewindSettings>) -> Option<DrillCheck> {
        let rewind = |_: &TargetId| settings;
        let report = report(
            &[("r1".into(), 100), ("r2".into(), 100)],
            &Desired::default(),
            &inputs(),
            |_, _| Choice::Blocked {
                reason: "no replica".into(),
                guard: Guard::NoCandidate,
            },
            Seen {
                route53: None,
                rewind: rejoin.then_some(&rewind as _),
            },
            Asked {
                actor: "alice".into(),
                reason: "test".into(),
                only: Some("r1"),
            },
            (0, "agent"),
        );
        report.regions[0]
            .checks
            .iter()
            .find(|c| c.check == "postgres/main rejoin")
            .cloned()
    }

    const HINTS: RewindSettings = RewindSettings {
        wal_log_hints: true,
        data_checksums: false,
        full_page_writes: true,
    };

    #[test]
    fn the_drill_says_whether_the_old_primary_can_be_rewound() {
        let ok = rejoin_check(true, Some(HINTS)).expect("a rejoin check");
        assert!(ok.ok && ok.detail.contains("wal_log_hints on"), "{ok:?}");
        let checksums = RewindSettings {
            wal_log_hints: false,
            data_checksums: true,
            ..HINTS
        };
        let ok = rejoin_check(true, Some(checksums)).expect("a rejoin check");
        assert!(ok.ok && ok.detail.contains("data checksums"), "{ok:?}");
        let neither = RewindSettings {
            wal_log_hints: false,
            ..HINTS
        };
        let refused = rejoin_check(true, Some(neither)).expect("a rejoin check");
        assert!(!refused.ok, "{refused:?}");
        assert_eq!(
            refused.scope,
            CheckScope::Afterwards,
            "it leaves the region ready"
        );
        assert!(
            refused.detail.contains("wal_log_hints is off"),
            "{refused:?}"
        );
        let no_fpw = RewindSettings {
            full_page_writes: false,
            ..HINTS
        };
        let refused = rejoin_check(true, Some(no_fpw)).expect("a rejoin check");
        assert!(
            !refused.ok && refused.detail.contains("full_page_writes is off"),
            "{refused:?}"
        );
        // Without a rejoin command, or before the primary's settings are seen: no check.
        assert_eq!(rejoin_check(false, Some(neither)), None);
        assert_eq!(rejoin_check(true, None), None);
    }
}
