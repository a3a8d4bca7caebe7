//! The HTTP probe and the scheduler against real HTTP servers on loopback.

mod support;

use std::time::Duration;

use axum::routing::get;
use axum::Router;
use failoverd::config::ConnectionMode;
use failoverd::health::{LastResult, State};
use support::{probe_settings, BlackHole, ConfigFile, HttpServer, HttpTarget, TestAgent};

const INTERVAL_MS: u64 = 200;
const TIMEOUT_MS: u64 = 150;
const FALL: u32 = 2;

fn probe(fall: u32) -> failoverd::config::ProbeConfig {
    probe_settings(
        Duration::from_millis(INTERVAL_MS),
        Duration::from_millis(TIMEOUT_MS),
        1,
        fall,
    )
}

fn healthy_router() -> Router {
    Router::new()
        .route(
            "/health",
            get(|| async { r#"{"status":"ok","db":{"up":true}}"# }),
        )
        .route(
            "/degraded",
            get(|| async { r#"{"status":"degraded","db":{"up":false}}"# }),
        )
        .route(
            "/unavailable",
            get(|| async { (axum::http::StatusCode::SERVICE_UNAVAILABLE, "maintenance") }),
        )
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_millis(60)).await;
                "ok"
            }),
        )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_black_holed_target_times_out_while_the_others_keep_their_cadence() -> anyhow::Result<()>
{
    let server = HttpServer::start(healthy_router()).await?;
    let hole = BlackHole::start().await?;
    let cfg = ConfigFile::watcher(probe(FALL))
        .api("r1", HttpTarget::new("healthy", server.url("/health")))
        .api(
            "r1",
            HttpTarget::new("hole", format!("http://{}/health", hole.addr)),
        );
    let agent = TestAgent::start(cfg).await?;
    let healthy = "http/r1/healthy";
    let hole_id = "http/r1/hole";

    let bound = Duration::from_millis(u64::from(FALL) * INTERVAL_MS + TIMEOUT_MS + 250);
    agent
        .wait_state(healthy, State::Up, Duration::from_secs(5))
        .await?;
    let took = agent
        .wait_state(hole_id, State::Down, Duration::from_secs(5))
        .await?;
    assert!(took <= bound, "down after {took:?}, bound {bound:?}");
    match agent.view(hole_id).last {
        Some(LastResult::Error { timeout, error }) => {
            assert!(timeout, "failed by timeout: {error}");
            assert_eq!(error, "no answer within 150ms");
        }
        other => panic!("expected a timeout, got {other:?}"),
    }

    // Over the next 3 s the healthy target is probed every interval, undisturbed by the hole.
    let window = Duration::from_secs(3);
    let before = agent.view(healthy).probes;
    let hole_before = agent.view(hole_id).probes;
    tokio::time::sleep(window).await;
    let probes = agent.view(healthy).probes - before;
    let expected = window.as_millis() as u64 / INTERVAL_MS;
    assert!(
        (expected - 1..=expected + 1).contains(&probes),
        "healthy target probed {probes} times in {window:?}, expected {expected} ± 1"
    );
    let hole_probes = agent.view(hole_id).probes - hole_before;
    assert!(
        (expected - 1..=expected + 1).contains(&hole_probes),
        "the hung target keeps its own cadence too: {hole_probes}"
    );
    assert_eq!(agent.view(healthy).state, State::Up);
    assert_eq!(agent.view(healthy).failures, 0);
    agent.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_body_and_latency_checks_decide_health() -> anyhow::Result<()> {
    let server = HttpServer::start(healthy_router()).await?;
    let json_ok = |name: &str, path: &str| HttpTarget {
        json_pointer: Some("/db/up".into()),
        json_equals: Some("true".into()),
        ..HttpTarget::new(name, server.url(path))
    };
    let cfg = ConfigFile::watcher(probe(1))
        .api("r1", json_ok("json-ok", "/health"))
        .api("r1", json_ok("json-bad", "/degraded"))
        .api(
            "r1",
            HttpTarget {
                body_contains: Some("ok".into()),
                ..HttpTarget::new("body-ok", server.url("/health"))
            },
        )
        .api(
            "r1",
            HttpTarget::new("status-503", server.url("/unavailable")),
        )
        .api(
            "r1",
            HttpTarget {
                expect_status: vec![503],
                ..HttpTarget::new("status-503-expected", server.url("/unavailable"))
            },
        )
        .api(
            "r1",
            HttpTarget {
                max_latency: Some(Duration::from_millis(20)),
                ..HttpTarget::new("too-slow", server.url("/slow"))
            },
        )
        .api(
            "r1",
            HttpTarget {
                connection: Some(ConnectionMode::Reuse),
                headers: vec![("X-Probe".into(), "failoverd".into())],
                ..HttpTarget::new("reuse", server.url("/health"))
            },
        )
        .api(
            "r1",
            HttpTarget::new(
                "refused",
                format!("http://127.0.0.1:{}/", support::free_port()),
            ),
        );
    let agent = TestAgent::start(cfg).await?;
    let d = Duration::from_secs(5);
    for (name, state, error) in [
        ("json-ok", State::Up, None),
        (
            "json-bad",
            State::Down,
            Some("body check failed: JSON field /db/up is false, expected true"),
        ),
        ("body-ok", State::Up, None),
        (
            "status-503",
            State::Down,
            Some("unexpected HTTP status 503"),
        ),
        ("status-503-expected", State::Up, None),
        ("too-slow", State::Down, Some("answer took")),
        ("reuse", State::Up, None),
        ("refused", State::Down, Some("connect failed")),
    ] {
        let id = format!("http/r1/{name}");
        agent.wait_state(&id, state, d).await?;
        let view = agent.view(&id);
        match (error, view.last) {
            (None, Some(LastResult::Ok { .. })) => {}
            (Some(expected), Some(LastResult::Error { error, .. })) => {
                assert!(
                    error.contains(expected),
                    "{name}: {error:?} lacks {expected:?}"
                )
            }
            (_, other) => panic!("{name}: unexpected last result {other:?}"),
        }
    }

    // /readyz turns 200 once every target was probed; /v1/status lists them all.
    let ready = agent.get("/readyz").await?;
    assert_eq!(ready.status(), 200);
    let status: serde_json::Value =
        serde_json::from_str(&agent.get("/v1/status").await?.text().await?)?;
    assert_eq!(status["agent"]["id"], "test-agent");
    assert_eq!(status["targets"].as_array().unwrap().len(), 8);
    assert_eq!(status["summary"]["up"], 4);
    assert_eq!(status["summary"]["down"], 4);
    let json_bad = status["targets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == "http/r1/json-bad")
        .unwrap();
    assert_eq!(json_bad["state"], "down");
    assert_eq!(json_bad["last"]["outcome"], "error");
    assert_eq!(json_bad["last_change"]["to"], "down");
    let not_found = agent.get("/v1/nope").await?;
    assert_eq!(not_found.status(), 404);
    let body: serde_json::Value = serde_json::from_str(&not_found.text().await?)?;
    assert_eq!(body["code"], "not_found");
    agent.stop().await
}
