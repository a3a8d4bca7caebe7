//! `failoverd status`: the agent's line, the regions with their verdict, weight and place in
//! DNS, every target with this agent's view and the verdict with the votes behind it, and
//! (from the leader) each Postgres group's members against its primary.

use failoverd::admin::page::verdict_text;
use failoverd::admin::StatusResponse;
use failoverd::topology::TargetId;

use super::{label, table};

/// Prints a status answer.
pub(super) fn print(s: &StatusResponse) {
    let cluster = &s.cluster.consensus;
    let failover = &s.failover;
    outln!(
        "agent {} ({}) · {} · leader {} · term {} · mode {} · epoch {} · lease {}",
        s.agent.id,
        s.agent.region,
        cluster.state.to_lowercase(),
        label(&cluster.leader),
        cluster.term,
        failover.mode,
        failover.epoch,
        if cluster.lease.valid { "held" } else { "LOST" }
    );
    let verdict = cluster.verdict.as_ref();
    let regions: Vec<Vec<String>> = verdict
        .into_iter()
        .flat_map(|v| &v.regions)
        .map(|(region, state)| {
            vec![
                region.clone(),
                label(state),
                failover
                    .weights
                    .get(region)
                    .map(u32::to_string)
                    .unwrap_or_else(|| "configured".into()),
                if failover.drained.contains(region) {
                    "drained"
                } else {
                    "yes"
                }
                .into(),
            ]
        })
        .collect();
    if !regions.is_empty() {
        outln!();
        table(&["REGION", "VERDICT", "WEIGHT", "IN DNS"], &regions);
    }
    // Every target of the verdict (the leader's, with every agent's votes), else this
    // agent's own.
    let mut ids: Vec<&TargetId> = verdict.into_iter().flat_map(|v| v.targets.keys()).collect();
    for t in &s.targets {
        if !ids.contains(&&t.id) {
            ids.push(&t.id);
        }
    }
    let quorum = verdict.map_or(0, |v| v.quorum);
    let rows: Vec<Vec<String>> = ids
        .into_iter()
        .map(|id| {
            let here = s
                .targets
                .iter()
                .find(|t| &t.id == id)
                .map_or_else(|| "-".into(), |t| label(&t.state));
            let votes = verdict.and_then(|v| v.targets.get(id));
            let (up, down) = votes
                .map(|v| (v.up.join(","), v.down.join(",")))
                .unwrap_or_default();
            vec![
                id.to_string(),
                here,
                votes.map_or_else(|| "-".into(), |v| verdict_text(id.as_str(), v, quorum)),
                up,
                down,
            ]
        })
        .collect();
    outln!();
    table(&["TARGET", "HERE", "VERDICT", "UP BY", "DOWN BY"], &rows);
    for g in s.cluster.redundancy.values() {
        outln!();
        outln!(
            "{}: {} of {} replicas streaming from {}",
            g.group,
            g.streaming,
            g.replicas,
            g.primary
        );
        let rows: Vec<Vec<String>> = g
            .members
            .iter()
            .map(|m| {
                let note = match (&m.why, &m.healing) {
                    (Some(why), Some(h)) => format!(
                        "{why}; repointed {} time(s){}",
                        h.attempts,
                        h.last_error
                            .as_ref()
                            .map(|e| format!(", last: {e}"))
                            .unwrap_or_default()
                    ),
                    (Some(why), None) => why.clone(),
                    _ => String::new(),
                };
                vec![
                    m.member
                        .as_str()
                        .rsplit('/')
                        .next()
                        .unwrap_or_default()
                        .to_owned(),
                    m.region.clone(),
                    label(&m.role),
                    label(&m.state),
                    m.timeline.map_or_else(|| "-".into(), |t| t.to_string()),
                    m.lag_bytes.map_or_else(|| "-".into(), |b| b.to_string()),
                    m.slot.clone().unwrap_or_else(|| "-".into()),
                    note,
                ]
            })
            .collect();
        table(
            &[
                "MEMBER",
                "REGION",
                "ROLE",
                "STATE",
                "TL",
                "LAG BYTES",
                "SLOT",
                "NOTE",
            ],
            &rows,
        );
    }
    for line in &failover.waiting {
        outln!("waiting: {line}");
    }
    for line in &failover.refusals {
        outln!("refusals: {line}");
    }
}
