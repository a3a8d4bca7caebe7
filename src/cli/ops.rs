//! The replies to the calls that change something (pause, resume, drain, restore, failover,
//! drills), and a live drill followed until the history records its end.

use std::process::ExitCode;
use std::time::Duration;

use failoverd::admin::{FailoverStatus, HistoryResponse, StatusResponse};
use failoverd::api::Reply;
use failoverd::desired::{CheckScope, HistoryEntry, Outcome};
use serde_json::Value;

use super::{call, decode, error_parts, history, table, Target, EXIT_NOT_READY};

/// Prints what the leader did, with the planned steps.
pub(super) fn print_reply(r: &Reply) {
    outln!("{}", r.message);
    if let Some(decision) = &r.decision {
        let rows: Vec<Vec<String>> = decision
            .steps
            .iter()
            .map(|s| {
                vec![
                    s.id.clone(),
                    if s.after.is_empty() {
                        "-".into()
                    } else {
                        s.after.join(", ")
                    },
                ]
            })
            .collect();
        if !rows.is_empty() {
            outln!();
            table(&["STEP", "AFTER"], &rows);
        }
    }
    if let Some(epoch) = r.epoch {
        outln!("\nfollow it: failoverd history, or GET /v1/failovers/{epoch}");
    }
}

/// Prints a readiness drill's checks, region by region.
pub(super) fn print_drill(r: &Reply) {
    outln!("{}", r.message);
    let rows: Vec<Vec<String>> = r
        .drill
        .iter()
        .flat_map(|drill| &drill.regions)
        .flat_map(|region| {
            region.checks.iter().map(|c| {
                vec![
                    region.region.clone(),
                    c.check.clone(),
                    match (c.ok, c.scope) {
                        (true, _) => "ok",
                        (false, CheckScope::Afterwards) => "WARN",
                        (false, _) => "BLOCKED",
                    }
                    .into(),
                    c.detail.clone(),
                ]
            })
        })
        .collect();
    outln!();
    table(&["REGION", "CHECK", "RESULT", "DETAIL"], &rows);
}

/// Follows the live drill whose drain is failover `epoch` until it is in the history, saying
/// each phase as it begins; prints its milestones. 0 when it completed, 4 when it failed.
pub(super) async fn follow_live_drill(
    target: &Target,
    epoch: u64,
    hold: u32,
) -> anyhow::Result<ExitCode> {
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
                eprintln!("... the agent answered {status}: {}", error_parts(&body).1);
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
            Err(e) => {
                eprintln!("... {e:#}");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let entries = match decode::<HistoryResponse>(&history) {
            Ok(h) => h.entries,
            Err(e) => {
                say(&mut said, format!("{e:#}"));
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let ended = entries
            .iter()
            .enumerate()
            .find_map(|(i, entry)| match entry {
                HistoryEntry::LiveDrill(record) if record.drill.drain_epoch == epoch => {
                    Some((i, record))
                }
                _ => None,
            });
        if let Some((i, record)) = ended {
            if target.json {
                // The entry as the agent wrote it.
                let raw = history.get("entries").and_then(|e| e.get(i));
                outln!(
                    "{}",
                    serde_json::to_string_pretty(raw.unwrap_or(&Value::Null))?
                );
            } else {
                history::print_live_drill(record);
            }
            return Ok(ExitCode::from(if record.outcome == Outcome::Completed {
                0
            } else {
                EXIT_NOT_READY
            }));
        }
        let Ok((200, status)) = call(target, "GET", "/v1/status", None).await else {
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        };
        match decode::<StatusResponse>(&status) {
            Ok(status) if !target.json => say(&mut said, phase(&status.failover, epoch, hold)),
            Ok(_) => {}
            Err(e) => say(&mut said, format!("{e:#}")),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// The phase of the live drill whose drain is failover `epoch`, as the status shows it.
fn phase(failover: &FailoverStatus, epoch: u64, hold: u32) -> String {
    let waiting: Vec<&str> = failover
        .waiting
        .iter()
        .map(String::as_str)
        .filter(|w| w.starts_with("live drill"))
        .collect();
    let Some(drill) = &failover.live_drill else {
        return "ending".to_owned();
    };
    match drill.restore_epoch {
        None if !waiting.is_empty() => waiting.join("; "),
        Some(restore) => format!("restoring {} (failover {restore})", drill.region),
        None if failover.in_progress.iter().any(|f| f.epoch == epoch) => {
            format!("draining {} (failover {epoch})", drill.region)
        }
        None => format!("{} drained: holding it out for {hold} s", drill.region),
    }
}

/// Says `what` on standard error unless it is what was said last.
fn say(said: &mut String, what: String) {
    if *said != what {
        eprintln!("... {what}");
        *said = what;
    }
}
