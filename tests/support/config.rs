//! Agent configurations for tests, typed: a [`ConfigFile`] holds what a test sets, section by
//! section, and [`ConfigFile::render`] writes the TOML an agent reads. Only the keys a test
//! sets are written, so every other setting keeps the agent's own default. Where the crate has
//! a config type whose fields are all optional (probe settings, secret references, modes) it
//! is used as is. This module runs nothing and checks nothing: the agent's parser and
//! validation judge what it writes, and the tests that feed the parser broken text on
//! purpose write that text themselves.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::toml::{Document, Entries, Value};
use failoverd::config::{
    ConnectionMode, LogFormat, ProbeConfig, ProbeOverrides, ProbeScope, RedisMode, SecretRef,
};

/// One agent's configuration file. `Default` sets nothing at all.
#[derive(Debug, Clone, Default)]
pub struct ConfigFile {
    /// `agent.id`.
    pub id: String,
    /// `agent.region`.
    pub region: String,
    /// `agent.admin_listen`.
    pub admin_listen: Option<SocketAddr>,
    /// `agent.peer_listen`.
    pub peer_listen: Option<SocketAddr>,
    /// `agent.data_dir`.
    pub data_dir: Option<PathBuf>,
    /// `agent.probe_scope`.
    pub probe_scope: Option<ProbeScope>,
    /// `agent.log_format`.
    pub log_format: Option<LogFormat>,
    /// `[[peers]]`.
    pub peers: Vec<Peer>,
    /// `[cluster]`.
    pub cluster: ClusterSection,
    /// `admin.tokens`: who holds each token and where it is read from.
    pub admin_tokens: Vec<(String, SecretRef)>,
    /// `[probe]`, with its per-kind tables.
    pub probe: ProbeConfig,
    /// `[[regions]]`, with their API targets.
    pub regions: Vec<Region>,
    /// `[postgres]`.
    pub postgres: Option<PostgresSection>,
    /// `[[redis.shards]]`.
    pub redis_shards: Vec<RedisShard>,
    /// `[redis.self_fencing]`: `replicas`, `max_lag`, `relax`.
    pub redis_self_fencing: Option<(u32, Duration, bool)>,
    /// `[route53]`.
    pub route53: Option<Route53Section>,
    /// `[tls]`.
    pub tls: Option<TlsSection>,
    /// `[failover]`.
    pub failover: FailoverSection,
    /// `notify.webhook_url`.
    pub notify_webhook_url: Option<SecretRef>,
}

/// Another agent of the cluster (`[[peers]]`).
#[derive(Debug, Clone)]
pub struct Peer {
    /// Its agent id.
    pub id: String,
    /// Its region.
    pub region: String,
    /// Base URL of its peer listener.
    pub peer_url: String,
}

/// `[cluster]`.
#[derive(Debug, Clone, Default)]
pub struct ClusterSection {
    /// `secret`.
    pub secret: Option<SecretRef>,
    /// `lease_ttl`.
    pub lease_ttl: Option<Duration>,
    /// `data_path_down_after`.
    pub data_path_down_after: Option<Duration>,
}

/// A region (`[[regions]]`) and its API targets.
#[derive(Debug, Clone)]
pub struct Region {
    /// `name`.
    pub name: String,
    /// `[[regions.api]]`.
    pub api: Vec<HttpTarget>,
}

impl Region {
    /// A region with no API target.
    pub fn new(name: &str) -> Region {
        Region {
            name: name.into(),
            api: Vec::new(),
        }
    }
}

/// An HTTP target of a region (`[[regions.api]]`).
#[derive(Debug, Clone, Default)]
pub struct HttpTarget {
    /// `name`.
    pub name: String,
    /// `url`.
    pub url: String,
    /// `expect_status` (not written when empty).
    pub expect_status: Vec<u16>,
    /// `body_contains`.
    pub body_contains: Option<String>,
    /// `json_pointer`.
    pub json_pointer: Option<String>,
    /// `json_equals`.
    pub json_equals: Option<String>,
    /// `max_latency`.
    pub max_latency: Option<Duration>,
    /// `headers`, in this order.
    pub headers: Vec<(String, String)>,
    /// `tls_verify`.
    pub tls_verify: Option<bool>,
    /// `ca_file`.
    pub ca_file: Option<PathBuf>,
    /// `connection`.
    pub connection: Option<ConnectionMode>,
}

