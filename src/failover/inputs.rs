//! What the failover engine reads, built by pure functions from the leader's view of the
//! cluster ([`LeaderView`], which consensus hands out) and the static roster of members from
//! the configuration: the Postgres groups with their candidates, the Redis shards and cluster
//! masters, an operator's candidate, and each group's readiness.
//!
//! No I/O and no clock: the view is a snapshot taken by consensus.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use super::candidate::Choice;
use super::fence_rule::{self, Replica, SelfFencing};
use super::quorum;
use crate::config::{Config, SynchronousMode, TargetKind};
use crate::consensus::reports::{Position, RedisOffset};
use crate::consensus::LeaderView;
use crate::datastore::acks::Acks;
use crate::desired::Guard;
use crate::health::State;
use crate::topology::{TargetId, TargetSpec, Topology};
use crate::verdict::{AgentId, Verdict};

/// What the failover trigger reads, built from a [`LeaderView`].
#[derive(Debug, Clone)]
pub struct TriggerInputs {
    /// The verdict.
    pub verdict: Verdict,
    /// Each Postgres group with a named primary.
    pub groups: Vec<super::trigger::Group>,
    /// Each Redis replication shard with a named master, and each master of each Redis
    /// Cluster.
    pub redis: Vec<super::trigger::RedisGroup>,
    /// Regions whose agents have all been silent for `lease_ttl`.
    pub cut_off: BTreeSet<String>,
    /// Per Redis Cluster (`redis/<name>`) whose view is healthy: the master of each
    /// slot-range list.
    pub slot_owners: BTreeMap<String, BTreeMap<String, TargetId>>,
}

/// What an automatic failover of one Postgres group would do now.
#[derive(Debug, Clone, Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct Readiness {
    /// The region holding the named primary.
    pub if_region_fails: String,
    /// The candidate, or why promotion would be blocked.
    pub choice: Choice,
    /// A partition of that region leaves the primary unable to take writes (it fences
    /// itself), so an unreachable primary there may be promoted around automatically.
    #[serde(default)]
    pub fences_itself: bool,
    /// Why it does, or why a partition could leave two writable primaries.
    #[serde(default)]
    pub if_partitioned: String,
}

/// The members as the configuration has them: what the inputs need besides the view.
#[derive(Debug, Clone)]
pub struct Roster {
    /// Each agent and its region.
    pub(super) agents: Vec<(AgentId, String)>,
    /// Every target with its region and whether it is an HTTP target.
    pub(super) targets: Vec<(TargetId, String, bool)>,
    /// Postgres members: target, region, priority, no_failover.
    pub(super) pg_members: Vec<(TargetId, String, u32, bool)>,
    /// Datastore targets and the group each belongs to (`postgres/<cluster>`,
    /// `redis/<shard>` for replication shards).
    pub(super) groups: Vec<(TargetId, String)>,
    /// The nodes of each Redis Cluster, by shard name, with twice its node timeout (ms).
    pub(super) clusters: BTreeMap<String, (Vec<super::cluster::Node>, u64)>,
    /// The data-loss guard, in bytes.
    pub(super) max_lag_on_failover: u64,
    /// `postgres.home`: the member a group's primary returns to.
    pub(super) pg_home: Option<TargetId>,
    /// `redis.shards[].home`: the member each replication shard's master returns to.
    pub(super) redis_homes: Vec<TargetId>,
    /// `[postgres.synchronous]` when its mode is `quorum`.
    pub(super) synchronous: Option<quorum::Policy>,
    /// `[redis.self_fencing]`: its policy and `min-replicas-max-lag` in seconds.
    pub(super) redis_self_fencing: Option<(quorum::Policy, u32)>,
}

