//! The `tokenwarden` command: parses arguments, sets up logging, calls the library, and maps
//! outcomes to exit codes (0 ok, 1 a check failed or a runtime error, 2 usage, 78 bad config).

use std::io::Read;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use tokenwarden::config::{self, Config};
use tokenwarden::graph::version::VersionStatus;
use tokenwarden::secret::Secret;
use tokenwarden::{doctor, graph, rotation, sandbox, store};

/// Exit code for a configuration error (sysexits' EX_CONFIG); systemd's
/// `RestartPreventExitStatus=78` keeps a broken config from restart-looping.
const EXIT_CONFIG: u8 = 78;

#[derive(Parser)]
#[command(
    name = "tokenwarden",
    version,
    about = "Keeps Meta Graph API (WhatsApp Cloud API) access tokens alive"
)]
struct Cli {
    /// Config file [default: $TOKENWARDEN_CONFIG, else /etc/tokenwarden/tokenwarden.toml]
    #[arg(long, global = true, value_name = "PATH")]
    config: Option<PathBuf>,
    /// Log format on standard error
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Human)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    /// Readable lines (with syslog priorities under journald)
    Human,
    /// One JSON object per line
    Json,
}

#[derive(Subcommand)]
enum Command {
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
    /// Configuration commands
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Put a token into its file store as the current version, reading it from standard input
    Import {
        /// The token's name in the config
        #[arg(long, value_name = "NAME")]
        token: String,
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

#[derive(Subcommand)]
enum ConfigCommand {
    /// Validate the config and the secrets it references; exit 0, or 78 listing every error
    Check,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .worker_threads(2)
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(dispatch(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => match e.downcast_ref::<ExitWith>() {
            Some(ExitWith(code)) => ExitCode::from(*code),
            None => {
                eprintln!("error: {e:#}");
                ExitCode::FAILURE
            }
        },
    }
}

/// An error that has already been reported and only sets the exit code.
#[derive(Debug)]
struct ExitWith(u8);
impl std::fmt::Display for ExitWith {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "exit {}", self.0)
    }
}
impl std::error::Error for ExitWith {}

/// Human lines on a terminal; JSON with `--log-format json`. Under journald (`$JOURNAL_STREAM`)
/// human lines carry a `<N>` syslog priority prefix, so `journalctl -p warning` works.
fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("TOKENWARDEN_LOG")
        .unwrap_or_else(|_| "tokenwarden=info,warn".into());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    match format {
        LogFormat::Json => builder.json().flatten_event(true).init(),
        LogFormat::Human if std::env::var_os("JOURNAL_STREAM").is_some() => builder
            .without_time()
            .with_ansi(false)
            .event_format(JournalFormat(
                tracing_subscriber::fmt::format()
                    .without_time()
                    .with_target(false)
                    .with_ansi(false),
            ))
            .init(),
        LogFormat::Human => builder.init(),
    }
}

/// Prefixes each line with its syslog priority for journald (sd-daemon(3)).
struct JournalFormat<F>(F);

impl<S, N, F> tracing_subscriber::fmt::FormatEvent<S, N> for JournalFormat<F>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    N: for<'a> tracing_subscriber::fmt::FormatFields<'a> + 'static,
    F: tracing_subscriber::fmt::FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &tracing_subscriber::fmt::FmtContext<'_, S, N>,
        mut writer: tracing_subscriber::fmt::format::Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        let prio = match *event.metadata().level() {
            tracing::Level::ERROR => 3,
            tracing::Level::WARN => 4,
            tracing::Level::INFO => 6,
            _ => 7,
        };
        write!(writer, "<{prio}>")?;
        self.0.format_event(ctx, writer, event)
    }
}

