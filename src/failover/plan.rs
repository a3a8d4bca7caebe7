//! The plan: from a decision's changes to steps and the order they need.
//!
//! Postgres: fence the old primary (if it can be reached), then promote the candidate, then
//! point every other reachable replica at it — the followers in parallel. Each Redis shard:
//! the same three stages, alongside Postgres and the other shards; a Redis Cluster master:
//! one takeover by its replica. Route53: one batch with
//! the new weights, which waits for nothing (draining a dead region does not depend on the
//! datastores), so it runs alongside.

use std::collections::BTreeMap;

use crate::desired::{Action, Promotion, RedisPromotion, Step, WriterRecord};
use crate::topology::TargetId;

/// What a decision changes in DNS.
#[derive(Debug, Clone, Default)]
pub struct Dns<'a> {
    /// Route53 is configured.
    pub route53: bool,
    /// Weights as last written.
    pub before: BTreeMap<String, u32>,
    /// Weights after the decision.
    pub after: BTreeMap<String, u32>,
    /// Writer records of the promoted groups.
    pub writers: &'a [WriterRecord],
}

/// The steps for `promotion` (with `followers` to repoint), the Redis promotions, and the DNS
/// change: the weights when they change, and the writer records — after the promotion of
/// their group, in the same batch.
pub fn plan(
    promotion: Option<&Promotion>,
    followers: &[TargetId],
    redis: &[RedisPromotion],
    dns: &Dns<'_>,
) -> Vec<Step> {
    let mut steps = Vec::new();
    if let Some(p) = promotion {
        let fence = format!("fence:{}", p.from);
        let promote = format!("promote:{}", p.to);
        steps.push(Step {
            id: fence.clone(),
            action: Action::FencePostgres {
                target: p.from.clone(),
            },
            after: Vec::new(),
        });
        steps.push(Step {
            id: promote.clone(),
            action: Action::PromotePostgres {
                target: p.to.clone(),
            },
            after: vec![fence],
        });
        for follower in followers.iter().filter(|f| **f != p.to && **f != p.from) {
            steps.push(Step {
                id: format!("follow:{follower}"),
                action: Action::FollowPostgres {
                    target: follower.clone(),
                    primary: p.to.clone(),
                },
                after: vec![promote.clone()],
            });
        }
    }
    for shard in redis {
        if !shard.slots.is_empty() {
            // A Redis Cluster master: its replica takes the slots over; the cluster demotes
            // the old master when it is seen again, so there is nothing to fence or repoint.
            steps.push(Step {
                id: format!("redis-takeover:{}", shard.to),
                action: Action::TakeoverRedisCluster {
                    target: shard.to.clone(),
                    master: shard.from.clone(),
                    slots: shard.slots.clone(),
                    planned: shard.planned,
                },
                after: Vec::new(),
            });
            continue;
        }
        let fence = format!("redis-fence:{}", shard.from);
        let promote = format!("redis-promote:{}", shard.to);
        steps.push(Step {
            id: fence.clone(),
            action: Action::FenceRedis {
                target: shard.from.clone(),
            },
            after: Vec::new(),
        });
        steps.push(Step {
            id: promote.clone(),
            action: Action::PromoteRedis {
                target: shard.to.clone(),
            },
            after: vec![fence],
        });
        for follower in shard
            .followers
            .iter()
            .filter(|f| **f != shard.to && **f != shard.from)
        {
            steps.push(Step {
                id: format!("redis-follow:{follower}"),
                action: Action::FollowRedis {
                    target: follower.clone(),
                    master: shard.to.clone(),
                },
                after: vec![promote.clone()],
            });
        }
    }
    if dns.route53 && (dns.before != dns.after || !dns.writers.is_empty()) {
        // Writer records name members that must be writable first.
        let after = dns
            .writers
            .iter()
            .filter_map(|w| {
                promotion
                    .filter(|p| p.group == w.group)
                    .map(|p| format!("promote:{}", p.to))
                    .or_else(|| {
                        redis
                            .iter()
                            .find(|r| r.group == w.group)
                            .map(|r| format!("redis-promote:{}", r.to))
                    })
            })
            .collect();
        steps.push(Step {
            id: "route53:weights".into(),
            action: Action::Route53 {
                weights: dns.after.clone(),
                writers: dns.writers.to_vec(),
            },
            after,
        });
    }
    steps
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::desired::{
        ready_steps, ready_steps_after, settled, unfollowed, Attempt, FailoverRecord, Outcome,
        StepRecord, StepState,
    };

    fn id(s: &str) -> TargetId {
        let name = s.rsplit('/').next().unwrap();
        TargetId::new(crate::config::TargetKind::Postgres, "main", name)
    }

    fn promotion() -> Promotion {
        Promotion {
            group: "postgres/main".into(),
            from: id("postgres/main/a"),
            to: id("postgres/main/b"),
            estimated_loss_bytes: 0,
            evidence: "replica received".into(),
            old_primary_cut_off: true,
            self_fencing: None,
            exposed: None,
            forced: false,
            planned: false,
        }
    }

    fn weights(pairs: &[(&str, u32)]) -> BTreeMap<String, u32> {
        pairs.iter().map(|(r, w)| (r.to_string(), *w)).collect()
    }

    fn record(steps: Vec<Step>, states: &[StepState]) -> FailoverRecord {
        FailoverRecord {
            epoch: 7,
            decision: crate::desired::Decision {
                trigger: crate::desired::Trigger::RegionDown {
                    region: "r1".into(),
                },
                decided_by: "a".into(),
                decided_at_ms: 0,
                first_seen_ms: 0,
                drain: vec!["r1".into()],
                restore: vec![],
                promotion: None,
                redis: vec![],
                refusal: None,
                drill: None,
                homeward: Default::default(),
                steps: steps.clone(),
            },
            steps: steps
                .into_iter()
                .zip(states)
                .map(|(step, state)| StepRecord {
                    step,
                    state: *state,
                    attempts: vec![Attempt {
                        agent: "a".into(),
                        number: 1,
                        started_ms: 0,
                        previous_error: None,
                    }],
                    finished_ms: None,
                    detail: None,
                    replaced_min_replicas: None,
                    fence: None,
                })
                .collect(),
            outcome: None,
            finished_ms: None,
            duration_ms: None,
        }
    }

    #[test]
    fn a_region_failover_fences_then_promotes_then_repoints_while_dns_runs_alongside() {
        let before = weights(&[("r1", 100), ("r2", 100), ("r3", 50)]);
        let after = weights(&[("r1", 0), ("r2", 100), ("r3", 50)]);
        let steps = plan(
            Some(&promotion()),
            &[id("postgres/main/b"), id("postgres/main/c")],
            &[],
            &Dns {
                route53: true,
                before: before.clone(),
                after: after.clone(),
                writers: &[],
            },
        );
        let shape: Vec<(&str, Vec<&str>)> = steps
            .iter()
            .map(|s| (s.id.as_str(), s.after.iter().map(String::as_str).collect()))
            .collect();
        assert_eq!(
            shape,
            vec![
                ("fence:postgres/main/a", vec![]),
                ("promote:postgres/main/b", vec!["fence:postgres/main/a"]),
                ("follow:postgres/main/c", vec!["promote:postgres/main/b"]),
                ("route53:weights", vec![]),
            ]
        );
        assert_eq!(
            steps[3].action,
            Action::Route53 {
                weights: after,
                writers: vec![]
            },
            "the batch carries every weight"
        );
    }

    #[test]
    fn a_redis_shard_fails_over_alongside_postgres_and_its_writer_record_follows() {
        let shard = RedisPromotion {
            group: "redis/sessions".into(),
            from: TargetId::new(crate::config::TargetKind::Redis, "sessions", "r1"),
            to: TargetId::new(crate::config::TargetKind::Redis, "sessions", "r2"),
            offset: 10,
            followers: vec![TargetId::new(
                crate::config::TargetKind::Redis,
                "sessions",
                "r3",
            )],
            old_master_cut_off: true,
            self_fencing: None,
            exposed: None,
            forced: false,
            slots: vec![],
            planned: false,
        };
        let w = weights(&[("r1", 100)]);
        let writers = [WriterRecord {
            group: "redis/sessions".into(),
            name: "sessions.example.com.".into(),
            record_type: "CNAME".into(),
            ttl: 30,
            value: "r2.internal.".into(),
        }];
        let dns = Dns {
            route53: true,
            before: w.clone(),
            after: w.clone(),
            writers: &writers,
        };
        let steps = plan(Some(&promotion()), &[], &[shard], &dns);
        let shape: Vec<(&str, Vec<&str>)> = steps
            .iter()
            .map(|s| (s.id.as_str(), s.after.iter().map(String::as_str).collect()))
            .collect();
        assert_eq!(
            shape,
            vec![
                ("fence:postgres/main/a", vec![]),
                ("promote:postgres/main/b", vec!["fence:postgres/main/a"]),
                ("redis-fence:redis/sessions/r1", vec![]),
                (
                    "redis-promote:redis/sessions/r2",
                    vec!["redis-fence:redis/sessions/r1"]
                ),
                (
                    "redis-follow:redis/sessions/r3",
                    vec!["redis-promote:redis/sessions/r2"]
                ),
                ("route53:weights", vec!["redis-promote:redis/sessions/r2"]),
            ]
        );
    }

    #[test]
    fn each_lost_cluster_master_is_one_takeover_alongside_the_rest() {
        let node = |n: &str| TargetId::new(crate::config::TargetKind::Redis, "cache", n);
        let takeover = |from: &str, to: &str, slots: &str| RedisPromotion {
            group: format!("redis/cache[{slots}]"),
            from: node(from),
            to: node(to),
            offset: 7,
            followers: vec![],
            old_master_cut_off: true,
            self_fencing: None,
            exposed: None,
            forced: false,
            slots: vec![slots.into()],
            planned: false,
        };
        let shards = [
            takeover("m1", "r1", "0-5460"),
            takeover("m2", "r2", "5461-10922"),
        ];
        let w = weights(&[("r1", 100), ("r2", 100)]);
        let dns = Dns {
            route53: true,
            before: w.clone(),
            after: weights(&[("r1", 0), ("r2", 100)]),
            writers: &[],
        };
        let steps = plan(Some(&promotion()), &[], &shards, &dns);
        let shape: Vec<(&str, Vec<&str>)> = steps
            .iter()
            .map(|s| (s.id.as_str(), s.after.iter().map(String::as_str).collect()))
            .collect();
        assert_eq!(
            shape,
            vec![
                ("fence:postgres/main/a", vec![]),
                ("promote:postgres/main/b", vec!["fence:postgres/main/a"]),
                ("redis-takeover:redis/cache/r1", vec![]),
                ("redis-takeover:redis/cache/r2", vec![]),
                ("route53:weights", vec![]),
            ]
        );
        assert_eq!(
            steps[3].action,
            Action::TakeoverRedisCluster {
                target: node("r2"),
                master: node("m2"),
                slots: vec!["5461-10922".into()],
                planned: false,
            }
        );
    }

    #[test]
    fn cases_without_work_plan_nothing_for_it() {
        let w = weights(&[("r1", 100), ("r2", 100)]);
        // No promotion and unchanged weights: nothing.
        let dns = |after: &BTreeMap<String, u32>, route53: bool| Dns {
            route53,
            before: w.clone(),
            after: after.clone(),
            writers: &[],
        };
        assert!(plan(None, &[], &[], &dns(&w, true)).is_empty());
        // Weights change but there is no Route53: no DNS step.
        let drained = weights(&[("r1", 0), ("r2", 100)]);
        assert!(plan(None, &[], &[], &dns(&drained, false)).is_empty());
        // A promotion only, with no other replica: fence and promote.
        let steps = plan(
            Some(&promotion()),
            &[id("postgres/main/b")],
            &[],
            &dns(&w, true),
        );
        assert_eq!(steps.len(), 2);
    }

    #[test]
    fn steps_become_ready_when_what_they_wait_for_succeeded() {
        let steps = plan(
            Some(&promotion()),
            &[id("postgres/main/c"), id("postgres/main/d")],
            &[],
            &Dns {
                route53: true,
                before: weights(&[("r1", 100)]),
                after: weights(&[("r1", 0)]),
                writers: &[],
            },
        );
        use StepState::*;
        let ids = |r: &FailoverRecord| -> Vec<String> {
            ready_steps(r).iter().map(|s| s.id.clone()).collect()
        };
        // fence, promote, follow c, follow d, route53
        let r = record(
            steps.clone(),
            &[Pending, Pending, Pending, Pending, Pending],
        );
        assert_eq!(ids(&r), ["fence:postgres/main/a", "route53:weights"]);
        let r = record(
            steps.clone(),
            &[Succeeded, Pending, Pending, Pending, Running],
        );
        assert_eq!(ids(&r), ["promote:postgres/main/b", "route53:weights"]);
        let r = record(
            steps.clone(),
            &[Succeeded, Succeeded, Pending, Pending, Succeeded],
        );
        assert_eq!(
            ids(&r),
            ["follow:postgres/main/c", "follow:postgres/main/d"],
            "followers run in parallel"
        );
        assert_eq!(settled(&r), None);
        // The fence succeeded and its end is in the log, not yet committed: the promotion may
        // start (its record commits behind that end); the fence itself is not started again.
        let r = record(
            steps.clone(),
            &[Running, Pending, Pending, Pending, Running],
        );
        let succeeding = ["fence:postgres/main/a".to_owned()].into();
        let after: Vec<&str> = ready_steps_after(&r, &succeeding)
            .iter()
            .map(|s| s.id.as_str())
            .collect();
        assert_eq!(after, ["promote:postgres/main/b", "route53:weights"]);
    }

    #[test]
    fn a_failed_step_settles_the_failover_once_the_rest_is_done() {
        let steps = plan(
            Some(&promotion()),
            &[id("postgres/main/c")],
            &[],
            &Dns {
                route53: true,
                before: weights(&[("r1", 100)]),
                after: weights(&[("r1", 0)]),
                writers: &[],
            },
        );
        use StepState::*;
        // The fence failed: promote and follow can never run; DNS still running.
        let r = record(steps.clone(), &[Failed, Pending, Pending, Running]);
        assert!(!ready_steps(&r).iter().any(|s| s.id.starts_with("promote")));
        assert_eq!(settled(&r), None, "the DNS step is still running");
        let r = record(steps.clone(), &[Failed, Pending, Pending, Succeeded]);
        assert_eq!(settled(&r), Some(Outcome::Failed));
        let r = record(steps.clone(), &[Succeeded, Succeeded, Succeeded, Succeeded]);
        assert_eq!(settled(&r), Some(Outcome::Completed));
        // Promoted and DNS moved, the replica did not follow: writes are served, the
        // failover is complete and the replica is left to the healer.
        let r = record(steps.clone(), &[Succeeded, Succeeded, Failed, Succeeded]);
        assert_eq!(settled(&r), Some(Outcome::Completed));
        assert_eq!(unfollowed(&r), ["follow:postgres/main/c"]);
        let r = record(steps, &[Succeeded, Failed, Pending, Succeeded]);
        assert_eq!(settled(&r), Some(Outcome::Failed), "the promotion failed");
        assert!(unfollowed(&r).is_empty());
    }
}
