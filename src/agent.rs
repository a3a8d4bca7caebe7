//! The agent: builds every component from a validated config and runs them until shutdown.
//!
//! `Config` → [`Agent::build`] (probes, health board, metrics; nothing is started) →
//! [`Agent::run`] with an already-bound admin listener and a shutdown token. Tests bind port 0
//! and hand the listener in; `main` binds the configured address.

use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::admin::{self, AdminState};
use crate::config::Config;
use crate::consensus::Consensus;
use crate::fencing::Fencer;
use crate::health::HealthBoard;
use crate::metrics::{self, ProbeMetrics};
use crate::probe::{AnyProbe, BuildError, HttpClients};
use crate::scheduler::ProbeTask;
use crate::topology::{Target, Topology};

/// Why the agent could not be built or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// A metric could not be registered (a programming error: duplicate names).
    #[error("cannot register metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    /// A probe could not be built from its target.
    #[error("cannot build probe: {0}")]
    Probe(#[from] BuildError),
    /// The admin server failed.
    #[error("admin server failed: {0}")]
    Serve(#[source] std::io::Error),
    /// The peer server failed.
    #[error("peer server failed: {0}")]
    PeerServe(#[source] std::io::Error),
    /// A listener's TLS settings are unusable.
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    /// Consensus could not start.
    #[error("consensus: {0}")]
    Consensus(Box<crate::consensus::ConsensusError>),
    /// The failover reconciler could not be set up.
    #[error("failover: {0}")]
    Reconciler(#[from] crate::failover::executor::ReconcilerError),
}

/// A built, not yet running agent.
pub struct Agent {
    config: Config,
    targets: Vec<Target>,
    board: Arc<HealthBoard>,
    registry: prometheus::Registry,
    probe_series: metrics::ProbeSeries,
    tasks: Vec<ProbeTask<AnyProbe>>,
}

impl Agent {
    /// Builds probes, health board and metrics for the targets this agent probes.
    pub fn build(config: Config) -> Result<Agent, AgentError> {
        let topology = Topology::from_config(&config);
        let targets = topology.probed_from(&config.agent.region, config.agent.probe_scope);
        let registry = prometheus::Registry::new();
        metrics::register_build_info(&registry)?;
        let probe_metrics = ProbeMetrics::new(&registry)?;
        let board = Arc::new(HealthBoard::new(&targets));
        let mut clients = HttpClients::default();
        let mut tasks = Vec::with_capacity(targets.len());
        for target in &targets {
            let slot = board
                .slot(&target.id)
                .expect("the board has a slot for every target");
            tasks.push(ProbeTask {
                id: target.id.clone(),
                settings: target.settings.clone(),
                probe: AnyProbe::build(target, &mut clients)?,
                board: board.clone(),
                slot,
                metrics: probe_metrics.target(target),
            });
        }
        Ok(Agent {
            config,
            targets,
            board,
            registry,
            probe_series: probe_metrics.series(),
            tasks,
        })
    }

    /// The health board (shared; it stays valid after the agent stops).
    pub fn board(&self) -> Arc<HealthBoard> {
        self.board.clone()
    }

    /// The targets this agent probes.
    pub fn targets(&self) -> &[Target] {
        &self.targets
    }

    /// Runs probes, consensus, the admin API and (when given) the peer API until `shutdown`
    /// is cancelled, then waits for all of them.
    pub async fn run(
        self,
        admin_listener: TcpListener,
        peer_listener: Option<TcpListener>,
        shutdown: CancellationToken,
    ) -> Result<(), AgentError> {
        let Agent {
            config,
            board,
            registry,
            probe_series,
            tasks,
            targets,
        } = self;
        tracing::info!(
            agent = %config.agent.id,
            region = %config.agent.region,
            targets = targets.len(),
            admin = %admin_listener.local_addr().map(|a| a.to_string()).unwrap_or_default(),
            "agent starting"
        );
        let consensus = Consensus::start(&config, &registry)
            .await
            .map_err(|e| AgentError::Consensus(Box::new(e)))?;
        let (notifier, delivery) =
            crate::notify::Notifier::new(config.notify.as_ref(), &config.agent.id, &registry)?;
        let fencer = Fencer::new(&config, &registry)?.with_notifier(notifier.clone());
        let fenced = fencer.fenced();
        let reconciler = Arc::new(
            crate::failover::executor::Reconciler::new(
                &config,
                consensus.clone(),
                &registry,
                notifier,
            )
            .await?,
        );
        let mut tasks_set = JoinSet::new();
        for task in tasks {
            tasks_set.spawn(task.run(shutdown.clone()));
        }
        tasks_set.spawn(consensus.clone().run(board.clone(), shutdown.clone()));
        tasks_set.spawn(fencer.run(consensus.clone(), board.clone(), shutdown.clone()));
        tasks_set.spawn(reconciler.clone().run(shutdown.clone()));
        if let Some(delivery) = delivery {
            tasks_set.spawn(delivery.run(shutdown.clone()));
        }
        let peer_tls = match config.tls.as_ref().filter(|t| t.peer) {
            Some(t) => Some(crate::tls::server_config(t, t.require_client_cert)?),
            None => None,
        };
        let admin_tls = match config.tls.as_ref().filter(|t| t.admin) {
            Some(t) => Some(crate::tls::server_config(t, false)?),
            None => None,
        };
        let peer_server = peer_listener.map(|listener| {
            let app = consensus.peer_router();
            let stop = shutdown.clone();
            let tls = peer_tls.clone();
            tokio::spawn(async move {
                match tls {
                    Some(tls) => crate::tls::serve(listener, tls, app, stop).await,
                    None => {
                        axum::serve(listener, app)
                            .with_graceful_shutdown(stop.cancelled_owned())
                            .await
                    }
                }
            })
        });
        {
            let reconciler = reconciler.clone();
            consensus.set_admin_handler(Arc::new(move |request| {
                let reconciler = reconciler.clone();
                Box::pin(async move { admin::ops::execute(&reconciler, request).await })
            }));
        }
        let mut tokens = Vec::new();
        for token in &config.admin.tokens {
            match token.secret.load() {
                Ok(secret) => tokens.push((token.name.clone(), secret)),
                // Validated at load; a file removed since is a token that works no more.
                Err(e) => {
                    tracing::error!(token = %token.name, error = %e, "admin token not loaded")
                }
            }
        }
        let app = admin::router(AdminState {
            agent_id: config.agent.id.clone(),
            region: config.agent.region.clone(),
            board,
            registry,
            probe_series,
            consensus,
            reconciler,
            fenced,
            regions: config.regions.iter().map(|r| r.name.clone()).collect(),
            targets: Arc::new(
                crate::topology::Topology::from_config(&config)
                    .targets
                    .iter()
                    .map(|t| (t.id.clone(), t.region.clone()))
                    .collect(),
            ),
            tokens: admin::ops::Tokens::new(tokens),
            open_reads: config.admin.open_reads,
            limiter: Arc::default(),
        });
        let served = match admin_tls {
            Some(tls) => crate::tls::serve(admin_listener, tls, app, shutdown.clone()).await,
            None => {
                axum::serve(admin_listener, app)
                    .with_graceful_shutdown(shutdown.clone().cancelled_owned())
                    .await
            }
        };
        // The server only returns on shutdown or error; either way everything stops.
        shutdown.cancel();
        while let Some(joined) = tasks_set.join_next().await {
            if let Err(e) = joined {
                tracing::error!(error = %e, "agent task panicked");
            }
        }
        if let Some(peer) = peer_server {
            match peer.await {
                Ok(result) => result.map_err(AgentError::PeerServe)?,
                Err(e) => tracing::error!(error = %e, "peer server panicked"),
            }
        }
        served.map_err(AgentError::Serve)?;
        tracing::info!("agent stopped");
        Ok(())
    }
}
