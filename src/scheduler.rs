//! Runs every probe on its own task, its own interval and a hard timeout.
//!
//! Each target gets one task, so a hung or black-holed target can only delay itself. The
//! first probe of each target starts at a random offset within its interval, which spreads
//! thousands of targets (and several agents) evenly over time instead of probing in bursts;
//! after that the cadence is exact. While a target's state is in question — a failure of an
//! Up target, a success of a Down one, an Unknown target, or a replica whose replication link
//! was just lost, for `fall` probes — the next probe starts `fast_interval` after the start of
//! the last one instead, at once if that one took longer (HAProxy's `fastinter`); once
//! settled, the cadence resumes from there. So a dead target is Down within one interval plus
//! (fall − 1) × max(fast interval, timeout) — a black-holed one, whose probes time out, within
//! one interval plus (fall − 1) × timeout — and a replica's lost link is seen `fall` times
//! within half a second. A probe
//! that holds a connection open (Postgres) is also run at once when the server closes it, so
//! a crashed server's first failed probe does not wait for the tick: Down within
//! (fall − 1) × fast interval. Such wake-ups come at most once per fast interval.
//! Every wait races the shutdown token.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rand::Rng;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use crate::config::ProbeSettings;
use crate::health::{HealthBoard, State, TargetSlot};
use crate::metrics::TargetMetrics;
use crate::probe::{Observation, Probe, ProbeError};
use crate::topology::TargetId;

/// Everything one probe task needs.
pub struct ProbeTask<P> {
    /// The target's id (for logs).
    pub id: TargetId,
    /// Cadence and timeout.
    pub settings: ProbeSettings,
    /// The check.
    pub probe: P,
    /// Where results go.
    pub board: Arc<HealthBoard>,
    /// The target's slot on the board.
    pub slot: Arc<TargetSlot>,
    /// The target's metrics.
    pub metrics: TargetMetrics,
}

impl<P: Probe> ProbeTask<P> {
    /// Probes until `shutdown` is cancelled.
    pub async fn run(mut self, shutdown: CancellationToken) {
        let interval = self.settings.interval;
        let phase = random_phase(interval);
        let mut ticker = tokio::time::interval_at(Instant::now() + phase, interval);
        // A probe never outlives its interval (timeout < interval), so ticks are only missed
        // when the runtime itself stalls; then probe once and keep the cadence from there.
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut fast = false;
        // Consecutive observations of this replica with its replication link down.
        let mut link_down = 0u32;
        let closed = self.probe.closed();
        let mut last_woken: Option<Instant> = None;
        let mut last_started = Instant::now();
        loop {
            let woken = if fast {
                // A fast interval from the start of the last probe: one that timed out has
                // waited long enough already.
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep_until(last_started + self.settings.fast_interval) => false,
                    _ = server_closed(&closed) => true,
                }
            } else {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = ticker.tick() => false,
                    _ = server_closed(&closed) => true,
                }
            };
            if woken {
                tracing::debug!(target_id = %self.id, "the server closed the probe's connection: probing now");
                // Woken no more often than the fast interval, whatever the server does.
                if let Some(at) = last_woken {
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep_until(at + self.settings.fast_interval) => {}
                    }
                }
                last_woken = Some(Instant::now());
            }
            let started = Instant::now();
            last_started = started;
            // Boxed: the probe's future (an HTTP client's is kilobytes) lives only while it
            // runs, instead of inside every target's task for the agent's whole life.
            let check = Box::pin(tokio::time::timeout(
                self.settings.timeout,
                self.probe.check(),
            ));
            let result = tokio::select! {
                _ = shutdown.cancelled() => return,
                r = check => r.unwrap_or(Err(ProbeError::Timeout(self.settings.timeout))),
            };
            let elapsed = started.elapsed();
            let link_lost = result
                .as_ref()
                .ok()
                .and_then(|o| crate::evidence::link_in(&o.facts))
                .is_some_and(|link| !link.up);
            link_down = if link_lost { link_down + 1 } else { 0 };
            let unsettled =
                self.record(result, elapsed) || (link_lost && link_down < self.settings.fall);
            if fast && !unsettled {
                // Settled: the regular cadence again, one interval from now.
                ticker.reset();
            }
            fast = unsettled;
        }
    }

    /// Records a result; returns whether the target's state is in question.
    fn record(&mut self, result: Result<Observation, ProbeError>, elapsed: Duration) -> bool {
        let recorded = self.board.record(&self.slot, &result, SystemTime::now());
        self.metrics.observe(&result, elapsed.as_secs_f64());
        if let Some((t, reason)) = recorded.transition {
            self.metrics.transition(t);
            let (from, to) = (t.from.as_str(), t.to.as_str());
            if t.to == State::Down {
                tracing::warn!(target_id = %self.id, from, to, %reason, "target state changed");
            } else {
                tracing::info!(target_id = %self.id, from, to, %reason, "target state changed");
            }
        }
        recorded.unsettled
    }
}

