//! Per-member role checks for load balancers and poolers: `GET /v1/members/{name}/primary`
//! and `/replica` answer 200 or 503 from this agent's view, like Patroni's `/primary` and
//! `/replica`.
//!
//! A member is the primary when this agent holds its lease, the replicated log names it as
//! its group's writable member and — when this agent probes it — its last observation is Up
//! in the writable role. It is a replica when the agent holds its lease, the log does not
//! name it, and — when this agent probes it — its last observation is Up as a replica that
//! streams. Without the lease every answer is 503: a fenced or cut-off region must not send
//! writes anywhere. A member this agent does not probe (another region's) is judged by the
//! log alone, and the answer says so.

use serde::{Deserialize, Serialize};

/// The role asked about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// The writable member of its group.
    Primary,
    /// A member streaming from the primary.
    Replica,
}

/// What this agent last observed of the member, when it probes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Observed {
    /// Up by this agent's probe.
    pub up: bool,
    /// The role its last successful observation showed (`primary`, `master`, `replica`).
    pub role: Option<&'static str>,
    /// A replica's link to its primary is up (Postgres WAL receiver streaming, Redis
    /// `master_link_status:up`).
    pub streaming: Option<bool>,
}

/// `GET /v1/members/{name}/primary` and `/replica`.
#[derive(Debug, Serialize, Deserialize, schemars::JsonSchema)]
pub struct RoleResponse {
    /// The member.
    pub member: String,
    /// Its group (`postgres/<cluster>`, `redis/<shard>`).
    pub group: String,
    /// The role asked about.
    pub role: Role,
    /// 200 when true, 503 when false.
    pub ok: bool,
    /// Whether this agent probes the member (else the answer rests on the log alone).
    pub observed: bool,
    /// Why not, when not.
    pub reasons: Vec<String>,
}

/// Whether `member` has `role`, and why not. `named`: the log names it as its group's
/// primary; `lease`: this agent holds its lease; `observed`: this agent's last observation,
/// when it probes the member.
pub fn judge(
    member: &str,
    role: Role,
    lease: bool,
    named: bool,
    observed: Option<Observed>,
) -> Vec<String> {
    let mut reasons = Vec::new();
    if !lease {
        reasons.push("this agent has lost its lease (no contact with a quorum)".to_owned());
    }
    match (role, named) {
        (Role::Primary, false) => reasons.push(format!(
            "the log does not name {member} as its group's primary"
        )),
        (Role::Replica, true) => {
            reasons.push(format!("the log names {member} as its group's primary"))
        }
        _ => {}
    }
    if let Some(seen) = observed {
        if !seen.up {
            reasons.push(format!("{member} is not Up by this agent's probe"));
        }
        match (role, seen.role) {
            (_, None) => reasons.push(format!("{member}'s role is not known (no answer yet)")),
            (Role::Primary, Some("primary" | "master")) => {}
            (Role::Replica, Some("replica")) => {
                if seen.streaming != Some(true) {
                    reasons.push(format!("{member} does not stream from its primary"));
                }
            }
            (_, Some(other)) => reasons.push(format!("{member} answers as {other}")),
        }
    }
    reasons
}

#[cfg(test)]
mod tests {
    use super::*;

    const UP_PRIMARY: Observed = Observed {
        up: true,
        role: Some("primary"),
        streaming: None,
    };
    const STREAMING: Observed = Observed {
        up: true,
        role: Some("replica"),
        streaming: Some(true),
    };

    #[test]
    fn the_named_primary_seen_writable_is_the_primary_and_nothing_else() {
        assert!(judge("a", Role::Primary, true, true, Some(UP_PRIMARY)).is_empty());
        assert!(
            judge("a", Role::Primary, true, true, None).is_empty(),
            "log alone"
        );
        let r = judge("a", Role::Replica, true, true, Some(UP_PRIMARY));
        assert_eq!(r.len(), 2, "{r:?}");
    }

    #[test]
    fn without_the_lease_nothing_is_served() {
        let r = judge("a", Role::Primary, false, true, Some(UP_PRIMARY));
        assert_eq!(
            r,
            ["this agent has lost its lease (no contact with a quorum)"]
        );
        assert!(!judge("b", Role::Replica, false, false, Some(STREAMING)).is_empty());
    }

    #[test]
    fn a_fenced_ex_primary_or_a_replica_that_does_not_stream_is_refused() {
        // Still writable by its own answer, but the log names another member.
        let r = judge("a", Role::Primary, true, false, Some(UP_PRIMARY));
        assert_eq!(r, ["the log does not name a as its group's primary"]);
        let r = judge("a", Role::Replica, true, false, Some(UP_PRIMARY));
        assert_eq!(r, ["a answers as primary"]);
        assert!(judge("b", Role::Replica, true, false, Some(STREAMING)).is_empty());
        let stopped = Observed {
            streaming: Some(false),
            ..STREAMING
        };
        let r = judge("b", Role::Replica, true, false, Some(stopped));
        assert_eq!(r, ["b does not stream from its primary"]);
        let down = Observed {
            up: false,
            role: None,
            streaming: None,
        };
        assert_eq!(judge("b", Role::Replica, true, false, Some(down)).len(), 2);
    }
}
