//! The fence rules over every role × lease × named-primary case, and their invariants as
//! property tests.

use proptest::prelude::*;

use super::*;
use crate::config::TargetKind;

fn pg(name: &str) -> TargetId {
    TargetId::new(TargetKind::Postgres, "main", name)
}

const NO_LEASE: Lease = Lease {
    valid: false,
    settled: false,
    joined: true,
};
const STARTING: Lease = Lease {
    valid: false,
    settled: false,
    joined: false,
};
const FRESH_LEASE: Lease = Lease {
    valid: true,
    settled: false,
    joined: true,
};
const SETTLED: Lease = Lease {
    valid: true,
    settled: true,
    joined: true,
};

/// One check of `me` with a fresh memory (or `last_known_primary` set).
fn run(
    kind: Kind,
    role: Option<Role>,
    fenced: bool,
    lease: Lease,
    named: Option<&TargetId>,
    last_known_primary: bool,
) -> FenceAction {
    run_with(kind, role, fenced, lease, named, last_known_primary, true)
}

/// [`run`], with or without a rejoin command.
fn run_with(
    kind: Kind,
    role: Option<Role>,
    fenced: bool,
    lease: Lease,
    named: Option<&TargetId>,
    last_known_primary: bool,
    can_rejoin: bool,
) -> FenceAction {
    let me = pg("me");
    let mut memory = Memory {
        last_known_primary,
        demoted: false,
        ..Memory::default()
    };
    decide(
        &Check {
            id: &me,
            kind,
            role,
            fenced,
            lease,
            named,
            cluster: ClusterStanding::default(),
            can_rejoin,
            streaming: true,
            deposed: false,
        },
        &mut memory,
    )
}

/// (kind, role, fenced, lease, named, last known primary) and the action wanted.
type Case<'a> = (
    Kind,
    Option<Role>,
    bool,
    Lease,
    Option<&'a TargetId>,
    bool,
    FenceAction,
);

