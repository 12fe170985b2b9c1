//! `tokenwarden demo`: tokenwarden at work in seconds, with no config and no network.
//!
//! It starts the Graph sandbox on a free loopback port, issues two tokens there (a healthy
//! 60-day system-user token for "prod" and Meta's 24-hour test token for "staging", the most
//! common production mistake), writes a throw-away config, app secret and file store into a
//! temporary directory, loads them through the same code paths a real deployment uses, and
//! prints the doctor checklist.
//!
//! Then it rotates both tokens with the file store, as `tokenwarden rotate` would: prod by
//! minting a new system-user token (the old one is revoked after the grace period), staging by
//! staging a proper system-user token in place of the 24-hour one (revoked at once).
//!
//! Then it shows one token of each other kind (Instagram, Threads, a Facebook Page, a Marketing
//! API token, a Tech Provider's business token) checked,
//! renewed and checked again.
//!
//! Then it runs the daemon for about a minute on a token that expires in under a minute, with
//! thresholds in seconds and emails written to a folder, so the warnings, the critical alert,
//! the expiry alert and (after the demo puts a new token in place) the recovery arrive while
//! you watch. `pace` sets the length of one step of that timeline (5 s by default).

use std::net::SocketAddr;
use std::path::Path;

use crate::config;
use crate::doctor;
use crate::graph::GraphClient;
use crate::sandbox::{self, Sandbox, TokenSpec};
use crate::secret::Secret;
use crate::store::file::FileStore;

/// Why the demo could not run.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// The sandbox did not start.
    #[error("cannot start the Graph sandbox: {0}")]
    Sandbox(String),
    /// Writing the throw-away files failed.
    #[error("cannot write the demo files: {0}")]
    Io(#[from] std::io::Error),
    /// The generated config was refused (a bug: please report it).
    #[error("the demo config was refused: {0}")]
    Config(String),
}

/// Runs the demo, printing to standard output.
///
/// # Errors
/// [`DemoError`] when the sandbox or the temporary files cannot be set up.
pub async fn run(pace_secs: u64) -> Result<(), DemoError> {
    let scenario = sandbox::Scenario::demo();
    let listen: SocketAddr = "127.0.0.1:0".parse().expect("constant address");
    let sb = Sandbox::start(listen, scenario)
        .await
        .map_err(|e| DemoError::Sandbox(e.to_string()))?;
    let dir = demo_dir()?;
    let mut result = run_in(&sb, &dir).await;
    if result.is_ok() && pace_secs > 0 {
        result = run_daemon(&sb, &dir, pace_secs).await;
    }
    sb.shutdown().await;
    if result.is_ok() {
        println!(
            "\nThe demo's files are kept in {} (the tokens there are sandbox tokens); delete it when done.",
            dir.display()
        );
    }
    result
}

/// A fresh private directory for the demo's files. It is kept after the demo so the config,
/// the state and the emails can be read; the demo prints where it is.
fn demo_dir() -> std::io::Result<std::path::PathBuf> {
    use std::os::unix::fs::DirBuilderExt;
    let base = std::env::temp_dir().join(format!("tokenwarden-demo-{}", std::process::id()));
    std::fs::DirBuilder::new()
        .mode(0o700)
        .recursive(true)
        .create(&base)?;
    Ok(base)
}

/// The part that needs no waiting: the doctor checklist, then both rotations and where
/// prod's new token went.
async fn run_in(sb: &Sandbox, dir: &Path) -> Result<(), DemoError> {
    let files = write_files(sb, dir).await?;
    let config_path = &files.config_path;

    println!("tokenwarden demo");
    println!("================");
    println!(
        "A Graph API sandbox is running at {} (Meta's shapes, no network).",
        sb.base_url()
    );
    println!(
        "Two WhatsApp tokens were issued there and stored in {}:",
        files.store_path.display()
    );
    println!(
        "  billbytekot-prod     a 60-day system-user token with both WhatsApp permissions, 41 days old"
    );
    println!(
        "  billbytekot-staging  Meta's 24-hour test token from the API Setup page (a common mistake)"
    );
    println!("Config: {}\n", config_path.display());
    println!("$ tokenwarden --config {} doctor\n", config_path.display());

    let loaded = config::load(config_path).map_err(|e| DemoError::Config(e.to_string()))?;
    let cfg = loaded.config;
    let client =
        GraphClient::from_config(&cfg.meta).map_err(|e| DemoError::Config(e.to_string()))?;
    let report = doctor::run(&cfg, &client, &doctor::Options::default(), files.now).await;
    print!("{}", doctor::render_text(&report));
    rotate_both(sb, &cfg, &client, config_path).await?;
    println!("\nWhere prod's new token went:");
    for app in ["backend", "worker"] {
        let env = files.apps.join(app).join(".env");
        let held = crate::target::dotenv::DotenvFile::new(env.clone())
            .get_key(crate::config::DEFAULT_DOTENV_KEY)
            .ok()
            .flatten()
            .map(|s| s.fingerprint().to_string())
            .unwrap_or_else(|| "nothing".into());
        println!(
            "  {}: WHATSAPP_ACCESS_TOKEN now holds token {held}",
            env.display()
        );
    }
    for line in files.receiver.seen() {
        println!("  POS webhook receiver: {line}");
    }
    files.receiver.stop();
    other_kinds(sb, dir).await?;
    println!();
    println!(
        "Next: write your own config (README, \"Configuration\"), then run `tokenwarden doctor`."
    );
    Ok(())
}

