//! A Meta Graph API simulator served on loopback: the WhatsApp Cloud API token endpoints that
//! tokenwarden uses, with the response shapes and quirks real Meta servers show (reference
//! `meta-graph-tokens.md`, sections 1 to 6 and 8).
//!
//! Tests start it in-process with [`Sandbox::start`]; the CLI (`tokenwarden sandbox`) runs it
//! with [`serve`]. Either way it can be driven over HTTP through the admin API under
//! `/_sandbox/` (`GET state`, `POST clock`, `POST tokens`, `POST invalidate`, `POST app_secret`,
//! `POST`/`GET`/`DELETE faults`, `GET messages`, `POST`/`GET quirks`, `POST usage`,
//! `POST app_settings`), so a separate process can set up a case too.
//!
//! By default it is at least as strict as Meta's documentation (batch items take the token
//! only from the top-level form parameter, `oauth/revoke` checks that the apps agree and
//! wants the proof, only an admin system user mints, refresh refuses what cannot be
//! refreshed); [`Quirks`] switch on what real Meta has been seen to do beyond that.
//!
//! Graph endpoints are served under any version prefix (`/v21.0/...`) or none:
//! `debug_token`, `oauth/access_token`, `oauth/revoke`, `{system-user}/access_tokens`,
//! `{phone-number-id}`, `{waba-id}`, `{waba-id}/phone_numbers`, `{phone-number-id}/messages`,
//! ad accounts (`act_{id}` with `fields=account_status,name`), the demo Page (`{page-id}` with `fields=id,name` or `access_token`, `{page-id}/subscribed_apps`)
//! and batches (`POST /` with `batch`); the Instagram and Threads hosts under `/instagram` and
//! `/threads`.

mod admin;
mod fault;
mod graph;
mod quirks;
mod scenario;
mod world;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::response::Response;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use fault::{Endpoint, Fault};
pub use quirks::{Quirks, UsageModel};
pub use scenario::{
    AppDef, DEMO_AD_ACCOUNT_ID, DEMO_APP_ID, DEMO_APP_SECRET, DEMO_CLIENT_BUSINESS_ID,
    DEMO_INSTAGRAM_USER_ID, DEMO_INSTAGRAM_USERNAME, DEMO_PAGE_ID, DEMO_PAGE_NAME,
    DEMO_PHONE_NUMBER_ID, DEMO_SYSTEM_USER_ID, DEMO_THREADS_USER_ID, DEMO_THREADS_USERNAME,
    DEMO_USER_ID, DEMO_WABA_ID, Lifetime, OTHER_APP_ID, OTHER_APP_SECRET, OTHER_PHONE_NUMBER_ID,
    OTHER_WABA_ID, PhoneDef, Scenario, SystemUserDef, TemplateDef, TokenDef, TokenKind, TokenSpec,
    TokenStatusDef, UNINSTALLED_SYSTEM_USER_ID, WHATSAPP_SCOPES, WabaDef,
};
pub use world::{MessengerPolicy, SentMessage, Stats};

use world::{Shared, World, lock};

/// Largest request body the sandbox reads (a full batch fits easily).
const MAX_BODY: usize = 4 * 1024 * 1024;