/// Resolves when the server closes the connection `closed` watches; never without one.
async fn server_closed(closed: &Option<Arc<tokio::sync::Notify>>) {
    match closed {
        Some(closed) => closed.notified().await,
        None => std::future::pending().await,
    }
}

fn random_phase(interval: Duration) -> Duration {
    let nanos = u64::try_from(interval.as_nanos()).unwrap_or(u64::MAX);
    Duration::from_nanos(rand::rng().random_range(0..nanos.max(1)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::ProbeMetrics;
    use crate::probe::{Facts, HttpFacts, Observation};
    use crate::topology::Target;
    use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

    /// A check whose behaviour the test scripts: it counts calls, can hang forever, and fails
    /// at once while `fail` is set.
    struct Scripted {
        calls: Arc<AtomicU32>,
        hang: bool,
        fail: Arc<AtomicBool>,
        closed: Option<Arc<tokio::sync::Notify>>,
    }

    impl Probe for Scripted {
        async fn check(&self) -> Result<Observation, ProbeError> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            if self.hang {
                std::future::pending::<()>().await;
            }
            if self.fail.load(Ordering::SeqCst) {
                return Err(ProbeError::Connect("refused".into()));
            }
            Ok(Observation {
                latency: Duration::ZERO,
                facts: Facts::Http(HttpFacts {
                    status: 200,
                    body_bytes: 0,
                }),
            })
        }

        fn closed(&self) -> Option<Arc<tokio::sync::Notify>> {
            self.closed.clone()
        }
    }

    fn target(name: &str, settings: ProbeSettings) -> Target {
        Target::http_for_tests(name, "r1", settings)
    }

    fn spawn(
        t: &Target,
        board: &Arc<HealthBoard>,
        metrics: &ProbeMetrics,
        hang: bool,
        shutdown: &CancellationToken,
    ) -> (Arc<AtomicU32>, tokio::task::JoinHandle<()>) {
        let (calls, _, handle) = spawn_failable(t, board, metrics, hang, shutdown);
        (calls, handle)
    }

    fn spawn_failable(
        t: &Target,
        board: &Arc<HealthBoard>,
        metrics: &ProbeMetrics,
        hang: bool,
        shutdown: &CancellationToken,
    ) -> (Arc<AtomicU32>, Arc<AtomicBool>, tokio::task::JoinHandle<()>) {
        spawn_watched(t, board, metrics, hang, None, shutdown)
    }

    /// As [`spawn_failable`], with a probe whose connection closes when `closed` is notified.
    fn spawn_watched(
        t: &Target,
        board: &Arc<HealthBoard>,
        metrics: &ProbeMetrics,
        hang: bool,
        closed: Option<Arc<tokio::sync::Notify>>,
        shutdown: &CancellationToken,
    ) -> (Arc<AtomicU32>, Arc<AtomicBool>, tokio::task::JoinHandle<()>) {
        let calls = Arc::new(AtomicU32::new(0));
        let fail = Arc::new(AtomicBool::new(false));
        let task = ProbeTask {
            id: t.id.clone(),
            settings: t.settings.clone(),
            probe: Scripted {
                calls: calls.clone(),
                hang,
                fail: fail.clone(),
                closed,
            },
            board: board.clone(),
            slot: board.slot(&t.id).unwrap(),
            metrics: metrics.target(t),
        };
        (calls, fail, tokio::spawn(task.run(shutdown.clone())))
    }

    /// Probes 1 s apart, 250 ms while in question, a 500 ms timeout, rise 2, fall 3.
    fn one_second_fall_three() -> ProbeSettings {
        ProbeSettings {
            interval: Duration::from_secs(1),
            timeout: Duration::from_millis(500),
            rise: 2,
            fall: 3,
            fast_interval: Duration::from_millis(250),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_failing_target_is_probed_again_soon_and_the_cadence_resumes_once_it_is_down() {
        let settings = one_second_fall_three();
        let t = target("api", settings);
        let board = Arc::new(HealthBoard::new(std::slice::from_ref(&t)));
        let metrics = ProbeMetrics::new(&prometheus::Registry::new()).unwrap();
        let shutdown = CancellationToken::new();
        let (calls, fail, handle) = spawn_failable(&t, &board, &metrics, false, &shutdown);
        // Unknown at the start: the second success follows 250 ms after the first.
        while board.state(&t.id) != Some(State::Up) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        tokio::time::sleep(Duration::from_millis(2_300)).await;
        let before = calls.load(Ordering::SeqCst);
        fail.store(true, Ordering::SeqCst);
        let failed_at = Instant::now();
        while board.state(&t.id) != Some(State::Down) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // The next regular probe (within 1 s), then two more 250 ms apart.
        let took = failed_at.elapsed();
        assert!(
            took <= Duration::from_millis(1_520),
            "Down after {took:?} of failures"
        );
        assert_eq!(calls.load(Ordering::SeqCst), before + 3);
        // Settled: one probe per interval again.
        let down_calls = calls.load(Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(5_050)).await;
        assert_eq!(calls.load(Ordering::SeqCst), down_calls + 5);
        shutdown.cancel();
        handle.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_the_server_closes_is_probed_at_once_and_never_more_often_than_fast() {
        let settings = one_second_fall_three();
        let t = target("pg", settings);
        let board = Arc::new(HealthBoard::new(std::slice::from_ref(&t)));
        let metrics = ProbeMetrics::new(&prometheus::Registry::new()).unwrap();
        let shutdown = CancellationToken::new();
        let closed = Arc::new(tokio::sync::Notify::new());
        let (calls, fail, handle) =
            spawn_watched(&t, &board, &metrics, false, Some(closed.clone()), &shutdown);
        tokio::time::sleep(Duration::from_millis(2_300)).await;
        assert_eq!(board.state(&t.id), Some(State::Up));
        let before = calls.load(Ordering::SeqCst);
        // The server dies: it closes the connection, and the probes fail from now on.
        fail.store(true, Ordering::SeqCst);
        closed.notify_one();
        let closed_at = Instant::now();
        while board.state(&t.id) != Some(State::Down) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // No wait for the tick: a probe at once, then two more 250 ms apart.
        let took = closed_at.elapsed();
        assert!(
            took <= Duration::from_millis(520),
            "Down {took:?} after the close"
        );
        assert_eq!(calls.load(Ordering::SeqCst), before + 3);
        // A server that closes every connection at once cannot make the probe spin: at most
        // one wake-up per fast interval, and the regular tick.
        fail.store(false, Ordering::SeqCst);
        let from = calls.load(Ordering::SeqCst);
        for _ in 0..100 {
            closed.notify_one();
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let probes = calls.load(Ordering::SeqCst) - from;
        assert!(
            (4..=6).contains(&probes),
            "{probes} probes in 1 s of closes: one per fast interval and the tick"
        );
        shutdown.cancel();
        handle.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_black_holed_target_is_down_within_an_interval_and_its_timeouts() {
        let t = target("api", one_second_fall_three());
        let board = Arc::new(HealthBoard::new(std::slice::from_ref(&t)));
        let metrics = ProbeMetrics::new(&prometheus::Registry::new()).unwrap();
        let shutdown = CancellationToken::new();
        let (calls, handle) = spawn(&t, &board, &metrics, true, &shutdown);
        while calls.load(Ordering::SeqCst) == 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let first = Instant::now();
        while board.state(&t.id) != Some(State::Down) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // Three timeouts back to back (fall 3), not a fast interval after each on top of it
        // (that would be 2 s).
        let took = first.elapsed();
        assert!(
            took <= Duration::from_millis(1_520),
            "Down {took:?} after the first probe started"
        );
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        shutdown.cancel();
        handle.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_hung_target_times_out_without_delaying_the_others() {
        let settings = ProbeSettings {
            interval: Duration::from_secs(1),
            timeout: Duration::from_millis(500),
            rise: 1,
            fall: 2,
            fast_interval: Duration::from_millis(250),
        };
        let hung = target("hung", settings.clone());
        let healthy = target("healthy", settings);
        let board = Arc::new(HealthBoard::new(&[hung.clone(), healthy.clone()]));
        let metrics = ProbeMetrics::new(&prometheus::Registry::new()).unwrap();
        let shutdown = CancellationToken::new();
        let (hung_calls, h1) = spawn(&hung, &board, &metrics, true, &shutdown);
        let (ok_calls, h2) = spawn(&healthy, &board, &metrics, false, &shutdown);

        tokio::time::sleep(Duration::from_millis(10_050)).await;
        // A random phase below 1 s, then one probe per second: 10 probes in the first
        // 10.05 s, or 11 when the phase fell below 50 ms. Fewer would mean a delay.
        let ok = ok_calls.load(Ordering::SeqCst);
        let hung_count = hung_calls.load(Ordering::SeqCst);
        assert!((10..=11).contains(&ok), "healthy target probed {ok} times");
        // The hung one: its first probe times out at phase + 0.5 s, the second starts at once
        // (a fast interval from the start of the first has passed) and times out at phase +
        // 1 s (Down, fall 2), then one per second from there: 10 probes, or 11 when the phase
        // was below 50 ms.
        assert!(
            (10..=11).contains(&hung_count),
            "hung probe restarts each interval: {hung_count}"
        );
        assert_eq!(board.state(&hung.id), Some(State::Down));
        assert_eq!(board.state(&healthy.id), Some(State::Up));
        let view = board.slot(&hung.id).unwrap().view();
        assert!(matches!(
            view.last,
            Some(crate::health::LastResult::Error { timeout: true, .. })
        ));

        shutdown.cancel();
        h1.await.unwrap();
        h2.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_stops_a_probe_that_is_waiting_on_its_timeout() {
        let settings = ProbeSettings {
            interval: Duration::from_secs(60),
            timeout: Duration::from_secs(30),
            rise: 1,
            fall: 1,
            fast_interval: Duration::from_millis(250),
        };
        let t = target("slow", settings);
        let board = Arc::new(HealthBoard::new(std::slice::from_ref(&t)));
        let metrics = ProbeMetrics::new(&prometheus::Registry::new()).unwrap();
        let shutdown = CancellationToken::new();
        let (calls, handle) = spawn(&t, &board, &metrics, true, &shutdown);
        while calls.load(Ordering::SeqCst) == 0 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let cancelled_at = Instant::now();
        shutdown.cancel();
        handle.await.unwrap();
        assert_eq!(
            cancelled_at.elapsed(),
            Duration::ZERO,
            "no wait for the timeout"
        );
        assert_eq!(
            board.state(&t.id),
            Some(State::Unknown),
            "an aborted probe records nothing"
        );
    }
}
