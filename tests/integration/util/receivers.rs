//! Loopback stand-ins for the on-call vendors: PagerDuty's Events API v2, a Slack incoming
//! webhook and a Teams Workflows webhook. Each checks what it receives against the vendor's
//! documented shape strictly (method, path, content type, required fields, enums, length and
//! size limits; `docs/channels.md` lists them with their sources) and answers as the vendor
//! does: PagerDuty 202 `{"status":"success",...}` or 400 with an `errors` list, Slack 200 `ok`
//! or an error word, Teams 202 or a JSON `error`.
//!
//! Where a vendor's documentation says nothing, a receiver is stricter than the vendor
//! (unknown fields of a PagerDuty event or of a card element, a card element Teams would
//! render and ignore): a misspelt field must fail a test, not vanish in production.
//!
//! ```ignore
//! let pd = Receiver::pagerduty().await;
//! let channel = PagerDuty::new(Secret::new(pd.routing_key()), timeout).with_url(pd.url());
//! pd.fail_next(2, 503, Some(30));   // the next two requests get 503 with Retry-After: 30
//! pd.hang_next(1);                  // the one after hangs (never answers)
//! pd.answer_next(1, 400, "{}");     // then any status and body
//! pd.stop().await;                  // connections refused, until `restart`
//! assert_eq!(pd.accepted().len(), 1);
//! ```

// A refusal carries axum's `Response` (large) in `Err`: fine for a test fixture's few calls.
#![allow(clippy::result_large_err)]

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};

/// Which vendor a [`Receiver`] stands in for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Vendor {
    /// PagerDuty Events API v2: `POST /v2/enqueue`, the routing key in the body.
    PagerDuty,
    /// A Slack incoming webhook: `POST /services/T…/B…/<token>`.
    Slack,
    /// A Teams Workflows webhook: `POST /workflows/<id>/triggers/manual/paths/invoke?…&sig=…`.
    Teams,
}

/// One request as a receiver saw it, with what it answered.
#[derive(Debug, Clone)]
pub struct Request {
    /// The HTTP method.
    pub method: String,
    /// The path and query, as sent.
    pub path: String,
    /// The `Content-Type` header, when sent.
    pub content_type: Option<String>,
    /// The body, as text.
    pub body: String,
    /// The status answered; `None` while the request hangs.
    pub status: Option<u16>,
    /// Why the receiver refused it, when its own checks did (the vendor's error text).
    pub refusal: Option<String>,
}

