//! The steps of a failover as they act on the world: fence, promote and repoint Postgres
//! members and Redis masters, take Redis Cluster slots over, and move the Route53 weights.
//!
//! Each step is idempotent and bounded by `failover.step_timeout`; what it did is returned as
//! a [`Done`] with typed fields the log keeps (the `min-replicas-to-write` a Redis fence
//! replaced), and a failure says whether another attempt may help ([`StepError`]). The
//! runtime ([`super::executor`]) records attempts and results in the log.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use prometheus::IntCounter;

use super::fence_rule::{may_promote_around, Reach, Wait};
use crate::actions::route53::{Route53, Route53Error};
use crate::actions::{self, ActionError};
use crate::config::{PostgresFence, ReplicationConfig, ReplicationSlots};
use crate::datastore::redis::RedisRole;
use crate::desired::{Action, Decision, FailoverRecord, FenceProof, Step, WriterRecord};
use crate::topology::TargetId;

/// Connecting to an old primary to fence it gives up after this: a dead or cut-off primary
/// must not hold the promotion up (its own agent fences it when its lease runs out).
const FENCE_REACH_TIMEOUT: Duration = Duration::from_secs(2);

/// Why a step attempt failed, and whether another attempt may help.
#[derive(Debug, Clone)]
pub struct StepError {
    /// What went wrong.
    pub message: String,
    /// Whether another attempt may help.
    pub retryable: bool,
    /// A fence step that found the old primary unreachable in a cut-off region with nothing
    /// saying it fences itself: [`FenceProof::Unconfirmed`].
    pub fence: Option<FenceProof>,
}

impl From<ActionError> for StepError {
    fn from(e: ActionError) -> Self {
        StepError {
            message: e.to_string(),
            retryable: true,
            fence: None,
        }
    }
}

impl From<Route53Error> for StepError {
    fn from(e: Route53Error) -> Self {
        let retryable = e.retryable();
        let message = match &e {
            Route53Error::Rejected { .. } => format!(
                "{e} — the epoch record did not hold the value this leader expected: another \
                 leader or a person changed it; not retried"
            ),
            _ => e.to_string(),
        };
        StepError {
            message,
            retryable,
            fence: None,
        }
    }
}

fn fatal(message: impl Into<String>) -> StepError {
    StepError {
        message: message.into(),
        retryable: false,
        fence: None,
    }
}

/// What a step did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Done {
    /// For people.
    pub detail: String,
    /// A Redis fence: the `min-replicas-to-write` it replaced (restored if a planned
    /// switchover does not happen).
    pub replaced_min_replicas: Option<u32>,
    /// A fence: on what grounds it let the promotion go ahead.
    pub fence: Option<FenceProof>,
}

impl From<String> for Done {
    fn from(detail: String) -> Done {
        Done {
            detail,
            replaced_min_replicas: None,
            fence: None,
        }
    }
}

/// What the last DNS change wrote, as the log knows it.
#[derive(Debug, Clone, Default)]
pub struct DnsWritten {
    /// The epoch the TXT record holds.
    pub epoch: Option<u64>,
    /// The weights it wrote (empty: as configured).
    pub weights: BTreeMap<String, u32>,
}

/// What the steps act on.
pub struct Steps {
    /// Configured regions and their in-service weights.
    pub regions: Vec<(String, u32)>,
    /// Every Postgres member.
    pub pg: HashMap<TargetId, actions::postgres::Member>,
    /// Every Redis member.
    pub redis: HashMap<TargetId, actions::redis::Member>,
    /// How Postgres members are fenced.
    pub fence_method: PostgresFence,
    /// How replicas connect to a new primary.
    pub replication: ReplicationConfig,
    /// Whether a new primary gets the slots its replicas stream through.
    pub slots: ReplicationSlots,
    /// `[postgres.rejoin]` is configured: old primaries are rewound and rejoined.
    pub rejoin: bool,
    /// The Route53 client, when configured.
    pub route53: Option<Route53>,
    /// `failover.step_timeout`.
    pub step_timeout: Duration,
    /// Counts Route53 weights changed outside failoverd.
    pub drift: IntCounter,
    /// Where events go.
    pub notifier: crate::notify::Notifier,
}

