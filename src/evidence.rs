//! Data-path evidence: what an agent's local replicas say about their primary elsewhere.
//!
//! Agents reach datastores only inside their own region, yet the verdict about a Postgres
//! primary or a Redis master in another region needs votes from other regions. A local
//! replica's replication link is that vote: streaming (or link up) counts as Up for the member
//! it replicates from; a link down for `cluster.data_path_down_after` counts as Down;
//! anything shorter counts as nothing. Such a vote never moves a primary by itself: a
//! promotion also needs the primary's own agent to say Down, or its region to be cut off (see
//! [`crate::failover::trigger`]); it makes the verdict as quick as that agent's. The upstream
//! is found by matching the address the replica replicates from against the configured
//! members' addresses; a replica whose link is gone keeps voting about the upstream it had
//! last.
//!
//! [`DataPath`] keeps only when each link went down; the decision itself is a pure function
//! of that and the replica's latest facts.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use crate::config::Config;
use crate::health::{LastResult, State, TargetView};
use crate::probe::Facts;
use crate::topology::{TargetId, TargetSpec, Topology};

/// What a replica's latest observation says about its link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    /// Where it replicates from, if it says.
    pub upstream: Option<(String, u16)>,
    /// Whether the link is up (streaming).
    pub up: bool,
    /// How long the link has been down, when the server says (Redis).
    pub down_for: Option<Duration>,
}

/// The link a replica's facts describe, if the target is a replica.
pub fn link_of(view: &TargetView) -> Option<Link> {
    let Some(LastResult::Ok { observation }) = &view.last else {
        return None;
    };
    link_in(&observation.facts)
}

/// The link one observation's facts describe, if they are a replica's.
pub fn link_in(facts: &Facts) -> Option<Link> {
    match facts {
        Facts::Postgres(pg) if pg.role == crate::probe::postgres::PgRole::Replica => {
            let receiver = pg.wal_receiver.as_ref();
            Some(Link {
                upstream: receiver.and_then(|w| Some((w.sender_host.clone()?, w.sender_port?))),
                up: receiver.is_some_and(|w| w.status == "streaming"),
                down_for: None,
            })
        }
        Facts::Redis(r) if r.role == crate::probe::redis::RedisRole::Replica => Some(Link {
            upstream: r.master_host.clone().zip(r.master_port),
            up: r.master_link_up == Some(true),
            down_for: r
                .master_link_down_seconds
                .and_then(|s| u64::try_from(s).ok())
                .map(Duration::from_secs),
        }),
        _ => None,
    }
}

/// The evidence one agent adds to its report.
#[derive(Debug)]
pub struct DataPath {
    members: HashMap<(String, u16), TargetId>,
    down_after: Duration,
    /// Per replica: the upstream it last named, and since when its link is down.
    links: HashMap<TargetId, (Option<TargetId>, Option<Instant>)>,
}

impl DataPath {
    /// Indexes every Postgres and Redis member by the address it is reached at.
    pub fn new(config: &Config) -> Self {
        let mut members = HashMap::new();
        for t in Topology::from_config(config).targets {
            let addr = match &t.spec {
                TargetSpec::Postgres { member, .. } => member
                    .dsn
                    .parse::<tokio_postgres::Config>()
                    .ok()
                    .and_then(|c| {
                        let host = match c.get_hosts().first()? {
                            tokio_postgres::config::Host::Tcp(h) => h.clone(),
                            #[allow(unreachable_patterns)]
                            _ => return None,
                        };
                        Some((host, c.get_ports().first().copied().unwrap_or(5432)))
                    }),
                TargetSpec::Redis { member, .. } => url::Url::parse(&member.url)
                    .ok()
                    .and_then(|u| Some((u.host_str()?.to_owned(), u.port().unwrap_or(6379)))),
                TargetSpec::Http(_) => None,
            };
            if let Some((host, port)) = addr {
                members.insert((host.to_ascii_lowercase(), port), t.id.clone());
            }
        }
        DataPath {
            members,
            down_after: config.cluster.data_path_down_after(),
            links: HashMap::new(),
        }
    }

