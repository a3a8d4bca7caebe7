//! May the leader promote around an old primary it could not fence? A pure rule, the one
//! place that answers it.
//!
//! A fence the leader confirmed (the member answered fenced, or nothing listens on its port)
//! always allows the promotion. An old primary the leader cannot reach may be alive and taking
//! writes from clients of its own region — the leader cannot tell a dead region from one it is
//! cut off from, and the region's agent may be cut off from its datastores too, so its
//! lease-loss fence is not a fact anybody saw. The leader promotes around such a primary only
//!
//! - when the group fences itself: the primary's acknowledgement rule
//!   (`synchronous_standby_names`, `min-replicas-to-write`), as last seen, needs more replicas
//!   than can still reach it — replicas outside its region whose own agents report their link
//!   down do not count, those of its own region always do — so it cannot acknowledge a write,
//!   whether or not its region's agents still hold their leases; recorded `by_lease` (assumed,
//!   with the reason);
//! - or when an operator forced the failover of a cut-off region; recorded `forced`.
//!
//! Otherwise it waits, and says that a partition of the region could leave two writable
//! primaries.

use crate::datastore::acks::Acks;
use crate::desired::FenceProof;

/// A member of the group other than the old primary, as the leader sees it now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replica {
    /// Its name (Postgres: the `application_name` it streams with, the member's name).
    pub name: String,
    /// Its region.
    pub region: String,
    /// Its own agent's latest fresh report says its link to its primary is up (`Some(true)`)
    /// or down (`Some(false)`); `None`: no fresh report.
    pub attached: Option<bool>,
}

/// Whether a group's old primary, cut off from the leader, refuses writes by itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SelfFencing {
    /// It does, because of what is said.
    Holds(String),
    /// It may not, because of what is said.
    Missing(String),
}

impl Default for SelfFencing {
    fn default() -> Self {
        SelfFencing::Missing("not evaluated for this kind of group".into())
    }
}

impl SelfFencing {
    /// The reason, when it holds.
    pub fn holds(&self) -> Option<&str> {
        match self {
            SelfFencing::Holds(why) => Some(why),
            SelfFencing::Missing(_) => None,
        }
    }

    /// The reason, when it does not hold.
    pub fn missing(&self) -> Option<&str> {
        match self {
            SelfFencing::Holds(_) => None,
            SelfFencing::Missing(why) => Some(why),
        }
    }
}

/// Whether `member` (of `region`, with acknowledgement rule `acks` as last seen) can
/// acknowledge a write while cut off, given the group's other members.
///
/// A replica may still acknowledge for it when it is in the same region (a partition between
/// regions leaves it connected), when its agent has no fresh report, or when its link is up;
/// a name in the rule that is no configured member counts as one that may, and so does every
/// connected replica beyond the configured ones when any replica may acknowledge.
pub fn self_fencing(
    member: &str,
    region: &str,
    acks: Option<&Acks>,
    replicas: &[Replica],
) -> SelfFencing {
    let Some(acks) = acks else {
        return SelfFencing::Missing(format!(
            "{member}'s acknowledgement rule was never seen (no report of it as primary)"
        ));
    };
    if acks.required == 0 {
        return SelfFencing::Missing(format!(
            "{member} acknowledges a write without any replica (no synchronous standby, \
             min-replicas-to-write 0)"
        ));
    }
    let may_ack = |r: &Replica| r.region == region || r.attached != Some(false);
    let mut may: Vec<String> = Vec::new();
    let mut unknown = 0u32;
    match &acks.names {
        Some(names) => {
            // A primary is never its own standby: the same rule may stand on every member.
            for name in names.iter().filter(|n| !n.eq_ignore_ascii_case(member)) {
                match replicas.iter().find(|r| r.name.eq_ignore_ascii_case(name)) {
                    Some(r) if !may_ack(r) => {}
                    Some(r) => may.push(r.name.clone()),
                    None => may.push(format!("{name} (not a configured member)")),
                }
            }
        }
        None => {
            may.extend(
                replicas
                    .iter()
                    .filter(|r| may_ack(r))
                    .map(|r| r.name.clone()),
            );
            unknown = acks
                .connected
                .saturating_sub(u32::try_from(replicas.len()).unwrap_or(u32::MAX));
            if unknown > 0 {
                may.push(format!("{unknown} unconfigured replica(s)"));
            }
        }
    }
    // The unconfigured replicas are one entry of `may`, counted by their number.
    let count = u32::try_from(may.len())
        .unwrap_or(u32::MAX)
        .saturating_add(unknown.saturating_sub(1));
    let required = acks.required;
    if count < required {
        SelfFencing::Holds(format!(
            "{member} needs {required} replica acknowledgement(s) per write and {} can still \
             give one{}",
            if count == 0 {
                "none".to_owned()
            } else {
                count.to_string()
            },
            if may.is_empty() {
                String::new()
            } else {
                format!(" ({})", may.join(", "))
            }
        ))
    } else {
        SelfFencing::Missing(format!(
            "{member} needs {required} replica acknowledgement(s) per write and {count} may \
             still give them ({})",
            may.join(", ")
        ))
    }
}

