//! Contact between agents and leaders, remembered so that a new leader can tell when a silent
//! agent last renewed its lease — instead of counting a whole lease period from its own
//! election.
//!
//! An agent renews its lease in one of two ways (see [`super::Consensus::lease_valid`]):
//!
//! - as a **follower**, when it accepts an AppendEntries from a leader. That leader then
//!   receives the acceptance: the leader's *acknowledged-by* time for the follower is at or
//!   after the renewal.
//! - as a **leader**, when a quorum acknowledges a heartbeat; openraft counts from the moment
//!   the heartbeat was *sent*, which is before any follower *accepted* it.
//!
//! So every renewal of agent X leaves a mark at or after it with some other agent: its
//! `accepted_from[X]` (X led) or its `acked_by[X]` (X followed it). If every agent but X
//! tells the leader its marks, the latest of them bounds X's last renewal, and X has fenced
//! itself once a lease period has passed since then. An agent forgets its marks when it
//! restarts, so it also says when it started: a missing mark is bounded by that.
//!
//! The one case this cannot see, like the reports it rides on: a follower that accepted a
//! leader's message whose acknowledgement was lost on the way back (a one-way loss). The
//! leader's fence margin (one report interval, the fence check and the fence itself) covers
//! the time between an acceptance and its acknowledgement arriving, not a lost one.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::types::NodeId;
use crate::verdict::AgentId;

/// What one agent sends the leader about its contacts, as ages in milliseconds when it sent
/// them (so no wall clock is involved).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContactReport {
    /// Since this agent's process started: it remembers nothing older.
    pub started_ms_ago: u64,
    /// Since it last accepted an AppendEntries from each agent (that agent led).
    #[serde(default)]
    pub accepted_from_ms_ago: BTreeMap<AgentId, u64>,
    /// Since each agent last acknowledged one of its AppendEntries (it led them).
    #[serde(default)]
    pub acked_by_ms_ago: BTreeMap<AgentId, u64>,
}

/// One agent's contacts as instants on the leader's clock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Contact {
    /// When the agent started.
    pub started: Instant,
    /// When it last accepted an AppendEntries from each agent.
    pub accepted_from: BTreeMap<AgentId, Instant>,
    /// When each agent last acknowledged one of its AppendEntries.
    pub acked_by: BTreeMap<AgentId, Instant>,
}

impl ContactReport {
    /// The instants this report stands for, given that it arrived at `received`. Subtracting
    /// the ages from the arrival rather than the sending time puts every mark later than it
    /// was by the transit time: the safe side.
    pub fn at(&self, received: Instant) -> Contact {
        let back = |ms: u64| {
            received
                .checked_sub(Duration::from_millis(ms))
                .unwrap_or(received)
        };
        let each = |ages: &BTreeMap<AgentId, u64>| {
            ages.iter()
                .map(|(agent, ms)| (agent.clone(), back(*ms)))
                .collect()
        };
        Contact {
            started: back(self.started_ms_ago),
            accepted_from: each(&self.accepted_from_ms_ago),
            acked_by: each(&self.acked_by_ms_ago),
        }
    }
}

/// The latest moment `agent` can have renewed its lease, from the contacts of every *other*
/// member (`None` for one that has not told the leader). Unknown while any of them is missing:
/// the missing one may hold a later mark.
pub fn last_renewal<'a>(
    agent: &str,
    others: impl IntoIterator<Item = Option<&'a Contact>>,
) -> Option<Instant> {
    let mut latest: Option<Instant> = None;
    for contact in others {
        let contact = contact?;
        let mark = |marks: &BTreeMap<AgentId, Instant>| {
            marks.get(agent).copied().unwrap_or(contact.started)
        };
        let here = mark(&contact.accepted_from).max(mark(&contact.acked_by));
        latest = Some(latest.map_or(here, |l| l.max(here)));
    }
    latest
}

