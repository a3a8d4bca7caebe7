//! Typed configuration: loading, defaults and validation.
//!
//! Loading happens in two steps. First the file (TOML or YAML, by extension) is merged with
//! `FAILOVERD__SECTION__KEY` environment overrides and deserialized with serde; unknown keys
//! are rejected there, because a typo in failover configuration silently falling back to a
//! default is dangerous. Then [`Config::validate`] checks the rules that span fields (timeouts
//! shorter than intervals, regions that exist, unique names) and collects *every* problem,
//! each naming its key path, so one run of `failoverd check-config` shows them all.
//!
//! Secrets are never required inline: every password or token is a [`SecretRef`] naming a
//! file or an environment variable, read when it is used so that rotation needs no restart.
//! This module owns no I/O beyond reading the config file and checking that secrets resolve.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

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
/// Default time SIGTERM waits for tasks to finish before the process exits anyway.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// Default Route53 record TTL in seconds: short, so clients follow a failover quickly.
pub const DEFAULT_ROUTE53_TTL: u32 = 30;
/// Default priority of a Postgres member when choosing among equally caught-up replicas.
pub const DEFAULT_PG_PRIORITY: u32 = 100;
/// Default time between probes while a target's state is in question (a failure of an Up
/// target, a success of a Down one, a replica's link just lost): `fall` failures then take
/// half a second instead of `fall` intervals, as HAProxy's `fastinter` does.
pub const DEFAULT_FAST_INTERVAL: Duration = Duration::from_millis(250);
/// The shortest interval accepted: faster probing only adds load, not certainty.
pub const MIN_INTERVAL: Duration = Duration::from_millis(100);
/// Default data-loss guard for automatic promotion: 1 MiB of WAL.
pub const DEFAULT_MAX_LAG_ON_FAILOVER: u64 = 1024 * 1024;
/// Largest Route53 weight (the service accepts 0..=255).
pub const MAX_WEIGHT: u32 = 255;

/// The whole configuration of one agent, as written in the file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// This agent: who it is and where it listens.
    pub agent: AgentConfig,
    /// The agents of the cluster (one per region). It may list this agent too, so that
    /// every region can share one file and set only `agent.id`: the entry whose id is
    /// `agent.id` is skipped (see [`Config::other_peers`]).
    #[serde(default)]
    pub peers: Vec<PeerConfig>,
    /// Settings shared by all agents of the cluster.
    #[serde(default)]
    pub cluster: ClusterConfig,
    /// The admin HTTP API.
    #[serde(default)]
    pub admin: AdminConfig,
    /// Probe defaults, overridable per kind and per target.
    #[serde(default)]
    pub probe: ProbeConfig,
    /// The regions and their public API health targets.
    pub regions: Vec<RegionConfig>,
    /// The Postgres cluster, if any.
    #[serde(default)]
    pub postgres: Option<PostgresConfig>,
    /// The Redis shards, if any.
    #[serde(default)]
    pub redis: RedisConfig,
    /// The Route53 weighted records that steer traffic, if any.
    #[serde(default)]
    pub route53: Option<Route53Config>,
    /// TLS for the listeners and peer traffic, if any.
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    /// How failovers are triggered and carried out.
    #[serde(default)]
    pub failover: FailoverConfig,
    /// Where failover and fencing events are sent, if anywhere.
    #[serde(default)]
    pub notify: Option<NotifyConfig>,
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

/// TLS settings: one certificate for the agent, one CA for the cluster.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain of this agent (server, and client for mTLS).
    pub cert_file: PathBuf,
    /// PEM private key of that certificate.
    pub key_file: PathBuf,
    /// PEM CA bundle that signs the peers' certificates: checks peers' server certificates
    /// and, with `require_client_cert`, their client certificates.
    pub ca_file: Option<PathBuf>,
    /// Serve the peer listener over TLS (default true when `[tls]` is present).
    #[serde(default = "default_true")]
    pub peer: bool,
    /// Serve the admin listener over TLS (default false: scrapers and probes of the admin
    /// port usually sit inside the region).
    #[serde(default)]
    pub admin: bool,
    /// Peers must present a certificate signed by `ca_file` (mTLS; default false).
    #[serde(default)]
    pub require_client_cert: bool,
}

/// This agent's identity and listeners.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    /// Unique agent id, e.g. `eu-west-3-a`.
    pub id: String,
    /// The region this agent runs in; must be one of `regions`.
    pub region: String,
    /// Address of the admin HTTP API (status, metrics, commands).
    pub admin_listen: SocketAddr,
    /// Address of the peer listener used for consensus traffic.
    pub peer_listen: Option<SocketAddr>,
    /// Directory for persistent state (Raft log, history).
    pub data_dir: PathBuf,
    /// Which targets this agent probes.
    #[serde(default)]
    pub probe_scope: ProbeScope,
    /// Log format: `auto` (JSON unless stderr is a terminal), `json` or `text`.
    #[serde(default)]
    pub log_format: LogFormat,
    /// How long SIGTERM waits for in-flight work (default 10 s).
    #[serde(default, with = "humantime_serde")]
    pub shutdown_grace: Option<Duration>,
}

/// Which targets an agent probes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ProbeScope {
    /// The API targets of every region (they are public endpoints) and the Postgres and Redis
    /// members of the agent's own region. The production setting: datastores are reached
    /// only from inside their region.
    #[default]
    OwnRegion,
    /// Every target of every region (a single agent watching a whole lab).
    All,
}

/// Log output format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LogFormat {
    /// JSON when stderr is not a terminal, human text when it is.
    #[default]
    Auto,
    /// One JSON object per line.
    Json,
    /// Human-readable text.
    Text,
}

/// Another agent of the cluster.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerConfig {
    /// The peer's agent id.
    pub id: String,
    /// The region the peer runs in.
    pub region: String,
    /// Base URL of the peer listener, e.g. `https://failoverd.eu-central-1.internal:7071`.
    pub peer_url: String,
    /// Base URL of the peer's admin API.
    pub admin_url: Option<String>,
}

