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

use super::scenario::{Fault, TokenSpec};
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
