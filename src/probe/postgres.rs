//! Postgres probe: role, WAL positions, replay lag, timeline, and replication links.
//!
//! One persistent connection per member, re-established after any error. The three queries go
//! in one simple-query round trip. When the server closes that connection (a backend exits as
//! soon as its postmaster dies) the probe's [`Probe::closed`] is signalled, so the member is
//! looked at again at once rather than at its next tick. The role needs only `pg_monitor`:
//! the probe never writes.
//!
//! On a replica the `pg_stat_wal_receiver` row is the data path's own view of the primary:
//! whether it streams, and how long since the primary last said anything. The primary sends a
//! keepalive after half of `wal_sender_timeout` of silence, so that age is only a fine signal
//! when `wal_sender_timeout` is short (the lab uses 5 s). Ages are measured against
//! `clock_timestamp()`, not `now()`: the round trip is one transaction, so `now()` is its start
//! and a message received while it runs would look like it came from the future. They are
//! clamped at zero for the same reason.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio_postgres::{SimpleQueryMessage, SimpleQueryRow};

use super::{Facts, Lsn, Observation, Probe, ProbeError};
use crate::config::SecretRef;
use crate::datastore::acks::Acks;
use crate::datastore::postgres::connect_watched;
pub use crate::datastore::postgres::PgRole;
use crate::util::error_chain;

const QUERY: &str = "\
SELECT pg_is_in_recovery(),
  CASE WHEN pg_is_in_recovery() THEN NULL ELSE pg_current_wal_lsn() END,
  pg_last_wal_receive_lsn(),
  pg_last_wal_replay_lsn(),
  CASE WHEN pg_is_in_recovery() THEN NULL
       ELSE ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int END,
  (SELECT timeline_id FROM pg_control_checkpoint()),
  CASE WHEN pg_is_in_recovery() THEN pg_is_wal_replay_paused() END,
  CASE WHEN pg_is_in_recovery() THEN greatest(0, extract(epoch FROM clock_timestamp() - pg_last_xact_replay_timestamp())) END,
  current_setting('synchronous_standby_names'),
  current_setting('synchronous_commit'),
  current_setting('primary_slot_name'),
  current_setting('wal_log_hints'),
  current_setting('data_checksums'),
  current_setting('full_page_writes');
SELECT status, received_tli, flushed_lsn, greatest(0, extract(epoch FROM clock_timestamp() - last_msg_receipt_time)),
  sender_host, sender_port
  FROM pg_stat_wal_receiver;
SELECT application_name, client_addr, state, sync_state, sent_lsn, replay_lsn,
  extract(epoch FROM replay_lag)
  FROM pg_stat_replication ORDER BY application_name;
SELECT slot_name, active FROM pg_replication_slots WHERE slot_type = 'physical' ORDER BY slot_name";

/// Facts of a successful Postgres check.
#[derive(Debug, Clone, Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct PostgresFacts {
    /// Primary or replica.
    pub role: PgRole,
    /// Timeline: of the current WAL on a primary, of the received WAL on a replica.
    pub timeline: Option<u32>,
    /// `pg_current_wal_lsn()` on a primary.
    pub current_lsn: Option<Lsn>,
    /// Last WAL position received and flushed (replica).
    pub receive_lsn: Option<Lsn>,
    /// Last WAL position replayed (replica).
    pub replay_lsn: Option<Lsn>,
    /// Bytes received but not yet replayed (replica).
    pub replay_lag_bytes: Option<u64>,
    /// Seconds since the last replayed transaction, or 0 when everything received is replayed.
    pub replay_lag_seconds: Option<f64>,
    /// Whether replay is paused (`pg_wal_replay_pause()`).
    pub replay_paused: Option<bool>,
    /// The WAL receiver (replica), absent when it is not running.
    pub wal_receiver: Option<WalReceiver>,
    /// Replicas streaming from this server (`pg_stat_replication`).
    pub replicas: Vec<ReplicationLink>,
    /// How many standbys must confirm a commit (primary): `synchronous_standby_names` under
    /// the server's `synchronous_commit`.
    #[serde(default)]
    pub acks: Option<Acks>,
    /// The replication slot it streams through (replica, `primary_slot_name`), if any.
    #[serde(default)]
    pub slot_name: Option<String>,
    /// Its physical replication slots (`pg_replication_slots`).
    #[serde(default)]
    pub slots: Vec<Slot>,
    /// The settings `pg_rewind` needs on it, to rejoin it once it is an old primary.
    #[serde(default)]
    pub rewind: Option<RewindSettings>,
}

/// The settings `pg_rewind` needs on the server it rewinds: `wal_log_hints` or data
/// checksums, and `full_page_writes`.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize, schemars::JsonSchema,
)]
pub struct RewindSettings {
    /// `wal_log_hints`.
    pub wal_log_hints: bool,
    /// `data_checksums` (set at initdb).
    pub data_checksums: bool,
    /// `full_page_writes`.
    pub full_page_writes: bool,
}

