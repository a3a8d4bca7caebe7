//! failoverd: multi-region failover and health-probing daemon.
//!
//! One agent runs per region. It probes the HTTP APIs, Postgres members and Redis shards of
//! its region ([`probe`]), turns results into per-target health with rise/fall hysteresis
//! ([`health`]), and shows them through the admin API ([`admin`]) and Prometheus metrics
//! ([`metrics`]). The static model of regions and targets is in [`topology`], built from a
//! validated [`config`]. The agents agree through Raft ([`consensus`]) on a quorum
//! [`verdict`]; an agent cut off from the quorum fences its local primaries ([`fencing`]);
//! the leader decides and carries out failovers ([`failover`]) through [`actions`], the only
//! code that changes the world. [`agent`] wires it all together.
//!
//! Dependencies point one way: probe → health → consensus → failover → actions; nothing
//! reaches back.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod actions;
pub mod admin;
pub mod agent;
pub mod api;
pub mod config;
pub mod consensus;
pub mod datastore;
pub mod desired;
pub mod evidence;
pub mod failover;
pub mod fencing;
pub mod health;
pub mod metrics;
pub mod notify;
pub mod probe;
pub mod scheduler;
pub mod tls;
pub mod topology;
pub mod util;
pub mod verdict;
