//! The operator's commands against a running agent's admin API: status, history, pause,
//! resume, drain, restore and failover. Human tables by default, `--json` for scripts.
//!
//! Exit codes: 0 done; 1 refused (the API answered 4xx: bad input, conflict, guard); 2 usage
//! (including a live change without `--yes` when no terminal can confirm it); 3 the agent
//! could not be reached or answered 5xx (no leader, no quorum); 4 a readiness drill found a
//! region that could not be failed over.

use std::io::{BufRead, IsTerminal, Write};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand};
use failoverd::admin::page::verdict_text;
use failoverd::verdict::TargetVerdict;
use serde_json::Value;

/// Where the admin API is and how to authenticate.
#[derive(Args)]
pub struct Target {
    /// The agent's admin URL.
    #[arg(long, env = "FAILOVERD_ADMIN", default_value = "http://127.0.0.1:7070")]
    admin: String,
    /// Admin token (prefer FAILOVERD_TOKEN or --token-file: arguments show in `ps`).
    #[arg(long, env = "FAILOVERD_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// File holding the admin token.
    #[arg(long, env = "FAILOVERD_TOKEN_FILE")]
    token_file: Option<std::path::PathBuf>,
    /// Print the API's JSON answer.
    #[arg(long)]
    json: bool,
}

/// An operator's command.
#[derive(Subcommand)]
pub enum Op {
    /// What the agents believe: regions, targets with each agent's vote, leader, mode.
    Status {
        #[command(flatten)]
        target: Target,
    },
    /// Failovers, refusals, slot moves and mode changes, newest first.
    History {
        #[command(flatten)]
        target: Target,
        /// At most this many entries.
        #[arg(long, default_value_t = 20)]
        limit: usize,
    },
    /// Maintenance mode: probes go on, nothing is done automatically.
    Pause {
        #[command(flatten)]
        target: Target,
        /// Why (recorded in the history).
        #[arg(long)]
        reason: String,
        /// Accepted as on every command that changes something; this one asks nothing.
        #[arg(long)]
        yes: bool,
    },
    /// Back to automatic failover.
    Resume {
        #[command(flatten)]
        target: Target,
        /// Why (recorded in the history).
        #[arg(long)]
        reason: String,
        /// Accepted as on every command that changes something; this one asks nothing.
        #[arg(long)]
        yes: bool,
    },
    /// Take a region out of DNS; its primaries move out with no data loss.
    Drain {
        #[command(flatten)]
        target: Target,
        /// The region.
        region: String,
        /// Why (recorded in the history).
        #[arg(long)]
        reason: String,
        /// Only show the plan.
        #[arg(long)]
        dry_run: bool,
        /// Do not ask for confirmation.
        #[arg(long)]
        yes: bool,
    },
    /// Put a drained region back into DNS.
    Restore {
        #[command(flatten)]
        target: Target,
        /// The region.
        region: String,
        /// Why (recorded in the history).
        #[arg(long)]
        reason: String,
        /// Only show the plan.
        #[arg(long)]
        dry_run: bool,
        /// Accepted as on every command that changes something; this one asks nothing.
        #[arg(long)]
        yes: bool,
    },
    /// A readiness drill (whether failing each region over would go through now), or with
    /// `--live` a live drill: the region is failed over for real (drained), held out, then
    /// restored, with the time to each milestone.
    Drill {
        #[command(flatten)]
        target: Target,
        /// Why (recorded in the history).
        #[arg(long)]
        reason: String,
        /// Only this region (required with --live).
        #[arg(long, required_if_eq("live", "true"))]
        region: Option<String>,
        /// Fail the region over for real, then back.
        #[arg(long)]
        live: bool,
        /// Live drill: seconds the region stays out once drained.
        #[arg(long, default_value_t = 30, requires = "live")]
        hold: u32,
        /// Live drill: follow it to the end and print its milestones.
        #[arg(long, requires = "live")]
        wait: bool,
        /// Do not ask for confirmation.
        #[arg(long)]
        yes: bool,
    },
    /// Force a failover away from a region.
    Failover {
        #[command(flatten)]
        target: Target,
        /// The region to leave.
        #[arg(long)]
        from: String,
        /// The region the Postgres candidate must be in.
        #[arg(long)]
        to: Option<String>,
        /// Why (recorded in the history).
        #[arg(long)]
        reason: String,
        /// Promote beyond postgres.max_lag_on_failover.
        #[arg(long)]
        allow_data_loss: bool,
        /// Only show the plan.
        #[arg(long)]
        dry_run: bool,
        /// Do not ask for confirmation.
        #[arg(long)]
        yes: bool,
    },
}

