//! The failover engine: what the leader does at each tick, as a pure function of what the
//! cluster knows and the time.
//!
//! The engine follows openraft's split between an engine that decides and a runtime that
//! acts. It reads a snapshot — the replicated [`Desired`] state, the leader's [`LeaderView`]
//! (verdict, positions, offsets, cluster views, named primaries, cut-off regions) and the
//! time ([`Now`]) — and returns [`Effect`]s: start a step, end a failover, commit a record,
//! ask the pre-failover hook, decide. It does no I/O, reads no clock and logs nothing;
//! [`super::executor::Reconciler`] carries the effects out.
//!
//! Its only memory is the leader's own hysteresis, forgotten when leadership is lost: when
//! each trigger's condition was first seen (a failover's duration counts from there), since
//! when each region has been Up (for the failback hold-down), and when the hook last vetoed
//! each trigger (asked again after [`VETO_RETRY`]).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use super::inputs::{Roster, TriggerInputs};
use super::manual::{self, ErrorKind, OpError};
use super::trigger::{self, Proposal, Refused, World};
use crate::config::WriterRecordConfig;
use crate::consensus::LeaderView;
use crate::desired::{
    ready_steps_after, settled, Decision, Desired, DrillPart, FailoverCommand, FailoverRecord,
    Guard, LiveDrill, LiveDrillRecord, Outcome, Refusal, Step, Trigger, WriterRecord,
};
use crate::health::State;
use crate::topology::TargetId;

/// A standing refusal is recorded again after this long.
pub const REFUSAL_REPEAT_MS: u64 = 60_000;

/// After a veto, the hook is asked again about the same trigger after this long.
pub const VETO_RETRY: Duration = Duration::from_secs(10);

/// The time, as the runtime read it for this tick.
#[derive(Debug, Clone, Copy)]
pub struct Now {
    /// Wall clock, Unix milliseconds: for records people read.
    pub wall_ms: u64,
    /// Monotonic clock: for intervals.
    pub mono: Instant,
}

/// What the engine knows from the configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    /// This agent's id (the decider named in records).
    pub agent_id: String,
    /// Configured regions and their in-service weights, in config order.
    pub regions: Vec<(String, u32)>,
    /// The members of every group, for building what the trigger reads.
    pub roster: Roster,
    /// What each member's writer record holds while it is writable.
    pub writer_values: HashMap<TargetId, String>,
    /// The writer record of each group that has one.
    pub writer_records: BTreeMap<String, WriterRecordConfig>,
    /// Route53 is configured.
    pub route53: bool,
    /// `failover.automatic`.
    pub automatic: bool,
    /// `failover.auto_failback`.
    pub auto_failback: bool,
    /// `failover.failback_hold_down`.
    pub hold_down: Duration,
    /// `failover.cooldown`.
    pub cooldown: Duration,
    /// A pre-failover hook is configured.
    pub pre_hook: bool,
    /// After a region stops being cut off, how long its agents' word that their own
    /// primaries are Down is not acted on: what they saw while cut off from them may be only
    /// their own isolation, and their probes need this long to see the members again.
    pub rejoin_grace: Duration,
}

/// What the runtime is asked to do.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Start a step of a failover in progress.
    RunStep {
        /// The failover.
        epoch: u64,
        /// The step.
        step: Step,
        /// The failover's decision (the step reads its promotion).
        decision: Box<Decision>,
    },
    /// A failover in progress has nothing more to run: record how it ended (after lifting
    /// the fence of a planned switchover that did not happen, when it failed).
    Finish {
        /// The failover as recorded.
        record: Box<FailoverRecord>,
        /// How it ended.
        outcome: Outcome,
    },
    /// Commit a record (a Redis Cluster's new slot owners).
    Commit(Box<FailoverCommand>),
    /// Record a refusal, count it and notify.
    Refuse(Refusal),
    /// What the status shows as waiting and refused.
    Status {
        /// Things that are Down but not acted on yet, and why.
        waiting: Vec<String>,
        /// Refusals that stand now.
        refusals: Vec<String>,
    },
    /// A live drill moves on: commit its restore (a decision carrying the drill's part) or
    /// record how it ended. When this commits, nothing else is decided at this tick.
    Drill(DrillStep),
    /// Ask the pre-failover hook about this decision; commit it if the hook approves,
    /// otherwise report the veto with [`Engine::vetoed`].
    AskHook {
        /// The trigger's key.
        key: String,
        /// The decision.
        decision: Box<Decision>,
    },
    /// Commit this decision.
    Decide(Box<Decision>),
}

