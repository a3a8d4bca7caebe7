//! What this agent sends and shows every report interval: its report to the leader (with its
//! contact marks and data-path evidence), and, while it leads, the verdict gauges.

use std::collections::BTreeMap;
use std::time::Instant;

use super::{cluster_of, network, offset_of, position_of, Consensus, NodeId, Report};
use crate::health::{HealthBoard, State};
use crate::topology::TargetId;

impl Consensus {
    /// Sets the verdict gauges while this agent leads; clears them once when it stops
    /// leading, so that only the leader exports a verdict. Returns whether they are set.
    pub(super) fn export_verdict(&self, exported: bool) -> bool {
        let m = &self.metrics;
        let Some(verdict) = self.verdict() else {
            if exported {
                m.verdict.reset();
                m.votes.reset();
                m.region_verdict.reset();
            }
            return false;
        };
        const STATES: [State; 3] = [State::Up, State::Down, State::Unknown];
        for (target, region, _) in &self.targets {
            let Some(v) = verdict.targets.get(target) else {
                continue;
            };
            let target = target.to_string();
            for state in STATES {
                m.verdict
                    .with_label_values(&[&target, region, state.as_str()])
                    .set(i64::from(v.state == state));
            }
            for (vote, agents) in [
                (State::Up, &v.up),
                (State::Down, &v.down),
                (State::Unknown, &v.unknown),
            ] {
                m.votes
                    .with_label_values(&[&target, vote.as_str()])
                    .set(i64::try_from(agents.len()).unwrap_or(i64::MAX));
            }
        }
        for (region, state) in &verdict.regions {
            for s in STATES {
                m.region_verdict
                    .with_label_values(&[region, s.as_str()])
                    .set(i64::from(*state == s));
            }
        }
        true
    }

    pub(super) async fn send_report(&self, board: &HealthBoard, seq: u64, leader: Option<NodeId>) {
        let Some(leader) = leader else { return };
        let views = board.views();
        let mut states: BTreeMap<TargetId, crate::health::State> =
            views.iter().map(|v| (v.id.clone(), v.state)).collect();
        // What local replicas say about primaries this agent does not probe itself.
        let evidence = self
            .data_path
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .votes(&views, Instant::now());
        for (target, vote) in evidence {
            states.entry(target).or_insert(vote);
        }
        let report = Report {
            agent: self.me.agent.clone(),
            boot: self.boot,
            seq,
            states,
            roles: views
                .iter()
                .filter_map(|v| Some((v.id.clone(), v.role()?.to_owned())))
                .collect(),
            positions: views
                .iter()
                .filter_map(|v| Some((v.id.clone(), position_of(v)?)))
                .collect(),
            offsets: views
                .iter()
                .filter_map(|v| Some((v.id.clone(), offset_of(v)?)))
                .collect(),
            clusters: views
                .iter()
                .filter_map(|v| Some((v.id.clone(), cluster_of(v)?)))
                .collect(),
            contact: Some(self.contacts.report(Instant::now(), |node| {
                self.agent_of(Some(node)).map(str::to_owned)
            })),
            log_version: super::types::LOG_VERSION,
        };
        if leader == self.me.node_id {
            if let Err(e) = self.reports.record(report, Instant::now()) {
                tracing::debug!(error = %e, "own report not recorded");
            }
            return;
        }
        let Some(url) = self
            .members
            .iter()
            .find(|m| m.node_id == leader)
            .and_then(|m| m.peer_url.clone())
        else {
            return;
        };
        let sent: Result<serde_json::Value, _> = self
            .client
            .post(&url, network::paths::REPORT, &report, self.report_interval)
            .await;
        if let Err(e) = sent {
            self.metrics.reports_sent_failed.inc();
            tracing::debug!(error = %e, "report not delivered");
        }
    }
}