impl RewindSettings {
    /// Why `pg_rewind` cannot rewind the server, or `None` when it can.
    pub fn blocker(&self) -> Option<&'static str> {
        if !self.full_page_writes {
            Some("full_page_writes is off")
        } else if !self.wal_log_hints && !self.data_checksums {
            Some("wal_log_hints is off and the cluster has no data checksums")
        } else {
            None
        }
    }

    /// What lets `pg_rewind` rewind it, for people.
    pub fn enabler(&self) -> &'static str {
        if self.data_checksums {
            "data checksums"
        } else {
            "wal_log_hints on"
        }
    }
}

/// A physical replication slot on a server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct Slot {
    /// Its name.
    pub name: String,
    /// A WAL receiver streams through it now.
    pub active: bool,
}

/// A replica's view of its upstream.
#[derive(Debug, Clone, Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct WalReceiver {
    /// Receiver status, `streaming` when healthy.
    pub status: String,
    /// Timeline being received.
    pub received_tli: Option<u32>,
    /// Last position flushed to disk.
    pub flushed_lsn: Option<Lsn>,
    /// Seconds since the last message from the primary arrived.
    pub last_msg_age_seconds: Option<f64>,
    /// The primary's host as the replica connects to it.
    pub sender_host: Option<String>,
    /// The primary's port.
    pub sender_port: Option<u16>,
}

/// One row of `pg_stat_replication`.
#[derive(Debug, Clone, Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct ReplicationLink {
    /// The replica's `application_name`.
    pub application_name: String,
    /// Its address.
    pub client_addr: Option<String>,
    /// `streaming`, `catchup`, ...
    pub state: Option<String>,
    /// `async`, `sync`, `quorum`, `potential`.
    pub sync_state: Option<String>,
    /// Last position sent.
    pub sent_lsn: Option<Lsn>,
    /// Last position the replica replayed.
    pub replay_lsn: Option<Lsn>,
    /// Bytes from its replay position to the primary's current position.
    pub lag_bytes: Option<u64>,
    /// The primary's measured replay lag in seconds.
    pub replay_lag_seconds: Option<f64>,
}

/// Probe of one Postgres member.
pub struct PostgresProbe {
    config: tokio_postgres::Config,
    password: Option<SecretRef>,
    ca_file: Option<std::path::PathBuf>,
    client: Mutex<Option<tokio_postgres::Client>>,
    /// Signalled when the server closes the held connection.
    closed: std::sync::Arc<tokio::sync::Notify>,
}

impl std::fmt::Debug for PostgresProbe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // tokio_postgres::Config's Debug redacts the password; the secret ref only names a source.
        f.debug_struct("PostgresProbe")
            .field("hosts", &self.config.get_hosts())
            .field("ports", &self.config.get_ports())
            .finish_non_exhaustive()
    }
}

impl PostgresProbe {
    /// Builds the probe; nothing connects until the first check.
    pub fn new(
        dsn: &str,
        password: Option<SecretRef>,
        ca_file: Option<std::path::PathBuf>,
        timeout: Duration,
    ) -> Result<Self, String> {
        let mut config: tokio_postgres::Config =
            dsn.parse().map_err(|e| format!("bad dsn: {e}"))?;
        config.connect_timeout(timeout);
        if config.get_application_name().is_none() {
            config.application_name("failoverd");
        }
        Ok(PostgresProbe {
            config,
            password,
            ca_file,
            client: Mutex::new(None),
            closed: std::sync::Arc::default(),
        })
    }

    async fn connect(&self) -> Result<tokio_postgres::Client, ProbeError> {
        connect_watched(
            self.config.clone(),
            self.password.as_ref(),
            self.ca_file.as_deref(),
            Some(self.closed.clone()),
        )
        .await
        .map_err(ProbeError::from)
    }
}

impl Probe for PostgresProbe {
    async fn check(&self) -> Result<Observation, ProbeError> {
        let start = Instant::now();
        // Take the connection out of its slot: if this future is dropped on timeout, the
        // connection is dropped with it rather than put back in an unknown state.
        let cached = self.client.lock().unwrap_or_else(|p| p.into_inner()).take();
        let client = match cached {
            Some(client) if !client.is_closed() => client,
            _ => self.connect().await?,
        };
        let messages = client
            .simple_query(QUERY)
            .await
            .map_err(|e| ProbeError::Request(error_chain(&e)))?;
        let facts = parse_facts(&messages)?;
        *self.client.lock().unwrap_or_else(|p| p.into_inner()) = Some(client);
        Ok(Observation {
            latency: start.elapsed(),
            facts: Facts::Postgres(facts),
        })
    }

    fn closed(&self) -> Option<std::sync::Arc<tokio::sync::Notify>> {
        Some(self.closed.clone())
    }
}

/// Splits simple-query messages into the rows of each statement.
fn statements(messages: &[SimpleQueryMessage]) -> Vec<Vec<&SimpleQueryRow>> {
    let mut out = vec![Vec::new()];
    for message in messages {
        match message {
            SimpleQueryMessage::Row(row) => out.last_mut().expect("never empty").push(row),
            SimpleQueryMessage::CommandComplete(_) => out.push(Vec::new()),
            _ => {}
        }
    }
    out
}