impl Roster {
    /// The roster of `config`.
    pub fn from_config(config: &Config) -> Roster {
        let topology = Topology::from_config(config);
        let mut agents = vec![(config.agent.id.clone(), config.agent.region.clone())];
        agents.extend(
            config
                .other_peers()
                .map(|p| (p.id.clone(), p.region.clone())),
        );
        Roster {
            agents,
            targets: topology
                .targets
                .iter()
                .map(|t| (t.id.clone(), t.region.clone(), t.kind() == TargetKind::Http))
                .collect(),
            pg_members: topology
                .targets
                .iter()
                .filter_map(|t| match &t.spec {
                    TargetSpec::Postgres { member, .. } => Some((
                        t.id.clone(),
                        t.region.clone(),
                        member.priority,
                        member.no_failover,
                    )),
                    _ => None,
                })
                .collect(),
            groups: topology.groups(),
            clusters: cluster_nodes(config, &topology),
            max_lag_on_failover: config
                .postgres
                .as_ref()
                .map(|p| p.max_lag_on_failover)
                .unwrap_or(crate::config::DEFAULT_MAX_LAG_ON_FAILOVER),
            pg_home: config.postgres.as_ref().and_then(|p| {
                let home = p.home.as_deref()?;
                Some(TargetId::new(TargetKind::Postgres, &p.cluster, home))
            }),
            redis_homes: config
                .redis
                .shards
                .iter()
                .filter_map(|s| {
                    Some(TargetId::new(
                        TargetKind::Redis,
                        &s.name,
                        s.home.as_deref()?,
                    ))
                })
                .collect(),
            synchronous: config
                .postgres
                .as_ref()
                .filter(|p| p.synchronous.mode == SynchronousMode::Quorum)
                .map(|p| quorum::Policy {
                    count: p.synchronous.count,
                    relax: p.synchronous.relax,
                }),
            redis_self_fencing: config.redis.self_fencing.as_ref().map(|r| {
                (
                    quorum::Policy {
                        count: r.replicas,
                        relax: r.relax,
                    },
                    u32::try_from(r.max_lag.as_secs()).unwrap_or(u32::MAX),
                )
            }),
        }
    }

    /// The changes of acknowledgement rule that the configured self-fencing needs now: for
    /// each group whose primary reports as primary, the rule [`quorum`] derives from its
    /// members, when the primary runs another one. A Redis master that is fenced
    /// (`min-replicas-to-write` set out of reach) or whose rule cannot be read is left alone.
    pub fn tunes(&self, view: &LeaderView) -> Vec<quorum::Tune> {
        let mut tunes = Vec::new();
        if let Some(policy) = self.synchronous {
            for (group, primary, region) in self.named_pg_groups(&view.primaries) {
                if view.positions.get(&primary).is_none_or(|p| p.replica) {
                    continue;
                }
                let members: Vec<quorum::Member> = self
                    .pg_members
                    .iter()
                    .filter(|(t, ..)| *t != primary && self.group_of(t) == Some(group.as_str()))
                    .map(|(t, r, _, no_failover)| quorum::Member {
                        name: member_name(t).to_owned(),
                        region: r.clone(),
                        eligible: !no_failover,
                        attached: view
                            .positions
                            .get(t)
                            .is_some_and(|p| p.replica && p.streaming == Some(true)),
                    })
                    .collect();
                let value = quorum::standby_names(policy, &region, &members);
                let want = Acks::postgres(&value, "on", 0);
                if view
                    .acks
                    .get(&primary)
                    .is_none_or(|seen| !quorum::same_rule(seen, &want))
                {
                    tunes.push(quorum::Tune::Standbys {
                        target: primary,
                        value,
                    });
                }
            }
        }
        if let Some((policy, max_lag_s)) = self.redis_self_fencing {
            for (group, master) in &view.primaries {
                // Replication shards only: a cluster's masters are no group here.
                if !group.starts_with("redis/") || !self.groups.iter().any(|(_, g)| g == group) {
                    continue;
                }
                if view.offsets.get(master).is_none_or(|o| !o.master) {
                    continue;
                }
                let Some(seen) = view.acks.get(master) else {
                    continue;
                };
                if seen.required >= crate::actions::redis::FENCE_MIN_REPLICAS {
                    continue;
                }
                let region = self.region_of(master);
                let members: Vec<quorum::Member> = self
                    .groups
                    .iter()
                    .filter(|(t, g)| g == group && t != master)
                    .map(|(t, _)| quorum::Member {
                        name: member_name(t).to_owned(),
                        region: self.region_of(t),
                        eligible: true,
                        attached: view
                            .offsets
                            .get(t)
                            .is_some_and(|o| !o.master && o.link_up == Some(true)),
                    })
                    .collect();
                let to_write = quorum::min_replicas(policy, &region, &members);
                if !quorum::same_rule(seen, &Acks::redis(to_write, max_lag_s, 0)) {
                    tunes.push(quorum::Tune::MinReplicas {
                        target: master.clone(),
                        to_write,
                        max_lag_s,
                    });
                }
            }
        }
        tunes
    }

