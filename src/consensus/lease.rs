//! Leases, as this agent holds its own and as the leader counts other agents': an agent holds
//! its lease while it has contact with a quorum; the leader counts a silent agent as fenced
//! once it has been silent for `lease_ttl` plus the margin its fencer needs, and hands the
//! failover engine its view of the cluster ([`LeaderView`]) with the regions cut off.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use openraft::ServerState;

use super::{
    contact, reports, Consensus, Member, SilentSince, FENCE_ALLOWANCE, LEASE_CHECK_INTERVAL,
};
use crate::topology::TargetId;
use crate::verdict::Verdict;

/// What the leader knows of the cluster at one moment, as the failover engine reads it (see
/// [`crate::failover::inputs`]).
#[derive(Debug, Clone)]
pub struct LeaderView {
    /// The verdict.
    pub verdict: Verdict,
    /// The freshest WAL positions of Postgres members.
    pub positions: BTreeMap<TargetId, reports::Position>,
    /// The freshest replication offsets of Redis members.
    pub offsets: BTreeMap<TargetId, reports::RedisOffset>,
    /// The freshest view each Redis Cluster node gave of its cluster.
    pub clusters: BTreeMap<TargetId, crate::datastore::redis::ClusterFacts>,
    /// Redis Cluster node ids, each as the member reporting it as its own.
    pub cluster_ids: BTreeMap<String, TargetId>,
    /// The primary the log names for each group.
    pub primaries: BTreeMap<String, TargetId>,
    /// Regions whose agents have all been silent for `lease_ttl` plus the fence margin.
    pub cut_off: std::collections::BTreeSet<String>,
    /// The acknowledgement rule each member was last seen with as primary or master.
    pub acks: BTreeMap<TargetId, crate::datastore::acks::Acks>,
}

impl Consensus {
    /// Whether this agent holds its lease: it leads and a quorum acknowledged a request it
    /// sent within `lease_ttl`, or it accepted one from such a leader within `lease_ttl` and
    /// that leader heard so (see [`contact`]) — whichever is later, so that becoming leader
    /// does not drop it. A one-agent cluster is its own quorum.
    pub fn lease_valid(&self) -> bool {
        self.members.len() == 1
            || self
                .lease_age(Instant::now())
                .is_some_and(|age| age < self.lease_ttl)
    }

    /// Time since this agent's lease was last renewed (see [`Consensus::lease_valid`]).
    pub(super) fn lease_age(&self, now: Instant) -> Option<Duration> {
        let (state, term) = {
            let metrics = self.raft.metrics();
            let m = metrics.borrow();
            (m.state, m.current_term)
        };
        let as_follower = self.contacts.since_leader(now);
        if state == ServerState::Leader {
            Some(leader_lease_age(
                self.contacts.since_quorum(term, self.quorum, now),
                as_follower,
            ))
        } else {
            Some(as_follower)
        }
    }

    /// On the leader: whether `member` has been silent for `lease_ttl` plus the fence margin,
    /// so that it has fenced its own primaries (see [`Consensus::silence`]).
    pub(super) fn lease_expired(&self, member: &Member, now: Instant) -> bool {
        self.silence(member, now)
            .is_some_and(|(silent, since)| silent >= self.lease_ttl + self.fence_margin(since))
    }

