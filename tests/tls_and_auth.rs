//! TLS verification and credentials: HTTPS with a private CA, Redis over TLS, Redis AUTH and
//! Postgres passwords read from secrets — and no secret in any output.

mod support;

use std::time::Duration;

use failoverd::config::{ProbeConfig, SecretRef};
use failoverd::health::{LastResult, State};
use support::{
    free_port, probe_settings, ConfigFile, HttpTarget, HttpsServer, PgPair, PostgresMember,
    PostgresSection, RedisMember, RedisServer, RedisShard, TestAgent, TestCerts,
};

fn probe() -> ProbeConfig {
    probe_settings(Duration::from_millis(300), Duration::from_millis(250), 1, 1)
}

fn last_error(agent: &TestAgent, id: &str) -> String {
    match agent.view(id).last {
        Some(LastResult::Error { error, .. }) => error,
        other => panic!("{id}: expected an error, got {other:?}"),
    }
}

/// Everything the agent shows: status JSON and metrics.
async fn everything_shown(agent: &TestAgent) -> anyhow::Result<String> {
    let status = agent.get("/v1/status").await?.text().await?;
    let metrics = agent.get("/metrics").await?.text().await?;
    Ok(format!("{status}\n{metrics}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_targets_verify_certificates_against_the_configured_ca() -> anyhow::Result<()> {
    let certs = TestCerts::generate()?;
    let server = HttpsServer::start(&certs).await?;
    let url = format!("https://127.0.0.1:{}/health", server.port);
    let cfg = ConfigFile::watcher(probe())
        .api(
            "r1",
            HttpTarget {
                ca_file: Some(certs.ca.clone()),
                ..HttpTarget::new("with-ca", &url)
            },
        )
        .api("r1", HttpTarget::new("system-roots", &url))
        .api(
            "r1",
            HttpTarget {
                tls_verify: Some(false),
                ..HttpTarget::new("no-verify", &url)
            },
        );
    let agent = TestAgent::start(cfg).await?;
    let d = Duration::from_secs(10);
    agent.wait_state("http/r1/with-ca", State::Up, d).await?;
    agent.wait_state("http/r1/no-verify", State::Up, d).await?;
    agent
        .wait_state("http/r1/system-roots", State::Down, d)
        .await?;
    let error = last_error(&agent, "http/r1/system-roots");
    assert!(
        error.contains("certificate") || error.contains("UnknownIssuer"),
        "an unknown issuer is a certificate error: {error}"
    );
    agent.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_over_tls_with_auth_from_a_secret_file() -> anyhow::Result<()> {
    let certs = TestCerts::generate()?;
    let dir = tempfile::tempdir()?;
    let password = "redis-secret-93a1";
    let tls_args = |port: u16| -> Vec<String> {
        [
            "--tls-port",
            &port.to_string(),
            "--tls-cert-file",
            &certs.cert.display().to_string(),
            "--tls-key-file",
            &certs.key.display().to_string(),
            "--tls-ca-cert-file",
            &certs.ca.display().to_string(),
            "--tls-auth-clients",
            "no",
            "--requirepass",
            password,
        ]
        .map(str::to_owned)
        .to_vec()
    };
    let port = free_port();
    let server = RedisServer::start(port, dir.path(), &tls_args(port)).await?;
    assert!(server.url().starts_with("rediss://"));
    let secret = dir.path().join("redis-password");
    std::fs::write(&secret, password)?;

    let shard =
        |name: &str, password: SecretRef, ca: Option<&std::path::Path>, url: String| RedisShard {
            password: Some(password),
            ca_file: ca.map(|p| p.to_owned()),
            ..RedisShard::replication(name, vec![RedisMember::new("m", "r1", url)])
        };
    let file = SecretRef::File(secret);
    let cfg = ConfigFile {
        redis_shards: vec![
            shard("tls-ca", file.clone(), Some(&certs.ca), server.url()),
            shard("tls-no-ca", file.clone(), None, server.url()),
            shard(
                "tls-insecure",
                file,
                None,
                format!("{}/#insecure", server.url()),
            ),
            shard(
                "wrong-password",
                SecretRef::Env("FAILOVERD_TEST_WRONG_REDIS_PASSWORD".into()),
                Some(&certs.ca),
                server.url(),
            ),
        ],
        ..ConfigFile::watcher(probe())
    };
    std::env::set_var(
        "FAILOVERD_TEST_WRONG_REDIS_PASSWORD",
        "not-the-password-5c2e",
    );
    let agent = TestAgent::start(cfg).await?;
    let d = Duration::from_secs(10);
    agent.wait_state("redis/tls-ca/m", State::Up, d).await?;
    agent
        .wait_state("redis/tls-insecure/m", State::Up, d)
        .await?;
    agent
        .wait_state("redis/tls-no-ca/m", State::Down, d)
        .await?;
    agent
        .wait_state("redis/wrong-password/m", State::Down, d)
        .await?;
    let error = last_error(&agent, "redis/wrong-password/m");
    assert!(
        error.to_lowercase().contains("authentication failed"),
        "{error}"
    );
    let shown = everything_shown(&agent).await?;
    for secret in [password, "not-the-password-5c2e"] {
        assert!(
            !shown.contains(secret),
            "a secret leaked into status or metrics"
        );
    }
    agent.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_password_comes_from_a_secret_and_a_wrong_one_is_reported() -> anyhow::Result<()> {
    let pair = PgPair::start().await?;
    std::env::set_var("FAILOVERD_TEST_PG_PASSWORD", support::MONITOR_PASSWORD);
    std::env::set_var("FAILOVERD_TEST_PG_WRONG", "wrong-pg-password-1b7");
    let cfg = ConfigFile {
        postgres: Some(PostgresSection {
            password: Some(SecretRef::Env("FAILOVERD_TEST_PG_PASSWORD".into())),
            members: vec![
                PostgresMember::new("good", "r1", pair.primary.monitor_dsn()),
                PostgresMember {
                    password: Some(SecretRef::Env("FAILOVERD_TEST_PG_WRONG".into())),
                    ..PostgresMember::new("wrong", "r1", pair.primary.monitor_dsn())
                },
            ],
            ..PostgresSection::default()
        }),
        ..ConfigFile::watcher(probe())
    };
    let agent = TestAgent::start(cfg).await?;
    let d = Duration::from_secs(10);
    agent.wait_state("postgres/main/good", State::Up, d).await?;
    agent
        .wait_state("postgres/main/wrong", State::Down, d)
        .await?;
    let error = last_error(&agent, "postgres/main/wrong");
    assert!(error.contains("password authentication failed"), "{error}");
    let shown = everything_shown(&agent).await?;
    for secret in [support::MONITOR_PASSWORD, "wrong-pg-password-1b7"] {
        assert!(
            !shown.contains(secret),
            "a secret leaked into status or metrics"
        );
    }
    agent.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_with_sslmode_require_verifies_the_server_against_the_ca() -> anyhow::Result<()> {
    let certs = TestCerts::generate()?;
    let pair = PgPair::start().await?;
    pair.primary.enable_ssl(&certs)?;
    std::env::set_var("FAILOVERD_TEST_PG_TLS_PASSWORD", support::MONITOR_PASSWORD);
    let dsn = format!("{} sslmode=require", pair.primary.monitor_dsn());
    // Two agents: one trusts the test CA, one only the public roots.
    let agent = |ca: Option<&std::path::Path>| ConfigFile {
        postgres: Some(PostgresSection {
            cluster: Some("main".into()),
            ca_file: ca.map(|p| p.to_owned()),
            password: Some(SecretRef::Env("FAILOVERD_TEST_PG_TLS_PASSWORD".into())),
            members: vec![PostgresMember::new("tls", "r1", dsn.clone())],
            ..PostgresSection::default()
        }),
        ..ConfigFile::watcher(probe())
    };
    let trusting = TestAgent::start(agent(Some(&certs.ca))).await?;
    let doubting = TestAgent::start(agent(None)).await?;
    let d = Duration::from_secs(10);
    trusting
        .wait_state("postgres/main/tls", State::Up, d)
        .await?;
    doubting
        .wait_state("postgres/main/tls", State::Down, d)
        .await?;
    let error = last_error(&doubting, "postgres/main/tls");
    assert!(
        error.contains("certificate") || error.contains("UnknownIssuer"),
        "{error}"
    );

    // The server sees the probe's session encrypted.
    let admin = pair.primary.connect().await?;
    let row = admin
        .query_one(
            "SELECT bool_and(s.ssl) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
             WHERE a.usename = $1",
            &[&support::MONITOR_USER],
        )
        .await?;
    assert_eq!(row.get::<_, Option<bool>>(0), Some(true));
    trusting.stop().await?;
    doubting.stop().await
}