/// How a live drill moves on.
#[derive(Debug, Clone, PartialEq)]
pub enum DrillStep {
    /// Restore the drilled region.
    Restore(Box<Decision>),
    /// The drill ended.
    Finished(Box<LiveDrillRecord>),
}

/// The leader's decision core.
#[derive(Debug)]
pub struct Engine {
    settings: Settings,
    /// When this leader first saw each trigger's condition (Unix ms).
    first_seen: BTreeMap<String, u64>,
    /// Since when each region is Up by verdict.
    up_since: BTreeMap<String, Instant>,
    /// When the hook last vetoed each trigger.
    vetoed: BTreeMap<String, Instant>,
    /// When each region stopped being cut off, for `rejoin_grace`.
    returned: BTreeMap<String, Instant>,
}

/// The key of a trigger, for first-seen times and vetoes.
pub fn trigger_key(trigger: &Trigger) -> String {
    match trigger {
        Trigger::RegionDown { region } | Trigger::Failback { region } => {
            format!("region/{region}")
        }
        Trigger::PrimaryDown { group, .. } => format!("primary/{group}"),
        Trigger::DnsRepair => "dns".to_owned(),
        Trigger::ReturnHome { group, .. } => format!("home/{group}"),
        Trigger::Manual { action, region, .. } => format!("manual/{action}/{region}"),
    }
}

/// The steps to start and the failovers to end, given the steps running here (`running`) and
/// those whose success is submitted but not yet committed (`succeeding`): a step waiting for
/// one of those may start, its record goes in the log behind that end.
pub fn schedule(
    desired: &Desired,
    running: &BTreeSet<(u64, String)>,
    succeeding: &BTreeSet<(u64, String)>,
) -> Vec<Effect> {
    let mut effects = Vec::new();
    for record in desired.in_progress() {
        let succeeded: BTreeSet<String> = succeeding
            .iter()
            .filter(|(epoch, _)| *epoch == record.epoch)
            .map(|(_, id)| id.clone())
            .collect();
        let mut busy = running.iter().any(|(epoch, _)| *epoch == record.epoch);
        for step in ready_steps_after(record, &succeeded) {
            if running.contains(&(record.epoch, step.id.clone())) {
                continue;
            }
            busy = true;
            effects.push(Effect::RunStep {
                epoch: record.epoch,
                step: step.clone(),
                decision: Box::new(record.decision.clone()),
            });
        }
        if !busy {
            if let Some(outcome) = settled(record) {
                effects.push(Effect::Finish {
                    record: Box::new(record.clone()),
                    outcome,
                });
            }
        }
    }
    effects
}

/// The command that records how a failover ended at `now_ms`: region changes then wait
/// `cooldown` if it moved DNS.
pub fn finish_command(
    record: &FailoverRecord,
    outcome: Outcome,
    now_ms: u64,
    cooldown: Duration,
) -> FailoverCommand {
    FailoverCommand::Finish {
        epoch: record.epoch,
        outcome,
        at_ms: now_ms,
        cooldown_until_ms: record.decision.cooldown_until(now_ms, cooldown),
    }
}

impl Engine {
    /// An engine with no memory yet.
    pub fn new(settings: Settings) -> Engine {
        Engine {
            settings,
            first_seen: BTreeMap::new(),
            returned: BTreeMap::new(),
            up_since: BTreeMap::new(),
            vetoed: BTreeMap::new(),
        }
    }

