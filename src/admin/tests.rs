//! The answers the server writes read back into the same types (the CLI reads them so): the
//! JSON of a status and of a history with every kind of entry survives a round trip unchanged.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{json, Value};

use super::*;
use crate::config::TargetKind;
use crate::consensus::reports::ReportAge;
use crate::consensus::{ClusterStatus, LeaseStatus, Member, MemberStatus, SilentSince};
use crate::desired::{
    Action, Attempt, CheckScope, Decision, DrillCheck, DrillRegion, DrillReport, FailoverRecord,
    Guard, HistoryEntry, LiveDrill, LiveDrillRecord, Milestone, MovedBy, Outcome, Promotion,
    Refusal, SlotMove, Step, StepRecord, StepState, Trigger,
};
use crate::failover::candidate::{Choice, Evidence};
use crate::failover::heal;
use crate::failover::inputs;
use crate::health::{Change, LastResult, State};
use crate::probe::postgres::RewindSettings;
use crate::probe::postgres::{PgRole, ReplicationLink, WalReceiver};
use crate::probe::redis::{RedisReplica, RedisRole};
use crate::probe::{Facts, HttpFacts, Lsn, Observation, PostgresFacts, RedisFacts};
use crate::topology::TargetId;
use crate::verdict::{TargetVerdict, Verdict};

/// Serializes `value`, reads the JSON back as `T` and serializes that: both JSON must be equal.
fn assert_round_trip<T: Serialize + DeserializeOwned>(value: &T) -> Value {
    let written = serde_json::to_value(value).expect("serializes");
    let read: T = serde_path_to_error::deserialize(&written)
        .unwrap_or_else(|e| panic!("the server's answer does not read back: {e}"));
    assert_eq!(serde_json::to_value(&read).expect("serializes"), written);
    written
}

fn id(kind: TargetKind, group: &str, name: &str) -> TargetId {
    TargetId::new(kind, group, name)
}

/// 2026-01-02T03:04:05.678Z.
fn at() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_millis(1_767_323_045_678)
}

fn targets() -> Vec<TargetView> {
    let view = |kind, name: &str, region: &str, state, last| TargetView {
        id: id(kind, region, name),
        kind,
        region: region.into(),
        state,
        successes: 3,
        failures: 0,
        probes: 42,
        last_probe_at: Some(at()),
        last,
        last_change: Some(Change {
            from: State::Unknown,
            to: state,
            at: at(),
            reason: "3 successes".into(),
        }),
    };
    let ok = |facts| {
        Some(LastResult::Ok {
            observation: Box::new(Observation {
                latency: Duration::from_micros(12_500),
                facts,
            }),
        })
    };
    vec![
        view(
            TargetKind::Http,
            "api",
            "eu-west-3",
            State::Up,
            ok(Facts::Http(HttpFacts {
                status: 200,
                body_bytes: 17,
            })),
        ),
        view(
            TargetKind::Postgres,
            "pg-a",
            "main",
            State::Up,
            ok(Facts::Postgres(PostgresFacts {
                role: PgRole::Replica,
                timeline: Some(3),
                current_lsn: None,
                receive_lsn: Lsn::parse("16/B374D848"),
                replay_lsn: Lsn::parse("16/B374D000"),
                replay_lag_bytes: Some(2120),
                replay_lag_seconds: Some(0.25),
                replay_paused: Some(false),
                wal_receiver: Some(WalReceiver {
                    status: "streaming".into(),
                    received_tli: Some(3),
                    flushed_lsn: Lsn::parse("16/B374D848"),
                    last_msg_age_seconds: Some(0.5),
                    sender_host: Some("pg-b".into()),
                    sender_port: Some(5432),
                }),
                acks: None,
                replicas: vec![ReplicationLink {
                    application_name: "pg-c".into(),
                    client_addr: Some("10.0.0.3".into()),
                    state: Some("streaming".into()),
                    sync_state: Some("async".into()),
                    sent_lsn: Lsn::parse("16/B374D848"),
                    replay_lsn: Lsn::parse("16/B374D848"),
                    lag_bytes: Some(0),
                    replay_lag_seconds: None,
                }],
                slot_name: Some("pg_a".into()),
                slots: vec![],
                rewind: Some(RewindSettings {
                    wal_log_hints: true,
                    data_checksums: false,
                    full_page_writes: true,
                }),
            })),
        ),
        view(
            TargetKind::Redis,
            "r-a",
            "sessions",
            State::Up,
            ok(Facts::Redis(RedisFacts {
                acks: None,
                role: RedisRole::Master,
                master_host: None,
                master_port: None,
                master_link_up: None,
                master_link_down_seconds: None,
                repl_offset: 981,
                connected_replicas: 1,
                replicas: vec![RedisReplica {
                    addr: "10.0.0.4:6379".into(),
                    state: "online".into(),
                    offset: 980,
                    lag_bytes: 1,
                }],
                cluster: None,
            })),
        ),
        view(
            TargetKind::Http,
            "api",
            "us-east-1",
            State::Down,
            Some(LastResult::Error {
                error: "connection refused".into(),
                timeout: false,
            }),
        ),
    ]
}

