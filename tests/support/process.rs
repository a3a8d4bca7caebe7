//! Processes and ports: free loopback ports, running a command to completion, reaping and
//! killing children, and `failoverd run` as a child process ([`AgentProcess`]). Knows nothing
//! of what the processes serve: the servers built on these live in their own files.

use std::net::{SocketAddr, TcpListener as StdListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context};

/// A free TCP port on 127.0.0.1 (the OS picks it).
pub fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

/// `n` distinct free TCP ports on 127.0.0.1: each is held until all are picked, so the OS
/// cannot hand out one port twice (as separate [`free_port`] calls may).
pub fn free_ports(n: usize) -> Vec<u16> {
    let held: Vec<StdListener> = (0..n)
        .map(|_| StdListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0"))
        .collect();
    held.iter()
        .map(|l| l.local_addr().expect("a bound address").port())
        .collect()
}

/// A free port `p` whose cluster-bus port `p + 10000` is free too (Redis Cluster needs both).
/// Both lie below the kernel's ephemeral range (32768 and up by default): a port freed by a
/// bind test there can be handed to an outgoing connection before Redis binds it.
pub fn free_port_with_bus() -> u16 {
    for _ in 0..500 {
        let p = 10_000 + (rand::random::<u16>() % 12_000);
        if StdListener::bind(("127.0.0.1", p)).is_ok()
            && StdListener::bind(("127.0.0.1", p + 10_000)).is_ok()
        {
            return p;
        }
    }
    panic!("no free port pair for a Redis Cluster node");
}

/// Whether the tests run as root (then Postgres runs as the `postgres` user).
pub(super) fn is_root() -> bool {
    // SAFETY-free check: root's home and uid via `id -u`.
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// Runs `cmd` to completion; an error with its output unless it exits 0.
pub(super) fn run(cmd: &mut Command, what: &str) -> anyhow::Result<()> {
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

/// PIDs whose parent is `parent`, from /proc.
pub(super) fn children_of(parent: i32) -> Vec<i32> {
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

/// SIGKILLs and reaps a child process, if it runs.
pub(super) fn kill_child(child: &mut Option<Child>) -> anyhow::Result<()> {
    if let Some(mut child) = child.take() {
        child.kill()?;
        child.wait()?;
    }
    Ok(())
}

/// Kills and reaps a child process, if it runs; for `Drop`, where errors cannot go anywhere.
pub(super) fn stop_child(child: &mut Option<Child>) {
    if let Some(mut child) = child.take() {
        let _killed = child.kill();
        let _reaped = child.wait();
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
    /// An agent that is not started yet: [`AgentProcess::spawn`] starts it.
    pub(super) fn new(
        id: String,
        admin: SocketAddr,
        peer: SocketAddr,
        config: PathBuf,
        log: PathBuf,
    ) -> AgentProcess {
        AgentProcess {
            id,
            admin,
            peer,
            config,
            log,
            child: None,
        }
    }

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