/// Settings shared by every agent.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// Shared secret that authenticates peer traffic; required when peers are configured.
    pub secret: Option<SecretRef>,
    /// Agents that must agree before a target is Down (default: a majority of all agents;
    /// never less than a majority).
    pub quorum: Option<usize>,
    /// A report older than this counts as Unknown (default 3 s).
    #[serde(default, with = "humantime_serde")]
    pub stale_after: Option<Duration>,
    /// Leader heartbeat period (default 100 ms).
    #[serde(default, with = "humantime_serde")]
    pub heartbeat_interval: Option<Duration>,
    /// Base election timeout (default 300 ms). Each agent draws its timeout from its own
    /// range (see [`ClusterConfig::election_range`]), so survivors stand one after the other
    /// and never split the vote. A follower that hears nothing waits the top of its range
    /// (openraft's leader lease) plus its timeout: 0.75 to 1.5 s with three agents and the
    /// defaults, while an 80 ms round trip between regions stays far below it.
    #[serde(default, with = "humantime_serde")]
    pub election_timeout: Option<Duration>,
    /// Without contact with a quorum for this long, an agent fences the primaries of its
    /// region (default 3 s). The leader promotes elsewhere only after it has passed.
    #[serde(default, with = "humantime_serde")]
    pub lease_ttl: Option<Duration>,
    /// A local replica whose link to its primary (or master) in another region has been down
    /// this long votes that primary Down (default 500 ms: as soon as the primary's own agent
    /// can say Down with the default probes; such a vote alone never moves a primary).
    #[serde(default, with = "humantime_serde")]
    pub data_path_down_after: Option<Duration>,
}

/// Default time a replica's link must be down before it counts as a Down vote: the soonest
/// the primary's own agent says Down with the default probes ((fall - 1) x fast interval
/// after its first failed probe), so the second vote does not arrive after the first.
pub const DEFAULT_DATA_PATH_DOWN_AFTER: Duration = Duration::from_millis(500);

/// Default age after which a report counts as Unknown: three probe intervals.
pub const DEFAULT_STALE_AFTER: Duration = Duration::from_secs(3);
/// Default Raft heartbeat period.
pub const DEFAULT_HEARTBEAT: Duration = Duration::from_millis(100);
/// Default shortest election timeout.
pub const DEFAULT_ELECTION_TIMEOUT: Duration = Duration::from_millis(300);

impl ClusterConfig {
    /// `stale_after` with its default.
    pub fn stale_after(&self) -> Duration {
        self.stale_after.unwrap_or(DEFAULT_STALE_AFTER)
    }
    /// `heartbeat_interval` with its default.
    pub fn heartbeat_interval(&self) -> Duration {
        self.heartbeat_interval.unwrap_or(DEFAULT_HEARTBEAT)
    }
    /// `election_timeout` with its default.
    pub fn election_timeout(&self) -> Duration {
        self.election_timeout.unwrap_or(DEFAULT_ELECTION_TIMEOUT)
    }
    /// `data_path_down_after` with its default.
    pub fn data_path_down_after(&self) -> Duration {
        self.data_path_down_after
            .unwrap_or(DEFAULT_DATA_PATH_DOWN_AFTER)
    }
    /// The election timeout range of the agent at `rank` (its place among all agents sorted by
    /// id). Ranks get disjoint, increasing ranges, so after a leader dies the survivors stand
    /// one after the other and never split the vote: rank r draws from
    /// `[base + r·base/2, base + (r+1)·base/2)`.
    pub fn election_range(&self, rank: usize) -> (Duration, Duration) {
        let base = self.election_timeout();
        let step = base / 2;
        let rank = u32::try_from(rank).unwrap_or(u32::MAX);
        let min = base + step * rank;
        (min, min + step)
    }

    /// The longest a follower waits for a silent leader before it stands: openraft's leader
    /// lease (the range's upper end) plus its timeout, for the last-ranked of `agents`.
    pub fn longest_stand(&self, agents: usize) -> Duration {
        let (_, max) = self.election_range(agents.saturating_sub(1));
        max * 2
    }

    /// `lease_ttl` with its default.
    pub fn lease_ttl(&self) -> Duration {
        self.lease_ttl.unwrap_or(DEFAULT_LEASE_TTL)
    }
}

/// The admin API.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// Bearer tokens accepted for mutating calls; several, so they can rotate.
    #[serde(default)]
    pub tokens: Vec<AdminToken>,
    /// Whether read-only endpoints answer without a token (default true: status and metrics
    /// are needed by scrapers and dashboards that hold no token).
    #[serde(default = "default_true")]
    pub open_reads: bool,
}

/// Written by hand: a derived `Default` would close reads when `[admin]` is absent, while the
/// documented default (and `open_reads`'s serde default) is open.
impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            tokens: Vec::new(),
            open_reads: true,
        }
    }
}

/// A named admin bearer token.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminToken {
    /// Who holds it; recorded as the actor of every call made with it.
    pub name: String,
    /// Where the token is read from.
    pub secret: SecretRef,
}

/// Where a secret is read from. Written as `{ file = "/run/secrets/x" }` or
/// `{ env = "VAR" }`; never inline, so config files can be shared and logged.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum SecretRef {
    /// A file whose content (trailing newline trimmed) is the secret.
    File(PathBuf),
    /// An environment variable holding the secret.
    Env(String),
}

/// A secret value. Its `Debug` and `Display` never show the value.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// The secret itself; call only where it is handed to a client library.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl Secret {
    /// A secret held in memory (one generated, or one a test sets).
    pub fn new(value: String) -> Secret {
        Secret(value)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// Why a secret could not be read.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// The file could not be read.
    #[error("cannot read secret file {path}: {source}")]
    File {
        /// The file named in the config.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The variable is unset or not valid UTF-8.
    #[error("environment variable {0} is not set")]
    EnvMissing(String),
    /// The secret is empty.
    #[error("secret from {0} is empty")]
    Empty(String),
}

impl SecretRef {
    /// Reads the secret now. Callers read at connect time so that a rotated file is used.
    pub fn load(&self) -> Result<Secret, SecretError> {
        let (value, origin) = match self {
            SecretRef::File(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| SecretError::File {
                    path: path.clone(),
                    source,
                })?;
                (text, format!("file {}", path.display()))
            }
            SecretRef::Env(var) => {
                let text = std::env::var(var).map_err(|_| SecretError::EnvMissing(var.clone()))?;
                (text, format!("env {var}"))
            }
        };
        let trimmed = value.trim_end_matches(['\n', '\r']);
        if trimmed.is_empty() {
            return Err(SecretError::Empty(origin));
        }
        Ok(Secret(trimmed.to_owned()))
    }
}

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
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, schemars::JsonSchema,
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