fn decision() -> Decision {
    let pg = |name| id(TargetKind::Postgres, "main", name);
    Decision {
        trigger: Trigger::RegionDown {
            region: "us-east-1".into(),
        },
        decided_by: "eu-west-3-a".into(),
        decided_at_ms: 1_000,
        first_seen_ms: 900,
        drain: vec!["us-east-1".into()],
        restore: vec![],
        promotion: Some(Promotion {
            group: "postgres/main".into(),
            from: pg("pg-c"),
            to: pg("pg-a"),
            estimated_loss_bytes: 0,
            evidence: "replica received 16/B374D848".into(),
            old_primary_cut_off: true,
            self_fencing: None,
            exposed: None,
            forced: false,
            planned: false,
        }),
        redis: vec![],
        refusal: None,
        steps: vec![
            Step {
                id: "promote:postgres/main/pg-a".into(),
                action: Action::PromotePostgres { target: pg("pg-a") },
                after: vec![],
            },
            Step {
                id: "route53".into(),
                action: Action::Route53 {
                    weights: BTreeMap::from([("eu-west-3".into(), 100), ("us-east-1".into(), 0)]),
                    writers: vec![],
                },
                after: vec!["promote:postgres/main/pg-a".into()],
            },
        ],
        drill: None,
        homeward: Default::default(),
    }
}

fn failover_record(outcome: Option<Outcome>) -> FailoverRecord {
    let decision = decision();
    FailoverRecord {
        epoch: 12,
        steps: decision
            .steps
            .iter()
            .map(|step| StepRecord {
                step: step.clone(),
                state: StepState::Succeeded,
                attempts: vec![Attempt {
                    agent: "eu-west-3-a".into(),
                    number: 1,
                    started_ms: 1_010,
                    previous_error: None,
                }],
                finished_ms: Some(1_500),
                detail: Some("done".into()),
                replaced_min_replicas: None,
                fence: None,
            })
            .collect(),
        decision,
        outcome,
        finished_ms: outcome.map(|_| 1_600),
        duration_ms: outcome.map(|_| 700),
    }
}

fn live_drill() -> LiveDrill {
    LiveDrill {
        region: "eu-central-1".into(),
        actor: "ops".into(),
        reason: "quarterly drill".into(),
        hold_ms: 30_000,
        started_ms: 2_000,
        drain_epoch: 14,
        restore_epoch: None,
    }
}

