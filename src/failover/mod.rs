//! Failover planning: pure decisions from observed state to what should happen.
//!
//! No I/O here: the functions take what the probes and the cluster saw and return a choice
//! that the executor (with [`crate::actions`]) carries out. Today this holds the choice of the
//! Postgres member to promote, with its data-loss guard.

pub mod candidate;
