//! Redis Cluster: which masters are lost, which replica takes each one over, and who moved a
//! slot range.
//!
//! A Redis Cluster elects a new master for a failed one by itself, after
//! `cluster-node-timeout`, as long as a majority of its masters can vote. failoverd works with
//! that rather than against it: a master the cluster already flagged `fail` while a majority
//! of the masters can vote is left to the cluster's election (for twice the node timeout);
//! failoverd takes the slots over itself when the masters that survive are not a majority, or
//! when its verdict is certain before the cluster has flagged the master. Every change of a
//! slot range's master is recorded with who made it.
//!
//! Everything here is pure: the leader feeds it the freshest view a healthy node reported.

use std::collections::{BTreeMap, BTreeSet};

use super::fence_rule::SelfFencing;
use super::trigger::RedisGroup;
use crate::desired::{Action, Desired, HistoryEntry, MovedBy, SlotMove, StepState};
use crate::probe::redis::{ClusterFacts, ClusterNode};
use crate::topology::TargetId;

/// A configured node of a Redis Cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// Its target.
    pub target: TargetId,
    /// Its region.
    pub region: String,
    /// The host of its configured URL.
    pub host: String,
    /// The port of its configured URL.
    pub port: u16,
}

/// What the verdict and the reports say of one node.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NodeHealth {
    /// Down by verdict.
    pub down: bool,
    /// An agent of its own region, holding its lease, says it is Down.
    pub home_says_down: bool,
    /// Up for every agent that probes it.
    pub healthy: bool,
    /// Its replication offset, if reported.
    pub offset: Option<u64>,
}

/// One cluster as the leader sees it.
#[derive(Debug, Clone)]
pub struct ClusterView<'a> {
    /// The shard name of the cluster in the config.
    pub name: &'a str,
    /// The freshest view a healthy node reported.
    pub view: &'a ClusterFacts,
    /// The configured nodes.
    pub nodes: &'a [Node],
    /// Node ids the nodes reported as their own (`myself`).
    pub ids: &'a BTreeMap<String, TargetId>,
    /// Per node, from the verdict and the reports.
    pub health: &'a BTreeMap<TargetId, NodeHealth>,
    /// Regions whose agents have all been silent for `lease_ttl`.
    pub cut_off: &'a BTreeSet<String>,
    /// Twice `cluster-node-timeout`, in milliseconds.
    pub grace_ms: u64,
}

/// The masters of a cluster, for the trigger, and who serves which slots.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Masters {
    /// One group per master serving slots.
    pub groups: Vec<RedisGroup>,
    /// The master of each slot-range list (ranges joined by `,`).
    pub owners: BTreeMap<String, TargetId>,
    /// Nodes of the view that match no configured member.
    pub unknown: Vec<String>,
}

/// The slot ranges a node serves, without the migrating and importing markers.
pub fn served(node: &ClusterNode) -> Vec<String> {
    node.slots
        .iter()
        .filter(|s| !s.starts_with('['))
        .cloned()
        .collect()
}

/// The configured node behind a `CLUSTER NODES` entry: by the id a node reported as its own,
/// else by the address it announces.
fn resolve<'a>(view: &ClusterView<'a>, node: &ClusterNode) -> Option<&'a Node> {
    if let Some(target) = view.ids.get(&node.id) {
        return view.nodes.iter().find(|n| &n.target == target);
    }
    let (host, port) = node.addr.rsplit_once(':')?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let port: u16 = port.parse().ok()?;
    view.nodes
        .iter()
        .find(|n| n.port == port && n.host.eq_ignore_ascii_case(host))
}