fn status() -> StatusResponse {
    let agents = ["eu-west-3-a", "eu-central-1-a", "us-east-1-a"];
    let api = |region| id(TargetKind::Http, region, "api");
    StatusResponse {
        agent: AgentInfo {
            id: "eu-west-3-a".into(),
            region: "eu-west-3".into(),
            version: env!("CARGO_PKG_VERSION").into(),
        },
        ready: true,
        summary: Summary {
            up: 3,
            down: 1,
            unknown: 0,
        },
        targets: targets(),
        cluster: ClusterSection {
            consensus: ClusterStatus {
                agent: "eu-west-3-a".into(),
                node_id: 7,
                state: "leader".into(),
                leader: Some("eu-west-3-a".into()),
                term: 4,
                last_log_index: Some(15),
                last_applied_index: Some(15),
                millis_since_quorum_ack: Some(40),
                quorum: 2,
                members: agents
                    .iter()
                    .zip(1..)
                    .map(|(agent, node_id)| MemberStatus {
                        member: Member {
                            agent: (*agent).into(),
                            node_id,
                            region: agent.trim_end_matches("-a").into(),
                            peer_url: Some(format!("https://{agent}:7071")),
                        },
                        report: Some(ReportAge {
                            agent: (*agent).into(),
                            age_ms: Some(180),
                            seq: Some(99),
                        }),
                        lease_expired: Some(false),
                        silent_ms: Some(180),
                        silent_since: Some(SilentSince::Contacts),
                    })
                    .collect(),
                verdict: Some(Verdict {
                    quorum: 2,
                    targets: BTreeMap::from([
                        (
                            api("eu-west-3"),
                            TargetVerdict {
                                state: State::Up,
                                up: agents.iter().map(|a| (*a).into()).collect(),
                                down: vec![],
                                unknown: vec![],
                            },
                        ),
                        (
                            api("us-east-1"),
                            TargetVerdict {
                                state: State::Down,
                                up: vec!["us-east-1-a".into()],
                                down: vec!["eu-west-3-a".into(), "eu-central-1-a".into()],
                                unknown: vec![],
                            },
                        ),
                    ]),
                    regions: BTreeMap::from([
                        ("eu-west-3".into(), State::Up),
                        ("us-east-1".into(), State::Down),
                    ]),
                }),
                lease: LeaseStatus {
                    valid: true,
                    since_leader_contact_ms: Some(40),
                    ttl_ms: 3_000,
                },
                primaries: BTreeMap::from([(
                    "postgres/main".into(),
                    id(TargetKind::Postgres, "main", "pg-c"),
                )]),
                primary_rules: BTreeMap::from([(
                    id(TargetKind::Postgres, "main", "pg-c"),
                    crate::datastore::acks::Acks::postgres("ANY 1 (pg-a, pg-b)", "on", 2),
                )]),
            },
            failover_readiness: BTreeMap::from([
                (
                    "postgres/main".into(),
                    inputs::Readiness {
                        if_region_fails: "us-east-1".into(),
                        choice: Choice::Promote {
                            target: id(TargetKind::Postgres, "main", "pg-a"),
                            estimated_loss_bytes: 0,
                            evidence: Evidence::ReplicaReceived {
                                target: id(TargetKind::Postgres, "main", "pg-a"),
                                lsn: "16/B374D848".into(),
                            },
                            measured_from: "postgres/main/pg-a received 16/B374D848".into(),
                        },
                        fences_itself: true,
                        if_partitioned: "pg-c needs 1 replica acknowledgement(s) per write and \
                                         none can still give one"
                            .into(),
                    },
                ),
                (
                    "postgres/billing".into(),
                    inputs::Readiness {
                        if_region_fails: "eu-west-3".into(),
                        choice: Choice::Blocked {
                            reason: "no healthy replica".into(),
                            guard: Guard::NoCandidate,
                        },
                        fences_itself: false,
                        if_partitioned: "pg-x acknowledges a write without any replica".into(),
                    },
                ),
            ]),
            redundancy: BTreeMap::from([(
                "postgres/main".into(),
                heal::Group {
                    group: "postgres/main".into(),
                    primary: id(TargetKind::Postgres, "main", "pg-c"),
                    replicas: 2,
                    streaming: 1,
                    members: vec![
                        heal::Member {
                            member: id(TargetKind::Postgres, "main", "pg-c"),
                            region: "us-east-1".into(),
                            role: heal::Role::Primary,
                            state: heal::MemberState::Serving,
                            timeline: Some(3),
                            lag_bytes: None,
                            slot: None,
                            why: None,
                            healing: None,
                        },
                        heal::Member {
                            member: id(TargetKind::Postgres, "main", "pg-a"),
                            region: "eu-west-3".into(),
                            role: heal::Role::Replica,
                            state: heal::MemberState::NotStreaming,
                            timeline: Some(2),
                            lag_bytes: Some(2_120),
                            slot: Some("pg_a".into()),
                            why: Some("streams timeline 2, the primary is on 3".into()),
                            healing: Some(heal::Healing {
                                since_ms: 4_000,
                                attempts: 2,
                                last_error: Some("replica not streaming".into()),
                            }),
                        },
                        heal::Member {
                            member: id(TargetKind::Postgres, "main", "pg-b"),
                            region: "eu-central-1".into(),
                            role: heal::Role::Replica,
                            state: heal::MemberState::Streaming,
                            timeline: Some(3),
                            lag_bytes: Some(0),
                            slot: Some("pg_b".into()),
                            why: None,
                            healing: None,
                        },
                    ],
                },
            )]),
        },
        failover: FailoverStatus {
            mode: "active".into(),
            epoch: 14,
            drained: vec!["us-east-1".into()],
            weights: BTreeMap::from([("eu-west-3".into(), 100), ("us-east-1".into(), 0)]),
            dns_epoch: Some(12),
            cooldown_until_ms: 5_000,
            slot_owners: BTreeMap::from([(
                "redis/cache".into(),
                BTreeMap::from([("0-8191".into(), id(TargetKind::Redis, "cache", "r-a"))]),
            )]),
            in_progress: vec![failover_record(None)],
            live_drill: Some(live_drill()),
            waiting: vec!["live drill of eu-central-1: waiting for failover 12".into()],
            refusals: vec!["postgres/billing: blocked because no healthy replica".into()],
        },
    }
}