/// One region: its share of traffic and its API health targets.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegionConfig {
    /// Region name, e.g. `eu-west-3`.
    pub name: String,
    /// Route53 weight of the region when in service (0..=255).
    #[serde(default = "default_weight")]
    pub weight: u32,
    /// The HTTP endpoints whose health decides whether the region serves.
    #[serde(default)]
    pub api: Vec<HttpTargetConfig>,
}

/// How an HTTP probe uses connections.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ConnectionMode {
    /// A new TCP (and TLS) connection for every probe. The default: it exercises the whole
    /// path a new client takes (DNS, SYN through every firewall and load balancer, handshake),
    /// so a broken listener or a firewall change is seen even while old connections live.
    #[default]
    Fresh,
    /// Keep the connection alive between probes. Much cheaper, but a long-lived connection can
    /// hide faults that only new connections meet.
    Reuse,
}

/// An HTTP(S) health target.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpTargetConfig {
    /// Name, unique within the region.
    pub name: String,
    /// Full URL to GET.
    pub url: String,
    /// Accepted status codes; empty means any 2xx.
    #[serde(default)]
    pub expect_status: Vec<u16>,
    /// The body must contain this text.
    pub body_contains: Option<String>,
    /// The body must be JSON with this field (a JSON pointer such as `/status`).
    pub json_pointer: Option<String>,
    /// The field at `json_pointer` must equal this (string or JSON literal); without it the
    /// field only has to exist.
    pub json_equals: Option<String>,
    /// A slower answer counts as a failure.
    #[serde(default, with = "humantime_serde")]
    pub max_latency: Option<Duration>,
    /// Extra request headers (e.g. `Host`).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Verify the server certificate (default true).
    #[serde(default = "default_true")]
    pub tls_verify: bool,
    /// PEM file with extra CA certificates to trust.
    pub ca_file: Option<PathBuf>,
    /// Connection mode (default `fresh`).
    #[serde(default)]
    pub connection: ConnectionMode,
    /// Probe settings for this target.
    #[serde(default)]
    pub probe: ProbeOverrides,
}

/// The Postgres cluster.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresConfig {
    /// Cluster name, used in ids and labels.
    #[serde(default = "default_pg_cluster")]
    pub cluster: String,
    /// Password used for every member that sets none of its own.
    pub password: Option<SecretRef>,
    /// How an agent cut off from the quorum fences its local primary (default `read_only`).
    #[serde(default)]
    pub fence: PostgresFence,
    /// PEM CA bundle that signs the members' server certificates, for DSNs with
    /// `sslmode=require` (default: the public web roots).
    pub ca_file: Option<PathBuf>,
    /// Automatic promotion is refused when the best candidate would lose more WAL than this,
    /// in bytes (default 1 MiB); only a forced failover that accepts the loss goes past it.
    #[serde(default = "default_max_lag")]
    pub max_lag_on_failover: u64,
    /// How replicas connect to a newly promoted primary (`primary_conninfo`).
    #[serde(default)]
    pub replication: ReplicationConfig,
    /// The members: one primary and its streaming replicas.
    pub members: Vec<PostgresMemberConfig>,
}

/// The credentials replicas stream with, written into their `primary_conninfo` when they
/// are pointed at a new primary.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplicationConfig {
    /// Role with the REPLICATION attribute (default `replicator`).
    #[serde(default = "default_replication_user")]
    pub user: String,
    /// Its password, if it needs one.
    pub password: Option<SecretRef>,
    /// `sslmode` for the replication connection (default: libpq's, `prefer`).
    pub sslmode: Option<String>,
}

impl Default for ReplicationConfig {
    fn default() -> Self {
        ReplicationConfig {
            user: default_replication_user(),
            password: None,
            sslmode: None,
        }
    }
}

fn default_replication_user() -> String {
    "replicator".to_owned()
}

/// How a Postgres primary is fenced (made to refuse writes) and unfenced.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum PostgresFence {
    /// `ALTER SYSTEM SET default_transaction_read_only = on`, reload, and end client
    /// sessions (never WAL senders, so replicas keep streaming). Needs `ALTER SYSTEM` on that
    /// parameter, `pg_reload_conf()` and `pg_signal_backend`.
    #[default]
    ReadOnly,
    /// `ALTER ROLE <role> NOLOGIN` for the application role and end its sessions.
    RevokeLogin(String),
    /// Run a command: argv, with `FAILOVERD_ACTION` (`fence` or `unfence`),
    /// `FAILOVERD_MEMBER` and `FAILOVERD_DSN` (without password) in its environment.
    Command(Vec<String>),
}

/// One Postgres server.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresMemberConfig {
    /// What the writer record holds while this member is primary (default: the host of its
    /// DSN).
    pub writer_value: Option<String>,
    /// Member name, unique in the cluster.
    pub name: String,
    /// Region the member runs in.
    pub region: String,
    /// libpq-style connection string without the password, e.g.
    /// `host=10.0.1.5 port=5432 user=failoverd dbname=postgres`.
    pub dsn: String,
    /// Password for this member (overrides `postgres.password`).
    pub password: Option<SecretRef>,
    /// Preference among equally caught-up candidates: higher wins.
    #[serde(default = "default_pg_priority")]
    pub priority: u32,
    /// Never promote this member (e.g. a delayed or reporting replica).
    #[serde(default)]
    pub no_failover: bool,
    /// Probe settings for this member.
    #[serde(default)]
    pub probe: ProbeOverrides,
}

/// The Redis shards.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisConfig {
    /// Password for every member that sets none of its own.
    pub password: Option<SecretRef>,
    /// The shards.
    #[serde(default)]
    pub shards: Vec<RedisShardConfig>,
}

/// How long an agent may go without hearing from a quorum before it fences its local
/// primaries (default 3 s: twice the longest wait before an election with three agents, so a
/// leader change alone never fences; acknowledgements count however late they come within it,
/// so seconds of heavy loss and jitter between regions do not break it; the leader waits this
/// long, plus a margin, before promoting away from a silent region).
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(3);

