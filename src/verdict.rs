//! The quorum verdict: what the cluster believes about each target and region.
//!
//! A pure function of the latest report of each agent; no I/O, no clock (the caller passes
//! each report's age, measured on its own monotonic clock). The rules:
//!
//! - a report older than `stale_after` counts as Unknown for every target, never as Up;
//! - a target is Down when at least `quorum` agents report it Down, Up when at least `quorum`
//!   report it Up, and Unknown otherwise; Unknown votes count for neither side;
//! - a region is Down when every API target of the region is Down by verdict, Up when every
//!   one is Up, and Unknown otherwise (a region without API targets is Unknown);
//! - `quorum` is at least a majority of the configured agents, so one agent alone
//!   (partitioned, or with a bad route) can never produce a Down verdict while two or more
//!   agents are configured.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

use crate::health::State;
use crate::topology::TargetId;

/// An agent's identity as configured.
pub type AgentId = String;

/// The latest report of one agent, as the leader holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct ReportView {
    /// Time since the leader received it (leader's monotonic clock).
    pub age: Duration,
    /// The agent's state per target; targets it does not probe are absent (Unknown).
    pub votes: BTreeMap<TargetId, State>,
}

/// The votes behind one target's verdict.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct TargetVerdict {
    /// The verdict.
    pub state: State,
    /// Agents that report it Up.
    pub up: Vec<AgentId>,
    /// Agents that report it Down.
    pub down: Vec<AgentId>,
    /// Agents whose vote is missing, stale or Unknown.
    pub unknown: Vec<AgentId>,
}

/// The verdict over every target and region.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct Verdict {
    /// Votes needed for Up or Down.
    pub quorum: usize,
    /// Per target.
    pub targets: BTreeMap<TargetId, TargetVerdict>,
    /// Per region, from its API targets.
    pub regions: BTreeMap<String, State>,
}

/// The default quorum: a strict majority of the configured agents.
pub fn majority(agents: usize) -> usize {
    agents / 2 + 1
}

