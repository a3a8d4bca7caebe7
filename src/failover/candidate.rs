//! Which Postgres replica to promote, and whether its lag is too much.
//!
//! Eligible: healthy, outside the failed region, not `no_failover`, and a replica. Among them
//! the one that will hold the most once promoted wins — promotion replays everything a
//! replica has received and flushed, whether its replay was paused or not (a promotion ends
//! the pause: PostgreSQL's `pg_promote` and recovery pause), so that is its received position
//! (or its replay position if further) — then the further replay position (less to replay
//! before it serves), then the higher priority, then the name (so the choice is
//! deterministic). With synchronous replication this is the replica
//! that has every acknowledged commit. The data-loss estimate is measured from that same
//! position against the best surviving evidence of how far the old primary got — the
//! furthest position any replica received, or the primary's own last observed position if
//! that is further — never only against a frozen observation of the dead primary; the choice
//! says which evidence it used.

use std::fmt;

use serde::Serialize;

use crate::desired::Guard;
use crate::probe::Lsn;
use crate::topology::TargetId;

/// One Postgres member as the planner sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Its target id.
    pub target: TargetId,
    /// Its region.
    pub region: String,
    /// Up by verdict (or by the local probe, for a single agent).
    pub healthy: bool,
    /// Whether it is a replica (in recovery) as last observed.
    pub replica: bool,
    /// Configured `no_failover`.
    pub no_failover: bool,
    /// Configured priority: higher wins among equally caught-up replicas.
    pub priority: u32,
    /// Last replayed position (replica).
    pub replay_lsn: Option<Lsn>,
    /// Last received position (replica); what it will have replayed once promoted.
    pub receive_lsn: Option<Lsn>,
    /// Its current WAL position, when last seen as primary.
    pub primary_lsn: Option<Lsn>,
    /// Its replay is paused on purpose (replica).
    pub replay_paused: bool,
    /// Its WAL receiver does not stream while its primary is up (the readiness drill's
    /// question only: once the primary is lost, no receiver streams).
    pub not_streaming: bool,
}

impl Member {
    /// How far it will be once promoted: what it has received and flushed (promotion
    /// replays it all, even while replay is paused), or what it replayed if further.
    pub fn promotable_lsn(&self) -> Option<Lsn> {
        self.replay_lsn.max(self.receive_lsn)
    }

    /// Which of its positions [`Member::promotable_lsn`] is, for people.
    pub fn promotable_from(&self) -> String {
        let lsn = self.promotable_lsn().unwrap_or(Lsn(0));
        let paused = if self.replay_paused {
            ", replay paused: promotion replays it all"
        } else {
            ""
        };
        if self.receive_lsn.is_some_and(|r| Some(r) >= self.replay_lsn) {
            format!("{} received {lsn}{paused}", self.target)
        } else {
            format!("{} replayed {lsn}{paused}", self.target)
        }
    }
}

/// Where the "how far did the old primary get" figure came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize, schemars::JsonSchema)]
#[serde(tag = "source", rename_all = "snake_case")]
pub enum Evidence {
    /// The furthest position a surviving replica received.
    ReplicaReceived {
        /// That replica.
        target: TargetId,
        /// The position.
        lsn: String,
    },
    /// The old primary's own last observed WAL position (further than any replica got).
    PrimaryLastSeen {
        /// The old primary.
        target: TargetId,
        /// The position.
        lsn: String,
    },
}

/// What a promotion's estimate was measured against and from, as the history keeps it: the
/// evidence as JSON, then the candidate's position.
pub fn evidence_text(evidence: &Evidence, measured_from: &str) -> String {
    let against = serde_json::to_string(evidence).unwrap_or_default();
    if measured_from.is_empty() {
        against
    } else {
        format!("{against}; from {measured_from}")
    }
}

/// The decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize, schemars::JsonSchema)]
#[serde(tag = "decision", rename_all = "snake_case")]
pub enum Choice {
    /// Promote this member.
    Promote {
        /// The member.
        target: TargetId,
        /// Bytes its replay is behind the best evidence: the data-loss estimate.
        estimated_loss_bytes: u64,
        /// What the estimate is measured against.
        evidence: Evidence,
        /// The candidate's position it is measured from (what it received: promotion replays
        /// all of it, paused or not).
        #[serde(default)]
        measured_from: String,
    },
    /// Nothing may be promoted automatically.
    Blocked {
        /// Why, for people: "blocked because …".
        reason: String,
        /// The guard that blocks it.
        guard: Guard,
    },
}

