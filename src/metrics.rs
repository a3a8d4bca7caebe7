//! Prometheus metrics: names, units and labels by Prometheus conventions.
//!
//! Each subsystem gets its own metric families registered on the agent's [`Registry`] when it
//! is built; there are no global registries. Per-target label values are resolved once, when
//! the probe task starts, so recording a probe costs a few atomic operations.

use std::collections::BTreeSet;

use prometheus::{
    Encoder, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::health::{State, Transition};
use crate::probe::{Facts, Observation, ProbeError};
use crate::topology::Target;

/// Latency buckets from 1 ms to 10 s: probes of a healthy target take a few ms; the upper end
/// shows timeouts.
pub const PROBE_DURATION_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Registers `failoverd_build_info` (always 1, with the version as a label).
pub fn register_build_info(registry: &Registry) -> prometheus::Result<()> {
    let info = IntGaugeVec::new(
        Opts::new("failoverd_build_info", "Build information; always 1."),
        &["version", "rustc_edition"],
    )?;
    registry.register(Box::new(info.clone()))?;
    info.with_label_values(&[env!("CARGO_PKG_VERSION"), "2021"])
        .set(1);
    Ok(())
}

/// Renders every metric of the registry in the Prometheus text format.
pub fn render(registry: &Registry) -> String {
    let mut out = Vec::new();
    // Encoding into a Vec only fails on invalid metric families, which registration rules out.
    if let Err(e) = TextEncoder::new().encode(&registry.gather(), &mut out) {
        tracing::error!(error = %e, "cannot encode metrics");
    }
    String::from_utf8(out).unwrap_or_default()
}

/// The probe and health metric families.
#[derive(Clone)]
pub struct ProbeMetrics {
    duration: HistogramVec,
    success: IntGaugeVec,
    probes: IntCounterVec,
    state: IntGaugeVec,
    transitions: IntCounterVec,
    pg_primary: IntGaugeVec,
    pg_timeline: IntGaugeVec,
    pg_replay_lag_bytes: IntGaugeVec,
    pg_replay_lag_seconds: GaugeVec,
    pg_receiver_age: GaugeVec,
    pg_replica_lag_bytes: IntGaugeVec,
    redis_master: IntGaugeVec,
    redis_link_up: IntGaugeVec,
    redis_replica_lag: IntGaugeVec,
    redis_cluster_ok: IntGaugeVec,
}

fn reg<T: prometheus::core::Collector + Clone + 'static>(
    registry: &Registry,
    metric: T,
) -> prometheus::Result<T> {
    registry.register(Box::new(metric.clone()))?;
    Ok(metric)
}