    /// Whether `agent` is one of `region`'s agents.
    fn agent_in(&self, agent: &str, region: &str) -> bool {
        self.agents.iter().any(|(a, r)| a == agent && r == region)
    }

    /// The group of a datastore target.
    /// The Postgres members of `group` with their regions, in configuration order.
    pub(super) fn pg_group_members(&self, group: &str) -> Vec<(TargetId, String)> {
        self.pg_members
            .iter()
            .filter(|(t, ..)| self.group_of(t) == Some(group))
            .map(|(t, region, ..)| (t.clone(), region.clone()))
            .collect()
    }

    fn group_of(&self, target: &TargetId) -> Option<&str> {
        self.groups
            .iter()
            .find(|(t, _)| t == target)
            .map(|(_, g)| g.as_str())
    }

    /// The Postgres members of `group` as the candidate rule sees them.
    fn candidate_members(
        &self,
        group: &str,
        verdict: &Verdict,
        positions: &BTreeMap<TargetId, Position>,
    ) -> Vec<super::candidate::Member> {
        self.pg_members
            .iter()
            .filter(|(t, ..)| self.group_of(t) == Some(group))
            .map(|(target, region, priority, no_failover)| {
                let position = positions.get(target);
                super::candidate::Member {
                    target: target.clone(),
                    region: region.clone(),
                    // A replica is probed only by its own region's agent (the one that would
                    // promote it): healthy when reported Up and Down by no one.
                    healthy: verdict
                        .targets
                        .get(target)
                        .is_some_and(|v| !v.up.is_empty() && v.down.is_empty()),
                    replica: position.is_some_and(|p| p.replica),
                    no_failover: *no_failover,
                    priority: *priority,
                    replay_lsn: position.and_then(|p| p.replay_lsn),
                    receive_lsn: position.and_then(|p| p.receive_lsn),
                    primary_lsn: position.and_then(|p| p.primary_lsn),
                    replay_paused: position.is_some_and(|p| p.replay_paused),
                    not_streaming: false,
                }
            })
            .collect()
    }

    /// Postgres groups with their named primary and its region.
    pub(super) fn named_pg_groups(
        &self,
        named: &BTreeMap<String, TargetId>,
    ) -> Vec<(String, TargetId, String)> {
        let groups: std::collections::BTreeSet<&str> = self
            .groups
            .iter()
            .filter(|(t, _)| self.pg_members.iter().any(|m| &m.0 == t))
            .map(|(_, g)| g.as_str())
            .collect();
        groups
            .into_iter()
            .filter_map(|group| {
                let primary = named.get(group)?;
                let region = self.pg_members.iter().find(|m| &m.0 == primary)?.1.clone();
                Some((group.to_owned(), primary.clone(), region))
            })
            .collect()
    }

    /// What an automatic Postgres failover would do if the named primary's region were lost
    /// now: the candidate and its estimated loss, or why it would be blocked.
    pub fn readiness(&self, view: &LeaderView) -> BTreeMap<String, Readiness> {
        let mut readiness = BTreeMap::new();
        for (group, primary, region) in self.named_pg_groups(&view.primaries) {
            let members = self.candidate_members(&group, &view.verdict, &view.positions);
            let choice =
                super::candidate::choose(&members, &region, self.max_lag_on_failover, false);
            let fencing = self.pg_self_fencing(view, &group, &primary, &region, true);
            readiness.insert(
                group,
                Readiness {
                    if_region_fails: region,
                    choice,
                    fences_itself: fencing.holds().is_some(),
                    if_partitioned: match fencing {
                        SelfFencing::Holds(why) | SelfFencing::Missing(why) => why,
                    },
                },
            );
        }
        readiness
    }