/// This agent's own contacts, kept as it goes.
#[derive(Debug)]
pub struct ContactBook {
    started: Instant,
    accepted_from: Mutex<BTreeMap<NodeId, Instant>>,
    acked_by: Mutex<BTreeMap<NodeId, Instant>>,
}

impl ContactBook {
    /// An empty book, started now.
    pub fn new() -> Self {
        ContactBook {
            started: Instant::now(),
            accepted_from: Mutex::new(BTreeMap::new()),
            acked_by: Mutex::new(BTreeMap::new()),
        }
    }

    /// This agent accepted an AppendEntries from `leader` now.
    pub fn accepted_from(&self, leader: NodeId) {
        let mut marks = self.accepted_from.lock().unwrap_or_else(|p| p.into_inner());
        marks.insert(leader, Instant::now());
    }

    /// Time since this agent last accepted an AppendEntries from any leader — what its lease
    /// as a follower counts — or since it started, if it has accepted none: a freshly started
    /// agent gets one lease period to join before it fences anything.
    pub fn since_leader(&self, now: Instant) -> Duration {
        let marks = self.accepted_from.lock().unwrap_or_else(|p| p.into_inner());
        let last = marks.values().copied().fold(self.started, Instant::max);
        now.saturating_duration_since(last)
    }

    /// `follower` acknowledged one of this agent's AppendEntries now.
    pub fn acked_by(&self, follower: NodeId) {
        let mut marks = self.acked_by.lock().unwrap_or_else(|p| p.into_inner());
        marks.insert(follower, Instant::now());
    }

    /// The book as instants, agents named by `agent_of`.
    pub fn contact(&self, agent_of: impl Fn(NodeId) -> Option<AgentId>) -> Contact {
        let named = |marks: &Mutex<BTreeMap<NodeId, Instant>>| {
            marks
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .iter()
                .filter_map(|(node, at)| Some((agent_of(*node)?, *at)))
                .collect()
        };
        Contact {
            started: self.started,
            accepted_from: named(&self.accepted_from),
            acked_by: named(&self.acked_by),
        }
    }

    /// The book as ages at `now`, to send.
    pub fn report(
        &self,
        now: Instant,
        agent_of: impl Fn(NodeId) -> Option<AgentId>,
    ) -> ContactReport {
        let ms = |at: Instant| {
            u64::try_from(now.saturating_duration_since(at).as_millis()).unwrap_or(u64::MAX)
        };
        let contact = self.contact(agent_of);
        let ages = |marks: BTreeMap<AgentId, Instant>| {
            marks
                .into_iter()
                .map(|(agent, at)| (agent, ms(at)))
                .collect()
        };
        ContactReport {
            started_ms_ago: ms(contact.started),
            accepted_from_ms_ago: ages(contact.accepted_from),
            acked_by_ms_ago: ages(contact.acked_by),
        }
    }
}

impl Default for ContactBook {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn contact(
        base: Instant,
        started: u64,
        accepted: &[(&str, u64)],
        acked: &[(&str, u64)],
    ) -> Contact {
        let at = |ms: u64| base + Duration::from_millis(ms);
        let marks = |list: &[(&str, u64)]| {
            list.iter()
                .map(|(a, ms)| (a.to_string(), at(*ms)))
                .collect()
        };
        Contact {
            started: at(started),
            accepted_from: marks(accepted),
            acked_by: marks(acked),
        }
    }

    #[test]
    fn a_dead_leader_renewed_no_later_than_its_followers_last_accepted_it() {
        let t = Instant::now();
        // paris led until 10 s: berlin accepted its heartbeat at 10.0 s, virginia at 9.9 s.
        let berlin = contact(t, 0, &[("paris", 10_000)], &[]);
        let virginia = contact(t, 0, &[("paris", 9_900)], &[("berlin", 500)]);
        let at = last_renewal("paris", [Some(&berlin), Some(&virginia)]);
        assert_eq!(at, Some(t + Duration::from_millis(10_000)));
    }

