//! Fencing a Postgres primary: make it refuse writes while its agent is cut off, and undo it.

use std::time::Duration;

use super::ActionError;
use crate::config::{PostgresFence, SecretRef};
use crate::probe::http::error_chain;

/// Where to reach one member, with its credentials.
#[derive(Debug, Clone)]
pub struct Member {
    /// Member name (for logs and the fence command).
    pub name: String,
    /// DSN without password.
    pub dsn: String,
    /// Password source.
    pub password: Option<SecretRef>,
    /// CA bundle for `sslmode=require`.
    pub ca_file: Option<std::path::PathBuf>,
}

async fn connect(
    member: &Member,
    timeout: Duration,
) -> Result<tokio_postgres::Client, ActionError> {
    let mut config: tokio_postgres::Config = member
        .dsn
        .parse()
        .map_err(|e| ActionError::Connect(format!("bad dsn: {e}")))?;
    config.connect_timeout(timeout);
    config.application_name("failoverd-fence");
    crate::probe::postgres::connect(config, member.password.as_ref(), member.ca_file.as_deref())
        .await
        .map_err(|e| ActionError::Connect(e.to_string()))
}

async fn run(
    client: &tokio_postgres::Client,
    step: &'static str,
    sql: &str,
) -> Result<(), ActionError> {
    // One statement per call: ALTER SYSTEM refuses to run inside a transaction block.
    client
        .batch_execute(sql)
        .await
        .map_err(|e| ActionError::Step {
            step,
            message: error_chain(&e),
        })
}

fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Makes the member refuse writes. Client sessions are ended so that none keeps writing
/// under the old setting; WAL senders are left alone, so replicas keep streaming what was
/// written before.
pub async fn fence(
    member: &Member,
    method: &PostgresFence,
    timeout: Duration,
) -> Result<(), ActionError> {
    tokio::time::timeout(timeout, apply(member, method, true, timeout))
        .await
        .unwrap_or(Err(ActionError::Timeout(timeout)))
}

/// Undoes [`fence`].
pub async fn unfence(
    member: &Member,
    method: &PostgresFence,
    timeout: Duration,
) -> Result<(), ActionError> {
    tokio::time::timeout(timeout, apply(member, method, false, timeout))
        .await
        .unwrap_or(Err(ActionError::Timeout(timeout)))
}

async fn apply(
    member: &Member,
    method: &PostgresFence,
    fence: bool,
    timeout: Duration,
) -> Result<(), ActionError> {
    match method {
        PostgresFence::ReadOnly => {
            let client = connect(member, timeout).await?;
            let set = if fence {
                "ALTER SYSTEM SET default_transaction_read_only = on"
            } else {
                "ALTER SYSTEM RESET default_transaction_read_only"
            };
            run(&client, "alter system", set).await?;
            run(&client, "reload", "SELECT pg_reload_conf()").await?;
            if fence {
                run(
                    &client,
                    "end client sessions",
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                     WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()",
                )
                .await?;
            }
            Ok(())
        }
        PostgresFence::RevokeLogin(role) => {
            let client = connect(member, timeout).await?;
            let login = if fence { "NOLOGIN" } else { "LOGIN" };
            run(
                &client,
                "alter role",
                &format!("ALTER ROLE {} {login}", quote_ident(role)),
            )
            .await?;
            if fence {
                let literal = role.replace('\'', "''");
                run(
                    &client,
                    "end the role's sessions",
                    &format!(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                         WHERE usename = '{literal}' AND backend_type = 'client backend'"
                    ),
                )
                .await?;
            }
            Ok(())
        }
        PostgresFence::Command(argv) => {
            let (program, args) = argv.split_first().ok_or(ActionError::Step {
                step: "fence command",
                message: "empty command".into(),
            })?;
            let output = tokio::process::Command::new(program)
                .args(args)
                .env("FAILOVERD_ACTION", if fence { "fence" } else { "unfence" })
                .env("FAILOVERD_MEMBER", &member.name)
                .env("FAILOVERD_DSN", &member.dsn)
                .kill_on_drop(true)
                .output()
                .await
                .map_err(|e| ActionError::Step {
                    step: "fence command",
                    message: format!("cannot run {program}: {e}"),
                })?;
            if output.status.success() {
                Ok(())
            } else {
                Err(ActionError::Step {
                    step: "fence command",
                    message: format!(
                        "{program} exited with {}: {}",
                        output.status,
                        String::from_utf8_lossy(&output.stderr).trim()
                    ),
                })
            }
        }
    }
}
