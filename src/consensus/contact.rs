//! Contact between agents and leaders, remembered so that a new leader can tell when a silent
//! agent last renewed its lease — instead of counting a whole lease period from its own
//! election.
//!
//! An agent renews its lease in one of two ways (see [`super::Consensus::lease_valid`]):
//!
//! - as a **follower**, by an AppendEntries it accepted from a leader *once that leader has
//!   shown it heard the acceptance*: every request carries an [`AppendTag`] naming the latest
//!   of the follower's acknowledgements the leader received, and the follower's lease counts
//!   from when it accepted that one. So the leader's *acknowledged-by* mark for the follower is
//!   at or after every renewal, even if later acknowledgements are lost on the way back (a
//!   link that loses one direction only) or requests arrive seconds late.
//! - as a **leader**, when a quorum acknowledges its AppendEntries, counted from the moment
//!   the request was *sent*, which is before any follower *accepted* it. An acknowledgement
//!   counts whenever it arrives within a lease period, even after openraft stopped waiting
//!   for it (see [`ContactBook::heard_back`]).
//!
//! So every renewal of agent X leaves a mark at or after it with some other agent: its
//! `accepted_from[X]` (X led) or its `acked_by[X]` (X followed it). If every agent but X
//! tells the leader its marks, the latest of them bounds X's last renewal, and X has fenced
//! itself once a lease period has passed since then. An agent forgets its marks when it
//! restarts, so it also says when it started: a missing mark is bounded by that.
//!
//! The leader's fence margin covers the silent agent's fence check and the fence itself; the
//! marks travel in reports, so they arrive a moment after they were made: the safe side.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
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

/// The moment a quorum had followed a leader, given when each follower's latest
/// acknowledged request was sent (the leader itself counts as one of the `quorum`, at
/// `now`): the `quorum - 1`-th latest of them. `None` while fewer followers acknowledged.
pub fn quorum_renewal(
    sent: impl IntoIterator<Item = Instant>,
    quorum: usize,
    now: Instant,
) -> Option<Instant> {
    let Some(needed) = quorum.checked_sub(1).filter(|n| *n > 0) else {
        return Some(now);
    };
    let mut sent: Vec<Instant> = sent.into_iter().collect();
    sent.sort_unstable_by(|a, b| b.cmp(a));
    sent.get(needed - 1).copied()
}

/// What a leader tells a follower with each AppendEntries (in the [`AppendTag::HEADER`]
/// header), so that the follower renews its lease only by acceptances the leader heard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendTag {
    /// The leader's process (random per start): numbers restart with it.
    pub boot: u64,
    /// This request's number, increasing within `boot`.
    pub seq: u64,
    /// The highest `seq` whose acknowledgement by this follower the leader has received
    /// (0: none yet).
    pub heard: u64,
}

impl AppendTag {
    /// The HTTP header carrying the tag.
    pub const HEADER: &'static str = "x-failoverd-append";

    /// The header value: `boot.seq.heard`, boot in hex.
    pub fn encode(&self) -> String {
        format!("{:x}.{}.{}", self.boot, self.seq, self.heard)
    }

    /// Reads a header value; `None` if it is not one.
    pub fn parse(value: &str) -> Option<AppendTag> {
        let mut parts = value.split('.');
        let tag = AppendTag {
            boot: u64::from_str_radix(parts.next()?, 16).ok()?,
            seq: parts.next()?.parse().ok()?,
            heard: parts.next()?.parse().ok()?,
        };
        parts.next().is_none().then_some(tag)
    }
}

/// A follower keeps this many of one leader's accepted requests waiting for the leader to
/// say it heard them (at one per heartbeat, well over a lease period).
const PENDING: usize = 1024;

/// One leader's requests a follower accepted and has not yet seen acknowledged back.
#[derive(Debug, Default)]
struct Pending {
    boot: u64,
    accepted: BTreeMap<u64, Instant>,
}