/// One token of each other kind (README, "Token kinds"): an Instagram Login token and a
/// Threads token (their hosts' `GET /me`, renewed with `refresh_access_token`, the expiry
/// recorded from `expires_in`) and a Facebook Page token (its Page read, taken again from a
/// user token), checked, renewed and checked again, with a config and state of their own.
async fn other_kinds(sb: &Sandbox, dir: &Path) -> Result<(), DemoError> {
    use crate::rotation::command;
    let kinds_dir = dir.join("kinds");
    std::fs::create_dir_all(&kinds_dir)?;
    let user = sb.issue_token(TokenSpec::user());
    let user_path = kinds_dir.join("page-user-token");
    crate::fsutil::write_atomic(&user_path, user.as_bytes(), 0o600)?;
    let secret_path = kinds_dir.join("app-secret");
    crate::fsutil::write_atomic(&secret_path, sandbox::DEMO_APP_SECRET.as_bytes(), 0o600)?;
    let state = kinds_dir.join("state");
    let store_path = state.join("tokens.json");
    let now = jiff::Timestamp::now();
    // A Tech Provider's customer: the business token from Embedded Signup, and the partner's
    // own system-user token that fetches it again.
    let partner_path = kinds_dir.join("partner-token");
    crate::fsutil::write_atomic(
        &partner_path,
        sb.issue_token(TokenSpec::system_user_never()).as_bytes(),
        0o600,
    )?;
    FileStore::new(store_path.clone(), "customer-shop119".to_string())
        .import_current(&Secret::new(sb.issue_business_token()), now)
        .map_err(|e| DemoError::Config(e.to_string()))?;
    for (name, spec) in [
        (
            "shop-instagram",
            TokenSpec::instagram().issued_ago(30 * 86_400),
        ),
        ("shop-threads", TokenSpec::threads().issued_ago(30 * 86_400)),
        ("shop-page", TokenSpec::page().issued_ago(50 * 86_400)),
        ("shop-ads", TokenSpec::marketing().issued_ago(45 * 86_400)),
    ] {
        FileStore::new(store_path.clone(), name.to_string())
            .import_current(&Secret::new(sb.issue_token(spec)), now)
            .map_err(|e| DemoError::Config(e.to_string()))?;
    }
    let text = format!(
        "state_dir = \"{state}\"\n[meta]\napp_id = \"{app}\"\napp_secret = {{ file = \"{secret}\" }}\nbase_url = \"{base}\"\n\n\
         [[token]]\nname = \"shop-instagram\"\nkind = \"instagram\"\nsource = \"refresh\"\n\n\
         [[token]]\nname = \"shop-threads\"\nkind = \"threads\"\nsource = \"refresh\"\n\n\
         [[token]]\nname = \"shop-page\"\nkind = \"page\"\nsource = \"refresh\"\n\
         page = {{ id = \"{page}\", messenger = true, user_token = {{ file = \"{user}\" }} }}\n\n\
         [[token]]\nname = \"shop-ads\"\nkind = \"marketing\"\nad_accounts = [\"act_{ads}\"]\nsource = \"refresh\"\nrevoke_after = \"0s\"\n\n\
         [[token]]\nname = \"customer-shop119\"\nkind = \"whatsapp_business\"\nwaba_id = \"{waba}\"\nsource = \"refresh\"\n\
         business = {{ client_business_id = \"{biz}\", partner_token = {{ file = \"{partner}\" }} }}\n",
        state = state.display(),
        app = sandbox::DEMO_APP_ID,
        secret = secret_path.display(),
        base = sb.base_url(),
        page = sandbox::DEMO_PAGE_ID,
        user = user_path.display(),
        ads = sandbox::DEMO_AD_ACCOUNT_ID,
        waba = sandbox::DEMO_WABA_ID,
        biz = sandbox::DEMO_CLIENT_BUSINESS_ID,
        partner = partner_path.display(),
    );
    let config_path = kinds_dir.join("tokenwarden.toml");
    crate::fsutil::write_atomic(&config_path, text.as_bytes(), 0o600)?;
    let cfg = config::load(&config_path)
        .map_err(|e| DemoError::Config(e.to_string()))?
        .config;
    let client =
        GraphClient::from_config(&cfg.meta).map_err(|e| DemoError::Config(e.to_string()))?;
    println!("\nOther kinds of token");
    println!("====================");
    println!(
        "An Instagram Login token and a Threads token (30 days old; their hosts do not say when they expire), a Facebook Page token for Messenger (50 days old), a Marketing API token for an ad account (45 days old) and a Tech Provider's business token of one customer. Config: {}",
        config_path.display()
    );
    let check = |title: &'static str| {
        let (cfg, client, config_path) = (&cfg, &client, &config_path);
        async move {
            println!(
                "\n$ tokenwarden --config {} check   # {title}\n",
                config_path.display()
            );
            let lines = crate::check::run(cfg, client, None, jiff::Timestamp::now()).await;
            print!("{}", crate::check::render(&lines));
        }
    };
    check("before").await;
    for t in &cfg.tokens {
        println!(
            "\n$ tokenwarden --config {} rotate --token {}\n",
            config_path.display(),
            t.name
        );
        match command::rotate(&cfg, &client, t, &jiff::Timestamp::now).await {
            Ok(d) => print!("{}", d.text),
            Err(e) => println!("error: {e}"),
        }
    }
    check("after: Instagram and Threads expiries recorded from Meta's expires_in").await;
    Ok(())
}

