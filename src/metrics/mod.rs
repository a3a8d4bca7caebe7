//! Prometheus metrics: names, units and labels by Prometheus conventions.
//!
//! Each subsystem gets its own metric families registered on the agent's [`Registry`] when it
//! is built; there are no global registries. The per-target probe series (latency, result,
//! state: 26 samples per target) are the exception: they are plain atomics in a
//! [`ProbeSeries`], written straight to the text format chunk by chunk at scrape time. With
//! thousands of targets, a Prometheus child per series (each with its own copy of the labels)
//! and gathering them all into protobuf structures at every scrape cost most of an agent's
//! memory. Recording a probe costs a few atomic operations either way.

use std::collections::BTreeSet;
use std::convert::Infallible;
use std::fmt::Write as _;
use std::pin::Pin;
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use axum::body::Bytes;

use prometheus::{Encoder, GaugeVec, IntGaugeVec, Opts, Registry, TextEncoder};

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

/// The whole exposition — the registry's families, then the per-target probe series — as a
/// response body written chunk by chunk, so that a scrape never holds all of it at once.
pub fn body(registry: &Registry, series: &ProbeSeries) -> axum::body::Body {
    axum::body::Body::new(Exposition::new(registry, series))
}

/// The whole exposition as one string (for tests and tools).
pub fn render_all(registry: &Registry, series: &ProbeSeries) -> String {
    let mut exposition = Exposition::new(registry, series);
    let mut text = String::new();
    while let Some(chunk) = exposition.chunk() {
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    text
}

/// Probe results of one target, as the text format needs them.
struct TargetCell {
    /// Label values, escaped for the text format.
    target: String,
    kind: &'static str,
    region: String,
    /// Observations per latency bucket (not cumulative), in [`PROBE_DURATION_BUCKETS`] order.
    buckets: [AtomicU64; PROBE_DURATION_BUCKETS.len()],
    count: AtomicU64,
    /// The sum of observed seconds, as `f64` bits.
    sum: AtomicU64,
    success: AtomicI64,
    /// Probes by result: ok, error, timeout.
    results: [AtomicU64; 3],
    /// The current state's index in [`State::ALL`].
    state: AtomicUsize,
    /// Transitions by the state entered, in [`State::ALL`] order.
    transitions: [AtomicU64; 3],
}

const RESULTS: [&str; 3] = ["ok", "error", "timeout"];

impl TargetCell {
    fn observe(&self, seconds: f64) {
        if let Some(i) = PROBE_DURATION_BUCKETS.iter().position(|b| seconds <= *b) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        // The closure always returns Some: the update cannot fail.
        let _ = self
            .sum
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |bits| {
                Some((f64::from_bits(bits) + seconds).to_bits())
            });
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    /// Appends `name{labels...} value`: the labels sorted by name and a histogram's `le`
    /// last, as the Prometheus encoder writes them.
    fn sample(&self, out: &mut String, name: &str, extra: Option<(&str, &str)>, value: &str) {
        let mut labels = [
            ("kind", self.kind),
            ("region", self.region.as_str()),
            ("target", self.target.as_str()),
            ("~", ""),
        ];
        let mut le = None;
        match extra {
            Some(("le", bound)) => le = Some(bound),
            Some(pair) => {
                labels[3] = pair;
                labels.sort_unstable_by_key(|(k, _)| *k);
            }
            None => {}
        }
        out.push_str(name);
        let mut sep = '{';
        for (key, value) in labels.iter().filter(|(k, _)| *k != "~") {
            let _ = write!(out, "{sep}{key}=\"{value}\"");
            sep = ',';
        }
        if let Some(bound) = le {
            let _ = write!(out, ",le=\"{bound}\"");
        }
        let _ = writeln!(out, "}} {value}");
    }

    /// Appends this target's samples of family `family` (an index in [`FAMILIES`]).
    fn render(&self, family: usize, out: &mut String) {
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        match family {
            0 => {
                let name = "failoverd_probe_duration_seconds_bucket";
                let mut cumulative = 0;
                for (bound, bucket) in PROBE_DURATION_BUCKETS.iter().zip(&self.buckets) {
                    cumulative += load(bucket);
                    self.sample(
                        out,
                        name,
                        Some(("le", &bound.to_string())),
                        &cumulative.to_string(),
                    );
                }
                let count = load(&self.count).max(cumulative);
                self.sample(out, name, Some(("le", "+Inf")), &count.to_string());
                let sum = f64::from_bits(load(&self.sum));
                self.sample(
                    out,
                    "failoverd_probe_duration_seconds_sum",
                    None,
                    &sum.to_string(),
                );
                self.sample(
                    out,
                    "failoverd_probe_duration_seconds_count",
                    None,
                    &count.to_string(),
                );
            }
            1 => {
                let success = self.success.load(Ordering::Relaxed);
                self.sample(out, FAMILIES[1].0, None, &success.to_string());
            }
            2 => {
                for (result, n) in RESULTS.iter().zip(&self.results) {
                    self.sample(
                        out,
                        FAMILIES[2].0,
                        Some(("result", result)),
                        &load(n).to_string(),
                    );
                }
            }
            3 => {
                let current = self.state.load(Ordering::Relaxed);
                for (i, state) in State::ALL.iter().enumerate() {
                    let value = if i == current { "1" } else { "0" };
                    self.sample(out, FAMILIES[3].0, Some(("state", state.as_str())), value);
                }
            }
            _ => {
                for (state, n) in State::ALL.iter().zip(&self.transitions) {
                    self.sample(
                        out,
                        FAMILIES[4].0,
                        Some(("to", state.as_str())),
                        &load(n).to_string(),
                    );
                }
            }
        }
    }
}

/// The per-target families: name, type, help.
const FAMILIES: [(&str, &str, &str); 5] = [
    (
        "failoverd_probe_duration_seconds",
        "histogram",
        "Time one probe took, successful or not.",
    ),
    (
        "failoverd_probe_success",
        "gauge",
        "Whether the last probe of the target succeeded (1) or failed (0).",
    ),
    (
        "failoverd_probes_total",
        "counter",
        "Probes run, by result (ok, error, timeout).",
    ),
    (
        "failoverd_target_state",
        "gauge",
        "Health state of the target after rise/fall: 1 for the current state.",
    ),
    (
        "failoverd_target_state_transitions_total",
        "counter",
        "Health state changes of the target, by new state.",
    ),
];

/// Every probed target's series.
#[derive(Clone, Default)]
pub struct ProbeSeries {
    cells: Arc<Mutex<Vec<Arc<TargetCell>>>>,
}

impl ProbeSeries {
    fn cells(&self) -> Vec<Arc<TargetCell>> {
        self.cells.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// A chunk is cut once it holds this much text.
const CHUNK: usize = 32 * 1024;

/// The exposition being written: the registry's text, then each per-target family.
struct Exposition {
    head: Option<Bytes>,
    cells: Vec<Arc<TargetCell>>,
    family: usize,
    next: usize,
}

impl Exposition {
    fn new(registry: &Registry, series: &ProbeSeries) -> Exposition {
        let head = render(registry);
        Exposition {
            head: (!head.is_empty()).then(|| Bytes::from(head)),
            cells: series.cells(),
            family: 0,
            next: 0,
        }
    }

    /// The next piece of text, or `None` at the end.
    fn chunk(&mut self) -> Option<Bytes> {
        if let Some(head) = self.head.take() {
            return Some(head);
        }
        if self.cells.is_empty() || self.family >= FAMILIES.len() {
            return None;
        }
        let mut out = String::with_capacity(CHUNK + 4096);
        while out.len() < CHUNK && self.family < FAMILIES.len() {
            if self.next == 0 {
                let (name, kind, help) = FAMILIES[self.family];
                let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            }
            self.cells[self.next].render(self.family, &mut out);
            self.next += 1;
            if self.next == self.cells.len() {
                self.family += 1;
                self.next = 0;
            }
        }
        Some(Bytes::from(out))
    }
}

impl http_body::Body for Exposition {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Infallible>>> {
        Poll::Ready(
            self.get_mut()
                .chunk()
                .map(|c| Ok(http_body::Frame::data(c))),
        )
    }

    fn is_end_stream(&self) -> bool {
        self.head.is_none() && (self.cells.is_empty() || self.family >= FAMILIES.len())
    }
}

/// Escapes a label value for the text format.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('\n', "\\n")
        .replace('"', "\\\"")
}

/// The probe and health metric families.
#[derive(Clone)]
pub struct ProbeMetrics {
    series: ProbeSeries,
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

use crate::util::registered as reg;

impl ProbeMetrics {
    /// Creates and registers the datastore families; the per-target probe series go to
    /// [`ProbeMetrics::series`].
    pub fn new(registry: &Registry) -> prometheus::Result<Self> {
        Ok(ProbeMetrics {
            series: ProbeSeries::default(),
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

    /// The per-target probe series, for the exposition ([`body`]).
    pub fn series(&self) -> ProbeSeries {
        self.series.clone()
    }

    /// Adds one target's series (state Unknown, nothing observed yet).
    pub fn target(&self, target: &Target) -> TargetMetrics {
        let unknown = State::ALL
            .iter()
            .position(|s| *s == State::Unknown)
            .unwrap_or(2);
        let cell = Arc::new(TargetCell {
            target: escape(target.id.as_str()),
            kind: target.kind().as_str(),
            region: escape(&target.region),
            buckets: Default::default(),
            count: AtomicU64::new(0),
            sum: AtomicU64::new(0f64.to_bits()),
            success: AtomicI64::new(0),
            results: Default::default(),
            state: AtomicUsize::new(unknown),
            transitions: Default::default(),
        });
        self.series
            .cells
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(cell.clone());
        TargetMetrics {
            family: self.clone(),
            id: target.id.as_str().to_owned(),
            cell,
            replicas: BTreeSet::new(),
        }
    }
}

/// The metrics of one target, labels resolved.
pub struct TargetMetrics {
    family: ProbeMetrics,
    id: String,
    cell: Arc<TargetCell>,
    /// Replica label values exported last time, to drop the ones that went away.
    replicas: BTreeSet<String>,
}

fn state_index(s: State) -> usize {
    State::ALL.iter().position(|x| *x == s).unwrap_or(2)
}

impl TargetMetrics {
    /// Records one probe result.
    pub fn observe(&mut self, result: &Result<Observation, ProbeError>, seconds: f64) {
        let cell = &self.cell;
        cell.observe(seconds);
        match result {
            Ok(observation) => {
                cell.success.store(1, Ordering::Relaxed);
                cell.results[0].fetch_add(1, Ordering::Relaxed);
                self.facts(&observation.facts);
            }
            Err(e) => {
                cell.success.store(0, Ordering::Relaxed);
                let i = if matches!(e, ProbeError::Timeout(_)) {
                    2
                } else {
                    1
                };
                cell.results[i].fetch_add(1, Ordering::Relaxed);
                // Facts of a target that does not answer are unknown, not their last value.
                self.clear_facts();
            }
        }
    }

    /// Records a change of state.
    pub fn transition(&self, t: Transition) {
        let to = state_index(t.to);
        self.cell.state.store(to, Ordering::Relaxed);
        self.cell.transitions[to].fetch_add(1, Ordering::Relaxed);
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

#[cfg(test)]
mod tests;