impl fmt::Display for Choice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Choice::Promote {
                target,
                estimated_loss_bytes,
                ..
            } => write!(
                f,
                "promote {target} (estimated loss {estimated_loss_bytes} bytes)"
            ),
            Choice::Blocked { reason, .. } => write!(f, "blocked because {reason}"),
        }
    }
}

/// Chooses the member to promote when `failed_region` (or its primary) is lost.
/// `max_lag` is `max_lag_on_failover` in bytes; `allow_data_loss` (a forced failover with the
/// explicit flag) lifts that guard, never the others.
pub fn choose(
    members: &[Member],
    failed_region: &str,
    max_lag: u64,
    allow_data_loss: bool,
) -> Choice {
    let eligible = |m: &&Member| {
        m.healthy
            && m.replica
            && !m.no_failover
            && !m.not_streaming
            && m.region != failed_region
            && m.replay_lsn.is_some()
    };
    let mut candidates: Vec<&Member> = members.iter().filter(eligible).collect();
    if candidates.is_empty() {
        let detached: Vec<&str> = members
            .iter()
            .filter(|m| m.replica && m.region != failed_region && m.healthy && m.not_streaming)
            .map(|m| m.target.as_str())
            .collect();
        if !detached.is_empty() {
            return Choice::Blocked {
                reason: format!(
                    "no replica outside the failed region streams from the primary ({} has no \
                     WAL receiver streaming: it falls further behind)",
                    detached.join(", ")
                ),
                guard: Guard::NoCandidate,
            };
        }
        let reason = if members
            .iter()
            .any(|m| m.replica && m.region != failed_region && m.healthy)
        {
            "no healthy replica outside the failed region may be promoted (no_failover or no replay position)"
        } else {
            "no healthy replica outside the failed region"
        };
        return Choice::Blocked {
            reason: reason.to_owned(),
            guard: Guard::NoCandidate,
        };
    }
    candidates.sort_by(|a, b| {
        b.promotable_lsn()
            .cmp(&a.promotable_lsn())
            .then(b.replay_lsn.cmp(&a.replay_lsn))
            .then(b.priority.cmp(&a.priority))
            .then(a.target.cmp(&b.target))
    });
    let best = candidates[0];

    // The furthest the old primary is known to have got.
    let received = members
        .iter()
        .filter(|m| m.replica)
        .filter_map(|m| Some((m.receive_lsn.or(m.replay_lsn)?, m)))
        .max_by_key(|(lsn, _)| *lsn);
    let primary = members
        .iter()
        .filter(|m| !m.replica)
        .filter_map(|m| Some((m.primary_lsn?, m)))
        .max_by_key(|(lsn, _)| *lsn);
    let (reference, evidence) = match (received, primary) {
        (Some((r, _)), Some((p, pm))) if p > r => (
            p,
            Evidence::PrimaryLastSeen {
                target: pm.target.clone(),
                lsn: p.to_string(),
            },
        ),
        (Some((r, rm)), _) => (
            r,
            Evidence::ReplicaReceived {
                target: rm.target.clone(),
                lsn: r.to_string(),
            },
        ),
        (None, Some((p, pm))) => (
            p,
            Evidence::PrimaryLastSeen {
                target: pm.target.clone(),
                lsn: p.to_string(),
            },
        ),
        (None, None) => unreachable!("a candidate has a replay position"),
    };
    // Measured from what it will hold once promoted: WAL it received but has not replayed yet
    // is replayed on promotion (time, not loss), paused or not.
    let promotable = best.promotable_lsn().unwrap_or(Lsn(0));
    let loss = reference.bytes_since(promotable);
    if loss > max_lag && !allow_data_loss {
        return Choice::Blocked {
            reason: format!(
                "the best candidate {} would lose {loss} bytes (more than max_lag_on_failover {max_lag}), measured against {}",
                best.target,
                match &evidence {
                    Evidence::ReplicaReceived { target, lsn } => format!("{lsn} received by {target}"),
                    Evidence::PrimaryLastSeen { target, lsn } => format!("{lsn} last seen on {target}"),
                }
            ),
            guard: Guard::MaxLagOnFailover,
        };
    }
    Choice::Promote {
        target: best.target.clone(),
        estimated_loss_bytes: loss,
        evidence,
        measured_from: best.promotable_from(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::TargetKind;

    fn id(name: &str) -> TargetId {
        TargetId::new(TargetKind::Postgres, "main", name)
    }

    fn replica(name: &str, region: &str, replay: u64, receive: u64, priority: u32) -> Member {
        Member {
            target: id(name),
            region: region.into(),
            healthy: true,
            replica: true,
            no_failover: false,
            priority,
            replay_lsn: Some(Lsn(replay)),
            receive_lsn: Some(Lsn(receive)),
            primary_lsn: None,
            replay_paused: false,
            not_streaming: false,
        }
    }

    fn paused(member: Member) -> Member {
        Member {
            replay_paused: true,
            ..member
        }
    }

    fn primary(name: &str, region: &str, lsn: u64) -> Member {
        Member {
            target: id(name),
            region: region.into(),
            healthy: false,
            replica: false,
            no_failover: false,
            priority: 100,
            replay_lsn: None,
            receive_lsn: None,
            primary_lsn: Some(Lsn(lsn)),
            replay_paused: false,
            not_streaming: false,
        }
    }

    fn promoted(c: &Choice) -> Option<(&str, u64)> {
        match c {
            Choice::Promote {
                target,
                estimated_loss_bytes,
                ..
            } => Some((target.as_str(), *estimated_loss_bytes)),
            Choice::Blocked { .. } => None,
        }
    }

    #[test]
    fn a_table_of_choices() {
        let p = || primary("par", "r1", 1000);
        // (case, members, max_lag, the promoted target and its estimated loss)
        type Case = (&'static str, Vec<Member>, u64, Option<(&'static str, u64)>);
        let cases: Vec<Case> = vec![
            (
                "highest replay position wins",
                vec![
                    p(),
                    replica("fra", "r2", 900, 950, 100),
                    replica("iad", "r3", 950, 950, 100),
                ],
                1 << 20,
                Some(("postgres/main/iad", 50)),
            ),
            (
                "equal positions: higher priority wins",
                vec![
                    p(),
                    replica("fra", "r2", 950, 950, 200),
                    replica("iad", "r3", 950, 950, 100),
                ],
                1 << 20,
                Some(("postgres/main/fra", 50)),
            ),
            (
                "equal positions and priorities: the name decides",
                vec![
                    p(),
                    replica("iad", "r3", 950, 950, 100),
                    replica("fra", "r2", 950, 950, 100),
                ],
                1 << 20,
                Some(("postgres/main/fra", 50)),
            ),
            (
                "a replica in the failed region is never chosen",
                vec![
                    p(),
                    replica("par-2", "r1", 1000, 1000, 999),
                    replica("fra", "r2", 900, 900, 1),
                ],
                1 << 20,
                Some(("postgres/main/fra", 100)),
            ),
            (
                "loss over the guard blocks",
                vec![p(), replica("fra", "r2", 100, 100, 100)],
                500,
                None,
            ),
            (
                "loss at the guard passes",
                vec![p(), replica("fra", "r2", 500, 500, 100)],
                500,
                Some(("postgres/main/fra", 500)),
            ),
            (
                "WAL received but not yet replayed is replayed on promotion: not lost",
                vec![p(), replica("fra", "r2", 100, 1000, 100)],
                500,
                Some(("postgres/main/fra", 0)),
            ),
            (
                "what a replica flushed outranks what another replayed (synchronous commit)",
                vec![
                    p(),
                    replica("fra", "r2", 900, 900, 200),
                    replica("iad", "r3", 800, 1000, 100),
                ],
                1 << 20,
                Some(("postgres/main/iad", 0)),
            ),
            (
                "equal received positions: the one with less to replay wins",
                vec![
                    p(),
                    replica("fra", "r2", 800, 1000, 100),
                    replica("iad", "r3", 950, 1000, 100),
                ],
                1 << 20,
                Some(("postgres/main/iad", 0)),
            ),
            (
                "replay paused: what it received still counts (promotion replays it all)",
                vec![p(), paused(replica("fra", "r2", 100, 1000, 100))],
                500,
                Some(("postgres/main/fra", 0)),
            ),
            (
                "replay paused: ranked by what it received",
                vec![
                    p(),
                    paused(replica("fra", "r2", 700, 1000, 100)),
                    replica("iad", "r3", 900, 900, 100),
                ],
                1 << 20,
                Some(("postgres/main/fra", 0)),
            ),
        ];
        for (name, members, max_lag, expected) in cases {
            let choice = choose(&members, "r1", max_lag, false);
            assert_eq!(promoted(&choice), expected, "{name}: {choice}");
        }
    }

    #[test]
    fn the_estimate_uses_the_best_surviving_evidence_and_says_which() {
        // The dead primary was last seen at 1000, but a replica received up to 1200 after that
        // observation: 1200 is the better evidence of how far the primary got.
        let members = vec![
            primary("par", "r1", 1000),
            replica("fra", "r2", 1100, 1100, 100),
            replica("iad", "r3", 1000, 1150, 100),
            paused(replica("bos", "r3", 900, 1200, 100)),
        ];
        let mut members = members;
        members[3].no_failover = true;
        let choice = choose(&members, "r1", 1 << 20, false);
        // iad will hold the most of the eligible once promoted, 50 bytes behind bos's evidence
        // (a paused replica's received WAL is evidence too).
        assert_eq!(
            choice,
            Choice::Promote {
                target: id("iad"),
                estimated_loss_bytes: 50,
                evidence: Evidence::ReplicaReceived {
                    target: id("bos"),
                    lsn: Lsn(1200).to_string()
                },
                measured_from: format!("{} received {}", id("iad"), Lsn(1150)),
            }
        );
        // A paused candidate says so.
        let members = vec![
            primary("par", "r1", 1000),
            paused(replica("fra", "r2", 100, 1000, 100)),
        ];
        let Choice::Promote { measured_from, .. } = choose(&members, "r1", 500, false) else {
            panic!("promotes");
        };
        assert!(
            measured_from.ends_with("replay paused: promotion replays it all"),
            "{measured_from}"
        );
    }

    #[test]
    fn unhealthy_no_failover_and_unknown_members_block_with_a_reason() {
        let mut sick = replica("fra", "r2", 900, 900, 100);
        sick.healthy = false;
        let mut excluded = replica("iad", "r3", 900, 900, 100);
        excluded.no_failover = true;
        let choice = choose(
            &[primary("par", "r1", 1000), sick, excluded],
            "r1",
            1 << 20,
            false,
        );
        assert_eq!(
            choice.to_string(),
            "blocked because no healthy replica outside the failed region may be promoted (no_failover or no replay position)"
        );
        let choice = choose(&[primary("par", "r1", 1000)], "r1", 1 << 20, false);
        assert_eq!(
            choice.to_string(),
            "blocked because no healthy replica outside the failed region"
        );
    }

    #[test]
    fn a_forced_failover_may_accept_the_loss_but_not_an_ineligible_member() {
        let members = vec![
            primary("par", "r1", 10_000),
            replica("fra", "r2", 100, 100, 100),
        ];
        let blocked = choose(&members, "r1", 500, false);
        assert!(
            blocked.to_string().contains("would lose 9900 bytes"),
            "{blocked}"
        );
        assert!(
            blocked
                .to_string()
                .contains("last seen on postgres/main/par"),
            "{blocked}"
        );
        assert_eq!(
            promoted(&choose(&members, "r1", 500, true)),
            Some(("postgres/main/fra", 9900))
        );
        let mut excluded = replica("fra", "r2", 100, 100, 100);
        excluded.no_failover = true;
        let choice = choose(&[primary("par", "r1", 1000), excluded], "r1", 0, true);
        assert!(matches!(choice, Choice::Blocked { .. }));
    }

    #[test]
    fn a_replica_whose_receiver_does_not_stream_is_not_offered_while_the_primary_is_up() {
        let detached = |m: Member| Member {
            not_streaming: true,
            ..m
        };
        // The most advanced replica does not stream: the other is offered.
        let members = vec![
            primary("par", "r1", 1000),
            detached(replica("fra", "r2", 990, 990, 100)),
            replica("iad", "r3", 950, 950, 100),
        ];
        assert_eq!(
            promoted(&choose(&members, "r1", 1 << 20, false)),
            Some(("postgres/main/iad", 50))
        );
        // Neither streams: blocked, naming them.
        let members = vec![
            primary("par", "r1", 1000),
            detached(replica("fra", "r2", 990, 990, 100)),
            detached(replica("iad", "r3", 950, 950, 100)),
        ];
        match choose(&members, "r1", 1 << 20, false) {
            Choice::Blocked { reason, guard } => {
                assert_eq!(guard, Guard::NoCandidate);
                assert!(
                    reason.contains("postgres/main/fra, postgres/main/iad has no WAL receiver"),
                    "{reason}"
                );
            }
            other => panic!("{other:?}"),
        }
    }
}
