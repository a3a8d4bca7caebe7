//! What the leader spends on reports and the verdict as agents and targets grow.
//!
//! Every report interval (250 ms) each agent sends the leader a report with its state of every
//! target it probes; the leader decodes and records it, and decides the verdict from the
//! latest reports (the trigger, the verdict metrics and the failover readiness each ask for
//! one). This measures, for 3, 5 and 7 agents and 10 to 1,000 targets, in the worst case where
//! every agent reports every target: the report's size, the time to encode it (agent) and to
//! decode and record it (leader), the time of one verdict, and from those the leader's CPU per
//! second as a share of one core, with the ratio to the smallest cluster (3 agents, 10
//! targets) measured in the same run.
//!
//! `cargo bench --bench scale` measures; `cargo test` runs it once with few iterations to keep
//! it working.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::{Duration, Instant};

use failoverd::config::TargetKind;
use failoverd::consensus::contact::ContactReport;
use failoverd::consensus::reports::{Report, ReportBook};
use failoverd::consensus::REPORT_INTERVAL;
use failoverd::health::State;
use failoverd::topology::TargetId;
use failoverd::verdict;

/// Verdicts the leader computes per report interval (trigger, metrics, readiness).
const VERDICTS_PER_INTERVAL: f64 = 3.0;

struct Row {
    agents: usize,
    targets: usize,
    report_bytes: usize,
    encode_us: f64,
    record_us: f64,
    verdict_us: f64,
    leader_core_pct: f64,
}

/// Mean time of `f` over `iterations` calls, in microseconds.
fn time_us(iterations: u32, mut f: impl FnMut()) -> f64 {
    let started = Instant::now();
    for _ in 0..iterations {
        f();
    }
    started.elapsed().as_secs_f64() * 1e6 / f64::from(iterations)
}

fn measure(agents: usize, targets: usize, iterations: u32) -> Row {
    let regions = ["eu-west-3", "eu-central-1", "us-east-1"];
    let ids: Vec<(TargetId, String, bool)> = (0..targets)
        .map(|i| {
            let region = regions[i % regions.len()];
            (
                TargetId::new(TargetKind::Http, region, &format!("api-{i}")),
                region.to_owned(),
                true,
            )
        })
        .collect();
    let names: Vec<String> = (0..agents).map(|a| format!("agent-{a}")).collect();
    let report = |agent: &str, seq: u64| Report {
        agent: agent.to_owned(),
        boot: 7,
        seq,
        // One target in ten Down, the rest Up.
        states: ids
            .iter()
            .enumerate()
            .map(|(i, (id, ..))| {
                (
                    id.clone(),
                    if i % 10 == 0 { State::Down } else { State::Up },
                )
            })
            .collect(),
        roles: BTreeMap::new(),
        positions: BTreeMap::new(),
        offsets: BTreeMap::new(),
        clusters: BTreeMap::new(),
        // It followed one leader and, once, led every other agent.
        contact: Some(ContactReport {
            started_ms_ago: 86_400_000,
            accepted_from_ms_ago: [(names[1 % agents].clone(), 40)].into(),
            acked_by_ms_ago: names.iter().map(|n| (n.clone(), 3_600_000)).collect(),
        }),
        log_version: failoverd::consensus::types::LOG_VERSION,
    };

    let sample = report(&names[0], 1);
    let encoded = serde_json::to_vec(&sample).expect("encode");
    let encode_us = time_us(iterations, || {
        black_box(serde_json::to_vec(black_box(&sample)).expect("encode"));
    });

    let book = ReportBook::new(names.clone());
    let mut seq = 0;
    let record_us = time_us(iterations, || {
        seq += 1;
        let decoded: Report = serde_json::from_slice(black_box(&encoded)).expect("decode");
        book.record(Report { seq, ..decoded }, Instant::now())
            .expect("record");
    });

    for name in &names {
        book.record(report(name, u64::MAX), Instant::now())
            .expect("record");
    }
    let quorum = verdict::majority(agents);
    let stale_after = Duration::from_secs(3);
    let verdict_us = time_us(iterations, || {
        let views = book.views(Instant::now());
        black_box(verdict::decide(&names, &ids, &views, quorum, stale_after));
    });

    let per_second = 1.0 / REPORT_INTERVAL.as_secs_f64();
    let leader_us_per_s =
        per_second * (agents as f64 * record_us + VERDICTS_PER_INTERVAL * verdict_us);
    Row {
        agents,
        targets,
        report_bytes: encoded.len(),
        encode_us,
        record_us,
        verdict_us,
        leader_core_pct: leader_us_per_s / 1e4,
    }
}

fn main() {
    // `cargo bench` passes --bench; `cargo test` runs this once, quickly.
    let full = std::env::args().any(|a| a == "--bench");
    let iterations = if full { 200 } else { 2 };
    let mut rows = Vec::new();
    for agents in [3, 5, 7] {
        for targets in [10, 100, 1_000] {
            if full {
                eprintln!("measuring {agents} agents x {targets} targets...");
            }
            rows.push(measure(agents, targets, iterations));
        }
    }
    let base = rows[0].leader_core_pct;
    println!(
        "\nleader cost per report interval ({} ms), every agent reporting every target, {iterations} iterations",
        REPORT_INTERVAL.as_millis()
    );
    println!(
        "| agents | targets | report bytes | encode µs | decode+record µs | verdict µs | leader % of a core | vs 3x10 |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in &rows {
        println!(
            "| {} | {} | {} | {:.1} | {:.1} | {:.1} | {:.3} | {:.0}x |",
            r.agents,
            r.targets,
            r.report_bytes,
            r.encode_us,
            r.record_us,
            r.verdict_us,
            r.leader_core_pct,
            r.leader_core_pct / base
        );
        assert!(
            r.report_bytes > r.targets * 10,
            "every target is in the report"
        );
    }
}