/// The masters of `view` with their candidates, and the owners of the slots.
pub fn masters(view: &ClusterView<'_>) -> Masters {
    let mut out = Masters::default();
    let serving: Vec<&ClusterNode> = view
        .view
        .nodes
        .iter()
        .filter(|n| n.flags.iter().any(|f| f == "master") && !served(n).is_empty())
        .collect();
    let health = |t: &TargetId| view.health.get(t).copied().unwrap_or_default();
    let flagged_fail = |n: &ClusterNode| n.flags.iter().any(|f| f == "fail");
    let lost = |n: &ClusterNode| {
        flagged_fail(n)
            || resolve(view, n)
                .is_some_and(|c| health(&c.target).down || view.cut_off.contains(&c.region))
    };
    let alive = serving.iter().filter(|n| !lost(n)).count();
    // The cluster elects a replacement only while a majority of its masters can vote.
    let majority = alive * 2 > serving.len();
    for node in view.view.nodes.iter() {
        if resolve(view, node).is_none() {
            out.unknown.push(node.addr.clone());
        }
    }
    for master in serving.iter().copied() {
        let Some(config) = resolve(view, master) else {
            continue;
        };
        let slots = served(master);
        out.owners.insert(slots.join(","), config.target.clone());
        // Its healthy replicas with their offsets, furthest first, then by id.
        let mut replicas: Vec<(&Node, u64)> = view
            .view
            .nodes
            .iter()
            .filter(|n| n.master_id.as_deref() == Some(master.id.as_str()) && !flagged_fail(n))
            .filter_map(|n| resolve(view, n))
            .filter_map(|n| {
                let h = health(&n.target);
                (h.healthy && !h.down).then_some((n, h.offset?))
            })
            .collect();
        replicas.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.target.cmp(&b.0.target)));
        let h = health(&config.target);
        // A master that cannot reach a majority of the cluster's masters stops taking writes
        // after cluster-node-timeout: so does one in a region holding a minority of them.
        let elsewhere = serving
            .iter()
            .filter(|n| resolve(view, n).is_some_and(|c| c.region != config.region))
            .count();
        let self_fencing = if elsewhere * 2 > serving.len() {
            SelfFencing::Holds(format!(
                "{} is a Redis Cluster master and {elsewhere} of the {} masters are outside \
                 region {}: cut off from them it stops taking writes after \
                 cluster-node-timeout",
                config.target,
                serving.len(),
                config.region
            ))
        } else {
            SelfFencing::Missing(format!(
                "region {} holds at least half of the Redis Cluster's masters: cut off, {} may \
                 keep taking writes",
                config.region, config.target
            ))
        };
        out.groups.push(RedisGroup {
            if_partitioned: self_fencing.clone(),
            self_fencing,
            group: format!("redis/{}[{}]", view.name, slots.join(",")),
            master: config.target.clone(),
            master_region: config.region.clone(),
            master_down: h.down,
            home_says_down: h.home_says_down,
            candidate: replicas
                .iter()
                .find(|(n, _)| n.region != config.region)
                .map(|(n, o)| (n.target.clone(), *o)),
            followers: Vec::new(),
            local_candidate: replicas.first().map(|(n, o)| (n.target.clone(), *o)),
            local_followers: Vec::new(),
            replicas: Vec::new(),
            home: None,
            cluster_electing: flagged_fail(master) && majority,
            cluster_grace_ms: view.grace_ms,
            slots,
            lost_since_ms: None,
        });
    }
    out
}