async fn dispatch(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Run => run_daemon(cli.config).await,
        Command::Check { token, json } => {
            let cfg = load_expanded(cli.config).await?;
            check_token_name(&cfg, token.as_deref())?;
            let client = graph_client(&cfg)?;
            let lines =
                tokenwarden::check::run(&cfg, &client, token.as_deref(), jiff::Timestamp::now())
                    .await;
            if json {
                println!("{}", serde_json::to_string_pretty(&lines)?);
            } else {
                print!("{}", tokenwarden::check::render(&lines));
            }
            match tokenwarden::check::exit_code(&lines) {
                0 => Ok(()),
                code => Err(ExitWith(code).into()),
            }
        }
        Command::Status { json } => {
            let mut cfg = load_config(cli.config)?;
            // Offline: the groups' members as their last listing found them.
            tokenwarden::discover::expand_offline(&mut cfg);
            let snap = tokenwarden::state::StateStore::new(&cfg.state_dir).load()?;
            let rows = tokenwarden::check::status(&cfg, &snap);
            if json {
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else {
                print!(
                    "{}",
                    tokenwarden::check::render_status(&rows, jiff::Timestamp::now())
                );
            }
            Ok(())
        }
        Command::Demo { pace } => tokenwarden::demo::run(pace)
            .await
            .context("the demo failed"),
        Command::Sandbox { listen, scenario } => run_sandbox(listen, scenario).await,
        Command::Config {
            command: ConfigCommand::Check,
        } => config_check(cli.config),
        Command::Import { token } => import(cli.config, &token).await,
        Command::Rotate { token, dry_run } => {
            let cfg = load_expanded(cli.config).await?;
            let t = token_config(&cfg, &token)?;
            let client = graph_client(&cfg)?;
            let done = if dry_run {
                rotation::command::dry_run(&cfg, &client, t, jiff::Timestamp::now()).await
            } else {
                rotation::command::rotate(&cfg, &client, t, &jiff::Timestamp::now).await
            };
            finish(done)
        }
        Command::Rollback { token } => {
            let cfg = load_expanded(cli.config).await?;
            let t = token_config(&cfg, &token)?;
            let client = graph_client(&cfg)?;
            finish(rotation::command::rollback(&cfg, &client, t, jiff::Timestamp::now()).await)
        }
        Command::Stage { token } => {
            let cfg = load_expanded(cli.config).await?;
            let t = token_config(&cfg, &token)?;
            let client = graph_client(&cfg)?;
            let value = read_token_from_stdin()?;
            finish(rotation::command::stage(&cfg, &client, t, &value, jiff::Timestamp::now()).await)
        }
        Command::Doctor {
            token,
            json,
            send_test,
            template,
            language,
        } => {
            let cfg = load_expanded(cli.config).await?;
            check_token_name(&cfg, token.as_deref())?;
            let client = graph_client(&cfg)?;
            let opts = doctor::Options {
                token,
                send_test,
                template,
                language,
            };
            let report = doctor::run(&cfg, &client, &opts, jiff::Timestamp::now()).await;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", doctor::render_text(&report));
            }
            if report.healthy() {
                Ok(())
            } else {
                Err(ExitWith(1).into())
            }
        }
    }
}

/// Prints a command's text and turns its code into the exit status.
fn finish(
    done: Result<rotation::command::Done, rotation::command::CommandError>,
) -> anyhow::Result<()> {
    match done {
        Ok(d) => {
            print!("{}", d.text);
            match d.code {
                0 => Ok(()),
                c => Err(ExitWith(c).into()),
            }
        }
        Err(e) => Err(e.into()),
    }
}

/// The token named by `--token NAME`, or exit 78 naming the file.
fn token_config<'a>(cfg: &'a Config, name: &str) -> anyhow::Result<&'a config::TokenConfig> {
    check_token_name(cfg, Some(name))?;
    Ok(cfg.token(name).expect("checked above"))
}

/// Reads a token from standard input. A pasted line ends with a newline, which is dropped;
/// anything else around the token is left for the lint to report.
fn read_token_from_stdin() -> anyhow::Result<Secret> {
    let mut raw = String::new();
    std::io::stdin()
        .read_to_string(&mut raw)
        .context("cannot read the token from standard input")?;
    let value = Secret::new(
        raw.strip_suffix('\n')
            .unwrap_or(&raw)
            .trim_end_matches('\r'),
    );
    zeroize::Zeroize::zeroize(&mut raw);
    Ok(value)
}

