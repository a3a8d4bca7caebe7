//! The failover runtime on the leader: it feeds the [`engine`](super::engine) a snapshot at
//! every tick and carries out what it returns, recording each step in the log.
//!
//! Every 100 ms, on the leader only:
//! - for each failover in progress, start each step whose dependencies succeeded and that is
//!   not running here (a step left running by a previous leader is run again: every step is
//!   idempotent); once nothing more can run, commit how the failover ended;
//! - hand the engine the desired state and the leader's view, and commit what it decides:
//!   slot owners, refusals, a live drill's restore or end, a failover (after the pre-failover
//!   hook approves, when one is configured).
//!
//! It also carries out operators' requests ([`Reconciler::operate`]): pause, resume, drain,
//! restore, forced failover and drills.
//!
//! A step attempt commits its start (which only a leader can), runs under
//! `failover.step_timeout` ([`super::steps`]) and commits its end. Retryable failures are
//! retried `failover.step_attempts` times with doubling backoff; the rest fail the step at
//! once (a Route53 batch rejected for a stale epoch is never sent again). A leader that loses
//! its leadership stops its steps; the next one resumes from the log, so a finished step never
//! runs twice.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use prometheus::Registry;
use serde::Serialize;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::engine::{self, DrillStep, Effect, Engine, Now, Settings};
use super::inputs::{Readiness, Roster};
use super::steps::{DnsWritten, Steps};
use crate::actions;
use crate::actions::route53::{Route53, Route53Error};
use crate::config::Config;
use crate::consensus::types::Command;
use crate::consensus::Consensus;
use crate::desired::{
    describe, Action, Attempt, Decision, Desired, FailoverCommand, FailoverRecord, Outcome,
    Refusal, Step,
};
use crate::topology::{TargetId, Topology};
use crate::util::now_ms;

/// How often the reconciler looks.
pub const TICK: Duration = Duration::from_millis(100);

mod heal;
mod metrics;
mod operate;

use metrics::Metrics;

fn command(c: FailoverCommand) -> Command {
    Command::Failover(Box::new(c))
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
    /// The decision core and its hysteresis.
    engine: Mutex<Engine>,
    /// What the steps act on.
    steps: Steps,
    attempts: u32,
    backoff: Duration,
    metrics: Metrics,
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
    /// Held from reading the desired state to committing a decision (automatic or an
    /// operator's), so that no two decisions are made against the same state: two drains
    /// could otherwise both pass the last-region guard, or a forced failover race an
    /// automatic one.
    deciding: tokio::sync::Mutex<()>,
    /// When each primary's acknowledgement rule was last changed (or tried): it is not
    /// changed again before the probes can have shown the new one.
    tuned: Mutex<HashMap<TargetId, Instant>>,
    /// The replicas being pointed at their primary, and each group's redundancy.
    healer: Mutex<heal::Healer>,
}

/// How long after changing a primary's acknowledgement rule the leader waits before changing
/// it again: a probe interval or two for the new rule to show.
const TUNE_SETTLE: Duration = Duration::from_secs(3);

/// How long a region's agents need after a partition heals to see their own datastores
/// again: the slowest datastore probe's `interval × rise + timeout`, plus a report.
fn rejoin_grace(config: &Config) -> Duration {
    use crate::config::{ProbeOverrides, TargetKind};
    [TargetKind::Postgres, TargetKind::Redis]
        .into_iter()
        .map(|kind| {
            let (p, _) = config.probe.resolve(kind, &ProbeOverrides::default(), "");
            p.interval.saturating_mul(p.rise).saturating_add(p.timeout)
        })
        .max()
        .unwrap_or_default()
        .saturating_add(Duration::from_secs(1))
}

