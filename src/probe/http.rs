//! HTTP(S) probe: GET a URL, check the status, optionally the body, and the latency.
//!
//! Redirects are not followed (a 302 to a login page is not a healthy API) and proxies from
//! the environment are ignored (a health check must take the path clients take, not a proxy's).

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde::Serialize;

use super::{Facts, Observation, Probe, ProbeError};
use crate::config::{ConnectionMode, HttpTargetConfig};
use crate::util::error_chain;

/// At most this much of a body is read; health endpoints are small, and a huge body must not
/// cost memory.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// Facts of a successful HTTP check.
#[derive(Debug, Clone, Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct HttpFacts {
    /// Status code received.
    pub status: u16,
    /// Body bytes read (at most [`MAX_BODY_BYTES`]).
    pub body_bytes: usize,
}

/// HTTP clients shared by targets with the same TLS settings and connection mode.
///
/// A client holds a TLS root store and a connection pool; one per target would cost megabytes
/// at a thousand targets for no gain.
#[derive(Debug, Default)]
pub struct HttpClients {
    clients: HashMap<(bool, Option<PathBuf>, ConnectionMode), reqwest::Client>,
}

impl HttpClients {
    fn get(
        &mut self,
        tls_verify: bool,
        ca_file: Option<&PathBuf>,
        mode: ConnectionMode,
    ) -> Result<reqwest::Client, String> {
        let key = (tls_verify, ca_file.cloned(), mode);
        if let Some(client) = self.clients.get(&key) {
            return Ok(client.clone());
        }
        let mut builder = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .user_agent(concat!("failoverd/", env!("CARGO_PKG_VERSION")))
            .danger_accept_invalid_certs(!tls_verify);
        builder = match mode {
            ConnectionMode::Fresh => builder.pool_max_idle_per_host(0),
            // Keep as many idle connections per host as probes ever ran at once: targets that
            // share a host then find one free instead of opening and dropping extra ones. An
            // HTTP/1 connection carries one request at a time, so a hung probe still holds
            // only its own connection.
            ConnectionMode::Reuse => builder.tcp_keepalive(Duration::from_secs(30)),
        };
        if let Some(path) = ca_file {
            let pem = std::fs::read(path)
                .map_err(|e| format!("cannot read ca_file {}: {e}", path.display()))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| format!("ca_file {} holds no valid PEM: {e}", path.display()))?;
            if certs.is_empty() {
                return Err(format!("ca_file {} holds no certificate", path.display()));
            }
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        let client = builder
            .build()
            .map_err(|e| format!("cannot build HTTP client: {e}"))?;
        self.clients.insert(key, client.clone());
        Ok(client)
    }

    /// Number of distinct clients built.
    pub fn len(&self) -> usize {
        self.clients.len()
    }

    /// Whether no client was built.
    pub fn is_empty(&self) -> bool {
        self.clients.is_empty()
    }
}

/// How the body is checked.
#[derive(Debug, Clone)]
enum BodyCheck {
    Contains(String),
    JsonField {
        pointer: String,
        equals: Option<serde_json::Value>,
    },
}

/// Probe of one HTTP(S) endpoint.
#[derive(Debug)]
pub struct HttpProbe {
    client: reqwest::Client,
    url: reqwest::Url,
    headers: HeaderMap,
    expect_status: Vec<u16>,
    body: Vec<BodyCheck>,
    max_latency: Option<Duration>,
}

impl HttpProbe {
    /// Builds the probe, reusing a shared client where one fits.
    pub fn new(cfg: &HttpTargetConfig, clients: &mut HttpClients) -> Result<Self, String> {
        let url = reqwest::Url::parse(&cfg.url).map_err(|e| format!("bad url: {e}"))?;
        let mut headers = HeaderMap::new();
        for (name, value) in &cfg.headers {
            let name = HeaderName::from_bytes(name.as_bytes())
                .map_err(|e| format!("bad header name {name:?}: {e}"))?;
            let value =
                HeaderValue::from_str(value).map_err(|e| format!("bad header value: {e}"))?;
            headers.insert(name, value);
        }
        let mut body = Vec::new();
        if let Some(text) = &cfg.body_contains {
            body.push(BodyCheck::Contains(text.clone()));
        }
        if let Some(pointer) = &cfg.json_pointer {
            body.push(BodyCheck::JsonField {
                pointer: pointer.clone(),
                // `"ok"` and `ok` both mean the string ok; `true` or `3` are JSON literals.
                equals: cfg.json_equals.as_ref().map(|text| {
                    serde_json::from_str(text).unwrap_or(serde_json::Value::String(text.clone()))
                }),
            });
        }
        Ok(HttpProbe {
            client: clients.get(cfg.tls_verify, cfg.ca_file.as_ref(), cfg.connection)?,
            url,
            headers,
            expect_status: cfg.expect_status.clone(),
            body,
            max_latency: cfg.max_latency,
        })
    }

