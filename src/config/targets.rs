//! What failoverd probes and fails over: the `[[regions]]` with their HTTP API targets, the
//! `[postgres]` cluster and the `[redis]` shards, with their members; with their rules
//! (`validate_regions`, `validate_postgres*`, `validate_redis`).
//!
//! How often each target is probed is in `probe.rs`.

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::validate::Validator;
use super::{default_true, ProbeConfig, ProbeOverrides, SecretRef, TargetKind};

/// Default priority of a Postgres member when choosing among equally caught-up replicas.
pub const DEFAULT_PG_PRIORITY: u32 = 100;
/// Default data-loss guard for automatic promotion: 1 MiB of WAL.
pub const DEFAULT_MAX_LAG_ON_FAILOVER: u64 = 1024 * 1024;
/// Largest Route53 weight (the service accepts 0..=255).
pub const MAX_WEIGHT: u32 = 255;

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
    /// Synchronous quorum commit kept by failoverd on whichever member is primary.
    #[serde(default)]
    pub synchronous: SynchronousConfig,
    /// Replication slots on a new primary for the replicas that follow it (default `auto`).
    #[serde(default)]
    pub replication_slots: ReplicationSlots,
    /// How an old primary is made a replica of the new one (none: it stays fenced).
    pub rejoin: Option<RejoinConfig>,
    /// The member the primary belongs on: a restore of its region moves the primary back to
    /// it (always, with `failover.auto_failback`) once it streams and has caught up.
    pub home: Option<String>,
    /// The members: one primary and its streaming replicas.
    pub members: Vec<PostgresMemberConfig>,
}

/// `[postgres.rejoin]`: the command the agent beside an old primary runs to make it a
/// streaming replica of the primary the cluster names (`pg_rewind`, or a new base backup).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RejoinConfig {
    /// Program and arguments; `{member}` and `{region}` in an argument are replaced by the old
    /// primary's name and region. Its environment is documented in `docs/failover.md`.
    pub command: Vec<String>,
    /// The command is killed after this long and tried again later (default 10 min).
    #[serde(default = "default_rejoin_timeout", with = "humantime_serde")]
    pub timeout: Duration,
}

fn default_rejoin_timeout() -> Duration {
    Duration::from_secs(600)
}

/// Whether failoverd manages the replication slots replicas stream through.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReplicationSlots {
    /// A replica that streams through a slot (`primary_slot_name`) gets a slot of that name
    /// on each new primary, made before it is pointed there.
    #[default]
    Auto,
    /// failoverd makes no slot: replicas that use one need it made by someone else.
    Off,
}

/// Whether failoverd keeps the primary's `synchronous_standby_names`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SynchronousMode {
    /// failoverd leaves `synchronous_standby_names` as the operator set it.
    #[default]
    Off,
    /// `ANY <count> (<members outside the primary's region>)`, kept right across failovers.
    Quorum,
}

/// `[postgres.synchronous]`: a primary that needs an acknowledgement from a replica in
/// another region for every commit cannot acknowledge a write once a partition cuts its
/// region off: it fences itself.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SynchronousConfig {
    /// `off` (default) or `quorum`.
    #[serde(default)]
    pub mode: SynchronousMode,
    /// How many replicas outside the primary's region confirm each commit (default 1).
    #[serde(default = "default_sync_count")]
    pub count: u32,
    /// When fewer replicas outside the primary's region stream than `count`, ask for as many
    /// as stream (none: asynchronous) so that writes keep flowing — the primary then no
    /// longer fences itself (default false: commits wait).
    #[serde(default)]
    pub relax: bool,
}

impl Default for SynchronousConfig {
    fn default() -> Self {
        SynchronousConfig {
            mode: SynchronousMode::Off,
            count: default_sync_count(),
            relax: false,
        }
    }
}

fn default_sync_count() -> u32 {
    1
}

/// `[redis.self_fencing]`: `min-replicas-to-write` / `min-replicas-max-lag` kept by failoverd
/// on every replication shard's master, so that a master cut off from the replicas outside its
/// region refuses writes by itself.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisSelfFencing {
    /// How many replicas outside the master's region must be attached for a write (default
    /// 1); the master's `min-replicas-to-write` is this plus its attached replicas in its own
    /// region.
    #[serde(default = "default_sync_count")]
    pub replicas: u32,
    /// `min-replicas-max-lag` (default 10 s, whole seconds): a master stops counting a
    /// replica this long after its last acknowledgement, so it fences itself this long after
    /// a cut.
    #[serde(default = "default_redis_max_lag", with = "humantime_serde")]
    pub max_lag: Duration,
    /// When fewer replicas outside the master's region are attached than `replicas`, ask for
    /// as many as are (default false: writes are refused).
    #[serde(default)]
    pub relax: bool,
}