impl Steps {
    /// Points replica `target` at `primary` and waits until it streams on the primary's
    /// timeline. A replica that streams through a slot gets one of that name on the primary
    /// first (`postgres.replication_slots = "auto"`). Idempotent: the step, and the healer
    /// until the replica streams.
    pub async fn follow_postgres(
        &self,
        target: &TargetId,
        primary: &TargetId,
    ) -> Result<String, StepError> {
        let member = self.member(target)?;
        let new_primary = self.member(primary)?;
        let timeline = actions::postgres::timeline(new_primary, self.step_timeout).await?;
        let slot = match self.slots {
            ReplicationSlots::Off => None,
            ReplicationSlots::Auto => {
                actions::postgres::primary_slot_name(member, self.step_timeout).await?
            }
        };
        let mut through = String::new();
        if let Some(slot) = &slot {
            let made = actions::postgres::ensure_slot(new_primary, slot, self.step_timeout).await?;
            through = format!(" through slot {slot}{}", if made { " (made)" } else { "" });
        }
        let (_, port) = actions::postgres::address(new_primary)?;
        let conninfo =
            actions::postgres::streaming_conninfo(new_primary, &member.name, &self.replication)?;
        actions::postgres::follow(member, &conninfo, self.step_timeout).await?;
        actions::postgres::await_streaming(member, port, timeline, self.step_timeout).await?;
        Ok(format!(
            "{} streams from {} on timeline {timeline}{through}",
            member.name, new_primary.name
        ))
    }

    fn redis_member(&self, target: &TargetId) -> Result<&actions::redis::Member, StepError> {
        self.redis
            .get(target)
            .ok_or_else(|| fatal(format!("{target} is not a configured Redis member")))
    }

    fn member(&self, target: &TargetId) -> Result<&actions::postgres::Member, StepError> {
        self.pg
            .get(target)
            .ok_or_else(|| fatal(format!("{target} is not a configured Postgres member")))
    }

    /// Runs `step` of failover `epoch` once.
    pub async fn execute(
        &self,
        epoch: u64,
        step: &Step,
        decision: &Decision,
        dns: &DnsWritten,
    ) -> Result<Done, StepError> {
        let detail = match &step.action {
            Action::FencePostgres { target } => {
                let member = self.member(target)?;
                let grounds = decision
                    .promotion
                    .as_ref()
                    .map(|p| Grounds {
                        region_cut_off: p.old_primary_cut_off,
                        self_fencing: p.self_fencing.as_deref(),
                        exposed: p.exposed.as_deref(),
                        forced: p.forced,
                    })
                    .unwrap_or_default();
                let reach = self.step_timeout.min(FENCE_REACH_TIMEOUT);
                // A planned switchover: checkpoint first, so the old primary can be rewound.
                let checkpoint = match decision.promotion.as_ref().filter(|p| p.planned) {
                    Some(_) => actions::postgres::checkpoint(member, self.step_timeout)
                        .await
                        .err()
                        .map(|e| format!("; no checkpoint before the fence ({e})")),
                    None => None,
                };
                let result = actions::postgres::fence(member, &self.fence_method, reach).await;
                let (mut detail, proof) = fence_outcome(&member.name, result, &grounds)?;
                detail.push_str(checkpoint.as_deref().unwrap_or_default());
                return Ok(Done {
                    detail,
                    replaced_min_replicas: None,
                    fence: Some(proof),
                });
            }
            Action::PromotePostgres { target } => {
                let member = self.member(target)?;
                let mut caught_up = String::new();
                if let Some(p) = decision.promotion.as_ref().filter(|p| p.planned) {
                    let old = self.member(&p.from)?;
                    if let Some(lsn) =
                        actions::postgres::catch_up(member, old, self.step_timeout).await?
                    {
                        caught_up = format!("; replayed everything {} wrote ({lsn})", old.name);
                    }
                }
                let promoted = actions::postgres::promote(member, self.step_timeout).await?;
                let loss = decision
                    .promotion
                    .as_ref()
                    .map(|p| p.estimated_loss_bytes)
                    .unwrap_or(0);
                Ok(if promoted.already_primary {
                    format!(
                        "{} was already primary on timeline {}; accepts writes",
                        member.name, promoted.timeline
                    )
                } else {
                    format!(
                        "{} promoted to timeline {}, accepts writes; estimated loss {loss} \
                         bytes{caught_up}",
                        member.name, promoted.timeline
                    )
                })
            }
            Action::FollowPostgres { target, primary } => {
                self.follow_postgres(target, primary).await
            }
            Action::Route53 { weights, writers } => {
                self.route53_step(epoch, weights, writers, dns).await
            }
            Action::FenceRedis { target } => {
                let member = self.redis_member(target)?;
                let grounds = decision
                    .redis
                    .iter()
                    .find(|r| &r.from == target)
                    .map(|r| Grounds {
                        region_cut_off: r.old_master_cut_off,
                        self_fencing: r.self_fencing.as_deref(),
                        exposed: r.exposed.as_deref(),
                        forced: r.forced,
                    })
                    .unwrap_or_default();
                let reach = self.step_timeout.min(FENCE_REACH_TIMEOUT);
                let fenced = actions::redis::fence(member, reach).await;
                // The value to restore if a planned switchover does not happen.
                let previous = fenced.as_ref().ok().copied();
                let (detail, proof) = fence_outcome(&member.name, fenced.map(|_| ()), &grounds)?;
                return Ok(Done {
                    detail: match previous {
                        Some(p) => format!("{detail} (min-replicas-to-write was {p})"),
                        None => detail,
                    },
                    replaced_min_replicas: previous,
                    fence: Some(proof),
                });
            }
            Action::PromoteRedis { target } => {
                let member = self.redis_member(target)?;
                if let Some(r) = decision.redis.iter().find(|r| &r.to == target && r.planned) {
                    let old = self.redis_member(&r.from)?;
                    actions::redis::catch_up(member, old, self.step_timeout).await?;
                }
                let promoted = actions::redis::promote(member, self.step_timeout).await?;
                Ok(format!(
                    "{} is master at offset {} and {}",
                    member.name,
                    promoted.offset,
                    if promoted.waits_for_replicas {
                        "takes writes once a replica follows it (min-replicas-to-write)"
                    } else {
                        "takes writes"
                    }
                ))
            }
            Action::TakeoverRedisCluster {
                target,
                master,
                slots,
                planned,
            } => {
                let member = self.redis_member(target)?;
                let epoch =
                    actions::redis::takeover(member, slots, *planned, self.step_timeout).await?;
                Ok(format!(
                    "{} took slots {} over from {master} (config epoch {epoch}); \
                     cluster_state:ok and a write to those slots succeeded",
                    member.name,
                    slots.join(",")
                ))
            }
            Action::FollowRedis { target, master } => {
                let member = self.redis_member(target)?;
                let new_master = self.redis_member(master)?;
                actions::redis::follow(member, new_master, self.step_timeout).await?;
                Ok(format!(
                    "{} replicates from {}",
                    member.name, new_master.name
                ))
            }
        };
        detail.map(Done::from)
    }

