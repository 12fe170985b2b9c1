//! The `tokenwarden` command line: the arguments, one file per command, and [`Exit`], the one
//! table of exit codes.
//!
//! Each command prints its own output and errors (`error: ...` on standard error, the causes
//! joined by `: `) and returns its exit code; `main.rs` only parses the arguments, sets up
//! logging ([`init_logging`]) and the runtime, and exits with the code. Shared steps (loading
//! the config, building the Graph client) report their failure themselves and hand back the
//! exit code to end with.

mod check;
mod config_check;
mod demo;
mod doctor;
mod exit;
mod import;
mod log;
mod notify;
mod rollback;
mod rotate;
mod run;
mod sandbox;
mod stage;
mod status;

use std::io::Read;
use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

pub use exit::Exit;
pub use log::{LogFormat, init_logging};

use crate::config::{self, Config, TokenConfig};
use crate::graph::GraphClient;
use crate::rotation::command::{CommandError, Done};
use crate::secret::Secret;

/// The command line.
#[derive(Parser)]
#[command(
    name = "tokenwarden",
    version,
    about = "Keeps Meta Graph API (WhatsApp Cloud API) access tokens alive"
)]
pub struct Cli {
    /// Config file [default: $TOKENWARDEN_CONFIG, else /etc/tokenwarden/tokenwarden.toml]
    #[arg(long, global = true, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// Log format on standard error
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Human)]
    pub log_format: LogFormat,
    /// The command to run.
    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