const EXIT_REFUSED: u8 = 1;
const EXIT_USAGE: u8 = 2;
const EXIT_UNAVAILABLE: u8 = 3;
const EXIT_NOT_READY: u8 = 4;

/// Runs `op`; returns the exit code.
pub fn run(op: Op) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("failoverd: cannot start the async runtime: {e}");
            return ExitCode::from(EXIT_UNAVAILABLE);
        }
    };
    match runtime.block_on(dispatch(op)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("failoverd: {e:#}");
            ExitCode::from(EXIT_UNAVAILABLE)
        }
    }
}

async fn dispatch(op: Op) -> anyhow::Result<ExitCode> {
    match op {
        Op::Status { target } => {
            let (status, body) = call(&target, "GET", "/v1/status", None).await?;
            Ok(answer(&target, status, &body, print_status))
        }
        Op::History { target, limit } => {
            let path = format!("/v1/history?limit={limit}");
            let (status, body) = call(&target, "GET", &path, None).await?;
            Ok(answer(&target, status, &body, print_history))
        }
        Op::Pause {
            target,
            reason,
            yes: _,
        } => {
            let body = serde_json::json!({ "reason": reason });
            let (status, body) = call(&target, "POST", "/v1/pause", Some(body)).await?;
            Ok(answer(&target, status, &body, print_reply))
        }
        Op::Resume {
            target,
            reason,
            yes: _,
        } => {
            let body = serde_json::json!({ "reason": reason });
            let (status, body) = call(&target, "POST", "/v1/resume", Some(body)).await?;
            Ok(answer(&target, status, &body, print_reply))
        }
        Op::Drain {
            target,
            region,
            reason,
            dry_run,
            yes,
        } => {
            if !dry_run && !yes {
                if let Some(code) = confirm(&format!("drain region {region}"), &region) {
                    return Ok(code);
                }
            }
            let body = serde_json::json!({ "reason": reason, "dry_run": dry_run });
            let path = format!("/v1/regions/{region}/drain");
            let (status, body) = call(&target, "POST", &path, Some(body)).await?;
            Ok(answer(&target, status, &body, print_reply))
        }
        Op::Restore {
            target,
            region,
            reason,
            dry_run,
            yes: _,
        } => {
            let body = serde_json::json!({ "reason": reason, "dry_run": dry_run });
            let path = format!("/v1/regions/{region}/restore");
            let (status, body) = call(&target, "POST", &path, Some(body)).await?;
            Ok(answer(&target, status, &body, print_reply))
        }
        Op::Drill {
            target,
            reason,
            region,
            live: true,
            hold,
            wait,
            yes,
        } => {
            let region = region.unwrap_or_default();
            if !yes {
                let what = format!("fail region {region} over and back (live drill)");
                if let Some(code) = confirm(&what, &region) {
                    return Ok(code);
                }
            }
            let body = serde_json::json!({
                "kind": "live",
                "reason": reason,
                "region": region,
                "hold_seconds": hold,
            });
            let (status, body) = call(&target, "POST", "/v1/drills", Some(body)).await?;
            let code = answer(&target, status, &body, print_reply);
            match body["epoch"].as_u64() {
                Some(epoch) if wait && (200..300).contains(&status) => {
                    follow_live_drill(&target, epoch, hold).await
                }
                _ => Ok(code),
            }
        }
        Op::Drill {
            target,
            reason,
            region,
            ..
        } => {
            let body = serde_json::json!({ "reason": reason, "region": region });
            let (status, body) = call(&target, "POST", "/v1/drills", Some(body)).await?;
            let code = answer(&target, status, &body, print_drill);
            // A drill that finds a region blocked is a finding scripts must see.
            if (200..300).contains(&status) && body["drill"]["ready"] == false {
                return Ok(ExitCode::from(EXIT_NOT_READY));
            }
            Ok(code)
        }
        Op::Failover {
            target,
            from,
            to,
            reason,
            allow_data_loss,
            dry_run,
            yes,
        } => {
            if !dry_run && !yes {
                if let Some(code) = confirm(&format!("fail region {from} over"), &from) {
                    return Ok(code);
                }
            }
            let body = serde_json::json!({
                "from": from,
                "to": to,
                "reason": reason,
                "allow_data_loss": allow_data_loss,
                "dry_run": dry_run,
            });
            let (status, body) = call(&target, "POST", "/v1/failover", Some(body)).await?;
            Ok(answer(&target, status, &body, print_reply))
        }
    }
}

