//! The fence rules: what an agent does with one local primary at one lease check, as a pure
//! function of what it knows — the member's role as last probed, whether it was last seen as
//! primary, the lease, whether the lease has settled, and the primary the log names.
//!
//! The rules, in the order they are tried:
//! 1. A Redis master of a replication shard that the log no longer names, with the lease
//!    settled, is made a replica of the named master (once: the probe shows the new role a
//!    moment later). It is never fenced or unfenced meanwhile.
//! 2. Without the lease, a member that is writable or was last seen as primary, not fenced
//!    yet, is fenced — once this agent has been up for a lease period (a starting agent first
//!    gets the chance to join). A member whose probe fails is tried at every check until a
//!    fence holds: its sessions may still write while the probe cannot reach it.
//! 3. With the lease, a Postgres member that is writable or was last seen as primary (its
//!    probe may fail while its sessions still write) and that the log does not name while it
//!    names another member is fenced as stale — except, for [`PROMOTION_GRACE_CHECKS`], a
//!    member that answered as a replica before: a promotion, which the log this agent has
//!    applied may not name yet (the leader promotes right after it commits the decision).
//! 4. With the lease settled, while the log names another member: a fenced Postgres member
//!    that answers as a replica (rejoined) has its fence released; with a rejoin command
//!    configured, one that is fenced and answers as primary, or was last seen as primary and
//!    its probe fails (crashed), is rejoined as a replica of the named one — the latter
//!    fenced as stale too while no fence holds (it may only be out of this agent's sight).
//!    A member the log's latest promotion of its group deposed counts as last seen primary
//!    until it answers as a replica, so an agent that restarted knows it too.
//!    So is a replica, not fenced, whose WAL receiver has not streamed for
//!    [`STRANDED_CHECKS`]: a failover can leave one on the old timeline with WAL the new
//!    primary never had, and no repointing makes it stream again (the rejoin itself goes on
//!    only when the replica is on an older timeline than the named primary).
//! 5. With the lease settled, a fenced member is unfenced only when the log still names it
//!    (a Redis Cluster node: when it turned replica, or its own view is healthy and the log's
//!    slot owners still name it); otherwise it stays fenced.
//!
//! Nothing here does I/O or reads a clock; [`super::Fencer`] carries the actions out.

use crate::topology::TargetId;

/// A local member's role as its last successful probe showed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Takes writes: a Postgres primary, a Redis master.
    Primary,
    /// A Postgres standby, a Redis replica.
    Replica,
}

/// What kind of local member.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A Postgres member.
    Postgres,
    /// A member of a Redis replication shard.
    Redis,
    /// A Redis Cluster node (the cluster names its own masters).
    RedisCluster,
}

/// What the fencer remembers of a member from one check to the next.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Memory {
    /// Last seen as primary (kept while its probe fails, cleared once it answers as replica).
    pub last_known_primary: bool,
    /// Made a replica of the named master; cleared once it answers as replica.
    pub demoted: bool,
    /// Has answered as a replica (since this agent started).
    pub seen_replica: bool,
    /// Checks it has answered as primary since it last answered as a replica.
    pub primary_checks: u32,
    /// Checks in a row it has answered as a replica whose WAL receiver does not stream (kept
    /// while its probe fails).
    pub unstreamed_checks: u32,
}

/// A member that answered as a replica, then as primary (promoted), is not fenced as stale
/// for this many checks (2 s at the lease check's 100 ms): the log this agent has applied may
/// lag the leader's by the commit of the decision.
pub const PROMOTION_GRACE_CHECKS: u32 = 20;

/// A replica whose WAL receiver has not streamed for this many checks (15 s) is stranded: the
/// healer has had the time to repoint it a few times, and a failover takes less.
pub const STRANDED_CHECKS: u32 = 150;

/// The lease as the fencer sees it at this check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    /// Held: contact with a quorum within `lease_ttl`.
    pub valid: bool,
    /// Held without a break for [`super::SETTLE`] with the log applied: what the log names
    /// can be acted on.
    pub settled: bool,
    /// This agent has been up for a lease period: it had its chance to join, so a lease it
    /// does not hold is a lease lost.
    pub joined: bool,
}

/// A Redis Cluster node's own standing, for lifting its fence.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClusterStanding {
    /// Its own view says `cluster_state:ok`.
    pub view_ok: bool,
    /// The log's record of the slot owners still names it.
    pub still_owner: bool,
}

/// Everything the rules read about one member at one check.
#[derive(Debug, Clone, Copy)]
pub struct Check<'a> {
    /// The member.
    pub id: &'a TargetId,
    /// Its kind.
    pub kind: Kind,
    /// Its role as last probed (`None` while its probe fails or before the first).
    pub role: Option<Role>,
    /// Whether this agent holds a fence on it.
    pub fenced: bool,
    /// The lease.
    pub lease: Lease,
    /// The primary the log names for its group, if any.
    pub named: Option<&'a TargetId>,
    /// For a Redis Cluster node: its standing.
    pub cluster: ClusterStanding,
    /// A rejoin command is configured for it (`postgres.rejoin`).
    pub can_rejoin: bool,
    /// As a replica: its WAL receiver streams, from whichever member.
    pub streaming: bool,
    /// The log's latest promotion of its group moved the primary away from it, and its probe
    /// answers as primary or has failed `fall` times (not merely before its first answer):
    /// until this agent sees it as a replica, it counts as last seen primary (an agent that
    /// restarts with its region still knows which of its members to rejoin rather than
    /// start).
    pub deposed: bool,
}

