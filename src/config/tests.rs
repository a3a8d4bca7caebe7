//! Specifications of configuration loading: parsing, environment overrides, where probe
//! settings come from, every rule of [`Config::validate`] (each pinned to its exact key path),
//! secrets, and the example files shipped in `config/`.
//!
//! Every test passes its environment explicitly, so none depends on the process environment.
//! Secrets are files in a temporary directory; the one exception is the "unset environment
//! variable" rule, which names a variable no one sets.

use std::path::Path;
use std::time::Duration;

use tempfile::TempDir;

use super::{
    Config, ConfigError, ConfigIssue, ConnectionMode, LogFormat, ProbeConfig, ProbeOverrides,
    ProbeScope, RedisMode, SecretRef, TargetKind, DEFAULT_FALL, DEFAULT_INTERVAL,
    DEFAULT_PG_PRIORITY, DEFAULT_RISE, DEFAULT_ROUTE53_TTL, DEFAULT_SHUTDOWN_GRACE,
    DEFAULT_TIMEOUT,
};
use crate::topology::Topology;

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
// Parsing and defaults.
// ---------------------------------------------------------------------------------------------

#[test]
fn the_valid_config_parses_with_documented_defaults() {
    let config = parse_toml(&valid_toml(), &[]).expect("the valid config must load");

    assert_eq!(config.agent.id, "eu-west-3-a");
    assert_eq!(config.agent.region, "eu-west-3");
    assert_eq!(config.agent.probe_scope, ProbeScope::OwnRegion);
    assert_eq!(config.agent.log_format, LogFormat::Auto);
    assert_eq!(config.shutdown_grace(), DEFAULT_SHUTDOWN_GRACE);
    assert!(config.peers.is_empty());
    assert!(config.cluster.secret.is_some());
    assert!(
        config.admin.open_reads,
        "reads are open by default, also when [admin] is absent"
    );

    let names: Vec<&str> = config.regions.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["eu-west-3", "eu-central-1", "us-east-1"]);
    assert_eq!(config.regions[2].weight, 50);
    let api = &config.regions[0].api[0];
    assert_eq!(api.connection, ConnectionMode::Fresh);
    assert!(api.tls_verify);
    assert!(api.expect_status.is_empty());

    let pg = config.postgres.as_ref().expect("postgres section");
    assert_eq!(pg.members.len(), 3);
    assert_eq!(pg.members[0].priority, 200);
    assert_eq!(pg.members[1].priority, DEFAULT_PG_PRIORITY);
    assert!(pg.members.iter().all(|m| !m.no_failover));

    let modes: Vec<RedisMode> = config.redis.shards.iter().map(|s| s.mode).collect();
    assert_eq!(modes, [RedisMode::Replication, RedisMode::Cluster]);

    let r53 = config.route53.as_ref().expect("route53 section");
    assert_eq!(r53.record_type, "CNAME");
    assert_eq!(r53.ttl, DEFAULT_ROUTE53_TTL);
    assert!(r53.endpoint_url.is_none());
    let records: Vec<&str> = r53.regions.keys().map(String::as_str).collect();
    assert_eq!(records, ["eu-central-1", "eu-west-3", "us-east-1"]);
}

