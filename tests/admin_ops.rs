//! The on-call interface end to end: three agents, a Postgres primary in eu-west-3 with
//! replicas in eu-central-1 and us-east-1, a Redis master and replica, ministack. Every call
//! goes to a follower, which forwards it to the leader; the CLI is the real binary.

mod support;

use std::time::Duration;

use anyhow::Context;
use serde_json::Value;
use support::{wait_for_async, Lab, LabOptions, PostgresLab, RedisLab, Route53Lab};

static ONE_LAB_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const TOKEN: &str = "alice-s3cret-token";

/// Postgres (primary and two replicas, an `orders` table), a Redis master and replica, the
/// Route53 records and three agents that accept alice's token; ready once the leader names
/// the primaries, would promote a replica, and sees every datastore member Up.
async fn lab() -> anyhow::Result<Lab> {
    let lab = Lab::start(LabOptions {
        postgres: Some(PostgresLab {
            setup: "CREATE TABLE orders (id int)",
            max_lag: 65536,
            slow_replica: None,
            rejoin: false,
            reporting_replica: false,
        }),
        redis: Some(RedisLab::Pair),
        route53: Some(Route53Lab::default()),
        admin_token: Some(TOKEN),
        ..Default::default()
    })
    .await?;
    lab.leader_status_until("the leader to name the primaries and see candidates", |s| {
        s["cluster"]["primaries"]["redis/sessions"].as_str()?;
        let choice = &s["cluster"]["failover_readiness"]["postgres/main"]["choice"];
        (choice["decision"] == "promote").then_some(())?;
        // Every datastore member healthy (its region's agent reports it Up, no one
        // Down): any of them may be asked for.
        let targets = s["cluster"]["verdict"]["targets"].as_object()?;
        targets
            .iter()
            .filter(|(id, _)| !id.starts_with("http/"))
            .all(|(_, v)| {
                v["up"].as_array().is_some_and(|a| !a.is_empty())
                    && v["down"].as_array().is_some_and(|a| a.is_empty())
            })
            .then_some(())
    })
    .await?;
    Ok(lab)
}