    /// Votes about upstream members from this agent's replicas, given their latest views.
    pub fn votes(&mut self, views: &[TargetView], now: Instant) -> BTreeMap<TargetId, State> {
        let mut votes = BTreeMap::new();
        for view in views {
            let Some(link) = link_of(view) else { continue };
            let named = link
                .upstream
                .as_ref()
                .and_then(|(h, p)| self.members.get(&(h.to_ascii_lowercase(), *p)).cloned());
            let entry = self.links.entry(view.id.clone()).or_insert((None, None));
            if named.is_some() {
                entry.0 = named;
            }
            entry.1 = down_since(&link, entry.1, now);
            if let (Some(upstream), Some(vote)) =
                (entry.0.clone(), vote(&link, entry.1, now, self.down_after))
            {
                votes.insert(upstream, vote);
            }
        }
        votes
    }
}

/// Since when the link has been down, given what was known before: the earliest of the first
/// time this agent saw it down and what the server's own count says. Both are at or after the
/// moment it really went down (Redis counts whole seconds, rounded down, and the count was
/// read before `now`). `None` while it is up.
pub fn down_since(link: &Link, known: Option<Instant>, now: Instant) -> Option<Instant> {
    if link.up {
        return None;
    }
    let seen = known.unwrap_or(now);
    Some(match link.down_for.and_then(|d| now.checked_sub(d)) {
        Some(counted) => seen.min(counted),
        None => seen,
    })
}

/// The vote of one link: Up while it streams, Down once it has been down for `down_after`,
/// nothing in between.
pub fn vote(
    link: &Link,
    down_since: Option<Instant>,
    now: Instant,
    down_after: Duration,
) -> Option<State> {
    if link.up {
        return Some(State::Up);
    }
    let since = down_since?;
    (now.saturating_duration_since(since) >= down_after).then_some(State::Down)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(up: bool) -> Link {
        Link {
            upstream: Some(("10.0.0.1".into(), 5432)),
            up,
            down_for: None,
        }
    }

    #[test]
    fn a_table_of_links() {
        let now = Instant::now();
        let after = Duration::from_secs(5);
        let ago = |s: u64| Some(now - Duration::from_secs(s));
        let cases = [
            ("streaming", link(true), None, Some(State::Up)),
            (
                "streaming, even with an old down mark",
                link(true),
                ago(60),
                Some(State::Up),
            ),
            ("just went down", link(false), ago(1), None),
            ("just below the threshold", link(false), ago(4), None),
            (
                "down at the threshold",
                link(false),
                ago(5),
                Some(State::Down),
            ),
            (
                "down past the threshold",
                link(false),
                ago(6),
                Some(State::Down),
            ),
            ("down, never marked", link(false), None, None),
        ];
        for (name, l, since, expected) in cases {
            assert_eq!(vote(&l, since, now, after), expected, "{name}");
        }
    }

    #[test]
    fn a_link_is_down_since_the_earliest_sign() {
        let now = Instant::now();
        let secs = Duration::from_secs;
        let counted = |s: u64| Link {
            down_for: Some(secs(s)),
            ..link(false)
        };
        assert_eq!(down_since(&link(true), Some(now - secs(9)), now), None);
        assert_eq!(
            down_since(&link(false), None, now),
            Some(now),
            "first seen now"
        );
        assert_eq!(
            down_since(&link(false), Some(now - secs(2)), now),
            Some(now - secs(2)),
            "kept from the first sighting"
        );
        assert_eq!(
            down_since(&counted(3), Some(now - secs(1)), now),
            Some(now - secs(3)),
            "the server counted longer than this agent has seen"
        );
        assert_eq!(
            down_since(&counted(1), Some(now - secs(2)), now),
            Some(now - secs(2)),
            "a whole-second count rounded down does not move the sighting later"
        );
    }
}
