//! Postgres: roles and connections (credentials from their secret, TLS when the DSN asks).

use serde::Serialize;
use tokio_postgres::NoTls;

use super::DatastoreError;
use crate::config::SecretRef;
use crate::util::error_chain;

/// Role of a Postgres server.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum PgRole {
    /// Accepts writes (`pg_is_in_recovery()` is false).
    Primary,
    /// In recovery: a standby.
    Replica,
}

/// Connects with the password from its secret. With `sslmode=require` in the DSN the
/// connection is TLS, and the server's certificate is checked against `ca_file` (or the public
/// roots when there is none); otherwise it is plain. Shared by the probe and the actions.
pub async fn connect(
    config: tokio_postgres::Config,
    password: Option<&SecretRef>,
    ca_file: Option<&std::path::Path>,
) -> Result<tokio_postgres::Client, DatastoreError> {
    connect_watched(config, password, ca_file, None).await
}

/// [`connect`], signalling `closed` if the server ends the connection (not when the client is
/// dropped: then the connection ends cleanly).
pub async fn connect_watched(
    mut config: tokio_postgres::Config,
    password: Option<&SecretRef>,
    ca_file: Option<&std::path::Path>,
    closed: Option<std::sync::Arc<tokio::sync::Notify>>,
) -> Result<tokio_postgres::Client, DatastoreError> {
    if let Some(secret) = password {
        config.password(secret.load()?.expose());
    }
    let connect_error = |e: tokio_postgres::Error| DatastoreError::Connect(error_chain(&e));
    let watch = move |result: Result<(), tokio_postgres::Error>| {
        if let Err(e) = result {
            tracing::debug!(error = %e, "postgres connection closed");
            if let Some(closed) = &closed {
                closed.notify_one();
            }
        }
    };
    if config.get_ssl_mode() == tokio_postgres::config::SslMode::Require {
        let tls = tls_connector(ca_file)?;
        let (client, connection) = config.connect(tls).await.map_err(connect_error)?;
        tokio::spawn(async move { watch(connection.await) });
        Ok(client)
    } else {
        let (client, connection) = config.connect(NoTls).await.map_err(connect_error)?;
        tokio::spawn(async move { watch(connection.await) });
        Ok(client)
    }
}

fn tls_connector(
    ca_file: Option<&std::path::Path>,
) -> Result<tokio_postgres_rustls::MakeRustlsConnect, DatastoreError> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    match ca_file {
        Some(path) => {
            let certs = rustls::pki_types::CertificateDer::pem_file_iter(path)
                .and_then(|i| i.collect::<Result<Vec<_>, _>>())
                .map_err(|e| {
                    DatastoreError::Connect(format!("cannot read ca_file {}: {e}", path.display()))
                })?;
            for cert in certs {
                roots.add(cert).map_err(|e| {
                    DatastoreError::Connect(format!("ca_file {}: {e}", path.display()))
                })?;
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    let config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
}
