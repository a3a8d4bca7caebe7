//! Promotion against real Postgres 15: a replica becomes primary on a new timeline and
//! accepts writes, the other replica follows it, and every step can run twice.

mod support;

use std::time::Duration;

use failoverd::actions::postgres::{
    await_streaming, ensure_slot, follow, primary_slot_name, promote, Member,
};
use support::PgPair;

const TIMEOUT: Duration = Duration::from_secs(15);

fn member(server: &support::PgServer) -> Member {
    Member {
        name: server.name.clone(),
        dsn: server.dsn(),
        password: None,
        ca_file: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_is_promoted_and_the_other_follows_it_on_the_new_timeline() -> anyhow::Result<()>
{
    let pg = PgPair::start_with(1).await?;
    let primary = pg.primary.connect().await?;
    primary
        .batch_execute("CREATE TABLE orders (id int); INSERT INTO orders VALUES (1), (2)")
        .await?;
    let written: String = primary
        // The insert position: with synchronous_commit off (the harness) the commit may not
        // be written out yet, and pg_current_wal_lsn() would stop short of it.
        .query_one("SELECT pg_current_wal_insert_lsn()::text", &[])
        .await?
        .get(0);
    // Both replicas replayed the writes before the primary dies.
    for replica in [&pg.replica, &pg.others[0]] {
        let client = replica.connect().await?;
        support::wait_for_async("replay of the writes", Duration::from_secs(10), || async {
            let row = client
                .query_one(
                    "SELECT pg_last_wal_replay_lsn() >= $1::text::pg_lsn",
                    &[&written],
                )
                .await
                .ok()?;
            row.get::<_, bool>(0).then_some(())
        })
        .await?;
    }
    pg.primary.kill()?;

    let new_primary = member(&pg.replica);
    let promoted = promote(&new_primary, TIMEOUT).await?;
    assert!(!promoted.already_primary);
    assert_eq!(promoted.timeline, 2, "promotion starts timeline 2");
    let again = promote(&new_primary, TIMEOUT).await?;
    assert!(again.already_primary, "a repeated step changes nothing");
    assert_eq!(again.timeline, 2);

    let client = pg.replica.connect().await?;
    client
        .batch_execute("INSERT INTO orders VALUES (3)")
        .await?;
    let count: i64 = client
        .query_one("SELECT count(*) FROM orders", &[])
        .await?
        .get(0);
    assert_eq!(
        count, 3,
        "no acknowledged write lost, and the new one accepted"
    );

    // The other replica follows the new primary and streams on timeline 2.
    let other = member(&pg.others[0]);
    let conninfo = format!(
        "host=127.0.0.1 port={} user=postgres application_name={}",
        pg.replica.port, pg.others[0].name
    );
    // It streams through a slot, which the new primary has to have first (slots are not
    // replicated): the follow step makes it, as here.
    let slot = primary_slot_name(&other, TIMEOUT)
        .await?
        .expect("the harness's replicas stream through a slot");
    assert!(ensure_slot(&new_primary, &slot, TIMEOUT).await?, "made");
    assert!(
        !ensure_slot(&new_primary, &slot, TIMEOUT).await?,
        "made once"
    );
    follow(&other, &conninfo, TIMEOUT).await?;
    follow(&other, &conninfo, TIMEOUT).await?;
    await_streaming(&other, pg.replica.port, 2, TIMEOUT).await?;
    let follower = pg.others[0].connect().await?;
    support::wait_for_async(
        "the follower to replay row 3",
        Duration::from_secs(10),
        || async {
            let row = follower
                .query_one("SELECT count(*) FROM orders", &[])
                .await
                .ok()?;
            (row.get::<_, i64>(0) == 3).then_some(())
        },
    )
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promoting_a_fenced_server_reports_that_it_refuses_writes() -> anyhow::Result<()> {
    let pg = PgPair::start().await?;
    let primary = member(&pg.primary);
    failoverd::actions::postgres::fence(
        &primary,
        &failoverd::config::PostgresFence::ReadOnly,
        TIMEOUT,
    )
    .await?;
    let error = promote(&primary, TIMEOUT)
        .await
        .expect_err("read-only is not writable");
    assert!(
        error.to_string().contains("accept writes failed"),
        "{error}"
    );
    assert!(
        error.to_string().contains("read-only transaction"),
        "{error}"
    );
    Ok(())
}