/// A leader's acknowledged requests in its current term, by follower: when each follower's
/// latest acknowledged AppendEntries was sent.
#[derive(Debug, Default)]
struct Heard {
    term: u64,
    sent: BTreeMap<NodeId, Instant>,
}

/// This agent's own contacts, kept as it goes.
#[derive(Debug)]
pub struct ContactBook {
    started: Instant,
    accepted_from: Mutex<BTreeMap<NodeId, Instant>>,
    acked_by: Mutex<BTreeMap<NodeId, Instant>>,
    heard: Mutex<Heard>,
    /// Leading: this process's tag and the last request number.
    boot: u64,
    seq: AtomicU64,
    /// Leading: the highest request number each follower's acknowledgement came back for.
    heard_seq: Mutex<BTreeMap<NodeId, u64>>,
    /// Following: each leader's accepted requests not yet heard back.
    pending: Mutex<BTreeMap<NodeId, Pending>>,
    /// Following: the latest acceptance each leader has heard back — the follower's lease.
    renewed: Mutex<BTreeMap<NodeId, Instant>>,
}

impl ContactBook {
    /// An empty book, started now.
    pub fn new() -> Self {
        ContactBook {
            started: Instant::now(),
            accepted_from: Mutex::new(BTreeMap::new()),
            acked_by: Mutex::new(BTreeMap::new()),
            heard: Mutex::new(Heard::default()),
            boot: rand::random::<u64>() | 1,
            seq: AtomicU64::new(0),
            heard_seq: Mutex::new(BTreeMap::new()),
            pending: Mutex::new(BTreeMap::new()),
            renewed: Mutex::new(BTreeMap::new()),
        }
    }

    /// This agent accepted at `now` an AppendEntries from `leader` tagged `tag`. Its lease
    /// is renewed as of the acceptance the tag says the leader heard back; an untagged
    /// request (from an agent of an older version) renews it as of now.
    pub fn accepted_from(&self, leader: NodeId, tag: Option<AppendTag>, now: Instant) {
        self.accepted_from
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(leader, now);
        let renewal = match tag {
            None => Some(now),
            Some(tag) => {
                let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
                let book = pending.entry(leader).or_default();
                if book.boot != tag.boot {
                    *book = Pending {
                        boot: tag.boot,
                        accepted: BTreeMap::new(),
                    };
                }
                book.accepted.insert(tag.seq, now);
                if book.accepted.len() > PENDING {
                    book.accepted.pop_first();
                }
                let heard = book.accepted.get(&tag.heard).copied();
                if tag.heard > 0 {
                    // Numbers up to the one heard are never asked for again.
                    book.accepted = book.accepted.split_off(&(tag.heard + 1));
                }
                heard
            }
        };
        if let Some(at) = renewal {
            let mut renewed = self.renewed.lock().unwrap_or_else(|p| p.into_inner());
            let latest = renewed.entry(leader).or_insert(at);
            *latest = (*latest).max(at);
        }
    }

    /// Time since the latest acceptance of an AppendEntries that its leader heard back —
    /// what this agent's lease as a follower counts — or since it started, if none: a freshly
    /// started agent gets one lease period to join before it fences anything.
    pub fn since_leader(&self, now: Instant) -> Duration {
        let renewed = self.renewed.lock().unwrap_or_else(|p| p.into_inner());
        let last = renewed.values().copied().fold(self.started, Instant::max);
        now.saturating_duration_since(last)
    }

    /// Time since this agent last accepted an AppendEntries from any leader (or since it
    /// started): how long it has gone without hearing a leader.
    pub fn since_accepted(&self, now: Instant) -> Duration {
        let accepted = self.accepted_from.lock().unwrap_or_else(|p| p.into_inner());
        let last = accepted.values().copied().fold(self.started, Instant::max);
        now.saturating_duration_since(last)
    }

