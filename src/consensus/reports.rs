//! Reports: each agent's health vector, sent to the leader every probe interval.
//!
//! The leader keeps only the latest report per agent, stamped with the leader's own monotonic
//! clock when it arrives, so no agent's wall clock matters. Sequence numbers discard reports
//! that arrive out of order; a new `boot` id (a restarted agent) starts a new sequence.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::datastore::acks::Acks;

use crate::health::State;
use crate::topology::TargetId;
use crate::verdict::{AgentId, ReportView};

/// One agent's health vector.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    /// The reporting agent.
    pub agent: AgentId,
    /// Random per process start: a restart begins a new sequence.
    pub boot: u64,
    /// Increases by one per report within a boot.
    pub seq: u64,
    /// The agent's state of every target it probes.
    pub states: BTreeMap<TargetId, State>,
    /// The role each datastore target last answered with (`primary`, `replica`, `master`).
    #[serde(default)]
    pub roles: BTreeMap<TargetId, String>,
    /// WAL positions of the Postgres members this agent probes.
    #[serde(default)]
    pub positions: BTreeMap<TargetId, Position>,
    /// Replication offsets of the Redis members this agent probes.
    #[serde(default)]
    pub offsets: BTreeMap<TargetId, RedisOffset>,
    /// What each Redis Cluster node this agent probes sees of its cluster.
    #[serde(default)]
    pub clusters: BTreeMap<TargetId, crate::probe::redis::ClusterFacts>,
    /// Its contacts with leaders, so that the leader can tell when a silent agent last
    /// renewed its lease (absent from agents that predate them).
    #[serde(default)]
    pub contact: Option<super::contact::ContactReport>,
    /// The log entries it applies ([`super::types::LOG_VERSION`]; 0 from agents that predate
    /// it).
    #[serde(default)]
    pub log_version: u32,
}

/// A Redis member's replication state as last observed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RedisOffset {
    /// It answered as master.
    pub master: bool,
    /// Its replication offset.
    pub offset: u64,
    /// How many replicas must acknowledge a write (master); absent from older agents.
    #[serde(default)]
    pub acks: Option<Acks>,
    /// Its link to its master is up (replica); absent from older agents.
    #[serde(default)]
    pub link_up: Option<bool>,
    /// How long its link to its master has been down, in seconds (replica, link down).
    #[serde(default)]
    pub link_down_s: Option<u64>,
}

/// A Postgres member's WAL positions as last observed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Position {
    /// In recovery.
    pub replica: bool,
    /// Replayed up to (replica).
    pub replay_lsn: Option<crate::probe::Lsn>,
    /// Received up to (replica).
    pub receive_lsn: Option<crate::probe::Lsn>,
    /// Current WAL position (primary).
    pub primary_lsn: Option<crate::probe::Lsn>,
    /// Replay paused on purpose (replica); absent in reports of older agents.
    #[serde(default)]
    pub replay_paused: bool,
    /// How many standbys must confirm a commit (primary); absent from older agents.
    #[serde(default)]
    pub acks: Option<Acks>,
    /// Its WAL receiver streams (replica); absent from older agents.
    #[serde(default)]
    pub streaming: Option<bool>,
    /// Timeline: of its WAL (primary), of the WAL it receives (replica).
    #[serde(default)]
    pub timeline: Option<u32>,
    /// The `application_name` of each replica streaming from it (primary).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub followers: Vec<String>,
    /// The replication slot it streams through (replica).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slot_name: Option<String>,
    /// Its physical replication slots.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub slots: Vec<crate::probe::postgres::Slot>,
    /// The settings `pg_rewind` needs on it; absent from older agents.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rewind: Option<crate::probe::postgres::RewindSettings>,
}

/// Why a report was not taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReportError {
    /// The agent is not a configured member.
    #[error("agent {0:?} is not a member of this cluster")]
    UnknownAgent(String),
    /// An older report than the one held (arrived late): ignored.
    #[error("report {seq} of {agent} is older than the one held ({held})")]
    OutOfOrder {
        /// The agent.
        agent: String,
        /// Its sequence number.
        seq: u64,
        /// The one held.
        held: u64,
    },
}

