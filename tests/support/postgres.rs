//! Postgres 15 on loopback: one server ([`PgServer`]) and a primary with streaming replicas
//! ([`PgPair`]), made with `initdb` and `pg_basebackup` in a temporary directory, with the
//! least-privileged monitoring role the agents probe with. Servers are stopped when their
//! handles drop; nothing here configures an agent.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use super::http::TestCerts;
use super::process::{children_of, free_port, is_root, run};
use super::wait::wait_for_async;

/// Postgres 15 server binaries.
pub const PG_BIN: &str = "/usr/lib/postgresql/15/bin";

/// Runs a Postgres binary, as the `postgres` user when we are root (initdb refuses root).
fn pg_command(bin: &str) -> Command {
    let path = format!("{PG_BIN}/{bin}");
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--", &path]);
        c
    } else {
        Command::new(path)
    }
}

/// A temporary directory the `postgres` user can use.
fn pg_tempdir() -> anyhow::Result<tempfile::TempDir> {
    let dir = tempfile::Builder::new()
        .prefix("failoverd-pg-")
        .tempdir_in("/tmp")?;
    if is_root() {
        run(
            Command::new("chown").args(["postgres:postgres", &dir.path().display().to_string()]),
            "chown",
        )?;
    }
    Ok(dir)
}

/// The least-privileged role failoverd probes with: `pg_monitor`, password required.
pub const MONITOR_USER: &str = "failoverd";
/// Its password.
pub const MONITOR_PASSWORD: &str = "probe-secret-7d1f";

/// One Postgres server.
pub struct PgServer {
    /// Its port on 127.0.0.1.
    pub port: u16,
    /// Its data directory.
    pub data: PathBuf,
    /// Its name (also its `cluster_name`, so it appears as `application_name` upstream).
    pub name: String,
    log: PathBuf,
    /// WAL receivers stopped by [`PgServer::stall_receiver`], continued when it stops.
    stalled: std::sync::Mutex<Vec<i32>>,
}

impl PgServer {
    /// DSN for failoverd's config (user postgres, trust auth).
    pub fn dsn(&self) -> String {
        format!(
            "host=127.0.0.1 port={} user=postgres dbname=postgres",
            self.port
        )
    }

    /// DSN of the monitoring role (its password comes from a secret).
    pub fn monitor_dsn(&self) -> String {
        format!(
            "host=127.0.0.1 port={} user={MONITOR_USER} dbname=postgres",
            self.port
        )
    }

    /// Turns TLS on with the given certificate (copied into the data directory, readable by
    /// the server only) and reloads.
    pub fn enable_ssl(&self, certs: &TestCerts) -> anyhow::Result<()> {
        let cert = self.data.join("server.crt");
        let key = self.data.join("server.key");
        std::fs::copy(&certs.cert, &cert)?;
        std::fs::copy(&certs.key, &key)?;
        if is_root() {
            run(
                Command::new("chown")
                    .arg("postgres:postgres")
                    .arg(&cert)
                    .arg(&key),
                "chown certificate",
            )?;
        }
        run(Command::new("chmod").arg("600").arg(&key), "chmod key")?;
        append(
            &self.data.join("postgresql.conf"),
            "\nssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n",
        )?;
        run(
            pg_command("pg_ctl").arg("-D").arg(&self.data).arg("reload"),
            "pg_ctl reload",
        )
    }

    /// Starts the server and waits until it accepts connections.
    pub fn start(&self) -> anyhow::Result<()> {
        run(
            pg_command("pg_ctl")
                .arg("-D")
                .arg(&self.data)
                .arg("-l")
                .arg(&self.log)
                .args(["-w", "-t", "60", "start"]),
            &format!("pg_ctl start {}", self.name),
        )
    }

    /// The postmaster's PID, from `postmaster.pid`.
    pub fn pid(&self) -> anyhow::Result<i32> {
        let text = std::fs::read_to_string(self.data.join("postmaster.pid"))
            .with_context(|| format!("{} is not running", self.name))?;
        text.lines()
            .next()
            .and_then(|l| l.trim().parse().ok())
            .context("malformed postmaster.pid")
    }