/// Follows the live drill whose drain is failover `epoch` until it is in the history, saying
/// each phase as it begins; prints its milestones. 0 when it completed, 4 when it failed.
async fn follow_live_drill(target: &Target, epoch: u64, hold: u32) -> anyhow::Result<ExitCode> {
    let deadline = tokio::time::Instant::now()
        + Duration::from_secs(u64::from(hold))
        + Duration::from_secs(600);
    let mut said = String::new();
    loop {
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "the live drill did not end within {} s of its hold: see `failoverd history`",
            600
        );
        // The agent asked may restart or lose its leader meanwhile: ask again until the
        // deadline rather than give up on a drill that goes on.
        let history = match call(target, "GET", "/v1/history?limit=50", None).await {
            Ok((200, history)) => history,
            Ok((status, body)) => {
                eprintln!(
                    "... the agent answered {status}: {}",
                    text(&body["message"])
                );
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
            Err(e) => {
                eprintln!("... {e:#}");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let ended = history["entries"].as_array().and_then(|entries| {
            entries
                .iter()
                .find(|e| e["type"] == "live_drill" && e["drain_epoch"] == epoch)
                .cloned()
        });
        if let Some(record) = ended {
            if target.json {
                outln!("{}", serde_json::to_string_pretty(&record)?);
            } else {
                print_live_drill(&record);
            }
            return Ok(ExitCode::from(if record["outcome"] == "completed" {
                0
            } else {
                EXIT_NOT_READY
            }));
        }
        let Ok((200, status)) = call(target, "GET", "/v1/status", None).await else {
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        };
        let drill = &status["failover"]["live_drill"];
        let waiting: Vec<&str> = status["failover"]["waiting"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|w| w.as_str())
            .filter(|w| w.starts_with("live drill"))
            .collect();
        let phase = match drill["restore_epoch"].as_u64() {
            _ if drill.is_null() => "ending".to_owned(),
            None if !waiting.is_empty() => waiting.join("; "),
            Some(restore) => format!("restoring {} (failover {restore})", text(&drill["region"])),
            None if status["failover"]["in_progress"]
                .as_array()
                .is_some_and(|f| f.iter().any(|f| f["epoch"] == epoch)) =>
            {
                format!("draining {} (failover {epoch})", text(&drill["region"]))
            }
            None => format!(
                "{} drained: holding it out for {hold} s",
                text(&drill["region"])
            ),
        };
        if phase != said && !target.json {
            eprintln!("... {phase}");
            said = phase;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

fn print_live_drill(r: &Value) {
    outln!(
        "live drill of {}: {} - {}",
        text(&r["region"]),
        text(&r["outcome"]),
        text(&r["detail"])
    );
    let rows: Vec<Vec<String>> = r["milestones"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|m| {
            vec![
                format!(
                    "+{:.1} s",
                    m["after_ms"].as_u64().unwrap_or(0) as f64 / 1000.0
                ),
                text(&m["name"]),
            ]
        })
        .collect();
    outln!();
    table(&["AFTER", "MILESTONE"], &rows);
}

/// Asks the person at the terminal to type `word`; `Some(code)` when the change must not go
/// ahead.
fn confirm(what: &str, word: &str) -> Option<ExitCode> {
    if !std::io::stdin().is_terminal() {
        eprintln!("failoverd: refusing to {what} without a terminal to confirm: add --yes");
        return Some(ExitCode::from(EXIT_USAGE));
    }
    eprint!("This will {what} for real. Type {word:?} to go ahead: ");
    let _ = std::io::stderr().flush();
    let mut line = String::new();
    if std::io::stdin().lock().read_line(&mut line).is_err() || line.trim() != word {
        eprintln!("failoverd: not confirmed, nothing done");
        return Some(ExitCode::from(EXIT_USAGE));
    }
    None
}

async fn call(
    target: &Target,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> anyhow::Result<(u16, Value)> {
    let token = match (&target.token, &target.token_file) {
        (Some(t), _) => Some(t.clone()),
        (None, Some(file)) => Some(
            std::fs::read_to_string(file)
                .with_context(|| format!("cannot read the token file {}", file.display()))?
                .trim_end()
                .to_owned(),
        ),
        (None, None) => None,
    };
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .context("cannot build the HTTP client")?;
    let url = format!("{}{path}", target.admin.trim_end_matches('/'));
    let mut request = match method {
        "POST" => client
            .post(&url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(serde_json::to_vec(&body.unwrap_or(Value::Null))?),
        _ => client.get(&url),
    };
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request
        .send()
        .await
        .with_context(|| format!("cannot reach the agent at {}", target.admin))?;
    let status = response.status().as_u16();
    let text = response.text().await.context("cannot read the answer")?;
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    Ok((status, body))
}

/// Prints the answer (JSON, or `human` for a 2xx, or the error) and picks the exit code.
fn answer(target: &Target, status: u16, body: &Value, human: fn(&Value)) -> ExitCode {
    let ok = (200..300).contains(&status);
    if target.json {
        outln!("{}", serde_json::to_string_pretty(body).unwrap_or_default());
    } else if ok {
        human(body);
    } else {
        eprintln!(
            "failoverd: {status} {}: {}",
            body["code"].as_str().unwrap_or("error"),
            body["message"].as_str().unwrap_or(&body.to_string())
        );
    }
    match status {
        200..=299 => ExitCode::SUCCESS,
        400..=499 => ExitCode::from(EXIT_REFUSED),
        _ => ExitCode::from(EXIT_UNAVAILABLE),
    }
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

/// Prints rows as columns padded to the widest cell.
fn table(header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let padded: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<w$}", w = widths[i]))
            .collect();
        outln!("{}", padded.join("  ").trim_end());
    };
    line(header.iter().map(|h| (*h).to_owned()).collect());
    for row in rows {
        line(row.clone());
    }
}

fn print_status(s: &Value) {
    let cluster = &s["cluster"];
    let failover = &s["failover"];
    outln!(
        "agent {} ({}) · {} · leader {} · term {} · mode {} · epoch {} · lease {}",
        text(&s["agent"]["id"]),
        text(&s["agent"]["region"]),
        text(&cluster["state"]).to_lowercase(),
        text(&cluster["leader"]),
        text(&cluster["term"]),
        text(&failover["mode"]),
        text(&failover["epoch"]),
        if cluster["lease"]["valid"] == true {
            "held"
        } else {
            "LOST"
        }
    );
    let drained: Vec<String> = failover["drained"]
        .as_array()
        .map(|a| a.iter().map(text).collect())
        .unwrap_or_default();
    let verdict = &cluster["verdict"];
    let regions: Vec<Vec<String>> = verdict["regions"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(r, state)| {
                    vec![
                        r.clone(),
                        text(state),
                        failover["weights"]
                            .get(r)
                            .map(text)
                            .unwrap_or_else(|| "configured".into()),
                        if drained.contains(r) {
                            "drained"
                        } else {
                            "yes"
                        }
                        .into(),
                    ]
                })
                .collect()
        })
        .unwrap_or_default();
    if !regions.is_empty() {
        outln!();
        table(&["REGION", "VERDICT", "WEIGHT", "IN DNS"], &regions);
    }
    // Every target of the verdict (the leader's, with every agent's votes), else this
    // agent's own.
    let mut ids: Vec<String> = verdict["targets"]
        .as_object()
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default();
    for t in s["targets"].as_array().into_iter().flatten() {
        let id = text(&t["id"]);
        if !ids.contains(&id) {
            ids.push(id);
        }
    }
    let here = |id: &str| {
        s["targets"]
            .as_array()
            .and_then(|t| t.iter().find(|t| t["id"] == id))
            .map(|t| text(&t["state"]))
            .unwrap_or_else(|| "-".into())
    };
    let quorum = verdict["quorum"]
        .as_u64()
        .and_then(|q| usize::try_from(q).ok())
        .unwrap_or(0);
    let rows: Vec<Vec<String>> = ids
        .iter()
        .map(|id| {
            let votes = &verdict["targets"][id];
            let list = |k: &str| {
                votes[k]
                    .as_array()
                    .map(|a| a.iter().map(text).collect::<Vec<_>>().join(","))
                    .unwrap_or_default()
            };
            // The verdict with the votes behind it; the bare state from an agent whose answer
            // has another shape.
            let shown = match serde_json::from_value::<TargetVerdict>(votes.clone()) {
                Ok(v) => verdict_text(id, &v, quorum),
                Err(_) => votes.get("state").map(text).unwrap_or_else(|| "-".into()),
            };
            vec![id.clone(), here(id), shown, list("up"), list("down")]
        })
        .collect();
    outln!();
    table(&["TARGET", "HERE", "VERDICT", "UP BY", "DOWN BY"], &rows);
    for key in ["waiting", "refusals"] {
        for line in failover[key].as_array().into_iter().flatten() {
            outln!("{key}: {}", text(line));
        }
    }
}

fn print_history(h: &Value) {
    let rows: Vec<Vec<String>> = h["entries"]
        .as_array()
        .map(|entries| {
            entries
                .iter()
                .map(|e| match e["type"].as_str() {
                    Some("failover") => vec![
                        text(&e["epoch"]),
                        "failover".into(),
                        describe_trigger(&e["decision"]["trigger"]),
                        text(&e["outcome"]),
                        e["duration_ms"]
                            .as_u64()
                            .map(|ms| format!("{:.1} s", ms as f64 / 1000.0))
                            .unwrap_or_else(|| "-".into()),
                    ],
                    Some("refusal") => vec![
                        "".into(),
                        "refusal".into(),
                        text(&e["reason"]),
                        text(&e["guard"]),
                        "".into(),
                    ],
                    Some("slots_moved") => vec![
                        text(&e["epoch"]),
                        "slots".into(),
                        format!(
                            "{} {} -> {}",
                            e["slots"]
                                .as_array()
                                .map(|a| a.iter().map(text).collect::<Vec<_>>().join(","))
                                .unwrap_or_default(),
                            text(&e["from"]),
                            text(&e["to"])
                        ),
                        format!("by {}", text(&e["by"])),
                        "".into(),
                    ],
                    Some("live_drill") => vec![
                        text(&e["drain_epoch"]),
                        "live drill".into(),
                        format!(
                            "{} by {}: {}",
                            text(&e["region"]),
                            text(&e["actor"]),
                            text(&e["reason"])
                        ),
                        text(&e["outcome"]),
                        e["milestones"]
                            .as_array()
                            .and_then(|m| m.last())
                            .and_then(|m| m["after_ms"].as_u64())
                            .map(|ms| format!("{:.1} s", ms as f64 / 1000.0))
                            .unwrap_or_else(|| "-".into()),
                    ],
                    Some("drill") => vec![
                        "".into(),
                        "drill".into(),
                        format!(
                            "readiness, by {}: {}",
                            text(&e["actor"]),
                            text(&e["reason"])
                        ),
                        if e["ready"] == true {
                            "ready"
                        } else {
                            "BLOCKED"
                        }
                        .into(),
                        "".into(),
                    ],
                    Some("mode") => vec![
                        "".into(),
                        if e["paused"] == true {
                            "pause"
                        } else {
                            "resume"
                        }
                        .into(),
                        format!("by {}: {}", text(&e["by"]), text(&e["reason"])),
                        "".into(),
                        "".into(),
                    ],
                    _ => vec!["".into(), text(&e["type"]), "".into(), "".into(), "".into()],
                })
                .collect()
        })
        .unwrap_or_default();
    table(&["EPOCH", "TYPE", "WHAT", "OUTCOME", "TOOK"], &rows);
}

fn describe_trigger(t: &Value) -> String {
    match t["kind"].as_str() {
        Some("manual") => format!(
            "{} {} by {}: {}",
            text(&t["action"]),
            text(&t["region"]),
            text(&t["actor"]),
            text(&t["reason"])
        ),
        Some("region_down") => format!("region {} down", text(&t["region"])),
        Some("primary_down") => format!("primary {} lost", text(&t["target"])),
        Some(kind) => kind.to_owned(),
        None => "-".into(),
    }
}

fn print_drill(r: &Value) {
    outln!("{}", text(&r["message"]));
    let rows: Vec<Vec<String>> = r["drill"]["regions"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|region| {
            region["checks"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|c| {
                    vec![
                        text(&region["region"]),
                        text(&c["check"]),
                        if c["ok"] == true { "ok" } else { "BLOCKED" }.into(),
                        text(&c["detail"]),
                    ]
                })
                .collect::<Vec<_>>()
        })
        .collect();
    outln!();
    table(&["REGION", "CHECK", "RESULT", "DETAIL"], &rows);
}

fn print_reply(r: &Value) {
    outln!("{}", text(&r["message"]));
    if let Some(steps) = r["decision"]["steps"].as_array() {
        let rows: Vec<Vec<String>> = steps
            .iter()
            .map(|s| {
                let after = s["after"]
                    .as_array()
                    .map(|a| a.iter().map(text).collect::<Vec<_>>().join(", "))
                    .unwrap_or_default();
                vec![
                    text(&s["id"]),
                    if after.is_empty() { "-".into() } else { after },
                ]
            })
            .collect();
        if !rows.is_empty() {
            outln!();
            table(&["STEP", "AFTER"], &rows);
        }
    }
    if let Some(epoch) = r["epoch"].as_u64() {
        outln!("\nfollow it: failoverd history, or GET /v1/failovers/{epoch}");
    }
}