impl HttpTarget {
    /// A target with only its name and URL.
    pub fn new(name: &str, url: impl Into<String>) -> HttpTarget {
        HttpTarget {
            name: name.into(),
            url: url.into(),
            ..HttpTarget::default()
        }
    }
}

/// `[postgres]`.
#[derive(Debug, Clone, Default)]
pub struct PostgresSection {
    /// `cluster`.
    pub cluster: Option<String>,
    /// `password`.
    pub password: Option<SecretRef>,
    /// `ca_file`.
    pub ca_file: Option<PathBuf>,
    /// `max_lag_on_failover`, in bytes.
    pub max_lag_on_failover: Option<u64>,
    /// `replication.user`.
    pub replication_user: Option<String>,
    /// `[postgres.synchronous]` with `mode = "quorum"`: `count`, `relax`.
    pub synchronous: Option<(u32, bool)>,
    /// `[postgres.rejoin]` `command`.
    pub rejoin: Option<Vec<String>>,
    /// `[[postgres.members]]`.
    pub members: Vec<PostgresMember>,
}

/// A Postgres member (`[[postgres.members]]`).
#[derive(Debug, Clone, Default)]
pub struct PostgresMember {
    /// `name`.
    pub name: String,
    /// `region`.
    pub region: String,
    /// `dsn`.
    pub dsn: String,
    /// `writer_value`.
    pub writer_value: Option<String>,
    /// `password`.
    pub password: Option<SecretRef>,
    /// `no_failover` (written only when true).
    pub no_failover: bool,
    /// `probe` (written only when something is set).
    pub probe: ProbeOverrides,
}

impl PostgresMember {
    /// A member with only its name, region and DSN.
    pub fn new(name: &str, region: &str, dsn: impl Into<String>) -> PostgresMember {
        PostgresMember {
            name: name.into(),
            region: region.into(),
            dsn: dsn.into(),
            ..PostgresMember::default()
        }
    }
}

/// A Redis shard (`[[redis.shards]]`).
#[derive(Debug, Clone)]
pub struct RedisShard {
    /// `name`.
    pub name: String,
    /// `mode`.
    pub mode: RedisMode,
    /// `password`.
    pub password: Option<SecretRef>,
    /// `ca_file`.
    pub ca_file: Option<PathBuf>,
    /// `cluster_node_timeout`.
    pub cluster_node_timeout: Option<Duration>,
    /// `[[redis.shards.members]]`.
    pub members: Vec<RedisMember>,
}

impl RedisShard {
    /// A master with its replicas, nothing else set.
    pub fn replication(name: &str, members: Vec<RedisMember>) -> RedisShard {
        RedisShard {
            name: name.into(),
            mode: RedisMode::Replication,
            password: None,
            ca_file: None,
            cluster_node_timeout: None,
            members,
        }
    }

    /// Redis Cluster nodes, nothing else set.
    pub fn cluster(name: &str, members: Vec<RedisMember>) -> RedisShard {
        RedisShard {
            mode: RedisMode::Cluster,
            ..RedisShard::replication(name, members)
        }
    }
}

/// A Redis member (`[[redis.shards.members]]`).
#[derive(Debug, Clone)]
pub struct RedisMember {
    /// `name`.
    pub name: String,
    /// `region`.
    pub region: String,
    /// `url`.
    pub url: String,
    /// `writer_value`.
    pub writer_value: Option<String>,
}

