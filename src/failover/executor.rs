//! The reconciler on the leader: decide, then carry out the steps, recording each in the log.
//!
//! Every 100 ms, on the leader only:
//! - for each failover in progress, start each step whose dependencies succeeded and that is
//!   not running here (a step left running by a previous leader is run again: every step is
//!   idempotent); once nothing more can run, commit how the failover ended;
//! - ask [`super::trigger::assess`] and commit its decision, or record its refusals.
//!
//! It also carries out operators' requests ([`Reconciler::operate`]): pause, resume, drain,
//! restore and forced failover.
//!
//! A step attempt confirms leadership with a quorum first, commits its start, runs under
//! `failover.step_timeout` and commits its end. Retryable failures are retried
//! `failover.step_attempts` times with doubling backoff; the rest fail the step at once (a
//! Route53 batch rejected for a stale epoch is never sent again). A leader that loses its
//! leadership stops its steps; the next one resumes from the log, so a finished step never
//! runs twice.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prometheus::{Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry};
use serde::Serialize;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::inputs::{Readiness, Roster};
use super::manual::{self, ErrorKind, OpError};
use super::trigger::{self, Assessment, Refused, World};
use crate::actions::route53::{Route53, Route53Error};
use crate::actions::{self, ActionError};
use crate::config::{Config, PostgresFence, ReplicationConfig, SecretRef};
use crate::consensus::types::Command;
use crate::consensus::{Consensus, LeaderView};
use crate::desired::{
    ready_steps_after, settled, Action, Attempt, Decision, Desired, DrillPart, FailoverCommand,
    FailoverRecord, LiveDrill, LiveDrillRecord, Outcome, Refusal, Step, Trigger, WriterRecord,
};
use crate::health::State;
use crate::topology::{TargetId, Topology};
use crate::util::now_ms;

/// How often the reconciler looks.
pub const TICK: Duration = Duration::from_millis(100);
/// A standing refusal is recorded again after this long.
const REFUSAL_REPEAT_MS: u64 = 60_000;
/// Connecting to an old primary to fence it gives up after this: a dead or cut-off primary
/// must not hold the promotion up (its own agent fences it when its lease runs out).
const FENCE_REACH_TIMEOUT: Duration = Duration::from_secs(2);

fn command(c: FailoverCommand) -> Command {
    Command::Failover(Box::new(c))
}

/// Why a step attempt failed, and whether another attempt may help.
#[derive(Debug, Clone)]
struct StepError {
    message: String,
    retryable: bool,
}

impl From<ActionError> for StepError {
    fn from(e: ActionError) -> Self {
        StepError {
            message: e.to_string(),
            retryable: true,
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
        StepError { message, retryable }
    }
}

fn fatal(message: impl Into<String>) -> StepError {
    StepError {
        message: message.into(),
        retryable: false,
    }
}

/// The failover metrics.
#[derive(Clone)]
struct Metrics {
    started: IntCounterVec,
    completed: IntCounter,
    failed: IntCounter,
    duration: Histogram,
    refusals: IntCounterVec,
    steps: IntCounterVec,
    drift: IntCounter,
    epoch: IntGauge,
    paused: IntGauge,
    /// Whether automatic promotion would be blocked now, per group (leader only).
    blocked: prometheus::IntGaugeVec,
}

/// Every trigger label and refusal guard: their counters start at 0, so that alerts on
/// `increase()` see the first one.
const TRIGGERS: [&str; 5] = [
    "region_down",
    "primary_down",
    "failback",
    "dns_repair",
    "manual",
];
const GUARDS: [&str; 5] = [
    "last_region",
    "no_candidate",
    "max_lag_on_failover",
    "pre_hook",
    "dns_epoch",
];

impl Metrics {
    fn new(registry: &Registry) -> prometheus::Result<Metrics> {
        let metrics = Self::register(registry)?;
        for trigger in TRIGGERS {
            metrics.started.with_label_values(&[trigger]);
        }
        for guard in GUARDS {
            metrics.refusals.with_label_values(&[guard]);
        }
        for action in ACTIONS {
            for result in ["ok", "retry", "failed"] {
                metrics.steps.with_label_values(&[action, result]);
            }
        }
        Ok(metrics)
    }

    fn register(registry: &Registry) -> prometheus::Result<Metrics> {
        use crate::util::registered as reg;
        Ok(Metrics {
            started: reg(
                registry,
                IntCounterVec::new(
                    Opts::new(
                        "failoverd_failovers_started_total",
                        "Failovers decided by this agent as leader, by trigger.",
                    ),
                    &["trigger"],
                )?,
            )?,
            completed: reg(
                registry,
                IntCounter::new(
                    "failoverd_failovers_completed_total",
                    "Failovers this agent saw through to the end with every step done.",
                )?,
            )?,
            failed: reg(
                registry,
                IntCounter::new(
                    "failoverd_failovers_failed_total",
                    "Failovers that ended with a failed step.",
                )?,
            )?,
            duration: reg(
                registry,
                Histogram::with_opts(
                    HistogramOpts::new(
                        "failoverd_failover_duration_seconds",
                        "From the first Down verdict the leader saw to the end of the failover.",
                    )
                    .buckets(vec![
                        1.0, 2.0, 3.0, 5.0, 7.5, 10.0, 15.0, 20.0, 30.0, 60.0, 120.0,
                    ]),
                )?,
            )?,
            refusals: reg(
                registry,
                IntCounterVec::new(
                    Opts::new(
                        "failoverd_failover_refusals_total",
                        "Automatic actions refused, by guard (recorded once a minute while \
                         they stand).",
                    ),
                    &["guard"],
                )?,
            )?,
            steps: reg(
                registry,
                IntCounterVec::new(
                    Opts::new(
                        "failoverd_failover_steps_total",
                        "Step attempts run by this agent, by action and result.",
                    ),
                    &["action", "result"],
                )?,
            )?,
            drift: reg(
                registry,
                IntCounter::new(
                    "failoverd_route53_drift_total",
                    "Route53 weights found changed outside failoverd (left as they were).",
                )?,
            )?,
            epoch: reg(
                registry,
                IntGauge::new("failoverd_epoch", "The epoch of the latest decision.")?,
            )?,
            blocked: reg(
                registry,
                prometheus::IntGaugeVec::new(
                    Opts::new(
                        "failoverd_failover_blocked",
                        "Leader: 1 when losing the primary's region now would not allow an automatic promotion (see the status for why).",
                    ),
                    &["group"],
                )?,
            )?,
            paused: reg(
                registry,
                IntGauge::new(
                    "failoverd_automation_paused",
                    "1 while automatic failover is paused.",
                )?,
            )?,
        })
    }
}

/// What the reconciler shows in the status.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ReconcilerStatus {
    /// Things that are Down but not acted on yet, and why.
    pub waiting: Vec<String>,
    /// Refusals that stand now.
    pub refusals: Vec<String>,
}

