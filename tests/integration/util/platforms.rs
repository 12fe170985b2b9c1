//! What the platform target tests (`targets_<platform>.rs`) share: a loopback fake's recording
//! and fault layer (every request kept; the next answers replaced by a status or a hang), over
//! http or over https with the test CA's certificate, one
//! rotation through the binary with a set of targets, and the daemon binary run until a
//! condition holds (drift repair).

use std::collections::VecDeque;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tokenwarden::sandbox::{Sandbox, TokenSpec};

use super::{Run, TokenEntry, Workspace, current, daemon_command, mint_source, signal};

/// One request a fake received, as it came.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// `GET`, `PUT`, ...
    pub method: String,
    /// Path and query.
    pub uri: String,
    /// Every header, `name: value`.
    pub headers: Vec<(String, String)>,
    /// The body, as text.
    pub body: String,
}

impl Recorded {
    /// The value of header `name` (case-insensitive), if sent.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// An answer that replaces the platform's next one.
#[derive(Debug, Clone)]
pub enum Fault {
    /// This status with this JSON body, and a `Retry-After` in seconds if given.
    Status(u16, String, Option<u64>),
    /// No answer at all (the connection stays open).
    Hang,
    /// The platform's own answer (to reach a later request with the next fault).
    Pass,
}

/// A fake's shared state: what it received, the faults still to play, and the platform's own
/// data (`T`: the variables it holds, the deploys it made).
#[derive(Debug, Default)]
pub struct Shared<T> {
    /// Every request, in order (faulted ones included).
    pub requests: Vec<Recorded>,
    /// Played one per request, first first.
    pub faults: VecDeque<Fault>,
    /// The platform's data.
    pub data: T,
}

/// The state handle every fake's handlers get.
pub type FakeState<T> = Arc<Mutex<Shared<T>>>;

/// A fake platform on a loopback port; stops when dropped.
pub struct Fake<T> {
    /// Its state.
    pub state: FakeState<T>,
    /// Its port on 127.0.0.1.
    pub port: u16,
    task: tokio::task::JoinHandle<()>,
}

impl<T: Send + 'static> Fake<T> {
    /// Serves `router` with `data`, every request recorded and faults played first.
    pub async fn start(router: axum::Router<FakeState<T>>, data: T) -> Fake<T> {
        let (state, app) = recorded(router, data);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Fake { state, port, task }
    }

    /// As [`Fake::start`], over https only: the leaf of [`super::test_ca`] (SANs `localhost`
    /// and `127.0.0.1`) is the server's certificate, so a client trusts it only with that CA.
    pub async fn start_tls(router: axum::Router<FakeState<T>>, data: T) -> Fake<T> {
        use tokio_rustls::rustls::pki_types::pem::PemObject;
        use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let ca = super::test_ca();
        let chain = CertificateDer::pem_file_iter(&ca.cert)
            .unwrap()
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let key = PrivateKeyDer::from_pem_file(&ca.key).unwrap();
        let config = tokio_rustls::rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .unwrap();
        let (state, app) = recorded(router, data);
        let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = tcp.local_addr().unwrap().port();
        let listener = TlsListener {
            tcp,
            acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
        };
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Fake { state, port, task }
    }

    /// `http://127.0.0.1:PORT` (`https://` for [`Fake::start_tls`]).
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Queues `f` for the next request.
    pub fn fail_next(&self, f: Fault) {
        self.state.lock().unwrap().faults.push_back(f);
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.state.lock().unwrap().requests.clone()
    }

    /// Runs `f` on the platform's data.
    pub fn with<R>(&self, f: impl FnOnce(&mut T) -> R) -> R {
        f(&mut self.state.lock().unwrap().data)
    }
}

/// `router` with its state and the recording and fault layer.
fn recorded<T: Send + 'static>(
    router: axum::Router<FakeState<T>>,
    data: T,
) -> (FakeState<T>, axum::Router) {
    let state: FakeState<T> = Arc::new(Mutex::new(Shared {
        requests: Vec::new(),
        faults: VecDeque::new(),
        data,
    }));
    let app = router
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            record_and_fault::<T>,
        ))
        .with_state(state.clone());
    (state, app)
}

