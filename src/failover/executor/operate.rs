//! Operators' requests on the leader: pause and resume, drain, restore and forced failover,
//! readiness and live drills. Each is checked against the replicated state with `deciding`
//! held, so no two decisions are made against the same state.

use super::{command, Reconciler};
use crate::consensus::LeaderView;
use crate::desired::{
    describe, CheckScope, Decision, Desired, DrillPart, FailoverCommand, LiveDrill,
};
use crate::failover::manual::{self, ErrorKind, OpError};
use crate::util::now_ms;

impl Reconciler {
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
                    subject = operation.subject(),
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
        let desired = self.consensus.desired();
        let decision = self.engine().plan_operation(
            &desired,
            Some(&view),
            operation,
            actor,
            reason,
            now_ms(),
        )?;
        Ok((desired, decision))
    }

    /// Starts a live drill of `region`: checks it as a readiness drill would, then commits its
    /// drain; the engine restores it after the hold. Called with
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
        // A live drill is a planned switchover: it reaches and fences the old primary, so
        // what a partition would leave does not hold it back.
        let blocked: Vec<String> = report
            .regions
            .iter()
            .flat_map(|r| r.checks.iter())
            .filter(|c| !c.ok && c.scope == CheckScope::Any)
            .map(|c| format!("{}: {}", c.check, c.detail))
            .collect();
        if !blocked.is_empty() {
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

    /// A readiness drill: for each region (or `only`), whether failing it over would go
    /// through now (see [`super::drill`]). Changes nothing.
    async fn drill(
        &self,
        actor: String,
        reason: String,
        only: Option<&str>,
    ) -> Result<crate::desired::DrillReport, OpError> {
        let regions = self.engine().settings().regions.clone();
        if let Some(region) = only.filter(|r| !regions.iter().any(|(n, _)| n == r)) {
            return Err(OpError::new(
                ErrorKind::NotFound,
                "unknown_region",
                format!("no region {region:?} in the configuration"),
            ));
        }
        let view = self.leading_view()?;
        let desired = self.consensus.desired();
        let route53 = match &self.steps.route53 {
            None => None,
            Some(r53) => Some(crate::failover::drill::route53_check(
                r53.view().await.map(|v| v.epoch).map_err(|e| e.to_string()),
                desired.dns_epoch,
            )),
        };
        tracing::warn!(actor = %actor, reason = %reason, "readiness drill");
        let engine = self.engine();
        let inputs = engine.inputs(&view);
        let roster = &engine.settings().roster;
        let rewind =
            |member: &crate::topology::TargetId| view.positions.get(member).and_then(|p| p.rewind);
        Ok(crate::failover::drill::report(
            &regions,
            &desired,
            &inputs,
            |group, region| roster.readiness_choice(&view, group, region),
            crate::failover::drill::Seen {
                route53: route53.as_ref(),
                rewind: self.steps.rejoin.then_some(&rewind as _),
            },
            crate::failover::drill::Asked {
                actor,
                reason,
                only,
            },
            (now_ms(), self.consensus.agent_id()),
        ))
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
}
