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
//! This module owns no I/O beyond reading the config file, checking that secrets resolve and
//! that the files it names exist.
//!
//! This file holds [`Config`], loading and [`ConfigError`]. Each section has its own file with
//! its types, `DEFAULT_*` constants and `validate_*` rules: `agent.rs` (`[agent]`, `[admin]`,
//! `[tls]`), `cluster.rs` (`[[peers]]`, `[cluster]`), `probe.rs` (`[probe]`), `targets.rs`
//! (`[[regions]]`, `[postgres]`, `[redis]`), `route53.rs`, `failover.rs` (`[failover]`,
//! `[notify]`) and `secret.rs` (secret references); `validate.rs` runs the rules in order.
//! Everything public is re-exported here: `crate::config::X` is the one path to each item.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

mod agent;
mod cluster;
mod failover;
mod probe;
mod route53;
mod secret;
mod targets;
mod validate;

pub use agent::{
    AdminConfig, AdminToken, AgentConfig, LogFormat, ProbeScope, TlsConfig, DEFAULT_SHUTDOWN_GRACE,
};
pub use cluster::{
    ClusterConfig, PeerConfig, DEFAULT_DATA_PATH_DOWN_AFTER, DEFAULT_ELECTION_TIMEOUT,
    DEFAULT_HEARTBEAT, DEFAULT_LEASE_TTL, DEFAULT_STALE_AFTER,
};
pub use failover::{
    FailoverConfig, HookConfig, HookTimeout, NotifyConfig, DEFAULT_COOLDOWN,
    DEFAULT_FAILBACK_HOLD_DOWN, DEFAULT_RETRY_BACKOFF, DEFAULT_STEP_ATTEMPTS, DEFAULT_STEP_TIMEOUT,
};
pub use probe::{
    ProbeConfig, ProbeOverrides, ProbeSettings, TargetKind, DEFAULT_FALL, DEFAULT_FAST_INTERVAL,
    DEFAULT_INTERVAL, DEFAULT_RISE, DEFAULT_TIMEOUT, MIN_INTERVAL,
};
pub use route53::{
    Route53Config, Route53Credentials, Route53RegionRecord, WriterRecordConfig,
    DEFAULT_INSYNC_TIMEOUT, DEFAULT_ROUTE53_TTL,
};
pub use secret::{Secret, SecretError, SecretRef};
pub use targets::{
    ConnectionMode, HttpTargetConfig, PostgresConfig, PostgresFence, PostgresMemberConfig,
    RedisConfig, RedisMemberConfig, RedisMode, RedisSelfFencing, RedisShardConfig, RegionConfig,
    RejoinConfig, ReplicationConfig, ReplicationSlots, SynchronousConfig, SynchronousMode,
    DEFAULT_CLUSTER_NODE_TIMEOUT, DEFAULT_MAX_LAG_ON_FAILOVER, DEFAULT_PG_PRIORITY, MAX_WEIGHT,
};

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

/// serde's default for the switches that are on unless turned off.
fn default_true() -> bool {
    true
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
}

/// Config's own messages end in "for key `x[1]a`" (with a misplaced dot); the key is shown
/// separately, so that suffix is dropped.
fn strip_config_key_suffix(message: &str) -> String {
    match message.rfind(" for key `") {
        Some(i) if message.ends_with('`') => message[..i].to_owned(),
        _ => message.to_owned(),
    }
}

#[cfg(test)]
mod tests;