/// What [`write_files`] set up for the first part of the demo.
struct DemoFiles {
    /// The throw-away config.
    config_path: std::path::PathBuf,
    /// The file store holding both tokens.
    store_path: std::path::PathBuf,
    /// The folder of the apps' env files (prod's dotenv targets).
    apps: std::path::PathBuf,
    /// The point-of-sale webhook receiver (prod's webhook target), running.
    receiver: Receiver,
    /// When the tokens were stored (the doctor checks at the same instant).
    now: jiff::Timestamp,
}

/// Issues the demo's tokens in the sandbox and writes what a deployment would have: the admin
/// token, the apps' env files, the secrets, the file store and the config.
async fn write_files(sb: &Sandbox, dir: &Path) -> Result<DemoFiles, DemoError> {
    // Issued 41 days ago: a third of its 60 days is left, so its rotation is due.
    let prod = sb.issue_token(
        TokenSpec::system_user_60d()
            .wabas(&[sandbox::DEMO_WABA_ID])
            .issued_ago(41 * 86_400),
    );
    let staging = sb.issue_token(TokenSpec::temporary_24h().wabas(&[sandbox::DEMO_WABA_ID]));
    // An admin system-user token allowed to mint for the demo system user.
    let admin = sb.issue_token(TokenSpec::system_user_never());
    let admin_path = dir.join("admin-token");
    crate::fsutil::write_atomic(&admin_path, admin.as_bytes(), 0o600)?;

    // The environments that use prod: two apps' env files and a point-of-sale webhook.
    let apps = dir.join("apps");
    for app in ["backend", "worker"] {
        let env = apps.join(app).join(".env");
        std::fs::create_dir_all(env.parent().expect("has a parent"))?;
        let text = format!(
            "# billbytekot {app}\nWHATSAPP_ACCESS_TOKEN={prod}\nWHATSAPP_PHONE_NUMBER_ID={}\n",
            sandbox::DEMO_PHONE_NUMBER_ID
        );
        crate::fsutil::write_atomic(&env, text.as_bytes(), 0o600)?;
    }
    let hook_secret = "whsec_demo_pos_signing_key";
    let hook_secret_path = dir.join("pos-webhook-secret");
    crate::fsutil::write_atomic(&hook_secret_path, hook_secret.as_bytes(), 0o600)?;
    let receiver = Receiver::start(Secret::new(hook_secret)).await?;

    let secret_path = dir.join("app-secret");
    crate::fsutil::write_atomic(&secret_path, sandbox::DEMO_APP_SECRET.as_bytes(), 0o600)?;
    // The state directory is a directory of its own: the apps' env files must not be inside it.
    let store_path = dir.join("state").join("tokens.json");
    let now = jiff::Timestamp::now();
    for (name, value) in [("billbytekot-prod", prod), ("billbytekot-staging", staging)] {
        FileStore::new(store_path.clone(), name.to_string())
            .import_current(&Secret::new(value), now)
            .map_err(|e| DemoError::Config(e.to_string()))?;
    }
    let config_path = dir.join("tokenwarden.toml");
    let text = rotation_config(
        sb,
        dir,
        &admin_path,
        &apps,
        receiver.port,
        &hook_secret_path,
        &secret_path,
    );
    crate::fsutil::write_atomic(&config_path, text.as_bytes(), 0o600)?;
    Ok(DemoFiles {
        config_path,
        store_path,
        apps,
        receiver,
        now,
    })
}