#[derive(Debug, Clone)]
struct Held {
    report: Report,
    received: Instant,
}

/// The latest report of each agent.
#[derive(Debug)]
pub struct ReportBook {
    agents: Vec<AgentId>,
    latest: Mutex<BTreeMap<AgentId, Held>>,
    /// The furthest WAL position each member was seen at as primary, kept past
    /// `stale_after`: how far a primary that died got is exactly what the data-loss guard
    /// needs once its reports have gone stale. Forgotten when it reports as a replica.
    primary_high: Mutex<BTreeMap<TargetId, crate::probe::Lsn>>,
    /// The acknowledgement rule each member was last seen with as primary or master, kept
    /// past `stale_after` like `primary_high`: whether a primary cut off from everyone fences
    /// itself depends on it. Forgotten when it reports as a replica.
    primary_acks: Mutex<BTreeMap<TargetId, Acks>>,
}

/// What the status shows of one agent's reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ReportAge {
    /// The agent.
    pub agent: AgentId,
    /// Milliseconds since its latest report arrived, if any did.
    pub age_ms: Option<u64>,
    /// Its sequence number.
    pub seq: Option<u64>,
}

impl ReportBook {
    /// A book for the configured agents.
    pub fn new(agents: Vec<AgentId>) -> Self {
        ReportBook {
            agents,
            latest: Mutex::new(BTreeMap::new()),
            primary_high: Mutex::new(BTreeMap::new()),
            primary_acks: Mutex::new(BTreeMap::new()),
        }
    }

    /// Keeps `report` if it is newer than the one held.
    pub fn record(&self, report: Report, now: Instant) -> Result<(), ReportError> {
        if !self.agents.contains(&report.agent) {
            return Err(ReportError::UnknownAgent(report.agent));
        }
        let mut latest = self.latest.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(held) = latest.get(&report.agent) {
            if held.report.boot == report.boot && held.report.seq >= report.seq {
                return Err(ReportError::OutOfOrder {
                    agent: report.agent,
                    seq: report.seq,
                    held: held.report.seq,
                });
            }
        }
        {
            let mut high = self.primary_high.lock().unwrap_or_else(|p| p.into_inner());
            for (target, position) in &report.positions {
                match (position.replica, position.primary_lsn) {
                    (true, _) => {
                        high.remove(target);
                    }
                    (false, Some(lsn)) => {
                        let entry = high.entry(target.clone()).or_insert(lsn);
                        *entry = (*entry).max(lsn);
                    }
                    (false, None) => {}
                }
            }
        }
        {
            let mut acks = self.primary_acks.lock().unwrap_or_else(|p| p.into_inner());
            let seen = report
                .positions
                .iter()
                .map(|(t, p)| (t, !p.replica, &p.acks))
                .chain(report.offsets.iter().map(|(t, o)| (t, o.master, &o.acks)));
            for (target, primary, rule) in seen {
                match (primary, rule) {
                    (true, Some(rule)) => {
                        acks.insert(target.clone(), rule.clone());
                    }
                    (true, None) => {}
                    (false, _) => {
                        acks.remove(target);
                    }
                }
            }
        }
        latest.insert(
            report.agent.clone(),
            Held {
                report,
                received: now,
            },
        );
        Ok(())
    }

    /// The latest reports as the verdict reads them, aged at `now`.
    pub fn views(&self, now: Instant) -> BTreeMap<AgentId, ReportView> {
        let latest = self.latest.lock().unwrap_or_else(|p| p.into_inner());
        latest
            .iter()
            .map(|(agent, held)| {
                (
                    agent.clone(),
                    ReportView {
                        age: now.saturating_duration_since(held.received),
                        votes: held.report.states.clone(),
                    },
                )
            })
            .collect()
    }

