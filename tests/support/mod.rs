//! Shared test harness: real Postgres, Redis and HTTP servers on free loopback ports, and an
//! in-process agent. Every server is stopped by PID when its handle drops, even when the test
//! fails, and its files live in a temporary directory removed with it.
#![allow(dead_code)] // each test binary uses a different part of the harness

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener as StdListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use failoverd::agent::Agent;
use failoverd::config::Config;
use failoverd::health::{HealthBoard, LastResult, State, TargetView};
use failoverd::probe::Facts;
use failoverd::topology::TargetId;
use tokio_util::sync::CancellationToken;

/// Postgres 15 server binaries.
pub const PG_BIN: &str = "/usr/lib/postgresql/15/bin";

/// A free TCP port on 127.0.0.1 (the OS picks it).
pub fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

/// A free port `p` whose cluster-bus port `p + 10000` is free too (Redis Cluster needs both).
pub fn free_port_with_bus() -> u16 {
    for _ in 0..200 {
        let p = free_port();
        if p < 55_000 && StdListener::bind(("127.0.0.1", p + 10_000)).is_ok() {
            return p;
        }
        // Ephemeral ports are often above 55000: try a random low one instead.
        let p = 20_000 + (rand::random::<u16>() % 20_000);
        if StdListener::bind(("127.0.0.1", p)).is_ok()
            && StdListener::bind(("127.0.0.1", p + 10_000)).is_ok()
        {
            return p;
        }
    }
    panic!("no free port pair for a Redis Cluster node");
}

