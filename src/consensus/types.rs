//! The openraft type configuration: what the log carries and how nodes are named.

use std::io::Cursor;

use serde::{Deserialize, Serialize};

/// A Raft node id: a stable 64-bit hash of the agent id (see [`node_id`]).
pub type NodeId = u64;

/// A command committed to the log. Decisions (desired state, drains, pauses) join here.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Records which member is the writable one of a group (`postgres/<cluster>` or
    /// `redis/<shard>`). The leader names the primary it observes when none is named; a fenced
    /// agent lifts its fence only while the log names its member.
    NamePrimary {
        /// The group.
        group: String,
        /// The member's target id.
        target: crate::topology::TargetId,
    },
    /// A failover decision, a step record, a refusal or a mode change.
    Failover(Box<crate::desired::FailoverCommand>),
    /// The acknowledgement rule a primary or master was last seen running (`None`: it was
    /// seen as a replica since), so that a leader elected after its agent went silent still
    /// knows whether it fences itself. Proposed only once every agent applies it
    /// ([`LOG_VERSION`]).
    PrimaryRule {
        /// The member.
        target: crate::topology::TargetId,
        /// Its rule.
        acks: Option<crate::datastore::acks::Acks>,
    },
}

/// The log entries this agent applies: 1 adds [`Command::PrimaryRule`]. Each report carries
/// it, and the leader proposes an entry of a newer kind only once every agent's latest report
/// shows it can apply it (a rolling upgrade never stalls the log).
pub const LOG_VERSION: u32 = 1;

/// What applying a command returned.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandResult {
    /// Log index of the applied entry.
    pub index: u64,
}

openraft::declare_raft_types!(
    /// failoverd's Raft types.
    pub TypeConfig:
        D = Command,
        R = CommandResult,
        NodeId = NodeId,
        Node = openraft::BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

/// The Raft handle.
pub type Raft = openraft::Raft<TypeConfig>;

/// The node id of an agent: FNV-1a over its id. Stable across restarts and independent of
/// the order agents are listed in, so every agent derives the same membership.
pub fn node_id(agent_id: &str) -> NodeId {
    crate::util::fnv1a(agent_id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_ids_are_stable_and_distinct() {
        // FNV-1a test vectors: a change here would split existing clusters.
        assert_eq!(node_id(""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(node_id("a"), 0xaf63_dc4c_8601_ec8c);
        let ids: std::collections::BTreeSet<_> = ["eu-west-3-a", "eu-central-1-a", "us-east-1-a"]
            .map(node_id)
            .into();
        assert_eq!(ids.len(), 3);
    }
}