    /// The readiness drill's answer for `group` were `region` lost now: as an operator's
    /// failover from it would choose, except that while the primary is up a replica whose WAL
    /// receiver does not stream is not offered (it only falls further behind).
    pub fn readiness_choice(&self, view: &LeaderView, group: &str, region: &str) -> Choice {
        let mut members = self.candidate_members(group, &view.verdict, &view.positions);
        let primary_up = view
            .primaries
            .get(group)
            .and_then(|p| view.verdict.targets.get(p))
            .is_some_and(|v| v.state != State::Down);
        if primary_up {
            for m in &mut members {
                m.not_streaming = view
                    .positions
                    .get(&m.target)
                    .is_some_and(|p| p.replica && p.streaming == Some(false));
            }
        }
        super::candidate::choose(&members, region, self.max_lag_on_failover, false)
    }

    /// The candidate to promote in `group` when its primary leaves `from` at an operator's
    /// request — a replica of region `to` when given — with the data-loss guard unless
    /// `allow_data_loss`.
    pub fn manual_choice(
        &self,
        view: &LeaderView,
        group: &str,
        from: &str,
        to: Option<&str>,
        allow_data_loss: bool,
    ) -> Choice {
        let mut members = self.candidate_members(group, &view.verdict, &view.positions);
        if let Some(to) = to {
            // Members elsewhere keep their positions (the loss estimate needs them) but are
            // not eligible.
            for m in members.iter_mut().filter(|m| m.region != to) {
                m.no_failover = true;
            }
        }
        super::candidate::choose(&members, from, self.max_lag_on_failover, allow_data_loss)
    }

    /// What the trigger reads: the verdict, the Postgres groups with their candidates, the
    /// Redis shards and cluster masters, the cut-off regions and the slot owners.
    pub fn trigger_inputs(&self, view: &LeaderView) -> TriggerInputs {
        let verdict = &view.verdict;
        let positions = &view.positions;
        let cut_off = view.cut_off.clone();
        let mut groups = Vec::new();
        let (redundancy, _) = self.redundancy(view);
        for (group, primary, region) in self.named_pg_groups(&view.primaries) {
            let members = self.candidate_members(&group, verdict, positions);
            let standbys = self.standbys(
                &members,
                &primary,
                redundancy.iter().find(|g| g.group == group),
            );
            let choice =
                super::candidate::choose(&members, &region, self.max_lag_on_failover, false);
            let primary_verdict = verdict.targets.get(&primary);
            let home_says_down = primary_verdict
                .is_some_and(|v| v.down.iter().any(|agent| self.agent_in(agent, &region)));
            // No region is excluded when only the primary is lost.
            let local_choice =
                super::candidate::choose(&members, "", self.max_lag_on_failover, false);
            let self_fencing = self.pg_self_fencing(view, &group, &primary, &region, false);
            let if_partitioned = self.pg_self_fencing(view, &group, &primary, &region, true);
            let home = self
                .pg_home
                .clone()
                .filter(|h| self.group_of(h) == Some(group.as_str()));
            groups.push(super::trigger::Group {
                self_fencing,
                if_partitioned,
                followers: members
                    .iter()
                    .filter(|m| m.region != region && m.healthy && m.replica)
                    .map(|m| m.target.clone())
                    .collect(),
                local_followers: members
                    .iter()
                    .filter(|m| m.healthy && m.replica)
                    .map(|m| m.target.clone())
                    .collect(),
                local_choice,
                group,
                primary_down: primary_verdict.is_some_and(|v| v.state == State::Down),
                primary,
                primary_region: region,
                home_says_down,
                choice,
                home,
                standbys,
            });
        }
        let mut redis = self.redis_groups(view);
        let (masters, slot_owners) = self.cluster_masters(view);
        redis.extend(masters);
        TriggerInputs {
            verdict: verdict.clone(),
            groups,
            redis,
            cut_off,
            slot_owners,
        }
    }

    /// The configured home of each group whose home member is in one of `regions`.
    pub fn homes_in(&self, regions: &[String]) -> BTreeMap<String, TargetId> {
        self.pg_home
            .iter()
            .chain(&self.redis_homes)
            .filter(|home| regions.contains(&self.region_of(home)))
            .filter_map(|home| Some((self.group_of(home)?.to_owned(), home.clone())))
            .collect()
    }

