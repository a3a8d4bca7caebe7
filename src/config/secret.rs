//! Secret references: where a password or token is read from ([`SecretRef`]) and the value
//! once read ([`Secret`]), which never shows itself in logs.
//!
//! A config names its secrets and never holds them, so it can be shared and logged. They are
//! read when they are used, so that a rotated file takes effect without a restart. Reading a
//! file or an environment variable is the only I/O here.

use std::fmt;
use std::path::PathBuf;

use serde::Deserialize;

/// Where a secret is read from. Written as `{ file = "/run/secrets/x" }` or
/// `{ env = "VAR" }`; never inline, so config files can be shared and logged.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum SecretRef {
    /// A file whose content (trailing newline trimmed) is the secret.
    File(PathBuf),
    /// An environment variable holding the secret.
    Env(String),
}

/// A secret value. Its `Debug` and `Display` never show the value.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// The secret itself; call only where it is handed to a client library.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl Secret {
    /// A secret held in memory (one generated, or one a test sets).
    pub fn new(value: String) -> Secret {
        Secret(value)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// Why a secret could not be read.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// The file could not be read.
    #[error("cannot read secret file {path}: {source}")]
    File {
        /// The file named in the config.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The variable is unset or not valid UTF-8.
    #[error("environment variable {0} is not set")]
    EnvMissing(String),
    /// The secret is empty.
    #[error("secret from {0} is empty")]
    Empty(String),
}

impl SecretRef {
    /// Reads the secret now. Callers read at connect time so that a rotated file is used.
    pub fn load(&self) -> Result<Secret, SecretError> {
        let (value, origin) = match self {
            SecretRef::File(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| SecretError::File {
                    path: path.clone(),
                    source,
                })?;
                (text, format!("file {}", path.display()))
            }
            SecretRef::Env(var) => {
                let text = std::env::var(var).map_err(|_| SecretError::EnvMissing(var.clone()))?;
                (text, format!("env {var}"))
            }
        };
        let trimmed = value.trim_end_matches(['\n', '\r']);
        if trimmed.is_empty() {
            return Err(SecretError::Empty(origin));
        }
        Ok(Secret(trimmed.to_owned()))
    }
}
