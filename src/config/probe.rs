//! The `[probe]` section: how often targets are probed, how long a probe may take, and how
//! many results in a row flip a target, as global defaults with overrides per kind and per
//! target; [`ProbeConfig::resolve`] applies them. Their rules are `validate_probe` and, for
//! what one target ends up with, `Validator::target_probe`.
//!
//! Only numbers live here: probing itself is in `crate::probe`, and hysteresis in
//! `crate::health`.

use std::fmt;
use std::time::Duration;

use serde::Deserialize;

use super::validate::Validator;

/// Default probe interval: one second, so a dead target is seen within a few seconds.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(1);
/// Default probe timeout: half the interval, so a slow answer is still a failure before the
/// next probe is due.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(500);
/// Default consecutive successes before a target is Up: two, so one lucky answer from a
/// flapping target does not bring it back.
pub const DEFAULT_RISE: u32 = 2;
/// Default consecutive failures before a target is Down: three. One lost packet or a GC pause
/// must not count, and 3 s of detection still leaves room for a failover under 5 s.
pub const DEFAULT_FALL: u32 = 3;
/// Default time between probes while a target's state is in question (a failure of an Up
/// target, a success of a Down one, a replica's link just lost): `fall` failures then take
/// half a second instead of `fall` intervals, as HAProxy's `fastinter` does.
pub const DEFAULT_FAST_INTERVAL: Duration = Duration::from_millis(250);
/// The shortest interval accepted: faster probing only adds load, not certainty.
pub const MIN_INTERVAL: Duration = Duration::from_millis(100);

/// Probe settings that can be set globally, per kind and per target.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProbeOverrides {
    /// Time between two probes of one target.
    #[serde(default, with = "humantime_serde")]
    pub interval: Option<Duration>,
    /// Hard limit on one probe; must be shorter than the interval.
    #[serde(default, with = "humantime_serde")]
    pub timeout: Option<Duration>,
    /// Consecutive successes that turn a target Up.
    pub rise: Option<u32>,
    /// Consecutive failures that turn a target Down.
    pub fall: Option<u32>,
}

/// The `[probe]` section: global defaults and one table per kind.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProbeConfig {
    /// Global interval (default 1 s).
    #[serde(default, with = "humantime_serde")]
    pub interval: Option<Duration>,
    /// Time between probes while a target's state is in question (default 250 ms, never
    /// more than the target's interval); measured from the end of the previous probe.
    #[serde(default, with = "humantime_serde")]
    pub fast_interval: Option<Duration>,
    /// Global timeout (default 500 ms).
    #[serde(default, with = "humantime_serde")]
    pub timeout: Option<Duration>,
    /// Global rise (default 2).
    pub rise: Option<u32>,
    /// Global fall (default 3).
    pub fall: Option<u32>,
    /// Overrides for HTTP targets.
    #[serde(default)]
    pub http: ProbeOverrides,
    /// Overrides for Postgres members.
    #[serde(default)]
    pub postgres: ProbeOverrides,
    /// Overrides for Redis members.
    #[serde(default)]
    pub redis: ProbeOverrides,
}

/// The kind of a probe target.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    serde::Serialize,
    serde::Deserialize,
    schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum TargetKind {
    /// An HTTP(S) endpoint.
    Http,
    /// A Postgres member.
    Postgres,
    /// A Redis member.
    Redis,
}

impl TargetKind {
    /// The lowercase name used in ids, labels and config keys.
    pub fn as_str(self) -> &'static str {
        match self {
            TargetKind::Http => "http",
            TargetKind::Postgres => "postgres",
            TargetKind::Redis => "redis",
        }
    }
}

impl fmt::Display for TargetKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Probe settings after defaults are applied, with where each value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeSettings {
    /// Time between probes.
    pub interval: Duration,
    /// Hard timeout of one probe.
    pub timeout: Duration,
    /// Successes to turn Up.
    pub rise: u32,
    /// Failures to turn Down.
    pub fall: u32,
    /// Time between probes while the state is in question (at most `interval`).
    pub fast_interval: Duration,
}

impl ProbeConfig {
    fn kind(&self, kind: TargetKind) -> &ProbeOverrides {
        match kind {
            TargetKind::Http => &self.http,
            TargetKind::Postgres => &self.postgres,
            TargetKind::Redis => &self.redis,
        }
    }