/// How a shard replicates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RedisMode {
    /// One master with replicas (`REPLICAOF`).
    Replication,
    /// Redis Cluster nodes.
    Cluster,
}

/// One Redis shard (or one Redis Cluster).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisShardConfig {
    /// Shard name, unique.
    pub name: String,
    /// Replication mode.
    pub mode: RedisMode,
    /// Password for this shard's members (overrides `redis.password`).
    pub password: Option<SecretRef>,
    /// PEM file with the CA certificates that sign the members' TLS certificates
    /// (`rediss://` URLs); without it the system's roots are used.
    pub ca_file: Option<PathBuf>,
    /// Cluster mode: the `cluster-node-timeout` the nodes run with (default 15 s). While a
    /// majority of the masters can vote, a failed master's slots are left to the cluster's
    /// own election for twice this long before failoverd takes them over.
    #[serde(default, with = "humantime_serde")]
    pub cluster_node_timeout: Option<Duration>,
    /// The members.
    pub members: Vec<RedisMemberConfig>,
}

/// The `cluster-node-timeout` assumed when a cluster-mode shard sets none (Redis's default).
pub const DEFAULT_CLUSTER_NODE_TIMEOUT: Duration = Duration::from_secs(15);

impl RedisShardConfig {
    /// The cluster's `cluster-node-timeout`.
    pub fn cluster_node_timeout(&self) -> Duration {
        self.cluster_node_timeout
            .unwrap_or(DEFAULT_CLUSTER_NODE_TIMEOUT)
    }
}

/// One Redis server.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisMemberConfig {
    /// What the shard's writer record holds while this member is master (default: the host
    /// of its URL).
    pub writer_value: Option<String>,
    /// Member name, unique in the shard.
    pub name: String,
    /// Region the member runs in.
    pub region: String,
    /// `redis://host:port` or `rediss://host:port` (TLS); no password in the URL.
    pub url: String,
    /// Probe settings for this member.
    #[serde(default)]
    pub probe: ProbeOverrides,
}

/// The Route53 weighted record set that spreads traffic over the regions.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route53Config {
    /// Hosted zone id.
    pub zone_id: String,
    /// Record name, e.g. `api.example.com.`.
    pub record_name: String,
    /// Record type: `A`, `AAAA` or `CNAME`.
    #[serde(default = "default_record_type")]
    pub record_type: String,
    /// Record TTL in seconds (default 30).
    #[serde(default = "default_ttl")]
    pub ttl: u32,
    /// API endpoint override (an emulator in tests and labs).
    pub endpoint_url: Option<String>,
    /// The TXT record holding the current epoch (default `_failoverd-epoch.<record_name>`).
    /// Every change batch deletes its value and writes the next one, so a batch from a
    /// stale leader fails as a whole.
    pub epoch_record: Option<String>,
    /// Region the API requests are signed for (default `us-east-1`, where Route53 lives).
    #[serde(default = "default_signing_region")]
    pub signing_region: String,
    /// Static credentials (an emulator, or a host without a role). Without them the default
    /// AWS credential chain is used (IRSA web identity on EKS, instance profile, env).
    pub credentials: Option<Route53Credentials>,
    /// How long to wait for a change to be INSYNC before reporting it (default 60 s).
    #[serde(default, with = "humantime_serde")]
    pub insync_timeout: Option<Duration>,
    /// One weighted record per region, keyed by region name.
    pub regions: BTreeMap<String, Route53RegionRecord>,
    /// Records naming the writable member of a group (`postgres/<cluster>`,
    /// `redis/<shard>`), rewritten in the epoch-fenced batch after each promotion.
    #[serde(default)]
    pub writers: BTreeMap<String, WriterRecordConfig>,
}

/// A record that names a group's writable member.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WriterRecordConfig {
    /// Record name, e.g. `db-writer.example.com.`.
    pub name: String,
    /// `A`, `AAAA` or `CNAME` (default CNAME).
    #[serde(default = "default_record_type")]
    pub record_type: String,
    /// TTL in seconds (default 30).
    #[serde(default = "default_ttl")]
    pub ttl: u32,
}

/// Static AWS credentials.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route53Credentials {
    /// Access key id.
    pub access_key_id: SecretRef,
    /// Secret access key.
    pub secret_access_key: SecretRef,
}

/// Default bound on waiting for INSYNC.
pub const DEFAULT_INSYNC_TIMEOUT: Duration = Duration::from_secs(60);

impl Route53Config {
    /// The epoch TXT record's name.
    pub fn epoch_record(&self) -> String {
        self.epoch_record
            .clone()
            .unwrap_or_else(|| format!("_failoverd-epoch.{}", self.record_name))
    }
    /// `insync_timeout` with its default.
    pub fn insync_timeout(&self) -> Duration {
        self.insync_timeout.unwrap_or(DEFAULT_INSYNC_TIMEOUT)
    }
}

fn default_signing_region() -> String {
    "us-east-1".to_owned()
}

/// The weighted record of one region.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route53RegionRecord {
    /// The record's set identifier.
    pub set_identifier: String,
    /// The record's value (an address or a load balancer name).
    pub value: String,
    /// The region agent's gate, `http(s)://host:port/v1/gate/<region>`, for the Route53
    /// health check that `failoverd route53 apply` creates and attaches to this record.
    pub gate_url: Option<String>,
}

fn default_true() -> bool {
    true
}
fn default_weight() -> u32 {
    100
}
fn default_pg_cluster() -> String {
    "main".to_owned()
}
fn default_max_lag() -> u64 {
    DEFAULT_MAX_LAG_ON_FAILOVER
}
fn default_pg_priority() -> u32 {
    DEFAULT_PG_PRIORITY
}
fn default_record_type() -> String {
    "CNAME".to_owned()
}
fn default_ttl() -> u32 {
    DEFAULT_ROUTE53_TTL
}

/// One broken rule, with the key it concerns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigIssue {
    /// Key path, e.g. `regions[1].api[0].url`.
    pub key: String,
    /// What is wrong, as the rule that is broken.
    pub message: String,
}

