//! The client side of peer traffic: Raft RPCs (and reports) as JSON over HTTP, each request
//! carrying the cluster secret as a bearer token.
//!
//! An unreachable peer is reported to openraft as `Unreachable` (it backs off and retries);
//! any other transport failure as a transient `Network` error; the peer's own Raft error
//! comes back in the body and is passed on as a `RemoteError`.
//!
//! openraft gives each AppendEntries `heartbeat_interval` (100 ms by default) to answer and
//! then drops it. Between regions with heavy jitter or loss many answers take longer, and a
//! dropped request would also never renew the follower's lease. So each AppendEntries runs
//! in a task of its own for up to a lease period: openraft stops waiting at its deadline as
//! before, but the request still reaches the follower, and its acknowledgement, whenever it
//! comes, renews the leader's lease from the moment it was sent ([`ContactBook::heard_back`]).
//! At most [`MAX_LATE`] such requests per peer outlive openraft's wait; beyond that they are
//! dropped with it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

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

use super::contact::{AppendTag, ContactBook};
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
    /// Whether the agent has lost its leader (see [`super::super::election`]).
    pub const LEADERLESS: &str = "/raft/leaderless";
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
        self.post_with(base, path, body, timeout, None).await
    }

    /// [`PeerClient::post`] with one more header.
    async fn post_with<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        base: &str,
        path: &str,
        body: &Req,
        timeout: Duration,
        header: Option<(&'static str, String)>,
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
        if let Some((name, value)) = header {
            request = request.header(name, value);
        }
        if let Some(secret) = &self.secret {
            request = request.bearer_auth(secret.expose());
        }
        let response = request.send().await.map_err(|e| {
            if e.is_connect() {
                PeerError::Unreachable {
                    url: url.clone(),
                    message: crate::util::error_chain(&e),
                }
            } else {
                transport(crate::util::error_chain(&e))
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

/// At most this many AppendEntries per peer keep going after openraft stopped waiting for
/// them (a cut link would otherwise gather one every heartbeat for a whole lease period).
pub const MAX_LATE: usize = 16;

/// Builds one [`PeerConnection`] per Raft peer. Members are named by agent id in the
/// membership; their URLs come from this agent's config, so an address can change without
/// touching the replicated membership.
#[derive(Clone)]
pub struct PeerNetwork {
    client: PeerClient,
    urls: HashMap<NodeId, String>,
    contacts: Arc<ContactBook>,
    late_window: Duration,
}

impl PeerNetwork {
    /// Peer connections share `client`; `urls` maps node ids to peer base URLs; each
    /// follower's acknowledgement of an AppendEntries is marked in `contacts`, if it comes
    /// within `late_window` (the lease period: a later one renews nothing).
    pub fn new(
        client: PeerClient,
        urls: HashMap<NodeId, String>,
        contacts: Arc<ContactBook>,
        late_window: Duration,
    ) -> Self {
        PeerNetwork {
            client,
            urls,
            contacts,
            late_window,
        }
    }
}

/// Raft's view of one peer.
pub struct PeerConnection {
    target: NodeId,
    base: String,
    client: PeerClient,
    contacts: Arc<ContactBook>,
    late_window: Duration,
    /// AppendEntries to this peer still running.
    in_flight: Arc<AtomicUsize>,
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
            late_window: self.late_window,
            in_flight: Arc::new(AtomicUsize::new(0)),
        }
    }
}

/// Turns a peer request's failure into openraft's terms.
fn rpc_error<E: std::error::Error>(
    e: PeerError,
) -> RPCError<NodeId, BasicNode, RaftError<NodeId, E>> {
    match e {
        PeerError::Unreachable { .. } => RPCError::Unreachable(Unreachable::new(&e)),
        _ => RPCError::Network(NetworkError::new(&e)),
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
            .map_err(rpc_error)?;
        answer.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

/// Decrements a peer's in-flight count when its request ends, however it ends.
struct InFlight(Arc<AtomicUsize>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl RaftNetwork<TypeConfig> for PeerConnection {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        let sent = Instant::now();
        let term = rpc.vote.leader_id().term;
        let tag = self.contacts.next_tag(self.target);
        let (target, contacts) = (self.target, self.contacts.clone());
        let (client, base) = (self.client.clone(), self.base.clone());
        let late = self.in_flight.fetch_add(1, Ordering::Relaxed) < MAX_LATE;
        let guard = InFlight(self.in_flight.clone());
        let deadline = if late {
            self.late_window.max(option.hard_ttl())
        } else {
            option.hard_ttl()
        };
        let request = async move {
            let _guard = guard;
            let answer: Result<Result<AppendEntriesResponse<NodeId>, RaftError<NodeId>>, _> =
                client
                    .post_with(
                        &base,
                        paths::APPEND,
                        &rpc,
                        deadline,
                        Some((AppendTag::HEADER, tag.encode())),
                    )
                    .await;
            // The follower took this agent as its leader: its lease was renewed before now,
            // and this agent's own as of when the request was sent.
            if matches!(&answer, Ok(Ok(r)) if !matches!(r, AppendEntriesResponse::HigherVote(_))) {
                contacts.heard_back(target, term, sent, tag.seq);
            }
            answer
        };
        let answer = if late {
            // Dropping the handle at openraft's deadline leaves the task running.
            match tokio::spawn(request).await {
                Ok(answer) => answer,
                Err(e) => Err(PeerError::Transport {
                    url: self.base.clone(),
                    message: format!("request task ended: {e}"),
                }),
            }
        } else {
            request.await
        };
        answer
            .map_err(rpc_error)?
            .map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
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
