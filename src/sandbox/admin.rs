//! The admin HTTP API under `/_sandbox/`, so that another process (the real binary under test,
//! a user's shell) can drive a running sandbox: clock, tokens, invalidation, app secret, faults,
//! state and sent messages. Bodies are JSON; token values never appear in `state`.

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::fault::Fault;
use super::scenario::TokenSpec;
use super::world::{Shared, lock};

/// The admin routes, to merge into the sandbox router.
pub(crate) fn routes() -> Router<Shared> {
    Router::new()
        .route("/_sandbox/state", get(state))
        .route("/_sandbox/clock", post(clock))
        .route("/_sandbox/tokens", post(tokens))
        .route("/_sandbox/invalidate", post(invalidate))
        .route("/_sandbox/app_secret", post(app_secret))
        .route(
            "/_sandbox/faults",
            post(add_fault).delete(clear_faults).get(list_faults),
        )
        .route("/_sandbox/messages", get(messages))
        .route("/_sandbox/quirks", post(set_quirks).get(get_quirks))
        .route("/_sandbox/usage", post(set_usage))
        .route("/_sandbox/app_settings", post(app_settings))
}

fn bad_request(message: String) -> Response {
    (
        StatusCode::BAD_REQUEST,
        axum::Json(json!({ "error": message })),
    )
        .into_response()
}

/// Parses a JSON body into `T`; the error is serde's explanation, for a 400 answer.
fn parse<T: DeserializeOwned>(body: &Bytes) -> Result<T, String> {
    serde_json::from_slice(body).map_err(|e| format!("invalid JSON body: {e}"))
}

