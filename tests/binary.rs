//! The `failoverd` binary: check-config exit codes, the ways to name a configuration file, a
//! running agent's endpoints, `promtool check metrics` on its live `/metrics`, and a clean
//! stop on SIGTERM.

mod support;

use std::io::Write;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use axum::routing::get;
use failoverd::config::LogFormat;
use support::{
    free_port, probe_settings, wait_for_async, ConfigFile, HttpServer, HttpTarget, Region,
};

const BIN: &str = env!("CARGO_BIN_EXE_failoverd");

/// The child is killed if the test fails before stopping it.
struct Agent(Child);

impl Drop for Agent {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _killed = self.0.kill();
            let _reaped = self.0.wait();
        }
    }
}

fn write_config(dir: &tempfile::TempDir, text: &str) -> std::path::PathBuf {
    let path = dir.path().join("failoverd.toml");
    std::fs::write(&path, text).expect("write config");
    path
}

/// An agent in eu-west-3 probing one API, its state in `dir`.
fn agent_config(dir: &tempfile::TempDir, admin_port: u16, api_url: &str) -> ConfigFile {
    ConfigFile {
        admin_listen: Some(SocketAddr::from(([127, 0, 0, 1], admin_port))),
        data_dir: Some(dir.path().join("data")),
        log_format: Some(LogFormat::Json),
        probe: probe_settings(Duration::from_millis(200), Duration::from_millis(100), 1, 1),
        regions: vec![Region::new("eu-west-3")],
        ..ConfigFile::new("bin-agent", "eu-west-3")
    }
    .api("eu-west-3", HttpTarget::new("orders", api_url))
}

#[test]
fn check_config_prints_a_summary_and_exits_zero() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(
        &dir,
        &agent_config(&dir, 7070, "http://127.0.0.1:1/health").render(),
    );
    let out = Command::new(BIN)
        .arg("check-config")
        .arg(&path)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("agent bin-agent in region eu-west-3"),
        "{stdout}"
    );
    assert!(stdout.contains("http/eu-west-3/orders"), "{stdout}");
    assert!(stdout.contains("is valid"), "{stdout}");
}

#[test]
fn a_config_file_is_named_the_same_way_on_every_command() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(
        &dir,
        &agent_config(&dir, 7070, "http://127.0.0.1:1/health").render(),
    );
    let path = path.to_str().unwrap();
    let run = |args: &[&str], env: Option<&str>| {
        let mut command = Command::new(BIN);
        command.args(args).env_remove("FAILOVERD_CONFIG");
        if let Some(file) = env {
            command.env("FAILOVERD_CONFIG", file);
        }
        let out = command.output().unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.code(), text)
    };
    for (args, env) in [
        (vec!["check-config", path], None),
        (vec!["check-config", "--config", path], None),
        (vec!["check-config", "-c", path], None),
        (vec!["check-config"], Some(path)),
        // An argument wins over the environment.
        (vec!["check-config", path], Some("/nonexistent.toml")),
        (
            vec!["check-config", "--config", path],
            Some("/nonexistent.toml"),
        ),
    ] {
        let (code, out) = run(&args, env);
        assert_eq!(code, Some(0), "{args:?} {env:?}: {out}");
        assert!(out.contains("is valid"), "{args:?} {env:?}: {out}");
    }
    // route53 plan and apply read the file in either form (this one has no [route53]).
    for action in ["plan", "apply"] {
        for args in [
            vec!["route53", action, path],
            vec!["route53", action, "--config", path],
        ] {
            let (code, out) = run(&args, None);
            assert_eq!(code, Some(1), "{args:?}: {out}");
            assert!(
                out.contains("the configuration has no [route53] section"),
                "{args:?}: {out}"
            );
        }
    }
    // Both forms at once, or neither, is a usage error.
    for args in [
        vec!["check-config", path, "--config", path],
        vec!["check-config"],
    ] {
        let (code, out) = run(&args, None);
        assert_eq!(code, Some(2), "{args:?}: {out}");
        assert!(out.contains("error:"), "{args:?}: {out}");
    }
}

