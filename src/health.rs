//! Local health: consecutive-result hysteresis per target, and the board that holds it.
//!
//! Probes are stateless; this module owns the thresholds. [`Health`] turns a stream of
//! successes and failures into `Up | Down | Unknown`, flipping only after `rise` successes
//! or `fall` failures in a row. [`HealthBoard`] keeps, per target, the state, the last
//! observation and the last change, for the status API and (later) the reports to the leader.
//! It must not probe, decide failovers or touch the outside world.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::SystemTime;

use serde::Serialize;

use crate::probe::{Observation, ProbeError};
use crate::topology::{Target, TargetId};

/// Health of one target as seen by this agent.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, serde::Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// `rise` consecutive successes.
    Up,
    /// `fall` consecutive failures.
    Down,
    /// Not enough evidence yet (just started).
    Unknown,
}

impl State {
    /// Lowercase name for labels and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Up => "up",
            State::Down => "down",
            State::Unknown => "unknown",
        }
    }

    /// Every state, for exporting one-hot gauges.
    pub const ALL: [State; 3] = [State::Up, State::Down, State::Unknown];
}

/// A change of state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition {
    /// State before.
    pub from: State,
    /// State after.
    pub to: State,
}

/// Rise/fall hysteresis over consecutive results.
#[derive(Debug, Clone)]
pub struct Health {
    state: State,
    rise: u32,
    fall: u32,
    successes: u32,
    failures: u32,
}

impl Health {
    /// Starts Unknown. `rise` and `fall` are at least 1 (validated in config).
    pub fn new(rise: u32, fall: u32) -> Self {
        Health {
            state: State::Unknown,
            rise: rise.max(1),
            fall: fall.max(1),
            successes: 0,
            failures: 0,
        }
    }

    /// Current state.
    pub fn state(&self) -> State {
        self.state
    }

    /// Consecutive successes (0 after a failure).
    pub fn successes(&self) -> u32 {
        self.successes
    }

    /// Consecutive failures (0 after a success).
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// Whether the state is in question: Unknown, or the latest result goes against it.
    pub fn in_question(&self) -> bool {
        match self.state {
            State::Unknown => true,
            State::Up => self.failures > 0,
            State::Down => self.successes > 0,
        }
    }

    /// Feeds one result; returns the transition if the state flipped.
    pub fn observe(&mut self, ok: bool) -> Option<Transition> {
        let from = self.state;
        if ok {
            self.successes = self.successes.saturating_add(1);
            self.failures = 0;
            if self.successes >= self.rise {
                self.state = State::Up;
            }
        } else {
            self.failures = self.failures.saturating_add(1);
            self.successes = 0;
            if self.failures >= self.fall {
                self.state = State::Down;
            }
        }
        (from != self.state).then_some(Transition {
            from,
            to: self.state,
        })
    }
}

/// What the status API shows of one target.
// The CLI shows only `id` and `state`: the other fields default when absent (see
// `crate::admin`).
#[derive(Debug, Clone, Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct TargetView {
    /// Target id.
    pub id: TargetId,
    /// Kind of probe.
    #[serde(default = "kind_not_given")]
    #[schemars(!default)]
    pub kind: crate::config::TargetKind,
    /// Region of the target.
    #[serde(default)]
    #[schemars(!default)]
    pub region: String,
    /// Current state.
    pub state: State,
    /// Consecutive successes.
    #[serde(default)]
    #[schemars(!default)]
    pub successes: u32,
    /// Consecutive failures.
    #[serde(default)]
    #[schemars(!default)]
    pub failures: u32,
    /// Probes run so far.
    #[serde(default)]
    #[schemars(!default)]
    pub probes: u64,
    /// When the last probe finished (RFC 3339).
    #[serde(
        default,
        serialize_with = "ser_time_opt",
        deserialize_with = "de_time_opt"
    )]
    #[schemars(with = "Option<String>", !default)]
    pub last_probe_at: Option<SystemTime>,
    /// The last result: an observation or an error.
    pub last: Option<LastResult>,
    /// The last change of state.
    pub last_change: Option<Change>,
}

impl TargetView {
    /// The facts of the last successful observation, if the last probe succeeded.
    pub fn facts(&self) -> Option<&crate::probe::Facts> {
        match &self.last {
            Some(LastResult::Ok { observation }) => Some(&observation.facts),
            _ => None,
        }
    }

    /// The role the last successful observation showed, for datastores: `primary` or
    /// `replica` (Postgres), `master` or `replica` (Redis).
    pub fn role(&self) -> Option<&'static str> {
        use crate::probe::postgres::PgRole;
        use crate::probe::redis::RedisRole;
        use crate::probe::Facts;
        match self.facts()? {
            Facts::Postgres(p) => Some(match p.role {
                PgRole::Primary => "primary",
                PgRole::Replica => "replica",
            }),
            Facts::Redis(r) => Some(match r.role {
                RedisRole::Master => "master",
                RedisRole::Replica => "replica",
            }),
            Facts::Http(_) => None,
        }
    }
}

