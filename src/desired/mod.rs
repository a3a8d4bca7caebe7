//! Desired state and history, as the replicated log builds them.
//!
//! Every decision is a log entry: [`Decision`]s (drain, promote, restore), step records,
//! refusals, pauses. [`Desired::apply`] folds them into the state every agent holds, so a new
//! leader knows what was decided, which steps finished and which did not, and carries on
//! from there. The epoch of a decision is the log index of its entry.
//!
//! Laid out as: [`decision`] (what a decision is), [`command`] (the log command and
//! [`Desired::apply`]), [`schedule`] (which steps may start, how a failover ended) and
//! [`drill`] (drills as recorded). Pure data and folds: no I/O, no clock.

pub mod command;
pub mod decision;
pub mod drill;
pub mod schedule;

pub use crate::actions::route53::WriterRecord;
pub use command::*;
pub use decision::*;
pub use drill::*;
pub use schedule::*;

#[cfg(test)]
mod tests;