#[test]
fn a_broken_config_names_every_bad_key_and_exits_two() {
    let dir = tempfile::tempdir().unwrap();
    let mut broken = agent_config(&dir, 7070, "ftp://example/health");
    broken.region = "mars-1".into();
    broken.probe.timeout = Some(Duration::from_millis(300));
    let path = write_config(&dir, &broken.render());
    for args in [
        vec!["check-config"],
        vec!["check-config", "--config"],
        vec!["run"],
        vec!["run", "--config"],
    ] {
        let out = Command::new(BIN).args(&args).arg(&path).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        for key in [
            "agent.region: region \"mars-1\" is not one of `regions`",
            "regions[0].api[0].url: scheme \"ftp\" is not one of http, https",
            "regions[0].api[0].probe.timeout: timeout (300ms from probe.timeout) must be < interval (200ms from probe.interval)",
        ] {
            assert!(stderr.contains(key), "{args:?}: missing {key:?} in:\n{stderr}");
        }
    }

    // A typo is an unknown key, named with its path (written as text: no configuration type
    // has such a key).
    let typo = agent_config(&dir, 7070, "http://127.0.0.1:1/")
        .render()
        .replace("rise = 1", "rize = 1");
    let path = write_config(&dir, &typo);
    let out = Command::new(BIN)
        .args(["check-config", "--json"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["valid"], false);
    assert_eq!(json["errors"][0]["key"], "probe.rize");
    assert!(json["errors"][0]["message"]
        .as_str()
        .unwrap()
        .contains("unknown field `rize`"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_status_and_valid_metrics_and_stops_on_sigterm() -> anyhow::Result<()> {
    let api =
        HttpServer::start(axum::Router::new().route("/health", get(|| async { "ok" }))).await?;
    let dir = tempfile::tempdir()?;
    let port = free_port();
    let path = write_config(
        &dir,
        &agent_config(&dir, port, &api.url("/health")).render(),
    );
    let mut agent = Agent(
        Command::new(BIN)
            .args(["run", "--config"])
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()?,
    );
    let base = format!("http://127.0.0.1:{port}");
    wait_for_async("/readyz to answer 200", Duration::from_secs(20), || async {
        let r = reqwest::get(format!("{base}/readyz")).await.ok()?;
        (r.status() == 200).then_some(())
    })
    .await?;
    wait_for_async("the target to be up", Duration::from_secs(10), || async {
        let text = reqwest::get(format!("{base}/v1/status"))
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        let status: serde_json::Value = serde_json::from_str(&text).ok()?;
        (status["targets"][0]["state"] == "up").then_some(())
    })
    .await?;
    let healthz = reqwest::get(format!("{base}/healthz")).await?;
    assert_eq!(healthz.status(), 200);

    let metrics = reqwest::get(format!("{base}/metrics"))
        .await?
        .text()
        .await?;
    for name in [
        "failoverd_build_info{",
        "failoverd_probe_duration_seconds_bucket{",
        "failoverd_probe_success{",
        "failoverd_probes_total{",
        "failoverd_target_state{",
        "failoverd_target_state_transitions_total{",
    ] {
        assert!(metrics.contains(name), "missing {name} in:\n{metrics}");
    }
    assert!(metrics.contains(
        r#"failoverd_target_state{kind="http",region="eu-west-3",state="up",target="http/eu-west-3/orders"} 1"#
    ));
    promtool_check_metrics(&metrics)?;

    // SIGTERM: exits 0 well within the default 10 s grace, after logging the stop.
    let pid = agent.0.id().to_string();
    let sent = Instant::now();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()?
        .success());
    let status = loop {
        if let Some(status) = agent.0.try_wait()? {
            break status;
        }
        anyhow::ensure!(
            sent.elapsed() < Duration::from_secs(10),
            "no exit 10 s after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(status.success(), "exit status {status:?}");
    let mut log = String::new();
    std::io::Read::read_to_string(agent.0.stderr.as_mut().unwrap(), &mut log)?;
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let messages: Vec<&str> = lines.iter().filter_map(|l| l["message"].as_str()).collect();
    for expected in [
        "agent starting",
        "target state changed",
        "stopping",
        "agent stopped",
    ] {
        assert!(
            messages.contains(&expected),
            "no {expected:?} in {messages:?}"
        );
    }
    Ok(())
}

/// Runs `promtool check metrics` on the text; promtool comes from Debian's `prometheus`
/// package, which `.ci/run` installs.
fn promtool_check_metrics(metrics: &str) -> anyhow::Result<()> {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| anyhow::anyhow!("cannot run promtool ({e}); install Debian's `prometheus`"))?;
    child.stdin.take().unwrap().write_all(metrics.as_bytes())?;
    let out = child.wait_with_output()?;
    anyhow::ensure!(
        out.status.success(),
        "promtool check metrics failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}
