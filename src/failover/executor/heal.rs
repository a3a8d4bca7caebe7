//! The healer: on the leader, it points each replica that does not stream from its group's
//! primary at it ([`super::super::heal`] says which), until it does — after a failover whose
//! follow step failed or could not reach the replica, and after a replica restarts with an
//! old `primary_conninfo`. Never while automation is paused nor while a failover runs.
//!
//! A replica is repointed once it has not streamed from the primary for [`GRACE`] (a WAL
//! receiver that lost its connection retries every `wal_retrieve_retry_interval`, 5 s by
//! default), then again with doubling backoff up to [`MAX_BACKOFF`] while it still does not.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::Reconciler;
use crate::consensus::LeaderView;
use crate::failover::heal::{Group, Healing};
use crate::topology::TargetId;
use crate::util::now_ms;

/// How long a replica does not stream from its primary before it is repointed.
pub(super) const GRACE: Duration = Duration::from_secs(5);
/// The longest wait between two attempts on one replica.
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// What the healer holds between ticks.
#[derive(Debug, Default)]
pub(super) struct Healer {
    /// The replicas that do not stream from their primary.
    tracks: BTreeMap<TargetId, Track>,
    /// Groups short of redundancy, since when (Unix ms, and monotonic).
    short: BTreeMap<String, (u64, Instant)>,
    /// The latest redundancy of each group.
    groups: Vec<Group>,
}

#[derive(Debug)]
struct Track {
    since: Instant,
    since_ms: u64,
    attempts: u32,
    next: Instant,
    running: bool,
    last_error: Option<String>,
}

impl Healer {
    /// Forgets everything: this agent no longer leads.
    pub(super) fn clear(&mut self) {
        *self = Healer::default();
    }
}

impl Reconciler {
    /// On the leader: each Postgres group's members against its primary, with the healer's
    /// work on those that do not stream from it; empty elsewhere.
    pub fn redundancy(&self) -> BTreeMap<String, Group> {
        let healer = self.healer.lock().unwrap_or_else(|p| p.into_inner());
        healer
            .groups
            .iter()
            .map(|g| {
                let mut g = g.clone();
                for m in &mut g.members {
                    m.healing = healer.tracks.get(&m.member).map(|t| Healing {
                        since_ms: t.since_ms,
                        attempts: t.attempts,
                        last_error: t.last_error.clone(),
                    });
                }
                (g.group.clone(), g)
            })
            .collect()
    }

    /// Looks at each group's redundancy, sets its metrics, and repoints the replicas that
    /// have not streamed from their primary for [`GRACE`] — only when `act`.
    pub(super) fn heal(self: &Arc<Self>, view: &LeaderView, act: bool) {
        let (groups, follows) = self.engine().settings().roster.redundancy(view);
        let now = Instant::now();
        let mut healer = self.healer.lock().unwrap_or_else(|p| p.into_inner());
        for g in &groups {
            self.metrics
                .replicas
                .with_label_values(&[&g.group])
                .set(i64::from(g.replicas));
            self.metrics
                .streaming
                .with_label_values(&[&g.group])
                .set(i64::from(g.streaming));
            match (g.full(), healer.short.get(&g.group).copied()) {
                (false, None) => {
                    healer.short.insert(g.group.clone(), (now_ms(), now));
                }
                (true, Some((_, since))) => {
                    healer.short.remove(&g.group);
                    let took = since.elapsed().as_secs_f64();
                    let text = format!(
                        "{}: redundancy restored, {} of {} replicas stream from {} ({took:.1} s after it fell short)",
                        g.group, g.streaming, g.replicas, g.primary
                    );
                    tracing::info!(group = %g.group, took_s = took, "{text}");
                    self.notifier.send(
                        "redundancy_restored",
                        None,
                        text,
                        serde_json::json!({ "group": g.group, "took_ms": (took * 1000.0) as u64 }),
                    );
                }
                _ => {}
            }
        }
        healer.groups = groups;
        let wanted: BTreeMap<TargetId, _> =
            follows.into_iter().map(|f| (f.member.clone(), f)).collect();
        healer.tracks.retain(|member, track| {
            let keep = wanted.contains_key(member) || track.running;
            if !keep && track.attempts > 0 {
                tracing::info!(member = %member, attempts = track.attempts, "heal: streams from its primary again");
            }
            keep
        });
        for (member, follow) in wanted {
            let track = healer
                .tracks
                .entry(member.clone())
                .or_insert_with(|| Track {
                    since: now,
                    since_ms: now_ms(),
                    attempts: 0,
                    next: now + GRACE,
                    running: false,
                    last_error: None,
                });
            if !act || track.running || now < track.next || track.since.elapsed() < GRACE {
                continue;
            }
            track.running = true;
            track.attempts += 1;
            let attempt = track.attempts;
            tracing::info!(member = %member, primary = %follow.primary, attempt, why = %follow.why, "heal: pointing the replica at its primary");
            let this = self.clone();
            tokio::spawn(async move {
                let result = this
                    .steps
                    .follow_postgres(&follow.member, &follow.primary)
                    .await;
                let mut healer = this.healer.lock().unwrap_or_else(|p| p.into_inner());
                let Some(track) = healer.tracks.get_mut(&follow.member) else {
                    return;
                };
                track.running = false;
                match result {
                    Ok(detail) => {
                        this.metrics.heals.with_label_values(&["ok"]).inc();
                        track.last_error = None;
                        track.next = Instant::now() + GRACE;
                        let text = format!("heal: {detail} (was: {})", follow.why);
                        tracing::info!(member = %follow.member, "{text}");
                        this.notifier.send(
                            "replica_repointed",
                            None,
                            text,
                            serde_json::json!({ "member": follow.member, "attempt": attempt }),
                        );
                    }
                    Err(e) => {
                        this.metrics.heals.with_label_values(&["failed"]).inc();
                        let backoff = GRACE
                            .saturating_mul(2u32.saturating_pow(attempt.saturating_sub(1)))
                            .min(MAX_BACKOFF);
                        track.next = Instant::now() + backoff;
                        tracing::warn!(member = %follow.member, attempt, error = %e.message, retry_in_s = backoff.as_secs(), "heal: the replica does not follow its primary yet");
                        if attempt == 1 {
                            this.notifier.send(
                                "replica_not_following",
                                None,
                                format!(
                                    "{} does not stream from {}: {}",
                                    follow.member, follow.primary, e.message
                                ),
                                serde_json::json!({ "member": follow.member }),
                            );
                        }
                        track.last_error = Some(e.message);
                    }
                }
            });
        }
    }
}