    /// The tag of the next AppendEntries this agent sends `follower` as leader.
    pub fn next_tag(&self, follower: NodeId) -> AppendTag {
        AppendTag {
            boot: self.boot,
            seq: self.seq.fetch_add(1, Ordering::Relaxed) + 1,
            heard: self
                .heard_seq
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(&follower)
                .copied()
                .unwrap_or(0),
        }
    }

    /// `follower` acknowledged one of this agent's AppendEntries now.
    fn acked_by(&self, follower: NodeId) {
        let mut marks = self.acked_by.lock().unwrap_or_else(|p| p.into_inner());
        marks.insert(follower, Instant::now());
    }

    /// `follower` acknowledged now the AppendEntries numbered `seq` this agent sent at `sent`
    /// as leader of `term`. For this agent's lease, acknowledgements of an earlier term are
    /// ignored and a later term starts afresh.
    pub fn heard_back(&self, follower: NodeId, term: u64, sent: Instant, seq: u64) {
        self.acked_by(follower);
        {
            let mut heard = self.heard_seq.lock().unwrap_or_else(|p| p.into_inner());
            let latest = heard.entry(follower).or_insert(seq);
            *latest = (*latest).max(seq);
        }
        let mut heard = self.heard.lock().unwrap_or_else(|p| p.into_inner());
        if term < heard.term {
            return;
        }
        if term > heard.term {
            *heard = Heard {
                term,
                sent: BTreeMap::new(),
            };
        }
        let latest = heard.sent.entry(follower).or_insert(sent);
        *latest = (*latest).max(sent);
    }