/// What the leader's fence attempt found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reach {
    /// The member answered fenced.
    Fenced,
    /// Nothing listens on its port.
    NotListening,
    /// No answer: a connection that hangs or times out.
    Unreachable,
    /// It answered but could not be fenced.
    Failed,
}

/// Why the leader does not promote around the old primary (yet).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// Unreachable, its region's agents hold their leases: they may fence it, or it is alive
    /// and the leader is the one cut off. Retry.
    Unreachable,
    /// It answered and is not fenced. Retry.
    NotFenced,
    /// Unreachable in a cut-off region that does not fence itself: a partition could leave
    /// two writable primaries. Wait for it to be reached, or for an operator to force it.
    SplitBrainRisk,
}

/// The rule: whether the leader may promote around the old primary, and on what grounds.
pub fn may_promote_around(
    reach: Reach,
    cut_off: bool,
    self_fencing: Option<&str>,
    forced: bool,
) -> Result<FenceProof, Wait> {
    match reach {
        Reach::Fenced | Reach::NotListening => Ok(FenceProof::Confirmed),
        Reach::Failed => Err(Wait::NotFenced),
        // It cannot acknowledge a write, whoever holds a lease.
        Reach::Unreachable if self_fencing.is_some() => Ok(FenceProof::ByLease),
        Reach::Unreachable if !cut_off => Err(Wait::Unreachable),
        Reach::Unreachable if forced => Ok(FenceProof::Forced),
        Reach::Unreachable => Err(Wait::SplitBrainRisk),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn replica(name: &str, region: &str, attached: Option<bool>) -> Replica {
        Replica {
            name: name.into(),
            region: region.into(),
            attached,
        }
    }

    fn pg(rule: &str) -> Acks {
        Acks::postgres(rule, "on", 2)
    }

    #[test]
    fn self_fencing_over_every_kind_of_rule() {
        let away = [
            replica("b", "r2", Some(false)),
            replica("c", "r3", Some(false)),
        ];
        let one_attached = [
            replica("b", "r2", Some(false)),
            replica("c", "r3", Some(true)),
        ];
        let silent = [replica("b", "r2", Some(false)), replica("c", "r3", None)];
        let one_local = [
            replica("b", "r2", Some(false)),
            replica("c", "r1", Some(false)),
        ];
        let cases: Vec<(&str, Option<Acks>, &[Replica], bool)> = vec![
            ("never seen", None, &away, false),
            ("asynchronous", Some(pg("")), &away, false),
            (
                "commit local",
                Some(Acks::postgres("ANY 1 (b, c)", "local", 2)),
                &away,
                false,
            ),
            (
                "ANY 1 over detached replicas",
                Some(pg("ANY 1 (b, c)")),
                &away,
                true,
            ),
            (
                "one still attached",
                Some(pg("ANY 1 (b, c)")),
                &one_attached,
                false,
            ),
            (
                "ANY 2, one attached",
                Some(pg("ANY 2 (b, c)")),
                &one_attached,
                true,
            ),
            (
                "a replica without a fresh report",
                Some(pg("ANY 1 (b, c)")),
                &silent,
                false,
            ),
            (
                "a replica in the same region",
                Some(pg("ANY 1 (b, c)")),
                &one_local,
                false,
            ),
            (
                "ANY 2, one in the same region",
                Some(pg("ANY 2 (b, c)")),
                &one_local,
                true,
            ),
            ("an unknown name", Some(pg("ANY 1 (b, x)")), &away, false),
            ("FIRST 1 over detached", Some(pg("b, c")), &away, true),
            (
                "the primary's own name",
                Some(pg("ANY 1 (a, b, c)")),
                &away,
                true,
            ),
            ("any standby, all detached", Some(pg("*")), &away, true),
            (
                "any standby, one more connected than configured",
                Some(Acks::postgres("*", "on", 3)),
                &away,
                false,
            ),
            ("redis, detached", Some(Acks::redis(1, 10, 2)), &away, true),
            (
                "redis, one attached",
                Some(Acks::redis(1, 10, 2)),
                &one_attached,
                false,
            ),
            ("redis, max lag 0", Some(Acks::redis(1, 0, 2)), &away, false),
        ];
        for (case, acks, replicas, holds) in cases {
            let got = self_fencing("a", "r1", acks.as_ref(), replicas);
            assert_eq!(got.holds().is_some(), holds, "{case}: {got:?}");
        }
    }

    #[test]
    fn the_reason_names_who_may_still_acknowledge() {
        let got = self_fencing(
            "pg-a",
            "r1",
            Some(&pg("ANY 1 (pg-b, pg-c)")),
            &[
                replica("pg-b", "r2", Some(false)),
                replica("pg-c", "r3", Some(true)),
            ],
        );
        assert_eq!(
            got,
            SelfFencing::Missing(
                "pg-a needs 1 replica acknowledgement(s) per write and 1 may still give them \
                 (pg-c)"
                    .into()
            )
        );
    }

    #[test]
    fn the_rule_over_every_combination() {
        use FenceProof::*;
        let reaches = [
            Reach::Fenced,
            Reach::NotListening,
            Reach::Unreachable,
            Reach::Failed,
        ];
        for reach in reaches {
            for cut_off in [false, true] {
                for self_fencing in [None, Some("needs 1 of none")] {
                    for forced in [false, true] {
                        let got = may_promote_around(reach, cut_off, self_fencing, forced);
                        let expected = match reach {
                            Reach::Fenced | Reach::NotListening => Ok(Confirmed),
                            Reach::Failed => Err(Wait::NotFenced),
                            Reach::Unreachable if self_fencing.is_some() => Ok(ByLease),
                            Reach::Unreachable if !cut_off => Err(Wait::Unreachable),
                            Reach::Unreachable if forced => Ok(Forced),
                            Reach::Unreachable => Err(Wait::SplitBrainRisk),
                        };
                        assert_eq!(
                            got, expected,
                            "{reach:?} cut_off={cut_off} {self_fencing:?} forced={forced}"
                        );
                    }
                }
            }
        }
    }

    fn arb_replica() -> impl Strategy<Value = Replica> {
        (
            prop::sample::select(vec!["b", "c", "d"]),
            prop::sample::select(vec!["r1", "r2", "r3"]),
            prop::option::of(any::<bool>()),
        )
            .prop_map(|(n, r, a)| replica(n, r, a))
    }

    proptest! {
        /// Never promote around an old primary nobody confirmed fenced unless a cut-off
        /// region fences itself or an operator forced it; and self-fencing never counts a
        /// replica that may still acknowledge: with every replica that may acknowledge
        /// removed from the count, at least `required` replicas must be detached or absent.
        #[test]
        fn no_unconfirmed_promotion_without_grounds(
            reach in prop::sample::select(vec![
                Reach::Fenced, Reach::NotListening, Reach::Unreachable, Reach::Failed,
            ]),
            cut_off in any::<bool>(),
            required in 0u32..4,
            connected in 0u32..4,
            replicas in prop::collection::vec(arb_replica(), 0..4),
            forced in any::<bool>(),
        ) {
            let acks = Acks { required, names: None, connected, lag_s: 0 };
            let fencing = self_fencing("a", "r1", Some(&acks), &replicas);
            let may = replicas
                .iter()
                .filter(|r| r.region == "r1" || r.attached != Some(false))
                .count() as u32
                + connected.saturating_sub(replicas.len() as u32);
            prop_assert_eq!(fencing.holds().is_some(), required > 0 && may < required);
            let got = may_promote_around(reach, cut_off, fencing.holds(), forced);
            if got.is_ok() && !matches!(reach, Reach::Fenced | Reach::NotListening) {
                prop_assert!(fencing.holds().is_some() || (cut_off && forced));
            }
        }
    }
}