impl ProbeMetrics {
    /// Creates and registers the families.
    pub fn new(registry: &Registry) -> prometheus::Result<Self> {
        let t = &["target", "kind", "region"];
        Ok(ProbeMetrics {
            duration: reg(
                registry,
                HistogramVec::new(
                    HistogramOpts::new(
                        "failoverd_probe_duration_seconds",
                        "Time one probe took, successful or not.",
                    )
                    .buckets(PROBE_DURATION_BUCKETS.to_vec()),
                    t,
                )?,
            )?,
            success: reg(
                registry,
                IntGaugeVec::new(
                    Opts::new(
                        "failoverd_probe_success",
                        "Whether the last probe of the target succeeded (1) or failed (0).",
                    ),
                    t,
                )?,
            )?,
            probes: reg(
                registry,
                IntCounterVec::new(
                    Opts::new(
                        "failoverd_probes_total",
                        "Probes run, by result (ok, error, timeout).",
                    ),
                    &["target", "kind", "region", "result"],
                )?,
            )?,
            state: reg(
                registry,
                IntGaugeVec::new(
                    Opts::new(
                        "failoverd_target_state",
                        "Health state of the target after rise/fall: 1 for the current state.",
                    ),
                    &["target", "kind", "region", "state"],
                )?,
            )?,
            transitions: reg(
                registry,
                IntCounterVec::new(
                    Opts::new(
                        "failoverd_target_state_transitions_total",
                        "Health state changes of the target, by new state.",
                    ),
                    &["target", "kind", "region", "to"],
                )?,
            )?,
            pg_primary: reg(
                registry,
                IntGaugeVec::new(
                    Opts::new(
                        "failoverd_postgres_is_primary",
                        "Whether the Postgres member is out of recovery (1) or a replica (0).",
                    ),
                    &["target"],
                )?,
            )?,
            pg_timeline: reg(
                registry,
                IntGaugeVec::new(
                    Opts::new(
                        "failoverd_postgres_timeline",
                        "The Postgres member's WAL timeline.",
                    ),
                    &["target"],
                )?,
            )?,
            pg_replay_lag_bytes: reg(
                registry,
                IntGaugeVec::new(
                    Opts::new(
                        "failoverd_postgres_replication_lag_bytes",
                        "Replica: WAL bytes received but not yet replayed.",
                    ),
                    &["target"],
                )?,
            )?,
            pg_replay_lag_seconds: reg(
                registry,
                GaugeVec::new(
                    Opts::new(
                        "failoverd_postgres_replication_lag_seconds",
                        "Replica: age of the last replayed transaction while WAL waits to be replayed, else 0.",
                    ),
                    &["target"],
                )?,
            )?,
            pg_receiver_age: reg(
                registry,
                GaugeVec::new(
                    Opts::new(
                        "failoverd_postgres_wal_receiver_last_message_age_seconds",
                        "Replica: time since the last message from its primary arrived.",
                    ),
                    &["target"],
                )?,
            )?,
            pg_replica_lag_bytes: reg(
                registry,
                IntGaugeVec::new(
                    Opts::new(
                        "failoverd_postgres_replica_lag_bytes",
                        "Primary: bytes from each streaming replica's replay position to the current WAL position.",
                    ),
                    &["target", "replica"],
                )?,
            )?,
            redis_master: reg(
                registry,
                IntGaugeVec::new(
                    Opts::new(
                        "failoverd_redis_is_master",
                        "Whether the Redis member is a master (1) or a replica (0).",
                    ),
                    &["target"],
                )?,
            )?,
            redis_link_up: reg(
                registry,
                IntGaugeVec::new(
                    Opts::new(
                        "failoverd_redis_master_link_up",
                        "Replica: whether the link to its master is up.",
                    ),
                    &["target"],
                )?,
            )?,
            redis_replica_lag: reg(
                registry,
                IntGaugeVec::new(
                    Opts::new(
                        "failoverd_redis_replica_offset_lag_bytes",
                        "Master: replication offset bytes each replica is behind.",
                    ),
                    &["target", "replica"],
                )?,
            )?,
            redis_cluster_ok: reg(
                registry,
                IntGaugeVec::new(
                    Opts::new(
                        "failoverd_redis_cluster_state_ok",
                        "Cluster node: whether it reports cluster_state:ok.",
                    ),
                    &["target"],
                )?,
            )?,
        })
    }

    /// Resolves the label values of one target.
    pub fn target(&self, target: &Target) -> TargetMetrics {
        let id = target.id.as_str();
        let kind = target.kind().as_str();
        let region = target.region.as_str();
        let labels = [id, kind, region];
        let state = State::ALL.map(|s| {
            self.state
                .with_label_values(&[id, kind, region, s.as_str()])
        });
        for (gauge, s) in state.iter().zip(State::ALL) {
            gauge.set(i64::from(s == State::Unknown));
        }
        TargetMetrics {
            family: self.clone(),
            id: id.to_owned(),
            duration: self.duration.with_label_values(&labels),
            success: self.success.with_label_values(&labels),
            ok: self.probes.with_label_values(&[id, kind, region, "ok"]),
            error: self.probes.with_label_values(&[id, kind, region, "error"]),
            timeout: self
                .probes
                .with_label_values(&[id, kind, region, "timeout"]),
            state,
            transitions: State::ALL.map(|s| {
                self.transitions
                    .with_label_values(&[id, kind, region, s.as_str()])
            }),
            replicas: BTreeSet::new(),
        }
    }
}

/// The metrics of one target, labels resolved.
pub struct TargetMetrics {
    family: ProbeMetrics,
    id: String,
    duration: Histogram,
    success: IntGauge,
    ok: IntCounter,
    error: IntCounter,
    timeout: IntCounter,
    state: [IntGauge; 3],
    transitions: [IntCounter; 3],
    /// Replica label values exported last time, to drop the ones that went away.
    replicas: BTreeSet<String>,
}

fn state_index(s: State) -> usize {
    State::ALL.iter().position(|x| *x == s).unwrap_or(2)
}