fn text(row: &SimpleQueryRow, i: usize) -> Option<&str> {
    row.try_get(i).ok().flatten()
}

fn lsn(row: &SimpleQueryRow, i: usize) -> Option<Lsn> {
    text(row, i).and_then(Lsn::parse)
}

fn num<T: std::str::FromStr>(row: &SimpleQueryRow, i: usize) -> Option<T> {
    text(row, i).and_then(|t| t.parse().ok())
}

fn parse_facts(messages: &[SimpleQueryMessage]) -> Result<PostgresFacts, ProbeError> {
    let stmts = statements(messages);
    let row = stmts
        .first()
        .and_then(|rows| rows.first())
        .ok_or_else(|| ProbeError::Protocol("status query returned no row".into()))?;
    let in_recovery = match text(row, 0) {
        Some("t") => true,
        Some("f") => false,
        other => {
            return Err(ProbeError::Protocol(format!(
                "pg_is_in_recovery() returned {other:?}"
            )))
        }
    };
    let current_lsn = lsn(row, 1);
    let receive_lsn = lsn(row, 2);
    let replay_lsn = lsn(row, 3);
    let wal_timeline: Option<u32> = num(row, 4);
    let checkpoint_timeline: Option<u32> = num(row, 5);
    let replay_paused = text(row, 6).map(|t| t == "t");
    let since_replay: Option<f64> = num(row, 7);
    let standby_names = text(row, 8);
    let synchronous_commit = text(row, 9);
    let slot_name = text(row, 10)
        .filter(|name| !name.is_empty())
        .map(str::to_owned);
    let on = |i: usize| text(row, i).map(|t| t == "on");
    let rewind = match (on(11), on(12), on(13)) {
        (Some(wal_log_hints), Some(data_checksums), Some(full_page_writes)) => {
            Some(RewindSettings {
                wal_log_hints,
                data_checksums,
                full_page_writes,
            })
        }
        _ => None,
    };

    let wal_receiver = stmts
        .get(1)
        .and_then(|rows| rows.first())
        .map(|r| WalReceiver {
            status: text(r, 0).unwrap_or("unknown").to_owned(),
            received_tli: num(r, 1),
            flushed_lsn: lsn(r, 2),
            last_msg_age_seconds: num(r, 3),
            sender_host: text(r, 4).map(str::to_owned),
            sender_port: num(r, 5),
        });
    let replicas: Vec<ReplicationLink> = stmts
        .get(2)
        .map(|rows| {
            rows.iter()
                .map(|r| {
                    let replay = lsn(r, 5);
                    ReplicationLink {
                        application_name: text(r, 0).unwrap_or("").to_owned(),
                        client_addr: text(r, 1).map(str::to_owned),
                        state: text(r, 2).map(str::to_owned),
                        sync_state: text(r, 3).map(str::to_owned),
                        sent_lsn: lsn(r, 4),
                        replay_lsn: replay,
                        lag_bytes: current_lsn.zip(replay).map(|(c, r)| c.bytes_since(r)),
                        replay_lag_seconds: num(r, 6),
                    }
                })
                .collect()
        })
        .unwrap_or_default();
    let slots: Vec<Slot> = stmts
        .get(3)
        .map(|rows| {
            rows.iter()
                .filter_map(|r| {
                    Some(Slot {
                        name: text(r, 0)?.to_owned(),
                        active: text(r, 1) == Some("t"),
                    })
                })
                .collect()
        })
        .unwrap_or_default();

    let (role, timeline, replay_lag_bytes, replay_lag_seconds) = if in_recovery {
        let lag_bytes = receive_lsn
            .zip(replay_lsn)
            .map(|(rx, rp)| rx.bytes_since(rp));
        // Time since the last replayed commit only means lag while something waits to be
        // replayed; on an idle, caught-up replica it would grow forever.
        let lag_seconds = match lag_bytes {
            Some(0) => Some(0.0),
            _ => since_replay.map(|s| s.max(0.0)),
        };
        let timeline = wal_receiver
            .as_ref()
            .and_then(|w| w.received_tli)
            .or(checkpoint_timeline);
        (PgRole::Replica, timeline, lag_bytes, lag_seconds)
    } else {
        (
            PgRole::Primary,
            wal_timeline.or(checkpoint_timeline),
            None,
            None,
        )
    };
    let acks = match (role, standby_names, synchronous_commit) {
        (PgRole::Primary, Some(names), Some(commit)) => Some(Acks::postgres(
            names,
            commit,
            u32::try_from(replicas.len()).unwrap_or(u32::MAX),
        )),
        _ => None,
    };
    Ok(PostgresFacts {
        acks,
        role,
        timeline,
        current_lsn,
        receive_lsn,
        replay_lsn,
        replay_lag_bytes,
        replay_lag_seconds,
        replay_paused,
        wal_receiver,
        replicas,
        slot_name: slot_name.filter(|_| in_recovery),
        slots,
        rewind,
    })
}