/// The last probe result.
#[derive(Debug, Clone, Serialize, serde::Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase", tag = "outcome")]
pub enum LastResult {
    /// The check passed.
    Ok {
        /// What it saw.
        observation: Box<Observation>,
    },
    /// The check failed.
    Error {
        /// Why.
        error: String,
        /// Whether it failed by hitting the hard timeout.
        timeout: bool,
    },
}

/// A recorded change of state.
#[derive(Debug, Clone, Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct Change {
    /// State before.
    pub from: State,
    /// State after.
    pub to: State,
    /// When (RFC 3339).
    #[serde(serialize_with = "ser_time", deserialize_with = "de_time")]
    #[schemars(with = "String")]
    pub at: SystemTime,
    /// Why: the last error, or the number of successes.
    pub reason: String,
}

/// One target's slot on the board: its hysteresis and its view, behind one lock that only its
/// own probe task writes.
#[derive(Debug)]
pub struct TargetSlot {
    health: Mutex<(Health, TargetView)>,
}

/// Result of recording a probe on a slot.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// The flip, if any, with its reason.
    pub transition: Option<(Transition, String)>,
    /// Whether this was the target's first probe.
    pub first: bool,
    /// Whether the state is in question: Unknown, or the latest result goes against it.
    pub unsettled: bool,
}

impl TargetSlot {
    fn new(target: &Target) -> Self {
        let view = TargetView {
            id: target.id.clone(),
            kind: target.kind(),
            region: target.region.clone(),
            state: State::Unknown,
            successes: 0,
            failures: 0,
            probes: 0,
            last_probe_at: None,
            last: None,
            last_change: None,
        };
        TargetSlot {
            health: Mutex::new((
                Health::new(target.settings.rise, target.settings.fall),
                view,
            )),
        }
    }

    /// Records one probe result and returns the flip it caused, if any.
    pub fn record(&self, result: &Result<Observation, ProbeError>, at: SystemTime) -> Recorded {
        let mut guard = self.health.lock().unwrap_or_else(|p| p.into_inner());
        let (health, view) = &mut *guard;
        let transition = health.observe(result.is_ok());
        let first = view.probes == 0;
        view.probes += 1;
        view.state = health.state();
        view.successes = health.successes();
        view.failures = health.failures();
        view.last_probe_at = Some(at);
        view.last = Some(match result {
            Ok(observation) => LastResult::Ok {
                observation: Box::new(observation.clone()),
            },
            Err(e) => LastResult::Error {
                error: e.to_string(),
                timeout: matches!(e, ProbeError::Timeout(_)),
            },
        });
        let transition = transition.map(|t| {
            let reason = match result {
                Ok(_) => format!("{} consecutive successful probes", health.successes()),
                Err(e) => format!("{} consecutive failed probes, last: {e}", health.failures()),
            };
            view.last_change = Some(Change {
                from: t.from,
                to: t.to,
                at,
                reason: reason.clone(),
            });
            (t, reason)
        });
        Recorded {
            transition,
            first,
            unsettled: health.in_question(),
        }
    }

    /// A copy of the current view.
    pub fn view(&self) -> TargetView {
        self.health
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .1
            .clone()
    }

    /// Current state.
    pub fn state(&self) -> State {
        self.health
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .1
            .state
    }
}

/// Health of every target this agent probes.
#[derive(Debug)]
pub struct HealthBoard {
    slots: Vec<(TargetId, std::sync::Arc<TargetSlot>)>,
    probed: AtomicUsize,
}

impl HealthBoard {
    /// One Unknown slot per target.
    pub fn new(targets: &[Target]) -> Self {
        HealthBoard {
            slots: targets
                .iter()
                .map(|t| (t.id.clone(), std::sync::Arc::new(TargetSlot::new(t))))
                .collect(),
            probed: AtomicUsize::new(0),
        }
    }

    /// The slot of a target.
    pub fn slot(&self, id: &TargetId) -> Option<std::sync::Arc<TargetSlot>> {
        self.slots
            .iter()
            .find(|(slot_id, _)| slot_id == id)
            .map(|(_, s)| s.clone())
    }

    /// Records a probe result on the slot and counts first probes for readiness.
    pub fn record(
        &self,
        slot: &TargetSlot,
        result: &Result<Observation, ProbeError>,
        at: SystemTime,
    ) -> Recorded {
        let recorded = slot.record(result, at);
        if recorded.first {
            self.probed.fetch_add(1, Ordering::Relaxed);
        }
        recorded
    }