    #[test]
    fn a_follower_renewed_no_later_than_its_leader_last_heard_it_accept() {
        let t = Instant::now();
        let leader = contact(t, 0, &[], &[("virginia", 8_000), ("berlin", 9_000)]);
        let other = contact(t, 0, &[("paris", 7_000)], &[]);
        assert_eq!(
            last_renewal("virginia", [Some(&leader), Some(&other)]),
            Some(t + Duration::from_millis(8_000))
        );
    }

    #[test]
    fn a_missing_member_leaves_it_unknown() {
        let t = Instant::now();
        let berlin = contact(t, 0, &[("paris", 10_000)], &[]);
        assert_eq!(last_renewal("paris", [Some(&berlin), None]), None);
    }

    #[test]
    fn a_restarted_member_bounds_what_it_forgot_by_its_start() {
        let t = Instant::now();
        // virginia restarted at 12 s: it may have accepted paris until then.
        let berlin = contact(t, 0, &[("paris", 10_000)], &[]);
        let virginia = contact(t, 12_000, &[], &[]);
        assert_eq!(
            last_renewal("paris", [Some(&berlin), Some(&virginia)]),
            Some(t + Duration::from_millis(12_000))
        );
    }

    #[test]
    fn a_follower_lease_counts_from_the_latest_acceptance_or_the_start() {
        let book = ContactBook::new();
        let later = book.started + Duration::from_secs(10);
        assert_eq!(book.since_leader(later), Duration::from_secs(10));
        book.accepted_from(3);
        let accepted = book.accepted_from.lock().unwrap()[&3];
        assert_eq!(
            book.since_leader(accepted + Duration::from_secs(2)),
            Duration::from_secs(2)
        );
    }

    #[test]
    fn ages_come_back_as_the_same_instants_or_later() {
        let book = ContactBook::new();
        book.accepted_from(7);
        book.acked_by(9);
        let name = |n: NodeId| Some(format!("node-{n}"));
        let now = Instant::now();
        let exact = book.contact(name);
        let sent = book.report(now, name);
        let back = sent.at(now);
        for (agent, at) in &exact.accepted_from {
            assert!(back.accepted_from[agent] >= *at);
            assert!(back.accepted_from[agent] <= *at + Duration::from_millis(1));
        }
        assert!(back.acked_by["node-9"] >= exact.acked_by["node-9"]);
        assert!(back.started >= exact.started);
        // Received later than sent: every mark moves later.
        let late = sent.at(now + Duration::from_millis(80));
        assert!(
            late.accepted_from["node-7"]
                >= back.accepted_from["node-7"] + Duration::from_millis(80)
        );
    }

    proptest! {
        /// The bound is never earlier than any mark any member holds of the agent.
        #[test]
        fn never_earlier_than_any_mark(
            marks in proptest::collection::vec((0u64..100_000, 0u64..100_000, 0u64..100_000, any::<bool>(), any::<bool>()), 1..7)
        ) {
            let t = Instant::now();
            let contacts: Vec<Contact> = marks
                .iter()
                .map(|&(started, accepted, acked, has_accepted, has_acked)| {
                    let accepted = if has_accepted { vec![("x", started + accepted)] } else { vec![] };
                    let acked = if has_acked { vec![("x", started + acked)] } else { vec![] };
                    contact(t, started, &accepted, &acked)
                })
                .collect();
            let bound = last_renewal("x", contacts.iter().map(Some)).unwrap();
            for c in &contacts {
                prop_assert!(bound >= c.started);
                for mark in c.accepted_from.values().chain(c.acked_by.values()) {
                    prop_assert!(bound >= *mark);
                }
            }
            // And it is one of them: no later than the latest.
            let latest = contacts
                .iter()
                .flat_map(|c| std::iter::once(c.started).chain(c.accepted_from.values().copied()).chain(c.acked_by.values().copied()))
                .max()
                .unwrap();
            prop_assert_eq!(bound, latest);
        }
    }
}
