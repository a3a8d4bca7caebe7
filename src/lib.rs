//! failoverd: multi-region failover and health-probing daemon.
//!
//! One agent runs per region. It probes the HTTP APIs, Postgres members and Redis shards of
//! its region ([`probe`], run by the [`scheduler`]), turns results into per-target health with
//! rise/fall hysteresis ([`health`]), and shows them through the admin API ([`admin`]) and
//! Prometheus metrics ([`metrics`]). The static model of regions and targets is in
//! [`topology`], built from a validated [`config`]. The agents agree through Raft
//! ([`consensus`]) on a quorum [`verdict`] and on the [`desired`] state; an agent cut off
//! from the quorum fences its local primaries ([`fencing`]); the leader decides and carries
//! out failovers ([`failover`]) through [`actions`], the only code that changes the world.
//! [`agent`] wires it all together.
//!
//! ## Layers
//!
//! A module may use only the modules on the lines below its own; modules on one line do not
//! use each other. `tests/layers.rs` checks every `crate::` path against this list.
//!
//! 1. `agent` — builds every part from the config and runs them
//! 2. `admin` — the admin HTTP API and status page; reads state, submits through consensus
//! 3. `failover` — the leader's engine, inputs, plans and the runtime that carries them out
//! 4. `fencing` — the rules for fencing local primaries and the fencer that applies them
//! 5. `consensus` — Raft, the log store and state machine, reports, leases and contact
//! 6. `api` — the admin API's typed messages
//! 7. `desired` — the replicated desired state: decisions, the log command, the schedule
//! 8. `verdict` — the quorum verdict over reports
//! 9. `scheduler` — runs each probe on its interval and feeds health
//! 10. `evidence`, `metrics` — data-path votes; the Prometheus series of probes
//! 11. `health` — rise/fall per target
//! 12. `notify`, `actions` — webhooks; Postgres, Redis and Route53 changes
//! 13. `probe` — one stateless check per target
//! 14. `datastore`, `tls` — Postgres and Redis clients; TLS set-up
//! 15. `topology` — the static model of regions and targets
//! 16. `config` — the typed, validated configuration
//! 17. `util` — small helpers with no dependency on the rest

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