/// Why a member is fenced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FenceReason {
    /// The lease ran out.
    NoQuorum,
    /// The log names another member primary.
    Stale {
        /// The member the log names.
        named: TargetId,
    },
}

impl std::fmt::Display for FenceReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FenceReason::NoQuorum => f.write_str("no contact with a quorum for the lease period"),
            FenceReason::Stale { named } => {
                write!(f, "stale primary: the cluster names {named}")
            }
        }
    }
}

/// Why a fenced member stays fenced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hold {
    /// The log names another member, or none.
    NotNamed {
        /// The member the log names, if any.
        named: Option<TargetId>,
    },
    /// A Redis Cluster master that has not shown it still owns its slots.
    NotOwner,
}

/// What to do with a member at this check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FenceAction {
    /// Nothing.
    Nothing,
    /// Fence it.
    Fence(FenceReason),
    /// Make it a replica of the named master.
    Demote {
        /// The master the log names.
        to: TargetId,
    },
    /// Lift the fence.
    Unfence,
    /// Make this old Postgres primary a streaming replica of the named one (the rejoin
    /// command; the fence stays until it answers as a replica).
    Rejoin {
        /// The primary the log names.
        to: TargetId,
        /// Not fenced yet (its probe fails): fence it as stale too, at every check, as rule 3
        /// would — it may still take writes where this agent cannot see it, and a rejoin that
        /// fails waits minutes before the next.
        fence_too: bool,
    },
    /// Lift the fence of a member that rejoined as a replica.
    Release,
    /// Keep the fence (said at debug level).
    Stay(Hold),
}

/// The rules (see the module doc). Updates `memory` with what this check saw.
pub fn decide(check: &Check<'_>, memory: &mut Memory) -> FenceAction {
    match check.role {
        Some(Role::Primary) => {
            memory.last_known_primary = true;
            memory.primary_checks = memory.primary_checks.saturating_add(1);
            memory.unstreamed_checks = 0;
        }
        Some(Role::Replica) => {
            memory.last_known_primary = false;
            memory.demoted = false;
            memory.seen_replica = true;
            memory.primary_checks = 0;
            memory.unstreamed_checks = if check.streaming {
                0
            } else {
                memory.unstreamed_checks.saturating_add(1)
            };
        }
        None => {}
    }
    if check.deposed && !memory.seen_replica && check.role != Some(Role::Replica) {
        memory.last_known_primary = true;
    }
    let just_promoted = memory.seen_replica && memory.primary_checks <= PROMOTION_GRACE_CHECKS;
    let writable = check.role == Some(Role::Primary);
    let named_other = check.named.filter(|n| *n != check.id);
    if check.lease.settled && writable && check.kind == Kind::Redis {
        if let Some(named) = named_other {
            return if memory.demoted {
                FenceAction::Nothing
            } else {
                FenceAction::Demote { to: named.clone() }
            };
        }
    }
    if check.lease.settled && check.kind == Kind::Postgres {
        if let Some(named) = named_other {
            match check.role {
                Some(Role::Replica) if check.fenced => return FenceAction::Release,
                Some(Role::Replica)
                    if check.can_rejoin && memory.unstreamed_checks >= STRANDED_CHECKS =>
                {
                    return FenceAction::Rejoin {
                        to: named.clone(),
                        fence_too: false,
                    }
                }
                Some(Role::Primary) if check.fenced && check.can_rejoin => {
                    return FenceAction::Rejoin {
                        to: named.clone(),
                        fence_too: false,
                    }
                }
                None if memory.last_known_primary && check.can_rejoin => {
                    return FenceAction::Rejoin {
                        to: named.clone(),
                        fence_too: !check.fenced,
                    }
                }
                _ => {}
            }
        }
    }
    if !check.lease.valid
        && check.lease.joined
        && (writable || memory.last_known_primary)
        && !check.fenced
    {
        return FenceAction::Fence(FenceReason::NoQuorum);
    }
    if check.lease.valid
        && (writable || memory.last_known_primary)
        && !check.fenced
        && !(writable && just_promoted)
    {
        return match (check.kind, named_other) {
            (Kind::Postgres, Some(named)) => FenceAction::Fence(FenceReason::Stale {
                named: named.clone(),
            }),
            _ => FenceAction::Nothing,
        };
    }
    if check.lease.settled && check.fenced {
        if check.kind == Kind::RedisCluster {
            let standing = check.cluster;
            return if check.role == Some(Role::Replica)
                || (standing.view_ok && standing.still_owner)
            {
                FenceAction::Unfence
            } else {
                FenceAction::Stay(Hold::NotOwner)
            };
        }
        return match check.named {
            Some(named) if named == check.id => FenceAction::Unfence,
            named => FenceAction::Stay(Hold::NotNamed {
                named: named.cloned(),
            }),
        };
    }
    FenceAction::Nothing
}

#[cfg(test)]
#[path = "rules_tests.rs"]
mod tests;