impl Request {
    /// The body as JSON (`Null` when it is not JSON).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

/// What the next request gets instead of the receiver's own judgement.
#[derive(Debug, Clone, Copy)]
enum Fault {
    /// This status, with the vendor's usual body for it, and a `Retry-After` in seconds.
    Status(u16, Option<u64>),
    /// No answer, ever (the client's timeout ends it).
    Hang,
    /// This status, with the request (path, query and body) echoed in the error body, as a
    /// careless proxy or debug endpoint would.
    Echo(u16),
    /// This status with this body (JSON when it parses as JSON, else text).
    Body(u16, &'static str),
}

struct Shared {
    vendor: Vendor,
    faults: Mutex<VecDeque<Fault>>,
    seen: Mutex<Vec<Request>>,
}

/// A vendor stand-in on `127.0.0.1`: strict checks, vendor answers, scripted faults, and a
/// record of every request. Stops serving when dropped.
pub struct Receiver {
    shared: Arc<Shared>,
    addr: SocketAddr,
    server: Option<tokio::task::JoinHandle<()>>,
}

/// A valid PagerDuty routing key (32 characters) that the receiver accepts.
pub const ROUTING_KEY: &str = "R0123456789abcdef0123456789ABCDE";

/// The token of [`Receiver::url`] for Slack and the signature for Teams.
pub const WEBHOOK_TOKEN: &str = "XwebhookTOKEN0123456789ab";

/// PagerDuty's limits (Events API v2 "Send an Alert Event" and "Overview").
pub mod pagerduty {
    /// The length of a routing key.
    pub const ROUTING_KEY_LEN: usize = 32;
    /// The longest `dedup_key`.
    pub const MAX_DEDUP_KEY: usize = 255;
    /// The longest `payload.summary`.
    pub const MAX_SUMMARY: usize = 1024;
    /// The largest event, in bytes.
    pub const MAX_EVENT: usize = 512 * 1024;
    /// `payload.severity`'s words.
    pub const SEVERITIES: [&str; 4] = ["critical", "error", "warning", "info"];
    /// `event_action`'s words.
    pub const ACTIONS: [&str; 3] = ["trigger", "acknowledge", "resolve"];
}

/// Slack's Block Kit limits for a message.
pub mod slack {
    /// Most blocks in a message.
    pub const MAX_BLOCKS: usize = 50;
    /// Longest `header` text.
    pub const MAX_HEADER: usize = 150;
    /// Longest `section` text (and `context` element text).
    pub const MAX_TEXT: usize = 3000;
    /// Most `fields` of a section.
    pub const MAX_FIELDS: usize = 10;
    /// Longest field text.
    pub const MAX_FIELD: usize = 2000;
    /// Most elements of a `context` block.
    pub const MAX_CONTEXT: usize = 10;
}

/// Teams' limits for a webhook message.
pub mod teams {
    /// The largest message, in bytes (counted in UTF-16 when the body names no charset).
    pub const MAX_MESSAGE: usize = 28 * 1024;
    /// Adaptive Card versions Teams renders.
    pub const VERSIONS: [&str; 6] = ["1.0", "1.1", "1.2", "1.3", "1.4", "1.5"];
}

impl Receiver {
    /// Starts a stand-in for `vendor` on a free loopback port.
    pub async fn start(vendor: Vendor) -> Receiver {
        let shared = Arc::new(Shared {
            vendor,
            faults: Mutex::new(VecDeque::new()),
            seen: Mutex::new(Vec::new()),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = Some(tokio::spawn(serve(listener, shared.clone())));
        Receiver {
            shared,
            addr,
            server,
        }
    }

    /// A PagerDuty Events API v2 stand-in.
    pub async fn pagerduty() -> Receiver {
        Receiver::start(Vendor::PagerDuty).await
    }

    /// A Slack incoming webhook stand-in.
    pub async fn slack() -> Receiver {
        Receiver::start(Vendor::Slack).await
    }

    /// A Teams Workflows webhook stand-in.
    pub async fn teams() -> Receiver {
        Receiver::start(Vendor::Teams).await
    }

    /// The URL to configure: PagerDuty's events URL, or a Slack or Teams webhook URL
    /// carrying [`WEBHOOK_TOKEN`].
    pub fn url(&self) -> String {
        self.webhook_url(WEBHOOK_TOKEN)
    }

    /// A webhook URL whose secret part (Slack's token, Teams' `sig`) is `token` (letters and
    /// digits, at least 8): the receiver takes any such URL, so a test can put a canary in
    /// it. For PagerDuty, the events URL (its secret is the routing key, in the body).
    pub fn webhook_url(&self, token: &str) -> String {
        let base = format!("http://{}", self.addr);
        match self.shared.vendor {
            Vendor::PagerDuty => format!("{base}/v2/enqueue"),
            Vendor::Slack => format!("{base}/services/T0TOKENWD/B0TOKENWD/{token}"),
            Vendor::Teams => format!(
                "{base}/workflows/0f1e2d3c4b5a69788796a5b4c3d2e1f0/triggers/manual/paths/invoke\
                 ?api-version=1&sp=%2Ftriggers%2Fmanual%2Frun&sv=1.0&sig={token}"
            ),
        }
    }

    /// A routing key PagerDuty's stand-in accepts ([`ROUTING_KEY`]).
    pub fn routing_key(&self) -> String {
        ROUTING_KEY.to_string()
    }

    /// Every request so far, in order of arrival.
    pub fn received(&self) -> Vec<Request> {
        self.shared.seen.lock().unwrap().clone()
    }

    /// The bodies of the requests answered with success, as JSON, in order.
    pub fn accepted(&self) -> Vec<serde_json::Value> {
        self.received()
            .iter()
            .filter(|r| r.status.is_some_and(|s| (200..300).contains(&s)))
            .map(Request::json)
            .collect()
    }

    /// The first `n` bodies answered with success, once there are `n`, waiting up to
    /// `within` (for a daemon that delivers in the background).
    ///
    /// # Panics
    /// When fewer than `n` arrived in time, with what did.
    pub async fn wait_accepted(&self, n: usize, within: Duration) -> Vec<serde_json::Value> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let got = self.accepted();
            if got.len() >= n {
                return got;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{} of {n} accepted within {within:?}; received: {:#?}",
                got.len(),
                self.received()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The next `n` requests get `status` with the vendor's usual body for it (and
    /// `Retry-After: retry_after` seconds when given), whatever they hold.
    pub fn fail_next(&self, n: usize, status: u16, retry_after: Option<u64>) {
        self.push(n, Fault::Status(status, retry_after));
    }

    /// The next `n` requests are read and never answered.
    pub fn hang_next(&self, n: usize) {
        self.push(n, Fault::Hang);
    }

    /// The next `n` requests get `status` with the whole request (path, query, body) echoed
    /// in the vendor's error body: what leaks if the client does not scrub answers.
    pub fn echo_next(&self, n: usize, status: u16) {
        self.push(n, Fault::Echo(status));
    }

    /// The next `n` requests get `status` with `body` (sent as JSON when it is JSON): an
    /// answer the canned ones do not cover.
    pub fn answer_next(&self, n: usize, status: u16, body: &'static str) {
        self.push(n, Fault::Body(status, body));
    }

    fn push(&self, n: usize, fault: Fault) {
        let mut f = self.shared.faults.lock().unwrap();
        f.extend(std::iter::repeat_n(fault, n));
    }

    /// Stops serving: connections are refused (and open ones dropped) until [`restart`].
    ///
    /// [`restart`]: Receiver::restart
    pub async fn stop(&mut self) {
        if let Some(server) = self.server.take() {
            server.abort();
            let _ = server.await;
        }
    }

    /// Serves again on the same port, with the same record and faults.
    pub async fn restart(&mut self) {
        self.stop().await;
        let listener = tokio::net::TcpListener::bind(self.addr).await.unwrap();
        self.server = Some(tokio::spawn(serve(listener, self.shared.clone())));
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        if let Some(server) = self.server.take() {
            server.abort();
        }
    }
}

/// Accepts connections until aborted; each connection is served by a task of a set owned
/// here, so aborting this task drops every open connection too (an outage is an outage,
/// pooled connections included).
async fn serve(listener: tokio::net::TcpListener, shared: Arc<Shared>) {
    let app = axum::Router::new().fallback(answer).with_state(shared);
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let service = hyper_util::service::TowerToHyperService::new(app.clone());
        connections.spawn(async move {
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                .await;
        });
        while connections.try_join_next().is_some() {}
    }
}

async fn answer(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let path = uri
        .path_and_query()
        .map_or_else(|| uri.path().to_string(), |p| p.to_string());
    let text = String::from_utf8_lossy(&body).into_owned();
    let index = {
        let mut seen = shared.seen.lock().unwrap();
        seen.push(Request {
            method: method.to_string(),
            path: path.clone(),
            content_type: content_type.clone(),
            body: text.clone(),
            status: None,
            refusal: None,
        });
        seen.len() - 1
    };
    let fault = shared.faults.lock().unwrap().pop_front();
    let (status, refusal, response) = match fault {
        Some(Fault::Hang) => {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            (504, None, plain(504, "hung"))
        }
        Some(Fault::Status(s, after)) => {
            let mut r = canned(shared.vendor, s);
            if let Some(after) = after {
                r.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(after));
            }
            (s, None, r)
        }
        Some(Fault::Echo(s)) => (s, None, echo(shared.vendor, s, &method, &path, &text)),
        Some(Fault::Body(s, b)) => match serde_json::from_str(b) {
            Ok(v) => (s, None, json(s, v)),
            Err(_) => (s, None, plain(s, b)),
        },
        None => {
            let verdict = match shared.vendor {
                Vendor::PagerDuty => judge_pagerduty(&method, &uri, content_type.as_deref(), &body),
                Vendor::Slack => judge_slack(&method, &uri, content_type.as_deref(), &body),
                Vendor::Teams => judge_teams(&method, &uri, content_type.as_deref(), &body),
            };
            match verdict {
                Ok(r) => (r.status().as_u16(), None, r),
                Err((s, why, r)) => (s, Some(why), r),
            }
        }
    };
    let mut seen = shared.seen.lock().unwrap();
    seen[index].status = Some(status);
    seen[index].refusal = refusal;
    response
}

/// A refusal: the status, the reason kept in the record, and the vendor's answer.
type Refusal = (u16, String, Response);

fn plain(status: u16, text: &str) -> Response {
    (
        StatusCode::from_u16(status).unwrap(),
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        text.to_string(),
    )
        .into_response()
}

fn json(status: u16, v: serde_json::Value) -> Response {
    (
        StatusCode::from_u16(status).unwrap(),
        [(header::CONTENT_TYPE, "application/json")],
        v.to_string(),
    )
        .into_response()
}

/// Whether the `Content-Type` is JSON (a `charset` parameter allowed).
fn is_json(content_type: Option<&str>) -> bool {
    content_type.is_some_and(|c| {
        c.split(';')
            .next()
            .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"))
    })
}

fn chars(v: &serde_json::Value) -> usize {
    v.as_str().map_or(0, |s| s.chars().count())
}

// ---------------------------------------------------------------- PagerDuty

fn pd_invalid(errors: Vec<String>) -> Refusal {
    let why = errors.join("; ");
    (
        400,
        why,
        json(
            400,
            serde_json::json!({
                "status": "invalid event",
                "message": "Event object is invalid",
                "errors": errors,
            }),
        ),
    )
}

fn judge_pagerduty(
    method: &Method,
    uri: &Uri,
    content_type: Option<&str>,
    body: &[u8],
) -> Result<Response, Refusal> {
    if uri.path() != "/v2/enqueue" {
        return Err((404, "no such path".into(), plain(404, "Not Found")));
    }
    if method != Method::POST {
        return Err((405, "not POST".into(), plain(405, "Method Not Allowed")));
    }
    if body.len() > pagerduty::MAX_EVENT {
        return Err(pd_invalid(vec!["Event is larger than 512 KB".into()]));
    }
    if !is_json(content_type) {
        return Err(pd_invalid(vec![
            "Content-Type must be application/json".into(),
        ]));
    }
    let Ok(event) = serde_json::from_slice::<serde_json::Value>(body) else {
        return Err(pd_invalid(vec!["Request body is not valid JSON".into()]));
    };
    let errors = pagerduty_errors(&event);
    if !errors.is_empty() {
        return Err(pd_invalid(errors));
    }
    Ok(json(
        202,
        serde_json::json!({
            "status": "success",
            "message": "Event processed",
            "dedup_key": event.get("dedup_key").cloned().unwrap_or("generated-0001".into()),
        }),
    ))
}

/// Everything wrong with `event` as PagerDuty's Events API v2 documents it, each naming its
/// field as PagerDuty's own errors do.
pub fn pagerduty_errors(event: &serde_json::Value) -> Vec<String> {
    let mut errors = Vec::new();
    let Some(obj) = event.as_object() else {
        return vec!["Event object must be a JSON object".into()];
    };
    for k in obj.keys() {
        if ![
            "routing_key",
            "event_action",
            "dedup_key",
            "payload",
            "images",
            "links",
            "client",
            "client_url",
        ]
        .contains(&k.as_str())
        {
            errors.push(format!("'{k}' is not a field of an event"));
        }
    }
    match obj.get("routing_key").and_then(|v| v.as_str()) {
        None => errors.push("'routing_key' is missing or not a string".into()),
        Some(k) if k.chars().count() != pagerduty::ROUTING_KEY_LEN => {
            errors.push("Length of 'routing_key' is incorrect (should be 32 characters)".into())
        }
        Some(_) => {}
    }
    let action = obj.get("event_action").and_then(|v| v.as_str());
    if !action.is_some_and(|a| pagerduty::ACTIONS.contains(&a)) {
        errors.push(
            "'event_action' is invalid (must be one of trigger, acknowledge, resolve)".into(),
        );
    }
    match obj.get("dedup_key") {
        None if action.is_some_and(|a| a != "trigger") => {
            errors.push("'dedup_key' is required to acknowledge or resolve".into())
        }
        None => {}
        Some(k) if !k.is_string() => errors.push("'dedup_key' must be a string".into()),
        Some(k) if chars(k) > pagerduty::MAX_DEDUP_KEY || chars(k) == 0 => {
            errors.push("Length of 'dedup_key' is incorrect (should be 1 to 255 characters)".into())
        }
        Some(_) => {}
    }
    for k in ["client", "client_url"] {
        if obj.get(k).is_some_and(|v| !v.is_string()) {
            errors.push(format!("'{k}' must be a string"));
        }
    }
    if let Some(links) = obj.get("links") {
        match links.as_array() {
            None => errors.push("'links' must be an array".into()),
            Some(links) => {
                for (i, l) in links.iter().enumerate() {
                    let ok_keys = l
                        .as_object()
                        .is_some_and(|o| o.keys().all(|k| k == "href" || k == "text"));
                    if !ok_keys
                        || l.get("href").is_none_or(|h| chars(h) == 0)
                        || l.get("text").is_some_and(|t| !t.is_string())
                    {
                        errors.push(format!(
                            "'links[{i}]' must be an object with a string 'href' and an optional string 'text'"
                        ));
                    }
                }
            }
        }
    }
    if let Some(images) = obj.get("images") {
        let ok = images.as_array().is_some_and(|a| {
            a.iter().all(|i| {
                i.get("src")
                    .and_then(|s| s.as_str())
                    .is_some_and(|s| s.starts_with("https://"))
            })
        });
        if !ok {
            errors.push("'images' must be objects with an https 'src'".into());
        }
    }
    if action == Some("trigger") {
        match obj.get("payload").and_then(|p| p.as_object()) {
            None => errors.push("'payload' is missing (required to trigger)".into()),
            Some(p) => payload_errors(p, &mut errors),
        }
    }
    errors
}

fn payload_errors(p: &serde_json::Map<String, serde_json::Value>, errors: &mut Vec<String>) {
    for k in p.keys() {
        if ![
            "summary",
            "source",
            "severity",
            "timestamp",
            "component",
            "group",
            "class",
            "custom_details",
        ]
        .contains(&k.as_str())
        {
            errors.push(format!("'payload.{k}' is not a field of a payload"));
        }
    }
    match p.get("summary") {
        Some(s) if s.is_string() && chars(s) > 0 && chars(s) <= pagerduty::MAX_SUMMARY => {}
        Some(s) if chars(s) > pagerduty::MAX_SUMMARY => errors.push(
            "Length of 'payload.summary' is incorrect (should be at most 1024 characters)".into(),
        ),
        _ => errors.push("'payload.summary' is missing or blank".into()),
    }
    if p.get("source")
        .and_then(|s| s.as_str())
        .is_none_or(|s| s.trim().is_empty())
    {
        errors.push("'payload.source' is missing or blank".into());
    }
    if !p
        .get("severity")
        .and_then(|s| s.as_str())
        .is_some_and(|s| pagerduty::SEVERITIES.contains(&s))
    {
        errors.push(
            "'payload.severity' is invalid (must be one of critical, error, warning, info)".into(),
        );
    }
    if let Some(t) = p.get("timestamp")
        && t.as_str()
            .is_none_or(|t| t.parse::<jiff::Timestamp>().is_err())
    {
        errors.push("'payload.timestamp' is not an ISO 8601 timestamp".into());
    }
    for k in ["component", "group", "class"] {
        if p.get(k).is_some_and(|v| !v.is_string()) {
            errors.push(format!("'payload.{k}' must be a string"));
        }
    }
    if p.get("custom_details").is_some_and(|v| !v.is_object()) {
        errors.push("'payload.custom_details' must be an object".into());
    }
}

// ---------------------------------------------------------------- Slack

fn slack_refuse(status: u16, word: &str) -> Refusal {
    (status, word.to_string(), plain(status, word))
}

fn judge_slack(
    method: &Method,
    uri: &Uri,
    content_type: Option<&str>,
    body: &[u8],
) -> Result<Response, Refusal> {
    let segments: Vec<&str> = uri.path().trim_start_matches('/').split('/').collect();
    let path_ok = matches!(
        segments[..],
        ["services", t, b, token]
            if t.starts_with('T') && b.starts_with('B') && token_ok(token)
    );
    if !path_ok || uri.query().is_some() {
        return Err(slack_refuse(404, "no_service"));
    }
    if method != Method::POST {
        return Err(slack_refuse(405, "invalid_method"));
    }
    if !is_json(content_type) {
        return Err(slack_refuse(400, "invalid_payload"));
    }
    let Ok(msg) = serde_json::from_slice::<serde_json::Value>(body) else {
        return Err(slack_refuse(400, "invalid_payload"));
    };
    match slack_error(&msg) {
        Some(word) => Err(slack_refuse(400, word)),
        None => Ok(plain(200, "ok")),
    }
}

fn token_ok(token: &str) -> bool {
    token.len() >= 8 && token.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// Slack's error word for `msg`, or `None` when Slack would post it.
pub fn slack_error(msg: &serde_json::Value) -> Option<&'static str> {
    let Some(obj) = msg.as_object() else {
        return Some("invalid_payload");
    };
    let text = obj.get("text");
    if text.is_some_and(|t| !t.is_string()) {
        return Some("invalid_payload");
    }
    let blocks = obj.get("blocks");
    if text.is_none_or(|t| chars(t) == 0) && blocks.is_none() {
        return Some("no_text");
    }
    if let Some(blocks) = blocks {
        let Some(blocks) = blocks.as_array() else {
            return Some("invalid_blocks_format");
        };
        if blocks.is_empty() || blocks.len() > slack::MAX_BLOCKS {
            return Some("invalid_blocks");
        }
        if !blocks.iter().all(block_ok) {
            return Some("invalid_blocks");
        }
    }
    None
}

fn only_keys(v: &serde_json::Value, allowed: &[&str]) -> bool {
    v.as_object()
        .is_some_and(|o| o.keys().all(|k| allowed.contains(&k.as_str())))
}

/// A text object: `plain_text` (`emoji` allowed) or `mrkdwn` (`verbatim` allowed), with a
/// non-empty text of at most `max` characters.
fn text_ok(t: &serde_json::Value, max: usize, plain_only: bool) -> bool {
    let kind = t.get("type").and_then(|k| k.as_str());
    let keys_ok = match kind {
        Some("plain_text") => only_keys(t, &["type", "text", "emoji"]),
        Some("mrkdwn") if !plain_only => only_keys(t, &["type", "text", "verbatim"]),
        _ => false,
    };
    let len = t.get("text").filter(|s| s.is_string()).map(chars);
    keys_ok && len.is_some_and(|n| n > 0 && n <= max)
}

fn block_ok(b: &serde_json::Value) -> bool {
    if b.get("block_id")
        .is_some_and(|id| !id.is_string() || chars(id) > 255)
    {
        return false;
    }
    match b.get("type").and_then(|t| t.as_str()) {
        Some("header") => {
            only_keys(b, &["type", "text", "block_id"])
                && b.get("text")
                    .is_some_and(|t| text_ok(t, slack::MAX_HEADER, true))
        }
        Some("section") => {
            let text = b.get("text");
            let fields = b.get("fields");
            only_keys(b, &["type", "text", "fields", "block_id"])
                && (text.is_some() || fields.is_some())
                && text.is_none_or(|t| text_ok(t, slack::MAX_TEXT, false))
                && fields.is_none_or(|f| {
                    f.as_array().is_some_and(|f| {
                        !f.is_empty()
                            && f.len() <= slack::MAX_FIELDS
                            && f.iter().all(|t| text_ok(t, slack::MAX_FIELD, false))
                    })
                })
        }
        Some("context") => {
            only_keys(b, &["type", "elements", "block_id"])
                && b.get("elements")
                    .and_then(|e| e.as_array())
                    .is_some_and(|e| {
                        !e.is_empty()
                            && e.len() <= slack::MAX_CONTEXT
                            && e.iter().all(|t| text_ok(t, slack::MAX_TEXT, false))
                    })
        }
        Some("divider") => only_keys(b, &["type", "block_id"]),
        _ => false,
    }
}

// ---------------------------------------------------------------- Teams

fn teams_error(status: u16, code: &str, message: &str) -> Response {
    json(
        status,
        serde_json::json!({ "error": { "code": code, "message": message } }),
    )
}

fn teams_refuse(status: u16, code: &str, message: String) -> Refusal {
    let r = teams_error(status, code, &message);
    (status, format!("{code}: {message}"), r)
}

fn judge_teams(
    method: &Method,
    uri: &Uri,
    content_type: Option<&str>,
    body: &[u8],
) -> Result<Response, Refusal> {
    let segments: Vec<&str> = uri.path().trim_start_matches('/').split('/').collect();
    let path_ok = matches!(
        segments[..],
        ["workflows", id, "triggers", "manual", "paths", "invoke"] if id.len() >= 16
    );
    if !path_ok {
        return Err(teams_refuse(
            404,
            "WorkflowNotFound",
            "The workflow could not be found.".into(),
        ));
    }
    let query: Vec<(String, String)> =
        url::form_urlencoded::parse(uri.query().unwrap_or("").as_bytes())
            .into_owned()
            .collect();
    let get = |k: &str| query.iter().find(|(q, _)| q == k).map(|(_, v)| v.as_str());
    if !get("sig").is_some_and(token_ok) {
        return Err(teams_refuse(
            401,
            "DirectApiAuthorizationRequired",
            "The request must be authenticated: a valid signature (sig) is required.".into(),
        ));
    }
    if get("api-version").is_none() {
        return Err(teams_refuse(
            400,
            "MissingApiVersionParameter",
            "The api-version query parameter is required.".into(),
        ));
    }
    if method != Method::POST {
        return Err(teams_refuse(
            405,
            "MethodNotAllowed",
            "The trigger takes POST.".into(),
        ));
    }
    if !is_json(content_type) {
        return Err(teams_refuse(
            415,
            "UnsupportedMediaType",
            "The body must be application/json.".into(),
        ));
    }
    // Without a charset, Teams reads the body as UTF-16 before applying its limit.
    let text = String::from_utf8_lossy(body);
    let named_charset = content_type.is_some_and(|c| c.to_ascii_lowercase().contains("charset"));
    let size = if named_charset {
        body.len()
    } else {
        text.encode_utf16().count() * 2
    };
    if size > teams::MAX_MESSAGE {
        return Err(teams_refuse(
            413,
            "MessageTooLarge",
            format!("The message is {size} bytes; at most 28 KB is taken."),
        ));
    }
    let Ok(msg) = serde_json::from_slice::<serde_json::Value>(body) else {
        return Err(teams_refuse(
            400,
            "InvalidRequestContent",
            "The request content is not valid JSON.".into(),
        ));
    };
    if let Err(why) = teams_problem(&msg) {
        return Err(teams_refuse(
            400,
            "TriggerInputSchemaMismatch",
            format!(
                "The input body for trigger 'manual' of type 'Request' did not match its schema definition. Error details: '{why}'."
            ),
        ));
    }
    Ok((StatusCode::ACCEPTED, "").into_response())
}

/// What is wrong with `msg` as a Teams webhook message carrying Adaptive Cards, naming the
/// path of the field; `Ok` when Teams would post it.
pub fn teams_problem(msg: &serde_json::Value) -> Result<(), String> {
    if msg.get("type").and_then(|t| t.as_str()) != Some("message") {
        return Err("type must be \"message\"".into());
    }
    if !only_keys(msg, &["type", "attachments", "summary", "text"]) {
        return Err("the message has an unknown field".into());
    }
    let Some(attachments) = msg
        .get("attachments")
        .and_then(|a| a.as_array())
        .filter(|a| !a.is_empty())
    else {
        return Err("attachments must be a non-empty array".into());
    };
    for (i, a) in attachments.iter().enumerate() {
        if !only_keys(a, &["contentType", "contentUrl", "content", "name"]) {
            return Err(format!("attachments[{i}] has an unknown field"));
        }
        if a.get("contentType").and_then(|c| c.as_str())
            != Some("application/vnd.microsoft.card.adaptive")
        {
            return Err(format!(
                "attachments[{i}].contentType must be application/vnd.microsoft.card.adaptive"
            ));
        }
        if a.get("contentUrl")
            .is_some_and(|u| !u.is_null() && !u.is_string())
        {
            return Err(format!(
                "attachments[{i}].contentUrl must be null or a string"
            ));
        }
        let card = a.get("content").unwrap_or(&serde_json::Value::Null);
        card_problem(card).map_err(|e| format!("attachments[{i}].content.{e}"))?;
    }
    Ok(())
}

fn card_problem(card: &serde_json::Value) -> Result<(), String> {
    if !only_keys(
        card,
        &[
            "$schema",
            "type",
            "version",
            "body",
            "actions",
            "msteams",
            "fallbackText",
            "speak",
        ],
    ) {
        return Err("(card) has an unknown field".into());
    }
    if card.get("type").and_then(|t| t.as_str()) != Some("AdaptiveCard") {
        return Err("type must be \"AdaptiveCard\"".into());
    }
    if !card
        .get("version")
        .and_then(|v| v.as_str())
        .is_some_and(|v| teams::VERSIONS.contains(&v))
    {
        return Err("version must be one Teams renders (1.0 to 1.5)".into());
    }
    let Some(body) = card
        .get("body")
        .and_then(|b| b.as_array())
        .filter(|b| !b.is_empty())
    else {
        return Err("body must be a non-empty array".into());
    };
    for (i, e) in body.iter().enumerate() {
        element_problem(e).map_err(|why| format!("body[{i}].{why}"))?;
    }
    if let Some(actions) = card.get("actions") {
        let Some(actions) = actions.as_array() else {
            return Err("actions must be an array".into());
        };
        for (i, a) in actions.iter().enumerate() {
            let ok = a.get("type").and_then(|t| t.as_str()) == Some("Action.OpenUrl")
                && only_keys(a, &["type", "title", "url"])
                && a.get("title").is_some_and(|t| chars(t) > 0)
                && a.get("url")
                    .and_then(|u| u.as_str())
                    .is_some_and(|u| u.starts_with("https://") || u.starts_with("http://"));
            if !ok {
                return Err(format!(
                    "actions[{i}] must be an Action.OpenUrl with a title and an http(s) url"
                ));
            }
        }
    }
    Ok(())
}

const COLOURS: [&str; 7] = [
    "default",
    "dark",
    "light",
    "accent",
    "good",
    "warning",
    "attention",
];
const SIZES: [&str; 5] = ["default", "small", "medium", "large", "extralarge"];
const WEIGHTS: [&str; 3] = ["default", "lighter", "bolder"];
const SPACINGS: [&str; 7] = [
    "none",
    "small",
    "default",
    "medium",
    "large",
    "extralarge",
    "padding",
];

fn enum_ok(e: &serde_json::Value, key: &str, words: &[&str]) -> bool {
    e.get(key).is_none_or(|v| {
        v.as_str()
            .is_some_and(|s| words.contains(&s.to_ascii_lowercase().as_str()))
    })
}

fn element_problem(e: &serde_json::Value) -> Result<(), String> {
    match e.get("type").and_then(|t| t.as_str()) {
        Some("TextBlock") => {
            if !only_keys(
                e,
                &[
                    "type",
                    "text",
                    "color",
                    "size",
                    "weight",
                    "wrap",
                    "isSubtle",
                    "spacing",
                    "separator",
                    "maxLines",
                    "horizontalAlignment",
                    "fontType",
                    "id",
                ],
            ) {
                return Err("(TextBlock) has an unknown field".into());
            }
            if !e.get("text").is_some_and(|t| t.is_string()) {
                return Err("text is required".into());
            }
            for (k, words) in [
                ("color", &COLOURS[..]),
                ("size", &SIZES[..]),
                ("weight", &WEIGHTS[..]),
                ("spacing", &SPACINGS[..]),
            ] {
                if !enum_ok(e, k, words) {
                    return Err(format!("{k} is not one of {}", words.join(", ")));
                }
            }
            for k in ["wrap", "isSubtle", "separator"] {
                if e.get(k).is_some_and(|v| !v.is_boolean()) {
                    return Err(format!("{k} must be a boolean"));
                }
            }
            Ok(())
        }
        Some("FactSet") => {
            if !only_keys(e, &["type", "facts", "spacing", "separator", "id"]) {
                return Err("(FactSet) has an unknown field".into());
            }
            let ok = e.get("facts").and_then(|f| f.as_array()).is_some_and(|f| {
                f.iter().all(|f| {
                    only_keys(f, &["title", "value"])
                        && f.get("title").is_some_and(|t| t.is_string())
                        && f.get("value").is_some_and(|v| v.is_string())
                })
            });
            if ok {
                Ok(())
            } else {
                Err("facts must be {title, value} strings".into())
            }
        }
        other => Err(format!(
            "type {other:?} is not an element this receiver knows"
        )),
    }
}

// ---------------------------------------------------------------- canned and echoed answers

/// The vendor's usual answer for `status`, for [`Receiver::fail_next`].
fn canned(vendor: Vendor, status: u16) -> Response {
    match vendor {
        Vendor::PagerDuty => match status {
            400 => json(
                400,
                serde_json::json!({
                    "status": "invalid event",
                    "message": "Event object is invalid",
                    "errors": ["'payload.summary' is missing or blank"],
                }),
            ),
            401..=404 => json(
                status,
                serde_json::json!({"status": "unauthorized", "message": "Invalid routing key"}),
            ),
            429 => plain(429, ""),
            _ => plain(status, "Internal Server Error"),
        },
        Vendor::Slack => {
            let word = match status {
                400 => "invalid_blocks",
                403 => "action_prohibited",
                404 => "no_service",
                410 => "channel_is_archived",
                429 => "rate_limited",
                500..=599 => "rollup_error",
                _ => "invalid_payload",
            };
            plain(status, word)
        }
        Vendor::Teams => {
            let (code, message) = match status {
                400 => (
                    "TriggerInputSchemaMismatch",
                    "The input body did not match its schema definition.",
                ),
                401 => (
                    "DirectApiAuthorizationRequired",
                    "The request must be authenticated.",
                ),
                403 => (
                    "AuthorizationFailed",
                    "The signature is not valid for this workflow.",
                ),
                404 => ("WorkflowNotFound", "The workflow could not be found."),
                429 => (
                    "WorkflowTriggeredTooFrequently",
                    "The workflow was triggered too often.",
                ),
                _ => ("ServiceUnavailable", "The service is unavailable."),
            };
            teams_error(status, code, message)
        }
    }
}

/// An error answer for `status` that quotes the whole request back.
fn echo(vendor: Vendor, status: u16, method: &Method, path: &str, body: &str) -> Response {
    let quoted = format!("{method} {path} {body}");
    match vendor {
        Vendor::PagerDuty => json(
            status,
            serde_json::json!({
                "status": "invalid event",
                "message": format!("Event object is invalid: {quoted}"),
                "errors": [format!("could not process {quoted}")],
            }),
        ),
        Vendor::Slack => plain(status, &format!("invalid_payload: {quoted}")),
        Vendor::Teams => teams_error(status, "BadRequest", &quoted),
    }
}