/// What can go wrong starting a sandbox or loading its scenario.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// The scenario file could not be read.
    #[error("cannot read scenario file {path}: {source}")]
    ReadScenario {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The scenario file is not valid TOML or does not describe a consistent world.
    #[error("invalid scenario file {path}: {message}")]
    BadScenario {
        /// The file.
        path: PathBuf,
        /// What is wrong, with the line when TOML knows it.
        message: String,
    },
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// A running simulator. Dropping it (or [`Sandbox::shutdown`]) stops the server.
pub struct Sandbox {
    shared: Shared,
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

impl Sandbox {
    /// Binds `listen` (`127.0.0.1:0` picks a free port) and serves `scenario` in the background.
    pub async fn start(listen: SocketAddr, scenario: Scenario) -> Result<Sandbox, SandboxError> {
        let listener = TcpListener::bind(listen)
            .await
            .map_err(|source| SandboxError::Bind {
                addr: listen,
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| SandboxError::Bind {
            addr: listen,
            source,
        })?;
        let shared: Shared = Arc::new(Mutex::new(World::new(scenario)));
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(run(listener, shared.clone(), async move {
            let _ = stopped.await;
        }));
        Ok(Sandbox {
            shared,
            addr,
            stop: Some(stop),
            task: Some(task),
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`: no version, no trailing slash.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Creates a token of the given shape and returns its value (`APP_ID|SECRET` for
    /// [`TokenKind::App`]).
    pub fn issue_token(&self, spec: TokenSpec) -> String {
        lock(&self.shared).issue(&spec)
    }

    /// Moves the sandbox clock by `secs`; tokens expire by this clock.
    pub fn advance_clock(&self, secs: i64) {
        lock(&self.shared).advance(secs);
    }

    /// Sandbox unix seconds.
    pub fn now(&self) -> i64 {
        lock(&self.shared).now()
    }

    /// Kills `token` with a 190 `subcode` (460, 466, 467, 458, ...). Unknown tokens are ignored.
    pub fn invalidate(&self, token: &str, subcode: u32) {
        lock(&self.shared).invalidate(token, subcode);
    }

    /// Resets the first app's secret: app tokens and proofs made with the old one now fail.
    pub fn reset_app_secret(&self, new_secret: &str) {
        lock(&self.shared).reset_secret(None, new_secret);
    }

    /// Resets app `app_id`'s secret (an Instagram or Threads app's too); false if the app is
    /// unknown. Exchanges and proofs made with the old secret fail at once, as at Meta.
    pub fn reset_secret_of(&self, app_id: &str, new_secret: &str) -> bool {
        lock(&self.shared).reset_secret(Some(app_id), new_secret)
    }

    /// Queues a fault.
    pub fn add_fault(&self, fault: Fault) {
        lock(&self.shared).faults.push(fault);
    }

    /// Changes the quirks (ways real Meta differs from its strict documented default).
    pub fn set_quirks(&self, change: impl FnOnce(&mut Quirks)) {
        change(&mut lock(&self.shared).scenario.quirks);
    }

    /// Throttles the business's assets (code 80008) for `minutes` of sandbox time from now.
    pub fn throttle_business(&self, minutes: i64) {
        let mut w = lock(&self.shared);
        let until = w.now() + minutes * 60;
        w.scenario.quirks.business_throttle_until = until;
    }

    /// Changes the usage model (the app's hourly quota, and whether it is enforced).
    pub fn set_usage(&self, usage: UsageModel) {
        lock(&self.shared).scenario.usage = usage;
    }

    /// Turns "Require App Secret" on or off for every app.
    pub fn set_require_app_secret(&self, on: bool) {
        for app in &mut lock(&self.shared).scenario.apps {
            app.require_app_secret = on;
        }
    }

    /// Subscribes the demo Page to the first app, or unsubscribes it (Messenger then delivers
    /// none of its messages to the app).
    pub fn set_page_subscribed(&self, on: bool) {
        lock(&self.shared).page_subscribed = on;
    }

    /// Makes the demo Page's own token meet a Messenger policy refusal on its reads (the Page
    /// and its subscribed apps), or clears it (`None`). Meta documents these codes for the
    /// Messenger Platform; the sandbox answers them on the reads a Page token is proven with so
    /// that a client's classification of them is tested end to end.
    pub fn set_page_policy(&self, policy: Option<MessengerPolicy>) {
        lock(&self.shared).page_policy = policy;
    }

    /// The person lost their role (task) on the demo Page: every Page token taken for it dies
    /// (190, subcode 492 "the user lost their role on the asset"), and a person's token may
    /// neither read the Page nor take a Page token any more (code 200, "Permissions error").
    pub fn remove_page_role(&self) {
        let mut w = lock(&self.shared);
        w.page_role_lost = true;
        let pages: Vec<String> = w
            .tokens
            .iter()
            .filter(|(_, r)| {
                r.kind == TokenKind::Page && r.user_id.as_deref() == Some(DEMO_PAGE_ID)
            })
            .map(|(v, _)| v.clone())
            .collect();
        for v in pages {
            w.invalidate(&v, 492);
        }
    }

    /// Issues the demo customer's business integration system-user token (both WhatsApp
    /// scopes on the demo WABA, never expiring) and records it as what
    /// `POST /{client-business-id}/system_user_access_tokens` with `fetch_only` returns.
    pub fn issue_business_token(&self) -> String {
        let mut w = lock(&self.shared);
        let value = w.issue(&TokenSpec::system_user_never());
        w.business_tokens
            .insert(DEMO_CLIENT_BUSINESS_ID.to_string(), value.clone());
        value
    }

    /// The customer removes the app: its business token no longer reaches `waba` (code 200
    /// on the WABA), and fetching it again is refused.
    pub fn disconnect_business(&self, waba: &str) {
        let mut w = lock(&self.shared);
        let Some(token) = w.business_tokens.remove(DEMO_CLIENT_BUSINESS_ID) else {
            return;
        };
        if let Some(rec) = w.tokens.get_mut(&token) {
            rec.wabas.retain(|x| x != waba);
        }
    }

    /// Sets an ad account's `account_status` (1 active, 2 disabled, 101 closed, ...); an
    /// unknown id becomes a new account.
    pub fn set_ad_account_status(&self, account_id: &str, status: i64) {
        lock(&self.shared)
            .ad_accounts
            .insert(account_id.trim_start_matches("act_").to_string(), status);
    }

    /// Drops every pending fault.
    pub fn clear_faults(&self) {
        lock(&self.shared).faults.clear();
    }

    /// Request and outcome counters.
    pub fn stats(&self) -> Stats {
        lock(&self.shared).stats.clone()
    }

    /// For each Graph HTTP request so far, in order of arrival, how many were in progress
    /// when it arrived (itself included). Kept for the first 100,000 requests.
    pub fn concurrency_log(&self) -> Vec<u32> {
        lock(&self.shared).arrivals.clone()
    }

    /// The `X-App-Usage` `call_count` the next answer would carry (percent, may pass 100).
    pub fn app_usage(&self) -> u64 {
        lock(&self.shared).usage_percent()
    }

    /// Messages accepted so far, oldest first.
    pub fn sent_messages(&self) -> Vec<SentMessage> {
        lock(&self.shared).messages.clone()
    }

    /// The app token `APP_ID|SECRET` of the first app, with its current secret.
    pub fn app_token(&self) -> String {
        lock(&self.shared).issue(&TokenSpec::default().kind(TokenKind::App))
    }

    /// The current secret of the first app.
    pub fn app_secret(&self) -> String {
        let w = lock(&self.shared);
        w.secret_of(&w.default_app_id())
            .unwrap_or_default()
            .to_string()
    }

    /// Stops the server and waits (briefly) for it to finish.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let abort = task.abort_handle();
            // Idle keep-alive connections of clients must not hold the shutdown forever.
            if tokio::time::timeout(Duration::from_secs(2), task)
                .await
                .is_err()
            {
                abort.abort();
            }
        }
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Serves `scenario` on `listener` until `shutdown` completes (the CLI's
/// `tokenwarden sandbox --listen ADDR [--scenario FILE]`).
pub async fn serve(
    listener: TcpListener,
    scenario: Scenario,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let shared: Shared = Arc::new(Mutex::new(World::new(scenario)));
    run(listener, shared, shutdown).await
}

async fn run(
    listener: TcpListener,
    shared: Shared,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app: Router = admin::routes().fallback(graph_entry).with_state(shared);
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

/// Every non-admin request: parse it into a Graph call and answer it.
async fn graph_entry(State(shared): State<Shared>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let bytes = axum::body::to_bytes(body, MAX_BODY)
        .await
        .unwrap_or_default();
    let header_str = |name: header::HeaderName| {
        parts
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let content_type = header_str(header::CONTENT_TYPE).unwrap_or_default();
    let authorization = header_str(header::AUTHORIZATION);
    let call = graph::Call::parse(
        parts.method.as_str(),
        parts.uri.path(),
        parts.uri.query().unwrap_or(""),
        &content_type,
        &bytes,
        authorization.as_deref(),
    );
    let reply = graph::handle(&shared, call).await;
    let mut resp = Response::new(Body::from(reply.body));
    *resp.status_mut() = StatusCode::from_u16(reply.status).unwrap_or(StatusCode::OK);
    let headers = resp.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(reply.content_type),
    );
    for (name, value) in reply.headers {
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(&value),
        ) {
            headers.insert(n, v);
        }
    }
    resp
}
