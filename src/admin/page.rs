//! The status page at `GET /`: one server-rendered HTML page, no scripts, that refreshes
//! itself every 5 s. A region × target matrix with each agent's vote and the verdict with the
//! votes that decided it ([`verdict_text`], which `failoverd status` shows too; a follower asks
//! the leader for the verdict; without a leader it shows its own view), the leader, the mode,
//! and the last failovers. Readable on a phone.

use std::fmt::Write as _;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;

use super::AdminState;
use crate::desired::{HistoryEntry, Outcome};
use crate::health::State as Health;
use crate::verdict::TargetVerdict;

/// Escapes text for HTML.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The state a target is shown in: its quorum verdict, except for a datastore member that
/// only the agents of its own region probe. Those agents' agreement is what the failover
/// engine acts on for a member (a replica is a candidate when reported Up and Down by no one;
/// a primary is lost when its own agents say Down), so a member they all see Up is shown Up,
/// not Unknown for want of a quorum it can never have.
pub fn shown_state(id: &str, v: &TargetVerdict) -> Health {
    let datastore = id.starts_with("postgres/") || id.starts_with("redis/");
    match (v.state, v.up.len(), v.down.len()) {
        (Health::Unknown, up, 0) if datastore && up > 0 => Health::Up,
        (Health::Unknown, 0, down) if datastore && down > 0 => Health::Down,
        (state, ..) => state,
    }
}

/// A target's verdict with the votes that decided it, as the status page and `failoverd
/// status` show it. Only fresh Up and Down votes count (see [`crate::verdict`]): in
/// `up (3 of 3)` or `down (2 of 3)`, n of the m agents with such a vote voted that way. A
/// datastore member that only its own region's agent probes is `up (1 of 1)` when that agent
/// sees it Up (see [`shown_state`]). Any other Unknown verdict shows the votes that fell short
/// of the quorum.
pub fn verdict_text(id: &str, v: &TargetVerdict, quorum: usize) -> String {
    let (up, down) = (v.up.len(), v.down.len());
    let voting = up + down;
    match shown_state(id, v) {
        Health::Up => format!("up ({up} of {voting})"),
        Health::Down => format!("down ({down} of {voting})"),
        Health::Unknown if voting == 0 => "unknown (no votes)".to_owned(),
        Health::Unknown if down == 0 => format!("unknown ({up} of {voting} up, quorum {quorum})"),
        Health::Unknown if up == 0 => {
            format!("unknown ({down} of {voting} down, quorum {quorum})")
        }
        Health::Unknown => format!("unknown ({up} up, {down} down, quorum {quorum})"),
    }
}