/// Decides every target and region.
///
/// `agents` are all configured agents (silent ones count as Unknown); `targets` lists every
/// target with its region and whether it is an API target; `reports` holds the latest report
/// per agent. A `quorum` below a majority is raised to the majority: config validation rejects
/// it, and this function must stay safe on its own.
pub fn decide(
    agents: &[AgentId],
    targets: &[(TargetId, String, bool)],
    reports: &BTreeMap<AgentId, ReportView>,
    quorum: usize,
    stale_after: Duration,
) -> Verdict {
    let quorum = quorum.max(majority(agents.len()));
    let mut verdicts = BTreeMap::new();
    for (id, _, _) in targets {
        let mut v = TargetVerdict {
            state: State::Unknown,
            up: Vec::new(),
            down: Vec::new(),
            unknown: Vec::new(),
        };
        for agent in agents {
            let vote = reports
                .get(agent)
                .filter(|r| r.age <= stale_after)
                .and_then(|r| r.votes.get(id).copied())
                .unwrap_or(State::Unknown);
            match vote {
                State::Up => v.up.push(agent.clone()),
                State::Down => v.down.push(agent.clone()),
                State::Unknown => v.unknown.push(agent.clone()),
            }
        }
        v.state = if v.down.len() >= quorum {
            State::Down
        } else if v.up.len() >= quorum {
            State::Up
        } else {
            State::Unknown
        };
        verdicts.insert(id.clone(), v);
    }
    let mut regions: BTreeMap<String, Vec<State>> = BTreeMap::new();
    for (id, region, is_api) in targets {
        let entry = regions.entry(region.clone()).or_default();
        if *is_api {
            entry.push(verdicts[id].state);
        }
    }
    let regions = regions
        .into_iter()
        .map(|(region, states)| {
            let state = if states.is_empty() {
                State::Unknown
            } else if states.iter().all(|s| *s == State::Down) {
                State::Down
            } else if states.iter().all(|s| *s == State::Up) {
                State::Up
            } else {
                State::Unknown
            };
            (region, state)
        })
        .collect();
    Verdict {
        quorum,
        targets: verdicts,
        regions,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::TargetKind;
    use proptest::prelude::*;

    const STALE: Duration = Duration::from_secs(5);

    fn agents() -> Vec<AgentId> {
        vec!["a".into(), "b".into(), "c".into()]
    }

    fn api(region: &str) -> TargetId {
        TargetId::new(TargetKind::Http, region, "api")
    }

    fn targets() -> Vec<(TargetId, String, bool)> {
        vec![
            (api("r1"), "r1".into(), true),
            (api("r2"), "r2".into(), true),
            (
                TargetId::new(TargetKind::Postgres, "main", "pg-r1"),
                "r1".into(),
                false,
            ),
        ]
    }

    fn report(age_secs: u64, votes: &[(&TargetId, State)]) -> ReportView {
        ReportView {
            age: Duration::from_secs(age_secs),
            votes: votes.iter().map(|(t, s)| ((*t).clone(), *s)).collect(),
        }
    }

    fn reports(list: &[(&str, ReportView)]) -> BTreeMap<AgentId, ReportView> {
        list.iter()
            .map(|(a, r)| ((*a).to_owned(), r.clone()))
            .collect()
    }

    use State::{Down, Unknown, Up};

    #[test]
    fn a_table_of_cases() {
        let r1 = api("r1");
        // (case, reports of a, b, c for r1's API (None = no report, Some((age, state))), verdict)
        type Vote = Option<(u64, State)>;
        let cases: &[(&str, [Vote; 3], State)] = &[
            ("all up", [Some((0, Up)), Some((0, Up)), Some((0, Up))], Up),
            (
                "all down",
                [Some((0, Down)), Some((0, Down)), Some((0, Down))],
                Down,
            ),
            (
                "two of three down",
                [Some((0, Down)), Some((0, Down)), Some((0, Up))],
                Down,
            ),
            (
                "one down alone",
                [Some((0, Down)), Some((0, Up)), Some((0, Up))],
                Up,
            ),
            (
                "one down, two silent",
                [Some((0, Down)), None, None],
                Unknown,
            ),
            (
                "one down, two unknown",
                [Some((0, Down)), Some((0, Unknown)), Some((0, Unknown))],
                Unknown,
            ),
            (
                "two down but one stale",
                [Some((0, Down)), Some((6, Down)), Some((0, Up))],
                Unknown,
            ),
            (
                "stale up is not up",
                [Some((9, Up)), Some((9, Up)), Some((0, Up))],
                Unknown,
            ),
            (
                "split one up one down one silent",
                [Some((0, Up)), Some((0, Down)), None],
                Unknown,
            ),
            (
                "at the stale bound still counts",
                [Some((5, Down)), Some((5, Down)), None],
                Down,
            ),
        ];
        for (name, votes, expected) in cases {
            let mut list = Vec::new();
            for (agent, vote) in ["a", "b", "c"].iter().zip(votes) {
                if let Some((age, state)) = vote {
                    list.push((*agent, report(*age, &[(&r1, *state)])));
                }
            }
            let v = decide(&agents(), &targets(), &reports(&list), 2, STALE);
            assert_eq!(v.targets[&r1].state, *expected, "{name}");
            assert_eq!(
                v.regions["r1"], *expected,
                "{name}: the region follows its only API"
            );
        }
    }

    #[test]
    fn the_votes_behind_a_verdict_are_named() {
        let r1 = api("r1");
        let list = reports(&[
            ("a", report(0, &[(&r1, Down)])),
            ("b", report(0, &[(&r1, Down)])),
            ("c", report(7, &[(&r1, Up)])),
        ]);
        let v = decide(&agents(), &targets(), &list, 2, STALE);
        let t = &v.targets[&r1];
        assert_eq!(t.down, vec!["a", "b"]);
        assert!(t.up.is_empty());
        assert_eq!(t.unknown, vec!["c"], "a stale report is Unknown, never Up");
    }

    #[test]
    fn a_region_needs_every_api_target_down() {
        let a1 = TargetId::new(TargetKind::Http, "r1", "orders");
        let a2 = TargetId::new(TargetKind::Http, "r1", "payments");
        let t = vec![
            (a1.clone(), "r1".into(), true),
            (a2.clone(), "r1".into(), true),
        ];
        let all = |s1, s2| {
            reports(&[
                ("a", report(0, &[(&a1, s1), (&a2, s2)])),
                ("b", report(0, &[(&a1, s1), (&a2, s2)])),
                ("c", report(0, &[(&a1, s1), (&a2, s2)])),
            ])
        };
        assert_eq!(
            decide(&agents(), &t, &all(Down, Up), 2, STALE).regions["r1"],
            Unknown
        );
        assert_eq!(
            decide(&agents(), &t, &all(Down, Down), 2, STALE).regions["r1"],
            Down
        );
        assert_eq!(
            decide(&agents(), &t, &all(Up, Up), 2, STALE).regions["r1"],
            Up
        );
    }

    #[test]
    fn datastores_do_not_decide_a_region() {
        let pg = TargetId::new(TargetKind::Postgres, "main", "pg-r1");
        let list = reports(&[
            ("a", report(0, &[(&pg, Down), (&api("r1"), Up)])),
            ("b", report(0, &[(&pg, Down), (&api("r1"), Up)])),
        ]);
        let v = decide(&agents(), &targets(), &list, 2, STALE);
        assert_eq!(v.targets[&pg].state, Down);
        assert_eq!(v.regions["r1"], Up);
        assert_eq!(v.regions["r2"], Unknown, "nobody reported r2");
    }

    #[test]
    fn a_quorum_below_a_majority_is_raised() {
        let r1 = api("r1");
        let list = reports(&[("a", report(0, &[(&r1, Down)]))]);
        let v = decide(&agents(), &targets(), &list, 1, STALE);
        assert_eq!(v.quorum, 2);
        assert_eq!(
            v.targets[&r1].state, Unknown,
            "one agent alone never decides Down"
        );
        let single = decide(&["a".into()], &targets(), &list, 1, STALE);
        assert_eq!(
            single.targets[&r1].state, Down,
            "a one-agent cluster is its own majority"
        );
    }

    fn state() -> impl Strategy<Value = Option<(u64, State)>> {
        prop_oneof![
            Just(None),
            (0u64..10, prop_oneof![Just(Up), Just(Down), Just(Unknown)]).prop_map(Some),
        ]
    }

    proptest! {
        /// When every agent but one reports the same fresh state, that state is the verdict,
        /// whatever the last one says or if it is silent: a single dissenting or silent agent
        /// never flips the verdict.
        #[test]
        fn one_dissenting_or_silent_agent_never_flips_the_verdict(
            n in 3usize..8,
            agreed in prop_oneof![Just(Up), Just(Down)],
            ages in proptest::collection::vec(0u64..=5, 8),
            dissenter in 0usize..8,
            dissent in state(),
        ) {
            let agents: Vec<AgentId> = (0..n).map(|i| format!("a{i}")).collect();
            let r1 = api("r1");
            let mut list: BTreeMap<AgentId, ReportView> = agents.iter().zip(&ages)
                .map(|(a, age)| (a.clone(), report(*age, &[(&r1, agreed)])))
                .collect();
            let odd_one = &agents[dissenter % n];
            match dissent {
                None => { list.remove(odd_one); }
                Some((age, s)) => { list.insert(odd_one.clone(), report(age, &[(&r1, s)])); }
            }
            let v = decide(&agents, &targets(), &list, majority(n), STALE);
            prop_assert_eq!(v.targets[&r1].state, agreed);
        }

        /// With two or more agents, a Down verdict needs Down votes from at least two agents:
        /// one agent alone never produces it, whatever the others report.
        #[test]
        fn one_agent_alone_never_produces_down(
            n in 2usize..8,
            others in proptest::collection::vec(
                prop_oneof![Just(None), Just(Some(Up)), Just(Some(Unknown))], 8),
            accuser in 0usize..8,
        ) {
            let agents: Vec<AgentId> = (0..n).map(|i| format!("a{i}")).collect();
            let r1 = api("r1");
            let mut list: BTreeMap<AgentId, ReportView> = agents.iter().zip(&others)
                .filter_map(|(a, s)| s.map(|s| (a.clone(), report(0, &[(&r1, s)]))))
                .collect();
            list.insert(agents[accuser % n].clone(), report(0, &[(&r1, Down)]));
            // Even a misconfigured quorum of 1 is raised to the majority.
            let v = decide(&agents, &targets(), &list, 1, STALE);
            prop_assert_ne!(v.targets[&r1].state, Down);
        }

        /// Unknown and stale votes are counted on neither side: the verdict equals the one
        /// computed from the fresh Up/Down votes alone.
        #[test]
        fn unknown_counts_for_neither_side(
            n in 1usize..8,
            votes in proptest::collection::vec(state(), 8),
        ) {
            let agents: Vec<AgentId> = (0..n).map(|i| format!("a{i}")).collect();
            let r1 = api("r1");
            let all: BTreeMap<AgentId, ReportView> = agents.iter().zip(&votes[..n])
                .filter_map(|(a, v)| v.map(|(age, s)| (a.clone(), report(age, &[(&r1, s)]))))
                .collect();
            let v = decide(&agents, &targets(), &all, majority(n), STALE);
            let fresh = |s: State| all.values()
                .filter(|r| r.age <= STALE && r.votes.get(&r1) == Some(&s)).count();
            let q = majority(n);
            let expected = if fresh(Down) >= q { Down } else if fresh(Up) >= q { Up } else { Unknown };
            prop_assert_eq!(v.targets[&r1].state, expected);
            prop_assert_eq!(v.targets[&r1].up.len() + v.targets[&r1].down.len()
                + v.targets[&r1].unknown.len(), n);
        }
    }
}
