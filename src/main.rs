//! The `failoverd` command: run an agent, check a configuration, set up the Route53 gate
//! health checks, and the operator's commands against a running agent ([`cli`]).
//!
//! Commands print with [`outln!`] rather than `println!`, so that a reader that goes away
//! (`failoverd status | head`) ends a command quietly instead of with a panic.

/// `print!` to standard output through [`stdout`].
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::stdout(format_args!($($arg)*))
    };
}

/// `println!` to standard output through [`stdout`].
macro_rules! outln {
    () => {
        $crate::stdout(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::stdout(format_args!("{}\n", format_args!($($arg)*)))
    };
}

mod cli;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, CommandFactory, Parser, Subcommand, ValueEnum};
use failoverd::agent::Agent;
use failoverd::config::{Config, ConfigError, LogFormat};
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(version, about = "Multi-region failover and health-probing daemon")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the agent.
    Run {
        #[command(flatten)]
        config: ConfigFile,
        /// Log format; overrides agent.log_format.
        #[arg(long, value_enum)]
        log_format: Option<LogFormatArg>,
    },
    /// Validate a configuration file and print a summary of its topology.
    CheckConfig {
        #[command(flatten)]
        config: ConfigFile,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// The Route53 health checks that probe each region's gate (`route53.regions.*.gate_url`).
    Route53 {
        #[command(subcommand)]
        action: Route53Action,
    },
    #[command(flatten)]
    Op(cli::Op),
}

