//! `failoverd history`: one row per failover, refusal, slot move, drill and mode change,
//! newest first; and a live drill's record with its milestones.

use failoverd::admin::HistoryResponse;
use failoverd::desired::{HistoryEntry, LiveDrillRecord, Trigger};

use super::{label, seconds, table};

/// Prints a history answer.
pub(super) fn print(h: &HistoryResponse) {
    let rows: Vec<Vec<String>> = h.entries.iter().map(row).collect();
    table(&["EPOCH", "TYPE", "WHAT", "OUTCOME", "TOOK"], &rows);
}

/// EPOCH, TYPE, WHAT, OUTCOME and TOOK of one entry.
fn row(entry: &HistoryEntry) -> Vec<String> {
    match entry {
        HistoryEntry::Failover(f) => vec![
            f.epoch.to_string(),
            "failover".into(),
            describe_trigger(&f.decision.trigger),
            label(&f.outcome),
            seconds(f.duration_ms),
        ],
        HistoryEntry::Refusal(r) => vec![
            "".into(),
            "refusal".into(),
            r.reason.clone(),
            r.guard.to_string(),
            "".into(),
        ],
        HistoryEntry::SlotsMoved(m) => vec![
            label(&m.epoch),
            "slots".into(),
            format!("{} {} -> {}", m.slots.join(","), m.from, m.to),
            format!("by {}", label(&m.by)),
            "".into(),
        ],
        HistoryEntry::LiveDrill(d) => vec![
            d.drill.drain_epoch.to_string(),
            "live drill".into(),
            format!(
                "{} by {}: {}",
                d.drill.region, d.drill.actor, d.drill.reason
            ),
            label(&d.outcome),
            seconds(d.milestones.last().map(|m| m.after_ms)),
        ],
        HistoryEntry::Drill(d) => vec![
            "".into(),
            "drill".into(),
            format!("readiness, by {}: {}", d.actor, d.reason),
            if d.ready { "ready" } else { "BLOCKED" }.into(),
            "".into(),
        ],
        HistoryEntry::Mode {
            paused, by, reason, ..
        } => vec![
            "".into(),
            if *paused { "pause" } else { "resume" }.into(),
            format!("by {by}: {reason}"),
            "".into(),
            "".into(),
        ],
    }
}

fn describe_trigger(t: &Trigger) -> String {
    match t {
        Trigger::Manual {
            action,
            region,
            actor,
            reason,
        } => format!("{action} {region} by {actor}: {reason}"),
        Trigger::RegionDown { region } => format!("region {region} down"),
        Trigger::PrimaryDown { target, .. } => format!("primary {target} lost"),
        Trigger::ReturnHome { member, .. } => format!("return home to {member}"),
        Trigger::Failback { .. } | Trigger::DnsRepair => t.label().to_owned(),
    }
}

/// Prints a live drill that ended, with the time to each milestone.
pub(super) fn print_live_drill(r: &LiveDrillRecord) {
    outln!(
        "live drill of {}: {} - {}",
        r.drill.region,
        label(&r.outcome),
        r.detail
    );
    let rows: Vec<Vec<String>> = r
        .milestones
        .iter()
        .map(|m| {
            vec![
                format!("+{:.1} s", m.after_ms as f64 / 1000.0),
                m.name.clone(),
            ]
        })
        .collect();
    outln!();
    table(&["AFTER", "MILESTONE"], &rows);
}
