//! The `[agent]`, `[admin]` and `[tls]` sections: who this agent is, where it listens, who may
//! call its admin API, and how its listeners and peer traffic are secured; with their rules
//! (`validate_agent`, `validate_admin`, `validate_tls`).
//!
//! The other agents (`[[peers]]`) and the settings they share are in `cluster.rs`.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::validate::Validator;
use super::{default_true, PeerConfig, SecretRef};

/// Default time SIGTERM waits for tasks to finish before the process exits anyway.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

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

/// Checks `[agent]`: a simple id, a configured region, separate listeners, a data directory
/// and a grace period.
pub(super) fn validate_agent(v: &mut Validator, agent: &AgentConfig, regions: &HashSet<&str>) {
    v.name("agent.id", &agent.id);
    v.region("agent.region", &agent.region, regions);
    if Some(agent.admin_listen) == agent.peer_listen {
        v.push(
            "agent.peer_listen",
            "must differ from agent.admin_listen: peer and admin traffic use separate listeners",
        );
    }
    if agent.data_dir.as_os_str().is_empty() {
        v.push("agent.data_dir", "must not be empty");
    }
    if agent.shutdown_grace == Some(Duration::ZERO) {
        v.push("agent.shutdown_grace", "must be greater than 0");
    }
}

/// Checks `[admin]`: every token has a simple, unique name and a secret that resolves.
pub(super) fn validate_admin(v: &mut Validator, admin: &AdminConfig) {
    let mut token_names = HashSet::new();
    for (i, token) in admin.tokens.iter().enumerate() {
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
}

/// Checks `[tls]`: its files exist, mTLS has a CA and a TLS peer listener to check against,
/// and with TLS on the peer listener every peer is reached over https.
pub(super) fn validate_tls(v: &mut Validator, tls: &TlsConfig, peers: &[PeerConfig]) {
    v.readable("tls.cert_file", &tls.cert_file);
    v.readable("tls.key_file", &tls.key_file);
    if let Some(ca) = &tls.ca_file {
        v.readable("tls.ca_file", ca);
    }
    if tls.require_client_cert && (tls.ca_file.is_none() || !tls.peer) {
        v.push(
            "tls.require_client_cert",
            "needs tls.ca_file and tls.peer = true: client certificates are checked against the cluster CA on the peer listener",
        );
    }
    if tls.peer {
        for (i, peer) in peers.iter().enumerate() {
            if !peer.peer_url.starts_with("https://") {
                v.push(
                    format!("peers[{i}].peer_url"),
                    "must use https:// when tls.peer is on",
                );
            }
        }
    }
}
