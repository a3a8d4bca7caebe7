//! The Postgres probe against a real Postgres 15 primary and streaming replica.

mod support;

use std::time::Duration;

use failoverd::config::SecretRef;
use failoverd::health::State;
use failoverd::probe::postgres::PgRole;
use failoverd::probe::{Facts, Lsn};
use support::{probe_settings, ConfigFile, PgPair, PostgresMember, PostgresSection, TestAgent};

const INTERVAL_MS: u64 = 300;
const TIMEOUT_MS: u64 = 200;
const RISE: u32 = 2;
const FALL: u32 = 2;

/// A config probing both servers as the `pg_monitor` role, its password read from a file.
fn config(pg: &PgPair, secret: &tempfile::TempDir) -> ConfigFile {
    let password = secret.path().join("pg-password");
    std::fs::write(&password, format!("{}\n", support::MONITOR_PASSWORD)).unwrap();
    ConfigFile {
        postgres: Some(PostgresSection {
            cluster: Some("main".into()),
            password: Some(SecretRef::File(password)),
            members: vec![
                PostgresMember::new("primary", "r1", pg.primary.monitor_dsn()),
                PostgresMember::new("replica", "r1", pg.replica.monitor_dsn()),
            ],
            ..PostgresSection::default()
        }),
        ..ConfigFile::watcher(probe_settings(
            Duration::from_millis(INTERVAL_MS),
            Duration::from_millis(TIMEOUT_MS),
            RISE,
            FALL,
        ))
    }
}

async fn current_lsn(client: &tokio_postgres::Client) -> anyhow::Result<Lsn> {
    let text: String = client
        .query_one("SELECT pg_current_wal_lsn()::text", &[])
        .await?
        .get(0);
    Ok(Lsn::parse(&text).expect("pg_current_wal_lsn() is an LSN"))
}

const PRIMARY: &str = "postgres/main/primary";
const REPLICA: &str = "postgres/main/replica";