/// Commits rows `0..n` to `orders` on the primary.
async fn write_orders(lab: &Lab, n: i32) -> anyhow::Result<()> {
    let primary = lab.pg().primary.connect().await?;
    for i in 0..n {
        primary
            .execute("INSERT INTO orders VALUES ($1)", &[&i])
            .await?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_calls_get_their_documented_status_and_code_and_change_nothing() -> anyhow::Result<()> {
    let _serial = ONE_LAB_AT_A_TIME.lock().await;
    let lab = lab().await?;
    let before = lab.state().await?;
    let reason = r#"{"reason":"test"}"#;
    let cases: Vec<(&str, Option<&str>, String, u16, &str)> = vec![
        ("/v1/pause", None, reason.into(), 401, "unauthorized"),
        ("/v1/pause", Some("wrong"), reason.into(), 403, "forbidden"),
        (
            "/v1/pause",
            Some(TOKEN),
            "{not json".into(),
            400,
            "bad_json",
        ),
        (
            "/v1/pause",
            Some(TOKEN),
            r#"{"reason":"x","force":true}"#.into(),
            400,
            "bad_request",
        ),
        (
            "/v1/pause",
            Some(TOKEN),
            r#"{"reason":" "}"#.into(),
            400,
            "reason_required",
        ),
        (
            "/v1/regions/mars-1/drain",
            Some(TOKEN),
            reason.into(),
            404,
            "unknown_region",
        ),
        (
            "/v1/regions/eu-west-3/restore",
            Some(TOKEN),
            reason.into(),
            409,
            "not_drained",
        ),
        (
            "/v1/failover",
            Some(TOKEN),
            r#"{"from":"eu-west-3","to":"eu-west-3","reason":"x"}"#.into(),
            400,
            "same_region",
        ),
        (
            "/v1/pause",
            Some(TOKEN),
            format!(r#"{{"reason":"{}"}}"#, "x".repeat(70 * 1024)),
            413,
            "body_too_large",
        ),
    ];
    for (path, token, body, status, code) in &cases {
        let (got, answer) = lab.post(path, *token, body).await?;
        assert_eq!(
            (got, answer["code"].as_str()),
            (*status, Some(*code)),
            "{path}: {answer}"
        );
        assert!(answer["message"].is_string(), "{answer}");
    }
    let (status, text) = lab.get("/v1/failovers/abc").await?;
    assert_eq!(status, 400, "{text}");
    let (status, text) = lab.get("/v1/failovers/99999").await?;
    assert_eq!(status, 404, "{text}");
    assert!(text.contains("unknown_failover"));
    assert_eq!(lab.state().await?, before, "nothing changed");
    // Every failoverd metric the alert rules and the dashboard query is exported (each agent
    // exports what it probes: the primary's lag only where the primary is), and only the
    // leader exports the verdict.
    let leader = lab.leader_admin().await?;
    let metrics = wait_for_async(
        "the leader to export eu-west-3's verdict",
        Duration::from_secs(10),
        || async {
            let text = fetch_text(format!("http://{leader}/metrics")).await?;
            text.contains(r#"failoverd_region_verdict{region="eu-west-3",state="up"} 1"#)
                .then_some(text)
        },
    )
    .await?;
    // The leader's per-group gauges appear once it has judged the group's redundancy, which
    // can be a tick after the verdict: wait for every queried name, then name what is missing.
    let mut queried = Vec::new();
    for file in [
        "deploy/monitoring/failoverd.rules.yml",
        "deploy/monitoring/failoverd-dashboard.json",
    ] {
        let text = std::fs::read_to_string(format!("{}/{file}", env!("CARGO_MANIFEST_DIR")))?;
        let used: Vec<String> = metric_names(&text).into_iter().map(String::from).collect();
        assert!(used.len() >= 10, "{file}: {used:?}");
        queried.extend(used.into_iter().map(|name| (file, name)));
    }
    let admins: Vec<_> = lab.cluster.agents.iter().map(|a| a.admin).collect();
    let scrape_all = || async {
        let mut exported = String::new();
        for admin in &admins {
            exported.push_str(&fetch_text(format!("http://{admin}/metrics")).await?);
        }
        Some(exported)
    };
    let exported = match wait_for_async("every queried metric", Duration::from_secs(15), || async {
        let exported = scrape_all().await?;
        queried
            .iter()
            .all(|(_, name)| exported.contains(&format!("# TYPE {name} ")))
            .then_some(exported)
    })
    .await
    {
        Ok(exported) => exported,
        Err(_) => scrape_all().await.unwrap_or_default(),
    };
    for (file, name) in &queried {
        assert!(
            exported.contains(&format!("# TYPE {name} ")),
            "{file} queries {name}, which no agent exports"
        );
    }
    let verdict = |name: &str, labels: &str| {
        metrics
            .lines()
            .find(|l| l.starts_with(name) && l.contains(labels))
            .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
    };
    assert_eq!(
        verdict(
            "failoverd_region_verdict{",
            r#"region="eu-west-3",state="down""#
        ),
        Some(0.0),
        "{metrics}"
    );
    assert_eq!(
        verdict(
            "failoverd_verdict{",
            r#"region="eu-west-3",state="down",target="postgres/main/pg-eu-west-3""#
        ),
        Some(0.0),
        "{metrics}"
    );
    assert_eq!(
        verdict(
            "failoverd_verdict_votes{",
            r#"target="postgres/main/pg-eu-west-3",vote="down""#
        ),
        Some(0.0),
        "{metrics}"
    );
    let (_, follower_metrics) = lab.get("/metrics").await?;
    assert!(
        !follower_metrics.contains("failoverd_verdict{"),
        "a follower exports no verdict"
    );
    // The CLI's exit codes: 1 for a refusal, 2 for a live change nobody confirmed.
    let (code, out) = lab
        .cli(&["drain", "mars-1", "--reason", "x", "--yes"])
        .await?;
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("unknown_region"), "{out}");
    let (code, out) = lab.cli(&["drain", "eu-west-3", "--reason", "x"]).await?;
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("--yes"), "{out}");
    assert_eq!(lab.state().await?, before, "nothing changed");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pause_holds_automatic_failover_until_resume() -> anyhow::Result<()> {
    let _serial = ONE_LAB_AT_A_TIME.lock().await;
    let lab = lab().await?;
    let (code, out) = lab
        .cli(&["pause", "--reason", "database maintenance"])
        .await?;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("automation paused"), "{out}");
    // The follower applies the committed pause a moment after the leader answered.
    let epoch = wait_for_async(
        "the follower to see the pause",
        Duration::from_secs(5),
        || async {
            let (epoch, mode) = lab.state().await.ok()?;
            (mode == "paused").then_some(epoch)
        },
    )
    .await?;
    // A drain while paused is a conflict.
    let (status, answer) = lab
        .post(
            "/v1/regions/eu-west-3/drain",
            Some(TOKEN),
            r#"{"reason":"x"}"#,
        )
        .await?;
    assert_eq!((status, answer["code"].as_str()), (409, Some("paused")));

    // The primary dies while paused: the agents see it, nothing is done.
    lab.pg().primary.kill()?;
    wait_for_async(
        "the leader to see the primary Down and wait for the pause",
        Duration::from_secs(20),
        || async {
            for agent in &lab.cluster.agents {
                let s = agent.status().await?;
                let waiting = s["failover"]["waiting"].to_string();
                if waiting.contains("paused")
                    && s["cluster"]["verdict"]["targets"]["postgres/main/pg-eu-west-3"]["state"]
                        == "down"
                {
                    return Some(());
                }
            }
            None
        },
    )
    .await
    .with_context(|| lab.logs())?;
    assert_eq!(lab.state().await?.0, epoch, "no decision while paused");
    assert!(
        lab.pg()
            .replica
            .connect()
            .await?
            .batch_execute("INSERT INTO orders VALUES (1)")
            .await
            .is_err(),
        "the replica is not promoted while paused"
    );

    let (code, out) = lab.cli(&["resume", "--reason", "maintenance over"]).await?;
    assert_eq!(code, 0, "{out}");
    wait_for_async(
        "the promotion after resume",
        Duration::from_secs(20),
        || async {
            // Either replica may be the more caught up one when the leader decides.
            for replica in [&lab.pg().replica, &lab.pg().others[0]] {
                let Ok(client) = replica.connect().await else {
                    continue;
                };
                if client
                    .batch_execute("INSERT INTO orders VALUES (2)")
                    .await
                    .is_ok()
                {
                    return Some(());
                }
            }
            None
        },
    )
    .await
    .with_context(|| lab.logs())?;
    // The history has both mode changes, with who and why.
    let (code, out) = lab.cli(&["history", "--json"]).await?;
    assert_eq!(code, 0, "{out}");
    let history: Value = serde_json::from_str(&out)?;
    let modes: Vec<&Value> = history["entries"]
        .as_array()
        .context("entries")?
        .iter()
        .filter(|e| e["type"] == "mode")
        .collect();
    assert_eq!(modes.len(), 2, "{history:#}");
    assert_eq!(modes[1]["by"], "alice");
    assert_eq!(modes[1]["reason"], "database maintenance");
    assert_eq!(modes[0]["paused"], false);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_moves_the_primaries_without_losing_a_write_and_restore_brings_the_region_back(
) -> anyhow::Result<()> {
    let _serial = ONE_LAB_AT_A_TIME.lock().await;
    let lab = lab().await?;
    // Writes acknowledged by the primary and the Redis master before the drain.
    write_orders(&lab, 200).await?;
    lab.redis()
        .master
        .cmd(&["SET", "session:42", "alive"])
        .await?;

    // A dry run of a forced failover shows the plan and commits nothing.
    let (epoch_before, _) = lab.state().await?;
    let (code, out) = lab
        .cli(&[
            "failover",
            "--from",
            "eu-west-3",
            "--to",
            "us-east-1",
            "--reason",
            "drill",
            "--dry-run",
            "--json",
        ])
        .await?;
    assert_eq!(code, 0, "{out}");
    let plan: Value = serde_json::from_str(&out)?;
    assert_eq!(plan["dry_run"], true);
    assert_eq!(
        plan["decision"]["promotion"]["to"], "postgres/main/pg-us-east-1",
        "{plan:#}"
    );
    assert_eq!(plan["decision"]["promotion"]["planned"], false);
    assert_eq!(
        lab.state().await?.0,
        epoch_before,
        "a dry run commits nothing"
    );

    // The drain, through the CLI on a follower.
    let (code, out) = lab
        .cli(&[
            "drain",
            "eu-west-3",
            "--reason",
            "region maintenance",
            "--yes",
            "--json",
        ])
        .await?;
    assert_eq!(code, 0, "{out}");
    let reply: Value = serde_json::from_str(&out)?;
    let epoch = reply["epoch"].as_u64().context("an epoch")?;
    assert_eq!(reply["decision"]["promotion"]["planned"], true, "{reply:#}");
    let failover = lab.finished(epoch, Duration::from_secs(30)).await?;
    assert_eq!(failover["outcome"], "completed", "{failover:#}");
    assert_eq!(failover["decision"]["trigger"]["actor"], "alice");
    let promote = failover["steps"]
        .as_array()
        .and_then(|s| {
            s.iter().find(|s| {
                s["id"]
                    .as_str()
                    .is_some_and(|id| id.starts_with("promote:postgres/main/"))
            })
        })
        .context("the promotion step")?;
    assert!(
        promote["detail"]
            .as_str()
            .unwrap_or("")
            .contains("replayed everything"),
        "{promote:#}"
    );
    // Nothing lost: every acknowledged write is on the new primary, which takes writes.
    let to = failover["decision"]["promotion"]["to"]
        .as_str()
        .unwrap_or("");
    let new_primary = [&lab.pg().replica, &lab.pg().others[0]]
        .into_iter()
        .find(|m| to == format!("postgres/main/{}", m.name))
        .with_context(|| format!("promoted {to:?}"))?
        .connect()
        .await?;
    let rows: i64 = new_primary
        .query_one("SELECT count(*) FROM orders", &[])
        .await?
        .get(0);
    assert_eq!(rows, 200);
    new_primary
        .batch_execute("INSERT INTO orders VALUES (1000)")
        .await?;
    assert_eq!(
        lab.redis().replica.cmd(&["GET", "session:42"]).await?,
        "alive"
    );
    lab.redis().replica.cmd(&["SET", "session:43", "x"]).await?;
    let (weights, _) = lab.ministack().records().await?;
    assert_eq!(weights["eu-west-3"], 0);
    assert_eq!(weights["eu-central-1"], 100);

    // Draining it again is a conflict; restoring brings its weight back.
    let (status, answer) = lab
        .post(
            "/v1/regions/eu-west-3/drain",
            Some(TOKEN),
            r#"{"reason":"again"}"#,
        )
        .await?;
    assert_eq!(
        (status, answer["code"].as_str()),
        (409, Some("already_drained"))
    );
    let (code, out) = lab
        .cli(&[
            "restore",
            "eu-west-3",
            "--reason",
            "maintenance over",
            "--json",
        ])
        .await?;
    assert_eq!(code, 0, "{out}");
    let epoch = serde_json::from_str::<Value>(&out)?["epoch"]
        .as_u64()
        .context("an epoch")?;
    assert_eq!(
        lab.finished(epoch, Duration::from_secs(30)).await?["outcome"],
        "completed"
    );
    let (weights, _) = lab.ministack().records().await?;
    assert_eq!(weights["eu-west-3"], 100);

    // The status page shows the matrix with every agent's vote and the failovers.
    let (leader, _) = lab
        .cluster
        .agreed_leader(None, None, Duration::from_secs(5))
        .await?;
    let k = lab.cluster.index(&leader);
    let page = reqwest::get(format!("http://{}/", lab.cluster.agents[k].admin))
        .await?
        .text()
        .await?;
    assert!(page.contains("id=\"matrix\""), "{page}");
    for agent in &lab.cluster.agents {
        assert!(page.contains(&format!("<th>{}</th>", agent.id)), "{page}");
    }
    assert!(
        page.contains("data-target=\"postgres/main/pg-eu-central-1\""),
        "{page}"
    );
    assert!(page.contains("<td class=\"up verdict\">up ("), "{page}");
    assert!(page.contains("drain eu-west-3 by alice"), "{page}");
    let (code, out) = lab.cli(&["status"]).await?;
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("TARGET") && out.contains("postgres/main/pg-eu-west-3"),
        "{out}"
    );
    // The follower shows who leads and the leader's verdict: every target, every vote.
    assert!(out.contains(&format!("leader {leader}")), "{out}");
    let row = out
        .lines()
        .find(|l| l.starts_with("postgres/main/pg-eu-central-1 "))
        .with_context(|| format!("a row for pg-eu-central-1: {out}"))?;
    assert!(
        row.contains("eu-central-1-a"),
        "its region's agent's vote: {row}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_readiness_drill_reports_replicas_that_could_not_take_over() -> anyhow::Result<()> {
    let _serial = ONE_LAB_AT_A_TIME.lock().await;
    let lab = lab().await?;
    let (epoch, _) = lab.state().await?;
    // Asynchronous replication: a partition of the primaries' region could leave them taking
    // writes, which the drill says (exit code 4) and the leader exports.
    let (code, out) = lab.cli(&["drill", "--reason", "before sync"]).await?;
    assert_eq!(code, 4, "{out}");
    assert!(
        out.contains("a partition of eu-west-3 could leave two writable primaries"),
        "{out}"
    );
    let leader = lab.leader_admin().await?;
    let exposed = fetch_text(format!("http://{leader}/metrics"))
        .await
        .context("the leader's metrics")?;
    assert!(
        exposed.contains(r#"failoverd_split_brain_exposed{group="postgres/main"} 1"#),
        "{exposed}"
    );

    // Commits wait for a replica (`*`: the replicas are all outside the region), the Redis
    // master for one replica:
    // cut off, both refuse writes by themselves.
    let primary = lab.pg().primary.connect().await?;
    // (The test servers run synchronous_commit = off, under which no commit waits.)
    primary
        .batch_execute("ALTER SYSTEM SET synchronous_standby_names = 'ANY 1 (*)'")
        .await?;
    primary
        .batch_execute("ALTER SYSTEM SET synchronous_commit = on")
        .await?;
    primary.batch_execute("SELECT pg_reload_conf()").await?;
    lab.redis()
        .master
        .cmd(&["CONFIG", "SET", "min-replicas-max-lag", "10"])
        .await?;
    lab.redis()
        .master
        .cmd(&["CONFIG", "SET", "min-replicas-to-write", "1"])
        .await?;
    wait_for_async(
        "the leader to see both groups fence themselves",
        Duration::from_secs(20),
        || async {
            let text = fetch_text(format!("http://{leader}/metrics")).await?;
            (text.contains(r#"failoverd_split_brain_exposed{group="postgres/main"} 0"#)
                && text.contains(r#"failoverd_split_brain_exposed{group="redis/sessions"} 0"#))
            .then_some(())
        },
    )
    .await
    .with_context(|| lab.logs())?;
    let (code, out) = lab.cli(&["drill", "--reason", "weekly check"]).await?;
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains(
            "a partition of eu-west-3 leaves postgres/main/pg-eu-west-3 unable to take writes"
        ),
        "{out}"
    );
    assert!(
        out.contains("every region could be failed over now"),
        "{out}"
    );
    assert!(
        out.contains("would promote postgres/main/pg-eu-central-1"),
        "{out}"
    );

    // Both replicas' links stall while the primary writes on: they fall behind the guard.
    // (Committed locally: no standby streams to confirm it.)
    lab.pg().stall_receivers().await?;
    lab.pg()
        .primary
        .connect()
        .await?
        .batch_execute(
            "BEGIN; SET LOCAL synchronous_commit = local; \
             INSERT INTO orders SELECT g FROM generate_series(1, 20000) g; COMMIT",
        )
        .await?;
    wait_for_async(
        "the leader to see the replicas behind",
        Duration::from_secs(20),
        || async {
            for agent in &lab.cluster.agents {
                let s = agent.status().await?;
                let choice = &s["cluster"]["failover_readiness"]["postgres/main"]["choice"];
                if choice["decision"] == "blocked" {
                    return Some(());
                }
            }
            None
        },
    )
    .await
    .with_context(|| lab.logs())?;
    let (code, out) = lab
        .cli(&[
            "drill",
            "--reason",
            "after the replicas stopped streaming",
            "--json",
        ])
        .await?;
    assert_eq!(code, 4, "a blocked region is exit code 4: {out}");
    let reply: Value = serde_json::from_str(&out)?;
    let region = reply["drill"]["regions"]
        .as_array()
        .and_then(|r| r.iter().find(|r| r["region"] == "eu-west-3"))
        .context("eu-west-3 in the drill")?;
    assert_eq!(region["ready"], false, "{region:#}");
    let pg = region["checks"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["check"] == "postgres/main"))
        .context("the Postgres check")?;
    assert_eq!(pg["ok"], false);
    assert!(
        pg["detail"]
            .as_str()
            .unwrap_or("")
            .contains("max_lag_on_failover"),
        "{pg:#}"
    );
    // The other regions hold no primary: they could be drained.
    for other in ["eu-central-1", "us-east-1"] {
        let r = reply["drill"]["regions"]
            .as_array()
            .and_then(|r| r.iter().find(|r| r["region"] == other))
            .context("the region")?;
        assert_eq!(r["ready"], true, "{r:#}");
    }
    // A drill changes nothing but the history, which has both, with who asked.
    assert_eq!(lab.state().await?.0, epoch);
    let (_, text) = lab.get("/v1/history").await?;
    let history: Value = serde_json::from_str(&text)?;
    let drills: Vec<&Value> = history["entries"]
        .as_array()
        .context("entries")?
        .iter()
        .filter(|e| e["type"] == "drill")
        .collect();
    assert_eq!(drills.len(), 3, "{history:#}");
    assert_eq!(drills[0]["actor"], "alice");
    assert_eq!(
        [
            &drills[0]["ready"],
            &drills[1]["ready"],
            &drills[2]["ready"]
        ],
        [false, true, false],
        "newest first: replicas stopped, weekly check, before sync"
    );
    Ok(())
}

/// Runs headless Chromium on `url` with `args`; returns its standard output.
async fn chromium(url: &str, args: &[&str]) -> anyhow::Result<String> {
    let profile = tempfile::tempdir()?;
    let run = tokio::process::Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(args)
        .arg(url)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .context("chromium did not finish within 60 s")?
        .context("cannot run chromium (apt-get install chromium; .ci/run installs it)")?;
    anyhow::ensure!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_page_shows_the_live_verdicts_in_a_browser() -> anyhow::Result<()> {
    let _serial = ONE_LAB_AT_A_TIME.lock().await;
    let mut lab = lab().await?;
    // eu-west-3's API goes down: every agent sees it.
    drop(lab.apis.remove(0));
    let (leader, _) = lab
        .cluster
        .agreed_leader(None, None, Duration::from_secs(10))
        .await?;
    let k = lab.cluster.index(&leader);
    wait_for_async(
        "the API Down by verdict, with every agent's vote",
        Duration::from_secs(20),
        || async {
            let s = lab.cluster.agents[k].status().await?;
            let api = &s["cluster"]["verdict"]["targets"]["http/eu-west-3/api"];
            (api["state"] == "down" && api["down"].as_array()?.len() == 3).then_some(())
        },
    )
    .await
    .with_context(|| lab.logs())?;
    let url = format!("http://{}/", lab.cluster.agents[k].admin);
    let dom = chromium(&url, &["--dump-dom"]).await?;
    // The row of the dead API: every agent's vote Down, and the verdict.
    let row = dom
        .split("<tr")
        .find(|r| r.contains("data-target=\"http/eu-west-3/api\""))
        .with_context(|| format!("no row for the API: {dom}"))?;
    assert_eq!(row.matches("class=\"down\"").count(), 3, "{row}");
    assert!(
        row.contains("class=\"down verdict\">down (3 of 3)<"),
        "{row}"
    );
    // A replica only its own region's agent probes: that agent's vote decides, and says so.
    let replica = dom
        .split("<tr")
        .find(|r| r.contains("data-target=\"postgres/main/pg-eu-central-1\""))
        .context("the pg-eu-central-1 row")?;
    assert!(
        replica.contains("class=\"up verdict\">up (1 of 1)<"),
        "{replica}"
    );
    assert!(dom.contains("id=\"rule\""), "{dom}");
    let healthy = dom
        .split("<tr")
        .find(|r| r.contains("data-target=\"http/us-east-1/api\""))
        .context("the us-east-1 API row")?;
    assert_eq!(healthy.matches("class=\"up\"").count(), 3, "{healthy}");
    assert!(
        dom.contains(&format!("<b id=\"leader\">{leader}</b>")),
        "{dom}"
    );
    // A picture for people: target/test-artifacts/status-page.png.
    let artifacts = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .context("the target directory")?
        .join("test-artifacts");
    std::fs::create_dir_all(&artifacts)?;
    let shot = artifacts.join("status-page.png");
    let _ = std::fs::remove_file(&shot);
    chromium(
        &url,
        &[
            &format!("--screenshot={}", shot.display()),
            "--window-size=1000,1400",
        ],
    )
    .await?;
    let png = std::fs::read(&shot)?;
    assert!(
        png.starts_with(b"\x89PNG"),
        "{} is not a PNG",
        shot.display()
    );
    eprintln!("status page screenshot: {}", shot.display());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_switchover_that_cannot_catch_up_fails_and_gives_the_old_primary_back(
) -> anyhow::Result<()> {
    let _serial = ONE_LAB_AT_A_TIME.lock().await;
    let lab = lab().await?;
    // Both replicas' links stall, a little behind: within the guard, so the drain is
    // decided, but the candidate can never catch up with what the fenced primary wrote.
    lab.pg().stall_receivers().await?;
    lab.pg()
        .primary
        .connect()
        .await?
        .batch_execute("INSERT INTO orders VALUES (1), (2), (3)")
        .await?;
    let (code, out) = lab
        .cli(&[
            "drain",
            "eu-west-3",
            "--reason",
            "maintenance",
            "--yes",
            "--json",
        ])
        .await?;
    assert_eq!(code, 0, "{out}");
    let epoch = serde_json::from_str::<Value>(&out)?["epoch"]
        .as_u64()
        .context("an epoch")?;
    // Three attempts of the 10 s step timeout, with backoff.
    let failover = lab.finished(epoch, Duration::from_secs(60)).await?;
    assert_eq!(failover["outcome"], "failed", "{failover:#}");
    let promote = failover["steps"]
        .as_array()
        .and_then(|s| {
            s.iter().find(|s| {
                s["id"]
                    .as_str()
                    .is_some_and(|id| id.starts_with("promote:"))
            })
        })
        .context("the promotion step")?;
    assert_eq!(promote["state"], "failed", "{promote:#}");
    // No replica was promoted, and the old primary takes writes again: the group is never
    // left without a writable member.
    for replica in [&lab.pg().replica, &lab.pg().others[0]] {
        let in_recovery: bool = replica
            .connect()
            .await?
            .query_one("SELECT pg_is_in_recovery()", &[])
            .await?
            .get(0);
        assert!(in_recovery);
    }
    wait_for_async(
        "the old primary to take writes again",
        Duration::from_secs(15),
        || async {
            let client = lab.pg().primary.connect().await.ok()?;
            client
                .batch_execute("INSERT INTO orders VALUES (4)")
                .await
                .ok()
        },
    )
    .await
    .with_context(|| lab.logs())?;
    Ok(())
}

/// `schemathesis` from `SCHEMATHESIS` (set by `scripts/test.sh`, which installs it into a
/// virtualenv on first use), else from that virtualenv's default place.
fn schemathesis() -> anyhow::Result<String> {
    let bin = std::env::var("SCHEMATHESIS").unwrap_or_else(|_| {
        let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
        format!("{home}/.cache/failoverd/schemathesis-4.32.5/bin/schemathesis")
    });
    anyhow::ensure!(
        std::path::Path::new(&bin).exists(),
        "schemathesis not found at {bin}: run scripts/schemathesis-venv.sh (scripts/test.sh does)"
    );
    Ok(bin)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_no_server_error_or_schema_violation_on_a_live_agent(
) -> anyhow::Result<()> {
    let _serial = ONE_LAB_AT_A_TIME.lock().await;
    let bin = schemathesis()?;
    let lab = lab().await?;
    let (status, text) = lab.get("/v1/openapi.json").await?;
    assert_eq!(status, 200, "{text}");
    let doc: Value = serde_json::from_str(&text)?;
    assert_eq!(doc["openapi"], "3.1.0");
    let report = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("schemathesis");
    // Bounded: a fixed number of cases per operation, one worker, a fixed seed.
    let out = tokio::process::Command::new(&bin)
        .arg("run")
        .arg(format!("{}/v1/openapi.json", lab.follower()))
        .args(["--checks", "all", "--max-examples", "40", "--workers", "1"])
        .args(["--seed", "20261126", "--request-timeout", "25"])
        .args(["--header", &format!("Authorization: Bearer {TOKEN}")])
        .args(["--report", "junit", "--report-dir"])
        .arg(&report)
        .env("NO_COLOR", "1")
        .stdin(std::process::Stdio::null())
        .output()
        .await?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "schemathesis found problems ({}):\n{stdout}\n{stderr}\n{}",
        out.status,
        lab.logs()
    );
    // It ran every operation of the document.
    let operations: usize = doc["paths"]
        .as_object()
        .map(|p| {
            p.values()
                .map(|m| m.as_object().map_or(0, |m| m.len()))
                .sum()
        })
        .unwrap_or(0);
    assert!(operations >= 15, "{operations} operations");
    assert!(
        !stdout.contains("0 selected"),
        "schemathesis selected nothing:\n{stdout}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_drill_fails_a_region_over_and_back_in_one_call_with_its_milestones(
) -> anyhow::Result<()> {
    let _serial = ONE_LAB_AT_A_TIME.lock().await;
    let lab = lab().await?;
    write_orders(&lab, 100).await?;
    // The rows replayed everywhere: with equal positions the name decides, so the drain
    // promotes pg-eu-central-1 (a replica last seen ahead of the other would win instead).
    wait_for_async(
        "the leader to see pg-eu-central-1 caught up",
        Duration::from_secs(20),
        || async {
            for agent in &lab.cluster.agents {
                let s = agent.status().await?;
                let choice = &s["cluster"]["failover_readiness"]["postgres/main"]["choice"];
                if choice["target"] == "postgres/main/pg-eu-central-1"
                    && choice["estimated_loss_bytes"] == 0
                {
                    return Some(());
                }
            }
            None
        },
    )
    .await?;
    let before = lab.state().await?;
    for (body, status, code) in [
        (
            r#"{"kind":"live","region":"mars-1","reason":"x"}"#,
            404,
            "unknown_region",
        ),
        (
            r#"{"kind":"live","region":"eu-west-3","reason":"x","hold_seconds":7200}"#,
            400,
            "bad_request",
        ),
        (r#"{"kind":"live","reason":"x"}"#, 400, "bad_request"),
        (
            r#"{"kind":"readiness","reason":"x","hold_seconds":5}"#,
            400,
            "bad_request",
        ),
    ] {
        let (got, answer) = lab.post("/v1/drills", Some(TOKEN), body).await?;
        assert_eq!(
            (got, answer["code"].as_str()),
            (status, Some(code)),
            "{body}: {answer}"
        );
    }
    assert_eq!(lab.state().await?, before, "nothing changed");

    // One command: drain, hold, restore, followed to the end.
    let cli = tokio::process::Command::new(env!("CARGO_BIN_EXE_failoverd"))
        .args(["drill", "--live", "--region", "eu-west-3", "--hold", "3"])
        .args(["--wait", "--yes", "--reason", "quarterly drill"])
        .env("FAILOVERD_ADMIN", lab.follower())
        .env("FAILOVERD_TOKEN_FILE", lab.token_file())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    // While it runs, a second drill is a conflict.
    wait_for_async(
        "the drill to show in the status",
        Duration::from_secs(20),
        || async {
            let (_, text) = lab.get("/v1/status").await.ok()?;
            let s: Value = serde_json::from_str(&text).ok()?;
            (s["failover"]["live_drill"]["region"] == "eu-west-3").then_some(())
        },
    )
    .await
    .with_context(|| lab.logs())?;
    let (status, answer) = lab
        .post(
            "/v1/drills",
            Some(TOKEN),
            r#"{"kind":"live","region":"eu-central-1","reason":"again"}"#,
        )
        .await?;
    assert_eq!(
        (status, answer["code"].as_str()),
        (409, Some("drill_running")),
        "{answer}"
    );
    let out = tokio::time::timeout(Duration::from_secs(120), cli.wait_with_output())
        .await
        .context("the CLI to follow the drill to its end")??;
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(0), "{printed}\n{}", lab.logs());
    // The hold is longer than the CLI's poll: that phase is always seen.
    assert!(
        printed.contains("eu-west-3 drained: holding it out"),
        "{printed}"
    );
    assert!(
        printed.contains("MILESTONE") && printed.contains("restored"),
        "{printed}"
    );

    // The history holds the drill with its milestones in order, the region is back in DNS
    // and the primary it lost stays where the drain moved it, with every write.
    let (_, text) = lab.get("/v1/history").await?;
    let history: Value = serde_json::from_str(&text)?;
    let drill = history["entries"]
        .as_array()
        .and_then(|e| e.iter().find(|e| e["type"] == "live_drill"))
        .with_context(|| format!("a live drill in {history:#}"))?;
    assert_eq!(drill["outcome"], "completed", "{drill:#}");
    assert_eq!(drill["actor"], "alice");
    let names: Vec<&str> = drill["milestones"]
        .as_array()
        .context("milestones")?
        .iter()
        .filter_map(|m| m["name"].as_str())
        .collect();
    let position = |name: &str| {
        names
            .iter()
            .position(|n| *n == name)
            .with_context(|| format!("{name} in {names:?}"))
    };
    assert!(position("drain decided")? < position("promote:postgres/main/pg-eu-central-1")?);
    assert!(position("promote:postgres/main/pg-eu-central-1")? < position("drained")?);
    assert!(position("drained")? < position("restore decided")?);
    assert!(position("restore decided")? < position("restored")?);
    let after = |name: &str| -> anyhow::Result<u64> {
        drill["milestones"]
            .as_array()
            .and_then(|m| m.iter().find(|m| m["name"] == name))
            .and_then(|m| m["after_ms"].as_u64())
            .with_context(|| name.to_owned())
    };
    assert!(
        after("restore decided")? >= after("drained")? + 3000,
        "held for 3 s: {drill:#}"
    );
    let (weights, _) = lab.ministack().records().await?;
    assert_eq!(weights["eu-west-3"], 100);
    let (_, text) = lab.get("/v1/status").await?;
    let status: Value = serde_json::from_str(&text)?;
    assert!(status["failover"]["live_drill"].is_null());
    assert_eq!(
        status["cluster"]["primaries"]["postgres/main"],
        "postgres/main/pg-eu-central-1"
    );
    let rows: i64 = lab
        .pg()
        .replica
        .connect()
        .await?
        .query_one("SELECT count(*) FROM orders", &[])
        .await?
        .get(0);
    assert_eq!(rows, 100);
    let (code, out) = lab.cli(&["history"]).await?;
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("live drill") && out.contains("completed"),
        "{out}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_drill_keeps_a_region_that_failed_during_the_hold_out_until_it_is_up(
) -> anyhow::Result<()> {
    let _serial = ONE_LAB_AT_A_TIME.lock().await;
    let mut lab = lab().await?;
    let (status, reply) = lab
        .post(
            "/v1/drills",
            Some(TOKEN),
            r#"{"kind":"live","region":"eu-west-3","reason":"drill","hold_seconds":10}"#,
        )
        .await?;
    assert_eq!(status, 200, "{reply}");
    let drain = reply["epoch"].as_u64().context("the drain's epoch")?;
    assert_eq!(
        lab.finished(drain, Duration::from_secs(30)).await?["outcome"],
        "completed"
    );
    // The region really fails during the hold: its API stops.
    let api = lab.apis.remove(0);
    let addr = api.addr;
    drop(api);
    // What waits, and why, is the leader's to say.
    let leader = lab.leader_admin().await?;
    let waiting = wait_for_async(
        "the drill to wait for the region",
        Duration::from_secs(30),
        || async {
            let text = fetch_text(format!("http://{leader}/v1/status")).await?;
            let s: Value = serde_json::from_str(&text).ok()?;
            let line = s["failover"]["waiting"]
                .as_array()?
                .iter()
                .filter_map(|w| w.as_str())
                .find(|w| w.contains("stays drained until its verdict is Up"))?
                .to_owned();
            Some((line, s))
        },
    )
    .await
    .with_context(|| lab.logs())?;
    assert!(waiting.0.contains("eu-west-3"), "{}", waiting.0);
    let drill = &waiting.1["failover"]["live_drill"];
    assert!(drill["restore_epoch"].is_null(), "not restored: {drill}");
    let (weights, _) = lab.ministack().records().await?;
    assert_eq!(weights["eu-west-3"], 0, "still out of DNS");

    // Back up: the drill restores it and ends.
    lab.apis.insert(
        0,
        support::HttpServer::start_at(addr, support::api_router()).await?,
    );
    let ended = wait_for_async("the drill to end", Duration::from_secs(60), || async {
        let (_, text) = lab.get("/v1/history").await.ok()?;
        let h: Value = serde_json::from_str(&text).ok()?;
        h["entries"]
            .as_array()?
            .iter()
            .find(|e| e["type"] == "live_drill")
            .cloned()
    })
    .await
    .with_context(|| lab.logs())?;
    assert_eq!(ended["outcome"], "completed", "{ended:#}");
    let (weights, _) = lab.ministack().records().await?;
    assert_eq!(weights["eu-west-3"], 100);
    Ok(())
}

/// The `failoverd_*` metric families a rule file or dashboard queries (histogram series named
/// by their family).
fn metric_names(text: &str) -> Vec<&str> {
    let mut names: Vec<&str> = text
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| w.starts_with("failoverd_"))
        .map(|w| {
            ["_bucket", "_count", "_sum"]
                .iter()
                .find_map(|suffix| w.strip_suffix(suffix))
                .unwrap_or(w)
        })
        .collect();
    names.sort_unstable();
    names.dedup();
    names
}

/// The body of a GET, or `None` if the call fails (for conditions waited on).
async fn fetch_text(url: String) -> Option<String> {
    reqwest::get(url).await.ok()?.text().await.ok()
}