#[derive(Subcommand)]
enum Route53Action {
    /// Show which gate health checks exist and are attached, and what `apply` would do.
    Plan {
        #[command(flatten)]
        config: ConfigFile,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Create the missing gate health checks and attach them to the weighted records
    /// (idempotent: a second run changes nothing).
    Apply {
        #[command(flatten)]
        config: ConfigFile,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
}

/// The environment variable that names the configuration file when no argument does.
const CONFIG_ENV: &str = "FAILOVERD_CONFIG";

/// The configuration file of a command that reads one, named the same way on every command:
/// `FILE`, `--config FILE`, or else `FAILOVERD_CONFIG`. (Read by hand rather than with clap's
/// `env`, for which a set variable would conflict with `FILE`.)
#[derive(Args)]
struct ConfigFile {
    /// Configuration file (.toml, .yaml or .yml) [default: $FAILOVERD_CONFIG].
    #[arg(long, short, value_name = "FILE")]
    config: Option<PathBuf>,
    /// The same as --config FILE.
    #[arg(value_name = "FILE", conflicts_with = "config")]
    file: Option<PathBuf>,
}

impl ConfigFile {
    /// The file named; without one, a usage error (exit 2).
    fn path(self) -> PathBuf {
        let env = std::env::var_os(CONFIG_ENV)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from);
        match self.file.or(self.config).or(env) {
            Some(path) => path,
            None => Cli::command()
                .error(
                    clap::error::ErrorKind::MissingRequiredArgument,
                    format!(
                        "no configuration file: give FILE or --config FILE, or set {CONFIG_ENV}"
                    ),
                )
                .exit(),
        }
    }
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormatArg {
    Auto,
    Json,
    Text,
}

/// Exit code for an invalid configuration (distinct from a runtime failure).
const EXIT_BAD_CONFIG: u8 = 2;

/// Writes `text` to standard output. Once the reader has gone away (a closed pipe, as in
/// `failoverd status | head`) nobody reads what a command says: it exits 0 at once, as Unix
/// filters do, where `println!` would panic. Any other write error exits 1 with the error.
fn stdout(text: std::fmt::Arguments) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_fmt(text).and_then(|()| out.flush()) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => std::process::exit(0),
        Err(e) => {
            eprintln!("failoverd: cannot write to standard output: {e}");
            std::process::exit(1)
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Op(op) => cli::run(op),
        Command::CheckConfig { config, json } => check_config(&config.path(), json),
        Command::Route53 { action } => {
            let (path, json, apply) = match action {
                Route53Action::Plan { config, json } => (config.path(), json, false),
                Route53Action::Apply { config, json } => (config.path(), json, true),
            };
            let config = match Config::load(&path) {
                Ok(c) => c,
                Err(e) => return report_config_error(&path, &e),
            };
            match gates(&config, apply, json) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("failoverd: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Run { config, log_format } => {
            let path = config.path();
            let config = match Config::load(&path) {
                Ok(c) => c,
                Err(e) => return report_config_error(&path, &e),
            };
            let format = match log_format {
                Some(LogFormatArg::Json) => LogFormat::Json,
                Some(LogFormatArg::Text) => LogFormat::Text,
                Some(LogFormatArg::Auto) => LogFormat::Auto,
                None => config.agent.log_format,
            };
            init_logging(format);
            match run(config) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!(error = format!("{e:#}"), "failoverd stopped with an error");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

fn report_config_error(path: &std::path::Path, e: &ConfigError) -> ExitCode {
    eprintln!("failoverd: invalid configuration {}:", path.display());
    for issue in e.issues() {
        eprintln!("  - {issue}");
    }
    ExitCode::from(EXIT_BAD_CONFIG)
}

fn check_config(path: &std::path::Path, json: bool) -> ExitCode {
    match Config::load(path) {
        Ok(config) => {
            if json {
                let out = serde_json::json!({ "valid": true, "errors": [] });
                outln!("{out}");
            } else {
                out!("{}", config.summary());
                outln!("configuration {} is valid", path.display());
            }
            ExitCode::SUCCESS
        }
        Err(e) if json => {
            let errors: Vec<_> = e
                .issues()
                .iter()
                .map(|i| serde_json::json!({ "key": i.key, "message": i.message }))
                .collect();
            outln!(
                "{}",
                serde_json::json!({ "valid": false, "errors": errors })
            );
            ExitCode::from(EXIT_BAD_CONFIG)
        }
        Err(e) => report_config_error(path, &e),
    }
}

/// `failoverd route53 plan|apply`.
fn gates(config: &Config, apply: bool, json: bool) -> anyhow::Result<()> {
    let r53 = config
        .route53
        .as_ref()
        .context("the configuration has no [route53] section")?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let plans = runtime.block_on(async {
        let client =
            failoverd::actions::route53::Route53::new(r53, std::time::Duration::from_secs(10))
                .await?;
        if apply {
            client.gate_apply().await
        } else {
            client.gate_plan().await
        }
    })?;
    if json {
        outln!("{}", serde_json::to_string_pretty(&plans)?);
        return Ok(());
    }
    if plans.is_empty() {
        outln!("no region has a gate_url under route53.regions: nothing to do");
        return Ok(());
    }
    let width = plans
        .iter()
        .map(|p| p.gate_url.len())
        .max()
        .unwrap_or(4)
        .max(4);
    outln!(
        "{:<14} {:<width$} {:<38} {:<9} TO DO",
        "REGION",
        "GATE",
        "HEALTH CHECK",
        "ATTACHED"
    );
    for p in &plans {
        outln!(
            "{:<14} {:<width$} {:<38} {:<9} {}",
            p.region,
            p.gate_url,
            p.health_check.as_deref().unwrap_or("-"),
            if p.attached { "yes" } else { "no" },
            if p.to_do.is_empty() {
                "-".to_owned()
            } else {
                p.to_do.join(", ")
            }
        );
    }
    let pending = plans.iter().filter(|p| !p.to_do.is_empty()).count();
    match (apply, pending) {
        (_, 0) => outln!("every gate health check exists and is attached"),
        (false, n) => outln!("{n} region(s) to set up: run `failoverd route53 apply`"),
        (true, n) => anyhow::bail!("{n} region(s) still not set up after apply"),
    }
    Ok(())
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("FAILOVERD_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let json = match format {
        LogFormat::Json => true,
        LogFormat::Text => false,
        LogFormat::Auto => !std::io::stderr().is_terminal(),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().flatten_event(true).init();
    } else {
        builder.init();
    }
}

fn run(config: Config) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let grace = config.shutdown_grace();
        let addr = config.agent.admin_listen;
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on agent.admin_listen {addr}"))?;
        let peer_listener = match config.agent.peer_listen {
            Some(addr) => Some(
                tokio::net::TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("cannot listen on agent.peer_listen {addr}"))?,
            ),
            None => None,
        };
        let agent = Agent::build(config)?;
        let shutdown = CancellationToken::new();
        let mut running = tokio::spawn(agent.run(listener, peer_listener, shutdown.clone()));
        tokio::select! {
            signal = stop_signal() => {
                tracing::info!(signal = signal?, grace = %humantime::format_duration(grace), "stopping");
            }
            finished = &mut running => {
                return finished.context("agent task failed")?.map_err(Into::into);
            }
        }
        shutdown.cancel();
        match tokio::time::timeout(grace, running).await {
            Ok(finished) => finished.context("agent task failed")?.map_err(Into::into),
            Err(_) => anyhow::bail!(
                "agent did not stop within agent.shutdown_grace ({})",
                humantime::format_duration(grace)
            ),
        }
    })
}

/// Waits for SIGTERM or SIGINT and names it.
async fn stop_signal() -> anyhow::Result<&'static str> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot watch SIGINT")?;
    Ok(tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    })
}