    async fn route53_step(
        &self,
        epoch: u64,
        weights: &BTreeMap<String, u32>,
        writers: &[WriterRecord],
        dns: &DnsWritten,
    ) -> Result<String, StepError> {
        let Some(r53) = &self.route53 else {
            return Err(fatal("route53 is not configured on this agent"));
        };
        let (dns_epoch, dns_weights) = (dns.epoch, dns.weights.clone());
        let view = r53.view().await?;
        if view.epoch == Some(epoch) {
            // A previous run (perhaps by a leader that died) got the batch through.
            return Ok(format!(
                "already applied: the epoch record holds {epoch}; weights now {}",
                show(&view.weights)
            ));
        }
        // What failoverd last wrote; the regions whose weight this decision changes.
        let written: BTreeMap<String, u32> = if dns_weights.is_empty() {
            self.regions.iter().cloned().collect()
        } else {
            dns_weights
        };
        let changes: BTreeMap<String, u32> = weights
            .iter()
            .filter(|(region, weight)| written.get(*region) != Some(*weight))
            .map(|(r, w)| (r.clone(), *w))
            .collect();
        let mut drift = Vec::new();
        for (region, weight) in &view.weights {
            if !changes.contains_key(region) && written.get(region) != Some(weight) {
                drift.push(format!(
                    "{region}={weight} (failoverd last set {})",
                    written
                        .get(region)
                        .map_or("nothing".to_owned(), u32::to_string)
                ));
            }
        }
        if !drift.is_empty() {
            self.drift.inc();
            tracing::warn!(
                drift = %drift.join(", "),
                "Route53 weights were changed outside failoverd; leaving them as they are"
            );
        }
        let sent = async {
            let change = r53
                .change(dns_epoch, epoch, &changes, writers, &view)
                .await?;
            let took = r53.wait_insync(&change).await?;
            Ok::<_, Route53Error>((change, took))
        }
        .await;
        let (change, insync) = match sent {
            Ok((change, took)) => (change, format!("INSYNC after {} ms", took.as_millis())),
            Err(e) => {
                // The batch may have gone through all the same (INSYNC too slow, or this
                // leader's earlier attempt landed late): the epoch record says.
                match r53.view().await {
                    Ok(now) if now.epoch == Some(epoch) => (
                        "(see the epoch record)".to_owned(),
                        format!("applied ({e})"),
                    ),
                    _ => return Err(e.into()),
                }
            }
        };
        let named: Vec<String> = writers
            .iter()
            .map(|w| format!("{} -> {}", w.name, w.value))
            .collect();
        let mut detail = format!(
            "set {}{}; epoch record {} -> {epoch}; change {change} {insync}",
            show(&changes),
            if named.is_empty() {
                String::new()
            } else {
                format!("; writers {}", named.join(", "))
            },
            dns_epoch.map_or("(created)".to_owned(), |e| e.to_string()),
        );
        if !drift.is_empty() {
            detail.push_str(&format!(
                "; changed outside failoverd and left as is: {}",
                drift.join(", ")
            ));
        }
        Ok(detail)
    }