#[test]
fn every_role_lease_and_named_primary_case() {
    use FenceAction::*;
    let me = pg("me");
    let other = pg("other");
    let stale = || {
        Fence(FenceReason::Stale {
            named: other.clone(),
        })
    };
    let not_named = |named: Option<&TargetId>| {
        Stay(Hold::NotNamed {
            named: named.cloned(),
        })
    };
    // (kind, role, fenced, lease, named, last known primary) -> action
    #[rustfmt::skip]
    let cases: Vec<Case> = vec![
        // Postgres, lease lost: a writable member is fenced whatever the log says; so is one
        // its probe cannot reach any more, last seen primary (its sessions may still write).
        (Kind::Postgres, Some(Role::Primary), false, NO_LEASE, Some(&me), false, Fence(FenceReason::NoQuorum)),
        (Kind::Postgres, Some(Role::Primary), false, NO_LEASE, Some(&other), false, Fence(FenceReason::NoQuorum)),
        (Kind::Postgres, Some(Role::Primary), false, NO_LEASE, None, false, Fence(FenceReason::NoQuorum)),
        (Kind::Postgres, None, false, NO_LEASE, Some(&me), true, Fence(FenceReason::NoQuorum)),
        (Kind::Postgres, None, false, NO_LEASE, Some(&me), false, Nothing),
        (Kind::Postgres, Some(Role::Primary), true, NO_LEASE, Some(&me), false, Nothing),
        (Kind::Postgres, Some(Role::Replica), false, NO_LEASE, Some(&other), false, Nothing),
        // A starting agent has a lease period to join before it fences anything.
        (Kind::Postgres, Some(Role::Primary), false, STARTING, Some(&me), false, Nothing),
        (Kind::Redis, Some(Role::Primary), false, STARTING, None, true, Nothing),
        // Postgres, lease held: the named primary is left alone; a primary the log does not
        // name while it names another is stale, also when its probe fails.
        (Kind::Postgres, Some(Role::Primary), false, FRESH_LEASE, Some(&me), false, Nothing),
        (Kind::Postgres, Some(Role::Primary), false, SETTLED, Some(&me), false, Nothing),
        (Kind::Postgres, Some(Role::Primary), false, FRESH_LEASE, Some(&other), false, stale()),
        (Kind::Postgres, Some(Role::Primary), false, SETTLED, Some(&other), false, stale()),
        (Kind::Postgres, None, false, FRESH_LEASE, Some(&other), true, stale()),
        (Kind::Postgres, None, false, SETTLED, Some(&other), false, Nothing),
        (Kind::Postgres, Some(Role::Primary), false, SETTLED, None, false, Nothing),
        (Kind::Postgres, Some(Role::Replica), false, SETTLED, Some(&other), false, Nothing),
        // Postgres, fenced, lease back: unfenced only once settled and named.
        (Kind::Postgres, Some(Role::Primary), true, FRESH_LEASE, Some(&me), false, Nothing),
        (Kind::Postgres, Some(Role::Primary), true, SETTLED, Some(&me), false, Unfence),
        (Kind::Postgres, None, true, SETTLED, Some(&me), true, Unfence),
        // Postgres, lease settled, the log names another: a fenced old primary, or one last
        // seen primary whose probe fails (crashed), is rejoined as a replica of the named one;
        // once it answers as a replica its fence is released. Never before the lease settled.
        (Kind::Postgres, Some(Role::Primary), true, SETTLED, Some(&other), false, Rejoin { to: other.clone(), fence_too: false }),
        (Kind::Postgres, None, false, SETTLED, Some(&other), true, Rejoin { to: other.clone(), fence_too: true }),
        (Kind::Postgres, None, true, SETTLED, Some(&other), true, Rejoin { to: other.clone(), fence_too: false }),
        (Kind::Postgres, Some(Role::Primary), true, FRESH_LEASE, Some(&other), false, Nothing),
        (Kind::Postgres, Some(Role::Replica), true, SETTLED, Some(&other), false, Release),
        (Kind::Postgres, Some(Role::Replica), true, FRESH_LEASE, Some(&other), false, Nothing),
        (Kind::Postgres, None, true, SETTLED, Some(&other), false, not_named(Some(&other))),
        (Kind::Postgres, Some(Role::Primary), true, SETTLED, None, false, not_named(None)),
        // Redis replication shard: a master the log no longer names is demoted once settled,
        // never fenced as stale; one unreachable after its lease is gone is fenced.
        (Kind::Redis, Some(Role::Primary), false, SETTLED, Some(&other), false, Demote { to: other.clone() }),
        (Kind::Redis, Some(Role::Primary), true, SETTLED, Some(&other), false, Demote { to: other.clone() }),
        (Kind::Redis, Some(Role::Primary), false, FRESH_LEASE, Some(&other), false, Nothing),
        (Kind::Redis, Some(Role::Primary), false, NO_LEASE, Some(&other), false, Fence(FenceReason::NoQuorum)),
        (Kind::Redis, None, false, NO_LEASE, Some(&me), true, Fence(FenceReason::NoQuorum)),
        (Kind::Redis, Some(Role::Primary), false, SETTLED, Some(&me), false, Nothing),
        (Kind::Redis, Some(Role::Primary), true, SETTLED, Some(&me), false, Unfence),
        (Kind::Redis, Some(Role::Replica), true, SETTLED, Some(&other), false, not_named(Some(&other))),
        // Redis Cluster: no named primary; fenced on lease loss, unfenced by its standing.
        (Kind::RedisCluster, Some(Role::Primary), false, NO_LEASE, None, false, Fence(FenceReason::NoQuorum)),
        (Kind::RedisCluster, Some(Role::Primary), true, SETTLED, None, false, Stay(Hold::NotOwner)),
        (Kind::RedisCluster, Some(Role::Replica), true, SETTLED, None, false, Unfence),
        (Kind::RedisCluster, Some(Role::Primary), false, SETTLED, None, false, Nothing),
    ];
    for (i, (kind, role, fenced, lease, named, last, want)) in cases.into_iter().enumerate() {
        let got = run(kind, role, fenced, lease, named, last);
        assert_eq!(
            got, want,
            "case {i}: {kind:?} role {role:?} fenced {fenced} {lease:?} named {named:?} last primary {last}"
        );
    }
}