    /// The configuration it decides with.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Forgets the leader's own observations: called when this agent does not lead, so that
    /// a later term starts from what it sees then.
    pub fn forget(&mut self) {
        self.first_seen.clear();
        self.up_since.clear();
        self.returned.clear();
    }

    /// What the trigger reads from `view`.
    pub fn inputs(&self, view: &LeaderView) -> TriggerInputs {
        self.settings.roster.trigger_inputs(view)
    }

    /// One assessment: the slot owners to record, the refusals to record, the status, the
    /// live drill's next move and the decision to make (through the hook when one is
    /// configured). `view` is `None` when this agent has no verdict to act on.
    pub fn tick(&mut self, desired: &Desired, view: Option<&LeaderView>, now: Now) -> Vec<Effect> {
        let mut effects = Vec::new();
        let inputs = view.map(|v| self.inputs(v));
        let assessment = match &inputs {
            Some(inputs) => {
                for (cluster, owners) in &inputs.slot_owners {
                    if let Some(cmd) =
                        super::cluster::slot_moves(desired, cluster, owners, now.wall_ms)
                    {
                        effects.push(Effect::Commit(Box::new(cmd)));
                    }
                }
                self.assess(desired, inputs.clone(), now)
            }
            None => trigger::Assessment::default(),
        };
        effects.extend(
            self.refusals_due(desired, &assessment.refusals, now.wall_ms)
                .into_iter()
                .map(Effect::Refuse),
        );
        let mut waiting = assessment.waiting.clone();
        let drill = match (view, &inputs) {
            (Some(view), Some(inputs)) => self.live_drill(desired, Some((view, inputs)), now),
            _ => self.live_drill(desired, None, now),
        };
        let drill = match drill {
            DrillMove::Wait(line) => {
                waiting.push(line);
                None
            }
            DrillMove::Step(step) => Some(step),
            DrillMove::Nothing => None,
        };
        effects.push(Effect::Status {
            waiting,
            refusals: assessment
                .refusals
                .iter()
                .map(|r| r.reason.clone())
                .collect(),
        });
        if let Some(step) = drill {
            effects.push(Effect::Drill(step));
        }
        if let Some(proposal) = assessment.proposal {
            let decision = self.decision(desired, proposal, now.wall_ms);
            if self.settings.pre_hook {
                let key = trigger_key(&decision.trigger);
                let recently = self
                    .vetoed
                    .get(&key)
                    .is_some_and(|at| now.mono.saturating_duration_since(*at) < VETO_RETRY);
                if !recently {
                    effects.push(Effect::AskHook {
                        key,
                        decision: Box::new(decision),
                    });
                }
            } else {
                effects.push(Effect::Decide(Box::new(decision)));
            }
        }
        effects
    }

