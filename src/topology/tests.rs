//! Specifications of the shipped example files: both load, describe the same targets, and
//! their check-config summaries name every region and count only the other agents.

use std::path::Path;

use tempfile::TempDir;

use super::Topology;
use crate::config::{Config, RedisMode};

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