/// Polls `cond` every 50 ms until it returns `Some`, or fails after `deadline`.
pub async fn wait_for<T>(
    what: &str,
    deadline: Duration,
    mut cond: impl FnMut() -> Option<T>,
) -> anyhow::Result<T> {
    let start = Instant::now();
    loop {
        if let Some(v) = cond() {
            return Ok(v);
        }
        if start.elapsed() > deadline {
            bail!("timed out after {deadline:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Like [`wait_for`] with an async condition.
pub async fn wait_for_async<T, F, Fut>(
    what: &str,
    deadline: Duration,
    mut cond: F,
) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = cond().await {
            return Ok(v);
        }
        if start.elapsed() > deadline {
            bail!("timed out after {deadline:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn is_root() -> bool {
    // SAFETY-free check: root's home and uid via `id -u`.
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

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

fn run(cmd: &mut Command, what: &str) -> anyhow::Result<()> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run {what}"))?;
    if !out.status.success() {
        bail!(
            "{what} failed: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
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

/// A Postgres 15 primary with one streaming replica.
pub struct PgPair {
    /// The primary.
    pub primary: PgServer,
    /// The replica (made by `pg_basebackup -R`).
    pub replica: PgServer,
    /// More replicas, when asked for.
    pub others: Vec<PgServer>,
    // Dropped last, after both servers stopped.
    _dir: tempfile::TempDir,
}

impl PgPair {
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

    /// initdb, start the primary, base-backup the replica, start it, wait until it streams.
    pub async fn start() -> anyhow::Result<PgPair> {
        Self::start_with(0).await
    }

    /// Like [`PgPair::start`], with `extra_replicas` more replicas of the primary.
    pub async fn start_with(extra_replicas: usize) -> anyhow::Result<PgPair> {
        let dir = pg_tempdir()?;
        let primary = PgServer {
            port: free_port(),
            data: dir.path().join("primary"),
            name: "pg-primary".into(),
            log: dir.path().join("primary.log"),
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
             fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n\
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
        let replica = base_backup("pg-replica")?;
        let mut others = Vec::new();
        for i in 0..extra_replicas {
            others.push(base_backup(&format!("pg-replica-{}", i + 2))?);
        }
        let pair = PgPair {
            primary,
            replica,
            others,
            _dir: dir,
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

/// PIDs whose parent is `parent`, from /proc.
fn children_of(parent: i32) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                // The command name is in parentheses and may hold spaces: fields follow the last ')'.
                .and_then(|s| s.rsplit_once(')').map(|(_, rest)| rest.to_owned()))
                .and_then(|rest| rest.split_whitespace().nth(1).and_then(|p| p.parse().ok()))
                == Some(parent)
        })
        .collect()
}

fn append(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .with_context(|| format!("open {}", path.display()))?;
    f.write_all(text.as_bytes())?;
    Ok(())
}

/// One redis-server process.
pub struct RedisServer {
    /// Its port on 127.0.0.1.
    pub port: u16,
    /// Password the harness itself uses (`--requirepass`), if any.
    pub password: Option<String>,
    /// Whether the port speaks TLS (`--tls-port`).
    pub tls: bool,
    args: Vec<String>,
    dir: PathBuf,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts `redis-server` with `extra` arguments in `dir` and waits for PING.
    pub async fn start(port: u16, dir: &Path, extra: &[String]) -> anyhow::Result<RedisServer> {
        let mut args = vec![
            "--port".to_owned(),
            port.to_string(),
            "--bind".into(),
            "127.0.0.1".into(),
            "--save".into(),
            String::new(),
            "--appendonly".into(),
            "no".into(),
            "--daemonize".into(),
            "no".into(),
            "--protected-mode".into(),
            "no".into(),
            "--dir".into(),
            dir.display().to_string(),
            "--logfile".into(),
            dir.join(format!("redis-{port}.log")).display().to_string(),
        ];
        // `--tls-port` is re-added below with the server's port; copy everything else.
        let mut rest = extra.iter();
        while let Some(arg) = rest.next() {
            if arg == "--tls-port" {
                rest.next();
            } else {
                args.push(arg.clone());
            }
        }
        let flag = |name: &str| {
            extra
                .iter()
                .position(|a| a == name)
                .and_then(|i| extra.get(i + 1).cloned())
        };
        let tls = flag("--tls-port").is_some();
        if tls {
            // The TLS port replaces the plain one.
            args[1] = "0".into();
            args.extend(["--tls-port".into(), port.to_string()]);
        }
        let mut server = RedisServer {
            port,
            password: flag("--requirepass"),
            tls,
            args,
            dir: dir.to_owned(),
            child: None,
        };
        server.restart().await?;
        Ok(server)
    }

    /// `redis://127.0.0.1:port` (`rediss://` for TLS): the URL for failoverd's config, without
    /// credentials.
    pub fn url(&self) -> String {
        let scheme = if self.tls { "rediss" } else { "redis" };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// The URL the harness connects with: password included, certificate not verified.
    fn harness_url(&self) -> String {
        let auth = self
            .password
            .as_ref()
            .map(|p| format!(":{p}@"))
            .unwrap_or_default();
        let scheme = if self.tls { "rediss" } else { "redis" };
        let insecure = if self.tls { "/#insecure" } else { "" };
        format!("{scheme}://{auth}127.0.0.1:{}{insecure}", self.port)
    }

    /// (Re)starts the process with the same arguments and waits for PING.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        let child = Command::new("redis-server")
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("cannot start redis-server (apt-get install redis-server)")?;
        self.child = Some(child);
        let url = self.harness_url();
        wait_for_async("redis to answer PING", Duration::from_secs(10), || async {
            let client = redis::Client::open(url.as_str()).ok()?;
            let mut c = client.get_multiplexed_async_connection().await.ok()?;
            redis::cmd("PING").query_async::<String>(&mut c).await.ok()
        })
        .await?;
        Ok(())
    }

    /// SIGKILLs the process and reaps it.
    pub fn kill(&mut self) -> anyhow::Result<()> {
        kill_child(&mut self.child)
    }

    /// Runs one command and returns its reply as text.
    pub async fn cmd(&self, args: &[&str]) -> anyhow::Result<String> {
        let client = redis::Client::open(self.harness_url())?;
        let mut c = client.get_multiplexed_async_connection().await?;
        let mut cmd = redis::cmd(args[0]);
        for a in &args[1..] {
            cmd.arg(*a);
        }
        let value: redis::Value = cmd.query_async(&mut c).await?;
        Ok(match value {
            redis::Value::BulkString(b) => String::from_utf8_lossy(&b).into_owned(),
            redis::Value::SimpleString(s) => s,
            redis::Value::Okay => "OK".into(),
            redis::Value::Int(i) => i.to_string(),
            other => format!("{other:?}"),
        })
    }

    /// Directory for its files.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        stop_child(&mut self.child);
    }
}

/// SIGKILLs and reaps a child process, if it runs.
fn kill_child(child: &mut Option<Child>) -> anyhow::Result<()> {
    if let Some(mut child) = child.take() {
        child.kill()?;
        child.wait()?;
    }
    Ok(())
}

/// Kills and reaps a child process, if it runs; for `Drop`, where errors cannot go anywhere.
fn stop_child(child: &mut Option<Child>) {
    if let Some(mut child) = child.take() {
        let _killed = child.kill();
        let _reaped = child.wait();
    }
}

/// A Redis master with one replica.
pub struct RedisPair {
    /// The master.
    pub master: RedisServer,
    /// The replica.
    pub replica: RedisServer,
    _dir: tempfile::TempDir,
}

impl RedisPair {
    /// Starts both and waits until the replica's link is up.
    pub async fn start() -> anyhow::Result<RedisPair> {
        let dir = tempfile::Builder::new()
            .prefix("failoverd-redis-")
            .tempdir()?;
        let master = RedisServer::start(free_port(), dir.path(), &[]).await?;
        let replica = RedisServer::start(
            free_port(),
            dir.path(),
            &[
                "--replicaof".into(),
                "127.0.0.1".into(),
                master.port.to_string(),
            ],
        )
        .await?;
        let pair = RedisPair {
            master,
            replica,
            _dir: dir,
        };
        wait_for_async("the replica link", Duration::from_secs(15), || async {
            let info = pair.replica.cmd(&["INFO", "replication"]).await.ok()?;
            info.contains("master_link_status:up").then_some(())
        })
        .await?;
        Ok(pair)
    }
}

/// A 6-node Redis Cluster: 3 masters, 3 replicas.
pub struct RedisCluster {
    /// The nodes, masters first as created by `redis-cli --cluster create`.
    pub nodes: Vec<RedisServer>,
    _dir: tempfile::TempDir,
}

impl RedisCluster {
    /// Starts 6 cluster-enabled nodes (`cluster-node-timeout` 5 s), creates the cluster and
    /// waits for `cluster_state:ok` on every node and for every replica to be in sync.
    pub async fn start() -> anyhow::Result<RedisCluster> {
        Self::start_with(Duration::from_secs(5)).await
    }

    /// Like [`RedisCluster::start`], with this `cluster-node-timeout`.
    pub async fn start_with(node_timeout: Duration) -> anyhow::Result<RedisCluster> {
        let dir = tempfile::Builder::new()
            .prefix("failoverd-cluster-")
            .tempdir()?;
        let mut nodes = Vec::new();
        for i in 0..6 {
            let port = free_port_with_bus();
            let extra = [
                "--cluster-enabled".to_owned(),
                "yes".into(),
                "--cluster-config-file".into(),
                format!("nodes-{i}.conf"),
                "--cluster-node-timeout".into(),
                node_timeout.as_millis().to_string(),
                // Replicas sync at once rather than after Redis's 5 s batching delay.
                "--repl-diskless-sync-delay".into(),
                "0".into(),
            ];
            nodes.push(RedisServer::start(port, dir.path(), &extra).await?);
        }
        let addrs: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        run(
            Command::new("redis-cli")
                .arg("--cluster")
                .arg("create")
                .args(&addrs)
                .args(["--cluster-replicas", "1", "--cluster-yes"]),
            "redis-cli --cluster create",
        )?;
        let cluster = RedisCluster { nodes, _dir: dir };
        for node in &cluster.nodes {
            wait_for_async("cluster_state:ok", Duration::from_secs(30), || async {
                let info = node.cmd(&["CLUSTER", "INFO"]).await.ok()?;
                info.contains("cluster_state:ok").then_some(())
            })
            .await?;
        }
        // A replica that never finished its first sync refuses to be elected by the cluster.
        wait_for_async(
            "three replicas in sync",
            Duration::from_secs(30),
            || async {
                let mut synced = 0;
                for node in &cluster.nodes {
                    let info = node.cmd(&["INFO", "replication"]).await.ok()?;
                    if info.contains("role:slave") && info.contains("master_link_status:up") {
                        synced += 1;
                    }
                }
                (synced == 3).then_some(())
            },
        )
        .await?;
        Ok(cluster)
    }
}

/// An HTTP server in this process on a free port.
pub struct HttpServer {
    /// Its address.
    pub addr: SocketAddr,
    shutdown: CancellationToken,
}

impl HttpServer {
    /// Serves `router` until dropped.
    pub async fn start(router: axum::Router) -> anyhow::Result<HttpServer> {
        Self::start_at(SocketAddr::from(([127, 0, 0, 1], 0)), router).await
    }

    /// Serves `router` on `addr` (a stopped server's, to bring it back) until dropped.
    pub async fn start_at(addr: SocketAddr, router: axum::Router) -> anyhow::Result<HttpServer> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let shutdown = CancellationToken::new();
        let stop = shutdown.clone();
        tokio::spawn(async move {
            axum::serve(listener, router)
                .with_graceful_shutdown(stop.cancelled_owned())
                .await
        });
        Ok(HttpServer { addr, shutdown })
    }

    /// Base URL.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// A server that accepts TCP connections and never answers: a black-holed target.
pub struct BlackHole {
    /// Its address.
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl BlackHole {
    /// Starts accepting.
    pub async fn start() -> anyhow::Result<BlackHole> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let task = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                held.push(socket);
            }
        });
        Ok(BlackHole { addr, task })
    }
}

impl Drop for BlackHole {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// An agent running in this process.
pub struct TestAgent {
    /// Its health board.
    pub board: Arc<HealthBoard>,
    /// Its admin address.
    pub admin: SocketAddr,
    shutdown: CancellationToken,
    task: Option<tokio::task::JoinHandle<Result<(), failoverd::agent::AgentError>>>,
    _data_dir: tempfile::TempDir,
}

impl TestAgent {
    /// Parses `toml` (with `{admin}` replaced by a free address) and starts the agent.
    pub async fn start(toml: &str) -> anyhow::Result<TestAgent> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let admin = listener.local_addr()?;
        let data_dir = tempfile::Builder::new()
            .prefix("failoverd-agent-")
            .tempdir()?;
        let text = toml
            .replace("{admin}", &admin.to_string())
            .replace("{data_dir}", &data_dir.path().display().to_string());
        let config = Config::from_str_with_env(&text, config::FileFormat::Toml, Vec::new())
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let agent = Agent::build(config)?;
        let board = agent.board();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(agent.run(listener, None, shutdown.clone()));
        Ok(TestAgent {
            board,
            admin,
            shutdown,
            task: Some(task),
            _data_dir: data_dir,
        })
    }

    /// The view of one target.
    pub fn view(&self, id: &str) -> TargetView {
        self.board
            .views()
            .into_iter()
            .find(|v| v.id.as_str() == id)
            .unwrap_or_else(|| panic!("no target {id}"))
    }

    /// Waits until the target is in `state`; returns how long that took.
    pub async fn wait_state(
        &self,
        id: &str,
        state: State,
        deadline: Duration,
    ) -> anyhow::Result<Duration> {
        let start = Instant::now();
        wait_for(&format!("{id} to be {state:?}"), deadline, || {
            (self.view(id).state == state).then_some(())
        })
        .await
        .with_context(|| format!("last view: {:?}", self.view(id)))?;
        Ok(start.elapsed())
    }

    /// Waits until a successful observation of `id` satisfies `pick`.
    pub async fn wait_facts<T>(
        &self,
        id: &str,
        what: &str,
        deadline: Duration,
        mut pick: impl FnMut(&Facts) -> Option<T>,
    ) -> anyhow::Result<T> {
        wait_for(what, deadline, || match self.view(id).last {
            Some(LastResult::Ok { observation }) => pick(&observation.facts),
            _ => None,
        })
        .await
        .with_context(|| format!("last view of {id}: {:?}", self.view(id)))
    }

    /// GETs a path on the admin API.
    pub async fn get(&self, path: &str) -> anyhow::Result<reqwest::Response> {
        Ok(reqwest::get(format!("http://{}{path}", self.admin)).await?)
    }

    /// Stops the agent and waits for it.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            task.await??;
        }
        Ok(())
    }

    /// The id of a target.
    pub fn id(kind: &str, group: &str, name: &str) -> TargetId {
        let kind = match kind {
            "http" => failoverd::config::TargetKind::Http,
            "postgres" => failoverd::config::TargetKind::Postgres,
            _ => failoverd::config::TargetKind::Redis,
        };
        TargetId::new(kind, group, name)
    }
}

impl Drop for TestAgent {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// The agent section and one region for test configs; `{admin}` is filled in by
/// [`TestAgent::start`].
pub fn base_config(probe: &str) -> String {
    format!(
        r#"
[agent]
id = "test-agent"
region = "r1"
admin_listen = "{{admin}}"
data_dir = "{{data_dir}}"
probe_scope = "all"

# These agents watch and report; failing over is tested with several agents.
[failover]
automatic = false

[probe]
{probe}

[[regions]]
name = "r1"
"#
    )
}

/// A throw-away CA and a server certificate for 127.0.0.1 and localhost, made with `openssl`.
pub struct TestCerts {
    /// The CA certificate (PEM).
    pub ca: PathBuf,
    /// The server certificate (PEM), signed by the CA.
    pub cert: PathBuf,
    /// The server key (PEM).
    pub key: PathBuf,
    _dir: tempfile::TempDir,
}

impl TestCerts {
    /// Generates the CA and the server certificate (P-256 keys, valid one day).
    pub fn generate() -> anyhow::Result<TestCerts> {
        let dir = tempfile::Builder::new()
            .prefix("failoverd-certs-")
            .tempdir()?;
        let p = |name: &str| dir.path().join(name).display().to_string();
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        run(
            Command::new("openssl")
                .args([
                    "req",
                    "-x509",
                    "-days",
                    "1",
                    "-subj",
                    "/CN=failoverd test CA",
                ])
                .args(ec)
                .args(["-keyout", &p("ca.key"), "-out", &p("ca.pem")]),
            "openssl: CA",
        )?;
        run(
            Command::new("openssl")
                .args(["req", "-subj", "/CN=127.0.0.1"])
                .args(ec)
                .args(["-keyout", &p("server.key"), "-out", &p("server.csr")]),
            "openssl: server key",
        )?;
        std::fs::write(
            dir.path().join("san.ext"),
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n",
        )?;
        run(
            Command::new("openssl")
                .args(["x509", "-req", "-days", "1", "-in", &p("server.csr")])
                .args([
                    "-CA",
                    &p("ca.pem"),
                    "-CAkey",
                    &p("ca.key"),
                    "-CAcreateserial",
                ])
                .args(["-extfile", &p("san.ext"), "-out", &p("server.pem")]),
            "openssl: sign",
        )?;
        Ok(TestCerts {
            ca: dir.path().join("ca.pem"),
            cert: dir.path().join("server.pem"),
            key: dir.path().join("server.key"),
            _dir: dir,
        })
    }
}

/// An HTTPS server (python3's http.server behind `ssl`) answering 200 `ok` on every path.
pub struct HttpsServer {
    /// Its port on 127.0.0.1.
    pub port: u16,
    child: Child,
}

impl HttpsServer {
    /// Starts it with the given certificate and waits until it accepts connections.
    pub async fn start(certs: &TestCerts) -> anyhow::Result<HttpsServer> {
        let port = free_port();
        let script = r#"
import http.server, ssl, sys
class Ok(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200); self.send_header("Content-Length", "2"); self.end_headers()
        self.wfile.write(b"ok")
    def log_message(self, *a): pass
srv = http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Ok)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(sys.argv[2], sys.argv[3])
srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
srv.serve_forever()
"#;
        let child = Command::new("python3")
            .args(["-c", script, &port.to_string()])
            .arg(&certs.cert)
            .arg(&certs.key)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .context("cannot start python3")?;
        let server = HttpsServer { port, child };
        wait_for(
            "the HTTPS server to listen",
            Duration::from_secs(10),
            || std::net::TcpStream::connect(("127.0.0.1", port)).ok(),
        )
        .await?;
        Ok(server)
    }
}

impl Drop for HttpsServer {
    fn drop(&mut self) {
        let _killed = self.child.kill();
        let _reaped = self.child.wait();
    }
}

/// A `failoverd run` process, killed when dropped.
pub struct AgentProcess {
    /// Agent id.
    pub id: String,
    /// Admin address.
    pub admin: SocketAddr,
    /// Peer address.
    pub peer: SocketAddr,
    /// Its config file.
    pub config: PathBuf,
    /// Its log file (stderr).
    pub log: PathBuf,
    child: Option<Child>,
}

impl AgentProcess {
    /// Starts the binary on `config` (logs as JSON to `log`).
    pub fn spawn(&mut self) -> anyhow::Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let child = Command::new(env!("CARGO_BIN_EXE_failoverd"))
            .args(["run", "--log-format", "json", "--config"])
            .arg(&self.config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("cannot start failoverd")?;
        self.child = Some(child);
        Ok(())
    }

    /// SIGKILLs the process and reaps it.
    pub fn kill(&mut self) -> anyhow::Result<()> {
        kill_child(&mut self.child)
    }

    /// Whether it runs.
    pub fn running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    /// `GET /v1/status` as JSON, if the agent answers.
    pub async fn status(&self) -> Option<serde_json::Value> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_millis(500))
            .build()
            .ok()?;
        let text = client
            .get(format!("http://{}/v1/status", self.admin))
            .send()
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        serde_json::from_str(&text).ok()
    }

    /// The agent's whole log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The agent's log so far (for failure messages).
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        stop_child(&mut self.child);
    }
}