/// The time now, for the engine.
fn now() -> Now {
    Now {
        wall_ms: now_ms(),
        mono: Instant::now(),
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
        let regions: Vec<(String, u32)> = config
            .regions
            .iter()
            .map(|r| (r.name.clone(), r.weight))
            .collect();
        let metrics = Metrics::new(registry)?;
        let engine = Engine::new(Settings {
            agent_id: consensus.agent_id().to_owned(),
            regions: regions.clone(),
            roster: Roster::from_config(config),
            writer_values,
            writer_records: config
                .route53
                .as_ref()
                .map(|r| r.writers.clone())
                .unwrap_or_default(),
            route53: route53.is_some(),
            automatic: config.failover.automatic,
            auto_failback: config.failover.auto_failback,
            hold_down: config.failover.failback_hold_down(),
            cooldown: config.failover.cooldown(),
            pre_hook: config.failover.pre_hook.is_some(),
            rejoin_grace: rejoin_grace(config),
        });
        let steps = Steps {
            regions,
            pg: topology
                .targets
                .iter()
                .filter_map(|t| Some((t.id.clone(), actions::postgres::Member::of(t)?)))
                .collect::<HashMap<TargetId, _>>(),
            redis: topology
                .targets
                .iter()
                .filter_map(|t| Some((t.id.clone(), actions::redis::Member::of(t)?)))
                .collect(),
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
            slots: config
                .postgres
                .as_ref()
                .map(|p| p.replication_slots)
                .unwrap_or_default(),
            rejoin: config.postgres.as_ref().is_some_and(|p| p.rejoin.is_some()),
            route53,
            step_timeout,
            drift: metrics.drift.clone(),
            notifier: notifier.clone(),
        };
        Ok(Reconciler {
            consensus,
            engine: Mutex::new(engine),
            steps,
            attempts: config.failover.step_attempts(),
            backoff: config.failover.retry_backoff(),
            metrics,
            status: Mutex::new(ReconcilerStatus::default()),
            wake: tokio::sync::Notify::new(),
            succeeding: Mutex::new(BTreeSet::new()),
            notifier,
            pre_hook: config.failover.pre_hook.clone(),
            deciding: tokio::sync::Mutex::new(()),
            tuned: Mutex::new(HashMap::new()),
            healer: Mutex::new(heal::Healer::default()),
        })
    }

    fn engine(&self) -> MutexGuard<'_, Engine> {
        self.engine.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// On the leader: what losing each Postgres primary's region now would lead to (also
    /// sets `failoverd_failover_blocked` and `failoverd_split_brain_exposed`); empty
    /// elsewhere.
    pub fn readiness(&self) -> BTreeMap<String, Readiness> {
        let Some(view) = self.consensus.leader_view() else {
            return BTreeMap::new();
        };
        let (readiness, inputs) = {
            let engine = self.engine();
            let roster = &engine.settings().roster;
            (roster.readiness(&view), roster.trigger_inputs(&view))
        };
        let exposure = inputs
            .groups
            .iter()
            .map(|g| (&g.group, &g.if_partitioned))
            .chain(inputs.redis.iter().map(|r| (&r.group, &r.if_partitioned)));
        for (group, fencing) in exposure {
            self.metrics
                .exposed
                .with_label_values(&[group])
                .set(i64::from(fencing.holds().is_none()));
        }
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
                self.engine().forget();
                // An end that never committed counts for nothing with the next leader.
                self.succeeding
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .clear();
                *self.status.lock().unwrap_or_else(|p| p.into_inner()) =
                    ReconcilerStatus::default();
                self.healer
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .clear();
                // Only the leader counts replicas: a former leader's figures would go stale.
                self.metrics.replicas.reset();
                self.metrics.streaming.reset();
                continue;
            }
            let desired = self.consensus.desired();
            let succeeding = self
                .succeeding
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone();
            let busy: BTreeSet<(u64, String)> = running.keys().cloned().collect();
            for effect in engine::schedule(&desired, &busy, &succeeding) {
                match effect {
                    Effect::RunStep {
                        epoch,
                        step,
                        decision,
                    } => {
                        let this = self.clone();
                        running.insert(
                            (epoch, step.id.clone()),
                            tokio::spawn(
                                async move { this.run_step(epoch, step, *decision).await },
                            ),
                        );
                    }
                    Effect::Finish { record, outcome } => self.finish(&record, outcome).await,
                    other => {
                        tracing::error!(effect = ?other, "unexpected effect from the schedule")
                    }
                }
            }
            let _deciding = self.deciding.lock().await;
            // Read again under the lock: an operator's decision may have just been made.
            let desired = self.consensus.desired();
            let view = self.consensus.leader_view();
            let effects = self.engine().tick(&desired, view.as_ref(), now());
            self.carry_out(&desired, effects).await;
            // The rule that makes each primary fence itself, kept while automation runs and no
            // failover is moving a primary.
            let quiet = !paused && desired.in_progress().is_empty();
            if let Some(view) = view.as_ref() {
                if quiet {
                    self.tune(view);
                }
                // Replicas that do not stream from their primary are repointed under the
                // same conditions; the redundancy is looked at always.
                self.heal(view, quiet);
            }
        }
        for (_, task) in running.drain() {
            task.abort();
        }
    }

    /// Changes each primary's acknowledgement rule that differs from the one configured
    /// ([`super::quorum`]), at most once per [`TUNE_SETTLE`] per primary, each in a task of
    /// its own bounded by `failover.step_timeout`.
    fn tune(&self, view: &crate::consensus::LeaderView) {
        let tunes = self.engine().settings().roster.tunes(view);
        let mut tuned = self.tuned.lock().unwrap_or_else(|p| p.into_inner());
        tuned.retain(|_, at| at.elapsed() < TUNE_SETTLE);
        for tune in tunes {
            if tuned.contains_key(tune.target()) {
                continue;
            }
            tuned.insert(tune.target().clone(), Instant::now());
            let (pg, redis) = (
                self.steps.pg.get(tune.target()).cloned(),
                self.steps.redis.get(tune.target()).cloned(),
            );
            let timeout = self.steps.step_timeout;
            tokio::spawn(async move {
                let (what, outcome) = match (&tune, pg, redis) {
                    (super::quorum::Tune::Standbys { value, .. }, Some(member), _) => (
                        format!("synchronous_standby_names = '{value}'"),
                        actions::postgres::set_standby_names(&member, value, timeout).await,
                    ),
                    (
                        super::quorum::Tune::MinReplicas {
                            to_write,
                            max_lag_s,
                            ..
                        },
                        _,
                        Some(member),
                    ) => (
                        format!(
                            "min-replicas-to-write {to_write}, min-replicas-max-lag {max_lag_s}"
                        ),
                        actions::redis::set_min_replicas(&member, *to_write, *max_lag_s, timeout)
                            .await,
                    ),
                    _ => return,
                };
                match outcome {
                    Ok(()) => tracing::info!(
                        member = %tune.target(),
                        "self-fencing: set {what}"
                    ),
                    Err(e) => tracing::warn!(
                        member = %tune.target(),
                        error = %e,
                        "self-fencing: could not set {what}"
                    ),
                }
            });
        }
    }

    /// Carries out what the engine decided at a tick, in order. Once a live drill's restore or
    /// end is committed, nothing else is decided at this tick: the state changed.
    async fn carry_out(&self, desired: &Desired, effects: Vec<Effect>) {
        for effect in effects {
            match effect {
                Effect::Commit(cmd) => self.record_slot_owners(*cmd).await,
                Effect::Refuse(refusal) => self.record_refusal(refusal).await,
                Effect::Status { waiting, refusals } => {
                    *self.status.lock().unwrap_or_else(|p| p.into_inner()) =
                        ReconcilerStatus { waiting, refusals };
                }
                Effect::Drill(step) => {
                    if self.move_live_drill(step).await {
                        return;
                    }
                }
                Effect::AskHook { key, decision } => self.ask_hook(desired, key, *decision).await,
                Effect::Decide(decision) => {
                    if let Err(e) = self.commit(*decision).await {
                        tracing::warn!(error = %e, "cannot commit the failover decision");
                    }
                }
                other @ (Effect::RunStep { .. } | Effect::Finish { .. }) => {
                    tracing::error!(effect = ?other, "unexpected effect from the assessment")
                }
            }
        }
    }

    /// Records a Redis Cluster's new slot owners, with who moved them.
    async fn record_slot_owners(&self, cmd: FailoverCommand) {
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
            tracing::warn!(error = %e, "cannot record the slot owners");
        }
    }

    /// Records a refusal, counts it and notifies.
    async fn record_refusal(&self, refusal: Refusal) {
        tracing::warn!(
            subject = %refusal.subject,
            guard = %refusal.guard,
            reason = %refusal.reason,
            "automatic failover refused"
        );
        let (guard, subject, reason) = (
            refusal.guard,
            refusal.subject.clone(),
            refusal.reason.clone(),
        );
        match self
            .consensus
            .write(command(FailoverCommand::Refuse(refusal)))
            .await
        {
            Ok(_) => {
                self.metrics
                    .refusals
                    .with_label_values(&[guard.as_str()])
                    .inc();
                self.notifier.send(
                    "refusal",
                    None,
                    format!("failoverd refused an automatic action: {reason}"),
                    serde_json::json!({
                        "subject": subject,
                        "guard": guard,
                        "reason": reason,
                    }),
                );
            }
            Err(e) => tracing::warn!(error = %e, "cannot record the refusal"),
        }
    }

    /// Asks the pre-failover hook about `decision`; commits it when the hook approves.
    async fn ask_hook(&self, desired: &Desired, key: String, decision: Decision) {
        let Some(hook) = &self.pre_hook else {
            return;
        };
        let summary = serde_json::to_string(&decision.trigger).unwrap_or_default();
        let body = serde_json::to_vec(&decision).unwrap_or_default();
        match super::hook::ask(hook, &body).await {
            super::hook::HookAnswer::Proceed(note) => {
                tracing::info!(trigger = %summary, note = %note, "pre-failover hook: proceed");
                if let Err(e) = self.commit(decision).await {
                    tracing::warn!(error = %e, "cannot commit the failover decision");
                }
            }
            super::hook::HookAnswer::Veto(reason) => {
                let refusals = self.engine().vetoed(desired, key, &reason, now());
                for refusal in refusals {
                    self.record_refusal(refusal).await;
                }
            }
        }
    }

    /// Commits a live drill's restore or end; returns whether it was committed.
    async fn move_live_drill(&self, step: DrillStep) -> bool {
        match step {
            DrillStep::Restore(decision) => match self.commit(*decision).await {
                Ok(_) => {
                    self.wake.notify_one();
                    true
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot commit the drill's restore");
                    false
                }
            },
            DrillStep::Finished(record) => {
                let region = record.drill.region.clone();
                let drain_epoch = record.drill.drain_epoch;
                let summary = format!("live drill of {region}: {}", record.detail);
                let details = serde_json::to_value(&record).unwrap_or_default();
                let outcome = record.outcome;
                match self
                    .consensus
                    .write(command(FailoverCommand::LiveDrillFinished(record)))
                    .await
                {
                    Ok(_) => {
                        tracing::warn!(region = %region, outcome = ?outcome, "live drill ended");
                        self.notifier
                            .send("drill_finished", Some(drain_epoch), summary, details);
                        true
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot record the end of the live drill");
                        false
                    }
                }
            }
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

    /// Records how a failover ended, counts it and notifies.
    async fn finish(&self, record: &FailoverRecord, outcome: Outcome) {
        if outcome == Outcome::Failed {
            self.steps.undo_planned_fences(record).await;
        }
        let now = now_ms();
        let command = command(engine::finish_command(
            record,
            outcome,
            now,
            self.engine().settings().cooldown,
        ));
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
            Outcome::Completed => {
                let unfollowed = crate::desired::unfollowed(record);
                let healing = if unfollowed.is_empty() {
                    String::new()
                } else {
                    format!(
                        "; not following yet, left to the healer: {}",
                        unfollowed.join(", ")
                    )
                };
                (
                    "failover_completed",
                    format!(
                        "failover {} completed in {:.1} s: {}{healing}",
                        record.epoch,
                        took as f64 / 1000.0,
                        describe(&record.decision)
                    ),
                )
            }
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
            let dns = self.consensus.read_desired(|d| DnsWritten {
                epoch: d.dns_epoch,
                weights: d.dns_weights.clone(),
            });
            let result = self.steps.execute(epoch, step, decision, &dns).await;
            let (ok, detail, give_up, replaced_min_replicas, fence) = match result {
                Ok(done) => (
                    true,
                    done.detail,
                    false,
                    done.replaced_min_replicas,
                    done.fence,
                ),
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
                    None,
                    e.fence,
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
                replaced_min_replicas,
                fence,
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
