//! An agent cut off from its peers loses its lease and fences the primaries of its region;
//! the other two keep quorum, find nothing Down, and move the Postgres primary and the Redis
//! master out of the cut-off region (they take no writes any more); after the heal the old
//! Redis master becomes a replica of the new one and the old Postgres primary stays fenced.

mod support;

use std::time::{Duration, Instant};

use support::{
    probe_settings, wait_for_async, AgentCluster, ClusterOptions, ClusterSection, ConfigFile,
    PgPair, PostgresMember, PostgresSection, RedisMember, RedisPair, RedisShard,
};

const LEASE_TTL_MS: u64 = 2000;

/// Tries one write on the primary over a fresh connection (fencing ends old sessions).
async fn pg_write(pair: &PgPair) -> Result<(), String> {
    let client = pair.primary.connect().await.map_err(|e| e.to_string())?;
    client
        .batch_execute("INSERT INTO fence_probe VALUES (now())")
        .await
        .map_err(|e| {
            e.as_db_error()
                .map(|d| d.message().to_owned())
                .unwrap_or_else(|| e.to_string())
        })
}

async fn redis_write(pair: &RedisPair) -> Result<(), String> {
    pair.master
        .cmd(&["SET", "fence-probe", "1"])
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_off_agent_fences_its_primaries_and_they_move_elsewhere() -> anyhow::Result<()> {
    let pg = PgPair::start().await?;
    pg.primary
        .connect()
        .await?
        .batch_execute("CREATE TABLE fence_probe (at timestamptz)")
        .await?;
    let redis = RedisPair::start().await?;
    let secret_dir = tempfile::tempdir()?;
    let pg_password = secret_dir.path().join("pg");
    std::fs::write(&pg_password, support::MONITOR_PASSWORD)?;
    // The probing role may not fence: this test fences as the superuser (trusted on loopback).
    let config = ConfigFile {
        probe: probe_settings(Duration::from_millis(300), Duration::from_millis(200), 1, 2),
        cluster: ClusterSection {
            lease_ttl: Some(Duration::from_millis(LEASE_TTL_MS)),
            data_path_down_after: Some(Duration::from_secs(1)),
            ..ClusterSection::default()
        },
        postgres: Some(PostgresSection {
            cluster: Some("main".into()),
            max_lag_on_failover: Some(65536),
            members: vec![
                PostgresMember::new("pg-eu-west-3", "eu-west-3", pg.primary.dsn()),
                PostgresMember::new("pg-eu-central-1", "eu-central-1", pg.replica.dsn()),
            ],
            ..PostgresSection::default()
        }),
        redis_shards: vec![RedisShard::replication(
            "sessions",
            vec![
                RedisMember::new("r-eu-west-3", "eu-west-3", redis.master.url()),
                RedisMember::new("r-eu-central-1", "eu-central-1", redis.replica.url()),
            ],
        )],
        ..ConfigFile::default()
    };
    let (_servers, urls) = support::region_apis().await?;
    let cluster = AgentCluster::start_with(
        &urls,
        ClusterOptions {
            config,
            proxies: true,
            ..Default::default()
        },
    )
    .await?;
    let (leader, _) = cluster
        .agreed_leader(None, None, Duration::from_secs(20))
        .await?;

    // The leader names the primaries it sees in the reports.
    let paris = &cluster.agents[0];
    assert_eq!(paris.id, "eu-west-3-a");
    wait_for_async(
        "the log to name both primaries",
        Duration::from_secs(20),
        || async {
            let s = paris.status().await?;
            let p = &s["cluster"]["primaries"];
            (p["postgres/main"] == "postgres/main/pg-eu-west-3"
                && p["redis/sessions"] == "redis/sessions/r-eu-west-3")
                .then_some(())
        },
    )
    .await?;
    pg_write(&pg).await.map_err(anyhow::Error::msg)?;
    redis_write(&redis).await.map_err(anyhow::Error::msg)?;

    // Only eu-west-3's agent reaches the primaries, yet they are Up by verdict: the replicas
    // in eu-central-1 vote for them through their replication links.
    let leader_now = &cluster.agents[cluster.index(&leader)];
    let verdict = wait_for_async(
        "the primaries up by two votes",
        Duration::from_secs(20),
        || async {
            let v = leader_now.status().await?["cluster"]["verdict"].clone();
            (v["targets"]["postgres/main/pg-eu-west-3"]["state"] == "up"
                && v["targets"]["redis/sessions/r-eu-west-3"]["state"] == "up")
                .then_some(v)
        },
    )
    .await?;
    for target in ["postgres/main/pg-eu-west-3", "redis/sessions/r-eu-west-3"] {
        let up = verdict["targets"][target]["up"].as_array().unwrap();
        assert!(up.contains(&"eu-central-1-a".into()), "{target}: {up:?}");
    }

    // The leader says what losing eu-west-3 now would do: promote the caught-up replica.
    let readiness = |want: &'static str| async move {
        let s = leader_now.status().await?;
        let r = s["cluster"]["failover_readiness"]["postgres/main"].clone();
        (r["choice"]["decision"] == want).then_some(r)
    };
    let ready = wait_for_async("readiness to promote", Duration::from_secs(20), || {
        readiness("promote")
    })
    .await?;
    assert_eq!(ready["if_region_fails"], "eu-west-3");
    assert_eq!(ready["choice"]["target"], "postgres/main/pg-eu-central-1");
    // With a replica whose link stalled beyond max_lag_on_failover, automatic promotion
    // would be refused.
    pg.replica.stall_receiver().await?;
    pg.primary
        .connect()
        .await?
        .batch_execute("INSERT INTO fence_probe SELECT now() FROM generate_series(1, 5000)")
        .await?;
    let blocked = wait_for_async("readiness to block", Duration::from_secs(20), || {
        readiness("blocked")
    })
    .await?;
    let reason = blocked["choice"]["reason"].as_str().unwrap();
    assert!(
        reason.contains("would lose") && reason.contains("max_lag_on_failover 65536"),
        "{reason}"
    );
    let metrics = reqwest::get(format!("http://{}/metrics", leader_now.admin))
        .await?
        .text()
        .await?;
    assert!(metrics.contains(r#"failoverd_failover_blocked{group="postgres/main"} 1"#));
    pg.replica.resume_receiver()?;
    wait_for_async(
        "readiness to promote again",
        Duration::from_secs(20),
        || readiness("promote"),
    )
    .await?;

    // Cut eu-west-3's agent off from its peers.
    cluster.isolate(0, true);
    let cut_at = Instant::now();
    wait_for_async(
        "the Postgres primary to refuse writes",
        Duration::from_secs(15),
        // A session that the fence ends mid-write fails differently: wait for the refusal.
        || async {
            pg_write(&pg)
                .await
                .err()
                .filter(|e| e.contains("read-only transaction"))
        },
    )
    .await?;
    let fenced_after = cut_at.elapsed();
    assert!(
        fenced_after >= Duration::from_millis(LEASE_TTL_MS - 500),
        "fenced after {fenced_after:?}: not before the lease could run out"
    );
    let redis_error = wait_for_async(
        "the Redis master to refuse writes",
        Duration::from_secs(5),
        || async { redis_write(&redis).await.err() },
    )
    .await?;
    assert!(redis_error.contains("NOREPLICAS"), "{redis_error}");
    let status = paris
        .status()
        .await
        .expect("the cut-off agent still answers");
    assert_eq!(status["cluster"]["lease"]["valid"], false);

    // The other two keep quorum, and nothing is Down by their verdict.
    let (new_leader, _) = cluster
        .agreed_leader(Some(0), Some("eu-west-3-a"), Duration::from_secs(10))
        .await?;
    let leader_agent = &cluster.agents[cluster.index(&new_leader)];
    let verdict = wait_for_async(
        "a verdict without eu-west-3-a's reports",
        Duration::from_secs(10),
        || async {
            let s = leader_agent.status().await?;
            let v = s["cluster"]["verdict"].clone();
            v["regions"]["eu-west-3"].is_string().then_some(v)
        },
    )
    .await?;
    for (target, t) in verdict["targets"].as_object().unwrap() {
        assert_ne!(t["state"], "down", "{target} is Down by verdict: {t}");
    }
    // The leader knows eu-west-3's agent has been silent for a lease period.
    wait_for_async(
        "the leader to see the lease expired",
        Duration::from_secs(10),
        || async {
            let s = leader_agent.status().await?;
            let paris = s["cluster"]["members"]
                .as_array()?
                .iter()
                .find(|m| m["agent"] == "eu-west-3-a")?
                .clone();
            (paris["lease_expired"] == true).then_some(())
        },
    )
    .await?;
    assert_eq!(verdict["regions"]["eu-west-3"], "up");
    if leader == "eu-west-3-a" {
        assert_ne!(new_leader, leader, "the cut-off leader was replaced");
    }

    // The gate sends traffic away from the cut-off agent's region.
    let gate = reqwest::get(format!("http://{}/v1/gate/eu-west-3", paris.admin)).await?;
    assert_eq!(gate.status(), 503);
    let body: serde_json::Value = serde_json::from_str(&gate.text().await?)?;
    assert!(
        body["reasons"].to_string().contains("lost its lease"),
        "{body}"
    );

    // Its primaries take no writes any more: the others promote the replicas elsewhere.
    let failover = wait_for_async(
        "the primaries moved out of the cut-off region",
        Duration::from_secs(20),
        || async {
            let s = leader_agent.status().await?;
            (s["cluster"]["primaries"]["postgres/main"] == "postgres/main/pg-eu-central-1"
                && s["cluster"]["primaries"]["redis/sessions"] == "redis/sessions/r-eu-central-1")
                .then_some(())?;
            let text = reqwest::get(format!("http://{}/v1/history", leader_agent.admin))
                .await
                .ok()?
                .text()
                .await
                .ok()?;
            let h: serde_json::Value = serde_json::from_str(&text).ok()?;
            h["entries"]
                .as_array()?
                .iter()
                .find(|e| e["type"] == "failover" && e["outcome"] == "completed")
                .cloned()
        },
    )
    .await?;
    assert_eq!(failover["decision"]["trigger"]["kind"], "primary_down");
    assert_eq!(
        failover["decision"]["promotion"]["old_primary_cut_off"],
        true
    );
    // The leader reached the old primary and saw it fenced: not assumed.
    let fence = failover["steps"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["action"]["action"] == "fence_postgres"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(fence["fence"], "confirmed", "{fence:#}");
    let promoted_at = cut_at.elapsed();
    assert!(
        promoted_at >= Duration::from_millis(LEASE_TTL_MS),
        "promoted after {promoted_at:?}: not before the lease ran out"
    );
    pg.replica
        .connect()
        .await?
        .batch_execute("INSERT INTO fence_probe VALUES (now())")
        .await?;

    // Heal: the agent rejoins and holds its lease again. It makes its old Redis master a
    // replica of the new one and keeps the old Postgres primary fenced.
    cluster.isolate(0, false);
    wait_for_async(
        "the old Redis master to replicate from the new one",
        Duration::from_secs(20),
        || async {
            let info = redis.master.cmd(&["INFO", "replication"]).await.ok()?;
            (info.contains("role:slave")
                && info.contains(&format!("master_port:{}", redis.replica.port))
                && info.contains("master_link_status:up"))
            .then_some(())
        },
    )
    .await?;
    let refused = redis_write(&redis)
        .await
        .expect_err("a replica takes no writes");
    assert!(refused.contains("read only replica"), "{refused}");
    let refused = pg_write(&pg)
        .await
        .expect_err("the old primary stays fenced");
    assert!(refused.contains("read-only transaction"), "{refused}");
    let status = paris.status().await.expect("answers");
    assert_eq!(status["cluster"]["lease"]["valid"], true);
    // The demotion is counted once its link is seen up, a moment after the server shows it.
    let demoted = r#"failoverd_fence_actions_total{action="demote",result="ok"} 1"#;
    let metrics = wait_for_async("the demotion counted", Duration::from_secs(5), || async {
        let text = reqwest::get(format!("http://{}/metrics", paris.admin))
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        text.contains(demoted).then_some(text)
    })
    .await?;
    assert!(metrics.contains(r#"failoverd_fence_actions_total{action="fence",result="ok"} 2"#));
    assert!(
        !metrics.contains(r#"action="unfence",result="ok""#),
        "no fence was lifted on a replaced primary: {metrics}"
    );
    assert!(metrics.contains("failoverd_fenced_primaries 1"));
    let gate = reqwest::get(format!("http://{}/v1/gate/eu-west-3", paris.admin)).await?;
    assert_eq!(gate.status(), 503, "its old primary is still fenced");
    let gate = reqwest::get(format!(
        "http://{}/v1/gate/eu-central-1",
        leader_agent.admin
    ))
    .await?;
    assert_eq!(gate.status(), 200);
    let unknown = reqwest::get(format!("http://{}/v1/gate/mars-1", paris.admin)).await?;
    assert_eq!(unknown.status(), 404);
    let body: serde_json::Value = serde_json::from_str(&unknown.text().await?)?;
    assert_eq!(body["code"], "unknown_region");
    Ok(())
}