impl fmt::Display for ConfigIssue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file is missing or not valid TOML/YAML.
    #[error("cannot read config {path}: {message}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The parser's message.
        message: String,
    },
    /// A key has the wrong type, is unknown, or a required key is missing.
    #[error("{key}: {message}")]
    Parse {
        /// Key path of the offending value.
        key: String,
        /// What is wrong.
        message: String,
    },
    /// The file parsed, but rules across fields are broken.
    #[error("{} configuration error(s):\n{}", .0.len(), .0.iter().map(|i| format!("  - {i}")).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<ConfigIssue>),
}

impl ConfigError {
    /// Every problem, one per line, each naming its key.
    pub fn issues(&self) -> Vec<ConfigIssue> {
        match self {
            ConfigError::Read { path, message } => vec![ConfigIssue {
                key: path.display().to_string(),
                message: message.clone(),
            }],
            ConfigError::Parse { key, message } => vec![ConfigIssue {
                key: key.clone(),
                message: message.clone(),
            }],
            ConfigError::Invalid(issues) => issues.clone(),
        }
    }
}

impl Config {
    /// Loads `path` (format by extension: `.toml`, `.yaml`, `.yml`), applies
    /// `FAILOVERD__SECTION__KEY` overrides from the environment, and validates.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        Self::load_with_env(path, std::env::vars())
    }

    /// Like [`Config::load`] with an explicit environment (for tests).
    pub fn load_with_env(
        path: &Path,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let format = match path.extension().and_then(|e| e.to_str()) {
            Some("toml") => config::FileFormat::Toml,
            Some("yaml") | Some("yml") => config::FileFormat::Yaml,
            _ => {
                return Err(ConfigError::Read {
                    path: path.to_owned(),
                    message: "file name must end in .toml, .yaml or .yml".to_owned(),
                })
            }
        };
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        Self::from_str_with_env(&text, format, env).map_err(|e| match e {
            ConfigError::Read { message, .. } => ConfigError::Read {
                path: path.to_owned(),
                message,
            },
            other => other,
        })
    }

    /// Parses and validates config text (for tests and embedding).
    pub fn from_str_with_env(
        text: &str,
        format: config::FileFormat,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let overrides: config::Map<String, String> = env
            .into_iter()
            .filter(|(k, _)| k.starts_with("FAILOVERD__"))
            .collect();
        let merged = config::Config::builder()
            .add_source(config::File::from_str(text, format))
            .add_source(
                config::Environment::with_prefix("FAILOVERD")
                    .prefix_separator("__")
                    .separator("__")
                    .source(Some(overrides)),
            )
            .build()
            .map_err(|e| ConfigError::Read {
                path: PathBuf::from("<inline>"),
                message: e.to_string(),
            })?;
        let config: Config = serde_path_to_error::deserialize(merged).map_err(|e| {
            let path = e.path().to_string();
            match e.into_inner() {
                // Config reports a missing field with its own path, which drops the dot after
                // an index (`regions[1]api[0]url`): name the missing key by our path instead.
                config::ConfigError::NotFound(field_path) => {
                    let field = field_path.rsplit(['.', ']']).next().unwrap_or(&field_path);
                    ConfigError::Parse {
                        key: if path == "." {
                            field.to_owned()
                        } else {
                            format!("{path}.{field}")
                        },
                        message: "missing required key".to_owned(),
                    }
                }
                other => ConfigError::Parse {
                    message: strip_config_key_suffix(&other.to_string()),
                    key: path,
                },
            }
        })?;
        let issues = config.validate();
        if issues.is_empty() {
            Ok(config)
        } else {
            Err(ConfigError::Invalid(issues))
        }
    }

    /// The other agents: `peers` without this agent's own entry.
    pub fn other_peers(&self) -> impl Iterator<Item = &PeerConfig> {
        self.peers.iter().filter(|p| p.id != self.agent.id)
    }

    /// How long SIGTERM waits before the process exits anyway.
    pub fn shutdown_grace(&self) -> Duration {
        self.agent.shutdown_grace.unwrap_or(DEFAULT_SHUTDOWN_GRACE)
    }

    /// Checks every rule that spans fields; returns all broken rules (empty when valid).
    pub fn validate(&self) -> Vec<ConfigIssue> {
        let mut v = Validator::default();
        let regions: HashSet<&str> = self.regions.iter().map(|r| r.name.as_str()).collect();

        // Agent.
        v.name("agent.id", &self.agent.id);
        if !regions.contains(self.agent.region.as_str()) {
            v.push(
                "agent.region",
                format!("region {:?} is not one of `regions`", self.agent.region),
            );
        }
        if Some(self.agent.admin_listen) == self.agent.peer_listen {
            v.push(
                "agent.peer_listen",
                "must differ from agent.admin_listen: peer and admin traffic use separate listeners",
            );
        }
        if self.agent.data_dir.as_os_str().is_empty() {
            v.push("agent.data_dir", "must not be empty");
        }
        if self.agent.shutdown_grace == Some(Duration::ZERO) {
            v.push("agent.shutdown_grace", "must be greater than 0");
        }

        // Peers.
        let mut agent_ids = HashSet::new();
        for (i, peer) in self.peers.iter().enumerate() {
            let key = format!("peers[{i}]");
            v.name(&format!("{key}.id"), &peer.id);
            if peer.id == self.agent.id && peer.region != self.agent.region {
                v.push(
                    format!("{key}.region"),
                    format!(
                        "this is the entry of this agent (agent.id {:?}), so its region must be agent.region {:?}, not {:?}",
                        peer.id, self.agent.region, peer.region
                    ),
                );
            }
            if !agent_ids.insert(peer.id.as_str()) {
                v.push(
                    format!("{key}.id"),
                    format!(
                        "agent id {:?} is used twice (agent ids must be unique)",
                        peer.id
                    ),
                );
            }
            if !regions.contains(peer.region.as_str()) {
                v.push(
                    format!("{key}.region"),
                    format!("region {:?} is not one of `regions`", peer.region),
                );
            }
            v.url(
                &format!("{key}.peer_url"),
                &peer.peer_url,
                &["http", "https"],
            );
            if let Some(url) = &peer.admin_url {
                v.url(&format!("{key}.admin_url"), url, &["http", "https"]);
            }
        }

        // Admin tokens.
        let mut token_names = HashSet::new();
        for (i, token) in self.admin.tokens.iter().enumerate() {
            let key = format!("admin.tokens[{i}]");
            v.name(&format!("{key}.name"), &token.name);
            if !token_names.insert(token.name.as_str()) {
                v.push(
                    format!("{key}.name"),
                    format!("token name {:?} is used twice", token.name),
                );
            }
            v.secret(&format!("{key}.secret"), &token.secret);
        }
        if let Some(secret) = &self.cluster.secret {
            v.secret("cluster.secret", secret);
        }
        let agents = self.other_peers().count() + 1;
        if agents > 1 {
            if self.cluster.secret.is_none() {
                v.push(
                    "cluster.secret",
                    "is required when peers are configured: peer traffic must be authenticated",
                );
            }
            if self.agent.peer_listen.is_none() {
                v.push("agent.peer_listen", "is required when peers are configured");
            }
        }
        if let Some(q) = self.cluster.quorum {
            let majority = agents / 2 + 1;
            if q < majority || q > agents {
                v.push(
                    "cluster.quorum",
                    format!(
                        "quorum {q} must be between a majority ({majority}) and the number of agents ({agents}): \
                         below a majority, agents cut off from each other could both decide"
                    ),
                );
            }
        }
        let (heartbeat, election) = (
            self.cluster.heartbeat_interval(),
            self.cluster.election_timeout(),
        );
        if heartbeat.is_zero() || heartbeat * 2 >= election {
            v.push(
                "cluster.heartbeat_interval",
                format!(
                    "heartbeat_interval ({}) must be > 0 and less than half of election_timeout ({})",
                    humantime::format_duration(heartbeat),
                    humantime::format_duration(election)
                ),
            );
        }
        let longest_stand = self.cluster.longest_stand(agents);
        if self.cluster.lease_ttl() <= longest_stand {
            v.push(
                "cluster.lease_ttl",
                format!(
                    "lease_ttl ({}) must be longer than the longest wait before an election ({} with {agents} {}): \
                     an ordinary leader change must not fence primaries",
                    humantime::format_duration(self.cluster.lease_ttl()),
                    humantime::format_duration(longest_stand),
                    if agents == 1 { "agent" } else { "agents" }
                ),
            );
        }
        if let Some(PostgresFence::Command(argv)) = self.postgres.as_ref().map(|p| &p.fence) {
            if argv.is_empty() {
                v.push("postgres.fence.command", "must name a program");
            }
        }
        if let Some(PostgresFence::RevokeLogin(role)) = self.postgres.as_ref().map(|p| &p.fence) {
            v.name("postgres.fence.revoke_login", role);
        }
        if let Some(tls) = &self.tls {
            for (key, path) in [
                ("tls.cert_file", Some(&tls.cert_file)),
                ("tls.key_file", Some(&tls.key_file)),
                ("tls.ca_file", tls.ca_file.as_ref()),
            ] {
                if let Some(path) = path {
                    if let Err(e) = std::fs::metadata(path) {
                        v.push(key, format!("cannot read {}: {e}", path.display()));
                    }
                }
            }
            if tls.require_client_cert && (tls.ca_file.is_none() || !tls.peer) {
                v.push(
                    "tls.require_client_cert",
                    "needs tls.ca_file and tls.peer = true: client certificates are checked against the cluster CA on the peer listener",
                );
            }
            if tls.peer {
                for (i, peer) in self.peers.iter().enumerate() {
                    if !peer.peer_url.starts_with("https://") {
                        v.push(
                            format!("peers[{i}].peer_url"),
                            "must use https:// when tls.peer is on",
                        );
                    }
                }
            }
        }
        if self.cluster.stale_after.is_some_and(|s| s.is_zero()) {
            v.push("cluster.stale_after", "must be greater than 0");
        }

        // Probe defaults on their own (per-target results are checked below).
        let global = ProbeOverrides {
            interval: self.probe.interval,
            timeout: self.probe.timeout,
            rise: self.probe.rise,
            fall: self.probe.fall,
        };
        v.probe_overrides("probe", &global);
        v.interval("probe.fast_interval".into(), self.probe.fast_interval);
        for kind in [TargetKind::Http, TargetKind::Postgres, TargetKind::Redis] {
            v.probe_overrides(&format!("probe.{kind}"), self.probe.kind(kind));
        }

        // Regions and their API targets.
        let mut region_names = HashSet::new();
        if self.regions.is_empty() {
            v.push("regions", "at least one region is required");
        }
        for (i, region) in self.regions.iter().enumerate() {
            let key = format!("regions[{i}]");
            v.name(&format!("{key}.name"), &region.name);
            if !region_names.insert(region.name.as_str()) {
                v.push(
                    format!("{key}.name"),
                    format!("region {:?} is defined twice", region.name),
                );
            }
            if region.weight > MAX_WEIGHT {
                v.push(
                    format!("{key}.weight"),
                    format!("weight {} is out of range 0..=255", region.weight),
                );
            }
            let mut api_names = HashSet::new();
            for (j, api) in region.api.iter().enumerate() {
                let key = format!("{key}.api[{j}]");
                v.name(&format!("{key}.name"), &api.name);
                if !api_names.insert(api.name.as_str()) {
                    v.push(
                        format!("{key}.name"),
                        format!(
                            "API target {:?} is defined twice in region {:?}",
                            api.name, region.name
                        ),
                    );
                }
                v.http_target(&key, api, &self.probe);
            }
        }

        // Postgres.
        if let Some(pg) = &self.postgres {
            v.name("postgres.cluster", &pg.cluster);
            if let Some(secret) = &pg.password {
                v.secret("postgres.password", secret);
            }
            if let Some(ca) = &pg.ca_file {
                if let Err(e) = std::fs::metadata(ca) {
                    v.push(
                        "postgres.ca_file",
                        format!("cannot read {}: {e}", ca.display()),
                    );
                }
            }
            if pg.members.is_empty() {
                v.push("postgres.members", "at least one member is required");
            }
            let mut names = HashSet::new();
            for (i, m) in pg.members.iter().enumerate() {
                let key = format!("postgres.members[{i}]");
                v.name(&format!("{key}.name"), &m.name);
                if !names.insert(m.name.as_str()) {
                    v.push(
                        format!("{key}.name"),
                        format!("member {:?} is defined twice", m.name),
                    );
                }
                v.region(&format!("{key}.region"), &m.region, &regions);
                match m.dsn.parse::<tokio_postgres::Config>() {
                    Err(e) => v.push(format!("{key}.dsn"), format!("not a valid DSN: {e}")),
                    Ok(parsed) => {
                        if parsed.get_hosts().is_empty() {
                            v.push(format!("{key}.dsn"), "must name a host");
                        }
                        if parsed.get_password().is_some() {
                            v.push(
                                format!("{key}.dsn"),
                                "must not contain a password: use `password = { file = ... }`",
                            );
                        }
                    }
                }
                if let Some(secret) = &m.password {
                    v.secret(&format!("{key}.password"), secret);
                }
                v.target_probe(&key, TargetKind::Postgres, &m.probe, &self.probe);
            }
            if !pg.members.is_empty() && pg.members.iter().all(|m| m.no_failover) {
                v.push(
                    "postgres.members",
                    "every member has no_failover = true: no member could ever be promoted",
                );
            }
        }

        // Redis.
        if let Some(secret) = &self.redis.password {
            v.secret("redis.password", secret);
        }
        let mut shard_names = HashSet::new();
        for (i, shard) in self.redis.shards.iter().enumerate() {
            let key = format!("redis.shards[{i}]");
            v.name(&format!("{key}.name"), &shard.name);
            if !shard_names.insert(shard.name.as_str()) {
                v.push(
                    format!("{key}.name"),
                    format!("shard {:?} is defined twice", shard.name),
                );
            }
            if let Some(secret) = &shard.password {
                v.secret(&format!("{key}.password"), secret);
            }
            if shard.members.is_empty() {
                v.push(format!("{key}.members"), "at least one member is required");
            }
            if let Some(ca) = &shard.ca_file {
                if let Err(e) = std::fs::metadata(ca) {
                    v.push(
                        format!("{key}.ca_file"),
                        format!("cannot read {}: {e}", ca.display()),
                    );
                }
                if shard
                    .members
                    .iter()
                    .any(|m| !m.url.starts_with("rediss://"))
                {
                    v.push(
                        format!("{key}.ca_file"),
                        "is only used with TLS: every member's url must start with rediss://",
                    );
                }
            }
            match (shard.mode, shard.cluster_node_timeout) {
                (RedisMode::Replication, Some(_)) => v.push(
                    format!("{key}.cluster_node_timeout"),
                    "is only used with mode = \"cluster\"",
                ),
                (RedisMode::Cluster, Some(t)) if t.is_zero() => v.push(
                    format!("{key}.cluster_node_timeout"),
                    "must be greater than 0",
                ),
                _ => {}
            }
            let mut names = HashSet::new();
            let mut addrs = HashSet::new();
            for (j, m) in shard.members.iter().enumerate() {
                let key = format!("{key}.members[{j}]");
                v.name(&format!("{key}.name"), &m.name);
                if !names.insert(m.name.as_str()) {
                    v.push(
                        format!("{key}.name"),
                        format!(
                            "member {:?} is defined twice in shard {:?}",
                            m.name, shard.name
                        ),
                    );
                }
                v.region(&format!("{key}.region"), &m.region, &regions);
                if let Some(url) = v.url(&format!("{key}.url"), &m.url, &["redis", "rediss"]) {
                    if !url.password().unwrap_or("").is_empty() {
                        v.push(
                            format!("{key}.url"),
                            "must not contain a password: use `password = { file = ... }`",
                        );
                    }
                    // The client connects to 6379 when the URL names no port, and host names
                    // are case-insensitive: compare what is actually dialed.
                    let host = url.host_str().map(str::to_ascii_lowercase);
                    if !addrs.insert((host, url.port().unwrap_or(6379))) {
                        v.push(
                            format!("{key}.url"),
                            format!("address {:?} is used by two members", m.url),
                        );
                    }
                }
                v.target_probe(&key, TargetKind::Redis, &m.probe, &self.probe);
            }
        }

        // Route53.
        if let Some(r53) = &self.route53 {
            if r53.zone_id.trim().is_empty() {
                v.push("route53.zone_id", "must not be empty");
            }
            if r53.record_name.trim().is_empty() {
                v.push("route53.record_name", "must not be empty");
            }
            if !["A", "AAAA", "CNAME"].contains(&r53.record_type.as_str()) {
                v.push(
                    "route53.record_type",
                    format!("{:?} is not one of A, AAAA, CNAME", r53.record_type),
                );
            }
            if r53.ttl == 0 || r53.ttl > 172_800 {
                v.push(
                    "route53.ttl",
                    format!("ttl {} is out of range 1..=172800", r53.ttl),
                );
            }
            if let Some(url) = &r53.endpoint_url {
                v.url("route53.endpoint_url", url, &["http", "https"]);
            }
            let mut set_ids = HashSet::new();
            for (name, record) in &r53.regions {
                let key = format!("route53.regions.{name}");
                if !regions.contains(name.as_str()) {
                    v.push(&key, format!("region {name:?} is not one of `regions`"));
                }
                if let Some(url) = &record.gate_url {
                    v.url(&format!("{key}.gate_url"), url, &["http", "https"]);
                }
                if record.set_identifier.trim().is_empty() {
                    v.push(format!("{key}.set_identifier"), "must not be empty");
                } else if !set_ids.insert(record.set_identifier.as_str()) {
                    v.push(
                        format!("{key}.set_identifier"),
                        format!("set identifier {:?} is used twice", record.set_identifier),
                    );
                }
                if record.value.trim().is_empty() {
                    v.push(format!("{key}.value"), "must not be empty");
                }
            }
            if let Some(record) = &r53.epoch_record {
                if record.trim().is_empty() {
                    v.push("route53.epoch_record", "must not be empty");
                }
            }
            if let Some(c) = &r53.credentials {
                v.secret("route53.credentials.access_key_id", &c.access_key_id);
                v.secret(
                    "route53.credentials.secret_access_key",
                    &c.secret_access_key,
                );
            }
            let mut writer_groups: HashSet<String> = HashSet::new();
            if let Some(pg) = &self.postgres {
                writer_groups.insert(format!("postgres/{}", pg.cluster));
            }
            for shard in &self.redis.shards {
                if shard.mode == RedisMode::Replication {
                    writer_groups.insert(format!("redis/{}", shard.name));
                }
            }
            for (group, w) in &r53.writers {
                let key = format!("route53.writers.\"{group}\"");
                if !writer_groups.contains(group) {
                    v.push(
                        &key,
                        format!("{group:?} is not postgres/<cluster> or redis/<replication shard> of this config"),
                    );
                }
                if w.name.trim().is_empty() {
                    v.push(format!("{key}.name"), "must not be empty");
                }
                if !["A", "AAAA", "CNAME"].contains(&w.record_type.as_str()) {
                    v.push(
                        format!("{key}.record_type"),
                        format!("{:?} is not one of A, AAAA, CNAME", w.record_type),
                    );
                }
            }
            if r53.insync_timeout.is_some_and(|t| t.is_zero()) {
                v.push("route53.insync_timeout", "must be more than 0");
            }
            for region in &self.regions {
                if !r53.regions.contains_key(&region.name) {
                    v.push(
                        "route53.regions",
                        format!("region {:?} has no weighted record", region.name),
                    );
                }
            }
        }

        // Failover.
        let f = &self.failover;
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
        if let Some(n) = &self.notify {
            v.secret("notify.webhook_url", &n.webhook_url);
            if n.attempts == Some(0) {
                v.push("notify.attempts", "must be at least 1");
            }
            if n.timeout.is_some_and(|t| t.is_zero()) {
                v.push("notify.timeout", "must be more than 0");
            }
        }
        if let Some(pg) = &self.postgres {
            if pg.replication.user.trim().is_empty() {
                v.push("postgres.replication.user", "must not be empty");
            }
            if let Some(secret) = &pg.replication.password {
                v.secret("postgres.replication.password", secret);
            }
            if let Some(mode) = &pg.replication.sslmode {
                let modes = [
                    "disable",
                    "allow",
                    "prefer",
                    "require",
                    "verify-ca",
                    "verify-full",
                ];
                if !modes.contains(&mode.as_str()) {
                    v.push(
                        "postgres.replication.sslmode",
                        format!("{mode:?} is not one of {}", modes.join(", ")),
                    );
                }
            }
        }

        v.issues
    }
}