/// A cell: its class (for the colour) and its text.
fn cell(state: Option<Health>) -> (&'static str, &'static str) {
    match state {
        Some(Health::Up) => ("up", "up"),
        Some(Health::Down) => ("down", "DOWN"),
        Some(Health::Unknown) => ("unknown", "?"),
        None => ("none", "·"),
    }
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:1em;color:#222}\
table{border-collapse:collapse;margin:.5em 0;font-size:.9em}\
th,td{border:1px solid #ccc;padding:.25em .5em;text-align:left}\
td.up{background:#d7f5dd}td.down{background:#f8c9c9;font-weight:bold}\
td.unknown{background:#eee}td.none{color:#999}\
.paused{background:#ffe08a;padding:.1em .4em}.region{background:#f4f4f4}\
@media (max-width:600px){body{margin:.3em}th,td{padding:.2em}}";

/// `GET /`.
pub async fn page(State(state): State<AdminState>) -> impl IntoResponse {
    let mut cluster = state.consensus.status();
    if cluster.verdict.is_none() {
        cluster.verdict = state.consensus.leader_verdict().await;
    }
    let views = state.board.views();
    let (paused, epoch, drained, weights, history) = state.consensus.read_desired(|d| {
        (
            d.paused,
            d.epoch,
            d.drained.iter().cloned().collect::<Vec<_>>(),
            d.weights.clone(),
            d.history.iter().rev().take(10).cloned().collect::<Vec<_>>(),
        )
    });
    let mut html = String::new();
    let _ = write!(
        html,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <meta http-equiv=\"refresh\" content=\"5\">\
         <title>failoverd — {agent}</title><style>{STYLE}</style></head><body>\
         <h1>failoverd</h1><p>agent <b id=\"agent\">{agent}</b> ({region}), role {role} · leader \
         <b id=\"leader\">{leader}</b> · term {term} · mode <span id=\"mode\" class=\"{mode}\">{mode}</span> \
         · epoch {epoch} · lease {lease}</p>",
        agent = escape(&state.agent_id),
        region = escape(&state.region),
        role = escape(&cluster.state.to_lowercase()),
        leader = escape(cluster.leader.as_deref().unwrap_or("none")),
        term = cluster.term,
        mode = if paused { "paused" } else { "active" },
        lease = if cluster.lease.valid { "held" } else { "LOST" },
    );
    let _ = write!(html, "<h2>Regions</h2><table id=\"regions\"><tr><th>region</th><th>verdict</th><th>weight</th><th>in DNS</th></tr>");
    for region in &state.regions {
        let verdict = cluster
            .verdict
            .as_ref()
            .and_then(|v| v.regions.get(region).copied());
        let (class, text) = cell(verdict);
        let weight = weights
            .get(region)
            .map(u32::to_string)
            .unwrap_or_else(|| "configured".into());
        let _ = write!(
            html,
            "<tr><td>{}</td><td class=\"{class}\">{text}</td><td>{}</td><td>{}</td></tr>",
            escape(region),
            escape(&weight),
            if drained.contains(region) {
                "drained"
            } else {
                "yes"
            }
        );
    }
    html.push_str("</table>");

    // The matrix: a row per target, grouped by region; a column per agent, then the verdict.
    let agents: Vec<&str> = cluster
        .members
        .iter()
        .map(|m| m.member.agent.as_str())
        .collect();
    let _ = write!(
        html,
        "<h2>Targets</h2><table id=\"matrix\"><tr><th>target</th>"
    );
    for agent in &agents {
        let _ = write!(html, "<th>{}</th>", escape(agent));
    }
    html.push_str("<th>verdict</th></tr>");
    if cluster.verdict.is_none() {
        let _ = write!(
            html,
            "<tr><td colspan=\"{}\">No leader answered: the columns show only this agent's \
             own view.</td></tr>",
            agents.len() + 2
        );
    }
    for region in &state.regions {
        let _ = write!(
            html,
            "<tr class=\"region\"><th colspan=\"{}\">{}</th></tr>",
            agents.len() + 2,
            escape(region)
        );
        for id in state
            .targets
            .iter()
            .filter(|(_, r)| r == region)
            .map(|(id, _)| id)
        {
            let _ = write!(
                html,
                "<tr data-target=\"{0}\"><td>{0}</td>",
                escape(id.as_str())
            );
            let verdict = cluster.verdict.as_ref().and_then(|v| v.targets.get(id));
            for agent in &agents {
                let vote = match verdict {
                    Some(v) if v.up.iter().any(|a| a == agent) => Some(Health::Up),
                    Some(v) if v.down.iter().any(|a| a == agent) => Some(Health::Down),
                    Some(v) if v.unknown.iter().any(|a| a == agent) => Some(Health::Unknown),
                    Some(_) => None,
                    // A follower knows only its own view.
                    None if *agent == state.agent_id => {
                        views.iter().find(|v| &v.id == id).map(|v| v.state)
                    }
                    None => None,
                };
                let (class, text) = cell(vote);
                let _ = write!(html, "<td class=\"{class}\">{text}</td>");
            }
            let (class, text) = cell(verdict.map(|v| shown_state(id.as_str(), v)));
            let text = match (verdict, &cluster.verdict) {
                (Some(v), Some(all)) => escape(&verdict_text(id.as_str(), v, all.quorum)),
                _ => text.to_owned(),
            };
            let _ = write!(html, "<td class=\"{class} verdict\">{text}</td></tr>");
        }
    }
    html.push_str("</table>");
    if let Some(verdict) = &cluster.verdict {
        let _ = write!(
            html,
            "<p id=\"rule\">A verdict (n of m): n of the m agents with a fresh Up or Down vote \
             voted that way; Up or Down takes {} votes, except for a datastore member only its \
             own region's agents probe: their votes decide.</p>",
            verdict.quorum
        );
    }
    html.push_str("<h2>Last failovers</h2><table id=\"history\"><tr><th>epoch</th><th>what</th><th>outcome</th><th>took</th></tr>");
    for entry in &history {
        match entry {
            HistoryEntry::Failover(f) => {
                let outcome = match f.outcome {
                    Some(Outcome::Completed) => "completed",
                    Some(Outcome::Failed) => "FAILED",
                    None => "in progress",
                };
                let took = f
                    .duration_ms
                    .map(|ms| format!("{:.1} s", ms as f64 / 1000.0))
                    .unwrap_or_default();
                let what = crate::desired::describe(&f.decision);
                let _ = write!(
                    html,
                    "<tr><td>{}</td><td>{}</td><td>{outcome}</td><td>{took}</td></tr>",
                    f.epoch,
                    escape(&what)
                );
            }
            HistoryEntry::LiveDrill(d) => {
                let took = d
                    .milestones
                    .last()
                    .map(|m| format!("{:.1} s", m.after_ms as f64 / 1000.0))
                    .unwrap_or_default();
                let _ = write!(
                    html,
                    "<tr><td>{}</td><td>live drill of {} by {}: {}</td><td>{}</td><td>{took}</td></tr>",
                    d.drill.drain_epoch,
                    escape(&d.drill.region),
                    escape(&d.drill.actor),
                    escape(&d.detail),
                    match d.outcome {
                        Outcome::Completed => "completed",
                        Outcome::Failed => "FAILED",
                    },
                );
            }
            HistoryEntry::Mode {
                paused, by, reason, ..
            } => {
                let _ = write!(
                    html,
                    "<tr><td></td><td>{} by {}: {}</td><td></td><td></td></tr>",
                    if *paused { "paused" } else { "resumed" },
                    escape(by),
                    escape(reason)
                );
            }
            _ => {}
        }
    }
    html.push_str("</table><p><a href=\"/v1/status\">status JSON</a> · <a href=\"/v1/history\">history JSON</a> · <a href=\"/metrics\">metrics</a></p></body></html>");
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], html)
}

#[cfg(test)]
mod tests {
    use super::{escape, verdict_text};
    use crate::health::State::{self, Down, Unknown, Up};
    use crate::verdict::TargetVerdict;

    #[test]
    fn a_verdict_shows_the_votes_that_decided_it() {
        let agents =
            |names: &str| -> Vec<String> { names.split_whitespace().map(str::to_owned).collect() };
        let http = "http/eu/api";
        let member = "postgres/main/pg-a";
        // (target, state, up, down, unknown, shown) in a cluster of three, quorum 2.
        let cases: &[(&str, State, &str, &str, &str, &str)] = &[
            (http, Up, "a b c", "", "", "up (3 of 3)"),
            (http, Up, "a b", "", "c", "up (2 of 2)"),
            (http, Down, "c", "a b", "", "down (2 of 3)"),
            (http, Down, "", "a b c", "", "down (3 of 3)"),
            (
                http,
                Unknown,
                "b",
                "",
                "a c",
                "unknown (1 of 1 up, quorum 2)",
            ),
            (
                http,
                Unknown,
                "",
                "b",
                "a c",
                "unknown (1 of 1 down, quorum 2)",
            ),
            // A member only its own region's agent probes: that agent decides.
            (member, Unknown, "b", "", "a c", "up (1 of 1)"),
            (member, Unknown, "", "b", "a c", "down (1 of 1)"),
            (
                member,
                Unknown,
                "a",
                "b",
                "c",
                "unknown (1 up, 1 down, quorum 2)",
            ),
            (member, Unknown, "", "", "a b c", "unknown (no votes)"),
            (member, Up, "a b c", "", "", "up (3 of 3)"),
        ];
        for (id, state, up, down, unknown, shown) in cases {
            let v = TargetVerdict {
                state: *state,
                up: agents(up),
                down: agents(down),
                unknown: agents(unknown),
            };
            assert_eq!(verdict_text(id, &v, 2), *shown, "{id} {state:?}");
        }
    }

    #[test]
    fn escapes_markup() {
        assert_eq!(
            escape(r#"<a href="x">&'</a>"#),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;&lt;/a&gt;"
        );
    }
}
