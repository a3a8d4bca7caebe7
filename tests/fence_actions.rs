//! The fence actions against real servers, each method fenced and lifted twice (they must be
//! idempotent).

mod support;

use std::time::Duration;

use failoverd::actions;
use failoverd::config::PostgresFence;
use support::{PgPair, RedisPair};

const TIMEOUT: Duration = Duration::from_secs(5);

fn member(pair: &PgPair) -> actions::postgres::Member {
    actions::postgres::Member {
        name: "primary".into(),
        dsn: pair.primary.dsn(),
        password: None,
        ca_file: None,
    }
}

/// Connects as `user` and tries one write; the error text, if any.
async fn write_as(pair: &PgPair, user: &str) -> Result<(), String> {
    let dsn = format!(
        "host=127.0.0.1 port={} user={user} dbname=postgres",
        pair.primary.port
    );
    let (client, connection) = tokio_postgres::connect(&dsn, tokio_postgres::NoTls)
        .await
        .map_err(|e| {
            e.as_db_error()
                .map(|d| d.message().to_owned())
                .unwrap_or(e.to_string())
        })?;
    tokio::spawn(async move {
        let _ended = connection.await;
    });
    client
        .batch_execute("INSERT INTO fenced VALUES (1)")
        .await
        .map_err(|e| {
            e.as_db_error()
                .map(|d| d.message().to_owned())
                .unwrap_or(e.to_string())
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_and_revoke_login_fence_postgres_and_lift_cleanly() -> anyhow::Result<()> {
    let pair = PgPair::start().await?;
    let admin = pair.primary.connect().await?;
    admin
        .batch_execute(
            "CREATE TABLE fenced (v int); CREATE ROLE app LOGIN; GRANT INSERT ON fenced TO app",
        )
        .await?;
    let m = member(&pair);
    write_as(&pair, "app").await.map_err(anyhow::Error::msg)?;

    for _ in 0..2 {
        actions::postgres::fence(&m, &PostgresFence::ReadOnly, TIMEOUT).await?;
    }
    let error = write_as(&pair, "app").await.expect_err("writes refused");
    assert!(error.contains("read-only transaction"), "{error}");
    for _ in 0..2 {
        actions::postgres::unfence(&m, &PostgresFence::ReadOnly, TIMEOUT).await?;
    }
    write_as(&pair, "app").await.map_err(anyhow::Error::msg)?;

    let revoke = PostgresFence::RevokeLogin("app".into());
    for _ in 0..2 {
        actions::postgres::fence(&m, &revoke, TIMEOUT).await?;
    }
    let error = write_as(&pair, "app").await.expect_err("app cannot log in");
    assert!(error.contains("not permitted to log in"), "{error}");
    write_as(&pair, "postgres")
        .await
        .map_err(anyhow::Error::msg)?;
    actions::postgres::unfence(&m, &revoke, TIMEOUT).await?;
    write_as(&pair, "app").await.map_err(anyhow::Error::msg)?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fence_command_gets_the_action_and_its_failure_is_reported() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let out = dir.path().join("calls");
    let script = dir.path().join("fence.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\necho \"$FAILOVERD_ACTION $FAILOVERD_MEMBER\" >> {}\n",
            out.display()
        ),
    )?;
    let m = actions::postgres::Member {
        name: "pg-par".into(),
        dsn: "host=127.0.0.1 port=1 user=x".into(),
        password: None,
        ca_file: None,
    };
    let command = PostgresFence::Command(vec!["/bin/sh".into(), script.display().to_string()]);
    actions::postgres::fence(&m, &command, TIMEOUT).await?;
    actions::postgres::unfence(&m, &command, TIMEOUT).await?;
    assert_eq!(
        std::fs::read_to_string(&out)?,
        "fence pg-par\nunfence pg-par\n"
    );

    let failing = PostgresFence::Command(vec![
        "/bin/sh".into(),
        "-c".into(),
        "echo no >&2; exit 3".into(),
    ]);
    let error = actions::postgres::fence(&m, &failing, TIMEOUT)
        .await
        .expect_err("a failing command is an error");
    assert!(
        error.to_string().contains("exited with exit status: 3: no"),
        "{error}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn min_replicas_fences_a_redis_master_and_restores_its_setting() -> anyhow::Result<()> {
    let pair = RedisPair::start().await?;
    pair.master
        .cmd(&["CONFIG", "SET", "min-replicas-to-write", "1"])
        .await?;
    // The master counts its good replicas once a second: wait until it counts this one,
    // so that a refused write below can only be the fence.
    support::wait_for_async(
        "a write the replica acknowledges",
        Duration::from_secs(10),
        || async { pair.master.cmd(&["SET", "k", "v"]).await.ok().map(|_| ()) },
    )
    .await?;
    let m = actions::redis::Member {
        name: "master".into(),
        url: pair.master.url(),
        password: None,
        ca_file: None,
        cluster: false,
    };
    let previous = actions::redis::fence(&m, TIMEOUT).await?;
    assert_eq!(previous, 1);
    // Fencing again must not take the fence's own value as the one to restore.
    assert_eq!(actions::redis::fence(&m, TIMEOUT).await?, 0);
    let refused = pair.master.cmd(&["SET", "k", "v"]).await.unwrap_err();
    assert!(refused.to_string().contains("NOREPLICAS"), "{refused}");
    actions::redis::unfence(&m, previous, TIMEOUT).await?;
    pair.master.cmd(&["SET", "k", "v"]).await?;
    let client = redis::Client::open(pair.master.url())?;
    let mut connection = client.get_multiplexed_async_connection().await?;
    let setting: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("min-replicas-to-write")
        .query_async(&mut connection)
        .await?;
    assert_eq!(
        setting,
        vec!["min-replicas-to-write", "1"],
        "the old value is back"
    );
    Ok(())
}
