//! The operator's commands of the `failoverd` binary against a stand-in admin API (canned
//! answers, no cluster): what `status` shows, that every command that changes something
//! accepts `--yes`, and that a reader that goes away early (`failoverd status | head`) ends a
//! command quietly.

mod support;

use std::process::Stdio;
use std::sync::{Arc, Mutex};

use axum::http::{Method, Uri};
use axum::routing::get;
use axum::Json;
use serde_json::{json, Value};
use support::{ConfigFile, HttpServer, HttpTarget, Region};

const BIN: &str = env!("CARGO_BIN_EXE_failoverd");

/// The `/v1/status` of a follower in a cluster of three agents, one per region.
fn status() -> Value {
    json!({
        "agent": { "id": "eu-central-1-a", "region": "eu-central-1", "version": "0.1.0" },
        "ready": true,
        "summary": { "up": 4, "down": 0, "unknown": 0 },
        "targets": [
            { "id": "http/eu-west-3/api", "state": "up" },
            { "id": "postgres/main/pg-eu-central-1", "state": "up" },
        ],
        "cluster": {
            "state": "Follower",
            "leader": "eu-west-3-a",
            "term": 4,
            "quorum": 2,
            "lease": { "valid": true },
            "verdict": {
                "quorum": 2,
                "regions": { "eu-west-3": "up", "eu-central-1": "up", "us-east-1": "down" },
                "targets": {
                    "http/eu-west-3/api": {
                        "state": "up",
                        "up": ["eu-central-1-a", "eu-west-3-a", "us-east-1-a"],
                        "down": [],
                        "unknown": [],
                    },
                    "http/us-east-1/api": {
                        "state": "down",
                        "up": ["us-east-1-a"],
                        "down": ["eu-central-1-a", "eu-west-3-a"],
                        "unknown": [],
                    },
                    "postgres/main/pg-eu-central-1": {
                        "state": "unknown",
                        "up": ["eu-central-1-a"],
                        "down": [],
                        "unknown": ["eu-west-3-a", "us-east-1-a"],
                    },
                },
            },
        },
        "failover": {
            "mode": "active",
            "epoch": 7,
            "drained": [],
            "weights": { "eu-west-3": 100, "eu-central-1": 100, "us-east-1": 100 },
            "waiting": [],
            "refusals": [],
        },
    })
}

/// The requests a stand-in admin API received other than status and history, as
/// `METHOD /path`.
type Calls = Arc<Mutex<Vec<String>>>;

/// A stand-in admin API: `GET /v1/status`, `GET /v1/history`, and 200 `{"message": "done"}`
/// to anything else, which it records.
async fn admin() -> anyhow::Result<(HttpServer, Calls)> {
    let calls = Calls::default();
    let record = calls.clone();
    let router = axum::Router::new()
        .route("/v1/status", get(|| async { Json(status()) }))
        .route(
            "/v1/history",
            get(|| async { Json(json!({ "entries": [] })) }),
        )
        .fallback(move |method: Method, uri: Uri| async move {
            record
                .lock()
                .expect("calls lock")
                .push(format!("{method} {}", uri.path()));
            Json(json!({ "message": "done" }))
        });
    Ok((HttpServer::start(router).await?, calls))
}