/// Three agents in three regions on loopback, each probing one API per region.
pub struct AgentCluster {
    /// The agents.
    pub agents: Vec<AgentProcess>,
    /// The cluster secret.
    pub secret: String,
    /// Fault proxies per directed peer link `(from, to)`, when asked for.
    pub links: Vec<((usize, usize), FaultProxy)>,
    _dir: tempfile::TempDir,
}

/// How to set up an [`AgentCluster`].
#[derive(Default)]
pub struct ClusterOptions<'a> {
    /// The `[probe]` section's body.
    pub probe: &'a str,
    /// Extra lines for `[cluster]`.
    pub cluster: &'a str,
    /// Extra TOML appended to every agent's config (datastores).
    pub extra: &'a str,
    /// Route every peer link through a [`FaultProxy`].
    pub proxies: bool,
    /// Serve peer traffic over mutual TLS with these certificates.
    pub tls: Option<&'a TestCerts>,
    /// Latency the proxies add in each direction (with `proxies`).
    pub link_delay: Duration,
}

/// A TCP proxy that can cut a link (it closes open connections and drops new ones) and can
/// delay every byte by a fixed time in each direction, standing in for `tc netem` where the
/// kernel has no netem.
pub struct FaultProxy {
    /// Where it listens.
    pub addr: SocketAddr,
    cut: Arc<std::sync::atomic::AtomicBool>,
    conns: Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>>,
    task: tokio::task::JoinHandle<()>,
}

