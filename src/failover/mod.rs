//! Failover: when to act, what to do, and doing it.
//!
//! [`trigger`] (pure) reads the verdict, the leases and the desired state and proposes a
//! decision; [`candidate`] (pure) picks the Postgres member to promote with its data-loss
//! guard; [`cluster`] (pure) finds the lost masters of a Redis Cluster, their candidates and
//! who moved each slot range; [`plan`] (pure) turns a decision into steps with their dependencies; [`state`] is
//! what the replicated log makes of decisions and step records; [`executor`] runs on the
//! leader, commits decisions (after the optional [`hook`] approves) and carries out their
//! steps with [`crate::actions`]; [`manual`] (pure) turns an operator's drain, restore or
//! forced failover into a decision; [`quorum`] (pure) is the acknowledgement rule kept on
//! each primary so that it fences itself, and [`fence_rule`] (pure) whether the leader may
//! promote around an old primary it could not fence; [`heal`] (pure) how redundant each
//! group is against its primary and which replicas the healer repoints.

pub mod candidate;
pub mod cluster;
pub mod drill;
pub mod engine;
pub mod executor;
pub mod fence_rule;
pub mod heal;
pub mod hook;
pub mod inputs;
pub mod manual;
pub mod plan;
pub mod quorum;
pub mod steps;
pub mod trigger;