/// Runs the CLI against `admin` with no terminal; returns its exit code and what it printed.
async fn cli(admin: &HttpServer, args: &[&str]) -> anyhow::Result<(Option<i32>, String)> {
    let out = tokio::process::Command::new(BIN)
        .args(args)
        .env("FAILOVERD_ADMIN", admin.url(""))
        .stdin(Stdio::null())
        .output()
        .await?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok((out.status.code(), text))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_shows_each_verdict_with_the_votes_that_decided_it() -> anyhow::Result<()> {
    let (api, _) = admin().await?;
    let (code, out) = cli(&api, &["status"]).await?;
    assert_eq!(code, Some(0), "{out}");
    let row = |target: &str| {
        out.lines()
            .find(|l| l.starts_with(&format!("{target} ")))
            .unwrap_or_else(|| panic!("no row for {target}: {out}"))
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    };
    assert!(out.contains("TARGET"), "{out}");
    assert_eq!(
        row("http/eu-west-3/api"),
        "http/eu-west-3/api up up (3 of 3) eu-central-1-a,eu-west-3-a,us-east-1-a"
    );
    assert_eq!(
        row("http/us-east-1/api"),
        "http/us-east-1/api - down (2 of 3) us-east-1-a eu-central-1-a,eu-west-3-a"
    );
    // Only its own region's agent probes it: that agent's vote decides.
    assert_eq!(
        row("postgres/main/pg-eu-central-1"),
        "postgres/main/pg-eu-central-1 up up (1 of 1) eu-central-1-a"
    );
    // --json is the agent's answer as it came.
    let (code, out) = cli(&api, &["status", "--json"]).await?;
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(serde_json::from_str::<Value>(&out)?, status());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_command_that_changes_something_accepts_yes() -> anyhow::Result<()> {
    let (api, calls) = admin().await?;
    let cases: [(&[&str], &str); 7] = [
        (&["pause", "--reason", "r", "--yes"], "POST /v1/pause"),
        (&["resume", "--reason", "r", "--yes"], "POST /v1/resume"),
        (
            &["drain", "eu-west-3", "--reason", "r", "--yes"],
            "POST /v1/regions/eu-west-3/drain",
        ),
        (
            &["restore", "eu-west-3", "--reason", "r", "--yes"],
            "POST /v1/regions/eu-west-3/restore",
        ),
        (
            &["failover", "--from", "eu-west-3", "--reason", "r", "--yes"],
            "POST /v1/failover",
        ),
        (&["drill", "--reason", "r", "--yes"], "POST /v1/drills"),
        (
            &[
                "drill",
                "--live",
                "--region",
                "eu-west-3",
                "--reason",
                "r",
                "--yes",
            ],
            "POST /v1/drills",
        ),
    ];
    for (args, call) in cases {
        let (code, out) = cli(&api, args).await?;
        assert_eq!(code, Some(0), "{args:?}: {out}");
        let last = calls.lock().expect("calls lock").pop();
        assert_eq!(last.as_deref(), Some(call), "{args:?}");
    }
    // Without a terminal, a drain still needs --yes; nothing is sent.
    let (code, out) = cli(&api, &["drain", "eu-west-3", "--reason", "r"]).await?;
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("add --yes"), "{out}");
    assert!(calls.lock().expect("calls lock").is_empty());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_that_goes_away_ends_every_command_quietly() -> anyhow::Result<()> {
    let (api, _) = admin().await?;
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("failoverd.toml");
    let text = ConfigFile {
        admin_listen: Some("127.0.0.1:7070".parse()?),
        data_dir: Some("/tmp/failoverd-cli-test".into()),
        regions: vec![Region::new("eu-west-3")],
        ..ConfigFile::new("a", "eu-west-3")
    }
    .api(
        "eu-west-3",
        HttpTarget::new("orders", "http://127.0.0.1:1/health"),
    )
    .render();
    std::fs::write(&config, text)?;
    let admin = api.url("");
    let config = config.display().to_string();
    let commands: [&[&str]; 6] = [
        &["--help"],
        &["status", "--admin", &admin],
        &["status", "--admin", &admin, "--json"],
        &["history", "--admin", &admin],
        &["check-config", &config],
        &["check-config", &config, "--json"],
    ];
    for args in commands {
        // The reading end is closed before the command starts: its first write fails. (Not
        // `output()`, which would capture standard output in a pipe of its own.)
        let (reader, writer) = std::io::pipe()?;
        drop(reader);
        let out = tokio::process::Command::new(BIN)
            .args(args)
            .stdin(Stdio::null())
            .stdout(writer)
            .stderr(Stdio::piped())
            .spawn()?
            .wait_with_output()
            .await?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert_eq!(out.status.code(), Some(0), "{args:?}: {stderr}");
    }
    Ok(())
}