    /// Updates the leader's observations from `inputs` and runs the trigger.
    fn assess(
        &mut self,
        desired: &Desired,
        mut inputs: TriggerInputs,
        now: Now,
    ) -> trigger::Assessment {
        let mut up_for = BTreeMap::new();
        for (region, _) in &self.settings.regions {
            let state = inputs.verdict.regions.get(region).copied();
            if state == Some(State::Up) {
                let since = *self.up_since.entry(region.clone()).or_insert(now.mono);
                up_for.insert(region.clone(), now.mono.saturating_duration_since(since));
            } else {
                self.up_since.remove(region);
            }
            let key = format!("region/{region}");
            if state == Some(State::Down) {
                self.first_seen.entry(key).or_insert(now.wall_ms);
            } else {
                self.first_seen.remove(&key);
            }
        }
        for (region, _) in &self.settings.regions {
            if inputs.cut_off.contains(region) {
                self.returned.remove(region);
            } else if self.first_seen.contains_key(&format!("cut_off/{region}")) {
                self.returned.insert(region.clone(), now.mono);
            }
        }
        let grace = self.settings.rejoin_grace;
        self.returned
            .retain(|_, at| now.mono.saturating_duration_since(*at) < grace);
        for group in inputs
            .groups
            .iter_mut()
            .filter(|g| self.returned.contains_key(&g.primary_region))
        {
            group.primary_down = false;
            group.home_says_down = false;
        }
        for shard in inputs
            .redis
            .iter_mut()
            .filter(|s| self.returned.contains_key(&s.master_region))
        {
            shard.master_down = false;
            shard.home_says_down = false;
        }
        let lost: Vec<(String, bool)> = inputs
            .groups
            .iter()
            .map(|g| (g.group.clone(), g.primary_down))
            .chain(inputs.redis.iter().map(|r| {
                let lost = r.master_down || inputs.cut_off.contains(&r.master_region);
                (r.group.clone(), lost)
            }))
            .collect();
        for (group, down) in lost {
            let key = format!("primary/{group}");
            if down {
                self.first_seen.entry(key).or_insert(now.wall_ms);
            } else {
                self.first_seen.remove(&key);
            }
        }
        for (region, _) in &self.settings.regions {
            let key = format!("cut_off/{region}");
            if inputs.cut_off.contains(region) {
                self.first_seen.entry(key).or_insert(now.wall_ms);
            } else {
                self.first_seen.remove(&key);
            }
        }
        let cut_off_since: BTreeMap<String, u64> = inputs
            .cut_off
            .iter()
            .filter_map(|r| Some((r.clone(), *self.first_seen.get(&format!("cut_off/{r}"))?)))
            .collect();
        for shard in &mut inputs.redis {
            shard.lost_since_ms = self
                .first_seen
                .get(&format!("primary/{}", shard.group))
                .copied();
        }
        trigger::assess(&World {
            now_ms: now.wall_ms,
            desired,
            regions: &self.settings.regions,
            region_state: &inputs.verdict.regions,
            region_up_for: &up_for,
            cut_off: &inputs.cut_off,
            cut_off_since: &cut_off_since,
            groups: &inputs.groups,
            redis: &inputs.redis,
            auto_failback: self.settings.auto_failback,
            hold_down: self.settings.hold_down,
            route53: self.settings.route53,
            automatic: self.settings.automatic,
        })
    }

    /// The refusals to record now: each standing one at most once per
    /// [`REFUSAL_REPEAT_MS`].
    pub fn refusals_due(
        &self,
        desired: &Desired,
        refusals: &[Refused],
        now_ms: u64,
    ) -> Vec<Refusal> {
        refusals
            .iter()
            .filter(|refused| {
                let key = format!("{}/{}", refused.subject, refused.guard);
                desired
                    .refusals
                    .get(&key)
                    .is_none_or(|at| now_ms.saturating_sub(*at) >= REFUSAL_REPEAT_MS)
            })
            .map(|refused| Refusal {
                subject: refused.subject.clone(),
                guard: refused.guard,
                reason: refused.reason.clone(),
                at_ms: now_ms,
                by: self.settings.agent_id.clone(),
            })
            .collect()
    }

    /// The hook vetoed the decision for trigger `key`: it is asked again after
    /// [`VETO_RETRY`]; returns the refusal to record.
    pub fn vetoed(
        &mut self,
        desired: &Desired,
        key: String,
        reason: &str,
        now: Now,
    ) -> Vec<Refusal> {
        self.vetoed.insert(key.clone(), now.mono);
        let refused = Refused {
            subject: key,
            guard: Guard::PreHook,
            reason: format!("blocked because {reason}"),
        };
        self.refusals_due(desired, &[refused], now.wall_ms)
    }

