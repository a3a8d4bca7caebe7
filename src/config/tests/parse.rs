//! Parsing: the documented defaults, environment overrides, and parse errors that name
//! their key.

use std::time::Duration;

use super::Edit::{After, Append, Replace};
use super::{edited, issues_of, parse_toml, valid_toml, Edit, SecretDir, AGENT};
use crate::config::{
    ConfigError, ConnectionMode, LogFormat, ProbeScope, RedisMode, DEFAULT_PG_PRIORITY,
    DEFAULT_ROUTE53_TTL, DEFAULT_SHUTDOWN_GRACE,
};

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