/// A loopback listener that hands axum a connection only once its TLS handshake completed.
struct TlsListener {
    tcp: tokio::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Ok((tcp, addr)) = self.tcp.accept().await else {
                continue;
            };
            // A client that refuses the certificate (or never finishes the handshake) gets
            // nothing, and no request is recorded; the next connection is served.
            if let Ok(Ok(tls)) =
                tokio::time::timeout(Duration::from_secs(5), self.acceptor.accept(tcp)).await
            {
                return (tls, addr);
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}

impl<T> Drop for Fake<T> {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn record_and_fault<T>(
    State(state): State<FakeState<T>>,
    req: Request,
    next: Next,
) -> Response {
    let (parts, body) = req.into_parts();
    let bytes = axum::body::to_bytes(body, 1 << 20)
        .await
        .unwrap_or_default();
    let fault = {
        let mut s = state.lock().unwrap();
        s.requests.push(Recorded {
            method: parts.method.to_string(),
            uri: parts.uri.to_string(),
            headers: parts
                .headers
                .iter()
                .map(|(k, v)| {
                    (
                        k.to_string(),
                        String::from_utf8_lossy(v.as_bytes()).into_owned(),
                    )
                })
                .collect(),
            body: String::from_utf8_lossy(&bytes).into_owned(),
        });
        s.faults.pop_front()
    };
    match fault {
        Some(Fault::Status(code, body, retry_after)) => {
            let mut r = (
                StatusCode::from_u16(code).unwrap(),
                [("content-type", "application/json")],
                body,
            )
                .into_response();
            if let Some(s) = retry_after {
                r.headers_mut().insert("retry-after", HeaderValue::from(s));
            }
            r
        }
        Some(Fault::Hang) => {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            StatusCode::GATEWAY_TIMEOUT.into_response()
        }
        None | Some(Fault::Pass) => {
            next.run(Request::from_parts(parts, Body::from(bytes)))
                .await
        }
    }
}

/// A rotation through the binary (`rotate --dry-run`, then `rotate`) of a token minted by the
/// sandbox, delivered to `targets` (`[[token.target]]` tables).
pub struct Rotated {
    /// The workspace (config, store, state).
    pub ws: Workspace,
    /// The token before.
    pub old: String,
    /// The store's current token after (the old one when the rotation failed).
    pub current: String,
    /// `rotate --dry-run`.
    pub dry: Run,
    /// `rotate`.
    pub run: Run,
    _dir: tempfile::TempDir,
}

/// A 60-day token issued 45 days ago (due for rotation).
pub fn due_token(sb: &Sandbox) -> String {
    sb.issue_token(TokenSpec::system_user_60d().issued_ago(45 * 86_400))
}

/// Rotates `old` (token `prod`), delivering to `targets`, with `env` for the binary.
pub async fn rotate_with(sb: &Sandbox, old: &str, targets: &str, env: &[(&str, &str)]) -> Rotated {
    let dir = tempfile::tempdir().unwrap();
    let (mint, _) = mint_source(sb, dir.path(), tokenwarden::sandbox::DEMO_SYSTEM_USER_ID);
    let entry = format!("{mint}revoke_after = \"0s\"\n{targets}");
    let ws = Workspace::with_meta(
        sb,
        &[TokenEntry {
            name: "prod",
            value: Some(old),
            extra: &entry,
        }],
        "attempts = 1",
    );
    let dry = super::tw(
        &ws.config,
        &["rotate", "--token", "prod", "--dry-run"],
        env,
        None,
    )
    .await;
    let run = super::tw(&ws.config, &["rotate", "--token", "prod"], env, None).await;
    let current = current(&ws, "prod").await;
    Rotated {
        ws,
        old: old.to_string(),
        current,
        dry,
        run,
        _dir: dir,
    }
}

/// Runs the daemon binary on `config` with `env` until `done` holds (checked every 200 ms, at
/// most `within`), then stops it with SIGTERM; returns whether `done` held and the output.
pub async fn daemon_until(
    config: &Path,
    env: &[(&str, &str)],
    within: Duration,
    done: impl AsyncFn() -> bool,
) -> (bool, Run) {
    let mut cmd = daemon_command(config);
    cmd.env("TOKENWARDEN_LOG", "tokenwarden=debug,warn");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let child = cmd.spawn().unwrap();
    let started = std::time::Instant::now();
    let mut held = false;
    while started.elapsed() < within {
        if done().await {
            held = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    signal(child.id(), "TERM");
    let out = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
        .await
        .unwrap();
    (
        held,
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        },
    )
}

/// A target config named `name` of `kind`, wave 1, without a verify.
pub fn target_config(
    name: &str,
    kind: tokenwarden::config::TargetKind,
    timeout: Duration,
) -> tokenwarden::config::TargetConfig {
    tokenwarden::config::TargetConfig {
        name: name.into(),
        wave: 1,
        timeout,
        verify: None,
        kind,
    }
}

/// The context of a push for token `prod`.
pub fn push_ctx(event: tokenwarden::target::PushEvent) -> tokenwarden::target::PushContext {
    tokenwarden::target::PushContext {
        token_name: "prod".into(),
        expires_at: None,
        event,
        request_id: "test-push".into(),
        now: jiff::Timestamp::now(),
        reloads: None,
        hide: Vec::new(),
    }
}

/// One scheduled drift check of `t` against `current`, as the daemon runs it (records kept
/// in `records` between checks).
pub async fn drift_check(
    t: &Arc<tokenwarden::target::Configured>,
    records: &mut std::collections::BTreeMap<String, tokenwarden::delivery::TargetRecord>,
    current: &tokenwarden::secret::Secret,
) -> tokenwarden::delivery::Reconciled {
    tokenwarden::delivery::reconcile(
        std::slice::from_ref(t),
        records,
        current,
        &push_ctx(tokenwarden::target::PushEvent::Sync),
        &tokenwarden::target::http_client(),
        1,
    )
    .await
}

/// Opens `cfg` as a rollout does.
pub async fn open_target(
    cfg: &tokenwarden::config::TargetConfig,
) -> Arc<tokenwarden::target::Configured> {
    Arc::new(tokenwarden::target::Configured::open(cfg).await.unwrap())
}

/// Pushes `token` to `t` as a rollout does (push, read back or verify, within its timeout),
/// returning the outcome and how long it took.
pub async fn push_timed(
    t: &Arc<tokenwarden::target::Configured>,
    token: &str,
) -> (
    Result<bool, tokenwarden::target::TargetError>,
    std::time::Duration,
) {
    let started = std::time::Instant::now();
    let out = tokenwarden::delivery::roll_out(
        std::slice::from_ref(t),
        &tokenwarden::secret::Secret::new(token),
        None,
        &push_ctx(tokenwarden::target::PushEvent::Rotation),
        &tokenwarden::target::http_client(),
        1,
    )
    .await;
    let result = match out {
        tokenwarden::delivery::Rollout::Delivered(r) => r[0].outcome.clone(),
        tokenwarden::delivery::Rollout::Failed { results, .. } => results[0].outcome.clone(),
    };
    (result, started.elapsed())
}