    /// The decision `proposal` becomes at `now_ms`: weights, writer records and the planned
    /// steps.
    pub fn decision(&self, desired: &Desired, proposal: Proposal, now_ms: u64) -> Decision {
        let settings = &self.settings;
        // Against what the last successful DNS change wrote: weights a failed change did not
        // write are planned again.
        let before = if desired.dns_weights.is_empty() {
            settings.regions.iter().cloned().collect()
        } else {
            desired.dns_weights.clone()
        };
        let after = trigger::weights_after(&settings.regions, &desired.drained, &proposal);
        // Writer records of the groups whose writable member moves.
        let writers: Vec<WriterRecord> = proposal
            .promotion
            .iter()
            .map(|p| (&p.group, &p.to))
            .chain(proposal.redis.iter().map(|r| (&r.group, &r.to)))
            .filter_map(|(group, to)| {
                let record = settings.writer_records.get(group)?;
                Some(WriterRecord {
                    group: group.clone(),
                    name: record.name.clone(),
                    record_type: record.record_type.clone(),
                    ttl: record.ttl,
                    value: settings.writer_values.get(to)?.clone(),
                })
            })
            .collect();
        let steps = super::plan::plan(
            proposal.promotion.as_ref(),
            &proposal.followers,
            &proposal.redis,
            &super::plan::Dns {
                route53: settings.route53,
                before,
                after,
                writers: &writers,
            },
        );
        let homeward = settings.roster.homes_in(&proposal.restore);
        Decision {
            homeward,
            first_seen_ms: self
                .first_seen
                .get(&trigger_key(&proposal.trigger))
                .copied()
                .unwrap_or(now_ms),
            trigger: proposal.trigger,
            decided_by: settings.agent_id.clone(),
            decided_at_ms: now_ms,
            drain: proposal.drain,
            restore: proposal.restore,
            promotion: proposal.promotion,
            redis: proposal.redis,
            refusal: proposal.refusal.map(|r| r.reason),
            drill: None,
            steps,
        }
    }

    /// The decision an operator's drain, restore or forced failover becomes, against
    /// `desired` and the leader's `view` (`None`: this agent does not lead).
    pub fn plan_operation(
        &self,
        desired: &Desired,
        view: Option<&LeaderView>,
        operation: &manual::Operation,
        actor: &str,
        reason: &str,
        now_ms: u64,
    ) -> Result<Decision, OpError> {
        let view = view.ok_or_else(not_leading)?;
        let inputs = self.inputs(view);
        let roster = &self.settings.roster;
        let proposal = manual::propose(
            operation,
            actor,
            reason,
            &manual::Inputs {
                desired,
                regions: &self.settings.regions,
                groups: &inputs.groups,
                redis: &inputs.redis,
                cut_off: &inputs.cut_off,
            },
            |group, to, allow_data_loss| {
                roster.manual_choice(
                    view,
                    &group.group,
                    &group.primary_region,
                    to,
                    allow_data_loss,
                )
            },
        )?;
        Ok(self.decision(desired, proposal, now_ms))
    }

