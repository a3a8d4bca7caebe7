//! Elections only where a quorum has lost its leader: failoverd's pre-vote.
//!
//! openraft 0.9 already refuses a vote while the voter still hears its leader, but a node that
//! cannot win still raises its term at every election timeout; when a cut-off agent comes
//! back with that term, the healthy leader sees it while replicating and steps down — a
//! disruption for nothing, and its agents' leases lapse with it. So an agent that has not
//! heard a leader for [`QUIET`] heartbeats asks its peers whether they have lost the leader
//! too, and lets openraft stand for election only while a quorum (itself included) has. A
//! cut-off agent hears no one, holds its elections and keeps its term; when it returns, the
//! leader's next AppendEntries finds it in the same term. When the leader really dies, every
//! follower loses it at once and the probe answers within a round trip, well inside the
//! election timeout, so failover is not delayed.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::network::paths;
use super::Consensus;

/// An agent that has not heard a leader for this many heartbeat intervals counts as having
/// lost it (openraft's leader lease is 3 to 4.5 of them with the default timeouts).
pub const QUIET: u32 = 3;

/// What an agent answers when asked whether it has lost its leader.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Leaderless {
    /// It leads no one and has not heard a leader for [`QUIET`] heartbeats.
    pub leaderless: bool,
}

/// Whether this agent may stand for election: it has lost its leader, and with the peers that
/// said they have too it makes a quorum of `members`.
pub fn may_elect(own_leaderless: bool, peers_leaderless: usize, members: usize) -> bool {
    own_leaderless && 1 + peers_leaderless >= crate::verdict::majority(members)
}

impl Consensus {
    /// Whether this agent has lost its leader (see [`Leaderless`]).
    pub(super) fn leaderless(&self, now: Instant) -> bool {
        !self.is_leader() && self.contacts.since_accepted(now) >= self.heartbeat * QUIET
    }

    /// Every heartbeat: lets openraft elect only while [`may_elect`] says so, until
    /// `shutdown`. A one-agent cluster elects itself and is left alone.
    pub(super) async fn gate_elections(self: Arc<Self>, shutdown: CancellationToken) {
        if self.members.len() == 1 {
            return;
        }
        let mut ticker = tokio::time::interval(self.heartbeat);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut allowed = true;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = ticker.tick() => {}
            }
            let own = self.leaderless(Instant::now());
            let allow = if own {
                let peers = self.peers_leaderless(self.heartbeat * 2).await;
                may_elect(own, peers, self.members.len())
            } else {
                // Hearing a leader: openraft itself waits for its lease to run out.
                true
            };
            if allow != allowed {
                self.raft.runtime_config().elect(allow);
                if allow {
                    tracing::info!("a quorum has lost the leader: elections allowed");
                } else {
                    tracing::info!(
                        "no leader heard, but no quorum of agents has lost it: elections held"
                    );
                }
                self.metrics.elections_held.set(i64::from(!allow));
                allowed = allow;
            }
        }
    }

    /// How many peers answer within `timeout` that they have lost the leader.
    async fn peers_leaderless(&self, timeout: Duration) -> usize {
        let asks = self
            .members
            .iter()
            .filter(|m| m.node_id != self.me.node_id)
            .filter_map(|m| m.peer_url.clone())
            .map(|url| {
                let client = self.client.clone();
                async move {
                    client
                        .post::<_, Leaderless>(&url, paths::LEADERLESS, &(), timeout)
                        .await
                        .is_ok_and(|answer| answer.leaderless)
                }
            });
        let mut tasks = tokio::task::JoinSet::new();
        for ask in asks {
            tasks.spawn(ask);
        }
        let mut yes = 0;
        while let Some(answer) = tasks.join_next().await {
            if answer.unwrap_or(false) {
                yes += 1;
            }
        }
        yes
    }
}

#[cfg(test)]
mod tests {
    use super::may_elect;

    #[test]
    fn an_agent_stands_only_with_a_quorum_that_lost_the_leader() {
        // Three agents: itself and one peer make two of three.
        assert!(may_elect(true, 1, 3));
        assert!(may_elect(true, 2, 3));
        // Cut off: no peer answers.
        assert!(!may_elect(true, 0, 3));
        // Hearing a leader, whatever the others say.
        assert!(!may_elect(false, 2, 3));
        // Five agents need three.
        assert!(!may_elect(true, 1, 5));
        assert!(may_elect(true, 2, 5));
    }
}