/// Refuses a `--token NAME` that the config does not have.
fn check_token_name(cfg: &Config, name: Option<&str>) -> anyhow::Result<()> {
    if let Some(name) = name
        && cfg.token(name).is_none()
    {
        eprintln!("error: no token named `{name}` in {}", cfg.path.display());
        return Err(ExitWith(EXIT_CONFIG).into());
    }
    Ok(())
}

async fn run_daemon(flag: Option<PathBuf>) -> anyhow::Result<()> {
    use tokenwarden::daemon::{self, Control, DaemonError, SystemClock};
    use tokio::signal::unix::{SignalKind, signal};
    let path = config::resolve_path(flag);
    let (ctl_tx, ctl_rx) = tokio::sync::mpsc::channel(8);
    let mut hup = signal(SignalKind::hangup()).context("cannot handle SIGHUP")?;
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            tracing::info!("SIGHUP: reloading the configuration");
            if ctl_tx.send(Control::Reload(None)).await.is_err() {
                break;
            }
        }
    });
    // Installed now, before the first check: a SIGTERM that arrives while the first check (or
    // a rotation) runs must wait for it, not kill the process with the default action.
    let shutdown = shutdown_signal().context("cannot handle SIGTERM")?;
    match daemon::run(path, std::sync::Arc::new(SystemClock), ctl_rx, shutdown).await {
        Ok(()) => Ok(()),
        Err(DaemonError::Config(e)) => {
            eprintln!("error: {e}");
            Err(ExitWith(EXIT_CONFIG).into())
        }
        Err(e) => Err(e.into()),
    }
}

/// The config with every group's members listed from their stores and added to the tokens.
async fn load_expanded(flag: Option<PathBuf>) -> anyhow::Result<Config> {
    let mut cfg = load_config(flag)?;
    if !cfg.groups.is_empty() {
        tokenwarden::discover::expand_config(&mut cfg).await;
    }
    Ok(cfg)
}

/// Where a group's members are found, in words for `config check`.
fn describe_discover(d: &config::DiscoverConfig) -> String {
    match d {
        config::DiscoverConfig::File { path, key_prefix } => format!(
            "the file store {} (entries starting with `{key_prefix}`)",
            path.as_deref()
                .map_or("in the state directory".into(), |p| p.display().to_string())
        ),
        config::DiscoverConfig::Aws {
            name_prefix,
            tag_key,
            tag_value,
            ..
        } => {
            let mut parts = Vec::new();
            if let Some(p) = name_prefix {
                parts.push(format!("named `{p}*`"));
            }
            if let Some(k) = tag_key {
                parts.push(match tag_value {
                    Some(v) => format!("tagged `{k}={v}`"),
                    None => format!("tagged `{k}`"),
                });
            }
            format!("AWS Secrets Manager (secrets {})", parts.join(" and "))
        }
    }
}

/// Loads the config, printing every error and exiting 78 when it is invalid.
fn load_config(flag: Option<PathBuf>) -> anyhow::Result<Config> {
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
            Err(ExitWith(EXIT_CONFIG).into())
        }
    }
}

fn graph_client(cfg: &Config) -> anyhow::Result<graph::GraphClient> {
    let secret = match cfg.meta.app_secret.resolve() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {}: `meta.app_secret`: {e}", cfg.path.display());
            return Err(ExitWith(EXIT_CONFIG).into());
        }
    };
    graph::GraphClient::new(&cfg.meta, secret).map_err(|e| anyhow::anyhow!("{e}"))
}

