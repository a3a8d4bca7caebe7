//! The operator's commands against a running agent's admin API: status, history, pause,
//! resume, drain, restore, failover and switchover. Human tables by default, `--json` for scripts.
//!
//! Exit codes: 0 done; 1 refused (the API answered 4xx: bad input, conflict, guard); 2 usage
//! (including a live change without `--yes` when no terminal can confirm it); 3 the agent
//! could not be reached or answered 5xx (no leader, no quorum); 4 a readiness drill found a
//! region that could not be failed over.
//!
//! Each answer is read into the admin API's own types (`failoverd::admin`, `failoverd::api`),
//! the ones the agent writes it from; `--json` prints it as it came. An answer that does not
//! read (an agent of another version) is said to be so. Layout: this file holds the commands
//! and the HTTP call; `status.rs` and `history.rs` render those answers, `ops.rs` the replies
//! to the calls that change something and a live drill followed to its end.

mod history;
mod ops;
mod status;

use std::io::{BufRead, IsTerminal, Write};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand};
use failoverd::admin::{HistoryResponse, StatusResponse};
use failoverd::api::{ErrorBody, Reply};
use serde::de::DeserializeOwned;
use serde::Serialize;
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
    /// Move a Postgres group's primary to a member, planned (nothing lost), DNS untouched.
    Switchover {
        #[command(flatten)]
        target: Target,
        /// The member to promote (its name, or postgres/<cluster>/<name>).
        #[arg(long)]
        to: String,
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
            Ok(answer::<StatusResponse>(
                &target,
                status,
                &body,
                status::print,
            ))
        }
        Op::History { target, limit } => {
            let path = format!("/v1/history?limit={limit}");
            let (status, body) = call(&target, "GET", &path, None).await?;
            Ok(answer::<HistoryResponse>(
                &target,
                status,
                &body,
                history::print,
            ))
        }
        Op::Pause {
            target,
            reason,
            yes: _,
        } => {
            let body = serde_json::json!({ "reason": reason });
            let (status, body) = call(&target, "POST", "/v1/pause", Some(body)).await?;
            Ok(answer(&target, status, &body, ops::print_reply))
        }
        Op::Resume {
            target,
            reason,
            yes: _,
        } => {
            let body = serde_json::json!({ "reason": reason });
            let (status, body) = call(&target, "POST", "/v1/resume", Some(body)).await?;
            Ok(answer(&target, status, &body, ops::print_reply))
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
            Ok(answer(&target, status, &body, ops::print_reply))
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
            Ok(answer(&target, status, &body, ops::print_reply))
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
            let code = answer(&target, status, &body, ops::print_reply);
            let epoch = decode::<Reply>(&body).ok().and_then(|r| r.epoch);
            match epoch {
                Some(epoch) if wait && succeeded(status) => {
                    ops::follow_live_drill(&target, epoch, hold).await
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
            let code = answer(&target, status, &body, ops::print_drill);
            // A drill that finds a region blocked is a finding scripts must see.
            let blocked =
                decode::<Reply>(&body).is_ok_and(|r| r.drill.is_some_and(|drill| !drill.ready));
            if succeeded(status) && blocked {
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
            Ok(answer(&target, status, &body, ops::print_reply))
        }
        Op::Switchover {
            target,
            to,
            reason,
            dry_run,
            yes,
        } => {
            if !dry_run && !yes {
                if let Some(code) = confirm(&format!("move the primary to {to}"), &to) {
                    return Ok(code);
                }
            }
            let body = serde_json::json!({ "to": to, "reason": reason, "dry_run": dry_run });
            let (status, body) = call(&target, "POST", "/v1/switchover", Some(body)).await?;
            Ok(answer(&target, status, &body, ops::print_reply))
        }
    }
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

/// Whether the API answered 2xx.
fn succeeded(status: u16) -> bool {
    (200..300).contains(&status)
}

/// Reads an answer into the API's type `T`; the error says where it does not fit.
fn decode<T: DeserializeOwned>(body: &Value) -> anyhow::Result<T> {
    serde_path_to_error::deserialize(body).map_err(|e| {
        anyhow::anyhow!(
            "the agent's answer does not read as failoverd {} expects ({e}): the agent may \
             run another version; --json prints the answer as it came",
            env!("CARGO_PKG_VERSION")
        )
    })
}

/// An error answer's code and message; `error` and the whole answer when it is not an
/// [`ErrorBody`].
fn error_parts(body: &Value) -> (String, String) {
    match decode::<ErrorBody>(body) {
        Ok(error) => (error.code, error.message),
        Err(_) => ("error".to_owned(), body.to_string()),
    }
}

/// Prints the answer (JSON, or `human` for a 2xx, or the error) and picks the exit code.
fn answer<T: DeserializeOwned>(
    target: &Target,
    status: u16,
    body: &Value,
    human: fn(&T),
) -> ExitCode {
    if target.json {
        outln!("{}", serde_json::to_string_pretty(body).unwrap_or_default());
    } else if succeeded(status) {
        match decode::<T>(body) {
            Ok(answer) => human(&answer),
            Err(e) => eprintln!("failoverd: {e:#}"),
        }
    } else {
        let (code, message) = error_parts(body);
        eprintln!("failoverd: {status} {code}: {message}");
    }
    match status {
        200..=299 => ExitCode::SUCCESS,
        400..=499 => ExitCode::from(EXIT_REFUSED),
        _ => ExitCode::from(EXIT_UNAVAILABLE),
    }
}

/// A value as the tables show it: text as it is, nothing as `-`, an enum by its name in the
/// API, anything else as its JSON.
fn label<T: Serialize + ?Sized>(value: &T) -> String {
    match serde_json::to_value(value) {
        Ok(Value::String(s)) => s,
        Ok(Value::Null) | Err(_) => "-".into(),
        Ok(other) => other.to_string(),
    }
}

/// Milliseconds as seconds with one decimal, `-` for none.
fn seconds(ms: Option<u64>) -> String {
    ms.map(|ms| format!("{:.1} s", ms as f64 / 1000.0))
        .unwrap_or_else(|| "-".into())
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