fn history() -> HistoryResponse {
    let drill = DrillReport {
        actor: "ops".into(),
        reason: "before the release".into(),
        at_ms: 3_000,
        run_by: "eu-west-3-a".into(),
        ready: false,
        regions: vec![DrillRegion {
            region: "eu-west-3".into(),
            ready: false,
            checks: vec![DrillCheck {
                check: "postgres/main".into(),
                ok: false,
                detail: "blocked because no healthy replica".into(),
                scope: CheckScope::Any,
            }],
        }],
    };
    HistoryResponse {
        epoch: 14,
        entries: vec![
            HistoryEntry::LiveDrill(Box::new(LiveDrillRecord {
                drill: LiveDrill {
                    restore_epoch: Some(15),
                    ..live_drill()
                },
                outcome: Outcome::Completed,
                finished_ms: 40_000,
                milestones: vec![Milestone {
                    name: "drained".into(),
                    at_ms: 4_000,
                    after_ms: 2_000,
                }],
                detail: "failed over and back".into(),
            })),
            HistoryEntry::Drill(Box::new(drill)),
            HistoryEntry::Mode {
                paused: true,
                by: "ops".into(),
                at_ms: 2_500,
                reason: "maintenance".into(),
            },
            HistoryEntry::SlotsMoved(SlotMove {
                cluster: "redis/cache".into(),
                slots: vec!["0-8191".into()],
                from: id(TargetKind::Redis, "cache", "r-b"),
                to: id(TargetKind::Redis, "cache", "r-a"),
                by: MovedBy::RedisCluster,
                epoch: None,
                at_ms: 2_000,
            }),
            HistoryEntry::Refusal(Refusal {
                subject: "us-east-1".into(),
                guard: Guard::LastRegion,
                reason: "blocked because it is the last region in DNS".into(),
                at_ms: 1_800,
                by: "eu-west-3-a".into(),
            }),
            HistoryEntry::Failover(Box::new(failover_record(Some(Outcome::Completed)))),
        ],
    }
}

#[test]
fn a_status_reads_back_as_it_was_written() {
    let written = assert_round_trip(&status());
    // The custom encodings: times, a latency, WAL positions, the flattened member.
    let pg = &written["targets"][1];
    assert_eq!(pg["last_probe_at"], "2026-01-02T03:04:05.678Z");
    assert_eq!(pg["last"]["observation"]["latency_ms"], 12.5);
    assert_eq!(
        pg["last"]["observation"]["facts"]["receive_lsn"],
        "16/B374D848"
    );
    assert_eq!(written["cluster"]["members"][0]["agent"], "eu-west-3-a");
    assert_eq!(written["cluster"]["term"], 4);
}

#[test]
fn a_history_with_every_kind_of_entry_reads_back_as_it_was_written() {
    let written = assert_round_trip(&history());
    let kinds: Vec<&str> = written["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .filter_map(|e| e["type"].as_str())
        .collect();
    assert_eq!(
        kinds,
        [
            "live_drill",
            "drill",
            "mode",
            "slots_moved",
            "refusal",
            "failover"
        ]
    );
}

#[test]
fn a_failover_a_reply_and_the_small_answers_read_back_as_they_were_written() {
    assert_round_trip(&failover_record(Some(Outcome::Failed)));
    assert_round_trip(&crate::api::Reply {
        epoch: Some(12),
        dry_run: true,
        mode: "active".into(),
        decision: Some(decision()),
        drill: None,
        message: "planned".into(),
    });
    assert_round_trip(&GateResponse {
        region: "us-east-1".into(),
        in_service: false,
        reasons: vec!["region us-east-1 is drained".into()],
    });
    assert_round_trip(&Liveness {
        status: "ok".into(),
    });
    assert_round_trip(&Readiness {
        ready: true,
        probed: 4,
        targets: 4,
    });
    assert_round_trip(&ErrorBody {
        code: "not_found".into(),
        message: "no such endpoint: /v2".into(),
    });
}

#[test]
fn a_status_without_the_fields_the_cli_does_not_show_still_reads() {
    let trimmed = json!({
        "agent": { "id": "a", "region": "eu-west-3" },
        "targets": [{ "id": "http/eu-west-3/api", "state": "up" }],
        "cluster": { "state": "follower", "leader": null, "term": 1, "lease": { "valid": true } },
        "failover": {
            "mode": "active", "epoch": 0, "drained": [], "weights": {},
            "waiting": [], "refusals": [],
        },
    });
    let status: StatusResponse = serde_json::from_value(trimmed).expect("reads");
    assert_eq!(status.targets[0].state, State::Up);
    assert!(status.cluster.consensus.verdict.is_none());
    // A field the CLI shows is not made up.
    let without_mode = json!({ "agent": { "id": "a", "region": "r" } });
    assert!(serde_json::from_value::<StatusResponse>(without_mode).is_err());
}
