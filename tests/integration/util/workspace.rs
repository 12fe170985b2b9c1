//! The Graph side and the files a test runs in: the sandbox on loopback, a temporary workspace
//! with a config pointing at it, its state directory and file store, a Graph client for it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokenwarden::config::{MetaConfig, SecretRef};
use tokenwarden::graph::GraphClient;
use tokenwarden::graph::version::DEFAULT_VERSION;
use tokenwarden::sandbox::{self, Sandbox, Scenario, TokenSpec};
use tokenwarden::secret::Secret;
use tokenwarden::store::SecretStore;
use tokenwarden::store::file::FileStore;

use super::binary::{Run, run};
use super::write_private;

/// The sandbox with the demo scenario on a free loopback port.
pub async fn sandbox() -> Sandbox {
    sandbox_with(Scenario::demo()).await
}

/// The sandbox with `scenario` on a free loopback port.
pub async fn sandbox_with(scenario: Scenario) -> Sandbox {
    Sandbox::start("127.0.0.1:0".parse().unwrap(), scenario)
        .await
        .unwrap()
}

/// A Graph client for `base` with app secret `secret`, retrying `attempts` times 5 ms apart,
/// through `proxy` if given.
pub fn graph_client(
    base: &str,
    secret: &str,
    attempts: u32,
    timeout: Duration,
    proxy: Option<&str>,
) -> GraphClient {
    let meta = MetaConfig {
        app_id: sandbox::DEMO_APP_ID.into(),
        app_secret: SecretRef::Env("UNUSED".into()),
        api_version: DEFAULT_VERSION,
        base_url: base.parse().unwrap(),
        timeout,
        attempts,
        retry_delay: Duration::from_millis(5),
        proxy: proxy.map(|p| p.parse().unwrap()),
    };
    GraphClient::new(&meta, Secret::new(secret)).unwrap()
}

/// Whether the sandbox's `debug_token` calls `token` valid now.
pub async fn is_valid(sb: &Sandbox, token: &str) -> bool {
    let proof =
        tokenwarden::secret::appsecret_proof(&Secret::new(sb.app_secret()), &sb.app_token());
    let body: serde_json::Value = reqwest::Client::new()
        .get(format!("{}/v25.0/debug_token", sb.base_url()))
        .query(&[
            ("input_token", token),
            ("access_token", &sb.app_token()),
            ("appsecret_proof", &proof),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    body["data"]["is_valid"].as_bool().unwrap()
}

/// A temporary directory with a config pointing at a sandbox.
pub struct Workspace {
    /// Removed with the workspace.
    _dir: tempfile::TempDir,
    pub config: PathBuf,
    pub store: PathBuf,
}

/// One `[[token]]` of a workspace config.
pub struct TokenEntry<'a> {
    pub name: &'a str,
    pub value: Option<&'a str>,
    pub extra: &'a str,
}

impl<'a> TokenEntry<'a> {
    /// A token with the demo phone and WABA ids, stored in the file store.
    pub fn new(name: &'a str, value: &'a str) -> Self {
        TokenEntry {
            name,
            value: Some(value),
            extra: "",
        }
    }
}

impl Workspace {
    /// Writes a config for `sb` with these tokens (file store unless `extra` sets one).
    pub fn new(sb: &Sandbox, tokens: &[TokenEntry<'_>]) -> Workspace {
        Self::with_meta(
            sb,
            tokens,
            "attempts = 2\nretry_delay = \"10ms\"\ntimeout = \"5s\"",
        )
    }

    /// As [`Workspace::new`] with extra `[meta]` lines.
    pub fn with_meta(sb: &Sandbox, tokens: &[TokenEntry<'_>], meta: &str) -> Workspace {
        let dir = tempfile::tempdir().unwrap();
        let secret_file = dir.path().join("app-secret");
        std::fs::write(&secret_file, sandbox::DEMO_APP_SECRET).unwrap();
        let store = dir.path().join("tokens.json");
        let mut text = format!(
            "state_dir = \"{}\"\n[meta]\napp_id = \"{}\"\napp_secret = {{ file = \"{}\" }}\nbase_url = \"{}\"\n{meta}\n",
            dir.path().display(),
            sandbox::DEMO_APP_ID,
            secret_file.display(),
            sb.base_url()
        );
        for t in tokens {
            text.push_str(&format!(
                "\n[[token]]\nname = \"{}\"\nphone_number_id = \"{}\"\nwaba_id = \"{}\"\n{}\n",
                t.name,
                sandbox::DEMO_PHONE_NUMBER_ID,
                sandbox::DEMO_WABA_ID,
                t.extra
            ));
            if let Some(v) = t.value {
                FileStore::new(store.clone(), t.name.to_string())
                    .import_current(&Secret::new(v), jiff::Timestamp::now())
                    .unwrap();
            }
        }
        let config = dir.path().join("tokenwarden.toml");
        write_private(&config, &text);
        Workspace {
            _dir: dir,
            config,
            store,
        }
    }

    /// Runs `tokenwarden --config CONFIG args...`.
    pub fn run(&self, args: &[&str]) -> Run {
        let mut all = vec!["--config", self.config.to_str().unwrap()];
        all.extend_from_slice(args);
        run(&all, &[])
    }

    /// The workspace's state directory (its config sits in it).
    pub fn state_dir(&self) -> PathBuf {
        state_dir(&self.config)
    }
}

/// The state directory of a workspace whose config is `config`.
pub fn state_dir(config: &Path) -> PathBuf {
    config.parent().unwrap().to_path_buf()
}

/// The current token `name` of the workspace's file store.
pub async fn current(ws: &Workspace, name: &str) -> String {
    FileStore::new(ws.store.clone(), name.into())
        .current()
        .await
        .unwrap()
        .expose()
        .to_string()
}

/// `[[token]]` lines that mint new tokens for `system_user_id` with a fresh admin token of the
/// sandbox, kept in a private file in `dir`; returns the lines and the admin token.
pub fn mint_source(sb: &Sandbox, dir: &Path, system_user_id: &str) -> (String, String) {
    let admin = sb.issue_token(sandbox::TokenSpec::system_user_never());
    let admin_file = dir.join("admin-token");
    write_private(&admin_file, &admin);
    let lines = format!(
        "source = \"mint\"\nmint = {{ system_user_id = \"{system_user_id}\", admin_token = {{ file = \"{}\" }} }}\n",
        admin_file.display()
    );
    (lines, admin)
}

/// Every regular file below `dir`, recursively.
pub fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p))
        } else {
            out.push(p)
        }
    }
    out
}

/// A 60-day system-user token for the demo WABA: a production WhatsApp token as Meta issues it.
pub fn prod_spec() -> TokenSpec {
    TokenSpec::system_user_60d().wabas(&[sandbox::DEMO_WABA_ID])
}