/// The log command that records `owners` for `cluster` (`redis/<name>`) when they differ from
/// what the log holds, with a move per slot-range list whose master changed: by failoverd
/// when a takeover step of one of its failovers moved exactly those slots to that master,
/// else by the cluster.
pub fn slot_moves(
    desired: &Desired,
    cluster: &str,
    owners: &BTreeMap<String, TargetId>,
    at_ms: u64,
) -> Option<crate::desired::FailoverCommand> {
    let before = desired.slot_owners.get(cluster);
    if before == Some(owners) || owners.is_empty() {
        return None;
    }
    let mut moved = Vec::new();
    for (slots, to) in owners {
        let Some(from) = before.and_then(|b| b.get(slots)).filter(|f| *f != to) else {
            continue;
        };
        let epoch = desired.history.iter().rev().find_map(|e| match e {
            // The failover whose takeover of exactly these slots to `to` succeeded.
            HistoryEntry::Failover(f) => f
                .steps
                .iter()
                .any(|s| {
                    s.state == StepState::Succeeded
                        && matches!(&s.step.action, Action::TakeoverRedisCluster { target, slots: moved, .. }
                            if target == to && moved.join(",") == *slots)
                })
                .then_some(f.epoch),
            _ => None,
        });
        moved.push(SlotMove {
            cluster: cluster.to_owned(),
            slots: slots.split(',').map(str::to_owned).collect(),
            from: from.clone(),
            to: to.clone(),
            by: if epoch.is_some() {
                MovedBy::Failoverd
            } else {
                MovedBy::RedisCluster
            },
            epoch,
            at_ms,
        });
    }
    Some(crate::desired::FailoverCommand::SlotOwners {
        cluster: cluster.to_owned(),
        owners: owners.clone(),
        moved,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::TargetKind;

    fn id(n: &str) -> TargetId {
        TargetId::new(TargetKind::Redis, "cache", n)
    }

    fn node(name: &str, region: &str, port: u16) -> Node {
        Node {
            target: id(name),
            region: region.into(),
            host: "127.0.0.1".into(),
            port,
        }
    }

    fn line(id: &str, port: u16, flags: &str, master: Option<&str>, slots: &[&str]) -> ClusterNode {
        ClusterNode {
            id: id.into(),
            addr: format!("127.0.0.1:{port}"),
            flags: flags.split(',').map(str::to_owned).collect(),
            master_id: master.map(str::to_owned),
            link_state: "connected".into(),
            slots: slots.iter().map(|s| (*s).to_owned()).collect(),
        }
    }

    /// Three masters, two of them in r1, each with a replica in another region.
    fn topology() -> (Vec<Node>, ClusterFacts) {
        let nodes = vec![
            node("a", "r1", 7000),
            node("b", "r1", 7001),
            node("c", "r2", 7002),
            node("a2", "r2", 7003),
            node("b2", "r3", 7004),
            node("c2", "r1", 7005),
        ];
        let view = ClusterFacts {
            state: "fail".into(),
            slots_ok: 0,
            slots_fail: 0,
            slots_pfail: 0,
            known_nodes: 6,
            size: 3,
            current_epoch: 6,
            nodes: vec![
                line("A", 7000, "master,fail?", None, &["0-5460"]),
                line("B", 7001, "master,fail?", None, &["5461-10922"]),
                line("C", 7002, "myself,master", None, &["10923-16383"]),
                line("A2", 7003, "slave", Some("A"), &[]),
                line("B2", 7004, "slave", Some("B"), &[]),
                line("C2", 7005, "slave,fail?", Some("C"), &[]),
            ],
        };
        (nodes, view)
    }

    /// [`masters`] of the cluster `cache` with a 30 s grace.
    fn run(
        view: &ClusterFacts,
        nodes: &[Node],
        ids: &BTreeMap<String, TargetId>,
        health: &BTreeMap<TargetId, NodeHealth>,
        cut_off: &BTreeSet<String>,
    ) -> Masters {
        masters(&ClusterView {
            name: "cache",
            view,
            nodes,
            ids,
            health,
            cut_off,
            grace_ms: 30_000,
        })
    }

    fn healthy(offset: u64) -> NodeHealth {
        NodeHealth {
            healthy: true,
            offset: Some(offset),
            ..NodeHealth::default()
        }
    }

    #[test]
    fn masters_of_a_cut_off_region_get_candidates_elsewhere_and_no_election_is_assumed() {
        let (nodes, view) = topology();
        let health: BTreeMap<TargetId, NodeHealth> = [
            (id("c"), healthy(900)),
            (id("a2"), healthy(500)),
            (id("b2"), healthy(400)),
        ]
        .into();
        let cut_off: BTreeSet<String> = ["r1".to_string()].into();
        let ids = BTreeMap::new();
        let m = run(&view, &nodes, &ids, &health, &cut_off);
        assert_eq!(m.groups.len(), 3);
        let a = &m.groups[0];
        assert_eq!(a.group, "redis/cache[0-5460]");
        assert_eq!(a.master, id("a"));
        assert_eq!(a.candidate, Some((id("a2"), 500)));
        assert!(!a.cluster_electing, "one master of three cannot elect");
        assert_eq!(m.groups[1].candidate, Some((id("b2"), 400)));
        assert_eq!(m.owners["10923-16383"], id("c"));
        assert!(m.unknown.is_empty());
    }

    #[test]
    fn a_master_the_cluster_failed_with_a_majority_alive_is_left_to_its_election() {
        let (nodes, mut view) = topology();
        view.nodes[0].flags = vec!["master".into(), "fail".into()];
        view.nodes[1].flags = vec!["master".into()];
        let health: BTreeMap<TargetId, NodeHealth> = [
            (id("a2"), healthy(500)),
            (id("b"), healthy(1)),
            (id("c"), healthy(1)),
        ]
        .into();
        let ids = BTreeMap::new();
        let cut_off = BTreeSet::new();
        let m = run(&view, &nodes, &ids, &health, &cut_off);
        assert!(m.groups[0].cluster_electing);
        assert!(!m.groups[1].cluster_electing);
    }

    #[test]
    fn nodes_are_matched_by_their_reported_id_before_their_address() {
        let (nodes, mut view) = topology();
        // The cluster announces another address than the configured URL.
        view.nodes[3].addr = "10.0.0.9:6379".into();
        let ids: BTreeMap<String, TargetId> = [("A2".to_string(), id("a2"))].into();
        let health: BTreeMap<TargetId, NodeHealth> = [(id("a2"), healthy(5))].into();
        let cut_off: BTreeSet<String> = ["r1".to_string()].into();
        let m = run(&view, &nodes, &ids, &health, &cut_off);
        assert_eq!(m.groups[0].candidate, Some((id("a2"), 5)));
        let ids = BTreeMap::new();
        let m = run(&view, &nodes, &ids, &health, &cut_off);
        assert_eq!(m.groups[0].candidate, None);
        assert_eq!(m.unknown, ["10.0.0.9:6379"]);
    }

    #[test]
    fn slot_moves_say_who_moved_each_range() {
        use crate::desired::{Decision, FailoverCommand, RedisPromotion, Trigger};
        let mut desired = Desired::default();
        let first: BTreeMap<String, TargetId> = [
            ("0-5460".to_string(), id("a")),
            ("5461-10922".to_string(), id("b")),
        ]
        .into();
        let cmd = slot_moves(&desired, "redis/cache", &first, 1).expect("first record");
        assert!(matches!(&cmd, FailoverCommand::SlotOwners { moved, .. } if moved.is_empty()));
        desired.apply(cmd, 1);
        assert_eq!(slot_moves(&desired, "redis/cache", &first, 2), None);
        // failoverd takes 0-5460 over to a2; the cluster moves 5461-10922 to b2 itself.
        let decision = Decision {
            trigger: Trigger::DnsRepair,
            decided_by: "x".into(),
            decided_at_ms: 3,
            first_seen_ms: 3,
            drain: vec![],
            restore: vec![],
            promotion: None,
            redis: vec![RedisPromotion {
                group: "redis/cache[0-5460]".into(),
                from: id("a"),
                to: id("a2"),
                offset: 0,
                followers: vec![],
                old_master_cut_off: true,
                self_fencing: None,
                exposed: None,
                forced: false,
                slots: vec!["0-5460".into()],
                planned: false,
            }],
            refusal: None,
            drill: None,
            homeward: Default::default(),
            steps: vec![crate::desired::Step {
                id: "redis-takeover:redis/cache/a2".into(),
                action: Action::TakeoverRedisCluster {
                    target: id("a2"),
                    master: id("a"),
                    slots: vec!["0-5460".into()],
                    planned: false,
                },
                after: vec![],
            }],
        };
        let named = desired.apply(FailoverCommand::Decide(Box::new(decision)), 5);
        assert!(
            named.is_empty(),
            "a cluster names its masters itself: {named:?}"
        );
        desired.apply(
            FailoverCommand::StepFinished {
                epoch: 5,
                step: "redis-takeover:redis/cache/a2".into(),
                ok: true,
                detail: String::new(),
                at_ms: 4,
                give_up: false,
                replaced_min_replicas: None,
                fence: None,
            },
            6,
        );
        let now: BTreeMap<String, TargetId> = [
            ("0-5460".to_string(), id("a2")),
            ("5461-10922".to_string(), id("b2")),
        ]
        .into();
        let cmd = slot_moves(&desired, "redis/cache", &now, 9).expect("moves");
        desired.apply(cmd, 7);
        let moves: Vec<&SlotMove> = desired
            .history
            .iter()
            .filter_map(|e| match e {
                HistoryEntry::SlotsMoved(m) => Some(m),
                _ => None,
            })
            .collect();
        assert_eq!(moves.len(), 2);
        assert_eq!((moves[0].by, moves[0].epoch), (MovedBy::Failoverd, Some(5)));
        assert_eq!(moves[0].from, id("a"));
        assert_eq!((moves[1].by, moves[1].epoch), (MovedBy::RedisCluster, None));
        assert_eq!(desired.slot_owners["redis/cache"], now);
    }
}