    /// How the live drill in `desired` moves on: once its drain has ended and the hold is
    /// over (at once when the drain failed: a drill leaves the region as it found it), the
    /// region is restored — only while its verdict is Up: a region that really failed
    /// meanwhile stays out. Once the restore has ended, the drill is recorded with its
    /// milestones.
    fn live_drill(
        &self,
        desired: &Desired,
        leading: Option<(&LeaderView, &TriggerInputs)>,
        now: Now,
    ) -> DrillMove {
        let Some(drill) = desired.live_drill.clone() else {
            return DrillMove::Nothing;
        };
        let drain = desired.failover(drill.drain_epoch);
        let restore = drill.restore_epoch.and_then(|e| desired.failover(e));
        let finish = |outcome: Outcome, detail: String| {
            DrillMove::Step(DrillStep::Finished(Box::new(LiveDrillRecord {
                milestones: crate::desired::milestones(&drill, drain, restore),
                drill: drill.clone(),
                outcome,
                finished_ms: now.wall_ms,
                detail,
            })))
        };
        let region = &drill.region;
        match drill.restore_epoch {
            None => {
                // A drain whose record is gone (it cannot be, the history keeps it) counts as
                // ended: the region is still put back.
                let (ended, completed) = match drain {
                    Some(d) => (d.finished_ms, d.outcome == Some(Outcome::Completed)),
                    None => (Some(0), false),
                };
                let Some(ended) = ended else {
                    return DrillMove::Nothing;
                };
                if completed && ended.saturating_add(drill.hold_ms) > now.wall_ms {
                    return DrillMove::Nothing;
                }
                let region_state =
                    leading.and_then(|(_, i)| i.verdict.regions.get(region).copied());
                if !desired.drained.contains(region) {
                    finish(
                        Outcome::Failed,
                        format!("{region} was put back into DNS outside the drill"),
                    )
                } else if region_state != Some(State::Up) {
                    DrillMove::Wait(format!(
                        "live drill: {region} stays drained until its verdict is Up again"
                    ))
                } else {
                    self.restore_for_drill(desired, leading.map(|(v, _)| v), &drill, now)
                }
            }
            Some(restore_epoch) => match restore.map(|r| r.outcome) {
                Some(None) => DrillMove::Nothing,
                Some(Some(Outcome::Completed))
                    if drain.is_some_and(|d| d.outcome == Some(Outcome::Completed)) =>
                {
                    finish(
                        Outcome::Completed,
                        format!(
                            "{region} was failed over (failover {}) and back (failover \
                             {restore_epoch})",
                            drill.drain_epoch
                        ),
                    )
                }
                Some(Some(Outcome::Completed)) => finish(
                    Outcome::Failed,
                    format!(
                        "the drain (failover {}) failed; {region} was put back (failover \
                         {restore_epoch})",
                        drill.drain_epoch
                    ),
                ),
                _ => finish(
                    Outcome::Failed,
                    format!(
                        "the restore (failover {restore_epoch}) failed: see GET \
                         /v1/failovers/{restore_epoch} and restore {region} by hand"
                    ),
                ),
            },
        }
    }

    /// The restore that ends `drill`, or why it waits, or the record of a drill that cannot
    /// go on.
    fn restore_for_drill(
        &self,
        desired: &Desired,
        view: Option<&LeaderView>,
        drill: &LiveDrill,
        now: Now,
    ) -> DrillMove {
        let operation = manual::Operation::Restore {
            region: drill.region.clone(),
        };
        let reason = format!("live drill: {}", drill.reason);
        match self.plan_operation(
            desired,
            view,
            &operation,
            &drill.actor,
            &reason,
            now.wall_ms,
        ) {
            Ok(mut decision) => {
                decision.drill = Some(DrillPart::Restore);
                DrillMove::Step(DrillStep::Restore(Box::new(decision)))
            }
            // Paused, another failover running, leadership in question: next tick.
            Err(e) if matches!(e.kind, ErrorKind::Conflict | ErrorKind::Unavailable) => {
                DrillMove::Wait(format!(
                    "live drill: restoring {} waits: {}",
                    drill.region, e.message
                ))
            }
            Err(e) => DrillMove::Step(DrillStep::Finished(Box::new(LiveDrillRecord {
                milestones: Vec::new(),
                drill: drill.clone(),
                outcome: Outcome::Failed,
                finished_ms: now.wall_ms,
                detail: format!("cannot restore {}: {}", drill.region, e.message),
            }))),
        }
    }
}

/// How a live drill moves on at one tick.
#[derive(Debug, Clone, PartialEq)]
enum DrillMove {
    /// Nothing to do yet.
    Nothing,
    /// It waits, and the status says why.
    Wait(String),
    /// It moves on.
    Step(DrillStep),
}

/// An operator's request on an agent that does not lead.
pub fn not_leading() -> OpError {
    OpError::new(
        ErrorKind::Unavailable,
        "no_leader",
        "this agent does not lead",
    )
}

#[cfg(test)]
#[path = "engine_tests.rs"]
mod tests;