    /// SIGKILLs the postmaster (a crash, not a shutdown), waits until the port is closed, then
    /// until its orphaned children have exited (a new postmaster refuses to start while they
    /// hold the old shared memory).
    pub fn kill(&self) -> anyhow::Result<()> {
        let pid = self.pid()?;
        let children = children_of(pid);
        run(
            Command::new("kill").args(["-KILL", &pid.to_string()]),
            "kill postmaster",
        )?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
            if Instant::now() > deadline {
                bail!("{} still accepts connections after SIGKILL", self.name);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.await_exit(&children, Duration::from_secs(30))
    }

    fn await_exit(&self, pids: &[i32], within: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + within;
        while pids
            .iter()
            .any(|p| Path::new(&format!("/proc/{p}")).exists())
        {
            if Instant::now() > deadline {
                bail!(
                    "children of {} still run after SIGKILL: {pids:?}",
                    self.name
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// A replica is pointed nowhere: its `primary_conninfo` emptied and reloaded, so its WAL
    /// receiver stops (what a replica restored with an old configuration, or repointed by
    /// hand, looks like to failoverd).
    pub async fn stop_streaming(&self) -> anyhow::Result<()> {
        let client = self.connect().await?;
        client
            .batch_execute("ALTER SYSTEM SET primary_conninfo = ''")
            .await?;
        client.batch_execute("SELECT pg_reload_conf()").await?;
        wait_for_async(
            "the WAL receiver to stop",
            Duration::from_secs(10),
            || async {
                let row = client
                    .query_one("SELECT count(*) FROM pg_stat_wal_receiver", &[])
                    .await
                    .ok()?;
                (row.get::<_, i64>(0) == 0).then_some(())
            },
        )
        .await
    }

    /// A replica's link to its primary stalls: its WAL receiver is stopped (SIGSTOP), so it
    /// receives nothing more while it still shows as streaming — a stuck network, which
    /// failoverd must not mistake for a replica to repoint. [`PgServer::resume_receiver`]
    /// (or stopping the server) continues it.
    pub async fn stall_receiver(&self) -> anyhow::Result<()> {
        let client = self.connect().await?;
        let pid: i32 = client
            .query_one("SELECT pid FROM pg_stat_wal_receiver", &[])
            .await
            .context("no WAL receiver")?
            .get(0);
        signal(pid, "-STOP")?;
        self.stalled
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(pid);
        Ok(())
    }

    /// Continues the WAL receiver [`PgServer::stall_receiver`] stopped. Its connection may
    /// have been dropped by the primary meanwhile: it reconnects.
    pub fn resume_receiver(&self) -> anyhow::Result<()> {
        let pids = std::mem::take(&mut *self.stalled.lock().unwrap_or_else(|p| p.into_inner()));
        for pid in pids {
            signal(pid, "-CONT")?;
        }
        Ok(())
    }

    /// Connects as superuser.
    pub async fn connect(&self) -> anyhow::Result<tokio_postgres::Client> {
        let (client, conn) = tokio_postgres::connect(&self.dsn(), tokio_postgres::NoTls)
            .await
            .with_context(|| format!("connect to {}", self.name))?;
        tokio::spawn(async move {
            // The connection ends when the client drops or the server dies; both are expected.
            let _ended = conn.await;
        });
        Ok(client)
    }

    fn stop_now(&self) {
        let _continued = self.resume_receiver();
        if self.data.join("postmaster.pid").exists() {
            let stopped = pg_command("pg_ctl")
                .arg("-D")
                .arg(&self.data)
                .args(["-m", "immediate", "-w", "-t", "20", "stop"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
            if !matches!(stopped, Ok(s) if s.success()) {
                if let Ok(pid) = self.pid() {
                    let _killed = Command::new("kill")
                        .args(["-KILL", &pid.to_string()])
                        .stderr(Stdio::null())
                        .status();
                }
            }
        }
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        self.stop_now();
    }
}

fn signal(pid: i32, signal: &str) -> anyhow::Result<()> {
    run(
        Command::new("kill").args([signal, &pid.to_string()]),
        "signal the WAL receiver",
    )
}

/// The replication slot a replica named `name` streams through: its name with `-` as `_`.
pub fn slot_name(name: &str) -> String {
    name.replace('-', "_")
}

/// A Postgres 15 primary with one streaming replica.
pub struct PgPair {
    /// The primary.
    pub primary: PgServer,
    /// The replica (made by `pg_basebackup -R`).
    pub replica: PgServer,
    /// More replicas, when asked for.
    pub others: Vec<PgServer>,
    // Dropped last, after both servers stopped.
    dir: tempfile::TempDir,
}

impl PgPair {
    /// `[postgres.rejoin]`'s command for these servers: `deploy/postgres/pg-rejoin` on the
    /// member's data directory (each server's directory and log are named after it).
    pub fn rejoin_command(&self) -> Vec<String> {
        let dir = self.dir.path().display();
        vec![
            concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/postgres/pg-rejoin").to_owned(),
            "--pgdata".into(),
            format!("{dir}/{{member}}"),
            "--log".into(),
            format!("{dir}/{{member}}.log"),
            "--bindir".into(),
            PG_BIN.into(),
        ]
    }

    /// Pauses WAL replay on every replica: they keep receiving and fall behind.
    pub async fn pause_replay(&self) -> anyhow::Result<()> {
        for replica in std::iter::once(&self.replica).chain(&self.others) {
            replica
                .connect()
                .await?
                .batch_execute("SELECT pg_wal_replay_pause()")
                .await?;
        }
        Ok(())
    }

    /// Waits until every replica has received (flushed) the primary's WAL up to its flush
    /// position now, whatever it has replayed.
    pub async fn wait_received(&self, deadline: Duration) -> anyhow::Result<()> {
        let primary = self.primary.connect().await?;
        let target: String = primary
            .query_one("SELECT pg_current_wal_flush_lsn()::text", &[])
            .await?
            .get(0);
        for replica in std::iter::once(&self.replica).chain(&self.others) {
            let client = replica.connect().await?;
            wait_for_async(
                "a replica to receive the primary's WAL",
                deadline,
                || async {
                    client
                        .query_one(
                            "SELECT pg_last_wal_receive_lsn() >= $1::text::pg_lsn",
                            &[&target],
                        )
                        .await
                        .ok()
                        .and_then(|row| row.get::<_, Option<bool>>(0))
                        .filter(|received| *received)
                },
            )
            .await?;
        }
        Ok(())
    }

    /// Stalls every replica's WAL receiver ([`PgServer::stall_receiver`]): they receive
    /// nothing more, so they fall truly behind (unlike a paused replay, which a promotion
    /// catches up).
    pub async fn stall_receivers(&self) -> anyhow::Result<()> {
        for replica in std::iter::once(&self.replica).chain(&self.others) {
            replica.stall_receiver().await?;
        }
        Ok(())
    }

    /// Kills every WAL receiver [`PgPair::stall_receivers`] stopped, with what it had not
    /// read yet: each replica restarts (Postgres restarts a server whose child crashed) with
    /// only what it had received, and its link is down.
    pub fn kill_receivers(&self) -> anyhow::Result<()> {
        for replica in std::iter::once(&self.replica).chain(&self.others) {
            let pids =
                std::mem::take(&mut *replica.stalled.lock().unwrap_or_else(|p| p.into_inner()));
            for pid in pids {
                signal(pid, "-KILL")?;
            }
        }
        Ok(())
    }

    /// initdb, start the primary, base-backup the replica, start it, wait until it streams.
    pub async fn start() -> anyhow::Result<PgPair> {
        Self::start_with(0).await
    }

    /// Like [`PgPair::start`], with `extra_replicas` more replicas of the primary.
    pub async fn start_with(extra_replicas: usize) -> anyhow::Result<PgPair> {
        let others: Vec<String> = (0..extra_replicas)
            .map(|i| format!("pg-replica-{}", i + 2))
            .collect();
        let others: Vec<&str> = others.iter().map(String::as_str).collect();
        Self::start_named("pg-primary", "pg-replica", &others).await
    }

    /// Like [`PgPair::start_with`], each server with its name (its `cluster_name`, which it
    /// streams under as `application_name`). Each replica streams through a replication slot
    /// named after it ([`slot_name`]).
    pub async fn start_named(
        primary_name: &str,
        replica_name: &str,
        other_names: &[&str],
    ) -> anyhow::Result<PgPair> {
        let dir = pg_tempdir()?;
        let primary = PgServer {
            port: free_port(),
            data: dir.path().join(primary_name),
            name: primary_name.into(),
            log: dir.path().join(format!("{primary_name}.log")),
            stalled: Default::default(),
        };
        run(
            pg_command("initdb").arg("-D").arg(&primary.data).args([
                "-U",
                "postgres",
                "--auth=trust",
                "--no-sync",
                "-E",
                "UTF8",
            ]),
            "initdb",
        )?;
        let conf = format!(
            "\nport = {}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{}'\n\
             fsync = off\nsynchronous_commit = off\nwal_log_hints = on\n\
             wal_level = replica\nmax_wal_senders = 10\nhot_standby = on\n\
             wal_sender_timeout = 5s\nwal_receiver_status_interval = 1s\n\
             cluster_name = '{}'\nshared_buffers = 16MB\n",
            primary.port,
            dir.path().display(),
            primary.name
        );
        append(&primary.data.join("postgresql.conf"), &conf)?;
        // The monitoring role must give a password; everyone else is trusted (first match wins).
        let hba = primary.data.join("pg_hba.conf");
        let rules = std::fs::read_to_string(&hba)?;
        std::fs::write(
            &hba,
            format!("host all {MONITOR_USER} 127.0.0.1/32 scram-sha-256\n{rules}"),
        )?;
        primary.start()?;
        let admin = primary.connect().await?;
        admin
            .batch_execute(&format!(
                "CREATE ROLE {MONITOR_USER} LOGIN PASSWORD '{MONITOR_PASSWORD}' IN ROLE pg_monitor"
            ))
            .await?;

        let base_backup = |name: &str| -> anyhow::Result<PgServer> {
            let replica = PgServer {
                port: free_port(),
                data: dir.path().join(name),
                name: name.into(),
                log: dir.path().join(format!("{name}.log")),
                stalled: Default::default(),
            };
            run(
                pg_command("pg_basebackup")
                    .args(["-h", "127.0.0.1", "-p", &primary.port.to_string()])
                    .args([
                        "-U",
                        "postgres",
                        "-R",
                        "-X",
                        "stream",
                        "-c",
                        "fast",
                        "--no-sync",
                    ])
                    // Through a slot of its own, as real deployments stream (`-R` writes
                    // primary_slot_name).
                    .args(["-C", "-S", &slot_name(name)])
                    .arg("-D")
                    .arg(&replica.data),
                "pg_basebackup",
            )?;
            append(
                &replica.data.join("postgresql.conf"),
                &format!(
                    "\nport = {}\ncluster_name = '{}'\n",
                    replica.port, replica.name
                ),
            )?;
            replica.start()?;
            Ok(replica)
        };
        let replica = base_backup(replica_name)?;
        let mut others = Vec::new();
        for name in other_names {
            others.push(base_backup(name)?);
        }
        let pair = PgPair {
            primary,
            replica,
            others,
            dir,
        };
        let client = pair.primary.connect().await?;
        let replicas = 1 + pair.others.len();
        wait_for_async(
            "every replica to stream",
            Duration::from_secs(30),
            || async {
                let rows = client
                    .query(
                        "SELECT 1 FROM pg_stat_replication WHERE state = 'streaming'",
                        &[],
                    )
                    .await
                    .ok()?;
                (rows.len() == replicas).then_some(())
            },
        )
        .await?;
        Ok(pair)
    }
}

/// Appends `text` to a server's file (its `postgresql.conf`).
fn append(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .with_context(|| format!("open {}", path.display()))?;
    f.write_all(text.as_bytes())?;
    Ok(())
}
