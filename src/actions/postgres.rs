//! Postgres actions: fence and unfence a primary, promote a replica, point replicas at a new
//! primary and check that they stream from it.

use std::time::Duration;

use super::ActionError;
use crate::config::{PostgresFence, SecretRef};
use crate::util::error_chain;

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

impl Member {
    /// The first host of its DSN (what a writer record names by default).
    pub fn host(&self) -> String {
        address(self).map(|(h, _)| h).unwrap_or_default()
    }

    /// The member behind a Postgres target.
    pub fn of(target: &crate::topology::Target) -> Option<Member> {
        match &target.spec {
            crate::topology::TargetSpec::Postgres {
                member,
                password,
                ca_file,
                ..
            } => Some(Member {
                name: member.name.clone(),
                dsn: member.dsn.clone(),
                password: password.clone(),
                ca_file: ca_file.clone(),
            }),
            _ => None,
        }
    }
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
    config.application_name("failoverd");
    crate::datastore::postgres::connect(config, member.password.as_ref(), member.ca_file.as_deref())
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

/// Sets the member's `synchronous_standby_names` to `value` (with `ALTER SYSTEM`, then a
/// reload); a `synchronous_commit` of `off` or `local`, which would not wait for the standbys,
/// is set to `on`.
pub async fn set_standby_names(
    member: &Member,
    value: &str,
    timeout: Duration,
) -> Result<(), ActionError> {
    super::bounded(timeout, async {
        let client = connect(member, timeout).await?;
        run(
            &client,
            "set synchronous_standby_names",
            &format!(
                "ALTER SYSTEM SET synchronous_standby_names = '{}'",
                value.replace('\'', "''")
            ),
        )
        .await?;
        let commit: String = client
            .query_one("SELECT current_setting('synchronous_commit')", &[])
            .await
            .map_err(|e| ActionError::Step {
                step: "read synchronous_commit",
                message: error_chain(&e),
            })?
            .get(0);
        if matches!(commit.as_str(), "off" | "local") {
            run(
                &client,
                "set synchronous_commit",
                "ALTER SYSTEM SET synchronous_commit = 'on'",
            )
            .await?;
        }
        run(&client, "reload", "SELECT pg_reload_conf()").await
    })
    .await
}

/// Makes the member refuse writes. Client sessions are ended so that none keeps writing
/// under the old setting; WAL senders are left alone, so replicas keep streaming what was
/// written before.
pub async fn fence(
    member: &Member,
    method: &PostgresFence,
    timeout: Duration,
) -> Result<(), ActionError> {
    super::bounded(timeout, apply(member, method, true, timeout)).await
}

/// How many physical WAL senders `member` runs (replicas streaming from it).
pub async fn wal_senders(member: &Member, timeout: Duration) -> Result<u64, ActionError> {
    super::bounded(timeout, async {
        let client = connect(member, timeout).await?;
        let n = query_text(
            &client,
            "count WAL senders",
            "SELECT count(*)::text FROM pg_stat_replication",
        )
        .await?;
        Ok(n.and_then(|n| n.parse().ok()).unwrap_or(0))
    })
    .await
}

/// A replica's timeline: the one its WAL receiver last received on, or without a receiver the
/// one of its last restartpoint. `None` when the member is out of recovery.
pub async fn replica_timeline(
    member: &Member,
    timeout: Duration,
) -> Result<Option<u32>, ActionError> {
    super::bounded(timeout, async {
        let client = connect(member, timeout).await?;
        let tli = query_text(
            &client,
            "read the replica's timeline",
            "SELECT CASE WHEN pg_is_in_recovery() THEN coalesce(\
             (SELECT received_tli FROM pg_stat_wal_receiver WHERE received_tli > 0), \
             (SELECT timeline_id FROM pg_control_checkpoint()))::text END",
        )
        .await?;
        Ok(tli.and_then(|t| t.parse().ok()))
    })
    .await
}

/// A `CHECKPOINT` on a primary about to be switched over from, while it still takes writes:
/// the last checkpoint the old and new timelines share is then this one, whose WAL the old
/// primary still holds, so `pg_rewind` can later make it a replica (without it, the last
/// shared checkpoint may lie in a segment the old primary has recycled, and the rewind fails
/// with "could not find previous WAL record").
pub async fn checkpoint(member: &Member, timeout: Duration) -> Result<(), ActionError> {
    super::bounded(timeout, async {
        let client = connect(member, timeout).await?;
        run(&client, "checkpoint the old primary", "CHECKPOINT").await
    })
    .await
}

/// Undoes [`fence`].
pub async fn unfence(
    member: &Member,
    method: &PostgresFence,
    timeout: Duration,
) -> Result<(), ActionError> {
    super::bounded(timeout, apply(member, method, false, timeout)).await
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

/// What a promotion found or did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Promoted {
    /// The member's timeline after promotion.
    pub timeline: u32,
    /// It was already out of recovery (a resumed step): nothing was done.
    pub already_primary: bool,
}

async fn query_text(
    client: &tokio_postgres::Client,
    step: &'static str,
    sql: &str,
) -> Result<Option<String>, ActionError> {
    let rows = client
        .simple_query(sql)
        .await
        .map_err(|e| ActionError::Step {
            step,
            message: error_chain(&e),
        })?;
    Ok(rows.iter().find_map(|m| match m {
        tokio_postgres::SimpleQueryMessage::Row(row) => row.get(0).map(str::to_owned),
        _ => None,
    }))
}

/// Promotes a replica with `pg_promote(wait => true)` and checks that it accepts writes.
/// Idempotent: a member already out of recovery is only checked.
pub async fn promote(member: &Member, timeout: Duration) -> Result<Promoted, ActionError> {
    super::bounded(timeout, async {
        let client = connect(member, timeout).await?;
        let in_recovery =
            query_text(&client, "check recovery", "SELECT pg_is_in_recovery()").await?;
        let already_primary = in_recovery.as_deref() == Some("f");
        if !already_primary {
            let wait = timeout.as_secs().max(1);
            let done = query_text(
                &client,
                "pg_promote",
                &format!("SELECT pg_promote(wait => true, wait_seconds => {wait})"),
            )
            .await?;
            if done.as_deref() != Some("t") {
                return Err(ActionError::Step {
                    step: "pg_promote",
                    message: format!("promotion did not finish within {wait} s"),
                });
            }
        }
        // A real (catalog) write: fails on a server still in recovery or read-only (a fence
        // left behind would show here). Committed locally: under synchronous replication no
        // standby follows the new primary yet (they are repointed after this step), and a
        // commit waiting for one would hang.
        run(
            &client,
            "accept writes",
            "BEGIN; SET LOCAL synchronous_commit = local; \
             CREATE TEMP TABLE failoverd_write_check (x int) ON COMMIT DROP; COMMIT",
        )
        .await?;
        let timeline = query_text(
            &client,
            "read timeline",
            "SELECT ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int",
        )
        .await?
        .and_then(|t| t.parse().ok())
        .ok_or(ActionError::Step {
            step: "read timeline",
            message: "no timeline in the answer".into(),
        })?;
        Ok(Promoted {
            timeline,
            already_primary,
        })
    })
    .await
}

/// Points a replica at a new primary: `ALTER SYSTEM SET primary_conninfo` and reload (the WAL
/// receiver restarts with it). Idempotent.
pub async fn follow(
    member: &Member,
    primary_conninfo: &str,
    timeout: Duration,
) -> Result<(), ActionError> {
    super::bounded(timeout, async {
        let client = connect(member, timeout).await?;
        // The value may hold the replication password: keep this session's statements out of
        // the server log (needs superuser; without it the server's settings apply).
        if client
            .batch_execute("SET log_statement = 'none'; SET log_min_error_statement = 'panic'")
            .await
            .is_err()
        {
            tracing::debug!(member = %member.name, "cannot quiet statement logging for primary_conninfo");
        }
        let literal = primary_conninfo.replace('\'', "''");
        run(
            &client,
            "set primary_conninfo",
            &format!("ALTER SYSTEM SET primary_conninfo = '{literal}'"),
        )
        .await?;
        run(&client, "reload", "SELECT pg_reload_conf()").await
    })
    .await
}

/// The replication slot the replica streams through (`primary_slot_name`), if it uses one.
pub async fn primary_slot_name(
    member: &Member,
    timeout: Duration,
) -> Result<Option<String>, ActionError> {
    super::bounded(timeout, async {
        let client = connect(member, timeout).await?;
        let name = query_text(
            &client,
            "read primary_slot_name",
            "SELECT current_setting('primary_slot_name')",
        )
        .await?;
        Ok(name.filter(|n| !n.is_empty()))
    })
    .await
}

/// Makes the physical replication slot `name` on `primary`, reserving WAL from now, unless it
/// exists. Returns whether it made it.
pub async fn ensure_slot(
    primary: &Member,
    name: &str,
    timeout: Duration,
) -> Result<bool, ActionError> {
    // The names Postgres accepts; checked here as the name goes into the statement.
    if name.is_empty()
        || name.len() > 63
        || !name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    {
        return Err(ActionError::Step {
            step: "create slot",
            message: format!("{name:?} is not a valid replication slot name"),
        });
    }
    super::bounded(timeout, async {
        let client = connect(primary, timeout).await?;
        let made = query_text(
            &client,
            "create slot",
            &format!(
                "SELECT count(pg_create_physical_replication_slot('{name}', true))::text \
                 WHERE NOT EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = '{name}')"
            ),
        )
        .await?;
        Ok(made.as_deref() == Some("1"))
    })
    .await
}

/// Waits until the replica streams from `port` on `timeline` (the check after [`follow`]).
pub async fn await_streaming(
    member: &Member,
    port: u16,
    timeline: u32,
    timeout: Duration,
) -> Result<(), ActionError> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut last = String::from("no answer");
    while tokio::time::Instant::now() < deadline {
        if let Ok(client) = connect(member, timeout).await {
            let row = query_text(
                &client,
                "read wal receiver",
                "SELECT status || ' ' || coalesce(sender_port::text, '-') || ' ' || received_tli \
                 FROM pg_stat_wal_receiver",
            )
            .await?;
            let expected = format!("streaming {port} {timeline}");
            match row {
                Some(r) if r == expected => return Ok(()),
                Some(r) => last = r,
                None => last = "no WAL receiver".into(),
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(ActionError::Step {
        step: "await streaming",
        message: format!("replica not streaming from port {port} on timeline {timeline}: {last}"),
    })
}

/// How often, and how many times at most, a planned switchover reads the fenced old
/// primary's WAL position until it stands still.
const STILL_INTERVAL: Duration = Duration::from_millis(100);
const STILL_READS: u32 = 20;

/// For a planned switchover: reads how far the fenced `old_primary` wrote and waits until
/// `candidate` has replayed that far, so promoting it loses nothing. A candidate already out
/// of recovery (a resumed step) is not waited for. Returns the position.
pub async fn catch_up(
    candidate: &Member,
    old_primary: &Member,
    timeout: Duration,
) -> Result<Option<crate::datastore::Lsn>, ActionError> {
    super::bounded(timeout, async {
        let replica = connect(candidate, timeout).await?;
        let position =
            "SELECT CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn()::text END";
        if query_text(&replica, "read replay position", position)
            .await?
            .is_none()
        {
            return Ok(None);
        }
        let primary = connect(old_primary, timeout).await?;
        let read = || async {
            query_text(
                &primary,
                "read the old primary's position",
                "SELECT pg_current_wal_insert_lsn()::text",
            )
            .await?
            .and_then(|t| crate::datastore::Lsn::parse(&t))
            .ok_or(ActionError::Step {
                step: "read the old primary's position",
                message: "the old primary is in recovery: it is not the primary".into(),
            })
        };
        // Until it stops moving: the sessions the fence terminated write their abort records
        // a moment after, and a replica still streaming from the old primary would receive
        // WAL the candidate never replays — and could not follow it.
        let mut wrote = read().await?;
        for _ in 0..STILL_READS {
            tokio::time::sleep(STILL_INTERVAL).await;
            let now = read().await?;
            if now == wrote {
                break;
            }
            wrote = now;
        }
        // Bounded by the timeout: a replica that never gets there fails the promotion.
        loop {
            let replayed = query_text(&replica, "read replay position", position)
                .await?
                .and_then(|t| crate::datastore::Lsn::parse(&t));
            if replayed.is_some_and(|r| r >= wrote) {
                return Ok(Some(wrote));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
}

/// Whether the member is in recovery (a replica).
pub async fn in_recovery(member: &Member, timeout: Duration) -> Result<bool, ActionError> {
    super::bounded(timeout, async {
        let client = connect(member, timeout).await?;
        Ok(query_text(
            &client,
            "read recovery state",
            "SELECT pg_is_in_recovery()::text",
        )
        .await?
        .is_some_and(|t| t == "true"))
    })
    .await
}

/// Makes a promoted `primary` fit to be rewound from: it must be out of recovery, and its
/// control file must name the timeline it writes on. Promotion updates the control file only
/// at the checkpoint that follows, and until then `pg_rewind` takes the source for the old
/// timeline, finds nothing to rewind and leaves the old primary unable to follow; so this
/// checkpoints when the two differ.
pub async fn ready_as_rewind_source(
    primary: &Member,
    timeout: Duration,
) -> Result<(), ActionError> {
    super::bounded(timeout, async {
        let client = connect(primary, timeout).await?;
        let state = query_text(
            &client,
            "read rewind source",
            "SELECT CASE WHEN pg_is_in_recovery() THEN 'recovery' \
             WHEN (SELECT timeline_id FROM pg_control_checkpoint()) = \
             ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int \
             THEN 'ready' ELSE 'checkpoint' END",
        )
        .await?;
        match state.as_deref() {
            Some("ready") => Ok(()),
            Some("checkpoint") => run(&client, "checkpoint the new primary", "CHECKPOINT").await,
            _ => Err(ActionError::NotYet(super::NotYet::Promotion(
                primary.name.clone(),
            ))),
        }
    })
    .await
}

/// The member's current timeline (as a primary: the one it writes on).
pub async fn timeline(member: &Member, timeout: Duration) -> Result<u32, ActionError> {
    super::bounded(timeout, async {
        let client = connect(member, timeout).await?;
        query_text(
            &client,
            "read timeline",
            "SELECT CASE WHEN pg_is_in_recovery() THEN NULL ELSE \
             ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int END",
        )
        .await?
        .and_then(|t| t.parse().ok())
        .ok_or(ActionError::Step {
            step: "read timeline",
            message: "the member is not a primary".into(),
        })
    })
    .await
}

/// Where a primary listens, as its DSN says: the first host and port.
pub fn address(member: &Member) -> Result<(String, u16), ActionError> {
    let config: tokio_postgres::Config = member
        .dsn
        .parse()
        .map_err(|e| ActionError::Connect(format!("bad dsn: {e}")))?;
    let host = match config.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
        #[cfg(unix)]
        Some(tokio_postgres::config::Host::Unix(p)) => p.display().to_string(),
        None => "localhost".to_owned(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    Ok((host, port))
}

/// The `primary_conninfo` a replica named `application_name` streams from `primary` with:
/// host and port from the primary's DSN, user, password and sslmode from
/// `postgres.replication`. Holds the replication password when one is configured.
pub fn streaming_conninfo(
    primary: &Member,
    application_name: &str,
    replication: &crate::config::ReplicationConfig,
) -> Result<String, ActionError> {
    let (host, port) = address(primary)?;
    let password = match &replication.password {
        Some(secret) => Some(secret.load().map_err(|e| ActionError::Step {
            step: "replication credentials",
            message: format!("postgres.replication.password: {e}"),
        })?),
        None => None,
    };
    let port_text = port.to_string();
    let mut pairs = vec![
        ("host", host.as_str()),
        ("port", port_text.as_str()),
        ("user", replication.user.as_str()),
        ("application_name", application_name),
    ];
    if let Some(p) = &password {
        pairs.push(("password", p.expose()));
    }
    if let Some(mode) = &replication.sslmode {
        pairs.push(("sslmode", mode.as_str()));
    }
    Ok(conninfo(&pairs))
}

/// The slot a member streams through when it has none of its own yet (an old primary that
/// rejoins): its name in lower case, every character a slot name cannot hold made `_`.
pub fn member_slot_name(member: &str) -> String {
    let mut name: String = member
        .chars()
        .map(|c| match c {
            'a'..='z' | '0'..='9' | '_' => c,
            'A'..='Z' => c.to_ascii_lowercase(),
            _ => '_',
        })
        .take(63)
        .collect();
    if name.is_empty() {
        name.push('_');
    }
    name
}

/// What a rejoin command is told about the primary an old primary rejoins.
#[derive(Debug, Clone, Copy)]
pub struct RejoinTo<'a> {
    /// The command, `{member}` and `{region}` still in it.
    pub command: &'a [String],
    /// The old primary's region.
    pub region: &'a str,
    /// The primary the cluster names.
    pub primary: &'a Member,
    /// The `primary_conninfo` the old primary is to stream with (may hold a password).
    pub conninfo: &'a str,
    /// The slot made for it on the primary, if it streams through one.
    pub slot: Option<&'a str>,
    /// The command is killed after this long.
    pub timeout: Duration,
}

/// Runs the rejoin command for old primary `member` (`docs/failover.md`, rejoining): it is
/// to make the member a replica streaming from `to.primary`. The environment holds the member
/// (`FAILOVERD_MEMBER`, `FAILOVERD_REGION`, `FAILOVERD_DSN`), the primary (`FAILOVERD_PRIMARY`,
/// `FAILOVERD_SOURCE_DSN`, and its password as `PGPASSWORD` when one is configured), the
/// `primary_conninfo` to stream with (`FAILOVERD_PRIMARY_CONNINFO`) and the slot
/// (`FAILOVERD_SLOT`, empty for none). Returns the last line the command printed.
pub async fn rejoin(member: &Member, to: RejoinTo<'_>) -> Result<String, ActionError> {
    const STEP: &str = "rejoin command";
    let argv: Vec<String> = to
        .command
        .iter()
        .map(|a| {
            a.replace("{member}", &member.name)
                .replace("{region}", to.region)
        })
        .collect();
    let (program, args) = argv.split_first().ok_or(ActionError::Step {
        step: STEP,
        message: "empty command".into(),
    })?;
    let mut command = tokio::process::Command::new(program);
    command
        .args(args)
        .env("FAILOVERD_MEMBER", &member.name)
        .env("FAILOVERD_REGION", to.region)
        .env("FAILOVERD_DSN", &member.dsn)
        .env("FAILOVERD_PRIMARY", &to.primary.name)
        .env("FAILOVERD_SOURCE_DSN", &to.primary.dsn)
        .env("FAILOVERD_PRIMARY_CONNINFO", to.conninfo)
        .env("FAILOVERD_SLOT", to.slot.unwrap_or_default())
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    if let Some(secret) = &to.primary.password {
        let password = secret.load().map_err(|e| ActionError::Step {
            step: STEP,
            message: format!("the primary's password: {e}"),
        })?;
        command.env("PGPASSWORD", password.expose());
    }
    let output = tokio::time::timeout(to.timeout, command.output())
        .await
        .map_err(|_| ActionError::Step {
            step: STEP,
            message: format!(
                "{program} did not finish within {}; killed",
                humantime::format_duration(to.timeout)
            ),
        })?
        .map_err(|e| ActionError::Step {
            step: STEP,
            message: format!("cannot run {program}: {e}"),
        })?;
    let last_line = |bytes: &[u8]| {
        let text = String::from_utf8_lossy(bytes);
        let line = text
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("");
        crate::util::truncate_chars(line.trim(), 300)
    };
    // A failure says what the tools it ran said, not only its own last word.
    let tail = |bytes: &[u8]| {
        let text = String::from_utf8_lossy(bytes);
        let mut lines: Vec<&str> = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .rev()
            .take(4)
            .collect();
        lines.reverse();
        crate::util::truncate_chars(&lines.join(" | "), 800)
    };
    if output.status.success() {
        Ok(last_line(&output.stdout))
    } else {
        Err(ActionError::Step {
            step: STEP,
            message: format!(
                "{program} exited with {}: {}",
                output.status,
                tail(&output.stderr)
            ),
        })
    }
}

/// A `primary_conninfo` value: libpq keywords, values quoted so spaces and quotes survive.
pub fn conninfo(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{k}='{}'", v.replace('\\', "\\\\").replace('\'', "\\'")))
        .collect::<Vec<_>>()
        .join(" ")
}
