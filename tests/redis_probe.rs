//! The Redis probe against a real master/replica pair and a real 6-node Redis Cluster.

mod support;

use std::time::Duration;

use failoverd::health::State;
use failoverd::probe::redis::RedisRole;
use failoverd::probe::{Facts, RedisFacts};
use support::{
    probe_settings, ConfigFile, RedisCluster, RedisMember, RedisPair, RedisShard, TestAgent,
};

const INTERVAL_MS: u64 = 300;
const TIMEOUT_MS: u64 = 200;
const FALL: u32 = 2;

/// An agent probing `shard` every 300 ms.
fn config(shard: RedisShard) -> ConfigFile {
    ConfigFile {
        redis_shards: vec![shard],
        ..ConfigFile::watcher(probe_settings(
            Duration::from_millis(INTERVAL_MS),
            Duration::from_millis(TIMEOUT_MS),
            1,
            FALL,
        ))
    }
}

fn redis(facts: &Facts) -> &RedisFacts {
    match facts {
        Facts::Redis(r) => r,
        other => panic!("not redis facts: {other:?}"),
    }
}

const MASTER: &str = "redis/cache/master";
const REPLICA: &str = "redis/cache/replica";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn observes_master_and_replica_and_a_killed_master() -> anyhow::Result<()> {
    let mut pair = RedisPair::start().await?;
    let cfg = config(RedisShard::replication(
        "cache",
        vec![
            RedisMember::new("master", "r1", pair.master.url()),
            RedisMember::new("replica", "r1", pair.replica.url()),
        ],
    ));
    let agent = TestAgent::start(cfg).await?;
    let deadline = Duration::from_secs(10);
    agent.wait_state(MASTER, State::Up, deadline).await?;
    agent.wait_state(REPLICA, State::Up, deadline).await?;

    // Write on the master; the replica's offset must reach the master's.
    pair.master.cmd(&["SET", "k", "v"]).await?;
    let master = agent
        .wait_facts(MASTER, "master with its replica", deadline, |f| {
            let r = redis(f);
            (r.connected_replicas == 1 && r.repl_offset > 0).then(|| r.clone())
        })
        .await?;
    assert_eq!(master.role, RedisRole::Master);
    assert_eq!(master.replicas.len(), 1);
    assert_eq!(
        master.replicas[0].addr,
        format!("127.0.0.1:{}", pair.replica.port)
    );
    assert_eq!(master.replicas[0].state, "online");
    let replica = agent
        .wait_facts(REPLICA, "replica caught up", deadline, |f| {
            let r = redis(f);
            (r.repl_offset >= master.repl_offset).then(|| r.clone())
        })
        .await?;
    assert_eq!(replica.role, RedisRole::Replica);
    assert_eq!(replica.master_host.as_deref(), Some("127.0.0.1"));
    assert_eq!(replica.master_port, Some(pair.master.port));
    assert_eq!(replica.master_link_up, Some(true));
    assert!(replica.cluster.is_none());

    // Kill the master: Down within fall × interval + timeout, and the replica's link drops.
    pair.master.kill()?;
    let bound = Duration::from_millis(u64::from(FALL) * INTERVAL_MS + TIMEOUT_MS + 250);
    let took = agent.wait_state(MASTER, State::Down, deadline).await?;
    assert!(took <= bound, "down after {took:?}, bound {bound:?}");
    let down = agent
        .wait_facts(REPLICA, "replica link down", deadline, |f| {
            let r = redis(f);
            (r.master_link_up == Some(false)).then(|| r.clone())
        })
        .await?;
    assert!(down.master_link_down_seconds.is_some(), "{down:?}");
    assert_eq!(agent.view(REPLICA).state, State::Up);

    // Restart: Up again, and the replica reconnects.
    pair.master.restart().await?;
    agent.wait_state(MASTER, State::Up, deadline).await?;
    agent
        .wait_facts(
            REPLICA,
            "replica link back up",
            Duration::from_secs(20),
            |f| (redis(f).master_link_up == Some(true)).then_some(()),
        )
        .await?;
    agent.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn observes_a_six_node_cluster() -> anyhow::Result<()> {
    let cluster = RedisCluster::start().await?;
    let nodes = cluster
        .nodes
        .iter()
        .enumerate()
        .map(|(i, node)| RedisMember::new(&format!("n{i}"), "r1", node.url()))
        .collect();
    let cfg = config(RedisShard::cluster("rc", nodes));
    let agent = TestAgent::start(cfg).await?;
    let deadline = Duration::from_secs(15);
    let mut masters = 0;
    let mut replicas = 0;
    for i in 0..6 {
        let id = format!("redis/rc/n{i}");
        agent.wait_state(&id, State::Up, deadline).await?;
        let facts = agent
            .wait_facts(&id, "cluster facts with every node", deadline, |f| {
                let r = redis(f);
                let c = r.cluster.as_ref()?;
                (c.nodes.len() == 6).then(|| r.clone())
            })
            .await?;
        let c = facts.cluster.as_ref().unwrap();
        assert_eq!(c.state, "ok");
        assert_eq!(c.slots_ok, 16384);
        assert_eq!(c.size, 3);
        let me = c
            .nodes
            .iter()
            .find(|n| n.flags.iter().any(|f| f == "myself"))
            .expect("a myself line");
        assert_eq!(me.addr, format!("127.0.0.1:{}", cluster.nodes[i].port));
        match facts.role {
            RedisRole::Master => {
                masters += 1;
                assert!(me.flags.iter().any(|f| f == "master"));
                assert!(!me.slots.is_empty(), "a master serves slots");
            }
            RedisRole::Replica => {
                replicas += 1;
                assert!(me.flags.iter().any(|f| f == "slave"));
                let master_id = me.master_id.as_ref().expect("replica names its master");
                let master = c.nodes.iter().find(|n| &n.id == master_id).unwrap();
                assert_eq!(
                    facts.master_port.map(|p| format!("127.0.0.1:{p}")),
                    Some(master.addr.clone())
                );
            }
        }
    }
    assert_eq!((masters, replicas), (3, 3));

    let metrics = agent.get("/metrics").await?.text().await?;
    let ok_lines = metrics
        .lines()
        .filter(|l| l.starts_with("failoverd_redis_cluster_state_ok{") && l.ends_with(" 1"))
        .count();
    assert_eq!(ok_lines, 6, "every node exports cluster_state ok");
    agent.stop().await
}
