//! The failover metrics: decisions by trigger, refusals by guard, steps by action and result,
//! durations, Route53 drift, the epoch, the mode, per-group readiness and redundancy.

use prometheus::{Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry};

use super::ACTIONS;

/// The failover metrics.
#[derive(Clone)]
pub(super) struct Metrics {
    pub(super) started: IntCounterVec,
    pub(super) completed: IntCounter,
    pub(super) failed: IntCounter,
    pub(super) duration: Histogram,
    pub(super) refusals: IntCounterVec,
    pub(super) steps: IntCounterVec,
    pub(super) drift: IntCounter,
    pub(super) epoch: IntGauge,
    pub(super) paused: IntGauge,
    /// Whether automatic promotion would be blocked now, per group (leader only).
    pub(super) blocked: prometheus::IntGaugeVec,
    /// Whether a partition of the primary's region could leave two writable primaries, per
    /// group (leader only).
    pub(super) exposed: prometheus::IntGaugeVec,
    /// Members that could stream from the primary, per group (leader only).
    pub(super) replicas: prometheus::IntGaugeVec,
    /// Members that stream from the primary, per group (leader only).
    pub(super) streaming: prometheus::IntGaugeVec,
    /// Replicas the healer pointed at their primary, by result.
    pub(super) heals: IntCounterVec,
}

/// Every trigger label: their counters start at 0, so that alerts on
/// `increase()` see the first one.
const TRIGGERS: [&str; 5] = [
    "region_down",
    "primary_down",
    "failback",
    "dns_repair",
    "manual",
];
impl Metrics {
    pub(super) fn new(registry: &Registry) -> prometheus::Result<Metrics> {
        let metrics = Self::register(registry)?;
        for trigger in TRIGGERS {
            metrics.started.with_label_values(&[trigger]);
        }
        for guard in crate::desired::Guard::ALL {
            metrics.refusals.with_label_values(&[guard.as_str()]);
        }
        for result in ["ok", "failed"] {
            metrics.heals.with_label_values(&[result]);
        }
        for action in ACTIONS {
            for result in ["ok", "retry", "failed"] {
                metrics.steps.with_label_values(&[action, result]);
            }
        }
        Ok(metrics)
    }

    fn register(registry: &Registry) -> prometheus::Result<Metrics> {
        use crate::util::registered as reg;
        Ok(Metrics {
            started: reg(
                registry,
                IntCounterVec::new(
                    Opts::new(
                        "failoverd_failovers_started_total",
                        "Failovers decided by this agent as leader, by trigger.",
                    ),
                    &["trigger"],
                )?,
            )?,
            completed: reg(
                registry,
                IntCounter::new(
                    "failoverd_failovers_completed_total",
                    "Failovers this agent saw through to the end with every step done.",
                )?,
            )?,
            failed: reg(
                registry,
                IntCounter::new(
                    "failoverd_failovers_failed_total",
                    "Failovers that ended with a failed step.",
                )?,
            )?,
            duration: reg(
                registry,
                Histogram::with_opts(
                    HistogramOpts::new(
                        "failoverd_failover_duration_seconds",
                        "From the first Down verdict the leader saw to the end of the failover.",
                    )
                    .buckets(vec![
                        1.0, 2.0, 3.0, 5.0, 7.5, 10.0, 15.0, 20.0, 30.0, 60.0, 120.0,
                    ]),
                )?,
            )?,
            refusals: reg(
                registry,
                IntCounterVec::new(
                    Opts::new(
                        "failoverd_failover_refusals_total",
                        "Automatic actions refused, by guard (recorded once a minute while \
                         they stand).",
                    ),
                    &["guard"],
                )?,
            )?,
            steps: reg(
                registry,
                IntCounterVec::new(
                    Opts::new(
                        "failoverd_failover_steps_total",
                        "Step attempts run by this agent, by action and result.",
                    ),
                    &["action", "result"],
                )?,
            )?,
            drift: reg(
                registry,
                IntCounter::new(
                    "failoverd_route53_drift_total",
                    "Route53 weights found changed outside failoverd (left as they were).",
                )?,
            )?,
            epoch: reg(
                registry,
                IntGauge::new("failoverd_epoch", "The epoch of the latest decision.")?,
            )?,
            blocked: reg(
                registry,
                prometheus::IntGaugeVec::new(
                    Opts::new(
                        "failoverd_failover_blocked",
                        "Leader: 1 when losing the primary's region now would not allow an automatic promotion (see the status for why).",
                    ),
                    &["group"],
                )?,
            )?,
            exposed: reg(
                registry,
                prometheus::IntGaugeVec::new(
                    Opts::new(
                        "failoverd_split_brain_exposed",
                        "Leader: 1 when a partition of the primary's region could leave it taking writes (nothing makes it refuse writes by itself), so an unreachable primary there is not promoted around automatically.",
                    ),
                    &["group"],
                )?,
            )?,
            replicas: reg(
                registry,
                prometheus::IntGaugeVec::new(
                    Opts::new(
                        "failoverd_postgres_replicas",
                        "Leader: members of the group other than its primary, which should all stream from it.",
                    ),
                    &["group"],
                )?,
            )?,
            streaming: reg(
                registry,
                prometheus::IntGaugeVec::new(
                    Opts::new(
                        "failoverd_postgres_replicas_streaming",
                        "Leader: members of the group streaming from its primary; below failoverd_postgres_replicas the group is short of redundancy.",
                    ),
                    &["group"],
                )?,
            )?,
            heals: reg(
                registry,
                IntCounterVec::new(
                    Opts::new(
                        "failoverd_heal_attempts_total",
                        "Replicas the leader pointed at their group's primary after finding them not streaming from it, by result.",
                    ),
                    &["result"],
                )?,
            )?,
            paused: reg(
                registry,
                IntGauge::new(
                    "failoverd_automation_paused",
                    "1 while automatic failover is paused.",
                )?,
            )?,
        })
    }
}