impl RedisMember {
    /// A member with only its name, region and URL.
    pub fn new(name: &str, region: &str, url: impl Into<String>) -> RedisMember {
        RedisMember {
            name: name.into(),
            region: region.into(),
            url: url.into(),
            writer_value: None,
        }
    }
}

/// `[route53]`.
#[derive(Debug, Clone, Default)]
pub struct Route53Section {
    /// `zone_id`.
    pub zone_id: String,
    /// `record_name`.
    pub record_name: String,
    /// `record_type`.
    pub record_type: Option<String>,
    /// `ttl`, in seconds.
    pub ttl: Option<u32>,
    /// `endpoint_url`.
    pub endpoint_url: Option<String>,
    /// `credentials`: the access key id and the secret access key.
    pub credentials: Option<(SecretRef, SecretRef)>,
    /// `insync_timeout`.
    pub insync_timeout: Option<Duration>,
    /// `[route53.regions.<region>]`.
    pub regions: Vec<Route53Region>,
    /// `[route53.writers."<group>"]`.
    pub writers: Vec<WriterRecord>,
}

/// The weighted record of one region (`[route53.regions.<region>]`).
#[derive(Debug, Clone)]
pub struct Route53Region {
    /// The region it belongs to.
    pub region: String,
    /// `set_identifier`.
    pub set_identifier: String,
    /// `value`.
    pub value: String,
    /// `gate_url`.
    pub gate_url: Option<String>,
}

/// The record that names a group's writer (`[route53.writers."<group>"]`).
#[derive(Debug, Clone)]
pub struct WriterRecord {
    /// The group, e.g. `postgres/main`.
    pub group: String,
    /// `name`.
    pub name: String,
}

/// `[tls]`.
#[derive(Debug, Clone)]
pub struct TlsSection {
    /// `cert_file`.
    pub cert_file: PathBuf,
    /// `key_file`.
    pub key_file: PathBuf,
    /// `ca_file`.
    pub ca_file: Option<PathBuf>,
    /// `require_client_cert` (written only when true).
    pub require_client_cert: bool,
}

/// `[failover]`.
#[derive(Debug, Clone, Default)]
pub struct FailoverSection {
    /// `automatic`.
    pub automatic: Option<bool>,
    /// `cooldown`.
    pub cooldown: Option<Duration>,
    /// `pre_hook.command`: argv.
    pub pre_hook_command: Option<Vec<String>>,
}

/// `[probe]` with its four global settings and nothing else.
pub fn probe_settings(interval: Duration, timeout: Duration, rise: u32, fall: u32) -> ProbeConfig {
    ProbeConfig {
        interval: Some(interval),
        timeout: Some(timeout),
        rise: Some(rise),
        fall: Some(fall),
        ..ProbeConfig::default()
    }
}

impl ConfigFile {
    /// Agent `id` in `region`, nothing else set.
    pub fn new(id: &str, region: &str) -> ConfigFile {
        ConfigFile {
            id: id.into(),
            region: region.into(),
            ..ConfigFile::default()
        }
    }

    /// The single agent of the probe tests: `test-agent` in region `r1`, probing every target
    /// with `probe` and watching and reporting only (failing over is tested with several
    /// agents). `TestAgent::start` sets its listener and data directory.
    pub fn watcher(probe: ProbeConfig) -> ConfigFile {
        ConfigFile {
            probe_scope: Some(ProbeScope::All),
            probe,
            regions: vec![Region::new("r1")],
            failover: FailoverSection {
                automatic: Some(false),
                ..FailoverSection::default()
            },
            ..ConfigFile::new("test-agent", "r1")
        }
    }

    /// Adds an API target to the region named `region`, which must be configured already.
    pub fn api(mut self, region: &str, target: HttpTarget) -> ConfigFile {
        self.regions
            .iter_mut()
            .find(|r| r.name == region)
            .unwrap_or_else(|| panic!("no region {region} to add an API target to"))
            .api
            .push(target);
        self
    }