impl TargetMetrics {
    /// Records one probe result.
    pub fn observe(&mut self, result: &Result<Observation, ProbeError>, seconds: f64) {
        self.duration.observe(seconds);
        match result {
            Ok(observation) => {
                self.success.set(1);
                self.ok.inc();
                self.facts(&observation.facts);
            }
            Err(e) => {
                self.success.set(0);
                if matches!(e, ProbeError::Timeout(_)) {
                    self.timeout.inc();
                } else {
                    self.error.inc();
                }
                // Facts of a target that does not answer are unknown, not their last value.
                self.clear_facts();
            }
        }
    }

    /// Records a change of state.
    pub fn transition(&self, t: Transition) {
        self.state[state_index(t.from)].set(0);
        self.state[state_index(t.to)].set(1);
        self.transitions[state_index(t.to)].inc();
    }

    fn facts(&mut self, facts: &Facts) {
        let f = &self.family;
        let id = self.id.as_str();
        let mut replicas = BTreeSet::new();
        match facts {
            Facts::Http(_) => {}
            Facts::Postgres(pg) => {
                let primary = pg.role == crate::probe::postgres::PgRole::Primary;
                f.pg_primary
                    .with_label_values(&[id])
                    .set(i64::from(primary));
                if let Some(tl) = pg.timeline {
                    f.pg_timeline.with_label_values(&[id]).set(i64::from(tl));
                }
                if let Some(b) = pg.replay_lag_bytes {
                    f.pg_replay_lag_bytes
                        .with_label_values(&[id])
                        .set(i64::try_from(b).unwrap_or(i64::MAX));
                }
                if let Some(s) = pg.replay_lag_seconds {
                    f.pg_replay_lag_seconds.with_label_values(&[id]).set(s);
                }
                if let Some(age) = pg
                    .wal_receiver
                    .as_ref()
                    .and_then(|w| w.last_msg_age_seconds)
                {
                    f.pg_receiver_age.with_label_values(&[id]).set(age);
                }
                for link in &pg.replicas {
                    if let Some(lag) = link.lag_bytes {
                        f.pg_replica_lag_bytes
                            .with_label_values(&[id, &link.application_name])
                            .set(i64::try_from(lag).unwrap_or(i64::MAX));
                        replicas.insert(link.application_name.clone());
                    }
                }
            }
            Facts::Redis(r) => {
                let master = r.role == crate::probe::redis::RedisRole::Master;
                f.redis_master
                    .with_label_values(&[id])
                    .set(i64::from(master));
                if let Some(up) = r.master_link_up {
                    f.redis_link_up.with_label_values(&[id]).set(i64::from(up));
                }
                for replica in &r.replicas {
                    f.redis_replica_lag
                        .with_label_values(&[id, &replica.addr])
                        .set(i64::try_from(replica.lag_bytes).unwrap_or(i64::MAX));
                    replicas.insert(replica.addr.clone());
                }
                if let Some(c) = &r.cluster {
                    f.redis_cluster_ok
                        .with_label_values(&[id])
                        .set(i64::from(c.state == "ok"));
                }
            }
        }
        for gone in self.replicas.difference(&replicas) {
            // Removing a series that was never set only reports "not found"; nothing to do.
            let _ignored = f.pg_replica_lag_bytes.remove_label_values(&[id, gone]);
            let _ignored = f.redis_replica_lag.remove_label_values(&[id, gone]);
        }
        self.replicas = replicas;
    }

    fn clear_facts(&mut self) {
        let f = &self.family;
        let id = self.id.as_str();
        // Each removal fails with "not found" for series this target never had: expected.
        let _ignored = f.pg_primary.remove_label_values(&[id]);
        let _ignored = f.pg_timeline.remove_label_values(&[id]);
        let _ignored = f.pg_replay_lag_bytes.remove_label_values(&[id]);
        let _ignored = f.pg_replay_lag_seconds.remove_label_values(&[id]);
        let _ignored = f.pg_receiver_age.remove_label_values(&[id]);
        let _ignored = f.redis_master.remove_label_values(&[id]);
        let _ignored = f.redis_link_up.remove_label_values(&[id]);
        let _ignored = f.redis_cluster_ok.remove_label_values(&[id]);
        for gone in std::mem::take(&mut self.replicas) {
            let _ignored = f.pg_replica_lag_bytes.remove_label_values(&[id, &gone]);
            let _ignored = f.redis_replica_lag.remove_label_values(&[id, &gone]);
        }
    }
}
