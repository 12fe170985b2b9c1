//! `tokenwarden demo`: tokenwarden at work in seconds, with no config and no network.
//!
//! It starts the Graph sandbox on a free loopback port, issues two tokens there (a healthy
//! 60-day system-user token for "prod" and Meta's 24-hour test token for "staging", the most
//! common production mistake), writes a throw-away config, app secret and file store into a
//! temporary directory, loads them through the same code paths a real deployment uses, and
//! prints the doctor checklist.

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
pub async fn run() -> Result<(), DemoError> {
    let scenario = sandbox::Scenario::demo();
    let listen: SocketAddr = "127.0.0.1:0".parse().expect("constant address");
    let sb = Sandbox::start(listen, scenario)
        .await
        .map_err(|e| DemoError::Sandbox(e.to_string()))?;
    let dir = tempfile_dir()?;
    let result = run_in(&sb, dir.path()).await;
    sb.shutdown().await;
    result
}

/// A temporary directory removed on drop.
struct TempDir(std::path::PathBuf);
impl TempDir {
    fn path(&self) -> &Path {
        &self.0
    }
}
impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn tempfile_dir() -> std::io::Result<TempDir> {
    use std::os::unix::fs::DirBuilderExt;
    let base = std::env::temp_dir().join(format!("tokenwarden-demo-{}", std::process::id()));
    std::fs::DirBuilder::new()
        .mode(0o700)
        .recursive(true)
        .create(&base)?;
    Ok(TempDir(base))
}

async fn run_in(sb: &Sandbox, dir: &Path) -> Result<(), DemoError> {
    let prod = sb.issue_token(TokenSpec::system_user_60d().wabas(&[sandbox::DEMO_WABA_ID]));
    let staging = sb.issue_token(TokenSpec::temporary_24h().wabas(&[sandbox::DEMO_WABA_ID]));

    let secret_path = dir.join("app-secret");
    crate::fsutil::write_atomic(&secret_path, sandbox::DEMO_APP_SECRET.as_bytes(), 0o600)?;
    let store_path = dir.join("tokens.json");
    let now = jiff::Timestamp::now();
    for (name, value) in [("billbytekot-prod", prod), ("billbytekot-staging", staging)] {
        FileStore::new(store_path.clone(), name.to_string())
            .import_current(&Secret::new(value), now)
            .map_err(|e| DemoError::Config(e.to_string()))?;
    }
    let config_path = dir.join("tokenwarden.toml");
    let text = format!(
        r#"# A throw-away config written by `tokenwarden demo`.
state_dir = "{dir}"

[meta]
app_id = "{app}"
app_secret = {{ file = "{secret}" }}
base_url = "{base}"

[[token]]
name = "billbytekot-prod"
phone_number_id = "{phone}"
waba_id = "{waba}"

[[token]]
name = "billbytekot-staging"
phone_number_id = "{phone}"
waba_id = "{waba}"
"#,
        dir = dir.display(),
        app = sandbox::DEMO_APP_ID,
        secret = secret_path.display(),
        base = sb.base_url(),
        phone = sandbox::DEMO_PHONE_NUMBER_ID,
        waba = sandbox::DEMO_WABA_ID,
    );
    crate::fsutil::write_atomic(&config_path, text.as_bytes(), 0o600)?;

    println!("tokenwarden demo");
    println!("================");
    println!(
        "A Graph API sandbox is running at {} (Meta's shapes, no network).",
        sb.base_url()
    );
    println!(
        "Two WhatsApp tokens were issued there and stored in {}:",
        store_path.display()
    );
    println!("  billbytekot-prod     a 60-day system-user token with both WhatsApp permissions");
    println!(
        "  billbytekot-staging  Meta's 24-hour test token from the API Setup page (a common mistake)"
    );
    println!("Config: {}\n", config_path.display());
    println!("$ tokenwarden --config {} doctor\n", config_path.display());

    let loaded = config::load(&config_path).map_err(|e| DemoError::Config(e.to_string()))?;
    let cfg = loaded.config;
    let secret = cfg
        .meta
        .app_secret
        .resolve()
        .map_err(|e| DemoError::Config(e.to_string()))?;
    let client =
        GraphClient::new(&cfg.meta, secret).map_err(|e| DemoError::Config(e.to_string()))?;
    let report = doctor::run(&cfg, &client, &doctor::Options::default(), now).await;
    print!("{}", doctor::render_text(&report));
    println!();
    println!(
        "Next: write your own config (README, \"Configuration\"), then run `tokenwarden doctor`."
    );
    Ok(())
}