fn config_check(flag: Option<PathBuf>) -> anyhow::Result<()> {
    let cfg = load_config(flag)?;
    if let Err(e) = cfg.meta.app_secret.resolve() {
        eprintln!("error: {}: `meta.app_secret`: {e}", cfg.path.display());
        return Err(ExitWith(EXIT_CONFIG).into());
    }
    let today = jiff::Timestamp::now()
        .to_zoned_datetime(jiff::tz::TimeZone::UTC)
        .date();
    match cfg.meta.api_version.status(today) {
        s @ VersionStatus::Supported(_) => {
            tracing::debug!("Graph API {}: {s}", cfg.meta.api_version)
        }
        s => tracing::warn!("`meta.api_version` {}: {s}", cfg.meta.api_version),
    }
    // What the last checks learned can make a source impossible: refreshing a token that
    // never expires would trade it for a 60-day one.
    if let Ok(snap) = tokenwarden::state::StateStore::new(&cfg.state_dir).load() {
        let conflicts: Vec<String> = cfg
            .tokens
            .iter()
            .filter_map(|t| {
                let facts = snap.tokens.get(&t.name).and_then(|s| s.facts.as_ref());
                rotation::source_conflict(t, facts)
            })
            .collect();
        if !conflicts.is_empty() {
            for c in conflicts {
                eprintln!("error: {}: {c}", cfg.path.display());
            }
            return Err(ExitWith(EXIT_CONFIG).into());
        }
    }
    if cfg.email.is_none() {
        tracing::warn!("no [email] section: `tokenwarden run` will only log its alerts");
    }
    // The shipped unit's stop timeout must cover the slowest step that is finished on a stop.
    for w in tokenwarden::liveness::unit_warnings(&cfg, &tokenwarden::liveness::SHIPPED_UNIT) {
        tracing::warn!("{w}");
    }
    let names: Vec<&str> = cfg.tokens.iter().map(|t| t.name.as_str()).collect();
    println!(
        "{}: OK, {} token(s): {}",
        cfg.path.display(),
        names.len(),
        names.join(", ")
    );
    for g in &cfg.groups {
        // Listing the members needs the store: `tokenwarden check` does it.
        println!(
            "group {}: members found on each run in {}",
            g.name,
            describe_discover(&g.discover)
        );
    }
    Ok(())
}

async fn import(flag: Option<PathBuf>, name: &str) -> anyhow::Result<()> {
    let cfg = load_config(flag)?;
    let Some(t) = cfg.token(name) else {
        eprintln!("error: no token named `{name}` in {}", cfg.path.display());
        return Err(ExitWith(EXIT_CONFIG).into());
    };
    let store::Store::File(file) = store::Store::open(&t.store, &t.name, &cfg.state_dir).await?
    else {
        bail!(
            "token `{name}` lives in AWS Secrets Manager: put it there with `aws secretsmanager put-secret-value`"
        );
    };
    let value = read_token_from_stdin()?;
    let findings = tokenwarden::lint::check_value(value.expose());
    if !findings.is_empty() {
        for f in findings {
            eprintln!("error: {}", f.explain());
        }
        bail!("refusing to store this value for `{name}`");
    }
    use store::SecretStore;
    file.import_current(&value, jiff::Timestamp::now())?;
    println!(
        "stored token `{name}` (fingerprint {}) in {}; check it with `tokenwarden doctor --token {name}`",
        value.fingerprint(),
        file.describe()
    );
    Ok(())
}

async fn run_sandbox(listen: SocketAddr, scenario: Option<PathBuf>) -> anyhow::Result<()> {
    if !listen.ip().is_loopback() {
        bail!(
            "the sandbox listens on loopback only (it accepts any token); use 127.0.0.1 or [::1], not {}",
            listen.ip()
        );
    }
    let scenario = match scenario {
        Some(p) => sandbox::Scenario::load(&p)?,
        None => sandbox::Scenario::demo(),
    };
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let addr = listener.local_addr()?;
    println!(
        "Graph sandbox listening on http://{addr} (set `base_url = \"http://{addr}\"` in [meta]); Ctrl-C stops it"
    );
    sandbox::serve(listener, scenario, shutdown_signal()?).await?;
    Ok(())
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