    fn status_ok(&self, status: u16) -> bool {
        if self.expect_status.is_empty() {
            (200..300).contains(&status)
        } else {
            self.expect_status.contains(&status)
        }
    }
}

impl Probe for HttpProbe {
    async fn check(&self) -> Result<Observation, ProbeError> {
        let start = Instant::now();
        let mut response = self
            .client
            .get(self.url.clone())
            .headers(self.headers.clone())
            .send()
            .await
            .map_err(|e| {
                if e.is_connect() {
                    ProbeError::Connect(error_chain(&e))
                } else {
                    ProbeError::Request(error_chain(&e))
                }
            })?;
        let status = response.status().as_u16();
        // Read the body even when unchecked: a reused connection can only go back to the pool
        // once its body is consumed.
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| ProbeError::Request(error_chain(&e)))?
        {
            let room = MAX_BODY_BYTES - body.len();
            body.extend_from_slice(&chunk[..chunk.len().min(room)]);
            if body.len() >= MAX_BODY_BYTES {
                break;
            }
        }
        let latency = start.elapsed();
        if !self.status_ok(status) {
            return Err(ProbeError::Status { status });
        }
        for check in &self.body {
            check_body(check, &body)?;
        }
        if let Some(limit) = self.max_latency {
            if latency > limit {
                return Err(ProbeError::TooSlow { latency, limit });
            }
        }
        Ok(Observation {
            latency,
            facts: Facts::Http(HttpFacts {
                status,
                body_bytes: body.len(),
            }),
        })
    }
}

fn check_body(check: &BodyCheck, body: &[u8]) -> Result<(), ProbeError> {
    match check {
        BodyCheck::Contains(text) => {
            if String::from_utf8_lossy(body).contains(text.as_str()) {
                Ok(())
            } else {
                Err(ProbeError::Body(format!("body does not contain {text:?}")))
            }
        }
        BodyCheck::JsonField { pointer, equals } => {
            let json: serde_json::Value = serde_json::from_slice(body)
                .map_err(|e| ProbeError::Body(format!("body is not JSON: {e}")))?;
            let field = json
                .pointer(pointer)
                .ok_or_else(|| ProbeError::Body(format!("no JSON field at {pointer}")))?;
            match equals {
                Some(expected) if field != expected => Err(ProbeError::Body(format!(
                    "JSON field {pointer} is {field}, expected {expected}"
                ))),
                _ => Ok(()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json_check(pointer: &str, equals: Option<&str>) -> BodyCheck {
        BodyCheck::JsonField {
            pointer: pointer.into(),
            equals: equals.map(|t| serde_json::from_str(t).unwrap_or(t.into())),
        }
    }

    #[test]
    fn body_contains_matches_substrings() {
        let check = BodyCheck::Contains("ok".into());
        assert!(check_body(&check, b"status: ok").is_ok());
        assert!(matches!(
            check_body(&check, b"status: degraded"),
            Err(ProbeError::Body(_))
        ));
    }

    #[test]
    fn json_field_checks_presence_and_value() {
        let body = br#"{"status":"ok","db":{"up":true,"replicas":2}}"#;
        assert!(check_body(&json_check("/status", None), body).is_ok());
        assert!(check_body(&json_check("/status", Some("ok")), body).is_ok());
        assert!(check_body(&json_check("/status", Some("\"ok\"")), body).is_ok());
        assert!(check_body(&json_check("/db/up", Some("true")), body).is_ok());
        assert!(check_body(&json_check("/db/replicas", Some("2")), body).is_ok());
        let err = check_body(&json_check("/db/up", Some("false")), body).unwrap_err();
        assert_eq!(
            err.to_string(),
            "body check failed: JSON field /db/up is true, expected false"
        );
        assert!(check_body(&json_check("/missing", None), body).is_err());
        assert!(check_body(&json_check("/status", None), b"not json").is_err());
    }
}