    /// Every member of a group but its primary, and whether a planned switchover to it may go
    /// ahead now: it streams from the primary (as the redundancy table judges it), is within
    /// `max_lag_on_failover` of it, and is not `no_failover`.
    fn standbys(
        &self,
        members: &[super::candidate::Member],
        primary: &TargetId,
        redundancy: Option<&super::heal::Group>,
    ) -> Vec<super::trigger::Standby> {
        members
            .iter()
            .filter(|m| m.target != *primary)
            .map(|m| {
                let name = member_name(&m.target);
                let judged =
                    redundancy.and_then(|g| g.members.iter().find(|j| j.member == m.target));
                let blocked = |reason: String, guard| Choice::Blocked { reason, guard };
                let choice = match judged {
                    _ if m.no_failover => {
                        blocked(format!("{name} has no_failover = true"), Guard::NoCandidate)
                    }
                    // Restarted a moment ago (a rejoin): its probe has not seen it up `rise`
                    // times yet.
                    _ if !m.healthy => blocked(
                        format!("{name} is not reported up by its agent yet"),
                        Guard::NoCandidate,
                    ),
                    Some(j) if j.state == super::heal::MemberState::Streaming => {
                        match j.lag_bytes {
                            Some(lag) if lag > self.max_lag_on_failover => blocked(
                                format!(
                                    "{name} is {lag} bytes behind the primary (more than \
                                     max_lag_on_failover {})",
                                    self.max_lag_on_failover
                                ),
                                Guard::MaxLagOnFailover,
                            ),
                            _ => {
                                // Only this member is eligible; the estimate is measured as
                                // for any promotion.
                                let only: Vec<_> = members
                                    .iter()
                                    .map(|o| super::candidate::Member {
                                        no_failover: o.target != m.target,
                                        ..o.clone()
                                    })
                                    .collect();
                                super::candidate::choose(&only, "", u64::MAX, true)
                            }
                        }
                    }
                    Some(j) => blocked(
                        format!(
                            "{name} does not stream from the primary ({})",
                            j.why.as_deref().unwrap_or("down")
                        ),
                        Guard::NoCandidate,
                    ),
                    None => blocked(
                        format!("{name} does not stream from the primary (no report)"),
                        Guard::NoCandidate,
                    ),
                };
                super::trigger::Standby {
                    target: m.target.clone(),
                    region: m.region.clone(),
                    choice,
                }
            })
            .collect()
    }

    /// Whether `group`'s primary refuses writes by itself once cut off from the leader: its
    /// acknowledgement rule as last seen, over the group's other members as their own agents
    /// report them now — or, `partitioned`, as a partition of its region would leave them
    /// (every replica elsewhere detached), which is what the readiness drill asks.
    fn pg_self_fencing(
        &self,
        view: &LeaderView,
        group: &str,
        primary: &TargetId,
        region: &str,
        partitioned: bool,
    ) -> SelfFencing {
        let replicas: Vec<Replica> = self
            .pg_members
            .iter()
            .filter(|(t, ..)| t != primary && self.group_of(t) == Some(group))
            .map(|(t, r, ..)| Replica {
                name: member_name(t).to_owned(),
                region: r.clone(),
                attached: if partitioned && r != region {
                    Some(false)
                } else {
                    view.positions.get(t).and_then(|p| {
                        if p.replica {
                            p.streaming
                        } else {
                            Some(false)
                        }
                    })
                },
            })
            .collect();
        fence_rule::self_fencing(
            member_name(primary),
            region,
            view.acks.get(primary),
            &replicas,
        )
    }

    /// [`Roster::pg_self_fencing`] for a Redis shard's master.
    fn redis_self_fencing(
        &self,
        view: &LeaderView,
        group: &str,
        master: &TargetId,
        region: &str,
        partitioned: bool,
    ) -> SelfFencing {
        let acks = view.acks.get(master);
        let lag_s = acks.map_or(0, |a| a.lag_s);
        let replicas: Vec<Replica> = self
            .groups
            .iter()
            .filter(|(t, g)| g == group && t != master)
            .map(|(t, _)| {
                let r = self.region_of(t);
                Replica {
                    name: member_name(t).to_owned(),
                    attached: if partitioned && r != region {
                        Some(false)
                    } else {
                        view.offsets.get(t).and_then(|o| redis_attached(o, lag_s))
                    },
                    region: r,
                }
            })
            .collect();
        fence_rule::self_fencing(member_name(master), region, acks, &replicas)
    }

    /// A target's region.
    fn region_of(&self, target: &TargetId) -> String {
        self.targets
            .iter()
            .find(|(id, ..)| id == target)
            .map(|(_, region, _)| region.clone())
            .unwrap_or_default()
    }

