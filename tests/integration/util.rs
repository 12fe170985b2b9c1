//! Shared helpers: the moto server, a temp workspace with a config, running the binary.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;

use tokenwarden::sandbox::{self, Sandbox};
use tokenwarden::secret::Secret;
use tokenwarden::store::file::FileStore;

/// The venv holding moto and aiosmtpd, made by `tests/run.sh`.
pub fn venv() -> PathBuf {
    let dir = std::env::var_os("TOKENWARDEN_TEST_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv"));
    assert!(
        dir.join("bin/python").exists(),
        "no test venv at {}: run `tests/run.sh`, which installs moto and aiosmtpd",
        dir.display()
    );
    dir
}

/// Starts a support server that prints `port N` once it listens and exits when its stdin
/// closes (so it dies with the test process); returns it and the port.
fn spawn_server(cmd: &mut Command) -> (Child, u16) {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("start {cmd:?}: {e}"));
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let port = line
        .trim()
        .strip_prefix("port ")
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("{cmd:?} said {line:?}"));
    (child, port)
}

/// moto's server, one per test binary; it exits when this process does (its stdin closes).
pub struct Moto {
    _child: Child,
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
}

/// The shared moto server. Tests use unique secret names so they never collide.
pub fn moto() -> &'static Moto {
    static MOTO: OnceLock<Moto> = OnceLock::new();
    MOTO.get_or_init(|| {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/moto_server.py");
        let mut cmd = Command::new(venv().join("bin/python"));
        cmd.arg(script);
        let (child, port) = spawn_server(&mut cmd);
        Moto {
            _child: child,
            endpoint: format!("http://127.0.0.1:{port}"),
        }
    })
}

/// An AWS SDK client for moto, with static test credentials.
pub async fn moto_client() -> aws_sdk_secretsmanager::Client {
    aws_sdk_secretsmanager::Client::new(&moto_sdk_config().await)
}

/// SDK config for moto.
pub async fn moto_sdk_config() -> aws_config::SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new("us-east-1"))
        .endpoint_url(&moto().endpoint)
        .credentials_provider(aws_sdk_secretsmanager::config::Credentials::new(
            "testing", "testing", None, None, "static",
        ))
        .load()
        .await
}

/// A unique name for a secret or a directory.
pub fn unique(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
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
}

/// Writes a file of mode 0600.
pub fn write_private(path: &Path, text: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

/// A finished run of the binary.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// Both outputs, for leak checks and failure messages.
    pub fn all(&self) -> String {
        format!("{}\n{}", self.stdout, self.stderr)
    }
}

impl std::fmt::Debug for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {}\n--- stdout\n{}\n--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

/// Runs the real binary with `args` and extra environment.
pub fn run(args: &[&str], env: &[(&str, &str)]) -> Run {
    run_with_stdin(args, env, None)
}

/// As [`run`], writing `stdin` to the child.
pub fn run_with_stdin(args: &[&str], env: &[(&str, &str)], stdin: Option<&str>) -> Run {
    use std::io::Write;
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tokenwarden"));
    cmd.args(args)
        .env_remove("TOKENWARDEN_CONFIG")
        .env("TOKENWARDEN_LOG", "tokenwarden=debug,warn");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("run tokenwarden");
    {
        let mut sin = child.stdin.take().unwrap();
        if let Some(s) = stdin {
            sin.write_all(s.as_bytes()).unwrap();
        }
    }
    let Output {
        status,
        stdout,
        stderr,
    } = child.wait_with_output().unwrap();
    Run {
        code: status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
    }
}

/// Asserts that none of `secrets` appears in `haystack`.
pub fn assert_no_leak(haystack: &str, secrets: &[&str], what: &str) {
    for s in secrets {
        assert!(!s.is_empty());
        assert!(
            !haystack.contains(s),
            "a secret leaked into {what}:\n{haystack}"
        );
    }
}

/// How a [`SmtpSink`] behaves (see `tests/support/smtp_sink.py`).
#[derive(Debug, Default, Clone)]
pub struct SinkOpts {
    /// Listen on this port instead of a free one (a server that "comes back").
    pub port: Option<u16>,
    /// STARTTLS, required, with this certificate and key.
    pub starttls: Option<(PathBuf, PathBuf)>,
    /// Implicit TLS with this certificate and key.
    pub implicit: Option<(PathBuf, PathBuf)>,
    /// Require AUTH with this user and password.
    pub auth: Option<(String, String)>,
    /// Answer every DATA with this code.
    pub reject: Option<u16>,
    /// Refuse every AUTH with a 535 that quotes what the client sent (base64 and plain).
    pub echo_auth: bool,
}

