//! The `[route53]` section: the weighted records that steer traffic between regions, the
//! records that name each group's writer, the epoch record that fences a stale leader's
//! changes, and how the API is reached; with its rules (`validate_route53`).
//!
//! Changing records is `crate::actions::route53`'s job; this is only what to change.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use serde::Deserialize;

use super::validate::Validator;
use super::{Config, RedisMode, SecretRef};

/// Default Route53 record TTL in seconds: short, so clients follow a failover quickly.
pub const DEFAULT_ROUTE53_TTL: u32 = 30;

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

fn default_record_type() -> String {
    "CNAME".to_owned()
}
fn default_ttl() -> u32 {
    DEFAULT_ROUTE53_TTL
}

/// Checks `[route53]` against the rest of `config`: non-empty names, known record types, a
/// TTL Route53 accepts, one record for each configured region and none for any other, unique
/// set identifiers, static credentials that resolve, and writer records only for groups that
/// exist and have a single writer.
pub(super) fn validate_route53(
    v: &mut Validator,
    r53: &Route53Config,
    config: &Config,
    regions: &HashSet<&str>,
) {
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
        v.region(&key, name, regions);
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
    if let Some(pg) = &config.postgres {
        writer_groups.insert(format!("postgres/{}", pg.cluster));
    }
    for shard in &config.redis.shards {
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
    for region in &config.regions {
        if !r53.regions.contains_key(&region.name) {
            v.push(
                "route53.regions",
                format!("region {:?} has no weighted record", region.name),
            );
        }
    }
}
