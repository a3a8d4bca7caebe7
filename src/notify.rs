//! Notifications: failover and fencing events POSTed to a webhook as JSON, in order.
//!
//! The body is Slack-compatible (a `text` line for people) and carries the event's fields for
//! machines. Events queue in a bounded channel read by one sender task, so they arrive in
//! the order they happened; each is retried with backoff and dropped (and counted) after its
//! attempts. Sending never blocks a failover step: a full queue drops the event and counts
//! it. The webhook URL is a secret (Slack's carries its token) and is never logged.

use std::time::Duration;

use prometheus::{IntCounterVec, Opts, Registry};
use serde::Serialize;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::config::{NotifyConfig, SecretRef};

/// Events that wait to be sent at most; more are dropped and counted.
const QUEUE: usize = 256;

/// One event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Event {
    /// `failover_started`, `failover_completed`, `failover_failed`, `refusal`, `fenced`,
    /// `unfenced`, `demoted`, `rejoined`, `rejoin_failed`, `replica_not_following`,
    /// `replica_repointed`, `redundancy_restored`.
    pub event: &'static str,
    /// The agent that sends it.
    pub agent: String,
    /// Unix milliseconds.
    pub at_ms: u64,
    /// One line for people (Slack shows this field).
    pub text: String,
    /// The failover's epoch, when it concerns one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub epoch: Option<u64>,
    /// Event-specific fields.
    pub details: serde_json::Value,
}

/// The sending side, cheap to clone; a no-op without a webhook.
#[derive(Clone)]
pub struct Notifier {
    queue: Option<mpsc::Sender<Event>>,
    agent: String,
    outcomes: IntCounterVec,
}

/// The task that delivers queued events.
pub struct Delivery {
    receiver: mpsc::Receiver<Event>,
    url: SecretRef,
    timeout: Duration,
    attempts: u32,
    outcomes: IntCounterVec,
}

impl Notifier {
    /// A notifier for `config` (none: events go nowhere) and the task that delivers.
    pub fn new(
        config: Option<&NotifyConfig>,
        agent: &str,
        registry: &Registry,
    ) -> prometheus::Result<(Notifier, Option<Delivery>)> {
        let outcomes = IntCounterVec::new(
            Opts::new(
                "failoverd_notifications_total",
                "Webhook notifications by result: sent, failed (after every attempt), dropped (queue full).",
            ),
            &["result"],
        )?;
        registry.register(Box::new(outcomes.clone()))?;
        let Some(config) = config else {
            return Ok((
                Notifier {
                    queue: None,
                    agent: agent.to_owned(),
                    outcomes,
                },
                None,
            ));
        };
        let (sender, receiver) = mpsc::channel(QUEUE);
        Ok((
            Notifier {
                queue: Some(sender),
                agent: agent.to_owned(),
                outcomes: outcomes.clone(),
            },
            Some(Delivery {
                receiver,
                url: config.webhook_url.clone(),
                timeout: config.timeout(),
                attempts: config.attempts(),
                outcomes,
            }),
        ))
    }

    /// Queues an event; never waits.
    pub fn send(
        &self,
        event: &'static str,
        epoch: Option<u64>,
        text: String,
        details: serde_json::Value,
    ) {
        let Some(queue) = &self.queue else {
            return;
        };
        let event = Event {
            event,
            agent: self.agent.clone(),
            at_ms: crate::util::now_ms(),
            text,
            epoch,
            details,
        };
        if queue.try_send(event).is_err() {
            self.outcomes.with_label_values(&["dropped"]).inc();
            tracing::warn!("notification queue full: event dropped");
        }
    }
}

impl Delivery {
    /// Sends queued events in order until `shutdown`.
    pub async fn run(mut self, shutdown: CancellationToken) {
        let client = match reqwest::Client::builder()
            .timeout(self.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()
        {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, "cannot build the webhook client: notifications off");
                return;
            }
        };
        loop {
            let event = tokio::select! {
                _ = shutdown.cancelled() => return,
                event = self.receiver.recv() => match event {
                    Some(e) => e,
                    None => return,
                },
            };
            let mut pause = Duration::from_millis(200);
            let mut delivered = false;
            for attempt in 1..=self.attempts {
                match self.post(&client, &event).await {
                    Ok(()) => {
                        delivered = true;
                        break;
                    }
                    Err(e) => {
                        tracing::warn!(event = event.event, attempt, error = %e, "webhook delivery failed");
                        if attempt < self.attempts {
                            tokio::select! {
                                _ = shutdown.cancelled() => return,
                                _ = tokio::time::sleep(pause) => {}
                            }
                            pause = (pause * 2).min(Duration::from_secs(5));
                        }
                    }
                }
            }
            self.outcomes
                .with_label_values(&[if delivered { "sent" } else { "failed" }])
                .inc();
        }
    }

    async fn post(&self, client: &reqwest::Client, event: &Event) -> Result<(), String> {
        let url = self
            .url
            .load()
            .map_err(|e| format!("notify.webhook_url: {e}"))?;
        let answer = client
            .post(url.expose())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(serde_json::to_vec(event).map_err(|e| e.to_string())?)
            .send()
            .await
            // reqwest's error names the URL: keep only what happened.
            .map_err(|e| {
                let e = e.without_url();
                crate::util::error_chain(&e)
            })?;
        if answer.status().is_success() {
            Ok(())
        } else {
            Err(format!("answered {}", answer.status()))
        }
    }
}