impl FaultProxy {
    /// Proxies connections to `target`.
    pub async fn start(target: SocketAddr) -> anyhow::Result<FaultProxy> {
        Self::start_with_delay(target, Duration::ZERO).await
    }

    /// Proxies connections to `target`, delaying each direction by `delay`.
    pub async fn start_with_delay(
        target: SocketAddr,
        delay: Duration,
    ) -> anyhow::Result<FaultProxy> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let cut = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let conns: Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>> = Arc::default();
        let (cut2, conns2) = (cut.clone(), conns.clone());
        let task = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if cut2.load(std::sync::atomic::Ordering::SeqCst) {
                    continue; // dropped: the link is cut
                }
                let handle = tokio::spawn(async move {
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await else {
                        return;
                    };
                    if delay.is_zero() {
                        // Ends when either side closes or the link is cut (task aborted).
                        let _copied =
                            tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                        return;
                    }
                    let (in_read, in_write) = inbound.into_split();
                    let (out_read, out_write) = outbound.into_split();
                    tokio::join!(
                        delayed_copy(in_read, out_write, delay),
                        delayed_copy(out_read, in_write, delay)
                    );
                });
                conns2.lock().unwrap().push(handle);
            }
        });
        Ok(FaultProxy {
            addr,
            cut,
            conns,
            task,
        })
    }

    /// Cuts the link: open connections close, new ones are dropped.
    pub fn cut(&self) {
        self.cut.store(true, std::sync::atomic::Ordering::SeqCst);
        for handle in self.conns.lock().unwrap().drain(..) {
            handle.abort();
        }
    }

    /// Heals the link.
    pub fn heal(&self) {
        self.cut.store(false, std::sync::atomic::Ordering::SeqCst);
    }
}