/// The reconciler.
pub struct Reconciler {
    consensus: Arc<Consensus>,
    /// The members as configured, for building what the trigger reads.
    roster: Roster,
    regions: Vec<(String, u32)>,
    pg: HashMap<TargetId, actions::postgres::Member>,
    redis: HashMap<TargetId, actions::redis::Member>,
    /// What each member's writer record holds while it is writable.
    writer_values: HashMap<TargetId, String>,
    /// The writer record of each group that has one.
    writer_records: BTreeMap<String, crate::config::WriterRecordConfig>,
    fence_method: PostgresFence,
    replication: ReplicationConfig,
    route53: Option<Route53>,
    step_timeout: Duration,
    attempts: u32,
    backoff: Duration,
    cooldown: Duration,
    auto_failback: bool,
    hold_down: Duration,
    automatic: bool,
    metrics: Metrics,
    /// When this leader first saw each trigger's condition (Unix ms).
    first_seen: Mutex<BTreeMap<String, u64>>,
    /// Since when each region is Up by verdict.
    up_since: Mutex<BTreeMap<String, Instant>>,
    status: Mutex<ReconcilerStatus>,
    /// Woken when a step ends, so that the steps waiting for it start without a tick's delay.
    wake: tokio::sync::Notify,
    /// Steps (epoch, id) that succeeded and whose end is submitted to the log but not yet
    /// committed: the steps waiting for them may already start.
    succeeding: Mutex<BTreeSet<(u64, String)>>,
    /// Where events go.
    notifier: crate::notify::Notifier,
    /// The check that may veto an automatic failover.
    pre_hook: Option<crate::config::HookConfig>,
    /// When the hook last vetoed each trigger: it is asked again after [`VETO_RETRY`].
    vetoed: Mutex<BTreeMap<String, Instant>>,
    /// Held from reading the desired state to committing a decision (automatic or an
    /// operator's), so that no two decisions are made against the same state: two drains
    /// could otherwise both pass the last-region guard, or a forced failover race an
    /// automatic one.
    deciding: tokio::sync::Mutex<()>,
}

/// After a veto, the hook is asked again about the same trigger after this long.
const VETO_RETRY: Duration = Duration::from_secs(10);

/// The key of a trigger, for first-seen times and vetoes.
fn trigger_key(trigger: &Trigger) -> String {
    match trigger {
        Trigger::RegionDown { region } | Trigger::Failback { region } => {
            format!("region/{region}")
        }
        Trigger::PrimaryDown { group, .. } => format!("primary/{group}"),
        Trigger::DnsRepair => "dns".to_owned(),
        Trigger::Manual { action, region, .. } => format!("manual/{action}/{region}"),
    }
}

impl Reconciler {
    /// Builds the reconciler; creates the Route53 client when Route53 is configured.
    pub async fn new(
        config: &Config,
        consensus: Arc<Consensus>,
        registry: &Registry,
        notifier: crate::notify::Notifier,
    ) -> Result<Reconciler, ReconcilerError> {
        let topology = Topology::from_config(config);
        let pg = topology
            .targets
            .iter()
            .filter_map(|t| Some((t.id.clone(), actions::postgres::Member::of(t)?)))
            .collect();
        let redis = topology
            .targets
            .iter()
            .filter_map(|t| Some((t.id.clone(), actions::redis::Member::of(t)?)))
            .collect();
        let writer_values = topology
            .targets
            .iter()
            .filter_map(|t| {
                let value = match &t.spec {
                    crate::topology::TargetSpec::Postgres { member, .. } => member
                        .writer_value
                        .clone()
                        .or_else(|| Some(actions::postgres::Member::of(t)?.host())),
                    crate::topology::TargetSpec::Redis { member, .. } => {
                        member.writer_value.clone().or_else(|| {
                            url::Url::parse(&member.url)
                                .ok()?
                                .host_str()
                                .map(str::to_owned)
                        })
                    }
                    _ => None,
                }?;
                Some((t.id.clone(), value))
            })
            .collect();
        let step_timeout = config.failover.step_timeout();
        let route53 = match &config.route53 {
            Some(r) => Some(Route53::new(r, step_timeout).await?),
            None => None,
        };
        Ok(Reconciler {
            consensus,
            roster: Roster::from_config(config),
            regions: config
                .regions
                .iter()
                .map(|r| (r.name.clone(), r.weight))
                .collect(),
            pg,
            redis,
            writer_values,
            writer_records: config
                .route53
                .as_ref()
                .map(|r| r.writers.clone())
                .unwrap_or_default(),
            fence_method: config
                .postgres
                .as_ref()
                .map(|p| p.fence.clone())
                .unwrap_or_default(),
            replication: config
                .postgres
                .as_ref()
                .map(|p| p.replication.clone())
                .unwrap_or_default(),
            route53,
            step_timeout,
            attempts: config.failover.step_attempts(),
            backoff: config.failover.retry_backoff(),
            cooldown: config.failover.cooldown(),
            auto_failback: config.failover.auto_failback,
            automatic: config.failover.automatic,
            hold_down: config.failover.failback_hold_down(),
            metrics: Metrics::new(registry)?,
            first_seen: Mutex::new(BTreeMap::new()),
            up_since: Mutex::new(BTreeMap::new()),
            status: Mutex::new(ReconcilerStatus::default()),
            wake: tokio::sync::Notify::new(),
            succeeding: Mutex::new(BTreeSet::new()),
            notifier,
            pre_hook: config.failover.pre_hook.clone(),
            vetoed: Mutex::new(BTreeMap::new()),
            deciding: tokio::sync::Mutex::new(()),
        })
    }

    /// On the leader: what losing each Postgres primary's region now would lead to (also
    /// sets `failoverd_failover_blocked`); empty elsewhere.
    pub fn readiness(&self) -> BTreeMap<String, Readiness> {
        let Some(view) = self.consensus.leader_view() else {
            return BTreeMap::new();
        };
        let readiness = self.roster.readiness(&view);
        for (group, r) in &readiness {
            self.metrics
                .blocked
                .with_label_values(&[group])
                .set(i64::from(matches!(
                    r.choice,
                    super::candidate::Choice::Blocked { .. }
                )));
        }
        readiness
    }