    /// On the leader: how long `member` has gone without renewing its lease as far as this
    /// leader can tell, and what that is counted from: the latest contact mark every other
    /// member holds of it ([`contact::last_renewal`]), which bounds every renewal. While one
    /// of them has not sent its marks since this agent took office, the later of its own
    /// last report and this agent's election (it may have heard the previous leader until
    /// then).
    pub(super) fn silence(&self, member: &Member, now: Instant) -> Option<(Duration, SilentSince)> {
        if member.node_id == self.me.node_id {
            return None;
        }
        let office = (*self.leader_since.lock().unwrap_or_else(|p| p.into_inner()))?;
        let own = self
            .contacts
            .contact(|node| self.agent_of(Some(node)).map(str::to_owned));
        let others: Vec<Option<contact::Contact>> = self
            .members
            .iter()
            .filter(|m| m.node_id != member.node_id)
            .map(|m| {
                if m.node_id == self.me.node_id {
                    Some(own.clone())
                } else {
                    self.reports.contact(&m.agent, office)
                }
            })
            .collect();
        if let Some(renewal) =
            contact::last_renewal(&member.agent, others.iter().map(Option::as_ref))
        {
            return Some((
                now.saturating_duration_since(renewal),
                SilentSince::Contacts,
            ));
        }
        let report = self
            .reports
            .age(&member.agent, now)
            .and_then(|age| now.checked_sub(age))
            .filter(|at| *at > office);
        Some(match report {
            Some(at) => (now.saturating_duration_since(at), SilentSince::Report),
            None => (now.saturating_duration_since(office), SilentSince::Election),
        })
    }

    /// What a silent member needs beyond `lease_ttl` to have fenced its primaries: its
    /// fence check's period and the fence itself — and, when its silence is counted from its
    /// last report, one report period (its lease may have been renewed just after it sent
    /// that report). A contact mark is made after the renewal it stands for.
    pub(super) fn fence_margin(&self, since: SilentSince) -> Duration {
        let reports = match since {
            SilentSince::Contacts => Duration::ZERO,
            SilentSince::Report | SilentSince::Election => self.report_interval,
        };
        reports + LEASE_CHECK_INTERVAL + FENCE_ALLOWANCE
    }

    /// As leader: a snapshot of what the failover engine reads — the verdict, the freshest
    /// positions, offsets and cluster views, the named primaries and the regions cut off.
    pub fn leader_view(&self) -> Option<LeaderView> {
        let verdict = self.verdict()?;
        let now = Instant::now();
        let mut cut_off = std::collections::BTreeSet::new();
        let regions: std::collections::BTreeSet<&str> =
            self.members.iter().map(|m| m.region.as_str()).collect();
        for region in regions {
            let agents: Vec<&Member> = self.members.iter().filter(|m| m.region == region).collect();
            if agents.iter().all(|m| self.lease_expired(m, now)) {
                cut_off.insert(region.to_owned());
            }
        }
        Some(LeaderView {
            verdict,
            positions: self.reports.positions(now, self.stale_after),
            offsets: self.reports.offsets(now, self.stale_after),
            clusters: self.reports.clusters(now, self.stale_after),
            cluster_ids: self.reports.cluster_ids(),
            primaries: self.state_machine.read(|s| s.primaries.clone()),
            cut_off,
            // What the log holds, overlaid with what this leader saw itself.
            acks: {
                let mut acks = self.state_machine.read(|s| s.rules.clone());
                acks.extend(self.reports.acks());
                acks
            },
        })
    }
}

/// A leader's lease age: since a quorum last acknowledged it in its term, or, when that is
/// more recent or there is none yet, since its last renewal as a follower. A follower that
/// becomes leader keeps the lease it had: a change of leader while an agent hears from a
/// quorum must not drop its lease (and fence its primaries) until its own first quorum
/// acknowledgement arrives; without one, the lease runs out when it would have anyway.
pub fn leader_lease_age(as_leader: Option<Duration>, as_follower: Duration) -> Duration {
    as_leader.map_or(as_follower, |age| age.min(as_follower))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::leader_lease_age;

    #[test]
    fn a_new_leader_keeps_the_lease_it_had_as_a_follower() {
        let ms = Duration::from_millis;
        // Elected 800 ms after its last renewal as a follower, no quorum ack yet.
        assert_eq!(leader_lease_age(None, ms(800)), ms(800));
        // Its first quorum acknowledgement renews it.
        assert_eq!(leader_lease_age(Some(ms(50)), ms(1_200)), ms(50));
        // A leader cut off ages from its last quorum ack, as before.
        assert_eq!(leader_lease_age(Some(ms(4_000)), ms(60_000)), ms(4_000));
    }
}