/// Copies `from` to `to`, each chunk written `delay` after it was read; reading goes on
/// meanwhile, so the link keeps its bandwidth and only gains latency.
async fn delayed_copy(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    delay: Duration,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(tokio::time::Instant, Vec<u8>)>();
    let reader = async move {
        let mut buf = vec![0u8; 16 * 1024];
        while let Ok(n) = from.read(&mut buf).await {
            if n == 0
                || tx
                    .send((tokio::time::Instant::now() + delay, buf[..n].to_vec()))
                    .is_err()
            {
                break;
            }
        }
    };
    let writer = async move {
        while let Some((due, chunk)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            if to.write_all(&chunk).await.is_err() {
                break;
            }
        }
        // The reader ended: pass the close on.
        let _closed = to.shutdown().await;
    };
    tokio::join!(reader, writer);
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
        for handle in self.conns.lock().unwrap().drain(..) {
            handle.abort();
        }
    }
}

/// The regions of the test cluster.
pub const REGIONS: [&str; 3] = ["eu-west-3", "eu-central-1", "us-east-1"];

/// A healthy API: `GET /health` → 200.
pub fn api_router() -> axum::Router {
    axum::Router::new().route("/health", axum::routing::get(|| async { "ok" }))
}

/// One healthy API ([`api_router`]) per region; the servers stop when dropped.
pub async fn region_apis() -> anyhow::Result<(Vec<HttpServer>, [String; 3])> {
    let mut servers = Vec::new();
    for _ in REGIONS {
        servers.push(HttpServer::start(api_router()).await?);
    }
    let urls = [0, 1, 2].map(|i| servers[i].url("/health"));
    Ok((servers, urls))
}