    /// Resolves the settings of one target: target value, else kind value, else global
    /// value, else the default. Returns the settings and, per field, the key it came from.
    pub fn resolve(
        &self,
        kind: TargetKind,
        target: &ProbeOverrides,
        target_key: &str,
    ) -> (ProbeSettings, [String; 4]) {
        let kind_cfg = self.kind(kind);
        let kind_key = format!("probe.{kind}");
        fn pick<T: Copy>(
            field: &str,
            target: (Option<T>, &str),
            kind: (Option<T>, &str),
            global: Option<T>,
            default: T,
        ) -> (T, String) {
            if let Some(v) = target.0 {
                (v, format!("{}.probe.{field}", target.1))
            } else if let Some(v) = kind.0 {
                (v, format!("{}.{field}", kind.1))
            } else if let Some(v) = global {
                (v, format!("probe.{field}"))
            } else {
                (default, format!("default {field}"))
            }
        }
        let (interval, si) = pick(
            "interval",
            (target.interval, target_key),
            (kind_cfg.interval, &kind_key),
            self.interval,
            DEFAULT_INTERVAL,
        );
        let (timeout, st) = pick(
            "timeout",
            (target.timeout, target_key),
            (kind_cfg.timeout, &kind_key),
            self.timeout,
            DEFAULT_TIMEOUT,
        );
        let (rise, sr) = pick(
            "rise",
            (target.rise, target_key),
            (kind_cfg.rise, &kind_key),
            self.rise,
            DEFAULT_RISE,
        );
        let (fall, sf) = pick(
            "fall",
            (target.fall, target_key),
            (kind_cfg.fall, &kind_key),
            self.fall,
            DEFAULT_FALL,
        );
        (
            ProbeSettings {
                interval,
                timeout,
                rise,
                fall,
                fast_interval: self
                    .fast_interval
                    .unwrap_or(DEFAULT_FAST_INTERVAL)
                    .min(interval),
            },
            [si, st, sr, sf],
        )
    }
}

/// Checks `[probe]` on its own: the global values and each kind's table. What each target
/// ends up with is checked with the target, by [`Validator::target_probe`].
pub(super) fn validate_probe(v: &mut Validator, probe: &ProbeConfig) {
    let global = ProbeOverrides {
        interval: probe.interval,
        timeout: probe.timeout,
        rise: probe.rise,
        fall: probe.fall,
    };
    v.probe_overrides("probe", &global);
    v.interval("probe.fast_interval".into(), probe.fast_interval);
    for kind in [TargetKind::Http, TargetKind::Postgres, TargetKind::Redis] {
        v.probe_overrides(&format!("probe.{kind}"), probe.kind(kind));
    }
}

impl Validator {
    /// An interval below [`MIN_INTERVAL`] is refused.
    fn interval(&mut self, key: String, interval: Option<Duration>) {
        if let Some(interval) = interval.filter(|i| *i < MIN_INTERVAL) {
            self.push(
                key,
                format!(
                    "{} is below the minimum of {}",
                    humantime::format_duration(interval),
                    humantime::format_duration(MIN_INTERVAL)
                ),
            );
        }
    }

    /// Checks one set of overrides on its own: a sane interval, a timeout, rise and fall.
    fn probe_overrides(&mut self, key: &str, o: &ProbeOverrides) {
        self.interval(format!("{key}.interval"), o.interval);
        if o.timeout == Some(Duration::ZERO) {
            self.push(format!("{key}.timeout"), "must be greater than 0");
        }
        if o.rise == Some(0) {
            self.push(format!("{key}.rise"), "must be at least 1");
        }
        if o.fall == Some(0) {
            self.push(format!("{key}.fall"), "must be at least 1");
        }
    }

    /// Checks a target's own overrides and the settings it ends up with.
    pub(super) fn target_probe(
        &mut self,
        key: &str,
        kind: TargetKind,
        o: &ProbeOverrides,
        probe: &ProbeConfig,
    ) -> ProbeSettings {
        self.probe_overrides(&format!("{key}.probe"), o);
        let (s, [interval_from, timeout_from, ..]) = probe.resolve(kind, o, key);
        if s.timeout >= s.interval {
            self.push(
                format!("{key}.probe.timeout"),
                format!(
                    "timeout ({} from {timeout_from}) must be < interval ({} from {interval_from}): \
                     a probe may not still run when the next one is due",
                    humantime::format_duration(s.timeout),
                    humantime::format_duration(s.interval)
                ),
            );
        }
        s
    }
}