#[test]
fn a_cluster_master_is_unfenced_when_its_view_is_healthy_and_it_still_owns_its_slots() {
    let me = pg("me");
    for (view_ok, still_owner, want) in [
        (true, true, FenceAction::Unfence),
        (true, false, FenceAction::Stay(Hold::NotOwner)),
        (false, true, FenceAction::Stay(Hold::NotOwner)),
    ] {
        let check = Check {
            id: &me,
            kind: Kind::RedisCluster,
            role: Some(Role::Primary),
            fenced: true,
            lease: SETTLED,
            named: None,
            cluster: ClusterStanding {
                view_ok,
                still_owner,
            },
            can_rejoin: false,
            streaming: true,
            deposed: false,
        };
        assert_eq!(decide(&check, &mut Memory::default()), want);
    }
}

#[test]
fn a_demoted_master_is_demoted_once_and_forgotten_when_it_answers_as_replica() {
    let me = pg("me");
    let other = pg("other");
    let mut memory = Memory::default();
    let check = |role| Check {
        id: &me,
        kind: Kind::Redis,
        role: Some(role),
        fenced: false,
        lease: SETTLED,
        named: Some(&other),
        cluster: ClusterStanding::default(),
        can_rejoin: false,
        streaming: true,
        deposed: false,
    };
    assert_eq!(
        decide(&check(Role::Primary), &mut memory),
        FenceAction::Demote { to: other.clone() }
    );
    memory.demoted = true;
    assert_eq!(
        decide(&check(Role::Primary), &mut memory),
        FenceAction::Nothing
    );
    decide(&check(Role::Replica), &mut memory);
    assert_eq!(
        memory,
        Memory {
            seen_replica: true,
            ..Memory::default()
        }
    );
}

#[test]
fn the_last_known_role_is_kept_while_the_probe_fails() {
    let me = pg("me");
    let other = pg("other");
    let mut memory = Memory::default();
    let check = |role| Check {
        id: &me,
        kind: Kind::Postgres,
        role,
        fenced: false,
        lease: SETTLED,
        named: Some(&other),
        cluster: ClusterStanding::default(),
        can_rejoin: false,
        streaming: true,
        deposed: false,
    };
    decide(&check(Some(Role::Primary)), &mut memory);
    assert!(memory.last_known_primary);
    assert!(matches!(
        decide(&check(None), &mut memory),
        FenceAction::Fence(FenceReason::Stale { .. })
    ));
    assert!(
        memory.last_known_primary,
        "a failed probe keeps the last role"
    );
    assert_eq!(
        decide(&check(Some(Role::Replica)), &mut memory),
        FenceAction::Nothing
    );
    assert!(!memory.last_known_primary);
}

fn any_kind() -> impl Strategy<Value = Kind> {
    prop_oneof![
        Just(Kind::Postgres),
        Just(Kind::Redis),
        Just(Kind::RedisCluster)
    ]
}

fn any_role() -> impl Strategy<Value = Option<Role>> {
    prop_oneof![
        Just(None),
        Just(Some(Role::Primary)),
        Just(Some(Role::Replica))
    ]
}

fn any_lease() -> impl Strategy<Value = Lease> {
    prop_oneof![
        Just(STARTING),
        Just(NO_LEASE),
        Just(FRESH_LEASE),
        Just(SETTLED)
    ]
}

#[test]
fn without_a_rejoin_command_an_old_primary_stays_fenced_and_a_crashed_one_is_fenced_as_stale() {
    let other = pg("other");
    let decide_for = |role, fenced, last_known_primary| {
        run_with(
            Kind::Postgres,
            role,
            fenced,
            SETTLED,
            Some(&other),
            last_known_primary,
            false,
        )
    };
    assert_eq!(
        decide_for(Some(Role::Primary), true, true),
        FenceAction::Stay(Hold::NotNamed {
            named: Some(other.clone())
        })
    );
    assert_eq!(
        decide_for(None, false, true),
        FenceAction::Fence(FenceReason::Stale {
            named: other.clone()
        })
    );
    // Rejoined by someone else: the fence on a replica is released all the same.
    assert_eq!(
        decide_for(Some(Role::Replica), true, false),
        FenceAction::Release
    );
}

