//! Redundancy: how each Postgres group stands against its named primary — which members
//! stream from it, which do not and why — and the replicas the healer should point at it.
//!
//! Pure: from the roster and the leader's view. A failover repoints the replicas it can
//! reach; whatever it could not (a replica that was down, a slot that was missing, a follow
//! that timed out) shows here as a member that does not stream from the primary, and the
//! healer repoints it until it does.

use serde::Serialize;

use super::inputs::Roster;
use crate::consensus::reports::Position;
use crate::consensus::LeaderView;
use crate::health::State;
use crate::topology::TargetId;

/// A member's role, as its latest report shows it against the named primary.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// The named primary.
    Primary,
    /// In recovery.
    Replica,
    /// Out of recovery but not the named primary: a primary that was failed over (fenced,
    /// or restarted after the failover), waiting to be rejoined as a replica.
    ExPrimary,
    /// No fresh report.
    Down,
}

/// What a member is doing.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum MemberState {
    /// The primary, taking writes.
    Serving,
    /// Streams from the named primary.
    Streaming,
    /// A replica that does not stream from the named primary.
    NotStreaming,
    /// An ex-primary out of recovery: it needs a rewind or a new base backup to rejoin.
    Stranded,
    /// Unreachable.
    Down,
}

/// One member of a group, as the redundancy table shows it.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct Member {
    /// The member.
    pub member: TargetId,
    /// Its region.
    pub region: String,
    /// Its role.
    pub role: Role,
    /// What it is doing.
    pub state: MemberState,
    /// Its timeline.
    pub timeline: Option<u32>,
    /// Bytes between the primary's position and what it received (replica).
    pub lag_bytes: Option<u64>,
    /// The replication slot it streams through (replica).
    pub slot: Option<String>,
    /// Why it does not stream from the primary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub why: Option<String>,
    /// The healer's work on it, while it does not stream from the primary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healing: Option<Healing>,
}

/// The healer's work on one replica.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct Healing {
    /// Since when it has not streamed from the primary, Unix milliseconds.
    pub since_ms: u64,
    /// Times the healer pointed it at the primary.
    pub attempts: u32,
    /// Why the latest attempt failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// A group's redundancy.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct Group {
    /// `postgres/<cluster>`.
    pub group: String,
    /// The named primary.
    pub primary: TargetId,
    /// Members that could stream from it: every other member.
    pub replicas: u32,
    /// Members that stream from it.
    pub streaming: u32,
    /// Every member, the primary first.
    pub members: Vec<Member>,
}

impl Group {
    /// Every member streams from the primary.
    pub fn full(&self) -> bool {
        self.streaming == self.replicas
    }
}

/// A replica to point at its group's primary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Follow {
    /// The replica.
    pub member: TargetId,
    /// The primary.
    pub primary: TargetId,
    /// Why it does not stream from it now.
    pub why: String,
}

impl Roster {
    /// Each Postgres group with a named primary that reports as primary: its members against
    /// it, and the replicas to point at it. A group whose primary is not seen taking writes
    /// gets no repointing: that is a failover's business, not the healer's.
    pub fn redundancy(&self, view: &LeaderView) -> (Vec<Group>, Vec<Follow>) {
        let mut groups = Vec::new();
        let mut follows = Vec::new();
        for (group, primary, region) in self.named_pg_groups(&view.primaries) {
            let Some(head) = view
                .positions
                .get(&primary)
                .filter(|p| !p.replica && p.timeline.is_some())
            else {
                continue;
            };
            let up = |t: &TargetId| {
                view.verdict
                    .targets
                    .get(t)
                    .is_none_or(|v| v.state != State::Down)
            };
            let mut members = vec![Member {
                member: primary.clone(),
                region,
                role: Role::Primary,
                state: MemberState::Serving,
                timeline: head.timeline,
                lag_bytes: None,
                slot: None,
                why: None,
                healing: None,
            }];
            let (mut replicas, mut streaming) = (0, 0);
            for (target, member_region) in self.pg_group_members(&group) {
                if target == primary {
                    continue;
                }
                replicas += 1;
                let position = view.positions.get(&target).filter(|_| up(&target));
                let member = judge(&target, member_region, position, head);
                if member.state == MemberState::Streaming {
                    streaming += 1;
                }
                if member.state == MemberState::NotStreaming {
                    follows.push(Follow {
                        member: target.clone(),
                        primary: primary.clone(),
                        why: member.why.clone().unwrap_or_default(),
                    });
                }
                members.push(member);
            }
            groups.push(Group {
                group,
                primary,
                replicas,
                streaming,
                members,
            });
        }
        (groups, follows)
    }
}