/// Config's own messages end in "for key `x[1]a`" (with a misplaced dot); the key is shown
/// separately, so that suffix is dropped.
fn strip_config_key_suffix(message: &str) -> String {
    match message.rfind(" for key `") {
        Some(i) if message.ends_with('`') => message[..i].to_owned(),
        _ => message.to_owned(),
    }
}

#[derive(Default)]
struct Validator {
    issues: Vec<ConfigIssue>,
}

impl Validator {
    fn push(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.issues.push(ConfigIssue {
            key: key.into(),
            message: message.into(),
        });
    }

    /// Names appear in target ids, metric labels and URLs: keep them simple.
    fn name(&mut self, key: &str, name: &str) {
        if name.is_empty() {
            self.push(key, "must not be empty");
        } else if !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        {
            self.push(
                key,
                format!("{name:?} may only contain letters, digits, '-', '_' and '.'"),
            );
        }
    }

    fn region(&mut self, key: &str, region: &str, regions: &HashSet<&str>) {
        if !regions.contains(region) {
            self.push(key, format!("region {region:?} is not one of `regions`"));
        }
    }

    fn url(&mut self, key: &str, text: &str, schemes: &[&str]) -> Option<url::Url> {
        match url::Url::parse(text) {
            Err(e) => {
                self.push(key, format!("{text:?} is not a valid URL: {e}"));
                None
            }
            Ok(url) if !schemes.contains(&url.scheme()) => {
                self.push(
                    key,
                    format!(
                        "scheme {:?} is not one of {}",
                        url.scheme(),
                        schemes.join(", ")
                    ),
                );
                None
            }
            Ok(url) if url.host_str().is_none_or(str::is_empty) => {
                self.push(key, format!("{text:?} has no host"));
                None
            }
            Ok(url) => Some(url),
        }
    }

