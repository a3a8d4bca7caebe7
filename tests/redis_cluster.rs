//! Redis Cluster failover end to end: a 6-node cluster whose masters are spread so that
//! eu-west-3 holds two of the three, three agents (one per region), and the loss of
//! eu-west-3. Two masters of three gone, the cluster cannot elect replacements itself: the
//! agents take the slots over with their replicas elsewhere.

mod support;

use std::time::{Duration, Instant};

use anyhow::Context;
use failoverd::config::{ProbeConfig, ProbeOverrides};
use serde_json::Value;
use support::{wait_for_async, Lab, LabOptions, RedisLab, RedisServer};

/// `CLUSTER INFO` for `"cluster"`, else `INFO <section>`.
async fn info(node: &RedisServer, section: &str) -> Option<String> {
    if section == "cluster" {
        node.cmd(&["CLUSTER", "INFO"]).await.ok()
    } else {
        node.cmd(&["INFO", section]).await.ok()
    }
}

/// The Redis Cluster (masters 0 and 1 in eu-west-3 with their replicas in eu-central-1 and
/// us-east-1; master 2 in eu-central-1 with its replica in eu-west-3), its nodes running with
/// `node_timeout`, and three agents with `probe` as their `[probe]` section; ready once the
/// leader has recorded who serves which slots.
async fn lab(node_timeout: Duration, probe: ProbeConfig) -> anyhow::Result<Lab> {
    let lab = Lab::start(LabOptions {
        redis: Some(RedisLab::Cluster(node_timeout)),
        probe,
        ..Default::default()
    })
    .await?;
    // The leader knows who serves which slots before anything fails.
    lab.leader_status_until("the slot owners recorded", |status| {
        let owners = status["failover"]["slot_owners"]["redis/cache"].as_object()?;
        (owners.len() == 3).then_some(())
    })
    .await
    .with_context(|| lab.logs())?;
    Ok(lab)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_the_region_of_two_masters_moves_their_slots_to_replicas_elsewhere_within_10s(
) -> anyhow::Result<()> {
    // Redis's default node timeout, as the README recommends: failoverd's takeover comes
    // before the survivors count the lost masters as failing, so no survivor spends the
    // rejoin delay refusing writes after it.
    let mut lab = lab(Duration::from_secs(15), ProbeConfig::default()).await?;
    let [r0, r1, r2] = lab.cluster_replicas();

    // eu-west-3 goes: its agent, its API and its three cluster nodes.
    let killed_at = Instant::now();
    lab.cluster.agents[0].kill()?;
    drop(lab.apis.remove(0));
    for i in [0, 1, r2] {
        lab.redis_cluster_mut().nodes[i].kill()?;
    }
    let survivors = [r0, r1, 2];
    let served = wait_for_async(
        "the lost masters' slots served by their replicas, every slot ok",
        Duration::from_secs(10),
        || async {
            for i in [r0, r1] {
                let replication = info(&lab.redis_cluster().nodes[i], "replication").await?;
                replication.contains("role:master").then_some(())?;
            }
            for i in survivors {
                let state = info(&lab.redis_cluster().nodes[i], "cluster").await?;
                (state.contains("cluster_state:ok") && state.contains("cluster_slots_ok:16384"))
                    .then_some(())?;
            }
            Some(())
        },
    )
    .await;
    if let Err(e) = served {
        let mut views = String::new();
        for i in survivors {
            let state = info(&lab.redis_cluster().nodes[i], "cluster")
                .await
                .unwrap_or_default();
            let nodes = lab.redis_cluster().nodes[i]
                .cmd(&["CLUSTER", "NODES"])
                .await
                .unwrap_or_default();
            views.push_str(&format!("--- node {i}:\n{state}\n{nodes}\n"));
        }
        anyhow::bail!("{e}\n{views}\n{}", lab.logs());
    }
    let took = killed_at.elapsed();
    assert!(took < Duration::from_secs(10), "took {took:?}");
    eprintln!("slots served again {took:?} after the region was lost");

    // Writes succeed in every slot, through a cluster client that knows only the survivors.
    let client = redis::cluster::ClusterClient::new(
        survivors
            .iter()
            .map(|i| lab.redis_cluster().nodes[*i].url())
            .collect::<Vec<_>>(),
    )?;
    let mut connection = client.get_async_connection().await?;
    for n in 0..64 {
        let _: () = redis::cmd("SET")
            .arg(format!("key:{n}"))
            .arg(n)
            .query_async(&mut connection)
            .await?;
    }

    // The history says who moved each range: failoverd's takeovers carry their failover.
    let (moves, history) = lab.slot_moves(0, 2).await?;
    let mut by_failoverd = 0;
    for (m, replica) in [(0, r0), (1, r1)] {
        let entry = moves
            .iter()
            .find(|e| e["from"] == format!("redis/cache/c{m}"))
            .with_context(|| format!("a move from c{m}: {moves:#?}"))?;
        assert_eq!(entry["to"], format!("redis/cache/c{replica}"), "{entry:#}");
        match entry["by"].as_str() {
            Some("failoverd") => {
                by_failoverd += 1;
                let epoch = entry["epoch"].as_u64().context("an epoch")?;
                let failover = history["entries"]
                    .as_array()
                    .and_then(|e| {
                        e.iter()
                            .find(|f| f["type"] == "failover" && f["epoch"] == epoch)
                    })
                    .context("its failover")?;
                let step = failover["steps"]
                    .as_array()
                    .and_then(|s| {
                        s.iter()
                            .find(|s| s["id"] == format!("redis-takeover:redis/cache/c{replica}"))
                    })
                    .with_context(|| format!("the takeover step: {failover:#}"))?;
                assert_eq!(step["state"], "succeeded", "{step:#}");
            }
            Some("redis_cluster") => assert!(entry["epoch"].is_null(), "{entry:#}"),
            other => panic!("moved by {other:?}"),
        }
    }
    assert!(
        by_failoverd >= 1,
        "with two of three masters gone the cluster cannot elect on its own: {moves:#?}"
    );

    // The old master comes back and rejoins as a replica of the one that took its slots.
    lab.redis_cluster_mut().nodes[0].restart().await?;
    wait_for_async(
        "the old master to rejoin as a replica",
        Duration::from_secs(20),
        || async {
            let replication = info(&lab.redis_cluster().nodes[0], "replication").await?;
            (replication.contains("role:slave")
                && replication.contains(&format!(
                    "master_port:{}",
                    lab.redis_cluster().nodes[r0].port
                )))
            .then_some(())
        },
    )
    .await
    .with_context(|| lab.logs())?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_the_cluster_replaces_itself_is_left_to_it_and_the_move_is_credited_to_it(
) -> anyhow::Result<()> {
    // The nodes notice a lost master within a second; the agents call a Redis member Down
    // only after 8 failed probes a second apart: the cluster's election comes first.
    let probe = ProbeConfig {
        fast_interval: Some(Duration::from_secs(1)),
        redis: ProbeOverrides {
            fall: Some(8),
            ..ProbeOverrides::default()
        },
        ..ProbeConfig::default()
    };
    let mut lab = lab(Duration::from_secs(1), probe).await?;
    let [r0, r1, r2] = lab.cluster_replicas();
    // Master 2 (eu-central-1) dies alone: two masters of three can still vote.
    lab.redis_cluster_mut().nodes[2].kill()?;
    let survivors = [0, 1, r0, r1, r2];
    wait_for_async(
        "the cluster to elect the replica of the lost master",
        Duration::from_secs(20),
        || async {
            let replication = info(&lab.redis_cluster().nodes[r2], "replication").await?;
            replication.contains("role:master").then_some(())?;
            for i in survivors {
                let state = info(&lab.redis_cluster().nodes[i], "cluster").await?;
                state.contains("cluster_state:ok").then_some(())?;
            }
            Some(())
        },
    )
    .await
    .with_context(|| lab.logs())?;

    let (moves, history) = lab.slot_moves(usize::MAX, 1).await?;
    assert_eq!(moves[0]["from"], "redis/cache/c2", "{moves:#?}");
    assert_eq!(moves[0]["to"], format!("redis/cache/c{r2}"), "{moves:#?}");
    assert_eq!(
        moves[0]["by"],
        "redis_cluster",
        "{history:#}\n{}",
        lab.logs()
    );
    assert!(moves[0]["epoch"].is_null(), "{moves:#?}");
    // Once the agents call the old master Down, the cluster has moved on: failoverd decides
    // nothing for it.
    wait_for_async(
        "the agents to call the old master Down",
        Duration::from_secs(20),
        || async {
            let status = lab.cluster.agents[1].status().await?;
            let target = status["targets"]
                .as_array()?
                .iter()
                .find(|t| t["id"] == "redis/cache/c2")?
                .clone();
            (target["state"] == "down").then_some(())
        },
    )
    .await
    .with_context(|| lab.logs())?;
    let (_, history_after) = lab.slot_moves(usize::MAX, 1).await?;
    for h in [&history, &history_after] {
        let takeovers: Vec<&Value> = h["entries"]
            .as_array()
            .context("entries")?
            .iter()
            .filter(|e| e["type"] == "failover")
            .collect();
        assert!(takeovers.is_empty(), "{takeovers:#?}");
    }
    Ok(())
}