/// The first part's config: prod rotated by minting and pushed to three targets, staging
/// rotated from a staged token.
fn rotation_config(
    sb: &Sandbox,
    dir: &Path,
    admin_path: &Path,
    apps: &Path,
    hook_port: u16,
    hook_secret_path: &Path,
    secret_path: &Path,
) -> String {
    format!(
        r#"# A throw-away config written by `tokenwarden demo`.
state_dir = "{dir}/state"

[meta]
app_id = "{app}"
app_secret = {{ file = "{secret}" }}
base_url = "{base}"

[[token]]
name = "billbytekot-prod"
phone_number_id = "{phone}"
waba_id = "{waba}"
# Rotated by minting a new 60-day system-user token with an admin token.
source = "mint"
mint = {{ system_user_id = "{su}", admin_token = {{ file = "{admin}" }} }}

# Where prod's token is used: the backend first, then the worker and the POS webhook.
[[token.target]]
name = "backend-env"
kind = "dotenv"
wave = 1
path = "{apps}/backend/.env"
reload = ["true"]      # in real life: ["systemctl", "restart", "billbytekot-backend"]

[[token.target]]
name = "worker-env"
kind = "dotenv"
wave = 2
path = "{apps}/worker/.env"
reload = ["true"]

[[token.target]]
name = "pos-webhook"
kind = "webhook"
wave = 2
url = "http://127.0.0.1:{hook_port}/tokenwarden"
secret = {{ file = "{hook_secret}" }}

[[token]]
name = "billbytekot-staging"
phone_number_id = "{phone}"
waba_id = "{waba}"
# Rotated when a person stages a token; the old one is revoked at once.
revoke_after = "0s"
"#,
        su = sandbox::DEMO_SYSTEM_USER_ID,
        admin = admin_path.display(),
        apps = apps.display(),
        hook_port = hook_port,
        hook_secret = hook_secret_path.display(),
        dir = dir.display(),
        app = sandbox::DEMO_APP_ID,
        secret = secret_path.display(),
        base = sb.base_url(),
        phone = sandbox::DEMO_PHONE_NUMBER_ID,
        waba = sandbox::DEMO_WABA_ID,
    )
}