/// How `target` (of `region`, last seen at `position`) stands against the primary at `head`.
/// A replica streams from the primary when the primary lists it among its WAL receivers by
/// name, or when it streams on the primary's timeline (a replica whose `application_name` is
/// not its member name).
fn judge(
    target: &TargetId,
    region: String,
    position: Option<&Position>,
    head: &Position,
) -> Member {
    let name = target.as_str().rsplit('/').next().unwrap_or_default();
    let mut member = Member {
        member: target.clone(),
        region,
        role: Role::Down,
        state: MemberState::Down,
        timeline: None,
        lag_bytes: None,
        slot: None,
        why: None,
        healing: None,
    };
    // A member no fresh report shows (only its last position as primary is kept) is down.
    let Some(p) = position.filter(|p| p.replica || p.timeline.is_some()) else {
        return member;
    };
    member.timeline = p.timeline;
    if !p.replica {
        member.role = Role::ExPrimary;
        member.state = MemberState::Stranded;
        member.why = Some("out of recovery: needs a rewind or a new base backup".into());
        return member;
    }
    member.role = Role::Replica;
    member.slot = p.slot_name.clone();
    member.lag_bytes = head
        .primary_lsn
        .zip(p.receive_lsn)
        .map(|(h, r)| h.bytes_since(r));
    let listed = head.followers.iter().any(|f| f == name);
    let same_timeline = p.timeline.is_some() && p.timeline == head.timeline;
    let receiving = p.streaming == Some(true);
    if listed || (receiving && same_timeline) {
        member.state = MemberState::Streaming;
        return member;
    }
    member.state = MemberState::NotStreaming;
    member.why = Some(if !receiving {
        "no WAL receiver streaming".to_owned()
    } else if !same_timeline {
        format!(
            "streams timeline {}, the primary is on {}",
            show(p.timeline),
            show(head.timeline)
        )
    } else {
        "streams from another server".to_owned()
    });
    member
}

fn show(timeline: Option<u32>) -> String {
    timeline.map_or_else(|| "?".to_owned(), |t| t.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probe::Lsn;

    fn head() -> Position {
        Position {
            primary_lsn: Some(Lsn(1_000)),
            timeline: Some(2),
            followers: vec!["b".into()],
            ..Default::default()
        }
    }

    fn replica(timeline: u32, streaming: bool) -> Position {
        Position {
            replica: true,
            receive_lsn: Some(Lsn(900)),
            timeline: Some(timeline),
            streaming: Some(streaming),
            slot_name: Some("slot_c".into()),
            ..Default::default()
        }
    }

    fn id(name: &str) -> TargetId {
        TargetId::new(crate::config::TargetKind::Postgres, "main", name)
    }

    #[test]
    fn a_replica_the_primary_lists_streams_from_it() {
        let m = judge(&id("b"), "r2".into(), Some(&replica(2, true)), &head());
        assert_eq!((m.role, m.state), (Role::Replica, MemberState::Streaming));
        assert_eq!(m.lag_bytes, Some(100));
        assert_eq!(m.slot.as_deref(), Some("slot_c"));
    }

    #[test]
    fn a_replica_on_the_old_timeline_or_without_a_receiver_is_to_be_repointed() {
        let m = judge(&id("c"), "r3".into(), Some(&replica(1, true)), &head());
        assert_eq!(m.state, MemberState::NotStreaming);
        assert_eq!(
            m.why.as_deref(),
            Some("streams timeline 1, the primary is on 2")
        );
        let m = judge(&id("c"), "r3".into(), Some(&replica(2, false)), &head());
        assert_eq!(m.why.as_deref(), Some("no WAL receiver streaming"));
        // Not listed by name, but streaming on the primary's timeline: it follows it.
        let m = judge(&id("c"), "r3".into(), Some(&replica(2, true)), &head());
        assert_eq!(m.state, MemberState::Streaming);
    }

    #[test]
    fn an_ex_primary_is_stranded_and_a_silent_member_is_down() {
        let ex = Position {
            primary_lsn: Some(Lsn(800)),
            timeline: Some(1),
            ..Default::default()
        };
        let m = judge(&id("a"), "r1".into(), Some(&ex), &head());
        assert_eq!((m.role, m.state), (Role::ExPrimary, MemberState::Stranded));
        // Only its last position as primary is kept: no fresh report.
        let gone = Position {
            primary_lsn: Some(Lsn(800)),
            ..Default::default()
        };
        let m = judge(&id("a"), "r1".into(), Some(&gone), &head());
        assert_eq!((m.role, m.state), (Role::Down, MemberState::Down));
        let m = judge(&id("a"), "r1".into(), None, &head());
        assert_eq!(m.state, MemberState::Down);
    }
}
