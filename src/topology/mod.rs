//! The static model: regions, targets and members, derived once from a validated [`Config`].
//!
//! Every thing failoverd probes is a [`Target`] with a stable [`TargetId`] of the form
//! `kind/group/name` (`http/eu-west-3/orders`, `postgres/main/pg-1`, `redis/sessions/r-1`).
//! Ids appear in logs, metric labels, the status API and, later, in reports between agents,
//! so they depend only on names in the config, never on addresses.
//!
//! `summary.rs` adds [`Config::summary`], the text `failoverd check-config` prints.

use std::fmt;

use serde::Serialize;

use crate::config::{
    Config, HttpTargetConfig, PostgresMemberConfig, ProbeScope, ProbeSettings, RedisMemberConfig,
    RedisMode, SecretRef, TargetKind,
};

mod summary;
#[cfg(test)]
mod tests;

/// Stable identifier of a target.
#[derive(
    Debug,
    Clone,
    Default,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    serde::Deserialize,
    schemars::JsonSchema,
)]
#[serde(transparent)]
pub struct TargetId(String);

impl TargetId {
    /// Builds `kind/group/name`.
    pub fn new(kind: TargetKind, group: &str, name: &str) -> Self {
        TargetId(format!("{kind}/{group}/{name}"))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TargetId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One thing to probe.
#[derive(Debug, Clone)]
pub struct Target {
    /// Stable id.
    pub id: TargetId,
    /// Region the target lives in.
    pub region: String,
    /// Probe cadence and thresholds, defaults applied.
    pub settings: ProbeSettings,
    /// What to probe and how.
    pub spec: TargetSpec,
}

impl Target {
    /// An HTTP target `name` in `region` (for tests).
    #[cfg(test)]
    pub(crate) fn http_for_tests(name: &str, region: &str, settings: ProbeSettings) -> Target {
        Target {
            id: TargetId::new(TargetKind::Http, region, name),
            region: region.into(),
            settings,
            spec: TargetSpec::Http(crate::config::HttpTargetConfig {
                name: name.into(),
                url: "http://127.0.0.1:1/".into(),
                expect_status: vec![],
                body_contains: None,
                json_pointer: None,
                json_equals: None,
                max_latency: None,
                headers: Default::default(),
                tls_verify: true,
                ca_file: None,
                connection: Default::default(),
                probe: crate::config::ProbeOverrides::default(),
            }),
        }
    }

    /// The kind of probe this target needs.
    pub fn kind(&self) -> TargetKind {
        match self.spec {
            TargetSpec::Http(_) => TargetKind::Http,
            TargetSpec::Postgres { .. } => TargetKind::Postgres,
            TargetSpec::Redis { .. } => TargetKind::Redis,
        }
    }
}

/// Kind-specific description of a target.
#[derive(Debug, Clone)]
pub enum TargetSpec {
    /// An API health endpoint.
    Http(HttpTargetConfig),
    /// A Postgres member.
    Postgres {
        /// Cluster name.
        cluster: String,
        /// The member.
        member: PostgresMemberConfig,
        /// Its password source (member's own, else the cluster's).
        password: Option<SecretRef>,
        /// CA bundle for `sslmode=require`.
        ca_file: Option<std::path::PathBuf>,
    },
    /// A Redis member.
    Redis {
        /// Shard name.
        shard: String,
        /// Replication mode of the shard.
        mode: RedisMode,
        /// The member.
        member: RedisMemberConfig,
        /// Its password source (member's shard, else the global one).
        password: Option<SecretRef>,
        /// CA bundle for TLS, if the shard names one.
        ca_file: Option<std::path::PathBuf>,
    },
}

/// All targets of the configured topology.
#[derive(Debug, Clone)]
pub struct Topology {
    /// Region names in config order.
    pub regions: Vec<String>,
    /// Every target of every region, in config order.
    pub targets: Vec<Target>,
}

impl Topology {
    /// Builds the model from a validated config.
    pub fn from_config(config: &Config) -> Topology {
        let mut targets = Vec::new();
        for (i, region) in config.regions.iter().enumerate() {
            for (j, api) in region.api.iter().enumerate() {
                let key = format!("regions[{i}].api[{j}]");
                let (settings, _) = config.probe.resolve(TargetKind::Http, &api.probe, &key);
                targets.push(Target {
                    id: TargetId::new(TargetKind::Http, &region.name, &api.name),
                    region: region.name.clone(),
                    settings,
                    spec: TargetSpec::Http(api.clone()),
                });
            }
        }
        if let Some(pg) = &config.postgres {
            for (i, member) in pg.members.iter().enumerate() {
                let key = format!("postgres.members[{i}]");
                let (settings, _) = config
                    .probe
                    .resolve(TargetKind::Postgres, &member.probe, &key);
                targets.push(Target {
                    id: TargetId::new(TargetKind::Postgres, &pg.cluster, &member.name),
                    region: member.region.clone(),
                    settings,
                    spec: TargetSpec::Postgres {
                        cluster: pg.cluster.clone(),
                        member: member.clone(),
                        password: member.password.clone().or_else(|| pg.password.clone()),
                        ca_file: pg.ca_file.clone(),
                    },
                });
            }
        }
        for (i, shard) in config.redis.shards.iter().enumerate() {
            for (j, member) in shard.members.iter().enumerate() {
                let key = format!("redis.shards[{i}].members[{j}]");
                let (settings, _) = config.probe.resolve(TargetKind::Redis, &member.probe, &key);
                targets.push(Target {
                    id: TargetId::new(TargetKind::Redis, &shard.name, &member.name),
                    region: member.region.clone(),
                    settings,
                    spec: TargetSpec::Redis {
                        shard: shard.name.clone(),
                        mode: shard.mode,
                        member: member.clone(),
                        password: shard
                            .password
                            .clone()
                            .or_else(|| config.redis.password.clone()),
                        ca_file: shard.ca_file.clone(),
                    },
                });
            }
        }
        Topology {
            regions: config.regions.iter().map(|r| r.name.clone()).collect(),
            targets,
        }
    }

    /// Every datastore target with the group it belongs to: `postgres/<cluster>` for Postgres
    /// members, `redis/<shard>` for members of replication shards (a Redis Cluster's nodes
    /// form no such group: the cluster elects its own masters).
    pub fn groups(&self) -> Vec<(TargetId, String)> {
        self.targets
            .iter()
            .filter_map(|t| match &t.spec {
                TargetSpec::Postgres { cluster, .. } => {
                    Some((t.id.clone(), format!("postgres/{cluster}")))
                }
                TargetSpec::Redis {
                    shard,
                    mode: crate::config::RedisMode::Replication,
                    ..
                } => Some((t.id.clone(), format!("redis/{shard}"))),
                _ => None,
            })
            .collect()
    }

    /// The targets an agent in `region` probes under `scope`: API endpoints everywhere (they
    /// are public), datastores only at home unless the scope is `all`.
    pub fn probed_from(&self, region: &str, scope: ProbeScope) -> Vec<Target> {
        self.targets
            .iter()
            .filter(|t| {
                scope == ProbeScope::All || t.kind() == TargetKind::Http || t.region == region
            })
            .cloned()
            .collect()
    }
}
