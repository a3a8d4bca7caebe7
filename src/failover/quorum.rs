//! The acknowledgement rule failoverd keeps on each primary so that it fences itself: a pure
//! rule from the group's members to the setting, and the comparison with what the primary
//! runs.
//!
//! - Postgres (`[postgres.synchronous] mode = "quorum"`): `synchronous_standby_names =
//!   ANY k ("m1", "m2", ...)` over the members outside the primary's region that may be
//!   promoted. A commit then waits until `k` of them have flushed it, so a primary cut off from
//!   the other regions cannot acknowledge one; and the candidate with the most WAL received
//!   holds every acknowledged commit (the candidate rule prefers it).
//! - Redis (`[redis.self_fencing]`): `min-replicas-to-write` = the master's attached replicas
//!   in its own region + `replicas`, with `min-replicas-max-lag`. Redis cannot name replicas,
//!   so those of the master's own region (which a partition between regions leaves connected)
//!   are added to the count.
//!
//! `relax` lowers `k` to the replicas outside the region that stream now (0: asynchronous), so
//! that writes keep flowing when too few remain; the group then no longer fences itself, and
//! [`super::fence_rule`] says so. Without `relax`, writes wait (Postgres) or are refused
//! (Redis) until enough replicas are back.

use crate::datastore::acks::Acks;
use crate::topology::TargetId;

/// A member of the group other than its primary, as the leader sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Its name (Postgres: the `application_name` it streams with).
    pub name: String,
    /// Its region.
    pub region: String,
    /// It may be promoted (a member that never will must not hold the only copy of a write).
    pub eligible: bool,
    /// Its own agent reports it streaming from (attached to) the primary now.
    pub attached: bool,
}

/// How many confirmations outside the primary's region, and whether to relax.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Confirmations asked from members outside the primary's region.
    pub count: u32,
    /// Ask for no more than stream now.
    pub relax: bool,
}

/// A change of a primary's acknowledgement rule, for the leader to make.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tune {
    /// Set a Postgres primary's `synchronous_standby_names` (and a `synchronous_commit` that
    /// waits for it).
    Standbys {
        /// The primary.
        target: TargetId,
        /// The value.
        value: String,
    },
    /// Set a Redis master's `min-replicas-to-write` and `min-replicas-max-lag`.
    MinReplicas {
        /// The master.
        target: TargetId,
        /// `min-replicas-to-write`.
        to_write: u32,
        /// `min-replicas-max-lag`, in seconds.
        max_lag_s: u32,
    },
}

impl Tune {
    /// The member it changes.
    pub fn target(&self) -> &TargetId {
        match self {
            Tune::Standbys { target, .. } | Tune::MinReplicas { target, .. } => target,
        }
    }
}

/// How many confirmations to ask for: `count`, or with `relax` no more than `attached`.
fn wanted(policy: Policy, attached: usize) -> u32 {
    if policy.relax {
        policy
            .count
            .min(u32::try_from(attached).unwrap_or(u32::MAX))
    } else {
        policy.count
    }
}

/// The `synchronous_standby_names` for a primary of `region`: `ANY k (...)` over the eligible
/// members of other regions, in name order; empty when there are none or `k` is 0.
pub fn standby_names(policy: Policy, region: &str, members: &[Member]) -> String {
    let mut outside: Vec<&Member> = members
        .iter()
        .filter(|m| m.region != region && m.eligible)
        .collect();
    outside.sort_by(|a, b| a.name.cmp(&b.name));
    let attached = outside.iter().filter(|m| m.attached).count();
    let k = wanted(policy, attached).min(u32::try_from(outside.len()).unwrap_or(u32::MAX));
    if k == 0 {
        return String::new();
    }
    let names: Vec<String> = outside
        .iter()
        .map(|m| format!("\"{}\"", m.name.replace('"', "\"\"")))
        .collect();
    format!("ANY {k} ({})", names.join(", "))
}

/// The `min-replicas-to-write` for a master of `region`: its attached replicas in `region`
/// plus the confirmations asked from other regions.
pub fn min_replicas(policy: Policy, region: &str, members: &[Member]) -> u32 {
    let count = |inside: bool| {
        members
            .iter()
            .filter(|m| (m.region == region) == inside && m.attached)
            .count()
    };
    let k = wanted(policy, count(false));
    if k == 0 {
        0
    } else {
        u32::try_from(count(true))
            .unwrap_or(u32::MAX)
            .saturating_add(k)
    }
}

