//! Probes: one target, one async check, one [`Observation`] or [`ProbeError`].
//!
//! A probe is stateless with respect to health: it reports what it saw and nothing else; the
//! thresholds live in [`crate::health`]. A probe may keep a connection between checks (Postgres,
//! Redis, HTTP in `reuse` mode), but never shares one with another target, so a hung target
//! can only make its own probe time out. The [`scheduler`] runs each probe on its own task with
//! a hard timeout.
//!
//! Layout: `http.rs`, `postgres.rs` and `redis.rs` hold the three kinds; [`AnyProbe`] is the
//! fixed set of them, built from a [`Target`].

pub mod http;
pub mod postgres;
pub mod redis;

use std::future::Future;
use std::time::Duration;

use serde::Serialize;

use crate::config::SecretError;
use crate::datastore::DatastoreError;
pub use crate::datastore::Lsn;
use crate::topology::{Target, TargetSpec};

pub use http::{HttpClients, HttpFacts, HttpProbe};
pub use postgres::{PostgresFacts, PostgresProbe};
pub use redis::{RedisFacts, RedisProbe};

/// One async health check of one target.
pub trait Probe: Send + Sync + 'static {
    /// Runs the check once. The caller enforces the hard timeout by dropping the future, so
    /// implementations must leave no half-used connection behind when dropped.
    fn check(&self) -> impl Future<Output = Result<Observation, ProbeError>> + Send;

    /// Signalled when the server closes a connection the probe holds open (a crash closes
    /// it at once), so the scheduler looks again now instead of at the next tick. None for
    /// probes that hold no connection.
    fn closed(&self) -> Option<std::sync::Arc<tokio::sync::Notify>> {
        None
    }
}

/// What a successful check saw.
#[derive(Debug, Clone, Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct Observation {
    /// Time the check took, in milliseconds.
    #[serde(
        rename = "latency_ms",
        serialize_with = "crate::util::ser_millis",
        deserialize_with = "de_millis"
    )]
    #[schemars(with = "f64")]
    pub latency: Duration,
    /// Kind-specific facts.
    pub facts: Facts,
}

/// Kind-specific facts of an observation.
#[derive(Debug, Clone, Serialize, serde::Deserialize, schemars::JsonSchema)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Facts {
    /// HTTP response facts.
    Http(HttpFacts),
    /// Postgres role, positions and replication.
    Postgres(PostgresFacts),
    /// Redis role, offsets and cluster state.
    Redis(RedisFacts),
}

/// Reads a duration written by [`crate::util::ser_millis`] (fractional milliseconds).
fn de_millis<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let ms = <f64 as serde::Deserialize>::deserialize(d)?;
    if !(ms.is_finite() && ms >= 0.0) {
        return Err(serde::de::Error::custom(format!(
            "a duration must be a finite number of milliseconds >= 0, not {ms}"
        )));
    }
    Ok(Duration::from_nanos((ms * 1e6).round() as u64))
}

/// Why a check failed. Every variant is worth retrying at the next interval; none is fatal.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ProbeError {
    /// The check did not finish within the hard timeout.
    #[error("no answer within {}", humantime::format_duration(*.0))]
    Timeout(Duration),
    /// No connection could be made.
    #[error("connect failed: {0}")]
    Connect(String),
    /// The request or query failed on an open connection.
    #[error("request failed: {0}")]
    Request(String),
    /// The HTTP status is not one of the expected ones.
    #[error("unexpected HTTP status {status}")]
    Status {
        /// The status received.
        status: u16,
    },
    /// The body did not pass the configured check.
    #[error("body check failed: {0}")]
    Body(String),
    /// The answer came, but later than the latency limit.
    #[error("answer took {} (limit {})", humantime::format_duration(*.latency), humantime::format_duration(*.limit))]
    TooSlow {
        /// Measured latency.
        latency: Duration,
        /// Configured limit.
        limit: Duration,
    },
    /// The server answered something that cannot be understood.
    #[error("unexpected reply: {0}")]
    Protocol(String),
    /// The credentials could not be read.
    #[error("{0}")]
    Secret(String),
}

impl From<DatastoreError> for ProbeError {
    fn from(e: DatastoreError) -> Self {
        match e {
            DatastoreError::Connect(m) => ProbeError::Connect(m),
            DatastoreError::Protocol(m) => ProbeError::Protocol(m),
            DatastoreError::Secret(m) => ProbeError::Secret(m),
        }
    }
}

impl From<SecretError> for ProbeError {
    fn from(e: SecretError) -> Self {
        ProbeError::Secret(e.to_string())
    }
}

/// The fixed set of probe kinds.
#[derive(Debug)]
pub enum AnyProbe {
    /// HTTP(S).
    Http(HttpProbe),
    /// Postgres.
    Postgres(PostgresProbe),
    /// Redis.
    Redis(RedisProbe),
}

/// Why a probe could not be built from its target.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The HTTP client could not be built (e.g. an unreadable CA file).
    #[error("target {target}: {message}")]
    Target {
        /// The target id.
        target: String,
        /// What went wrong.
        message: String,
    },
}

impl AnyProbe {
    /// Builds the probe for a target. HTTP clients are shared between targets with the same
    /// TLS settings and connection mode, which keeps memory flat with thousands of targets.
    pub fn build(target: &Target, clients: &mut HttpClients) -> Result<AnyProbe, BuildError> {
        let err = |message: String| BuildError::Target {
            target: target.id.to_string(),
            message,
        };
        Ok(match &target.spec {
            TargetSpec::Http(cfg) => AnyProbe::Http(HttpProbe::new(cfg, clients).map_err(err)?),
            TargetSpec::Postgres {
                member,
                password,
                ca_file,
                ..
            } => AnyProbe::Postgres(
                PostgresProbe::new(
                    &member.dsn,
                    password.clone(),
                    ca_file.clone(),
                    target.settings.timeout,
                )
                .map_err(err)?,
            ),
            TargetSpec::Redis {
                mode,
                member,
                password,
                ca_file,
                ..
            } => AnyProbe::Redis(
                RedisProbe::new(
                    &member.url,
                    *mode,
                    password.clone(),
                    ca_file.clone(),
                    target.settings.timeout,
                )
                .map_err(err)?,
            ),
        })
    }
}

impl Probe for AnyProbe {
    async fn check(&self) -> Result<Observation, ProbeError> {
        match self {
            AnyProbe::Http(p) => p.check().await,
            AnyProbe::Postgres(p) => p.check().await,
            AnyProbe::Redis(p) => p.check().await,
        }
    }

    fn closed(&self) -> Option<std::sync::Arc<tokio::sync::Notify>> {
        match self {
            AnyProbe::Http(p) => p.closed(),
            AnyProbe::Postgres(p) => p.closed(),
            AnyProbe::Redis(p) => p.closed(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lsn_round_trips_through_text() {
        for text in ["0/0", "0/3000148", "16/B374D848", "FFFFFFFF/FFFFFFFF"] {
            assert_eq!(Lsn::parse(text).unwrap().to_string(), text);
        }
        assert_eq!(Lsn::parse("1/0").unwrap().0, 1 << 32);
        assert_eq!(Lsn::parse("0/10").unwrap().bytes_since(Lsn(0x8)), 8);
        assert_eq!(Lsn(1).bytes_since(Lsn(5)), 0);
    }

    #[test]
    fn lsn_rejects_malformed_text() {
        for text in ["", "0", "x/1", "1/", "/1", "100000000/0"] {
            assert_eq!(Lsn::parse(text), None, "{text:?}");
        }
    }
}
