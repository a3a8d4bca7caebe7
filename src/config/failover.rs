//! The `[failover]` and `[notify]` sections: whether the leader fails over by itself, the
//! cooldown and failback hold-down around it, how each step is retried, the hook that may
//! veto it, and the webhook that hears about it; with their rules (`validate_failover`,
//! `validate_notify`).
//!
//! Quorum and Raft timing, which decide who may fail over, are `[cluster]`, in `cluster.rs`.

use std::time::Duration;

use serde::Deserialize;

use super::validate::Validator;
use super::{default_true, SecretRef};

/// How failovers are triggered and carried out.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FailoverConfig {
    /// Whether the leader fails over by itself on Down verdicts (default true). Off, failovers
    /// happen only when asked for (an agent that only watches and reports).
    #[serde(default = "default_true")]
    pub automatic: bool,
    /// After a failover, no automatic region drain or failback for this long (default 5 min).
    /// Promoting a Postgres group whose primary is Down is not held back by it: there is no
    /// writable primary to flap away from.
    #[serde(default, with = "humantime_serde")]
    pub cooldown: Option<Duration>,
    /// Put a drained region back into DNS by itself once its APIs are Up again (default off).
    #[serde(default)]
    pub auto_failback: bool,
    /// With `auto_failback`: how long a drained region must stay Up by verdict before it is
    /// put back (default 5 min).
    #[serde(default, with = "humantime_serde")]
    pub failback_hold_down: Option<Duration>,
    /// Hard limit on one attempt of one step (default 10 s); waiting for Route53 INSYNC has
    /// its own bound, `route53.insync_timeout`.
    #[serde(default, with = "humantime_serde")]
    pub step_timeout: Option<Duration>,
    /// Attempts per step before it is reported failed (default 3).
    pub step_attempts: Option<u32>,
    /// Wait before the first retry of a step, doubled at each retry (default 200 ms).
    #[serde(default, with = "humantime_serde")]
    pub retry_backoff: Option<Duration>,
    /// A check that may veto an automatic failover, if any.
    pub pre_hook: Option<HookConfig>,
}

impl Default for FailoverConfig {
    fn default() -> Self {
        FailoverConfig {
            automatic: true,
            cooldown: None,
            auto_failback: false,
            failback_hold_down: None,
            step_timeout: None,
            step_attempts: None,
            retry_backoff: None,
            pre_hook: None,
        }
    }
}

/// Default cooldown after a failover.
pub const DEFAULT_COOLDOWN: Duration = Duration::from_secs(300);
/// Default hold-down before an automatic failback.
pub const DEFAULT_FAILBACK_HOLD_DOWN: Duration = Duration::from_secs(300);
/// Default limit on one attempt of a step.
pub const DEFAULT_STEP_TIMEOUT: Duration = Duration::from_secs(10);
/// Default attempts per step.
pub const DEFAULT_STEP_ATTEMPTS: u32 = 3;
/// Default first retry backoff.
pub const DEFAULT_RETRY_BACKOFF: Duration = Duration::from_millis(200);

impl FailoverConfig {
    /// `cooldown` with its default.
    pub fn cooldown(&self) -> Duration {
        self.cooldown.unwrap_or(DEFAULT_COOLDOWN)
    }
    /// `failback_hold_down` with its default.
    pub fn failback_hold_down(&self) -> Duration {
        self.failback_hold_down
            .unwrap_or(DEFAULT_FAILBACK_HOLD_DOWN)
    }
    /// `step_timeout` with its default.
    pub fn step_timeout(&self) -> Duration {
        self.step_timeout.unwrap_or(DEFAULT_STEP_TIMEOUT)
    }
    /// `step_attempts` with its default.
    pub fn step_attempts(&self) -> u32 {
        self.step_attempts.unwrap_or(DEFAULT_STEP_ATTEMPTS)
    }
    /// `retry_backoff` with its default.
    pub fn retry_backoff(&self) -> Duration {
        self.retry_backoff.unwrap_or(DEFAULT_RETRY_BACKOFF)
    }
}

/// A check that must pass before an automatic failover goes ahead: a command (the decision
/// as JSON on its stdin; exit 0 to proceed) or an HTTP POST (the decision as the body; a 2xx
/// to proceed). Anything else vetoes the failover, with the output as the reason.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HookConfig {
    /// argv of the command.
    pub command: Option<Vec<String>>,
    /// URL to POST to.
    pub url: Option<String>,
    /// How long to wait for its answer (default 5 s).
    #[serde(default, with = "humantime_serde")]
    pub timeout: Option<Duration>,
    /// What a hook that does not answer in time means (default `proceed`: an approval
    /// service that is down must not stop a failover).
    #[serde(default)]
    pub on_timeout: HookTimeout,
}

/// What a hook that times out means.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HookTimeout {
    /// Go ahead.
    #[default]
    Proceed,
    /// Refuse.
    Veto,
}

impl HookConfig {
    /// `timeout` with its default.
    pub fn timeout(&self) -> Duration {
        self.timeout.unwrap_or(Duration::from_secs(5))
    }
}

/// A webhook for failover and fencing events.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotifyConfig {
    /// The URL to POST events to, as a secret (a Slack webhook URL carries its token).
    pub webhook_url: SecretRef,
    /// Limit on one delivery attempt (default 5 s).
    #[serde(default, with = "humantime_serde")]
    pub timeout: Option<Duration>,
    /// Attempts per event before it is dropped and counted (default 5).
    pub attempts: Option<u32>,
}

impl NotifyConfig {
    /// `timeout` with its default.
    pub fn timeout(&self) -> Duration {
        self.timeout.unwrap_or(Duration::from_secs(5))
    }
    /// `attempts` with its default.
    pub fn attempts(&self) -> u32 {
        self.attempts.unwrap_or(5)
    }
}

/// Checks `[failover]`: steps get time and attempts, and a pre-hook is exactly one of a
/// command that names a program or an http(s) URL, with time to answer.
pub(super) fn validate_failover(v: &mut Validator, f: &FailoverConfig) {
    if f.step_timeout.is_some_and(|t| t.is_zero()) {
        v.push("failover.step_timeout", "must be more than 0");
    }
    if f.step_attempts == Some(0) {
        v.push("failover.step_attempts", "must be at least 1");
    }
    if let Some(hook) = &f.pre_hook {
        match (&hook.command, &hook.url) {
            (Some(_), Some(_)) | (None, None) => v.push(
                "failover.pre_hook",
                "set exactly one of `command` and `url`",
            ),
            (Some(argv), None) if argv.is_empty() || argv[0].trim().is_empty() => {
                v.push("failover.pre_hook.command", "must name a program")
            }
            (None, Some(url)) => {
                v.url("failover.pre_hook.url", url, &["http", "https"]);
            }
            _ => {}
        }
        if hook.timeout.is_some_and(|t| t.is_zero()) {
            v.push("failover.pre_hook.timeout", "must be more than 0");
        }
    }
}

/// Checks `[notify]`: a webhook secret that resolves, at least one attempt, time to deliver.
pub(super) fn validate_notify(v: &mut Validator, n: &NotifyConfig) {
    v.secret("notify.webhook_url", &n.webhook_url);
    if n.attempts == Some(0) {
        v.push("notify.attempts", "must be at least 1");
    }
    if n.timeout.is_some_and(|t| t.is_zero()) {
        v.push("notify.timeout", "must be more than 0");
    }
}