/// A loopback webhook receiver standing in for the point-of-sale system: it checks each
/// delivery's signature the way the README tells receivers to, and remembers what it got.
struct Receiver {
    port: u16,
    seen: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Receiver {
    async fn start(secret: Secret) -> std::io::Result<Receiver> {
        use axum::http::{HeaderMap, StatusCode};
        let seen: std::sync::Arc<std::sync::Mutex<Vec<String>>> = Default::default();
        let log = seen.clone();
        let app = axum::Router::new().route(
            "/tokenwarden",
            axum::routing::post(move |headers: HeaderMap, body: axum::body::Bytes| {
                let (log, secret) = (log.clone(), secret.clone());
                async move {
                    let header = headers
                        .get(crate::target::webhook::DEFAULT_HEADER)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("");
                    let now = jiff::Timestamp::now().as_second();
                    let ok =
                        crate::target::webhook::verify(header, &body, &secret, now, 300).is_ok();
                    let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
                    log.lock().expect("not poisoned").push(format!(
                        "{} for {}, token {}, signature {}",
                        v["event"].as_str().unwrap_or("?"),
                        v["token_name"].as_str().unwrap_or("?"),
                        v["fingerprint"].as_str().unwrap_or("?"),
                        if ok { "valid" } else { "INVALID" }
                    ));
                    if ok {
                        StatusCode::OK
                    } else {
                        StatusCode::UNAUTHORIZED
                    }
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Receiver { port, seen, task })
    }

    fn seen(&self) -> Vec<String> {
        self.seen.lock().expect("not poisoned").clone()
    }

    fn stop(self) {
        self.task.abort();
    }
}

/// Rotates prod (mint) and staging (a staged system-user token), printing each command.
async fn rotate_both(
    sb: &Sandbox,
    cfg: &config::Config,
    client: &GraphClient,
    config_path: &Path,
) -> Result<(), DemoError> {
    use crate::rotation::command;
    let show = |args: &str, done: Result<command::Done, command::CommandError>| {
        println!(
            "\n$ tokenwarden --config {} {args}\n",
            config_path.display()
        );
        match done {
            Ok(d) => print!("{}", d.text),
            Err(e) => println!("error: {e}"),
        }
    };
    println!("\nRotation");
    println!("========");
    let prod = cfg.token("billbytekot-prod").expect("in the demo config");
    let staging = cfg
        .token("billbytekot-staging")
        .expect("in the demo config");
    let now = jiff::Timestamp::now;
    show(
        "rotate --token billbytekot-prod --dry-run",
        command::dry_run(cfg, client, prod, now()).await,
    );
    show(
        "rotate --token billbytekot-prod",
        command::rotate(cfg, client, prod, &now).await,
    );
    // A person replaces Meta's 24-hour test token with a proper system-user token.
    let fresh =
        Secret::new(sb.issue_token(TokenSpec::system_user_60d().wabas(&[sandbox::DEMO_WABA_ID])));
    show(
        "stage --token billbytekot-staging   # the token pasted on standard input",
        command::stage(cfg, client, staging, &fresh, now()).await,
    );
    show(
        "rotate --token billbytekot-staging",
        command::rotate(cfg, client, staging, &now).await,
    );
    let stats = sb.stats();
    println!(
        "\nMeta (the sandbox) saw {} token minted and {} revoked; every step is in {}.",
        stats.minted,
        stats.revoked,
        cfg.state_dir.join(crate::audit::AUDIT_FILE).display()
    );
    Ok(())
}

/// The daemon part: one token through warning, critical, expired and recovery.
async fn run_daemon(sb: &Sandbox, dir: &Path, u: u64) -> Result<(), DemoError> {
    let u_i = u as i64;
    let token = sb.issue_token(
        TokenSpec::system_user_60d()
            .wabas(&[sandbox::DEMO_WABA_ID])
            .expiring_in(11 * u_i),
    );
    let store = FileStore::new(dir.join("tokens.json"), "shop-a".into());
    store
        .import_current(&Secret::new(token), jiff::Timestamp::now())
        .map_err(|e| DemoError::Config(e.to_string()))?;
    let mail = dir.join("mail");
    let config_path = dir.join("daemon.toml");
    let text = daemon_config(sb, dir, u, &mail);
    crate::fsutil::write_atomic(&config_path, text.as_bytes(), 0o600)?;
    println!();
    println!("The daemon at work");
    println!("==================");
    println!(
        "Token \"shop-a\" expires in {} seconds. Thresholds: {}s, {}s and {}s before expiry;",
        11 * u,
        8 * u,
        5 * u,
        2 * u
    );
    println!(
        "a check every {u}s; emails go to {} as .eml files. Watch them arrive:\n",
        mail.display()
    );
    watch_daemon(sb, &store, &config_path, &mail, u).await?;
    println!(
        "\n$ tokenwarden --config {} status\n",
        config_path.display()
    );
    let cfg = config::load(&config_path)
        .map_err(|e| DemoError::Config(e.to_string()))?
        .config;
    let snap = crate::state::StateStore::new(dir)
        .load()
        .map_err(|e| DemoError::Config(e.to_string()))?;
    print!(
        "{}",
        crate::check::render_status(&crate::check::status(&cfg, &snap), jiff::Timestamp::now())
    );
    println!("\nOpen any .eml file above in a mail client to read the whole alert.");
    Ok(())
}

/// The daemon part's config: a check every `u` seconds, thresholds in steps of `u`, emails
/// written to `mail` as files.
fn daemon_config(sb: &Sandbox, dir: &Path, u: u64, mail: &Path) -> String {
    let cron = if u == 1 {
        "* * * * * *".to_string()
    } else {
        format!("*/{u} * * * * *")
    };
    format!(
        r#"# A throw-away daemon config written by `tokenwarden demo`.
state_dir = "{dir}"

[meta]
app_id = "{app}"
app_secret = {{ file = "{secret}" }}
base_url = "{base}"

[schedule]
cron = "{cron}"

[alerts]
thresholds = ["{t1}s", "{t2}s", "{t3}s"]
repeat_interval = "{rep}s"
max_age = "never"

[email]
kind = "folder"
path = "{mail}"
from = "tokenwarden <tokenwarden@localhost>"
to = ["oncall@localhost"]

[[token]]
name = "shop-a"
phone_number_id = "{phone}"
waba_id = "{waba}"
"#,
        dir = dir.display(),
        app = sandbox::DEMO_APP_ID,
        secret = dir.join("app-secret").display(),
        base = sb.base_url(),
        t1 = 8 * u,
        t2 = 5 * u,
        t3 = 2 * u,
        rep = 20 * u,
        mail = mail.display(),
        phone = sandbox::DEMO_PHONE_NUMBER_ID,
        waba = sandbox::DEMO_WABA_ID,
    )
}

/// Runs the daemon for 14 steps of `u` seconds, printing each email as it arrives, and
/// stores a new token (as a person would) once the old one has expired.
async fn watch_daemon(
    sb: &Sandbox,
    store: &FileStore,
    config_path: &Path,
    mail: &Path,
    u: u64,
) -> Result<(), DemoError> {
    let started = std::time::Instant::now();
    let (_ctl_tx, ctl_rx) = tokio::sync::mpsc::channel(1);
    let daemon = tokio::spawn(crate::daemon::run(
        config_path.to_path_buf(),
        std::sync::Arc::new(crate::daemon::SystemClock),
        ctl_rx,
        tokio::time::sleep(std::time::Duration::from_secs(14 * u)),
    ));
    let mut shown = std::collections::BTreeSet::new();
    let mut renewed = false;
    let show = |shown: &mut std::collections::BTreeSet<std::path::PathBuf>| {
        for subject in new_mail(mail, shown) {
            println!("  [+{:>3}s] email: {subject}", started.elapsed().as_secs());
        }
    };
    while !daemon.is_finished() {
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        show(&mut shown);
        if !renewed && started.elapsed() >= std::time::Duration::from_millis(12_500 * u) {
            renewed = true;
            let fresh =
                sb.issue_token(TokenSpec::system_user_60d().wabas(&[sandbox::DEMO_WABA_ID]));
            store
                .import_current(&Secret::new(fresh), jiff::Timestamp::now())
                .map_err(|e| DemoError::Config(e.to_string()))?;
            println!(
                "  [+{:>3}s] a person stores a new 60-day token (`tokenwarden import --token shop-a`)",
                started.elapsed().as_secs()
            );
        }
    }
    match daemon.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(DemoError::Config(e.to_string())),
        Err(e) => return Err(DemoError::Config(e.to_string())),
    }
    show(&mut shown);
    Ok(())
}

/// Subjects of the .eml files not shown yet, oldest first.
fn new_mail(dir: &Path, shown: &mut std::collections::BTreeSet<std::path::PathBuf>) -> Vec<String> {
    let mut fresh = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.extension().is_some_and(|x| x == "eml") && !shown.contains(&p) {
            let modified = e
                .metadata()
                .and_then(|m| m.modified())
                .unwrap_or(std::time::UNIX_EPOCH);
            let text = std::fs::read_to_string(&p).unwrap_or_default();
            let mut lines = text.lines().skip_while(|l| !l.starts_with("Subject: "));
            let mut subject = lines
                .next()
                .unwrap_or("")
                .trim_start_matches("Subject: ")
                .to_string();
            // Long headers are folded onto indented lines.
            for cont in lines.take_while(|l| l.starts_with(' ') || l.starts_with('\t')) {
                subject.push(' ');
                subject.push_str(cont.trim());
            }
            shown.insert(p);
            fresh.push((modified, subject));
        }
    }
    fresh.sort();
    fresh.into_iter().map(|(_, s)| s).collect()
}