    /// Redis replication shards with a named master, with their candidates.
    fn redis_groups(&self, view: &LeaderView) -> Vec<super::trigger::RedisGroup> {
        let (verdict, offsets, named) = (&view.verdict, &view.offsets, &view.primaries);
        let mut shards = Vec::new();
        let groups: std::collections::BTreeSet<&str> = self
            .groups
            .iter()
            .map(|(_, g)| g.as_str())
            .filter(|g| g.starts_with("redis/"))
            .collect();
        for group in groups {
            let Some(master) = named.get(group) else {
                continue;
            };
            let region_of = |t: &TargetId| self.region_of(t);
            let master_region = region_of(master);
            let healthy = |t: &TargetId| {
                verdict
                    .targets
                    .get(t)
                    .is_some_and(|v| !v.up.is_empty() && v.down.is_empty())
            };
            // Healthy replicas with their offsets, furthest first, then by id.
            let mut replicas: Vec<(TargetId, String, u64)> = self
                .groups
                .iter()
                .filter(|(t, g)| g == group && t != master && healthy(t))
                .filter_map(|(t, _)| {
                    let o = offsets.get(t)?;
                    (!o.master).then(|| (t.clone(), region_of(t), o.offset))
                })
                .collect();
            replicas.sort_by(|a, b| b.2.cmp(&a.2).then(a.0.cmp(&b.0)));
            let members: Vec<(TargetId, String)> = self
                .groups
                .iter()
                .filter(|(t, g)| g == group && t != master && healthy(t))
                .map(|(t, _)| (t.clone(), region_of(t)))
                .collect();
            let master_verdict = verdict.targets.get(master);
            shards.push(super::trigger::RedisGroup {
                self_fencing: self.redis_self_fencing(view, group, master, &master_region, false),
                if_partitioned: self.redis_self_fencing(view, group, master, &master_region, true),
                group: group.to_owned(),
                master: master.clone(),
                master_down: master_verdict.is_some_and(|v| v.state == State::Down),
                home_says_down: master_verdict.is_some_and(|v| {
                    v.down
                        .iter()
                        .any(|agent| self.agent_in(agent, &master_region))
                }),
                candidate: replicas
                    .iter()
                    .find(|r| r.1 != master_region)
                    .map(|r| (r.0.clone(), r.2)),
                followers: members
                    .iter()
                    .filter(|m| m.1 != master_region)
                    .map(|m| m.0.clone())
                    .collect(),
                local_candidate: replicas.first().map(|r| (r.0.clone(), r.2)),
                local_followers: members.iter().map(|m| m.0.clone()).collect(),
                home: self
                    .redis_homes
                    .iter()
                    .find(|h| self.group_of(h) == Some(group))
                    .cloned(),
                master_region,
                replicas,
                ..super::trigger::RedisGroup::default()
            });
        }
        shards
    }

    /// The masters of each Redis Cluster from the freshest view a healthy node reported, and
    /// the slot owners of each cluster whose view says `cluster_state:ok`.
    fn cluster_masters(
        &self,
        view: &LeaderView,
    ) -> (
        Vec<super::trigger::RedisGroup>,
        BTreeMap<String, BTreeMap<String, TargetId>>,
    ) {
        use super::cluster::{self, ClusterView, NodeHealth};
        let mut groups = Vec::new();
        let mut owners = BTreeMap::new();
        if self.clusters.is_empty() {
            return (groups, owners);
        }
        let (verdict, offsets, cut_off) = (&view.verdict, &view.offsets, &view.cut_off);
        for (name, (nodes, grace_ms)) in &self.clusters {
            let health: BTreeMap<TargetId, NodeHealth> = nodes
                .iter()
                .map(|n| {
                    let v = verdict.targets.get(&n.target);
                    let health = NodeHealth {
                        down: v.is_some_and(|v| v.state == State::Down),
                        home_says_down: v.is_some_and(|v| {
                            v.down.iter().any(|agent| self.agent_in(agent, &n.region))
                        }),
                        healthy: v.is_some_and(|v| !v.up.is_empty() && v.down.is_empty()),
                        offset: offsets.get(&n.target).map(|o| o.offset),
                    };
                    (n.target.clone(), health)
                })
                .collect();
            // The view of a healthy node that knows the latest cluster epoch.
            let Some(cluster_view) = nodes
                .iter()
                .filter(|n| health.get(&n.target).is_some_and(|h| h.healthy))
                .filter_map(|n| view.clusters.get(&n.target))
                .max_by_key(|v| (v.current_epoch, v.state == "ok"))
            else {
                continue;
            };
            let masters = cluster::masters(&ClusterView {
                name,
                view: cluster_view,
                nodes,
                ids: &view.cluster_ids,
                health: &health,
                cut_off,
                grace_ms: *grace_ms,
            });
            if !masters.unknown.is_empty() {
                tracing::debug!(cluster = %name, unknown = ?masters.unknown, "cluster nodes that match no configured member");
            }
            if cluster_view.state == "ok" {
                owners.insert(format!("redis/{name}"), masters.owners);
            }
            groups.extend(masters.groups);
        }
        (groups, owners)
    }
}