    /// What is waiting and what is refused, as of the last tick (leader only).
    pub fn status(&self) -> ReconcilerStatus {
        self.status
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Runs until `shutdown`.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let mut ticker = tokio::time::interval(TICK);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut running: HashMap<(u64, String), JoinHandle<()>> = HashMap::new();
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = ticker.tick() => {}
                _ = self.wake.notified() => {}
            }
            running.retain(|_, task| !task.is_finished());
            let (epoch, paused) = self.consensus.read_desired(|d| (d.epoch, d.paused));
            self.metrics
                .epoch
                .set(i64::try_from(epoch).unwrap_or(i64::MAX));
            self.metrics.paused.set(i64::from(paused));
            if !self.consensus.is_leader() {
                for (_, task) in running.drain() {
                    task.abort();
                }
                self.first_seen
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .clear();
                self.up_since
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .clear();
                // An end that never committed counts for nothing with the next leader.
                self.succeeding
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .clear();
                *self.status.lock().unwrap_or_else(|p| p.into_inner()) =
                    ReconcilerStatus::default();
                continue;
            }
            let desired = self.consensus.desired();
            for record in desired.in_progress() {
                let succeeding: BTreeSet<String> = self
                    .succeeding
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .iter()
                    .filter(|(epoch, _)| *epoch == record.epoch)
                    .map(|(_, id)| id.clone())
                    .collect();
                for step in ready_steps_after(record, &succeeding) {
                    let key = (record.epoch, step.id.clone());
                    if running.contains_key(&key) {
                        continue;
                    }
                    let this = self.clone();
                    let step = step.clone();
                    let decision = record.decision.clone();
                    let epoch = record.epoch;
                    running.insert(
                        key,
                        tokio::spawn(async move { this.run_step(epoch, step, decision).await }),
                    );
                }
                if !running.keys().any(|(epoch, _)| *epoch == record.epoch) {
                    if let Some(outcome) = settled(record) {
                        self.finish(record, outcome).await;
                    }
                }
            }
            let _deciding = self.deciding.lock().await;
            // Read again under the lock: an operator's decision may have just been made.
            let desired = self.consensus.desired();
            let (assessment, slot_owners) = self.assess(&desired);
            self.record_slot_owners(&desired, &slot_owners).await;
            self.record_refusals(&desired, &assessment.refusals).await;
            *self.status.lock().unwrap_or_else(|p| p.into_inner()) = ReconcilerStatus {
                waiting: assessment.waiting.clone(),
                refusals: assessment
                    .refusals
                    .iter()
                    .map(|r| r.reason.clone())
                    .collect(),
            };
            // A live drill that moved on changed the state: assess again at the next tick.
            if self.advance_live_drill(&desired).await {
                continue;
            }
            if let Some(proposal) = assessment.proposal {
                self.decide(&desired, proposal).await;
            }
        }
        for (_, task) in running.drain() {
            task.abort();
        }
    }

    /// Runs the trigger on the current verdict; also returns the Redis Clusters' slot owners.
    fn assess(
        &self,
        desired: &Desired,
    ) -> (Assessment, BTreeMap<String, BTreeMap<String, TargetId>>) {
        let Some(mut inputs) = self
            .consensus
            .leader_view()
            .map(|view| self.roster.trigger_inputs(&view))
        else {
            return (Assessment::default(), BTreeMap::new());
        };
        let now = Instant::now();
        let now_ms = now_ms();
        let mut up_for = BTreeMap::new();
        {
            let mut up_since = self.up_since.lock().unwrap_or_else(|p| p.into_inner());
            let mut first_seen = self.first_seen.lock().unwrap_or_else(|p| p.into_inner());
            for (region, _) in &self.regions {
                let state = inputs.verdict.regions.get(region).copied();
                if state == Some(State::Up) {
                    let since = *up_since.entry(region.clone()).or_insert(now);
                    up_for.insert(region.clone(), now.saturating_duration_since(since));
                } else {
                    up_since.remove(region);
                }
                let key = format!("region/{region}");
                if state == Some(State::Down) {
                    first_seen.entry(key).or_insert(now_ms);
                } else {
                    first_seen.remove(&key);
                }
            }
            let lost = inputs
                .groups
                .iter()
                .map(|g| (&g.group, g.primary_down))
                .chain(inputs.redis.iter().map(|r| {
                    let lost = r.master_down || inputs.cut_off.contains(&r.master_region);
                    (&r.group, lost)
                }));
            for (group, down) in lost {
                let key = format!("primary/{group}");
                if down {
                    first_seen.entry(key).or_insert(now_ms);
                } else {
                    first_seen.remove(&key);
                }
            }
            for shard in &mut inputs.redis {
                shard.lost_since_ms = first_seen.get(&format!("primary/{}", shard.group)).copied();
            }
        }
        let region_state = inputs.verdict.regions.clone();
        let assessment = trigger::assess(&World {
            now_ms,
            desired,
            regions: &self.regions,
            region_state: &region_state,
            region_up_for: &up_for,
            cut_off: &inputs.cut_off,
            groups: &inputs.groups,
            redis: &inputs.redis,
            auto_failback: self.auto_failback,
            hold_down: self.hold_down,
            route53: self.route53.is_some(),
            automatic: self.automatic,
        });
        (assessment, inputs.slot_owners)
    }

    /// Records each Redis Cluster's slot owners when they changed, with who moved them.
    async fn record_slot_owners(
        &self,
        desired: &Desired,
        owners: &BTreeMap<String, BTreeMap<String, TargetId>>,
    ) {
        for (cluster, owners) in owners {
            let Some(cmd) = super::cluster::slot_moves(desired, cluster, owners, now_ms()) else {
                continue;
            };
            if let FailoverCommand::SlotOwners { moved, .. } = &cmd {
                for m in moved {
                    tracing::warn!(
                        cluster = %m.cluster,
                        slots = %m.slots.join(","),
                        from = %m.from,
                        to = %m.to,
                        by = ?m.by,
                        "slot range moved to a new master"
                    );
                }
            }
            if let Err(e) = self.consensus.write(command(cmd)).await {
                tracing::warn!(cluster = %cluster, error = %e, "cannot record the slot owners");
            }
        }
    }

    /// When this leader first saw what set `trigger` off.
    fn first_seen(&self, trigger: &Trigger, now: u64) -> u64 {
        let key = trigger_key(trigger);
        self.first_seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
            .copied()
            .unwrap_or(now)
    }

    async fn record_refusals(&self, desired: &Desired, refusals: &[Refused]) {
        let now = now_ms();
        for refused in refusals {
            let key = format!("{}/{}", refused.subject, refused.guard);
            if desired
                .refusals
                .get(&key)
                .is_some_and(|at| now.saturating_sub(*at) < REFUSAL_REPEAT_MS)
            {
                continue;
            }
            tracing::warn!(
                subject = %refused.subject,
                guard = %refused.guard,
                reason = %refused.reason,
                "automatic failover refused"
            );
            let command = command(FailoverCommand::Refuse(Refusal {
                subject: refused.subject.clone(),
                guard: refused.guard.clone(),
                reason: refused.reason.clone(),
                at_ms: now,
                by: self.consensus.agent_id().to_owned(),
            }));
            match self.consensus.write(command).await {
                Ok(_) => {
                    self.metrics
                        .refusals
                        .with_label_values(&[&refused.guard])
                        .inc();
                    self.notifier.send(
                        "refusal",
                        None,
                        format!("failoverd refused an automatic action: {}", refused.reason),
                        serde_json::json!({
                            "subject": refused.subject,
                            "guard": refused.guard,
                            "reason": refused.reason,
                        }),
                    );
                }
                Err(e) => tracing::warn!(error = %e, "cannot record the refusal"),
            }
        }
    }

    /// Carries out an operator's request on the leader: pause, resume, or a drain, restore or
    /// forced failover (planned, and committed unless it is a dry run). Operator decisions
    /// skip the pre-failover hook: the operator is the approval.
    pub async fn operate(&self, request: manual::Request) -> Result<manual::Reply, OpError> {
        self.consensus.confirm_leader().await.map_err(|e| {
            OpError::new(
                ErrorKind::Unavailable,
                "no_quorum",
                format!("this agent cannot confirm it leads: {e}"),
            )
        })?;
        let commit_failed = |e: String| {
            OpError::new(
                ErrorKind::Unavailable,
                "no_quorum",
                format!("cannot commit to the log: {e}"),
            )
        };
        let mode = |paused: bool| if paused { "paused" } else { "active" }.to_owned();
        // One decision at a time, against the state it was checked on.
        let _deciding = self.deciding.lock().await;
        match request {
            manual::Request::Pause { .. }
            | manual::Request::Resume { .. }
            | manual::Request::Drill { .. }
            | manual::Request::LiveDrill { .. }
                if request.reason().trim().is_empty() =>
            {
                Err(OpError::new(
                    ErrorKind::BadInput,
                    "reason_required",
                    "say why in `reason`: it goes into the history",
                ))
            }
            manual::Request::Pause { actor, reason } => self
                .set_paused(true, actor, reason)
                .await
                .map_err(commit_failed),
            manual::Request::Resume { actor, reason } => self
                .set_paused(false, actor, reason)
                .await
                .map_err(commit_failed),
            manual::Request::Drill {
                actor,
                reason,
                region,
            } => {
                let report = self.drill(actor, reason, region.as_deref()).await?;
                let blocked = report.regions.iter().filter(|r| !r.ready).count();
                self.consensus
                    .write(command(FailoverCommand::Drill(Box::new(report.clone()))))
                    .await
                    .map_err(commit_failed)?;
                Ok(manual::Reply {
                    epoch: None,
                    dry_run: true,
                    mode: mode(self.consensus.read_desired(|d| d.paused)),
                    decision: None,
                    message: if blocked == 0 {
                        "readiness drill: every region could be failed over now".into()
                    } else {
                        format!("readiness drill: {blocked} region(s) could not be failed over now")
                    },
                    drill: Some(report),
                })
            }
            manual::Request::LiveDrill {
                actor,
                reason,
                region,
                hold_ms,
            } => self.start_live_drill(actor, reason, region, hold_ms).await,
            manual::Request::Change {
                operation,
                actor,
                reason,
                dry_run,
            } => {
                let (desired, decision) = self.plan(&operation, &actor, &reason)?;
                let text = describe(&decision);
                tracing::warn!(
                    actor = %actor,
                    reason = %reason,
                    action = operation.action(),
                    region = operation.region(),
                    dry_run,
                    "operator request"
                );
                if dry_run {
                    return Ok(manual::Reply {
                        epoch: None,
                        dry_run,
                        mode: mode(desired.paused),
                        decision: Some(decision),
                        drill: None,
                        message: format!("dry run, nothing done: {text}"),
                    });
                }
                let epoch = self.commit(decision.clone()).await.map_err(commit_failed)?;
                self.wake.notify_one();
                Ok(manual::Reply {
                    epoch: Some(epoch),
                    dry_run,
                    mode: mode(desired.paused),
                    decision: Some(decision),
                    drill: None,
                    message: format!("failover {epoch} started: {text}"),
                })
            }
        }
    }

    /// What the leader sees, on the leader; 503 `no_leader` elsewhere.
    fn leading_view(&self) -> Result<LeaderView, OpError> {
        self.consensus.leader_view().ok_or_else(|| {
            OpError::new(
                ErrorKind::Unavailable,
                "no_leader",
                "this agent does not lead",
            )
        })
    }

    /// The decision an operator's drain, restore or forced failover becomes, against the
    /// replicated state it was checked on. Called with `deciding` held.
    fn plan(
        &self,
        operation: &manual::Operation,
        actor: &str,
        reason: &str,
    ) -> Result<(Desired, Decision), OpError> {
        let view = self.leading_view()?;
        let inputs = self.roster.trigger_inputs(&view);
        let desired = self.consensus.desired();
        let proposal = manual::propose(
            operation,
            actor,
            reason,
            &manual::Inputs {
                desired: &desired,
                regions: &self.regions,
                groups: &inputs.groups,
                redis: &inputs.redis,
                cut_off: &inputs.cut_off,
            },
            |group, to, allow_data_loss| {
                self.roster.manual_choice(
                    &view,
                    &group.group,
                    &group.primary_region,
                    to,
                    allow_data_loss,
                )
            },
        )?;
        let decision = self.decision(&desired, proposal);
        Ok((desired, decision))
    }

    /// Starts a live drill of `region`: checks it as a readiness drill would, then commits its
    /// drain; [`Reconciler::advance_live_drill`] restores it after the hold. Called with
    /// `deciding` held.
    async fn start_live_drill(
        &self,
        actor: String,
        reason: String,
        region: String,
        hold_ms: u64,
    ) -> Result<manual::Reply, OpError> {
        if let Some(drill) = self.consensus.read_desired(|d| d.live_drill.clone()) {
            return Err(OpError::new(
                ErrorKind::Conflict,
                "drill_running",
                format!(
                    "a live drill of {} by {} is in progress (failover {})",
                    drill.region, drill.actor, drill.drain_epoch
                ),
            ));
        }
        let report = self
            .drill(actor.clone(), reason.clone(), Some(&region))
            .await?;
        if !report.ready {
            let blocked: Vec<String> = report
                .regions
                .iter()
                .flat_map(|r| r.checks.iter())
                .filter(|c| !c.ok)
                .map(|c| format!("{}: {}", c.check, c.detail))
                .collect();
            return Err(OpError::new(
                ErrorKind::Refused,
                "drill_blocked",
                format!(
                    "region {region} cannot be failed over now: {}",
                    blocked.join("; ")
                ),
            ));
        }
        let operation = manual::Operation::Drain {
            region: region.clone(),
        };
        let (desired, mut decision) =
            self.plan(&operation, &actor, &format!("live drill: {reason}"))?;
        decision.drill = Some(DrillPart::Drain(Box::new(LiveDrill {
            region: region.clone(),
            actor: actor.clone(),
            reason: reason.clone(),
            hold_ms,
            started_ms: decision.decided_at_ms,
            // The decision's own epoch, set when it is applied.
            drain_epoch: 0,
            restore_epoch: None,
        })));
        let text = describe(&decision);
        tracing::warn!(actor = %actor, reason = %reason, region = %region, hold_ms, "live drill");
        let epoch = self.commit(decision.clone()).await.map_err(|e| {
            OpError::new(
                ErrorKind::Unavailable,
                "no_quorum",
                format!("cannot commit to the log: {e}"),
            )
        })?;
        self.wake.notify_one();
        Ok(manual::Reply {
            epoch: Some(epoch),
            dry_run: false,
            mode: if desired.paused { "paused" } else { "active" }.into(),
            decision: Some(decision),
            drill: Some(report),
            message: format!(
                "live drill started: failover {epoch} drains {region} ({text}); it is restored \
                 {} s after the drain ends. Follow it with GET /v1/status (failover.live_drill) \
                 and GET /v1/history",
                hold_ms / 1000
            ),
        })
    }

    /// Moves the live drill on, on the leader, with `deciding` held: once its drain has ended
    /// and the hold is over (at once when the drain failed: a drill leaves the region as it
    /// found it), the region is restored — only while its verdict is Up: a region that really
    /// failed meanwhile stays out. Once the restore has ended, the drill is recorded with its
    /// milestones.
    /// Returns whether it committed anything.
    async fn advance_live_drill(&self, desired: &Desired) -> bool {
        let Some(drill) = desired.live_drill.clone() else {
            return false;
        };
        let drain = desired.failover(drill.drain_epoch);
        let restore = drill.restore_epoch.and_then(|e| desired.failover(e));
        let finish = |outcome: Outcome, detail: String| LiveDrillRecord {
            milestones: crate::desired::milestones(&drill, drain, restore),
            drill: drill.clone(),
            outcome,
            finished_ms: now_ms(),
            detail,
        };
        let region = &drill.region;
        let record = match drill.restore_epoch {
            None => {
                // A drain whose record is gone (it cannot be, the history keeps it) counts as
                // ended: the region is still put back.
                let (ended, completed) = match drain {
                    Some(d) => (d.finished_ms, d.outcome == Some(Outcome::Completed)),
                    None => (Some(0), false),
                };
                let Some(ended) = ended else { return false };
                if completed && ended.saturating_add(drill.hold_ms) > now_ms() {
                    return false;
                }
                if !desired.drained.contains(region) {
                    Some(finish(
                        Outcome::Failed,
                        format!("{region} was put back into DNS outside the drill"),
                    ))
                } else if self.region_state(region) != Some(State::Up) {
                    self.note_waiting(format!(
                        "live drill: {region} stays drained until its verdict is Up again"
                    ));
                    None
                } else {
                    match self.restore_for_drill(&drill).await {
                        Ok(committed) => return committed,
                        Err(record) => Some(record),
                    }
                }
            }
            Some(restore_epoch) => match restore.map(|r| r.outcome) {
                Some(None) => None,
                Some(Some(Outcome::Completed))
                    if drain.is_some_and(|d| d.outcome == Some(Outcome::Completed)) =>
                {
                    Some(finish(
                        Outcome::Completed,
                        format!(
                            "{region} was failed over (failover {}) and back (failover \
                             {restore_epoch})",
                            drill.drain_epoch
                        ),
                    ))
                }
                Some(Some(Outcome::Completed)) => Some(finish(
                    Outcome::Failed,
                    format!(
                        "the drain (failover {}) failed; {region} was put back (failover \
                         {restore_epoch})",
                        drill.drain_epoch
                    ),
                )),
                _ => Some(finish(
                    Outcome::Failed,
                    format!(
                        "the restore (failover {restore_epoch}) failed: see GET \
                         /v1/failovers/{restore_epoch} and restore {region} by hand"
                    ),
                )),
            },
        };
        let Some(record) = record else { return false };
        let summary = format!("live drill of {region}: {}", record.detail);
        let details = serde_json::to_value(&record).unwrap_or_default();
        let outcome = record.outcome;
        match self
            .consensus
            .write(command(FailoverCommand::LiveDrillFinished(Box::new(
                record,
            ))))
            .await
        {
            Ok(_) => {
                tracing::warn!(region = %region, outcome = ?outcome, "live drill ended");
                self.notifier
                    .send("drill_finished", Some(drill.drain_epoch), summary, details);
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot record the end of the live drill");
                false
            }
        }
    }

    /// Decides the restore that ends `drill`: whether it was committed, or the record of a
    /// drill that cannot go on.
    async fn restore_for_drill(&self, drill: &LiveDrill) -> Result<bool, LiveDrillRecord> {
        let operation = manual::Operation::Restore {
            region: drill.region.clone(),
        };
        let reason = format!("live drill: {}", drill.reason);
        match self.plan(&operation, &drill.actor, &reason) {
            Ok((_, mut decision)) => {
                decision.drill = Some(DrillPart::Restore);
                match self.commit(decision).await {
                    Ok(_) => {
                        self.wake.notify_one();
                        Ok(true)
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot commit the drill's restore");
                        Ok(false)
                    }
                }
            }
            // Paused, another failover running, leadership in question: next tick.
            Err(e) if matches!(e.kind, ErrorKind::Conflict | ErrorKind::Unavailable) => {
                self.note_waiting(format!(
                    "live drill: restoring {} waits: {}",
                    drill.region, e.message
                ));
                Ok(false)
            }
            Err(e) => Err(LiveDrillRecord {
                milestones: Vec::new(),
                drill: drill.clone(),
                outcome: Outcome::Failed,
                finished_ms: now_ms(),
                detail: format!("cannot restore {}: {}", drill.region, e.message),
            }),
        }
    }

    /// The verdict on `region`, as the leader holds it.
    fn region_state(&self, region: &str) -> Option<State> {
        self.consensus
            .leader_view()
            .and_then(|view| view.verdict.regions.get(region).copied())
    }

    /// Adds a line to what the status shows as waiting, until the next assessment.
    fn note_waiting(&self, line: String) {
        self.status
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .waiting
            .push(line);
    }

    /// A readiness drill: for each region, whether failing it over would go through now —
    /// a candidate for each Postgres group and Redis shard whose primary is there (streaming,
    /// within the data-loss guard), another region left in DNS, and Route53 answering with
    /// the epoch record the log last wrote. Changes nothing.
    async fn drill(
        &self,
        actor: String,
        reason: String,
        only: Option<&str>,
    ) -> Result<crate::desired::DrillReport, OpError> {
        if let Some(region) = only.filter(|r| !self.regions.iter().any(|(n, _)| n == r)) {
            return Err(OpError::new(
                ErrorKind::NotFound,
                "unknown_region",
                format!("no region {region:?} in the configuration"),
            ));
        }
        use crate::desired::{DrillCheck, DrillRegion};
        let view = self.leading_view()?;
        let inputs = self.roster.trigger_inputs(&view);
        let desired = self.consensus.desired();
        let shown = |e: Option<u64>| e.map_or("nothing".to_owned(), |e| e.to_string());
        let route53 = match &self.route53 {
            None => None,
            Some(r53) => Some(match r53.view().await {
                Ok(view) if view.epoch == desired.dns_epoch => DrillCheck {
                    check: "route53".into(),
                    ok: true,
                    detail: format!(
                        "answers; the epoch record holds {}, as the log last wrote",
                        shown(view.epoch)
                    ),
                },
                Ok(view) => DrillCheck {
                    check: "route53".into(),
                    ok: false,
                    detail: format!(
                        "the epoch record holds {} but the log last wrote {}: a DNS change \
                         would be refused",
                        shown(view.epoch),
                        shown(desired.dns_epoch)
                    ),
                },
                Err(e) => DrillCheck {
                    check: "route53".into(),
                    ok: false,
                    detail: format!("cannot read the records: {e}"),
                },
            }),
        };
        let mut regions = Vec::new();
        for (region, _) in self
            .regions
            .iter()
            .filter(|(r, _)| only.is_none_or(|o| o == r))
        {
            let mut checks = Vec::new();
            let drained = desired.drained.contains(region);
            let elsewhere = self.regions.iter().any(|(name, weight)| {
                name != region && *weight > 0 && !desired.drained.contains(name)
            });
            checks.push(DrillCheck {
                check: "dns".into(),
                ok: drained || elsewhere,
                detail: if drained {
                    "drained already".into()
                } else if elsewhere {
                    "other regions serve".into()
                } else {
                    "draining it would leave no region in DNS".into()
                },
            });
            for group in inputs.groups.iter().filter(|g| &g.primary_region == region) {
                let choice = self
                    .roster
                    .manual_choice(&view, &group.group, region, None, false);
                checks.push(match choice {
                    super::candidate::Choice::Promote {
                        target,
                        estimated_loss_bytes,
                        ..
                    } => DrillCheck {
                        check: group.group.clone(),
                        ok: true,
                        detail: format!(
                            "would promote {target} (estimated loss {estimated_loss_bytes} bytes)"
                        ),
                    },
                    super::candidate::Choice::Blocked { reason } => DrillCheck {
                        check: group.group.clone(),
                        ok: false,
                        detail: reason,
                    },
                });
            }
            for shard in inputs.redis.iter().filter(|s| &s.master_region == region) {
                checks.push(match &shard.candidate {
                    Some((target, offset)) => DrillCheck {
                        check: shard.group.clone(),
                        ok: true,
                        detail: format!("would promote {target} (offset {offset})"),
                    },
                    None => DrillCheck {
                        check: shard.group.clone(),
                        ok: false,
                        detail: format!("no healthy, linked replica outside region {region}"),
                    },
                });
            }
            checks.extend(route53.clone());
            regions.push(DrillRegion {
                region: region.clone(),
                ready: checks.iter().all(|c| c.ok),
                checks,
            });
        }
        tracing::warn!(actor = %actor, reason = %reason, "readiness drill");
        Ok(crate::desired::DrillReport {
            ready: regions.iter().all(|r| r.ready),
            actor,
            reason,
            at_ms: now_ms(),
            run_by: self.consensus.agent_id().to_owned(),
            regions,
        })
    }

    /// Pauses or resumes automation; idempotent (a second pause records nothing).
    async fn set_paused(
        &self,
        paused: bool,
        actor: String,
        reason: String,
    ) -> Result<manual::Reply, String> {
        let mode = if paused { "paused" } else { "active" }.to_owned();
        if self.consensus.read_desired(|d| d.paused) == paused {
            return Ok(manual::Reply {
                epoch: None,
                dry_run: false,
                mode,
                decision: None,
                drill: None,
                message: format!(
                    "automation is {} already",
                    if paused { "paused" } else { "active" }
                ),
            });
        }
        tracing::warn!(actor = %actor, reason = %reason, paused, "operator request");
        self.consensus
            .write(command(FailoverCommand::SetPaused {
                paused,
                by: actor.clone(),
                at_ms: now_ms(),
                reason: reason.clone(),
            }))
            .await?;
        self.notifier.send(
            if paused { "paused" } else { "resumed" },
            None,
            format!(
                "failoverd automation {} by {actor}: {reason}",
                if paused { "paused" } else { "resumed" }
            ),
            serde_json::json!({ "actor": actor, "reason": reason }),
        );
        Ok(manual::Reply {
            epoch: None,
            dry_run: false,
            mode,
            decision: None,
            drill: None,
            message: format!("automation {}", if paused { "paused" } else { "resumed" }),
        })
    }

    /// The decision `proposal` becomes: weights, writer records and the planned steps.
    fn decision(&self, desired: &Desired, proposal: trigger::Proposal) -> Decision {
        // Against what the last successful DNS change wrote: weights a failed change did not
        // write are planned again.
        let configured: BTreeMap<String, u32> = self.regions.iter().cloned().collect();
        let before = if desired.dns_weights.is_empty() {
            configured
        } else {
            desired.dns_weights.clone()
        };
        let after = trigger::weights_after(&self.regions, &desired.drained, &proposal);
        // Writer records of the groups whose writable member moves.
        let writers: Vec<WriterRecord> = proposal
            .promotion
            .iter()
            .map(|p| (&p.group, &p.to))
            .chain(proposal.redis.iter().map(|r| (&r.group, &r.to)))
            .filter_map(|(group, to)| {
                let record = self.writer_records.get(group)?;
                Some(WriterRecord {
                    group: group.clone(),
                    name: record.name.clone(),
                    record_type: record.record_type.clone(),
                    ttl: record.ttl,
                    value: self.writer_values.get(to)?.clone(),
                })
            })
            .collect();
        let steps = super::plan::plan(
            proposal.promotion.as_ref(),
            &proposal.followers,
            &proposal.redis,
            &super::plan::Dns {
                route53: self.route53.is_some(),
                before,
                after,
                writers: &writers,
            },
        );
        let now = now_ms();
        Decision {
            first_seen_ms: self.first_seen(&proposal.trigger, now),
            trigger: proposal.trigger,
            decided_by: self.consensus.agent_id().to_owned(),
            decided_at_ms: now,
            drain: proposal.drain,
            restore: proposal.restore,
            promotion: proposal.promotion,
            redis: proposal.redis,
            refusal: proposal.refusal.map(|r| r.reason),
            drill: None,
            steps,
        }
    }

    /// Decides `proposal` automatically, after the pre-failover hook approves.
    async fn decide(&self, desired: &Desired, proposal: trigger::Proposal) {
        let decision = self.decision(desired, proposal);
        let summary = serde_json::to_string(&decision.trigger).unwrap_or_default();
        let key = trigger_key(&decision.trigger);
        if let Some(hook) = &self.pre_hook {
            let recently = self
                .vetoed
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(&key)
                .is_some_and(|at| at.elapsed() < VETO_RETRY);
            if recently {
                return;
            }
            let body = serde_json::to_vec(&decision).unwrap_or_default();
            match super::hook::ask(hook, &body).await {
                super::hook::HookAnswer::Proceed(note) => {
                    tracing::info!(trigger = %summary, note = %note, "pre-failover hook: proceed")
                }
                super::hook::HookAnswer::Veto(reason) => {
                    self.vetoed
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert(key.clone(), Instant::now());
                    let refused = Refused {
                        subject: key,
                        guard: "pre_hook".into(),
                        reason: format!("blocked because {reason}"),
                    };
                    self.record_refusals(desired, &[refused]).await;
                    return;
                }
            }
        }
        if let Err(e) = self.commit(decision).await {
            tracing::warn!(error = %e, "cannot commit the failover decision");
        }
    }

    /// Commits `decision`; returns its epoch.
    async fn commit(&self, decision: Decision) -> Result<u64, String> {
        let label = decision.trigger.label();
        let summary = serde_json::to_string(&decision.trigger).unwrap_or_default();
        let text = describe(&decision);
        let details = serde_json::to_value(&decision).unwrap_or_default();
        let epoch = self
            .consensus
            .write(command(FailoverCommand::Decide(Box::new(decision))))
            .await?;
        self.metrics.started.with_label_values(&[label]).inc();
        tracing::warn!(epoch, trigger = %summary, "failover decided");
        self.notifier.send(
            "failover_started",
            Some(epoch),
            format!("failover {epoch} started: {text}"),
            details,
        );
        Ok(epoch)
    }

    /// A planned switchover whose promotion did not happen must not leave the old primary
    /// fenced (the group would have no writable member): its fence is lifted — but only once
    /// the candidate is seen still a replica, so that two writable primaries never stand.
    async fn undo_planned_fences(&self, record: &FailoverRecord) {
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
                let outcome =
                    match actions::postgres::in_recovery(candidate, self.step_timeout).await {
                        Ok(true) => {
                            actions::postgres::unfence(old, &self.fence_method, self.step_timeout)
                                .await
                                .map_err(|e| e.to_string())
                        }
                        Ok(false) => Err(format!(
                            "{} is out of recovery: the old primary stays fenced",
                            candidate.name
                        )),
                        Err(e) => Err(format!(
                            "cannot see whether {} is still a replica: {e}",
                            candidate.name
                        )),
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
                let previous = step
                    .detail
                    .as_deref()
                    .and_then(|d| d.rsplit_once(PREVIOUS_SETTING))
                    .and_then(|(_, n)| n.trim_end_matches(')').parse().ok())
                    .unwrap_or(0);
                let outcome = match actions::redis::role(candidate, self.step_timeout).await {
                    Ok(role) if role == "slave" => {
                        actions::redis::unfence(old, previous, self.step_timeout)
                            .await
                            .map_err(|e| e.to_string())
                    }
                    Ok(role) => Err(format!(
                        "{} answers as {role}: the old master stays fenced",
                        candidate.name
                    )),
                    Err(e) => Err(format!(
                        "cannot see whether {} is still a replica: {e}",
                        candidate.name
                    )),
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

    async fn finish(&self, record: &FailoverRecord, outcome: Outcome) {
        if outcome == Outcome::Failed {
            self.undo_planned_fences(record).await;
        }
        let now = now_ms();
        let command = command(FailoverCommand::Finish {
            epoch: record.epoch,
            outcome,
            at_ms: now,
            cooldown_until_ms: record.decision.cooldown_until(now, self.cooldown),
        });
        if let Err(e) = self.consensus.write(command).await {
            tracing::warn!(error = %e, "cannot record the end of the failover");
            return;
        }
        match outcome {
            Outcome::Completed => self.metrics.completed.inc(),
            Outcome::Failed => self.metrics.failed.inc(),
        }
        let took = now.saturating_sub(record.decision.first_seen_ms);
        self.metrics.duration.observe(took as f64 / 1000.0);
        let failed_steps: Vec<String> = record
            .steps
            .iter()
            .filter(|s| s.state == crate::desired::StepState::Failed)
            .map(|s| format!("{}: {}", s.step.id, s.detail.clone().unwrap_or_default()))
            .collect();
        let (event, text) = match outcome {
            Outcome::Completed => (
                "failover_completed",
                format!(
                    "failover {} completed in {:.1} s: {}",
                    record.epoch,
                    took as f64 / 1000.0,
                    describe(&record.decision)
                ),
            ),
            Outcome::Failed => (
                "failover_failed",
                format!(
                    "failover {} FAILED after {:.1} s: {}",
                    record.epoch,
                    took as f64 / 1000.0,
                    failed_steps.join("; ")
                ),
            ),
        };
        self.notifier.send(
            event,
            Some(record.epoch),
            text,
            serde_json::json!({ "duration_ms": took, "failed_steps": failed_steps }),
        );
        tracing::warn!(
            epoch = record.epoch,
            outcome = ?outcome,
            took_ms = took,
            "failover finished"
        );
    }

    /// Runs one step (see [`Reconciler::try_step`]) and wakes the loop when it ends.
    async fn run_step(self: Arc<Self>, epoch: u64, step: Step, decision: Decision) {
        self.try_step(epoch, &step, &decision).await;
        self.wake.notify_one();
    }

    /// The attempts of one step, with backoff, each recorded before it acts: that record
    /// commits only while this agent leads, so it is also the proof of leadership.
    async fn try_step(&self, epoch: u64, step: &Step, decision: &Decision) {
        let action = action_label(&step.action);
        let mut previous_error = None;
        for number in 1..=self.attempts {
            if !self.consensus.read_desired(|d| d.running.contains(&epoch)) {
                return;
            }
            let started = command(FailoverCommand::StepStarted {
                epoch,
                step: step.id.clone(),
                attempt: Attempt {
                    agent: self.consensus.agent_id().to_owned(),
                    number,
                    started_ms: now_ms(),
                    previous_error: previous_error.clone(),
                },
            });
            if let Err(e) = self.consensus.write(started).await {
                tracing::info!(step = %step.id, error = %e, "cannot record the step start (no longer leader?): step left to the next leader");
                return;
            }
            tracing::info!(epoch, step = %step.id, attempt = number, "step started");
            let result = self.execute(epoch, step, decision).await;
            let (ok, detail, give_up) = match result {
                Ok(detail) => (true, detail, false),
                Err(e) if e.retryable && number < self.attempts => {
                    self.metrics
                        .steps
                        .with_label_values(&[action, "retry"])
                        .inc();
                    tracing::warn!(epoch, step = %step.id, attempt = number, error = %e.message, "step attempt failed; retrying");
                    previous_error = Some(e.message);
                    tokio::time::sleep(self.backoff * 2u32.saturating_pow(number - 1)).await;
                    continue;
                }
                Err(e) => (
                    false,
                    format!("after {number} attempt(s): {}", e.message),
                    !e.retryable,
                ),
            };
            self.metrics
                .steps
                .with_label_values(&[action, if ok { "ok" } else { "failed" }])
                .inc();
            if ok {
                tracing::info!(epoch, step = %step.id, detail = %detail, "step succeeded");
            } else {
                tracing::error!(epoch, step = %step.id, detail = %detail, "step failed");
            }
            let finished = command(FailoverCommand::StepFinished {
                epoch,
                step: step.id.clone(),
                ok,
                detail,
                at_ms: now_ms(),
                give_up,
            });
            let committed = match self.consensus.submit(finished).await {
                Ok(committed) => committed,
                Err(e) => {
                    tracing::warn!(step = %step.id, error = %e, "cannot record the step end");
                    return;
                }
            };
            // The steps waiting for this one start now: their records go in the log behind
            // its end, so they cannot commit without it.
            let key = (epoch, step.id.clone());
            if ok {
                self.succeeding
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(key.clone());
                self.wake.notify_one();
            }
            if let Err(e) = committed.await {
                tracing::warn!(step = %step.id, error = %e, "cannot record the step end");
            }
            self.succeeding
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&key);
            return;
        }
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

    async fn execute(
        &self,
        epoch: u64,
        step: &Step,
        decision: &Decision,
    ) -> Result<String, StepError> {
        match &step.action {
            Action::FencePostgres { target } => {
                let member = self.member(target)?;
                let cut_off = decision
                    .promotion
                    .as_ref()
                    .is_some_and(|p| p.old_primary_cut_off);
                let reach = self.step_timeout.min(FENCE_REACH_TIMEOUT);
                fence_outcome(
                    &member.name,
                    actions::postgres::fence(member, &self.fence_method, reach).await,
                    cut_off,
                )
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
                let member = self.member(target)?;
                let new_primary = self.member(primary)?;
                let timeline = actions::postgres::timeline(new_primary, self.step_timeout).await?;
                let (host, port) = actions::postgres::address(new_primary)?;
                let password = match &self.replication.password {
                    Some(secret) => Some(load(secret)?),
                    None => None,
                };
                let port_text = port.to_string();
                let mut pairs = vec![
                    ("host", host.as_str()),
                    ("port", port_text.as_str()),
                    ("user", self.replication.user.as_str()),
                    ("application_name", member.name.as_str()),
                ];
                if let Some(p) = &password {
                    pairs.push(("password", p.expose()));
                }
                if let Some(mode) = &self.replication.sslmode {
                    pairs.push(("sslmode", mode.as_str()));
                }
                let conninfo = actions::postgres::conninfo(&pairs);
                actions::postgres::follow(member, &conninfo, self.step_timeout).await?;
                actions::postgres::await_streaming(member, port, timeline, self.step_timeout)
                    .await?;
                Ok(format!(
                    "{} streams from {} on timeline {timeline}",
                    member.name, new_primary.name
                ))
            }
            Action::Route53 { weights, writers } => {
                self.route53_step(epoch, weights, writers).await
            }
            Action::FenceRedis { target } => {
                let member = self.redis_member(target)?;
                let cut_off = decision
                    .redis
                    .iter()
                    .any(|r| &r.from == target && r.old_master_cut_off);
                let reach = self.step_timeout.min(FENCE_REACH_TIMEOUT);
                let fenced = actions::redis::fence(member, reach).await;
                let previous = fenced.as_ref().ok().copied();
                // The value to restore if a planned switchover does not happen.
                fence_outcome(&member.name, fenced.map(|_| ()), cut_off).map(|d| match previous {
                    Some(p) => format!("{d} ({PREVIOUS_SETTING}{p})"),
                    None => d,
                })
            }
            Action::PromoteRedis { target } => {
                let member = self.redis_member(target)?;
                if let Some(r) = decision.redis.iter().find(|r| &r.to == target && r.planned) {
                    let old = self.redis_member(&r.from)?;
                    actions::redis::catch_up(member, old, self.step_timeout).await?;
                }
                let offset = actions::redis::promote(member, self.step_timeout).await?;
                Ok(format!(
                    "{} is master at offset {offset} and takes writes",
                    member.name
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
        }
    }

    async fn route53_step(
        &self,
        epoch: u64,
        weights: &BTreeMap<String, u32>,
        writers: &[WriterRecord],
    ) -> Result<String, StepError> {
        let Some(r53) = &self.route53 else {
            return Err(fatal("route53 is not configured on this agent"));
        };
        let (dns_epoch, dns_weights) = self
            .consensus
            .read_desired(|d| (d.dns_epoch, d.dns_weights.clone()));
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
            self.metrics.drift.inc();
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
}

/// What a fence attempt on an old primary or master means for the promotion after it.
fn fence_outcome(
    name: &str,
    result: Result<(), ActionError>,
    cut_off: bool,
) -> Result<String, StepError> {
    match result {
        Ok(()) => Ok(format!("{name} fenced")),
        // Nothing listens on its port: no one can write to it.
        Err(ActionError::Connect(e)) if refused(&e) => Ok(format!(
            "{name} not listening ({e}): nothing can write to it"
        )),
        Err(ActionError::Connect(_) | ActionError::Timeout(_)) if cut_off => Ok(format!(
            "{name} unreachable: its region's agents fenced it when their leases ran out"
        )),
        // Reachable but not fenced, or perhaps alive and unreachable from here while its own
        // agent holds its lease: promoting would risk two writable primaries.
        Err(e) => Err(StepError {
            message: format!("{name} could not be fenced and may still take writes: {e}"),
            retryable: true,
        }),
    }
}

/// Whether a connection error says that nothing listens (the server is down), as opposed to
/// a server that answered with an error or did not answer.
fn refused(message: &str) -> bool {
    message.contains("Connection refused")
}

fn load(secret: &SecretRef) -> Result<crate::config::Secret, StepError> {
    secret
        .load()
        .map_err(|e| fatal(format!("postgres.replication.password: {e}")))
}

/// One line for people: what a decision does.
/// How a Redis fence step records the setting it replaced.
const PREVIOUS_SETTING: &str = "min-replicas-to-write was ";

/// One line saying what a decision does, for people (notifications, the status page).
pub fn describe(decision: &Decision) -> String {
    let mut parts = vec![match &decision.trigger {
        Trigger::RegionDown { region } => format!("region {region} down"),
        Trigger::PrimaryDown { target, .. } => format!("primary {target} lost"),
        Trigger::Failback { region } => format!("region {region} back"),
        Trigger::DnsRepair => "DNS weights not written".to_owned(),
        Trigger::Manual {
            action,
            region,
            actor,
            reason,
        } => format!("{action} {region} by {actor}: {reason}"),
    }];
    if !decision.drain.is_empty() {
        parts.push(format!("drain {}", decision.drain.join(", ")));
    }
    if !decision.restore.is_empty() {
        parts.push(format!("restore {}", decision.restore.join(", ")));
    }
    if let Some(p) = &decision.promotion {
        parts.push(format!(
            "promote {} -> {} (estimated loss {} bytes)",
            p.from, p.to, p.estimated_loss_bytes
        ));
    }
    for r in &decision.redis {
        if r.slots.is_empty() {
            parts.push(format!("redis {} -> {}", r.from, r.to));
        } else {
            parts.push(format!(
                "redis cluster slots {}: {} -> {}",
                r.slots.join(","),
                r.from,
                r.to
            ));
        }
    }
    if let Some(r) = &decision.refusal {
        parts.push(r.clone());
    }
    parts.join("; ")
}

fn show(weights: &BTreeMap<String, u32>) -> String {
    weights
        .iter()
        .map(|(r, w)| format!("{r}={w}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Every [`action_label`]: the step counters start at 0 for each.
const ACTIONS: [&str; 8] = [
    "fence_postgres",
    "promote_postgres",
    "follow_postgres",
    "route53",
    "fence_redis",
    "promote_redis",
    "follow_redis",
    "takeover_redis_cluster",
];

fn action_label(action: &Action) -> &'static str {
    match action {
        Action::FencePostgres { .. } => "fence_postgres",
        Action::PromotePostgres { .. } => "promote_postgres",
        Action::FollowPostgres { .. } => "follow_postgres",
        Action::Route53 { .. } => "route53",
        Action::FenceRedis { .. } => "fence_redis",
        Action::PromoteRedis { .. } => "promote_redis",
        Action::FollowRedis { .. } => "follow_redis",
        Action::TakeoverRedisCluster { .. } => "takeover_redis_cluster",
    }
}

/// Why the reconciler could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ReconcilerError {
    /// Metrics could not be registered.
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    /// The Route53 client could not be set up.
    #[error("route53: {0}")]
    Route53(#[from] Route53Error),
}