/// An aiosmtpd server on loopback that stores what it accepts; killed on drop.
pub struct SmtpSink {
    child: Child,
    /// The port it listens on (127.0.0.1).
    pub port: u16,
    /// Where messages are stored.
    pub dir: PathBuf,
    _tmp: tempfile::TempDir,
}

impl SmtpSink {
    /// Starts the server and waits until it listens.
    pub fn start(opts: &SinkOpts) -> SmtpSink {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/smtp_sink.py");
        let mut cmd = Command::new(venv().join("bin/python"));
        cmd.arg(script).arg(&dir);
        if let Some(p) = opts.port {
            cmd.arg("--port").arg(p.to_string());
        }
        if let Some((c, k)) = &opts.starttls {
            cmd.arg("--starttls").arg(c).arg(k);
        }
        if let Some((c, k)) = &opts.implicit {
            cmd.arg("--implicit").arg(c).arg(k);
        }
        if let Some((u, p)) = &opts.auth {
            cmd.arg("--auth").arg(u).arg(p);
        }
        if let Some(code) = opts.reject {
            cmd.arg("--reject").arg(code.to_string());
        }
        if opts.echo_auth {
            cmd.arg("--echo-auth");
        }
        let (child, port) = spawn_server(&mut cmd);
        SmtpSink {
            child,
            port,
            dir,
            _tmp: tmp,
        }
    }

    /// Every stored message in arrival order: (envelope JSON, raw message).
    pub fn messages(&self) -> Vec<(serde_json::Value, String)> {
        let mut out = Vec::new();
        for n in 1.. {
            let Ok(meta) = std::fs::read_to_string(self.dir.join(format!("{n}.json"))) else {
                break;
            };
            let raw = std::fs::read_to_string(self.dir.join(format!("{n}.eml"))).unwrap();
            out.push((serde_json::from_str(&meta).unwrap(), raw));
        }
        out
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        // Closing stdin would do; killing is immediate and frees the port before the next test.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A loopback port with nothing listening (free when this returns).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A test CA and a server certificate it signed, as PEM files.
pub struct TestCa {
    _dir: tempfile::TempDir,
    /// The CA certificate: the root a client must trust.
    pub ca_cert: PathBuf,
    /// The leaf certificate (CA:FALSE, serverAuth, SANs localhost and 127.0.0.1).
    pub cert: PathBuf,
    /// The leaf's private key.
    pub key: PathBuf,
}

/// The shared test CA, made once per test binary. rustls refuses a self-signed server
/// certificate (`CaUsedAsEndEntity`), hence a CA and a separate leaf.
pub fn test_ca() -> &'static TestCa {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
        KeyPair, KeyUsagePurpose,
    };
    static CA: OnceLock<TestCa> = OnceLock::new();
    CA.get_or_init(|| {
        let ca_key = KeyPair::generate().unwrap();
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(DnType::CommonName, "tokenwarden test CA");
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca, ca_key);

        let leaf_key = KeyPair::generate().unwrap();
        let mut leaf =
            CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
        leaf.is_ca = IsCa::ExplicitNoCa;
        leaf.distinguished_name
            .push(DnType::CommonName, "localhost");
        leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        leaf.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        let leaf_cert = leaf.signed_by(&leaf_key, &issuer).unwrap();

        let dir = tempfile::tempdir().unwrap();
        let ca_path = dir.path().join("ca.pem");
        let cert = dir.path().join("leaf.pem");
        let key = dir.path().join("leaf.key");
        std::fs::write(&ca_path, ca_cert.pem()).unwrap();
        std::fs::write(&cert, leaf_cert.pem()).unwrap();
        write_private(&key, &leaf_key.serialize_pem());
        TestCa {
            _dir: dir,
            ca_cert: ca_path,
            cert,
            key,
        }
    })
}

/// Runs the binary with `--config config args...` off the async runtime (a sandbox in this
/// process keeps serving meanwhile).
pub async fn tw(config: &Path, args: &[&str], env: &[(&str, &str)], stdin: Option<&str>) -> Run {
    let mut all = vec!["--config".to_string(), config.display().to_string()];
    all.extend(args.iter().map(|s| s.to_string()));
    let env: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let stdin = stdin.map(str::to_string);
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = all.iter().map(String::as_str).collect();
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        run_with_stdin(&args, &env, stdin.as_deref())
    })
    .await
    .unwrap()
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

/// Static credentials for the tokenwarden binary talking to moto.
pub const AWS_ENV: [(&str, &str); 3] = [
    ("AWS_ACCESS_KEY_ID", "testing"),
    ("AWS_SECRET_ACCESS_KEY", "testing"),
    ("AWS_EC2_METADATA_DISABLED", "true"),
];

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