    fn secret(&mut self, key: &str, secret: &SecretRef) {
        if let Err(e) = secret.load() {
            self.push(key, e.to_string());
        }
    }

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
    fn target_probe(
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

    fn http_target(&mut self, key: &str, api: &HttpTargetConfig, probe: &ProbeConfig) {
        self.url(&format!("{key}.url"), &api.url, &["http", "https"]);
        for (k, status) in api.expect_status.iter().enumerate() {
            if !(100..=599).contains(status) {
                self.push(
                    format!("{key}.expect_status[{k}]"),
                    format!("{status} is not an HTTP status (100..=599)"),
                );
            }
        }
        if let Some(pointer) = &api.json_pointer {
            if !pointer.starts_with('/') {
                self.push(
                    format!("{key}.json_pointer"),
                    format!("{pointer:?} is not a JSON pointer (it must start with '/')"),
                );
            }
        } else if api.json_equals.is_some() {
            self.push(format!("{key}.json_equals"), "needs json_pointer");
        }
        for name in api.headers.keys() {
            if reqwest::header::HeaderName::from_bytes(name.as_bytes()).is_err() {
                self.push(
                    format!("{key}.headers.{name}"),
                    format!("{name:?} is not a valid header name"),
                );
            }
        }
        if let Some(ca) = &api.ca_file {
            if let Err(e) = std::fs::metadata(ca) {
                self.push(
                    format!("{key}.ca_file"),
                    format!("cannot read {}: {e}", ca.display()),
                );
            }
        }
        let settings = self.target_probe(key, TargetKind::Http, &api.probe, probe);
        if let Some(max) = api.max_latency {
            if max >= settings.timeout {
                self.push(
                    format!("{key}.max_latency"),
                    format!(
                        "max_latency ({}) must be < the probe timeout ({})",
                        humantime::format_duration(max),
                        humantime::format_duration(settings.timeout)
                    ),
                );
            }
        }
    }
}

mod summary;

#[cfg(test)]
mod tests;
