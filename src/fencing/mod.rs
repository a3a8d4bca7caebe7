//! Self-fencing: an agent that has lost its lease makes the primaries of its own region
//! refuse writes, before anyone elsewhere could promote (the Patroni rule).
//!
//! The lease is renewed by contact with a leader that a quorum follows (see
//! [`crate::consensus::Consensus::lease_valid`]). Without it for `lease_ttl`, this agent fences
//! every local Postgres member that answers as primary and every local Redis master (of a
//! replication shard or a Redis Cluster). It lifts a fence only once it holds the lease again *and* the
//! replicated log still names that member as the group's primary; otherwise the member stays
//! fenced (a failover elsewhere made it stale); it decides so only once the regained lease has
//! held for [`SETTLE`] with its log applied, so that a failover made during the partition is
//! known before anything is lifted. With the lease held, a local Postgres member
//! that answers as primary while the log names another member of its group (an old primary
//! restarted after a failover) is fenced too: never two writable primaries. A failed fence or
//! unfence is counted and retried at the next tick, and logged when it starts failing, when its
//! error changes and every [`REPEAT_LOG_EVERY`] while it lasts (a stale primary that is down
//! is retried ten times a second until it answers, and fenced the moment it does).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts, Registry};
use tokio_util::sync::CancellationToken;

pub mod rules;

use crate::actions::{self, ActionError};
use crate::config::{Config, PostgresFence, RejoinConfig, ReplicationConfig, ReplicationSlots};
use crate::consensus::Consensus;
use crate::health::HealthBoard;
use crate::probe::postgres::PgRole;
use crate::probe::redis::RedisRole;
use crate::probe::Facts;
use crate::topology::{TargetId, Topology};

/// How often the lease is checked.
pub const CHECK_INTERVAL: Duration = crate::consensus::LEASE_CHECK_INTERVAL;

/// A failure repeated at every check is logged again at most this often (and at once when
/// its error changes); the counter counts every attempt.
pub const REPEAT_LOG_EVERY: Duration = Duration::from_secs(30);

/// A regained lease must hold this long, with the log applied, before a fence is lifted or a
/// master demoted: right after a partition heals the log may not yet hold the failover that
/// happened meanwhile, and the stale view would lift the fence of a replaced primary.
pub const SETTLE: Duration = Duration::from_secs(1);