fn default_redis_max_lag() -> Duration {
    Duration::from_secs(10)
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
    /// Self-fencing kept on replication shards' masters (absent: failoverd leaves
    /// `min-replicas-to-write` as the operator set it).
    pub self_fencing: Option<RedisSelfFencing>,
    /// The shards.
    #[serde(default)]
    pub shards: Vec<RedisShardConfig>,
}

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
    /// Replication mode: the member whose region the master belongs in. After a restore of
    /// its region (and at any time with `failover.auto_failback`), the master moves back to
    /// it by a planned switchover once it is a healthy replica (as `postgres.home` does).
    pub home: Option<String>,
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

/// Checks `[[regions]]`: at least one, simple and unique names, weights Route53 accepts, and
/// each region's API targets.
pub(super) fn validate_regions(v: &mut Validator, regions: &[RegionConfig], probe: &ProbeConfig) {
    let mut region_names = HashSet::new();
    if regions.is_empty() {
        v.push("regions", "at least one region is required");
    }
    for (i, region) in regions.iter().enumerate() {
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
            validate_http_target(v, &key, api, probe);
        }
    }
}

/// Checks one API target at `key`: its URL, statuses, body checks, headers, CA file and
/// probe settings, and a latency limit below its probe timeout.
fn validate_http_target(v: &mut Validator, key: &str, api: &HttpTargetConfig, probe: &ProbeConfig) {
    v.url(&format!("{key}.url"), &api.url, &["http", "https"]);
    for (k, status) in api.expect_status.iter().enumerate() {
        if !(100..=599).contains(status) {
            v.push(
                format!("{key}.expect_status[{k}]"),
                format!("{status} is not an HTTP status (100..=599)"),
            );
        }
    }
    if let Some(pointer) = &api.json_pointer {
        if !pointer.starts_with('/') {
            v.push(
                format!("{key}.json_pointer"),
                format!("{pointer:?} is not a JSON pointer (it must start with '/')"),
            );
        }
    } else if api.json_equals.is_some() {
        v.push(format!("{key}.json_equals"), "needs json_pointer");
    }
    for name in api.headers.keys() {
        if reqwest::header::HeaderName::from_bytes(name.as_bytes()).is_err() {
            v.push(
                format!("{key}.headers.{name}"),
                format!("{name:?} is not a valid header name"),
            );
        }
    }
    if let Some(ca) = &api.ca_file {
        v.readable(&format!("{key}.ca_file"), ca);
    }
    let settings = v.target_probe(key, TargetKind::Http, &api.probe, probe);
    if let Some(max) = api.max_latency {
        if max >= settings.timeout {
            v.push(
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

/// Checks `postgres.rejoin`: a command names a program, the timeout leaves it time to work.
pub(super) fn validate_postgres_rejoin(v: &mut Validator, rejoin: &RejoinConfig) {
    if rejoin.command.first().is_none_or(|p| p.trim().is_empty()) {
        v.push("postgres.rejoin.command", "must name a program");
    }
    if rejoin.timeout < Duration::from_secs(10) {
        v.push(
            "postgres.rejoin.timeout",
            "must be at least 10s: a rewind or a base backup takes longer",
        );
    }
}

/// Checks `postgres.fence`: a command names a program, a role is a simple name.
pub(super) fn validate_postgres_fence(v: &mut Validator, fence: &PostgresFence) {
    match fence {
        PostgresFence::Command(argv) if argv.is_empty() => {
            v.push("postgres.fence.command", "must name a program");
        }
        PostgresFence::RevokeLogin(role) => v.name("postgres.fence.revoke_login", role),
        _ => {}
    }
}

/// Checks `[postgres]` and its members: a simple cluster name, secrets that resolve, a CA
/// file that exists, unique members in configured regions with DSNs that name a host and hold
/// no password, and at least one member that may be promoted. The fence and the replication
/// settings are checked apart ([`validate_postgres_fence`], [`validate_postgres_replication`]).
pub(super) fn validate_postgres(
    v: &mut Validator,
    pg: &PostgresConfig,
    regions: &HashSet<&str>,
    probe: &ProbeConfig,
) {
    v.name("postgres.cluster", &pg.cluster);
    if let Some(secret) = &pg.password {
        v.secret("postgres.password", secret);
    }
    if let Some(ca) = &pg.ca_file {
        v.readable("postgres.ca_file", ca);
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
        v.region(&format!("{key}.region"), &m.region, regions);
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
        v.target_probe(&key, TargetKind::Postgres, &m.probe, probe);
    }
    if pg.synchronous.mode == SynchronousMode::Quorum {
        validate_synchronous(v, pg);
    }
    if !pg.members.is_empty() && pg.members.iter().all(|m| m.no_failover) {
        v.push(
            "postgres.members",
            "every member has no_failover = true: no member could ever be promoted",
        );
    }
    if let Some(home) = &pg.home {
        match pg.members.iter().find(|m| &m.name == home) {
            None => v.push(
                "postgres.home",
                format!("{home:?} is not the name of a member in postgres.members"),
            ),
            Some(m) if m.no_failover => v.push(
                "postgres.home",
                format!("member {home:?} has no_failover = true: it can never be primary"),
            ),
            Some(_) => {}
        }
    }
}

/// Checks `[postgres.synchronous]`: a count of at least 1, and — unless `relax` — enough
/// members outside every region a primary could be in to confirm its commits.
fn validate_synchronous(v: &mut Validator, pg: &PostgresConfig) {
    let count = pg.synchronous.count;
    if count == 0 {
        v.push(
            "postgres.synchronous.count",
            "must be at least 1 (use mode = \"off\" for asynchronous replication)",
        );
        return;
    }
    if pg.synchronous.relax {
        return;
    }
    for m in pg.members.iter().filter(|m| !m.no_failover) {
        let outside = pg
            .members
            .iter()
            .filter(|o| o.region != m.region && !o.no_failover)
            .count();
        if outside < count as usize {
            v.push(
                "postgres.synchronous.count",
                format!(
                    "{count} replica(s) outside region {:?} must confirm each commit while {} is \
                     primary, but only {outside} member(s) that may be promoted run elsewhere: \
                     every write would wait (add members, lower count or set relax = true)",
                    m.region, m.name
                ),
            );
            return;
        }
    }
}

/// Checks `postgres.replication`: a user, a secret that resolves, an `sslmode` libpq knows.
pub(super) fn validate_postgres_replication(v: &mut Validator, replication: &ReplicationConfig) {
    if replication.user.trim().is_empty() {
        v.push("postgres.replication.user", "must not be empty");
    }
    if let Some(secret) = &replication.password {
        v.secret("postgres.replication.password", secret);
    }
    if let Some(mode) = &replication.sslmode {
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

/// Checks `[redis]`: secrets that resolve, and for each shard a simple, unique name, members,
/// a CA file only with TLS members, `cluster_node_timeout` only in cluster mode, and unique
/// members in configured regions with distinct addresses and no password in their URLs.
pub(super) fn validate_redis(
    v: &mut Validator,
    redis: &RedisConfig,
    regions: &HashSet<&str>,
    probe: &ProbeConfig,
) {
    if let Some(secret) = &redis.password {
        v.secret("redis.password", secret);
    }
    if let Some(sf) = &redis.self_fencing {
        if sf.replicas == 0 {
            v.push(
                "redis.self_fencing.replicas",
                "must be at least 1 (remove [redis.self_fencing] to leave masters as they are)",
            );
        }
        if sf.max_lag.as_secs() == 0 || sf.max_lag.subsec_nanos() != 0 {
            v.push(
                "redis.self_fencing.max_lag",
                "must be a whole number of seconds, at least 1s (Redis counts it in seconds)",
            );
        }
    }
    let mut shard_names = HashSet::new();
    for (i, shard) in redis.shards.iter().enumerate() {
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
            v.readable(&format!("{key}.ca_file"), ca);
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
        if let Some(home) = &shard.home {
            if shard.mode == RedisMode::Cluster {
                v.push(
                    format!("{key}.home"),
                    "is only used with mode = \"replication\": a Redis Cluster places its own masters",
                );
            } else if !shard.members.iter().any(|m| &m.name == home) {
                v.push(
                    format!("{key}.home"),
                    format!("{home:?} is not the name of a member in {key}.members"),
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
            v.region(&format!("{key}.region"), &m.region, regions);
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
            v.target_probe(&key, TargetKind::Redis, &m.probe, probe);
        }
    }
}