    /// The TOML text: the set keys, one section after another.
    pub fn render(&self) -> String {
        let mut doc = Document::default();
        doc.table(
            &["agent"],
            Entries::default()
                .set("id", &self.id)
                .set("region", &self.region)
                .opt("admin_listen", self.admin_listen.map(|a| a.to_string()))
                .opt("peer_listen", self.peer_listen.map(|a| a.to_string()))
                .opt("data_dir", self.data_dir.as_deref())
                .opt("probe_scope", self.probe_scope)
                .opt("log_format", self.log_format),
        );
        doc.table(
            &["cluster"],
            Entries::default()
                .opt("secret", self.cluster.secret.as_ref())
                .opt("lease_ttl", self.cluster.lease_ttl)
                .opt("data_path_down_after", self.cluster.data_path_down_after),
        );
        let tokens: Vec<Value> = self
            .admin_tokens
            .iter()
            .map(|(name, secret)| {
                Entries::default()
                    .set("name", name)
                    .set("secret", secret)
                    .into()
            })
            .collect();
        doc.table(
            &["admin"],
            Entries::default().opt("tokens", (!tokens.is_empty()).then_some(tokens)),
        );
        let p = &self.probe;
        doc.table(
            &["probe"],
            Entries::default()
                .opt("interval", p.interval)
                .opt("fast_interval", p.fast_interval)
                .opt("timeout", p.timeout)
                .opt("rise", p.rise)
                .opt("fall", p.fall),
        );
        for (kind, overrides) in [
            ("http", p.http),
            ("postgres", p.postgres),
            ("redis", p.redis),
        ] {
            doc.table(&["probe", kind], probe_overrides(overrides));
        }
        for peer in &self.peers {
            doc.array_item(
                &["peers"],
                Entries::default()
                    .set("id", &peer.id)
                    .set("region", &peer.region)
                    .set("peer_url", &peer.peer_url),
            );
        }
        for region in &self.regions {
            doc.array_item(&["regions"], Entries::default().set("name", &region.name));
            for api in &region.api {
                doc.array_item(&["regions", "api"], http_target(api));
            }
        }
        if let Some(pg) = &self.postgres {
            write_postgres(&mut doc, pg);
        }
        for shard in &self.redis_shards {
            write_redis_shard(&mut doc, shard);
        }
        if let Some((replicas, max_lag, relax)) = self.redis_self_fencing {
            doc.table(
                &["redis", "self_fencing"],
                Entries::default()
                    .set("replicas", replicas)
                    .set("max_lag", max_lag)
                    .set("relax", relax),
            );
        }
        if let Some(route53) = &self.route53 {
            write_route53(&mut doc, route53);
        }
        if let Some(tls) = &self.tls {
            doc.table(
                &["tls"],
                Entries::default()
                    .set("cert_file", tls.cert_file.as_path())
                    .set("key_file", tls.key_file.as_path())
                    .opt("ca_file", tls.ca_file.as_deref())
                    .opt(
                        "require_client_cert",
                        tls.require_client_cert.then_some(true),
                    ),
            );
        }
        let hook = self
            .failover
            .pre_hook_command
            .as_ref()
            .map(|argv| Entries::default().set("command", argv.as_slice()));
        doc.table(
            &["failover"],
            Entries::default()
                .opt("automatic", self.failover.automatic)
                .opt("cooldown", self.failover.cooldown)
                .opt("pre_hook", hook),
        );
        doc.table(
            &["notify"],
            Entries::default().opt("webhook_url", self.notify_webhook_url.as_ref()),
        );
        doc.text()
    }
}

fn probe_overrides(o: ProbeOverrides) -> Entries {
    Entries::default()
        .opt("interval", o.interval)
        .opt("timeout", o.timeout)
        .opt("rise", o.rise)
        .opt("fall", o.fall)
}