#[test]
fn probe_settings_come_from_target_then_kind_then_global_then_default() {
    let dir = SecretDir::new();
    let text = edited(
        &valid_toml(),
        &[
            Append(
                r#"
[probe]
interval = "3s"
timeout = "1s"
rise = 4

[probe.http]
timeout = "700ms"
rise = 5
"#,
            ),
            After(r#"name = "api-par""#, "probe = { rise = 6 }"),
        ],
        dir.path(),
    );
    let config = parse_toml(&text, &[]).expect("config must load");
    let probe = &config.probe;

    // Each field of this target comes from a different level.
    let (settings, from) = probe.resolve(
        TargetKind::Http,
        &config.regions[0].api[0].probe,
        "regions[0].api[0]",
    );
    assert_eq!(settings.interval, Duration::from_secs(3));
    assert_eq!(settings.timeout, ms(700));
    assert_eq!(settings.rise, 6);
    assert_eq!(settings.fall, DEFAULT_FALL);
    assert_eq!(
        from,
        [
            "probe.interval",
            "probe.http.timeout",
            "regions[0].api[0].probe.rise",
            "default fall",
        ]
    );

    // Without a target value, the kind value wins over the global one.
    let (settings, from) = probe.resolve(
        TargetKind::Http,
        &config.regions[1].api[0].probe,
        "regions[1].api[0]",
    );
    assert_eq!(settings.rise, 5);
    assert_eq!(from[2], "probe.http.rise");

    // Another kind does not see the http overrides: global values, then defaults.
    let pg = config.postgres.as_ref().expect("postgres section");
    let (settings, from) = probe.resolve(
        TargetKind::Postgres,
        &pg.members[0].probe,
        "postgres.members[0]",
    );
    assert_eq!(settings.timeout, Duration::from_secs(1));
    assert_eq!(settings.rise, 4);
    assert_eq!(
        from,
        [
            "probe.interval",
            "probe.timeout",
            "probe.rise",
            "default fall"
        ]
    );

    // Nothing set anywhere: the documented defaults.
    let (settings, from) =
        ProbeConfig::default().resolve(TargetKind::Redis, &ProbeOverrides::default(), "x");
    assert_eq!(
        (
            settings.interval,
            settings.timeout,
            settings.rise,
            settings.fall
        ),
        (
            DEFAULT_INTERVAL,
            DEFAULT_TIMEOUT,
            DEFAULT_RISE,
            DEFAULT_FALL
        )
    );
    assert_eq!(
        from,
        [
            "default interval",
            "default timeout",
            "default rise",
            "default fall"
        ]
    );
}

#[test]
fn environment_overrides_win_over_the_file() {
    let dir = SecretDir::new();
    let text = edited(
        &valid_toml(),
        &[Append("[probe]\ninterval = \"5s\"")],
        dir.path(),
    );
    let env = [
        ("FAILOVERD__PROBE__INTERVAL", "2s"),
        ("FAILOVERD__PROBE__HTTP__RISE", "5"),
        ("FAILOVERD__AGENT__ID", "eu-west-3-b"),
        // Without the `FAILOVERD__` prefix a variable is not an override.
        ("PROBE__TIMEOUT", "1500ms"),
        ("FAILOVERD_PROBE__TIMEOUT", "1500ms"),
    ];
    let config = parse_toml(&text, &env).expect("config must load");

    assert_eq!(config.probe.interval, Some(Duration::from_secs(2)));
    assert_eq!(config.probe.http.rise, Some(5));
    assert_eq!(config.agent.id, "eu-west-3-b");
    assert_eq!(config.probe.timeout, None);
    // Untouched keys keep their file values.
    assert_eq!(config.agent.region, "eu-west-3");
}

#[test]
fn environment_overrides_are_checked_like_the_file() {
    let text = valid_toml();

    let issues = issues_of(parse_toml(
        &text,
        &[("FAILOVERD__AGENT__SHUTDOWN_GRACE", "0s")],
    ));
    assert_eq!(issues.len(), 1, "{issues:?}");
    assert_eq!(issues[0].key, "agent.shutdown_grace");

    match parse_toml(&text, &[("FAILOVERD__AGENT__COLOUR", "blue")]) {
        Err(ConfigError::Parse { key, message }) => {
            assert_eq!(key, "agent.colour");
            assert!(message.contains("unknown field `colour`"), "{message}");
        }
        other => panic!("expected ConfigError::Parse, got {other:?}"),
    }
}

/// Parses `edits` applied to the valid config and returns the `Parse` error's key and message.
fn parse_error(edits: &[Edit]) -> (String, String) {
    let dir = SecretDir::new();
    match parse_toml(&edited(&valid_toml(), edits, dir.path()), &[]) {
        Err(ConfigError::Parse { key, message }) => (key, message),
        other => panic!("expected ConfigError::Parse, got {other:?}"),
    }
}

#[test]
fn an_unknown_key_is_rejected_and_named() {
    let (key, message) = parse_error(&[After(r#"name = "api-par""#, r#"tiemout = "1s""#)]);
    assert_eq!(key, "regions[0].api[0].tiemout");
    assert!(message.contains("unknown field `tiemout`"), "{message}");
}

#[test]
fn a_value_of_the_wrong_type_is_rejected_and_named() {
    let (key, message) = parse_error(&[Replace(
        "name = \"eu-central-1\"\nweight = 100",
        "name = \"eu-central-1\"\nweight = \"heavy\"",
    )]);
    assert_eq!(key, "regions[1].weight");
    assert!(message.contains("heavy"), "{message}");
}

#[test]
fn a_missing_required_key_is_rejected_and_named() {
    let missing = |edit| {
        let (key, message) = parse_error(&[edit]);
        assert_eq!(message, "missing required key", "at {key}");
        key
    };
    assert_eq!(
        missing(Replace(
            "url = \"https://api.eu-central-1.example.com/healthz\"",
            ""
        )),
        "regions[1].api[0].url"
    );
    assert_eq!(
        missing(Replace("data_dir = \"/var/lib/failoverd\"", "")),
        "agent.data_dir"
    );
    assert_eq!(missing(Replace(AGENT, "")), "agent");
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

const PEER_FRA: &str = r#"
[[peers]]
id = "eu-central-1-a"
region = "eu-central-1"
peer_url = "https://failoverd.eu-central-1.internal:7071"
"#;

/// The entry of the agent the valid config describes.
const PEER_PAR: &str = r#"
[[peers]]
id = "eu-west-3-a"
region = "eu-west-3"
peer_url = "https://failoverd.eu-west-3.internal:7071"
"#;

fn cases() -> Vec<Case> {
    vec![
        // Agent.
        Case::alone(
            "agent region must be a configured region",
            &[Replace(
                "id = \"eu-west-3-a\"\nregion = \"eu-west-3\"",
                "id = \"eu-west-3-a\"\nregion = \"eu-west-9\"",
            )],
            "agent.region",
            "region \"eu-west-9\" is not one of `regions`",
        ),
        Case::alone(
            "peer and admin listeners differ",
            &[Replace(
                r#"peer_listen = "127.0.0.1:7071""#,
                r#"peer_listen = "127.0.0.1:7070""#,
            )],
            "agent.peer_listen",
            "must differ from agent.admin_listen",
        ),
        Case::alone(
            "data_dir is not empty",
            &[Replace(
                r#"data_dir = "/var/lib/failoverd""#,
                r#"data_dir = """#,
            )],
            "agent.data_dir",
            "must not be empty",
        ),
        Case::alone(
            "shutdown_grace is above 0",
            &[After("data_dir = ", r#"shutdown_grace = "0s""#)],
            "agent.shutdown_grace",
            "must be greater than 0",
        ),
        Case::alone(
            "agent id is a simple name",
            &[Replace(r#"id = "eu-west-3-a""#, r#"id = "eu west 3""#)],
            "agent.id",
            "\"eu west 3\" may only contain letters, digits, '-', '_' and '.'",
        ),
        Case::alone(
            "agent id is not empty",
            &[Replace(r#"id = "eu-west-3-a""#, r#"id = """#)],
            "agent.id",
            "must not be empty",
        ),
        // Peers.
        Case::alone(
            "peer ids are unique",
            &[Append(PEER_FRA), Append(PEER_FRA)],
            "peers[1].id",
            "agent id \"eu-central-1-a\" is used twice",
        ),
        Case::alone(
            "the agent's own peer entry names the agent's region",
            &[Append(
                r#"
[[peers]]
id = "eu-west-3-a"
region = "eu-central-1"
peer_url = "https://failoverd.eu-central-1.internal:7071"
"#,
            )],
            "peers[0].region",
            "this is the entry of this agent (agent.id \"eu-west-3-a\"), so its region must be agent.region \"eu-west-3\"",
        ),
        Case::alone(
            "the agent's own peer entry appears once",
            &[Append(PEER_PAR), Append(PEER_PAR)],
            "peers[1].id",
            "agent id \"eu-west-3-a\" is used twice",
        ),
        Case::alone(
            "a peer id is a simple name",
            &[Append(
                r#"
[[peers]]
id = "frankfurt agent"
region = "eu-central-1"
peer_url = "https://failoverd.eu-central-1.internal:7071"
"#,
            )],
            "peers[0].id",
            "may only contain letters",
        ),
        Case::alone(
            "peer region must be a configured region",
            &[Append(
                r#"
[[peers]]
id = "ap-south-1-a"
region = "ap-south-1"
peer_url = "https://failoverd.ap-south-1.internal:7071"
"#,
            )],
            "peers[0].region",
            "region \"ap-south-1\" is not one of `regions`",
        ),
        Case::alone(
            "peer_url is http or https",
            &[Append(
                r#"
[[peers]]
id = "eu-central-1-a"
region = "eu-central-1"
peer_url = "tcp://failoverd.eu-central-1.internal:7071"
"#,
            )],
            "peers[0].peer_url",
            "scheme \"tcp\" is not one of http, https",
        ),
        Case::alone(
            "peer admin_url is a URL",
            &[
                Append(PEER_FRA),
                After(
                    "peer_url = \"https://failoverd.eu-central-1.internal:7071\"",
                    r#"admin_url = "failoverd.eu-central-1.internal:7070""#,
                ),
            ],
            "peers[0].admin_url",
            "scheme \"failoverd.eu-central-1.internal\" is not one of http, https",
        ),
        // Admin tokens and secrets.
        Case::alone(
            "admin token names are unique",
            &[Append(
                r#"
[[admin.tokens]]
name = "oncall"
secret = { file = "{dir}/token" }

[[admin.tokens]]
name = "oncall"
secret = { file = "{dir}/token" }
"#,
            )],
            "admin.tokens[1].name",
            "token name \"oncall\" is used twice",
        ),
        Case::alone(
            "admin token name is a simple name",
            &[Append(
                r#"
[[admin.tokens]]
name = "on call"
secret = { file = "{dir}/token" }
"#,
            )],
            "admin.tokens[0].name",
            "\"on call\" may only contain",
        ),
        Case::alone(
            "an admin token's secret file is readable",
            &[Append(
                r#"
[[admin.tokens]]
name = "oncall"
secret = { file = "{dir}/missing" }
"#,
            )],
            "admin.tokens[0].secret",
            "cannot read secret file",
        ),
        Case::alone(
            "an admin token's secret variable is set",
            &[Append(
                r#"
[[admin.tokens]]
name = "oncall"
secret = { env = "FAILOVERD_TEST_VARIABLE_NOBODY_SETS" }
"#,
            )],
            "admin.tokens[0].secret",
            "environment variable FAILOVERD_TEST_VARIABLE_NOBODY_SETS is not set",
        ),
        Case::alone(
            "peers need a cluster secret",
            &[Replace(CLUSTER_SECRET, ""), Append(PEER_FRA)],
            "cluster.secret",
            "is required when peers are configured",
        ),
        Case::alone(
            "peers need a peer listener",
            &[Replace("peer_listen = \"127.0.0.1:7071\"\n", ""), Append(PEER_FRA)],
            "agent.peer_listen",
            "is required when peers are configured",
        ),
        Case::alone(
            "quorum is at least a majority",
            &[Append(PEER_FRA), After(CLUSTER_SECRET, "quorum = 1")],
            "cluster.quorum",
            "quorum 1 must be between a majority (2) and the number of agents (2)",
        ),
        Case::alone(
            "quorum is at most the number of agents",
            &[After(CLUSTER_SECRET, "quorum = 2")],
            "cluster.quorum",
            "quorum 2 must be between a majority (1) and the number of agents (1)",
        ),
        Case::alone(
            "heartbeats are well inside the election timeout",
            &[After(CLUSTER_SECRET, "heartbeat_interval = \"500ms\"")],
            "cluster.heartbeat_interval",
            "heartbeat_interval (500ms) must be > 0 and less than half of election_timeout (300ms)",
        ),
        Case::alone(
            "the lease outlasts an election",
            &[After(CLUSTER_SECRET, "lease_ttl = \"500ms\"")],
            "cluster.lease_ttl",
            "lease_ttl (500ms) must be longer than the longest wait before an election (900ms with 1 agent)",
        ),
        Case::alone(
            "a fence command names a program",
            &[After("[postgres]", "fence = { command = [] }")],
            "postgres.fence.command",
            "must name a program",
        ),
        Case::alone(
            "revoke_login names a role",
            &[After("[postgres]", "fence = { revoke_login = \"app role\" }")],
            "postgres.fence.revoke_login",
            "may only contain letters",
        ),
        Case::alone(
            "stale_after is positive",
            &[After(CLUSTER_SECRET, "stale_after = \"0s\"")],
            "cluster.stale_after",
            "must be greater than 0",
        ),
        Case::alone(
            "the cluster secret is readable",
            &[Replace(CLUSTER_SECRET, "secret = { file = \"{dir}/missing\" }")],
            "cluster.secret",
            "cannot read secret file",
        ),
        Case::alone(
            "the cluster secret is not empty",
            &[Replace(CLUSTER_SECRET, "secret = { file = \"{dir}/empty\" }")],
            "cluster.secret",
            "is empty",
        ),
        Case::alone(
            "the Postgres password is readable",
            &[After(
                r#"cluster = "main""#,
                r#"password = { file = "{dir}/missing" }"#,
            )],
            "postgres.password",
            "cannot read secret file",
        ),
        Case::alone(
            "a Postgres member's password is not empty",
            &[After(
                r#"name = "pg-fra""#,
                r#"password = { file = "{dir}/empty" }"#,
            )],
            "postgres.members[1].password",
            "is empty",
        ),
        Case::alone(
            "a Redis shard's password is readable",
            &[After(
                r#"name = "cache""#,
                r#"password = { file = "{dir}/missing" }"#,
            )],
            "redis.shards[1].password",
            "cannot read secret file",
        ),
        // Probe defaults.
        Case::alone(
            "global interval is at least 100ms",
            &[Append("[probe]\ninterval = \"50ms\"\ntimeout = \"20ms\"")],
            "probe.interval",
            "50ms is below the minimum of 100ms",
        ),
        Case::among(
            "a kind's interval is at least 100ms",
            &[Append("[probe.redis]\ninterval = \"10ms\"")],
            "probe.redis.interval",
            "10ms is below the minimum of 100ms",
        ),
        Case::among(
            "a target's interval is at least 100ms",
            &[After(r#"name = "pg-iad""#, r#"probe = { interval = "99ms" }"#)],
            "postgres.members[2].probe.interval",
            "99ms is below the minimum of 100ms",
        ),
        Case::alone(
            "global timeout is above 0",
            &[Append("[probe]\ntimeout = \"0s\"")],
            "probe.timeout",
            "must be greater than 0",
        ),
        Case::alone(
            "a target's timeout is above 0",
            &[After(r#"name = "api-fra""#, r#"probe = { timeout = "0s" }"#)],
            "regions[1].api[0].probe.timeout",
            "must be greater than 0",
        ),
        Case::alone(
            "global rise is at least 1",
            &[Append("[probe]\nrise = 0")],
            "probe.rise",
            "must be at least 1",
        ),
        Case::alone(
            "a kind's rise is at least 1",
            &[Append("[probe.postgres]\nrise = 0")],
            "probe.postgres.rise",
            "must be at least 1",
        ),
        Case::alone(
            "global fall is at least 1",
            &[Append("[probe]\nfall = 0")],
            "probe.fall",
            "must be at least 1",
        ),
        Case::alone(
            "a target's fall is at least 1",
            &[After(r#"name = "sessions-par""#, "probe = { fall = 0 }")],
            "redis.shards[0].members[0].probe.fall",
            "must be at least 1",
        ),
        // A target's timeout must be shorter than its interval, wherever each was set.
        Case::among(
            "timeout < interval: global timeout against the default interval",
            &[Append("[probe]\ntimeout = \"1s\"")],
            "regions[0].api[0].probe.timeout",
            "timeout (1s from probe.timeout) must be < interval (1s from default interval)",
        ),
        Case::among(
            "timeout < interval: default timeout against a kind's interval",
            &[Append("[probe.postgres]\ninterval = \"400ms\"")],
            "postgres.members[1].probe.timeout",
            "timeout (500ms from default timeout) must be < interval \
             (400ms from probe.postgres.interval)",
        ),
        Case::alone(
            "timeout < interval: a target's timeout against the default interval",
            &[After(r#"name = "sessions-fra""#, r#"probe = { timeout = "2s" }"#)],
            "redis.shards[0].members[1].probe.timeout",
            "timeout (2s from redis.shards[0].members[1].probe.timeout) must be < interval \
             (1s from default interval)",
        ),
        Case::alone(
            "timeout < interval: a kind's timeout against a target's interval",
            &[
                Append("[probe]\ninterval = \"2s\"\n\n[probe.http]\ntimeout = \"1500ms\""),
                After(r#"name = "api-fra""#, r#"probe = { interval = "1s" }"#),
            ],
            "regions[1].api[0].probe.timeout",
            "timeout (1s 500ms from probe.http.timeout) must be < interval \
             (1s from regions[1].api[0].probe.interval)",
        ),
        // Regions.
        Case::alone(
            "region names are unique",
            &[Append("[[regions]]\nname = \"eu-central-1\"")],
            "regions[3].name",
            "region \"eu-central-1\" is defined twice",
        ),
        Case::alone(
            "weight is at most 255",
            &[Replace(
                "name = \"eu-central-1\"\nweight = 100",
                "name = \"eu-central-1\"\nweight = 256",
            )],
            "regions[1].weight",
            "weight 256 is out of range 0..=255",
        ),
        Case::among(
            "at least one region",
            &[Replace(REGIONS, ""), Prepend("regions = []")],
            "regions",
            "at least one region is required",
        ),
        Case::among(
            "region name is a simple name",
            &[Append("[[regions]]\nname = \"ap south 1\"")],
            "regions[3].name",
            "\"ap south 1\" may only contain",
        ),
        // API targets.
        Case::alone(
            "API target names are unique within a region",
            &[After(
                r#"url = "https://api.us-east-1.example.com/healthz""#,
                r#"
[[regions.api]]
name = "api-iad"
url = "https://api2.us-east-1.example.com/healthz""#,
            )],
            "regions[2].api[1].name",
            "API target \"api-iad\" is defined twice in region \"us-east-1\"",
        ),
        Case::alone(
            "API target name is a simple name",
            &[Replace(r#"name = "api-fra""#, r#"name = "api fra""#)],
            "regions[1].api[0].name",
            "\"api fra\" may only contain",
        ),
        Case::alone(
            "API url is a URL",
            &[Replace(
                "https://api.eu-central-1.example.com/healthz",
                "api.eu-central-1.example.com/healthz",
            )],
            "regions[1].api[0].url",
            "is not a valid URL",
        ),
        Case::alone(
            "API url is http or https",
            &[Replace(
                "https://api.us-east-1.example.com/healthz",
                "ftp://api.us-east-1.example.com/healthz",
            )],
            "regions[2].api[0].url",
            "scheme \"ftp\" is not one of http, https",
        ),
        Case::alone(
            "expected statuses are HTTP statuses",
            &[After(r#"name = "api-par""#, "expect_status = [200, 99]")],
            "regions[0].api[0].expect_status[1]",
            "99 is not an HTTP status (100..=599)",
        ),
        Case::alone(
            "json_pointer starts with '/'",
            &[After(r#"name = "api-par""#, r#"json_pointer = "status""#)],
            "regions[0].api[0].json_pointer",
            "\"status\" is not a JSON pointer",
        ),
        Case::alone(
            "json_equals needs json_pointer",
            &[After(r#"name = "api-par""#, r#"json_equals = "ok""#)],
            "regions[0].api[0].json_equals",
            "needs json_pointer",
        ),
        Case::alone(
            "header names are valid",
            &[After(
                r#"name = "api-fra""#,
                r#"headers = { "X Probe" = "failoverd" }"#,
            )],
            "regions[1].api[0].headers.X Probe",
            "\"X Probe\" is not a valid header name",
        ),
        Case::alone(
            "ca_file exists",
            &[After(
                r#"name = "api-par""#,
                r#"ca_file = "{dir}/missing-ca.pem""#,
            )],
            "regions[0].api[0].ca_file",
            "missing-ca.pem",
        ),
        Case::alone(
            "max_latency is below the probe timeout",
            &[After(r#"name = "api-iad""#, r#"max_latency = "500ms""#)],
            "regions[2].api[0].max_latency",
            "max_latency (500ms) must be < the probe timeout (500ms)",
        ),
        // Postgres.
        Case::alone(
            "Postgres has members",
            &[Replace(POSTGRES, "\n[postgres]\nmembers = []\n")],
            "postgres.members",
            "at least one member is required",
        ),
        Case::alone(
            "Postgres cluster name is a simple name",
            &[Replace(r#"cluster = "main""#, r#"cluster = "main db""#)],
            "postgres.cluster",
            "\"main db\" may only contain",
        ),
        Case::alone(
            "Postgres member names are unique",
            &[Replace(r#"name = "pg-fra""#, r#"name = "pg-par""#)],
            "postgres.members[1].name",
            "member \"pg-par\" is defined twice",
        ),
        Case::alone(
            "Postgres member name is a simple name",
            &[Replace(r#"name = "pg-fra""#, r#"name = "pg fra""#)],
            "postgres.members[1].name",
            "\"pg fra\" may only contain",
        ),
        Case::alone(
            "Postgres member region is a configured region",
            &[Replace(
                "name = \"pg-iad\"\nregion = \"us-east-1\"",
                "name = \"pg-iad\"\nregion = \"us-west-2\"",
            )],
            "postgres.members[2].region",
            "region \"us-west-2\" is not one of `regions`",
        ),
        Case::alone(
            "Postgres DSN parses",
            &[Replace(
                "host=pg-fra.internal port=5432",
                "host=pg-fra.internal port=five",
            )],
            "postgres.members[1].dsn",
            "not a valid DSN",
        ),
        Case::alone(
            "Postgres DSN holds no password",
            &[Replace(
                "host=pg-iad.internal",
                "host=pg-iad.internal password=hunter2",
            )],
            "postgres.members[2].dsn",
            "must not contain a password",
        ),
        Case::alone(
            "Postgres DSN names a host",
            &[Replace("host=pg-par.internal ", "")],
            "postgres.members[0].dsn",
            "must name a host",
        ),
        Case::alone(
            "some Postgres member may be promoted",
            &[
                After(r#"name = "pg-par""#, "no_failover = true"),
                After(r#"name = "pg-fra""#, "no_failover = true"),
                After(r#"name = "pg-iad""#, "no_failover = true"),
            ],
            "postgres.members",
            "every member has no_failover = true",
        ),
        // Redis.
        Case::alone(
            "Redis shard names are unique",
            &[Append(
                r#"
[[redis.shards]]
name = "sessions"
mode = "replication"

[[redis.shards.members]]
name = "sessions-iad"
region = "us-east-1"
url = "redis://sessions-iad.internal:6379"
"#,
            )],
            "redis.shards[2].name",
            "shard \"sessions\" is defined twice",
        ),
        Case::alone(
            "Redis shard name is a simple name",
            &[Replace(r#"name = "cache""#, r#"name = "hot cache""#)],
            "redis.shards[1].name",
            "\"hot cache\" may only contain",
        ),
        Case::alone(
            "Redis shard has members",
            &[Append(
                "[[redis.shards]]\nname = \"queues\"\nmode = \"replication\"\nmembers = []",
            )],
            "redis.shards[2].members",
            "at least one member is required",
        ),
        Case::alone(
            "Redis member names are unique within a shard",
            &[Replace(r#"name = "cache-fra""#, r#"name = "cache-par""#)],
            "redis.shards[1].members[1].name",
            "member \"cache-par\" is defined twice in shard \"cache\"",
        ),
        Case::alone(
            "Redis member region is a configured region",
            &[Replace(
                "name = \"sessions-fra\"\nregion = \"eu-central-1\"",
                "name = \"sessions-fra\"\nregion = \"eu-north-1\"",
            )],
            "redis.shards[0].members[1].region",
            "region \"eu-north-1\" is not one of `regions`",
        ),
        Case::alone(
            "Redis URL holds no password",
            &[Replace(
                "redis://sessions-fra.internal:6379",
                "redis://:hunter2@sessions-fra.internal:6379",
            )],
            "redis.shards[0].members[1].url",
            "must not contain a password",
        ),
        Case::alone(
            "Redis URL is redis or rediss",
            &[Replace(
                "redis://sessions-fra.internal:6379",
                "http://sessions-fra.internal:6379",
            )],
            "redis.shards[0].members[1].url",
            "scheme \"http\" is not one of redis, rediss",
        ),
        Case::alone(
            "Redis members of a shard have distinct addresses",
            &[Replace(
                "rediss://cache-iad.internal:6380",
                "rediss://cache-par.internal:6380",
            )],
            "redis.shards[1].members[2].url",
            "address \"rediss://cache-par.internal:6380\" is used by two members",
        ),
        Case::alone(
            "Redis addresses compare with the default port 6379 filled in",
            &[Replace(
                "redis://sessions-fra.internal:6379",
                "redis://sessions-par.internal",
            )],
            "redis.shards[0].members[1].url",
            "address \"redis://sessions-par.internal\" is used by two members",
        ),
        Case::alone(
            "Redis addresses compare host names case-insensitively",
            &[Replace(
                "rediss://cache-fra.internal:6380",
                "rediss://Cache-Par.internal:6380",
            )],
            "redis.shards[1].members[1].url",
            "is used by two members",
        ),
        Case::alone(
            "Redis ca_file exists",
            &[After(r#"mode = "cluster""#, r#"ca_file = "/nonexistent/ca.pem""#)],
            "redis.shards[1].ca_file",
            "cannot read /nonexistent/ca.pem",
        ),
        Case::alone(
            "Redis ca_file only with rediss:// members",
            &[After(
                r#"mode = "replication""#,
                concat!("ca_file = \"", env!("CARGO_MANIFEST_DIR"), "/Cargo.toml\""),
            )],
            "redis.shards[0].ca_file",
            "is only used with TLS: every member's url must start with rediss://",
        ),
        Case::alone(
            "Redis cluster_node_timeout only in cluster mode",
            &[After(r#"mode = "replication""#, r#"cluster_node_timeout = "5s""#)],
            "redis.shards[0].cluster_node_timeout",
            "is only used with mode = \"cluster\"",
        ),
        Case::alone(
            "Redis cluster_node_timeout is not zero",
            &[After(r#"mode = "cluster""#, r#"cluster_node_timeout = "0s""#)],
            "redis.shards[1].cluster_node_timeout",
            "must be greater than 0",
        ),
        // Route53.
        Case::alone(
            "zone_id is not empty",
            &[Replace(r#"zone_id = "Z0EXAMPLE""#, r#"zone_id = " ""#)],
            "route53.zone_id",
            "must not be empty",
        ),
        Case::alone(
            "record_name is not empty",
            &[Replace(
                r#"record_name = "api.example.com.""#,
                r#"record_name = """#,
            )],
            "route53.record_name",
            "must not be empty",
        ),
        Case::alone(
            "record_type is A, AAAA or CNAME",
            &[After("zone_id = ", r#"record_type = "MX""#)],
            "route53.record_type",
            "\"MX\" is not one of A, AAAA, CNAME",
        ),
        Case::alone(
            "ttl is at least 1",
            &[After("zone_id = ", "ttl = 0")],
            "route53.ttl",
            "ttl 0 is out of range 1..=172800",
        ),
        Case::alone(
            "ttl is at most two days",
            &[After("zone_id = ", "ttl = 172801")],
            "route53.ttl",
            "ttl 172801 is out of range 1..=172800",
        ),
        Case::alone(
            "endpoint_url is an http(s) URL",
            &[After("zone_id = ", r#"endpoint_url = "localhost:4566""#)],
            "route53.endpoint_url",
            "scheme \"localhost\" is not one of http, https",
        ),
        Case::alone(
            "every record is for a configured region",
            &[Append(
                "[route53.regions.ap-south-1]\nset_identifier = \"ap-south-1\"\nvalue = \"lb-bom.example.com\"",
            )],
            "route53.regions.ap-south-1",
            "region \"ap-south-1\" is not one of `regions`",
        ),
        Case::alone(
            "every region has a record",
            &[Replace(
                "[route53.regions.us-east-1]\nset_identifier = \"us-east-1\"\nvalue = \"lb-iad.example.com\"\n",
                "",
            )],
            "route53.regions",
            "region \"us-east-1\" has no weighted record",
        ),
        Case::alone(
            "set identifiers are unique",
            &[Replace(
                r#"set_identifier = "us-east-1""#,
                r#"set_identifier = "eu-west-3""#,
            )],
            "route53.regions.us-east-1.set_identifier",
            "set identifier \"eu-west-3\" is used twice",
        ),
        Case::alone(
            "set identifier is not empty",
            &[Replace(
                r#"set_identifier = "eu-central-1""#,
                r#"set_identifier = """#,
            )],
            "route53.regions.eu-central-1.set_identifier",
            "must not be empty",
        ),
        Case::alone(
            "record value is not empty",
            &[Replace(
                r#"value = "lb-fra.example.com""#,
                r#"value = " ""#,
            )],
            "route53.regions.eu-central-1.value",
            "must not be empty",
        ),
        Case::alone(
            "a writer record is for a group of this config",
            &[Append("[route53.writers.\"postgres/other\"]\nname = \"db.example.com.\"")],
            "route53.writers.\"postgres/other\"",
            "\"postgres/other\" is not postgres/<cluster> or redis/<replication shard> of this config",
        ),
        Case::alone(
            "a writer record has a known type",
            &[Append(
                "[route53.writers.\"postgres/main\"]\nname = \"db.example.com.\"\nrecord_type = \"TXT\"",
            )],
            "route53.writers.\"postgres/main\".record_type",
            "\"TXT\" is not one of A, AAAA, CNAME",
        ),
        Case::alone(
            "insync_timeout is more than 0",
            &[After("zone_id = ", r#"insync_timeout = "0s""#)],
            "route53.insync_timeout",
            "must be more than 0",
        ),
        Case::alone(
            "static credentials must be readable",
            &[After(
                "zone_id = ",
                concat!(
                    r#"credentials = { access_key_id = { env = "NO_SUCH_KEY_ID_VAR" }, "#,
                    r#"secret_access_key = { file = ""#,
                    env!("CARGO_MANIFEST_DIR"),
                    r#"/src/config/testdata/cluster-secret" } }"#
                ),
            )],
            "route53.credentials.access_key_id",
            "NO_SUCH_KEY_ID_VAR",
        ),
        Case::alone(
            "a pre-failover hook is a command or a URL, not both",
            &[Append(
                "[failover]\npre_hook = { command = [\"/bin/true\"], url = \"http://approve.internal/\" }",
            )],
            "failover.pre_hook",
            "set exactly one of `command` and `url`",
        ),
        Case::alone(
            "a pre-failover hook URL is http(s)",
            &[Append("[failover]\npre_hook = { url = \"ftp://approve.internal/\" }")],
            "failover.pre_hook.url",
            "scheme \"ftp\" is not one of http, https",
        ),
        Case::alone(
            "the webhook URL is a readable secret",
            &[Append("[notify]\nwebhook_url = { env = \"NO_SUCH_WEBHOOK_VAR\" }")],
            "notify.webhook_url",
            "NO_SUCH_WEBHOOK_VAR",
        ),
        Case::alone(
            "a step gets at least one attempt",
            &[Append("[failover]\nstep_attempts = 0")],
            "failover.step_attempts",
            "must be at least 1",
        ),
        Case::alone(
            "a step timeout is more than 0",
            &[Append("[failover]\nstep_timeout = \"0s\"")],
            "failover.step_timeout",
            "must be more than 0",
        ),
        Case::alone(
            "the replication sslmode is one libpq knows",
            &[After(r#"cluster = "main""#, r#"replication = { sslmode = "sure" }"#)],
            "postgres.replication.sslmode",
            "\"sure\" is not one of disable, allow, prefer, require, verify-ca, verify-full",
        ),
        Case::alone(
            "the replication user is not empty",
            &[After(r#"cluster = "main""#, r#"replication = { user = "" }"#)],
            "postgres.replication.user",
            "must not be empty",
        ),
    ]
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

// ---------------------------------------------------------------------------------------------
// Secrets.
// ---------------------------------------------------------------------------------------------

#[test]
fn a_secret_is_read_without_its_trailing_newline_and_never_shown() {
    let dir = SecretDir::new();
    let secret = SecretRef::File(dir.path().join("token"))
        .load()
        .expect("token file is readable");
    assert_eq!(secret.expose(), "t0ken-value");

    assert_eq!(format!("{secret:?}"), "Secret(<redacted>)");
    assert!(!format!("{:#?}", Some(&secret)).contains("t0ken"));

    // A loaded config holds where secrets are, never their values.
    let text = edited(
        &valid_toml(),
        &[Replace(
            CLUSTER_SECRET,
            "secret = { file = \"{dir}/token\" }",
        )],
        dir.path(),
    );
    let config = parse_toml(&text, &[]).expect("config must load");
    assert!(!format!("{config:?}").contains("t0ken"));
}

// ---------------------------------------------------------------------------------------------
// The shipped examples.
// ---------------------------------------------------------------------------------------------

const EXAMPLE_TOML: &str = include_str!("../../config/example.toml");
const EXAMPLE_YAML: &str = include_str!("../../config/example.yaml");

/// Points every `/run/secrets/failoverd/NAME` of an example at a file `dir/NAME` holding a
/// value, and returns the rewritten text and how many references it found.
fn with_secrets_in(text: &str, dir: &Path) -> (String, usize) {
    const PREFIX: &str = "/run/secrets/failoverd/";
    let mut count = 0;
    for rest in text.split(PREFIX).skip(1) {
        let name: String = rest
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            .collect();
        std::fs::write(dir.join(&name), "example-secret\n").expect("write secret");
        count += 1;
    }
    let dir = format!("{}/", dir.display());
    (text.replace(PREFIX, &dir), count)
}

#[test]
fn the_examples_load_and_their_summaries_name_every_region() {
    let mut topologies = Vec::new();
    for (name, text, format) in [
        ("example.toml", EXAMPLE_TOML, config::FileFormat::Toml),
        ("example.yaml", EXAMPLE_YAML, config::FileFormat::Yaml),
    ] {
        let dir = TempDir::new().expect("create temp dir");
        let (text, secrets) = with_secrets_in(text, dir.path());
        assert!(
            secrets >= 5,
            "{name}: expected file secrets, found {secrets}"
        );
        let config = Config::from_str_with_env(&text, format, Vec::new())
            .unwrap_or_else(|e| panic!("{name} must load: {e}"));

        assert_eq!(config.agent.region, "eu-west-3", "{name}");
        let regions: Vec<&str> = config.regions.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(
            regions,
            ["eu-west-3", "eu-central-1", "us-east-1"],
            "{name}"
        );
        // Every agent is listed; the one this file describes is skipped.
        assert_eq!(config.peers.len(), 3, "{name}");
        let others: Vec<&str> = config.other_peers().map(|p| p.id.as_str()).collect();
        assert_eq!(others, ["eu-central-1-a", "us-east-1-a"], "{name}");
        assert!(config.cluster.secret.is_some(), "{name}");
        assert!(!config.admin.tokens.is_empty(), "{name}");
        let pg = config.postgres.as_ref().expect("postgres section");
        assert_eq!(pg.members.len(), 3, "{name}");
        assert_eq!(
            pg.members.iter().filter(|m| m.no_failover).count(),
            1,
            "{name}"
        );
        let modes: Vec<RedisMode> = config.redis.shards.iter().map(|s| s.mode).collect();
        assert_eq!(
            modes,
            [RedisMode::Replication, RedisMode::Cluster],
            "{name}"
        );
        let r53 = config.route53.as_ref().expect("route53 section");
        assert_eq!(r53.regions.len(), 3, "{name}");
        assert!(
            r53.endpoint_url.is_none(),
            "{name}: endpoint_url is commented out"
        );

        let summary = config.summary();
        for region in &regions {
            assert!(
                summary
                    .lines()
                    .any(|l| l.trim_start().starts_with(region) && l.contains("weight")),
                "{name}: summary has no line for region {region}:\n{summary}"
            );
        }

        let ids: Vec<String> = Topology::from_config(&config)
            .targets
            .iter()
            .map(|t| t.id.to_string())
            .collect();
        topologies.push(ids);
    }
    assert_eq!(
        topologies[0], topologies[1],
        "example.toml and example.yaml describe the same targets"
    );
}

#[test]
fn one_file_serves_every_region_by_setting_the_agent_from_the_environment() {
    let dir = TempDir::new().expect("create temp dir");
    let (text, _) = with_secrets_in(EXAMPLE_TOML, dir.path());
    for (id, region, others) in [
        (
            "eu-west-3-a",
            "eu-west-3",
            ["eu-central-1-a", "us-east-1-a"],
        ),
        (
            "eu-central-1-a",
            "eu-central-1",
            ["eu-west-3-a", "us-east-1-a"],
        ),
        (
            "us-east-1-a",
            "us-east-1",
            ["eu-west-3-a", "eu-central-1-a"],
        ),
    ] {
        let env = vec![
            ("FAILOVERD__AGENT__ID".to_owned(), id.to_owned()),
            ("FAILOVERD__AGENT__REGION".to_owned(), region.to_owned()),
        ];
        let config = Config::from_str_with_env(&text, config::FileFormat::Toml, env)
            .unwrap_or_else(|e| panic!("{id}: {e}"));
        assert_eq!(
            (config.agent.id.as_str(), config.agent.region.as_str()),
            (id, region)
        );
        let ids: Vec<&str> = config.other_peers().map(|p| p.id.as_str()).collect();
        assert_eq!(ids, others, "{id} talks to the other two agents");
        assert!(
            config.summary().contains("2 peers"),
            "{id}: the summary counts the other agents only"
        );
    }
}

#[test]
fn agents_get_disjoint_increasing_election_ranges() {
    let cluster = super::ClusterConfig::default();
    let ranges: Vec<_> = (0..7).map(|r| cluster.election_range(r)).collect();
    assert_eq!(
        ranges[0],
        (Duration::from_millis(300), Duration::from_millis(450))
    );
    for pair in ranges.windows(2) {
        assert!(pair[0].0 < pair[0].1, "a range is not empty");
        assert!(pair[0].1 <= pair[1].0, "ranges do not overlap: {pair:?}");
    }
    // Three agents: the last one stands at most 1.5 s after the leader's last heartbeat.
    assert_eq!(cluster.longest_stand(3), Duration::from_millis(1500));
}