    /// A planned switchover whose promotion did not happen must not leave the old primary
    /// fenced (the group would have no writable member): its fence is lifted — but only once
    /// the candidate is seen still a replica, or not listening at all (it died midway), so
    /// that two writable primaries never stand.
    pub async fn undo_planned_fences(&self, record: &FailoverRecord) {
        use crate::desired::StepState;
        let succeeded = |f: &dyn Fn(&Action) -> bool| {
            record
                .steps
                .iter()
                .find(|s| f(&s.step.action))
                .filter(|s| s.state == StepState::Succeeded)
        };
        if let Some(p) = record.decision.promotion.as_ref().filter(|p| p.planned) {
            let promoted =
                succeeded(&|a| matches!(a, Action::PromotePostgres { target } if *target == p.to));
            let fenced =
                succeeded(&|a| matches!(a, Action::FencePostgres { target } if *target == p.from));
            if let (None, Some(_), Ok(old), Ok(candidate)) =
                (promoted, fenced, self.member(&p.from), self.member(&p.to))
            {
                // Still a replica; or nothing listens on its port (it died midway), so
                // nothing can write to it, as a fence step counts it.
                let safe = match actions::postgres::in_recovery(candidate, self.step_timeout).await
                {
                    Ok(true) => Ok(()),
                    Err(ActionError::Connect(e)) if refused(&e) => Ok(()),
                    Ok(false) => Err(format!(
                        "{} is out of recovery: the old primary stays fenced",
                        candidate.name
                    )),
                    Err(e) => Err(format!(
                        "cannot see whether {} is still a replica: {e}",
                        candidate.name
                    )),
                };
                let outcome = match safe {
                    Ok(()) => {
                        actions::postgres::unfence(old, &self.fence_method, self.step_timeout)
                            .await
                            .map_err(|e| e.to_string())
                    }
                    Err(why) => Err(why),
                };
                self.report_undo(&p.from, outcome);
            }
        }
        for r in record
            .decision
            .redis
            .iter()
            .filter(|r| r.planned && r.slots.is_empty())
        {
            let promoted =
                succeeded(&|a| matches!(a, Action::PromoteRedis { target } if *target == r.to));
            let fenced =
                succeeded(&|a| matches!(a, Action::FenceRedis { target } if *target == r.from));
            if let (None, Some(step), Ok(old), Ok(candidate)) = (
                promoted,
                fenced,
                self.redis_member(&r.from),
                self.redis_member(&r.to),
            ) {
                let previous = step.replaced_min_replicas.unwrap_or(0);
                let safe = match actions::redis::role(candidate, self.step_timeout).await {
                    Ok(RedisRole::Replica) => Ok(()),
                    Err(ActionError::Connect(e)) if refused(&e) => Ok(()),
                    Ok(RedisRole::Master) => Err(format!(
                        "{} answers as master: the old master stays fenced",
                        candidate.name
                    )),
                    Err(e) => Err(format!(
                        "cannot see whether {} is still a replica: {e}",
                        candidate.name
                    )),
                };
                let outcome = match safe {
                    Ok(()) => actions::redis::unfence(old, previous, self.step_timeout)
                        .await
                        .map_err(|e| e.to_string()),
                    Err(why) => Err(why),
                };
                self.report_undo(&r.from, outcome);
            }
        }
    }