/// Whether the primary's rule as observed (`seen`) already is `want`: the same number of
/// confirmations from the same names (in any order and case).
pub fn same_rule(seen: &Acks, want: &Acks) -> bool {
    let names = |a: &Acks| {
        a.names.as_ref().map(|n| {
            let mut n: Vec<String> = n.iter().map(|s| s.to_ascii_lowercase()).collect();
            n.sort();
            n
        })
    };
    seen.required == want.required
        && seen.lag_s == want.lag_s
        && (want.required == 0 || names(seen) == names(want))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn member(name: &str, region: &str, attached: bool) -> Member {
        Member {
            name: name.into(),
            region: region.into(),
            eligible: true,
            attached,
        }
    }

    const STRICT: Policy = Policy {
        count: 1,
        relax: false,
    };
    const RELAX: Policy = Policy {
        count: 1,
        relax: true,
    };

    #[test]
    fn postgres_asks_the_other_regions_in_name_order() {
        let members = [
            member("pg-c", "r3", true),
            member("pg-a2", "r1", true),
            member("pg-b", "r2", false),
        ];
        assert_eq!(
            standby_names(STRICT, "r1", &members),
            r#"ANY 1 ("pg-b", "pg-c")"#
        );
        let two = Policy {
            count: 2,
            relax: false,
        };
        assert_eq!(
            standby_names(two, "r1", &members),
            r#"ANY 2 ("pg-b", "pg-c")"#
        );
        // Relaxed: only pg-c streams.
        let relax_two = Policy {
            count: 2,
            relax: true,
        };
        assert_eq!(
            standby_names(relax_two, "r1", &members),
            r#"ANY 1 ("pg-b", "pg-c")"#
        );
    }

    #[test]
    fn postgres_strict_keeps_waiting_and_relaxed_goes_asynchronous() {
        let members = [member("pg-b", "r2", false), member("pg-c", "r3", false)];
        assert_eq!(
            standby_names(STRICT, "r1", &members),
            r#"ANY 1 ("pg-b", "pg-c")"#
        );
        assert_eq!(standby_names(RELAX, "r1", &members), "");
    }

    #[test]
    fn members_that_are_never_promoted_do_not_confirm() {
        let mut delayed = member("pg-delayed", "r2", true);
        delayed.eligible = false;
        assert_eq!(
            standby_names(STRICT, "r1", &[delayed.clone(), member("pg-c", "r3", true)]),
            r#"ANY 1 ("pg-c")"#
        );
        assert_eq!(standby_names(STRICT, "r1", &[delayed]), "");
    }

    #[test]
    fn redis_counts_the_masters_own_region_on_top() {
        let members = [member("s-a2", "r1", true), member("s-b", "r2", true)];
        assert_eq!(min_replicas(STRICT, "r1", &members), 2);
        // The in-region replica detached: one from elsewhere is enough.
        let members = [member("s-a2", "r1", false), member("s-b", "r2", true)];
        assert_eq!(min_replicas(STRICT, "r1", &members), 1);
        // Nobody outside attached: strict refuses writes, relaxed takes them.
        let members = [member("s-a2", "r1", true), member("s-b", "r2", false)];
        assert_eq!(min_replicas(STRICT, "r1", &members), 2);
        assert_eq!(min_replicas(RELAX, "r1", &members), 0);
    }

    #[test]
    fn the_rule_seen_is_compared_by_count_and_names() {
        let want = Acks::postgres(r#"ANY 1 ("pg-b", "pg-c")"#, "on", 0);
        assert!(same_rule(
            &Acks::postgres("ANY 1 (pg-c, PG-B)", "on", 2),
            &want
        ));
        assert!(!same_rule(&Acks::postgres("ANY 1 (pg-c)", "on", 2), &want));
        assert!(!same_rule(
            &Acks::postgres(r#"ANY 1 ("pg-b", "pg-c")"#, "local", 2),
            &want
        ));
        assert!(same_rule(
            &Acks::postgres("", "on", 2),
            &Acks::postgres("", "on", 0)
        ));
        assert!(same_rule(&Acks::redis(2, 3, 2), &Acks::redis(2, 3, 0)));
        assert!(!same_rule(&Acks::redis(2, 10, 2), &Acks::redis(2, 3, 0)));
    }

    fn arb_member() -> impl Strategy<Value = Member> {
        (
            0u8..6,
            prop::sample::select(vec!["r1", "r2", "r3"]),
            any::<bool>(),
            any::<bool>(),
        )
            .prop_map(|(n, region, eligible, attached)| Member {
                name: format!("m{n}"),
                region: region.into(),
                eligible,
                attached,
            })
    }

    proptest! {
        /// What the primary is asked to wait for is exactly what fences it when its region is
        /// cut off: a strict rule needs confirmations no member of its own region can give,
        /// and the rule written is read back as the same rule.
        #[test]
        fn a_strict_rule_fences_a_cut_off_primary(
            members in prop::collection::vec(arb_member(), 0..6),
            count in 1u32..4,
            relax in any::<bool>(),
        ) {
            let policy = Policy { count, relax };
            let value = standby_names(policy, "r1", &members);
            let acks = Acks::postgres(&value, "on", 0);
            prop_assert!(same_rule(&Acks::postgres(&value, "on", 5), &acks));
            let outside: Vec<&Member> =
                members.iter().filter(|m| m.region != "r1" && m.eligible).collect();
            if let Some(names) = &acks.names {
                for n in names {
                    prop_assert!(outside.iter().any(|m| m.name.eq_ignore_ascii_case(n)));
                }
            }
            if !relax && !outside.is_empty() {
                prop_assert!(acks.required >= 1);
            }
            prop_assert!(acks.required <= count);

            let to_write = min_replicas(policy, "r1", &members);
            let inside = members.iter().filter(|m| m.region == "r1" && m.attached).count() as u32;
            if !relax {
                // A cut-off master keeps at most its own region's replicas: too few.
                prop_assert!(to_write > inside);
            } else if to_write > 0 {
                prop_assert!(to_write > inside);
            }
        }
    }
}
