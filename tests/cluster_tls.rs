//! Peer traffic over mutual TLS: the cluster forms with every link encrypted and
//! authenticated by certificate, and a client without a certificate signed by the cluster CA
//! cannot even reach the peer API.

mod support;

use std::time::Duration;

use failoverd::config::ProbeConfig;
use support::{AgentCluster, ClusterOptions, ConfigFile, TestCerts};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_speak_mutual_tls_and_refuse_clients_without_a_certificate() -> anyhow::Result<()> {
    let certs = TestCerts::generate()?;
    let (_servers, urls) = support::region_apis().await?;
    let cluster = AgentCluster::start_with(
        &urls,
        ClusterOptions {
            config: ConfigFile {
                probe: ProbeConfig {
                    interval: Some(Duration::from_millis(300)),
                    timeout: Some(Duration::from_millis(200)),
                    ..ProbeConfig::default()
                },
                ..ConfigFile::default()
            },
            tls: Some(&certs),
            ..Default::default()
        },
    )
    .await?;
    // A leader, with every agent's reports reaching it: all of it went over mTLS.
    let (leader, term) = cluster
        .agreed_leader(None, None, Duration::from_secs(20))
        .await?;
    let leader_agent = &cluster.agents[cluster.index(&leader)];
    support::wait_for_async(
        "reports from every agent",
        Duration::from_secs(20),
        || async {
            let s = leader_agent.status().await?;
            s["cluster"]["members"]
                .as_array()?
                .iter()
                .all(|m| m["report"]["age_ms"].is_u64())
                .then_some(())
        },
    )
    .await?;

    let peer = cluster.agents[0].peer;
    let report =
        serde_json::json!({"agent": "mallory", "boot": 1, "seq": 1, "states": {}}).to_string();
    // Plain HTTP to the TLS port: no answer.
    let plain = reqwest::Client::new()
        .post(format!("http://{peer}/v1/report"))
        .bearer_auth(&cluster.secret)
        .body(report.clone())
        .send()
        .await;
    assert!(plain.is_err(), "plain HTTP got through: {plain:?}");
    // TLS that trusts the CA but presents no client certificate: the handshake fails.
    let ca = reqwest::Certificate::from_pem(&std::fs::read(&certs.ca)?)?;
    let anonymous = reqwest::Client::builder()
        .add_root_certificate(ca.clone())
        .build()?
        .post(format!("https://{peer}/v1/report"))
        .bearer_auth(&cluster.secret)
        .body(report.clone())
        .send()
        .await;
    assert!(
        anonymous.is_err(),
        "a client without a certificate got through: {anonymous:?}"
    );
    // With the cluster's client certificate the request reaches the API (and is refused there
    // for naming an agent that is not a member).
    let mut identity = std::fs::read(&certs.cert)?;
    identity.extend(std::fs::read(&certs.key)?);
    let member = reqwest::Client::builder()
        .add_root_certificate(ca)
        .identity(reqwest::Identity::from_pem(&identity)?)
        .build()?
        .post(format!("https://{peer}/v1/report"))
        .bearer_auth(&cluster.secret)
        .body(report)
        .send()
        .await?;
    assert_eq!(member.status(), 403);

    let (leader_after, term_after) = cluster
        .agreed_leader(None, None, Duration::from_secs(5))
        .await?;
    assert_eq!(
        (leader_after, term_after),
        (leader, term),
        "the cluster was not disturbed"
    );
    Ok(())
}