    /// Time since a quorum of `quorum` agents (this one included) last followed this agent
    /// as leader of `term` — what its lease as a leader counts — or `None` if no quorum has
    /// acknowledged it in that term.
    pub fn since_quorum(&self, term: u64, quorum: usize, now: Instant) -> Option<Duration> {
        let heard = self.heard.lock().unwrap_or_else(|p| p.into_inner());
        let sent: Vec<Instant> = if heard.term == term {
            heard.sent.values().copied().collect()
        } else {
            Vec::new()
        };
        drop(heard);
        quorum_renewal(sent, quorum, now).map(|at| now.saturating_duration_since(at))
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
    fn a_follower_lease_counts_from_the_latest_acceptance_its_leader_heard_back() {
        let book = ContactBook::new();
        let t = book.started;
        let at = |ms: u64| t + Duration::from_millis(ms);
        assert_eq!(book.since_leader(at(10_000)), Duration::from_secs(10));
        let tag = |seq, heard| {
            Some(AppendTag {
                boot: 7,
                seq,
                heard,
            })
        };
        // Accepted at 1 s and 2 s: nothing heard back yet, so no renewal.
        book.accepted_from(3, tag(1, 0), at(1_000));
        book.accepted_from(3, tag(2, 0), at(2_000));
        assert_eq!(book.since_leader(at(3_000)), Duration::from_secs(3));
        // The leader heard request 1 back: the lease counts from its acceptance, not now.
        book.accepted_from(3, tag(3, 1), at(3_000));
        assert_eq!(book.since_leader(at(3_000)), Duration::from_secs(2));
        // Acknowledgements of 2 and 3 lost on the way back, 4 heard: renewed as of 4.
        book.accepted_from(3, tag(4, 1), at(4_000));
        book.accepted_from(3, tag(5, 4), at(5_000));
        assert_eq!(book.since_leader(at(5_000)), Duration::from_secs(1));
        // A late request carrying an older echo changes nothing.
        book.accepted_from(3, tag(2, 1), at(5_500));
        assert_eq!(book.since_leader(at(5_500)), Duration::from_millis(1_500));
        // Every acceptance is still a mark for the leader's own lease.
        assert_eq!(book.accepted_from.lock().unwrap()[&3], at(5_500));
    }

    #[test]
    fn a_restarted_leader_starts_its_numbers_afresh() {
        let book = ContactBook::new();
        let at = |ms: u64| book.started + Duration::from_millis(ms);
        book.accepted_from(
            3,
            Some(AppendTag {
                boot: 1,
                seq: 1,
                heard: 0,
            }),
            at(1_000),
        );
        // The new process's request 1 is not the old one's.
        book.accepted_from(
            3,
            Some(AppendTag {
                boot: 2,
                seq: 5,
                heard: 1,
            }),
            at(2_000),
        );
        assert_eq!(book.since_leader(at(2_000)), Duration::from_secs(2));
        book.accepted_from(
            3,
            Some(AppendTag {
                boot: 2,
                seq: 6,
                heard: 5,
            }),
            at(3_000),
        );
        assert_eq!(book.since_leader(at(3_000)), Duration::from_secs(1));
    }

    #[test]
    fn an_untagged_request_renews_as_of_its_acceptance() {
        let book = ContactBook::new();
        let at = book.started + Duration::from_secs(4);
        book.accepted_from(3, None, at);
        assert_eq!(book.since_leader(at), Duration::ZERO);
    }

    #[test]
    fn a_leader_tags_each_request_with_what_it_heard_back() {
        let book = ContactBook::new();
        let first = book.next_tag(2);
        assert_eq!(first.heard, 0);
        let second = book.next_tag(2);
        assert!(second.seq > first.seq);
        book.heard_back(2, 1, Instant::now(), second.seq);
        book.heard_back(2, 1, Instant::now(), first.seq);
        assert_eq!(book.next_tag(2).heard, second.seq);
        assert_eq!(book.next_tag(5).heard, 0);
        let tag = book.next_tag(2);
        assert_eq!(AppendTag::parse(&tag.encode()), Some(tag));
        assert_eq!(AppendTag::parse("zz.1.0"), None);
        assert_eq!(AppendTag::parse("1.2.3.4"), None);
    }

    #[test]
    fn a_leader_lease_counts_from_the_send_of_the_quorums_latest_acknowledged_request() {
        let t = Instant::now();
        let at = |ms: u64| t + Duration::from_millis(ms);
        // Five agents, quorum three: the leader and the second latest of its followers.
        let sent = [at(100), at(900), at(400), at(700)];
        assert_eq!(quorum_renewal(sent, 3, at(1_000)), Some(at(700)));
        assert_eq!(quorum_renewal([at(100)], 3, at(1_000)), None);
        // A cluster that the leader alone makes a quorum.
        assert_eq!(quorum_renewal([], 1, at(1_000)), Some(at(1_000)));
    }

    #[test]
    fn a_late_acknowledgement_renews_from_its_send_and_only_in_its_term() {
        let book = ContactBook::new();
        let t = book.started;
        let at = |ms: u64| t + Duration::from_millis(ms);
        assert_eq!(book.since_quorum(4, 2, at(0)), None);
        // Sent at 1 s, acknowledged after openraft's deadline: it still counts from 1 s.
        book.heard_back(2, 4, at(1_000), 1);
        assert_eq!(
            book.since_quorum(4, 2, at(3_000)),
            Some(Duration::from_secs(2))
        );
        // An older request answered later does not move it back.
        book.heard_back(2, 4, at(500), 2);
        assert_eq!(
            book.since_quorum(4, 2, at(3_000)),
            Some(Duration::from_secs(2))
        );
        // Another term's acknowledgements are not this term's lease.
        assert_eq!(book.since_quorum(5, 2, at(3_000)), None);
        book.heard_back(3, 5, at(2_000), 3);
        book.heard_back(2, 4, at(2_500), 4);
        assert_eq!(book.since_quorum(4, 2, at(3_000)), None);
        assert_eq!(
            book.since_quorum(5, 2, at(3_000)),
            Some(Duration::from_secs(1))
        );
        assert!(book.acked_by.lock().unwrap().contains_key(&3));
    }

    #[test]
    fn ages_come_back_as_the_same_instants_or_later() {
        let book = ContactBook::new();
        book.accepted_from(7, None, Instant::now());
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
