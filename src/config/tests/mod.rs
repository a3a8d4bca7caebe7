//! Specifications of configuration loading: parsing, environment overrides, where probe
//! settings come from, every rule of [`Config::validate`] (each pinned to its exact key path)
//! and secrets.
//!
//! This file holds the valid configuration every test starts from, the edits that break it,
//! and the runner of the table of broken rules; each section's file holds its cases and its
//! own tests.
//!
//! Every test passes its environment explicitly, so none depends on the process environment.
//! Secrets are files in a temporary directory; the one exception is the "unset environment
//! variable" rule, which names a variable no one sets.

use std::path::Path;
use std::time::Duration;

use tempfile::TempDir;

use super::{Config, ConfigError, ConfigIssue};

mod agent;
mod cluster;
mod failover;
mod parse;
mod probe;
mod route53;
mod secret;
mod targets;

// ---------------------------------------------------------------------------------------------
// The valid configuration every other test starts from.
// ---------------------------------------------------------------------------------------------

/// The cluster secret line of the base config: a file shipped with the tests.
const CLUSTER_SECRET: &str = concat!(
    "secret = { file = \"",
    env!("CARGO_MANIFEST_DIR"),
    "/src/config/testdata/cluster-secret\" }"
);

/// This agent, in the primary region, and the cluster secret peers require.
const AGENT: &str = concat!(
    r#"
[agent]
id = "eu-west-3-a"
region = "eu-west-3"
admin_listen = "127.0.0.1:7070"
peer_listen = "127.0.0.1:7071"
data_dir = "/var/lib/failoverd"

[cluster]
"#,
    "secret = { file = \"",
    env!("CARGO_MANIFEST_DIR"),
    "/src/config/testdata/cluster-secret\" }\n"
);

/// Three regions, one API target each.
const REGIONS: &str = r#"
[[regions]]
name = "eu-west-3"
weight = 100

[[regions.api]]
name = "api-par"
url = "https://api.eu-west-3.example.com/healthz"

[[regions]]
name = "eu-central-1"
weight = 100

[[regions.api]]
name = "api-fra"
url = "https://api.eu-central-1.example.com/healthz"

[[regions]]
name = "us-east-1"
weight = 50

[[regions.api]]
name = "api-iad"
url = "https://api.us-east-1.example.com/healthz"
"#;

/// A Postgres cluster with one member per region.
const POSTGRES: &str = r#"
[postgres]
cluster = "main"

[[postgres.members]]
name = "pg-par"
region = "eu-west-3"
dsn = "host=pg-par.internal port=5432 user=failoverd dbname=postgres"
priority = 200

[[postgres.members]]
name = "pg-fra"
region = "eu-central-1"
dsn = "host=pg-fra.internal port=5432 user=failoverd dbname=postgres"

[[postgres.members]]
name = "pg-iad"
region = "us-east-1"
dsn = "host=pg-iad.internal port=5432 user=failoverd dbname=postgres"
"#;

/// One replication shard and one Redis Cluster.
const REDIS: &str = r#"
[[redis.shards]]
name = "sessions"
mode = "replication"

[[redis.shards.members]]
name = "sessions-par"
region = "eu-west-3"
url = "redis://sessions-par.internal:6379"

[[redis.shards.members]]
name = "sessions-fra"
region = "eu-central-1"
url = "redis://sessions-fra.internal:6379"

[[redis.shards]]
name = "cache"
mode = "cluster"

[[redis.shards.members]]
name = "cache-par"
region = "eu-west-3"
url = "rediss://cache-par.internal:6380"

[[redis.shards.members]]
name = "cache-fra"
region = "eu-central-1"
url = "rediss://cache-fra.internal:6380"

[[redis.shards.members]]
name = "cache-iad"
region = "us-east-1"
url = "rediss://cache-iad.internal:6380"
"#;

/// One weighted record per region.
const ROUTE53: &str = r#"
[route53]
zone_id = "Z0EXAMPLE"
record_name = "api.example.com."

[route53.regions.eu-west-3]
set_identifier = "eu-west-3"
value = "lb-par.example.com"

[route53.regions.eu-central-1]
set_identifier = "eu-central-1"
value = "lb-fra.example.com"

[route53.regions.us-east-1]
set_identifier = "us-east-1"
value = "lb-iad.example.com"
"#;

/// A valid, minimal configuration: three regions with one API target each, a three-member
/// Postgres cluster, a Redis replication shard and a Redis Cluster, and Route53.
fn valid_toml() -> String {
    [AGENT, REGIONS, POSTGRES, REDIS, ROUTE53].concat()
}

/// Parses TOML text with exactly the given environment (never the process's).
fn parse_toml(text: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
    let env: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Config::from_str_with_env(text, config::FileFormat::Toml, env)
}