    fn report_undo(&self, target: &TargetId, outcome: Result<(), String>) {
        match outcome {
            Ok(()) => {
                tracing::warn!(target_id = %target, "planned switchover did not happen: lifted the fence on the old primary");
                self.notifier.send(
                    "unfenced",
                    None,
                    format!("the planned switchover did not happen: failoverd lifted the fence on {target}"),
                    serde_json::json!({ "target": target }),
                );
            }
            Err(why) => {
                tracing::error!(target_id = %target, reason = %why, "planned switchover did not happen and the old primary is still fenced: lift it by hand once it is safe");
                self.notifier.send(
                    "fenced",
                    None,
                    format!(
                        "the planned switchover did not happen and {target} is still fenced: {why}"
                    ),
                    serde_json::json!({ "target": target, "reason": why }),
                );
            }
        }
    }
}

/// What a fence attempt on an old primary or master means for the promotion after it.
fn fence_outcome(
    name: &str,
    result: Result<(), ActionError>,
    grounds: &Grounds<'_>,
) -> Result<(String, FenceProof), StepError> {
    let (reach, seen) = match &result {
        Ok(()) => (Reach::Fenced, format!("{name} fenced")),
        // Nothing listens on its port: no one can write to it.
        Err(ActionError::Connect(e)) if refused(e) => (
            Reach::NotListening,
            format!("{name} not listening ({e}): nothing can write to it"),
        ),
        Err(e @ (ActionError::Connect(_) | ActionError::Timeout(_))) => {
            (Reach::Unreachable, format!("{name} unreachable ({e})"))
        }
        Err(e) => (
            Reach::Failed,
            format!("{name} answered but is not fenced: {e}"),
        ),
    };
    match may_promote_around(
        reach,
        grounds.region_cut_off,
        grounds.self_fencing,
        grounds.forced,
    ) {
        Ok(FenceProof::Confirmed) => Ok((format!("{seen} [confirmed]"), FenceProof::Confirmed)),
        Ok(FenceProof::ByLease) => Ok((
            format!(
                "{seen}; its region's agents have been silent past their lease and it fences \
                 itself: {} [by_lease]",
                grounds.self_fencing.unwrap_or_default()
            ),
            FenceProof::ByLease,
        )),
        Ok(FenceProof::Forced) => Ok((
            format!(
                "{seen}; its region is cut off and an operator forced the failover: counted as \
                 fenced without proof [forced]"
            ),
            FenceProof::Forced,
        )),
        // Reachable but not fenced, or perhaps alive and unreachable from here while its own
        // agent holds its lease: promoting would risk two writable primaries.
        Err(Wait::NotFenced | Wait::Unreachable) => Err(StepError {
            message: format!("{seen}; it may still take writes"),
            retryable: true,
            fence: None,
        }),
        Ok(FenceProof::Unconfirmed) | Err(Wait::SplitBrainRisk) => Err(StepError {
            fence: Some(FenceProof::Unconfirmed),
            ..fatal(format!(
                "{seen}: its region is cut off and nothing confirmed it fenced — its agent may be \
             cut off from it while clients in its region still write to it, and nothing says it \
             refuses writes by itself ({}): a partition of its region could leave two writable \
             primaries, so it is not promoted around automatically. The leader waits until it \
             fences itself or can be reached (trying again every 30 s); an operator who knows it \
             is down may force the failover",
                grounds
                    .exposed
                    .unwrap_or("its acknowledgement rule is not known")
            ))
        }),
    }
}

/// What a fence step may count on besides what it sees.
#[derive(Debug, Clone, Copy, Default)]
struct Grounds<'a> {
    /// The old primary's region is cut off.
    region_cut_off: bool,
    /// Why it fences itself, if it does.
    self_fencing: Option<&'a str>,
    /// Otherwise why it may not.
    exposed: Option<&'a str>,
    /// An operator forced the failover.
    forced: bool,
}

/// Whether a connection error says that nothing listens (the server is down), as opposed to
/// a server that answered with an error or did not answer.
fn refused(message: &str) -> bool {
    message.contains("Connection refused")
}

fn show(weights: &BTreeMap<String, u32>) -> String {
    weights
        .iter()
        .map(|(r, w)| format!("{r}={w}"))
        .collect::<Vec<_>>()
        .join(" ")
}
