//! TLS for the admin and peer listeners, and the client side of peer TLS.
//!
//! Cross-region links are not trusted networks: the peer listener can serve TLS and require
//! client certificates signed by the cluster CA (mTLS), and the peer client then presents the
//! agent's certificate and checks the peer's against that CA. Certificates and keys are PEM
//! files, read at start.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::config::TlsConfig;

/// A TLS handshake that takes longer than this is dropped (a slow or hostile client must not
/// hold a task).
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file could not be read or holds nothing usable.
    #[error("{key}: cannot use {path}: {message}")]
    Pem {
        /// The config key naming the file.
        key: &'static str,
        /// The file.
        path: String,
        /// What went wrong.
        message: String,
    },
    /// rustls refused the certificates or the key.
    #[error("tls: {0}")]
    Rustls(#[from] rustls::Error),
    /// The client-certificate verifier could not be built.
    #[error("tls.ca_file: {0}")]
    Verifier(String),
}

fn certs(key: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = |message: String| TlsError::Pem {
        key,
        path: path.display().to_string(),
        message,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| pem(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem(e.to_string()))?;
    if certs.is_empty() {
        return Err(pem("no certificate in the file".into()));
    }
    Ok(certs)
}

fn roots(path: &Path) -> Result<rustls::RootCertStore, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in certs("tls.ca_file", path)? {
        roots.add(cert)?;
    }
    Ok(roots)
}

/// The server configuration of a listener; `require_client_cert` makes it mTLS.
pub fn server_config(
    tls: &TlsConfig,
    require_client_cert: bool,
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let chain = certs("tls.cert_file", &tls.cert_file)?;
    let key = PrivateKeyDer::from_pem_file(&tls.key_file).map_err(|e| TlsError::Pem {
        key: "tls.key_file",
        path: tls.key_file.display().to_string(),
        message: e.to_string(),
    })?;
    let builder = rustls::ServerConfig::builder();
    let builder = match (&tls.ca_file, require_client_cert) {
        (Some(ca), true) => {
            let verifier = rustls::server::WebPkiClientVerifier::builder(Arc::new(roots(ca)?))
                .build()
                .map_err(|e| TlsError::Verifier(e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
        _ => builder.with_no_client_auth(),
    };
    let mut config = builder.with_single_cert(chain, key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Serves `app` over TLS on `listener` until `shutdown`. Connections whose handshake fails
/// (no or wrong client certificate, plain HTTP) are dropped and logged at debug level.
pub async fn serve(
    listener: TcpListener,
    config: Arc<rustls::ServerConfig>,
    app: axum::Router,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let acceptor = TlsAcceptor::from(config);
    loop {
        let (tcp, remote) = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                // Out of file descriptors and the like: wait a little instead of spinning.
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let acceptor = acceptor.clone();
        let app = app.clone();
        let stop = shutdown.clone();
        tokio::spawn(async move {
            let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(stream)) => stream,
                Ok(Err(e)) => {
                    tracing::debug!(%remote, error = %e, "TLS handshake refused");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%remote, "TLS handshake timed out");
                    return;
                }
            };
            let service = TowerToHyperService::new(app);
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .serve_connection(TokioIo::new(stream), service);
            tokio::pin!(connection);
            tokio::select! {
                served = connection.as_mut() => {
                    if let Err(e) = served {
                        tracing::debug!(%remote, error = %e, "TLS connection ended with an error");
                    }
                }
                _ = stop.cancelled() => connection.as_mut().graceful_shutdown(),
            }
        });
    }
}

/// Adds the cluster CA and, for mTLS, this agent's certificate to a peer HTTP client.
pub fn client(
    builder: reqwest::ClientBuilder,
    tls: &TlsConfig,
) -> Result<reqwest::ClientBuilder, TlsError> {
    let mut builder = builder;
    if let Some(ca) = &tls.ca_file {
        let pem = std::fs::read(ca).map_err(|e| TlsError::Pem {
            key: "tls.ca_file",
            path: ca.display().to_string(),
            message: e.to_string(),
        })?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| TlsError::Pem {
            key: "tls.ca_file",
            path: ca.display().to_string(),
            message: e.to_string(),
        })?;
        builder = builder.tls_built_in_root_certs(false);
        for cert in certs {
            builder = builder.add_root_certificate(cert);
        }
    }
    let mut identity = std::fs::read(&tls.cert_file).map_err(|e| TlsError::Pem {
        key: "tls.cert_file",
        path: tls.cert_file.display().to_string(),
        message: e.to_string(),
    })?;
    identity.extend(std::fs::read(&tls.key_file).map_err(|e| TlsError::Pem {
        key: "tls.key_file",
        path: tls.key_file.display().to_string(),
        message: e.to_string(),
    })?);
    let identity = reqwest::Identity::from_pem(&identity).map_err(|e| TlsError::Pem {
        key: "tls.cert_file",
        path: tls.cert_file.display().to_string(),
        message: e.to_string(),
    })?;
    Ok(builder.identity(identity))
}