/// One change to the valid configuration text. Anchors must occur exactly once, so an edit
/// can never silently miss.
#[derive(Debug, Clone, Copy)]
enum Edit {
    /// Replace this text with that.
    Replace(&'static str, &'static str),
    /// Add lines right after the line holding this text (so they join the same TOML table).
    After(&'static str, &'static str),
    /// Add TOML at the end: new tables, or entries of an array of tables.
    Append(&'static str),
    /// Add TOML at the very start, where root keys must go.
    Prepend(&'static str),
}

use Edit::{After, Append, Prepend, Replace};

/// Applies `edits` in order, then points `{dir}` at the secrets directory.
fn edited(text: &str, edits: &[Edit], dir: &Path) -> String {
    let mut text = text.to_owned();
    for edit in edits {
        let anchor = match edit {
            Replace(anchor, _) | After(anchor, _) => Some(*anchor),
            Append(_) | Prepend(_) => None,
        };
        if let Some(anchor) = anchor {
            assert_eq!(
                text.matches(anchor).count(),
                1,
                "edit anchor {anchor:?} must occur exactly once in:\n{text}"
            );
        }
        text = match edit {
            Replace(from, to) => text.replacen(from, to, 1),
            After(anchor, lines) => {
                let start = text.find(anchor).expect("anchor checked above");
                let end = text[start..].find('\n').map_or(text.len(), |i| start + i);
                format!("{}\n{lines}{}", &text[..end], &text[end..])
            }
            Append(toml) => format!("{text}\n{toml}\n"),
            Prepend(toml) => format!("{toml}\n{text}"),
        };
    }
    text.replace("{dir}", &dir.display().to_string())
}

/// A directory of secret files: `token` holds a value, `empty` holds only a newline, and
/// nothing else exists (so `{dir}/missing` cannot be read).
struct SecretDir(TempDir);

impl SecretDir {
    fn new() -> Self {
        let dir = TempDir::new().expect("create temp dir");
        std::fs::write(dir.path().join("token"), "t0ken-value\n").expect("write token");
        std::fs::write(dir.path().join("empty"), "\n").expect("write empty secret");
        SecretDir(dir)
    }

    fn path(&self) -> &Path {
        self.0.path()
    }
}

/// The issues of an `Invalid` error; panics on success or on any other error.
fn issues_of(result: Result<Config, ConfigError>) -> Vec<ConfigIssue> {
    match result {
        Err(ConfigError::Invalid(issues)) => issues,
        other => panic!("expected ConfigError::Invalid, got {other:?}"),
    }
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

// ---------------------------------------------------------------------------------------------
// Every validation rule, one case each.
// ---------------------------------------------------------------------------------------------

/// A broken rule: the edit that breaks it and the issue it must produce.
struct Case {
    /// The rule, for failure messages.
    rule: &'static str,
    /// How the valid config is broken.
    edits: &'static [Edit],
    /// The exact key path the issue must name.
    key: &'static str,
    /// Text the issue's message must contain.
    fragment: &'static str,
    /// Whether the edit breaks this rule only, or also the rules that follow from it.
    alone: bool,
}

impl Case {
    /// The edit breaks exactly this one rule.
    fn alone(
        rule: &'static str,
        edits: &'static [Edit],
        key: &'static str,
        fragment: &'static str,
    ) -> Self {
        Case {
            rule,
            edits,
            key,
            fragment,
            alone: true,
        }
    }

    /// The edit breaks this rule among others (e.g. for every target at once).
    fn among(
        rule: &'static str,
        edits: &'static [Edit],
        key: &'static str,
        fragment: &'static str,
    ) -> Self {
        Case {
            alone: false,
            ..Case::alone(rule, edits, key, fragment)
        }
    }
}

/// Every broken rule, section by section.
fn cases() -> Vec<Case> {
    [
        agent::cases(),
        cluster::cases(),
        probe::cases(),
        targets::cases(),
        route53::cases(),
        failover::cases(),
    ]
    .into_iter()
    .flatten()
    .collect()
}

#[test]
fn every_broken_rule_is_reported_at_its_exact_key() {
    let dir = SecretDir::new();
    let base = valid_toml();
    let cases = cases();
    let mut failures = Vec::new();
    for case in &cases {
        let text = edited(&base, case.edits, dir.path());
        let issues = match parse_toml(&text, &[]) {
            Err(ConfigError::Invalid(issues)) => issues,
            other => {
                failures.push(format!(
                    "{}: expected ConfigError::Invalid, got {other:?}",
                    case.rule
                ));
                continue;
            }
        };
        let listed = || {
            issues
                .iter()
                .map(|i| format!("    {i}"))
                .collect::<Vec<_>>()
                .join("\n")
        };
        if !issues
            .iter()
            .any(|i| i.key == case.key && i.message.contains(case.fragment))
        {
            failures.push(format!(
                "{}: no issue at `{}` containing {:?}; got:\n{}",
                case.rule,
                case.key,
                case.fragment,
                listed()
            ));
        } else if case.alone && issues.len() != 1 {
            failures.push(format!(
                "{}: expected this issue alone; got:\n{}",
                case.rule,
                listed()
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

#[test]
fn every_broken_rule_is_reported_in_one_run() {
    let dir = SecretDir::new();
    let text = edited(
        &valid_toml(),
        &[
            Append(
                r#"
[[peers]]
id = "eu-central-1-a"
region = "eu-central-1"
peer_url = "tcp://failoverd.eu-central-1.internal:7071"
"#,
            ),
            Replace(
                "name = \"eu-central-1\"\nweight = 100",
                "name = \"eu-central-1\"\nweight = 256",
            ),
            After(r#"name = "api-par""#, "expect_status = [99]"),
            After("zone_id = ", "ttl = 0"),
        ],
        dir.path(),
    );
    let error = parse_toml(&text, &[]).expect_err("four rules are broken");
    assert!(matches!(error, ConfigError::Invalid(_)), "{error:?}");
    let keys: Vec<String> = error.issues().into_iter().map(|i| i.key).collect();
    let message = error.to_string();

    // In the order of the file's sections.
    assert_eq!(
        keys,
        [
            "peers[0].peer_url",
            "regions[0].api[0].expect_status[0]",
            "regions[1].weight",
            "route53.ttl",
        ]
    );
    assert!(
        message.starts_with("4 configuration error(s):\n"),
        "{message}"
    );
    assert!(
        message.contains("\n  - regions[1].weight: weight 256 is out of range 0..=255"),
        "{message}"
    );
}