impl AgentCluster {
    /// For failure messages: the last lines each agent logged itself (without the Raft
    /// library's), with anything it printed before its logging started.
    pub fn logs(&self) -> String {
        self.agents
            .iter()
            .map(|a| {
                let log = a.log();
                // Its own JSON lines, and any plain line (an error before logging started).
                let own: Vec<&str> = log
                    .lines()
                    .filter(|l| l.contains(r#""target":"failoverd"#) || !l.starts_with('{'))
                    .collect();
                format!(
                    "--- {}:\n{}",
                    a.id,
                    own[own.len().saturating_sub(25)..].join("\n")
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Writes the configs and starts the three agents. `apis` are the API URLs per region.
    pub async fn start(apis: &[String; 3], probe: &str) -> anyhow::Result<AgentCluster> {
        Self::start_with(
            apis,
            ClusterOptions {
                probe,
                ..Default::default()
            },
        )
        .await
    }

    /// Like [`AgentCluster::start`], with datastores, cluster settings and fault proxies.
    pub async fn start_with(
        apis: &[String; 3],
        options: ClusterOptions<'_>,
    ) -> anyhow::Result<AgentCluster> {
        let probe = options.probe;
        let dir = tempfile::Builder::new()
            .prefix("failoverd-cluster-")
            .tempdir()?;
        let secret = format!("cluster-secret-{}", rand::random::<u32>());
        let secret_file = dir.path().join("cluster-secret");
        std::fs::write(&secret_file, format!("{secret}\n"))?;
        let ports: Vec<(u16, u16)> = (0..3).map(|_| (free_port(), free_port())).collect();
        let ids: Vec<String> = REGIONS.iter().map(|r| format!("{r}-a")).collect();
        let mut links = Vec::new();
        if options.proxies {
            for i in 0..3 {
                for j in (0..3).filter(|j| *j != i) {
                    let proxy = FaultProxy::start_with_delay(
                        SocketAddr::from(([127, 0, 0, 1], ports[j].1)),
                        options.link_delay,
                    )
                    .await?;
                    links.push(((i, j), proxy));
                }
            }
        }
        let mut agents = Vec::new();
        for i in 0..3 {
            let mut cfg = format!(
                r#"
[agent]
id = "{id}"
region = "{region}"
admin_listen = "127.0.0.1:{admin}"
peer_listen = "127.0.0.1:{peer}"
data_dir = "{data}"

[cluster]
secret = {{ file = "{secret}" }}
{cluster_extra}

[probe]
{probe}
"#,
                id = ids[i],
                region = REGIONS[i],
                admin = ports[i].0,
                peer = ports[i].1,
                data = dir.path().join(&ids[i]).display(),
                secret = secret_file.display(),
                cluster_extra = options.cluster,
            );
            for j in (0..3).filter(|j| *j != i) {
                let port = links
                    .iter()
                    .find(|(link, _)| *link == (i, j))
                    .map(|(_, proxy)| proxy.addr.port())
                    .unwrap_or(ports[j].1);
                let scheme = if options.tls.is_some() {
                    "https"
                } else {
                    "http"
                };
                cfg.push_str(&format!(
                    "\n[[peers]]\nid = \"{}\"\nregion = \"{}\"\npeer_url = \"{scheme}://127.0.0.1:{port}\"\n",
                    ids[j], REGIONS[j]
                ));
            }
            for (region, url) in REGIONS.iter().zip(apis) {
                cfg.push_str(&format!(
                    "\n[[regions]]\nname = \"{region}\"\n[[regions.api]]\nname = \"api\"\nurl = \"{url}\"\n"
                ));
            }
            if let Some(certs) = options.tls {
                cfg.push_str(&format!(
                    "\n[tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\nca_file = \"{}\"\nrequire_client_cert = true\n",
                    certs.cert.display(),
                    certs.key.display(),
                    certs.ca.display()
                ));
            }
            cfg.push_str(options.extra);
            let config = dir.path().join(format!("{}.toml", ids[i]));
            std::fs::write(&config, cfg)?;
            let mut agent = AgentProcess {
                id: ids[i].clone(),
                admin: SocketAddr::from(([127, 0, 0, 1], ports[i].0)),
                peer: SocketAddr::from(([127, 0, 0, 1], ports[i].1)),
                log: dir.path().join(format!("{}.log", ids[i])),
                config,
                child: None,
            };
            agent.spawn()?;
            agents.push(agent);
        }
        Ok(AgentCluster {
            agents,
            secret,
            links,
            _dir: dir,
        })
    }

    /// Waits until every running agent (all but `except`) names the same leader, other than
    /// `not`, and that leader itself says it leads (a restarted agent names the leader of its
    /// stored vote before any election); returns its id and the term.
    pub async fn agreed_leader(
        &self,
        except: Option<usize>,
        not: Option<&str>,
        deadline: Duration,
    ) -> anyhow::Result<(String, u64)> {
        wait_for_async("every agent to name the same leader", deadline, || async {
            let mut seen = None;
            for (i, agent) in self.agents.iter().enumerate() {
                if Some(i) == except {
                    continue;
                }
                let status = agent.status().await?;
                let leader = status["cluster"]["leader"].as_str()?.to_owned();
                if Some(leader.as_str()) == not {
                    return None;
                }
                let term = status["cluster"]["term"].as_u64()?;
                if status["cluster"]["agent"] == leader.as_str()
                    && status["cluster"]["state"] != "leader"
                {
                    return None;
                }
                match &seen {
                    None => seen = Some((leader, term)),
                    Some(s) if *s == (leader.clone(), term) => {}
                    Some(_) => return None,
                }
            }
            // The named leader must be one of the agents asked, and say so itself.
            let (leader, _) = seen.as_ref()?;
            let asked = self
                .agents
                .iter()
                .enumerate()
                .any(|(i, a)| Some(i) != except && &a.id == leader);
            if !asked {
                return None;
            }
            seen
        })
        .await
        .with_context(|| {
            self.agents
                .iter()
                .map(|a| format!("--- {}:\n{}", a.id, a.log_tail()))
                .collect::<Vec<_>>()
                .join("\n")
        })
    }

    /// Cuts (or heals) every peer link to and from agent `k`.
    pub fn isolate(&self, k: usize, cut: bool) {
        for ((from, to), proxy) in &self.links {
            if *from == k || *to == k {
                if cut {
                    proxy.cut()
                } else {
                    proxy.heal()
                }
            }
        }
    }

    /// The index of an agent by id.
    pub fn index(&self, id: &str) -> usize {
        self.agents
            .iter()
            .position(|a| a.id == id)
            .expect("known agent")
    }
}

/// The `ministack` Route53 emulator on a free loopback port, with a hosted zone.
///
/// The binary comes from `MINISTACK` (set by `scripts/test.sh`, which installs it into a
/// virtualenv on first use), else from that virtualenv's default place.
pub struct Ministack {
    /// Its port.
    pub port: u16,
    /// The hosted zone created at start (bare id).
    pub zone_id: String,
    /// Files with the static credentials the agents read.
    pub access_key_file: PathBuf,
    /// See `access_key_file`.
    pub secret_key_file: PathBuf,
    child: Option<Child>,
    _dir: tempfile::TempDir,
}

/// The zone every Route53 test uses.
pub const ZONE: &str = "example.test.";
/// The weighted record's name.
pub const RECORD: &str = "api.example.test.";

impl Ministack {
    /// Starts it, waits until it answers, creates the zone [`ZONE`].
    pub async fn start() -> anyhow::Result<Ministack> {
        let bin = std::env::var("MINISTACK").unwrap_or_else(|_| {
            let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
            format!("{home}/.cache/failoverd/ministack-1.5.33/bin/ministack")
        });
        anyhow::ensure!(
            Path::new(&bin).exists(),
            "ministack not found at {bin}: run scripts/ministack-venv.sh (scripts/test.sh does)"
        );
        let dir = tempfile::Builder::new()
            .prefix("failoverd-ministack-")
            .tempdir()?;
        let port = free_port();
        let log = std::fs::File::create(dir.path().join("ministack.log"))?;
        let child = Command::new(&bin)
            .env("GATEWAY_PORT", port.to_string())
            .env("BIND_HOST", "127.0.0.1")
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("cannot start {bin}"))?;
        let access_key_file = dir.path().join("aws-access-key-id");
        let secret_key_file = dir.path().join("aws-secret-access-key");
        std::fs::write(&access_key_file, "test\n")?;
        std::fs::write(&secret_key_file, "test\n")?;
        let mut ministack = Ministack {
            port,
            zone_id: String::new(),
            access_key_file,
            secret_key_file,
            child: Some(child),
            _dir: dir,
        };
        let health = format!("{}/_ministack/health", ministack.url());
        wait_for_async("ministack to answer", Duration::from_secs(30), || async {
            let answer = reqwest::get(&health).await.ok()?;
            answer.status().is_success().then_some(())
        })
        .await?;
        let zone = ministack
            .client()
            .await
            .create_hosted_zone()
            .name(ZONE)
            .caller_reference(format!("failoverd-test-{}", rand::random::<u64>()))
            .send()
            .await
            .context("create the hosted zone")?;
        ministack.zone_id = zone
            .hosted_zone()
            .map(|z| z.id().trim_start_matches("/hostedzone/").to_owned())
            .context("no zone id")?;
        Ok(ministack)
    }

    /// Its endpoint URL.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// A Route53 client on it, for setting up and checking records from the test.
    pub async fn client(&self) -> aws_sdk_route53::Client {
        let creds = aws_credential_types::Credentials::new("test", "test", None, None, "test");
        let config = aws_sdk_route53::Config::builder()
            .behavior_version(aws_sdk_route53::config::BehaviorVersion::latest())
            .region(aws_sdk_route53::config::Region::new("us-east-1"))
            .credentials_provider(creds)
            .endpoint_url(self.url())
            .http_client(
                aws_smithy_http_client::Builder::new()
                    .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
                        aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring,
                    ))
                    .build_https(),
            )
            .build();
        aws_sdk_route53::Client::from_conf(config)
    }

    /// Sends one change batch to the emulator, as a person or another tool would.
    pub async fn send_changes(
        &self,
        changes: Vec<aws_sdk_route53::types::Change>,
    ) -> anyhow::Result<()> {
        self.client()
            .await
            .change_resource_record_sets()
            .hosted_zone_id(&self.zone_id)
            .change_batch(
                aws_sdk_route53::types::ChangeBatch::builder()
                    .set_changes(Some(changes))
                    .build()?,
            )
            .send()
            .await?;
        Ok(())
    }

    /// The weighted records (weight 100 each) as an operator set them up before failoverd
    /// took over.
    pub async fn seed_weights(&self) -> anyhow::Result<()> {
        use aws_sdk_route53::types::{Change, ChangeAction};
        let mut changes = Vec::new();
        for region in REGIONS {
            changes.push(
                Change::builder()
                    .action(ChangeAction::Upsert)
                    .resource_record_set(weighted(region, 100)?)
                    .build()?,
            );
        }
        self.send_changes(changes).await
    }

    /// The `[route53]` section for the three test regions, record values `192.0.2.{1,2,3}`.
    pub fn config_section(&self) -> String {
        let mut section = format!(
            r#"
[route53]
zone_id = "{zone}"
record_name = "{RECORD}"
record_type = "A"
ttl = 30
endpoint_url = "{url}"
credentials = {{ access_key_id = {{ file = "{id}" }}, secret_access_key = {{ file = "{secret}" }} }}
insync_timeout = "10s"
"#,
            zone = self.zone_id,
            url = self.url(),
            id = self.access_key_file.display(),
            secret = self.secret_key_file.display(),
        );
        for (i, region) in REGIONS.iter().enumerate() {
            section.push_str(&format!(
                "\n[route53.regions.{region}]\nset_identifier = \"{region}\"\nvalue = \"192.0.2.{}\"\n",
                i + 1
            ));
        }
        section
    }

    /// Every record set of the zone (one page holds all a test makes).
    async fn sets(&self) -> anyhow::Result<Vec<aws_sdk_route53::types::ResourceRecordSet>> {
        let listing = self
            .client()
            .await
            .list_resource_record_sets()
            .hosted_zone_id(&self.zone_id)
            .send()
            .await?;
        Ok(listing.resource_record_sets().to_vec())
    }

    /// The weighted records' weights by set identifier, and the epoch TXT values.
    pub async fn records(&self) -> anyhow::Result<(BTreeMap<String, i64>, Vec<String>)> {
        let mut weights = BTreeMap::new();
        let mut epochs = Vec::new();
        for set in self.sets().await? {
            if set.name() == RECORD {
                if let (Some(id), Some(w)) = (set.set_identifier(), set.weight()) {
                    weights.insert(id.to_owned(), w);
                }
            } else if set.name() == format!("_failoverd-epoch.{RECORD}") {
                epochs.extend(set.resource_records().iter().map(|r| r.value().to_owned()));
            }
        }
        Ok((weights, epochs))
    }

    /// The values of the (non-weighted) record `name`, if it exists.
    pub async fn values(&self, name: &str) -> anyhow::Result<Option<Vec<String>>> {
        Ok(self
            .sets()
            .await?
            .iter()
            .find(|s| s.name() == name && s.set_identifier().is_none())
            .map(|s| {
                s.resource_records()
                    .iter()
                    .map(|r| r.value().to_owned())
                    .collect()
            }))
    }
}

impl Drop for Ministack {
    fn drop(&mut self) {
        stop_child(&mut self.child);
    }
}

/// The weighted record of test region `region` with `weight` (value `192.0.2.<n>`).
pub fn weighted(
    region: &str,
    weight: i64,
) -> anyhow::Result<aws_sdk_route53::types::ResourceRecordSet> {
    use aws_sdk_route53::types::{ResourceRecord, ResourceRecordSet, RrType};
    let index = REGIONS
        .iter()
        .position(|r| *r == region)
        .context("a test region")?;
    Ok(ResourceRecordSet::builder()
        .name(RECORD)
        .r#type(RrType::A)
        .set_identifier(region)
        .weight(weight)
        .ttl(30)
        .resource_records(
            ResourceRecord::builder()
                .value(format!("192.0.2.{}", index + 1))
                .build()?,
        )
        .build()?)
}