#[derive(Subcommand)]
pub enum Command {
    /// Run the daemon: check on schedule, email on-call, until SIGTERM (SIGHUP reloads)
    Run,
    /// Check once and exit 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN (for cron and monitors)
    Check {
        /// Only this token
        #[arg(long, value_name = "NAME")]
        token: Option<String>,
        /// Machine-readable output
        #[arg(long)]
        json: bool,
    },
    /// Show the daemon's last known state of every token (no network)
    Status {
        /// Machine-readable output
        #[arg(long)]
        json: bool,
    },
    /// See tokenwarden work: a local Graph sandbox, a doctor run, then a minute of the daemon
    Demo {
        /// Seconds per step of the daemon's timeline (the daemon part takes 14 steps; 0 skips it)
        #[arg(long, default_value_t = 5)]
        pace: u64,
    },
    /// Check every token the way the runbook does by hand, as a checklist with fixes
    Doctor {
        /// Only this token
        #[arg(long, value_name = "NAME")]
        token: Option<String>,
        /// Machine-readable output
        #[arg(long)]
        json: bool,
        /// Also send the runbook's test messages (a text and a template) to this number
        #[arg(long, value_name = "NUMBER")]
        send_test: Option<String>,
        /// Template for --send-test
        #[arg(long, default_value = "hello_world")]
        template: String,
        /// Template language for --send-test
        #[arg(long, default_value = "en_US")]
        language: String,
    },
    /// On-call channel commands
    Notify {
        /// The channel command.
        #[command(subcommand)]
        command: NotifyCommand,
    },
    /// Configuration commands
    Config {
        /// The configuration command.
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Put a token into its file store as the current version, reading it from standard input
    Import {
        /// The token's name in the config
        #[arg(long, value_name = "NAME")]
        token: String,
        /// For an instagram or threads token: how long it still lives (`59d`, `36h`), as
        /// Meta's `expires_in` would say; refused for kinds `debug_token` inspects
        #[arg(long, value_name = "DURATION", conflicts_with = "expires_at")]
        expires_in: Option<String>,
        /// For an instagram or threads token: when it expires (RFC 3339, `2027-01-25T10:00:00Z`)
        #[arg(long, value_name = "RFC3339")]
        expires_at: Option<String>,
    },
    /// Rotate a token now, whatever the schedule (or resume the rotation in progress)
    Rotate {
        /// The token's name in the config
        #[arg(long, value_name = "NAME")]
        token: String,
        /// Print each step the rotation would take, checking a staged candidate; change nothing
        #[arg(long)]
        dry_run: bool,
    },
    /// Make the previous version current again, if Meta still calls it valid
    Rollback {
        /// The token's name in the config
        #[arg(long, value_name = "NAME")]
        token: String,
    },
    /// Stage the next token (read from standard input), after checking it with Meta
    Stage {
        /// The token's name in the config
        #[arg(long, value_name = "NAME")]
        token: String,
        /// For an instagram or threads token: how long it still lives (`59d`), as Meta's
        /// `expires_in` would say; refused for kinds `debug_token` inspects
        #[arg(long, value_name = "DURATION", conflicts_with = "expires_at")]
        expires_in: Option<String>,
        /// For an instagram or threads token: when it expires (RFC 3339)
        #[arg(long, value_name = "RFC3339")]
        expires_at: Option<String>,
    },
    /// Serve the Graph API simulator on loopback (for trying a config without Meta)
    Sandbox {
        /// Loopback address to listen on
        #[arg(long, default_value = "127.0.0.1:8917")]
        listen: SocketAddr,
        /// A scenario file (TOML) describing the app, WABAs, tokens and faults
        #[arg(long, value_name = "FILE")]
        scenario: Option<PathBuf>,
    },
}

/// The `config` commands.
#[derive(Subcommand)]
pub enum ConfigCommand {
    /// Validate the config and the secrets it references; exit 0, or 78 listing every error
    Check,
}

/// The `notify` commands.
#[derive(Subcommand)]
pub enum NotifyCommand {
    /// Send a clearly marked test alert through every channel (email and each receiver), or
    /// one, and show each receiver's answer; exit 0 when all took it, 1 when one did not
    Test {
        /// Only this channel: a receiver's name, or `email`
        #[arg(long, value_name = "NAME")]
        channel: Option<String>,
    },
}

/// Runs the command and returns how the process ends.
pub async fn dispatch(cli: Cli) -> Exit {
    let flag = cli.config;
    let ended = match cli.command {
        Command::Run => run::run(flag).await,
        Command::Check { token, json } => check::run(flag, token, json).await,
        Command::Status { json } => status::run(flag, json),
        Command::Demo { pace } => demo::run(pace).await,
        Command::Doctor {
            token,
            json,
            send_test,
            template,
            language,
        } => {
            let opts = crate::doctor::Options {
                token,
                send_test,
                template,
                language,
            };
            doctor::run(flag, opts, json).await
        }
        Command::Config {
            command: ConfigCommand::Check,
        } => config_check::run(flag),
        Command::Notify {
            command: NotifyCommand::Test { channel },
        } => notify::test(flag, channel).await,
        Command::Import {
            token,
            expires_in,
            expires_at,
        } => {
            let given = import::Given::from_flags(expires_in.as_deref(), expires_at.as_deref());
            import::run(flag, &token, given).await
        }
        Command::Rotate { token, dry_run } => rotate::run(flag, &token, dry_run).await,
        Command::Rollback { token } => rollback::run(flag, &token).await,
        Command::Stage {
            token,
            expires_in,
            expires_at,
        } => {
            let given = import::Given::from_flags(expires_in.as_deref(), expires_at.as_deref());
            stage::run(flag, &token, given).await
        }
        Command::Sandbox { listen, scenario } => sandbox::run(listen, scenario).await,
    };
    ended.unwrap_or_else(|exit| exit)
}

/// What a command's steps return: the value, or the exit code to end with once the failure
/// has been reported on standard error.
type Step<T> = Result<T, Exit>;

/// Reports an error with its causes (`error: what: why: ...`) and ends with [`Exit::Failure`].
fn failed(e: &(dyn std::error::Error + 'static)) -> Exit {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    eprintln!("error: {text}");
    Exit::Failure
}

/// Reports a failure in words and ends with [`Exit::Failure`].
fn failed_with(message: impl std::fmt::Display) -> Exit {
    eprintln!("error: {message}");
    Exit::Failure
}

/// Prints `value` as pretty JSON on standard output.
fn print_json(value: &impl serde::Serialize) -> Step<()> {
    let text = serde_json::to_string_pretty(value).map_err(|e| failed(&e))?;
    println!("{text}");
    Ok(())
}

/// Loads the config, printing every error and ending with 78 when it is invalid.
fn load_config(flag: Option<PathBuf>) -> Step<Config> {
    let path = config::resolve_path(flag);
    match config::load(&path) {
        Ok(loaded) => {
            for w in &loaded.warnings {
                tracing::warn!("{w}");
            }
            Ok(loaded.config)
        }
        Err(e) => {
            eprintln!("error: {e}");
            Err(Exit::Config)
        }
    }
}

/// The config with every group's members listed from their stores and added to the tokens.
/// `read_only` (`check`, `doctor`): the lists found are not saved, so these commands write
/// nothing to the state directory.
async fn load_expanded(flag: Option<PathBuf>, read_only: bool) -> Step<Config> {
    let mut cfg = load_config(flag)?;
    if !cfg.groups.is_empty() {
        crate::discover::expand_config(&mut cfg, read_only).await;
    }
    Ok(cfg)
}

/// The Graph client, with the app secret read from its reference (the one place the commands
/// read it); an unreadable secret ends with 78 naming the field.
fn graph_client(cfg: &Config) -> Step<GraphClient> {
    match GraphClient::from_config(&cfg.meta) {
        Ok(client) => Ok(client),
        Err(e @ crate::graph::SetupError::AppSecret(_)) => {
            eprintln!("error: {}: {e}", cfg.path.display());
            Err(Exit::Config)
        }
        Err(e @ crate::graph::SetupError::Client(_)) => Err(failed_with(e)),
    }
}

/// Refuses a `--token NAME` that the config does not have, with 78.
fn check_token_name(cfg: &Config, name: Option<&str>) -> Step<()> {
    if let Some(name) = name
        && cfg.token(name).is_none()
    {
        eprintln!("error: no token named `{name}` in {}", cfg.path.display());
        return Err(Exit::Config);
    }
    Ok(())
}

/// The token named by `--token NAME`, or 78 naming the file.
fn token_config<'a>(cfg: &'a Config, name: &str) -> Step<&'a TokenConfig> {
    check_token_name(cfg, Some(name))?;
    Ok(cfg.token(name).expect("checked above"))
}

/// Reads a token from standard input. A pasted line ends with a newline, which is dropped;
/// anything else around the token is left for the lint to report.
fn read_token_from_stdin() -> Step<Secret> {
    let mut raw = String::new();
    if let Err(e) = std::io::stdin().read_to_string(&mut raw) {
        return Err(failed_with(format!(
            "cannot read the token from standard input: {e}"
        )));
    }
    let value = Secret::new(
        raw.strip_suffix('\n')
            .unwrap_or(&raw)
            .trim_end_matches('\r'),
    );
    zeroize::Zeroize::zeroize(&mut raw);
    Ok(value)
}

/// Prints a rotation command's text and ends with its code.
fn finish(done: Result<Done, CommandError>) -> Step<Exit> {
    match done {
        Ok(d) => {
            print!("{}", d.text);
            Ok(Exit::from_code(d.code))
        }
        Err(e) => Err(failed(&e)),
    }
}

/// A future that resolves on SIGINT or SIGTERM. The handlers are installed when this is
/// called, not when the future is first polled.
fn shutdown_signal() -> std::io::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
    })
}