/// A member's name: the last part of its id.
fn member_name(target: &TargetId) -> &str {
    target.as_str().rsplit('/').next().unwrap_or_default()
}

/// The nodes of each configured Redis Cluster, with twice its node timeout in milliseconds.
fn cluster_nodes(
    config: &Config,
    topology: &Topology,
) -> BTreeMap<String, (Vec<super::cluster::Node>, u64)> {
    let mut out: BTreeMap<String, (Vec<super::cluster::Node>, u64)> = BTreeMap::new();
    for shard in config
        .redis
        .shards
        .iter()
        .filter(|s| s.mode == crate::config::RedisMode::Cluster)
    {
        let grace = u64::try_from(shard.cluster_node_timeout().as_millis() * 2).unwrap_or(u64::MAX);
        let nodes = topology
            .targets
            .iter()
            .filter_map(|t| match &t.spec {
                crate::topology::TargetSpec::Redis {
                    shard: s, member, ..
                } if *s == shard.name => {
                    let url = url::Url::parse(&member.url).ok()?;
                    Some(super::cluster::Node {
                        target: t.id.clone(),
                        region: t.region.clone(),
                        host: url.host_str()?.to_owned(),
                        port: url.port().unwrap_or(6379),
                    })
                }
                _ => None,
            })
            .collect();
        out.insert(shard.name.clone(), (nodes, grace));
    }
    out
}

/// Whether a Redis replica may still count for its master's `min-replicas-to-write`, from its
/// own agent's report: a master counts a replica until `lag_s` seconds (its
/// `min-replicas-max-lag`) after the replica's last acknowledgement, so a link the replica
/// reports down counts as attached until it has been down longer than that. A member that
/// answers as master acknowledges nothing.
pub(super) fn redis_attached(offset: &RedisOffset, lag_s: u32) -> Option<bool> {
    if offset.master {
        return Some(false);
    }
    match offset.link_up? {
        true => Some(true),
        false if lag_s == 0 => Some(false),
        false => Some(
            offset
                .link_down_s
                .is_none_or(|down| down <= u64::from(lag_s)),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn replica(link_up: Option<bool>, link_down_s: Option<u64>) -> RedisOffset {
        RedisOffset {
            master: false,
            offset: 1,
            acks: None,
            link_up,
            link_down_s,
        }
    }

    /// A Redis master keeps counting a replica for `min-replicas-max-lag` after it last heard
    /// from it: a link reported down counts as gone only once it has been down longer.
    #[test]
    fn a_redis_replica_counts_until_its_link_has_been_down_longer_than_the_lag() {
        assert_eq!(redis_attached(&replica(Some(true), None), 2), Some(true));
        assert_eq!(
            redis_attached(&replica(Some(false), Some(2)), 2),
            Some(true)
        );
        assert_eq!(
            redis_attached(&replica(Some(false), Some(3)), 2),
            Some(false)
        );
        assert_eq!(redis_attached(&replica(Some(false), None), 2), Some(true));
        assert_eq!(redis_attached(&replica(Some(false), None), 0), Some(false));
        assert_eq!(redis_attached(&replica(None, None), 2), None);
        let master = RedisOffset {
            master: true,
            ..replica(None, None)
        };
        assert_eq!(redis_attached(&master, 2), Some(false));
    }
}