#[derive(Debug, Clone)]
enum Local {
    Postgres(actions::postgres::Member),
    Redis(actions::redis::Member),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fence {
    Postgres,
    /// The `min-replicas-to-write` to restore.
    Redis(u32),
}

/// The self-fencing loop of one agent.
pub struct Fencer {
    locals: Vec<(TargetId, Local)>,
    pg_method: PostgresFence,
    timeout: Duration,
    lease_ttl: Duration,
    fenced: BTreeMap<TargetId, Fence>,
    /// Where fence events go.
    notifier: Option<crate::notify::Notifier>,
    /// Every Redis member of a replication shard, to point a stale master at the new one.
    redis_members: std::collections::HashMap<TargetId, actions::redis::Member>,
    /// What the rules remember of each local member between checks.
    memory: BTreeMap<TargetId, rules::Memory>,
    /// Since when the lease has held without a break.
    valid_since: Option<std::time::Instant>,
    /// When the fencer started: a missing lease counts only a lease period after it.
    started: std::time::Instant,
    lease_gauge: IntGauge,
    lapses: IntCounter,
    fenced_gauge: IntGauge,
    actions: IntCounterVec,
    /// Fence, unfence and demote attempts failing in a row, so that one retried every check
    /// is logged when it starts, changes or has gone on for [`REPEAT_LOG_EVERY`].
    failing: Failing,
    /// How old primaries rejoin, when configured.
    rejoin: Option<Rejoin>,
    /// Rejoins of local members: running, or when the next may start.
    rejoining: BTreeMap<TargetId, Rejoining>,
    rejoins: IntCounterVec,
}

/// `postgres.rejoin` with what it needs to tell the command.
#[derive(Debug, Clone)]
struct Rejoin {
    config: RejoinConfig,
    replication: ReplicationConfig,
    slots: ReplicationSlots,
    /// Every Postgres member, to reach the primary the log names.
    members: std::collections::HashMap<TargetId, actions::postgres::Member>,
    /// This agent's region: the region of every member it rejoins.
    region: String,
}

/// One local member's rejoin.
#[derive(Debug, Clone, Default)]
struct Rejoining {
    running: bool,
    /// Failed attempts in a row.
    failures: u32,
    /// No attempt before this.
    not_before: Option<std::time::Instant>,
    /// Since when the rejoin has waited for replicas still streaming from the old primary.
    replicas_since: Option<std::time::Instant>,
    /// The member rejoined is a stranded replica, not an old primary.
    stranded: bool,
}

/// A rejoin waits at most this long for the replicas still streaming from the old primary to
/// be repointed: stopping it sends them WAL the new primary does not have.
pub const REJOIN_REPLICAS_WAIT: Duration = Duration::from_secs(60);

/// The first retry of a failed rejoin waits this long, each next one twice as long.
pub const REJOIN_RETRY: Duration = Duration::from_secs(10);
/// Retries of a failed rejoin are at most this far apart.
pub const REJOIN_RETRY_MAX: Duration = Duration::from_secs(300);
/// After a rejoin that succeeded, the member has this long to answer as a replica before
/// another is tried.
pub const REJOIN_SETTLE: Duration = Duration::from_secs(30);

/// Actions failing in a row, by action and target.
#[derive(Debug, Default)]
struct Failing(BTreeMap<(&'static str, TargetId), Streak>);

#[derive(Debug)]
struct Streak {
    error: String,
    attempts: u32,
    logged: std::time::Instant,
}

impl Failing {
    /// Counts a failed attempt; the attempts so far when it should be logged now.
    fn failed(
        &mut self,
        action: &'static str,
        id: &TargetId,
        error: &str,
        now: std::time::Instant,
    ) -> Option<u32> {
        match self.0.get_mut(&(action, id.clone())) {
            Some(streak) => {
                streak.attempts += 1;
                let changed = streak.error != error;
                if changed || now.duration_since(streak.logged) >= REPEAT_LOG_EVERY {
                    streak.error = error.to_owned();
                    streak.logged = now;
                    Some(streak.attempts)
                } else {
                    None
                }
            }
            None => {
                let streak = Streak {
                    error: error.to_owned(),
                    attempts: 1,
                    logged: now,
                };
                self.0.insert((action, id.clone()), streak);
                Some(1)
            }
        }
    }

    /// Ends a streak; the attempts that had failed before this success.
    fn succeeded(&mut self, action: &'static str, id: &TargetId) -> u32 {
        self.0
            .remove(&(action, id.clone()))
            .map_or(0, |streak| streak.attempts)
    }
}

impl Fencer {
    /// The datastores of this agent's region, with how to fence them.
    pub fn new(config: &Config, registry: &Registry) -> prometheus::Result<Fencer> {
        let topology = Topology::from_config(config);
        let locals = topology
            .targets
            .iter()
            .filter(|t| t.region == config.agent.region)
            .filter_map(|t| {
                let local = match (
                    actions::postgres::Member::of(t),
                    actions::redis::Member::of(t),
                ) {
                    (Some(m), _) => Local::Postgres(m),
                    (None, Some(m)) => Local::Redis(m),
                    (None, None) => return None,
                };
                Some((t.id.clone(), local))
            })
            .collect();
        let lease_gauge = IntGauge::new(
            "failoverd_lease_valid",
            "Whether this agent holds its lease (contact with a quorum within lease_ttl).",
        )?;
        registry.register(Box::new(lease_gauge.clone()))?;
        let lapses = IntCounter::new(
            "failoverd_lease_lapses_total",
            "Times this agent's lease ran out while it held it.",
        )?;
        registry.register(Box::new(lapses.clone()))?;
        let fenced_gauge = IntGauge::new(
            "failoverd_fenced_primaries",
            "Local primaries this agent has fenced.",
        )?;
        registry.register(Box::new(fenced_gauge.clone()))?;
        let actions = IntCounterVec::new(
            Opts::new(
                "failoverd_fence_actions_total",
                "Fence and unfence actions, by action and result.",
            ),
            &["action", "result"],
        )?;
        registry.register(Box::new(actions.clone()))?;
        let rejoins = crate::util::registered(
            registry,
            IntCounterVec::new(
                Opts::new(
                    "failoverd_rejoins_total",
                    "Runs of the rejoin command on a local old primary, by result.",
                ),
                &["result"],
            )?,
        )?;
        let rejoin = config
            .postgres
            .as_ref()
            .and_then(|pg| Some((pg, pg.rejoin.clone()?)))
            .map(|(pg, rejoin)| Rejoin {
                config: rejoin,
                replication: pg.replication.clone(),
                slots: pg.replication_slots,
                members: topology
                    .targets
                    .iter()
                    .filter_map(|t| Some((t.id.clone(), actions::postgres::Member::of(t)?)))
                    .collect(),
                region: config.agent.region.clone(),
            });
        Ok(Fencer {
            locals,
            pg_method: config
                .postgres
                .as_ref()
                .map(|p| p.fence.clone())
                .unwrap_or_default(),
            timeout: Duration::from_secs(5),
            lease_ttl: config.cluster.lease_ttl(),
            fenced: BTreeMap::new(),
            notifier: None,
            redis_members: topology
                .targets
                .iter()
                .filter_map(|t| Some((t.id.clone(), actions::redis::Member::of(t)?)))
                .collect(),
            memory: BTreeMap::new(),
            valid_since: None,
            started: std::time::Instant::now(),
            lease_gauge,
            lapses,
            fenced_gauge,
            actions,
            failing: Failing::default(),
            rejoin,
            rejoining: BTreeMap::new(),
            rejoins,
        })
    }

    /// Sends fence and unfence events to `notifier`.
    pub fn with_notifier(mut self, notifier: crate::notify::Notifier) -> Fencer {
        self.notifier = Some(notifier);
        self
    }

    /// The number of local primaries fenced now (shared with the admin API's gate).
    pub fn fenced(&self) -> IntGauge {
        self.fenced_gauge.clone()
    }

    /// Checks the lease every [`CHECK_INTERVAL`] until `shutdown`.
    pub async fn run(
        mut self,
        consensus: Arc<Consensus>,
        board: Arc<HealthBoard>,
        shutdown: CancellationToken,
    ) {
        let mut ticker = tokio::time::interval(CHECK_INTERVAL);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Rejoins take minutes: they run beside the checks (dropping the set kills them).
        let mut rejoins: tokio::task::JoinSet<(TargetId, Result<String, ActionError>)> =
            tokio::task::JoinSet::new();
        loop {
            let finished = tokio::select! {
                _ = shutdown.cancelled() => return,
                Some(done) = rejoins.join_next(), if !rejoins.is_empty() => Some(done),
                _ = ticker.tick() => None,
            };
            if let Some(done) = finished {
                match done {
                    Ok((id, result)) => self.rejoined(&id, result),
                    Err(e) => tracing::error!(error = %e, "a rejoin task ended without an answer"),
                }
                continue;
            }
            let valid = consensus.lease_valid();
            if !valid && self.valid_since.is_some() {
                self.lapses.inc();
                tracing::warn!(
                    lease_ttl = ?self.lease_ttl,
                    "lease lost: no contact with a quorum for the lease period"
                );
            }
            self.lease_gauge.set(i64::from(valid));
            let now = std::time::Instant::now();
            self.valid_since = match (valid, self.valid_since) {
                (false, _) => None,
                (true, None) => Some(now),
                (true, since) => since,
            };
            // Acting on the named primaries (lifting a fence, demoting) needs a settled view.
            let settled = self
                .valid_since
                .is_some_and(|since| now.duration_since(since) >= SETTLE)
                && consensus.caught_up();
            // A starting agent gets a lease period to join before a missing lease counts.
            let joined = self.started.elapsed() >= self.lease_ttl;
            let lease = rules::Lease {
                valid,
                settled,
                joined,
            };
            let mut ops: Vec<(TargetId, Local, Op)> = Vec::new();
            for (id, local) in self.locals.clone() {
                let view = board.slot(&id).map(|s| s.view());
                let facts = view.as_ref().and_then(|v| v.facts());
                let role = match facts {
                    Some(Facts::Postgres(p)) => Some(match p.role {
                        PgRole::Primary => rules::Role::Primary,
                        PgRole::Replica => rules::Role::Replica,
                    }),
                    Some(Facts::Redis(r)) => Some(match r.role {
                        RedisRole::Master => rules::Role::Primary,
                        RedisRole::Replica => rules::Role::Replica,
                    }),
                    _ => None,
                };
                let kind = match &local {
                    Local::Postgres(_) => rules::Kind::Postgres,
                    Local::Redis(m) if m.cluster => rules::Kind::RedisCluster,
                    Local::Redis(_) => rules::Kind::Redis,
                };
                let named = consensus.named_primary(consensus.group_of(&id).unwrap_or_default());
                let cluster = if kind == rules::Kind::RedisCluster {
                    let group = id
                        .as_str()
                        .rsplit_once('/')
                        .map(|(g, _)| g.to_owned())
                        .unwrap_or_default();
                    rules::ClusterStanding {
                        view_ok: matches!(facts, Some(Facts::Redis(r))
                            if r.cluster.as_ref().is_some_and(|c| c.state == "ok")),
                        still_owner: consensus.read_desired(|d| {
                            d.slot_owners
                                .get(&group)
                                .is_some_and(|o| o.values().any(|t| *t == id))
                        }),
                    }
                } else {
                    rules::ClusterStanding::default()
                };
                let fence = self.fenced.get(&id).copied();
                let memory = self.memory.entry(id.clone()).or_default();
                let action = rules::decide(
                    &rules::Check {
                        id: &id,
                        kind,
                        role,
                        fenced: fence.is_some(),
                        lease,
                        named: named.as_ref(),
                        cluster,
                        can_rejoin: self.rejoin.is_some(),
                        // Once its probe answered as primary or has failed for good: not
                        // before its first probe, which would read a replica as down.
                        deposed: kind == rules::Kind::Postgres
                            && (role == Some(rules::Role::Primary)
                                || view
                                    .as_ref()
                                    .is_some_and(|v| v.state == crate::health::State::Down))
                            && consensus.read_desired(|d| {
                                consensus
                                    .group_of(&id)
                                    .and_then(|g| d.deposed(g))
                                    .is_some_and(|t| *t == id)
                            }),
                        streaming: matches!(facts, Some(Facts::Postgres(p))
                            if p.wal_receiver.as_ref().is_some_and(|r| r.status == "streaming")),
                    },
                    memory,
                );
                let op = match (action, &local, fence) {
                    (rules::FenceAction::Nothing, ..) => None,
                    (rules::FenceAction::Fence(reason), ..) => Some(Op::Fence {
                        reason: reason.to_string(),
                    }),
                    (rules::FenceAction::Demote { to }, Local::Redis(_), fence) => {
                        match self.redis_members.get(&to) {
                            Some(master) => Some(Op::Demote {
                                to,
                                master: master.clone(),
                                fence,
                            }),
                            None => {
                                tracing::error!(target_id = %id, named = %to, "the named master is not a configured member");
                                None
                            }
                        }
                    }
                    (rules::FenceAction::Unfence, _, Some(fence)) => Some(Op::Unfence(fence)),
                    (rules::FenceAction::Release, _, Some(fence)) => Some(Op::Release(fence)),
                    (rules::FenceAction::Rejoin { to, fence_too }, Local::Postgres(m), _) => {
                        let stranded = role == Some(rules::Role::Replica);
                        if let Some(task) = self.start_rejoin(&id, m, &to, stranded, now) {
                            rejoins.spawn(task);
                        }
                        fence_too.then(|| Op::Fence {
                            reason: rules::FenceReason::Stale { named: to }.to_string(),
                        })
                    }
                    (rules::FenceAction::Stay(rules::Hold::NotOwner), ..) => {
                        tracing::debug!(target_id = %id, "stays fenced: the cluster has not shown it is still the owner of its slots");
                        None
                    }
                    (rules::FenceAction::Stay(rules::Hold::NotNamed { named }), ..) => {
                        tracing::debug!(
                            target_id = %id,
                            named = named.as_ref().map(|n| n.as_str()).unwrap_or("none"),
                            "stays fenced: the cluster does not name it primary"
                        );
                        None
                    }
                    (action, ..) => {
                        tracing::error!(target_id = %id, ?action, "fence rule without a member to apply it to");
                        None
                    }
                };
                if let Some(op) = op {
                    ops.push((id, local, op));
                }
            }
            // Each member on its own task: one that does not answer cannot hold up the others.
            let mut tasks = tokio::task::JoinSet::new();
            for (id, local, op) in ops {
                let (method, timeout) = (self.pg_method.clone(), self.timeout);
                tasks.spawn(async move {
                    let result = perform(&local, &op, &method, timeout).await;
                    (id, op, result)
                });
            }
            loop {
                let done = tokio::select! {
                    // Dropping the set aborts what still runs.
                    _ = shutdown.cancelled() => return,
                    done = tasks.join_next() => done,
                };
                match done {
                    None => break,
                    Some(Ok((id, op, result))) => self.record(&id, op, result),
                    Some(Err(e)) => {
                        tracing::error!(error = %e, "a fence task ended without an answer")
                    }
                }
            }
        }
    }

    /// Keeps the gauge equal to the fenced set, at the moment the set changes.
    fn count_fenced(&self) {
        self.fenced_gauge
            .set(i64::try_from(self.fenced.len()).unwrap_or(i64::MAX));
    }

    /// Records what an action on a member did: the fenced set, the counters, the logs and
    /// the events.
    fn record(&mut self, id: &TargetId, op: Op, result: Result<Option<Fence>, ActionError>) {
        let label = op.label();
        let Err(e) = result.as_ref() else {
            self.actions.with_label_values(&[label, "ok"]).inc();
            let failed_before = self.failing.succeeded(label, id);
            match (op, result) {
                (Op::Fence { reason }, Ok(Some(fence))) => {
                    tracing::warn!(
                        target_id = %id,
                        lease_ttl = %humantime::format_duration(self.lease_ttl),
                        reason,
                        failed_before,
                        "fenced the local primary"
                    );
                    self.event(
                        "fenced",
                        format!("failoverd fenced {id}: {reason}"),
                        serde_json::json!({ "target": id, "reason": reason }),
                    );
                    self.fenced.insert(id.clone(), fence);
                }
                (Op::Demote { to, .. }, _) => {
                    self.memory.entry(id.clone()).or_default().demoted = true;
                    // A replica now: no longer a fenced primary.
                    self.fenced.remove(id);
                    tracing::warn!(target_id = %id, master = %to, "made the stale local Redis master a replica of the named one");
                    self.event(
                        "demoted",
                        format!(
                            "failoverd made {id} a replica of {to}: the cluster names {to} master"
                        ),
                        serde_json::json!({ "target": id, "master": to }),
                    );
                }
                (Op::Unfence(_), _) => {
                    tracing::info!(target_id = %id, "lifted the fence: lease regained and the cluster still names it primary");
                    self.event(
                        "unfenced",
                        format!("failoverd lifted the fence on {id}: lease regained and the cluster still names it primary"),
                        serde_json::json!({ "target": id }),
                    );
                    self.fenced.remove(id);
                }
                (Op::Release(_), _) => {
                    tracing::info!(target_id = %id, "released the fence: the old primary answers as a replica");
                    self.fenced.remove(id);
                }
                (Op::Fence { .. }, Ok(None)) => {
                    tracing::error!(target_id = %id, "a fence reported no setting to restore");
                }
                (_, Err(_)) => {}
            }
            self.count_fenced();
            return;
        };
        self.actions.with_label_values(&[label, "error"]).inc();
        let now = std::time::Instant::now();
        if let Some(attempts) = self.failing.failed(label, id, &e.to_string(), now) {
            match &op {
                Op::Fence { reason } => {
                    tracing::error!(target_id = %id, error = %e, attempts, reason, "cannot fence the local primary; retrying")
                }
                Op::Demote { .. } => {
                    tracing::error!(target_id = %id, error = %e, attempts, "cannot demote the stale local Redis master; retrying")
                }
                Op::Unfence(_) | Op::Release(_) => {
                    tracing::error!(target_id = %id, error = %e, attempts, "cannot lift the fence; retrying")
                }
            }
        }
    }

    /// The task that rejoins local old primary `id` (or `stranded` replica) as a replica of
    /// `to`, unless one runs or the last one's backoff has not passed.
    fn start_rejoin(
        &mut self,
        id: &TargetId,
        member: &actions::postgres::Member,
        to: &TargetId,
        stranded: bool,
        now: std::time::Instant,
    ) -> Option<impl std::future::Future<Output = (TargetId, Result<String, ActionError>)>> {
        let rejoin = self.rejoin.as_ref()?;
        let state = self.rejoining.entry(id.clone()).or_default();
        if state.running || state.not_before.is_some_and(|t| now < t) {
            return None;
        }
        let Some(primary) = rejoin.members.get(to).cloned() else {
            tracing::error!(target_id = %id, named = %to, "the named primary is not a configured Postgres member");
            return None;
        };
        state.running = true;
        state.stranded = stranded;
        // A stranded replica's own cascading replicas are stranded with it.
        let wait_for_replicas = !stranded
            && state
                .replicas_since
                .is_none_or(|since| now.saturating_duration_since(since) < REJOIN_REPLICAS_WAIT);
        if stranded {
            tracing::debug!(target_id = %id, primary = %to, "a replica that does not stream: checking its timeline");
        } else {
            tracing::warn!(target_id = %id, primary = %to, "rejoining the old primary as a replica of the named one");
        }
        let (id, member, rejoin) = (id.clone(), member.clone(), rejoin.clone());
        let timeout = self.timeout;
        Some(async move {
            let how = RejoinHow {
                wait_for_replicas,
                stranded,
            };
            let result = rejoin_member(&member, &primary, &rejoin, timeout, how).await;
            (id, result)
        })
    }

    /// Records how a rejoin ended: the counter, the log, the event and when the next may run.
    fn rejoined(&mut self, id: &TargetId, result: Result<String, ActionError>) {
        let now = std::time::Instant::now();
        let state = self.rejoining.entry(id.clone()).or_default();
        state.running = false;
        match result {
            Ok(said) => {
                state.failures = 0;
                state.replicas_since = None;
                state.not_before = Some(now + REJOIN_SETTLE);
                self.rejoins.with_label_values(&["ok"]).inc();
                self.failing.succeeded("rejoin", id);
                if state.stranded {
                    tracing::warn!(target_id = %id, said, "rejoined the replica stranded on an older timeline");
                } else {
                    tracing::warn!(target_id = %id, said, "rejoined the old primary as a replica");
                }
                self.event(
                    "rejoined",
                    format!("failoverd rejoined {id} as a replica: {said}"),
                    serde_json::json!({ "target": id, "output": said }),
                );
            }
            Err(ActionError::NotYet(why @ actions::NotYet::NotStranded { .. })) => {
                // A replica that does not stream for another reason (its primary is down, a
                // slot or a password is missing): nothing to rewind; look again later.
                state.not_before = Some(now + REJOIN_RETRY);
                tracing::debug!(target_id = %id, why = %why, "no rejoin");
            }
            Err(ActionError::NotYet(why)) => {
                // The promotion or the repointing of replicas is still under way: look again
                // at the next check.
                if matches!(why, actions::NotYet::Replicas { .. }) {
                    state.replicas_since.get_or_insert(now);
                }
                tracing::info!(target_id = %id, why = %why, "the rejoin waits");
            }
            Err(e) => {
                state.failures = state.failures.saturating_add(1);
                let wait = REJOIN_RETRY
                    .saturating_mul(1 << state.failures.saturating_sub(1).min(8))
                    .min(REJOIN_RETRY_MAX);
                state.not_before = Some(now + wait);
                let attempts = state.failures;
                self.rejoins.with_label_values(&["failed"]).inc();
                let error = e.to_string();
                if self.failing.failed("rejoin", id, &error, now).is_some() {
                    tracing::error!(
                        target_id = %id,
                        error,
                        attempts,
                        retry_in = %humantime::format_duration(wait),
                        "cannot rejoin the old primary; retrying"
                    );
                    self.event(
                        "rejoin_failed",
                        format!("failoverd cannot rejoin {id} as a replica: {error}"),
                        serde_json::json!({ "target": id, "error": error, "attempts": attempts }),
                    );
                }
            }
        }
    }

    fn event(&self, kind: &'static str, text: String, details: serde_json::Value) {
        if let Some(n) = &self.notifier {
            n.send(kind, None, text, details);
        }
    }
}

/// An action on one local member.
#[derive(Debug, Clone)]
enum Op {
    /// Fence it, for this reason.
    Fence { reason: String },
    /// Make it a replica of `master` (the named one), restoring what a fence changed.
    Demote {
        to: TargetId,
        master: actions::redis::Member,
        fence: Option<Fence>,
    },
    /// Lift the fence.
    Unfence(Fence),
    /// Lift the fence of an old primary that answers as a replica.
    Release(Fence),
}

impl Op {
    fn label(&self) -> &'static str {
        match self {
            Op::Fence { .. } => "fence",
            Op::Demote { .. } => "demote",
            Op::Unfence(_) => "unfence",
            Op::Release(_) => "release",
        }
    }
}

/// How [`rejoin_member`] goes about it.
#[derive(Debug, Clone, Copy)]
struct RejoinHow {
    /// Wait until no replica streams from the member.
    wait_for_replicas: bool,
    /// The member is a replica that does not stream: rejoin it only when it is on an older
    /// timeline than `primary`.
    stranded: bool,
}

/// Makes old primary `member` (or a stranded replica) a replica of `primary`: checks that
/// `primary` is out of recovery (the log names a member at the decision, before its
/// promotion), makes its slot there, then runs the rejoin command.
async fn rejoin_member(
    member: &actions::postgres::Member,
    primary: &actions::postgres::Member,
    rejoin: &Rejoin,
    timeout: Duration,
    how: RejoinHow,
) -> Result<String, ActionError> {
    if how.stranded {
        stranded_on_older_timeline(member, primary, timeout).await?;
    }
    actions::postgres::ready_as_rewind_source(primary, timeout).await?;
    if how.wait_for_replicas {
        // Unreachable (crashed): nobody streams from it.
        if let Ok(count @ 1..) = actions::postgres::wal_senders(member, timeout).await {
            return Err(ActionError::NotYet(actions::NotYet::Replicas {
                member: member.name.clone(),
                count,
            }));
        }
    }
    let slot = match rejoin.slots {
        ReplicationSlots::Off => None,
        ReplicationSlots::Auto => {
            let slot = actions::postgres::member_slot_name(&member.name);
            actions::postgres::ensure_slot(primary, &slot, timeout).await?;
            Some(slot)
        }
    };
    let conninfo =
        actions::postgres::streaming_conninfo(primary, &member.name, &rejoin.replication)?;
    actions::postgres::rejoin(
        member,
        actions::postgres::RejoinTo {
            command: &rejoin.config.command,
            region: &rejoin.region,
            primary,
            conninfo: &conninfo,
            slot: slot.as_deref(),
            timeout: rejoin.config.timeout,
        },
    )
    .await
}

/// `Ok` when replica `member` is on an older timeline than `primary`: a failover left it with
/// WAL the new timeline may not have, and only a rewind makes it stream again. Anything else
/// (it answers as primary, the primary cannot be read, the same timeline) is
/// [`actions::NotYet::NotStranded`].
async fn stranded_on_older_timeline(
    member: &actions::postgres::Member,
    primary: &actions::postgres::Member,
    timeout: Duration,
) -> Result<(), ActionError> {
    let not_stranded = |why: String| {
        ActionError::NotYet(actions::NotYet::NotStranded {
            member: member.name.clone(),
            why,
        })
    };
    let theirs = actions::postgres::timeline(primary, timeout)
        .await
        .map_err(|e| not_stranded(format!("the primary {}: {e}", primary.name)))?;
    match actions::postgres::replica_timeline(member, timeout).await {
        Ok(Some(mine)) if mine < theirs => Ok(()),
        Ok(Some(mine)) => Err(not_stranded(format!(
            "on timeline {mine}, the primary on {theirs}"
        ))),
        Ok(None) => Err(not_stranded("it is out of recovery".to_owned())),
        Err(e) => Err(not_stranded(e.to_string())),
    }
}

/// Carries `op` out on `local`; a fence returns what it set.
async fn perform(
    local: &Local,
    op: &Op,
    method: &PostgresFence,
    timeout: Duration,
) -> Result<Option<Fence>, ActionError> {
    match (op, local) {
        (Op::Fence { .. }, Local::Postgres(m)) => actions::postgres::fence(m, method, timeout)
            .await
            .map(|()| Some(Fence::Postgres)),
        (Op::Fence { .. }, Local::Redis(m)) => actions::redis::fence(m, timeout)
            .await
            .map(|previous| Some(Fence::Redis(previous))),
        (Op::Unfence(_) | Op::Release(_), Local::Postgres(m)) => {
            actions::postgres::unfence(m, method, timeout)
                .await
                .map(|()| None)
        }
        (Op::Unfence(fence) | Op::Release(fence), Local::Redis(m)) => {
            let previous = match fence {
                Fence::Redis(previous) => *previous,
                Fence::Postgres => 0,
            };
            actions::redis::unfence(m, previous, timeout)
                .await
                .map(|()| None)
        }
        (Op::Demote { master, fence, .. }, Local::Redis(m)) => {
            actions::redis::follow(m, master, timeout).await?;
            if let Some(Fence::Redis(previous)) = fence {
                if let Err(e) = actions::redis::unfence(m, *previous, timeout).await {
                    tracing::warn!(member = %m.name, error = %e, "cannot restore min-replicas-to-write on the demoted member");
                }
            }
            Ok(None)
        }
        (Op::Demote { .. }, Local::Postgres(m)) => Err(ActionError::Step {
            step: "demote",
            message: format!(
                "{} is a Postgres member: only Redis masters are demoted",
                m.name
            ),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_repeated_every_check_is_logged_when_it_starts_changes_or_lasts() {
        let mut failing = Failing::default();
        let id = TargetId::new(crate::config::TargetKind::Postgres, "main", "pg-a");
        let t0 = std::time::Instant::now();
        let refused = "cannot connect: connection refused";
        assert_eq!(failing.failed("fence", &id, refused, t0), Some(1));
        for n in 1..10 {
            let at = t0 + CHECK_INTERVAL * n;
            assert_eq!(failing.failed("fence", &id, refused, at), None);
        }
        // Another action or target is a streak of its own.
        assert_eq!(failing.failed("unfence", &id, refused, t0), Some(1));
        let other = TargetId::new(crate::config::TargetKind::Postgres, "main", "pg-b");
        assert_eq!(failing.failed("fence", &other, refused, t0), Some(1));
        // A new error is logged at once, with the attempts so far.
        let timeout = "timed out after 5s";
        let at = t0 + Duration::from_secs(2);
        assert_eq!(failing.failed("fence", &id, timeout, at), Some(11));
        assert_eq!(
            failing.failed("fence", &id, timeout, at + CHECK_INTERVAL),
            None
        );
        // The same error again once it has gone on for the repeat period.
        let later = at + REPEAT_LOG_EVERY;
        assert_eq!(failing.failed("fence", &id, timeout, later), Some(13));
        // Success ends the streak and says how many failed before it.
        assert_eq!(failing.succeeded("fence", &id), 13);
        assert_eq!(failing.succeeded("fence", &id), 0);
        assert_eq!(failing.failed("fence", &id, timeout, later), Some(1));
    }
}
