//! A returning minority does not disturb a healthy cluster: an agent cut off from its peers
//! hears no leader, but no quorum has lost it, so it holds its elections back and its term
//! does not climb; when the cut heals, the leader and its term are as they were, and no agent
//! beside a healthy primary loses its lease.

mod support;

use std::time::Duration;

use support::{probe_settings, wait_for_async, AgentCluster, ClusterOptions, ConfigFile};

/// How long the agent stays cut off: many election timeouts (300 to 450 ms, plus openraft's
/// leader lease once a vote is committed), as the fault lasts, not as a wait for a condition.
const CUT_FOR: Duration = Duration::from_secs(5);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_off_agent_keeps_its_term_and_the_leader_stays_when_it_returns() -> anyhow::Result<()>
{
    let (_servers, urls) = support::region_apis().await?;
    let cluster = AgentCluster::start_with(
        &urls,
        ClusterOptions {
            config: ConfigFile {
                probe: probe_settings(Duration::from_millis(300), Duration::from_millis(200), 1, 2),
                ..ConfigFile::default()
            },
            proxies: true,
            ..Default::default()
        },
    )
    .await?;
    let (leader, term) = cluster
        .agreed_leader(None, None, Duration::from_secs(20))
        .await?;
    let leader_index = cluster.index(&leader);
    let cut = (0..cluster.agents.len())
        .find(|i| *i != leader_index)
        .expect("a follower");
    let lapses_before = lease_lapses(&cluster, leader_index).await?;

    cluster.isolate(cut, true);
    // It notices it hears no leader and that no peer has lost it: it holds its elections.
    let held = &cluster.agents[cut];
    wait_for_async(
        "the cut-off agent to hold its elections",
        Duration::from_secs(5),
        || async {
            let metrics = reqwest::get(format!("http://{}/metrics", held.admin))
                .await
                .ok()?
                .text()
                .await
                .ok()?;
            metrics
                .lines()
                .any(|l| l == "failoverd_raft_elections_held 1")
                .then_some(())
        },
    )
    .await?;
    tokio::time::sleep(CUT_FOR).await;
    let cut_term = held.status().await.expect("the cut-off agent answers")["cluster"]["term"]
        .as_u64()
        .expect("a term");
    assert_eq!(
        cut_term, term,
        "a cut-off agent that cannot win must not raise its term"
    );

    cluster.isolate(cut, false);
    // Back: it follows the same leader in the same term; nobody stood for election.
    let (after, term_after) = cluster
        .agreed_leader(None, None, Duration::from_secs(10))
        .await?;
    assert_eq!(after, leader, "the returning agent deposed the leader");
    assert_eq!(term_after, term, "an election was held on the heal");
    // The leader's agent never lost its lease, so it fenced nothing.
    assert_eq!(
        lease_lapses(&cluster, leader_index).await?,
        lapses_before,
        "the leader's agent lost its lease on the heal"
    );
    Ok(())
}

/// `failoverd_lease_lapses_total` of agent `k`.
async fn lease_lapses(cluster: &AgentCluster, k: usize) -> anyhow::Result<f64> {
    let metrics = reqwest::get(format!("http://{}/metrics", cluster.agents[k].admin))
        .await?
        .text()
        .await?;
    metrics
        .lines()
        .find_map(|l| l.strip_prefix("failoverd_lease_lapses_total "))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no failoverd_lease_lapses_total in:\n{metrics}"))
}
