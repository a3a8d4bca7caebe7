//! Datastore clients shared by the probes and the actions: connecting to Postgres and Redis
//! (credentials, TLS), WAL positions, roles, and Redis Cluster views.
//!
//! Below both [`crate::probe`] and [`crate::actions`]: it knows nothing of probing, health or
//! failover, only how to reach a member and read what it says.

pub mod acks;
pub mod postgres;
pub mod redis;

use std::fmt;

use serde::Serialize;

use crate::config::SecretError;

/// Why a datastore could not be reached or understood.
#[derive(Debug, Clone, thiserror::Error)]
pub enum DatastoreError {
    /// No connection could be made.
    #[error("connect failed: {0}")]
    Connect(String),
    /// The server answered something that cannot be understood.
    #[error("unexpected reply: {0}")]
    Protocol(String),
    /// The credentials could not be read.
    #[error("{0}")]
    Secret(String),
}

impl From<SecretError> for DatastoreError {
    fn from(e: SecretError) -> Self {
        DatastoreError::Secret(e.to_string())
    }
}

/// A Postgres write-ahead-log position.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Lsn(pub u64);

impl Lsn {
    /// Parses Postgres' `X/Y` text form.
    pub fn parse(text: &str) -> Option<Lsn> {
        let (hi, lo) = text.split_once('/')?;
        let hi = u64::from_str_radix(hi, 16).ok()?;
        let lo = u64::from_str_radix(lo, 16).ok()?;
        (hi <= u32::MAX as u64 && lo <= u32::MAX as u64).then_some(Lsn((hi << 32) | lo))
    }

    /// Bytes from `earlier` to `self`, zero if `earlier` is ahead.
    pub fn bytes_since(self, earlier: Lsn) -> u64 {
        self.0.saturating_sub(earlier.0)
    }
}

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xFFFF_FFFF)
    }
}

impl Serialize for Lsn {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl schemars::JsonSchema for Lsn {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Lsn".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "pattern": "^[0-9A-F]+/[0-9A-F]+$",
            "description": "A write-ahead-log position, as Postgres writes it (`X/Y`, hex)",
        })
    }
}

impl<'de> serde::Deserialize<'de> for Lsn {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Lsn::parse(&text)
            .ok_or_else(|| serde::de::Error::custom(format!("{text:?} is not an LSN (X/Y)")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lsn_text_round_trips() {
        let lsn = Lsn::parse("16/B374D848").unwrap();
        assert_eq!(lsn.to_string(), "16/B374D848");
        assert_eq!(
            Lsn::parse("1/0")
                .unwrap()
                .bytes_since(Lsn::parse("0/FFFFFFFF").unwrap()),
            1
        );
        assert!(Lsn::parse("nonsense").is_none());
    }
}