proptest! {
    /// Whatever it knows, the fencer: never fences a member it already fenced; lifts a fence
    /// only with a settled lease; never fences the primary the log names while it holds the
    /// lease (a healed partition or a change of leader does not disrupt it); always fences a
    /// member writable or last seen primary once its lease is gone, and nothing before it had
    /// a lease period to join; demotes only Redis replication masters.
    #[test]
    fn the_rules_hold_in_every_state(
        kind in any_kind(),
        role in any_role(),
        fenced in any::<bool>(),
        lease in any_lease(),
        named in 0..3u8,
        last_known_primary in any::<bool>(),
        demoted in any::<bool>(),
        view_ok in any::<bool>(),
        still_owner in any::<bool>(),
        can_rejoin in any::<bool>(),
        streaming in any::<bool>(),
        unstreamed_checks in prop_oneof![Just(0u32), Just(STRANDED_CHECKS - 1), 0..400u32],
        deposed in any::<bool>(),
    ) {
        let me = pg("me");
        let other = pg("other");
        let named = match named { 0 => None, 1 => Some(&me), _ => Some(&other) };
        let mut memory = Memory {
            last_known_primary,
            demoted,
            unstreamed_checks,
            ..Memory::default()
        };
        let check = Check {
            id: &me,
            kind,
            role,
            fenced,
            lease,
            named,
            cluster: ClusterStanding { view_ok, still_owner },
            can_rejoin,
            streaming,
            deposed,
        };
        let action = decide(&check, &mut memory);
        // What the member counts as before this check: a deposed one as last seen primary.
        let remembered = last_known_primary || (deposed && role != Some(Role::Replica));
        match &action {
            FenceAction::Fence(_) => prop_assert!(!fenced),
            FenceAction::Unfence => prop_assert!(fenced && lease.settled),
            FenceAction::Demote { to } => {
                prop_assert_eq!(kind, Kind::Redis);
                prop_assert!(lease.settled && role == Some(Role::Primary));
                prop_assert_eq!(to, &other);
            }
            FenceAction::Stay(_) => prop_assert!(fenced && lease.settled),
            FenceAction::Rejoin { to, fence_too } => {
                prop_assert!(can_rejoin);
                // A member last seen primary that no fence holds is always fenced too; a
                // stranded replica never is.
                prop_assert_eq!(*fence_too, !fenced && role != Some(Role::Replica));
                prop_assert_eq!(kind, Kind::Postgres);
                prop_assert!(lease.settled);
                prop_assert_eq!(to, &other);
                let stranded = role == Some(Role::Replica)
                    && !fenced
                    && !streaming
                    && unstreamed_checks + 1 >= STRANDED_CHECKS;
                prop_assert!(
                    (fenced && role == Some(Role::Primary))
                        || (role.is_none() && remembered)
                        || stranded,
                    "rejoined a member that is neither a fenced primary, a crashed one nor a \
                     stranded replica"
                );
            }
            FenceAction::Release => {
                prop_assert!(kind == Kind::Postgres && fenced && lease.settled);
                prop_assert_eq!(role, Some(Role::Replica));
                prop_assert_eq!(named, Some(&other));
            }
            FenceAction::Nothing => {}
        }
        if lease.valid && named == Some(&me) {
            prop_assert!(!matches!(action, FenceAction::Fence(_)));
            prop_assert!(!matches!(action, FenceAction::Rejoin { .. }), "rejoined the named primary");
        }
        let was_primary = role == Some(Role::Primary) || (role.is_none() && remembered);
        if !lease.valid && lease.joined && was_primary && !fenced {
            prop_assert_eq!(&action, &FenceAction::Fence(FenceReason::NoQuorum));
        }
        if !lease.joined {
            prop_assert!(!matches!(action, FenceAction::Fence(_)), "a starting agent fenced");
        }
        if role == Some(Role::Replica) && streaming {
            prop_assert!(!matches!(action, FenceAction::Rejoin { .. }), "rejoined a streaming replica");
        }
        match role {
            Some(Role::Primary) => prop_assert!(memory.last_known_primary),
            Some(Role::Replica) => prop_assert!(!memory.last_known_primary && !memory.demoted),
            None => prop_assert_eq!(memory.last_known_primary, remembered),
        }
    }
}