async fn state(State(shared): State<Shared>) -> Response {
    axum::Json(lock(&shared).snapshot()).into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ClockBody {
    advance_secs: Option<i64>,
    set: Option<i64>,
}

async fn clock(State(shared): State<Shared>, body: Bytes) -> Response {
    let b: ClockBody = match parse(&body) {
        Ok(b) => b,
        Err(e) => return bad_request(e),
    };
    let mut w = lock(&shared);
    match (b.advance_secs, b.set) {
        (Some(s), None) => w.advance(s),
        (None, Some(t)) => w.set_now(t),
        _ => return bad_request("give exactly one of advance_secs or set".into()),
    }
    axum::Json(json!({ "now": w.now() })).into_response()
}

async fn tokens(State(shared): State<Shared>, body: Bytes) -> Response {
    // An empty body asks for the default token shape.
    let spec: TokenSpec = if body.iter().all(u8::is_ascii_whitespace) {
        TokenSpec::default()
    } else {
        match parse(&body) {
            Ok(s) => s,
            Err(e) => return bad_request(e),
        }
    };
    let mut w = lock(&shared);
    if let Some(app) = &spec.app_id
        && w.app(app).is_none()
    {
        return bad_request(format!("unknown app_id {app}"));
    }
    let value = w.issue(&spec);
    let expires_at = w.tokens.get(&value).map(|t| t.expires_at);
    axum::Json(json!({ "access_token": value, "expires_at": expires_at })).into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct InvalidateBody {
    token: String,
    #[serde(default = "default_subcode")]
    subcode: u32,
}

fn default_subcode() -> u32 {
    460
}

async fn invalidate(State(shared): State<Shared>, body: Bytes) -> Response {
    let b: InvalidateBody = match parse(&body) {
        Ok(b) => b,
        Err(e) => return bad_request(e),
    };
    if lock(&shared).invalidate(&b.token, b.subcode) {
        axum::Json(json!({ "invalidated": true, "subcode": b.subcode })).into_response()
    } else {
        (
            StatusCode::NOT_FOUND,
            axum::Json(json!({ "error": "unknown token" })),
        )
            .into_response()
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SecretBody {
    secret: String,
    app_id: Option<String>,
}

async fn app_secret(State(shared): State<Shared>, body: Bytes) -> Response {
    let b: SecretBody = match parse(&body) {
        Ok(b) => b,
        Err(e) => return bad_request(e),
    };
    if b.secret.is_empty() {
        return bad_request("secret must not be empty".into());
    }
    if lock(&shared).reset_secret(b.app_id.as_deref(), &b.secret) {
        axum::Json(json!({ "reset": true })).into_response()
    } else {
        bad_request("unknown app_id".into())
    }
}

async fn add_fault(State(shared): State<Shared>, body: Bytes) -> Response {
    let f: Fault = match parse(&body) {
        Ok(f) => f,
        Err(e) => return bad_request(e),
    };
    let mut w = lock(&shared);
    w.faults.push(f);
    axum::Json(json!({ "pending": w.faults.len() })).into_response()
}

async fn clear_faults(State(shared): State<Shared>) -> Response {
    let mut w = lock(&shared);
    let n = w.faults.len();
    w.faults.clear();
    axum::Json(json!({ "cleared": n })).into_response()
}

async fn list_faults(State(shared): State<Shared>) -> Response {
    axum::Json(json!(lock(&shared).faults)).into_response()
}

async fn messages(State(shared): State<Shared>) -> Response {
    let list: Value = json!(lock(&shared).messages);
    axum::Json(list).into_response()
}

/// A partial [`super::quirks::Quirks`]: the fields given change, the others stay.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct QuirksBody {
    omit_target_ids: Option<bool>,
    refresh_same_string: Option<bool>,
    require_expiring_tokens: Option<bool>,
    /// Throttle the business's assets for this many minutes from now (0 ends it).
    business_throttle_minutes: Option<i64>,
    omit_debug_fields: Option<Vec<String>>,
}

async fn set_quirks(State(shared): State<Shared>, body: Bytes) -> Response {
    let b: QuirksBody = match parse(&body) {
        Ok(b) => b,
        Err(e) => return bad_request(e),
    };
    let mut w = lock(&shared);
    let now = w.now();
    let q = &mut w.scenario.quirks;
    if let Some(v) = b.omit_target_ids {
        q.omit_target_ids = v;
    }
    if let Some(v) = b.refresh_same_string {
        q.refresh_same_string = v;
    }
    if let Some(v) = b.require_expiring_tokens {
        q.require_expiring_tokens = v;
    }
    if let Some(m) = b.business_throttle_minutes {
        q.business_throttle_until = if m > 0 { now + m * 60 } else { 0 };
    }
    if let Some(v) = b.omit_debug_fields {
        q.omit_debug_fields = v;
    }
    axum::Json(json!(w.scenario.quirks)).into_response()
}

async fn get_quirks(State(shared): State<Shared>) -> Response {
    axum::Json(json!(lock(&shared).scenario.quirks)).into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UsageBody {
    window_secs: Option<i64>,
    call_limit: Option<u64>,
    enforce: Option<bool>,
}

async fn set_usage(State(shared): State<Shared>, body: Bytes) -> Response {
    let b: UsageBody = match parse(&body) {
        Ok(b) => b,
        Err(e) => return bad_request(e),
    };
    let mut w = lock(&shared);
    let u = &mut w.scenario.usage;
    if let Some(v) = b.window_secs {
        u.window_secs = v.max(1);
    }
    if let Some(v) = b.call_limit {
        u.call_limit = v.max(1);
    }
    if let Some(v) = b.enforce {
        u.enforce = v;
    }
    axum::Json(json!(w.scenario.usage)).into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AppSettingsBody {
    /// Default: every app.
    app_id: Option<String>,
    require_app_secret: bool,
}

async fn app_settings(State(shared): State<Shared>, body: Bytes) -> Response {
    let b: AppSettingsBody = match parse(&body) {
        Ok(b) => b,
        Err(e) => return bad_request(e),
    };
    let mut w = lock(&shared);
    let mut changed = 0;
    for app in &mut w.scenario.apps {
        if b.app_id.as_ref().is_none_or(|id| *id == app.id) {
            app.require_app_secret = b.require_app_secret;
            changed += 1;
        }
    }
    if changed == 0 {
        return bad_request("unknown app_id".into());
    }
    axum::Json(json!({ "changed": changed })).into_response()
}