fn pg(facts: &Facts) -> &failoverd::probe::PostgresFacts {
    match facts {
        Facts::Postgres(pg) => pg,
        other => panic!("not postgres facts: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn observes_roles_positions_and_the_replication_link() -> anyhow::Result<()> {
    let pair = PgPair::start().await?;
    let secret = tempfile::tempdir()?;
    let agent = TestAgent::start(config(&pair, &secret)).await?;
    let up = Duration::from_secs(10);
    agent.wait_state(PRIMARY, State::Up, up).await?;
    agent.wait_state(REPLICA, State::Up, up).await?;

    // Write on the primary, then wait until the replica has replayed up to that position.
    let client = pair.primary.connect().await?;
    client
        .batch_execute("CREATE TABLE t (id int); INSERT INTO t SELECT generate_series(1, 1000)")
        .await?;
    let written = current_lsn(&client).await?;

    let primary = agent
        .wait_facts(PRIMARY, "primary facts past the write", up, |f| {
            let p = pg(f);
            (p.current_lsn? >= written && !p.replicas.is_empty()).then(|| p.clone())
        })
        .await?;
    assert_eq!(primary.role, PgRole::Primary);
    assert_eq!(primary.timeline, Some(1));
    assert!(
        primary.wal_receiver.is_none(),
        "a primary has no WAL receiver"
    );
    let link = &primary.replicas[0];
    assert_eq!(link.application_name, pair.replica.name);
    assert_eq!(link.state.as_deref(), Some("streaming"));

    let replica = agent
        .wait_facts(REPLICA, "replica replayed the write", up, |f| {
            let p = pg(f);
            (p.replay_lsn? >= written).then(|| p.clone())
        })
        .await?;
    assert_eq!(replica.role, PgRole::Replica);
    assert_eq!(replica.timeline, Some(1));
    assert!(replica.current_lsn.is_none());
    assert!(replica.receive_lsn.unwrap() >= replica.replay_lsn.unwrap());
    assert_eq!(replica.replay_paused, Some(false));
    let receiver = replica
        .wal_receiver
        .as_ref()
        .expect("replica has a WAL receiver");
    assert_eq!(receiver.status, "streaming");
    assert_eq!(receiver.sender_port, Some(pair.primary.port));
    assert_eq!(receiver.received_tli, Some(1));
    let age = receiver.last_msg_age_seconds.expect("message age");
    assert!((0.0..10.0).contains(&age), "last message {age}s ago");

    // Caught up: nothing waits to be replayed, so both lags read zero.
    let caught_up = agent
        .wait_facts(REPLICA, "replica caught up", up, |f| {
            let p = pg(f);
            (p.replay_lag_bytes == Some(0)).then(|| p.clone())
        })
        .await?;
    assert_eq!(caught_up.replay_lag_seconds, Some(0.0));
    agent.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_replica_shows_growing_lag() -> anyhow::Result<()> {
    let pair = PgPair::start().await?;
    let secret = tempfile::tempdir()?;
    let agent = TestAgent::start(config(&pair, &secret)).await?;
    let deadline = Duration::from_secs(15);
    agent.wait_state(REPLICA, State::Up, deadline).await?;
    let primary = pair.primary.connect().await?;
    primary.batch_execute("CREATE TABLE t (v text)").await?;
    // Let the replica replay one transaction first: the lag in seconds is measured from the
    // last replayed commit, and there is none on a freshly started replica.
    let created = current_lsn(&primary).await?;
    agent
        .wait_facts(REPLICA, "the CREATE TABLE replayed", deadline, |f| {
            (pg(f).replay_lsn? >= created).then_some(())
        })
        .await?;
    let replica = pair.replica.connect().await?;
    replica
        .batch_execute("SELECT pg_wal_replay_pause()")
        .await?;

    let insert = "INSERT INTO t SELECT repeat('x', 100) FROM generate_series(1, 2000)";
    primary.batch_execute(insert).await?;
    let first = agent
        .wait_facts(REPLICA, "lag after the first write", deadline, |f| {
            let p = pg(f);
            (p.replay_lag_bytes? > 0 && p.replay_paused == Some(true)).then(|| p.clone())
        })
        .await?;
    primary.batch_execute(insert).await?;
    let first_bytes = first.replay_lag_bytes.unwrap();
    let second = agent
        .wait_facts(REPLICA, "more lag, in bytes and seconds", deadline, |f| {
            // The seconds count from the last replayed commit: a probe in the same instant
            // as that commit reads 0.
            let p = pg(f);
            (p.replay_lag_bytes? > first_bytes && p.replay_lag_seconds? > 0.0).then(|| p.clone())
        })
        .await?;
    assert!(
        second.replay_lag_seconds.is_some_and(|s| s > 0.0),
        "{second:?}"
    );
    assert!(
        second.receive_lsn > first.receive_lsn,
        "the replica still receives"
    );
    assert_eq!(second.replay_lsn, first.replay_lsn, "replay stands still");

    // The primary sees the same lag from its side.
    agent
        .wait_facts(PRIMARY, "primary-side lag", deadline, |f| {
            pg(f)
                .replicas
                .first()?
                .lag_bytes
                .filter(|b| *b >= first_bytes)
        })
        .await?;

    // And the metric shows it.
    let metrics = agent.get("/metrics").await?.text().await?;
    let line = metrics
        .lines()
        .find(|l| {
            l.starts_with("failoverd_postgres_replication_lag_bytes{")
                && l.contains(&format!("target=\"{REPLICA}\""))
        })
        .expect("lag metric for the replica");
    let value: f64 = line.rsplit(' ').next().unwrap().parse()?;
    assert!(value > 0.0, "{line}");

    replica
        .batch_execute("SELECT pg_wal_replay_resume()")
        .await?;
    agent
        .wait_facts(REPLICA, "lag back to zero after resume", deadline, |f| {
            (pg(f).replay_lag_bytes == Some(0)).then_some(())
        })
        .await?;
    agent.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_primary_goes_down_within_the_bound_and_comes_back() -> anyhow::Result<()> {
    let pair = PgPair::start().await?;
    let secret = tempfile::tempdir()?;
    let agent = TestAgent::start(config(&pair, &secret)).await?;
    agent
        .wait_state(PRIMARY, State::Up, Duration::from_secs(10))
        .await?;

    pair.primary.kill()?;
    // fall × interval + timeout, plus 250 ms for scheduling and this test's 50 ms polling.
    let bound = Duration::from_millis(u64::from(FALL) * INTERVAL_MS + TIMEOUT_MS + 250);
    let took = agent
        .wait_state(PRIMARY, State::Down, Duration::from_secs(10))
        .await?;
    assert!(took <= bound, "down after {took:?}, bound {bound:?}");
    assert_eq!(
        agent.view(REPLICA).state,
        State::Up,
        "the replica still answers"
    );

    // The replica's own view of the primary: its WAL receiver stops streaming.
    agent
        .wait_facts(
            REPLICA,
            "the replica to lose its upstream",
            Duration::from_secs(10),
            |f| match &pg(f).wal_receiver {
                Some(w) if w.status == "streaming" => None,
                _ => Some(()),
            },
        )
        .await?;

    pair.primary.start()?;
    let bound_up = Duration::from_millis(u64::from(RISE) * INTERVAL_MS + TIMEOUT_MS + 250);
    let took = agent
        .wait_state(PRIMARY, State::Up, Duration::from_secs(10))
        .await?;
    assert!(took <= bound_up, "up after {took:?}, bound {bound_up:?}");
    let change = agent.view(PRIMARY).last_change.expect("a recorded change");
    assert_eq!((change.from, change.to), (State::Down, State::Up));
    agent.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_that_closes_the_probes_connection_is_heard_without_waiting_for_a_probe(
) -> anyhow::Result<()> {
    use anyhow::Context;
    use failoverd::probe::{PostgresProbe, Probe};
    let pair = PgPair::start().await?;
    let probe = PostgresProbe::new(&pair.primary.dsn(), None, None, Duration::from_secs(2))
        .map_err(anyhow::Error::msg)?;
    // The first check opens the connection the probe then holds.
    probe.check().await?;
    let closed = probe
        .closed()
        .context("a Postgres probe watches its connection")?;
    // The postmaster dies; its backends exit when they notice, closing their connections.
    pair.primary.kill()?;
    tokio::time::timeout(Duration::from_secs(5), closed.notified())
        .await
        .context("the closed connection was not signalled")?;
    assert!(
        probe.check().await.is_err(),
        "the server is gone: the next check fails"
    );
    Ok(())
}
