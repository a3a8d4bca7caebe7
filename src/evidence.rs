//! Data-path evidence: what an agent's local replicas say about their primary elsewhere.
//!
//! Agents reach datastores only inside their own region, yet the verdict about a Postgres
//! primary or a Redis master in another region needs votes from other regions. A local
//! replica's replication link is that vote: streaming (or link up) counts as Up for the member
//! it replicates from; a link down for longer than `cluster.data_path_down_after` counts as
//! Down; anything shorter counts as nothing. The upstream is found by matching the address
//! the replica replicates from against the configured members' addresses; a replica whose
//! link is gone keeps voting about the upstream it had last.
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
    match &observation.facts {
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
            entry.1 = if link.up {
                None
            } else {
                // The server's own count wins; else the first time this agent saw it down.
                Some(match link.down_for {
                    Some(d) => now.checked_sub(d).unwrap_or(now),
                    None => entry.1.unwrap_or(now),
                })
            };
            if let (Some(upstream), Some(vote)) =
                (entry.0.clone(), vote(&link, entry.1, now, self.down_after))
            {
                votes.insert(upstream, vote);
            }
        }
        votes
    }
}

/// The vote of one link: Up while it streams, Down once it has been down longer than
/// `down_after`, nothing in between.
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
    (now.saturating_duration_since(since) > down_after).then_some(State::Down)
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
            ("down at the threshold", link(false), ago(5), None),
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
}