fn http_target(api: &HttpTarget) -> Entries {
    let statuses: Vec<Value> = api
        .expect_status
        .iter()
        .map(|s| Value::Int(i64::from(*s)))
        .collect();
    let headers = (!api.headers.is_empty()).then(|| {
        api.headers
            .iter()
            .fold(Entries::default(), |e, (name, value)| e.set(name, value))
    });
    Entries::default()
        .set("name", &api.name)
        .set("url", &api.url)
        .opt("expect_status", (!statuses.is_empty()).then_some(statuses))
        .opt("body_contains", api.body_contains.as_deref())
        .opt("json_pointer", api.json_pointer.as_deref())
        .opt("json_equals", api.json_equals.as_deref())
        .opt("max_latency", api.max_latency)
        .opt("headers", headers)
        .opt("tls_verify", api.tls_verify)
        .opt("ca_file", api.ca_file.as_deref())
        .opt("connection", api.connection)
}

/// `[postgres]` and its members.
fn write_postgres(doc: &mut Document, pg: &PostgresSection) {
    let replication = pg
        .replication_user
        .as_ref()
        .map(|user| Entries::default().set("user", user));
    doc.table(
        &["postgres"],
        Entries::default()
            .opt("cluster", pg.cluster.as_deref())
            .opt("password", pg.password.as_ref())
            .opt("ca_file", pg.ca_file.as_deref())
            .opt("max_lag_on_failover", pg.max_lag_on_failover)
            .opt("replication", replication),
    );
    for m in &pg.members {
        let probe = probe_overrides(m.probe);
        doc.array_item(
            &["postgres", "members"],
            Entries::default()
                .set("name", &m.name)
                .set("region", &m.region)
                .set("dsn", &m.dsn)
                .opt("writer_value", m.writer_value.as_deref())
                .opt("password", m.password.as_ref())
                .opt("no_failover", m.no_failover.then_some(true))
                .opt("probe", (!probe.is_empty()).then_some(probe)),
        );
    }
    if let Some(command) = &pg.rejoin {
        doc.table(
            &["postgres", "rejoin"],
            Entries::default().set("command", command.as_slice()),
        );
    }
    if let Some((count, relax)) = pg.synchronous {
        doc.table(
            &["postgres", "synchronous"],
            Entries::default()
                .set("mode", "quorum")
                .set("count", count)
                .set("relax", relax),
        );
    }
}

/// One `[[redis.shards]]` and its members.
fn write_redis_shard(doc: &mut Document, shard: &RedisShard) {
    doc.array_item(
        &["redis", "shards"],
        Entries::default()
            .set("name", &shard.name)
            .set("mode", shard.mode)
            .opt("password", shard.password.as_ref())
            .opt("ca_file", shard.ca_file.as_deref())
            .opt("cluster_node_timeout", shard.cluster_node_timeout),
    );
    for m in &shard.members {
        doc.array_item(
            &["redis", "shards", "members"],
            Entries::default()
                .set("name", &m.name)
                .set("region", &m.region)
                .set("url", &m.url)
                .opt("writer_value", m.writer_value.as_deref()),
        );
    }
}

/// `[route53]` with its region and writer records.
fn write_route53(doc: &mut Document, r: &Route53Section) {
    let credentials = r.credentials.as_ref().map(|(id, secret)| {
        Entries::default()
            .set("access_key_id", id)
            .set("secret_access_key", secret)
    });
    doc.table(
        &["route53"],
        Entries::default()
            .set("zone_id", &r.zone_id)
            .set("record_name", &r.record_name)
            .opt("record_type", r.record_type.as_deref())
            .opt("ttl", r.ttl)
            .opt("endpoint_url", r.endpoint_url.as_deref())
            .opt("credentials", credentials)
            .opt("insync_timeout", r.insync_timeout),
    );
    for record in &r.regions {
        doc.table(
            &["route53", "regions", &record.region],
            Entries::default()
                .set("set_identifier", &record.set_identifier)
                .set("value", &record.value)
                .opt("gate_url", record.gate_url.as_deref()),
        );
    }
    for writer in &r.writers {
        doc.table(
            &["route53", "writers", &writer.group],
            Entries::default().set("name", &writer.name),
        );
    }
}