#[test]
fn a_member_just_promoted_is_not_fenced_before_this_agent_applies_the_decision() {
    let me = pg("me");
    let old = pg("old");
    let lease = Lease {
        valid: true,
        settled: true,
        joined: true,
    };
    let check = |role| Check {
        id: &me,
        kind: Kind::Postgres,
        role: Some(role),
        fenced: false,
        lease,
        // The log this agent applied still names the old primary.
        named: Some(&old),
        cluster: ClusterStanding::default(),
        can_rejoin: true,
        streaming: true,
        deposed: false,
    };
    let mut memory = Memory::default();
    assert_eq!(
        decide(&check(Role::Replica), &mut memory),
        FenceAction::Nothing
    );
    for _ in 0..PROMOTION_GRACE_CHECKS {
        assert_eq!(
            decide(&check(Role::Primary), &mut memory),
            FenceAction::Nothing
        );
    }
    // Still not named after the grace: a primary the cluster did not make, fenced as stale.
    assert_eq!(
        decide(&check(Role::Primary), &mut memory),
        FenceAction::Fence(FenceReason::Stale { named: old.clone() })
    );
    // A member never seen as a replica (an old primary restarted) gets no grace.
    let mut fresh = Memory::default();
    assert_eq!(
        decide(&check(Role::Primary), &mut fresh),
        FenceAction::Fence(FenceReason::Stale { named: old })
    );
}

#[test]
fn a_replica_that_stops_streaming_is_rejoined_only_once_it_is_stranded() {
    let me = pg("me");
    let named = pg("named");
    let check = |streaming, lease, can_rejoin| Check {
        id: &me,
        kind: Kind::Postgres,
        role: Some(Role::Replica),
        fenced: false,
        lease,
        named: Some(&named),
        cluster: ClusterStanding::default(),
        can_rejoin,
        streaming,
        deposed: false,
    };
    let mut memory = Memory::default();
    for _ in 1..STRANDED_CHECKS {
        assert_eq!(
            decide(&check(false, SETTLED, true), &mut memory),
            FenceAction::Nothing
        );
    }
    // A probe that fails meanwhile (the server restarting) neither resets nor counts.
    let failed = Check {
        role: None,
        ..check(false, SETTLED, true)
    };
    assert_eq!(decide(&failed, &mut memory), FenceAction::Nothing);
    assert_eq!(memory.unstreamed_checks, STRANDED_CHECKS - 1);
    // Without a settled lease or a rejoin command, nothing; with both, the rejoin.
    let mut unsettled = memory;
    assert_eq!(
        decide(&check(false, FRESH_LEASE, true), &mut unsettled),
        FenceAction::Nothing
    );
    let mut no_command = memory;
    assert_eq!(
        decide(&check(false, SETTLED, false), &mut no_command),
        FenceAction::Nothing
    );
    assert_eq!(
        decide(&check(false, SETTLED, true), &mut memory),
        FenceAction::Rejoin {
            to: named.clone(),
            fence_too: false
        }
    );
    // One check that streams starts the count over.
    decide(&check(true, SETTLED, true), &mut memory);
    assert_eq!(memory.unstreamed_checks, 0);
    assert_eq!(
        decide(&check(false, SETTLED, true), &mut memory),
        FenceAction::Nothing
    );
}

#[test]
fn a_restarted_agent_rejoins_the_member_the_log_deposed_rather_than_leave_it_for_a_start() {
    let me = pg("me");
    let named = pg("named");
    let check = |role, deposed| Check {
        id: &me,
        kind: Kind::Postgres,
        role,
        fenced: false,
        lease: SETTLED,
        named: Some(&named),
        cluster: ClusterStanding::default(),
        can_rejoin: true,
        streaming: false,
        deposed,
    };
    // A fresh memory (the agent restarted) and the member not running: rejoined, and fenced
    // as stale until a fence holds, because the log deposed it.
    assert_eq!(
        decide(&check(None, true), &mut Memory::default()),
        FenceAction::Rejoin {
            to: named.clone(),
            fence_too: true
        }
    );
    // Started writable by someone else: fenced as stale at once.
    assert_eq!(
        decide(&check(Some(Role::Primary), true), &mut Memory::default()),
        FenceAction::Fence(FenceReason::Stale {
            named: named.clone()
        })
    );
    // Once it has answered as a replica, a failing probe is no reason to rejoin it.
    let mut memory = Memory::default();
    decide(&check(Some(Role::Replica), true), &mut memory);
    assert_eq!(
        decide(&check(None, true), &mut memory),
        FenceAction::Nothing
    );
    // A member the log did not depose, never seen: nothing.
    assert_eq!(
        decide(&check(None, false), &mut Memory::default()),
        FenceAction::Nothing
    );
}