    /// Age and sequence of each agent's latest report.
    pub fn ages(&self, now: Instant) -> Vec<ReportAge> {
        let latest = self.latest.lock().unwrap_or_else(|p| p.into_inner());
        self.agents
            .iter()
            .map(|agent| {
                let held = latest.get(agent);
                ReportAge {
                    agent: agent.clone(),
                    age_ms: held.map(|h| {
                        u64::try_from(now.saturating_duration_since(h.received).as_millis())
                            .unwrap_or(u64::MAX)
                    }),
                    seq: held.map(|h| h.report.seq),
                }
            })
            .collect()
    }

    /// The roles reported for `targets` in reports fresher than `stale_after`: which agents
    /// saw which target in which role.
    pub fn roles(&self, now: Instant, stale_after: Duration) -> BTreeMap<TargetId, Vec<String>> {
        let latest = self.latest.lock().unwrap_or_else(|p| p.into_inner());
        let mut roles: BTreeMap<TargetId, Vec<String>> = BTreeMap::new();
        for held in latest.values() {
            if now.saturating_duration_since(held.received) > stale_after {
                continue;
            }
            for (target, role) in &held.report.roles {
                roles.entry(target.clone()).or_default().push(role.clone());
            }
        }
        roles
    }

    /// The freshest reported position of each Postgres member, from reports younger than
    /// `stale_after`; for a member no fresh report shows, the furthest position it was seen
    /// at as primary, if any.
    pub fn positions(&self, now: Instant, stale_after: Duration) -> BTreeMap<TargetId, Position> {
        let mut positions = self.freshest(now, stale_after, |r| &r.positions);
        // A primary no fresh report shows (dead, or its agent cut off): its last position.
        let high = self.primary_high.lock().unwrap_or_else(|p| p.into_inner());
        for (target, lsn) in high.iter() {
            positions.entry(target.clone()).or_insert(Position {
                primary_lsn: Some(*lsn),
                ..Default::default()
            });
        }
        positions
    }

