//! The client side of peer traffic: Raft RPCs (and reports) as JSON over HTTP, each request
//! carrying the cluster secret as a bearer token.
//!
//! An unreachable peer is reported to openraft as `Unreachable` (it backs off and retries);
//! any other transport failure as a transient `Network` error; the peer's own Raft error
//! comes back in the body and is passed on as a `RemoteError`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::BasicNode;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::contact::ContactBook;
use super::types::{NodeId, TypeConfig};
use crate::config::Secret;

/// Paths of the peer API.
pub mod paths {
    /// Raft AppendEntries.
    pub const APPEND: &str = "/raft/append";
    /// Raft RequestVote.
    pub const VOTE: &str = "/raft/vote";
    /// Raft InstallSnapshot.
    pub const SNAPSHOT: &str = "/raft/snapshot";
    /// An agent's health report to the leader.
    pub const REPORT: &str = "/v1/report";
    /// Whether the agent holds a Raft log (asked by an agent starting with an empty store).
    pub const INITIALIZED: &str = "/raft/initialized";
    /// An operator's request, forwarded by the agent that took it to the leader.
    pub const ADMIN: &str = "/v1/admin";
    /// The leader's verdict, for another agent's status.
    pub const VERDICT: &str = "/v1/verdict";
}

/// Why a peer request failed.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    /// No connection (the peer is down or cut off): worth retrying later.
    #[error("peer {url} unreachable: {message}")]
    Unreachable {
        /// The URL.
        url: String,
        /// The transport error.
        message: String,
    },
    /// The peer answered with an error status.
    #[error("peer {url} answered {status}: {body}")]
    Status {
        /// The URL.
        url: String,
        /// HTTP status.
        status: u16,
        /// The body, for the log.
        body: String,
    },
    /// The request failed on the way, or the answer could not be read.
    #[error("peer {url}: {message}")]
    Transport {
        /// The URL.
        url: String,
        /// What went wrong.
        message: String,
    },
}

/// An HTTP client for peers, shared by every peer connection.
#[derive(Clone)]
pub struct PeerClient {
    http: reqwest::Client,
    secret: Option<Secret>,
}

impl PeerClient {
    /// A client sending `secret` as a bearer token with every request, and with TLS
    /// settings, checking peers against the cluster CA and presenting this agent's
    /// certificate.
    pub fn new(
        secret: Option<Secret>,
        tls: Option<&crate::config::TlsConfig>,
    ) -> Result<Self, crate::tls::TlsError> {
        let mut builder = reqwest::Client::builder()
            .no_proxy()
            .connect_timeout(Duration::from_millis(500))
            .tcp_nodelay(true);
        if let Some(tls) = tls.filter(|t| t.peer) {
            builder = crate::tls::client(builder, tls)?;
        }
        let http = builder.build().map_err(|e| crate::tls::TlsError::Pem {
            key: "tls",
            path: String::new(),
            message: e.to_string(),
        })?;
        Ok(PeerClient { http, secret })
    }

    /// POSTs `body` as JSON to `base + path` and decodes the JSON answer.
    pub async fn post<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        base: &str,
        path: &str,
        body: &Req,
        timeout: Duration,
    ) -> Result<Resp, PeerError> {
        let url = format!("{}{path}", base.trim_end_matches('/'));
        let transport = |message: String| PeerError::Transport {
            url: url.clone(),
            message,
        };
        let bytes = serde_json::to_vec(body).map_err(|e| transport(e.to_string()))?;
        let mut request = self
            .http
            .post(&url)
            .timeout(timeout)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(bytes);
        if let Some(secret) = &self.secret {
            request = request.bearer_auth(secret.expose());
        }
        let response = request.send().await.map_err(|e| {
            if e.is_connect() {
                PeerError::Unreachable {
                    url: url.clone(),
                    message: crate::probe::http::error_chain(&e),
                }
            } else {
                transport(crate::probe::http::error_chain(&e))
            }
        })?;
        let status = response.status();
        let body = response
            .bytes()
            .await
            .map_err(|e| transport(e.to_string()))?;
        if !status.is_success() {
            return Err(PeerError::Status {
                url,
                status: status.as_u16(),
                body: String::from_utf8_lossy(&body).chars().take(200).collect(),
            });
        }
        serde_json::from_slice(&body).map_err(|e| transport(format!("bad answer: {e}")))
    }
}

/// Builds one [`PeerConnection`] per Raft peer. Members are named by agent id in the
/// membership; their URLs come from this agent's config, so an address can change without
/// touching the replicated membership.
#[derive(Clone)]
pub struct PeerNetwork {
    client: PeerClient,
    urls: HashMap<NodeId, String>,
    contacts: Arc<ContactBook>,
}

impl PeerNetwork {
    /// Peer connections share `client`; `urls` maps node ids to peer base URLs; each
    /// follower's acknowledgement of an AppendEntries is marked in `contacts`.
    pub fn new(
        client: PeerClient,
        urls: HashMap<NodeId, String>,
        contacts: Arc<ContactBook>,
    ) -> Self {
        PeerNetwork {
            client,
            urls,
            contacts,
        }
    }
}

/// Raft's view of one peer.
pub struct PeerConnection {
    target: NodeId,
    base: String,
    client: PeerClient,
    contacts: Arc<ContactBook>,
}

impl RaftNetworkFactory<TypeConfig> for PeerNetwork {
    type Network = PeerConnection;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> PeerConnection {
        // A member missing from the config cannot be reached; its RPCs fail as unreachable.
        let base = self.urls.get(&target).cloned().unwrap_or_else(|| {
            tracing::warn!(agent = %node.addr, "no peer_url configured for this member");
            // Port 0 refuses at once, without any traffic leaving the machine.
            format!("http://127.0.0.1:0/unconfigured/{}", node.addr)
        });
        PeerConnection {
            target,
            base,
            client: self.client.clone(),
            contacts: self.contacts.clone(),
        }
    }
}

impl PeerConnection {
    async fn rpc<Req, Resp, E>(
        &self,
        path: &str,
        request: &Req,
        option: &RPCOption,
    ) -> Result<Resp, RPCError<NodeId, BasicNode, RaftError<NodeId, E>>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let answer: Result<Resp, RaftError<NodeId, E>> = self
            .client
            .post(&self.base, path, request, option.hard_ttl())
            .await
            .map_err(|e| match e {
                PeerError::Unreachable { .. } => RPCError::Unreachable(Unreachable::new(&e)),
                _ => RPCError::Network(NetworkError::new(&e)),
            })?;
        answer.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

impl RaftNetwork<TypeConfig> for PeerConnection {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        let answer = self.rpc(paths::APPEND, &rpc, &option).await;
        // The follower took this agent as its leader: its lease was renewed before now.
        if matches!(&answer, Ok(r) if !matches!(r, AppendEntriesResponse::HigherVote(_))) {
            self.contacts.acked_by(self.target);
        }
        answer
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, BasicNode, RaftError<NodeId, InstallSnapshotError>>,
    > {
        self.rpc(paths::SNAPSHOT, &rpc, &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        self.rpc(paths::VOTE, &rpc, &option).await
    }

    /// Retry an unreachable peer every 100 ms (openraft's default is 500 ms): a restarted
    /// agent hears from the leader before its own election timer fires and never stands
    /// needlessly. A refused connection on loopback or in a region costs next to nothing.
    fn backoff(&self) -> openraft::network::Backoff {
        openraft::network::Backoff::new(std::iter::repeat(Duration::from_millis(100)))
    }
}