    /// Ready once every target has been probed at least once.
    pub fn ready(&self) -> bool {
        self.probed.load(Ordering::Relaxed) >= self.slots.len()
    }

    /// Targets probed at least once, and in all.
    pub fn progress(&self) -> (usize, usize) {
        (self.probed.load(Ordering::Relaxed), self.slots.len())
    }

    /// Views of every target, in config order.
    pub fn views(&self) -> Vec<TargetView> {
        self.slots.iter().map(|(_, s)| s.view()).collect()
    }

    /// The state of one target.
    pub fn state(&self, id: &TargetId) -> Option<State> {
        self.slot(id).map(|s| s.state())
    }
}

fn ser_time<S: serde::Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&humantime::format_rfc3339_millis(*t).to_string())
}

fn ser_time_opt<S: serde::Serializer>(t: &Option<SystemTime>, s: S) -> Result<S::Ok, S::Error> {
    match t {
        Some(t) => ser_time(t, s),
        None => s.serialize_none(),
    }
}

fn de_time<'de, D: serde::Deserializer<'de>>(d: D) -> Result<SystemTime, D::Error> {
    let text = <String as serde::Deserialize>::deserialize(d)?;
    humantime::parse_rfc3339(&text).map_err(serde::de::Error::custom)
}

fn de_time_opt<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<SystemTime>, D::Error> {
    let text = <Option<String> as serde::Deserialize>::deserialize(d)?;
    text.map(|t| humantime::parse_rfc3339(&t).map_err(serde::de::Error::custom))
        .transpose()
}

/// The kind a [`TargetView`] read without one is given. Agents always write it; a trimmed
/// answer (only what the CLI shows) does not, and the CLI does not show the kind.
fn kind_not_given() -> crate::config::TargetKind {
    crate::config::TargetKind::Http
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn starts_unknown_and_needs_rise_successes_to_be_up() {
        let mut h = Health::new(2, 3);
        assert_eq!(h.state(), State::Unknown);
        assert_eq!(h.observe(true), None);
        assert_eq!(
            h.observe(true),
            Some(Transition {
                from: State::Unknown,
                to: State::Up
            })
        );
        assert_eq!(h.observe(true), None, "no repeated transition while Up");
    }

    #[test]
    fn needs_fall_consecutive_failures_to_be_down() {
        let mut h = Health::new(1, 3);
        h.observe(true);
        assert_eq!(h.state(), State::Up);
        assert_eq!(h.observe(false), None);
        assert_eq!(h.observe(false), None);
        assert_eq!(
            h.observe(false),
            Some(Transition {
                from: State::Up,
                to: State::Down
            })
        );
    }

    #[test]
    fn the_state_is_in_question_until_the_results_agree_with_it() {
        let mut h = Health::new(2, 3);
        assert!(h.in_question(), "Unknown");
        h.observe(true);
        h.observe(true);
        assert!(!h.in_question(), "Up, last result ok");
        h.observe(false);
        assert!(h.in_question(), "Up, one failure");
        h.observe(false);
        h.observe(false);
        assert!(!h.in_question(), "Down, last result failed");
        h.observe(true);
        assert!(h.in_question(), "Down, one success");
    }

    #[test]
    fn a_success_resets_the_failure_count() {
        let mut h = Health::new(1, 2);
        h.observe(true);
        for _ in 0..10 {
            h.observe(false);
            h.observe(true);
        }
        assert_eq!(
            h.state(),
            State::Up,
            "alternating results never reach fall=2"
        );
    }

    #[test]
    fn zero_thresholds_are_treated_as_one() {
        let mut h = Health::new(0, 0);
        assert_eq!(h.observe(false).map(|t| t.to), Some(State::Down));
        assert_eq!(h.observe(true).map(|t| t.to), Some(State::Up));
    }

    proptest! {
        /// The state only ever changes after exactly `rise` successes or `fall` failures in a
        /// row, whatever the sequence.
        #[test]
        fn state_follows_the_last_run(rise in 1u32..5, fall in 1u32..5,
                                      seq in proptest::collection::vec(any::<bool>(), 0..60)) {
            let mut h = Health::new(rise, fall);
            let mut expected = State::Unknown;
            let mut run = (true, 0u32);
            for ok in seq {
                run = if run.0 == ok { (ok, run.1 + 1) } else { (ok, 1) };
                if ok && run.1 >= rise { expected = State::Up; }
                if !ok && run.1 >= fall { expected = State::Down; }
                let before = h.state();
                let t = h.observe(ok);
                prop_assert_eq!(h.state(), expected);
                prop_assert_eq!(t.is_some(), before != expected);
            }
        }
    }
}