    /// The acknowledgement rule each member was last seen with as primary or master, however
    /// old the report.
    pub fn acks(&self) -> BTreeMap<TargetId, Acks> {
        self.primary_acks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Whether every configured agent's latest report says it applies log entries of
    /// `version`.
    pub fn all_apply(&self, version: u32) -> bool {
        let latest = self.latest.lock().unwrap_or_else(|p| p.into_inner());
        self.agents.iter().all(|a| {
            latest
                .get(a)
                .is_some_and(|held| held.report.log_version >= version)
        })
    }

    /// The members whose latest fresh report shows them as a replica.
    pub fn replicas(&self, now: Instant, stale_after: Duration) -> BTreeSet<TargetId> {
        let positions = self.positions(now, stale_after);
        let offsets = self.offsets(now, stale_after);
        positions
            .into_iter()
            .filter(|(_, p)| p.replica)
            .map(|(t, _)| t)
            .chain(
                offsets
                    .into_iter()
                    .filter(|(_, o)| !o.master)
                    .map(|(t, _)| t),
            )
            .collect()
    }

    /// The freshest reported Redis offsets, from reports younger than `stale_after`.
    pub fn offsets(&self, now: Instant, stale_after: Duration) -> BTreeMap<TargetId, RedisOffset> {
        self.freshest(now, stale_after, |r| &r.offsets)
    }

    /// What each Redis Cluster node saw of its cluster, from reports younger than
    /// `stale_after`.
    pub fn clusters(
        &self,
        now: Instant,
        stale_after: Duration,
    ) -> BTreeMap<TargetId, crate::probe::redis::ClusterFacts> {
        self.freshest(now, stale_after, |r| &r.clusters)
    }

    /// The node id each Redis Cluster node reported as its own (`myself`), from every report
    /// held, fresh or not: a node's id outlives the node's reachability.
    pub fn cluster_ids(&self) -> BTreeMap<String, TargetId> {
        let latest = self.latest.lock().unwrap_or_else(|p| p.into_inner());
        let mut ids = BTreeMap::new();
        for held in latest.values() {
            for (target, facts) in &held.report.clusters {
                if let Some(me) = facts
                    .nodes
                    .iter()
                    .find(|n| n.flags.iter().any(|f| f == "myself"))
                {
                    ids.insert(me.id.clone(), target.clone());
                }
            }
        }
        ids
    }

    /// One per-target figure of the reports younger than `stale_after`, the freshest
    /// report's figure winning where several agents report the same target.
    fn freshest<T: Clone>(
        &self,
        now: Instant,
        stale_after: Duration,
        pick: impl Fn(&Report) -> &BTreeMap<TargetId, T>,
    ) -> BTreeMap<TargetId, T> {
        let latest = self.latest.lock().unwrap_or_else(|p| p.into_inner());
        let mut fresh: Vec<&Held> = latest
            .values()
            .filter(|h| now.saturating_duration_since(h.received) <= stale_after)
            .collect();
        // Oldest first, so the freshest report's figure wins.
        fresh.sort_by_key(|h| h.received);
        let mut out = BTreeMap::new();
        for held in fresh {
            for (target, figure) in pick(&held.report) {
                out.insert(target.clone(), figure.clone());
            }
        }
        out
    }

    /// Forgets every report (a leader that steps down must not keep deciding on old ones).
    pub fn clear(&self) {
        self.latest
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        self.primary_high
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        self.primary_acks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }

    /// The contacts an agent sent in its latest report, if that report arrived at `since` or
    /// later.
    pub fn contact(&self, agent: &str, since: Instant) -> Option<super::contact::Contact> {
        let latest = self.latest.lock().unwrap_or_else(|p| p.into_inner());
        let held = latest.get(agent).filter(|h| h.received >= since)?;
        Some(held.report.contact.as_ref()?.at(held.received))
    }

    /// Age of an agent's latest report.
    pub fn age(&self, agent: &str, now: Instant) -> Option<Duration> {
        let latest = self.latest.lock().unwrap_or_else(|p| p.into_inner());
        latest
            .get(agent)
            .map(|h| now.saturating_duration_since(h.received))
    }
}

/// What a Redis Cluster node's last successful observation showed of its cluster.
pub(super) fn cluster_of(
    view: &crate::health::TargetView,
) -> Option<crate::probe::redis::ClusterFacts> {
    let crate::probe::Facts::Redis(r) = view.facts()? else {
        return None;
    };
    r.cluster.clone()
}

/// The replication offset a Redis member's last successful observation showed.
pub(crate) fn offset_of(view: &crate::health::TargetView) -> Option<RedisOffset> {
    let crate::probe::Facts::Redis(r) = view.facts()? else {
        return None;
    };
    Some(RedisOffset {
        master: r.role == crate::probe::redis::RedisRole::Master,
        offset: r.repl_offset,
        acks: r.acks.clone(),
        link_up: r.master_link_up,
        link_down_s: r
            .master_link_down_seconds
            .and_then(|s| u64::try_from(s).ok()),
    })
}

/// The WAL positions a Postgres member's last successful observation showed.
pub(crate) fn position_of(view: &crate::health::TargetView) -> Option<Position> {
    let crate::probe::Facts::Postgres(pg) = view.facts()? else {
        return None;
    };
    Some(Position {
        replica: pg.role == crate::probe::postgres::PgRole::Replica,
        replay_lsn: pg.replay_lsn,
        receive_lsn: pg.receive_lsn,
        primary_lsn: pg.current_lsn,
        replay_paused: pg.replay_paused == Some(true),
        acks: pg.acks.clone(),
        streaming: (pg.role == crate::probe::postgres::PgRole::Replica).then(|| {
            pg.wal_receiver
                .as_ref()
                .is_some_and(|w| w.status == "streaming")
        }),
        timeline: pg.timeline,
        followers: pg
            .replicas
            .iter()
            .filter(|r| matches!(r.state.as_deref(), Some("streaming" | "catchup")))
            .map(|r| r.application_name.clone())
            .collect(),
        slot_name: pg.slot_name.clone(),
        slots: pg.slots.clone(),
        rewind: pg.rewind,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(agent: &str, boot: u64, seq: u64) -> Report {
        Report {
            agent: agent.into(),
            boot,
            seq,
            states: BTreeMap::new(),
            roles: BTreeMap::new(),
            positions: BTreeMap::new(),
            offsets: BTreeMap::new(),
            clusters: BTreeMap::new(),
            contact: None,
            log_version: 0,
        }
    }

    /// An entry of a newer kind is proposed only once every configured agent said it applies
    /// it: one silent agent, or one whose latest report predates it, holds it back.
    #[test]
    fn the_log_version_of_the_cluster_is_its_oldest_agents() {
        let book = ReportBook::new(vec!["a".into(), "b".into()]);
        let now = Instant::now();
        assert!(!book.all_apply(1), "nobody reported");
        book.record(
            Report {
                log_version: 1,
                ..report("a", 1, 1)
            },
            now,
        )
        .unwrap();
        assert!(!book.all_apply(1), "b never reported");
        book.record(report("b", 1, 1), now).unwrap();
        assert!(!book.all_apply(1), "b predates it");
        book.record(
            Report {
                log_version: 1,
                ..report("b", 1, 2)
            },
            now,
        )
        .unwrap();
        assert!(book.all_apply(1));
        assert!(!book.all_apply(2));
    }

    #[test]
    fn contacts_count_only_from_reports_that_arrived_since() {
        let book = ReportBook::new(vec!["a".into()]);
        let office = Instant::now();
        let arrived = office + Duration::from_millis(300);
        let contact = crate::consensus::contact::ContactReport {
            started_ms_ago: 60_000,
            accepted_from_ms_ago: [("b".to_owned(), 1_000)].into(),
            acked_by_ms_ago: BTreeMap::new(),
        };
        book.record(
            Report {
                contact: Some(contact),
                ..report("a", 1, 1)
            },
            arrived,
        )
        .unwrap();
        let seen = book
            .contact("a", office)
            .expect("arrived after the office began");
        assert_eq!(
            seen.accepted_from["b"],
            arrived - Duration::from_millis(1_000)
        );
        assert_eq!(book.contact("a", arrived + Duration::from_millis(1)), None);
        book.record(report("a", 1, 2), arrived).unwrap();
        assert_eq!(book.contact("a", office), None, "a report without contacts");
    }

    #[test]
    fn keeps_the_latest_report_per_agent() {
        let book = ReportBook::new(vec!["a".into(), "b".into()]);
        let t0 = Instant::now();
        book.record(report("a", 1, 1), t0).unwrap();
        book.record(report("a", 1, 2), t0 + Duration::from_secs(1))
            .unwrap();
        assert_eq!(
            book.record(report("a", 1, 2), t0),
            Err(ReportError::OutOfOrder {
                agent: "a".into(),
                seq: 2,
                held: 2
            })
        );
        let ages = book.ages(t0 + Duration::from_secs(3));
        assert_eq!(ages[0].age_ms, Some(2000));
        assert_eq!(ages[0].seq, Some(2));
        assert_eq!(ages[1].age_ms, None, "b never reported");
    }

    #[test]
    fn a_restarted_agent_starts_a_new_sequence() {
        let book = ReportBook::new(vec!["a".into()]);
        let t0 = Instant::now();
        book.record(report("a", 1, 50), t0).unwrap();
        book.record(report("a", 2, 1), t0).unwrap();
        assert_eq!(book.ages(t0)[0].seq, Some(1));
    }

    #[test]
    fn refuses_strangers() {
        let book = ReportBook::new(vec!["a".into()]);
        assert_eq!(
            book.record(report("mallory", 1, 1), Instant::now()),
            Err(ReportError::UnknownAgent("mallory".into()))
        );
    }

    #[test]
    fn a_dead_primary_keeps_its_furthest_position_after_its_reports_go_stale() {
        use crate::probe::Lsn;
        let book = ReportBook::new(vec!["a".into(), "b".into()]);
        let primary = TargetId::new(crate::config::TargetKind::Postgres, "main", "p");
        let replica = TargetId::new(crate::config::TargetKind::Postgres, "main", "r");
        let position = |replica: bool, lsn: u64| Position {
            replica,
            replay_lsn: replica.then_some(Lsn(lsn)),
            receive_lsn: replica.then_some(Lsn(lsn)),
            primary_lsn: (!replica).then_some(Lsn(lsn)),
            replay_paused: false,
            acks: None,
            streaming: None,
            ..Default::default()
        };
        let t0 = Instant::now();
        let mut a = report("a", 1, 1);
        a.positions.insert(primary.clone(), position(false, 900));
        book.record(a, t0).unwrap();
        let mut b = report("b", 1, 1);
        b.positions.insert(replica.clone(), position(true, 700));
        book.record(b, t0 + Duration::from_secs(9)).unwrap();
        let stale = Duration::from_secs(3);
        let later = book.positions(t0 + Duration::from_secs(10), stale);
        assert_eq!(
            later[&primary].primary_lsn,
            Some(Lsn(900)),
            "kept past stale_after"
        );
        assert_eq!(later[&replica].replay_lsn, Some(Lsn(700)));
        // Seen as a replica again (rebuilt after a failover): forgotten.
        let mut a = report("a", 1, 2);
        a.positions.insert(primary.clone(), position(true, 950));
        book.record(a, t0 + Duration::from_secs(11)).unwrap();
        let now = book.positions(t0 + Duration::from_secs(20), stale);
        assert!(!now.contains_key(&primary));
    }

    #[test]
    fn a_primary_keeps_its_acknowledgement_rule_until_seen_as_a_replica() {
        use crate::config::TargetKind;
        use crate::probe::Lsn;
        let book = ReportBook::new(vec!["a".into()]);
        let primary = TargetId::new(TargetKind::Postgres, "main", "pg1");
        let master = TargetId::new(TargetKind::Redis, "s", "r1");
        let rule = Acks::postgres("ANY 1 (pg2, pg3)", "on", 2);
        let t0 = Instant::now();
        let mut a = report("a", 1, 1);
        a.positions.insert(
            primary.clone(),
            Position {
                replica: false,
                replay_lsn: None,
                receive_lsn: None,
                primary_lsn: Some(Lsn(1)),
                replay_paused: false,
                acks: Some(rule.clone()),
                streaming: None,
                ..Default::default()
            },
        );
        a.offsets.insert(
            master.clone(),
            RedisOffset {
                master: true,
                offset: 5,
                acks: Some(Acks::redis(1, 10, 1)),
                link_up: None,
                link_down_s: None,
            },
        );
        book.record(a, t0).unwrap();
        // A later report without the rule (CONFIG refused) keeps the last one seen.
        let mut a = report("a", 1, 2);
        a.offsets.insert(
            master.clone(),
            RedisOffset {
                master: true,
                offset: 6,
                acks: None,
                link_up: None,
                link_down_s: None,
            },
        );
        book.record(a, t0).unwrap();
        let acks = book.acks();
        assert_eq!(acks.get(&primary), Some(&rule));
        assert_eq!(acks.get(&master).map(|a| a.required), Some(1));
        let mut a = report("a", 1, 3);
        a.offsets.insert(
            master.clone(),
            RedisOffset {
                master: false,
                offset: 7,
                acks: None,
                link_up: Some(true),
                link_down_s: None,
            },
        );
        book.record(a, t0).unwrap();
        assert!(!book.acks().contains_key(&master), "forgotten as a replica");
        book.clear();
        assert!(book.acks().is_empty());
    }
}
